//! Frames: a 4-byte big-endian length, then that many bytes of JSON.
//!
//! Sans-IO: [`Decoder::push`] takes whatever bytes arrived, [`Decoder::next`]
//! gives whole messages. A length above [`MAX_FRAME`] is refused before any
//! of it is buffered, so a client cannot make devnetd allocate more; a frame
//! that is whole but not a valid message is skipped and reported, so the
//! connection can go on.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest frame either side accepts (a status with many paths and
/// discovered facts is a few KiB).
pub const MAX_FRAME: usize = 1024 * 1024;

const HEADER: usize = 4;

/// Why a frame could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix is over the limit: the stream cannot be resynced
    /// and must be closed.
    #[error("frame of {len} bytes is over the limit of {MAX_FRAME}")]
    TooLarge { len: usize },
    /// A whole frame that is not a message of this protocol; it was skipped.
    #[error("malformed message: {0}")]
    Malformed(String),
}

impl FrameError {
    /// Whether the stream is still in step after this error.
    pub fn is_recoverable(&self) -> bool {
        matches!(self, FrameError::Malformed(_))
    }
}

/// Encodes one message as a frame.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let body = serde_json::to_vec(msg).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge { len: body.len() });
    }
    let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLarge { len: body.len() })?;
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Reassembles frames from a byte stream.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Set once a frame was too large: nothing more is decoded.
    broken: bool,
}

impl Decoder {
    /// Adds bytes as they arrived.
    pub fn push(&mut self, bytes: &[u8]) {
        if !self.broken {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// The next whole message, `None` when more bytes are needed.
    pub fn next_msg<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        let Some(len) = self.frame_len()? else { return Ok(None) };
        if self.buf.len() < HEADER + len {
            return Ok(None);
        }
        let parsed = serde_json::from_slice(&self.buf[HEADER..HEADER + len]);
        self.buf.drain(..HEADER + len);
        parsed.map(Some).map_err(|e| FrameError::Malformed(e.to_string()))
    }

    /// The length of the frame at the front, once its header is in.
    fn frame_len(&mut self) -> Result<Option<usize>, FrameError> {
        if self.broken {
            return Err(FrameError::TooLarge { len: usize::MAX });
        }
        let Some(header) = self.buf.first_chunk::<HEADER>() else { return Ok(None) };
        let len = usize::try_from(u32::from_be_bytes(*header)).unwrap_or(usize::MAX);
        if len > MAX_FRAME {
            self.broken = true;
            self.buf = Vec::new();
            return Err(FrameError::TooLarge { len });
        }
        Ok(Some(len))
    }

    /// Bytes received after the last whole frame: when a connection turns
    /// into a raw byte pipe (a bridge), these belong to the pipe.
    pub fn into_rest(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::message::ClientMsg;

    #[test]
    fn messages_round_trip_across_any_split() {
        let msgs = [ClientMsg::Status, ClientMsg::Subscribe, ClientMsg::Disconnect { session: Some("lab".into()) }];
        let bytes: Vec<u8> = msgs.iter().flat_map(|m| encode(m).expect("encode")).collect();
        for split in 0..bytes.len() {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for part in [&bytes[..split], &bytes[split..]] {
                d.push(part);
                while let Some(m) = d.next_msg::<ClientMsg>().expect("decode") {
                    got.push(m);
                }
            }
            assert_eq!(got, msgs);
        }
    }

    #[test]
    fn an_oversized_length_is_refused_before_it_is_buffered() {
        let mut d = Decoder::default();
        d.push(&u32::MAX.to_be_bytes());
        let err = d.next_msg::<ClientMsg>().expect_err("too large");
        assert!(!err.is_recoverable());
        d.push(&[0; 100]);
        assert!(d.buf.is_empty(), "nothing is kept after a broken frame");
        assert!(d.next_msg::<ClientMsg>().is_err(), "and nothing more is decoded");
    }

    #[test]
    fn a_malformed_frame_is_skipped_and_the_next_one_read() {
        let mut d = Decoder::default();
        let junk = b"{not json";
        d.push(&u32::try_from(junk.len()).expect("len").to_be_bytes());
        d.push(junk);
        d.push(&encode(&ClientMsg::Status).expect("encode"));
        let err = d.next_msg::<ClientMsg>().expect_err("malformed");
        assert!(err.is_recoverable());
        assert_eq!(d.next_msg::<ClientMsg>().expect("next"), Some(ClientMsg::Status));
    }

    proptest! {
        /// Any bytes, in any chunks: the decoder answers, never panics, and
        /// never holds more than one frame's worth.
        #[test]
        fn decoder_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
            let mut d = Decoder::default();
            for chunk in &chunks {
                d.push(chunk);
                for _ in 0..8 {
                    match d.next_msg::<ClientMsg>() {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) if e.is_recoverable() => {}
                        Err(_) => break,
                    }
                }
                prop_assert!(d.buf.len() <= MAX_FRAME + HEADER + 64);
            }
        }

        /// Valid frames with random lengths prefixed by junk headers that
        /// claim huge sizes are refused, not allocated.
        #[test]
        fn huge_claims_are_refused(len in (MAX_FRAME as u32 + 1)..=u32::MAX) {
            let mut d = Decoder::default();
            d.push(&len.to_be_bytes());
            let refused = matches!(d.next_msg::<ClientMsg>(), Err(FrameError::TooLarge { .. }));
            prop_assert!(refused);
        }
    }
}

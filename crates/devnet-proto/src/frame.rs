//! Frame encoding and decoding.
//!
//! After the 8-byte preface (`DEVNET` + version), each side sends frames:
//!
//! ```text
//! +----------------+--------+------------------+
//! | length: u32 BE | type   | body             |
//! | (type + body)  | u8     | length - 1 bytes |
//! +----------------+--------+------------------+
//! ```
//!
//! Integers are big-endian. A string is a u16 length and UTF-8 bytes. A
//! socket address is a family byte (4 or 6), the address and a u16 port.
//! Payloads of `Data` and `Datagram` run to the end of the frame.
//!
//! The decoder borrows payloads from the input and never panics: every
//! malformed input is a [`DecodeError`] (see the property tests).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Largest frame body accepted. Data frames are cut well below this; a larger
/// length prefix means a corrupt or hostile stream.
pub const MAX_FRAME_LEN: usize = 256 * 1024;

/// Largest payload one `Data` frame carries. Large enough that framing
/// overhead is negligible, small enough that streams interleave fairly.
pub const MAX_DATA_PAYLOAD: usize = 64 * 1024;

const HEADER_LEN: usize = 5;

mod ty {
    pub const HELLO: u8 = 0x01;
    pub const WELCOME: u8 = 0x02;
    pub const REJECT: u8 = 0x03;
    pub const OPEN: u8 = 0x10;
    pub const OPEN_RESULT: u8 = 0x11;
    pub const DATA: u8 = 0x12;
    pub const WINDOW: u8 = 0x13;
    pub const FIN: u8 = 0x14;
    pub const RESET: u8 = 0x15;
    pub const DATAGRAM: u8 = 0x20;
    pub const PING: u8 = 0x30;
    pub const PONG: u8 = 0x31;
    pub const GO_AWAY: u8 = 0x32;
}

/// Why the relay refused a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectCode {
    /// The token was missing or wrong.
    Unauthorized,
    /// The peer speaks another protocol version.
    VersionMismatch,
    /// The peer broke the protocol.
    ProtocolViolation,
    /// The relay is shutting down or full.
    Unavailable,
}

impl RejectCode {
    fn to_u8(self) -> u8 {
        match self {
            Self::Unauthorized => 1,
            Self::VersionMismatch => 2,
            Self::ProtocolViolation => 3,
            Self::Unavailable => 4,
        }
    }
    fn from_u8(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            1 => Self::Unauthorized,
            2 => Self::VersionMismatch,
            3 => Self::ProtocolViolation,
            4 => Self::Unavailable,
            other => {
                return Err(DecodeError::BadEnum { field: "reject code", value: other });
            }
        })
    }
}

/// The outcome of opening a stream, as the relay saw it when dialling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenStatus {
    /// Connected; data may flow.
    Connected,
    /// The destination answered with a reset: nothing listens on that port.
    Refused,
    /// No route to the destination, or the host did not answer ARP/ND.
    Unreachable,
    /// The dial did not complete within the relay's dial timeout.
    TimedOut,
    /// The relay's policy forbids this destination.
    Denied,
}

impl OpenStatus {
    fn to_u8(self) -> u8 {
        match self {
            Self::Connected => 0,
            Self::Refused => 1,
            Self::Unreachable => 2,
            Self::TimedOut => 3,
            Self::Denied => 4,
        }
    }
    fn from_u8(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            0 => Self::Connected,
            1 => Self::Refused,
            2 => Self::Unreachable,
            3 => Self::TimedOut,
            4 => Self::Denied,
            other => {
                return Err(DecodeError::BadEnum { field: "open status", value: other });
            }
        })
    }
}

/// One protocol frame. Payload-carrying variants borrow from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Client → relay, first frame: credentials and a name for the logs.
    Hello { token: &'a str, client: &'a str },
    /// Relay → client: handshake accepted.
    Welcome { server: &'a str, heartbeat_ms: u32 },
    /// Either way: handshake refused or connection aborted, with the reason.
    Reject { code: RejectCode, message: &'a str },
    /// Client → relay: dial `addr` over TCP as stream `id`; the client can
    /// receive `window` bytes on it before the relay must wait for credit.
    Open { id: u32, addr: SocketAddr, window: u32 },
    /// Relay → client: the outcome of `Open`.
    OpenResult { id: u32, status: OpenStatus, window: u32, message: &'a str },
    /// Stream bytes.
    Data { id: u32, payload: &'a [u8] },
    /// Flow-control credit: the sender may send `increment` more bytes.
    Window { id: u32, increment: u32 },
    /// The sender will send no more bytes on the stream (TCP half-close).
    Fin { id: u32 },
    /// The stream is aborted.
    Reset { id: u32, message: &'a str },
    /// A UDP datagram. Client → relay: `addr` is the destination; relay →
    /// client: `addr` is the source it came from.
    Datagram { assoc: u32, addr: SocketAddr, payload: &'a [u8] },
    /// Heartbeat request.
    Ping { nonce: u64 },
    /// Heartbeat answer.
    Pong { nonce: u64 },
    /// The sender is shutting down; no new streams will be accepted.
    GoAway { message: &'a str },
}

/// Why bytes could not be decoded as a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame length {0} exceeds the limit of {MAX_FRAME_LEN} bytes: the stream is corrupt or not devnet")]
    TooLarge(usize),
    #[error("empty frame (length 0)")]
    Empty,
    #[error("unknown frame type 0x{0:02x}: the peer speaks a newer or different protocol")]
    UnknownType(u8),
    #[error("frame body ended early while reading {0}")]
    Truncated(&'static str),
    #[error("{0} bytes left over after the frame body")]
    TrailingBytes(usize),
    #[error("{field} has invalid value {value}")]
    BadEnum { field: &'static str, value: u8 },
    #[error("address family {0} is neither 4 nor 6")]
    BadFamily(u8),
    #[error("{0} is not valid UTF-8")]
    BadUtf8(&'static str),
    #[error("a {what} payload of {len} bytes exceeds the limit of {MAX_DATA_PAYLOAD}: no devnet peer sends one")]
    PayloadTooLarge { what: &'static str, len: usize },
}

impl Frame<'_> {
    /// Appends the encoded frame to `out`.
    ///
    /// # Panics
    /// If a payload or string is larger than the protocol allows; callers cut
    /// data to [`MAX_DATA_PAYLOAD`] and messages are short.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0, 0, 0, 0]);
        match self {
            Frame::Hello { token, client } => {
                out.push(ty::HELLO);
                put_str(out, token);
                put_str(out, client);
            }
            Frame::Welcome { server, heartbeat_ms } => {
                out.push(ty::WELCOME);
                put_str(out, server);
                out.extend_from_slice(&heartbeat_ms.to_be_bytes());
            }
            Frame::Reject { code, message } => {
                out.push(ty::REJECT);
                out.push(code.to_u8());
                put_str(out, message);
            }
            Frame::Open { id, addr, window } => {
                out.push(ty::OPEN);
                out.extend_from_slice(&id.to_be_bytes());
                put_addr(out, addr);
                out.extend_from_slice(&window.to_be_bytes());
            }
            Frame::OpenResult { id, status, window, message } => {
                out.push(ty::OPEN_RESULT);
                out.extend_from_slice(&id.to_be_bytes());
                out.push(status.to_u8());
                out.extend_from_slice(&window.to_be_bytes());
                put_str(out, message);
            }
            Frame::Data { id, payload } => {
                assert!(payload.len() <= MAX_DATA_PAYLOAD, "data payload too large");
                out.push(ty::DATA);
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(payload);
            }
            Frame::Window { id, increment } => {
                out.push(ty::WINDOW);
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&increment.to_be_bytes());
            }
            Frame::Fin { id } => {
                out.push(ty::FIN);
                out.extend_from_slice(&id.to_be_bytes());
            }
            Frame::Reset { id, message } => {
                out.push(ty::RESET);
                out.extend_from_slice(&id.to_be_bytes());
                put_str(out, message);
            }
            Frame::Datagram { assoc, addr, payload } => {
                assert!(payload.len() <= MAX_DATA_PAYLOAD, "datagram payload too large");
                out.push(ty::DATAGRAM);
                out.extend_from_slice(&assoc.to_be_bytes());
                put_addr(out, addr);
                out.extend_from_slice(payload);
            }
            Frame::Ping { nonce } => {
                out.push(ty::PING);
                out.extend_from_slice(&nonce.to_be_bytes());
            }
            Frame::Pong { nonce } => {
                out.push(ty::PONG);
                out.extend_from_slice(&nonce.to_be_bytes());
            }
            Frame::GoAway { message } => {
                out.push(ty::GO_AWAY);
                put_str(out, message);
            }
        }
        let len = u32::try_from(out.len() - start - 4).expect("frame fits u32");
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// Decodes one frame from the front of `buf`.
    ///
    /// Returns `Ok(None)` when more bytes are needed, or the frame and the
    /// number of bytes it used.
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, DecodeError> {
        let Some(len) = length_prefix(buf) else {
            return Ok(None);
        };
        if len == 0 {
            return Err(DecodeError::Empty);
        }
        if len > MAX_FRAME_LEN {
            return Err(DecodeError::TooLarge(len));
        }
        let Some(frame) = buf.get(4..4 + len) else {
            return Ok(None);
        };
        let mut r = Reader { buf: &frame[1..] };
        let frame = match frame[0] {
            ty::HELLO => Frame::Hello { token: r.str("token")?, client: r.str("client name")? },
            ty::WELCOME => Frame::Welcome { server: r.str("server name")?, heartbeat_ms: r.u32("heartbeat")? },
            ty::REJECT => {
                Frame::Reject { code: RejectCode::from_u8(r.u8("reject code")?)?, message: r.str("reject message")? }
            }
            ty::OPEN => Frame::Open { id: r.u32("stream id")?, addr: r.addr()?, window: r.u32("window")? },
            ty::OPEN_RESULT => Frame::OpenResult {
                id: r.u32("stream id")?,
                status: OpenStatus::from_u8(r.u8("open status")?)?,
                window: r.u32("window")?,
                message: r.str("open message")?,
            },
            ty::DATA => {
                let id = r.u32("stream id")?;
                Frame::Data { id, payload: r.payload("data")? }
            }
            ty::WINDOW => Frame::Window { id: r.u32("stream id")?, increment: r.u32("window increment")? },
            ty::FIN => Frame::Fin { id: r.u32("stream id")? },
            ty::RESET => Frame::Reset { id: r.u32("stream id")?, message: r.str("reset message")? },
            ty::DATAGRAM => {
                let assoc = r.u32("association id")?;
                let addr = r.addr()?;
                Frame::Datagram { assoc, addr, payload: r.payload("datagram")? }
            }
            ty::PING => Frame::Ping { nonce: r.u64("nonce")? },
            ty::PONG => Frame::Pong { nonce: r.u64("nonce")? },
            ty::GO_AWAY => Frame::GoAway { message: r.str("go-away message")? },
            other => return Err(DecodeError::UnknownType(other)),
        };
        if !r.buf.is_empty() {
            return Err(DecodeError::TrailingBytes(r.buf.len()));
        }
        Ok(Some((frame, 4 + len)))
    }
}

/// How many more bytes the frame that `partial` begins needs before the
/// receiver can act on it: the rest of its length prefix and type, then
/// the rest of its body, except that a `Data` frame needs only its head
/// (see [`data_head`]). A prefix that [`Frame::decode`] refuses (zero, too
/// large) needs nothing more.
pub(crate) fn missing(partial: &[u8]) -> usize {
    let Some(len) = length_prefix(partial) else {
        return 4 - partial.len();
    };
    if len == 0 || len > MAX_FRAME_LEN {
        return 0;
    }
    let whole = (4 + len).saturating_sub(partial.len());
    match partial.get(4) {
        None => 1,
        Some(&ty::DATA) => whole.min(DATA_OVERHEAD.saturating_sub(partial.len())),
        Some(_) => whole,
    }
}

/// The head of a `Data` frame whose payload has not all arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DataHead {
    pub id: u32,
    /// The whole payload's length, of which `partial` may hold a part.
    pub len: usize,
}

/// Reads the head (length, type, stream id) of the `Data` frame that
/// `partial` begins, so its payload can be handled as it arrives instead of
/// held until the frame is whole: a 64 KiB frame usually comes in four TLS
/// records. `None` if `partial` begins another frame or less than a head.
/// Refuses what [`Frame::decode`] would refuse of the whole frame.
pub(crate) fn data_head(partial: &[u8]) -> Result<Option<DataHead>, DecodeError> {
    let Some(len) = length_prefix(partial) else {
        return Ok(None);
    };
    if partial.len() < DATA_OVERHEAD || partial[4] != ty::DATA {
        return Ok(None);
    }
    if len > MAX_FRAME_LEN {
        return Err(DecodeError::TooLarge(len));
    }
    // A length below the type and id ends before the payload: `partial`,
    // at least a head long, holds that whole frame, which is `decode`'s to
    // refuse.
    let Some(payload) = len.checked_sub(DATA_OVERHEAD - 4) else {
        return Ok(None);
    };
    if payload > MAX_DATA_PAYLOAD {
        return Err(DecodeError::PayloadTooLarge { what: "data", len: payload });
    }
    let id = u32::from_be_bytes(partial[HEADER_LEN..DATA_OVERHEAD].try_into().expect("four bytes"));
    Ok(Some(DataHead { id, len: payload }))
}

/// The body length a frame's first four bytes give, once they are there.
fn length_prefix(buf: &[u8]) -> Option<usize> {
    let prefix: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    Some(u32::from_be_bytes(prefix) as usize)
}

/// The head of a `Data` frame carrying `payload_len` bytes of stream `id`:
/// what [`Frame::encode`] writes before the payload.
pub(crate) fn data_head_bytes(id: u32, payload_len: usize) -> [u8; DATA_OVERHEAD] {
    assert!(payload_len <= MAX_DATA_PAYLOAD, "data payload too large");
    let len = u32::try_from(DATA_OVERHEAD - 4 + payload_len).expect("a data frame's length fits u32");
    let mut head = [0; DATA_OVERHEAD];
    head[..4].copy_from_slice(&len.to_be_bytes());
    head[4] = ty::DATA;
    head[HEADER_LEN..].copy_from_slice(&id.to_be_bytes());
    head
}

/// Bytes of framing around a `Data` payload.
pub const DATA_OVERHEAD: usize = HEADER_LEN + 4;

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Strings are tokens, names and human messages: cut, never fail.
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

fn put_addr(out: &mut Vec<u8>, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn str(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        let len = self.u16(what)? as usize;
        std::str::from_utf8(self.take(len, what)?).map_err(|_| DecodeError::BadUtf8(what))
    }
    fn addr(&mut self) -> Result<SocketAddr, DecodeError> {
        let ip = match self.u8("address family")? {
            4 => {
                let b = self.take(4, "IPv4 address")?;
                IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            }
            6 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(self.take(16, "IPv6 address")?);
                IpAddr::V6(Ipv6Addr::from(a))
            }
            other => return Err(DecodeError::BadFamily(other)),
        };
        Ok(SocketAddr::new(ip, self.u16("port")?))
    }
    /// The rest of the frame as a payload. The limit is the one senders
    /// cut to: a larger payload would be one that cannot be sent on (the
    /// encoder refuses it, and a UDP datagram that size overflows the
    /// length field of the packet it would become).
    fn payload(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() > MAX_DATA_PAYLOAD {
            return Err(DecodeError::PayloadTooLarge { what, len: self.buf.len() });
        }
        Ok(std::mem::take(&mut self.buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(f: Frame<'_>) {
        let mut out = Vec::new();
        f.encode(&mut out);
        let (back, used) = Frame::decode(&out).expect("decodes").expect("complete");
        assert_eq!(used, out.len());
        assert_eq!(back, f);
        // Every strict prefix asks for more bytes rather than failing.
        for cut in 0..out.len() {
            assert_eq!(Frame::decode(&out[..cut]), Ok(None), "prefix of {cut} bytes");
        }
    }

    #[test]
    fn every_frame_type_roundtrips() {
        let v4: SocketAddr = "10.96.0.10:53".parse().expect("addr");
        let v6: SocketAddr = "[fd00:96::20]:80".parse().expect("addr");
        roundtrip(Frame::Hello { token: "s3cret", client: "laptop" });
        roundtrip(Frame::Welcome { server: "relay 0.1", heartbeat_ms: 1000 });
        roundtrip(Frame::Reject { code: RejectCode::Unauthorized, message: "bad token" });
        roundtrip(Frame::Open { id: 7, addr: v4, window: 1 << 20 });
        roundtrip(Frame::Open { id: 9, addr: v6, window: 0 });
        for status in [
            OpenStatus::Connected,
            OpenStatus::Refused,
            OpenStatus::Unreachable,
            OpenStatus::TimedOut,
            OpenStatus::Denied,
        ] {
            roundtrip(Frame::OpenResult { id: 7, status, window: 5, message: "why" });
        }
        roundtrip(Frame::Data { id: 7, payload: b"hello" });
        roundtrip(Frame::Data { id: 7, payload: b"" });
        roundtrip(Frame::Window { id: 7, increment: 65536 });
        roundtrip(Frame::Fin { id: 7 });
        roundtrip(Frame::Reset { id: 7, message: "gone" });
        roundtrip(Frame::Datagram { assoc: 3, addr: v6, payload: &[1, 2, 3] });
        roundtrip(Frame::Ping { nonce: u64::MAX });
        roundtrip(Frame::Pong { nonce: 1 });
        roundtrip(Frame::GoAway { message: "relay shutting down" });
    }

    #[test]
    fn malformed_frames_are_named() {
        assert_eq!(Frame::decode(&[0, 0, 0, 0]), Err(DecodeError::Empty));
        assert_eq!(Frame::decode(&[0xff, 0xff, 0xff, 0xff, 1]), Err(DecodeError::TooLarge(0xffff_ffff)));
        assert_eq!(Frame::decode(&[0, 0, 0, 1, 0x7f]), Err(DecodeError::UnknownType(0x7f)));
        assert_eq!(Frame::decode(&[0, 0, 0, 2, ty::FIN, 0]), Err(DecodeError::Truncated("stream id")));
        assert_eq!(Frame::decode(&[0, 0, 0, 6, ty::FIN, 0, 0, 0, 1, 9]), Err(DecodeError::TrailingBytes(1)));
        assert_eq!(Frame::decode(&[0, 0, 0, 8, ty::DATAGRAM, 0, 0, 0, 1, 5, 0, 0]), Err(DecodeError::BadFamily(5)));
        let err = Frame::decode(&[0, 0, 0, 4, ty::HELLO, 0, 1, 0xff]).expect_err("bad utf8");
        assert_eq!(err, DecodeError::BadUtf8("token"));
    }

    /// Found by fuzzing (proto_frame): the decoder took Data and Datagram
    /// payloads up to the frame limit (256 KiB), which the encoder refuses
    /// with a panic, so a relay re-encoding what it received, or a tunnel
    /// turning a datagram into a UDP packet, could not carry them.
    #[test]
    fn oversized_payloads_are_refused_by_the_decoder() {
        for (t, what, header) in [(ty::DATA, "data", 4), (ty::DATAGRAM, "datagram", 4 + 7)] {
            let len = MAX_DATA_PAYLOAD + 1;
            let mut bytes = ((1 + header + len) as u32).to_be_bytes().to_vec();
            bytes.push(t);
            bytes.extend_from_slice(&[0, 0, 0, 1]);
            if t == ty::DATAGRAM {
                bytes.extend_from_slice(&[4, 10, 96, 0, 10, 0, 53]);
            }
            bytes.resize(bytes.len() + len, 0);
            assert_eq!(Frame::decode(&bytes), Err(DecodeError::PayloadTooLarge { what, len }));
            // The largest payload a sender cuts to still decodes.
            let max = vec![0; MAX_DATA_PAYLOAD];
            let mut ok = Vec::new();
            Frame::Data { id: 1, payload: &max }.encode(&mut ok);
            assert!(matches!(Frame::decode(&ok), Ok(Some((Frame::Data { .. }, _)))));
        }
    }

    #[test]
    fn a_receiver_waits_for_a_whole_frame_or_a_data_frame_s_head() {
        let mut data = Vec::new();
        Frame::Data { id: 0x0102_0304, payload: &[7; 1000] }.encode(&mut data);
        let mut ping = Vec::new();
        Frame::Ping { nonce: 1 }.encode(&mut ping);
        // (bytes so far, what `missing` asks for, what `data_head` reads)
        let cases: [(&[u8], usize, Option<DataHead>); 8] = [
            (&data[..0], 4, None),
            (&data[..3], 1, None),
            (&data[..4], 1, None),
            (&data[..5], 4, None),
            (&data[..8], 1, None),
            (&data[..9], 0, Some(DataHead { id: 0x0102_0304, len: 1000 })),
            (&data[..500], 0, Some(DataHead { id: 0x0102_0304, len: 1000 })),
            (&ping[..5], ping.len() - 5, None),
        ];
        for (partial, wanted, head) in cases {
            assert_eq!(missing(partial), wanted, "{} bytes", partial.len());
            assert_eq!(data_head(partial).expect("a good head"), head, "{} bytes", partial.len());
        }
        // The head a writer puts before a payload it wrote in place.
        assert_eq!(data_head_bytes(0x0102_0304, 1000), data[..DATA_OVERHEAD]);
        // A head claiming more than a Data payload may hold is refused as
        // the whole frame would be.
        let mut big = u32::try_from(DATA_OVERHEAD - 4 + MAX_DATA_PAYLOAD + 1).expect("fits").to_be_bytes().to_vec();
        big.extend_from_slice(&[ty::DATA, 0, 0, 0, 1]);
        assert!(matches!(data_head(&big), Err(DecodeError::PayloadTooLarge { what: "data", .. })));
    }

    #[test]
    fn long_strings_are_cut_on_a_char_boundary() {
        let long = "é".repeat(40_000);
        let mut out = Vec::new();
        Frame::GoAway { message: &long }.encode(&mut out);
        let (Frame::GoAway { message }, _) = Frame::decode(&out).expect("ok").expect("complete") else {
            panic!("wrong frame")
        };
        assert!(message.len() <= u16::MAX as usize && long.starts_with(message));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// The decoder never panics, whatever it is fed, and never claims
        /// more bytes than it was given.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(Some((_, used))) = Frame::decode(&bytes) {
                prop_assert!(used <= bytes.len());
            }
        }

        /// Same, but with a plausible header so the body parsers get exercised.
        #[test]
        fn decode_bodies_never_panic(t in prop_oneof![0x01u8..=0x03, 0x10u8..=0x15, 0x20u8..=0x20, 0x30u8..=0x32],
                                     body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut bytes = ((body.len() + 1) as u32).to_be_bytes().to_vec();
            bytes.push(t);
            bytes.extend_from_slice(&body);
            let _ = Frame::decode(&bytes);
        }
    }
}

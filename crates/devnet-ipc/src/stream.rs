//! Framed messages over a byte stream (the Unix socket, on either side).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::codec::{Decoder, FrameError, encode};

/// A read or write on a framed stream failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A stream carrying frames.
#[derive(Debug)]
pub struct Framed<S> {
    stream: S,
    decoder: Decoder,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Framed<S> {
    pub fn new(stream: S) -> Self {
        Self { stream, decoder: Decoder::default() }
    }

    /// The next message; `None` when the peer closed the stream cleanly.
    /// A malformed frame is an error the caller may answer and go on from
    /// ([`FrameError::is_recoverable`]).
    pub async fn read<T: DeserializeOwned>(&mut self) -> Result<Option<T>, StreamError> {
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(msg) = self.decoder.next_msg()? {
                return Ok(Some(msg));
            }
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            self.decoder.push(&chunk[..n]);
        }
    }

    pub async fn write<T: Serialize>(&mut self, msg: &T) -> Result<(), StreamError> {
        self.stream.write_all(&encode(msg)?).await?;
        Ok(())
    }

    /// The stream itself, for a connection that becomes a raw byte pipe;
    /// bytes that already arrived after the last frame are read first.
    pub fn into_pipe(self) -> Prefixed<S> {
        Prefixed { rest: self.decoder.into_rest(), at: 0, stream: self.stream }
    }

    pub fn get_ref(&self) -> &S {
        &self.stream
    }
}

/// A stream with some bytes to read before its own.
#[derive(Debug)]
pub struct Prefixed<S> {
    rest: Vec<u8>,
    at: usize,
    stream: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.at < self.rest.len() {
            let n = buf.remaining().min(self.rest.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.rest[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ClientMsg, ServerMsg};

    #[tokio::test]
    async fn a_connection_turns_into_a_pipe_without_losing_early_bytes() {
        let (a, b) = tokio::io::duplex(1024);
        let mut client = Framed::new(a);
        let mut server = Framed::new(b);
        client
            .write(&ClientMsg::Bridge { session: "lab".into(), attempt: 1, label: String::new() })
            .await
            .expect("write");
        let got: Option<ClientMsg> = server.read().await.expect("read");
        assert_eq!(got, Some(ClientMsg::Bridge { session: "lab".into(), attempt: 1, label: String::new() }));
        // The server accepts and sends pipe bytes at once, in one write.
        let mut out = encode(&ServerMsg::BridgeAccepted).expect("encode");
        out.extend_from_slice(b"\x16\x03\x01 tls bytes");
        let mut raw = server.into_pipe();
        raw.write_all(&out).await.expect("write");
        let accepted: Option<ServerMsg> = client.read().await.expect("read");
        assert_eq!(accepted, Some(ServerMsg::BridgeAccepted));
        let mut pipe = client.into_pipe();
        let mut buf = [0u8; 13];
        pipe.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"\x16\x03\x01 tls bytes");
    }
}

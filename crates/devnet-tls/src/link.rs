//! Driving a [`Connection`] over the relay link without waiting: the engine
//! and the relay move their protocol bytes the same way.
//!
//! Both loops wait in a `select!` and then, in the same turn, write what the
//! turn produced and take in every record already readable, instead of a
//! loop turn per TLS record and another just to flush. A `Pending` here
//! registers the task's wake-up exactly as the next `select!` would.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use devnet_proto::Connection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Writes what `conn` has queued, then flushes, as far as the writer takes
/// it now; what it does not take stays queued for the `select!`'s write
/// branch, which waits. `needs_flush` is the link's "written, not flushed
/// yet" flag. Returns the bytes taken.
pub fn send_now<W: AsyncWrite + Unpin>(
    wr: &mut W,
    conn: &mut Connection,
    needs_flush: &mut bool,
    cx: &mut Context<'_>,
) -> io::Result<usize> {
    let mut sent = 0;
    while !conn.transmit().is_empty() {
        match Pin::new(&mut *wr).poll_write(cx, conn.transmit()) {
            Poll::Ready(Ok(0)) => return Err(io::Error::new(io::ErrorKind::WriteZero, "the relay link took no bytes")),
            Poll::Ready(Ok(n)) => {
                conn.advance_transmit(n);
                sent += n;
                *needs_flush = true;
            }
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => return Ok(sent),
        }
    }
    if *needs_flush {
        match Pin::new(&mut *wr).poll_flush(cx) {
            Poll::Ready(Ok(())) => *needs_flush = false,
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => {}
        }
    }
    Ok(sent)
}

/// Writes `data`, or flushes when there is nothing to write (returns 0
/// then): one call for "make progress on the send side" in a `select!`.
pub async fn write_or_flush<W: AsyncWrite + Unpin>(wr: &mut W, data: &[u8]) -> io::Result<usize> {
    use tokio::io::AsyncWriteExt;
    if data.is_empty() { wr.flush().await.map(|()| 0) } else { wr.write(data).await }
}

/// What [`receive_ready`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// This many bytes went into the connection; reading more would wait,
    /// or the turn's budget is spent.
    Bytes(usize),
    /// The peer closed the link, after this many bytes.
    Closed(usize),
}

/// Feeds `conn` what the link has readable now, up to about `budget` bytes,
/// through `buf`. A TLS reader hands over one record (16 KiB at most) per
/// read, so a busy link would otherwise cost a loop turn per record, and a
/// destination write, a TUN write and a stack pass each.
pub fn receive_ready<R: AsyncRead + Unpin>(
    rd: &mut R,
    conn: &mut Connection,
    buf: &mut [u8],
    budget: usize,
    now: Instant,
    cx: &mut Context<'_>,
) -> io::Result<Received> {
    let mut received = 0;
    while received < budget {
        let mut read = ReadBuf::new(buf);
        match Pin::new(&mut *rd).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) if read.filled().is_empty() => return Ok(Received::Closed(received)),
            Poll::Ready(Ok(())) => {
                received += read.filled().len();
                // A protocol error is an event the caller sees next.
                let _ = conn.handle_input(read.filled(), now);
            }
            // Bytes already fed stay fed: the link is lost either way.
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => break,
        }
    }
    Ok(Received::Bytes(received))
}

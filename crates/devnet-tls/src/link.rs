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

/// Hands `feed` what the link has readable now, up to about `budget` bytes,
/// through `buf`: each read, for the connection's input (with or without a
/// [`Deliver`](devnet_proto::Deliver)). A TLS reader hands over one record
/// (16 KiB at most) per read, so a busy link would otherwise cost a loop
/// turn per record, and a destination write, a TUN write and a stack pass
/// each. A protocol error is the connection's to report as an event.
pub fn receive_ready<R: AsyncRead + Unpin>(
    rd: &mut R,
    feed: &mut dyn FnMut(&[u8]),
    buf: &mut [u8],
    budget: usize,
    cx: &mut Context<'_>,
) -> io::Result<Received> {
    let mut received = 0;
    while received < budget {
        let mut read = ReadBuf::new(buf);
        match Pin::new(&mut *rd).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) if read.filled().is_empty() => return Ok(Received::Closed(received)),
            Poll::Ready(Ok(())) => {
                received += read.filled().len();
                feed(read.filled());
            }
            // Bytes already fed stay fed: the link is lost either way.
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => break,
        }
    }
    Ok(Received::Bytes(received))
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::task::Waker;
    use std::time::Instant;

    use devnet_proto::Config;

    use super::*;

    /// A reader that hands over one queued chunk per read, as a TLS reader
    /// hands over one record, then waits (or ends, once `eof` is set).
    struct Records {
        chunks: VecDeque<Vec<u8>>,
        eof: bool,
    }

    impl AsyncRead for Records {
        fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            match self.chunks.pop_front() {
                Some(chunk) => {
                    buf.put_slice(&chunk);
                    Poll::Ready(Ok(()))
                }
                None if self.eof => Poll::Ready(Ok(())),
                None => Poll::Pending,
            }
        }
    }

    /// A writer that takes at most `per_write` bytes a call, `writes` calls
    /// in all, and then waits; it counts its flushes.
    struct Slow {
        taken: Vec<u8>,
        per_write: usize,
        writes: usize,
        flushes: usize,
    }

    impl AsyncWrite for Slow {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
            if self.writes == 0 {
                return Poll::Pending;
            }
            self.writes -= 1;
            let n = data.len().min(self.per_write);
            self.taken.extend_from_slice(&data[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn conn() -> Connection {
        Connection::client(Config::default(), Instant::now())
    }

    #[test]
    fn every_record_already_readable_is_taken_in_one_call_within_the_budget() {
        let mut cx = Context::from_waker(Waker::noop());
        let mut buf = vec![0u8; 64 * 1024];
        let mut rd = Records { chunks: (0..6).map(|_| vec![0u8; 16 * 1024]).collect(), eof: false };
        let mut fed = 0;
        let mut feed = |bytes: &[u8]| fed += bytes.len();
        // Four records fit the budget; the rest waits for the next turn.
        let got = receive_ready(&mut rd, &mut feed, &mut buf, 64 * 1024, &mut cx).expect("read");
        assert_eq!(got, Received::Bytes(64 * 1024));
        assert_eq!(rd.chunks.len(), 2);
        let got = receive_ready(&mut rd, &mut feed, &mut buf, 64 * 1024, &mut cx).expect("read");
        assert_eq!(got, Received::Bytes(32 * 1024), "then it stops where reading would wait");
        rd.eof = true;
        let got = receive_ready(&mut rd, &mut feed, &mut buf, 64 * 1024, &mut cx).expect("read");
        assert_eq!(got, Received::Closed(0));
        assert_eq!(fed, 96 * 1024, "every byte read was fed");
    }

    #[test]
    fn send_now_writes_what_the_writer_takes_and_flushes_only_when_all_went() {
        let mut cx = Context::from_waker(Waker::noop());
        let mut conn = conn();
        let queued = conn.transmit().to_vec();
        assert!(queued.len() > 20, "a new client connection has its preface queued");
        let mut needs_flush = false;
        let mut wr = Slow { taken: Vec::new(), per_write: 10, writes: 2, flushes: 0 };
        assert_eq!(send_now(&mut wr, &mut conn, &mut needs_flush, &mut cx).expect("send"), 20);
        assert_eq!(conn.transmit(), &queued[20..], "the rest stays queued");
        assert!(needs_flush && wr.flushes == 0, "written but not flushed while bytes wait");
        wr.writes = usize::MAX;
        wr.per_write = usize::MAX;
        assert_eq!(send_now(&mut wr, &mut conn, &mut needs_flush, &mut cx).expect("send"), queued.len() - 20);
        assert!(conn.transmit().is_empty());
        assert_eq!(wr.taken, queued);
        assert!(!needs_flush && wr.flushes == 1, "flushed in the same call");
    }
}

//! Driving a [`Connection`] over the relay link without waiting: the engine
//! and the relay move their protocol bytes the same way.
//!
//! Both loops wait in a `select!` and then, in the same turn, write what the
//! turn produced and take in every record already readable, instead of a
//! loop turn per TLS record and another just to flush. A `Pending` here
//! registers the task's wake-up exactly as the next `select!` would.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use devnet_proto::Connection;
use tokio::io::{AsyncBufRead, AsyncWrite};

/// The most plaintext the link's TLS encrypts ahead of its socket: three
/// full records. Each write to the socket then carries at most 49,218 bytes
/// (three 16 KiB records and their 22 bytes each), which TCP sends as one
/// segmentation-offload packet (at most 64 KiB). rustls' default, 64 KiB,
/// makes each write four records and 88 bytes too many for one such packet:
/// every write then left as a full packet and a tiny one, and the tiny ones
/// cost forwarding, an ACK and a wake-up of the far end each. Measured in
/// the lab (issue 14, 3 GiB, rounds alternated): uploads, the engine's CPU
/// 3.2 s → 2.6–2.7 s; downloads, the relay's 3.6–3.8 s → 2.8–3.1 s and
/// 5.9–6.4 → 7.1–7.9 Gbit/s.
pub const WRITE_AHEAD: usize = 3 * 16 * 1024;

/// Bounds what `conn` encrypts ahead of its socket to [`WRITE_AHEAD`].
/// Call once the handshake is done.
pub fn bound_write_ahead<D>(conn: &mut rustls::ConnectionCommon<D>) {
    conn.set_buffer_limit(Some(WRITE_AHEAD));
}

/// Splits the link into the halves one task drives from one `select!`.
/// Unlike `tokio::io::split`, the read half reads through the stream's own
/// buffer ([`AsyncBufRead`]): a TLS stream hands over its own plaintext
/// buffer, not a copy of it in a buffer of ours.
pub fn split<T>(io: T) -> (LinkReader<T>, LinkWriter<T>) {
    let shared = Arc::new(Mutex::new(io));
    (LinkReader(shared.clone()), LinkWriter(shared))
}

/// The read half of [`split`].
#[derive(Debug)]
pub struct LinkReader<T>(Arc<Mutex<T>>);

/// The write half of [`split`].
#[derive(Debug)]
pub struct LinkWriter<T>(Arc<Mutex<T>>);

/// The halves are polled by one task, one at a time: the lock is never
/// contended. A panic while it was held already ends that task.
fn lock<T>(shared: &Mutex<T>) -> MutexGuard<'_, T> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T: AsyncBufRead + Unpin> LinkReader<T> {
    /// Resolves once the link has bytes to hand over, with how many are in
    /// its first chunk, or with 0 once it ended. Takes nothing, so it may
    /// lose a `select!` without losing bytes.
    pub async fn readable(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| Pin::new(&mut *lock(&self.0)).poll_fill_buf(cx).map_ok(<[u8]>::len)).await
    }

    /// [`receive_ready`] on this half.
    pub fn receive_ready(
        &mut self,
        feed: &mut dyn FnMut(&[u8]),
        budget: usize,
        cx: &mut Context<'_>,
    ) -> io::Result<Received> {
        receive_ready(&mut *lock(&self.0), feed, budget, cx)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for LinkWriter<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *lock(&self.0)).poll_write(cx, data)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *lock(&self.0)).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        lock(&self.0).is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.0)).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.0)).poll_shutdown(cx)
    }
}

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

/// Hands `feed` what the link has readable now, up to about `budget` bytes
/// (at most one chunk more): each chunk of the reader's own buffer, for
/// the connection's input (with or without a
/// [`Deliver`](devnet_proto::Deliver)), with no copy on the way. A TLS
/// reader's chunk is one record (16 KiB at most), so a busy link would
/// otherwise cost a loop turn per record, and a destination write, a TUN
/// write and a stack pass each. A protocol error is the connection's to
/// report as an event.
pub fn receive_ready<R: AsyncBufRead + Unpin>(
    rd: &mut R,
    feed: &mut dyn FnMut(&[u8]),
    budget: usize,
    cx: &mut Context<'_>,
) -> io::Result<Received> {
    let mut received = 0;
    while received < budget {
        match Pin::new(&mut *rd).poll_fill_buf(cx) {
            Poll::Ready(Ok([])) => return Ok(Received::Closed(received)),
            Poll::Ready(Ok(chunk)) => {
                let n = chunk.len();
                feed(chunk);
                Pin::new(&mut *rd).consume(n);
                received += n;
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
    use tokio::io::AsyncRead;

    use devnet_proto::Config;

    use super::*;

    /// A reader whose buffer holds one queued chunk at a time, as a TLS
    /// reader holds one record, then waits (or ends, once `eof` is set).
    struct Records {
        chunks: VecDeque<Vec<u8>>,
        eof: bool,
    }

    impl AsyncRead for Records {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            unreachable!("the link reads through the buffer")
        }
    }

    impl AsyncBufRead for Records {
        fn poll_fill_buf(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
            let this = self.get_mut();
            match this.chunks.front() {
                Some(chunk) => Poll::Ready(Ok(chunk)),
                None if this.eof => Poll::Ready(Ok(&[])),
                None => Poll::Pending,
            }
        }
        fn consume(mut self: Pin<&mut Self>, n: usize) {
            let chunk = self.chunks.front_mut().expect("a chunk to consume");
            chunk.drain(..n);
            if chunk.is_empty() {
                self.chunks.pop_front();
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
        let mut rd = Records { chunks: (0..6u8).map(|i| vec![i; 16 * 1024]).collect(), eof: false };
        let mut fed = Vec::new();
        let mut feed = |bytes: &[u8]| fed.push((bytes[0], bytes.len()));
        // Four records fit the budget; the rest waits for the next turn.
        let got = receive_ready(&mut rd, &mut feed, 64 * 1024, &mut cx).expect("read");
        assert_eq!(got, Received::Bytes(64 * 1024));
        assert_eq!(rd.chunks.len(), 2);
        let got = receive_ready(&mut rd, &mut feed, 64 * 1024, &mut cx).expect("read");
        assert_eq!(got, Received::Bytes(32 * 1024), "then it stops where reading would wait");
        rd.eof = true;
        let got = receive_ready(&mut rd, &mut feed, 64 * 1024, &mut cx).expect("read");
        assert_eq!(got, Received::Closed(0));
        assert_eq!(fed, (0..6u8).map(|i| (i, 16 * 1024)).collect::<Vec<_>>(), "each record fed whole, once, in order");
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

    #[tokio::test]
    async fn the_halves_read_through_the_stream_s_buffer_and_write_to_it() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let (mut rd, mut wr) = split(BufReader::new(near));
        far.write_all(b"hello relay").await.expect("write");
        assert_eq!(rd.readable().await.expect("readable"), 11, "readable says how much, taking nothing");
        let mut got = Vec::new();
        let received = std::future::poll_fn(|cx| {
            Poll::Ready(rd.receive_ready(&mut |bytes| got.extend_from_slice(bytes), usize::MAX, cx))
        })
        .await
        .expect("receive");
        assert_eq!((received, &got[..]), (Received::Bytes(11), &b"hello relay"[..]));
        wr.write_all(b"hello engine").await.expect("write");
        wr.flush().await.expect("flush");
        let mut back = [0u8; 12];
        far.read_exact(&mut back).await.expect("read");
        assert_eq!(&back, b"hello engine");
        drop(far);
        assert_eq!(rd.readable().await.expect("readable"), 0, "an ended link reads as 0");
    }
}

//! Reading the link's socket in large reads, under TLS.
//!
//! **Why:** rustls reads a connection's bytes into a buffer no larger than
//! one record (16 KiB and its header), so a link that moves gigabytes made
//! a `recvfrom` per record, 65,000 per GiB, each taking the socket's lock
//! and perhaps sending a window update. [`ReadAhead`] sits between rustls
//! and the socket: one read takes up to [`READ_AHEAD`] of what the kernel
//! holds, and rustls' reads are served from it. The copy it adds is of
//! bytes just written, still in the cache. In the lab (`bench/counts.sh`,
//! 2 GiB uploaded through one stream, two runs of each build, alternated)
//! the relay's syscalls fell from 147,000–152,000 to 32,000–38,000 and with
//! 8 streams from 189,000–194,000 to 65,000–67,000; the engine's for a
//! download, from 256,000–270,000 to 201,000–227,000.
//!
//! **What it does not do:** read ahead of what the kernel already has (a
//! read never waits to fill the buffer), or buffer writes: they pass
//! through, vectored as they came.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most one read of the socket takes. The buffer is a mapping of its
/// own (glibc maps allocations this large), so it is resident only as far
/// as reads filled it.
pub const READ_AHEAD: usize = 256 * 1024;

/// A stream whose reads go through a [`READ_AHEAD`] buffer; see the module.
#[derive(Debug)]
pub struct ReadAhead<T> {
    inner: T,
    /// Allocated on the first read that needs it.
    buf: Vec<u8>,
    /// `buf[start..end]` is read from the socket and not yet handed on.
    start: usize,
    end: usize,
}

impl<T> ReadAhead<T> {
    pub fn new(inner: T) -> Self {
        Self { inner, buf: Vec::new(), start: 0, end: 0 }
    }

    /// Bytes read from the socket and not yet handed on.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadAhead<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.start == this.end {
            // A reader that asks for as much as the buffer holds gains
            // nothing from it.
            if out.remaining() >= READ_AHEAD {
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            if this.buf.is_empty() {
                this.buf = vec![0; READ_AHEAD];
            }
            let mut fill = ReadBuf::new(&mut this.buf);
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut fill))?;
            // An empty read is the end of the stream, passed on as one.
            (this.start, this.end) = (0, fill.filled().len());
        }
        let n = out.remaining().min(this.end - this.start);
        out.put_slice(&this.buf[this.start..this.start + n]);
        this.start += n;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ReadAhead<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that hands out scripted reads and counts them.
    struct Scripted {
        reads: Vec<Vec<u8>>,
        calls: usize,
        largest_ask: usize,
    }

    impl AsyncRead for Scripted {
        fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            self.calls += 1;
            self.largest_ask = self.largest_ask.max(out.remaining());
            if self.reads.is_empty() {
                return Poll::Pending;
            }
            let next = self.reads.remove(0);
            assert!(next.len() <= out.remaining(), "the script reads no more than was asked");
            out.put_slice(&next);
            Poll::Ready(Ok(()))
        }
    }

    fn read(stream: &mut ReadAhead<Scripted>, ask: usize) -> Poll<Vec<u8>> {
        let mut space = vec![0; ask];
        let mut out = ReadBuf::new(&mut space);
        let waker = std::task::Waker::noop();
        Pin::new(stream).poll_read(&mut Context::from_waker(waker), &mut out).map(|r| {
            r.expect("read");
            out.filled().to_vec()
        })
    }

    #[test]
    fn one_socket_read_serves_many_small_reads_in_order() {
        let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut stream = ReadAhead::new(Scripted { reads: vec![big.clone()], calls: 0, largest_ask: 0 });
        let mut got = Vec::new();
        while got.len() < big.len() {
            match read(&mut stream, 16 * 1024 + 5) {
                Poll::Ready(bytes) => got.extend(bytes),
                Poll::Pending => panic!("pending with {} bytes buffered", stream.buffered()),
            }
        }
        assert_eq!(got, big);
        assert_eq!(stream.inner.calls, 1, "one read of the socket");
        assert_eq!(stream.inner.largest_ask, READ_AHEAD);
        // Drained: the next read goes to the socket, which has nothing.
        assert!(read(&mut stream, 100).is_pending());
        assert_eq!(stream.inner.calls, 2);
    }

    #[test]
    fn the_end_of_the_stream_is_an_empty_read_and_a_large_ask_bypasses_the_buffer() {
        let mut stream = ReadAhead::new(Scripted { reads: vec![b"last".to_vec(), vec![]], calls: 0, largest_ask: 0 });
        assert_eq!(read(&mut stream, 2), Poll::Ready(b"la".to_vec()));
        assert_eq!(read(&mut stream, 2), Poll::Ready(b"st".to_vec()));
        assert_eq!(read(&mut stream, 10), Poll::Ready(vec![]), "end of stream");
        let mut direct = ReadAhead::new(Scripted { reads: vec![b"direct".to_vec()], calls: 0, largest_ask: 0 });
        assert_eq!(read(&mut direct, READ_AHEAD), Poll::Ready(b"direct".to_vec()));
        assert!(direct.buf.is_empty(), "no buffer for a reader that asks for as much");
    }
}

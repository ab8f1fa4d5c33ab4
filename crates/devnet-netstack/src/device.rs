//! A smoltcp device backed by two packet queues and a buffer pool.
//!
//! The shell moves packets between the queues and the TUN device. Buffers
//! are recycled through the pool, so steady-state traffic allocates nothing.
//! When the transmit queue is full the device reports itself exhausted and
//! smoltcp keeps the segment for later, rather than the packet being dropped.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use smoltcp::phy::{self, Checksum, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// Recycled packet buffers, shared by the device and its receive tokens.
///
/// Two kinds: buffers that packets are built in (handed out empty), and
/// read buffers (see [`take_read`](Self::take_read)), which stay whole
/// while they circulate so that a read into one needs neither a copy nor a
/// zero-fill.
#[derive(Debug, Clone, Default)]
pub struct BufferPool(Arc<Mutex<Pools>>);

#[derive(Debug, Default)]
struct Pools {
    built: Vec<Vec<u8>>,
    reads: Vec<Vec<u8>>,
}

impl BufferPool {
    // Enough for a burst of full-size packets in flight (a TUN read batch
    // goes through the stack before the next); beyond that, buffers are
    // freed rather than kept, since each can be 64 KiB and stays resident.
    const MAX_POOLED: usize = 32;

    /// A cleared buffer with at least `capacity` bytes reserved.
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        let mut b = self.0.lock().map(|mut p| p.built.pop()).ok().flatten().unwrap_or_default();
        b.clear();
        b.reserve(capacity);
        b
    }

    /// Returns a buffer for reuse.
    pub fn give(&self, buf: Vec<u8>) {
        self.keep(buf, false);
    }

    /// Keeps `buf` among the read buffers or the others, up to
    /// [`MAX_POOLED`](Self::MAX_POOLED) of each.
    fn keep(&self, buf: Vec<u8>, read: bool) {
        if let Ok(mut p) = self.0.lock() {
            let stack = if read { &mut p.reads } else { &mut p.built };
            if stack.len() < Self::MAX_POOLED {
                stack.push(buf);
            }
        }
    }

    /// A buffer of at least `len` initialised bytes to read a packet into.
    /// Read buffers come back whole (the packet's length travels beside
    /// them), so only a new one is zero-filled.
    pub(crate) fn take_read(&self, len: usize) -> Vec<u8> {
        let mut b = self.0.lock().map(|mut p| p.reads.pop()).ok().flatten().unwrap_or_default();
        if b.len() < len {
            b.resize(len, 0);
        }
        b
    }

    /// Returns what a received packet was held in, to the kind it came from.
    pub(crate) fn recycle(&self, packet: RxPacket) {
        self.keep(packet.buf, packet.read);
    }
}

/// A packet for the stack: the first `len` bytes of `buf`.
#[derive(Debug)]
pub(crate) struct RxPacket {
    buf: Vec<u8>,
    len: usize,
    /// `buf` is a whole read buffer, to go back to the read buffers.
    read: bool,
}

impl RxPacket {
    /// A packet that is all of `buf`.
    pub(crate) fn whole(buf: Vec<u8>) -> Self {
        Self { len: buf.len(), buf, read: false }
    }

    /// A packet read into the start of a read buffer.
    pub(crate) fn read(buf: Vec<u8>, len: usize) -> Self {
        Self { len: len.min(buf.len()), buf, read: true }
    }
}

impl std::ops::Deref for RxPacket {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

#[derive(Debug)]
pub(crate) struct QueueDevice {
    pub(crate) rx: VecDeque<RxPacket>,
    pub(crate) tx: VecDeque<Vec<u8>>,
    pub(crate) pool: BufferPool,
    pub(crate) mtu: usize,
    pub(crate) tx_limit: usize,
}

impl QueueDevice {
    pub(crate) fn new(mtu: usize, tx_limit: usize, pool: BufferPool) -> Self {
        Self { rx: VecDeque::new(), tx: VecDeque::new(), pool, mtu, tx_limit }
    }
}

pub(crate) struct RxToken {
    packet: RxPacket,
    pool: BufferPool,
}

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let r = f(&self.packet);
        self.pool.recycle(self.packet);
        r
    }
}

pub(crate) struct TxToken<'a> {
    dev: &'a mut QueueDevice,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = self.dev.pool.take(len);
        buf.resize(len, 0);
        let r = f(&mut buf);
        self.dev.tx.push_back(buf);
        r
    }
}

impl phy::Device for QueueDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        if self.tx.len() >= self.tx_limit {
            // Answering would need a transmit slot we lack: leave it queued.
            return None;
        }
        let packet = self.rx.pop_front()?;
        let pool = self.pool.clone();
        Some((RxToken { packet, pool }, TxToken { dev: self }))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Self::TxToken<'_>> {
        (self.tx.len() < self.tx_limit).then_some(TxToken { dev: self })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        // Checksums are computed on what smoltcp sends but not verified on
        // what it receives: every packet it gets was built by this
        // machine's kernel and copied through the TUN device in memory,
        // never crossing a link that could corrupt it (the kernel skips the
        // check for its own loopback traffic likewise). Only TCP reaches
        // smoltcp; `packet::classify` still checks what it parses itself.
        caps.checksum.ipv4 = Checksum::Tx;
        caps.checksum.tcp = Checksum::Tx;
        caps
    }
}

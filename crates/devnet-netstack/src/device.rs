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

use crate::packet::{PartialChecksum, leave_tcp_checksum_partial};

/// Recycled packet buffers, shared by the device and its receive tokens.
///
/// Two kinds: buffers that packets are built in (handed out empty, grown
/// as they are written), and filled buffers (see
/// [`take_filled`](Self::take_filled)), which stay whole while they
/// circulate: a packet's length travels beside its buffer in a [`Packet`],
/// so a TUN read into one, or smoltcp writing a segment into one, needs
/// neither a copy nor a zero-fill first.
#[derive(Debug, Clone, Default)]
pub struct BufferPool(Arc<Mutex<Pools>>);

#[derive(Debug, Default)]
struct Pools {
    built: Vec<Vec<u8>>,
    filled: Vec<Vec<u8>>,
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

    /// A buffer of at least `len` initialised bytes, to read or write a
    /// packet into. Only the part a buffer never had is zero-filled: a
    /// recycled one comes back whole, stale bytes and all.
    pub(crate) fn take_filled(&self, len: usize) -> Vec<u8> {
        let mut b = self.0.lock().map(|mut p| p.filled.pop()).ok().flatten().unwrap_or_default();
        if b.len() < len {
            b.resize(len, 0);
        }
        b
    }

    /// Returns what a packet was held in, to the kind it came from, up to
    /// [`MAX_POOLED`](Self::MAX_POOLED) of each.
    pub(crate) fn recycle(&self, packet: Packet) {
        if let Ok(mut p) = self.0.lock() {
            let stack = if packet.filled { &mut p.filled } else { &mut p.built };
            if stack.len() < Self::MAX_POOLED {
                stack.push(packet.buf);
            }
        }
    }
}

/// One IP packet: the first `len` bytes of a pooled buffer. Hand it back
/// with [`Tunnel::recycle`](crate::Tunnel::recycle) once written.
#[derive(Debug)]
pub struct Packet {
    buf: Vec<u8>,
    len: usize,
    /// `buf` is a whole filled buffer, to go back to the filled ones.
    filled: bool,
    partial: Option<PartialChecksum>,
}

impl Packet {
    /// A packet that is all of `buf` (built by extending it).
    pub(crate) fn whole(buf: Vec<u8>) -> Self {
        Self { len: buf.len(), buf, filled: false, partial: None }
    }

    /// A packet in the first `len` bytes of a filled buffer.
    pub(crate) fn prefix(buf: Vec<u8>, len: usize) -> Self {
        Self { len: len.min(buf.len()), buf, filled: true, partial: None }
    }

    /// Where the TUN device must finish this packet's checksum; `None` when
    /// it is complete. Only with [`TunnelConfig::partial_checksums`](crate::TunnelConfig::partial_checksums).
    pub fn partial_checksum(&self) -> Option<PartialChecksum> {
        self.partial
    }

    /// The whole buffer, past the packet too.
    #[cfg(test)]
    pub(crate) fn buffer(&self) -> &Vec<u8> {
        &self.buf
    }
}

impl std::ops::Deref for Packet {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

#[derive(Debug)]
pub(crate) struct QueueDevice {
    pub(crate) rx: VecDeque<Packet>,
    pub(crate) tx: VecDeque<Packet>,
    pub(crate) pool: BufferPool,
    pub(crate) mtu: usize,
    pub(crate) tx_limit: usize,
    /// smoltcp leaves TCP checksums to the TUN device.
    pub(crate) partial_checksums: bool,
}

impl QueueDevice {
    pub(crate) fn new(mtu: usize, tx_limit: usize, partial_checksums: bool, pool: BufferPool) -> Self {
        Self { rx: VecDeque::new(), tx: VecDeque::new(), pool, mtu, tx_limit, partial_checksums }
    }
}

pub(crate) struct RxToken {
    packet: Packet,
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
        // smoltcp writes every byte of the `len` it asks for (headers,
        // then payload from its send ring): a whole recycled buffer, not
        // one zero-filled for each segment first.
        let mut buf = self.dev.pool.take_filled(len);
        let r = f(&mut buf[..len]);
        let mut packet = Packet::prefix(buf, len);
        if self.dev.partial_checksums {
            packet.partial = leave_tcp_checksum_partial(&mut packet.buf[..len]);
        }
        self.dev.tx.push_back(packet);
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
        caps.checksum.tcp = if self.partial_checksums { Checksum::None } else { Checksum::Tx };
        caps
    }
}

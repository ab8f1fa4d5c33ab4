//! # devnet-netstack: the laptop end of the tunnel, without I/O
//!
//! **Layer:** sans-IO. [`Tunnel`] takes IP packets read from the TUN device
//! and a relay [`Connection`], and gives back IP packets to write to the TUN
//! device and bytes to send to the relay. Time is a parameter; tests step a
//! virtual clock and feed hand-built packets.
//!
//! **How a TCP connection is carried.** smoltcp runs as an any-IP stack. A
//! SYN to an address inside the routed CIDRs is *held*: no socket exists for
//! it yet, so nothing answers. The tunnel asks the relay to dial the same
//! destination; only when the relay reports `Connected` is a listening
//! smoltcp socket created for exactly that address and the SYN replayed into
//! it, so the SYN-ACK means the far end really accepted. A refused dial is
//! answered with a RST (the client's `connect()` fails at once with
//! "connection refused"); an unreachable, timed-out or denied one with an
//! ICMP unreachable ("no route to host"). Bytes then move between the smoltcp
//! socket buffers and the stream, within the stream's flow-control window.
//!
//! **UDP** needs no state machine: each (client, destination) pair becomes a
//! relay datagram association, and answers are built as UDP packets. An
//! association idle for [`TunnelConfig::udp_idle`] (DNS: `dns_idle`, since
//! every query comes from a new port) is forgotten, and at most
//! `max_udp_associations` are kept (the least recently used goes first), so
//! a long session's memory does not grow with every query it ever made.
//!
//! **What it does not do:** read or write the TUN device, open sockets,
//! route, or decide which CIDRs go through the tunnel (the engine does).

pub mod checksum;
mod device;
mod packet;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use devnet_proto::{Connection, Event, OpenStatus, StreamId};
use ipnet::IpNet;
use smoltcp::iface::{Config as IfaceConfig, Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpListenEndpoint, Ipv4Address, Ipv6Address};
use tracing::{debug, trace};

pub use device::{BufferPool, Packet};
pub use packet::PartialChecksum;

use crate::device::QueueDevice;
use crate::packet::{Inbound, Unreachable};

/// Settings for a [`Tunnel`].
#[derive(Debug, Clone)]
pub struct TunnelConfig {
    /// The TUN device's MTU. Large (64 KB) MTUs let the kernel hand over
    /// whole TSO-sized segments, which is most of a userspace stack's speed.
    pub mtu: usize,
    /// Destinations the tunnel carries; packets to anything else are dropped.
    pub cidrs: Vec<IpNet>,
    /// smoltcp's receive buffer per connection: the window advertised to
    /// the local client, and where its bytes wait for their turn toward the
    /// relay. The TUN hop's bandwidth-delay product is small (10 Gbit/s ×
    /// 100 µs is 125 KB), so the size is set by where the waiting bytes
    /// sit: when the relay link is the bottleneck every flow's buffer is
    /// full, and with 8 bulk flows at 1 MiB each the engine copied each
    /// byte out of 8 MiB it had written long before, and the relay and
    /// iperf3 beside it slowed too. 256 KiB holds 8 flows in 2 MiB: in
    /// alternated lab runs 8 streams rose from 6.3–7.5 to 7.6–9.1 Gbit/s
    /// (512 KiB: 7.3–8.4). One stream then made more round trips through
    /// the client's TCP; [`Tunnel::poll`] answering once per turn (the
    /// ACK carries the freed window) won that back (bench/README.md,
    /// "Waiting bytes in 2 MiB"). Far away this window does not matter:
    /// it spans only the laptop's own hop (the relay link's streams have
    /// their own credit).
    pub tcp_receive_buffer: usize,
    /// smoltcp's send buffer per connection: bytes from the relay waiting
    /// for the local client. It stays at 1 MiB: with 128 KiB, downloads
    /// 20 ms away were slower, as it adds to the window the relay sees.
    /// Recycled sockets keep both buffers; pages are only resident as far
    /// as a flow used them.
    pub tcp_send_buffer: usize,
    /// Packets queued toward the TUN device before the stack reports itself
    /// exhausted and holds further segments.
    pub tx_queue: usize,
    /// How long a UDP association lives without a datagram either way.
    pub udp_idle: Duration,
    /// The same for associations to port 53: a resolver asks once per
    /// source port and is answered within its own timeout (5 s by default).
    pub dns_idle: Duration,
    /// UDP associations kept at most (the relay keeps as many per session).
    pub max_udp_associations: usize,
    /// Bytes queued for the relay (the connection's transmit queue) above
    /// which no more is taken from the local sockets: the clients' TCP
    /// windows close instead, and a new stream's `Open` or a keystroke waits
    /// behind at most this much, not behind every stream's whole window.
    pub relay_high_water: usize,
    /// Bytes one flow may move toward the relay per round-robin turn, so a
    /// bulk upload cannot take the whole queue from the flows beside it.
    /// Half a receive buffer: a turn opens the client's window by a good
    /// step, and the relay gets each stream's bytes in runs long enough to
    /// write them to the destination in large writes (64 KiB turns gave 8
    /// streams 8.3–8.7 Gbit/s against 8.4–9.1, and one stream 7.4–7.6
    /// against 7.6–7.8).
    pub relay_turn: usize,
    /// The TUN device takes TCP segments with their checksum left partial
    /// ([`Packet::partial_checksum`]; Linux with a virtio-net header): the
    /// stack then never sums the bytes it sends to local clients, and the
    /// kernel sums them only if a packet leaves the machine. Otherwise
    /// every checksum is complete.
    pub partial_checksums: bool,
}

impl Default for TunnelConfig {
    fn default() -> Self {
        Self {
            mtu: 65_000,
            cidrs: Vec::new(),
            tcp_receive_buffer: 256 * 1024,
            tcp_send_buffer: 1024 * 1024,
            tx_queue: 1024,
            udp_idle: devnet_proto::udp::IDLE,
            dns_idle: devnet_proto::udp::DNS_IDLE,
            max_udp_associations: devnet_proto::udp::MAX_ASSOCIATIONS,
            relay_high_water: 512 * 1024,
            relay_turn: 128 * 1024,
            partial_checksums: false,
        }
    }
}

/// Counters for `devnet status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunnelStats {
    pub tcp_flows: usize,
    pub pending_opens: usize,
    pub udp_associations: usize,
    /// Associations forgotten: idle, or the oldest when the table was full.
    pub udp_expired: u64,
    pub packets_in: u64,
    pub packets_out: u64,
    pub dropped_not_routed: u64,
    /// Packets from the laptop that do not parse, and datagrams from the
    /// relay too large for one packet of the MTU.
    pub dropped_malformed: u64,
    pub refused: u64,
    pub unreachable: u64,
    /// The most bytes the relay connection's transmit queue held after a
    /// poll (bounded by [`TunnelConfig::relay_high_water`] plus one turn).
    pub relay_queue_peak: usize,
    /// Connections that got a closed connection's socket (and its buffers)
    /// rather than newly allocated ones.
    pub sockets_reused: u64,
}

#[derive(Debug)]
enum Flow {
    /// The SYN is held until the relay answers the open.
    Opening { stream: StreamId, syn: Vec<u8> },
    Established {
        /// `None` once the stream is gone (reset, or the relay connection
        /// dropped) while the socket still sends its RST or FIN.
        stream: Option<StreamId>,
        socket: SocketHandle,
        fin_to_client: bool,
        fin_to_relay: bool,
        /// Bytes through the socket's buffers, both ways: a bound on how
        /// much of them the flow made resident.
        moved: u64,
    },
}

type FlowKey = (SocketAddr, SocketAddr);

/// A UDP association: the relay's id for a (client, destination) pair, and
/// when a datagram last went either way.
#[derive(Debug, Clone, Copy)]
struct UdpAssoc {
    id: u32,
    last_used: Instant,
}

/// How often idle associations are looked for: often enough to bound
/// memory, rarely enough that a busy poll loop never walks the table.
const UDP_SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The userspace stack. See the crate docs.
pub struct Tunnel {
    config: TunnelConfig,
    iface: Interface,
    device: QueueDevice,
    sockets: SocketSet<'static>,
    flows: HashMap<FlowKey, Flow>,
    by_stream: HashMap<StreamId, FlowKey>,
    udp: HashMap<FlowKey, UdpAssoc>,
    udp_by_assoc: HashMap<u32, FlowKey>,
    next_assoc: u32,
    next_udp_sweep: Instant,
    conn: Option<Connection>,
    epoch: Instant,
    /// The time of the last [`poll`](Tunnel::poll): packets arrive between
    /// polls and are stamped with it.
    now: Instant,
    stats: TunnelStats,
    relay_name: Option<String>,
    /// Flows that may send toward the relay, rebuilt on each pump (kept to
    /// reuse its allocation), and where the next round-robin pass starts.
    uplink: Vec<(StreamId, SocketHandle, FlowKey)>,
    uplink_cursor: usize,
    /// Closed sockets kept for the next connections (at most
    /// [`SPARE_SOCKETS`]): a new connection then allocates and zeroes no
    /// buffers on its way to the SYN-ACK.
    spare_sockets: Vec<tcp::Socket<'static>>,
    /// What [`handle_relay_input`](Tunnel::handle_relay_input) put straight
    /// into sockets, per stream, to credit once the input is handled.
    delivered: devnet_proto::Taken,
}

/// Relay → client bytes straight from the relay's input into the client's
/// smoltcp socket, when nothing of that stream waits in the connection's
/// buffer: one copy fewer per byte downloaded (see `pump` for the rest).
struct IntoSockets<'a> {
    sockets: &'a mut SocketSet<'static>,
    flows: &'a mut HashMap<FlowKey, Flow>,
    by_stream: &'a HashMap<StreamId, FlowKey>,
    delivered: &'a mut devnet_proto::Taken,
}

impl devnet_proto::Deliver for IntoSockets<'_> {
    fn deliver(&mut self, id: StreamId, data: &[u8]) -> usize {
        let Some(key) = self.by_stream.get(&id) else { return 0 };
        let Some(Flow::Established { stream: Some(_), socket, fin_to_client: false, moved, .. }) =
            self.flows.get_mut(key)
        else {
            return 0;
        };
        let sock = self.sockets.get_mut::<tcp::Socket>(*socket);
        if matches!(sock.state(), tcp::State::Listen | tcp::State::SynReceived) || !sock.can_send() {
            return 0;
        }
        let n = sock.send_slice(data).unwrap_or(0);
        *moved += n as u64;
        self.delivered.add(id, n);
        n
    }
}

/// Closed sockets kept for reuse: enough for bursts of short connections,
/// few enough that an idle tunnel holds little (each holds two
/// buffers, [`TunnelConfig::tcp_receive_buffer`] and
/// [`TunnelConfig::tcp_send_buffer`], resident only as far as they were used).
const SPARE_SOCKETS: usize = 8;

/// Only a socket whose flow moved at most this much is kept as a spare: a
/// bulk flow's buffers are resident in full, and eight of them would hold
/// 16 MiB for nothing; a short connection's hold a few pages.
const SPARE_MAX_MOVED: u64 = 64 * 1024;

/// The addresses smoltcp itself uses. Only the routes through them matter:
/// with any-IP on, the stack answers for every destination, and replies
/// leave through a default route via its own address.
const STACK_V4: Ipv4Address = Ipv4Address::new(169, 254, 77, 1);
const STACK_V6: Ipv6Address = Ipv6Address::new(0xfe80, 0, 0, 0, 0, 0, 0xde7, 1);

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel").field("config", &self.config).field("stats", &self.stats()).finish_non_exhaustive()
    }
}

impl Tunnel {
    /// A tunnel with no relay connection yet.
    pub fn new(config: TunnelConfig, pool: BufferPool, now: Instant) -> Self {
        let mut device = QueueDevice::new(config.mtu, config.tx_queue, config.partial_checksums, pool);
        let epoch = now;
        let mut iface = Interface::new(IfaceConfig::new(HardwareAddress::Ip), &mut device, smol_now(epoch, now));
        iface.set_any_ip(true);
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(STACK_V4), 32));
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv6(STACK_V6), 128));
        });
        let _ = iface.routes_mut().add_default_ipv4_route(STACK_V4);
        let _ = iface.routes_mut().add_default_ipv6_route(STACK_V6);
        Self {
            config,
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            flows: HashMap::new(),
            by_stream: HashMap::new(),
            udp: HashMap::new(),
            udp_by_assoc: HashMap::new(),
            next_assoc: 1,
            next_udp_sweep: now + UDP_SWEEP_EVERY,
            conn: None,
            epoch,
            now,
            stats: TunnelStats::default(),
            relay_name: None,
            uplink: Vec::new(),
            uplink_cursor: 0,
            delivered: devnet_proto::Taken::default(),
            spare_sockets: Vec::new(),
        }
    }

    /// Installs a fresh, established relay connection. Flows carried by a
    /// previous connection were already reset by [`detach`](Self::detach).
    pub fn attach(&mut self, conn: Connection) {
        self.conn = Some(conn);
    }

    /// Drops the relay connection: every flow it carried is reset, since a
    /// new connection cannot resume them.
    pub fn detach(&mut self) -> Option<Connection> {
        let keys: Vec<FlowKey> = self.flows.keys().copied().collect();
        for key in keys {
            self.fail_flow(key, OpenStatus::Unreachable);
        }
        self.udp.clear();
        self.udp_by_assoc.clear();
        self.conn.take()
    }

    /// The relay connection, to feed it timeouts and to take its transmit
    /// bytes (bytes read from the relay go in through
    /// [`handle_relay_input`](Self::handle_relay_input)). Call
    /// [`poll`](Self::poll) after feeding it.
    pub fn connection_mut(&mut self) -> Option<&mut Connection> {
        self.conn.as_mut()
    }

    /// Feeds the relay connection bytes read from the relay, putting
    /// stream data straight into the clients' sockets where it can (see
    /// [`devnet_proto::Deliver`]). Call [`poll`](Self::poll) after a batch
    /// of reads; a protocol error shows there too.
    pub fn handle_relay_input(&mut self, bytes: &[u8], now: Instant) -> Result<(), devnet_proto::ConnectionError> {
        let Self { conn, sockets, flows, by_stream, delivered, .. } = self;
        let Some(conn) = conn.as_mut() else { return Ok(()) };
        let mut into = IntoSockets { sockets, flows, by_stream, delivered };
        let result = conn.handle_input_with(bytes, now, &mut into);
        for (id, n) in delivered.drain() {
            conn.credit_consumed(id, n);
        }
        result
    }

    /// The relay connection.
    pub fn connection(&self) -> Option<&Connection> {
        self.conn.as_ref()
    }

    /// Changes which destinations the tunnel carries (a path re-check moved
    /// CIDRs between direct and tunnel). Flows already open keep going.
    pub fn set_cidrs(&mut self, cidrs: Vec<IpNet>) {
        self.config.cidrs = cidrs;
    }

    /// The relay's name from its handshake, once connected.
    pub fn relay_name(&self) -> Option<&str> {
        self.relay_name.as_deref()
    }

    /// Counters.
    pub fn stats(&self) -> TunnelStats {
        let pending = self.flows.values().filter(|f| matches!(f, Flow::Opening { .. })).count();
        TunnelStats {
            tcp_flows: self.flows.len() - pending,
            pending_opens: pending,
            udp_associations: self.udp.len(),
            ..self.stats
        }
    }

    /// A buffer to read one packet from the TUN device into, for
    /// [`handle_read`](Self::handle_read): the MTU's worth of initialised
    /// bytes, from the pool.
    pub fn read_buffer(&self) -> Vec<u8> {
        self.device.pool.take_filled(self.config.mtu)
    }

    /// Returns a packet taken with [`pop_packet`](Self::pop_packet) to the
    /// pool, once written.
    pub fn recycle(&self, packet: Packet) {
        self.device.pool.recycle(packet);
    }

    /// The next packet to write to the TUN device.
    pub fn pop_packet(&mut self) -> Option<Packet> {
        let p = self.device.tx.pop_front();
        if p.is_some() {
            self.stats.packets_out += 1;
        }
        p
    }

    /// Whether the stack holds packets for the TUN device.
    pub fn has_packets(&self) -> bool {
        !self.device.tx.is_empty()
    }

    /// Handles one packet (all of `packet`). Call [`poll`](Self::poll)
    /// after a batch of them.
    pub fn handle_packet(&mut self, packet: Vec<u8>) {
        self.take_packet(Packet::whole(packet));
    }

    /// Handles a packet read from the TUN device into `buf`, a buffer from
    /// [`read_buffer`](Self::read_buffer): the packet is its first `len`
    /// bytes. The buffer goes back to the pool whole, so the packet is
    /// never copied out of it first, nor the next read buffer zero-filled.
    pub fn handle_read(&mut self, buf: Vec<u8>, len: usize) {
        self.take_packet(Packet::prefix(buf, len));
    }

    fn take_packet(&mut self, packet: Packet) {
        self.stats.packets_in += 1;
        let inbound = match packet::classify(&packet) {
            Ok(i) => i,
            Err(e) => {
                trace!(?e, "dropping malformed packet");
                self.stats.dropped_malformed += 1;
                self.device.pool.recycle(packet);
                return;
            }
        };
        match inbound {
            Inbound::Tcp { src, dst, syn, ack, .. } => {
                if !self.routed(dst.ip()) {
                    self.stats.dropped_not_routed += 1;
                    self.device.pool.recycle(packet);
                    return;
                }
                let key = (src, dst);
                match self.flows.get(&key) {
                    Some(Flow::Established { .. }) => self.device.rx.push_back(packet),
                    Some(Flow::Opening { .. }) => self.device.pool.recycle(packet), // a SYN retransmit
                    None if syn && !ack => self.start_open(key, packet),
                    // Segments of unknown connections: smoltcp answers with a RST.
                    None => self.device.rx.push_back(packet),
                }
            }
            Inbound::Udp { src, dst, payload } => {
                if self.routed(dst.ip()) {
                    self.send_udp((src, dst), &packet[payload.0..payload.1]);
                } else {
                    self.stats.dropped_not_routed += 1;
                }
                self.device.pool.recycle(packet);
            }
            Inbound::Other => self.device.pool.recycle(packet),
        }
    }

    fn routed(&self, ip: IpAddr) -> bool {
        self.config.cidrs.iter().any(|net| net.contains(&ip))
    }

    fn start_open(&mut self, key: FlowKey, syn: Packet) {
        let opened = match self.conn.as_mut() {
            Some(conn) if conn.is_established() => conn.open(key.1),
            _ => {
                debug!(dst = %key.1, "no relay connection: refusing");
                self.answer_unreachable(&syn, Unreachable::Host);
                self.device.pool.recycle(syn);
                return;
            }
        };
        match opened {
            Ok(stream) => {
                debug!(src = %key.0, dst = %key.1, stream, "opening through relay");
                self.by_stream.insert(stream, key);
                // Held in a Vec of its own size: a pool buffer is MTU-sized
                // (64 KiB) and the relay's answer may take a while.
                self.flows.insert(key, Flow::Opening { stream, syn: syn.to_vec() });
                self.device.pool.recycle(syn);
            }
            Err(e) => {
                debug!(dst = %key.1, error = %e, "cannot open stream");
                self.answer_unreachable(&syn, Unreachable::Host);
                self.device.pool.recycle(syn);
            }
        }
    }

    fn answer_unreachable(&mut self, original: &[u8], why: Unreachable) {
        let mut out = self.device.pool.take(128);
        packet::icmp_unreachable(&mut out, original, why);
        self.stats.unreachable += 1;
        self.device.tx.push_back(Packet::whole(out));
    }

    fn send_udp(&mut self, key: FlowKey, payload: &[u8]) {
        if !self.conn.as_ref().is_some_and(Connection::is_established) {
            return;
        }
        let now = self.now;
        let id = match self.udp.get_mut(&key) {
            Some(a) => {
                a.last_used = now;
                a.id
            }
            None => self.new_association(key),
        };
        if let Some(conn) = self.conn.as_mut() {
            let _ = conn.send_datagram(id, key.1, payload);
        }
    }

    /// A fresh id (never one still in use, even after the counter wraps),
    /// making room first when the table is full.
    fn new_association(&mut self, key: FlowKey) -> u32 {
        if self.udp.len() >= self.config.max_udp_associations.max(1) {
            let oldest = self.udp.iter().min_by_key(|(_, a)| a.last_used).map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                self.forget_association(oldest);
            }
        }
        while self.udp_by_assoc.contains_key(&self.next_assoc) {
            self.next_assoc = self.next_assoc.wrapping_add(1).max(1);
        }
        let id = self.next_assoc;
        self.next_assoc = self.next_assoc.wrapping_add(1).max(1);
        self.udp.insert(key, UdpAssoc { id, last_used: self.now });
        self.udp_by_assoc.insert(id, key);
        id
    }

    fn forget_association(&mut self, key: FlowKey) {
        if let Some(a) = self.udp.remove(&key) {
            self.udp_by_assoc.remove(&a.id);
            self.stats.udp_expired += 1;
        }
    }

    /// Forgets associations idle longer than their timeout; runs at most
    /// once per [`UDP_SWEEP_EVERY`].
    fn sweep_udp(&mut self, now: Instant) {
        if now < self.next_udp_sweep {
            return;
        }
        self.next_udp_sweep = now + UDP_SWEEP_EVERY;
        let (idle, dns_idle) = (self.config.udp_idle, self.config.dns_idle);
        let expired: Vec<FlowKey> = self
            .udp
            .iter()
            .filter(|((_, dst), a)| {
                now.saturating_duration_since(a.last_used) >= devnet_proto::udp::idle_limit(dst.port(), idle, dns_idle)
            })
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            trace!(client = %key.0, dst = %key.1, "UDP association expired");
            self.forget_association(key);
        }
    }

    /// When [`poll`](Self::poll) must next run, at the latest.
    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        let stack = self
            .iface
            .poll_delay(smol_now(self.epoch, now), &self.sockets)
            .map(|d| now + Duration::from_micros(d.total_micros()));
        let conn = self.conn.as_ref().and_then(Connection::poll_timeout);
        match (stack, conn) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the stack: handles relay events, moves bytes between sockets and
    /// streams, and lets smoltcp send and receive. Returns the relay
    /// connection's terminal error if it closed.
    pub fn poll(&mut self, now: Instant) -> Option<devnet_proto::ConnectionError> {
        self.now = now;
        self.sweep_udp(now);
        let mut closed = None;
        loop {
            if let Some(conn) = self.conn.as_mut() {
                conn.handle_timeout(now);
            }
            while let Some(event) = self.conn.as_mut().and_then(Connection::poll_event) {
                if let Some(err) = self.handle_event(event) {
                    closed = Some(err);
                }
            }
            let stamp = smol_now(self.epoch, now);
            self.iface.poll_maintenance(stamp);
            while self.iface.poll_ingress_single(stamp, &mut self.device, &mut self.sockets)
                != PollIngressSingleResult::None
            {}
            // What the clients sent moves toward the relay before smoltcp
            // answers them, so the ACK of those bytes also carries the
            // window they left free: one packet to the client where an ACK
            // and then a window update were two, each a write to the TUN
            // device and a pass through the client's TCP.
            let moved = self.pump();
            while self.iface.poll_egress(stamp, &mut self.device, &mut self.sockets) != PollResult::None {}
            if !moved {
                // Nothing moved: smoltcp has nothing new to send.
                break;
            }
            if !self.device.rx.is_empty() && self.device.tx.len() >= self.config.tx_queue {
                // The transmit queue is full: the packets still queued wait.
                break;
            }
        }
        if let Some(conn) = self.conn.as_ref() {
            self.stats.relay_queue_peak = self.stats.relay_queue_peak.max(conn.transmit().len());
        }
        closed
    }

    fn handle_event(&mut self, event: Event) -> Option<devnet_proto::ConnectionError> {
        match event {
            Event::Opened { id } => self.complete_open(id),
            Event::OpenFailed { id, status, message } => {
                debug!(id, ?status, %message, "relay could not connect");
                if let Some(key) = self.by_stream.remove(&id) {
                    self.fail_flow(key, status);
                }
            }
            Event::Reset { id, message } => {
                debug!(id, %message, "relay reset stream");
                if let Some(key) = self.by_stream.remove(&id) {
                    self.orphan(key);
                }
            }
            Event::Datagram { assoc, payload, .. } => {
                // An answer to a forgotten association has nowhere to go.
                if let Some(&(client, dst)) = self.udp_by_assoc.get(&assoc) {
                    // A datagram that does not fit one packet of the TUN's
                    // MTU cannot be written (and past 64 KiB its length
                    // fields would wrap): dropped, as a router would.
                    let header = if dst.is_ipv4() { 20 + 8 } else { 40 + 8 };
                    if header + payload.len() > self.config.mtu.min(usize::from(u16::MAX)) {
                        debug!(%dst, len = payload.len(), mtu = self.config.mtu, "dropping a datagram larger than the MTU");
                        self.stats.dropped_malformed += 1;
                        return None;
                    }
                    if let Some(a) = self.udp.get_mut(&(client, dst)) {
                        a.last_used = self.now;
                    }
                    let mut out = self.device.pool.take(payload.len() + 48);
                    packet::udp(&mut out, dst, client, &payload);
                    self.device.tx.push_back(Packet::whole(out));
                }
            }
            Event::Closed { error } => return Some(error),
            // Data, FIN and credit are picked up by `pump`, which looks at
            // every stream's buffers anyway.
            Event::Readable { .. } | Event::Writable { .. } | Event::Finished { .. } => {}
            Event::Connected { peer } => self.relay_name = Some(peer),
            Event::OpenRequested { .. } | Event::GoAway { .. } => {}
        }
        None
    }

    fn complete_open(&mut self, stream: StreamId) {
        let Some(&key) = self.by_stream.get(&stream) else {
            return;
        };
        let Some(Flow::Opening { syn, .. }) = self.flows.remove(&key) else {
            return;
        };
        let mut socket = match self.spare_sockets.pop() {
            // `listen` resets a closed socket: state, sequence numbers,
            // timers and both buffers (emptied, so none of the last flow's
            // bytes can be read or sent again). What it keeps are the
            // options set below, and duplicate-ACK bookkeeping that the
            // new flow's first ACK overwrites.
            Some(spare) => {
                self.stats.sockets_reused += 1;
                spare
            }
            None => {
                let mut socket = tcp::Socket::new(
                    tcp::SocketBuffer::new(vec![0; self.config.tcp_receive_buffer]),
                    tcp::SocketBuffer::new(vec![0; self.config.tcp_send_buffer]),
                );
                socket.set_nagle_enabled(false);
                socket.set_ack_delay(None);
                socket
            }
        };
        let endpoint = IpListenEndpoint { addr: Some(key.1.ip().into()), port: key.1.port() };
        if socket.listen(endpoint).is_err() {
            self.recycle(Packet::whole(syn));
            return;
        }
        let handle = self.sockets.add(socket);
        self.flows.insert(
            key,
            Flow::Established {
                stream: Some(stream),
                socket: handle,
                fin_to_client: false,
                fin_to_relay: false,
                moved: 0,
            },
        );
        // Replay the held SYN: smoltcp answers it with the SYN-ACK now.
        self.device.rx.push_back(Packet::whole(syn));
    }

    fn fail_flow(&mut self, key: FlowKey, status: OpenStatus) {
        match self.flows.remove(&key) {
            Some(Flow::Opening { syn, stream }) => {
                self.by_stream.remove(&stream);
                match status {
                    OpenStatus::Refused => {
                        let mut out = self.device.pool.take(64);
                        let seq = match packet::classify(&syn) {
                            Ok(Inbound::Tcp { seq, .. }) => seq,
                            _ => 0,
                        };
                        packet::tcp_reset(&mut out, key.1, key.0, seq);
                        self.stats.refused += 1;
                        self.device.tx.push_back(Packet::whole(out));
                    }
                    OpenStatus::Denied => self.answer_unreachable(&syn, Unreachable::Prohibited),
                    _ => self.answer_unreachable(&syn, Unreachable::Host),
                }
                self.recycle(Packet::whole(syn));
            }
            Some(flow @ Flow::Established { .. }) => {
                self.flows.insert(key, flow);
                self.orphan(key);
            }
            None => {}
        }
    }

    /// Aborts the client's connection (smoltcp sends a RST) and forgets its
    /// stream; the socket is removed once closed.
    fn orphan(&mut self, key: FlowKey) {
        if let Some(Flow::Established { stream, socket, .. }) = self.flows.get_mut(&key) {
            if let Some(id) = stream.take() {
                self.by_stream.remove(&id);
            }
            self.sockets.get_mut::<tcp::Socket>(*socket).abort();
        }
    }

    /// Moves bytes between smoltcp sockets and relay streams. Returns whether
    /// anything moved (so another smoltcp poll may send more).
    fn pump(&mut self) -> bool {
        let mut progressed = self.pump_uplink();
        let Self { flows, sockets, conn, by_stream, spare_sockets, .. } = self;
        let mut finished = Vec::new();
        for (key, flow) in flows.iter_mut() {
            let Flow::Established { stream, socket, fin_to_client, fin_to_relay, moved } = flow else {
                continue;
            };
            let sock = sockets.get_mut::<tcp::Socket>(*socket);
            let (Some(id), Some(conn)) = (*stream, conn.as_mut()) else {
                if !sock.is_open() {
                    finished.push(*key);
                }
                continue;
            };
            if matches!(sock.state(), tcp::State::Listen | tcp::State::SynReceived) {
                continue;
            }
            // Client → relay moved in `pump_uplink` already.
            if !*fin_to_relay && !sock.may_recv() {
                // The client sent FIN and every byte before it was forwarded.
                conn.finish(id);
                *fin_to_relay = true;
                progressed = true;
            }
            // Relay → client.
            while sock.can_send() {
                let (a, _) = conn.peek(id);
                let n = if a.is_empty() { 0 } else { sock.send_slice(a).unwrap_or(0) };
                if n == 0 {
                    break;
                }
                conn.consume(id, n);
                *moved += n as u64;
                progressed = true;
            }
            if !*fin_to_client && conn.is_read_closed(id) {
                sock.close();
                *fin_to_client = true;
                progressed = true;
            }
            if matches!(sock.state(), tcp::State::Closed | tcp::State::TimeWait) {
                if conn.contains(id) && !(*fin_to_client && *fin_to_relay) {
                    conn.reset(id, "the client reset the connection");
                }
                finished.push(*key);
            }
        }
        for key in finished {
            if let Some(Flow::Established { socket, stream, moved, .. }) = flows.remove(&key) {
                let socket = sockets.remove(socket);
                if spare_sockets.len() < SPARE_SOCKETS
                    && moved <= SPARE_MAX_MOVED
                    && let smoltcp::socket::Socket::Tcp(socket) = socket
                {
                    // Closed or in TIME-WAIT, and out of the set: nothing
                    // more is sent for it (the client's late segments get a
                    // RST, as before).
                    spare_sockets.push(socket);
                }
                if let Some(id) = stream {
                    by_stream.remove(&id);
                }
            }
        }
        progressed
    }

    /// Client → relay, straight from smoltcp's buffers into frames: flows
    /// take turns of at most [`TunnelConfig::relay_turn`] bytes from a
    /// rotating start, and none moves while the connection's transmit queue
    /// holds [`TunnelConfig::relay_high_water`] or more. What stays in a
    /// socket closes that client's TCP window, which is the backpressure a
    /// sender understands; the queue stays small, so neither memory nor the
    /// wait of a new stream's frames grows with the number of streams.
    fn pump_uplink(&mut self) -> bool {
        let Self { flows, sockets, conn, uplink, uplink_cursor, config, .. } = self;
        let Some(conn) = conn.as_mut() else {
            return false;
        };
        if conn.transmit().len() >= config.relay_high_water {
            return false;
        }
        uplink.clear();
        uplink.extend(flows.iter().filter_map(|(key, flow)| match flow {
            Flow::Established { stream: Some(id), socket, .. } => Some((*id, *socket, *key)),
            _ => None,
        }));
        if uplink.is_empty() {
            return false;
        }
        let turn = config.relay_turn.max(1);
        let count = uplink.len();
        let mut progressed = false;
        loop {
            let mut moved = false;
            for i in 0..count {
                let at = (*uplink_cursor + i) % count;
                if conn.transmit().len() >= config.relay_high_water {
                    // This flow's turn comes first next time.
                    *uplink_cursor = at;
                    return true;
                }
                let (id, handle, key) = uplink[at];
                let sock = sockets.get_mut::<tcp::Socket>(handle);
                if matches!(sock.state(), tcp::State::Listen | tcp::State::SynReceived) {
                    continue;
                }
                let mut left = turn;
                while left > 0 && sock.can_recv() && conn.send_capacity(id) > 0 {
                    match sock.recv(|buf| {
                        let take = buf.len().min(left);
                        let n = conn.write(id, &buf[..take]).unwrap_or(0);
                        (n, n)
                    }) {
                        Ok(n) if n > 0 => {
                            left -= n;
                            moved = true;
                        }
                        _ => break,
                    }
                }
                if left < turn
                    && let Some(Flow::Established { moved: flow_moved, .. }) = flows.get_mut(&key)
                {
                    *flow_moved += (turn - left) as u64;
                }
            }
            // The next pass starts one flow later, so the first place rotates.
            *uplink_cursor = (*uplink_cursor + 1) % count;
            progressed |= moved;
            if !moved {
                return progressed;
            }
        }
    }
}

fn smol_now(epoch: Instant, now: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(now.saturating_duration_since(epoch).as_micros() as i64)
}

#[cfg(test)]
mod tests;

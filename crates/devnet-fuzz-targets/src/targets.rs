//! The target bodies. Each panics (with a message naming the property) when
//! devnet gets something wrong on the input it is fed.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use devnet_dns::NamePolicy;
use devnet_dns::rewrite::{self, Handling};
use devnet_ipc::codec::{self, Decoder, FrameError};
use devnet_ipc::message::{ClientMsg, ServerMsg};
use devnet_model::Secret;
use devnet_model::profile::{ProfileFile, parse_cidrs};
use devnet_netstack::checksum::{finish, pseudo_sum, sum};
use devnet_netstack::{BufferPool, Tunnel, TunnelConfig};
use devnet_proto::frame::MAX_DATA_PAYLOAD;
use devnet_proto::{Config, Connection, Event, Frame, OpenStatus, RejectCode, StreamId};
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::Name;
use hickory_proto::serialize::binary::BinDecodable;
use ipnet::IpNet;
use smoltcp::wire::{Icmpv4Packet, Icmpv6Packet, IpAddress, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket};

use crate::input::Input;

// ---- wire decoder -----------------------------------------------------------

/// The relay protocol's frame decoder, fed a byte stream as a connection
/// reads it: each decoded frame encodes back to exactly the bytes it came
/// from (the encoding is canonical), uses no more bytes than it was given,
/// and every strict prefix of it asks for more bytes instead of failing.
pub fn proto_frame(data: &[u8]) {
    let mut rest = data;
    loop {
        match Frame::decode(rest) {
            Ok(Some((frame, used))) => {
                assert!((5..=rest.len()).contains(&used), "decode used {used} of {} bytes", rest.len());
                let mut again = Vec::new();
                frame.encode(&mut again);
                assert_eq!(again, rest[..used], "encode(decode(x)) != x for {frame:?}");
                for cut in 0..used {
                    assert_eq!(Frame::decode(&rest[..cut]), Ok(None), "a {cut}-byte prefix of {frame:?}");
                }
                rest = &rest[used..];
            }
            Ok(None) => break,
            Err(_) => break,
        }
    }
}

// ---- connection state machine -----------------------------------------------

const TOKEN: &str = "fuzz-token";

fn proto_config() -> Config {
    Config {
        name: "fuzz".into(),
        token: TOKEN.into(),
        // Small, so that window violations and the stream limit are reached.
        stream_window: 1024,
        max_streams: 4,
        ..Config::default()
    }
}

/// A client and a server connection, handshaken.
fn connected_pair(now: Instant) -> (Connection, Connection) {
    let mut client = Connection::client(proto_config(), now);
    let mut server = Connection::server(proto_config(), now);
    for _ in 0..2 {
        let up = client.transmit().to_vec();
        client.advance_transmit(up.len());
        server.handle_input(&up, now).expect("a valid handshake is accepted by the server");
        let down = server.transmit().to_vec();
        server.advance_transmit(down.len());
        client.handle_input(&down, now).expect("a valid handshake is accepted by the client");
    }
    assert!(client.is_established() && server.is_established(), "handshake did not complete");
    while client.poll_event().is_some() {}
    while server.poll_event().is_some() {}
    (client, server)
}

const ADDRS: [&str; 4] = ["10.96.0.10:53", "10.96.0.20:80", "[fd00:96::20]:443", "192.0.2.1:22"];

fn pick_addr(input: &mut Input<'_>) -> SocketAddr {
    let i = usize::from(input.u8()) % ADDRS.len();
    ADDRS[i].parse().expect("literal address")
}

/// What the fuzzer, as the peer, granted and what the connection under test
/// sent, per stream: a connection never sends more than it was granted.
#[derive(Default)]
struct Credit {
    granted: HashMap<StreamId, u64>,
    sent: HashMap<StreamId, u64>,
}

/// A byte stream decoded alongside the connection's own decoding of it.
#[derive(Default)]
struct Shadow {
    buf: Vec<u8>,
    broken: bool,
}

impl Shadow {
    /// Appends bytes and calls `each` with every whole frame; `false` once
    /// the stream stops decoding.
    fn feed(&mut self, bytes: &[u8], mut each: impl FnMut(&Frame<'_>)) -> bool {
        if self.broken {
            return false;
        }
        self.buf.extend_from_slice(bytes);
        let mut consumed = 0;
        loop {
            match Frame::decode(&self.buf[consumed..]) {
                Ok(Some((frame, used))) => {
                    each(&frame);
                    consumed += used;
                }
                Ok(None) => break,
                Err(_) => {
                    self.broken = true;
                    return false;
                }
            }
        }
        self.buf.drain(..consumed);
        true
    }
}

/// One end of a relay connection (client or relay, the first byte says)
/// after a valid handshake, or a relay still waiting for the client's
/// `Hello`, fed frames and raw bytes by the fuzzer as its
/// peer and driven by its application through the public API. Checked
/// after every step: what it sends always decodes as frames; it never sends
/// more stream bytes than the peer granted; it buffers at most its window
/// per stream and tracks at most `max_streams`; once closed it stays closed
/// with nothing tracked.
pub fn proto_connection(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8();
    let server_side = mode & 1 == 0;
    let mut now = Instant::now();
    let (client, server) = connected_pair(now);
    let mut conn = if server_side { server } else { client };
    if mode & 2 != 0 {
        // A relay that has read a client's preface and waits for its Hello:
        // what an unauthenticated peer reaches.
        conn = Connection::server(proto_config(), now);
        conn.handle_input(&devnet_proto::preface(), now).expect("the preface is accepted");
    }
    // Such a relay's first bytes, with its Welcome or Reject, are its own preface.
    let mut preface_owed = mode & 2 != 0;
    let config = proto_config();
    let window = u64::from(config.stream_window);

    let mut inbound = Shadow::default();
    let mut outbound = Shadow::default();
    let mut credit = Credit::default();
    let mut ids: Vec<StreamId> = Vec::new();
    let mut requested: Vec<StreamId> = Vec::new();
    let mut fresh_id: StreamId = 1;
    let mut steps = 0;

    while !input.is_empty() && steps < 256 {
        steps += 1;
        let mut bytes = Vec::new();
        match input.u8() % 16 {
            // Raw bytes from the peer.
            0 => bytes.extend_from_slice(input.short_bytes()),
            // A well-formed frame from the peer.
            1..=5 => {
                let id = match input.u8() {
                    b if b & 0x80 == 0 && !ids.is_empty() => ids[usize::from(b) % ids.len()],
                    0xff => input.u32(),
                    _ => {
                        fresh_id += 2;
                        fresh_id
                    }
                };
                let text = input.short_str();
                let payload_len = usize::from(input.u16()) % 4096;
                let payload = vec![0x5a; payload_len];
                let frame = match input.u8() % 13 {
                    0 => Frame::Hello { token: text, client: "peer" },
                    1 => Frame::Welcome { server: text, heartbeat_ms: input.u32() },
                    2 => Frame::Reject { code: RejectCode::Unavailable, message: text },
                    3 => Frame::Open { id, addr: pick_addr(&mut input), window: input.u32() % 4096 },
                    4 => {
                        let status = match input.u8() % 5 {
                            0 => OpenStatus::Connected,
                            1 => OpenStatus::Refused,
                            2 => OpenStatus::Unreachable,
                            3 => OpenStatus::TimedOut,
                            _ => OpenStatus::Denied,
                        };
                        Frame::OpenResult { id, status, window: input.u32() % 4096, message: text }
                    }
                    5 => Frame::Data { id, payload: &payload },
                    6 => Frame::Window { id, increment: input.u32() },
                    7 => Frame::Fin { id },
                    8 => Frame::Reset { id, message: text },
                    9 => Frame::Datagram { assoc: input.u32(), addr: pick_addr(&mut input), payload: &payload },
                    10 => Frame::Ping { nonce: input.u64() },
                    11 => Frame::Pong { nonce: input.u64() },
                    _ => Frame::GoAway { message: text },
                };
                frame.encode(&mut bytes);
            }
            // The application.
            6..=11 => {
                let id = if ids.is_empty() { input.u32() } else { ids[usize::from(input.u8()) % ids.len()] };
                match input.u8() % 10 {
                    0 => {
                        if let Ok(id) = conn.open(pick_addr(&mut input)) {
                            ids.push(id);
                        }
                    }
                    1 => {
                        if let Some(id) = requested.pop() {
                            let _ = conn.accept(id);
                        }
                    }
                    2 => {
                        if let Some(id) = requested.pop() {
                            conn.refuse(id, OpenStatus::Refused, "no");
                        }
                    }
                    3 => {
                        let n = usize::from(input.u16()) % 8192;
                        if let Ok(taken) = conn.write(id, &vec![0xa5; n]) {
                            assert!(taken <= n, "write took {taken} of {n} bytes");
                        }
                    }
                    4 => {
                        let mut buf = vec![0; usize::from(input.u16()) % 2048];
                        let before = conn.readable(id);
                        let n = conn.read(id, &mut buf);
                        assert!(n <= buf.len() && n <= before, "read {n} bytes of {before} into {}", buf.len());
                    }
                    5 => conn.finish(id),
                    6 => conn.reset(id, "fuzz"),
                    7 => {
                        let payload = vec![1; usize::from(input.u16())];
                        let _ = conn.send_datagram(input.u32(), pick_addr(&mut input), &payload);
                    }
                    8 => conn.go_away("fuzz"),
                    _ => conn.close("fuzz"),
                }
            }
            // Time passes.
            _ => {
                now += Duration::from_millis(u64::from(input.u16()));
                conn.handle_timeout(now);
            }
        }

        if !bytes.is_empty() {
            let was_closed = conn.is_closed();
            let granted = &mut credit.granted;
            inbound.feed(&bytes, |frame| match *frame {
                // Every grant ever made for the id: an upper bound of the
                // credit the connection may have, whatever order they came in.
                Frame::Open { id, window, .. } | Frame::OpenResult { id, window, .. } => {
                    *granted.entry(id).or_default() += u64::from(window)
                }
                Frame::Window { id, increment } => *granted.entry(id).or_default() += u64::from(increment),
                _ => {}
            });
            // In two reads, cut where the fuzzer says: a frame's head, or
            // its payload, may end one read (a `Data` payload is then taken
            // as it arrives).
            let cut = usize::from(input.u16()) % (bytes.len() + 1);
            for read in [&bytes[..cut], &bytes[cut..]] {
                let result = conn.handle_input(read, now);
                if was_closed {
                    assert_eq!(result, Ok(()), "a closed connection ignores input");
                }
            }
        }

        // What it sends decodes, and stays within the peer's grants.
        let mut out = conn.transmit().to_vec();
        conn.advance_transmit(out.len());
        if preface_owed && !out.is_empty() {
            assert!(out.starts_with(&devnet_proto::preface()), "a relay's first bytes are not its preface");
            out.drain(..devnet_proto::PREFACE_LEN);
            preface_owed = false;
        }
        let sent = &mut credit.sent;
        let granted = &credit.granted;
        let decodes = outbound.feed(&out, |frame| {
            if let Frame::Data { id, payload } = *frame {
                let total = sent.entry(id).or_default();
                *total += payload.len() as u64;
                let allowed = granted.get(&id).copied().unwrap_or(0);
                assert!(*total <= allowed, "sent {total} bytes on stream {id} with {allowed} granted");
            }
        });
        assert!(decodes, "the connection sent bytes that do not decode as frames");

        while let Some(event) = conn.poll_event() {
            match event {
                Event::OpenRequested { id, .. } => {
                    requested.push(id);
                    ids.push(id);
                }
                Event::Closed { .. } => {
                    assert!(conn.is_closed(), "Closed event on an open connection");
                    assert_eq!(conn.stream_count(), 0, "a closed connection still tracks streams");
                }
                _ => {}
            }
        }
        assert!(conn.stream_count() <= config.max_streams, "{} streams tracked", conn.stream_count());
        for &id in &ids {
            let buffered = conn.readable(id) as u64;
            assert!(buffered <= window, "stream {id} buffers {buffered} bytes with a window of {window}");
        }
    }
}

// ---- packets into the netstack ---------------------------------------------

const NET_MTU: usize = 65_000;

fn routed_cidrs() -> Vec<IpNet> {
    ["10.96.0.0/16", "fd00:96::/112"].iter().map(|c| c.parse().expect("literal CIDR")).collect()
}

/// Laptop-side sources and destinations, routed and not.
const CLIENTS: [&str; 4] = ["192.168.10.2:40000", "192.168.10.2:40001", "[fd00:10::2]:40000", "[fd00:10::2]:40001"];
const DESTS: [&str; 6] =
    ["10.96.0.20:80", "10.96.0.10:53", "10.97.0.1:80", "[fd00:96::20]:80", "[fd00:96::a]:53", "[fd00:97::1]:80"];

/// A laptop source and a destination of one family, chosen by `pick`.
fn pick_flow(pick: u8) -> (SocketAddr, SocketAddr) {
    let v6 = pick & 1 == 1;
    let client = CLIENTS[usize::from(pick >> 1) % 2 + if v6 { 2 } else { 0 }].parse().expect("literal");
    let dest = DESTS[usize::from(pick >> 2) % 3 + if v6 { 3 } else { 0 }].parse().expect("literal");
    (client, dest)
}

/// An IP packet carrying `transport` (whose checksum field is at
/// `csum_at`), with valid header and transport checksums.
fn ip_packet(src: IpAddr, dst: IpAddr, proto: u8, mut transport: Vec<u8>, csum_at: usize) -> Vec<u8> {
    let len = transport.len();
    let c = finish(sum(pseudo_sum(src, dst, proto, len), &transport));
    transport[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    let mut out = Vec::with_capacity(40 + len);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.extend_from_slice(&[0x45, 0]);
            out.extend_from_slice(&((20 + len) as u16).to_be_bytes());
            out.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            let c = finish(sum(0, &out));
            out[10..12].copy_from_slice(&c.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&(len as u16).to_be_bytes());
            out.extend_from_slice(&[proto, 64]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        _ => unreachable!("callers pick both addresses from one family"),
    }
    out.extend_from_slice(&transport);
    out
}

fn tcp_packet(from: SocketAddr, to: SocketAddr, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + payload.len());
    t.extend_from_slice(&from.port().to_be_bytes());
    t.extend_from_slice(&to.port().to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0x10, 0x00, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    ip_packet(from.ip(), to.ip(), 6, t, 16)
}

fn udp_packet(from: SocketAddr, to: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(8 + payload.len());
    t.extend_from_slice(&from.port().to_be_bytes());
    t.extend_from_slice(&to.port().to_be_bytes());
    t.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    t.extend_from_slice(&[0, 0]);
    t.extend_from_slice(payload);
    ip_packet(from.ip(), to.ip(), 17, t, 6)
}

/// Sequence numbers per TCP flow (client, server), so the fuzzer can send
/// segments the stack accepts without guessing its initial sequence number.
#[derive(Default, Clone, Copy)]
struct TcpTrack {
    client_next: u32,
    server_next: u32,
}

struct Net {
    tunnel: Tunnel,
    relay: Connection,
    now: Instant,
    cidrs: Vec<IpNet>,
    requested: Vec<StreamId>,
    streams: Vec<StreamId>,
    assocs: Vec<(u32, SocketAddr)>,
    tcp: HashMap<(SocketAddr, SocketAddr), TcpTrack>,
    partial_checksums: bool,
}

impl Net {
    fn routed(&self, ip: IpAddr) -> bool {
        self.cidrs.iter().any(|n| n.contains(&ip))
    }

    fn reconnect(&mut self) {
        let (client, relay) = connected_pair(self.now);
        let _ = self.tunnel.detach();
        self.tunnel.attach(client);
        self.relay = relay;
        self.requested.clear();
        self.streams.clear();
        self.assocs.clear();
    }

    /// Delivers what each side queued, polls the tunnel, and checks every
    /// packet it writes toward the laptop and every request the relay gets.
    fn exchange(&mut self) {
        for _ in 0..4 {
            let _ = self.tunnel.poll(self.now);
            if let Some(conn) = self.tunnel.connection_mut() {
                let up = conn.transmit().to_vec();
                conn.advance_transmit(up.len());
                if !up.is_empty() {
                    let r = self.relay.handle_input(&up, self.now);
                    assert_eq!(r, Ok(()), "the tunnel broke the protocol with a real relay");
                }
                let down = self.relay.transmit().to_vec();
                self.relay.advance_transmit(down.len());
                if !down.is_empty() && self.tunnel.connection().is_some() {
                    let r = self.tunnel.handle_relay_input(&down, self.now);
                    assert_eq!(r, Ok(()), "the tunnel's connection refused a real relay's bytes");
                }
            }
            while let Some(event) = self.relay.poll_event() {
                match event {
                    Event::OpenRequested { id, addr } => {
                        assert!(self.routed(addr.ip()), "the tunnel asked the relay to dial {addr}, not routed");
                        self.requested.push(id);
                    }
                    Event::Datagram { assoc, addr, payload } => {
                        assert!(self.routed(addr.ip()), "the tunnel sent a datagram to {addr}, not routed");
                        assert!(payload.len() <= NET_MTU, "a {}-byte datagram from a packet", payload.len());
                        if !self.assocs.iter().any(|(a, _)| *a == assoc) {
                            self.assocs.push((assoc, addr));
                        }
                    }
                    _ => {}
                }
            }
        }
        let _ = self.tunnel.poll(self.now);
        while let Some(packet) = self.tunnel.pop_packet() {
            match packet.partial_checksum() {
                Some(left) => {
                    assert!(self.partial_checksums, "a checksum left partial for a device that cannot finish it");
                    // Finished as the kernel would (`skb_checksum_help`),
                    // then checked like every complete one.
                    let mut finished = packet.to_vec();
                    let (start, at) = (usize::from(left.start), usize::from(left.start + left.offset));
                    assert!(at + 2 <= finished.len(), "a partial checksum's field beyond the packet");
                    let c = finish(sum(0, &finished[start..]));
                    finished[at..at + 2].copy_from_slice(&c.to_be_bytes());
                    self.check_emitted(&finished);
                }
                None => self.check_emitted(&packet),
            }
            self.tunnel.recycle(packet);
        }
    }

    fn check_emitted(&mut self, p: &[u8]) {
        assert!(p.len() <= NET_MTU, "a {}-byte packet for an MTU of {NET_MTU}", p.len());
        let (src, dst, proto, body) = match p.first().map(|b| b >> 4) {
            Some(4) => {
                let ip = Ipv4Packet::new_checked(p).expect("the tunnel wrote a malformed IPv4 packet");
                assert!(ip.verify_checksum(), "IPv4 header checksum");
                assert_eq!(usize::from(ip.total_len()), p.len(), "IPv4 total length");
                let body = &p[usize::from(ip.header_len())..];
                (IpAddr::V4(ip.src_addr()), IpAddr::V4(ip.dst_addr()), ip.next_header(), body)
            }
            Some(6) => {
                let ip = Ipv6Packet::new_checked(p).expect("the tunnel wrote a malformed IPv6 packet");
                assert_eq!(40 + usize::from(ip.payload_len()), p.len(), "IPv6 payload length");
                (IpAddr::V6(ip.src_addr()), IpAddr::V6(ip.dst_addr()), ip.next_header(), &p[40..])
            }
            other => panic!("the tunnel wrote a packet of IP version {other:?}"),
        };
        assert!(self.routed(src), "the tunnel wrote a packet from {src}, an address it does not route");
        let (s, d): (IpAddress, IpAddress) = (src.into(), dst.into());
        match proto {
            IpProtocol::Tcp => {
                let tcp = TcpPacket::new_checked(body).expect("the tunnel wrote a malformed TCP segment");
                assert!(tcp.verify_checksum(&s, &d), "TCP checksum");
                let key = (SocketAddr::new(dst, tcp.dst_port()), SocketAddr::new(src, tcp.src_port()));
                let len = tcp.payload().len() as u32 + u32::from(tcp.syn()) + u32::from(tcp.fin());
                let track = self.tcp.entry(key).or_default();
                track.server_next = tcp.seq_number().0 as u32 + len;
            }
            IpProtocol::Udp => {
                let udp = UdpPacket::new_checked(body).expect("the tunnel wrote a malformed UDP datagram");
                assert_eq!(usize::from(udp.len()), body.len(), "UDP length");
                assert!(udp.verify_checksum(&s, &d), "UDP checksum");
            }
            IpProtocol::Icmp => {
                let icmp = Icmpv4Packet::new_checked(body).expect("the tunnel wrote a malformed ICMP message");
                assert!(icmp.verify_checksum(), "ICMP checksum");
            }
            IpProtocol::Icmpv6 => {
                let (IpAddr::V6(s6), IpAddr::V6(d6)) = (src, dst) else { unreachable!("an IPv6 packet") };
                let icmp = Icmpv6Packet::new_checked(body).expect("the tunnel wrote a malformed ICMPv6 message");
                assert!(icmp.verify_checksum(&s6, &d6), "ICMPv6 checksum");
            }
            other => panic!("the tunnel wrote a packet of protocol {other}"),
        }
    }
}

/// The laptop's userspace stack with a real relay-side connection: packets
/// from the TUN device (hand-built TCP and UDP with valid checksums, or raw
/// bytes), the relay's answers, and time, as the fuzzer orders them.
/// Checked: the relay is only ever asked to reach routed destinations; every
/// packet written toward the laptop is well-formed (lengths, checksums), fits
/// the MTU and comes from a routed address; the tunnel never breaks the
/// protocol with a real relay.
pub fn netstack_tunnel(data: &[u8]) {
    let mut input = Input::new(data);
    let now = Instant::now();
    let cidrs = routed_cidrs();
    // Half the inputs leave TCP checksums to the device, as on Linux; the
    // first byte's top bit says which (it is still read as the first step,
    // so the committed corpus keeps its meaning).
    let partial_checksums = data.first().is_some_and(|b| b & 0x80 != 0);
    let config = TunnelConfig {
        mtu: NET_MTU,
        cidrs: cidrs.clone(),
        tcp_receive_buffer: 4096,
        tcp_send_buffer: 4096,
        tx_queue: 64,
        max_udp_associations: 4,
        partial_checksums,
        ..TunnelConfig::default()
    };
    let (client, relay) = connected_pair(now);
    let mut tunnel = Tunnel::new(config, BufferPool::default(), now);
    tunnel.attach(client);
    let mut net = Net {
        tunnel,
        relay,
        now,
        cidrs,
        requested: Vec::new(),
        streams: Vec::new(),
        assocs: Vec::new(),
        tcp: HashMap::new(),
        partial_checksums,
    };

    let mut steps = 0;
    while !input.is_empty() && steps < 128 {
        steps += 1;
        match input.u8() % 12 {
            // Raw bytes from the TUN device.
            0 => {
                let n = usize::from(input.u16()) % 2048;
                let packet = input.bytes(n).to_vec();
                net.tunnel.handle_packet(packet);
            }
            // A TCP segment from the laptop.
            1..=3 => {
                let (client, dest) = pick_flow(input.u8());
                let flags = input.u8();
                let track = net.tcp.get(&(client, dest)).copied().unwrap_or_default();
                let mode = input.u8();
                let seq = if mode & 1 == 0 { track.client_next } else { input.u32() };
                let ack = if mode & 2 == 0 { track.server_next } else { input.u32() };
                let payload = input.short_bytes();
                let packet = tcp_packet(client, dest, seq, ack, flags, payload);
                let used = payload.len() as u32 + u32::from(flags & 0x02 != 0) + u32::from(flags & 0x01 != 0);
                net.tcp.entry((client, dest)).or_default().client_next = seq.wrapping_add(used);
                net.tunnel.handle_packet(packet);
            }
            // A UDP datagram from the laptop.
            4 => {
                let (client, dest) = pick_flow(input.u8());
                let payload = input.short_bytes();
                net.tunnel.handle_packet(udp_packet(client, dest, payload));
            }
            // The relay answers an open.
            5 => {
                if let Some(id) = net.requested.pop() {
                    match input.u8() % 6 {
                        0 | 1 => {
                            if net.relay.accept(id).is_ok() {
                                net.streams.push(id);
                            }
                        }
                        2 => net.relay.refuse(id, OpenStatus::Refused, "refused"),
                        3 => net.relay.refuse(id, OpenStatus::Denied, "denied"),
                        4 => net.relay.refuse(id, OpenStatus::TimedOut, "timed out"),
                        _ => net.relay.refuse(id, OpenStatus::Unreachable, "unreachable"),
                    }
                }
            }
            // The relay acts on a stream it accepted.
            6 | 7 => {
                if !net.streams.is_empty() {
                    let id = net.streams[usize::from(input.u8()) % net.streams.len()];
                    match input.u8() % 4 {
                        0 | 1 => {
                            let n = usize::from(input.u16()) % 8192;
                            let _ = net.relay.write(id, &vec![0x42; n]);
                        }
                        2 => net.relay.finish(id),
                        _ => net.relay.reset(id, "reset by the fuzzer"),
                    }
                    let mut sink = vec![0; 65536];
                    while net.relay.read(id, &mut sink) > 0 {}
                }
            }
            // The relay answers a datagram, of any size the protocol carries.
            8 => {
                if !net.assocs.is_empty() {
                    let (assoc, addr) = net.assocs[usize::from(input.u8()) % net.assocs.len()];
                    let len = (usize::from(input.u16()) << 1) % (MAX_DATA_PAYLOAD + 1);
                    let _ = net.relay.send_datagram(assoc, addr, &vec![0x33; len]);
                }
            }
            // Time passes.
            9 | 10 => net.now += Duration::from_millis(u64::from(input.u16() % 8192)),
            // The relay connection is replaced (or goes away first).
            _ => match input.u8() % 3 {
                0 => net.reconnect(),
                1 => net.relay.go_away("leaving"),
                _ => net.relay.close("closing"),
            },
        }
        net.exchange();
    }
}

// ---- DNS rewriter -----------------------------------------------------------

fn dns_policy() -> NamePolicy {
    let namespaces = ["demo".to_owned(), "default".to_owned(), "com".to_owned()];
    NamePolicy::new("cluster.local", &namespaces, Some("default")).expect("a valid policy")
}

/// The stub's query rewriter and answer restorer, fed DNS packets. Checked:
/// a query goes to the cluster only for a name under the cluster domain, and
/// the packet sent there decodes with the client's id and that name; an
/// answer built for it restores to the client's name; a malformed query of
/// 12 bytes or more is answered FORMERR with its id; a restored answer keeps
/// every record and its id.
pub fn dns_rewrite(data: &[u8]) {
    let Some((&mode, packet)) = data.split_first() else { return };
    let policy = dns_policy();
    if mode & 1 == 0 {
        match rewrite::query(packet, &policy) {
            Ok(Handling::Cluster { packet: sent, original, asked }) => {
                assert!(policy.domain().zone_of(&asked), "{asked} sent to the cluster, outside its domain");
                let msg = Message::from_bytes(&sent).expect("the rewritten query decodes");
                let theirs = Message::from_bytes(packet).expect("it decoded before the rewrite");
                assert_eq!(msg.metadata.id, theirs.metadata.id, "the rewritten query keeps the id");
                assert_eq!(msg.queries.len(), 1);
                assert_eq!(msg.queries[0].name(), &asked, "the cluster is asked the rewritten name");
                // The cluster answers for the name it was asked...
                let mut answer = msg.clone();
                answer.metadata.message_type = MessageType::Response;
                let record = hickory_proto::rr::Record::from_rdata(
                    asked.clone(),
                    5,
                    hickory_proto::rr::RData::A(hickory_proto::rr::rdata::A(Ipv4Addr::new(10, 96, 0, 20))),
                );
                answer.answers.push(record);
                if let Ok(bytes) = answer.to_vec() {
                    // ...and the client gets its own name back.
                    let restored = rewrite::restore(&bytes, &original, &asked).expect("a cluster answer restores");
                    let got = Message::from_bytes(&restored).expect("the restored answer decodes");
                    assert_eq!(got.queries[0].name(), &original, "the answer is for the name the client asked");
                    // (The query may carry records of its own: ours is the last.)
                    let ours = got.answers.last().expect("the record survives");
                    assert_eq!(ours.name, original, "the records carry the client's name");
                }
            }
            Ok(Handling::Answer(resp)) => {
                let msg = Message::from_bytes(&resp).expect("our own answer decodes");
                assert_eq!(msg.metadata.response_code, ResponseCode::FormErr);
                assert_eq!(msg.metadata.id, u16::from_be_bytes([packet[0], packet[1]]), "FORMERR keeps the id");
            }
            Ok(Handling::Upstream) | Err(_) => {}
        }
    } else {
        let original = Name::from_ascii("web.demo.").expect("literal name");
        let asked = Name::from_ascii("web.demo.svc.cluster.local.").expect("literal name");
        if let Ok(restored) = rewrite::restore(packet, &original, &asked) {
            let theirs = Message::from_bytes(packet).expect("it decoded before restoring");
            let got = Message::from_bytes(&restored).expect("a restored answer decodes");
            assert_eq!(got.metadata.id, theirs.metadata.id, "restoring keeps the id");
            assert_eq!(got.answers.len(), theirs.answers.len(), "restoring keeps every record");
            assert!(got.queries.iter().all(|q| q.name() != &asked), "the asked name leaked back to the client");
        }
        let _ = rewrite::probe_answer(packet, 7);
    }
}

// ---- IPC codec --------------------------------------------------------------

/// devnetd's local protocol decoder, fed a byte stream in chunks the first
/// byte sizes, as messages for devnetd (from a client) or for a client (from
/// devnetd). Checked: every message decoded encodes and decodes back equal;
/// a too-large frame breaks the stream for good; a malformed one is skipped
/// and decoding goes on.
pub fn ipc_codec(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8();
    let chunk = usize::from(input.u8()).max(1);
    let rest = input.bytes(usize::MAX);
    if mode & 1 == 0 {
        ipc_stream::<ClientMsg>(rest, chunk);
    } else {
        ipc_stream::<ServerMsg>(rest, chunk);
    }
}

fn ipc_stream<T>(bytes: &[u8], chunk: usize)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let mut decoder = Decoder::default();
    let mut broken = false;
    for part in bytes.chunks(chunk) {
        decoder.push(part);
        loop {
            match decoder.next_msg::<T>() {
                Ok(Some(msg)) => {
                    assert!(!broken, "a message decoded after a too-large frame");
                    let frame = codec::encode(&msg).expect("a decoded message encodes");
                    let mut again = Decoder::default();
                    again.push(&frame);
                    let back = again.next_msg::<T>().expect("re-encoded message decodes").expect("whole");
                    assert_eq!(back, msg, "decode(encode(m)) != m");
                    assert!(again.into_rest().is_empty(), "encode wrote bytes past the frame");
                }
                Ok(None) => break,
                Err(e @ FrameError::TooLarge { .. }) => {
                    assert!(!e.is_recoverable());
                    broken = true;
                    break;
                }
                Err(e) => assert!(e.is_recoverable(), "{e}"),
            }
        }
    }
    assert!(decoder.into_rest().len() <= bytes.len(), "the decoder holds more than it was given");
}

// ---- profile and CIDR parsers -----------------------------------------------

fn check_cidrs(nets: &[IpNet], relay: IpAddr) {
    for (i, net) in nets.iter().enumerate() {
        assert_eq!(net.trunc(), *net, "{net} has host bits");
        assert!(net.prefix_len() >= 8, "{net} is broader than /8");
        assert!(!net.contains(&relay), "{net} covers the relay {relay}");
        for other in &nets[i + 1..] {
            assert!(!net.contains(other) && !other.contains(net), "{net} and {other} overlap");
        }
    }
}

/// A profile file as TOML text. Checked: what parses serializes and parses
/// back equal; a profile that validates routes only well-formed CIDRs that
/// neither overlap nor cover the relay, and its DNS server and probe
/// targets lie inside them, its stub on loopback, its gateways outside them.
pub fn profile_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(mut file) = ProfileFile::parse(text, Path::new("fuzz.toml")) else { return };
    let written = toml::to_string(&file).expect("a parsed profile serializes");
    let back = ProfileFile::parse(&written, Path::new("written.toml")).expect("a written profile parses");
    assert_eq!(back, file, "parse(write(profile)) != profile, written as:\n{written}");
    // Never read a token file the input names (it could be any path).
    file.token = Some(Secret::new("fuzz-token"));
    let Ok(profile) = file.validate() else { return };
    check_cidrs(&profile.cidrs, profile.relay.ip());
    let inside = |ip: IpAddr| profile.cidrs.iter().any(|n| n.contains(&ip));
    if let Some(dns) = profile.dns_server {
        assert!(inside(dns), "DNS server {dns} outside the CIDRs");
    }
    for t in &profile.probe_targets {
        assert!(inside(t.ip()), "probe target {t} outside the CIDRs");
    }
    assert!(profile.dns_stub.is_loopback(), "stub {} not on loopback", profile.dns_stub);
    assert!(!inside(profile.dns_link_address), "link address inside the CIDRs");
    for g in &profile.gateways {
        assert!(!inside(*g), "gateway {g} inside the CIDRs");
    }
    assert!(profile.mtu >= 1280, "MTU {}", profile.mtu);
}

/// `parse_cidrs` on newline-separated texts (the first line is the relay's
/// address when it parses as one). Checked: it accepts every text or none,
/// and what it accepts is well-formed, disjoint and clear of the relay.
pub fn cidr_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or_default();
    let (relay, texts): (IpAddr, Vec<String>) = match first.parse() {
        Ok(ip) => (ip, lines.map(str::to_owned).collect()),
        Err(_) => (IpAddr::V6(Ipv6Addr::LOCALHOST), text.split('\n').map(str::to_owned).collect()),
    };
    if let Ok(nets) = parse_cidrs(&texts, relay) {
        assert_eq!(nets.len(), texts.len(), "some texts were dropped silently");
        check_cidrs(&nets, relay);
    }
}

//! The tunnel against a real relay-side protocol state machine, with
//! hand-built packets and a virtual clock.

use std::time::{Duration, Instant};

use devnet_proto::{Config, Connection, Event, OpenStatus};

use super::*;
use crate::packet::{self, Inbound, flags};

struct Harness {
    tunnel: Tunnel,
    relay: Connection,
    now: Instant,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

impl Harness {
    fn new() -> Self {
        Self::with_config(TunnelConfig::default())
    }

    fn with_config(config: TunnelConfig) -> Self {
        let now = Instant::now();
        let config = TunnelConfig {
            cidrs: vec!["10.96.0.0/16".parse().expect("cidr"), "fd00:96::/112".parse().expect("cidr")],
            ..config
        };
        let mut tunnel = Tunnel::new(config, BufferPool::default(), now);
        let proto = Config { token: "t".into(), ..Config::default() };
        let mut client = Connection::client(proto.clone(), now);
        let mut relay = Connection::server(proto, now);
        for _ in 0..2 {
            let c = client.transmit().to_vec();
            client.advance_transmit(c.len());
            relay.handle_input(&c, now).expect("relay input");
            let s = relay.transmit().to_vec();
            relay.advance_transmit(s.len());
            client.handle_input(&s, now).expect("client input");
        }
        assert!(client.is_established());
        while relay.poll_event().is_some() {}
        while client.poll_event().is_some() {}
        tunnel.attach(client);
        Self { tunnel, relay, now }
    }

    /// Delivers everything queued in both directions and polls the tunnel.
    fn exchange(&mut self) {
        for _ in 0..4 {
            self.tunnel.poll(self.now);
            let conn = self.tunnel.connection_mut().expect("attached");
            let up = conn.transmit().to_vec();
            conn.advance_transmit(up.len());
            if !up.is_empty() {
                self.relay.handle_input(&up, self.now).expect("relay input");
            }
            let down = self.relay.transmit().to_vec();
            self.relay.advance_transmit(down.len());
            if !down.is_empty() {
                self.tunnel.handle_relay_input(&down, self.now).expect("client input");
            }
        }
        self.tunnel.poll(self.now);
    }

    /// The packets for the TUN device, copied out; their buffers go back
    /// to the pool as the data path's would.
    fn packets(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(p) = self.tunnel.pop_packet() {
            out.push(p.to_vec());
            self.tunnel.recycle(p);
        }
        out
    }

    fn syn(&mut self, from: &str, to: &str) {
        let mut p = Vec::new();
        packet::tcp_segment(&mut p, addr(from), addr(to), 1000, 0, flags::SYN);
        self.tunnel.handle_packet(p);
        self.exchange();
    }

    fn open_request(&mut self) -> StreamId {
        match self.relay.poll_event() {
            Some(Event::OpenRequested { id, .. }) => id,
            other => panic!("expected an open request, got {other:?}"),
        }
    }
}

#[test]
fn syn_is_held_until_the_relay_connects_then_answered() {
    let mut h = Harness::new();
    h.syn("192.168.10.2:40000", "10.96.0.20:80");
    let id = h.open_request();
    assert!(h.packets().is_empty(), "no SYN-ACK before the relay connected");
    assert_eq!(h.tunnel.stats().pending_opens, 1);

    // A retransmitted SYN does not open a second stream.
    h.syn("192.168.10.2:40000", "10.96.0.20:80");
    assert_eq!(h.relay.poll_event(), None);

    h.relay.accept(id).expect("accept");
    h.exchange();
    let packets = h.packets();
    assert_eq!(packets.len(), 1, "{packets:?}");
    let Ok(Inbound::Tcp { src, dst, syn, ack, .. }) = packet::classify(&packets[0]) else { panic!() };
    assert_eq!((src, dst, syn, ack), (addr("10.96.0.20:80"), addr("192.168.10.2:40000"), true, true));
    assert_eq!(h.tunnel.stats().tcp_flows, 1);
}

#[test]
fn refused_dials_answer_with_a_reset() {
    let mut h = Harness::new();
    h.syn("192.168.10.2:40001", "10.96.0.20:81");
    let id = h.open_request();
    h.relay.refuse(id, OpenStatus::Refused, "nothing listens");
    h.exchange();
    let packets = h.packets();
    let Ok(Inbound::Tcp { src, dst, syn, ack, .. }) = packet::classify(&packets[0]) else { panic!() };
    assert_eq!((src, dst, syn, ack), (addr("10.96.0.20:81"), addr("192.168.10.2:40001"), false, true));
    assert_eq!(packets[0][33] & flags::RST, flags::RST);
    assert_eq!(h.tunnel.stats().pending_opens, 0);
}

#[test]
fn unreachable_and_denied_answer_with_icmp() {
    for (status, v4_code) in [(OpenStatus::Unreachable, 1u8), (OpenStatus::TimedOut, 1), (OpenStatus::Denied, 13)] {
        let mut h = Harness::new();
        h.syn("192.168.10.2:40002", "10.96.9.9:80");
        let id = h.open_request();
        h.relay.refuse(id, status, "no");
        h.exchange();
        let packets = h.packets();
        assert_eq!(packets[0][9], 1, "ICMP");
        assert_eq!((packets[0][20], packets[0][21]), (3, v4_code), "{status:?}");
    }
    let mut h = Harness::new();
    h.syn("[fd00:10::2]:40003", "[fd00:96::99]:80");
    let id = h.open_request();
    h.relay.refuse(id, OpenStatus::Unreachable, "no");
    h.exchange();
    let packets = h.packets();
    assert_eq!((packets[0][6], packets[0][40], packets[0][41]), (58, 1, 3), "ICMPv6 address unreachable");
}

#[test]
fn destinations_outside_the_cidrs_are_dropped() {
    let mut h = Harness::new();
    h.syn("192.168.10.2:40004", "8.8.8.8:443");
    assert_eq!(h.relay.poll_event(), None);
    assert!(h.packets().is_empty());
    assert_eq!(h.tunnel.stats().dropped_not_routed, 1);
}

#[test]
fn udp_round_trips_through_an_association() {
    let mut h = Harness::new();
    let mut q = Vec::new();
    packet::udp(&mut q, addr("192.168.10.2:5353"), addr("10.96.0.10:53"), b"query");
    h.tunnel.handle_packet(q);
    h.exchange();
    let Some(Event::Datagram { assoc, addr: dst, payload }) = h.relay.poll_event() else { panic!() };
    assert_eq!((dst, payload.as_slice()), (addr("10.96.0.10:53"), &b"query"[..]));
    h.relay.send_datagram(assoc, dst, b"answer").expect("send");
    h.exchange();
    let packets = h.packets();
    let Ok(Inbound::Udp { src, dst, payload }) = packet::classify(&packets[0]) else { panic!() };
    assert_eq!((src, dst), (addr("10.96.0.10:53"), addr("192.168.10.2:5353")));
    assert_eq!(&packets[0][payload.0..payload.1], b"answer");
}

impl Harness {
    /// A UDP datagram from the laptop, delivered; the association id the
    /// relay saw it on.
    fn udp(&mut self, from: &str, to: &str) -> u32 {
        let mut q = Vec::new();
        packet::udp(&mut q, addr(from), addr(to), b"q");
        self.tunnel.handle_packet(q);
        self.exchange();
        match self.relay.poll_event() {
            Some(Event::Datagram { assoc, .. }) => assoc,
            other => panic!("expected a datagram, got {other:?}"),
        }
    }

    /// Whether an answer on `assoc` reaches the laptop.
    fn answered(&mut self, assoc: u32, from: &str) -> bool {
        self.relay.send_datagram(assoc, addr(from), b"a").expect("send");
        self.exchange();
        !self.packets().is_empty()
    }

    /// Moves the clock on a second at a time, so heartbeats keep the relay
    /// connection alive as on a real link.
    fn step(&mut self, by: Duration) {
        let end = self.now + by;
        while self.now < end {
            self.now = (self.now + Duration::from_secs(1)).min(end);
            self.exchange();
            while self.relay.poll_event().is_some() {}
        }
    }
}

#[test]
fn idle_udp_associations_expire_dns_sooner() {
    let mut h = Harness::new();
    let dns = h.udp("192.168.10.2:40001", "10.96.0.10:53");
    let metrics = h.udp("192.168.10.2:40002", "10.96.0.40:8125");
    assert_eq!(h.tunnel.stats().udp_associations, 2);
    h.step(Duration::from_secs(11));
    // The DNS association is gone (its late answer is dropped); the other
    // one still answers.
    assert_eq!(h.tunnel.stats().udp_associations, 1);
    assert!(!h.answered(dns, "10.96.0.10:53"));
    assert!(h.answered(metrics, "10.96.0.40:8125"));
    h.step(Duration::from_secs(61));
    assert_eq!(h.tunnel.stats().udp_associations, 0);
    assert_eq!(h.tunnel.stats().udp_expired, 2);
    assert!(!h.answered(metrics, "10.96.0.40:8125"));
}

#[test]
fn traffic_either_way_keeps_an_association() {
    let mut h = Harness::new();
    let first = h.udp("192.168.10.2:40002", "10.96.0.40:8125");
    for _ in 0..10 {
        h.step(Duration::from_secs(40));
        // Answers alone keep it too.
        assert!(h.answered(first, "10.96.0.40:8125"));
    }
    assert_eq!(h.udp("192.168.10.2:40002", "10.96.0.40:8125"), first);
    assert_eq!(h.tunnel.stats().udp_expired, 0);
}

#[test]
fn the_association_table_is_capped_least_recently_used_first() {
    let mut h = Harness::new();
    h.tunnel.config.max_udp_associations = 4;
    let ids: Vec<u32> = (0..4)
        .map(|i| {
            h.now += Duration::from_millis(10);
            h.udp(&format!("192.168.10.2:{}", 40000 + i), "10.96.0.40:8125")
        })
        .collect();
    // The oldest is used again, so the second oldest makes room.
    h.now += Duration::from_millis(10);
    assert_eq!(h.udp("192.168.10.2:40000", "10.96.0.40:8125"), ids[0]);
    let fifth = h.udp("192.168.10.2:40004", "10.96.0.40:8125");
    assert!(!ids.contains(&fifth));
    assert_eq!(h.tunnel.stats().udp_associations, 4);
    assert!(!h.answered(ids[1], "10.96.0.40:8125"));
    assert!(h.answered(ids[0], "10.96.0.40:8125"));
}

#[test]
fn association_ids_are_not_reused_while_live_after_the_counter_wraps() {
    let mut h = Harness::new();
    let first = h.udp("192.168.10.2:40000", "10.96.0.40:8125");
    assert_eq!(first, 1);
    h.tunnel.next_assoc = u32::MAX;
    assert_eq!(h.udp("192.168.10.2:40001", "10.96.0.40:8125"), u32::MAX);
    // 0 is never an id and 1 is still in use.
    assert_eq!(h.udp("192.168.10.2:40002", "10.96.0.40:8125"), 2);
}

#[test]
fn losing_the_relay_resets_pending_opens() {
    let mut h = Harness::new();
    h.syn("192.168.10.2:40005", "10.96.0.20:80");
    let _ = h.open_request();
    assert!(h.tunnel.detach().is_some());
    let packets = h.packets();
    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0][9], 1, "ICMP unreachable for the held SYN");
    // Without a relay, new SYNs are answered at once instead of hanging.
    let mut p = Vec::new();
    packet::tcp_segment(&mut p, addr("192.168.10.2:40006"), addr("10.96.0.20:80"), 1, 0, flags::SYN);
    h.tunnel.handle_packet(p);
    assert_eq!(h.packets().len(), 1);
}

#[test]
fn a_silent_relay_is_reported_by_poll() {
    let mut h = Harness::new();
    let mut closed = None;
    for _ in 0..60 {
        h.now += Duration::from_millis(100);
        if let Some(e) = h.tunnel.poll(h.now) {
            closed = Some(e);
            break;
        }
    }
    assert!(matches!(closed, Some(devnet_proto::ConnectionError::HeartbeatTimeout(_))), "{closed:?}");
}

/// Found by fuzzing (netstack_tunnel): a relay datagram of 64 KiB became a
/// UDP packet larger than the TUN's MTU whose 16-bit length fields wrapped.
#[test]
fn a_relay_datagram_larger_than_the_mtu_is_dropped_not_wrapped() {
    let mut h = Harness::new();
    let assoc = h.udp("192.168.10.2:40003", "10.96.0.10:53");
    let dst = addr("10.96.0.10:53");
    let mtu = h.tunnel.config.mtu;
    h.relay.send_datagram(assoc, dst, &vec![7; devnet_proto::frame::MAX_DATA_PAYLOAD]).expect("send");
    h.exchange();
    assert!(h.packets().is_empty(), "an oversized datagram was written to the TUN device");
    assert_eq!(h.tunnel.stats().dropped_malformed, 1);
    // The largest that fits one packet still goes through, whole.
    h.relay.send_datagram(assoc, dst, &vec![7; mtu - 28]).expect("send");
    h.exchange();
    let packets = h.packets();
    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].len(), mtu);
    let Ok(Inbound::Udp { payload, .. }) = packet::classify(&packets[0]) else { panic!("not a UDP packet") };
    assert_eq!(payload.1 - payload.0, mtu - 28);
}

/// An IPv4 TCP segment with a payload, as the laptop's kernel would send it.
fn client_segment(from: SocketAddr, to: SocketAddr, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber};
    let (IpAddr::V4(src), IpAddr::V4(dst)) = (from.ip(), to.ip()) else { panic!("IPv4 only") };
    let tcp = TcpRepr {
        src_port: from.port(),
        dst_port: to.port(),
        control: TcpControl::None,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: Some(TcpSeqNumber(ack as i32)),
        window_len: u16::MAX,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload,
    };
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 64,
    };
    let mut out = vec![0; ip.buffer_len() + tcp.buffer_len()];
    let caps = ChecksumCapabilities::default();
    let mut packet = Ipv4Packet::new_unchecked(&mut out);
    ip.emit(&mut packet, &caps);
    tcp.emit(&mut TcpPacket::new_unchecked(packet.payload_mut()), &src.into(), &dst.into(), &caps);
    out
}

/// The sequence number of the SYN-ACK among `packets` (the only packet
/// expected right after an open completes).
fn syn_ack_seq(packets: &[Vec<u8>]) -> u32 {
    use smoltcp::wire::{Ipv4Packet, TcpPacket};
    assert_eq!(packets.len(), 1, "{packets:?}");
    let ip = Ipv4Packet::new_checked(&packets[0][..]).expect("IPv4");
    let tcp = TcpPacket::new_checked(ip.payload()).expect("TCP");
    assert!(tcp.syn() && tcp.ack());
    tcp.seq_number().0 as u32
}

/// Establishes `n` client connections through the tunnel; each flow's
/// client address, its stream id at the relay, and the next client sequence
/// number and acknowledgment.
fn established_flows(h: &mut Harness, n: u16) -> Vec<(SocketAddr, StreamId, u32, u32)> {
    let dst = addr("10.96.0.20:80");
    (0..n)
        .map(|i| {
            let client = addr(&format!("192.168.10.2:{}", 41000 + i));
            h.syn(&client.to_string(), &dst.to_string());
            let id = h.open_request();
            h.relay.accept(id).expect("accept");
            h.exchange();
            let ack = syn_ack_seq(&h.packets()).wrapping_add(1);
            h.tunnel.handle_packet(client_segment(client, dst, 1001, ack, &[]));
            h.exchange();
            (client, id, 1001, ack)
        })
        .collect()
}

#[test]
fn the_relay_queue_stays_bounded_and_flows_take_turns() {
    let (high_water, turn, per_flow) = (64 * 1024, 16 * 1024, 48 * 1024);
    let mut h = Harness::with_config(TunnelConfig {
        relay_high_water: high_water,
        relay_turn: turn,
        ..TunnelConfig::default()
    });
    let flows = established_flows(&mut h, 8);
    let dst = addr("10.96.0.20:80");
    for (k, &(client, _, seq, ack)) in flows.iter().enumerate() {
        let payload: Vec<u8> = (0..per_flow).map(|i| (i as u8).wrapping_mul(7).wrapping_add(k as u8)).collect();
        h.tunnel.handle_packet(client_segment(client, dst, seq, ack, &payload));
    }
    // The last turn may straddle the mark, in frames of its own.
    use devnet_proto::frame::{DATA_OVERHEAD, MAX_DATA_PAYLOAD};
    let bound = high_water + turn + turn.div_ceil(MAX_DATA_PAYLOAD) * DATA_OVERHEAD;
    let mut received: HashMap<StreamId, Vec<u8>> = HashMap::new();
    let mut first = true;
    for _ in 0..100 {
        h.tunnel.poll(h.now);
        let conn = h.tunnel.connection_mut().expect("attached");
        let up = conn.transmit().to_vec();
        assert!(up.len() <= bound, "{} bytes queued for the relay, over {bound}", up.len());
        conn.advance_transmit(up.len());
        h.relay.handle_input(&up, h.now).expect("relay input");
        let before: HashMap<StreamId, usize> = received.iter().map(|(id, b)| (*id, b.len())).collect();
        for &(_, id, _, _) in &flows {
            let mut buf = vec![0; 256 * 1024];
            let n = h.relay.read(id, &mut buf);
            received.entry(id).or_default().extend_from_slice(&buf[..n]);
        }
        if first && !up.is_empty() {
            // The first batch: several flows got a turn, none more than one.
            let served: Vec<usize> = received
                .iter()
                .map(|(id, b)| b.len() - before.get(id).copied().unwrap_or(0))
                .filter(|&n| n > 0)
                .collect();
            assert!(
                served.len() >= high_water / turn,
                "only {} flows served in the first batch: {served:?}",
                served.len()
            );
            assert!(served.iter().all(|&n| n <= turn), "a flow took more than one turn: {served:?}");
            first = false;
        }
        let down = h.relay.transmit().to_vec();
        h.relay.advance_transmit(down.len());
        if !down.is_empty() {
            h.tunnel.handle_relay_input(&down, h.now).expect("client input");
        }
        let _ = h.packets();
        if received.values().map(Vec::len).sum::<usize>() == flows.len() * per_flow {
            break;
        }
    }
    for (k, &(_, id, _, _)) in flows.iter().enumerate() {
        let want: Vec<u8> = (0..per_flow).map(|i| (i as u8).wrapping_mul(7).wrapping_add(k as u8)).collect();
        assert!(received.get(&id) == Some(&want), "flow {k}'s bytes arrived incomplete or changed");
    }
    assert!(h.tunnel.stats().relay_queue_peak <= bound);
}

/// The payload and sequence number of a TCP segment to the client.
fn segment_payload(packet: &[u8]) -> (u32, Vec<u8>) {
    use smoltcp::wire::{Ipv4Packet, TcpPacket};
    let ip = Ipv4Packet::new_checked(packet).expect("IPv4");
    let tcp = TcpPacket::new_checked(ip.payload()).expect("TCP");
    (tcp.seq_number().0 as u32, tcp.payload().to_vec())
}

#[test]
fn a_reused_socket_carries_nothing_of_the_previous_flow() {
    let mut h = Harness::new();
    let dst = addr("10.96.0.20:80");
    let first = established_flows(&mut h, 1)[0];
    // The relay sends bytes the client never acknowledges, so they sit in
    // the socket's send buffer; the client's bytes sit unread too.
    h.relay.write(first.1, b"stale bytes for the first client").expect("write");
    h.exchange();
    assert!(!h.packets().is_empty());
    h.relay.reset(first.1, "gone");
    h.exchange();
    let _ = h.packets();
    assert_eq!(h.tunnel.stats().tcp_flows, 0);
    while h.relay.poll_event().is_some() {}

    let second = established_flows(&mut h, 1)[0];
    assert_eq!(h.tunnel.stats().sockets_reused, 1, "the closed flow's socket was not reused");
    // Nothing of the first flow is (re)sent to the second client.
    h.step(Duration::from_secs(2));
    h.exchange();
    assert!(h.packets().is_empty(), "a reused socket sent something on its own");
    h.relay.write(second.1, b"fresh").expect("write");
    h.exchange();
    let packets = h.packets();
    assert_eq!(packets.len(), 1, "{packets:?}");
    assert_eq!(segment_payload(&packets[0]), (second.3, b"fresh".to_vec()));
    // And the second client's bytes reach its own stream only.
    h.tunnel.handle_packet(client_segment(second.0, dst, second.2, second.3 + 5, b"hello"));
    h.exchange();
    let mut buf = [0u8; 64];
    let n = h.relay.read(second.1, &mut buf);
    assert_eq!(&buf[..n], b"hello");
}

#[test]
fn a_bulk_flow_s_socket_is_not_kept_as_a_spare() {
    let mut h = Harness::new();
    let dst = addr("10.96.0.20:80");
    // A short flow's socket is kept for the next connection...
    let short = established_flows(&mut h, 1)[0];
    h.tunnel.handle_packet(client_segment(short.0, dst, short.2, short.3, b"GET / HTTP/1.1\r\n\r\n"));
    h.exchange();
    h.relay.reset(short.1, "done");
    h.exchange();
    let _ = h.packets();
    while h.relay.poll_event().is_some() {}
    // ...the socket of one that moved more than a few pages is not: its
    // buffers are resident and would stay so while it waits.
    let bulk = established_flows(&mut h, 1)[0];
    assert_eq!(h.tunnel.stats().sockets_reused, 1, "the short flow's socket was not reused");
    let chunk = [7u8; 1400];
    let mut seq = bulk.2;
    let mut buf = vec![0u8; 64 * 1024];
    let mut read = 0;
    for _ in 0..(2 * SPARE_MAX_MOVED as usize).div_ceil(chunk.len()) {
        h.tunnel.handle_packet(client_segment(bulk.0, dst, seq, bulk.3, &chunk));
        seq = seq.wrapping_add(chunk.len() as u32);
        h.exchange();
        read += h.relay.read(bulk.1, &mut buf);
    }
    let _ = h.packets();
    assert!(read as u64 > SPARE_MAX_MOVED, "only {read} bytes reached the relay");
    h.relay.reset(bulk.1, "done");
    h.exchange();
    let _ = h.packets();
    while h.relay.poll_event().is_some() {}
    assert_eq!(h.tunnel.stats().tcp_flows, 0);

    // The next connection gets new buffers, not the bulk flow's.
    established_flows(&mut h, 1);
    assert_eq!(h.tunnel.stats().sockets_reused, 1, "a bulk flow's socket was kept as a spare");
}

/// A client's SYN, as the laptop's kernel would send it.
fn syn_from(client: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut syn = Vec::new();
    packet::tcp_segment(&mut syn, client, dst, 1000, 0, flags::SYN);
    syn
}

/// Puts `packet` at the start of a read buffer, as a TUN read would, with
/// bytes of an earlier, longer packet still behind it.
fn read_into_buffer(h: &Harness, packet: &[u8]) -> (Vec<u8>, usize) {
    let mut buf = h.tunnel.read_buffer();
    assert!(buf.len() >= h.tunnel.config.mtu, "a read buffer holds a packet of the MTU");
    buf[..packet.len()].copy_from_slice(packet);
    buf[packet.len()..].fill(0xAA);
    (buf, packet.len())
}

#[test]
fn packets_read_into_read_buffers_are_what_the_read_returned_and_nothing_after() {
    let mut h = Harness::new();
    let (client, dst) = (addr("192.168.10.2:42000"), addr("10.96.0.20:80"));
    let syn = syn_from(client, dst);
    let (buf, len) = read_into_buffer(&h, &syn);
    h.tunnel.handle_read(buf, len);
    h.exchange();
    let id = h.open_request();
    h.relay.accept(id).expect("accept");
    h.exchange();
    let ack = syn_ack_seq(&h.packets()).wrapping_add(1);
    // Data, with stale bytes after it in the buffer: only the packet's own
    // payload reaches the relay.
    let segment = client_segment(client, dst, 1001, ack, b"SELECT 1;");
    let (buf, len) = read_into_buffer(&h, &segment);
    h.tunnel.handle_read(buf, len);
    h.exchange();
    let mut got = vec![0; 64];
    let n = h.relay.read(id, &mut got);
    assert_eq!(&got[..n], b"SELECT 1;");
}

#[test]
fn a_read_buffer_comes_back_whole_so_the_next_read_needs_no_zero_fill() {
    let mut h = Harness::new();
    let (client, dst) = (addr("192.168.10.2:42001"), addr("10.96.0.20:80"));
    let syn = syn_from(client, dst);
    let (buf, len) = read_into_buffer(&h, &syn);
    let at = buf.as_ptr();
    h.tunnel.handle_read(buf, len);
    h.exchange();
    // The stack kept a copy of the held SYN and gave the buffer back: the
    // same allocation, every byte still there (not cut to the packet and
    // zero-filled again).
    let again = h.tunnel.read_buffer();
    assert_eq!(again.as_ptr(), at);
    assert!(again.len() >= h.tunnel.config.mtu);
    assert!(again[syn.len()..].iter().all(|&b| b == 0xAA));
    assert_eq!(&again[..syn.len()], &syn[..]);
}

#[test]
fn segments_to_the_client_are_written_into_whole_recycled_buffers() {
    use smoltcp::wire::{IpAddress, Ipv4Packet, TcpPacket};
    let mut h = Harness::new();
    let (_, id, _, _) = established_flows(&mut h, 1)[0];
    let _ = h.packets();
    // A full-size buffer of stale bytes goes back to the pool.
    let mut stale = h.tunnel.read_buffer();
    stale.fill(0xAA);
    let (at, size) = (stale.as_ptr(), stale.len());
    h.tunnel.recycle(Packet::prefix(stale, 0));
    h.relay.write(id, b"to the client").expect("write");
    h.exchange();
    let segment = h.tunnel.pop_packet().expect("a segment to the client");
    // smoltcp wrote the segment into that buffer, which was neither cut nor
    // zero-filled first: its bytes after the segment are the stale ones.
    assert_eq!((segment.buffer().as_ptr(), segment.buffer().len()), (at, size));
    assert!(segment.buffer()[segment.len()..].iter().all(|&b| b == 0xAA));
    // And the segment is whole: every header byte written, checksums right.
    let ip = Ipv4Packet::new_checked(&segment[..]).expect("IPv4");
    assert_eq!(usize::from(ip.total_len()), segment.len());
    assert!(ip.verify_checksum());
    let tcp = TcpPacket::new_checked(ip.payload()).expect("TCP");
    assert!(tcp.verify_checksum(&IpAddress::from(ip.src_addr()), &IpAddress::from(ip.dst_addr())));
    assert_eq!(tcp.payload(), b"to the client");
    h.tunnel.recycle(segment);
}

#[test]
fn with_partial_checksums_segments_leave_the_tcp_sum_to_the_device() {
    use smoltcp::wire::{IpAddress, Ipv4Packet, TcpPacket};
    for partial_checksums in [false, true] {
        let mut h = Harness::with_config(TunnelConfig { partial_checksums, ..TunnelConfig::default() });
        let (_, id, _, _) = established_flows(&mut h, 1)[0];
        let _ = h.packets();
        h.relay.write(id, b"sum me, kernel").expect("write");
        h.exchange();
        let segment = h.tunnel.pop_packet().expect("a segment to the client");
        let mut bytes = segment.to_vec();
        let left = segment.partial_checksum();
        h.tunnel.recycle(segment);
        if partial_checksums {
            // The kernel's part (skb_checksum_help): sum from `start` on,
            // the complement at `start + offset`.
            let left = left.expect("a TCP checksum left partial");
            assert_eq!((left.start, left.offset), (20, 16));
            let (start, at) = (usize::from(left.start), usize::from(left.start + left.offset));
            let c = checksum::finish(checksum::sum(0, &bytes[start..]));
            bytes[at..at + 2].copy_from_slice(&c.to_be_bytes());
        } else {
            assert_eq!(left, None, "complete checksums unless the device finishes them");
        }
        let ip = Ipv4Packet::new_checked(&bytes[..]).expect("IPv4");
        assert!(ip.verify_checksum());
        let tcp = TcpPacket::new_checked(ip.payload()).expect("TCP");
        assert!(tcp.verify_checksum(&IpAddress::from(ip.src_addr()), &IpAddress::from(ip.dst_addr())));
        assert_eq!(tcp.payload(), b"sum me, kernel");
    }
}

#[test]
fn relay_data_goes_straight_into_the_socket_and_waits_in_the_stream_when_it_is_full() {
    let mut h = Harness::with_config(TunnelConfig { tcp_send_buffer: 16 * 1024, ..TunnelConfig::default() });
    let dst = addr("10.96.0.20:80");
    // `base`: the sequence number of the first byte to the client.
    let (client, id, seq, base) = established_flows(&mut h, 1)[0];
    let _ = h.packets();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 241) as u8).collect();
    // What the socket has room for goes straight in: the stream's buffer
    // never holds it (the pump would empty it into the socket just the
    // same, so what tells is that the buffer did not grow).
    let held = |h: &Harness| h.tunnel.connection().expect("attached").buffered_capacity();
    let before = held(&h);
    h.relay.write(id, &data[..8 * 1024]).expect("write");
    h.exchange();
    assert_eq!(h.tunnel.connection().expect("attached").readable(id), 0);
    assert!(held(&h) < before + 1024, "taken straight into the socket: {} → {} bytes held", before, held(&h));
    // More than the socket holds while the client acknowledges nothing: the
    // rest waits in the stream's buffer.
    let mut written = 8 * 1024;
    written += h.relay.write(id, &data[written..]).expect("write");
    h.exchange();
    assert!(h.tunnel.connection().expect("attached").readable(id) > 0, "the socket is full: the rest waits");
    // The client acknowledges what arrives: every byte, in order.
    let mut got = Vec::new();
    for _ in 0..200 {
        let mut next = None;
        for p in h.packets() {
            let (s, payload) = segment_payload(&p);
            if !payload.is_empty() && got.len() == s.wrapping_sub(base) as usize {
                got.extend_from_slice(&payload);
                next = Some(s.wrapping_add(payload.len() as u32));
            }
        }
        if let Some(ack) = next {
            h.tunnel.handle_packet(client_segment(client, dst, seq, ack, &[]));
        }
        if written < data.len() {
            written += h.relay.write(id, &data[written..]).expect("write");
        }
        h.exchange();
        if got.len() == data.len() {
            break;
        }
    }
    assert!(got == data, "{} of {} bytes arrived, or out of order", got.len(), data.len());
}

#[test]
fn the_ack_of_bytes_taken_toward_the_relay_carries_the_window_they_freed() {
    use smoltcp::wire::{Ipv4Packet, TcpPacket};
    // Small enough that smoltcp's window needs no scaling.
    let buffer = 32 * 1024;
    let mut h = Harness::with_config(TunnelConfig { tcp_receive_buffer: buffer, ..TunnelConfig::default() });
    let (client, id, seq, ack) = established_flows(&mut h, 1)[0];
    let _ = h.packets();
    let payload: Vec<u8> = (0..24 * 1024u32).map(|i| (i % 251) as u8).collect();
    h.tunnel.handle_packet(client_segment(client, addr("10.96.0.20:80"), seq, ack, &payload));
    h.tunnel.poll(h.now);
    // One packet to the client: it acknowledges every byte and offers the
    // whole buffer again, because the bytes went toward the relay before
    // smoltcp answered (an ACK offering 8 KiB and then a window update
    // were two packets).
    let packets = h.packets();
    assert_eq!(packets.len(), 1, "one answer to the client, got {}", packets.len());
    let ip = Ipv4Packet::new_checked(&packets[0][..]).expect("IPv4");
    let tcp = TcpPacket::new_checked(ip.payload()).expect("TCP");
    assert!(tcp.ack());
    assert_eq!(tcp.ack_number().0 as u32, seq.wrapping_add(payload.len() as u32), "every byte acknowledged");
    assert_eq!(usize::from(tcp.window_len()), buffer, "the whole buffer offered again");
    // And the bytes are on their way, unchanged.
    let conn = h.tunnel.connection_mut().expect("attached");
    let up = conn.transmit().to_vec();
    conn.advance_transmit(up.len());
    h.relay.handle_input(&up, h.now).expect("relay input");
    let mut got = vec![0; 64 * 1024];
    let n = h.relay.read(id, &mut got);
    assert_eq!(&got[..n], &payload[..]);
}

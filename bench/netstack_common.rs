//! What the sans-IO benchmarks share: IPv4 TCP segments as the laptop's
//! kernel would write them to the TUN, and one exchange between the
//! tunnel's relay connection and the relay's.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use devnet_netstack::{BufferPool, Tunnel, TunnelConfig};
use devnet_proto::{Config, Connection, Event};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber};

pub fn segment(
    from: SocketAddr,
    to: SocketAddr,
    control: TcpControl,
    seq: u32,
    ack: Option<u32>,
    payload: &[u8],
) -> Vec<u8> {
    let (IpAddr::V4(src), IpAddr::V4(dst)) = (from.ip(), to.ip()) else { unreachable!("IPv4 only") };
    let tcp = TcpRepr {
        src_port: from.port(),
        dst_port: to.port(),
        control,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
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

/// Bytes per read of the relay link: one TLS record's plaintext, which is
/// what the shells' reads hand over, so 64 KiB frames arrive cut.
const RECORD: usize = 16 * 1024;

/// Moves every queued byte both ways between the tunnel's connection and
/// the relay's, then polls the tunnel; returns the relay's events.
pub fn exchange(tunnel: &mut Tunnel, relay: &mut Connection, now: Instant) -> Vec<Event> {
    tunnel.poll(now);
    let conn = tunnel.connection_mut().expect("attached");
    let up = conn.transmit().to_vec();
    conn.advance_transmit(up.len());
    for record in up.chunks(RECORD) {
        relay.handle_input(record, now).expect("relay input");
    }
    let down = relay.transmit().to_vec();
    relay.advance_transmit(down.len());
    for record in down.chunks(RECORD) {
        tunnel.handle_relay_input(record, now).expect("client input");
    }
    tunnel.poll(now);
    std::iter::from_fn(|| relay.poll_event()).collect()
}

/// A tunnel for 10.96.0.0/16 whose relay connection has logged in, and the
/// relay's end of it.
pub fn logged_in(now: Instant) -> (Tunnel, Connection) {
    let config = TunnelConfig { cidrs: vec!["10.96.0.0/16".parse().expect("cidr")], ..TunnelConfig::default() };
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
    while relay.poll_event().is_some() {}
    while client.poll_event().is_some() {}
    tunnel.attach(client);
    (tunnel, relay)
}

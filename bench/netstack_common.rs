//! What the sans-IO benchmarks share: IPv4 TCP segments as the laptop's
//! kernel would write them to the TUN, and one exchange between the
//! tunnel's relay connection and the relay's.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use devnet_netstack::Tunnel;
use devnet_proto::{Connection, Event};
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

/// Moves every queued byte both ways between the tunnel's connection and
/// the relay's, then polls the tunnel; returns the relay's events.
pub fn exchange(tunnel: &mut Tunnel, relay: &mut Connection, now: Instant) -> Vec<Event> {
    tunnel.poll(now);
    let conn = tunnel.connection_mut().expect("attached");
    let up = conn.transmit().to_vec();
    conn.advance_transmit(up.len());
    relay.handle_input(&up, now).expect("relay input");
    let down = relay.transmit().to_vec();
    relay.advance_transmit(down.len());
    tunnel.connection_mut().expect("attached").handle_input(&down, now).expect("client input");
    tunnel.poll(now);
    std::iter::from_fn(|| relay.poll_event()).collect()
}

//! A sans-IO bulk transfer through the laptop's stack, for instruction
//! counts that do not depend on the machine's load (issue 14). Up (the
//! default): hand-built TCP segments from `FLOWS` clients → [`Tunnel`]
//! (smoltcp, pump) → the client [`Connection`] → the relay's `Connection` →
//! read and dropped. Down: the relay's `Connection` writes → the tunnel →
//! smoltcp's segments to the clients, which acknowledge what arrived.
//!
//! ```text
//! cargo build --release -p devnet-netstack --example netstack_bulk
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/bulk.out \
//!     target/release/examples/netstack_bulk 64 1 [down]
//! callgrind_annotate /tmp/bulk.out | head -30   # total Ir; ÷ bytes = Ir/byte
//! ```
//!
//! Arguments: MiB to move in all (default 64), flows (default 1), `up` or
//! `down` (default up). It prints the bytes moved and the relay queue's
//! peak; a wrong byte count panics.

use std::net::SocketAddr;
use std::time::Instant;

use devnet_proto::Event;
use smoltcp::wire::{Ipv4Packet, TcpControl, TcpPacket};

#[path = "netstack_common.rs"]
mod netstack_common;
use netstack_common::{exchange, logged_in, segment};

const SEGMENT: usize = 60_000;

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().map_or(64, |a| a.parse().expect("MiB"));
    let flows: u16 = args.next().map_or(1, |a| a.parse().expect("flows"));
    let down = match args.next().as_deref() {
        None | Some("up") => false,
        Some("down") => true,
        Some(other) => panic!("the direction is up or down, not {other}"),
    };
    let now = Instant::now();
    let (mut tunnel, mut relay) = logged_in(now);

    let dst: SocketAddr = "10.96.0.20:80".parse().expect("addr");
    // (client address, relay stream, next sequence number, acknowledgment)
    let mut open = Vec::new();
    for i in 0..flows {
        let from: SocketAddr = format!("192.168.10.2:{}", 40000 + i).parse().expect("addr");
        tunnel.handle_packet(segment(from, dst, TcpControl::Syn, 1000, None, &[]));
        let id = exchange(&mut tunnel, &mut relay, now)
            .into_iter()
            .find_map(|e| match e {
                Event::OpenRequested { id, .. } => Some(id),
                _ => None,
            })
            .expect("open requested");
        relay.accept(id).expect("accept");
        exchange(&mut tunnel, &mut relay, now);
        let syn_ack = tunnel.pop_packet().expect("SYN-ACK");
        let seq = {
            let ip = Ipv4Packet::new_checked(&syn_ack[..]).expect("IPv4");
            TcpPacket::new_checked(ip.payload()).expect("TCP").seq_number().0 as u32
        };
        tunnel.recycle(syn_ack);
        let ack = seq.wrapping_add(1);
        tunnel.handle_packet(segment(from, dst, TcpControl::None, 1001, Some(ack), &[]));
        open.push((from, id, 1001u32, ack));
    }
    exchange(&mut tunnel, &mut relay, now);

    let total = mib * 1024 * 1024;
    if down {
        download(&mut tunnel, &mut relay, &mut open, dst, total, now);
        return;
    }
    let payload = vec![0x5a; SEGMENT];
    let (mut sent, mut received) = (0usize, 0usize);
    let mut sink = vec![0; 1 << 20];
    while received < total {
        for (from, _, seq, ack) in &mut open {
            if sent < total {
                let n = SEGMENT.min(total - sent);
                tunnel.handle_packet(segment(*from, dst, TcpControl::Psh, *seq, Some(*ack), &payload[..n]));
                *seq = seq.wrapping_add(n as u32);
                sent += n;
            }
        }
        exchange(&mut tunnel, &mut relay, now);
        for &(_, id, _, _) in &open {
            received += relay.read(id, &mut sink);
        }
        while let Some(p) = tunnel.pop_packet() {
            tunnel.recycle(p);
        }
    }
    assert_eq!(received, total);
    println!("moved {received} bytes over {flows} flows; relay queue peak {} bytes", tunnel.stats().relay_queue_peak);
}

/// The relay writes `total` bytes over the flows in turn; each client takes
/// the segments smoltcp sends it and acknowledges what arrived in order.
fn download(
    tunnel: &mut devnet_netstack::Tunnel,
    relay: &mut devnet_proto::Connection,
    open: &mut [(SocketAddr, u32, u32, u32)],
    dst: SocketAddr,
    total: usize,
    now: Instant,
) {
    let payload = vec![0x5a; SEGMENT];
    let (mut written, mut delivered) = (0usize, 0usize);
    while delivered < total {
        for &(_, id, _, _) in open.iter() {
            if written < total {
                written += relay.write(id, &payload[..SEGMENT.min(total - written)]).expect("relay write");
            }
        }
        exchange(tunnel, relay, now);
        let mut acked = false;
        while let Some(p) = tunnel.pop_packet() {
            let ip = Ipv4Packet::new_checked(&p[..]).expect("IPv4");
            let tcp = TcpPacket::new_checked(ip.payload()).expect("TCP");
            let flow = open.iter_mut().find(|f| f.0.port() == tcp.dst_port()).expect("a segment to a client");
            if tcp.seq_number().0 as u32 == flow.3 && !tcp.payload().is_empty() {
                flow.3 = flow.3.wrapping_add(tcp.payload().len() as u32);
                delivered += tcp.payload().len();
                acked = true;
            }
            tunnel.recycle(p);
        }
        if acked {
            for &(from, _, seq, ack) in open.iter() {
                tunnel.handle_packet(segment(from, dst, TcpControl::None, seq, Some(ack), &[]));
            }
        }
    }
    assert_eq!(delivered, total);
    println!(
        "moved {delivered} bytes down over {} flows; relay queue peak {} bytes",
        open.len(),
        tunnel.stats().relay_queue_peak
    );
}

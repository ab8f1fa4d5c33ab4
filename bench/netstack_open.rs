//! New connections through the laptop's stack, sans-IO, for allocation and
//! instruction counts per connection (issue 14): each one is a SYN, the
//! relay's open and accept, the handshake's ACK, a byte each way, and the
//! client's RST, through [`Tunnel`] and both [`Connection`]s.
//!
//! ```text
//! cargo build --release -p devnet-netstack --example netstack_open
//! valgrind --tool=dhat --dhat-out-file=/tmp/open.dhat \
//!     target/release/examples/netstack_open 2000   # "Total:" bytes ÷ 2000
//! valgrind --tool=callgrind target/release/examples/netstack_open 2000
//! ```
//!
//! Argument: connections (default 2000), one after another.

use std::net::SocketAddr;
use std::time::Instant;

use devnet_proto::Event;
use smoltcp::wire::{Ipv4Packet, TcpControl, TcpPacket};

#[path = "netstack_common.rs"]
mod netstack_common;
use netstack_common::{exchange, logged_in, segment};

fn main() {
    let count: u32 = std::env::args().nth(1).map_or(2000, |a| a.parse().expect("connections"));
    let now = Instant::now();
    let (mut tunnel, mut relay) = logged_in(now);

    let dst: SocketAddr = "10.96.0.20:80".parse().expect("addr");
    let mut echoed = 0;
    for i in 0..count {
        // A new client port each time, as a client's connect() picks.
        let from: SocketAddr = format!("192.168.10.2:{}", 10000 + i % 50000).parse().expect("addr");
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
        tunnel.handle_packet(segment(from, dst, TcpControl::Psh, 1001, Some(ack), b"?"));
        exchange(&mut tunnel, &mut relay, now);
        let mut byte = [0u8; 1];
        assert_eq!(relay.read(id, &mut byte), 1);
        relay.write(id, b"!").expect("write");
        exchange(&mut tunnel, &mut relay, now);
        while let Some(p) = tunnel.pop_packet() {
            let ip = Ipv4Packet::new_checked(&p[..]).expect("IPv4");
            echoed += TcpPacket::new_checked(ip.payload()).expect("TCP").payload().len();
            tunnel.recycle(p);
        }
        tunnel.handle_packet(segment(from, dst, TcpControl::Rst, 1002, Some(ack + 1), &[]));
        exchange(&mut tunnel, &mut relay, now);
        while let Some(p) = tunnel.pop_packet() {
            tunnel.recycle(p);
        }
        while relay.poll_event().is_some() {}
    }
    assert_eq!(echoed, count as usize);
    let stats = tunnel.stats();
    assert_eq!(stats.tcp_flows, 0);
    println!("{count} connections; {} reused a closed one's socket", stats.sockets_reused);
}

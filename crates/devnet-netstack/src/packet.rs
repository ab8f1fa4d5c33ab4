//! Classifying packets from the TUN device, and building the few packets the
//! stack answers with itself: TCP resets for refused dials, ICMP
//! unreachables for failed ones, and UDP datagrams from the relay.
//!
//! Parsing uses smoltcp's checked wire types, so malformed input is an
//! `Err`, never a panic. Building writes headers by hand: each is a few
//! fixed fields and a checksum, and the tests parse the result back with
//! smoltcp to verify it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use smoltcp::wire::{IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket};

use crate::checksum::{finish, fold, pseudo_sum, sum};

/// What the stack needs to know about an inbound packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inbound {
    Tcp {
        src: SocketAddr,
        dst: SocketAddr,
        syn: bool,
        ack: bool,
        seq: u32,
    },
    /// `payload` is the byte range of the UDP payload within the packet.
    Udp {
        src: SocketAddr,
        dst: SocketAddr,
        payload: (usize, usize),
    },
    Other,
}

/// A TCP checksum left for the kernel to finish, as a NIC's checksum
/// offload would: the sum over the bytes from `start` on (the TCP header
/// and payload, whose checksum field already holds the pseudo-header's
/// sum), complemented, goes at `start + offset`. Linux's TUN takes this in
/// the virtio-net header (`VIRTIO_NET_HDR_F_NEEDS_CSUM`) and finishes it
/// only where a checksum is needed: not for delivery to a local socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialChecksum {
    pub start: u16,
    pub offset: u16,
}

/// Puts the pseudo-header's sum in the checksum field of the TCP segment
/// in `packet` (smoltcp, told not to checksum TCP, left it 0), and says
/// where the rest of the checksum goes. `None`, with `packet` untouched,
/// for anything but TCP straight after an IPv4 or IPv6 header.
pub(crate) fn leave_tcp_checksum_partial(packet: &mut [u8]) -> Option<PartialChecksum> {
    let (start, pseudo) = match packet.first()? >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(&packet[..]).ok()?;
            let start = usize::from(ip.header_len());
            let len = packet.len().checked_sub(start)?;
            (ip.next_header() == IpProtocol::Tcp)
                .then(|| (start, pseudo_sum(ip.src_addr().into(), ip.dst_addr().into(), 6, len)))?
        }
        6 => {
            let ip = Ipv6Packet::new_checked(&packet[..]).ok()?;
            let len = packet.len().checked_sub(40)?;
            (ip.next_header() == IpProtocol::Tcp)
                .then(|| (40, pseudo_sum(ip.src_addr().into(), ip.dst_addr().into(), 6, len)))?
        }
        _ => return None,
    };
    const FIELD: usize = 16;
    TcpPacket::new_checked(&packet[start..]).ok()?;
    packet[start + FIELD..start + FIELD + 2].copy_from_slice(&fold(pseudo).to_be_bytes());
    Some(PartialChecksum { start: u16::try_from(start).ok()?, offset: FIELD as u16 })
}

/// Why a packet could not be classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PacketError {
    Malformed,
    BadChecksum,
    UnsupportedVersion(u8),
}

pub(crate) fn classify(packet: &[u8]) -> Result<Inbound, PacketError> {
    let version = packet.first().ok_or(PacketError::Malformed)? >> 4;
    let (src, dst, proto, offset) = match version {
        4 => {
            let ip = Ipv4Packet::new_checked(packet).map_err(|_| PacketError::Malformed)?;
            if !ip.verify_checksum() {
                return Err(PacketError::BadChecksum);
            }
            if ip.more_frags() || ip.frag_offset() != 0 {
                // Fragments carry no (or partial) transport headers; the
                // kernel does not fragment toward a TUN with our MTU.
                return Ok(Inbound::Other);
            }
            let header = usize::from(ip.header_len());
            (IpAddr::V4(ip.src_addr()), IpAddr::V4(ip.dst_addr()), ip.next_header(), header)
        }
        6 => {
            let ip = Ipv6Packet::new_checked(packet).map_err(|_| PacketError::Malformed)?;
            (IpAddr::V6(ip.src_addr()), IpAddr::V6(ip.dst_addr()), ip.next_header(), 40)
        }
        v => return Err(PacketError::UnsupportedVersion(v)),
    };
    let total = match version {
        4 => usize::from(u16::from_be_bytes([packet[2], packet[3]])),
        _ => 40 + usize::from(u16::from_be_bytes([packet[4], packet[5]])),
    };
    let body = packet.get(offset..total).ok_or(PacketError::Malformed)?;
    match proto {
        IpProtocol::Tcp => {
            let tcp = TcpPacket::new_checked(body).map_err(|_| PacketError::Malformed)?;
            Ok(Inbound::Tcp {
                src: SocketAddr::new(src, tcp.src_port()),
                dst: SocketAddr::new(dst, tcp.dst_port()),
                syn: tcp.syn(),
                ack: tcp.ack(),
                seq: tcp.seq_number().0 as u32,
            })
        }
        IpProtocol::Udp => {
            let udp = UdpPacket::new_checked(body).map_err(|_| PacketError::Malformed)?;
            let len = usize::from(udp.len());
            Ok(Inbound::Udp {
                src: SocketAddr::new(src, udp.src_port()),
                dst: SocketAddr::new(dst, udp.dst_port()),
                payload: (offset + 8, offset + len),
            })
        }
        _ => Ok(Inbound::Other),
    }
}

/// Appends an IP header for a `len`-byte payload of `proto`.
fn ip_header(out: &mut Vec<u8>, src: IpAddr, dst: IpAddr, proto: u8, len: usize) {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let start = out.len();
            let total = (20 + len) as u16;
            out.extend_from_slice(&[0x45, 0]);
            out.extend_from_slice(&total.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]); // DF, TTL 64
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            let c = finish(sum(0, &out[start..start + 20]));
            out[start + 10..start + 12].copy_from_slice(&c.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&(len as u16).to_be_bytes());
            out.extend_from_slice(&[proto, 64]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        _ => unreachable!("mixed address families"),
    }
}

/// TCP flag bits.
pub(crate) mod flags {
    #[cfg_attr(not(test), allow(dead_code))]
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

/// A bare TCP segment (no options, no payload).
pub(crate) fn tcp_segment(out: &mut Vec<u8>, from: SocketAddr, to: SocketAddr, seq: u32, ack: u32, flag_bits: u8) {
    ip_header(out, from.ip(), to.ip(), 6, 20);
    let start = out.len();
    out.extend_from_slice(&from.port().to_be_bytes());
    out.extend_from_slice(&to.port().to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&ack.to_be_bytes());
    out.extend_from_slice(&[0x50, flag_bits, 0xff, 0xff, 0, 0, 0, 0]); // data offset 5
    let c = finish(sum(pseudo_sum(from.ip(), to.ip(), 6, 20), &out[start..]));
    out[start + 16..start + 18].copy_from_slice(&c.to_be_bytes());
}

/// A TCP RST+ACK from `from` to `to`, answering a SYN with sequence `syn_seq`:
/// what a host sends when nothing listens, so `connect()` fails at once
/// with "connection refused".
pub(crate) fn tcp_reset(out: &mut Vec<u8>, from: SocketAddr, to: SocketAddr, syn_seq: u32) {
    tcp_segment(out, from, to, 0, syn_seq.wrapping_add(1), flags::RST | flags::ACK);
}

/// A UDP datagram from `from` to `to`.
pub(crate) fn udp(out: &mut Vec<u8>, from: SocketAddr, to: SocketAddr, payload: &[u8]) {
    let len = 8 + payload.len();
    ip_header(out, from.ip(), to.ip(), 17, len);
    let start = out.len();
    out.extend_from_slice(&from.port().to_be_bytes());
    out.extend_from_slice(&to.port().to_be_bytes());
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(payload);
    let mut c = finish(sum(pseudo_sum(from.ip(), to.ip(), 17, len), &out[start..]));
    if c == 0 {
        c = 0xffff;
    }
    out[start + 6..start + 8].copy_from_slice(&c.to_be_bytes());
}

/// Why a destination could not be reached, as ICMP will tell the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unreachable {
    /// No host answered (ICMP host / address unreachable).
    Host,
    /// Policy forbids it (ICMP communication administratively prohibited).
    Prohibited,
}

/// An ICMP destination-unreachable about `original`, sent back to its
/// source from the address it was sent to, so `connect()` fails at once
/// with "no route to host" instead of hanging.
pub(crate) fn icmp_unreachable(out: &mut Vec<u8>, original: &[u8], why: Unreachable) {
    let Some(&first) = original.first() else {
        return;
    };
    match first >> 4 {
        4 if original.len() >= 20 => {
            let src = IpAddr::V4(Ipv4Addr::new(original[12], original[13], original[14], original[15]));
            let dst = IpAddr::V4(Ipv4Addr::new(original[16], original[17], original[18], original[19]));
            let header_len = usize::from(first & 0x0f) * 4;
            // The original header and the first 8 bytes of its payload.
            let quoted = &original[..original.len().min(header_len + 8)];
            let code = match why {
                Unreachable::Host => 1,
                Unreachable::Prohibited => 13,
            };
            ip_header(out, dst, src, 1, 8 + quoted.len());
            let start = out.len();
            out.extend_from_slice(&[3, code, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(quoted);
            let c = finish(sum(0, &out[start..]));
            out[start + 2..start + 4].copy_from_slice(&c.to_be_bytes());
        }
        6 if original.len() >= 40 => {
            let mut s = [0u8; 16];
            s.copy_from_slice(&original[8..24]);
            let mut d = [0u8; 16];
            d.copy_from_slice(&original[24..40]);
            let (src, dst) = (IpAddr::V6(Ipv6Addr::from(s)), IpAddr::V6(Ipv6Addr::from(d)));
            // As much of the original as fits the minimum MTU.
            let quoted = &original[..original.len().min(1280 - 48)];
            let code = match why {
                Unreachable::Host => 3,
                Unreachable::Prohibited => 1,
            };
            let len = 8 + quoted.len();
            ip_header(out, dst, src, 58, len);
            let start = out.len();
            out.extend_from_slice(&[1, code, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(quoted);
            let c = finish(sum(pseudo_sum(dst, src, 58, len), &out[start..]));
            out[start + 2..start + 4].copy_from_slice(&c.to_be_bytes());
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{Icmpv4Packet, Icmpv6Packet, IpAddress};

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    fn ip(a: IpAddr) -> IpAddress {
        a.into()
    }

    #[test]
    fn resets_parse_back_with_valid_checksums() {
        for (from, to) in [("10.96.0.20:80", "192.168.10.2:40000"), ("[fd00:96::20]:80", "[fd00:10::2]:40000")] {
            let (from, to) = (addr(from), addr(to));
            let mut out = Vec::new();
            tcp_reset(&mut out, from, to, 1000);
            let Inbound::Tcp { src, dst, syn, ack, .. } = classify(&out).expect("parses") else { panic!() };
            assert_eq!((src, dst, syn, ack), (from, to, false, true));
            let body = &out[if from.is_ipv4() { 20 } else { 40 }..];
            let tcp = TcpPacket::new_checked(body).expect("tcp");
            assert!(tcp.rst());
            assert_eq!(tcp.ack_number().0, 1001);
            assert!(tcp.verify_checksum(&ip(from.ip()), &ip(to.ip())));
        }
    }

    #[test]
    fn udp_parses_back_with_valid_checksums() {
        for (from, to) in [("10.96.0.10:53", "192.168.10.2:5353"), ("[fd00:96::a]:53", "[fd00:10::2]:5353")] {
            let (from, to) = (addr(from), addr(to));
            let mut out = Vec::new();
            udp(&mut out, from, to, b"answer");
            let Inbound::Udp { src, dst, payload } = classify(&out).expect("parses") else { panic!() };
            assert_eq!((src, dst), (from, to));
            assert_eq!(&out[payload.0..payload.1], b"answer");
            let body = &out[if from.is_ipv4() { 20 } else { 40 }..];
            assert!(UdpPacket::new_checked(body).expect("udp").verify_checksum(&ip(from.ip()), &ip(to.ip())));
        }
    }

    #[test]
    fn unreachables_quote_the_original_and_go_back_to_its_source() {
        let mut syn = Vec::new();
        tcp_reset(&mut syn, addr("192.168.10.2:40000"), addr("10.244.1.99:80"), 7);
        let mut out = Vec::new();
        icmp_unreachable(&mut out, &syn, Unreachable::Host);
        let ipv4 = Ipv4Packet::new_checked(&out[..]).expect("ipv4");
        assert!(ipv4.verify_checksum());
        assert_eq!(IpAddr::V4(ipv4.dst_addr()), "192.168.10.2".parse::<IpAddr>().expect("ip"));
        let icmp = Icmpv4Packet::new_checked(ipv4.payload()).expect("icmp");
        assert!(icmp.verify_checksum());
        assert_eq!((icmp.msg_type().into(), icmp.msg_code()), (3u8, 1u8));

        let mut syn6 = Vec::new();
        tcp_reset(&mut syn6, addr("[fd00:10::2]:40000"), addr("[fd00:244::99]:80"), 7);
        out.clear();
        icmp_unreachable(&mut out, &syn6, Unreachable::Prohibited);
        let ipv6 = Ipv6Packet::new_checked(&out[..]).expect("ipv6");
        let icmp = Icmpv6Packet::new_checked(ipv6.payload()).expect("icmpv6");
        assert!(icmp.verify_checksum(&ipv6.src_addr(), &ipv6.dst_addr()));
        assert_eq!((icmp.msg_type().into(), icmp.msg_code()), (1u8, 1u8));
    }

    proptest::proptest! {
        /// Whatever arrives from the TUN device, classification never panics
        /// and never points a payload range outside the packet.
        #[test]
        fn classify_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..128)) {
            if let Ok(Inbound::Udp { payload, .. }) = classify(&bytes) {
                proptest::prop_assert!(payload.0 <= payload.1 && payload.1 <= bytes.len());
            }
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(classify(&[]), Err(PacketError::Malformed));
        assert_eq!(classify(&[0x45]), Err(PacketError::Malformed));
        assert_eq!(classify(&[0x75, 0, 0, 0]), Err(PacketError::UnsupportedVersion(7)));
        let mut udp_packet = Vec::new();
        udp(&mut udp_packet, addr("10.0.0.1:1"), addr("10.0.0.2:2"), b"x");
        udp_packet[10] ^= 0xff; // break the IPv4 header checksum
        assert_eq!(classify(&udp_packet), Err(PacketError::BadChecksum));
        for cut in 0..udp_packet.len() {
            let _ = classify(&udp_packet[..cut]);
        }
    }

    /// What the kernel does with a partial checksum (`skb_checksum_help`):
    /// sums from `start` to the end and writes the complement at `offset`.
    fn finish_as_the_kernel_does(packet: &mut [u8], partial: PartialChecksum) {
        let (start, at) = (usize::from(partial.start), usize::from(partial.start + partial.offset));
        let c = finish(sum(0, &packet[start..]));
        packet[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }

    #[test]
    fn a_partial_tcp_checksum_finishes_to_the_full_one() {
        for (from, to, start) in
            [("10.96.0.20:80", "192.168.10.2:40000", 20), ("[fd00:96::20]:80", "[fd00:10::2]:40000", 40)]
        {
            let (from, to) = (addr(from), addr(to));
            let mut full = Vec::new();
            tcp_segment(&mut full, from, to, 7, 9, flags::ACK);
            // With a payload of odd length, as smoltcp would send it.
            full.extend_from_slice(b"odd payload");
            let body = full.len() - start;
            if from.is_ipv4() {
                let total = u16::try_from(full.len()).expect("len");
                full[2..4].copy_from_slice(&total.to_be_bytes());
                full[10..12].fill(0);
                let c = finish(sum(0, &full[..20]));
                full[10..12].copy_from_slice(&c.to_be_bytes());
            } else {
                full[4..6].copy_from_slice(&u16::try_from(body).expect("len").to_be_bytes());
            }
            full[start + 16..start + 18].fill(0);
            let c = finish(sum(pseudo_sum(from.ip(), to.ip(), 6, body), &full[start..]));
            full[start + 16..start + 18].copy_from_slice(&c.to_be_bytes());

            // smoltcp leaves the field 0; the kernel finishes what we leave.
            let mut partial = full.clone();
            partial[start + 16..start + 18].fill(0);
            let left = leave_tcp_checksum_partial(&mut partial).expect("TCP");
            assert_eq!(left, PartialChecksum { start: start as u16, offset: 16 });
            finish_as_the_kernel_does(&mut partial, left);
            assert_eq!(partial, full);
            let tcp = TcpPacket::new_checked(&partial[start..]).expect("TCP");
            assert!(tcp.verify_checksum(&ip(from.ip()), &ip(to.ip())));
        }
    }

    #[test]
    fn only_tcp_checksums_are_left_partial() {
        let mut datagram = Vec::new();
        udp(&mut datagram, addr("10.96.0.10:53"), addr("192.168.10.2:5353"), b"answer");
        let before = datagram.clone();
        assert_eq!(leave_tcp_checksum_partial(&mut datagram), None);
        assert_eq!(datagram, before);
        for mut junk in [Vec::new(), vec![0x45], vec![0x60; 30], vec![0x45; 24]] {
            let before = junk.clone();
            assert_eq!(leave_tcp_checksum_partial(&mut junk), None);
            assert_eq!(junk, before);
        }
    }
}

//! The Internet checksum (RFC 1071) for the packets the stack writes
//! itself (resets, ICMP errors, relayed datagrams), public so that tests and
//! fuzz targets build packets the same way.

use std::net::IpAddr;

/// One's-complement sum over `data`, added to `acc`; [`finish`] folds it.
pub fn sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

/// Folds a sum into 16 bits, not complemented: what a checksum field holds
/// when it is left for the device to finish (the pseudo-header's sum).
pub fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Folds a sum into the 16-bit checksum field's value.
pub fn finish(acc: u32) -> u16 {
    !fold(acc)
}

/// The sum of the pseudo-header of a `len`-byte `proto` payload from
/// `src` to `dst` (0 when their families differ).
pub fn pseudo_sum(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u32 {
    let acc = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => sum(sum(0, &s.octets()), &d.octets()),
        (IpAddr::V6(s), IpAddr::V6(d)) => sum(sum(0, &s.octets()), &d.octets()),
        _ => 0,
    };
    acc + u32::from(proto) + len as u32
}

//! # devnet-lab: the lab and its end-to-end tests
//!
//! **Layer:** test infrastructure. `lab/lab.sh` builds an office and a
//! cluster in network namespaces; `devnet-labd` is the servers in its pods
//! (HTTP, TCP/UDP echo, a checksumming sink and source) and the client side
//! of the checks run from the laptop namespace. The tests drive the real
//! `devnet` and `devnet-relay` binaries.
//!
//! **What it does not do:** mock anything on the data path, or touch the
//! host's own network namespace.

pub mod apiserver;
pub mod debug_clients;
pub mod harness;
pub mod jsonc;
pub mod webdriver;

/// Deterministic test data: byte `i` of a stream is a function of `i` and
/// the seed, so both ends can checksum a transfer without sharing a file.
pub fn pattern(seed: u64, offset: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        let x = (offset + i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed;
        *b = (x >> 29) as u8;
    }
}

//! glibc's memcpy speed by alignment: 16 KiB copies (a TLS record's
//! payload) from each source offset to each destination offset modulo 64,
//! in GB/s, best of five rounds of 20,000 copies, in cache. Run it as
//! started, then with `GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=0x840`
//! (glibc's default, so `rep movsb` above 2 KiB) and with
//! `=0xffffffffffffffff` (never); `bench/copy-alignment.sh` does both.
//! Does not call `reexec_with_fast_copies`: it measures what it was given.

use std::hint::black_box;
use std::time::Instant;

const LEN: usize = 16 * 1024;
const OFFSETS: [usize; 6] = [0, 5, 16, 32, 48, 63];

fn gbps(dst: &mut [u8], src: &[u8]) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..20_000 {
            black_box(&mut *dst).copy_from_slice(black_box(src));
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    20_000.0 * LEN as f64 / best / 1e9
}

fn main() {
    // Offsets from a 64-byte aligned base in each buffer.
    let mut src_buf = vec![1u8; LEN + 128];
    let mut dst_buf = vec![2u8; LEN + 128];
    let src_base = src_buf.as_ptr().align_offset(64);
    let dst_base = dst_buf.as_mut_ptr().align_offset(64);
    println!("GLIBC_TUNABLES={}", std::env::var("GLIBC_TUNABLES").unwrap_or_default());
    print!("src\\dst");
    for d in OFFSETS {
        print!("{d:>7}");
    }
    println!();
    let mut slowest = f64::MAX;
    for s in OFFSETS {
        print!("{s:>7}");
        for d in OFFSETS {
            let src = &src_buf[src_base + s..src_base + s + LEN];
            let rate = gbps(&mut dst_buf[dst_base + d..dst_base + d + LEN], src);
            slowest = slowest.min(rate);
            print!("{rate:>7.1}");
        }
        println!();
    }
    src_buf[0] = black_box(src_buf[0]);
    println!("slowest: {slowest:.1} GB/s");
}

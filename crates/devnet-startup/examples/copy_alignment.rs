//! glibc's memcpy speed by where the destination lies against the source:
//! 16 KiB copies (a TLS record's payload) with the destination `d` bytes
//! past the source modulo 4096 (a page), in GB/s, best of five rounds of
//! 20,000 copies, in cache. Run it with
//! `GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=0x840` (glibc's
//! default: `rep movsb` above 2 KiB) and with `=0xffffffffffffffff`
//! (never); `bench/copy-alignment.sh` does both. It does not call
//! `reexec_with_fast_copies`: it measures what it was started with.

use std::hint::black_box;
use std::time::Instant;

const LEN: usize = 16 * 1024;
const PAGE: usize = 4096;
/// Where the source starts in its page: 0, and 5 (a TLS record's payload
/// follows a 5-byte header).
const SOURCES: [usize; 2] = [0, 5];
const DISTANCES: [usize; 10] = [0, 1, 5, 15, 16, 32, 64, 1024, 4080, 4095];

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
    let src_buf = vec![1u8; LEN + 2 * PAGE];
    let mut dst_buf = vec![2u8; LEN + 3 * PAGE];
    // Page-aligned bases; the destination a page further on, so the two
    // never share a page.
    let src_page = src_buf.as_ptr().align_offset(PAGE);
    let dst_page = dst_buf.as_ptr().align_offset(PAGE) + PAGE;
    println!("GLIBC_TUNABLES={}", std::env::var("GLIBC_TUNABLES").unwrap_or_default());
    print!("source at  destination past the source, mod 4096:");
    for d in DISTANCES {
        print!("{d:>6}");
    }
    println!();
    let mut slowest = f64::MAX;
    for s in SOURCES {
        print!("page + {s:<3}{:>40}", "");
        for d in DISTANCES {
            let src = &src_buf[src_page + s..src_page + s + LEN];
            let at = dst_page + (s + d) % PAGE;
            let rate = gbps(&mut dst_buf[at..at + LEN], src);
            slowest = slowest.min(rate);
            print!("{rate:>6.1}");
        }
        println!();
    }
    println!("slowest: {slowest:.1} GB/s");
}

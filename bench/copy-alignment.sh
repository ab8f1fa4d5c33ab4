#!/bin/bash
# bench/copy-alignment.sh: glibc's memcpy by alignment on this machine, with
# `rep movsb` as glibc chooses it (above 2 KiB) and never (what
# devnet_startup sets on AMD CPUs with ERMS/FSRM: see that crate).
#
#   bench/copy-alignment.sh
set -eu
cd "$(dirname "$0")/.."
cargo build -q --release -p devnet-startup --example copy_alignment
bin=target/release/examples/copy_alignment
grep -m1 'model name' /proc/cpuinfo
ldd --version | head -1
echo "== rep movsb above 2 KiB (glibc's default threshold)"
GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=0x840 "$bin"
echo "== never rep movsb"
GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=0xffffffffffffffff "$bin"

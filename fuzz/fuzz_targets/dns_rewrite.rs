#![no_main]
// The body and what it asserts: devnet_fuzz_targets::dns_rewrite.
libfuzzer_sys::fuzz_target!(|data: &[u8]| devnet_fuzz_targets::dns_rewrite(data));

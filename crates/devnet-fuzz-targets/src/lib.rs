//! # devnet-fuzz-targets: what devnet's fuzz targets feed and assert
//!
//! **Layer:** test support. Each public function here is the body of one
//! coverage-guided fuzz target: it takes arbitrary bytes, drives one of
//! devnet's parsers or sans-IO state machines with them, and panics when a
//! property fails (a round trip that does not come back equal, a decoder
//! that claims more bytes than it was given, a tunnel that speaks for an
//! address it does not route). "Does not crash" is the least of them.
//!
//! The bodies live in this workspace crate, not in `fuzz/`, so that two
//! drivers share them:
//! - `fuzz/` (cargo-fuzz, libFuzzer, nightly): one thin `fuzz_target!` per
//!   function, for the coverage-guided runs (`fuzz/run.sh SECONDS`);
//! - `tests/corpus.rs` here (stable, part of `cargo test --workspace`):
//!   replays every committed corpus input and every fixed crash reproducer
//!   (`fuzz/corpus/<target>/`, `fuzz/regressions/<target>/`) through the
//!   same bodies, so a regression fails the ordinary test run.
//!
//! [`TARGETS`] names them; the names are the cargo-fuzz target names and
//! the corpus folder names.

mod input;
pub mod seeds;
mod targets;

pub use targets::{cidr_parse, dns_rewrite, ipc_codec, netstack_tunnel, profile_toml, proto_connection, proto_frame};

/// A target's body: arbitrary bytes in, a panic when a property fails.
pub type Body = fn(&[u8]);

/// Every target: its name (the cargo-fuzz target and corpus folder) and body.
pub const TARGETS: &[(&str, Body)] = &[
    ("proto_frame", proto_frame),
    ("proto_connection", proto_connection),
    ("netstack_tunnel", netstack_tunnel),
    ("dns_rewrite", dns_rewrite),
    ("ipc_codec", ipc_codec),
    ("profile_toml", profile_toml),
    ("cidr_parse", cidr_parse),
];

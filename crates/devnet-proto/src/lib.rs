//! # devnet-proto: the wire protocol between the devnet client and the relay
//!
//! **Layer:** sans-IO protocol core. This crate turns bytes and time into
//! protocol state and back. It never touches a socket, a clock or a runtime:
//! callers feed received bytes with [`Connection::handle_input`], drain bytes
//! to send with [`Connection::transmit`], and drive timers through
//! [`Connection::poll_timeout`] / [`Connection::handle_timeout`]. Tests step a
//! virtual clock.
//!
//! **What it does:**
//! - a versioned preface and handshake ([`PROTOCOL_VERSION`]): a peer that
//!   speaks another version, or no devnet at all, is refused with a message
//!   that says what to run;
//! - bearer-token client authentication, compared in constant time, or
//!   the transport's own ([`TransportAuth`]: a TLS client certificate);
//! - many TCP streams over one connection, each with its own flow-control
//!   window ([`Config::stream_window`]) so one slow consumer never stalls the
//!   others and a fast path can keep bandwidth × RTT in flight;
//! - UDP datagrams keyed by an association id (DNS and friends);
//! - open results that tell refused, unreachable, timed out and denied apart;
//! - heartbeats, so a dead or black-holed connection is noticed within
//!   [`Config::dead_after`];
//! - stream data handed straight to the application as it is decoded
//!   ([`Deliver`], [`Connection::handle_input_with`]), so a byte the
//!   application can take at once is not copied through a receive buffer,
//!   and a `Data` frame's payload as each read brings it, not once the
//!   frame is whole;
//! - [`whoami`]: a one-line question before TLS, answered with the address
//!   the relay sees the asker as (doctor's SNAT check).
//!
//! **What it does not do:** dial anything, decide policy (the relay does), or
//! encrypt (the transport underneath is TLS).
//!
//! The frame layout is documented in [`frame`].

mod connection;
pub mod frame;
pub mod udp;
pub mod whoami;

pub use connection::{
    Buffered, Config, Connection, ConnectionError, Deliver, Event, Role, Stats, StreamError, StreamId, Taken,
    TransportAuth,
};
pub use frame::{DecodeError, Frame, OpenStatus, RejectCode};

/// The protocol version this build speaks. Bumped on any incompatible change
/// to the frame layout or semantics.
pub const PROTOCOL_VERSION: u16 = 1;

/// The first bytes each side sends: a magic and the version, so that a peer
/// that is not devnet (a browser, a port scanner, an old build) is told apart
/// from a devnet peer of another version before any frame is parsed.
pub const MAGIC: &[u8; 6] = b"DEVNET";

/// Length of the preface: [`MAGIC`] followed by the version as big-endian u16.
pub const PREFACE_LEN: usize = MAGIC.len() + 2;

/// The preface for [`PROTOCOL_VERSION`].
pub fn preface() -> [u8; PREFACE_LEN] {
    let mut p = [0u8; PREFACE_LEN];
    p[..MAGIC.len()].copy_from_slice(MAGIC);
    p[MAGIC.len()..].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    p
}

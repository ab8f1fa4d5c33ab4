//! "What address do you see me as?": one line, before TLS, on the relay's
//! tunnel port. It is how `devnet doctor` tells whether the path to the
//! pods rewrites the laptop's source address (SNAT by a forwarding node or
//! an office router), which breaks anything in the cluster that calls the
//! laptop back. The answer is the asker's own address, so it needs no
//! authentication.
//!
//! The relay tells the two apart by the first byte: a TLS record (the
//! ClientHello) starts with 0x16, this request with `D`.

use std::net::SocketAddr;

/// The request, sent as the first bytes of a connection.
pub const REQUEST: &[u8] = b"DEVNET-WHOAMI\n";

const REPLY_PREFIX: &str = "DEVNET-YOUARE ";

/// Whether a connection's first byte starts a whoami request (and not TLS).
pub fn starts_request(first: u8) -> bool {
    first == REQUEST[0]
}

/// The relay's answer to a client seen at `peer`. A dual-stack listener
/// sees IPv4 clients as `::ffff:a.b.c.d`; they are told their IPv4 address.
pub fn reply(peer: SocketAddr) -> String {
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    format!("{REPLY_PREFIX}{peer}\n")
}

/// A reply that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a devnet relay's whoami reply ({0}): is this the relay's tunnel port, and the relay 0.1.0 or newer?")]
pub struct BadReply(String);

/// The address in a relay's reply.
pub fn parse_reply(bytes: &[u8]) -> Result<SocketAddr, BadReply> {
    let text = std::str::from_utf8(bytes).map_err(|_| BadReply("not text".into()))?;
    let line = text.strip_suffix('\n').ok_or_else(|| BadReply("no end of line".into()))?;
    let addr = line.strip_prefix(REPLY_PREFIX).ok_or_else(|| BadReply(format!("{line:?}")))?;
    addr.parse().map_err(|_| BadReply(format!("{addr:?} is not an address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_round_trips_and_garbage_is_named() {
        for peer in ["192.168.10.2:40112", "[fd00:10::2]:40112"] {
            let peer: SocketAddr = peer.parse().expect("addr");
            assert_eq!(parse_reply(reply(peer).as_bytes()), Ok(peer));
        }
        let mapped: SocketAddr = "[::ffff:192.168.10.2]:40112".parse().expect("addr");
        assert_eq!(reply(mapped), "DEVNET-YOUARE 192.168.10.2:40112\n");
        assert!(parse_reply(b"HTTP/1.1 400 Bad Request\r\n").is_err());
        assert!(parse_reply(b"DEVNET-YOUARE 10.0.0.1:1").is_err(), "no newline");
        assert!(parse_reply(b"DEVNET-YOUARE nonsense\n").is_err());
        // TLS and the request are told apart by the first byte.
        assert!(starts_request(REQUEST[0]) && !starts_request(0x16));
    }
}

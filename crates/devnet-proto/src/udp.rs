//! How long each end keeps a UDP association. No frame says an association
//! ended: the client and the relay each forget one on their own, so both
//! must keep them alike, or one end holds what the other has forgotten.

use std::time::Duration;

/// An association's life without a datagram either way.
pub const IDLE: Duration = Duration::from_secs(60);

/// The same for DNS (destination port 53): a stub resolver asks each query
/// from a new source port, so each lookup is an association of its own, done
/// once answered (a resolver's own timeout is 5 s by default).
pub const DNS_IDLE: Duration = Duration::from_secs(10);

/// Associations kept at most; a full table drops its least recently used.
pub const MAX_ASSOCIATIONS: usize = 1024;

/// The idle limit for an association to `dst_port`: `dns_idle` for DNS,
/// `idle` otherwise.
pub fn idle_limit(dst_port: u16, idle: Duration, dns_idle: Duration) -> Duration {
    if dst_port == 53 { dns_idle } else { idle }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_associations_go_sooner() {
        assert_eq!(idle_limit(53, IDLE, DNS_IDLE), DNS_IDLE);
        assert_eq!(idle_limit(5353, IDLE, DNS_IDLE), IDLE);
        assert_eq!(idle_limit(8125, IDLE, DNS_IDLE), IDLE);
    }
}

//! Relay counters, exposed in the Prometheus text format on the health port.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! counters {
    ($($name:ident: $help:literal),* $(,)?) => {
        /// Process-wide counters.
        #[derive(Debug, Default)]
        pub struct Metrics { $(pub $name: AtomicU64,)* }

        impl Metrics {
            /// Renders all counters as Prometheus text.
            pub fn render(&self) -> String {
                let mut out = String::new();
                $(
                    out.push_str(concat!("# HELP devnet_relay_", stringify!($name), " ", $help, "\n"));
                    out.push_str(&format!(concat!("devnet_relay_", stringify!($name), " {}\n"), self.$name.load(Relaxed)));
                )*
                out
            }
        }
    };
}

counters! {
    sessions_active: "client sessions now connected",
    sessions_total: "client sessions accepted since start",
    handshake_failures: "sessions refused at the handshake (token, version, garbage, TLS)",
    logins_timed_out: "connections closed because TLS and login took longer than the login deadline",
    logins_refused_busy: "connections closed at once because too many were still logging in",
    streams_opened: "TCP streams connected to a destination",
    streams_denied: "TCP streams and datagrams refused by policy",
    dial_failures: "TCP dials that failed (refused, unreachable, timed out)",
    path_proofs: "TLS handshakes closed cleanly before a login: laptops proving a direct path reaches this relay",
    dials_queued: "TCP opens that waited for a dial slot (the client already had the most dials in progress)",
    datagrams_relayed: "UDP datagrams relayed to destinations",
    udp_associations_opened: "UDP associations opened (a socket each; a stub resolver opens one per lookup)",
    udp_associations_evicted: "UDP associations dropped to make room in a full table (the least recently used of a session)",
    bytes_to_destinations: "stream bytes written to destinations",
    bytes_from_destinations: "stream bytes read from destinations",
    enrolments: "client certificates issued (enrolment over the API server's port-forward)",
    enrolments_refused: "enrolments refused (a revoked user, or a request that is not one)",
    refused_expired: "sessions refused because the client certificate had expired",
    refused_revoked: "sessions refused or closed because the client certificate or its user is revoked",
    session_output_peak_bytes: "the most bytes one session has held for its client, unsent, since start (a high-water mark, not a counter)",
    refused_unknown_ca: "sessions refused because the client certificate is not from this relay's client CA (another CA, or an earlier relay process)",
}

impl Metrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Raises a high-water mark to `n` if `n` is higher.
    pub fn raise(mark: &AtomicU64, n: u64) {
        mark.fetch_max(n, Relaxed);
    }
}

//! What the engine reports: the state of the relay link, the OS state it
//! owns, and traffic counters. Serialised as JSON for `devnet status --json`.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The relay link's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "kebab-case")]
pub enum LinkState {
    /// Dialling the relay for the first time.
    Connecting,
    /// Handshake done; traffic flows.
    Connected,
    /// The link was lost; retrying.
    Reconnecting,
    /// No CIDR needs the tunnel: each is routed directly or via a forwarding node.
    Direct,
    /// Shut down.
    Stopped,
}

/// One discovered fact: `pod CIDR 10.244.0.0/16 from Calico IPPool default`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Discovered {
    pub what: String,
    pub value: String,
    pub source: String,
}

/// A snapshot of the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Status {
    pub state: LinkState,
    #[cfg_attr(feature = "ts", ts(type = "string"))]
    pub relay: SocketAddr,
    /// The relay's name from its handshake.
    pub relay_name: Option<String>,
    /// How the relay is reached now: `direct 10.60.20.11:31443`, or
    /// `port-forward devnet/devnet-relay-… via https://…`.
    #[serde(default)]
    pub transport: Option<String>,
    /// What cluster discovery found, and where.
    #[serde(default)]
    pub discovered: Vec<Discovered>,
    pub relay_rtt_ms: Option<f64>,
    /// Why the link was last lost or could not be made.
    pub last_error: Option<String>,
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub reconnects: u64,
    pub tun: String,
    /// CIDRs routed through the tunnel.
    #[cfg_attr(feature = "ts", ts(type = "Array<string>"))]
    pub routes: Vec<IpNet>,
    /// The path chosen for every CIDR, with the evidence.
    pub paths: Vec<devnet_path::Verdict>,
    #[cfg_attr(feature = "ts", ts(type = "string | null"))]
    pub dns_server: Option<IpAddr>,
    pub cluster_domain: String,
    /// How the system's resolver is pointed at devnet's stub, and why that
    /// backend: `systemd-resolved: link devnet0 … (…)`, `resolv.conf: …`.
    #[serde(default)]
    pub dns_backend: Option<String>,
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub tcp_flows: usize,
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub pending_opens: usize,
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub udp_associations: usize,
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub packets_from_tun: u64,
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub packets_to_tun: u64,
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub bytes_to_relay: u64,
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub bytes_from_relay: u64,
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub refused: u64,
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub unreachable: u64,
}

/// How [`Status::last_error`] begins when the relay refused the laptop's
/// client certificate (expired, or unknown to a relay restarted since
/// enrolment): the user's side enrols again when it sees this.
pub const CREDENTIAL_REFUSED: &str = "the relay refused this laptop's client certificate";

impl Status {
    /// Whether the link is down because the relay refused the client
    /// certificate (see [`CREDENTIAL_REFUSED`]).
    pub fn credential_refused(&self) -> bool {
        self.state != LinkState::Connected
            && self.last_error.as_deref().is_some_and(|e| e.starts_with(CREDENTIAL_REFUSED))
    }

    /// A short human summary for `devnet status`.
    pub fn human(&self) -> String {
        let mut s = format!("state:    {:?}\nrelay:    {}", self.state, self.relay);
        if let Some(name) = &self.relay_name {
            s += &format!(" ({name})");
        }
        if let Some(rtt) = self.relay_rtt_ms {
            s += &format!(", rtt {rtt:.2} ms");
        }
        if let Some(t) = &self.transport {
            s += &format!("\nvia:      {t}");
        }
        for d in &self.discovered {
            s += &format!("\nfound:    {:<12} {:<18} from {}", d.what, d.value, d.source);
        }
        if let Some(e) = &self.last_error {
            s += &format!("\nlast error: {e}");
        }
        for v in &self.paths {
            s += &format!(
                "\npath:     {:<18} {:<8} {}",
                v.cidr.to_string(),
                format!("{:?}", v.path).to_lowercase(),
                v.reason
            );
        }
        if !self.routes.is_empty() {
            let routes: Vec<String> = self.routes.iter().map(ToString::to_string).collect();
            s += &format!("\ntunnel:   {} -> {}", self.tun, routes.join(", "));
        }
        if let Some(dns) = self.dns_server {
            s += &format!("\ndns:      {} for {}", dns, self.cluster_domain);
        }
        if let Some(backend) = &self.dns_backend {
            s += &format!("\nresolver: {backend}");
        }
        s += &format!(
            "\nflows:    {} tcp ({} opening), {} udp; {} refused, {} unreachable\ntraffic:  {} B up, {} B down; {} reconnects",
            self.tcp_flows,
            self.pending_opens,
            self.udp_associations,
            self.refused,
            self.unreachable,
            self.bytes_to_relay,
            self.bytes_from_relay,
            self.reconnects
        );
        s
    }
}

//! The connection profile: what to reach and how, validated up front so a
//! bad value fails with a message that names it and the fix, before any OS
//! state is touched.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::Secret;

/// A profile as written in a TOML file (every field optional there, so flags
/// can fill in the rest).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ProfileFile {
    pub relay: Option<String>,
    pub token_file: Option<PathBuf>,
    pub relay_ca: Option<PathBuf>,
    #[serde(default)]
    pub cidrs: Vec<String>,
    pub dns_server: Option<String>,
    /// Live IP:PORTs inside the CIDRs used to prove a direct path (a pod, a
    /// Service); the DNS server on port 53 is always one.
    #[serde(default)]
    pub probe_targets: Vec<String>,
    /// The relay's own IP:PORTs inside the CIDRs (its pod IPs and its
    /// Service's ClusterIPs, on its TLS port): a CIDR is direct only after a
    /// TLS handshake with the relay there, verified by the relay CA.
    #[serde(default)]
    pub relay_endpoints: Vec<String>,
    pub cluster_domain: Option<String>,
    /// The cluster's namespaces: `svc.ns` resolves for these.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Where a bare `svc` is looked up.
    pub default_namespace: Option<String>,
    /// The resolv.conf to manage (default /etc/resolv.conf).
    pub resolv_conf: Option<PathBuf>,
    /// The loopback address devnet's DNS stub listens on (port 53) with the
    /// resolv.conf backend.
    pub dns_stub: Option<String>,
    /// How the system is pointed at the stub: `auto` (default: systemd-
    /// resolved when programs ask it, else resolv.conf), `systemd-resolved`
    /// or `resolv-conf`.
    pub dns_backend: Option<String>,
    /// The address on devnet's own link where the stub listens for
    /// systemd-resolved (which binds per-link queries to the link).
    pub dns_link_address: Option<String>,
    /// Forwarding nodes on this machine's LAN (seed 001's node-30), at most
    /// one per address family, tried when no direct path answers.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// CIDRs (from `cidrs`) that may take over routes the machine already has.
    #[serde(default)]
    pub allow_overlap: Vec<String>,
    pub tun_name: Option<String>,
    pub mtu: Option<u16>,
    /// How long the data path keeps polling after traffic before it
    /// sleeps, in microseconds, while the relay is near (see
    /// [`Profile::busy_poll`]); 0 turns it off.
    pub busy_poll_us: Option<u32>,
    pub state_dir: Option<PathBuf>,
    /// The relay token itself (from the keyring, or sent by a client to
    /// devnetd; never read from a profile file).
    #[serde(skip)]
    pub token: Option<Secret>,
    /// The relay CA in PEM (from the keyring), instead of `relay-ca`.
    #[serde(skip)]
    pub relay_ca_pem: Option<String>,
}

impl ProfileFile {
    /// Reads a profile file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read { path: path.to_owned(), error: e.to_string() })?;
        Self::parse(&text, path)
    }

    /// Parses a profile's text (read by someone else, e.g. as the user who
    /// ran sudo); `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_owned(), error: e.to_string() })
    }

    /// The fields that name a file or directory on this machine. devnetd
    /// refuses a profile that sets any: it runs as root and never opens a
    /// path a client named (clients send contents instead).
    pub fn named_paths(&self) -> Vec<&'static str> {
        [
            ("token-file", self.token_file.is_some()),
            ("relay-ca", self.relay_ca.is_some()),
            ("resolv-conf", self.resolv_conf.is_some()),
            ("state-dir", self.state_dir.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }

    /// Fields set in `over` win over ours.
    pub fn overlay(self, over: ProfileFile) -> Self {
        Self {
            relay: over.relay.or(self.relay),
            token_file: over.token_file.or(self.token_file),
            relay_ca: over.relay_ca.or(self.relay_ca),
            cidrs: if over.cidrs.is_empty() { self.cidrs } else { over.cidrs },
            dns_server: over.dns_server.or(self.dns_server),
            probe_targets: if over.probe_targets.is_empty() { self.probe_targets } else { over.probe_targets },
            relay_endpoints: if over.relay_endpoints.is_empty() { self.relay_endpoints } else { over.relay_endpoints },
            cluster_domain: over.cluster_domain.or(self.cluster_domain),
            namespaces: if over.namespaces.is_empty() { self.namespaces } else { over.namespaces },
            default_namespace: over.default_namespace.or(self.default_namespace),
            resolv_conf: over.resolv_conf.or(self.resolv_conf),
            dns_stub: over.dns_stub.or(self.dns_stub),
            dns_backend: over.dns_backend.or(self.dns_backend),
            dns_link_address: over.dns_link_address.or(self.dns_link_address),
            allow_overlap: if over.allow_overlap.is_empty() { self.allow_overlap } else { over.allow_overlap },
            gateways: if over.gateways.is_empty() { self.gateways } else { over.gateways },
            tun_name: over.tun_name.or(self.tun_name),
            mtu: over.mtu.or(self.mtu),
            busy_poll_us: over.busy_poll_us.or(self.busy_poll_us),
            state_dir: over.state_dir.or(self.state_dir),
            token: over.token.or(self.token),
            relay_ca_pem: over.relay_ca_pem.or(self.relay_ca_pem),
        }
    }
}

/// A validated connection profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Profile {
    pub relay: SocketAddr,
    #[serde(skip)]
    pub token: Secret,
    pub relay_ca: PathBuf,
    /// The relay CA in PEM, when it came from the keyring (wins over `relay_ca`).
    #[serde(skip)]
    pub relay_ca_pem: Option<String>,
    pub cidrs: Vec<IpNet>,
    pub dns_server: Option<IpAddr>,
    pub probe_targets: Vec<SocketAddr>,
    pub relay_endpoints: Vec<SocketAddr>,
    pub cluster_domain: String,
    pub namespaces: Vec<String>,
    pub default_namespace: Option<String>,
    pub resolv_conf: PathBuf,
    pub dns_stub: IpAddr,
    pub dns_backend: DnsBackend,
    pub dns_link_address: IpAddr,
    pub allow_overlap: Vec<IpNet>,
    pub gateways: Vec<IpAddr>,
    pub tun_name: String,
    pub mtu: u16,
    /// After traffic, the data path polls for this long before it sleeps,
    /// while the relay is near ([`BUSY_POLL_NEAR_RELAY`]): an answer that
    /// comes back within it is taken at once, with no wake-up of an idle
    /// CPU. Zero turns it off.
    pub busy_poll: std::time::Duration,
    pub state_dir: PathBuf,
}

/// Default place for the in-process engine's journal and control socket: not
/// under /run, so a crash before a reboot is still undone after it.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/devnet/foreground";
pub const DEFAULT_TUN_NAME: &str = "devnet0";
pub const DEFAULT_MTU: u16 = 65_000;
/// The default [`Profile::busy_poll`]: about one round trip to a relay in
/// the same building, through the relay to a pod and back.
pub const DEFAULT_BUSY_POLL_US: u32 = 100;
/// The most [`Profile::busy_poll`] may be: past this, polling costs more
/// CPU than the wake-up it saves.
pub const MAX_BUSY_POLL_US: u32 = 1_000;
/// Busy polling runs only while the relay's measured round trip is below
/// this: a farther relay's answers come too late to catch by polling.
pub const BUSY_POLL_NEAR_RELAY: std::time::Duration = std::time::Duration::from_millis(1);
/// A loopback address of its own, so the stub never competes for port 53
/// with systemd-resolved (127.0.0.53) or a local dnsmasq (127.0.0.1).
pub const DEFAULT_DNS_STUB: &str = "127.0.0.153";
/// Link-local, so no network routes it, and outside the metadata addresses
/// (169.254.169.x) the relay and the CIDR checks refuse.
pub const DEFAULT_DNS_LINK_ADDRESS: &str = "169.254.53.53";

/// Which resolver backend to use (see `dns-backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DnsBackend {
    Auto,
    SystemdResolved,
    ResolvConf,
}

/// A profile value that cannot be used, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read profile {path}: {error}")]
    Read { path: PathBuf, error: String },
    #[error("profile {path} is not valid: {error}")]
    Parse { path: PathBuf, error: String },
    #[error("no {0} given: set `{0}` in the profile or pass --{0}")]
    Missing(&'static str),
    #[error("relay address {0:?} is not IP:PORT (e.g. 10.60.20.11:31443 or [fd00::1]:31443)")]
    BadRelay(String),
    #[error("cannot read token file {path}: {error}")]
    Token { path: PathBuf, error: String },
    #[error("token file {0} is empty: put the relay token in it")]
    EmptyToken(PathBuf),
    #[error("{0:?} is not a CIDR (expected e.g. 10.96.0.0/12 or fd00:96::/112)")]
    BadCidr(String),
    #[error("CIDR {0} has host bits set: did you mean {1}?")]
    HostBits(String, IpNet),
    #[error(
        "CIDR {0} is too broad: routing it would capture the whole internet (or most of it); list the cluster's pod and service CIDRs"
    )]
    TooBroad(IpNet),
    #[error("CIDR {0} covers {1} ({2}), which must never go through the tunnel")]
    Reserved(IpNet, IpAddr, &'static str),
    #[error(
        "CIDR {0} contains the relay address {1}: the tunnel would route to itself; reach the relay through a node port outside the CIDRs"
    )]
    CoversRelay(IpNet, IpAddr),
    #[error("CIDRs {0} and {1} overlap: list each range once")]
    Overlap(IpNet, IpNet),
    #[error("probe target {0:?} is not IP:PORT (e.g. 10.244.1.10:8080 or [fd00::10]:80)")]
    BadProbe(String),
    #[error("probe target {0} is outside every CIDR: it cannot prove a path to any of them")]
    ProbeNotRouted(SocketAddr),
    #[error("relay endpoint {0:?} is not IP:PORT (e.g. 10.244.1.5:8443 or [fd00:96::5]:8443)")]
    BadRelayEndpoint(String),
    #[error(
        "relay endpoint {0} is outside every CIDR: it can only prove the relay's own addresses inside the CIDRs (its pod IP, its Service's ClusterIP)"
    )]
    RelayEndpointNotRouted(SocketAddr),
    #[error("DNS server {0:?} is not an IP address")]
    BadDns(String),
    #[error("DNS server {0} is outside every CIDR, so the tunnel cannot reach it: add its range to cidrs")]
    DnsNotRouted(IpAddr),
    #[error("cluster domain {0:?} is not a DNS name ({1})")]
    BadDomain(String, &'static str),
    #[error(
        "gateway {0:?} is not an IP address, or a second one of its family (list at most one IPv4 and one IPv6 node)"
    )]
    BadGateway(String),
    #[error("gateway {0} is inside the cluster CIDRs: it must be a node on this machine's own network")]
    GatewayInCidrs(IpAddr),
    #[error("allow-overlap entry {0:?} is not one of the cidrs: list the CIDR exactly as in cidrs")]
    BadAllowOverlap(String),
    #[error("{0}: fix the namespaces / default-namespace entries")]
    BadNamespace(String),
    #[error("DNS stub address {0:?} must be a loopback IP address, e.g. 127.0.0.153")]
    BadStub(String),
    #[error("dns-backend {0:?} is not one of auto, systemd-resolved, resolv-conf")]
    BadDnsBackend(String),
    #[error(
        "dns-link-address {0:?} must be a unicast IP address outside the cluster CIDRs and loopback, e.g. 169.254.53.53"
    )]
    BadDnsLinkAddress(String),
    #[error("interface name {0:?} is not valid: use 1-15 characters of [a-zA-Z0-9_-]")]
    BadTunName(String),
    #[error("MTU {0} is out of range: use 1280 to 65535")]
    BadMtu(u16),
    #[error("busy-poll-us {0} is out of range: use 0 (off) to {MAX_BUSY_POLL_US}")]
    BadBusyPoll(u32),
}

const RESERVED: [(&str, &str); 5] = [
    ("127.0.0.1", "loopback"),
    ("::1", "loopback"),
    ("169.254.169.254", "the link-local/metadata range"),
    ("fe80::1", "the IPv6 link-local range"),
    ("224.0.0.1", "multicast"),
];

impl ProfileFile {
    /// Validates every field. Nothing is touched on the system.
    pub fn validate(self) -> Result<Profile, ConfigError> {
        let relay_text = self.relay.ok_or(ConfigError::Missing("relay"))?;
        let relay: SocketAddr = relay_text.parse().map_err(|_| ConfigError::BadRelay(relay_text.clone()))?;
        let token = match self.token {
            Some(t) => t,
            None => {
                let token_file = self.token_file.ok_or(ConfigError::Missing("token-file"))?;
                let token = std::fs::read_to_string(&token_file)
                    .map_err(|e| ConfigError::Token { path: token_file.clone(), error: e.to_string() })?
                    .trim()
                    .to_owned();
                if token.is_empty() {
                    return Err(ConfigError::EmptyToken(token_file));
                }
                Secret::new(token)
            }
        };
        let relay_ca_pem = self.relay_ca_pem;
        let relay_ca = match (self.relay_ca, &relay_ca_pem) {
            (Some(p), _) => p,
            (None, Some(_)) => PathBuf::new(),
            (None, None) => return Err(ConfigError::Missing("relay-ca")),
        };
        if self.cidrs.is_empty() {
            return Err(ConfigError::Missing("cidrs"));
        }
        let cidrs = parse_cidrs(&self.cidrs, relay.ip())?;
        let dns_server = match self.dns_server {
            None => None,
            Some(text) => {
                let ip: IpAddr = text.parse().map_err(|_| ConfigError::BadDns(text.clone()))?;
                if !cidrs.iter().any(|n| n.contains(&ip)) {
                    return Err(ConfigError::DnsNotRouted(ip));
                }
                Some(ip)
            }
        };
        let mut probe_targets = Vec::new();
        for text in &self.probe_targets {
            let target: SocketAddr = text.parse().map_err(|_| ConfigError::BadProbe(text.clone()))?;
            if !cidrs.iter().any(|n| n.contains(&target.ip())) {
                return Err(ConfigError::ProbeNotRouted(target));
            }
            probe_targets.push(target);
        }
        let mut relay_endpoints = Vec::new();
        for text in &self.relay_endpoints {
            let endpoint: SocketAddr = text.parse().map_err(|_| ConfigError::BadRelayEndpoint(text.clone()))?;
            if !cidrs.iter().any(|n| n.contains(&endpoint.ip())) {
                return Err(ConfigError::RelayEndpointNotRouted(endpoint));
            }
            relay_endpoints.push(endpoint);
        }
        let cluster_domain = validate_domain(self.cluster_domain.as_deref().unwrap_or("cluster.local"))?;
        devnet_dns::NamePolicy::new(&cluster_domain, &self.namespaces, self.default_namespace.as_deref())
            .map_err(|e| ConfigError::BadNamespace(e.to_string()))?;
        let stub_text = self.dns_stub.unwrap_or_else(|| DEFAULT_DNS_STUB.to_owned());
        let dns_stub: IpAddr = stub_text.parse().map_err(|_| ConfigError::BadStub(stub_text.clone()))?;
        if !dns_stub.is_loopback() {
            return Err(ConfigError::BadStub(stub_text));
        }
        let dns_backend = match self.dns_backend.as_deref().unwrap_or("auto") {
            "auto" => DnsBackend::Auto,
            "systemd-resolved" => DnsBackend::SystemdResolved,
            "resolv-conf" => DnsBackend::ResolvConf,
            other => return Err(ConfigError::BadDnsBackend(other.to_owned())),
        };
        let link_text = self.dns_link_address.unwrap_or_else(|| DEFAULT_DNS_LINK_ADDRESS.to_owned());
        let dns_link_address: IpAddr =
            link_text.parse().map_err(|_| ConfigError::BadDnsLinkAddress(link_text.clone()))?;
        if dns_link_address.is_loopback()
            || dns_link_address.is_unspecified()
            || dns_link_address.is_multicast()
            || cidrs.iter().any(|n| n.contains(&dns_link_address))
        {
            return Err(ConfigError::BadDnsLinkAddress(link_text));
        }
        let mut allow_overlap = Vec::new();
        for text in &self.allow_overlap {
            match text.parse::<IpNet>() {
                Ok(net) if cidrs.contains(&net) => allow_overlap.push(net),
                _ => return Err(ConfigError::BadAllowOverlap(text.clone())),
            }
        }
        let mut gateways: Vec<IpAddr> = Vec::new();
        for text in &self.gateways {
            let ip: IpAddr = text.parse().map_err(|_| ConfigError::BadGateway(text.clone()))?;
            if gateways.iter().any(|g| g.is_ipv4() == ip.is_ipv4()) {
                return Err(ConfigError::BadGateway(text.clone()));
            }
            if cidrs.iter().any(|n| n.contains(&ip)) {
                return Err(ConfigError::GatewayInCidrs(ip));
            }
            gateways.push(ip);
        }
        let tun_name = self.tun_name.unwrap_or_else(|| DEFAULT_TUN_NAME.to_owned());
        if tun_name.is_empty()
            || tun_name.len() > 15
            || !tun_name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError::BadTunName(tun_name));
        }
        let mtu = self.mtu.unwrap_or(DEFAULT_MTU);
        if mtu < 1280 {
            return Err(ConfigError::BadMtu(mtu));
        }
        let busy_poll_us = self.busy_poll_us.unwrap_or(DEFAULT_BUSY_POLL_US);
        if busy_poll_us > MAX_BUSY_POLL_US {
            return Err(ConfigError::BadBusyPoll(busy_poll_us));
        }
        Ok(Profile {
            relay,
            token,
            relay_ca,
            relay_ca_pem,
            cidrs,
            dns_server,
            probe_targets,
            relay_endpoints,
            cluster_domain,
            namespaces: self.namespaces,
            default_namespace: self.default_namespace,
            resolv_conf: self.resolv_conf.unwrap_or_else(|| PathBuf::from("/etc/resolv.conf")),
            dns_stub,
            dns_backend,
            dns_link_address,
            allow_overlap,
            gateways,
            tun_name,
            mtu,
            busy_poll: std::time::Duration::from_micros(u64::from(busy_poll_us)),
            state_dir: self.state_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
        })
    }
}

impl Profile {
    /// The live target to probe for each CIDR: the DNS server (port 53) for
    /// the CIDR that holds it, else the first probe target inside it.
    pub fn probe_target_for(&self, cidr: &IpNet) -> Option<SocketAddr> {
        self.dns_server
            .map(|ip| SocketAddr::new(ip, 53))
            .into_iter()
            .chain(self.probe_targets.iter().copied())
            .find(|t| cidr.contains(&t.ip()))
    }
}

impl Profile {
    /// Where the relay can prove that a direct answer in `cidr` is this
    /// cluster's: its first address inside it.
    pub fn relay_endpoint_for(&self, cidr: &IpNet) -> Option<SocketAddr> {
        self.relay_endpoints.iter().copied().find(|e| cidr.contains(&e.ip()))
    }
}

/// Parses and checks the CIDRs to route.
pub fn parse_cidrs(texts: &[String], relay: IpAddr) -> Result<Vec<IpNet>, ConfigError> {
    let mut nets: Vec<IpNet> = Vec::new();
    for text in texts {
        let net: IpNet = text.trim().parse().map_err(|_| ConfigError::BadCidr(text.clone()))?;
        if net.trunc() != net {
            return Err(ConfigError::HostBits(text.clone(), net.trunc()));
        }
        if net.prefix_len() < 8 {
            return Err(ConfigError::TooBroad(net));
        }
        for (addr, what) in RESERVED {
            let addr: IpAddr = addr.parse().expect("literal");
            if net.contains(&addr) {
                return Err(ConfigError::Reserved(net, addr, what));
            }
        }
        if net.contains(&relay) {
            return Err(ConfigError::CoversRelay(net, relay));
        }
        if let Some(other) = nets.iter().find(|o| o.contains(&net.network()) || net.contains(&o.network())) {
            return Err(ConfigError::Overlap(*other, net));
        }
        nets.push(net);
    }
    Ok(nets)
}

/// Checks a DNS domain name and returns it lower-cased without a trailing dot.
pub fn validate_domain(name: &str) -> Result<String, ConfigError> {
    let bad = |why| ConfigError::BadDomain(name.to_owned(), why);
    let trimmed = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if trimmed.is_empty() {
        return Err(bad("it is empty"));
    }
    if trimmed.len() > 253 {
        return Err(bad("longer than 253 characters"));
    }
    for label in trimmed.split('.') {
        if label.is_empty() {
            return Err(bad("it has an empty label"));
        }
        if label.len() > 63 {
            return Err(bad("a label is longer than 63 characters"));
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(bad("labels may hold only letters, digits and '-'"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a label starts or ends with '-'"));
        }
    }
    Ok(trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(dir: &Path) -> ProfileFile {
        let token = dir.join("token");
        std::fs::write(&token, "secret\n").expect("write token");
        ProfileFile {
            relay: Some("10.60.20.11:31443".into()),
            token_file: Some(token),
            relay_ca: Some(dir.join("ca.pem")),
            cidrs: vec!["10.244.0.0/16".into(), "10.96.0.0/16".into(), "fd00:96::/112".into()],
            dns_server: Some("10.96.0.10".into()),
            ..Default::default()
        }
    }

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("devnet-config-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    #[test]
    fn a_complete_profile_validates_with_defaults() {
        let p = base(&tempdir("ok")).validate().expect("valid");
        assert_eq!(p.token.expose(), "secret");
        assert_eq!(p.cluster_domain, "cluster.local");
        assert_eq!(p.tun_name, DEFAULT_TUN_NAME);
        assert_eq!(p.cidrs.len(), 3);
        assert_eq!(p.busy_poll, std::time::Duration::from_micros(u64::from(DEFAULT_BUSY_POLL_US)));
    }

    #[test]
    fn bad_values_name_the_problem_and_the_fix() {
        let dir = tempdir("bad");
        type Mutation = Box<dyn Fn(&mut ProfileFile)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|p| p.relay = None), "no relay given"),
            (Box::new(|p| p.relay = Some("relay.example".into())), "not IP:PORT"),
            (Box::new(|p| p.cidrs = vec!["0.0.0.0/0".into()]), "too broad"),
            (Box::new(|p| p.cidrs = vec!["::/0".into()]), "too broad"),
            (Box::new(|p| p.cidrs = vec!["10.96.0.1/16".into()]), "did you mean 10.96.0.0/16"),
            (Box::new(|p| p.cidrs = vec!["10.96.0.0/33".into()]), "not a CIDR"),
            (Box::new(|p| p.cidrs = vec!["127.0.0.0/8".into()]), "loopback"),
            (Box::new(|p| p.cidrs = vec!["169.254.0.0/16".into()]), "metadata"),
            (Box::new(|p| p.cidrs = vec!["10.0.0.0/8".into()]), "contains the relay address"),
            (Box::new(|p| p.cidrs = vec!["10.96.0.0/12".into(), "10.96.0.0/16".into()]), "overlap"),
            (Box::new(|p| p.dns_server = Some("10.200.0.10".into())), "add its range"),
            (Box::new(|p| p.dns_server = Some("dns".into())), "not an IP"),
            (Box::new(|p| p.probe_targets = vec!["10.244.1.10".into()]), "not IP:PORT"),
            (Box::new(|p| p.probe_targets = vec!["10.1.1.1:80".into()]), "outside every CIDR"),
            (
                Box::new(|p| p.relay_endpoints = vec!["10.244.1.5".into()]),
                "relay endpoint \"10.244.1.5\" is not IP:PORT",
            ),
            (Box::new(|p| p.relay_endpoints = vec!["10.1.1.5:8443".into()]), "its Service's ClusterIP"),
            (Box::new(|p| p.cluster_domain = Some("cluster..local".into())), "empty label"),
            (Box::new(|p| p.cluster_domain = Some("clus ter.local".into())), "letters, digits"),
            (Box::new(|p| p.tun_name = Some("a-very-long-interface-name".into())), "1-15 characters"),
            (Box::new(|p| p.mtu = Some(500)), "1280"),
            (Box::new(|p| p.busy_poll_us = Some(5_000)), "0 (off) to 1000"),
            (Box::new(|p| p.namespaces = vec!["Team_A".into()]), "Team_A"),
            (Box::new(|p| p.dns_stub = Some("192.168.1.1".into())), "loopback"),
            (Box::new(|p| p.dns_backend = Some("resolvconf".into())), "auto, systemd-resolved, resolv-conf"),
            (Box::new(|p| p.dns_link_address = Some("10.96.0.53".into())), "outside the cluster CIDRs"),
            (Box::new(|p| p.dns_link_address = Some("127.0.0.2".into())), "loopback"),
            (Box::new(|p| p.allow_overlap = vec!["10.1.0.0/16".into()]), "not one of the cidrs"),
            (Box::new(|p| p.gateways = vec!["10.244.0.5".into()]), "inside the cluster CIDRs"),
            (Box::new(|p| p.gateways = vec!["192.168.1.2".into(), "192.168.1.3".into()]), "at most one IPv4"),
        ];
        for (mutate, fragment) in cases {
            let mut p = base(&dir);
            mutate(&mut p);
            let err = p.validate().expect_err(fragment).to_string();
            assert!(err.contains(fragment), "{err:?} should mention {fragment:?}");
        }
        std::fs::write(dir.join("token"), "  \n").expect("write");
        let mut p = base(&dir);
        p.token_file = Some(dir.join("token"));
        std::fs::write(dir.join("token"), "").expect("write");
        assert!(p.validate().expect_err("empty").to_string().contains("is empty"));
    }

    #[test]
    fn relay_endpoints_are_found_per_cidr() {
        let mut p = base(&tempdir("endpoints"));
        p.relay_endpoints = vec!["10.244.1.5:8443".into(), "[fd00:96::5]:8443".into()];
        let p = p.validate().expect("valid");
        let at = |c: &str| p.relay_endpoint_for(&c.parse().expect("cidr")).map(|e| e.to_string());
        assert_eq!(at("10.244.0.0/16").as_deref(), Some("10.244.1.5:8443"));
        assert_eq!(at("fd00:96::/112").as_deref(), Some("[fd00:96::5]:8443"));
        assert_eq!(at("10.96.0.0/16"), None);
    }

    #[test]
    fn unknown_profile_keys_are_refused() {
        let dir = tempdir("keys");
        let path = dir.join("p.toml");
        std::fs::write(&path, "relay = \"10.0.0.1:1\"\ncidr = [\"10.96.0.0/16\"]\n").expect("write");
        let err = ProfileFile::load(&path).expect_err("unknown key").to_string();
        assert!(err.contains("cidr"), "{err}");
    }
}

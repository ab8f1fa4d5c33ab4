//! systemd-resolved: whether it is the system's resolver, and the per-link
//! settings devnet asks it for, as the exact D-Bus calls
//! (`org.freedesktop.resolve1.Manager`). Pure: the engine's executor sends
//! the calls; golden tests here pin them.
//!
//! **Shape.** devnet gets a link of its own (its TUN device) with one DNS
//! server, an address on that link where devnet's stub listens, and routing
//! domains (`~cluster.local`, `~demo`, …) only. The link is never a default
//! DNS route, so a name outside those domains is never sent to it. The
//! server has to be *on the link*: resolved binds each per-link query to its
//! link (`SO_BINDTOIFINDEX`), so a loopback stub would never see them.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use crate::NamePolicy;

/// The D-Bus name and object of systemd-resolved's manager.
pub const BUS_NAME: &str = "org.freedesktop.resolve1";
pub const OBJECT_PATH: &str = "/org/freedesktop/resolve1";
pub const INTERFACE: &str = "org.freedesktop.resolve1.Manager";

/// The address of resolved's own stub listener.
pub const STUB_ADDRESS: &str = "127.0.0.53";

/// How the system resolves names, as far as devnet's backends care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Programs ask systemd-resolved: configure a link of ours in it.
    SystemdResolved,
    /// Programs read resolv.conf and ask its nameservers: rewrite it.
    ResolvConf,
}

/// What detection looks at.
#[derive(Debug, Clone, Copy, Default)]
pub struct System<'a> {
    /// Where /etc/resolv.conf points, when it is a symlink.
    pub resolv_conf_target: Option<&'a Path>,
    /// Its contents.
    pub resolv_conf: &'a str,
    /// The `hosts:` line of /etc/nsswitch.conf.
    pub nsswitch_hosts: Option<&'a str>,
    /// Whether `org.freedesktop.resolve1` has an owner on the system bus.
    pub resolved_on_bus: bool,
}

/// Which backend reaches the programs on this system, and why (for logs
/// and `status`).
pub fn detect(system: &System<'_>) -> (Backend, &'static str) {
    let via_nss = system
        .nsswitch_hosts
        .is_some_and(|line| line.split_whitespace().skip(1).any(|w| w == "resolve" || w.starts_with("resolve[")));
    let stub_file = system.resolv_conf_target.is_some_and(|t| t.ends_with("systemd/resolve/stub-resolv.conf"));
    let stub_only = {
        let servers = crate::resolv_conf::nameservers(system.resolv_conf);
        !servers.is_empty() && servers.iter().all(|s| s.to_string() == STUB_ADDRESS)
    };
    match (system.resolved_on_bus, via_nss || stub_file || stub_only) {
        (true, true) if via_nss => (Backend::SystemdResolved, "nsswitch.conf asks systemd-resolved (nss-resolve)"),
        (true, true) => (Backend::SystemdResolved, "resolv.conf points at systemd-resolved's stub 127.0.0.53"),
        (true, false) => (
            Backend::ResolvConf,
            "systemd-resolved runs, but resolv.conf lists other nameservers, so programs do not ask it",
        ),
        (false, true) => {
            (Backend::ResolvConf, "resolv.conf points at 127.0.0.53, but systemd-resolved is not on the system bus")
        }
        (false, false) => (Backend::ResolvConf, "no systemd-resolved on the system bus"),
    }
}

/// One method call on [`INTERFACE`]; `Display` is the golden form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    SetLinkDns {
        ifindex: i32,
        servers: Vec<IpAddr>,
    },
    /// (domain, routing only): `true` is resolved's `~domain`.
    SetLinkDomains {
        ifindex: i32,
        domains: Vec<(String, bool)>,
    },
    SetLinkDefaultRoute {
        ifindex: i32,
        enable: bool,
    },
    SetLinkLlmnr {
        ifindex: i32,
        mode: &'static str,
    },
    SetLinkMulticastDns {
        ifindex: i32,
        mode: &'static str,
    },
    SetLinkDnssec {
        ifindex: i32,
        mode: &'static str,
    },
    SetLinkDnsOverTls {
        ifindex: i32,
        mode: &'static str,
    },
    RevertLink {
        ifindex: i32,
    },
}

impl Call {
    /// The D-Bus method name.
    pub fn method(&self) -> &'static str {
        match self {
            Call::SetLinkDns { .. } => "SetLinkDNS",
            Call::SetLinkDomains { .. } => "SetLinkDomains",
            Call::SetLinkDefaultRoute { .. } => "SetLinkDefaultRoute",
            Call::SetLinkLlmnr { .. } => "SetLinkLLMNR",
            Call::SetLinkMulticastDns { .. } => "SetLinkMulticastDNS",
            Call::SetLinkDnssec { .. } => "SetLinkDNSSEC",
            Call::SetLinkDnsOverTls { .. } => "SetLinkDNSOverTLS",
            Call::RevertLink { .. } => "RevertLink",
        }
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.method())?;
        match self {
            Call::SetLinkDns { ifindex, servers } => {
                let list: Vec<String> = servers.iter().map(ToString::to_string).collect();
                write!(f, " {ifindex} [{}]", list.join(", "))
            }
            Call::SetLinkDomains { ifindex, domains } => {
                let list: Vec<String> =
                    domains.iter().map(|(d, routing)| if *routing { format!("~{d}") } else { d.clone() }).collect();
                write!(f, " {ifindex} [{}]", list.join(", "))
            }
            Call::SetLinkDefaultRoute { ifindex, enable } => write!(f, " {ifindex} {enable}"),
            Call::SetLinkLlmnr { ifindex, mode }
            | Call::SetLinkMulticastDns { ifindex, mode }
            | Call::SetLinkDnssec { ifindex, mode }
            | Call::SetLinkDnsOverTls { ifindex, mode } => write!(f, " {ifindex} {mode}"),
            Call::RevertLink { ifindex } => write!(f, " {ifindex}"),
        }
    }
}

/// The calls that make link `ifindex` answer the cluster's names through
/// `server` (devnet's stub, on that link), and nothing else.
///
/// Domains: the cluster domain and each namespace that is not a public
/// suffix, routing only; with a default namespace, `<ns>.svc.<domain>` as a
/// search domain too, so a bare `svc` is tried there (resolved appends
/// search domains to single-label names only). Multicast protocols are off
/// on the link (they would go into the tunnel), and DNSSEC too: the stub
/// rewrites answers for short names, and cluster zones are unsigned.
pub fn link_calls(ifindex: i32, server: IpAddr, policy: &NamePolicy) -> Vec<Call> {
    let mut domains: Vec<(String, bool)> = policy.resolver_domains().into_iter().map(|d| (d, true)).collect();
    if let Some(search) = policy.search_domain() {
        domains.push((search, false));
    }
    vec![
        Call::SetLinkDns { ifindex, servers: vec![server] },
        Call::SetLinkDomains { ifindex, domains },
        Call::SetLinkDefaultRoute { ifindex, enable: false },
        Call::SetLinkLlmnr { ifindex, mode: "no" },
        Call::SetLinkMulticastDns { ifindex, mode: "no" },
        Call::SetLinkDnssec { ifindex, mode: "no" },
        Call::SetLinkDnsOverTls { ifindex, mode: "no" },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_table() {
        let stub = "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n";
        let office = "nameserver 192.168.10.1\n";
        let link = Path::new("../run/systemd/resolve/stub-resolv.conf");
        let uplink = Path::new("/run/systemd/resolve/resolv.conf");
        let nss = "hosts: files mymachines resolve [!UNAVAIL=return] dns myhostname";
        let plain_nss = "hosts:          files dns";
        let table: &[(System<'_>, Backend)] = &[
            // Debian/Ubuntu with resolved: the stub symlink.
            (
                System {
                    resolv_conf_target: Some(link),
                    resolv_conf: stub,
                    resolved_on_bus: true,
                    ..Default::default()
                },
                Backend::SystemdResolved,
            ),
            // A copied stub file (no link) still sends everything to 127.0.0.53.
            (System { resolv_conf: stub, resolved_on_bus: true, ..Default::default() }, Backend::SystemdResolved),
            // nss-resolve asks resolved whatever resolv.conf says.
            (
                System { resolv_conf: office, nsswitch_hosts: Some(nss), resolved_on_bus: true, ..Default::default() },
                Backend::SystemdResolved,
            ),
            // resolved's "uplink" file lists the real servers: glibc asks them, not resolved.
            (
                System {
                    resolv_conf_target: Some(uplink),
                    resolv_conf: office,
                    nsswitch_hosts: Some(plain_nss),
                    resolved_on_bus: true,
                },
                Backend::ResolvConf,
            ),
            // NetworkManager's own file while resolved happens to run.
            (System { resolv_conf: office, resolved_on_bus: true, ..Default::default() }, Backend::ResolvConf),
            // A stub file left behind by a stopped resolved: nothing would answer it.
            (System { resolv_conf: stub, resolved_on_bus: false, ..Default::default() }, Backend::ResolvConf),
            (System { resolv_conf: office, ..Default::default() }, Backend::ResolvConf),
            // An empty resolv.conf is not "only the stub".
            (System { resolv_conf: "", resolved_on_bus: true, ..Default::default() }, Backend::ResolvConf),
        ];
        for (i, (system, want)) in table.iter().enumerate() {
            assert_eq!(detect(system).0, *want, "row {i}: {system:?}");
        }
    }

    #[test]
    fn golden_link_calls() {
        let namespaces: Vec<String> = ["demo", "com", "team-a"].iter().map(|s| (*s).to_owned()).collect();
        let server: IpAddr = "169.254.53.53".parse().expect("ip");
        let policy = NamePolicy::new("cluster.local", &namespaces, Some("demo")).expect("policy");
        let calls: Vec<String> = link_calls(7, server, &policy).iter().map(ToString::to_string).collect();
        assert_eq!(
            calls,
            [
                "SetLinkDNS 7 [169.254.53.53]",
                // `com` is a public suffix: never a routing domain.
                "SetLinkDomains 7 [~cluster.local, ~demo, ~team-a, ~svc, demo.svc.cluster.local]",
                "SetLinkDefaultRoute 7 false",
                "SetLinkLLMNR 7 no",
                "SetLinkMulticastDNS 7 no",
                "SetLinkDNSSEC 7 no",
                "SetLinkDNSOverTLS 7 no",
            ]
        );
        // Without a default namespace there is no search domain.
        let policy = NamePolicy::new("corp.example", &[], None).expect("policy");
        assert_eq!(link_calls(3, server, &policy)[1].to_string(), "SetLinkDomains 3 [~corp.example]");
    }
}

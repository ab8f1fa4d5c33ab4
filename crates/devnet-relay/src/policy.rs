//! Which destinations the relay may dial. Pure: addresses in, verdicts out.
//!
//! A relay inside a cluster is a confused deputy waiting to happen: anyone
//! holding a token could use it to reach the node's loopback services, the
//! cloud metadata endpoint, the relay pod itself, or the nodes (the kubelet's
//! API, SSH, node ports), whose addresses share the pod CIDR on CNIs that
//! give pods addresses from the node network (AWS VPC CNI, Azure CNI). So the
//! check runs in two steps, deny classes first and the allow list second, on the *canonical*
//! address: IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`),
//! NAT64 (`64:ff9b::/96`) and 6to4 (`2002::/16`) encodings are unwrapped to
//! the IPv4 address they really reach before either step.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Cloud metadata endpoints: AWS/GCP/Azure/OpenStack (IPv4 link-local), AWS
/// IPv6 (Nitro), Alibaba Cloud.
const METADATA: [IpAddr; 3] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
];

/// Why a destination was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    Unspecified,
    Loopback,
    LinkLocal,
    Metadata,
    Multicast,
    Broadcast,
    /// One of the relay's own addresses (its pod IP, or the node's).
    RelayItself,
    /// A node's address (the relay's node, from the downward API, and the
    /// nodes listed at install).
    Node,
    /// A NAT64 local-use prefix whose embedded IPv4 address cannot be known.
    OpaqueTranslation,
    /// Not inside any allowed CIDR.
    NotAllowed,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Denial::Unspecified => "unspecified address",
            Denial::Loopback => "loopback address",
            Denial::LinkLocal => "link-local address",
            Denial::Metadata => "cloud metadata endpoint",
            Denial::Multicast => "multicast address",
            Denial::Broadcast => "broadcast address",
            Denial::RelayItself => "the relay's own address",
            Denial::Node => "a node's address (the relay never dials the nodes: kubelet, SSH, node ports)",
            Denial::OpaqueTranslation => "NAT64 local-use prefix (the real destination cannot be checked)",
            Denial::NotAllowed => "outside the cluster CIDRs this relay serves",
        })
    }
}

/// A CIDR that may not be put on the allow list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("allowed CIDR {0} is too broad (shorter than /8): list the cluster's pod and service CIDRs instead")]
    TooBroad(IpNet),
    #[error("allowed CIDR {net} covers a {class} ({addr}): list only the cluster's pod and service CIDRs")]
    CoversDenied { net: IpNet, class: Denial, addr: IpAddr },
    #[error("no allowed CIDRs given: pass the cluster's pod and service CIDRs with --allow")]
    Empty,
}

/// The relay's dial policy.
#[derive(Debug, Clone)]
pub struct Policy {
    allowed: Vec<IpNet>,
    own: Vec<IpAddr>,
    nodes: Vec<IpAddr>,
    /// Only the crate's own tests, whose destinations live on loopback.
    loopback_allowed: bool,
}

impl Policy {
    /// Builds a policy from the allowed CIDRs and the relay's own addresses.
    /// Refuses allow lists that would re-open a deny class wholesale.
    pub fn new(allowed: Vec<IpNet>, own: Vec<IpAddr>) -> Result<Self, PolicyError> {
        if allowed.is_empty() {
            return Err(PolicyError::Empty);
        }
        let probes = [
            (Denial::Loopback, IpAddr::V4(Ipv4Addr::LOCALHOST)),
            (Denial::Loopback, IpAddr::V6(Ipv6Addr::LOCALHOST)),
            (Denial::Metadata, METADATA[0]),
            (Denial::Metadata, METADATA[1]),
            (Denial::Metadata, METADATA[2]),
        ];
        for net in &allowed {
            if net.prefix_len() < 8 {
                return Err(PolicyError::TooBroad(*net));
            }
            if let Some((class, addr)) = probes.iter().find(|(_, addr)| net.contains(addr)) {
                return Err(PolicyError::CoversDenied { net: *net, class: *class, addr: *addr });
            }
        }
        let own = own.into_iter().map(canonical).collect();
        Ok(Self { allowed, own, nodes: Vec::new(), loopback_allowed: false })
    }

    /// Refuses the nodes' addresses too, even inside an allowed CIDR.
    #[must_use]
    pub fn with_nodes(mut self, nodes: impl IntoIterator<Item = IpAddr>) -> Self {
        self.nodes.extend(nodes.into_iter().map(canonical));
        self.nodes.sort_unstable();
        self.nodes.dedup();
        self
    }

    /// The node addresses refused.
    pub fn nodes(&self) -> &[IpAddr] {
        &self.nodes
    }

    /// A policy admitting 127.0.0.0/8, for tests whose destinations listen on loopback.
    #[cfg(test)]
    pub(crate) fn loopback_for_tests() -> Self {
        Self {
            allowed: vec![IpNet::V4("127.0.0.0/8".parse().expect("cidr"))],
            own: vec![],
            nodes: vec![],
            loopback_allowed: true,
        }
    }

    /// The allowed CIDRs.
    pub fn allowed(&self) -> &[IpNet] {
        &self.allowed
    }

    /// Checks a destination. On success returns the canonical address to
    /// dial (an unwrapped IPv4 address for mapped/NAT64 forms).
    pub fn check(&self, addr: IpAddr) -> Result<IpAddr, Denial> {
        if let IpAddr::V6(v6) = addr
            && is_nat64_local_use(&v6)
        {
            return Err(Denial::OpaqueTranslation);
        }
        let addr = canonical(addr);
        if let Some(denial) = deny_class(addr)
            && !(self.loopback_allowed && denial == Denial::Loopback)
        {
            return Err(denial);
        }
        if self.own.contains(&addr) {
            return Err(Denial::RelayItself);
        }
        if self.nodes.contains(&addr) {
            return Err(Denial::Node);
        }
        if self.allowed.iter().any(|net| net.contains(&addr)) { Ok(addr) } else { Err(Denial::NotAllowed) }
    }
}

fn deny_class(addr: IpAddr) -> Option<Denial> {
    if METADATA.contains(&addr) {
        return Some(Denial::Metadata);
    }
    match addr {
        IpAddr::V4(v4) => {
            if v4.is_unspecified() {
                Some(Denial::Unspecified)
            } else if v4.is_loopback() {
                Some(Denial::Loopback)
            } else if v4.is_link_local() {
                Some(Denial::LinkLocal)
            } else if v4.is_multicast() {
                Some(Denial::Multicast)
            } else if v4.is_broadcast() {
                Some(Denial::Broadcast)
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_unspecified() {
                Some(Denial::Unspecified)
            } else if v6.is_loopback() {
                Some(Denial::Loopback)
            } else if v6.is_unicast_link_local() {
                Some(Denial::LinkLocal)
            } else if v6.is_multicast() {
                Some(Denial::Multicast)
            } else {
                None
            }
        }
    }
}

/// Unwraps IPv6 encodings of IPv4 addresses to the IPv4 address reached.
pub fn canonical(addr: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = addr else { return addr };
    let s = v6.segments();
    let embedded = |hi: u16, lo: u16| IpAddr::V4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    match s {
        // ::ffff:a.b.c.d (mapped)
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => embedded(hi, lo),
        // ::a.b.c.d (compatible, deprecated) but not :: or ::1
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 => embedded(hi, lo),
        // 64:ff9b::a.b.c.d (NAT64 well-known prefix, RFC 6052)
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => embedded(hi, lo),
        // 2002:AABB:CCDD::/48 (6to4)
        [0x2002, hi, lo, ..] => embedded(hi, lo),
        _ => addr,
    }
}

fn is_nat64_local_use(v6: &Ipv6Addr) -> bool {
    let s = v6.segments();
    s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        let allowed = ["10.244.0.0/16", "10.96.0.0/16", "fd00:244::/48", "fd00:96::/112"]
            .iter()
            .map(|s| s.parse().expect("cidr"))
            .collect();
        Policy::new(allowed, vec!["10.244.1.5".parse().expect("ip"), "fd00:244:0:1::5".parse().expect("ip")])
            .expect("policy")
    }

    #[test]
    fn verdicts() {
        let p = policy();
        let table: &[(&str, Result<&str, Denial>)] = &[
            ("10.244.2.10", Ok("10.244.2.10")),
            ("10.96.0.10", Ok("10.96.0.10")),
            ("fd00:244:0:2::10", Ok("fd00:244:0:2::10")),
            ("fd00:96::20", Ok("fd00:96::20")),
            ("::ffff:10.244.2.10", Ok("10.244.2.10")),
            ("64:ff9b::a60:140b", Ok("10.96.20.11")), // NAT64 of an allowed address
            ("10.60.20.11", Err(Denial::NotAllowed)),
            ("8.8.8.8", Err(Denial::NotAllowed)),
            ("127.0.0.1", Err(Denial::Loopback)),
            ("127.1.2.3", Err(Denial::Loopback)),
            ("::1", Err(Denial::Loopback)),
            ("::ffff:127.0.0.1", Err(Denial::Loopback)),
            ("::127.0.0.1", Err(Denial::Loopback)),
            ("64:ff9b::7f00:1", Err(Denial::Loopback)),
            ("2002:7f00:1::1", Err(Denial::Loopback)),
            ("169.254.169.254", Err(Denial::Metadata)),
            ("::ffff:169.254.169.254", Err(Denial::Metadata)),
            ("64:ff9b::a9fe:a9fe", Err(Denial::Metadata)),
            ("2002:a9fe:a9fe::", Err(Denial::Metadata)),
            ("fd00:ec2::254", Err(Denial::Metadata)),
            ("100.100.100.200", Err(Denial::Metadata)),
            ("::ffff:100.100.100.200", Err(Denial::Metadata)),
            ("169.254.1.1", Err(Denial::LinkLocal)),
            ("fe80::1", Err(Denial::LinkLocal)),
            ("0.0.0.0", Err(Denial::Unspecified)),
            ("::", Err(Denial::Unspecified)),
            ("224.0.0.1", Err(Denial::Multicast)),
            ("ff02::1", Err(Denial::Multicast)),
            ("255.255.255.255", Err(Denial::Broadcast)),
            ("10.244.1.5", Err(Denial::RelayItself)),
            ("::ffff:10.244.1.5", Err(Denial::RelayItself)),
            ("fd00:244:0:1::5", Err(Denial::RelayItself)),
            ("64:ff9b:1::a60:140b", Err(Denial::OpaqueTranslation)),
        ];
        for (input, want) in table {
            let got = p.check(input.parse().expect("ip"));
            let want = want.map(|s| s.parse::<IpAddr>().expect("ip"));
            assert_eq!(got, want, "{input}");
        }
    }

    #[test]
    fn the_relay_can_reach_the_nodes_no_more() {
        // Pods and nodes share 10.0.0.0/16, as with a VPC CNI.
        let nodes = ["10.0.1.11", "10.0.1.12", "fd00:10::11"].map(|s| s.parse::<IpAddr>().expect("ip"));
        let p = Policy::new(vec!["10.0.0.0/16".parse().expect("cidr"), "fd00:10::/64".parse().expect("cidr")], vec![])
            .expect("policy")
            .with_nodes(nodes);
        let table: &[(&str, Result<&str, Denial>)] = &[
            ("10.0.1.11", Err(Denial::Node)),
            ("10.0.1.12", Err(Denial::Node)),
            ("::ffff:10.0.1.12", Err(Denial::Node)),
            ("64:ff9b::a00:10b", Err(Denial::Node)),
            ("fd00:10::11", Err(Denial::Node)),
            ("10.0.1.13", Ok("10.0.1.13")),
            ("10.0.2.20", Ok("10.0.2.20")),
        ];
        for (input, want) in table {
            let got = p.check(input.parse().expect("ip"));
            assert_eq!(got, want.map(|s| s.parse::<IpAddr>().expect("ip")), "{input}");
        }
        assert!(Denial::Node.to_string().contains("node"));
    }

    #[test]
    fn broad_or_dangerous_allow_lists_are_refused() {
        let own = vec![];
        for (cidr, fragment) in [
            ("0.0.0.0/0", "too broad"),
            ("::/0", "too broad"),
            ("127.0.0.0/8", "loopback"),
            ("169.254.0.0/16", "metadata"),
            ("100.64.0.0/10", "metadata"),
            ("fd00::/8", "metadata"),
        ] {
            let err = Policy::new(vec![cidr.parse().expect("cidr")], own.clone()).expect_err(cidr);
            assert!(err.to_string().contains(fragment), "{cidr}: {err}");
        }
        assert_eq!(Policy::new(vec![], own).expect_err("empty"), PolicyError::Empty);
    }
}

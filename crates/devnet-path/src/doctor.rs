//! `devnet doctor`: turns path verdicts into findings in the seeds' terms,
//! each with the fix. Pure: verdicts in, findings out.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{Hop, HopAnswer, Path, ProbeOutcome, Verdict, answered_unproven};

/// What a CIDR holds. With explicit profiles the service CIDR is the one
/// holding the cluster DNS server; discovery will say it outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Pods,
    Services,
}

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// How things are; nothing to do.
    Info,
    /// Works, through the tunnel; the office network could do better.
    Warning,
}

/// One thing doctor noticed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Finding {
    pub severity: Severity,
    pub title: String,
    pub detail: String,
    /// What to change, when something should change.
    pub fix: Option<String>,
}

fn list(nets: &[IpNet]) -> String {
    nets.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// Findings for a set of verdicts and the role of each CIDR.
pub fn diagnose(verdicts: &[(Verdict, Role)]) -> Vec<Finding> {
    // A CIDR that answers but is not proven to be this cluster is not a
    // routing gap of the office network: it has its own finding below.
    let with = |role: Role, path: Path| -> Vec<IpNet> {
        verdicts
            .iter()
            .filter(|(v, r)| *r == role && v.path == path && !answered_unproven(v))
            .map(|(v, _)| v.cidr)
            .collect()
    };
    let (pods_direct, pods_tunnel) = (with(Role::Pods, Path::Direct), with(Role::Pods, Path::Tunnel));
    let (svc_direct, svc_tunnel) = (with(Role::Services, Path::Direct), with(Role::Services, Path::Tunnel));
    let mut findings = Vec::new();

    if !verdicts.is_empty() && verdicts.iter().all(|(v, _)| v.path == Path::Direct) {
        findings.push(Finding {
            severity: Severity::Info,
            title: "the office network routes every cluster CIDR".into(),
            detail: format!(
                "{} answered directly; devnet puts nothing in the data path",
                list(&verdicts.iter().map(|(v, _)| v.cidr).collect::<Vec<_>>())
            ),
            fix: None,
        });
    }
    if !pods_direct.is_empty() && !svc_tunnel.is_empty() {
        findings.push(Finding {
            severity: Severity::Warning,
            title: "pod IPs are routed, ClusterIPs are not".into(),
            detail: format!(
                "{} answered directly but {} did not: the service CIDR is not advertised to the office network, so devnet tunnels it",
                list(&pods_direct),
                list(&svc_tunnel)
            ),
            fix: Some(format!(
                "with Calico BGP peering (seed 000), list {} in BGPConfiguration.spec.serviceClusterIPs; with a forwarding node (seed 001), add a static route for it via that node on the office router",
                list(&svc_tunnel)
            )),
        });
    }
    if !svc_direct.is_empty() && !pods_tunnel.is_empty() {
        findings.push(Finding {
            severity: Severity::Warning,
            title: "ClusterIPs are routed, pod IPs are not".into(),
            detail: format!(
                "{} answered directly but {} did not: pod blocks are not advertised, which is what Calico's IPIP or VXLAN overlay mode does",
                list(&svc_direct),
                list(&pods_tunnel)
            ),
            fix: Some(format!(
                "set ipipMode: Never and vxlanMode: Never on the Calico IPPool for {} so BIRD advertises the pod blocks (seed 000), or add static routes for it via a forwarding node (seed 001)",
                list(&pods_tunnel)
            )),
        });
    }
    for (v, _) in verdicts.iter().filter(|(v, _)| v.path == Path::Gateway) {
        let node = v.evidence.gateway.as_ref().map_or_else(String::new, |g| g.gateway.to_string());
        findings.push(Finding {
            severity: Severity::Warning,
            title: format!("{} goes through the forwarding node {node}", v.cidr),
            detail: "seed 001's setup: the node masquerades, so pods see the node's address instead of this laptop's; \
                     anything in the cluster that calls back to the laptop (a registry such as Eureka, a debugger) will not reach it"
                .into(),
            fix: Some("peer the office router with Calico over BGP with natOutgoing off (seed 002), so pods see real source addresses".into()),
        });
    }
    for (v, _) in verdicts.iter().filter(|(v, _)| v.path == Path::Tunnel || v.path == Path::Unreachable) {
        let Some(target) = v.evidence.target else {
            findings.push(Finding {
                severity: Severity::Warning,
                title: format!("{} cannot be tested", v.cidr),
                detail: "no live target inside it is known, so a direct path cannot be proven".into(),
                fix: Some("add a pod or Service IP:PORT inside it to probe-targets".into()),
            });
            continue;
        };
        if answered_unproven(v) {
            findings.push(unproven_finding(v));
            continue;
        }
        let first_router = v.evidence.route.as_ref().and_then(|r| r.gateway);
        if let Some(finding) = where_it_ends(v.cidr, target, first_router, &v.evidence.hops) {
            findings.push(finding);
            continue;
        }
        let (title, detail, fix) = match &v.evidence.probe {
            Some(ProbeOutcome::TimedOut { .. }) => (
                format!("nothing in {} answers from this network", v.cidr),
                format!(
                    "probes to {target} leave over {} and vanish: no router on the way has a route (and its ICMP errors are rate-limited or filtered), or one has it but a later hop does not (seed 004), or a firewall drops them",
                    v.evidence
                        .route
                        .as_ref()
                        .map_or("?".into(), |r| r.gateway.map_or(r.dev.clone(), |g| format!("{g} on {}", r.dev)))
                ),
                "peer the office router with Calico over BGP (seeds 000, 002) or route the CIDR through a forwarding node with SNAT (seed 001), and give every router on the way the route (seed 004); until then devnet tunnels it",
            ),
            Some(ProbeOutcome::Unreachable { error }) => (
                format!("the office network has no route to {}", v.cidr),
                format!("probing {target}: {error}"),
                "peer the office router with Calico over BGP (seeds 000, 002), or route the CIDR through a forwarding node with SNAT (seed 001); until then devnet tunnels it",
            ),
            _ => continue,
        };
        findings.push(Finding { severity: Severity::Warning, title, detail, fix: Some(fix.into()) });
    }
    findings
}

/// A CIDR where something answers that did not prove to be this cluster:
/// devnet keeps it in the tunnel (security review finding 1).
fn unproven_finding(v: &Verdict) -> Finding {
    let proof = v.evidence.proof.as_ref().or_else(|| v.evidence.gateway.as_ref().and_then(|g| g.proof.as_ref()));
    let fix = match proof {
        None => format!(
            "if the office network does route {0} to this cluster, let the relay prove it: it needs an address inside {0} (for a service CIDR, the relay Service's ClusterIP; in a hand-written profile, list it in relay-endpoints); until then devnet tunnels it",
            v.cidr
        ),
        Some(p) => format!(
            "nothing to fix on a network that is not the office's (a hotel, a café, a captive portal); at the office, check that {} is routed to this cluster and not to another one using the same range, and that {} reaches the relay; until then devnet tunnels it",
            v.cidr, p.endpoint
        ),
    };
    Finding {
        severity: Severity::Warning,
        title: format!("something answers for {} on this network, but it is not proven to be this cluster", v.cidr),
        detail: format!(
            "{}. A captive portal or a hostile access point answers every connection, and another cluster may use the same range; so devnet keeps {} in the tunnel, and cluster traffic and cluster names never go in clear to whoever answered",
            v.reason, v.cidr
        ),
        fix: Some(fix),
    }
}

/// What a trace to `target` says about where the way to `cidr` ends: a hop
/// past the first router without the route (seed 004), a routing loop, a
/// firewall, or silence after the last router that forwarded. None when the
/// trace says nothing sharper than the probe did.
pub fn where_it_ends(cidr: IpNet, target: SocketAddr, first_router: Option<IpAddr>, hops: &[Hop]) -> Option<Finding> {
    let last = hops.iter().rev().find(|h| h.answer != HopAnswer::Silent)?;
    let forwarders: Vec<IpAddr> =
        hops.iter().filter(|h| h.answer == HopAnswer::Forwards).filter_map(|h| h.from).collect();
    let way = |end: Option<IpAddr>| {
        let mut parts: Vec<String> = forwarders.iter().map(ToString::to_string).collect();
        parts.extend(end.map(|e| e.to_string()));
        parts.join(" -> ")
    };
    let ip = target.ip();
    if let Some(looped) = forwarders.iter().enumerate().find_map(|(i, a)| forwarders[..i].contains(a).then_some(*a)) {
        return Some(Finding {
            severity: Severity::Warning,
            title: format!("a routing loop on the way to {cidr}"),
            detail: format!(
                "packets for {ip} go {} and come back to {looped}: a router on the way sends {cidr} back where it came from (a default route where a specific one is missing: seed 004)",
                way(None)
            ),
            fix: Some(format!(
                "give every router on the way a route for {cidr} towards the cluster's nodes; until then devnet tunnels it"
            )),
        });
    }
    let from = last.from?;
    // A router without the route says so at any TTL; when rate-limited
    // hops before it stayed silent, its TTL overstates how far it is.
    let is_first = last.ttl == 1 || first_router == Some(from) || (first_router.is_none() && forwarders.is_empty());
    let (title, detail, fix) = match last.answer {
        HopAnswer::NoRoute if !is_first => (
            format!("{cidr} is routed by the first router but not at every hop: {from} (hop {}) has no route", last.ttl),
            format!(
                "packets for {ip} go {}, where {from} answers that it has no route: the route is on the router but not on every hop after it (seed 004)",
                way(Some(from))
            ),
            format!(
                "add a route for {cidr} on {from} (towards the node that owns the block){}; until then devnet tunnels it",
                forwarders.last().map_or(String::new(), |p| format!(", or point the route on {p} at a hop that has it"))
            ),
        ),
        HopAnswer::NoRoute => (
            format!("the first router {from} has no route to {cidr}"),
            format!("{from} answers that it has no route to {ip}"),
            "peer the office router with Calico over BGP (seeds 000, 002), or route the CIDR through a forwarding node with SNAT (seed 001); until then devnet tunnels it".into(),
        ),
        HopAnswer::Prohibited => (
            format!("a firewall at {from} (hop {}) refuses traffic to {cidr}", last.ttl),
            format!("packets for {ip} go {} and are refused there (ICMP administratively prohibited)", way(Some(from))),
            format!("allow this laptop's network to reach {cidr} on {from}; until then devnet tunnels it"),
        ),
        HopAnswer::Forwards => (
            format!("packets for {cidr} pass {from} (hop {}) and vanish", last.ttl),
            format!(
                "packets for {ip} go {} and nothing answers after that: the next hop drops them without a word (no route and no ICMP, or a firewall), or a hop further on lacks the route (seed 004)",
                way(None)
            ),
            format!(
                "check the route for {cidr} and the firewall on the hop after {from}; until then devnet tunnels it"
            ),
        ),
        HopAnswer::Reached | HopAnswer::Silent => return None,
    };
    Some(Finding { severity: Severity::Warning, title, detail, fix: Some(fix) })
}

/// Whether the direct path to the pods keeps this laptop's address: `local`
/// is the source of a connection to the relay pod at `target`, `seen` what
/// the relay saw.
pub fn source_nat(target: SocketAddr, local: IpAddr, seen: IpAddr) -> Finding {
    if local == seen {
        return Finding {
            severity: Severity::Info,
            title: format!("no SNAT on the path to the pods: they see this laptop as {local}"),
            detail: format!("the relay pod at {target} saw the connection come from {seen}, this laptop's own address"),
            fix: None,
        };
    }
    Finding {
        severity: Severity::Warning,
        title: format!("SNAT on the path to the pods: they see this laptop as {seen}, not {local}"),
        detail: format!(
            "a router or forwarding node between here and {target} rewrites the source (seed 001's MASQUERADE on the \
             forwarding node does this); pods can answer, but anything in the cluster that calls the laptop back \
             (a debugger, a registry such as Eureka, a webhook) reaches {seen} instead"
        ),
        fix: Some(
            "route the pod CIDRs without masquerading: peer the office router with Calico over BGP (seeds 000, 002), \
             or drop the MASQUERADE rule on the forwarding node for the office LAN and give the nodes a route back to it"
                .into(),
        ),
    }
}

/// What the office DNS (the laptop's own nameserver) said to a cluster name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "kebab-case")]
pub enum OfficeDns {
    /// It resolved it: the cluster domain is forwarded.
    Forwards,
    /// It answered without records (NXDOMAIN, REFUSED, …).
    Refuses(String),
    /// It did not answer in time.
    Silent,
}

/// The seeds' DNS forwarder for the cluster domain: present or not on the
/// office DNS `server`, probed with `name` (a name every cluster has).
pub fn dns_forwarding(
    domain: &str,
    name: &str,
    server: std::net::IpAddr,
    cluster_dns: std::net::IpAddr,
    said: &OfficeDns,
) -> Finding {
    match said {
        OfficeDns::Forwards => Finding {
            severity: Severity::Info,
            title: format!("the office DNS forwards {domain}"),
            detail: format!("{server} resolved {name}; cluster names work without devnet's resolver too"),
            fix: None,
        },
        OfficeDns::Refuses(_) | OfficeDns::Silent => Finding {
            severity: Severity::Warning,
            title: format!("the office DNS does not forward {domain}"),
            detail: format!(
                "{server} {} for {name}, so cluster names resolve only through devnet's resolver on this machine",
                match said {
                    OfficeDns::Refuses(code) => format!("answered {code}"),
                    _ => "did not answer".to_owned(),
                }
            ),
            fix: Some(format!(
                "add a conditional forwarder for {domain} to the cluster DNS {cluster_dns} on the office DNS (dnsmasq: `server=/{domain}/{cluster_dns}`; BIND: `zone \"{domain}\" {{ type forward; forwarders {{ {cluster_dns}; }}; }};`), reachable once the service CIDR is routed"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Observation, RouteUsed};

    fn hop(ttl: u8, from: Option<&str>, answer: HopAnswer) -> Hop {
        Hop { ttl, from: from.map(|f| f.parse().expect("ip")), answer }
    }

    #[test]
    fn traces_say_where_the_way_ends() {
        let cidr: IpNet = "10.244.0.0/16".parse().expect("cidr");
        let target: SocketAddr = "10.244.1.10:8080".parse().expect("addr");
        let office = Some("192.168.10.1");
        let table: &[(&[Hop], Option<&str>)] = &[
            // Seed 004: the office router forwards, the next hop has no route.
            (
                &[hop(1, office, HopAnswer::Forwards), hop(2, Some("10.60.20.12"), HopAnswer::NoRoute)],
                Some(
                    "10.244.0.0/16 is routed by the first router but not at every hop: 10.60.20.12 (hop 2) has no route",
                ),
            ),
            (
                &[hop(1, office, HopAnswer::NoRoute)],
                Some("the first router 192.168.10.1 has no route to 10.244.0.0/16"),
            ),
            (
                &[
                    hop(1, office, HopAnswer::Forwards),
                    hop(2, Some("10.60.20.12"), HopAnswer::Forwards),
                    hop(3, office, HopAnswer::Forwards),
                ],
                Some("a routing loop on the way to 10.244.0.0/16"),
            ),
            (
                &[
                    hop(1, office, HopAnswer::Forwards),
                    hop(2, None, HopAnswer::Silent),
                    hop(3, None, HopAnswer::Silent),
                ],
                Some("packets for 10.244.0.0/16 pass 192.168.10.1 (hop 1) and vanish"),
            ),
            (
                &[hop(1, office, HopAnswer::Forwards), hop(2, Some("10.60.20.1"), HopAnswer::Prohibited)],
                Some("a firewall at 10.60.20.1 (hop 2) refuses traffic to 10.244.0.0/16"),
            ),
            // Reached, or nothing at all: the probe's own finding stands.
            (&[hop(1, office, HopAnswer::Forwards), hop(2, Some("10.244.1.10"), HopAnswer::Reached)], None),
            (&[hop(1, None, HopAnswer::Silent)], None),
            (&[], None),
        ];
        for (hops, want) in table {
            let got = where_it_ends(cidr, target, office.map(|o| o.parse().expect("ip")), hops).map(|f| f.title);
            assert_eq!(got.as_deref(), *want, "{hops:?}");
        }
        let seed_004 = where_it_ends(cidr, target, None, table[0].0).expect("finding");
        assert!(seed_004.detail.contains("192.168.10.1 -> 10.60.20.12"), "{}", seed_004.detail);
        assert!(seed_004.fix.as_deref().is_some_and(|f| f.contains("add a route for 10.244.0.0/16 on 10.60.20.12")));
    }

    #[test]
    fn source_nat_is_named_with_the_address_the_pods_see() {
        let relay: SocketAddr = "10.244.1.5:8443".parse().expect("addr");
        let laptop: IpAddr = "192.168.10.2".parse().expect("ip");
        let kept = source_nat(relay, laptop, laptop);
        assert_eq!((kept.severity, kept.fix), (Severity::Info, None));
        assert!(kept.title.contains("no SNAT") && kept.title.contains("192.168.10.2"), "{}", kept.title);
        let node: IpAddr = "10.60.20.11".parse().expect("ip");
        let nat = source_nat(relay, laptop, node);
        assert_eq!(nat.severity, Severity::Warning);
        assert!(nat.title.contains("SNAT") && nat.title.contains("as 10.60.20.11, not 192.168.10.2"), "{}", nat.title);
        assert!(nat.fix.as_deref().is_some_and(|f| f.contains("MASQUERADE")));
    }

    fn verdict(cidr: &str, path: Path, probe: Option<ProbeOutcome>) -> Verdict {
        Verdict {
            cidr: cidr.parse().expect("cidr"),
            path,
            reason: String::new(),
            evidence: Observation {
                cidr: cidr.parse().expect("cidr"),
                target: Some("10.0.0.1:53".parse().expect("target")),
                route: Some(RouteUsed {
                    dev: "eth0".into(),
                    gateway: Some("192.168.10.1".parse().expect("gw")),
                    src: None,
                }),
                probe,
                gateway: None,
                hops: Vec::new(),
                proof: None,
            },
        }
    }

    fn titles(findings: &[Finding]) -> Vec<&str> {
        findings.iter().map(|f| f.title.as_str()).collect()
    }

    #[test]
    fn findings_in_the_seeds_terms() {
        let ok = || Some(ProbeOutcome::Connected { rtt_us: 300 });
        let no_route = || Some(ProbeOutcome::Unreachable { error: "Network is unreachable".into() });
        let lost = || Some(ProbeOutcome::TimedOut { after_ms: 700 });

        let all_direct = diagnose(&[
            (verdict("10.244.0.0/16", Path::Direct, ok()), Role::Pods),
            (verdict("10.96.0.0/16", Path::Direct, ok()), Role::Services),
        ]);
        assert_eq!(titles(&all_direct), ["the office network routes every cluster CIDR"]);

        let pods_only = diagnose(&[
            (verdict("10.244.0.0/16", Path::Direct, ok()), Role::Pods),
            (verdict("10.96.0.0/16", Path::Tunnel, no_route()), Role::Services),
        ]);
        assert_eq!(titles(&pods_only)[0], "pod IPs are routed, ClusterIPs are not");
        assert!(pods_only[0].fix.as_deref().unwrap_or("").contains("serviceClusterIPs"));
        assert!(titles(&pods_only).contains(&"the office network has no route to 10.96.0.0/16"));

        let overlay = diagnose(&[
            (verdict("10.244.0.0/16", Path::Tunnel, no_route()), Role::Pods),
            (verdict("10.96.0.0/16", Path::Direct, ok()), Role::Services),
        ]);
        assert!(overlay[0].fix.as_deref().unwrap_or("").contains("ipipMode: Never"));

        let black_hole = diagnose(&[(verdict("10.244.0.0/16", Path::Tunnel, lost()), Role::Pods)]);
        assert_eq!(titles(&black_hole), ["nothing in 10.244.0.0/16 answers from this network"]);
        assert!(black_hole[0].detail.contains("192.168.10.1 on eth0"));

        let mut via_node = verdict("10.244.0.0/16", Path::Gateway, ok());
        via_node.evidence.gateway = Some(crate::GatewayTrial {
            gateway: "192.168.10.30".parse().expect("ip"),
            on_link: true,
            probe: ok(),
            proof: None,
        });
        let snat = diagnose(&[(via_node, Role::Pods)]);
        assert_eq!(titles(&snat), ["10.244.0.0/16 goes through the forwarding node 192.168.10.30"]);
        assert!(snat[0].detail.contains("masquerades"));

        // Security review finding 1: answers nothing proved are named as
        // such, not as a routing gap of the office network.
        let hostile = |cidr: &str| {
            let mut v = verdict(cidr, Path::Tunnel, ok());
            v.reason = format!(
                "10.0.0.1:53 answered in 0.30 ms over dev eth0, {}: the relay has no address in {cidr} to prove it",
                crate::NOT_PROVEN
            );
            v
        };
        let hostile_lan =
            diagnose(&[(hostile("10.244.0.0/16"), Role::Pods), (hostile("10.96.0.0/16"), Role::Services)]);
        assert_eq!(
            titles(&hostile_lan),
            [
                "something answers for 10.244.0.0/16 on this network, but it is not proven to be this cluster",
                "something answers for 10.96.0.0/16 on this network, but it is not proven to be this cluster",
            ]
        );
        assert!(hostile_lan[0].detail.contains("captive portal"), "{}", hostile_lan[0].detail);
        assert!(hostile_lan[1].fix.as_deref().unwrap_or("").contains("ClusterIP"));
        let pods_proven = diagnose(&[
            (verdict("10.244.0.0/16", Path::Direct, ok()), Role::Pods),
            (hostile("10.96.0.0/16"), Role::Services),
        ]);
        assert!(!titles(&pods_proven).contains(&"pod IPs are routed, ClusterIPs are not"), "{pods_proven:?}");

        let mut untested = verdict("10.244.0.0/16", Path::Tunnel, None);
        untested.evidence.target = None;
        assert!(diagnose(&[(untested, Role::Pods)])[0].fix.as_deref().unwrap_or("").contains("probe-targets"));
    }
}

#[cfg(test)]
mod dns_tests {
    use super::*;

    #[test]
    fn forwarding_findings_name_the_fix() {
        let (server, dns) = ("192.168.10.1".parse().expect("ip"), "10.96.0.10".parse().expect("ip"));
        let name = "kube-dns.kube-system.svc.cluster.local";
        let f = dns_forwarding("cluster.local", name, server, dns, &OfficeDns::Refuses("Non-Existent Domain".into()));
        assert_eq!(f.severity, Severity::Warning);
        assert!(f.detail.contains("answered Non-Existent Domain"), "{}", f.detail);
        assert!(f.fix.as_deref().is_some_and(|x| x.contains("server=/cluster.local/10.96.0.10")));
        assert!(
            dns_forwarding("cluster.local", name, server, dns, &OfficeDns::Silent).detail.contains("did not answer")
        );
        let ok = dns_forwarding("cluster.local", name, server, dns, &OfficeDns::Forwards);
        assert_eq!((ok.severity, ok.fix), (Severity::Info, None));
    }
}

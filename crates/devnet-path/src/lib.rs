//! # devnet-path: which way each cluster CIDR goes
//!
//! **Layer:** sans-IO decision logic. Given, per CIDR, what the OS said about
//! routing to a live target inside it and what a real probe to that target
//! returned, it decides the path: **direct** (the network already routes it:
//! the office's BGP peering or static routes), **tunnel** (through the relay),
//! or **unreachable** (neither works), and keeps the evidence so that `devnet
//! status` and `devnet doctor` can say why.
//!
//! The rules, in order:
//! 1. A route through our own TUN device is never evidence of a direct path.
//! 2. A probe that connected, or was *refused* by the target (a RST proves the
//!    packets got there and back), on a route not through our TUN, shows only
//!    that *something* answers: a captive portal or a hostile access point
//!    answers every SYN. The CIDR is direct only when it is also [`Proof`]
//!    that the route reaches *this* cluster: a TLS handshake with the relay
//!    at its own address inside the CIDR (pod IP, or its Service's
//!    ClusterIP), over the same route, verified by the cluster's relay CA
//!    for the relay's fixed name. Nobody without the relay's key can fake
//!    it; another cluster that uses the same range cannot either.
//! 3. Answered but not proven: the tunnel when a relay is configured; else
//!    unreachable, with evidence saying so ("answered, but not proven to be
//!    this cluster") for `devnet status` and `devnet doctor`.
//! 4. Otherwise, the tunnel when a relay is configured; else unreachable.
//! 5. A CIDR with no live target to probe cannot be proven direct: tunnel.
//! 6. A forwarding node's trial needs the same proof through the node.
//! 7. ([`decide_all`]) A CIDR in which the relay has *no* address of its
//!    own (another node's pod block: the relay runs on one node) and whose
//!    probe answered is proven by a CIDR of the same address family that
//!    the relay proved over the *same* route (device and next hop). Against
//!    a stranger this is as strong as its own proof: a captive portal or a
//!    hostile access point cannot produce the first proof at all. Against a
//!    next hop that does reach the cluster, a per-CIDR proof would add
//!    nothing either: such a router can let the relay's address through and
//!    divert the rest of the same CIDR. A CIDR whose *own* proof failed
//!    never borrows one: that failure is evidence its way leads elsewhere.
//!
//! A DNS answer for `kube-dns.kube-system.svc.<domain>` proves nothing
//! (anyone who knows the cluster's conventions can answer it).
//!
//! **What it does not do:** look up routes, send probes, or change anything;
//! the engine does, and feeds the results in.

pub mod doctor;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The route the OS would use for a probe target, as `ip route get` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct RouteUsed {
    pub dev: String,
    #[cfg_attr(feature = "ts", ts(type = "string | null"))]
    pub gateway: Option<IpAddr>,
    #[cfg_attr(feature = "ts", ts(type = "string | null"))]
    pub src: Option<IpAddr>,
}

/// How a TCP probe to a live target ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum ProbeOutcome {
    /// The target accepted the connection.
    Connected {
        #[cfg_attr(feature = "ts", ts(type = "number"))]
        rtt_us: u64,
    },
    /// The target answered with a reset: routed, but nothing listens there.
    Refused {
        #[cfg_attr(feature = "ts", ts(type = "number"))]
        rtt_us: u64,
    },
    /// No answer within the probe timeout.
    TimedOut {
        #[cfg_attr(feature = "ts", ts(type = "number"))]
        after_ms: u64,
    },
    /// The OS or a router said there is no way there.
    Unreachable { error: String },
}

impl ProbeOutcome {
    /// Whether the target answered at all (so packets were routed both ways).
    pub fn answered(&self) -> bool {
        matches!(self, Self::Connected { .. } | Self::Refused { .. })
    }

    /// Classifies a connect result.
    pub fn from_connect(result: &std::io::Result<()>, elapsed: Duration, timeout: Duration) -> Self {
        let rtt_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        match result {
            Ok(()) => Self::Connected { rtt_us },
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Self::Refused { rtt_us },
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                Self::TimedOut { after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX) }
            }
            Err(e) => Self::Unreachable { error: e.to_string() },
        }
    }
}

/// What was found out about one CIDR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Observation {
    #[cfg_attr(feature = "ts", ts(type = "string"))]
    pub cidr: IpNet,
    /// The live target probed, if the CIDR has one.
    #[cfg_attr(feature = "ts", ts(type = "string | null"))]
    pub target: Option<SocketAddr>,
    /// The route the OS chose for the target (None: no route at all).
    pub route: Option<RouteUsed>,
    pub probe: Option<ProbeOutcome>,
    /// When no direct path answered and a forwarding node is configured: the
    /// node, and how the target answered through it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayTrial>,
    /// Where packets to the target stop, hop by hop, when doctor traced a
    /// probe that did not answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hops: Vec<Hop>,
    /// Whether the way is this cluster's: tried when the probe answered and
    /// the relay has an address inside the CIDR (None: not tried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<Proof>,
}

/// A TLS handshake with the relay at its own address inside a CIDR, over
/// the route being judged: what makes an answer this cluster's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Proof {
    /// The relay's address that was dialled.
    #[cfg_attr(feature = "ts", ts(type = "string"))]
    pub endpoint: SocketAddr,
    /// The route the OS chose for it; none for a trial through a forwarding
    /// node (devnet's own trial table decides that way).
    pub route: Option<RouteUsed>,
    pub outcome: ProofOutcome,
}

/// How a proof ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum ProofOutcome {
    /// The relay's certificate for its fixed name, signed by the profile's
    /// relay CA. `age_s`: how long ago the handshake was (proofs are kept
    /// per route until the network changes or they are a minute old).
    Verified {
        #[cfg_attr(feature = "ts", ts(type = "number"))]
        age_s: u64,
    },
    /// No verified handshake: what happened instead (a certificate the CA
    /// did not sign, no TLS answer at all, no connection, no CA known).
    Failed { error: String },
}

impl Proof {
    fn verified(&self) -> bool {
        matches!(self.outcome, ProofOutcome::Verified { .. })
    }
}

/// One hop of a trace: what came back for packets sent with TTL `ttl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Hop {
    pub ttl: u8,
    /// The router or host that answered, if any did.
    #[cfg_attr(feature = "ts", ts(type = "string | null"))]
    pub from: Option<IpAddr>,
    pub answer: HopAnswer,
}

/// What a hop answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "kebab-case")]
pub enum HopAnswer {
    /// ICMP time exceeded: a router that forwards towards the target.
    Forwards,
    /// ICMP network or host unreachable: this hop has no route on.
    NoRoute,
    /// ICMP administratively prohibited: a firewall.
    Prohibited,
    /// The target itself answered (port unreachable, or any reply).
    Reached,
    /// Nothing came back.
    Silent,
}

/// A probe through a configured forwarding node (seed 001's node-30).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct GatewayTrial {
    #[cfg_attr(feature = "ts", ts(type = "string"))]
    pub gateway: IpAddr,
    /// Whether the node is on a directly connected network; devnet only
    /// routes through on-link nodes.
    pub on_link: bool,
    pub probe: Option<ProbeOutcome>,
    /// The proof through the node (tried when its probe answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<Proof>,
}

/// The path chosen for a CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "kebab-case")]
pub enum Path {
    Direct,
    /// Through a configured forwarding node, by a route devnet adds.
    Gateway,
    Tunnel,
    Unreachable,
}

/// A decision and the evidence behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Verdict {
    #[cfg_attr(feature = "ts", ts(type = "string"))]
    pub cidr: IpNet,
    pub path: Path,
    /// One sentence: why.
    pub reason: String,
    pub evidence: Observation,
}

/// Decides the path for one CIDR. `tun` is our TUN device's name;
/// `tunnel_available` says whether a relay is configured.
pub fn decide(observation: Observation, tun: &str, tunnel_available: bool) -> Verdict {
    let fallback = |why: String| if tunnel_available { (Path::Tunnel, why) } else { (Path::Unreachable, why) };
    let (path, reason) = match (&observation.target, &observation.route, &observation.probe) {
        (None, _, _) => fallback(format!("no live target in {} to prove a direct path", observation.cidr)),
        (Some(t), None, _) => fallback(format!("the OS has no route to {}", t.ip())),
        (Some(t), Some(r), _) if r.dev == tun => {
            fallback(format!("the only route to {} is devnet's own device {}", t.ip(), r.dev))
        }
        (Some(t), Some(r), Some(p)) if p.answered() => {
            let answered = direct_reason(t, r, p);
            match unproven(observation.cidr, observation.proof.as_ref(), Some(r), tun) {
                None => {
                    let proof = observation.proof.as_ref().map_or(String::new(), |p| p.endpoint.to_string());
                    (
                        Path::Direct,
                        format!("{answered}; the relay at {proof} proved it is this cluster (TLS verified by its CA)"),
                    )
                }
                Some(why) => fallback(format!("{answered}, {NOT_PROVEN}: {why}")),
            }
        }
        (Some(t), Some(r), Some(p)) => fallback(format!(
            "{} did not answer over {} ({})",
            t,
            describe_route(r),
            match p {
                ProbeOutcome::TimedOut { after_ms } => format!("timed out after {after_ms} ms"),
                ProbeOutcome::Unreachable { error } => error.clone(),
                _ => String::new(),
            }
        )),
        (Some(t), Some(_), None) => fallback(format!("{t} was not probed")),
    };
    // No direct path: a configured forwarding node that answered, and
    // through which the relay proved the cluster, beats the tunnel.
    let (path, reason) = match (&observation.target, &observation.gateway) {
        (Some(t), Some(g)) if path != Path::Direct => match &g.probe {
            Some(p) if g.on_link && p.answered() => {
                let rtt = match p {
                    ProbeOutcome::Connected { rtt_us } | ProbeOutcome::Refused { rtt_us } => *rtt_us,
                    _ => 0,
                };
                let answered =
                    format!("{t} answered in {:.2} ms via the forwarding node {}", rtt as f64 / 1000.0, g.gateway);
                match unproven(observation.cidr, g.proof.as_ref(), None, tun) {
                    None => (Path::Gateway, format!("{answered}; the relay proved it is this cluster")),
                    Some(why) => (path, format!("{reason}; {answered}, {NOT_PROVEN}: {why}")),
                }
            }
            _ if !g.on_link => {
                (path, format!("{reason}; the forwarding node {} is not on a directly connected network", g.gateway))
            }
            _ => (path, format!("{reason}; nor via the forwarding node {}", g.gateway)),
        },
        _ => (path, reason),
    };
    Verdict { cidr: observation.cidr, path, reason, evidence: observation }
}

/// Decides every CIDR of a profile: [`decide`] for each, then rule 7: a
/// CIDR the relay has no address in, whose probe answered, takes the proof
/// of a same-family CIDR proven over the same route.
pub fn decide_all(observations: Vec<Observation>, tun: &str, tunnel_available: bool) -> Vec<Verdict> {
    let mut verdicts: Vec<Verdict> = observations.into_iter().map(|o| decide(o, tun, tunnel_available)).collect();
    let proven: Vec<(IpNet, RouteUsed)> = verdicts
        .iter()
        .filter(|v| v.path == Path::Direct && v.evidence.proof.as_ref().is_some_and(Proof::verified))
        .filter_map(|v| Some((v.cidr, v.evidence.route.clone()?)))
        .collect();
    for v in verdicts.iter_mut().filter(|v| v.path != Path::Direct && v.evidence.proof.is_none()) {
        let (Some(t), Some(r), Some(p)) = (&v.evidence.target, &v.evidence.route, &v.evidence.probe) else { continue };
        if r.dev == tun || !p.answered() {
            continue;
        }
        let same_way = |(cidr, pr): &&(IpNet, RouteUsed)| {
            cidr.network().is_ipv4() == v.cidr.network().is_ipv4()
                && (pr.dev.as_str(), pr.gateway) == (r.dev.as_str(), r.gateway)
        };
        if let Some((sibling, _)) = proven.iter().find(same_way) {
            v.reason = format!(
                "{}; the relay has no address in {} but proved {sibling} over this same route (TLS verified by its CA)",
                direct_reason(t, r, p),
                v.cidr
            );
            v.path = Path::Direct;
        }
    }
    verdicts
}

/// Why an answer over `route` (None: through a forwarding node) is not
/// proven to be this cluster; None when the proof holds.
fn unproven(cidr: IpNet, proof: Option<&Proof>, route: Option<&RouteUsed>, tun: &str) -> Option<String> {
    let Some(proof) = proof else {
        return Some(format!("the relay has no address in {cidr} to prove it"));
    };
    let e = proof.endpoint;
    if let ProofOutcome::Failed { error } = &proof.outcome {
        return Some(format!("no verified TLS handshake with the relay at {e} ({error})"));
    }
    match (route, &proof.route) {
        (_, Some(pr)) if pr.dev == tun => Some(format!("the relay at {e} was reached through devnet's own device")),
        (Some(r), Some(pr)) if (r.dev.as_str(), r.gateway) != (pr.dev.as_str(), pr.gateway) => {
            Some(format!("the relay at {e} was proven over {}, not over {}", describe_route(pr), describe_route(r)))
        }
        (Some(_), None) => Some(format!("the OS has no route to the relay at {e}")),
        _ if proof.verified() => None,
        _ => Some(format!("the relay at {e} did not prove it")),
    }
}

/// Whether a verdict's probe answered but nothing proved the answer is the
/// cluster's (what doctor calls "answers, but not as this cluster").
pub fn answered_unproven(v: &Verdict) -> bool {
    matches!(v.path, Path::Tunnel | Path::Unreachable) && v.reason.contains(NOT_PROVEN)
}

/// The words every verdict uses for an answer nothing proved.
pub const NOT_PROVEN: &str = "but not proven to be this cluster";

/// Smooths re-checks: a CIDR's path changes only when two checks in a row
/// agree on the new path, so one lost probe under load does not flip a
/// working path. The first check is taken as it is.
#[derive(Debug, Default, Clone)]
pub struct Tracker {
    current: Vec<Verdict>,
    pending: Vec<(IpNet, Path)>,
}

impl Tracker {
    /// The paths in force.
    pub fn current(&self) -> &[Verdict] {
        &self.current
    }

    /// Feeds one round of verdicts; returns whether any path in force changed.
    pub fn update(&mut self, fresh: Vec<Verdict>) -> bool {
        if self.current.is_empty() {
            self.current = fresh;
            return !self.current.is_empty();
        }
        let mut changed = false;
        let mut pending = Vec::new();
        for v in fresh {
            match self.current.iter_mut().find(|c| c.cidr == v.cidr) {
                Some(c) if c.path == v.path => *c = v, // refresh the evidence
                Some(c) => {
                    if self.pending.contains(&(v.cidr, v.path)) {
                        *c = v;
                        changed = true;
                    } else {
                        pending.push((v.cidr, v.path));
                    }
                }
                None => {
                    self.current.push(v);
                    changed = true;
                }
            }
        }
        self.pending = pending;
        changed
    }

    /// Whether a change was seen once and awaits confirmation: check again soon.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// CIDRs whose path in force is the tunnel.
    pub fn tunnelled(&self) -> Vec<IpNet> {
        self.current.iter().filter(|v| v.path == Path::Tunnel).map(|v| v.cidr).collect()
    }

    /// CIDRs whose path in force is a forwarding node, with the node.
    pub fn via_gateway(&self) -> Vec<(IpNet, IpAddr)> {
        self.current
            .iter()
            .filter(|v| v.path == Path::Gateway)
            .filter_map(|v| v.evidence.gateway.as_ref().map(|g| (v.cidr, g.gateway)))
            .collect()
    }
}

fn describe_route(r: &RouteUsed) -> String {
    match r.gateway {
        Some(g) => format!("dev {} via {g}", r.dev),
        None => format!("dev {}", r.dev),
    }
}

fn direct_reason(t: &SocketAddr, r: &RouteUsed, p: &ProbeOutcome) -> String {
    let rtt = match p {
        ProbeOutcome::Connected { rtt_us } | ProbeOutcome::Refused { rtt_us } => *rtt_us,
        _ => 0,
    };
    format!("{t} answered in {:.2} ms over {}", rtt as f64 / 1000.0, describe_route(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(target: Option<&str>, route: Option<(&str, Option<&str>)>, probe: Option<ProbeOutcome>) -> Observation {
        Observation {
            cidr: "10.96.0.0/16".parse().expect("cidr"),
            target: target.map(|t| t.parse().expect("target")),
            route: route.map(|(dev, gw)| RouteUsed {
                dev: dev.into(),
                gateway: gw.map(|g| g.parse().expect("gw")),
                src: None,
            }),
            probe,
            gateway: None,
            hops: Vec::new(),
            proof: None,
        }
    }

    fn route(dev: &str, gw: Option<&str>) -> RouteUsed {
        RouteUsed { dev: dev.into(), gateway: gw.map(|g| g.parse().expect("gw")), src: None }
    }

    /// The relay at 10.96.0.5:8443 over `route`, verified or not.
    fn proof(route: Option<RouteUsed>, verified: bool) -> Option<Proof> {
        Some(Proof {
            endpoint: "10.96.0.5:8443".parse().expect("endpoint"),
            route,
            outcome: if verified {
                ProofOutcome::Verified { age_s: 0 }
            } else {
                ProofOutcome::Failed { error: "TLS handshake: no answer within 1.5 s".into() }
            },
        })
    }

    /// An observation whose probe answered over eth0 via the office router,
    /// with `proof`.
    fn proven(proof: Option<Proof>) -> Observation {
        let mut o = obs(
            Some("10.96.0.10:53"),
            Some(("eth0", Some("192.168.10.1"))),
            Some(ProbeOutcome::Connected { rtt_us: 420 }),
        );
        o.proof = proof;
        o
    }

    #[test]
    fn decision_table() {
        let ok = Some(ProbeOutcome::Connected { rtt_us: 420 });
        let refused = Some(ProbeOutcome::Refused { rtt_us: 300 });
        let timeout = Some(ProbeOutcome::TimedOut { after_ms: 500 });
        let unreach = Some(ProbeOutcome::Unreachable { error: "No route to host".into() });
        let eth = Some(("eth0", Some("192.168.10.1")));
        let tun = Some(("devnet0", None));
        let t = Some("10.96.0.10:53");
        let with_proof = |mut o: Observation| {
            o.proof = proof(Some(route("eth0", Some("192.168.10.1"))), true);
            o
        };
        let table: Vec<(Observation, bool, Path, &str)> = vec![
            (
                with_proof(obs(t, eth, ok.clone())),
                true,
                Path::Direct,
                "answered in 0.42 ms over dev eth0 via 192.168.10.1; the relay at 10.96.0.5:8443 proved it",
            ),
            (with_proof(obs(t, eth, refused)), true, Path::Direct, "answered"),
            (obs(t, eth, timeout.clone()), true, Path::Tunnel, "timed out after 500 ms"),
            (obs(t, eth, unreach.clone()), true, Path::Tunnel, "No route to host"),
            (obs(t, eth, timeout), false, Path::Unreachable, "did not answer"),
            (obs(t, tun, ok.clone()), true, Path::Tunnel, "devnet's own device"),
            (obs(t, None, None), true, Path::Tunnel, "no route"),
            (obs(None, eth, None), true, Path::Tunnel, "no live target"),
            (obs(None, eth, None), false, Path::Unreachable, "no live target"),
            (obs(t, eth, None), true, Path::Tunnel, "not probed"),
        ];
        for (o, tunnel, want, fragment) in table {
            let v = decide(o.clone(), "devnet0", tunnel);
            assert_eq!(v.path, want, "{o:?}");
            assert!(v.reason.contains(fragment), "{:?} lacks {fragment:?}", v.reason);
            assert_eq!(v.evidence, o);
        }
    }

    #[test]
    fn a_forwarding_node_that_answers_beats_the_tunnel() {
        let eth = Some(("eth0", Some("192.168.10.1")));
        let t = Some("10.96.0.10:53");
        let timeout = Some(ProbeOutcome::TimedOut { after_ms: 700 });
        let gw = |on_link, probe| GatewayTrial {
            gateway: "192.168.10.30".parse().expect("ip"),
            on_link,
            probe,
            proof: proof(None, true),
        };
        let mut o = obs(t, eth, timeout.clone());
        o.gateway = Some(gw(true, Some(ProbeOutcome::Connected { rtt_us: 500 })));
        let v = decide(o, "devnet0", true);
        assert_eq!(v.path, Path::Gateway);
        assert!(v.reason.contains("via the forwarding node 192.168.10.30"), "{}", v.reason);
        let mut o = obs(t, eth, timeout.clone());
        o.gateway = Some(gw(false, Some(ProbeOutcome::Connected { rtt_us: 500 })));
        let v = decide(o, "devnet0", true);
        assert_eq!(v.path, Path::Tunnel, "never through an off-link node");
        assert!(v.reason.contains("not on a directly connected network"), "{}", v.reason);
        let mut o = obs(t, eth, timeout);
        o.gateway = Some(gw(true, Some(ProbeOutcome::TimedOut { after_ms: 700 })));
        assert_eq!(decide(o, "devnet0", true).path, Path::Tunnel);
        // A direct path wins over the node.
        let mut o = obs(t, eth, Some(ProbeOutcome::Connected { rtt_us: 100 }));
        o.proof = proof(Some(route("eth0", Some("192.168.10.1"))), true);
        o.gateway = Some(gw(true, Some(ProbeOutcome::Connected { rtt_us: 500 })));
        assert_eq!(decide(o, "devnet0", true).path, Path::Direct);
    }

    /// Security review finding 1: a hostile access point (or captive portal)
    /// that answers every SYN, or resets it, must not pull a CIDR out of the
    /// tunnel. Only a TLS handshake with the relay, verified by its CA, over
    /// the same route proves the cluster.
    #[test]
    fn hostile_router_keeps_every_cidr_in_the_tunnel() {
        let eth = || Some(route("eth0", Some("192.168.10.1")));
        let refused = |mut o: Observation| {
            o.probe = Some(ProbeOutcome::Refused { rtt_us: 90 });
            o
        };
        let table: Vec<(Observation, bool, Path, &str)> = vec![
            // Answered, no relay address inside the CIDR: nothing to prove it with.
            (proven(None), true, Path::Tunnel, "but not proven to be this cluster: the relay has no address in"),
            (proven(None), false, Path::Unreachable, "not proven"),
            (refused(proven(None)), true, Path::Tunnel, "not proven"),
            // A listener that takes every connection and says nothing, or a
            // certificate the relay CA did not sign.
            (
                proven(proof(eth(), false)),
                true,
                Path::Tunnel,
                "no verified TLS handshake with the relay at 10.96.0.5:8443",
            ),
            // The proof went another way than the probe.
            (
                proven(proof(Some(route("wlan0", Some("10.0.0.1"))), true)),
                true,
                Path::Tunnel,
                "proven over dev wlan0 via 10.0.0.1, not over dev eth0 via 192.168.10.1",
            ),
            // Through our own device proves nothing.
            (proven(proof(Some(route("devnet0", None)), true)), true, Path::Tunnel, "devnet's own device"),
            (proven(proof(None, true)), true, Path::Tunnel, "no route to the relay"),
            // Proven over the same route: direct.
            (proven(proof(eth(), true)), true, Path::Direct, "proved it is this cluster (TLS verified by its CA)"),
        ];
        for (o, tunnel, want, fragment) in table {
            let v = decide(o.clone(), "devnet0", tunnel);
            assert_eq!(v.path, want, "{o:?}: {}", v.reason);
            assert!(v.reason.contains(fragment), "{:?} lacks {fragment:?}", v.reason);
            assert_eq!(answered_unproven(&v), want != Path::Direct, "{}", v.reason);
        }
    }

    #[test]
    fn a_forwarding_node_needs_the_same_proof() {
        let mut o = obs(
            Some("10.96.0.10:53"),
            Some(("eth0", Some("192.168.10.1"))),
            Some(ProbeOutcome::TimedOut { after_ms: 700 }),
        );
        let trial = |proof| GatewayTrial {
            gateway: "192.168.10.30".parse().expect("ip"),
            on_link: true,
            probe: Some(ProbeOutcome::Connected { rtt_us: 500 }),
            proof,
        };
        o.gateway = Some(trial(None));
        let v = decide(o.clone(), "devnet0", true);
        assert_eq!(v.path, Path::Tunnel, "{}", v.reason);
        assert!(v.reason.contains("via the forwarding node 192.168.10.30, but not proven"), "{}", v.reason);
        assert!(answered_unproven(&v));
        o.gateway = Some(trial(proof(None, false)));
        assert_eq!(decide(o.clone(), "devnet0", true).path, Path::Tunnel);
        o.gateway = Some(trial(proof(None, true)));
        assert_eq!(decide(o, "devnet0", true).path, Path::Gateway);
    }

    /// Rule 7: the relay runs on one node, so other nodes' pod blocks
    /// have no relay address of their own; a proof over the same route
    /// covers them, and nothing else.
    #[test]
    fn a_proof_covers_cidrs_without_a_relay_address_over_the_same_route_only() {
        let eth = || Some(route("eth0", Some("192.168.10.1")));
        let answered = |cidr: &str, target: &str, route: Option<RouteUsed>, proof: Option<Proof>| {
            let mut o = obs(Some(target), None, Some(ProbeOutcome::Connected { rtt_us: 300 }));
            o.cidr = cidr.parse().expect("cidr");
            o.route = route;
            o.proof = proof;
            o
        };
        let proven_block = answered("10.96.0.0/16", "10.96.0.10:53", eth(), proof(eth(), true));
        let table: Vec<(Observation, Path, &str)> = vec![
            // Another node's block over the same router: covered.
            (
                answered("10.244.2.0/24", "10.244.2.9:80", eth(), None),
                Path::Direct,
                "proved 10.96.0.0/16 over this same route",
            ),
            // Another way (a VPN, another router): not covered.
            (answered("10.244.3.0/24", "10.244.3.9:80", Some(route("wg0", None)), None), Path::Tunnel, "not proven"),
            // Its own proof failed: evidence it leads elsewhere; not covered.
            (answered("10.244.4.0/24", "10.244.4.9:80", eth(), proof(eth(), false)), Path::Tunnel, "no verified TLS"),
            // Another family: not covered.
            (answered("fd00:244::/48", "[fd00:244::9]:80", eth(), None), Path::Tunnel, "not proven"),
            // Through our own device: never.
            (
                answered("10.244.5.0/24", "10.244.5.9:80", Some(route("devnet0", None)), None),
                Path::Tunnel,
                "devnet's own",
            ),
        ];
        for (o, want, fragment) in table {
            let cidr = o.cidr;
            let verdicts = decide_all(vec![proven_block.clone(), o], "devnet0", true);
            assert_eq!(verdicts[0].path, Path::Direct);
            assert_eq!(verdicts[1].path, want, "{cidr}: {}", verdicts[1].reason);
            assert!(verdicts[1].reason.contains(fragment), "{cidr}: {:?} lacks {fragment:?}", verdicts[1].reason);
        }
        // Nothing proven (the hostile router): nothing to borrow.
        let hostile = answered("10.96.0.0/16", "10.96.0.10:53", eth(), proof(eth(), false));
        let other = answered("10.244.2.0/24", "10.244.2.9:80", eth(), None);
        assert!(decide_all(vec![hostile, other], "devnet0", true).iter().all(|v| v.path == Path::Tunnel));
    }

    #[test]
    fn proofs_read_back_as_written() {
        let p = proof(Some(route("eth0", None)), true).expect("proof");
        let json = serde_json::to_string(&p).expect("json");
        assert!(json.contains(r#""outcome":"verified""#), "{json}");
        assert_eq!(serde_json::from_str::<Proof>(&json).expect("parse"), p);
        // Evidence from before proofs existed still reads.
        let old = r#"{"cidr":"10.96.0.0/16","target":null,"route":null,"probe":null}"#;
        assert_eq!(serde_json::from_str::<Observation>(old).expect("old evidence").proof, None);
    }

    fn verdict(path: Path) -> Verdict {
        Verdict {
            cidr: "10.96.0.0/16".parse().expect("cidr"),
            path,
            reason: String::new(),
            evidence: obs(None, None, None),
        }
    }

    #[test]
    fn a_path_changes_only_after_two_agreeing_checks() {
        let mut t = Tracker::default();
        assert!(t.update(vec![verdict(Path::Direct)]), "the first check is taken as it is");
        assert!(!t.update(vec![verdict(Path::Tunnel)]), "one failed probe does not flip it");
        assert!(!t.update(vec![verdict(Path::Direct)]), "and a recovery clears the doubt");
        assert_eq!(t.tunnelled(), vec![]);
        assert!(!t.update(vec![verdict(Path::Tunnel)]));
        assert!(t.has_pending(), "a change awaits confirmation");
        assert!(t.update(vec![verdict(Path::Tunnel)]), "two in a row switch");
        assert!(!t.has_pending());
        assert_eq!(t.tunnelled(), vec!["10.96.0.0/16".parse::<IpNet>().expect("cidr")]);
        assert!(!t.update(vec![verdict(Path::Tunnel)]), "no change, no switch");
    }

    #[test]
    fn connect_results_are_classified() {
        use std::io::{Error, ErrorKind};
        let (e, t) = (Duration::from_micros(1500), Duration::from_millis(500));
        assert_eq!(ProbeOutcome::from_connect(&Ok(()), e, t), ProbeOutcome::Connected { rtt_us: 1500 });
        let refused = Err(Error::from(ErrorKind::ConnectionRefused));
        assert_eq!(ProbeOutcome::from_connect(&refused, e, t), ProbeOutcome::Refused { rtt_us: 1500 });
        let timed_out = Err(Error::from(ErrorKind::TimedOut));
        assert_eq!(ProbeOutcome::from_connect(&timed_out, e, t), ProbeOutcome::TimedOut { after_ms: 500 });
        assert!(!ProbeOutcome::from_connect(&Err(Error::from(ErrorKind::HostUnreachable)), e, t).answered());
    }
}

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
//!    packets got there and back), on a route not through our TUN: direct.
//! 3. Otherwise, the tunnel when a relay is configured; else unreachable.
//! 4. A CIDR with no live target to probe cannot be proven direct: tunnel.
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
        (Some(t), Some(r), Some(p)) if p.answered() => (Path::Direct, direct_reason(t, r, p)),
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
    // No direct path: a configured forwarding node that answered beats the tunnel.
    let (path, reason) = match (&observation.target, &observation.gateway) {
        (Some(t), Some(g)) if path != Path::Direct => match &g.probe {
            Some(p) if g.on_link && p.answered() => {
                let rtt = match p {
                    ProbeOutcome::Connected { rtt_us } | ProbeOutcome::Refused { rtt_us } => *rtt_us,
                    _ => 0,
                };
                (
                    Path::Gateway,
                    format!("{t} answered in {:.2} ms via the forwarding node {}", rtt as f64 / 1000.0, g.gateway),
                )
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
        }
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
        let table: Vec<(Observation, bool, Path, &str)> = vec![
            (obs(t, eth, ok.clone()), true, Path::Direct, "answered in 0.42 ms over dev eth0 via 192.168.10.1"),
            (obs(t, eth, refused), true, Path::Direct, "answered"),
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
        let gw = |on_link, probe| GatewayTrial { gateway: "192.168.10.30".parse().expect("ip"), on_link, probe };
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
        o.gateway = Some(gw(true, Some(ProbeOutcome::Connected { rtt_us: 500 })));
        assert_eq!(decide(o, "devnet0", true).path, Path::Direct);
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

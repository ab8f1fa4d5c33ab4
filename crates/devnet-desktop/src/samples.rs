//! Sample sessions and a snapshot for every [`TrayState`]: the menu's
//! tests assert them, and the window's browser tests are served them by the
//! mock helper (`ui/tests/fixtures/snapshots.json`, written from here), so
//! both sides test the same pictures and none is written by hand.

use devnet_model::doctor::DoctorReport;
use devnet_model::status::{Discovered, LinkState, Status};
use devnet_path::doctor::{Finding, Severity};
use devnet_path::{Observation, Path, ProbeOutcome, RouteUsed, Verdict};

use crate::state::{TrayState, is_routed, overall};
use crate::view::{
    ConnectProgress, ContextEntry, DaemonView, DoctorView, EventLine, Phase, ProgressStep, SessionView, Snapshot,
    headline,
};

/// A verdict for `cidr` with evidence that fits `path`.
pub fn verdict(cidr: &str, path: Path) -> Verdict {
    let cidr = cidr.parse().expect("sample CIDR");
    let routed = is_routed(path);
    let target = if cidr == "10.96.0.0/12".parse().expect("cidr") { "10.96.0.10:53" } else { "10.244.1.5:8080" };
    Verdict {
        cidr,
        path,
        reason: if routed {
            format!("{target} answered over eth0 via 192.168.10.1")
        } else {
            format!("{target} did not answer over eth0 via 192.168.10.1 (timed out after 800 ms)")
        },
        evidence: Observation {
            cidr,
            target: Some(target.parse().expect("sample address")),
            route: Some(RouteUsed {
                dev: "eth0".into(),
                gateway: Some("192.168.10.1".parse().expect("ip")),
                src: Some("192.168.10.50".parse().expect("ip")),
            }),
            probe: Some(if routed {
                ProbeOutcome::Connected { rtt_us: 420 }
            } else {
                ProbeOutcome::TimedOut { after_ms: 800 }
            }),
            gateway: None,
            hops: Vec::new(),
            proof: None,
        },
    }
}

/// A session's status with these paths.
pub fn status(state: LinkState, paths: Vec<Verdict>) -> Status {
    let tunnelled: Vec<_> = paths.iter().filter(|v| v.path == Path::Tunnel).map(|v| v.cidr).collect();
    Status {
        state,
        relay: "10.60.20.11:31443".parse().expect("addr"),
        relay_name: Some("devnet-relay-5f7c9".into()),
        transport: (!tunnelled.is_empty() || state == LinkState::Connected)
            .then(|| "direct 10.60.20.11:31443 (node port)".into()),
        discovered: vec![
            Discovered { what: "cluster".into(), value: "lab".into(), source: "https://10.60.20.10:6443".into() },
            Discovered {
                what: "pod CIDR".into(),
                value: "10.244.0.0/16".into(),
                source: "kube-controller-manager --cluster-cidr".into(),
            },
            Discovered {
                what: "service CIDR".into(),
                value: "10.96.0.0/12".into(),
                source: "kube-apiserver --service-cluster-ip-range".into(),
            },
            Discovered {
                what: "cluster DNS".into(),
                value: "10.96.0.10".into(),
                source: "service kube-system/kube-dns".into(),
            },
            Discovered { what: "domain".into(), value: "cluster.local".into(), source: "kubelet clusterDomain".into() },
        ],
        relay_rtt_ms: (!tunnelled.is_empty()).then_some(0.84),
        last_error: (state == LinkState::Reconnecting)
            .then(|| "the relay closed the connection (relay pod restarted)".into()),
        reconnects: u64::from(state == LinkState::Reconnecting),
        tun: "devnet0".into(),
        routes: tunnelled,
        paths,
        dns_server: Some("10.96.0.10".parse().expect("ip")),
        cluster_domain: "cluster.local".into(),
        dns_backend: Some("systemd-resolved: link devnet0, routing domains ~cluster.local ~svc".into()),
        tcp_flows: 3,
        pending_opens: 0,
        udp_associations: 1,
        packets_from_tun: 1804,
        packets_to_tun: 1733,
        bytes_to_relay: 182_044,
        bytes_from_relay: 2_411_977,
        refused: 0,
        unreachable: 0,
    }
}

fn session(link: LinkState, pods: Path, services: Path) -> SessionView {
    SessionView::new(
        "lab".into(),
        true,
        status(link, vec![verdict("10.244.0.0/16", pods), verdict("10.96.0.0/12", services)]),
    )
}

fn contexts(connected: bool) -> Vec<ContextEntry> {
    vec![
        ContextEntry { name: "lab".into(), server: Some("https://10.60.20.10:6443".into()), current: true, connected },
        ContextEntry {
            name: "staging-eu".into(),
            server: Some("https://k8s.staging.example.com".into()),
            current: false,
            connected: false,
        },
    ]
}

fn at(n: u64) -> u64 {
    1_796_140_800_000 + n * 1000
}

/// The snapshot the app shows in `state`.
pub fn snapshot(state: TrayState) -> Snapshot {
    use Path::{Direct, Tunnel};
    let mut events = vec![EventLine { at_ms: at(0), text: "devnetd 0.1.0 answered".into() }];
    let mut progress = None;
    let sessions = match state {
        TrayState::Off => Vec::new(),
        TrayState::Connecting => {
            progress = Some(ConnectProgress {
                context: "lab".into(),
                steps: vec![
                    ProgressStep { phase: Phase::Discovery, text: "cluster lab at https://10.60.20.10:6443".into() },
                    ProgressStep {
                        phase: Phase::Discovery,
                        text: "found pod CIDR 10.244.0.0/16 (from kube-controller-manager --cluster-cidr)".into(),
                    },
                    ProgressStep { phase: Phase::Relay, text: "installing the relay devnet/devnet-relay".into() },
                    ProgressStep { phase: Phase::Relay, text: "waiting for the relay pod to be ready".into() },
                ],
                failure: None,
                done: false,
            });
            Vec::new()
        }
        TrayState::Direct => vec![session(LinkState::Direct, Direct, Direct)],
        TrayState::Tunnel => vec![session(LinkState::Connected, Tunnel, Tunnel)],
        TrayState::Split => vec![session(LinkState::Connected, Direct, Tunnel)],
        TrayState::Degraded => vec![session(LinkState::Reconnecting, Direct, Tunnel)],
        TrayState::Error => {
            progress = Some(ConnectProgress {
                context: "staging-eu".into(),
                steps: vec![
                    ProgressStep { phase: Phase::Discovery, text: "cluster staging-eu at https://k8s.staging.example.com".into() },
                    ProgressStep { phase: Phase::Relay, text: "waiting for the relay pod to be ready".into() },
                ],
                failure: Some(
                    "the relay pod devnet/devnet-relay-6c9f4 is not ready: ImagePullBackOff: Back-off pulling image \"ghcr.io/devnet-dev/devnet-relay:0.1.0\"".into(),
                ),
                done: true,
            });
            Vec::new()
        }
    };
    if !sessions.is_empty() {
        events.push(EventLine { at_ms: at(4), text: "session lab started".into() });
    }
    if state == TrayState::Direct {
        events.push(EventLine { at_ms: at(40), text: "lab: the office routes pods and services now: direct".into() });
    }
    let activity = match &progress {
        Some(p) if !p.done => crate::state::AppActivity::Connecting,
        Some(p) if p.failure.is_some() => crate::state::AppActivity::Failed,
        _ => crate::state::AppActivity::Idle,
    };
    let computed = overall(sessions.iter().map(|s| s.state), activity);
    assert_eq!(computed, state, "the sample for {state:?} must compute to it");
    let doctor = match state {
        TrayState::Split => DoctorView::Done {
            context: "lab".into(),
            report: DoctorReport {
                discovered: sessions[0].status.discovered.clone(),
                discovery_notes: Vec::new(),
                paths: sessions[0].status.paths.clone(),
                findings: vec![Finding {
                    severity: Severity::Warning,
                    title: "the office routes pods but not services".into(),
                    detail: "10.96.0.10:53 did not answer over eth0 via 192.168.10.1: service IPs exist only in the nodes' kube-proxy rules".into(),
                    fix: Some("advertise the service CIDR too (Calico BGPConfiguration serviceClusterIPs: 10.96.0.0/12)".into()),
                }],
            },
        },
        _ => DoctorView::NotRun,
    };
    Snapshot {
        state,
        headline: headline(state, &sessions, progress.as_ref()),
        daemon: DaemonView::Connected { version: "0.1.0".into() },
        contexts: contexts(!sessions.is_empty()),
        contexts_error: None,
        sessions,
        progress,
        events,
        doctor,
        autostart: state == TrayState::Direct,
    }
}

/// One snapshot per state, keyed by the state's word (the UI fixtures file).
pub fn all() -> Vec<(TrayState, Snapshot)> {
    TrayState::ALL.iter().map(|s| (*s, snapshot(*s))).collect()
}

//! The window's whole picture in one value, pushed to it on every change,
//! and the words the menu, tooltip and notifications share.

use devnet_model::doctor::DoctorReport;
use devnet_model::status::Status;
use devnet_path::{Path, ProbeOutcome, Verdict};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::state::{TrayState, is_routed, of_session};

/// Everything the window shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Snapshot {
    pub state: TrayState,
    /// One line: what the icon means now (the menu's first line; copied on click).
    pub headline: String,
    pub daemon: DaemonView,
    pub sessions: Vec<SessionView>,
    /// The user's kubeconfig contexts, each a cluster to connect to.
    pub contexts: Vec<ContextEntry>,
    /// Why the contexts could not be read (no kubeconfig, a bad one).
    pub contexts_error: Option<String>,
    /// A connect in progress, or the last one that failed.
    pub progress: Option<ConnectProgress>,
    /// What happened lately, newest last.
    pub events: Vec<EventLine>,
    pub doctor: DoctorView,
    /// Whether the app starts at login.
    pub autostart: bool,
}

/// Whether the app can talk to devnetd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DaemonView {
    /// Not yet asked.
    Unknown,
    Connected {
        version: String,
    },
    /// Why not, and the fix (devnetd's client error says both).
    Unreachable {
        message: String,
    },
}

/// One session devnetd runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct SessionView {
    pub name: String,
    /// Whether this user started it (only they may end it).
    pub mine: bool,
    pub state: TrayState,
    /// Each CIDR's path, in words and with its evidence.
    pub paths: Vec<PathView>,
    pub status: Status,
}

/// One CIDR's path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct PathView {
    /// `pods`, `services`, or none when discovery did not say.
    pub role: Option<String>,
    /// `10.244.0.0/16 pods: direct via 192.168.10.1 (eth0), 0.42 ms`.
    pub summary: String,
    pub verdict: Verdict,
}

/// A kubeconfig context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ContextEntry {
    pub name: String,
    /// The API server's address, when the kubeconfig names it.
    pub server: Option<String>,
    /// The kubeconfig's current context.
    pub current: bool,
    /// Whether devnetd runs a session for it.
    pub connected: bool,
}

/// A connect, step by step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ConnectProgress {
    pub context: String,
    pub steps: Vec<ProgressStep>,
    /// Why it failed, in the cluster's own words (a pod's waiting reason and message).
    pub failure: Option<String>,
    pub done: bool,
}

/// One step of a connect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ProgressStep {
    pub phase: Phase,
    pub text: String,
}

/// Where a connect is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Discovery,
    Relay,
    Session,
}

impl Phase {
    /// The phase a progress line of `devnet_session::cluster` belongs to.
    pub fn of_line(line: &str) -> Phase {
        let l = line.to_ascii_lowercase();
        if l.starts_with("found ") || l.starts_with("cluster ") {
            Phase::Discovery
        } else if l.contains("relay") || l.contains("pod") || l.contains("credentials") || l.contains("keyring") {
            Phase::Relay
        } else if l.starts_with("session") || l.contains("devnetd") {
            Phase::Session
        } else {
            Phase::Discovery
        }
    }
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct EventLine {
    /// Milliseconds since the Unix epoch.
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub at_ms: u64,
    pub text: String,
}

/// Doctor, run from the menu or the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DoctorView {
    NotRun,
    Running { context: String },
    Done { context: String, report: DoctorReport },
    Failed { context: String, error: String },
}

impl SessionView {
    pub fn new(name: String, mine: bool, status: Status) -> Self {
        let paths = status
            .paths
            .iter()
            .map(|v| {
                let role = role_of(&status, v.cidr);
                PathView { summary: path_summary(v, role.as_deref()), role, verdict: v.clone() }
            })
            .collect();
        SessionView { state: of_session(&status), name, mine, paths, status }
    }
}

/// `pods` or `services`, from what discovery found.
pub fn role_of(status: &Status, cidr: IpNet) -> Option<String> {
    status.discovered.iter().find(|d| d.value == cidr.to_string()).and_then(|d| match d.what.as_str() {
        "pod CIDR" | "calico pool" => Some("pods".to_owned()),
        "service CIDR" => Some("services".to_owned()),
        _ => None,
    })
}

/// How long a probe took, in words.
pub fn probe_words(probe: &ProbeOutcome) -> String {
    match probe {
        ProbeOutcome::Connected { rtt_us } | ProbeOutcome::Refused { rtt_us } => {
            format!("{:.2} ms", *rtt_us as f64 / 1000.0)
        }
        ProbeOutcome::TimedOut { after_ms } => format!("no answer in {after_ms} ms"),
        ProbeOutcome::Unreachable { error } => error.clone(),
    }
}

/// One CIDR in one line: where it goes and the evidence.
pub fn path_summary(v: &Verdict, role: Option<&str>) -> String {
    let who = match role {
        Some(r) => format!("{} {r}", v.cidr),
        None => v.cidr.to_string(),
    };
    let how = match (v.path, &v.evidence.route) {
        (Path::Direct | Path::Gateway, Some(r)) => match r.gateway {
            Some(gw) => format!("{} via {gw} ({})", word(v.path), r.dev),
            None => format!("{} on {}", word(v.path), r.dev),
        },
        _ => word(v.path).to_owned(),
    };
    let probe = if is_routed(v.path) { v.evidence.probe.as_ref().map(probe_words) } else { None };
    match probe {
        Some(p) => format!("{who}: {how}, {p}"),
        None => format!("{who}: {how}"),
    }
}

fn word(path: Path) -> &'static str {
    match path {
        Path::Direct => "direct",
        Path::Gateway => "via forwarding node",
        Path::Tunnel => "tunnel",
        Path::Unreachable => "unreachable",
    }
}

/// The headline: the menu's first line, the tooltip's first line.
pub fn headline(state: TrayState, sessions: &[SessionView], progress: Option<&ConnectProgress>) -> String {
    if let Some(p) = progress.filter(|p| !p.done) {
        let last = p.steps.last().map(|s| s.text.as_str()).unwrap_or("starting");
        return format!("devnet: connecting to {} ({last})", p.context);
    }
    if let Some(p) = progress.filter(|p| p.failure.is_some()) {
        return format!("devnet: could not connect to {}", p.context);
    }
    match sessions {
        [] => "devnet is off".to_owned(),
        [one] => format!("devnet: {} {}{}", one.name, one.state.word(), session_detail(one)),
        many => format!(
            "devnet: {} ({})",
            state.word(),
            many.iter().map(|s| format!("{} {}", s.name, s.state.word())).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn session_detail(s: &SessionView) -> String {
    match s.state {
        TrayState::Tunnel | TrayState::Split => match &s.status.transport {
            Some(t) => format!(", relay {t}"),
            None => String::new(),
        },
        TrayState::Degraded => match &s.status.last_error {
            Some(e) => format!(", relay lost ({e}); reconnecting"),
            None => ", relay lost; reconnecting".to_owned(),
        },
        _ => String::new(),
    }
}

/// The tooltip (where the platform has one): the headline and each CIDR.
pub fn tooltip(headline: &str, sessions: &[SessionView]) -> String {
    let mut out = headline.to_owned();
    for s in sessions {
        for p in &s.paths {
            out.push('\n');
            if sessions.len() > 1 {
                out += &format!("{}: ", s.name);
            }
            out += &p.summary;
        }
    }
    out
}

/// "Copy status": every session in full, as `devnet status` prints it.
pub fn status_text(sessions: &[SessionView]) -> String {
    if sessions.is_empty() {
        return "devnet is off: no session".to_owned();
    }
    sessions.iter().map(|s| format!("session {}\n{}", s.name, s.status.human())).collect::<Vec<_>>().join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples::{status, verdict};
    use devnet_model::status::LinkState;

    #[test]
    fn each_cidr_line_names_its_role_path_and_evidence() {
        let s = SessionView::new(
            "lab".into(),
            true,
            status(
                LinkState::Connected,
                vec![verdict("10.244.0.0/16", Path::Direct), verdict("10.96.0.0/12", Path::Tunnel)],
            ),
        );
        assert_eq!(s.state, TrayState::Split);
        assert_eq!(s.paths[0].summary, "10.244.0.0/16 pods: direct via 192.168.10.1 (eth0), 0.42 ms");
        assert_eq!(s.paths[1].summary, "10.96.0.0/12 services: tunnel");
        assert_eq!(
            headline(s.state, std::slice::from_ref(&s), None),
            "devnet: lab split, relay direct 10.60.20.11:31443 (node port)"
        );
        let tip = tooltip("h", std::slice::from_ref(&s));
        assert_eq!(tip.lines().count(), 3, "{tip}");
    }

    #[test]
    fn the_headline_tells_a_connect_in_progress_and_a_failed_one() {
        let mut p = ConnectProgress {
            context: "kind-a".into(),
            steps: vec![ProgressStep { phase: Phase::Relay, text: "waiting for the relay pod".into() }],
            failure: None,
            done: false,
        };
        assert_eq!(
            headline(TrayState::Connecting, &[], Some(&p)),
            "devnet: connecting to kind-a (waiting for the relay pod)"
        );
        p.done = true;
        p.failure = Some("ImagePullBackOff".into());
        assert_eq!(headline(TrayState::Error, &[], Some(&p)), "devnet: could not connect to kind-a");
        assert_eq!(headline(TrayState::Off, &[], None), "devnet is off");
    }

    #[test]
    fn progress_lines_fall_in_their_phase() {
        assert_eq!(Phase::of_line("cluster kind-a at https://10.0.0.1:6443"), Phase::Discovery);
        assert_eq!(Phase::of_line("found pod CIDR 10.244.0.0/16 (from node a)"), Phase::Discovery);
        assert_eq!(Phase::of_line("installing the relay devnet/devnet-relay"), Phase::Relay);
        assert_eq!(Phase::of_line("session lab started by devnetd"), Phase::Session);
    }
}

//! What `devnet preflight` reports to people and IDEs: one [`Report`] per
//! run (`--json` on stdout), [`Progress`] events before it (`--json
//! --progress`, one JSON object per line), and an exit code per
//! [`Failure`] class. The schema is versioned by [`SCHEMA`] and documented in
//! `docs/preflight.md`; fields are only ever added within a version.

use std::net::SocketAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The version of the JSON a preflight prints. Bumped when a field changes
/// meaning or goes away (never for an added field).
pub const SCHEMA: u32 = 1;

/// Why a target is not ready for a debugger. Each class has its own exit
/// code, stable across releases, so an IDE can act on it without parsing text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Failure {
    /// Something devnet itself could not do (a bug, or the cluster's API
    /// answered what it should not).
    Internal,
    /// The command line was wrong (a target that does not parse).
    Usage,
    /// devnet has no session for this cluster, or devnetd is not running.
    NotConnected,
    /// The name (DNS, Service, Pod, Deployment) does not exist.
    NameNotFound,
    /// The address is outside every CIDR devnet routes, or its CIDR has no
    /// way at all.
    NoPath,
    /// The pod answered with a reset: nothing listens on that address and port.
    Refused,
    /// Something answered, but not the debugger that was expected.
    WrongProtocol,
    /// No answer in time (the connect, or the debugger's reply).
    TimedOut,
    /// The pod (or every pod behind the name) is not ready.
    NotReady,
}

impl Failure {
    /// Every class, in exit-code order (for docs and tests).
    pub const ALL: [Failure; 9] = [
        Failure::Internal,
        Failure::Usage,
        Failure::NotConnected,
        Failure::NameNotFound,
        Failure::NoPath,
        Failure::Refused,
        Failure::WrongProtocol,
        Failure::TimedOut,
        Failure::NotReady,
    ];

    /// The process exit code (0 is "ready").
    pub const fn exit_code(self) -> i32 {
        match self {
            Failure::Internal => 1,
            Failure::Usage => 2,
            Failure::NotConnected => 3,
            Failure::NameNotFound => 4,
            Failure::NoPath => 5,
            Failure::Refused => 6,
            Failure::WrongProtocol => 7,
            Failure::TimedOut => 8,
            Failure::NotReady => 9,
        }
    }
}

/// The debugger protocols preflight knows how to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// Java's JDWP: the `JDWP-Handshake` exchange, then `VirtualMachine.Version`.
    Jdwp,
    /// Go's Delve, JSON-RPC: `RPCServer.GetVersion`, only with `--accept-multiclient`.
    Delve,
    /// Python's debugpy (DAP): identified from its first events, only on request.
    Debugpy,
    /// Node's inspector: `GET /json/version`.
    NodeInspector,
    /// Anything else: a TCP connect.
    Tcp,
}

/// How the address was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    /// The address the debugger will connect to.
    pub address: SocketAddr,
    /// How: "system resolver", "pod status.podIP", "literal address", …
    pub by: String,
}

/// The way devnet sends traffic to the address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Way {
    /// The devnet session that routes it.
    pub session: String,
    pub cidr: IpNet,
    /// `direct`, `gateway` or `tunnel`.
    pub via: devnet_path::Path,
    /// The evidence, in one sentence (route, probe answer).
    pub evidence: String,
    /// The relay transport, when the way is the tunnel.
    pub transport: Option<String>,
}

/// The pod behind the target, as its spec describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodFacts {
    pub namespace: String,
    pub name: String,
    pub ready: bool,
    /// The container that declares or listens on the port, if one does.
    pub container: Option<String>,
    /// The port in the pod (a Service's targetPort, resolved).
    pub port: u16,
    /// Whether a container declares the port.
    pub port_declared: bool,
    /// The debugger the container's command, args and environment start.
    pub debugger: Option<DebuggerSpec>,
}

/// A debugger as a container's command line or environment configures it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebuggerSpec {
    pub protocol: Protocol,
    /// The host part of the listen address (`*`, `0.0.0.0`, `127.0.0.1`,
    /// `localhost`, or empty when only a port is given).
    pub host: String,
    pub port: u16,
    /// Where it was read: "args", "env JAVA_TOOL_OPTIONS", "annotation debug.cloud.google.com/config".
    pub source: String,
    /// The option as written (`-agentlib:jdwp=…`, `--inspect=…`).
    pub option: String,
    /// Whether it listens only on loopback (unreachable from outside the pod).
    pub loopback_only: bool,
    /// Delve: `--accept-multiclient` is given (probing is safe).
    pub multiclient: bool,
}

/// What the probe learned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probed {
    pub protocol: Protocol,
    /// Whether the debugger port was touched at all.
    pub probed: bool,
    /// The debugger's own version line, when it told one.
    pub version: Option<String>,
    /// Why the probe was skipped or stopped where it did.
    pub note: Option<String>,
    /// The round trip of the TCP connect, in milliseconds.
    pub connect_ms: Option<f64>,
}

/// The result for one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetReport {
    /// The target as given.
    pub target: String,
    /// `ready`, or the failure class.
    pub ok: bool,
    pub failure: Option<Failure>,
    /// One line: what is wrong (or what is ready).
    pub message: String,
    /// One line: what to do about it.
    pub fix: Option<String>,
    pub resolved: Option<Resolved>,
    pub way: Option<Way>,
    pub pod: Option<PodFacts>,
    pub probe: Option<Probed>,
    pub warnings: Vec<String>,
}

impl TargetReport {
    /// A report for `target` with nothing found yet (and not ready).
    pub fn new(target: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            ok: false,
            failure: None,
            message: String::new(),
            fix: None,
            resolved: None,
            way: None,
            pod: None,
            probe: None,
            warnings: Vec::new(),
        }
    }

    pub fn exit_code(&self) -> i32 {
        self.failure.map_or(0, Failure::exit_code)
    }
}

/// The whole run: `--json` prints this on stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema: u32,
    /// 0 when every target is ready, else the first failing target's code.
    pub exit_code: i32,
    pub targets: Vec<TargetReport>,
}

impl Report {
    pub fn new(targets: Vec<TargetReport>) -> Self {
        let exit_code = targets.iter().map(TargetReport::exit_code).find(|c| *c != 0).unwrap_or(0);
        Self { schema: SCHEMA, exit_code, targets }
    }
}

/// A step of the run, for progress events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// devnet's sessions (and `--connect` starting one).
    Session,
    /// The target's address.
    Resolve,
    /// The way devnet sends traffic there.
    Path,
    /// The pod's spec and readiness.
    Pod,
    /// The TCP connect.
    Connect,
    /// The debugger's handshake.
    Probe,
}

/// One NDJSON line of `--json --progress`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Progress {
    Started {
        target: String,
        step: Step,
    },
    Finished {
        target: String,
        step: Step,
        ok: bool,
        message: String,
    },
    Warning {
        target: String,
        message: String,
    },
    /// The last line: the report.
    Report(Report),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_and_stable() {
        let codes: Vec<i32> = Failure::ALL.iter().map(|f| f.exit_code()).collect();
        assert_eq!(codes, (1..=9).collect::<Vec<_>>());
    }

    #[test]
    fn the_report_takes_the_first_failure() {
        let ok = TargetReport { ok: true, ..TargetReport::new("a") };
        let refused = TargetReport { ok: false, failure: Some(Failure::Refused), ..ok.clone() };
        let timed_out = TargetReport { ok: false, failure: Some(Failure::TimedOut), ..ok.clone() };
        assert_eq!(Report::new(vec![ok.clone(), refused, timed_out]).exit_code, 6);
        assert_eq!(Report::new(vec![ok]).exit_code, 0);
    }

    #[test]
    fn progress_lines_are_tagged() {
        let line = serde_json::to_string(&Progress::Started { target: "svc/a:1".into(), step: Step::Connect })
            .unwrap_or_default();
        assert_eq!(line, r#"{"event":"started","target":"svc/a:1","step":"connect"}"#);
        let report = serde_json::to_value(Progress::Report(Report::new(vec![]))).unwrap_or_default();
        assert_eq!(report["event"], "report");
        assert_eq!(report["schema"], SCHEMA);
    }
}

//! What preflight says: the protocol to check, whether a probe is safe,
//! and for every failure one line of what is wrong and one of the fix, from
//! what the pod spec shows. Pure, and table-tested.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use devnet_model::preflight::{Failure, PodFacts, Protocol, Way};
use devnet_path::Path;
use serde_json::Value;

use crate::run::{Stop, stop};

/// The protocol to check: the one asked for, else the pod's debugger on
/// that port, else the port's usual debugger, else plain TCP.
pub fn protocol(explicit: Option<Protocol>, facts: Option<&PodFacts>, port: u16) -> Protocol {
    explicit.or_else(|| facts.and_then(|f| f.debugger.as_ref()).map(|d| d.protocol)).unwrap_or(match port {
        5005 => Protocol::Jdwp,
        9229 => Protocol::NodeInspector,
        2345 => Protocol::Delve,
        5678 => Protocol::Debugpy,
        _ => Protocol::Tcp,
    })
}

pub fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Jdwp => "JDWP",
        Protocol::Delve => "Delve",
        Protocol::Debugpy => "debugpy",
        Protocol::NodeInspector => "Node inspector",
        Protocol::Tcp => "TCP",
    }
}

pub fn via(p: Path) -> &'static str {
    match p {
        Path::Direct => "direct",
        Path::Gateway => "gateway",
        Path::Tunnel => "tunnel",
        Path::Unreachable => "nowhere",
    }
}

/// Why touching this debugger could break the debug session, if it could.
/// Delve without `--accept-multiclient` stops (and kills a debuggee it
/// launched) when its one client leaves, and a bare connect counts; debugpy
/// serves one client too, and a probe has left IDEs unable to attach.
pub fn unsafe_to_probe(protocol: Protocol, facts: Option<&PodFacts>, deep: bool) -> Option<String> {
    if deep {
        return None;
    }
    let spec = facts.and_then(|f| f.debugger.as_ref());
    match protocol {
        Protocol::Delve if spec.is_some_and(|d| d.multiclient) => None,
        Protocol::Delve if spec.is_some() => Some(
            "dlv runs without --accept-multiclient, so it serves one client and stops (killing the program it started) when that client leaves; even a bare connect would use it up. Add --accept-multiclient to let preflight check it and the IDE reconnect"
                .to_owned(),
        ),
        Protocol::Delve => Some(
            "Delve may serve only one client (without --accept-multiclient), and the pod spec could not be read to tell; pass --probe deep to check it anyway"
                .to_owned(),
        ),
        Protocol::Debugpy => Some(
            "debugpy serves one client, and a connect before the IDE's can leave the IDE unable to attach (microsoft/debugpy#974); pass --probe deep to identify it anyway"
                .to_owned(),
        ),
        _ => None,
    }
}

/// `devnet connect` for this context, as a fix.
pub fn connect_fix(context: Option<&str>) -> String {
    match context {
        Some(c) => format!("run `devnet connect --context {c}`, or add --connect"),
        None => "run `devnet connect --context CONTEXT`, or add --connect".to_owned(),
    }
}

/// Where `--connect`'s background `devnet connect` writes.
pub fn connect_log_path(context: &str) -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    let safe: String = context.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    base.join("devnet").join(format!("connect-{safe}.log"))
}

/// An API error for a named object: missing (the name is wrong) or not.
pub fn api_miss(error: &str, kind: &str, name: &str, ns: &str) -> Stop {
    if error.contains("not found") {
        stop(
            Failure::NameNotFound,
            format!("{kind} {name} does not exist in namespace {ns}"),
            Some(format!("check the name and namespace: `kubectl get {kind}s -n {ns}`")),
        )
    } else {
        stop(Failure::Internal, format!("reading {kind} {ns}/{name}: {error}"), None)
    }
}

/// `{"app": "web"}` → `app=web`.
pub fn label_selector(labels: &Value) -> String {
    labels
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join(","))
        .unwrap_or_default()
}

/// Percent-encodes a query value.
pub fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One line on what the pod spec shows.
pub fn describe_facts(f: &PodFacts) -> String {
    let debugger = match &f.debugger {
        Some(d) => {
            format!("{} listening on {}:{} ({})", protocol_name(d.protocol), shown_host(&d.host), d.port, d.source)
        }
        None => "no debugger on this port in its spec".to_owned(),
    };
    format!(
        "pod {}/{} ({}), container {}: {debugger}",
        f.namespace,
        f.name,
        if f.ready { "ready" } else { "not ready" },
        f.container.as_deref().unwrap_or("none declares the port")
    )
}

fn shown_host(host: &str) -> &str {
    if host.is_empty() { "localhost (the JDK 9+ default)" } else { host }
}

/// What the spec shows that will break the attach, even if the port answers.
pub fn pod_warning(f: &PodFacts) -> Option<String> {
    if !f.ready {
        return Some(format!("pod {}/{} is not ready", f.namespace, f.name));
    }
    if f.debugger.is_none() && !f.port_declared {
        return Some(format!("no container of pod {}/{} declares port {}", f.namespace, f.name, f.port));
    }
    None
}

/// The fix for a debugger that listens on loopback only.
fn listen_everywhere(p: Protocol, port: u16) -> String {
    match p {
        Protocol::Jdwp => {
            format!("start the JVM with -agentlib:jdwp=transport=dt_socket,server=y,suspend=n,address=*:{port}")
        }
        Protocol::NodeInspector => format!("start node with --inspect=0.0.0.0:{port}"),
        Protocol::Delve => format!("start dlv with --listen=:{port} --accept-multiclient"),
        Protocol::Debugpy => format!("start debugpy with --listen 0.0.0.0:{port}"),
        Protocol::Tcp => format!("make the program listen on 0.0.0.0:{port}"),
    }
}

/// A reset: nothing listens there. The pod spec says why.
pub fn refused(addr: SocketAddr, facts: Option<&PodFacts>, protocol: Protocol) -> Stop {
    let Some(f) = facts else {
        return stop(
            Failure::Refused,
            format!("nothing listens on {addr} (the connection was refused)"),
            Some("check the port, and that the debugger listens on all addresses, not localhost".to_owned()),
        );
    };
    let pod = format!("{}/{}", f.namespace, f.name);
    if let Some(d) = &f.debugger {
        if d.loopback_only {
            return stop(
                Failure::Refused,
                format!(
                    "the {} in pod {pod} listens on {}:{} only ({} in {}), so nothing answers on the pod's address",
                    protocol_name(d.protocol),
                    shown_host(&d.host),
                    d.port,
                    d.option,
                    d.source
                ),
                Some(listen_everywhere(d.protocol, d.port)),
            );
        }
        if !f.ready {
            return stop(
                Failure::NotReady,
                format!("nothing listens on {addr} yet: pod {pod} is not ready"),
                Some(format!("wait for it, or look at `kubectl describe pod -n {} {}`", f.namespace, f.name)),
            );
        }
        let single = matches!(d.protocol, Protocol::Jdwp | Protocol::Debugpy) || !d.multiclient;
        return stop(
            Failure::Refused,
            if single {
                format!(
                    "nothing listens on {addr}, though pod {pod} starts {} there ({}): another debugger is probably attached ({} serves one at a time)",
                    protocol_name(d.protocol),
                    d.option,
                    protocol_name(d.protocol)
                )
            } else {
                format!(
                    "nothing listens on {addr}, though pod {pod} starts {} there ({})",
                    protocol_name(d.protocol),
                    d.option
                )
            },
            Some(if single {
                "detach the other debugger (another IDE window, a colleague), then retry".to_owned()
            } else {
                format!("look at the container's log: `kubectl logs -n {} {}`", f.namespace, f.name)
            }),
        );
    }
    if !f.ready {
        return stop(
            Failure::NotReady,
            format!("nothing listens on {addr}: pod {pod} is not ready"),
            Some(format!("look at `kubectl describe pod -n {} {}`", f.namespace, f.name)),
        );
    }
    stop(
        Failure::Refused,
        format!(
            "nothing listens on {addr}: no container of pod {pod} {} a {} there",
            if f.port_declared { "starts" } else { "declares the port, nor starts" },
            protocol_name(protocol)
        ),
        Some(format!(
            "start the debugger in the pod, or pick the debugger's port (the pod declares {})",
            if f.port_declared { "this one".to_owned() } else { "other ports".to_owned() }
        )),
    )
}

/// Something else answered.
pub fn wrong_protocol(addr: SocketAddr, protocol: Protocol, what: &str, facts: Option<&PodFacts>) -> Stop {
    let fix = match facts.and_then(|f| f.debugger.as_ref()) {
        Some(d) if d.protocol != protocol => {
            format!("the pod's spec starts {} on port {}: pass --proto", protocol_name(d.protocol), d.port)
        }
        Some(_) => {
            "the debugger's port is taken by something else in the pod; check the container's command".to_owned()
        }
        None => match facts {
            Some(f) => format!(
                "port {} of pod {}/{}{} is not a debugger port: use the port the debugger listens on",
                f.port,
                f.namespace,
                f.name,
                f.container.as_ref().map(|c| format!(" (container {c})")).unwrap_or_default()
            ),
            None => format!("{} is not a debugger port: use the port the debugger listens on", addr.port()),
        },
    };
    stop(Failure::WrongProtocol, format!("{addr} answers, but not as {}: {what}", protocol_name(protocol)), Some(fix))
}

/// Connected, but the debugger said nothing in time. When the pod's spec
/// starts no debugger on that port, something else holds it (an HTTP
/// server waits for a request line that never comes): the wrong protocol.
pub fn silent(addr: SocketAddr, protocol: Protocol, waited: Duration, facts: Option<&PodFacts>) -> Stop {
    let what = format!("nothing answered the {} handshake within {} s", protocol_name(protocol), waited.as_secs());
    match facts {
        Some(f) if f.debugger.is_none() => wrong_protocol(addr, protocol, &what, facts),
        _ => stop(
            Failure::TimedOut,
            format!("connected to {addr}, but {what}: the debugger is busy, paused, or serving another client"),
            Some("detach other debuggers, or check the process in the pod".to_owned()),
        ),
    }
}

/// No SYN-ACK in time: a path problem (or a firewall in the pod's way).
pub fn connect_timed_out(addr: SocketAddr, way: &Way, facts: Option<&PodFacts>, waited: Duration) -> Stop {
    stop(
        Failure::TimedOut,
        format!(
            "no answer from {addr} within {:.1} s over devnet's {} way ({}: {}){}",
            waited.as_secs_f64(),
            via(way.via),
            way.cidr,
            way.evidence,
            facts
                .filter(|f| !f.ready)
                .map(|f| format!("; pod {}/{} is not ready", f.namespace, f.name))
                .unwrap_or_default()
        ),
        Some("run `devnet doctor`; a NetworkPolicy may also drop it".to_owned()),
    )
}

#[cfg(test)]
mod tests {
    use devnet_model::preflight::DebuggerSpec;

    use super::*;

    fn facts(protocol: Protocol, host: &str, ready: bool, multiclient: bool) -> PodFacts {
        PodFacts {
            namespace: "debug".into(),
            name: "app-1".into(),
            ready,
            container: Some("app".into()),
            port: 5005,
            port_declared: true,
            debugger: Some(DebuggerSpec {
                protocol,
                host: host.into(),
                port: 5005,
                source: "args".into(),
                option: "-agentlib:jdwp=…".into(),
                loopback_only: host.is_empty() || host == "127.0.0.1",
                multiclient,
            }),
        }
    }

    fn addr() -> SocketAddr {
        SocketAddr::from(([10, 244, 4, 7], 5005))
    }

    #[test]
    fn refusals_are_explained_by_the_spec() {
        // (facts, class, words in the message, words in the fix)
        let table: Vec<(Option<PodFacts>, Failure, &str, &str)> = vec![
            (
                Some(facts(Protocol::Jdwp, "", true, false)),
                Failure::Refused,
                "listens on localhost (the JDK 9+ default):5005 only",
                "address=*:5005",
            ),
            (
                Some(facts(Protocol::NodeInspector, "127.0.0.1", true, true)),
                Failure::Refused,
                "127.0.0.1:5005 only",
                "--inspect=0.0.0.0:5005",
            ),
            (
                Some(facts(Protocol::Jdwp, "*", true, false)),
                Failure::Refused,
                "another debugger is probably attached",
                "detach the other debugger",
            ),
            (
                Some(facts(Protocol::Jdwp, "*", false, false)),
                Failure::NotReady,
                "not ready",
                "kubectl describe pod -n debug app-1",
            ),
            (
                Some(PodFacts { debugger: None, port_declared: false, ..facts(Protocol::Jdwp, "*", true, false) }),
                Failure::Refused,
                "no container of pod debug/app-1 declares the port",
                "pick the debugger's port",
            ),
            (None, Failure::Refused, "nothing listens on 10.244.4.7:5005", "not localhost"),
        ];
        for (f, class, msg, fix) in table {
            let s = refused(addr(), f.as_ref(), Protocol::Jdwp);
            assert_eq!(s.failure, class, "{}", s.message);
            assert!(s.message.contains(msg), "{} lacks {msg}", s.message);
            assert!(s.fix.as_deref().unwrap_or_default().contains(fix), "{:?} lacks {fix}", s.fix);
        }
    }

    #[test]
    fn only_safe_probes_run_by_default() {
        let single = facts(Protocol::Delve, "", true, false);
        let multi = facts(Protocol::Delve, "", true, true);
        assert!(
            unsafe_to_probe(Protocol::Delve, Some(&single), false).is_some_and(|w| w.contains("--accept-multiclient"))
        );
        assert_eq!(unsafe_to_probe(Protocol::Delve, Some(&multi), false), None);
        assert!(unsafe_to_probe(Protocol::Delve, None, false).is_some_and(|w| w.contains("could not be read")));
        assert!(unsafe_to_probe(Protocol::Debugpy, None, false).is_some_and(|w| w.contains("--probe deep")));
        assert_eq!(unsafe_to_probe(Protocol::Debugpy, None, true), None);
        for p in [Protocol::Jdwp, Protocol::NodeInspector, Protocol::Tcp] {
            assert_eq!(unsafe_to_probe(p, None, false), None, "{p:?}");
        }
    }

    #[test]
    fn the_protocol_comes_from_the_flag_then_the_spec_then_the_port() {
        let node = facts(Protocol::NodeInspector, "0.0.0.0", true, true);
        assert_eq!(protocol(Some(Protocol::Tcp), Some(&node), 9229), Protocol::Tcp);
        assert_eq!(protocol(None, Some(&node), 5005), Protocol::NodeInspector);
        assert_eq!(protocol(None, None, 5005), Protocol::Jdwp);
        assert_eq!(protocol(None, None, 2345), Protocol::Delve);
        assert_eq!(protocol(None, None, 8080), Protocol::Tcp);
    }

    #[test]
    fn a_wrong_protocol_points_at_the_right_port() {
        let web = PodFacts { debugger: None, ..facts(Protocol::Jdwp, "*", true, false) };
        let s = wrong_protocol(
            SocketAddr::from(([10, 244, 4, 8], 8080)),
            Protocol::Jdwp,
            "not the JDWP handshake: \"HTTP/1.1\"",
            Some(&web),
        );
        assert_eq!(s.failure, Failure::WrongProtocol);
        assert!(s.message.contains("answers, but not as JDWP: not the JDWP handshake"), "{}", s.message);
        assert!(
            s.fix.unwrap_or_default().contains("port 5005 of pod debug/app-1 (container app) is not a debugger port")
        );
    }

    #[test]
    fn silence_is_a_wrong_protocol_only_where_the_spec_starts_no_debugger() {
        let waited = Duration::from_secs(5);
        let web = PodFacts { debugger: None, ..facts(Protocol::Jdwp, "*", true, false) };
        let s = silent(addr(), Protocol::Jdwp, waited, Some(&web));
        assert_eq!(s.failure, Failure::WrongProtocol, "{}", s.message);
        assert!(s.message.contains("nothing answered the JDWP handshake within 5 s"), "{}", s.message);
        let jvm = facts(Protocol::Jdwp, "*", true, false);
        assert_eq!(silent(addr(), Protocol::Jdwp, waited, Some(&jvm)).failure, Failure::TimedOut);
        assert_eq!(silent(addr(), Protocol::Jdwp, waited, None).failure, Failure::TimedOut);
    }

    #[test]
    fn selectors_and_queries() {
        assert_eq!(label_selector(&serde_json::json!({"app": "web", "tier": "fe"})), "app=web,tier=fe");
        assert_eq!(query_escape("app=web,tier=fe"), "app%3Dweb%2Ctier%3Dfe");
        assert_eq!(connect_fix(Some("lab")), "run `devnet connect --context lab`, or add --connect");
    }
}

//! Reading a pod's spec the way a person debugging it would: which
//! container serves the port, which debugger its command line or
//! environment starts, where that debugger listens, and whether the pod is
//! ready. Pure: takes the API's JSON, gives [`PodFacts`].

use devnet_model::preflight::{DebuggerSpec, PodFacts, Protocol};
use serde_json::Value;

/// Environment variables the JVM reads options from.
const JAVA_ENV: [&str; 4] = ["JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS", "_JAVA_OPTIONS", "JAVA_OPTS"];
/// Skaffold's debug annotation: `{"<container>": {"runtime": …, "ports": {"jdwp": 5005}}}`.
pub const SKAFFOLD_ANNOTATION: &str = "debug.cloud.google.com/config";

/// Whether the pod's `Ready` condition is true.
pub fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// The pod's IPs, in the order the API lists them.
pub fn ips(pod: &Value) -> Vec<std::net::IpAddr> {
    let mut ips: Vec<std::net::IpAddr> = pod["status"]["podIPs"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["ip"].as_str()?.parse().ok()).collect())
        .unwrap_or_default();
    if ips.is_empty()
        && let Some(ip) = pod["status"]["podIP"].as_str().and_then(|s| s.parse().ok())
    {
        ips.push(ip);
    }
    ips
}

/// The container port a Service's `port` leads to in this pod: its
/// `targetPort` (a number, or a container port's name), else the same port.
pub fn service_target_port(service: &Value, port: u16, pod: &Value) -> Option<u16> {
    let sp = service["spec"]["ports"].as_array()?.iter().find(|p| p["port"].as_u64() == Some(port.into()))?;
    match &sp["targetPort"] {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Value::String(name) => containers(pod)
            .flat_map(|c| c["ports"].as_array().into_iter().flatten())
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_u64())
            .and_then(|n| u16::try_from(n).ok()),
        _ => Some(port),
    }
}

/// The ports a Service exposes, for "did you mean" messages.
pub fn service_ports(service: &Value) -> Vec<u16> {
    service["spec"]["ports"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| u16::try_from(p["port"].as_u64()?).ok()).collect())
        .unwrap_or_default()
}

fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    pod["spec"]["containers"].as_array().into_iter().flatten()
}

/// Every port the pod's containers declare.
pub fn declared_ports(pod: &Value) -> Vec<u16> {
    containers(pod)
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .filter_map(|p| u16::try_from(p["containerPort"].as_u64()?).ok())
        .collect()
}

/// What the pod's spec says about `port`.
pub fn facts(pod: &Value, port: u16) -> PodFacts {
    let declares = |c: &Value| {
        c["ports"].as_array().is_some_and(|ps| ps.iter().any(|p| p["containerPort"].as_u64() == Some(port.into())))
    };
    let mut found: Option<(String, Option<DebuggerSpec>)> = None;
    for c in containers(pod) {
        let name = c["name"].as_str().unwrap_or_default().to_owned();
        let specs = debuggers(c, &pod["metadata"]["annotations"]);
        let spec = specs.iter().find(|s| s.port == port).cloned();
        if spec.is_some() || declares(c) {
            found = Some((name, spec));
            if found.as_ref().is_some_and(|f| f.1.is_some()) {
                break;
            }
        }
    }
    PodFacts {
        namespace: pod["metadata"]["namespace"].as_str().unwrap_or_default().to_owned(),
        name: pod["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
        ready: ready(pod),
        container: found.as_ref().map(|f| f.0.clone()),
        port,
        port_declared: containers(pod).any(declares),
        debugger: found.and_then(|f| f.1),
    }
}

/// The words of a container's command line: command then args, each also
/// split on spaces (`sh -c "java -agentlib:… Main"` is common).
fn words(container: &Value) -> Vec<String> {
    ["command", "args"]
        .iter()
        .flat_map(|k| container[*k].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .flat_map(|s| s.split_whitespace().map(|w| w.trim_matches(|c| c == '"' || c == '\'').to_owned()))
        .collect()
}

fn env<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"].as_array()?.iter().find(|e| e["name"] == name)?["value"].as_str()
}

/// Splits `host:port`, `[v6]:port` or `port`.
fn host_port(s: &str) -> Option<(String, u16)> {
    if let Ok(p) = s.parse::<u16>() {
        return Some((String::new(), p));
    }
    let (host, port) = s.rsplit_once(':')?;
    Some((host.trim_start_matches('[').trim_end_matches(']').to_owned(), port.parse().ok()?))
}

fn loopback(host: &str) -> bool {
    matches!(host, "127.0.0.1" | "localhost" | "::1" | "localhost6") || host.starts_with("127.")
}

/// Every debugger the container starts, from its command line, its
/// environment, and Skaffold's annotation.
pub fn debuggers(container: &Value, annotations: &Value) -> Vec<DebuggerSpec> {
    let mut out = Vec::new();
    let words = words(container);
    let mut sources: Vec<(String, Vec<String>)> = vec![("args".to_owned(), words.clone())];
    for var in JAVA_ENV.iter().chain(["NODE_OPTIONS"].iter()) {
        if let Some(v) = env(container, var) {
            sources.push((format!("env {var}"), v.split_whitespace().map(str::to_owned).collect()));
        }
    }
    for (source, words) in &sources {
        out.extend(words.iter().filter_map(|w| jdwp(w, source)));
        out.extend(words.iter().filter_map(|w| node_inspect(w, source)));
    }
    out.extend(delve(&words));
    out.extend(debugpy(&words));
    if out.is_empty()
        && let Some(spec) = skaffold(container, annotations)
    {
        out.push(spec);
    }
    out
}

/// `-agentlib:jdwp=transport=dt_socket,server=y,address=*:5005` (or `-Xrunjdwp:`).
/// JDK 9 and later bind a bare `address=5005` to localhost only.
fn jdwp(word: &str, source: &str) -> Option<DebuggerSpec> {
    let opts = word.strip_prefix("-agentlib:jdwp=").or_else(|| word.strip_prefix("-Xrunjdwp:"))?;
    let address = opts.split(',').find_map(|kv| kv.strip_prefix("address="))?;
    if opts.split(',').any(|kv| kv == "server=n") {
        return None;
    }
    let (host, port) = host_port(address)?;
    let loopback_only = host.is_empty() || loopback(&host);
    Some(DebuggerSpec {
        protocol: Protocol::Jdwp,
        host,
        port,
        source: source.to_owned(),
        option: word.to_owned(),
        loopback_only,
        multiclient: false,
    })
}

/// `--inspect`, `--inspect=[host:]port`, `--inspect-brk…`, `--inspect-wait…`;
/// the host defaults to 127.0.0.1 and the port to 9229.
fn node_inspect(word: &str, source: &str) -> Option<DebuggerSpec> {
    let rest = ["--inspect-brk", "--inspect-wait", "--inspect"].iter().find_map(|f| word.strip_prefix(f))?;
    let (host, port) = match rest.strip_prefix('=') {
        Some(v) => host_port(v).map(|(h, p)| (if h.is_empty() { "127.0.0.1".to_owned() } else { h }, p))?,
        None if rest.is_empty() => ("127.0.0.1".to_owned(), 9229),
        None => return None,
    };
    Some(DebuggerSpec {
        protocol: Protocol::NodeInspector,
        loopback_only: loopback(&host),
        host,
        port,
        source: source.to_owned(),
        option: word.to_owned(),
        multiclient: true,
    })
}

/// A value given as `--flag=v` or `--flag v`.
fn flag(words: &[String], names: &[&str]) -> Option<String> {
    words.iter().enumerate().find_map(|(i, w)| {
        names.iter().find_map(|n| {
            if w == n {
                words.get(i + 1).cloned()
            } else {
                w.strip_prefix(n).and_then(|r| r.strip_prefix('=')).map(str::to_owned)
            }
        })
    })
}

/// `dlv … --headless --listen=[host]:port [--accept-multiclient]`.
fn delve(words: &[String]) -> Option<DebuggerSpec> {
    let at = words.iter().position(|w| w == "dlv" || w.ends_with("/dlv"))?;
    let words = &words[at..];
    if !words.iter().any(|w| w == "--headless" || w == "--headless=true") {
        return None;
    }
    let listen = flag(words, &["--listen", "-l"]).unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let (host, port) = host_port(&listen)?;
    Some(DebuggerSpec {
        protocol: Protocol::Delve,
        loopback_only: loopback(&host),
        host,
        port,
        source: "args".to_owned(),
        option: format!("--listen={listen}"),
        multiclient: words.iter().any(|w| w == "--accept-multiclient" || w == "--accept-multiclient=true"),
    })
}

/// `python -m debugpy --listen [host:]port …` (host defaults to 127.0.0.1).
fn debugpy(words: &[String]) -> Option<DebuggerSpec> {
    let at = words.iter().position(|w| w == "debugpy" || w.ends_with("/debugpy"))?;
    let listen = flag(&words[at..], &["--listen"])?;
    let (host, port) = host_port(&listen)?;
    let host = if host.is_empty() { "127.0.0.1".to_owned() } else { host };
    Some(DebuggerSpec {
        protocol: Protocol::Debugpy,
        loopback_only: loopback(&host),
        host,
        port,
        source: "args".to_owned(),
        option: format!("--listen {listen}"),
        multiclient: false,
    })
}

/// Skaffold's `debug.cloud.google.com/config` annotation for this container.
fn skaffold(container: &Value, annotations: &Value) -> Option<DebuggerSpec> {
    let config: Value = serde_json::from_str(annotations[SKAFFOLD_ANNOTATION].as_str()?).ok()?;
    let ports = &config[container["name"].as_str()?]["ports"];
    let (protocol, port) = [
        ("jdwp", Protocol::Jdwp),
        ("dlv", Protocol::Delve),
        ("dap", Protocol::Debugpy),
        ("devtools", Protocol::NodeInspector),
    ]
    .iter()
    .find_map(|(k, p)| Some((*p, u16::try_from(ports[*k].as_u64()?).ok()?)))?;
    Some(DebuggerSpec {
        protocol,
        host: String::new(),
        port,
        source: format!("annotation {SKAFFOLD_ANNOTATION}"),
        option: String::new(),
        loopback_only: false,
        multiclient: protocol != Protocol::Delve,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn container(command: &[&str], env: &[(&str, &str)]) -> Value {
        let env: Vec<Value> = env.iter().map(|(n, v)| json!({"name": n, "value": v})).collect();
        json!({"name": "app", "command": command, "env": env})
    }

    fn one(c: &Value) -> Option<DebuggerSpec> {
        let all = debuggers(c, &Value::Null);
        assert!(all.len() <= 1, "{all:?}");
        all.into_iter().next()
    }

    #[test]
    fn debuggers_are_read_from_the_command_line_and_environment() {
        // (command, env, protocol, host, port, loopback only, multiclient, source)
        type Row<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, Protocol, &'a str, u16, bool, bool, &'a str);
        let table: Vec<Row> = vec![
            (
                vec!["java", "-agentlib:jdwp=transport=dt_socket,server=y,suspend=n,address=*:5005", "Main"],
                vec![],
                Protocol::Jdwp,
                "*",
                5005,
                false,
                false,
                "args",
            ),
            (
                vec!["java", "-agentlib:jdwp=transport=dt_socket,server=y,address=5005", "Main"],
                vec![],
                Protocol::Jdwp,
                "",
                5005,
                true,
                false,
                "args",
            ),
            (
                vec!["java", "-jar", "app.jar"],
                vec![("JAVA_TOOL_OPTIONS", "-Xmx1g -agentlib:jdwp=transport=dt_socket,server=y,address=0.0.0.0:8000")],
                Protocol::Jdwp,
                "0.0.0.0",
                8000,
                false,
                false,
                "env JAVA_TOOL_OPTIONS",
            ),
            (
                vec!["sh", "-c", "exec java -Xrunjdwp:transport=dt_socket,server=y,address=localhost:5005 Main"],
                vec![],
                Protocol::Jdwp,
                "localhost",
                5005,
                true,
                false,
                "args",
            ),
            (
                vec!["node", "--inspect=0.0.0.0:9229", "app.js"],
                vec![],
                Protocol::NodeInspector,
                "0.0.0.0",
                9229,
                false,
                true,
                "args",
            ),
            (
                vec!["node", "--inspect", "app.js"],
                vec![],
                Protocol::NodeInspector,
                "127.0.0.1",
                9229,
                true,
                true,
                "args",
            ),
            (
                vec!["node", "app.js"],
                vec![("NODE_OPTIONS", "--inspect-brk=9230")],
                Protocol::NodeInspector,
                "127.0.0.1",
                9230,
                true,
                true,
                "env NODE_OPTIONS",
            ),
            (
                vec![
                    "/usr/bin/dlv",
                    "exec",
                    "--headless",
                    "--listen=:2345",
                    "--api-version=2",
                    "--accept-multiclient",
                    "/app",
                ],
                vec![],
                Protocol::Delve,
                "",
                2345,
                false,
                true,
                "args",
            ),
            (
                vec!["dlv", "debug", "--headless", "-l", "127.0.0.1:2345"],
                vec![],
                Protocol::Delve,
                "127.0.0.1",
                2345,
                true,
                false,
                "args",
            ),
            (
                vec!["python3", "-m", "debugpy", "--listen", "0.0.0.0:5678", "app.py"],
                vec![],
                Protocol::Debugpy,
                "0.0.0.0",
                5678,
                false,
                false,
                "args",
            ),
            (
                vec!["python", "-m", "debugpy", "--listen", "5678", "--wait-for-client", "app.py"],
                vec![],
                Protocol::Debugpy,
                "127.0.0.1",
                5678,
                true,
                false,
                "args",
            ),
        ];
        for (cmd, env, protocol, host, port, loopback_only, multiclient, source) in table {
            let spec = one(&container(&cmd, &env));
            let Some(spec) = spec else { panic!("no debugger found in {cmd:?} {env:?}") };
            assert_eq!(
                (
                    spec.protocol,
                    spec.host.as_str(),
                    spec.port,
                    spec.loopback_only,
                    spec.multiclient,
                    spec.source.as_str()
                ),
                (protocol, host, port, loopback_only, multiclient, source),
                "{cmd:?} {env:?}"
            );
        }
    }

    #[test]
    fn no_debugger_where_none_is_started() {
        for cmd in [
            vec!["java", "-jar", "app.jar"],
            vec!["java", "-agentlib:jdwp=transport=dt_socket,server=n,address=ide:5005", "Main"],
            vec!["dlv", "version"],
            vec!["python3", "-m", "debugpy", "--connect", "ide:5678", "app.py"],
            vec!["busybox", "httpd", "-f", "-p", "8080"],
        ] {
            assert_eq!(one(&container(&cmd, &[])), None, "{cmd:?}");
        }
    }

    #[test]
    fn skaffold_annotation_names_the_runtime_when_the_command_does_not() {
        let c = json!({"name": "app", "command": ["/app/run"]});
        let ann = json!({SKAFFOLD_ANNOTATION: r#"{"app":{"runtime":"jvm","ports":{"jdwp":5005}}}"#});
        let specs = debuggers(&c, &ann);
        assert_eq!(specs.len(), 1);
        assert_eq!((specs[0].protocol, specs[0].port), (Protocol::Jdwp, 5005));
        assert!(specs[0].source.contains(SKAFFOLD_ANNOTATION));
    }

    fn pod(ready: bool) -> Value {
        json!({
            "metadata": {"name": "jvm-1", "namespace": "debug"},
            "spec": {"containers": [
                {"name": "sidecar", "command": ["envoy"], "ports": [{"containerPort": 15000}]},
                {"name": "app", "command": ["java", "-agentlib:jdwp=transport=dt_socket,server=y,address=*:5005", "Main"],
                 "ports": [{"name": "jdwp", "containerPort": 5005}, {"name": "http", "containerPort": 8080}]}
            ]},
            "status": {"podIP": "10.244.4.7", "podIPs": [{"ip": "10.244.4.7"}, {"ip": "fd00:244:0:4::7"}],
                       "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        })
    }

    #[test]
    fn facts_name_the_container_its_debugger_and_readiness() {
        let f = facts(&pod(true), 5005);
        assert_eq!((f.name.as_str(), f.namespace.as_str(), f.ready), ("jvm-1", "debug", true));
        assert_eq!(f.container.as_deref(), Some("app"));
        assert!(f.port_declared);
        assert_eq!(f.debugger.map(|d| d.protocol), Some(Protocol::Jdwp));
        let http = facts(&pod(false), 8080);
        assert_eq!((http.container.as_deref(), http.debugger, http.ready), (Some("app"), None, false));
        let nothing = facts(&pod(true), 9999);
        assert_eq!((nothing.container, nothing.port_declared), (None, false));
        assert_eq!(declared_ports(&pod(true)), vec![15000, 5005, 8080]);
        assert_eq!(ips(&pod(true)).len(), 2);
    }

    #[test]
    fn a_service_port_leads_to_its_target_port_by_number_or_name() {
        let p = pod(true);
        let svc = |target: Value| json!({"spec": {"ports": [{"port": 80, "targetPort": target}]}});
        assert_eq!(service_target_port(&svc(json!(8080)), 80, &p), Some(8080));
        assert_eq!(service_target_port(&svc(json!("http")), 80, &p), Some(8080));
        assert_eq!(service_target_port(&svc(json!("nope")), 80, &p), None);
        assert_eq!(service_target_port(&json!({"spec": {"ports": [{"port": 5005}]}}), 5005, &p), Some(5005));
        assert_eq!(service_target_port(&svc(json!(8080)), 81, &p), None);
        assert_eq!(service_ports(&svc(json!(8080))), vec![80]);
    }
}

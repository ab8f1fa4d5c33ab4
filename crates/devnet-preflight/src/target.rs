//! Targets as people and IDEs write them, kubectl style:
//! `svc/NAME[.NS]:PORT`, `pod/NAME[.NS]:PORT`, `deploy/NAME[.NS]:PORT`,
//! `HOST:PORT`, `IP:PORT` and `[IPv6]:PORT`.

use std::fmt;
use std::net::IpAddr;

/// What the target names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A Service: its cluster DNS name, resolved by the system resolver.
    Service { name: String, namespace: Option<String> },
    /// A Pod: its IP from the API.
    Pod { name: String, namespace: Option<String> },
    /// A Deployment: one of its ready pods.
    Deployment { name: String, namespace: Option<String> },
    /// A host name, resolved by the system resolver.
    Host(String),
    /// An address as given.
    Ip(IpAddr),
}

/// A parsed target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: Kind,
    pub port: u16,
    /// As given, for messages.
    pub text: String,
}

/// Why a target does not parse; the message says what would.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("target {text:?}: {problem} (write svc/NAME[.NAMESPACE]:PORT, pod/…, deploy/…, HOST:PORT or IP:PORT)")]
pub struct TargetError {
    pub text: String,
    pub problem: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A DNS label as Kubernetes allows for names and namespaces (RFC 1123).
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A host name: dot-separated labels of letters, digits and hyphens.
fn is_host_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

impl Target {
    pub fn parse(text: &str) -> Result<Target, TargetError> {
        let err = |problem: &str| TargetError { text: text.to_owned(), problem: problem.to_owned() };
        let (head, port) = text.rsplit_once(':').ok_or_else(|| err("no :PORT"))?;
        let port = match port.parse::<u16>() {
            Ok(0) | Err(_) => return Err(err(&format!("port {port:?} is not a number from 1 to 65535"))),
            Ok(p) => p,
        };
        let kind = if let Some((kind, rest)) = head.split_once('/') {
            let (name, namespace) = match rest.split_once('.') {
                Some((n, ns)) => (n, Some(ns)),
                None => (rest, None),
            };
            if !is_dns_label(name) {
                return Err(err(&format!("{name:?} is not a Kubernetes name (lower-case letters, digits, '-')")));
            }
            if let Some(ns) = namespace
                && !is_dns_label(ns)
            {
                return Err(err(&format!("{ns:?} is not a namespace name")));
            }
            let (name, namespace) = (name.to_owned(), namespace.map(str::to_owned));
            match kind {
                "svc" | "service" | "services" => Kind::Service { name, namespace },
                "pod" | "pods" | "po" => Kind::Pod { name, namespace },
                "deploy" | "deployment" | "deployments" => Kind::Deployment { name, namespace },
                other => return Err(err(&format!("unknown kind {other:?} (svc, pod or deploy)"))),
            }
        } else if let Some(v6) = head.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Kind::Ip(IpAddr::V6(v6.parse().map_err(|_| err(&format!("{v6:?} is not an IPv6 address")))?))
        } else if let Ok(ip) = head.parse::<IpAddr>() {
            if ip.is_ipv6() {
                return Err(err("write an IPv6 address in brackets: [fd00::1]:5005"));
            }
            Kind::Ip(ip)
        } else if head.contains(':') {
            return Err(err("write an IPv6 address in brackets: [fd00::1]:5005"));
        } else if is_host_name(head) {
            Kind::Host(head.to_owned())
        } else {
            return Err(err(&format!("{head:?} is neither a host name nor an address")));
        };
        Ok(Target { kind, port, text: text.to_owned() })
    }

    /// The namespace the target names, if it names one.
    pub fn namespace(&self) -> Option<&str> {
        match &self.kind {
            Kind::Service { namespace, .. } | Kind::Pod { namespace, .. } | Kind::Deployment { namespace, .. } => {
                namespace.as_deref()
            }
            _ => None,
        }
    }

    /// Whether the name came from a person (a Node inspector rejects a
    /// `Host` header that is a name).
    pub fn by_name(&self) -> bool {
        matches!(self.kind, Kind::Service { .. } | Kind::Host(_))
    }
}

/// Reads a cluster DNS name back into a Service: `NAME.NS`,
/// `NAME.NS.svc` and `NAME.NS.svc.<domain>`.
pub fn service_of_host(host: &str, cluster_domain: &str) -> Option<(String, String)> {
    let host = host.strip_suffix('.').unwrap_or(host);
    let rest =
        host.strip_suffix(&format!(".svc.{cluster_domain}")).or_else(|| host.strip_suffix(".svc")).unwrap_or(host);
    let (name, ns) = rest.split_once('.')?;
    (is_dns_label(name) && is_dns_label(ns)).then(|| (name.to_owned(), ns.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> Result<Kind, String> {
        Target::parse(text).map(|t| t.kind).map_err(|e| e.to_string())
    }

    #[test]
    fn targets_parse_like_kubectl() {
        let svc = |n: &str, ns: Option<&str>| Kind::Service { name: n.into(), namespace: ns.map(Into::into) };
        let table: Vec<(&str, Kind)> = vec![
            ("svc/jvm:5005", svc("jvm", None)),
            ("svc/jvm.debug:5005", svc("jvm", Some("debug"))),
            ("service/jvm.debug:5005", svc("jvm", Some("debug"))),
            ("pod/jvm-7d9f.debug:5005", Kind::Pod { name: "jvm-7d9f".into(), namespace: Some("debug".into()) }),
            ("deploy/go.debug:2345", Kind::Deployment { name: "go".into(), namespace: Some("debug".into()) }),
            ("mysql.team-a:3306", Kind::Host("mysql.team-a".into())),
            ("localhost:9229", Kind::Host("localhost".into())),
            ("10.244.4.7:5005", Kind::Ip("10.244.4.7".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])))),
            ("[fd00:244::7]:5005", Kind::Ip("fd00:244::7".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])))),
        ];
        for (text, want) in table {
            assert_eq!(kind(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_targets_say_what_is_wrong() {
        let table = [
            ("svc/jvm", "no :PORT"),
            ("svc/jvm:0", "not a number from 1 to 65535"),
            ("svc/jvm:70000", "not a number from 1 to 65535"),
            ("svc/Jvm:5005", "not a Kubernetes name"),
            ("svc/jvm.Debug:5005", "not a namespace name"),
            ("job/x:1", "unknown kind \"job\""),
            ("fd00::1:5005", "in brackets"),
            ("[fd00::zz]:5005", "not an IPv6 address"),
            ("a b:1", "neither a host name nor an address"),
            ("svc/jvm.debug.svc:5005", "not a namespace name"),
        ];
        for (text, want) in table {
            let got = kind(text).err().unwrap_or_default();
            assert!(got.contains(want), "{text}: {got}");
            assert!(got.contains("svc/NAME[.NAMESPACE]:PORT"), "{text}: the error shows the forms");
        }
    }

    #[test]
    fn cluster_names_map_back_to_services() {
        for host in ["jvm.debug", "jvm.debug.svc", "jvm.debug.svc.cluster.local", "jvm.debug.svc.cluster.local."] {
            assert_eq!(service_of_host(host, "cluster.local"), Some(("jvm".into(), "debug".into())), "{host}");
        }
        assert_eq!(service_of_host("jvm", "cluster.local"), None);
        assert_eq!(service_of_host("www.example.com", "cluster.local"), None);
    }

    #[test]
    fn only_names_trip_the_inspector_host_check() {
        let by_name = |t: &str| Target::parse(t).map(|t| t.by_name()).unwrap_or_default();
        assert!(by_name("svc/node.debug:9229"));
        assert!(by_name("node.debug:9229"));
        assert!(!by_name("10.244.4.9:9229"));
        assert!(!by_name("pod/node-1.debug:9229"));
    }
}

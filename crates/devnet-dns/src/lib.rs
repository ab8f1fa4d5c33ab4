//! # devnet-dns: cluster names, and only cluster names, to the cluster
//!
//! **Layer:** sans-IO. Decides, for each DNS query the laptop makes, whether
//! it is a cluster name and what to ask the cluster DNS ([`NamePolicy`]),
//! rewrites queries and answers accordingly ([`rewrite`]), and renders the
//! per-OS resolver configuration that sends queries to devnet's stub:
//! [`resolv_conf`], [`resolved`] (systemd-resolved's D-Bus calls),
//! [`macos`] (`/etc/resolver`) and [`windows`] (NRPT).
//!
//! **Names.** `svc.ns.svc.cluster.local` goes to the cluster as it is.
//! `svc.ns` and `svc.ns.svc` go as `svc.ns.svc.cluster.local` when `ns` is a
//! namespace the cluster has, and a bare `svc` when a default namespace is
//! chosen. No search domains are involved, so a public name is never tried
//! with a cluster suffix, and a namespace named like a public suffix (`com`,
//! `dev`, `io`) never captures public names: `google.com` stays public even
//! when a namespace `com` exists.
//!
//! **What it does not do:** open sockets or write files; the engine does.

pub mod macos;
pub mod resolv_conf;
pub mod resolved;
pub mod rewrite;
pub mod windows;

use std::collections::BTreeSet;

use hickory_proto::rr::Name;

/// Where a query goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// To the cluster DNS, asking for this (fully qualified) name.
    Cluster(Name),
    /// To the laptop's usual resolvers, unchanged.
    Upstream,
}

/// Which names are the cluster's.
#[derive(Debug, Clone)]
pub struct NamePolicy {
    domain: Name,
    svc_domain: Name,
    namespaces: BTreeSet<String>,
    default_namespace: Option<String>,
}

/// A name the policy cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{0:?} is not a valid DNS name: {1}")]
    BadName(String, String),
    #[error("namespace {0:?} is not a valid DNS label (lowercase letters, digits and '-', at most 63)")]
    BadNamespace(String),
}

impl NamePolicy {
    /// A policy for cluster domain `domain` (e.g. `cluster.local`), the
    /// cluster's namespaces, and an optional default namespace for bare names.
    pub fn new(domain: &str, namespaces: &[String], default_namespace: Option<&str>) -> Result<Self, PolicyError> {
        let fqdn = |s: &str| {
            let mut n = Name::from_ascii(s).map_err(|e| PolicyError::BadName(s.to_owned(), e.to_string()))?;
            n.set_fqdn(true);
            Ok::<_, PolicyError>(n.to_lowercase())
        };
        let domain = fqdn(domain)?;
        let svc_domain = fqdn(&format!("svc.{domain}"))?;
        let valid = |ns: &str| {
            !ns.is_empty()
                && ns.len() <= 63
                && ns.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !ns.starts_with('-')
                && !ns.ends_with('-')
        };
        for ns in namespaces.iter().chain(default_namespace.map(str::to_owned).as_ref()) {
            if !valid(ns) {
                return Err(PolicyError::BadNamespace(ns.clone()));
            }
        }
        Ok(Self {
            domain,
            svc_domain,
            namespaces: namespaces.iter().cloned().collect(),
            default_namespace: default_namespace.map(str::to_owned),
        })
    }

    /// The cluster domain, fully qualified.
    pub fn domain(&self) -> &Name {
        &self.domain
    }

    /// The domains the OS should send to devnet's stub on systems with
    /// per-domain resolvers (macOS, Windows, systemd-resolved): the cluster
    /// domain, each namespace that is not a public suffix (so `svc.ns`
    /// works), and `svc` when there are namespaces (so `svc.ns.svc` does).
    /// Bare names need a search domain and are left to the stub.
    pub fn resolver_domains(&self) -> Vec<String> {
        let mut domains = vec![self.domain.to_ascii().trim_end_matches('.').to_owned()];
        domains.extend(self.namespaces.iter().filter(|ns| !never_captured(ns)).cloned());
        if domains.len() > 1 && !never_captured("svc") && !self.namespaces.iter().any(|ns| ns == "svc") {
            domains.push("svc".to_owned());
        }
        domains
    }

    /// The search domain that makes a bare `svc` mean the default namespace's
    /// service, for resolvers that only route by domain (systemd-resolved).
    pub fn search_domain(&self) -> Option<String> {
        self.default_namespace.as_ref().map(|ns| format!("{ns}.{}", self.svc_domain.to_ascii().trim_end_matches('.')))
    }

    /// Where a query for `qname` goes.
    pub fn route(&self, qname: &Name) -> Route {
        let name = qname.to_lowercase();
        if self.domain.zone_of(&name) {
            return Route::Cluster(name);
        }
        let labels: Vec<String> = name.iter().map(|l| String::from_utf8_lossy(l).into_owned()).collect();
        let service_in = |svc: &str, ns: &str| -> Route {
            match Name::from_ascii(format!("{svc}.{ns}.{}", self.svc_domain)) {
                Ok(n) => Route::Cluster(n),
                Err(_) => Route::Upstream,
            }
        };
        match labels.as_slice() {
            // svc.ns or svc.ns.svc, for a namespace of the cluster that is
            // not also a public suffix (a namespace `com` must not take `google.com`).
            [svc, ns] | [svc, ns, _] if self.is_namespace(ns) && (labels.len() == 2 || labels[2] == "svc") => {
                service_in(svc, ns)
            }
            // A bare name in the default namespace, which the user chose.
            // (Not checked against public suffixes: `web` and `app` are
            // both gTLDs and everyday service names.)
            [svc] if svc != "localhost" => match &self.default_namespace {
                Some(ns) => service_in(svc, ns),
                None => Route::Upstream,
            },
            _ => Route::Upstream,
        }
    }

    /// The namespaces that make routing domains and `svc.ns` names: those
    /// given, less public suffixes and the names networks use for their own
    /// hosts.
    pub fn routed_namespaces(&self) -> Vec<String> {
        self.namespaces.iter().filter(|ns| !never_captured(ns)).cloned().collect()
    }

    /// This policy without the namespaces in `taken` (names the laptop's own
    /// resolver answers: a namespace `acme` must not take `git.acme` from
    /// the office DNS). Their services stay reachable by the cluster's own
    /// names, `svc.ns.svc.<domain>`.
    pub fn without(mut self, taken: &[String]) -> Self {
        self.namespaces.retain(|ns| !taken.contains(ns));
        if self.default_namespace.as_ref().is_some_and(|ns| taken.contains(ns)) {
            self.default_namespace = None;
        }
        self
    }

    fn is_namespace(&self, ns: &str) -> bool {
        self.namespaces.contains(ns) && !never_captured(ns)
    }
}

/// Names that office and home networks answer themselves: special-use
/// names (RFC 6761, RFC 6762 `local`, RFC 8375 `home.arpa`) and the private
/// top-level names networks use for their own hosts. A namespace with one
/// of these names would take `git.corp` or `printer.lan` from the office
/// DNS and hand the lookup, and then the connection, to the cluster.
pub const NETWORK_NAMES: [&str; 10] =
    ["local", "localhost", "localdomain", "lan", "home", "corp", "internal", "intranet", "private", "arpa"];

/// Whether names under `label` may belong to a cluster namespace: not a
/// public suffix (`com`, `dev`, `io`…) and not a name networks use for
/// their own hosts ([`NETWORK_NAMES`]).
fn never_captured(label: &str) -> bool {
    NETWORK_NAMES.contains(&label) || psl::suffix(label.as_bytes()).is_some_and(|s| s.is_known())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).expect("name")
    }

    #[test]
    fn namespaces_named_like_the_office_never_capture_its_names() {
        let namespaces: Vec<String> =
            ["team-a", "corp", "lan", "home", "internal", "local"].iter().map(|s| (*s).to_owned()).collect();
        let p = NamePolicy::new("cluster.local", &namespaces, None).expect("policy");
        for office in ["git.corp.", "printer.lan.", "nas.home.", "wiki.internal.", "mac.local."] {
            assert_eq!(p.route(&name(office)), Route::Upstream, "{office}");
        }
        assert_eq!(p.resolver_domains(), vec!["cluster.local", "team-a", "svc"]);
        // Their services stay reachable by the cluster's own names.
        let git = name("git.corp.svc.cluster.local.");
        assert_eq!(p.route(&git), Route::Cluster(git.clone()));
    }

    #[test]
    fn routing_table() {
        let namespaces: Vec<String> = ["demo", "team-a", "com", "dev"].iter().map(|s| (*s).to_owned()).collect();
        let p = NamePolicy::new("cluster.local", &namespaces, Some("demo")).expect("policy");
        let cluster = |s: &str| Route::Cluster(name(s));
        let table = [
            ("web.demo.svc.cluster.local.", cluster("web.demo.svc.cluster.local.")),
            ("WEB.Demo.SVC.cluster.local.", cluster("web.demo.svc.cluster.local.")),
            ("10-244-1-10.demo.pod.cluster.local.", cluster("10-244-1-10.demo.pod.cluster.local.")),
            ("web.demo.", cluster("web.demo.svc.cluster.local.")),
            ("mysql.team-a.", cluster("mysql.team-a.svc.cluster.local.")),
            ("web.demo.svc.", cluster("web.demo.svc.cluster.local.")),
            ("web.", cluster("web.demo.svc.cluster.local.")),
            // Not cluster names.
            ("web.other.", Route::Upstream),        // not a namespace of the cluster
            ("google.com.", Route::Upstream),       // namespace `com` exists but is a public suffix
            ("pkg.dev.", Route::Upstream),          // likewise `dev`
            ("web.demo.example.", Route::Upstream), // three labels, not `.svc`
            ("example.com.", Route::Upstream),
            ("cluster.local.example.com.", Route::Upstream),
            ("localhost.", Route::Upstream),
        ];
        for (q, want) in table {
            assert_eq!(p.route(&name(q)), want, "{q}");
        }
        // Without a default namespace, bare names stay upstream.
        let p = NamePolicy::new("cluster.local", &namespaces, None).expect("policy");
        assert_eq!(p.route(&name("web.")), Route::Upstream);
    }

    #[test]
    fn resolver_domains_skip_namespaces_named_like_public_suffixes() {
        let namespaces: Vec<String> = ["demo", "com", "team-a"].iter().map(|s| (*s).to_owned()).collect();
        let p = NamePolicy::new("cluster.local", &namespaces, None).expect("policy");
        assert_eq!(p.resolver_domains(), ["cluster.local", "demo", "team-a", "svc"]);
        // No namespaces: nothing but the cluster domain.
        let p = NamePolicy::new("cluster.local", &[], None).expect("policy");
        assert_eq!(p.resolver_domains(), ["cluster.local"]);
    }

    #[test]
    fn namespaces_the_network_answers_are_left_to_it() {
        let namespaces: Vec<String> = ["demo", "acme", "corp"].iter().map(|s| (*s).to_owned()).collect();
        let p = NamePolicy::new("cluster.local", &namespaces, Some("acme")).expect("policy");
        assert_eq!(p.routed_namespaces(), ["acme", "demo"], "corp is never a routing domain");
        let p = p.without(&["acme".to_owned()]);
        assert_eq!(p.resolver_domains(), ["cluster.local", "demo", "svc"]);
        assert_eq!(p.route(&name("git.acme.")), Route::Upstream);
        assert_eq!(p.route(&name("web.demo.")), Route::Cluster(name("web.demo.svc.cluster.local.")));
        // The default namespace went with it: bare names stay the network's.
        assert_eq!(p.route(&name("git.")), Route::Upstream);
        let full = name("git.acme.svc.cluster.local.");
        assert_eq!(p.route(&full), Route::Cluster(full.clone()));
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(NamePolicy::new("cluster..local", &[], None).is_err());
        let err = NamePolicy::new("cluster.local", &["Team_A".into()], None).expect_err("bad namespace");
        assert!(err.to_string().contains("Team_A"));
    }
}

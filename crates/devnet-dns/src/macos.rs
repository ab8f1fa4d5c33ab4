//! macOS: one file per domain in `/etc/resolver/`, read by mDNSResponder
//! (resolver(5)). Each file devnet writes starts with [`MARKER`]; only files
//! with it are ever rewritten or removed. Pure planning, tested on Linux; the
//! macOS executor only writes and removes the files planned here.

use std::net::IpAddr;

/// The directory macOS reads per-domain resolvers from.
pub const RESOLVER_DIR: &str = "/etc/resolver";

/// The first line of every file devnet writes.
pub const MARKER: &str = "# devnet-managed";

/// A change to `/etc/resolver`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write `contents` to the file named `domain`.
    Write { domain: String, contents: String },
    /// Remove the file named `domain` (ours).
    Remove { domain: String },
}

/// A file in the way that is not ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{RESOLVER_DIR}/{domain} exists and was not written by devnet: remove it, or leave {domain} out")]
pub struct Foreign {
    pub domain: String,
}

/// The contents of the resolver file for one domain.
pub fn resolver_file(stub: IpAddr) -> String {
    format!("{MARKER}: removed when devnet disconnects\nnameserver {stub}\nport 53\ntimeout 2\n")
}

/// Whether a resolver file is ours.
pub fn is_ours(contents: &str) -> bool {
    contents.starts_with(MARKER)
}

/// The changes that make `/etc/resolver` send `domains` to `stub`, given the
/// files there now (name, contents). Ours that are no longer wanted are
/// removed; files already right are left; a foreign file for a wanted domain
/// is an error, and nothing is changed.
pub fn plan(domains: &[String], stub: IpAddr, existing: &[(String, String)]) -> Result<Vec<Action>, Foreign> {
    let contents = resolver_file(stub);
    let mut actions = Vec::new();
    for domain in domains {
        match existing.iter().find(|(name, _)| name == domain) {
            Some((_, c)) if !is_ours(c) => return Err(Foreign { domain: domain.clone() }),
            Some((_, c)) if *c == contents => {}
            _ => actions.push(Action::Write { domain: domain.clone(), contents: contents.clone() }),
        }
    }
    for (name, c) in existing {
        if is_ours(c) && !domains.contains(name) {
            actions.push(Action::Remove { domain: name.clone() });
        }
    }
    Ok(actions)
}

/// The changes that remove every file of ours.
pub fn plan_removal(existing: &[(String, String)]) -> Vec<Action> {
    existing.iter().filter(|(_, c)| is_ours(c)).map(|(name, _)| Action::Remove { domain: name.clone() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stub() -> IpAddr {
        "127.0.0.153".parse().expect("ip")
    }

    #[test]
    fn golden_resolver_file() {
        assert_eq!(
            resolver_file(stub()),
            "# devnet-managed: removed when devnet disconnects\nnameserver 127.0.0.153\nport 53\ntimeout 2\n"
        );
    }

    #[test]
    fn plans_touch_only_our_files_and_applying_twice_changes_nothing() {
        let domains = vec!["cluster.local".to_owned(), "demo".to_owned()];
        let first = plan(&domains, stub(), &[]).expect("plan");
        assert_eq!(first.len(), 2);
        let now: Vec<(String, String)> = domains.iter().map(|d| (d.clone(), resolver_file(stub()))).collect();
        assert_eq!(plan(&domains, stub(), &now).expect("plan"), vec![], "idempotent");

        // A namespace went away: its file (ours) goes; a foreign file stays.
        let mut with_extra = now.clone();
        with_extra.push(("old-ns".into(), resolver_file(stub())));
        with_extra.push(("corp.example".into(), "nameserver 10.0.0.1\n".into()));
        assert_eq!(
            plan(&domains, stub(), &with_extra).expect("plan"),
            vec![Action::Remove { domain: "old-ns".into() }]
        );
        assert_eq!(
            plan_removal(&with_extra),
            ["cluster.local", "demo", "old-ns"]
                .iter()
                .map(|d| Action::Remove { domain: (*d).into() })
                .collect::<Vec<_>>()
        );

        // A foreign file for a domain we need: refuse, name it.
        let err = plan(&domains, stub(), &[("demo".into(), "nameserver 10.0.0.1\n".into())]).expect_err("foreign");
        assert!(err.to_string().contains("/etc/resolver/demo"));
    }
}

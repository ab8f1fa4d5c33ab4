//! Linux: routes through iproute2, marked with our own route protocol number
//! so that only routes we added are ever changed or removed.

use ipnet::IpNet;
use serde::Deserialize;

use crate::journal::{Entry, Journal};
use crate::runner::{RunError, Runner, argv};

/// The `proto` number on every route we add (unassigned in
/// /etc/iproute2/rt_protos). It is how we recognise our own routes.
pub const ROUTE_PROTO: &str = "222";

/// The alias set on TUN devices we create, marking them as ours.
pub const LINK_ALIAS: &str = "devnet-managed";

/// A route as `ip -j route show` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct KernelRoute {
    pub dst: String,
    #[serde(default)]
    pub dev: Option<String>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
}

impl KernelRoute {
    fn net(&self) -> Option<IpNet> {
        if self.dst == "default" {
            return None;
        }
        self.dst.parse().ok().or_else(|| self.dst.parse::<std::net::IpAddr>().ok().map(IpNet::from))
    }

    fn is_ours_on(&self, dev: &str) -> bool {
        self.protocol.as_deref() == Some(ROUTE_PROTO) && self.dev.as_deref() == Some(dev)
    }

    fn describe(&self) -> String {
        let mut s = self.dst.clone();
        if let Some(g) = &self.gateway {
            s += &format!(" via {g}");
        }
        if let Some(d) = &self.dev {
            s += &format!(" dev {d}");
        }
        if let Some(p) = &self.protocol {
            s += &format!(" proto {p}");
        }
        s
    }
}

/// A route we may not add.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a route for {dst} already exists ({existing}) and is not ours: remove it or leave {dst} out of the CIDRs")]
pub struct RouteConflict {
    pub dst: IpNet,
    pub existing: String,
}

#[derive(Debug, Deserialize)]
struct RouteGet {
    dev: Option<String>,
    gateway: Option<std::net::IpAddr>,
    prefsrc: Option<std::net::IpAddr>,
}

/// The route the kernel would use for `target` now (`ip route get`), or
/// None when it has none ("Network is unreachable").
pub fn route_get(runner: &dyn Runner, target: std::net::IpAddr) -> Result<Option<devnet_path::RouteUsed>, RunError> {
    let out = match runner.run(&argv(&["ip", "-j", "route", "get", &target.to_string()])) {
        Ok(out) => out,
        Err(e) if e.stderr.contains("unreachable") => return Ok(None),
        Err(e) => return Err(e),
    };
    let parsed: Vec<RouteGet> = serde_json::from_str(&out).map_err(|e| RunError {
        command: format!("ip -j route get {target}"),
        stderr: format!("unexpected output: {e}"),
    })?;
    Ok(parsed
        .into_iter()
        .next()
        .and_then(|r| Some(devnet_path::RouteUsed { dev: r.dev?, gateway: r.gateway, src: r.prefsrc })))
}

/// Reads the main routing table, both families.
pub fn routes(runner: &dyn Runner) -> Result<Vec<KernelRoute>, RunError> {
    let mut all = Vec::new();
    for family in ["-4", "-6"] {
        let out = runner.run(&argv(&["ip", "-j", family, "route", "show", "table", "main"]))?;
        if !out.trim().is_empty() {
            all.extend(serde_json::from_str::<Vec<KernelRoute>>(&out).map_err(|e| RunError {
                command: format!("ip -j {family} route show"),
                stderr: format!("unexpected output: {e}"),
            })?);
        }
    }
    Ok(all)
}

/// The commands that add routes for `cidrs` through `dev`. Routes already
/// present and ours are skipped (applying twice changes nothing); an exact
/// prefix owned by someone else is a conflict.
pub fn plan_add(cidrs: &[IpNet], dev: &str, existing: &[KernelRoute]) -> Result<Vec<Vec<String>>, RouteConflict> {
    let mut commands = Vec::new();
    for net in cidrs {
        match existing.iter().find(|r| r.net() == Some(*net)) {
            Some(r) if r.is_ours_on(dev) => {}
            Some(r) => {
                return Err(RouteConflict { dst: *net, existing: r.describe() });
            }
            None => commands.push(argv(&["ip", "route", "add", &net.to_string(), "dev", dev, "proto", ROUTE_PROTO])),
        }
    }
    Ok(commands)
}

/// The commands that remove our routes for `cidrs` on `dev`, skipping any
/// that are gone or not ours.
pub fn plan_remove(cidrs: &[IpNet], dev: &str, existing: &[KernelRoute]) -> Vec<Vec<String>> {
    cidrs
        .iter()
        .filter(|net| existing.iter().any(|r| r.net() == Some(**net) && r.is_ours_on(dev)))
        .map(|net| argv(&["ip", "route", "del", &net.to_string(), "dev", dev, "proto", ROUTE_PROTO]))
        .collect()
}

/// An IPv6 source address for the TUN device (a ULA /128), used when IPv6
/// CIDRs are routed: a laptop on an IPv4-only network has no IPv6 address of
/// its own, and without one the kernel cannot open IPv6 connections at all.
pub const TUN_IPV6_SOURCE: &str = "fd64:de7e:de7e::1/128";

/// Marks a TUN device as ours, brings it up with IPv6 router solicitations
/// off (nothing answers them on a tunnel), and gives it an IPv6 source
/// address when IPv6 destinations are routed through it.
pub fn adopt_link(runner: &dyn Runner, dev: &str, routes_ipv6: bool) -> Result<(), RunError> {
    runner.run(&argv(&["ip", "link", "set", "dev", dev, "alias", LINK_ALIAS, "up"]))?;
    let _ = runner.run(&argv(&["sysctl", "-q", "-w", &format!("net.ipv6.conf.{dev}.router_solicitations=0")]));
    if routes_ipv6 {
        runner.run(&argv(&["ip", "-6", "addr", "replace", TUN_IPV6_SOURCE, "dev", dev, "nodad"]))?;
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
struct Link {
    #[serde(default)]
    ifalias: Option<String>,
}

/// Undoes everything the journal holds that still exists and is ours, then
/// empties the journal. Foreign look-alikes (same prefix, other protocol or
/// device; a same-named link without our alias) are left alone.
pub fn undo(journal: &mut Journal, runner: &dyn Runner) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    let existing = routes(runner)?;
    for entry in journal.entries().to_vec().into_iter().rev() {
        match &entry {
            Entry::Route { dst, dev } => {
                for cmd in plan_remove(&[*dst], dev, &existing) {
                    // A route that vanished with its device meanwhile is fine.
                    if runner.run(&cmd).is_ok() {
                        done.push(cmd.join(" "));
                    }
                }
            }
            Entry::Tun { name } => {
                let shown = runner.run(&argv(&["ip", "-j", "link", "show", "dev", name]));
                let ours = shown
                    .ok()
                    .and_then(|out| serde_json::from_str::<Vec<Link>>(&out).ok())
                    .is_some_and(|links| links.iter().any(|l| l.ifalias.as_deref() == Some(LINK_ALIAS)));
                if ours {
                    let cmd = argv(&["ip", "link", "del", "dev", name]);
                    runner.run(&cmd)?;
                    done.push(cmd.join(" "));
                }
            }
        }
        journal.forget(&entry)?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::RecordingRunner;

    const ROUTES_V4: &str = r#"[
        {"dst":"default","gateway":"192.168.10.1","dev":"eth0","flags":[]},
        {"dst":"10.96.0.0/16","dev":"devnet0","protocol":"222","scope":"link","flags":[]},
        {"dst":"172.17.0.0/16","dev":"docker0","protocol":"kernel","scope":"link","prefsrc":"172.17.0.1","flags":[]},
        {"dst":"10.244.0.0/16","dev":"devnet0","protocol":"static","scope":"link","flags":[]}
    ]"#;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().expect("net")).collect()
    }

    fn existing() -> Vec<KernelRoute> {
        serde_json::from_str(ROUTES_V4).expect("json")
    }

    #[test]
    fn adds_only_missing_routes_with_our_protocol() {
        let cmds =
            plan_add(&nets(&["10.96.0.0/16", "10.245.0.0/16", "fd00:96::/112"]), "devnet0", &existing()).expect("plan");
        let cmds: Vec<String> = cmds.iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            cmds,
            ["ip route add 10.245.0.0/16 dev devnet0 proto 222", "ip route add fd00:96::/112 dev devnet0 proto 222",]
        );
    }

    #[test]
    fn a_foreign_route_for_the_same_prefix_is_a_conflict_that_names_it() {
        let err = plan_add(&nets(&["172.17.0.0/16"]), "devnet0", &existing()).expect_err("conflict");
        assert!(err.to_string().contains("172.17.0.0/16 dev docker0 proto kernel"), "{err}");
        // Same device, other protocol: also not ours.
        assert!(plan_add(&nets(&["10.244.0.0/16"]), "devnet0", &existing()).is_err());
    }

    #[test]
    fn adopting_the_device_runs_exactly_these_commands() {
        let runner = RecordingRunner::default();
        adopt_link(&runner, "devnet0", true).expect("adopt");
        assert_eq!(
            runner.take(),
            [
                "ip link set dev devnet0 alias devnet-managed up",
                "sysctl -q -w net.ipv6.conf.devnet0.router_solicitations=0",
                "ip -6 addr replace fd64:de7e:de7e::1/128 dev devnet0 nodad",
            ]
        );
        adopt_link(&runner, "devnet0", false).expect("adopt");
        assert_eq!(runner.take().len(), 2, "no IPv6 address without IPv6 routes");
    }

    #[test]
    fn route_get_reports_device_and_gateway() {
        let runner = RecordingRunner::with_outputs(&[(
            "ip -j route get 10.96.0.10",
            r#"[{"dst":"10.96.0.10","gateway":"192.168.10.1","dev":"eth0","prefsrc":"192.168.10.2","flags":[],"uid":0,"cache":[]}]"#,
        )]);
        let r = route_get(&runner, "10.96.0.10".parse().expect("ip")).expect("ok").expect("route");
        assert_eq!(r.dev, "eth0");
        assert_eq!(r.gateway, Some("192.168.10.1".parse().expect("ip")));
        assert_eq!(runner.take(), ["ip -j route get 10.96.0.10"]);
    }

    #[test]
    fn removes_only_our_routes() {
        let cmds = plan_remove(&nets(&["10.96.0.0/16", "10.244.0.0/16", "10.1.0.0/16"]), "devnet0", &existing());
        assert_eq!(cmds, vec![argv(&["ip", "route", "del", "10.96.0.0/16", "dev", "devnet0", "proto", "222"])]);
    }

    #[test]
    fn undo_removes_owned_state_and_empties_the_journal() {
        let dir = std::env::temp_dir().join(format!("devnet-undo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut journal = Journal::open(&dir).expect("journal");
        journal.record(Entry::Tun { name: "devnet0".into() }).expect("record");
        for dst in ["10.96.0.0/16", "10.244.0.0/16"] {
            journal.record(Entry::Route { dst: dst.parse().expect("net"), dev: "devnet0".into() }).expect("record");
        }
        let runner = RecordingRunner::with_outputs(&[
            ("ip -j -4 route show", ROUTES_V4),
            ("ip -j link show dev devnet0", r#"[{"ifname":"devnet0","ifalias":"devnet-managed"}]"#),
        ]);
        undo(&mut journal, &runner).expect("undo");
        assert_eq!(
            runner.take(),
            [
                "ip -j -4 route show table main",
                "ip -j -6 route show table main",
                // 10.244.0.0/16 is proto static: a look-alike, not ours.
                "ip route del 10.96.0.0/16 dev devnet0 proto 222",
                "ip -j link show dev devnet0",
                "ip link del dev devnet0",
            ]
        );
        assert!(journal.entries().is_empty());

        // A same-named link without our alias is left alone.
        journal.record(Entry::Tun { name: "devnet0".into() }).expect("record");
        let runner = RecordingRunner::with_outputs(&[("ip -j link show dev devnet0", r#"[{"ifname":"devnet0"}]"#)]);
        undo(&mut journal, &runner).expect("undo");
        assert!(!runner.take().iter().any(|c| c.starts_with("ip link del")));
    }
}

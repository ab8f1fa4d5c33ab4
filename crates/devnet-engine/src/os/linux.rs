//! Linux: routes and rules through iproute2.
//!
//! Our routes live in a table of their own ([`ROUTE_TABLE`]), consulted by
//! one rule ([`RULE_PREF`]) for every packet *not* carrying [`BYPASS_MARK`].
//! That way path detection can still ask "how would this go without devnet?"
//! (`ip route get … mark`) and probe over that path (sockets with the mark)
//! while devnet's routes are in place, which is what re-checking after a
//! network change needs. Every route carries protocol [`ROUTE_PROTO`]; only
//! routes with it, in our table, on our device are ever changed or removed.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

use crate::journal::{Entry, Journal};
use crate::runner::{RunError, Runner, argv};

/// The `proto` number on every route we add (unassigned in
/// /etc/iproute2/rt_protos). It is how we recognise our own routes.
pub const ROUTE_PROTO: &str = "222";

/// Our routing table.
pub const ROUTE_TABLE: &str = "3559";

/// Priority of our rule: before `main` (32766), after `local` (0).
pub const RULE_PREF: &str = "5350";

/// Packets with this mark skip our table: probes and route look-ups that ask
/// what the network does without devnet.
pub const BYPASS_MARK: u32 = 0xde7e;

/// The table holding trial routes via the configured forwarding node, and
/// the rule that sends probes with [`GATEWAY_MARK`] to it: how devnet asks
/// "would this CIDR work through the node?" without routing anything else.
pub const GATEWAY_TABLE: &str = "3560";
pub const GATEWAY_RULE_PREF: &str = "5340";
pub const GATEWAY_MARK: u32 = 0xde7f;

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
        self.dst.parse().ok().or_else(|| self.dst.parse::<IpAddr>().ok().map(IpNet::from))
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

pub use super::RouteConflict;

fn family_flag(net: &IpNet) -> &'static str {
    match net {
        IpNet::V4(_) => "-4",
        IpNet::V6(_) => "-6",
    }
}

fn show_routes(runner: &dyn Runner, table: &str) -> Result<Vec<KernelRoute>, RunError> {
    let mut all = Vec::new();
    for family in ["-4", "-6"] {
        let out = match runner.run(&argv(&["ip", "-j", family, "route", "show", "table", table])) {
            Ok(out) => out,
            // A table that never held a route does not exist yet: it is empty.
            Err(e) if e.stderr.contains("table does not exist") => continue,
            Err(e) => return Err(e),
        };
        if !out.trim().is_empty() {
            all.extend(serde_json::from_str::<Vec<KernelRoute>>(&out).map_err(|e| RunError {
                command: format!("ip -j {family} route show table {table}"),
                stderr: format!("unexpected output: {e}"),
            })?);
        }
    }
    Ok(all)
}

/// The main routing table, both families: what the machine routes without us.
pub fn routes(runner: &dyn Runner) -> Result<Vec<KernelRoute>, RunError> {
    show_routes(runner, "main")
}

/// Our table, both families.
pub fn our_routes(runner: &dyn Runner) -> Result<Vec<KernelRoute>, RunError> {
    show_routes(runner, ROUTE_TABLE)
}

/// The routes in `table`, both families.
pub fn table_routes(runner: &dyn Runner, table: &str) -> Result<Vec<KernelRoute>, RunError> {
    show_routes(runner, table)
}

fn via_argv(op: &str, net: &IpNet, via: IpAddr, table: &str) -> Vec<String> {
    argv(&[
        "ip",
        family_flag(net),
        "route",
        op,
        &net.to_string(),
        "via",
        &via.to_string(),
        "table",
        table,
        "proto",
        ROUTE_PROTO,
    ])
}

fn is_ours_via(r: &KernelRoute, net: &IpNet, via: IpAddr) -> bool {
    r.net() == Some(*net)
        && r.protocol.as_deref() == Some(ROUTE_PROTO)
        && r.gateway.as_deref().and_then(|g| g.parse::<IpAddr>().ok()) == Some(via)
}

/// The commands that route each CIDR via its forwarding node in `table`,
/// skipping routes already there.
pub fn plan_via_add(routes: &[(IpNet, IpAddr)], table: &str, existing: &[KernelRoute]) -> Vec<Vec<String>> {
    routes
        .iter()
        .filter(|(net, via)| !existing.iter().any(|r| is_ours_via(r, net, *via)))
        .map(|(net, via)| via_argv("add", net, *via, table))
        .collect()
}

/// The commands that remove our via-routes in `table`, skipping any gone.
pub fn plan_via_remove(routes: &[(IpNet, IpAddr)], table: &str, existing: &[KernelRoute]) -> Vec<Vec<String>> {
    routes
        .iter()
        .filter(|(net, via)| existing.iter().any(|r| is_ours_via(r, net, *via)))
        .map(|(net, via)| via_argv("del", net, *via, table))
        .collect()
}

#[derive(Debug, Deserialize)]
struct RouteGet {
    dev: Option<String>,
    gateway: Option<IpAddr>,
    prefsrc: Option<IpAddr>,
}

/// The route the kernel would use for `target` without devnet (the lookup
/// carries [`BYPASS_MARK`]), or None when there is none.
pub fn route_get(runner: &dyn Runner, target: IpAddr) -> Result<Option<devnet_path::RouteUsed>, RunError> {
    route_get_marked(runner, target, BYPASS_MARK)
}

/// The route the kernel would use for `target` for packets marked `mark`.
pub fn route_get_marked(
    runner: &dyn Runner,
    target: IpAddr,
    mark: u32,
) -> Result<Option<devnet_path::RouteUsed>, RunError> {
    let mark = format!("{mark:#x}");
    let out = match runner.run(&argv(&["ip", "-j", "route", "get", &target.to_string(), "mark", &mark])) {
        Ok(out) => out,
        Err(e) if e.stderr.contains("unreachable") => return Ok(None),
        Err(e) => return Err(e),
    };
    let parsed: Vec<RouteGet> = serde_json::from_str(&out).map_err(|e| RunError {
        command: format!("ip -j route get {target} mark {mark}"),
        stderr: format!("unexpected output: {e}"),
    })?;
    Ok(parsed
        .into_iter()
        .next()
        .and_then(|r| Some(devnet_path::RouteUsed { dev: r.dev?, gateway: r.gateway, src: r.prefsrc })))
}

/// Refuses tunnel CIDRs that overlap a route the machine already has (other
/// than the default route and link-local ranges), naming it.
pub fn check_overlaps(cidrs: &[IpNet], main: &[KernelRoute]) -> Result<(), RouteConflict> {
    super::check_overlaps(cidrs, main.iter().filter_map(|r| Some((r.net()?, r.describe()))))
}

fn dev_argv(op: &str, net: &IpNet, dev: &str) -> Vec<String> {
    argv(&[
        "ip",
        family_flag(net),
        "route",
        op,
        &net.to_string(),
        "dev",
        dev,
        "table",
        ROUTE_TABLE,
        "proto",
        ROUTE_PROTO,
    ])
}

/// The commands that add routes for `cidrs` through `dev` in our table,
/// skipping those already there (applying twice changes nothing).
pub fn plan_add(cidrs: &[IpNet], dev: &str, ours: &[KernelRoute]) -> Vec<Vec<String>> {
    cidrs
        .iter()
        .filter(|net| !ours.iter().any(|r| r.net() == Some(**net) && r.is_ours_on(dev)))
        .map(|net| dev_argv("add", net, dev))
        .collect()
}

/// The commands that remove our routes for `cidrs` on `dev`, skipping any
/// that are gone or not ours.
pub fn plan_remove(cidrs: &[IpNet], dev: &str, ours: &[KernelRoute]) -> Vec<Vec<String>> {
    cidrs
        .iter()
        .filter(|net| ours.iter().any(|r| r.net() == Some(**net) && r.is_ours_on(dev)))
        .map(|net| dev_argv("del", net, dev))
        .collect()
}

/// One of our policy rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyRule {
    pub pref: &'static str,
    /// `fwmark MARK/0xffffffff`: packets with exactly this mark (0: unmarked).
    pub mark: u32,
    /// `not fwmark …`: every packet *without* the mark. `ip rule`'s `not`
    /// inverts the whole selector, so an inverted rule cannot also say `iif`.
    pub inverted: bool,
    /// `iif …`: only packets from this interface (`lo`: this machine's own).
    pub iif: Option<&'static str>,
    pub table: &'static str,
    /// The form an older devnet added: still ours to remove.
    pub legacy: Option<&'static PolicyRule>,
}

/// Unmarked traffic *this machine sends* consults our table first: `fwmark
/// 0` leaves out devnet's own marked probes and dials (and what other
/// software marks for its own routing), and `iif lo` keeps forwarded
/// traffic out of the tunnel, so on a laptop that forwards (libvirt, k3s,
/// LXD, some Docker set-ups) a LAN host or a container cannot reach the
/// cluster with the user's relay credentials.
pub const TUNNEL_RULE: PolicyRule = PolicyRule {
    pref: RULE_PREF,
    mark: 0,
    inverted: false,
    iif: Some("lo"),
    table: ROUTE_TABLE,
    legacy: Some(&LEGACY_TUNNEL_RULE),
};

/// Before `iif lo`: every packet without devnet's bypass mark, forwarded ones too.
const LEGACY_TUNNEL_RULE: PolicyRule =
    PolicyRule { pref: RULE_PREF, mark: BYPASS_MARK, inverted: true, iif: None, table: ROUTE_TABLE, legacy: None };

/// Gateway probes consult the trial table.
pub const GATEWAY_RULE: PolicyRule = PolicyRule {
    pref: GATEWAY_RULE_PREF,
    mark: GATEWAY_MARK,
    inverted: false,
    iif: None,
    table: GATEWAY_TABLE,
    legacy: None,
};

impl PolicyRule {
    fn argv(&self, op: &str, family: &str) -> Vec<String> {
        // The mask always: `fwmark 0` alone would match every packet.
        let mark = format!("{:#x}/0xffffffff", self.mark);
        let mut cmd = argv(&["ip", family, "rule", op, "pref", self.pref]);
        if self.inverted {
            cmd.push("not".into());
        }
        cmd.extend(argv(&["fwmark", &mark]));
        if let Some(iif) = self.iif {
            cmd.extend(argv(&["iif", iif]));
        }
        cmd.extend(argv(&["lookup", self.table]));
        cmd
    }

    /// This rule as `ip -j rule show` lists it (a full mask is not shown).
    fn listed(&self, r: &serde_json::Value) -> bool {
        let mark = if self.mark == 0 { "0".to_owned() } else { format!("{:#x}", self.mark) };
        r["priority"].as_u64().map(|p| p.to_string()).as_deref() == Some(self.pref)
            && r["table"].as_str() == Some(self.table)
            && r["fwmark"].as_str() == Some(mark.as_str())
            // `"not": null` marks an inverted match, so look at keys, not values.
            && r.get("not").is_some() == self.inverted
            && r["iif"].as_str() == self.iif
    }

    fn listed_rules(runner: &dyn Runner, family: &str) -> Result<Vec<serde_json::Value>, RunError> {
        let out = runner.run(&argv(&["ip", "-j", family, "rule", "show"]))?;
        serde_json::from_str(&out).map_err(|e| RunError {
            command: format!("ip -j {family} rule show"),
            stderr: format!("unexpected output: {e}"),
        })
    }

    /// Whether this rule exists for `family` ("-4" or "-6").
    pub fn exists(&self, runner: &dyn Runner, family: &str) -> Result<bool, RunError> {
        Ok(Self::listed_rules(runner, family)?.iter().any(|r| self.listed(r)))
    }

    /// The command that adds this rule for `family`, if it is missing.
    pub fn plan(&self, runner: &dyn Runner, family: &str) -> Result<Option<Vec<String>>, RunError> {
        Ok((!self.exists(runner, family)?).then(|| self.argv("add", family)))
    }

    /// Removes this rule (or the form an older devnet added) for `family`
    /// if it exists; returns the command run.
    fn remove(&self, runner: &dyn Runner, family: &str) -> Result<Option<String>, RunError> {
        let rules = Self::listed_rules(runner, family)?;
        let Some(rule) =
            [Some(self), self.legacy].into_iter().flatten().find(|rule| rules.iter().any(|r| rule.listed(r)))
        else {
            return Ok(None);
        };
        let cmd = rule.argv("del", family);
        runner.run(&cmd)?;
        Ok(Some(cmd.join(" ")))
    }
}

/// An IPv6 source address for the TUN device (a ULA /128), used when IPv6
/// CIDRs are routed: a laptop on an IPv4-only network has no IPv6 address of
/// its own, and without one the kernel cannot open IPv6 connections at all.
pub const TUN_IPV6_SOURCE: &str = "fd64:de7e:de7e::1/128";

/// Marks a TUN device as ours, brings it up with IPv6 router solicitations
/// off (nothing answers them on a tunnel), and gives it an IPv6 source
/// address.
pub fn adopt_link(runner: &dyn Runner, dev: &str, ipv6: bool) -> Result<(), RunError> {
    runner.run(&argv(&["ip", "link", "set", "dev", dev, "alias", LINK_ALIAS, "up"]))?;
    let _ = runner.run(&argv(&["sysctl", "-q", "-w", &format!("net.ipv6.conf.{dev}.router_solicitations=0")]));
    if ipv6 {
        runner.run(&argv(&["ip", "-6", "addr", "replace", TUN_IPV6_SOURCE, "dev", dev, "nodad"]))?;
    }
    Ok(())
}

/// Bytes of the virtio-net header in front of every packet read from or
/// written to our TUN device (it is opened with `IFF_VNET_HDR`).
pub const TUN_HEADER_LEN: usize = 10;

/// The virtio-net header for a packet devnet writes, never segmented:
/// - a TCP segment from smoltcp carries `VIRTIO_NET_HDR_F_NEEDS_CSUM` and
///   where its checksum goes (`partial`): the kernel finishes it only if
///   the packet leaves the machine (a container bridge, a VM), and a local
///   socket takes it unchecked, as from a NIC with checksum offload. This
///   spares the engine a pass over every byte it sends to local clients.
/// - anything else (resets, ICMP errors, datagrams devnet built with full
///   checksums): `VIRTIO_NET_HDR_F_DATA_VALID`, so the receiving kernel
///   need not check again.
///
/// Fields are in host byte order, as the TUN device reads a legacy header
/// unless told otherwise (`TUNSETVNETLE`).
pub fn tun_write_header(partial: Option<devnet_netstack::PartialChecksum>) -> [u8; TUN_HEADER_LEN] {
    const NEEDS_CSUM: u8 = 1;
    const DATA_VALID: u8 = 2;
    let mut header = [0; TUN_HEADER_LEN];
    match partial {
        Some(p) => {
            header[0] = NEEDS_CSUM;
            header[6..8].copy_from_slice(&p.start.to_ne_bytes());
            header[8..10].copy_from_slice(&p.offset.to_ne_bytes());
        }
        None => header[0] = DATA_VALID,
    }
    header
}

/// Lets the kernel hand packets to our TUN device with their TCP and UDP
/// checksums left for the device (`TUN_F_CSUM`), as it does for a NIC: the
/// sending application's kernel then neither checksums nor re-walks what
/// it sends. Nothing else is offloaded, so every packet is still one IP
/// packet of at most the MTU (no TSO or USO aggregates). The stack never
/// verifies checksums of what the TUN device hands it (the local kernel
/// built it; see `devnet_netstack::device`), so partial ones are fine.
/// Replaces the offload set tun-rs enables with `IFF_VNET_HDR`.
pub fn tun_checksum_offload(tun: &impl std::os::fd::AsRawFd) -> std::io::Result<()> {
    /// `_IOW('T', 208, unsigned int)` from `<linux/if_tun.h>`.
    const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
    const TUN_F_CSUM: libc::c_uint = 0x01;
    // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned int of
    // flags), not a pointer; the fd is a TUN device we own and keep open.
    #[allow(unsafe_code, reason = "one ioctl with a plain integer argument")]
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETOFFLOAD, TUN_F_CSUM) };
    if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

/// Puts `address` (a host address: /32 or /128) on our link `dev`, where
/// devnet's DNS stub listens for systemd-resolved. The address goes with
/// the device.
pub fn add_link_address(runner: &dyn Runner, dev: &str, address: IpAddr) -> Result<(), RunError> {
    let (family, prefix) = if address.is_ipv4() { ("-4", 32) } else { ("-6", 128) };
    let mut cmd = argv(&["ip", family, "addr", "replace", &format!("{address}/{prefix}"), "dev", dev]);
    if address.is_ipv6() {
        cmd.push("nodad".into());
    }
    runner.run(&cmd).map(drop)
}

/// The interface index of `dev`.
pub fn link_index(runner: &dyn Runner, dev: &str) -> Result<i32, RunError> {
    let command = format!("ip -j link show dev {dev}");
    let out = runner.run(&argv(&["ip", "-j", "link", "show", "dev", dev]))?;
    serde_json::from_str::<Vec<Link>>(&out)
        .ok()
        .and_then(|links| links.first().and_then(|l| l.ifindex))
        .ok_or(RunError { command, stderr: format!("no interface index in {out:?}") })
}

#[derive(Debug, Deserialize)]
struct Link {
    #[serde(default)]
    ifindex: Option<i32>,
    #[serde(default)]
    ifalias: Option<String>,
}

/// Undoes everything the journal holds that still exists and is ours, then
/// empties the journal. Foreign look-alikes (same prefix in another table or
/// with another protocol or device; a same-named link without our alias; a
/// rule that differs from ours) are left alone.
///
/// Several engines (devnetd's sessions) share our table and its rule: a
/// rule is removed only when no route of another engine (on a device or
/// via a node this journal does not list) still needs it.
pub fn undo(journal: &mut Journal, runner: &dyn Runner) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    let ours = our_routes(runner)?;
    let mine = |r: &KernelRoute| {
        journal.entries().iter().any(|e| match e {
            Entry::Tun { name } | Entry::Route { dev: name, .. } => r.dev.as_deref() == Some(name.as_str()),
            Entry::ViaRoute { dst, via, .. } => r.net() == Some(*dst) && r.gateway == Some(via.to_string()),
            _ => false,
        })
    };
    // Routes of other engines in our tables, per family (v4, v6).
    let in_use = |routes: &[KernelRoute]| {
        let others: Vec<&KernelRoute> =
            routes.iter().filter(|r| r.protocol.as_deref() == Some(ROUTE_PROTO) && !mine(r)).collect();
        [
            others.iter().any(|r| r.net().is_some_and(|n| n.network().is_ipv4())),
            others.iter().any(|r| r.net().is_some_and(|n| n.network().is_ipv6())),
        ]
    };
    let tunnel_in_use = in_use(&ours);
    let gateway_in_use = if journal.entries().iter().any(|e| matches!(e, Entry::GatewayRule { .. })) {
        in_use(&table_routes(runner, GATEWAY_TABLE)?)
    } else {
        [false; 2]
    };
    for entry in journal.entries().to_vec().into_iter().rev() {
        match &entry {
            Entry::Route { dst, dev } => {
                for cmd in plan_remove(&[*dst], dev, &ours) {
                    // A route that vanished with its device meanwhile is fine.
                    if runner.run(&cmd).is_ok() {
                        done.push(cmd.join(" "));
                    }
                }
            }
            Entry::Rule { ipv6 } => {
                if !tunnel_in_use[usize::from(*ipv6)] {
                    done.extend(TUNNEL_RULE.remove(runner, if *ipv6 { "-6" } else { "-4" })?);
                }
            }
            Entry::ViaRoute { dst, via, table } => {
                let existing = table_routes(runner, table)?;
                for cmd in plan_via_remove(&[(*dst, *via)], table, &existing) {
                    if runner.run(&cmd).is_ok() {
                        done.push(cmd.join(" "));
                    }
                }
            }
            Entry::GatewayRule { ipv6 } => {
                if !gateway_in_use[usize::from(*ipv6)] {
                    done.extend(GATEWAY_RULE.remove(runner, if *ipv6 { "-6" } else { "-4" })?);
                }
            }
            Entry::ResolvConf { path, backup, symlink } => {
                if let Some(done_what) = crate::dns::restore_resolv_conf(path, backup, symlink.as_deref())? {
                    done.push(done_what);
                }
            }
            // resolved drops a link's settings when the link goes: the Tun
            // entry (journaled before this one, so undone after it) removes
            // the device if a crash left it, and with it these settings.
            Entry::ResolvedLink { .. } => {}
            Entry::Tun { name } => {
                let shown = runner.run(&argv(&["ip", "-j", "link", "show", "dev", name]));
                let is_ours = shown
                    .ok()
                    .and_then(|out| serde_json::from_str::<Vec<Link>>(&out).ok())
                    .is_some_and(|links| links.iter().any(|l| l.ifalias.as_deref() == Some(LINK_ALIAS)));
                if is_ours {
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

/// Route, address and link changes on this machine, from the kernel
/// (rtnetlink multicast groups), so a new Wi-Fi, a VPN coming up or an
/// unplugged cable starts a re-check at once instead of at the next poll.
/// Each readable burst yields one `()`; the engine debounces.
pub fn network_changes() -> std::io::Result<tokio::sync::mpsc::Receiver<()>> {
    use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
    // RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE
    const GROUPS: u32 = 0x1 | 0x10 | 0x40 | 0x100 | 0x400;
    use std::os::fd::AsFd;
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind(&SocketAddr::new(0, GROUPS))?;
    // tokio has no netlink type, but a netlink socket is a datagram socket:
    // its fd, duplicated into an owned one, reads fine as a UnixDatagram
    // (recv(2) either way), with no unsafe code.
    let fd = socket.as_fd().try_clone_to_owned()?;
    drop(socket);
    let datagram = std::os::unix::net::UnixDatagram::from(fd);
    datagram.set_nonblocking(true)?;
    let datagram = tokio::net::UnixDatagram::from_std(datagram)?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match datagram.recv(&mut buf).await {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {} // overrun: still a change
                Err(_) => return,
            }
            // Drain what is queued: one wake-up per burst.
            while datagram.try_recv(&mut buf).is_ok() {}
            match tx.try_send(()) {
                Ok(()) | Err(tokio::sync::mpsc::error::TrySendError::Full(())) => {}
                Err(tokio::sync::mpsc::error::TrySendError::Closed(())) => return,
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::RecordingRunner;

    const MAIN_V4: &str = r#"[
        {"dst":"default","gateway":"192.168.10.1","dev":"eth0","flags":[]},
        {"dst":"192.168.10.0/24","dev":"eth0","protocol":"kernel","scope":"link","prefsrc":"192.168.10.2","flags":[]},
        {"dst":"172.17.0.0/16","dev":"docker0","protocol":"kernel","scope":"link","prefsrc":"172.17.0.1","flags":[]},
        {"dst":"10.96.5.0/24","gateway":"10.8.0.1","dev":"tun1","flags":[]}
    ]"#;
    const OURS_V4: &str = r#"[
        {"dst":"10.96.0.0/16","dev":"devnet0","protocol":"222","scope":"link","flags":[]},
        {"dst":"10.244.0.0/16","dev":"devnet0","protocol":"static","scope":"link","flags":[]}
    ]"#;
    const RULES_V4: &str = r#"[{"priority":0,"src":"all","table":"local"},
        {"priority":5350,"src":"all","fwmark":"0","iif":"lo","table":"3559"},
        {"priority":32766,"src":"all","table":"main"}]"#;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().expect("net")).collect()
    }

    /// `struct virtio_net_hdr` byte for byte (flags, gso_type, hdr_len,
    /// gso_size, csum_start, csum_offset) on this little-endian machine.
    #[test]
    fn tun_write_headers_say_who_finishes_the_checksum() {
        let partial = devnet_netstack::PartialChecksum { start: 20, offset: 16 };
        assert_eq!(tun_write_header(Some(partial)), [1, 0, 0, 0, 0, 0, 20, 0, 16, 0]);
        let v6 = devnet_netstack::PartialChecksum { start: 40, offset: 16 };
        assert_eq!(tun_write_header(Some(v6)), [1, 0, 0, 0, 0, 0, 40, 0, 16, 0]);
        assert_eq!(tun_write_header(None), [2, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    fn parse(json: &str) -> Vec<KernelRoute> {
        serde_json::from_str(json).expect("json")
    }

    #[test]
    fn adds_only_missing_routes_in_our_table_with_our_protocol() {
        let cmds: Vec<String> =
            plan_add(&nets(&["10.96.0.0/16", "10.245.0.0/16", "fd00:96::/112"]), "devnet0", &parse(OURS_V4))
                .iter()
                .map(|c| c.join(" "))
                .collect();
        assert_eq!(
            cmds,
            [
                "ip -4 route add 10.245.0.0/16 dev devnet0 table 3559 proto 222",
                "ip -6 route add fd00:96::/112 dev devnet0 table 3559 proto 222",
            ]
        );
    }

    #[test]
    fn overlapping_routes_are_conflicts_that_name_the_route() {
        let main = parse(MAIN_V4);
        let err = check_overlaps(&nets(&["10.96.0.0/16"]), &main).expect_err("covers the VPN's /24");
        assert!(err.to_string().contains("10.96.5.0/24 via 10.8.0.1 dev tun1"), "{err}");
        let err = check_overlaps(&nets(&["172.17.3.0/24"]), &main).expect_err("inside the docker bridge");
        assert!(err.to_string().contains("docker0"), "{err}");
        // The default route and unrelated prefixes are fine.
        check_overlaps(&nets(&["10.244.0.0/16", "fd00:96::/112"]), &main).expect("no overlap");
        let v6 = parse(
            r#"[{"dst":"fe80::/64","dev":"eth0","protocol":"kernel"},{"dst":"default","gateway":"fe80::1","dev":"eth0"}]"#,
        );
        check_overlaps(&nets(&["fd00:96::/112"]), &v6).expect("link-local is not an overlap");
    }

    #[test]
    fn via_routes_are_planned_once_and_only_ours_removed() {
        let existing = parse(
            r#"[{"dst":"10.96.0.0/16","gateway":"192.168.10.30","dev":"eth0","protocol":"222","flags":[]},
                {"dst":"10.244.0.0/16","gateway":"192.168.10.30","dev":"eth0","protocol":"static","flags":[]}]"#,
        );
        let gw: IpAddr = "192.168.10.30".parse().expect("ip");
        let want = [("10.96.0.0/16".parse().expect("net"), gw), ("10.244.0.0/16".parse().expect("net"), gw)];
        let add: Vec<String> = plan_via_add(&want, GATEWAY_TABLE, &existing).iter().map(|c| c.join(" ")).collect();
        assert_eq!(add, ["ip -4 route add 10.244.0.0/16 via 192.168.10.30 table 3560 proto 222"]);
        let del: Vec<String> = plan_via_remove(&want, GATEWAY_TABLE, &existing).iter().map(|c| c.join(" ")).collect();
        assert_eq!(del, ["ip -4 route del 10.96.0.0/16 via 192.168.10.30 table 3560 proto 222"]);
        let runner = RecordingRunner::with_outputs(&[("ip -j -4 rule show", "[]")]);
        assert_eq!(
            GATEWAY_RULE.plan(&runner, "-4").expect("ok").map(|c| c.join(" ")).as_deref(),
            Some("ip -4 rule add pref 5340 fwmark 0xde7f/0xffffffff lookup 3560")
        );
    }

    #[test]
    fn removes_only_our_routes() {
        let cmds = plan_remove(&nets(&["10.96.0.0/16", "10.244.0.0/16", "10.1.0.0/16"]), "devnet0", &parse(OURS_V4));
        assert_eq!(
            cmds,
            vec![argv(&[
                "ip",
                "-4",
                "route",
                "del",
                "10.96.0.0/16",
                "dev",
                "devnet0",
                "table",
                "3559",
                "proto",
                "222"
            ])]
        );
    }

    #[test]
    fn route_get_bypasses_our_table() {
        let runner = RecordingRunner::with_outputs(&[(
            "ip -j route get 10.96.0.10",
            r#"[{"dst":"10.96.0.10","gateway":"192.168.10.1","dev":"eth0","prefsrc":"192.168.10.2","flags":[],"uid":0,"cache":[]}]"#,
        )]);
        let r = route_get(&runner, "10.96.0.10".parse().expect("ip")).expect("ok").expect("route");
        assert_eq!(r.dev, "eth0");
        assert_eq!(r.gateway, Some("192.168.10.1".parse().expect("ip")));
        assert_eq!(runner.take(), ["ip -j route get 10.96.0.10 mark 0xde7e"]);
    }

    #[test]
    fn a_table_that_does_not_exist_is_empty() {
        #[derive(Debug)]
        struct NoTable;
        impl Runner for NoTable {
            fn run(&self, argv: &[String]) -> Result<String, RunError> {
                Err(RunError { command: argv.join(" "), stderr: "Error: ipv4: FIB table does not exist.".into() })
            }
        }
        assert_eq!(our_routes(&NoTable).expect("empty"), vec![]);
    }

    #[test]
    fn the_rule_is_added_once() {
        let present = RecordingRunner::with_outputs(&[("ip -j -4 rule show", RULES_V4)]);
        assert_eq!(TUNNEL_RULE.plan(&present, "-4").expect("ok"), None);
        assert!(GATEWAY_RULE.plan(&present, "-4").expect("ok").is_some(), "a different rule");
        let absent = RecordingRunner::with_outputs(&[("ip -j -6 rule show", "[]")]);
        assert_eq!(
            TUNNEL_RULE.plan(&absent, "-6").expect("ok").map(|c| c.join(" ")).as_deref(),
            Some("ip -6 rule add pref 5350 fwmark 0x0/0xffffffff iif lo lookup 3559")
        );
    }

    /// An older devnet's rule (`not fwmark 0xde7e`, forwarded traffic too) is
    /// not the rule (so the right one is added), but still ours to remove.
    #[test]
    fn a_rule_without_iif_lo_is_replaced_and_removed() {
        let legacy = r#"[{"priority":5350,"not":null,"src":"all","fwmark":"0xde7e","table":"3559"}]"#;
        let runner = RecordingRunner::with_outputs(&[("ip -j -4 rule show", legacy)]);
        assert_eq!(
            TUNNEL_RULE.plan(&runner, "-4").expect("ok").map(|c| c.join(" ")).as_deref(),
            Some("ip -4 rule add pref 5350 fwmark 0x0/0xffffffff iif lo lookup 3559")
        );
        runner.take();
        assert_eq!(
            TUNNEL_RULE.remove(&runner, "-4").expect("ok").as_deref(),
            Some("ip -4 rule del pref 5350 not fwmark 0xde7e/0xffffffff lookup 3559")
        );
        let foreign = r#"[{"priority":5350,"src":"all","fwmark":"0xde7e","table":"3559"}]"#;
        let runner = RecordingRunner::with_outputs(&[("ip -j -4 rule show", foreign)]);
        assert_eq!(TUNNEL_RULE.remove(&runner, "-4").expect("ok"), None, "a rule that is not inverted is not ours");
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
    fn undo_removes_owned_state_and_empties_the_journal() {
        let dir = std::env::temp_dir().join(format!("devnet-undo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut journal = Journal::open(&dir).expect("journal");
        journal.record(Entry::Tun { name: "devnet0".into() }).expect("record");
        journal.record(Entry::Rule { ipv6: false }).expect("record");
        for dst in ["10.96.0.0/16", "10.244.0.0/16"] {
            journal.record(Entry::Route { dst: dst.parse().expect("net"), dev: "devnet0".into() }).expect("record");
        }
        let runner = RecordingRunner::with_outputs(&[
            ("ip -j -4 route show table 3559", OURS_V4),
            ("ip -j -4 rule show", RULES_V4),
            ("ip -j link show dev devnet0", r#"[{"ifname":"devnet0","ifalias":"devnet-managed"}]"#),
        ]);
        undo(&mut journal, &runner).expect("undo");
        assert_eq!(
            runner.take(),
            [
                "ip -j -4 route show table 3559",
                "ip -j -6 route show table 3559",
                // 10.244.0.0/16 is proto static: a look-alike, not ours.
                "ip -4 route del 10.96.0.0/16 dev devnet0 table 3559 proto 222",
                "ip -j -4 rule show",
                "ip -4 rule del pref 5350 fwmark 0x0/0xffffffff iif lo lookup 3559",
                "ip -j link show dev devnet0",
                "ip link del dev devnet0",
            ]
        );
        assert!(journal.entries().is_empty());

        // Another engine's route in our table keeps the shared rule.
        journal.record(Entry::Rule { ipv6: false }).expect("record");
        journal
            .record(Entry::Route { dst: "10.96.0.0/16".parse().expect("net"), dev: "devnet0".into() })
            .expect("record");
        let runner = RecordingRunner::with_outputs(&[
            (
                "ip -j -4 route show table 3559",
                r#"[{"dst":"10.96.0.0/16","dev":"devnet0","protocol":"222"},{"dst":"10.50.0.0/16","dev":"devnet1","protocol":"222"}]"#,
            ),
            ("ip -j -4 rule show", RULES_V4),
        ]);
        undo(&mut journal, &runner).expect("undo");
        let cmds = runner.take();
        assert!(cmds.contains(&"ip -4 route del 10.96.0.0/16 dev devnet0 table 3559 proto 222".to_owned()), "{cmds:?}");
        assert!(!cmds.iter().any(|c| c.contains("rule del")), "the rule devnet1 needs stays: {cmds:?}");
        assert!(journal.entries().is_empty());

        // A same-named link without our alias is left alone.
        journal.record(Entry::Tun { name: "devnet0".into() }).expect("record");
        let runner = RecordingRunner::with_outputs(&[("ip -j link show dev devnet0", r#"[{"ifname":"devnet0"}]"#)]);
        undo(&mut journal, &runner).expect("undo");
        assert!(!runner.take().iter().any(|c| c.starts_with("ip link del")));
    }
}

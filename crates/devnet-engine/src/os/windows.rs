//! Windows routes, planned: what `netsh interface ipv4|ipv6 show route`
//! reports in, `netsh … add|delete route` commands out. Every route goes to
//! the active store only (`store=active`): Windows forgets it at reboot, so
//! a crash followed by a power-off leaves nothing behind.
//!
//! Ownership: tunnel routes are on devnet's Wintun adapter (by interface
//! index), so a route on it is ours; a route via a forwarding node is ours
//! only when the journal lists it. Pure and tested on Linux; see the
//! [module docs](super).

use std::net::IpAddr;

use ipnet::IpNet;

use super::RouteConflict;

/// One line of `netsh interface ipv4|ipv6 show route`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowsRoute {
    pub dst: IpNet,
    pub interface: u32,
    /// The next hop, or the interface name for on-link routes.
    pub gateway: String,
    pub kind: String,
}

impl WindowsRoute {
    fn describe(&self) -> String {
        format!("{} via {} (interface {}, {})", self.dst, self.gateway, self.interface, self.kind)
    }
}

fn family(net: &IpNet) -> &'static str {
    if matches!(net, IpNet::V4(_)) { "ipv4" } else { "ipv6" }
}

/// The commands that list the routing tables.
pub fn list_routes() -> [Vec<String>; 2] {
    ["ipv4", "ipv6"].map(|f| ["netsh", "interface", f, "show", "route"].map(str::to_owned).to_vec())
}

/// Parses `netsh interface ipv4|ipv6 show route` (columns Publish, Type,
/// Met, Prefix, Idx, Gateway/Interface Name; the name may hold spaces).
pub fn parse_routes(text: &str) -> Vec<WindowsRoute> {
    text.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let [_publish, kind, _metric, prefix, idx, gateway @ ..] = cols.as_slice() else { return None };
            Some(WindowsRoute {
                dst: prefix.parse().ok()?,
                interface: idx.parse().ok()?,
                gateway: gateway.join(" "),
                kind: (*kind).to_owned(),
            })
        })
        .collect()
}

fn netsh(op: &str, net: &IpNet, interface: u32, extra: &[String]) -> Vec<String> {
    let mut cmd: Vec<String> = ["netsh", "interface", family(net), op, "route"].map(str::to_owned).to_vec();
    cmd.push(format!("prefix={net}"));
    cmd.push(format!("interface={interface}"));
    cmd.extend(extra.iter().cloned());
    cmd.push("store=active".into());
    cmd
}

/// Adds routes for `cidrs` through the Wintun adapter `interface` (metric 0:
/// more specific routes already win; this breaks ties), skipping those
/// already there.
pub fn plan_add(cidrs: &[IpNet], interface: u32, existing: &[WindowsRoute]) -> Vec<Vec<String>> {
    cidrs
        .iter()
        .filter(|net| !existing.iter().any(|r| r.dst == **net && r.interface == interface))
        .map(|net| netsh("add", net, interface, &["metric=0".into()]))
        .collect()
}

/// Removes our routes for `cidrs` on `interface`; one that is gone is skipped.
pub fn plan_remove(cidrs: &[IpNet], interface: u32, existing: &[WindowsRoute]) -> Vec<Vec<String>> {
    cidrs
        .iter()
        .filter(|net| existing.iter().any(|r| r.dst == **net && r.interface == interface))
        .map(|net| netsh("delete", net, interface, &[]))
        .collect()
}

/// Adds routes via a forwarding node reached over `interface` (the LAN
/// adapter), skipping those already there.
pub fn plan_via_add(routes: &[(IpNet, IpAddr)], interface: u32, existing: &[WindowsRoute]) -> Vec<Vec<String>> {
    routes
        .iter()
        .filter(|(net, via)| !existing.iter().any(|r| r.dst == *net && r.gateway == via.to_string()))
        .map(|(net, via)| netsh("add", net, interface, &[format!("nexthop={via}")]))
        .collect()
}

/// Refuses CIDRs that overlap a route Windows already has, other than ours
/// on `interface`, host routes it keeps for its own addresses, and the
/// system's loopback and multicast ranges.
pub fn check_overlaps(cidrs: &[IpNet], existing: &[WindowsRoute], interface: u32) -> Result<(), RouteConflict> {
    let others = existing.iter().filter(|r| {
        let special = match r.dst {
            IpNet::V4(n) => n.network().is_loopback() || n.network().is_multicast() || n.network().is_broadcast(),
            IpNet::V6(n) => n.network().is_loopback() || n.network().is_multicast(),
        };
        r.interface != interface && !special && r.dst.prefix_len() < r.dst.max_prefix_len()
    });
    super::check_overlaps(cidrs, others.map(|r| (r.dst, r.describe())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `netsh interface ipv4 show route` with devnet's adapter (index 23) up.
    const SHOW_V4: &str = "
Publish  Type      Met  Prefix                    Idx  Gateway/Interface Name
-------  --------  ---  ------------------------  ---  ------------------------
No       Manual    0    0.0.0.0/0                  12  192.168.1.1
No       System    256  10.96.0.0/16               23  devnet
No       System    256  127.0.0.0/8                 1  Loopback Pseudo-Interface 1
No       System    256  172.17.0.0/16              31  vEthernet (WSL)
No       System    256  192.168.1.0/24             12  Wi-Fi
No       System    256  192.168.1.42/32            12  Wi-Fi
No       System    256  224.0.0.0/4                 1  Loopback Pseudo-Interface 1
No       System    256  255.255.255.255/32          1  Loopback Pseudo-Interface 1
";

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    #[test]
    fn show_route_is_parsed_with_names_that_hold_spaces() {
        let routes = parse_routes(SHOW_V4);
        assert_eq!(routes.len(), 8, "the header lines are skipped");
        assert_eq!(routes[3].gateway, "vEthernet (WSL)");
        assert_eq!((routes[1].dst, routes[1].interface), (net("10.96.0.0/16"), 23));
    }

    #[test]
    fn golden_netsh_commands_and_idempotence() {
        let existing = parse_routes(SHOW_V4);
        let wanted = [net("10.96.0.0/16"), net("10.244.0.0/16"), net("fd00:96::/112")];
        let add: Vec<String> = plan_add(&wanted, 23, &existing).iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            add,
            [
                "netsh interface ipv4 add route prefix=10.244.0.0/16 interface=23 metric=0 store=active",
                "netsh interface ipv6 add route prefix=fd00:96::/112 interface=23 metric=0 store=active",
            ]
        );
        let remove: Vec<String> = plan_remove(&wanted, 23, &existing).iter().map(|c| c.join(" ")).collect();
        assert_eq!(remove, ["netsh interface ipv4 delete route prefix=10.96.0.0/16 interface=23 store=active"]);
        let via = [(net("10.96.0.0/16"), "192.168.1.30".parse().expect("ip"))];
        assert_eq!(
            plan_via_add(&via, 12, &existing).iter().map(|c| c.join(" ")).collect::<Vec<_>>(),
            ["netsh interface ipv4 add route prefix=10.96.0.0/16 interface=12 nexthop=192.168.1.30 store=active"]
        );
    }

    #[test]
    fn overlaps_with_wsl_or_the_lan_are_refused_but_not_with_our_own() {
        let existing = parse_routes(SHOW_V4);
        let err = check_overlaps(&[net("172.16.0.0/12")], &existing, 23).expect_err("WSL's bridge");
        assert_eq!(err.existing, "172.17.0.0/16 via vEthernet (WSL) (interface 31, System)");
        check_overlaps(&[net("10.96.0.0/16"), net("10.244.0.0/16")], &existing, 23).expect("ours does not count");
    }
}

//! macOS routes, planned: what `netstat -rn` reports in, `route` commands
//! out. Tunnel routes point at devnet's utun interface (`-interface
//! utunN`); routes via a forwarding node name the node. macOS has no policy
//! routing, so probes that must bypass devnet bind to the physical
//! interface instead (IP_BOUND_IF), which is the executor's business.
//!
//! Ownership: the utun device is devnet's, so a route on it is ours; a
//! route via a forwarding node is ours only when the journal lists it.
//! Pure and tested on Linux; see the [module docs](super).

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

use super::RouteConflict;

/// One line of `netstat -rn`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DarwinRoute {
    pub dst: IpNet,
    /// A router's address, `link#N`, or an interface name.
    pub gateway: String,
    pub flags: String,
    pub netif: String,
}

impl DarwinRoute {
    fn describe(&self) -> String {
        format!("{} via {} on {}", self.dst, self.gateway, self.netif)
    }

    /// An ARP/NDP entry or a clone of another route, not a route anyone added.
    fn is_cache(&self) -> bool {
        self.flags.contains('L') || self.flags.contains('W')
    }
}

/// The command that lists the routing table.
pub fn list_routes() -> Vec<String> {
    ["netstat", "-rn"].map(str::to_owned).to_vec()
}

/// Parses `netstat -rn`. macOS abbreviates IPv4 destinations (`10.96/16`,
/// `127`, `192.168.1` for /8, /16, /24 by the octets given) and scopes IPv6
/// ones (`fe80::%lo0/64`); lines that are not routes are skipped.
pub fn parse_routes(text: &str) -> Vec<DarwinRoute> {
    text.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let [dst, gateway, flags, netif, ..] = cols.as_slice() else { return None };
            Some(DarwinRoute {
                dst: parse_destination(dst)?,
                gateway: (*gateway).to_owned(),
                flags: (*flags).to_owned(),
                netif: (*netif).to_owned(),
            })
        })
        .collect()
}

fn parse_destination(text: &str) -> Option<IpNet> {
    if text == "default" {
        return None;
    }
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p.parse::<u8>().ok()?)),
        None => (text, None),
    };
    let addr = addr.split('%').next()?;
    if addr.contains(':') {
        let ip: IpAddr = addr.parse().ok()?;
        return IpNet::new(ip, prefix.unwrap_or(128)).ok();
    }
    let octets: Vec<u8> = addr.split('.').map(str::parse).collect::<Result<_, _>>().ok()?;
    if octets.is_empty() || octets.len() > 4 {
        return None;
    }
    let mut full = [0u8; 4];
    full[..octets.len()].copy_from_slice(&octets);
    let given = u8::try_from(octets.len() * 8).ok()?;
    IpNet::new(IpAddr::V4(Ipv4Addr::from(full)), prefix.unwrap_or(given)).ok()
}

fn family(net: &IpNet) -> &'static str {
    if matches!(net, IpNet::V4(_)) { "-inet" } else { "-inet6" }
}

fn route(op: &str, net: &IpNet, target: &[&str]) -> Vec<String> {
    let mut cmd: Vec<String> = ["route", "-q", "-n", op, family(net)].map(str::to_owned).to_vec();
    cmd.push(net.to_string());
    cmd.extend(target.iter().map(|s| (*s).to_owned()));
    cmd
}

/// Adds routes for `cidrs` through `utun`, skipping those already there.
pub fn plan_add(cidrs: &[IpNet], utun: &str, existing: &[DarwinRoute]) -> Vec<Vec<String>> {
    cidrs
        .iter()
        .filter(|net| !existing.iter().any(|r| r.dst == **net && r.netif == utun))
        .map(|net| route("add", net, &["-interface", utun]))
        .collect()
}

/// Removes our routes for `cidrs` on `utun`; one that is gone is skipped.
pub fn plan_remove(cidrs: &[IpNet], utun: &str, existing: &[DarwinRoute]) -> Vec<Vec<String>> {
    cidrs
        .iter()
        .filter(|net| existing.iter().any(|r| r.dst == **net && r.netif == utun))
        .map(|net| route("delete", net, &["-interface", utun]))
        .collect()
}

/// Adds routes via forwarding nodes, skipping those already there.
pub fn plan_via_add(routes: &[(IpNet, IpAddr)], existing: &[DarwinRoute]) -> Vec<Vec<String>> {
    routes
        .iter()
        .filter(|(net, via)| !existing.iter().any(|r| r.dst == *net && r.gateway == via.to_string()))
        .map(|(net, via)| route("add", net, &[&via.to_string()]))
        .collect()
}

/// Removes journaled routes via forwarding nodes that are still there.
pub fn plan_via_remove(routes: &[(IpNet, IpAddr)], existing: &[DarwinRoute]) -> Vec<Vec<String>> {
    routes
        .iter()
        .filter(|(net, via)| existing.iter().any(|r| r.dst == *net && r.gateway == via.to_string()))
        .map(|(net, via)| route("delete", net, &[&via.to_string()]))
        .collect()
}

/// Refuses CIDRs that overlap a route the Mac already has (a VPN, the home
/// LAN), other than ours on `utun`, caches, loopback and multicast.
pub fn check_overlaps(cidrs: &[IpNet], existing: &[DarwinRoute], utun: &str) -> Result<(), RouteConflict> {
    let others = existing.iter().filter(|r| {
        let special = match r.dst {
            IpNet::V4(n) => n.network().is_loopback() || n.network().is_multicast(),
            IpNet::V6(n) => n.network().is_loopback() || n.network().is_multicast(),
        };
        r.netif != utun && !r.is_cache() && !special
    });
    super::check_overlaps(cidrs, others.map(|r| (r.dst, r.describe())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `netstat -rn` on a Mac at home with devnet up (trimmed).
    const NETSTAT: &str = "\
Routing tables

Internet:
Destination        Gateway            Flags               Netif Expire
default            192.168.1.1        UGScg                 en0
10.96/16           utun7              USc                 utun7
127                127.0.0.1          UCS                   lo0
127.0.0.1          127.0.0.1          UH                    lo0
169.254            link#6             UCS                   en0      !
192.168.1          link#6             UCS                   en0      !
192.168.1.1/32     link#6             UCS                   en0      !
192.168.1.1        a4:2b:b0:aa:bb:cc  UHLWIir               en0   1193
224.0.0/4          link#6             UmCS                  en0      !

Internet6:
Destination                             Gateway                                 Flags               Netif Expire
default                                 fe80::%utun0                            UGcIg               utun0
::1                                     ::1                                     UHL                   lo0
fd00:96::/112                           utun7                                   USc                 utun7
fe80::%lo0/64                           fe80::1%lo0                             UcI                   lo0
";

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    #[test]
    fn netstat_destinations_are_read_as_macos_abbreviates_them() {
        let routes = parse_routes(NETSTAT);
        let dsts: Vec<String> = routes.iter().map(|r| r.dst.to_string()).collect();
        assert_eq!(
            dsts,
            [
                "10.96.0.0/16",
                "127.0.0.0/8",
                "127.0.0.1/32",
                "169.254.0.0/16",
                "192.168.1.0/24",
                "192.168.1.1/32",
                "192.168.1.1/32",
                "224.0.0.0/4",
                "::1/128",
                "fd00:96::/112",
                "fe80::/64",
            ]
        );
        assert_eq!(routes[0].netif, "utun7");
    }

    #[test]
    fn golden_route_commands_and_idempotence() {
        let existing = parse_routes(NETSTAT);
        let wanted = [net("10.96.0.0/16"), net("10.244.0.0/16"), net("fd00:96::/112"), net("fd00:244::/48")];
        let add: Vec<String> = plan_add(&wanted, "utun7", &existing).iter().map(|c| c.join(" ")).collect();
        // The two already on utun7 are left as they are.
        assert_eq!(
            add,
            [
                "route -q -n add -inet 10.244.0.0/16 -interface utun7",
                "route -q -n add -inet6 fd00:244::/48 -interface utun7"
            ]
        );
        let remove: Vec<String> = plan_remove(&wanted, "utun7", &existing).iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            remove,
            [
                "route -q -n delete -inet 10.96.0.0/16 -interface utun7",
                "route -q -n delete -inet6 fd00:96::/112 -interface utun7"
            ]
        );
        // Someone else's utun (another VPN) is not ours to remove.
        assert!(plan_remove(&wanted, "utun3", &existing).is_empty());
        let via = [(net("10.96.0.0/16"), "192.168.1.30".parse().expect("ip"))];
        assert_eq!(
            plan_via_add(&via, &existing).iter().map(|c| c.join(" ")).collect::<Vec<_>>(),
            ["route -q -n add -inet 10.96.0.0/16 192.168.1.30"]
        );
        assert!(plan_via_remove(&via, &existing).is_empty(), "nothing via the node yet");
    }

    #[test]
    fn overlaps_with_the_home_lan_are_refused_but_not_with_caches_or_our_own() {
        let existing = parse_routes(NETSTAT);
        let err = check_overlaps(&[net("192.168.0.0/16")], &existing, "utun7").expect_err("home LAN");
        assert_eq!(err.existing, "192.168.1.0/24 via link#6 on en0");
        check_overlaps(&[net("10.96.0.0/16"), net("10.244.0.0/16"), net("fd00:96::/112")], &existing, "utun7")
            .expect("our own routes, loopback, multicast and link-local do not count");
    }
}

//! End to end: devnet prefers a path the network already has, per CIDR.
//! Scenarios from the seeds, on the lab's office router:
//! - **gateway** (seed 001): static routes for pods and services via a
//!   forwarding node that masquerades: every CIDR direct, no TUN device.
//! - **gateway-pods-only**: the service CIDRs are not routed: pods direct,
//!   services through the tunnel (split mode).
//! - **no-path**: everything through the tunnel.
//! - **bgp** (seeds 000/002): bird2 on the nodes as Calico's BIRD, peering
//!   with bird2 on the office router; pods and services advertised: all direct.
//! - **gateway mode** (seed 001 without router changes): the profile names
//!   the forwarding node on the laptop's LAN; devnet routes through it.
//! - **bgp-pods-only**: `serviceClusterIPs` not set: services tunnelled, and
//!   doctor says so.
//! - **hostile router** (security review finding 1): the office router
//!   answers every connection and DNS query to the cluster CIDRs; an answer
//!   is not proof, so everything stays in the tunnel. Every direct path in
//!   the other trials is proven by a TLS handshake with the relay (its pod
//!   IPs and its Service's ClusterIPs are the profile's relay-endpoints).
//!
//! Needs root; fails loudly without it. Trials run in order on one lab.

use std::time::{Duration, Instant};

use devnet_lab::harness::{self, Lab, Res};

const LAB: &str = "paths";

fn main() {
    harness::run(
        "paths",
        || Lab::up(LAB),
        &[
            ("paths_01_gateway_every_cidr_direct_no_tun", gateway_all_direct),
            ("paths_02_gateway_pods_only_splits", pods_direct_services_tunnel),
            ("paths_03_no_path_everything_tunnelled", no_path_all_tunnel),
            ("paths_04_moves_followed_both_ways_with_dns_throughout", moves),
            ("paths_05_doctor_explains_in_the_seeds_terms", doctor),
            ("paths_06_overlapping_route_refused_and_named", overlap_refused),
            ("paths_07_bgp_pods_and_services_advertised_all_direct", bgp_all_direct),
            ("paths_08_bgp_pods_only_services_tunnelled_doctor_says_why", bgp_pods_only),
            ("paths_09_crash_in_each_mode_restores_exactly_and_spares_look_alikes", crash_in_each_mode),
            ("paths_10_gateway_mode_routes_via_the_forwarding_node", gateway_mode),
            ("paths_11_a_local_route_change_is_rechecked_at_once", local_change),
            ("paths_12_a_symlinked_resolv_conf_comes_back_as_the_same_link", resolv_conf_symlink),
            ("paths_13_doctor_traces_a_route_missing_at_a_later_hop", route_missing_at_a_hop),
            ("paths_14_hostile_router_keeps_every_cidr_in_the_tunnel", hostile_router_keeps_every_cidr_in_the_tunnel),
        ],
        harness::OnFailure::Reset,
    )
}

/// The path status reports for each CIDR.
fn paths(lab: &Lab) -> Res<Vec<(String, String, String)>> {
    let s = lab.status()?;
    let paths = s["paths"].as_array().ok_or_else(|| format!("no paths in status: {s}"))?;
    Ok(paths
        .iter()
        .map(|p| {
            (
                p["cidr"].as_str().unwrap_or_default().to_owned(),
                p["path"].as_str().unwrap_or_default().to_owned(),
                p["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect())
}

/// Every CIDR routed by the network.
const ALL_DIRECT: &[(&str, &str)] = &[
    ("10.244.0.0/16", "direct"),
    ("10.96.0.0/16", "direct"),
    ("fd00:244::/48", "direct"),
    ("fd00:96::/112", "direct"),
];

/// Pod blocks routed, the service CIDR not (BGP without serviceClusterIPs).
const PODS_DIRECT_SERVICES_TUNNEL: &[(&str, &str)] = &[
    ("10.244.0.0/16", "direct"),
    ("fd00:244::/48", "direct"),
    ("10.96.0.0/16", "tunnel"),
    ("fd00:96::/112", "tunnel"),
];

/// Nothing routed: everything through the relay.
const ALL_TUNNEL: &[(&str, &str)] = &[
    ("10.244.0.0/16", "tunnel"),
    ("10.96.0.0/16", "tunnel"),
    ("fd00:244::/48", "tunnel"),
    ("fd00:96::/112", "tunnel"),
];

/// Everything through the forwarding node.
const ALL_VIA_GATEWAY: &[(&str, &str)] = &[
    ("10.244.0.0/16", "gateway"),
    ("10.96.0.0/16", "gateway"),
    ("fd00:244::/48", "gateway"),
    ("fd00:96::/112", "gateway"),
];

fn expect_paths(lab: &Lab, want: &[(&str, &str)]) -> Res {
    let got = paths(lab)?;
    for (cidr, path) in want {
        match got.iter().find(|(c, _, _)| c == cidr) {
            Some((_, p, _)) if p == path => {}
            other => return Err(format!("{cidr}: want {path}, got {other:?}; all: {got:?}")),
        }
    }
    Ok(())
}

fn web_answers(lab: &Lab) -> Res {
    for url in
        ["http://10.244.1.10:8080/", "http://10.96.0.20/", "http://[fd00:244:0:1::10]:8080/", "http://[fd00:96::20]/"]
    {
        let body = lab.curl(url)?;
        if body.trim() != "hello from web" {
            return Err(format!("{url} answered {body:?}"));
        }
    }
    let a = lab.laptop_ok(&["dig", "+short", "+time=2", "@10.96.0.10", "web.demo.svc.cluster.local"])?;
    if a.trim() != "10.96.0.20" {
        return Err(format!("dig answered {a:?}"));
    }
    Ok(())
}

fn gateway_all_direct(lab: &Lab) -> Res {
    lab.sh_ok("office-routes", &["all"])?;
    // The relay proves each direct path with a TLS handshake (no session
    // follows): nothing may be carried through it.
    let carried = |lab: &Lab| -> Res<(u64, u64)> {
        Ok((lab.relay_metric("streams_opened")?, lab.relay_metric("datagrams_relayed")?))
    };
    let carried_before = carried(lab)?;
    lab.connect("direct")?;
    expect_paths(lab, ALL_DIRECT)?;
    let (_, _, reason) = paths(lab)?.into_iter().next().ok_or("no paths")?;
    if !reason.contains("answered") || !reason.contains("dev eth0 via 192.168.10.1") {
        return Err(format!("the evidence should name the probe and the route: {reason}"));
    }
    if !reason.contains("proved it is this cluster") {
        return Err(format!("the evidence should name the relay's proof: {reason}"));
    }
    // Nothing of devnet's is in the data path: no TUN device at all.
    if lab.exec("laptop", &["ip", "link", "show", "devnet0"])?.status.success() {
        return Err("a TUN device exists although every CIDR is direct".into());
    }
    web_answers(lab)?;
    // The system resolver answers cluster names over the direct path too.
    let addrs = lab.getent("web.demo")?;
    if !addrs.iter().any(|a| a == "10.96.0.20" || a == "fd00:96::20") {
        return Err(format!("getent hosts web.demo gave {addrs:?}"));
    }
    if carried(lab)? != carried_before {
        return Err("the relay carried traffic although every CIDR is direct".into());
    }
    lab.disconnect()?;
    lab.laptop_unchanged("after disconnecting from the gateway scenario")
}

fn pods_direct_services_tunnel(lab: &Lab) -> Res {
    lab.sh_ok("office-routes", &["pods"])?;
    lab.connect("connected")?;
    expect_paths(lab, PODS_DIRECT_SERVICES_TUNNEL)?;
    // devnet's routes live in its own table (3559), consulted by one rule.
    let routes = lab.laptop_ok(&["ip", "route", "show", "table", "3559", "dev", "devnet0"])?;
    let routes6 = lab.laptop_ok(&["ip", "-6", "route", "show", "table", "3559", "dev", "devnet0"])?;
    if !routes.contains("10.96.0.0/16")
        || routes.contains("10.244.")
        || !routes6.contains("fd00:96::/112")
        || routes6.contains("fd00:244:")
    {
        return Err(format!("devnet0 should carry only the service CIDRs:\n{routes}{routes6}"));
    }
    // The pod goes direct (the relay opens nothing); the ClusterIP goes through it.
    let opened = lab.relay_metric("streams_opened")?;
    lab.curl("http://10.244.1.10:8080/")?;
    if lab.relay_metric("streams_opened")? != opened {
        return Err("a pod request went through the relay although pods are direct".into());
    }
    lab.curl("http://10.96.0.20/")?;
    if lab.relay_metric("streams_opened")? != opened + 1 {
        return Err("the ClusterIP request did not go through the relay".into());
    }
    web_answers(lab)?;
    lab.disconnect()?;
    lab.laptop_unchanged("after disconnecting from the split scenario")
}

fn no_path_all_tunnel(lab: &Lab) -> Res {
    lab.sh_ok("office-routes", &["none"])?;
    lab.connect("connected")?;
    expect_paths(lab, ALL_TUNNEL)?;
    web_answers(lab)?;
    lab.disconnect()?;
    lab.laptop_unchanged("after disconnecting from the no-path scenario")
}

/// Waits until every CIDR has `path`, resolving a cluster name on every
/// round: lookups must keep working while devnet follows the move.
fn follow(lab: &Lab, path: &str, within: Duration) -> Res<Duration> {
    let start = Instant::now();
    loop {
        let answer =
            lab.laptop_ok(&["dig", "+short", "+time=1", "+tries=10", "@10.96.0.10", "web.demo.svc.cluster.local"])?;
        // dig reports each timed-out try on stdout before the answer.
        if answer.lines().last().map(str::trim) != Some("10.96.0.20") {
            return Err(format!("a lookup failed during the move after {:?}: {answer:?}", start.elapsed()));
        }
        if paths(lab)?.iter().all(|(_, p, _)| p == path) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > within {
            return Err(format!("paths not all {path} after {within:?}: {:?}", paths(lab)?));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn moves(lab: &Lab) -> Res {
    lab.sh_ok("office-routes", &["all"])?;
    lab.connect("direct")?;
    // Leave the office: the routes vanish upstream, where the laptop cannot see it.
    lab.sh_ok("office-routes", &["none"])?;
    let to_tunnel = follow(lab, "tunnel", Duration::from_secs(10))?;
    web_answers(lab)?;
    // Back at the office.
    lab.sh_ok("office-routes", &["all"])?;
    let to_direct = follow(lab, "direct", Duration::from_secs(10))?;
    web_answers(lab)?;
    let routes = lab.laptop_ok(&["ip", "route", "show", "table", "3559"])?;
    if !routes.trim().is_empty() {
        return Err(format!("tunnel routes left while every CIDR is direct: {routes}"));
    }
    // The relay link stays up for the way back, but nothing uses it.
    lab.wait_status("direct", Duration::from_secs(5))?;
    eprintln!("followed the move to the tunnel in {to_tunnel:?} and back in {to_direct:?}");
    lab.disconnect()?;
    lab.laptop_unchanged("after the moves")
}

fn run_doctor(lab: &Lab) -> Res<String> {
    let profile = lab.dir.join("profile.toml").display().to_string();
    lab.laptop_ok(&[&lab.tool("devnet"), "doctor", "--profile", &profile])
}

fn doctor(lab: &Lab) -> Res {
    // Services not advertised: doctor names Calico's serviceClusterIPs.
    lab.sh_ok("office-routes", &["pods"])?;
    let out = run_doctor(lab)?;
    for want in [
        "pod IPs are routed, ClusterIPs are not",
        "serviceClusterIPs",
        "10.96.0.0/16",
        "the office DNS does not forward cluster.local",
        "server=/cluster.local/10.96.0.10",
    ] {
        if !out.contains(want) {
            return Err(format!("doctor (no engine) should say {want:?}:\n{out}"));
        }
    }
    // The seeds' DNS forwarder on the office DNS, with the services routed.
    lab.sh_ok("office-routes", &["all"])?;
    lab.sh_ok("office-dns", &["forward"])?;
    let out = run_doctor(lab);
    lab.sh_ok("office-dns", &["plain"])?;
    lab.sh_ok("office-routes", &["pods"])?;
    let out = out?;
    if !out.contains("the office DNS forwards cluster.local") {
        return Err(format!("doctor should see the office DNS forwarding cluster.local:\n{out}"));
    }
    // The same with an engine connected: doctor uses the engine's evidence.
    lab.connect("connected")?;
    let out = run_doctor(lab)?;
    if !out.contains("serviceClusterIPs") {
        return Err(format!("doctor (engine connected) lost the finding:\n{out}"));
    }
    lab.disconnect()?;
    // No route at all: doctor points at BGP peering or a forwarding node.
    lab.sh_ok("office-routes", &["none"])?;
    let out = run_doctor(lab)?;
    // (The office router's "no route" ICMP errors are rate-limited, so a
    // probe may see silence rather than an error; both findings name the fixes.)
    for want in ["10.244.0.0/16", "BGP", "forwarding node"] {
        if !out.contains(want) {
            return Err(format!("doctor (no path) should say {want:?}:\n{out}"));
        }
    }
    lab.laptop_unchanged("after doctor")
}

fn overlap_refused(lab: &Lab) -> Res {
    lab.sh_ok("office-routes", &["none"])?;
    // A corporate VPN already routes part of the service CIDR.
    lab.laptop_ok(&["ip", "route", "add", "10.96.5.0/24", "via", "192.168.10.1"])?;
    let profile = lab.dir.join("profile.toml").display().to_string();
    lab.ensure_daemon()?;
    let out = lab.exec("laptop", &[&lab.tool("devnet"), "connect", "--profile", &profile])?;
    lab.laptop_ok(&["ip", "route", "del", "10.96.5.0/24", "via", "192.168.10.1"])?;
    let said = devnet_lab::harness::text(&out);
    if out.status.success() || !said.contains("10.96.5.0/24 via 192.168.10.1") || !said.contains("allow-overlap") {
        return Err(format!("connect should refuse the overlap and name the route:\n{said}"));
    }
    lab.laptop_unchanged("after the refused connect")
}

fn bgp_all_direct(lab: &Lab) -> Res {
    lab.sh_ok("office-routes", &["none"])?;
    lab.sh_ok("bgp", &["all"])?;
    lab.connect("direct")?;
    expect_paths(lab, ALL_DIRECT)?;
    if lab.exec("laptop", &["ip", "link", "show", "devnet0"])?.status.success() {
        return Err("a TUN device exists although BGP routes every CIDR".into());
    }
    web_answers(lab)?;
    let addrs = lab.getent("web.demo")?;
    if !addrs.iter().any(|a| a == "10.96.0.20" || a == "fd00:96::20") {
        return Err(format!("getent hosts web.demo gave {addrs:?}"));
    }
    lab.disconnect()?;
    lab.laptop_unchanged("after the bgp scenario")
}

fn bgp_pods_only(lab: &Lab) -> Res {
    lab.sh_ok("bgp", &["pods"])?;
    lab.connect("connected")?;
    expect_paths(lab, PODS_DIRECT_SERVICES_TUNNEL)?;
    web_answers(lab)?;
    let out = run_doctor(lab)?;
    if !out.contains("serviceClusterIPs") {
        return Err(format!("doctor should name serviceClusterIPs:\n{out}"));
    }
    lab.disconnect()?;
    lab.sh_ok("bgp", &["off"])?;
    lab.laptop_unchanged("after the bgp-pods-only scenario")
}

/// Foreign entries that look like devnet's: same table, a neighbouring rule,
/// a similar device name. Cleanup must leave every one of them.
const LOOK_ALIKES: &[&[&str]] = &[
    &["ip", "route", "add", "10.99.0.0/16", "via", "192.168.10.1", "table", "3559", "proto", "static"],
    &["ip", "rule", "add", "pref", "5351", "fwmark", "0x1", "lookup", "3559"],
    &["ip", "link", "add", "devnet1", "type", "veth", "peer", "name", "devnet1p"],
];

fn crash_in_each_mode(lab: &Lab) -> Res {
    for cmd in LOOK_ALIKES {
        lab.laptop_ok(cmd)?;
    }
    let before = lab.laptop_snapshot()?;
    for (mode, state) in [("all", "direct"), ("pods", "connected"), ("none", "connected")] {
        lab.sh_ok("office-routes", &[mode])?;
        lab.connect(state)?;
        web_answers(lab)?;
        lab.kill_engine(); // SIGKILL
        let out = lab.cleanup()?;
        let after = lab.laptop_snapshot()?;
        if after != before {
            return Err(format!(
                "mode {mode}: after SIGKILL and cleanup the laptop differs:\n{out}\nbefore:\n{before}\nafter:\n{after}"
            ));
        }
    }
    lab.laptop_ok(&["ip", "route", "del", "10.99.0.0/16", "table", "3559"])?;
    lab.laptop_ok(&["ip", "rule", "del", "pref", "5351"])?;
    lab.laptop_ok(&["ip", "link", "del", "devnet1"])?;
    lab.laptop_unchanged("after the crash tests")
}

fn gateway_mode(lab: &Lab) -> Res {
    // Seed 001's node-30 sits on the office LAN; the office router routes nothing.
    lab.sh_ok("office-routes", &["none"])?;
    let base = std::fs::read_to_string(lab.dir.join("profile.toml")).map_err(|e| e.to_string())?;
    let profile = lab.dir.join("profile-gateway.toml");
    std::fs::write(&profile, format!("{base}gateways = [\"192.168.10.30\", \"fd00:10::30\"]\n"))
        .map_err(|e| e.to_string())?;
    lab.connect_with(&profile, "direct")?;
    expect_paths(lab, ALL_VIA_GATEWAY)?;
    if lab.exec("laptop", &["ip", "link", "show", "devnet0"])?.status.success() {
        return Err("a TUN device exists although the forwarding node carries every CIDR".into());
    }
    let routes = lab.laptop_ok(&["ip", "route", "show", "table", "3559"])?;
    if !routes.contains("10.96.0.0/16 via 192.168.10.30") {
        return Err(format!("no route via the forwarding node in devnet's table:\n{routes}"));
    }
    web_answers(lab)?;
    let p = profile.display().to_string();
    let doctor = lab.laptop_ok(&[&lab.tool("devnet"), "doctor", "--profile", &p])?;
    if !doctor.contains("forwarding node 192.168.10.30") || !doctor.contains("masquerades") {
        return Err(format!("doctor should explain the SNAT of seed 001:\n{doctor}"));
    }
    // Back to an office that routes everything: the node's routes go.
    lab.sh_ok("office-routes", &["all"])?;
    let start = Instant::now();
    while paths(lab)?.iter().any(|(_, p, _)| p != "direct") {
        if start.elapsed() > Duration::from_secs(10) {
            return Err(format!("did not move to direct: {:?}", paths(lab)?));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let routes = lab.laptop_ok(&["ip", "route", "show", "table", "3559"])?;
    if !routes.trim().is_empty() {
        return Err(format!("routes left in devnet's table: {routes}"));
    }
    lab.disconnect()?;
    lab.sh_ok("office-routes", &["none"])?;
    lab.laptop_unchanged("after gateway mode")?;
    // A crash in gateway mode: the trial table, its rule and the routes via
    // the node are journaled and undone like everything else.
    lab.connect_with(&profile, "direct")?;
    lab.kill_engine();
    lab.cleanup()?;
    lab.laptop_unchanged("after a crash in gateway mode")
}

/// A route appearing on the laptop itself (a VPN, a new network) is seen
/// through rtnetlink and re-checked at once, not at the next poll: the log
/// says the kernel's event started it.
fn local_change(lab: &Lab) -> Res {
    lab.sh_ok("office-routes", &["none"])?;
    lab.connect("connected")?;
    expect_paths(lab, ALL_TUNNEL)?;
    let marker = "network changed on this machine";
    let before = lab.engine_log().matches(marker).count();
    // Seed 001's node-30 forwards to the pods and masquerades: a route to it
    // is a working direct path for the pod CIDR.
    lab.laptop_ok(&["ip", "route", "add", "10.244.0.0/16", "via", "192.168.10.30"])?;
    let result = (|| {
        wait_path(lab, "10.244.0.0/16", "direct", Duration::from_secs(10))?;
        if lab.engine_log().matches(marker).count() <= before {
            return Err(format!("the switch was not started by the route event:\n{}", lab.engine_log()));
        }
        let body = lab.curl("http://10.244.1.10:8080/")?;
        if body.trim() != "hello from web" {
            return Err(format!("the pod answered {body:?} over the local route"));
        }
        Ok(())
    })();
    lab.laptop_ok(&["ip", "route", "del", "10.244.0.0/16", "via", "192.168.10.30"])?;
    result?;
    wait_path(lab, "10.244.0.0/16", "tunnel", Duration::from_secs(10))?;
    web_answers(lab)?;
    lab.disconnect()?;
    lab.laptop_unchanged("after the local route came and went")
}

fn wait_path(lab: &Lab, cidr: &str, want: &str, within: Duration) -> Res {
    let start = Instant::now();
    loop {
        let got = paths(lab)?;
        if got.iter().any(|(c, p, _)| c == cidr && p == want) {
            return Ok(());
        }
        if start.elapsed() > within {
            return Err(format!("{cidr} not {want} within {within:?}: {got:?}\n{}", lab.engine_log()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// systemd-resolved's and NetworkManager's resolv.conf is a symlink: devnet
/// replaces it for the session and puts the same link back on disconnect and
/// after a crash, never writing through it into the other manager's file.
fn resolv_conf_symlink(lab: &Lab) -> Res {
    lab.sh_ok("office-routes", &["none"])?;
    let conf = std::path::PathBuf::from(format!("/etc/netns/{}-laptop/resolv.conf", lab.name));
    let original = std::fs::read_to_string(&conf).map_err(|e| e.to_string())?;
    let target = lab.dir.join("stub-resolv.conf");
    std::fs::write(&target, &original).map_err(|e| e.to_string())?;
    std::fs::remove_file(&conf).map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink(&target, &conf).map_err(|e| e.to_string())?;
    let is_the_link = |when: &str| -> Res {
        match std::fs::read_link(&conf) {
            Ok(t) if t == target => {}
            other => {
                return Err(format!(
                    "{when}: resolv.conf should be the link to {} again, is {other:?}",
                    target.display()
                ));
            }
        }
        if std::fs::read_to_string(&target).map_err(|e| e.to_string())? != original {
            return Err(format!("{when}: the link's target was written through"));
        }
        Ok(())
    };
    let result = (|| {
        lab.connect("connected")?;
        if std::fs::read_link(&conf).is_ok() {
            return Err("while connected resolv.conf should be devnet's file, not the link".into());
        }
        let addrs = lab.getent("web.demo")?;
        if !addrs.iter().any(|a| a == "10.96.0.20" || a == "fd00:96::20") {
            return Err(format!("web.demo resolved to {addrs:?}"));
        }
        lab.disconnect()?;
        is_the_link("after disconnect")?;
        lab.connect("connected")?;
        lab.kill_engine();
        lab.cleanup()?;
        is_the_link("after SIGKILL and cleanup")
    })();
    let _ = std::fs::remove_file(&conf);
    std::fs::write(&conf, &original).map_err(|e| e.to_string())?;
    result?;
    lab.laptop_unchanged("after the symlinked resolv.conf")
}

/// Seed 004: the office router has the pod route, but the hop it sends to
/// (node2) has none for node1's block. The probe only says "no route to
/// host"; doctor traces the way and names the hop that lacks the route.
fn route_missing_at_a_hop(lab: &Lab) -> Res {
    lab.sh_ok("office-routes", &["misrouted"])?;
    let out = run_doctor(lab);
    lab.sh_ok("office-routes", &["none"])?;
    let out = out?;
    for want in [
        "10.244.0.0/16 is routed by the first router but not at every hop: 10.60.20.12 (hop 2) has no route",
        "192.168.10.1 -> 10.60.20.12",
        "add a route for 10.244.0.0/16 on 10.60.20.12",
    ] {
        if !out.contains(want) {
            return Err(format!("doctor should say {want:?}:\n{out}"));
        }
    }
    // The service CIDR is not routed at all: the first router says so.
    if !out.contains("the first router 192.168.10.1 has no route to 10.96.0.0/16") {
        return Err(format!("doctor should name the first router for the services:\n{out}"));
    }
    eprintln!(
        "{}",
        out.lines().filter(|l| l.contains("hop") || l.contains("first router")).collect::<Vec<_>>().join("\n")
    );
    Ok(())
}

/// Security review finding 1: the office router turns hostile (a captive
/// portal, a rogue access point): it takes every IPv4 connection to the
/// cluster CIDRs itself, resets every IPv6 one, and answers every DNS query
/// to them (kube-dns's own name with the address a cluster would give). An
/// answer proves routing, not the cluster: every CIDR stays in the tunnel,
/// status and doctor say why, and traffic reaches the real pods through the
/// relay.
fn hostile_router_keeps_every_cidr_in_the_tunnel(lab: &Lab) -> Res {
    lab.sh_ok("office-routes", &["none"])?;
    lab.sh_ok("hostile", &["on"])?;
    let result = (|| {
        // Without devnet, the stranger answers for the pod and the cluster DNS.
        let body = lab.curl("http://10.244.1.10:8080/")?;
        if body.trim() != "hello from hostile" {
            return Err(format!("the hostile router should answer for the pod, said {body:?}"));
        }
        let a =
            lab.laptop_ok(&["dig", "+short", "+time=2", "@10.96.0.10", "kube-dns.kube-system.svc.cluster.local"])?;
        if a.trim() != "10.96.0.10" {
            return Err(format!("the hostile DNS should give kube-dns the expected address, said {a:?}"));
        }
        lab.connect("connected")?;
        expect_paths(lab, ALL_TUNNEL)?;
        for (cidr, _, reason) in paths(lab)? {
            if !reason.contains("answered") || !reason.contains("but not proven to be this cluster") {
                return Err(format!("{cidr}: the evidence should say it answered but is not proven: {reason}"));
            }
        }
        // The real pods answer, through the relay: the web pod and its
        // ClusterIP say "hello from web", the cluster DNS gives web.demo its
        // own address (the hostile one would say 10.96.0.10), and the echo
        // pod echoes over UDP.
        let opened = lab.relay_metric("streams_opened")?;
        web_answers(lab)?;
        lab.probe(&["udp", "10.244.3.10:7"])?;
        lab.probe(&["many", "10.244.3.10:7", "4"])?;
        if lab.relay_metric("streams_opened")? < opened + 8 {
            return Err("the pods' traffic did not go through the relay".into());
        }
        // doctor says why, with the engine's evidence.
        let out = run_doctor(lab)?;
        for want in [
            "something answers for 10.244.0.0/16 on this network, but it is not proven to be this cluster",
            "something answers for fd00:96::/112 on this network, but it is not proven to be this cluster",
            "captive portal",
        ] {
            if !out.contains(want) {
                return Err(format!("doctor should say {want:?}:\n{out}"));
            }
        }
        if out.contains("ClusterIPs are not") {
            return Err(format!("doctor blames the office's routing for a stranger's answers:\n{out}"));
        }
        lab.disconnect()
    })();
    lab.sh_ok("hostile", &["off"])?;
    result?;
    lab.laptop_unchanged("after the hostile router")
}

//! End to end: the systemd-resolved backend against the real systemd-resolved
//! (Debian's binary, run by `lab.sh resolved` in the laptop's network
//! namespace with a private /run, system bus and /etc/resolv.conf pointing
//! at resolved's stub, as on Ubuntu or Fedora).
//!
//! devnet must notice that programs ask resolved, give it a link of its own
//! with only the cluster's domains (never the default route), keep that
//! working across a resolved restart that forgot it, at home and at the
//! office (where the link carries no traffic at all), and leave resolved as
//! it found it after a disconnect or a crash.
//!
//! Needs root; fails loudly without it. Trials run in order on one lab.

use std::time::{Duration, Instant};

use devnet_lab::harness::{self, Lab, Res};

const LAB: &str = "rsvd";

fn main() {
    harness::run(
        "resolved",
        setup,
        &[
            ("resolved_01_link_of_our_own_with_cluster_domains_only", cluster_domains_only),
            (
                "resolved_01b_a_namespace_named_like_an_office_zone_never_becomes_a_routing_domain",
                office_zone_namespace_left_to_the_office,
            ),
            ("resolved_02_restart_that_forgot_the_link_is_repaired", restart_repaired),
            ("resolved_03_at_the_office_the_link_carries_no_traffic_then_home", office_then_home),
            ("resolved_04_disconnect_and_crash_leave_resolved_as_it_was", disconnect_and_crash),
            ("resolved_04b_the_stub_answers_this_machine_never_a_lan_neighbour", stub_for_this_machine_only),
            ("resolved_05_asking_for_resolved_without_it_is_a_clear_error", forced_without_resolved),
        ],
        harness::OnFailure::Reset,
    )
}

fn setup() -> Res<Lab> {
    let mut lab = Lab::up(LAB)?;
    lab.sh_ok("resolved", &["start"])?;
    // The laptop as devnet will find it: with resolved running.
    lab.laptop_before = lab.laptop_snapshot()?;
    // The lab's profile, with the system's resolv.conf (resolved's stub,
    // inside the laptop's mount namespace) instead of the lab's file.
    let profile = std::fs::read_to_string(lab.dir.join("profile.toml")).map_err(|e| e.to_string())?;
    let profile: String = profile
        .lines()
        .map(|l| if l.starts_with("resolv-conf") { "resolv-conf = \"/etc/resolv.conf\"" } else { l })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(lab.dir.join("resolved-profile.toml"), profile + "\n").map_err(|e| e.to_string())?;
    Ok(lab)
}

fn resolvectl(lab: &Lab, args: &[&str]) -> Res<String> {
    let root =
        std::env::var("DEVNET_RESOLVED_ROOT").unwrap_or_else(|_| "/var/cache/devnet-lab/systemd-resolved".into());
    let bin = format!("{root}/usr/bin/resolvectl");
    let mut cmd = vec![bin.as_str()];
    cmd.extend_from_slice(args);
    lab.laptop_ok(&cmd)
}

/// What resolved holds for every link and globally: servers and domains.
fn resolved_settings(lab: &Lab) -> Res<String> {
    Ok(resolvectl(lab, &["dns"])? + &resolvectl(lab, &["domain"])?)
}

fn connect(lab: &Lab, state: &str) -> Res {
    lab.connect_with(&lab.dir.join("resolved-profile.toml"), state)
}

/// Both cluster name forms resolve through the system resolver.
fn names_resolve(lab: &Lab) -> Res {
    for name in ["web.demo.svc.cluster.local", "web.demo", "web.demo.svc"] {
        let addrs = lab.getent(name)?;
        if !addrs.iter().any(|a| a == "10.96.0.20" || a == "fd00:96::20") {
            return Err(format!("getent hosts {name} gave {addrs:?}"));
        }
    }
    Ok(())
}

fn cluster_domains_only(lab: &Lab) -> Res {
    let stub_file = lab.laptop_ok(&["cat", "/etc/resolv.conf"])?;
    if !stub_file.contains("nameserver 127.0.0.53") {
        return Err(format!("the lab's laptop should ask resolved: {stub_file}"));
    }
    connect(lab, "connected")?;
    let status = lab.status()?;
    let backend = status["dns_backend"].as_str().unwrap_or_default();
    if !backend.starts_with("systemd-resolved: link devnet0") || !backend.contains("127.0.0.53") {
        return Err(format!("status should name the resolved backend and why: {backend:?}"));
    }
    let link = resolvectl(lab, &["status", "devnet0"])?;
    for want in ["DNS Servers: 169.254.53.53", "DNS Domain: ~cluster.local ~demo ~kube-system ~svc", "-DefaultRoute"] {
        if !link.contains(want) {
            return Err(format!("resolved's devnet0 should show {want:?}:\n{link}"));
        }
    }
    // `com` is a namespace too, but a public suffix, and `corp` the office's
    // own names: never routing domains.
    if link.contains("~com") || link.contains("~corp") {
        return Err(format!("a public suffix became a routing domain:\n{link}"));
    }
    names_resolve(lab)?;
    // Everything else goes where it went before: the office DNS.
    let office = lab.getent("www.example.com")?;
    if office != ["192.0.2.80"] {
        return Err(format!("www.example.com should come from the office DNS, got {office:?}"));
    }
    if lab.getent("git.corp")? != ["192.168.10.81"] {
        return Err("git.corp should come from the office DNS, not namespace corp".into());
    }
    for public in ["google.com", "web.com", "example.com", "nosuchservice.other"] {
        let _ = lab.exec("laptop", &["getent", "hosts", public]);
    }
    let log = lab.cluster_dns_queries();
    if !log.contains("web.demo.svc.cluster.local") {
        return Err(format!("the cluster DNS saw no cluster query:\n{log}"));
    }
    for leak in ["google.com", "web.com", "example.com", "other", "git.corp"] {
        if log.lines().any(|l| l.contains("query[") && l.contains(leak)) {
            return Err(format!("{leak} reached the cluster DNS:\n{log}"));
        }
    }
    // The resolv.conf files are resolved's and the lab's, untouched.
    if lab.laptop_ok(&["cat", "/etc/resolv.conf"])? != stub_file {
        return Err("devnet changed resolved's stub resolv.conf".into());
    }
    lab.disconnect()?;
    lab.laptop_unchanged("after disconnect")
}

/// The cluster has a namespace `acme` (so a tenant could have made one),
/// and the office DNS serves its own zone `acme` (security review finding
/// 5: `~acme` would take `git.acme` from the office). Before `acme` becomes
/// a routing domain the engine asks the office DNS, which answers for it:
/// it stays the office's, and status says so.
fn office_zone_namespace_left_to_the_office(lab: &Lab) -> Res {
    let profile = std::fs::read_to_string(lab.dir.join("resolved-profile.toml")).map_err(|e| e.to_string())?;
    if !profile.contains("\"acme\"") {
        return Err(format!("the lab's profile should list namespace acme:\n{profile}"));
    }
    connect(lab, "connected")?;
    let link = resolvectl(lab, &["status", "devnet0"])?;
    if link.contains("~acme") {
        return Err(format!("namespace acme, a zone the office DNS answers, became a routing domain:\n{link}"));
    }
    if !link.contains("~demo") {
        return Err(format!("the other namespaces should stay routing domains:\n{link}"));
    }
    if lab.getent("git.acme")? != ["192.168.10.82"] {
        return Err("git.acme should come from the office DNS, not namespace acme".into());
    }
    let backend = lab.status()?["dns_backend"].as_str().unwrap_or_default().to_owned();
    if !backend.contains("namespaces left to the network's DNS, which answers them: acme") {
        return Err(format!("status should say why acme is not a routing domain: {backend:?}"));
    }
    names_resolve(lab)?;
    let log = lab.cluster_dns_queries();
    if log.lines().any(|l| l.contains("query[") && l.contains("git.acme")) {
        return Err(format!("git.acme reached the cluster DNS:\n{log}"));
    }
    lab.disconnect()?;
    lab.laptop_unchanged("after disconnect")
}

/// Waits until resolved shows our server on devnet0 again.
fn wait_link_dns(lab: &Lab, within: Duration) -> Res<Duration> {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < within {
        last = resolvectl(lab, &["dns", "devnet0"]).unwrap_or_else(|e| e);
        if last.contains("169.254.53.53") {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("devnet0 has no DNS server in resolved after {within:?}: {last}"))
}

fn restart_repaired(lab: &Lab) -> Res {
    connect(lab, "connected")?;
    // A restart whose state in /run went missing: resolved comes back with
    // nothing for devnet0, and only devnet can put it back.
    lab.sh_ok("resolved", &["restart", "forget"])?;
    let took = wait_link_dns(lab, Duration::from_secs(5))?;
    if !lab.engine_log().contains("configuring devnet's link again") {
        return Err(format!("the engine did not notice the restart:\n{}", lab.engine_log()));
    }
    let domains = resolvectl(lab, &["domain", "devnet0"])?;
    if !domains.contains("~cluster.local ~demo ~kube-system ~svc") {
        return Err(format!("routing domains not restored: {domains}"));
    }
    names_resolve(lab)?;
    eprintln!("devnet0 configured again {took:?} after resolved came back");
    lab.disconnect()?;
    lab.laptop_unchanged("after disconnect")
}

/// The TUN's packet counters, both ways.
fn tun_packets(lab: &Lab) -> Res<(u64, u64)> {
    let out = lab.laptop_ok(&["ip", "-j", "-s", "link", "show", "devnet0"])?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    let stats = &v[0]["stats64"];
    Ok((stats["rx"]["packets"].as_u64().unwrap_or(u64::MAX), stats["tx"]["packets"].as_u64().unwrap_or(u64::MAX)))
}

fn office_then_home(lab: &Lab) -> Res {
    lab.sh_ok("office-routes", &["all"])?;
    connect(lab, "direct")?;
    // The link exists for DNS only: lookups reach the stub on the link's
    // own address (local delivery), and traffic takes the office's routes.
    names_resolve(lab)?;
    if lab.curl("http://10.96.0.20/")?.trim() != "hello from web" {
        return Err("the ClusterIP did not answer over the office path".into());
    }
    let packets = tun_packets(lab)?;
    if packets != (0, 0) {
        return Err(format!("devnet0 carried packets while every CIDR is direct: {packets:?}"));
    }
    let routes = lab.laptop_ok(&["ip", "route", "show", "table", "3559"])?;
    if !routes.trim().is_empty() {
        return Err(format!("tunnel routes while every CIDR is direct: {routes}"));
    }
    // Going home: the same link now carries the tunnel, and names keep working.
    lab.sh_ok("office-routes", &["none"])?;
    let start = Instant::now();
    let mut misses = Vec::new();
    loop {
        if let Err(e) = names_resolve(lab) {
            misses.push(e);
        }
        let tunnelled = lab.status()?["routes"].as_array().is_some_and(|r| r.len() == 4);
        if tunnelled && lab.status()?["state"] == "connected" {
            break;
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err(format!("did not move to the tunnel within 10 s: {}", lab.status()?));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if !misses.is_empty() {
        return Err(format!("cluster names failed during the move: {misses:?}"));
    }
    if lab.curl("http://10.96.0.20/")?.trim() != "hello from web" {
        return Err("the ClusterIP did not answer through the tunnel".into());
    }
    names_resolve(lab)?;
    if tun_packets(lab)?.0 == 0 {
        return Err("the tunnel carried nothing after the move".into());
    }
    lab.disconnect()?;
    lab.laptop_unchanged("after disconnect")
}

fn disconnect_and_crash(lab: &Lab) -> Res {
    let before = resolved_settings(lab)?;
    connect(lab, "connected")?;
    if resolved_settings(lab)? == before {
        return Err("connect changed nothing in resolved".into());
    }
    lab.disconnect()?;
    let after = resolved_settings(lab)?;
    if after != before {
        return Err(format!("resolved differs after disconnect:\nbefore:\n{before}\nafter:\n{after}"));
    }
    // A crash: the link goes with the process, and resolved forgets it.
    connect(lab, "connected")?;
    lab.kill_engine();
    let after = resolved_settings(lab)?;
    if after != before {
        return Err(format!("resolved differs after a crash:\nbefore:\n{before}\nafter:\n{after}"));
    }
    lab.cleanup()?;
    lab.laptop_unchanged("after a crash and cleanup")?;
    names_gone(lab)
}

/// Without devnet, cluster names do not resolve (the office DNS does not
/// forward them in this lab).
fn names_gone(lab: &Lab) -> Res {
    let out = lab.exec("laptop", &["getent", "hosts", "web.demo.svc.cluster.local"])?;
    if out.status.success() {
        return Err(format!("cluster names still resolve after devnet left: {}", harness::text(&out)));
    }
    Ok(())
}

fn forced_without_resolved(lab: &Lab) -> Res {
    lab.sh_ok("resolved", &["stop"])?;
    let profile = lab.dir.join("forced-profile.toml");
    let text = std::fs::read_to_string(lab.dir.join("profile.toml")).map_err(|e| e.to_string())?;
    std::fs::write(&profile, text + "dns-backend = \"systemd-resolved\"\n").map_err(|e| e.to_string())?;
    let profile = profile.display().to_string();
    let out = lab.devnet(&["connect", "--profile", &profile], &[])?;
    let said = harness::text(&out);
    if out.status.success()
        || !said.contains("systemd-resolved is not on the system bus")
        || !said.contains("dns-backend = \"resolv-conf\"")
    {
        return Err(format!("connect should fail naming the problem and the fix:\n{said}"));
    }
    lab.laptop_unchanged("after the refused connect")
}

/// The stub listens on an address of devnet's link (169.254.53.53), which a
/// LAN neighbour can route to the laptop (Linux is a weak host): it must get
/// no answer, not an open resolver that tells cluster names, while the
/// laptop itself is answered.
fn stub_for_this_machine_only(lab: &Lab) -> Res {
    connect(lab, "connected")?;
    let backend = lab.status()?["dns_backend"].as_str().unwrap_or_default().to_owned();
    if !backend.contains("server 169.254.53.53") {
        return Err(format!("the stub should be on devnet's link for resolved: {backend:?}"));
    }
    let dig = |host: &str| -> Res<String> {
        let out =
            lab.exec(host, &["dig", "+short", "+time=1", "+tries=2", "@169.254.53.53", "web.demo.svc.cluster.local"])?;
        Ok(harness::text(&out))
    };
    let here =
        lab.laptop_ok(&["dig", "+short", "+time=1", "+tries=2", "@169.254.53.53", "web.demo.svc.cluster.local"])?;
    if here.trim() != "10.96.0.20" {
        return Err(format!("the laptop's own query to the stub gave {here:?}"));
    }
    // The office router is the neighbour: it routes the stub's address to the laptop.
    lab.exec("office", &["ip", "route", "add", "169.254.53.53/32", "via", "192.168.10.2"])?;
    let neighbour = dig("office");
    let _ = lab.exec("office", &["ip", "route", "del", "169.254.53.53/32"]);
    let neighbour = neighbour?;
    if neighbour.contains("10.96.0.20") || !neighbour.contains("timed out") && !neighbour.contains("no servers") {
        return Err(format!("a LAN neighbour got an answer from the stub: {neighbour:?}"));
    }
    lab.disconnect()?;
    lab.laptop_unchanged("after the neighbour's queries")
}

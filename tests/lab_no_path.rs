//! End to end, scenario **no-path**: the laptop reaches only a node address
//! (where the relay's NodePort listens), nothing of the pod or service
//! networks. After `devnet connect` everything goes through the TUN device,
//! smoltcp and the real relay binary, in network namespaces this test builds.
//!
//! Needs root (namespaces, TUN). Without it every test FAILS, loudly; none is
//! skipped. The trials share one lab and run in order, because some of them
//! (relay restart, disconnect, crash) change it for the ones after.

use std::path::Path;
use std::time::{Duration, Instant};

use devnet_lab::harness::{self, Lab, Res, text};

const LAB: &str = "e2e";

fn relay_probe(lab: &Lab, extra: &[&str]) -> Res<serde_json::Value> {
    let ca = lab.dir.join("relay-tls/ca.pem").display().to_string();
    let token = lab.dir.join("token").display().to_string();
    let mut args = vec!["relay", "10.60.20.11:31443", "--ca", &ca, "--token-file", &token];
    args.extend_from_slice(extra);
    let out = lab.probe(&args)?;
    serde_json::from_str(out.trim()).map_err(|e| format!("probe output {out:?}: {e}"))
}

/// The relay gives a connection 10 s from accept to a finished login
/// (TLS, preface, Hello), however often it sends a byte, and holds at most
/// 32 unfinished logins per address (256 in all): a crowd of silent
/// connections from one host, and a slowloris login beside it, leave an
/// honest client's login working.
fn relay_login_limits(lab: &Lab) -> Res {
    let (busy_before, timed_out_before) =
        (lab.relay_metric("logins_refused_busy")?, lab.relay_metric("logins_timed_out")?);
    let labd = lab.tool("devnet-labd");
    // The office router as a noisy neighbour of the relay's node port.
    let crowd = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("{}-office", lab.name),
            &labd,
            "probe",
            "crowd",
            "10.60.20.11:31443",
            "100",
            "12",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_secs(2));
    // An honest login from the laptop still works in the meantime.
    let honest = relay_probe(lab, &[])?;
    let dribble = relay_probe(lab, &["--mode", "dribble"]);
    let crowd = crowd.wait_with_output().map_err(|e| e.to_string())?;
    let crowd: serde_json::Value =
        serde_json::from_slice(&crowd.stdout).map_err(|e| format!("crowd: {e}: {}", text(&crowd)))?;
    if honest["connected"] != true {
        return Err(format!("an honest login failed beside the crowd: {honest}"));
    }
    if crowd["held"] != 32 || crowd["closed_at_once"] != 68 {
        return Err(format!("one address should hold at most 32 unfinished logins: {crowd}"));
    }
    let dribble = dribble?;
    let after = dribble["closed_after_ms"].as_u64().unwrap_or(0);
    if !(9_000..=12_500).contains(&after) {
        return Err(format!("a dribbled login should be cut at 10 s: {dribble}"));
    }
    if lab.relay_metric("logins_refused_busy")? < busy_before + 68
        || lab.relay_metric("logins_timed_out")? < timed_out_before + 1
    {
        return Err("the relay's metrics do not count the refused and timed-out logins".into());
    }
    Ok(())
}

/// While a session runs: the relay token and the relay's TLS key appear
/// in no process's argv or environment on this machine, and in no file
/// the lab's processes wrote (logs, devnetd's and the engine's state and
/// journal), only in the two files they are kept in (security review
/// acceptance: no secrets in argv, env or logs).
fn no_secret_anywhere(lab: &Lab) -> Res {
    let token = std::fs::read_to_string(lab.dir.join("token")).map_err(|e| e.to_string())?.trim().to_owned();
    let key_pem = std::fs::read_to_string(lab.dir.join("relay-tls/key.pem")).map_err(|e| e.to_string())?;
    // The key's longest base64 line: any copy of the key carries it.
    let key_line = key_pem.lines().filter(|l| !l.starts_with("-----")).max_by_key(|l| l.len()).unwrap_or("").to_owned();
    if token.len() < 16 || key_line.len() < 40 {
        return Err(format!(
            "the lab's secrets look wrong: token {} bytes, key line {} bytes",
            token.len(),
            key_line.len()
        ));
    }
    let secrets = [("the relay token", token.as_str()), ("the relay's TLS key", key_line.as_str())];
    let mut hits = Vec::new();
    let mut processes = 0;
    for entry in std::fs::read_dir("/proc").map_err(|e| e.to_string())?.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == std::process::id().to_string() {
            continue;
        }
        processes += 1;
        for what in ["cmdline", "environ"] {
            let Ok(bytes) = std::fs::read(entry.path().join(what)) else { continue };
            let text = String::from_utf8_lossy(&bytes);
            for (name, secret) in secrets {
                if text.contains(secret) {
                    let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                    hits.push(format!("{name} in the {what} of pid {pid} ({})", comm.trim()));
                }
            }
        }
    }
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => walk(&path, out),
                Ok(t) if t.is_file() => out.push(path),
                _ => {}
            }
        }
    }
    let mut files = Vec::new();
    walk(&lab.dir, &mut files);
    let kept = [lab.dir.join("token"), lab.dir.join("relay-tls/key.pem")];
    for file in files.iter().filter(|f| !kept.contains(f)) {
        let Ok(bytes) = std::fs::read(file) else { continue };
        let text = String::from_utf8_lossy(&bytes);
        for (name, secret) in secrets {
            if text.contains(secret) {
                hits.push(format!("{name} in {}", file.display()));
            }
        }
    }
    if processes < 10 || files.len() < 10 {
        return Err(format!("looked at too little to mean anything: {processes} processes, {} files", files.len()));
    }
    if !hits.is_empty() {
        return Err(format!("secrets where they must not be:\n{}", hits.join("\n")));
    }
    println!("no secret in {processes} processes' argv and environment, nor in {} files", files.len());
    Ok(())
}

fn setup() -> Res<Lab> {
    let lab = Lab::up(LAB)?;
    lab.connect("connected")?;
    Ok(lab)
}

fn main() {
    // Keep: the trials build on each other's state (relay restarts, disconnect, crash).
    harness::run(
        "no_path",
        setup,
        &[
            ("no_path_01_http_to_pod_and_clusterip", http_to_pod_and_clusterip),
            ("no_path_02_ipv6_pod_and_clusterip", ipv6_pod_and_clusterip),
            ("no_path_03_dns_over_udp_and_tcp", dns_over_udp_and_tcp),
            ("no_path_04_udp_echo", udp_echo),
            ("no_path_04b_system_resolver_cluster_names_only", system_resolver),
            ("no_path_04bb_a_burst_of_1200_new_lookups_all_answered", lookup_burst),
            ("no_path_04c_forwarded_traffic_never_rides_the_tunnel", forwarded_not_tunnelled),
            ("no_path_04d_udp_answers_come_only_from_the_destination", udp_answers_only_from_destination),
            ("no_path_05_256mib_each_way_intact", bulk_each_way),
            ("no_path_06_1000_concurrent_connections", thousand_connections),
            ("no_path_07_closed_port_refused_at_once", closed_port_refused),
            ("no_path_08_unused_pod_ip_fails_bounded", unused_ip_fails),
            ("no_path_09_relay_refuses_outside_blocked_and_the_nodes", relay_refusals),
            ("no_path_10_bad_clients_get_clear_errors", bad_clients),
            ("no_path_10b_relay_cuts_dribbled_logins_and_crowds_from_one_address", relay_login_limits),
            ("no_path_11_relay_health_and_metrics", relay_health_and_metrics),
            ("no_path_12_relay_graceful_shutdown", relay_graceful_shutdown),
            ("no_path_13_relay_killed_and_restarted", relay_restart),
            ("no_path_14_status_reports_the_link", status_reports),
            ("no_path_14b_no_secret_in_any_argv_environment_log_or_state_file", no_secret_anywhere),
            ("no_path_14c_the_data_path_owns_a_thread_and_an_io_driver", data_path_owns_its_driver),
            ("no_path_15_disconnect_leaves_nothing", disconnect_leaves_nothing),
            ("no_path_16_sigkill_then_restart_leaves_nothing", sigkill_then_restart),
            ("no_path_16b_mtu_1280_on_the_tun_and_the_laptop_link_no_stall", mtu_1280),
            ("no_path_17_bad_profile_leaves_nothing", bad_profile_leaves_nothing),
        ],
        harness::OnFailure::Keep,
    )
}

fn http_to_pod_and_clusterip(lab: &Lab) -> Res {
    for url in ["http://10.244.1.10:8080/", "http://10.96.0.20/"] {
        let body = lab.curl(url)?;
        if body.trim() != "hello from web" {
            return Err(format!("{url} answered {body:?}"));
        }
    }
    Ok(())
}

fn ipv6_pod_and_clusterip(lab: &Lab) -> Res {
    for url in ["http://[fd00:244:0:1::10]:8080/", "http://[fd00:96::20]/"] {
        let body = lab.curl(url)?;
        if body.trim() != "hello from web" {
            return Err(format!("{url} answered {body:?}"));
        }
    }
    Ok(())
}

fn dns_over_udp_and_tcp(lab: &Lab) -> Res {
    for (server, transport, rtype, want) in [
        ("10.96.0.10", "+notcp", "A", "10.96.0.20"),
        ("10.96.0.10", "+tcp", "A", "10.96.0.20"),
        ("10.96.0.10", "+notcp", "AAAA", "fd00:96::20"),
        ("fd00:96::a", "+notcp", "A", "10.96.0.20"),
        ("fd00:96::a", "+tcp", "AAAA", "fd00:96::20"),
    ] {
        let at = format!("@{server}");
        let out = lab.laptop_ok(&[
            "dig",
            "+short",
            "+time=2",
            "+tries=2",
            transport,
            &at,
            "web.demo.svc.cluster.local",
            rtype,
        ])?;
        if out.trim() != want {
            return Err(format!("dig {transport} @{server} {rtype} answered {out:?}, want {want}"));
        }
    }
    Ok(())
}

/// Each lookup the stub forwards comes from a new source port, so it is a UDP
/// association of its own at both ends; 1200 in a second are more than the
/// relay keeps (1024). Every one must be answered: the relay once dropped
/// datagrams for new associations until old ones idled out after 60 s.
fn lookup_burst(lab: &Lab) -> Res {
    let evicted_before = lab.relay_metric("udp_associations_evicted")?;
    let out = lab.probe(&["dns", "127.0.0.153:53", "demo.svc.cluster.local", "1200"])?;
    let result: serde_json::Value = serde_json::from_str(out.trim()).map_err(|e| format!("{out:?}: {e}"))?;
    if result["lost"] != 0 {
        return Err(format!("lookups through the stub went unanswered: {out}"));
    }
    let evicted = lab.relay_metric("udp_associations_evicted")? - evicted_before;
    if evicted == 0 {
        return Err("the burst never filled the relay's association table, so it tested nothing".into());
    }
    Ok(())
}

fn udp_echo(lab: &Lab) -> Res {
    lab.probe(&["udp", "10.96.0.30:7"])?;
    lab.probe(&["udp", "[fd00:244:0:3::10]:7"])?;
    Ok(())
}

/// A laptop that forwards (libvirt, k3s, some Docker set-ups) must not lend
/// the tunnel, and the user's relay credentials, to a LAN host: the office
/// router routes a pod via the laptop, which forwards; only the laptop's own
/// traffic reaches the pod.
fn forwarded_not_tunnelled(lab: &Lab) -> Res {
    lab.exec("laptop", &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    lab.exec("office", &["ip", "route", "add", "10.244.3.10/32", "via", "192.168.10.2"])?;
    let labd = lab.tool("devnet-labd");
    let from_lan = lab.exec("office", &[&labd, "probe", "connect", "10.244.3.10:7", "--timeout-ms", "3000"]);
    let _ = lab.exec("office", &["ip", "route", "del", "10.244.3.10/32"]);
    let _ = lab.exec("laptop", &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
    let from_lan = text(&from_lan?);
    if from_lan.contains("\"connected\"") {
        return Err(format!("a LAN host reached a pod through the laptop's tunnel: {from_lan}"));
    }
    // The laptop's own connection goes through, as before.
    let own = connect_probe(lab, "10.244.3.10:7")?;
    if own["result"] != "connected" {
        return Err(format!("the laptop's own connection failed: {own}"));
    }
    Ok(())
}

/// The relay's UDP socket for an association is connected to its one
/// destination: a datagram from anyone else (here the pod's own port 9,
/// answering what was sent to port 8) is not handed to the laptop as if the
/// destination had said it. On the node, without devnet, it does arrive.
fn udp_answers_only_from_destination(lab: &Lab) -> Res {
    let labd = lab.tool("devnet-labd");
    let on_node = text(&lab.exec("node3", &[&labd, "probe", "udp-any", "10.244.3.10:8"])?);
    if !on_node.contains("\"10.244.3.10:9\"") {
        return Err(format!("the pod's server should answer from port 9: {on_node}"));
    }
    let through_devnet = lab.probe(&["udp-any", "10.244.3.10:8"])?;
    if !through_devnet.contains("\"reply_from\":null") {
        return Err(format!("an answer from another source reached the laptop through the relay: {through_devnet}"));
    }
    // The destination's own answers still come through.
    lab.probe(&["udp", "10.244.3.10:7"])?;
    Ok(())
}

fn bulk_each_way(lab: &Lab) -> Res {
    let bytes = (256u64 << 20).to_string();
    // The probes compare SHA-256 of what was sent with what arrived.
    lab.probe(&["upload", "10.244.3.10:9000", &bytes])?;
    lab.probe(&["download", "10.244.3.10:9001", &bytes])?;
    Ok(())
}

fn thousand_connections(lab: &Lab) -> Res {
    let out = lab.probe(&["many", "10.96.0.30:7", "1000"])?;
    if !out.contains("1000 of 1000") {
        return Err(out);
    }
    Ok(())
}

fn connect_probe(lab: &Lab, to: &str) -> Res<serde_json::Value> {
    let out = lab.probe(&["connect", to, "--timeout-ms", "15000"])?;
    serde_json::from_str(out.trim()).map_err(|e| format!("{out:?}: {e}"))
}

fn closed_port_refused(lab: &Lab) -> Res {
    for to in ["10.244.3.10:81", "10.96.0.20:81", "[fd00:244:0:3::10]:81"] {
        let r = connect_probe(lab, to)?;
        // 10.96.0.20:81 has no DNAT rule: the relay's dial to the ClusterIP
        // itself is what fails, like kube-proxy's REJECT for unknown ports.
        let ok = match to {
            "10.96.0.20:81" => r["result"] == "refused" || r["result"] == "unreachable",
            _ => r["result"] == "refused",
        };
        if !ok || r["ms"].as_u64().unwrap_or(u64::MAX) > 6000 {
            return Err(format!("{to}: {r}"));
        }
        if to != "10.96.0.20:81" && r["ms"].as_u64().unwrap_or(u64::MAX) > 1000 {
            return Err(format!("{to} was not refused at once: {r}"));
        }
    }
    Ok(())
}

fn unused_ip_fails(lab: &Lab) -> Res {
    for to in ["10.244.3.99:80", "[fd00:244:0:3::99]:80"] {
        let r = connect_probe(lab, to)?;
        if r["result"] != "unreachable" || r["ms"].as_u64().unwrap_or(u64::MAX) > 8000 {
            return Err(format!("{to} should fail as unreachable within the relay's 5 s dial timeout: {r}"));
        }
    }
    Ok(())
}

fn relay_refusals(lab: &Lab) -> Res {
    let cases = [
        ("8.8.8.8:53", "outside the cluster CIDRs"),
        ("10.60.20.12:22", "a node's address"),
        ("127.0.0.1:22", "loopback"),
        ("[::1]:22", "loopback"),
        ("[::ffff:127.0.0.1]:22", "loopback"),
        ("169.254.169.254:80", "metadata"),
        ("[::ffff:169.254.169.254]:80", "metadata"),
        ("[64:ff9b::a9fe:a9fe]:80", "metadata"),
        ("[fd00:ec2::254]:80", "metadata"),
        ("100.100.100.200:80", "metadata"),
        ("169.254.1.1:80", "link-local"),
        ("[fe80::1]:80", "link-local"),
        ("10.244.1.5:8443", "relay's own address"),
        ("[::ffff:10.244.1.5]:9090", "relay's own address"),
        // Node2's address inside the allowed pod range (security review R-2).
        ("10.244.2.1:8080", "a node's address"),
        ("[::ffff:10.244.2.1]:7", "a node's address"),
    ];
    // Without the relay's refusal the node would answer: it is reachable
    // from the relay's own namespace, and inside the relay's allowlist.
    let node = lab.exec("relay", &["curl", "-s", "-m", "2", "http://10.244.2.1:8080/"])?;
    if !String::from_utf8_lossy(&node.stdout).contains("hello from node2") {
        return Err(format!("node2 should answer at 10.244.2.1 from the relay's namespace: {node:?}"));
    }
    for (dst, why) in cases {
        let r = relay_probe(lab, &["--dst", dst])?;
        if r["status"] != "Denied" || !r["message"].as_str().unwrap_or("").contains(why) {
            return Err(format!("{dst}: expected Denied ({why}), got {r}"));
        }
    }
    let log = std::fs::read_to_string(lab.dir.join("relay.log")).unwrap_or_default();
    if !log.contains("refused TCP destination") {
        return Err("the relay did not log its refusals".into());
    }
    // And an allowed destination still connects.
    let r = relay_probe(lab, &["--dst", "10.244.3.10:7"])?;
    if r["status"] != "Connected" {
        return Err(format!("allowed destination: {r}"));
    }
    Ok(())
}

fn bad_clients(lab: &Lab) -> Res {
    let r = relay_probe(lab, &["--mode", "wrong-token"])?;
    if !r["error"].as_str().unwrap_or("").contains("wrong or missing token") {
        return Err(format!("wrong token: {r}"));
    }
    let r = relay_probe(lab, &["--mode", "wrong-version"])?;
    if !r["error"].as_str().unwrap_or("").contains("protocol v2 but this relay speaks v1") {
        return Err(format!("wrong version: {r}"));
    }
    let r = relay_probe(lab, &["--mode", "garbage"])?;
    if !r["answer"].as_str().unwrap_or("").contains("not speaking the devnet protocol") {
        return Err(format!("garbage: {r}"));
    }
    // The relay still serves: a good client connects, and the engine's
    // traffic still flows.
    let r = relay_probe(lab, &[])?;
    if r["connected"] != true {
        return Err(format!("good client after bad ones: {r}"));
    }
    http_to_pod_and_clusterip(lab)
}

fn relay_health_and_metrics(lab: &Lab) -> Res {
    let health = lab.curl("http://10.60.20.11:31090/healthz")?;
    let ready = lab.curl("http://10.60.20.11:31090/readyz")?;
    if health.trim() != "ok" || ready.trim() != "ready" {
        return Err(format!("healthz {health:?}, readyz {ready:?}"));
    }
    let metrics = lab.curl("http://10.60.20.11:31090/metrics")?;
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("devnet_relay_{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    if value("sessions_active") < 1 || value("streams_denied") < 14 || value("handshake_failures") < 3 {
        return Err(format!("metrics do not reflect the earlier tests:\n{metrics}"));
    }
    Ok(())
}

fn relay_graceful_shutdown(lab: &Lab) -> Res {
    lab.sh_ok("relay-stop", &["TERM"])?;
    let log = std::fs::read_to_string(lab.dir.join("relay.log")).unwrap_or_default();
    if !log.contains("shutting down gracefully") || !log.contains("relay stopped") {
        return Err(format!("the relay did not shut down gracefully:\n{log}"));
    }
    lab.wait_status("reconnecting", Duration::from_secs(6))?;
    lab.sh_ok("relay-start", &[])?;
    lab.wait_status("connected", Duration::from_secs(10))?;
    http_to_pod_and_clusterip(lab)
}

fn relay_restart(lab: &Lab) -> Res {
    let killed = Instant::now();
    lab.sh_ok("relay-stop", &["KILL"])?;
    lab.wait_status("reconnecting", Duration::from_secs(6))?;
    let noticed = killed.elapsed();
    let s = lab.status()?;
    if s["last_error"].is_null() {
        return Err(format!("status does not say why: {s}"));
    }
    lab.sh_ok("relay-start", &[])?;
    lab.wait_status("connected", Duration::from_secs(10))?;
    http_to_pod_and_clusterip(lab)?;
    eprintln!("relay death noticed after {noticed:?}");
    Ok(())
}

fn status_reports(lab: &Lab) -> Res {
    // The RTT comes from the first heartbeat, a second after (re)connecting.
    let start = Instant::now();
    let mut s = lab.status()?;
    while s["relay_rtt_ms"].is_null() && start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(100));
        s = lab.status()?;
    }
    for key in ["relay_rtt_ms", "relay_name"] {
        if s[key].is_null() {
            return Err(format!("status lacks {key}: {s}"));
        }
    }
    if s["reconnects"].as_u64() < Some(2) || s["routes"].as_array().map(Vec::len) != Some(4) {
        return Err(format!("status: {s}"));
    }
    Ok(())
}

/// Busy polling only pays when the thread that polls is the one whose
/// I/O driver watches the TUN device and the relay link (otherwise each
/// answer wakes another thread first): in devnetd, one thread is the data
/// path's, and one epoll instance watches both of its descriptors and
/// none of the control plane's (the daemon's control socket).
fn data_path_owns_its_driver(lab: &Lab) -> Res {
    use std::os::unix::fs::MetadataExt;
    let pid = lab.daemon_pid().ok_or("devnetd is not running")?;
    let proc = Path::new("/proc").join(pid.to_string());
    let threads: Vec<String> = std::fs::read_dir(proc.join("task"))
        .map_err(|e| format!("threads of devnetd ({pid}): {e}"))?
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|c| c.trim().to_owned())
        .collect();
    if threads.iter().filter(|c| *c == "devnet-datapath").count() != 1 {
        return Err(format!("devnetd's threads are {threads:?}: expected one devnet-datapath"));
    }
    // Each open file as (fd, inode): epoll's fdinfo names what it watches
    // by both, and only the pair is unambiguous (an entry outlives its fd
    // number while a duplicate of the file is open elsewhere).
    let mut tun = Vec::new();
    let mut sockets = std::collections::HashMap::new();
    let mut epolls = Vec::new();
    for entry in std::fs::read_dir(proc.join("fd")).map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        let fd: u32 = entry.file_name().to_string_lossy().parse().map_err(|e| format!("{e}"))?;
        let (Ok(target), Ok(meta)) = (std::fs::read_link(entry.path()), std::fs::metadata(entry.path())) else {
            continue;
        };
        let file = (fd, meta.ino());
        match target.to_string_lossy().as_ref() {
            "/dev/net/tun" => tun.push(file),
            "anon_inode:[eventpoll]" => epolls.push(fd),
            t if t.starts_with("socket:[") => {
                sockets.insert(meta.ino(), fd);
            }
            _ => {}
        }
    }
    // The relay link: devnetd's one established TCP connection (in its own
    // netns's table, which /proc/<pid>/net shows).
    let inodes = |table: &str, keep: &dyn Fn(&[&str]) -> bool, column: usize| -> Res<Vec<(u32, u64)>> {
        let text = std::fs::read_to_string(proc.join("net").join(table)).map_err(|e| e.to_string())?;
        Ok(text
            .lines()
            .skip(1)
            .filter_map(|line| {
                let cols: Vec<&str> = line.split_whitespace().collect();
                if !keep(&cols) {
                    return None;
                }
                let inode: u64 = cols.get(column)?.parse().ok()?;
                Some((*sockets.get(&inode)?, inode))
            })
            .collect())
    };
    let established = |cols: &[&str]| cols.get(3) == Some(&"01");
    let mut relay = inodes("tcp", &established, 9)?;
    relay.extend(inodes("tcp6", &established, 9)?);
    let control = lab.socket();
    let control_socket = inodes("unix", &|cols: &[&str]| cols.last() == Some(&control.as_str()), 6)?;
    let ([tun], [relay], [control_socket, ..]) = (tun.as_slice(), relay.as_slice(), control_socket.as_slice()) else {
        return Err(format!(
            "expected one TUN device, one relay connection and the control socket {control}; found {tun:?}, {relay:?}, {control_socket:?}"
        ));
    };
    let watched = |epoll: u32| -> Vec<(u32, u64)> {
        std::fs::read_to_string(proc.join("fdinfo").join(epoll.to_string()))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let fd = l.strip_prefix("tfd:")?.split_whitespace().next()?.parse().ok()?;
                let ino = u64::from_str_radix(l.split("ino:").nth(1)?.split_whitespace().next()?, 16).ok()?;
                Some((fd, ino))
            })
            .collect()
    };
    // Tokio keeps two descriptors of each runtime's epoll instance (mio's
    // `Poll` and a clone of its registry), which list the same entries:
    // instances are told apart by what they watch.
    let mut data_path: Vec<Vec<(u32, u64)>> = epolls
        .iter()
        .map(|e| {
            let mut files = watched(*e);
            files.sort_unstable();
            files
        })
        .filter(|files| files.contains(tun))
        .collect();
    data_path.sort_unstable();
    data_path.dedup();
    let [files] = data_path.as_slice() else {
        return Err(format!("epoll instances watching the TUN device {tun:?} (fd, inode): {data_path:?}"));
    };
    if !files.contains(relay) || files.contains(control_socket) {
        return Err(format!(
            "the data path's epoll watches {files:?} (fd, inode): expected the relay link {relay:?} and not the control socket {control_socket:?}"
        ));
    }
    Ok(())
}

fn disconnect_leaves_nothing(lab: &Lab) -> Res {
    lab.disconnect()?;
    lab.laptop_unchanged("after disconnect")
}

fn sigkill_then_restart(lab: &Lab) -> Res {
    lab.connect("connected")?;
    lab.curl("http://10.96.0.20/")?;
    // SIGKILL to devnetd, which runs the engine.
    lab.kill_engine();
    // The journal survived the crash and names what was made.
    let journal = std::fs::read_to_string(Path::new(&lab.state_dir()).join("sessions/devnet0/journal.json"))
        .map_err(|e| format!("no journal after the crash: {e}"))?;
    if !journal.contains("devnet0") {
        return Err(format!("journal: {journal}"));
    }
    // `devnet cleanup` while devnetd is down undoes it.
    let out = lab.cleanup()?;
    if !out.contains("held 8 changes") {
        return Err(format!("cleanup did not find the crashed engine's journal: {out}"));
    }
    lab.laptop_unchanged("after the crash and cleanup")?;
    // devnetd starts again; a new session works.
    lab.connect("connected")?;
    lab.curl("http://10.96.0.20/")?;
    lab.disconnect()?;
    lab.laptop_unchanged("after crash and restart")
}

/// IPv6's minimum MTU on devnet's TUN and on the laptop's own link (a
/// tethered phone, a VPN underneath): TCP segments the smoltcp side never
/// saw at 65000, the relay link's own segments at 1280, and no stall.
fn mtu_1280(lab: &Lab) -> Res {
    let profile = lab.dir.join("profile.toml").display().to_string();
    lab.laptop_ok(&["ip", "link", "set", "eth0", "mtu", "1280"])?;
    let outcome = (|| {
        lab.connect_args(&["--profile", &profile, "--mtu", "1280"], &[], "connected", Duration::from_secs(10))?;
        let link = lab.laptop_ok(&["ip", "-j", "link", "show", "devnet0"])?;
        if !link.contains("\"mtu\":1280") {
            return Err(format!("devnet0 is not at MTU 1280: {link}"));
        }
        let bytes = (64u64 << 20).to_string();
        // SHA-256 of what was sent against what arrived, each way, v4 and v6.
        lab.probe(&["upload", "10.244.3.10:9000", &bytes])?;
        lab.probe(&["download", "10.244.3.10:9001", &bytes])?;
        lab.probe(&["download", "[fd00:244:0:3::10]:9001", &bytes])?;
        // EDNS's 1232-byte default fits the MTU; an answer over TCP too.
        dns_over_udp_and_tcp(lab)?;
        lab.curl("http://10.96.0.20/")?;
        lab.disconnect()
    })();
    lab.laptop_ok(&["ip", "link", "set", "eth0", "mtu", "1500"])?;
    outcome?;
    lab.laptop_unchanged("after the MTU 1280 session")
}

fn bad_profile_leaves_nothing(lab: &Lab) -> Res {
    lab.ensure_daemon()?;
    let devnet = lab.tool("devnet");
    let profile = lab.dir.join("profile.toml").display().to_string();
    for (extra, want) in [
        (vec!["--cidr", "0.0.0.0/0"], "too broad"),
        (vec!["--cidr", "10.96.0.0/16,10.96.0.0/12"], "overlap"),
        (vec!["--relay", "relay:443"], "not IP:PORT"),
        (vec!["--cluster-domain", "bad..domain"], "empty label"),
    ] {
        let mut cmd = vec![devnet.as_str(), "connect", "--profile", &profile];
        cmd.extend(extra.iter());
        let out = lab.exec("laptop", &cmd)?;
        if out.status.success() || !text(&out).contains(want) {
            return Err(format!("{extra:?}: expected an error mentioning {want:?}, got: {}", text(&out)));
        }
    }
    // A wrong token is only found out at the relay: connect fails and undoes its changes.
    let bad_token = lab.dir.join("bad-token");
    std::fs::write(&bad_token, "not-the-token").map_err(|e| e.to_string())?;
    let bad = bad_token.display().to_string();
    let out = lab.exec("laptop", &[&devnet, "connect", "--profile", &profile, "--token-file", &bad])?;
    if out.status.success() || !text(&out).contains("token") {
        return Err(format!("wrong token: {}", text(&out)));
    }
    lab.laptop_unchanged("after failed connects")
}

fn system_resolver(lab: &Lab) -> Res {
    for name in ["web.demo.svc.cluster.local", "web.demo", "web.demo.svc"] {
        let addrs = lab.getent(name)?;
        if !addrs.iter().any(|a| a == "10.96.0.20" || a == "fd00:96::20") {
            return Err(format!("getent hosts {name} gave {addrs:?}"));
        }
    }
    // Public-looking names resolve through the office DNS as before, and
    // never reach the cluster DNS, even with a namespace named `com`; nor
    // does the office's own `git.corp`, though a tenant created namespace `corp`.
    let addrs = lab.getent("www.example.com")?;
    if addrs != ["192.0.2.80"] {
        return Err(format!("getent hosts www.example.com gave {addrs:?}"));
    }
    let addrs = lab.getent("git.corp")?;
    if addrs != ["192.168.10.81"] {
        return Err(format!("getent hosts git.corp gave {addrs:?}: namespace corp captured the office's name"));
    }
    let _ = lab.exec("laptop", &["getent", "hosts", "google.com"]);
    let _ = lab.exec("laptop", &["getent", "hosts", "nosuchservice.other"]);
    let log = lab.cluster_dns_queries();
    if !log.contains("web.demo.svc.cluster.local") {
        return Err(format!("the cluster DNS log shows no cluster query:\n{log}"));
    }
    for leak in ["example.com", "google.com", "other", "git.corp"] {
        if log.lines().any(|l| l.contains("query[") && l.contains(leak)) {
            return Err(format!("{leak} reached the cluster DNS:\n{log}"));
        }
    }
    Ok(())
}

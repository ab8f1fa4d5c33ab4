//! End to end with Kubernetes: `devnet connect --context lab` from nothing
//! but a kubeconfig.
//!
//! **The API server here is the stand-in** (`devnet-lab`'s
//! `standin-apiserver`); `lab_realkube` runs the same journey against a real
//! cluster. The stand-in stays for what a real cluster cannot do on demand,
//! and each trial here needs one of these:
//! - port-forwards dropped or black-holed mid-stream (02, 03, 05b);
//! - an image pull that fails (06: this lab has no registry to fail);
//! - an API server that is down, an expired static token (04);
//! - credential commands that record who ran them, on every request (05);
//! - the lab's pods as plain namespaces on Calico-style routes, which BGP and
//!   the forwarding node route (07, 08), and whose relay process the lab
//!   can inspect (01, 09).
//!
//! It speaks the real REST, dry-run, RBAC-error and `pods/portforward`
//! (WebSocket) protocols over TLS, and its kubelet runs the real
//! `devnet-relay` binary as the relay pod, with Secret volumes written as a
//! real kubelet writes them. Everything else is real: namespaces, routes,
//! TUN, DNS servers, the kernel keyring, devnetd.
//!
//! The office firewall lets the laptop reach only the API server
//! (`lab.sh firewall api-only`), so the relay is reached through the
//! port-forward; with the firewall open, directly through its node port.
//!
//! Needs root; fails loudly without it. Trials run in order on one lab.

use std::time::{Duration, Instant};

use devnet_lab::harness::{self, Lab, Res, text};

const LAB: &str = "kube";

fn main() {
    harness::run(
        "kube",
        setup,
        &[
            ("kube_01_connect_discovers_installs_and_tunnels_through_the_api_server", through_portforward),
            ("kube_02_direct_transport_when_reachable_portforward_when_cut", direct_then_cut),
            ("kube_03_portforward_dropped_or_blackholed_reconnects", portforward_drops),
            ("kube_04_bad_inputs_fail_in_one_line_and_leave_nothing", bad_inputs),
            ("kube_05_exec_plugin_and_auth_provider_run_as_the_user", credential_commands_run_as_the_user),
            ("kube_05b_bridge_survives_token_refresh_and_drops", bridge_survives_refresh),
            ("kube_05c_under_sudo_root_opens_no_path_the_invoker_named", sudo_foreground_paths),
            ("kube_06_relay_pod_that_cannot_start_is_reported_in_its_own_words", image_pull_failure),
            ("kube_07_office_with_bgp_every_discovered_cidr_proven_direct", office_bgp_direct),
            ("kube_08_doctor_names_snat_by_the_forwarding_node", forwarding_node_snat),
            ("kube_08b_a_stray_pod_labelled_as_the_relay_is_never_dialled", stray_relay_pod),
            ("kube_08c_a_revoked_user_is_cut_off_and_told_whom_to_ask_another_connects", revoked_user),
            ("kube_08d_a_session_outlives_its_certificate_and_a_relay_restart", outlives_relay_restart),
            ("kube_08e_a_certificate_is_renewed_before_it_expires_and_presented_after", renewed_before_expiry),
            ("kube_09_relay_uninstall_removes_it_forgets_the_credentials_spares_foreign", uninstall),
        ],
        harness::OnFailure::Reset,
    )
}

fn setup() -> Res<Lab> {
    let lab = Lab::up(LAB)?;
    lab.sh_ok("api", &[])?;
    Ok(lab)
}

fn kubeconfig(lab: &Lab) -> String {
    lab.dir.join("kubeconfig").display().to_string()
}

fn profile(lab: &Lab) -> String {
    lab.dir.join("kube-profile.toml").display().to_string()
}

/// `devnet connect --context <ctx>` and wait for Connected.
fn connect(lab: &Lab, context: &str, env: &[(&str, &str)]) -> Res {
    let (kc, p) = (kubeconfig(lab), profile(lab));
    lab.connect_args(
        &["--context", context, "--kubeconfig", &kc, "--profile", &p],
        env,
        "connected",
        Duration::from_secs(30),
    )
}

fn transport(lab: &Lab) -> Res<String> {
    Ok(lab.status()?["transport"].as_str().unwrap_or_default().to_owned())
}

fn wait_transport(lab: &Lab, prefix: &str, within: Duration) -> Res {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < within {
        if let Ok(s) = lab.status() {
            last = s.to_string();
            if s["state"] == "connected" && s["transport"].as_str().is_some_and(|t| t.starts_with(prefix)) {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("transport never became {prefix} within {within:?}; last status {last}\n{}", lab.engine_log()))
}

/// The cluster's web Service by ClusterIP, and its short DNS name through
/// the laptop's own resolver.
fn reach_cluster(lab: &Lab) -> Res {
    let body = lab.curl("http://10.96.0.20/")?;
    if !body.contains("hello from web") {
        return Err(format!("unexpected answer from the web ClusterIP: {body}"));
    }
    let addrs = lab.getent("web.demo")?;
    if !addrs.iter().any(|a| a == "10.96.0.20" || a == "fd00:96::20") {
        return Err(format!("web.demo resolved to {addrs:?}"));
    }
    Ok(())
}

/// Asks the stand-in API server (from its own namespace) for a lab control.
fn standin(lab: &Lab, action: &str) -> Res<String> {
    let url = format!("https://10.60.20.10:6443/standin/{action}");
    let out = lab.exec("api", &["curl", "-sk", "-m", "3", &url])?;
    if !out.status.success() {
        return Err(format!("stand-in control {action} failed: {}", text(&out)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn api_get(lab: &Lab, path: &str) -> Res<serde_json::Value> {
    let url = format!("https://10.60.20.10:6443{path}");
    let out = lab.exec("api", &["curl", "-sk", "-m", "3", "-H", "Authorization: Bearer dev-token", &url])?;
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{path}: {e}: {}", text(&out)))
}

fn through_portforward(lab: &Lab) -> Res {
    lab.sh_ok("firewall", &["api-only"])?;
    connect(lab, "lab", &[])?;
    let s = lab.status()?;
    let t = transport(lab)?;
    if !t.starts_with("port-forward devnet/devnet-relay-") {
        return Err(format!("expected the port-forward transport with only the API server reachable, got {t:?}"));
    }
    // What discovery found, and from where, is in status.
    let found: Vec<String> = s["discovered"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            format!(
                "{} {} <- {}",
                d["what"].as_str().unwrap_or(""),
                d["value"].as_str().unwrap_or(""),
                d["source"].as_str().unwrap_or("")
            )
        })
        .collect();
    for want in [
        "pod CIDR 10.244.1.0/24 <- Node.spec.podCIDRs",
        "service CIDR 10.96.0.0/16 <- the API server's answer to a dry-run ClusterIP",
        "service CIDR fd00:96::/112 <- the API server's answer to a dry-run ClusterIP",
        "cluster DNS 10.96.0.10 <- kube-system/kube-dns Service",
        "domain cluster.local <- kube-system/kubeadm-config",
    ] {
        if !found.iter().any(|f| f == want) {
            return Err(format!("status lacks {want:?}; it has {found:#?}"));
        }
    }
    reach_cluster(lab)?;
    // Doctor shows the same discovery, and why pods are not routable.
    let (kc, p) = (kubeconfig(lab), profile(lab));
    let out = lab.devnet(&["doctor", "--json", "--context", "lab", "--kubeconfig", &kc, "--profile", &p], &[])?;
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("doctor: {e}: {}", text(&out)))?;
    let sources: Vec<&str> =
        doc["discovered"].as_array().into_iter().flatten().filter_map(|d| d["source"].as_str()).collect();
    if !sources.contains(&"Node.spec.podCIDRs") || !sources.contains(&"kube-system/kubeadm-config") {
        return Err(format!("doctor --context does not show where discovery looked: {doc}"));
    }
    if doc["paths"].as_array().is_none_or(Vec::is_empty) {
        return Err(format!("doctor --context shows no paths: {doc}"));
    }
    // The relay was installed as the manifests say, and it runs non-root.
    let deploy = api_get(lab, "/apis/apps/v1/namespaces/devnet/deployments/devnet-relay")?;
    if deploy["status"]["readyReplicas"] != 1 {
        return Err(format!("relay Deployment not ready: {deploy}"));
    }
    let np = api_get(lab, "/apis/networking.k8s.io/v1/namespaces/devnet/networkpolicies/devnet-relay")?;
    if np["spec"]["ingress"][0]["ports"][0]["port"] != 8443 {
        return Err(format!("NetworkPolicy does not restrict ingress to the tunnel port: {np}"));
    }
    // Every process in the relay pod's namespace (ps alone would also see
    // other labs' relays) runs as the Deployment's runAsUser.
    let pids = std::process::Command::new("ip").args(["netns", "pids", &format!("{LAB}-relay")]).output();
    let pids =
        pids.map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().map(str::to_owned).collect::<Vec<_>>());
    let pids = pids.map_err(|e| e.to_string())?;
    if pids.is_empty() {
        return Err("no process runs in the relay pod's namespace".into());
    }
    for pid in &pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or_default();
        if uid.split_whitespace().nth(1) != Some("65532") {
            return Err(format!("process {pid} in the relay pod runs as {uid}, not uid 65532"));
        }
    }
    // The user's own identity is in the kernel keyring, where another
    // process finds it: a client certificate naming them, its private key
    // (made on the laptop, never on its disk) and the relay CA. No Secret
    // was read: there is no client Secret any more.
    let account = "https://10.60.20.10:6443#devnet";
    let stored = lab.devnet(&["credential", "load", "--account", account], &[])?;
    let id: serde_json::Value =
        serde_json::from_slice(&stored.stdout).map_err(|e| format!("keyring: {e}: {}", text(&stored)))?;
    let key = id["key_pem"].as_str().unwrap_or_default();
    if id["user"] != "dev"
        || !id["cert_pem"].as_str().unwrap_or_default().contains("BEGIN CERTIFICATE")
        || key.is_empty()
    {
        return Err(format!("the keyring must hold dev's client certificate and key: {}", id["user"]));
    }
    let key_line = key.lines().nth(1).unwrap_or("no key");
    let grep = std::process::Command::new("grep").args(["-rlF", key_line]).arg(lab.dir.join("laptop-state")).output();
    if grep.is_ok_and(|o| !o.stdout.is_empty()) {
        return Err("the client's private key was written to the laptop's state directory".into());
    }
    if api_get(lab, "/api/v1/namespaces/devnet/secrets/devnet-relay-client")?["code"] != 404 {
        return Err("an install still makes the shared client Secret".into());
    }
    // The relay logged who connected, and with which certificate.
    let serial = id["serial"].as_str().unwrap_or("no serial");
    let logs = relay_logs(lab);
    if !logs.lines().any(|l| l.contains("client authenticated") && l.contains("user=dev") && l.contains(serial)) {
        return Err(format!("the relay did not log dev's session with serial {serial}:\n{logs}"));
    }
    lab.disconnect()?;
    lab.laptop_unchanged("after disconnect")
}

/// Text without terminal colour sequences (the relay's log colours its fields).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for end in chars.by_ref() {
                if end.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn direct_then_cut(lab: &Lab) -> Res {
    lab.sh_ok("firewall", &["open"])?;
    connect(lab, "lab", &[])?;
    if lab.engine_log().contains("enrolling as") {
        return Err(format!(
            "the second connect should take the client certificate from the keyring:\n{}",
            lab.engine_log()
        ));
    }
    wait_transport(lab, "direct ", Duration::from_secs(5))?;
    reach_cluster(lab)?;
    // The office firewall closes: the established link black-holes, the
    // keepalive notices, and the reconnect falls through to the API server.
    lab.sh_ok("firewall", &["api-only"])?;
    wait_transport(lab, "port-forward ", Duration::from_secs(20))?;
    reach_cluster(lab)?;
    lab.disconnect()?;
    lab.laptop_unchanged("after disconnect")
}

fn portforward_drops(lab: &Lab) -> Res {
    lab.sh_ok("firewall", &["api-only"])?;
    connect(lab, "lab", &[])?;
    let before = lab.status()?["reconnects"].as_u64().unwrap_or(0);
    standin(lab, "drop-portforwards")?;
    wait_reconnected(lab, before + 1)?;
    reach_cluster(lab)?;
    // Black-holed: bytes stop, nothing closes. Only the keepalive can tell.
    let before = lab.status()?["reconnects"].as_u64().unwrap_or(0);
    standin(lab, "blackhole-portforwards")?;
    let start = Instant::now();
    while lab.status()?["state"] == "connected" {
        if start.elapsed() > Duration::from_secs(10) {
            standin(lab, "heal-portforwards")?;
            return Err("a black-holed port-forward was not noticed within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    standin(lab, "heal-portforwards")?;
    wait_reconnected(lab, before + 1)?;
    reach_cluster(lab)?;
    lab.disconnect()?;
    lab.laptop_unchanged("after disconnect")
}

fn wait_reconnected(lab: &Lab, at_least: u64) -> Res {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(15) {
        let s = lab.status()?;
        if s["state"] == "connected" && s["reconnects"].as_u64().unwrap_or(0) >= at_least {
            return Ok(());
        }
        last = s.to_string();
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("no reconnect after the port-forward broke; last status {last}\n{}", lab.engine_log()))
}

fn bad_inputs(lab: &Lab) -> Res {
    lab.sh_ok("firewall", &["api-only"])?;
    let broken = lab.dir.join("broken-kubeconfig");
    std::fs::write(&broken, "apiVersion: v1\nclusters: [this is: not, valid").map_err(|e| e.to_string())?;
    let (kc, p) = (kubeconfig(lab), profile(lab));
    let missing = lab.dir.join("no-such-kubeconfig").display().to_string();
    let broken = broken.display().to_string();
    let cases: &[(&str, &str, &[&str])] = &[
        ("missing kubeconfig", &missing, &["lab", "no kubeconfig at", "KUBECONFIG"]),
        ("broken kubeconfig", &broken, &["lab", "is not valid", "kubectl config view"]),
        ("unknown context", &kc, &["nope", "context \"nope\" is not in the kubeconfig", "--context"]),
        ("expired token", &kc, &["lab-expired", "401 Unauthorized", "log in again"]),
        ("no pods/portforward", &kc, &["lab-reader", "pods/portforward", "ask a cluster admin"]),
        ("API server down", &kc, &["lab-down", "cannot reach the API server", "VPN"]),
    ];
    for (what, config, spec) in cases {
        let (context, wants) = (spec[0], &spec[1..]);
        let out = lab.devnet(&["connect", "--context", context, "--kubeconfig", config, "--profile", &p], &[])?;
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        let last = err.lines().rev().find(|l| l.starts_with("error:")).unwrap_or_default();
        if out.status.success() || wants.iter().any(|w| !last.contains(w)) {
            return Err(format!(
                "{what}: expected one error line with {wants:?}, got (exit {:?}):\n{err}",
                out.status.code()
            ));
        }
        lab.laptop_unchanged(&format!("after the {what} error"))?;
    }
    Ok(())
}

/// A desktop user in group devnet (a bare uid, as in lab_daemon).
const ALICE: u32 = 2101;

/// Alice's home directory, hers.
fn alice_home(lab: &Lab) -> Res<String> {
    let home = lab.dir.join("home-alice");
    std::fs::create_dir_all(&home).map_err(|e| e.to_string())?;
    std::os::unix::fs::chown(&home, Some(ALICE), Some(ALICE)).map_err(|e| e.to_string())?;
    Ok(home.display().to_string())
}

/// Credential commands (an exec plugin, an auth-provider's cmd-path) run
/// in the user's own `devnet connect`, as that user, never as root: each
/// command records the uid it ran as.
fn credential_commands_run_as_the_user(lab: &Lab) -> Res {
    lab.sh_ok("firewall", &["api-only"])?;
    let home = alice_home(lab)?;
    let (kc, p) = (kubeconfig(lab), profile(lab));
    for (context, record) in [("lab-exec", "uid"), ("lab-authprov", "auth-provider-uid")] {
        let record = lab.dir.join("api/exec-out").join(record);
        let _ = std::fs::remove_file(&record);
        lab.connect_as(
            &harness::as_user(ALICE, &["devnet"])?,
            &["--context", context, "--kubeconfig", &kc, "--profile", &p, "--session", "lab"],
            &[("HOME", &home)],
            "connected",
            Duration::from_secs(30),
        )?;
        let uid = std::fs::read_to_string(&record).map_err(|e| format!("{context}: the command did not run: {e}"))?;
        if uid.trim() != ALICE.to_string() {
            return Err(format!(
                "{context}: the credential command ran as uid {}, not as the user {ALICE}",
                uid.trim()
            ));
        }
        reach_cluster(lab)?;
        lab.disconnect()?;
        lab.laptop_unchanged(&format!("after the {context} session"))?;
    }
    // Under sudo, devnet connect says it needs none; and --foreground
    // refuses to run an auth-provider command as root.
    let sudo = [("SUDO_UID", "2101"), ("SUDO_GID", "2101"), ("SUDO_USER", "alice")];
    let out = lab.devnet(&["connect", "--context", "lab", "--kubeconfig", &kc], &sudo)?;
    if out.status.success() || !text(&out).contains("does not need sudo") {
        return Err(format!("connect under sudo: {}", text(&out)));
    }
    let out = lab.devnet(&["connect", "--foreground", "--context", "lab-authprov", "--kubeconfig", &kc], &sudo)?;
    if out.status.success() || !text(&out).contains("would run as root under sudo") {
        return Err(format!("an auth-provider under sudo --foreground: {}", text(&out)));
    }
    lab.laptop_unchanged("after the refusals")
}

/// `sudo devnet connect --foreground`: root reads the profile, token and
/// CA only through the invoking user's own process, so a file only root may
/// read is refused as it would be to them; a resolv.conf of their choosing
/// and a state folder they could write are refused before anything changes.
fn sudo_foreground_paths(lab: &Lab) -> Res {
    use std::os::unix::fs::PermissionsExt;
    let sudo = [("SUDO_UID", "2101"), ("SUDO_GID", "2101"), ("SUDO_USER", "alice")];
    let dir = lab.dir.join("sudo");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let write = |name: &str, text: &str, mode: u32| -> Res<String> {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())?;
        Ok(path.display().to_string())
    };
    let lab_profile = std::fs::read_to_string(profile(lab)).map_err(|e| e.to_string())?;
    let secret = write("root-only-token", "not-for-alice", 0o600)?;
    let root_profile = write("root-only.toml", &lab_profile, 0o600)?;
    let steals = write("steals-token.toml", &format!("{lab_profile}\ntoken-file = \"{secret}\"\n"), 0o644)?;
    // Readable by alice, but she names a resolv.conf (lab.devnet's state folder is root's).
    let readable = write("readable.toml", &lab_profile, 0o644)?;
    let foreground = |extra: &[&str]| -> Res<String> {
        let mut args = vec!["connect", "--foreground"];
        args.extend_from_slice(extra);
        let out = lab.devnet(&args, &sudo)?;
        if out.status.success() {
            return Err(format!("connect --foreground {extra:?} under sudo should fail: {}", text(&out)));
        }
        Ok(text(&out))
    };
    let said = foreground(&["--profile", &root_profile])?;
    if !said.contains(&format!("reading {root_profile} as uid 2101")) || !said.contains("Permission denied") {
        return Err(format!("a profile only root may read: {said}"));
    }
    let said = foreground(&["--profile", &steals])?;
    if !said.contains(&format!("reading {secret} as uid 2101")) || said.contains("not-for-alice") {
        return Err(format!("a token file only root may read: {said}"));
    }
    let said = foreground(&["--profile", &readable, "--resolv-conf", &dir.join("resolv.conf").display().to_string()])?;
    if !said.contains("was named by the user who ran sudo") {
        return Err(format!("a resolv.conf the invoker named: {said}"));
    }
    // A state folder alice owns: its journal would tell root what to undo.
    let state = dir.join("alice-state");
    std::fs::create_dir_all(&state).map_err(|e| e.to_string())?;
    std::os::unix::fs::chown(&state, Some(2101), Some(2101)).map_err(|e| e.to_string())?;
    let out = lab
        .on_laptop()
        .arg(lab.tool("devnet"))
        .args(["--state-dir", &state.display().to_string(), "connect", "--foreground", "--profile", &readable])
        .envs(sudo)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() || !text(&out).contains("is not root's alone") {
        return Err(format!("a state folder the invoker owns: {}", text(&out)));
    }
    lab.laptop_unchanged("after the refusals under sudo")
}

/// The port-forward through devnetd's bridge, opened by the user's own
/// `devnet connect` with an exec plugin whose tokens expire at once: after
/// the port-forward drops, the new one carries a freshly refreshed token
/// (the plugin ran again, as the user) and the session reconnects.
fn bridge_survives_refresh(lab: &Lab) -> Res {
    lab.sh_ok("firewall", &["api-only"])?;
    let home = alice_home(lab)?;
    let runs = lab.dir.join("api/exec-out/short-runs");
    let _ = std::fs::remove_file(&runs);
    let count = || std::fs::read_to_string(&runs).map(|t| t.lines().count()).unwrap_or(0);
    let (kc, p) = (kubeconfig(lab), profile(lab));
    lab.connect_as(
        &harness::as_user(ALICE, &["devnet"])?,
        &["--context", "lab-exec-short", "--kubeconfig", &kc, "--profile", &p, "--session", "lab"],
        &[("HOME", &home)],
        "connected",
        Duration::from_secs(30),
    )?;
    if !transport(lab)?.starts_with("port-forward ") {
        return Err(format!("expected the port-forward bridge, got {:?}", transport(lab)?));
    }
    reach_cluster(lab)?;
    for round in 1..=2 {
        std::thread::sleep(Duration::from_millis(1100));
        let before = (count(), lab.status()?["reconnects"].as_u64().unwrap_or(0));
        standin(lab, "drop-portforwards")?;
        wait_reconnected(lab, before.1 + 1)?;
        if count() <= before.0 {
            return Err(format!("round {round}: the new port-forward did not refresh the expired token"));
        }
        if !transport(lab)?.starts_with("port-forward ") {
            return Err(format!("round {round}: transport is {:?}", transport(lab)?));
        }
        reach_cluster(lab)?;
    }
    if !lab.daemon_log().contains("bridge opened by the session's owner") {
        return Err(format!("devnetd never took a bridge:\n{}", lab.daemon_log()));
    }
    lab.disconnect()?;
    lab.laptop_unchanged("after disconnect")
}

fn image_pull_failure(lab: &Lab) -> Res {
    lab.sh_ok("firewall", &["api-only"])?;
    let kc = kubeconfig(lab);
    let out = lab.devnet(&["relay", "uninstall", "--context", "lab", "--kubeconfig", &kc], &[])?;
    if !out.status.success() || !text(&out).contains("relay uninstalled") {
        return Err(format!("relay uninstall: {}", text(&out)));
    }
    let p = profile(lab);
    let out = lab.devnet(
        &[
            "connect",
            "--context",
            "lab",
            "--kubeconfig",
            &kc,
            "--profile",
            &p,
            "--relay-image",
            "registry.invalid/devnet-relay:0.1.0",
        ],
        &[],
    )?;
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    if out.status.success()
        || !(err.contains("ErrImagePull") || err.contains("ImagePullBackOff"))
        || !err.contains("registry.invalid")
    {
        return Err(format!("expected the pod's image-pull reason, got:\n{err}"));
    }
    lab.laptop_unchanged("after the image-pull error")?;
    // With the right image the next connect upgrades the broken install in place.
    connect(lab, "lab", &[])?;
    reach_cluster(lab)?;
    lab.disconnect()?;
    lab.laptop_unchanged("after disconnect")
}

/// At the office (Calico's BIRD peering with the switch), discovery's live
/// pods prove each node's pod block direct, and kube-dns the services: no
/// CIDR is tunnelled, no TUN device exists.
fn office_bgp_direct(lab: &Lab) -> Res {
    lab.sh_ok("firewall", &["open"])?;
    lab.sh_ok("bgp", &["all"])?;
    let result = (|| {
        connect_state(lab, "direct")?;
        let s = lab.status()?;
        let paths = s["paths"].as_array().cloned().unwrap_or_default();
        if paths.len() != 6 || paths.iter().any(|p| p["path"] != "direct") {
            return Err(format!("every discovered CIDR should be direct: {paths:#?}"));
        }
        let links = lab.laptop_ok(&["ip", "-o", "link", "show"])?;
        if links.contains("devnet0") {
            return Err(format!("no TUN device should exist when every CIDR is direct:\n{links}"));
        }
        reach_cluster(lab)?;
        // BGP keeps the laptop's address all the way: the relay pod says so.
        let doctor = doctor_text(lab)?;
        if !doctor.contains("no SNAT on the path to the pods: they see this laptop as 192.168.10.2") {
            return Err(format!("doctor should find no SNAT with BGP peering:\n{doctor}"));
        }
        lab.disconnect()
    })();
    lab.sh_ok("bgp", &["off"])?;
    result?;
    lab.laptop_unchanged("after the office")
}

/// `devnet doctor --context lab` (no engine needed).
fn doctor_text(lab: &Lab) -> Res<String> {
    let (kc, p) = (kubeconfig(lab), profile(lab));
    let out = lab.devnet(&["doctor", "--context", "lab", "--kubeconfig", &kc, "--profile", &p], &[])?;
    if !out.status.success() {
        return Err(format!("doctor failed: {}", text(&out)));
    }
    Ok(text(&out))
}

/// Seed 001: the office routes the cluster through node1, which masquerades
/// the office LAN. Every CIDR works directly, but pods see node1, not the
/// laptop; doctor asks the relay pod and says so, with the fix.
fn forwarding_node_snat(lab: &Lab) -> Res {
    lab.sh_ok("firewall", &["open"])?;
    lab.sh_ok("office-routes", &["all"])?;
    let out = doctor_text(lab);
    lab.sh_ok("office-routes", &["none"])?;
    let out = out?;
    for want in ["SNAT on the path to the pods: they see this laptop as", "not 192.168.10.2", "MASQUERADE"] {
        if !out.contains(want) {
            return Err(format!("doctor should say {want:?}:\n{out}"));
        }
    }
    // node1 masquerades to its own address towards the pod.
    if out.contains("::ffff:") {
        return Err(format!("an IPv4 address should be shown as IPv4:\n{out}"));
    }
    if let Some(line) = out.lines().find(|l| l.contains("SNAT on the path")) {
        eprintln!("{}", line.trim());
    }
    Ok(())
}

fn connect_state(lab: &Lab, state: &str) -> Res {
    let (kc, p) = (kubeconfig(lab), profile(lab));
    lab.connect_args(&["--context", "lab", "--kubeconfig", &kc, "--profile", &p], &[], state, Duration::from_secs(30))
}

/// `devnet relay uninstall`: the namespace and everything in it go, the pod's
/// process stops, and the keyring entry is forgotten.
fn api_post(lab: &Lab, path: &str, body: &serde_json::Value) -> Res<serde_json::Value> {
    let url = format!("https://10.60.20.10:6443{path}");
    let body = body.to_string();
    let (auth, json) = ("Authorization: Bearer dev-token", "Content-Type: application/json");
    let out = lab.exec("api", &["curl", "-sk", "-m", "3", "-H", auth, "-H", json, "-d", &body, &url])?;
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{path}: {e}: {}", text(&out)))
}

/// Security review R-1: whoever may create a pod in the relay's namespace
/// labels it `devnet-relay`, and `relay::state` took it for the relay (the
/// last pod listed): direct dials and port-forwards went to it. Now only the
/// pod of the Deployment's current ReplicaSet (by uid) is the relay. And an
/// install replaces an older install's Secret, which held the relay's key
/// together with the token users read, with the two Secrets, and deletes it.
fn stray_relay_pod(lab: &Lab) -> Res {
    let stray = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        // Listed last, ready, on another pod's address.
        "metadata": {"name": "devnet-relay-zzzzzzzzzz-zzzzz", "namespace": "devnet",
                     "labels": {"app.kubernetes.io/name": "devnet-relay"}},
        "spec": {"containers": [{"name": "relay", "image": "registry.invalid/impostor:1"}]},
        "status": {"phase": "Running", "podIP": "10.244.3.10", "podIPs": [{"ip": "10.244.3.10"}],
                   "conditions": [{"type": "Ready", "status": "True"}]},
    });
    let made = api_post(lab, "/api/v1/namespaces/devnet/pods", &stray)?;
    if made["metadata"]["name"] != "devnet-relay-zzzzzzzzzz-zzzzz" {
        return Err(format!("the stray pod was not created: {made}"));
    }
    let kc = kubeconfig(lab);
    let out = lab.devnet(&["relay", "status", "--context", "lab", "--kubeconfig", &kc], &[])?;
    let said = text(&out);
    let json_end = said.rfind('}').map_or(0, |i| i + 1);
    let st: serde_json::Value =
        serde_json::from_str(&said[..json_end]).map_err(|e| format!("relay status: {e}: {said}"))?;
    let pod = st["pod"].as_str().unwrap_or_default();
    if !out.status.success() || pod.is_empty() || pod.contains("zzzz") || st["pod_ips"][0] != "10.244.1.5" {
        return Err(format!("relay status took another pod for the relay: {said}"));
    }
    // The current ReplicaSet (the older revisions are kept at zero).
    let rs = api_get(lab, "/apis/apps/v1/namespaces/devnet/replicasets")?;
    let current = rs["items"].as_array().into_iter().flatten().filter(|r| r["spec"]["replicas"] == 1);
    let current: Vec<&str> = current.filter_map(|r| r["metadata"]["name"].as_str()).collect();
    if current.len() != 1 || !pod.starts_with(&format!("{}-", current[0])) {
        return Err(format!("the relay pod {pod} is not its current ReplicaSet's: {rs}"));
    }

    // An older install's one Secret: `relay install` leaves it no longer.
    let legacy = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "devnet-relay", "namespace": "devnet"},
        "data": {"token": "b2xk", "ca.crt": "b2xk", "tls.crt": "b2xk", "tls.key": "b2xk"}});
    api_post(lab, "/api/v1/namespaces/devnet/secrets", &legacy)?;
    let out = lab.devnet(&["relay", "install", "--context", "lab", "--kubeconfig", &kc], &[])?;
    if !out.status.success() || !text(&out).contains("installed in namespace devnet (pod devnet-relay-") {
        return Err(format!("relay install: {}", text(&out)));
    }
    if text(&out).contains("zzzz") {
        return Err(format!("relay install took the stray pod for the relay: {}", text(&out)));
    }
    if api_get(lab, "/api/v1/namespaces/devnet/secrets/devnet-relay")?["code"] != 404 {
        return Err("the older install's Secret, which holds the relay's key, is still there".into());
    }
    let tls = api_get(lab, "/api/v1/namespaces/devnet/secrets/devnet-relay-tls")?;
    let client = api_get(lab, "/api/v1/namespaces/devnet/secrets/devnet-relay-client")?;
    if tls["data"].get("token").is_some() || client["code"] != 404 || tls["data"]["tls.key"].is_null() {
        return Err(format!("the relay's key must be alone in its Secret, and no client Secret left: {tls} {client}"));
    }
    let url = "https://10.60.20.10:6443/api/v1/namespaces/devnet/pods/devnet-relay-zzzzzzzzzz-zzzzz";
    lab.exec("api", &["curl", "-sk", "-m", "3", "-X", "DELETE", "-H", "Authorization: Bearer dev-token", url])?;
    Ok(())
}

/// Issue 11 finding 3: each user has an identity of their own. A colleague
/// connects; an admin revokes them (`devnet relay revoke`, the ConfigMap
/// the relay pod mounts): their live session ends, their next connect fails
/// with one line naming revocation and who can undo it, and another user
/// connects as before. The stand-in kubelet keeps the mounted ConfigMap
/// current within a second (a real one within about a minute).
fn revoked_user(lab: &Lab) -> Res {
    lab.sh_ok("firewall", &["api-only"])?;
    let (kc, p) = (kubeconfig(lab), profile(lab));
    connect(lab, "lab-teammate", &[])?;
    reach_cluster(lab)?;
    // Teammate may not revoke anyone (no rights on ConfigMaps).
    let out =
        lab.devnet(&["relay", "revoke", "--context", "lab-teammate", "--kubeconfig", &kc, "--user", "dev"], &[])?;
    if out.status.success() || !text(&out).contains("cluster admin") {
        return Err(format!("a user revoked someone: {}", text(&out)));
    }
    let out = lab.devnet(&["relay", "revoke", "--context", "lab", "--kubeconfig", &kc, "--user", "teammate"], &[])?;
    if !out.status.success() || !text(&out).contains("revoked teammate") {
        return Err(format!("relay revoke: {}", text(&out)));
    }
    // The live session is closed, and the engine says why.
    let start = Instant::now();
    let mut last = serde_json::Value::Null;
    loop {
        if let Ok(s) = lab.status() {
            if s["last_error"].as_str().is_some_and(|e| e.contains("revoked")) && s["state"] != "connected" {
                break;
            }
            last = s;
        }
        if start.elapsed() > Duration::from_secs(15) {
            return Err(format!("the revoked user's session was not closed: {last}\n{}", lab.engine_log()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    lab.disconnect()?;
    // Connecting again fails at once, in one line that names the fix.
    let out = lab.devnet(&["connect", "--context", "lab-teammate", "--kubeconfig", &kc, "--profile", &p], &[])?;
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let last = err.lines().rev().find(|l| l.starts_with("error:")).unwrap_or_default();
    for want in ["teammate", "revoked", "ask a cluster admin", "devnet relay revoke --undo --user teammate"] {
        if out.status.success() || !last.contains(want) {
            return Err(format!("the revoked user's connect: expected {want:?} in one error line, got:\n{err}"));
        }
    }
    lab.laptop_unchanged("after the revoked user's connect")?;
    // Another user is not affected.
    connect(lab, "lab", &[])?;
    reach_cluster(lab)?;
    lab.disconnect()?;
    // Undone, the colleague connects again (a fresh enrolment), once the
    // relay has re-read its list (every 5 s; a fixed wait raced it).
    let reloads = || relay_logs(lab).lines().filter(|l| l.contains("revocation list changed")).count();
    let reloaded_before = reloads();
    let out =
        lab.devnet(&["relay", "revoke", "--undo", "--context", "lab", "--kubeconfig", &kc, "--user", "teammate"], &[])?;
    if !out.status.success() {
        return Err(format!("relay revoke --undo: {}", text(&out)));
    }
    let start = Instant::now();
    while reloads() <= reloaded_before {
        if start.elapsed() > Duration::from_secs(15) {
            return Err(format!("the relay did not re-read its revocation list within 15 s:\n{}", relay_logs(lab)));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    connect(lab, "lab-teammate", &[])?;
    lab.disconnect()?;
    lab.laptop_unchanged("after disconnect")
}

/// Every relay pod's log so far, without colours.
fn relay_logs(lab: &Lab) -> String {
    let logs: String = std::fs::read_dir(lab.dir.join("api/pods"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|d| std::fs::read_to_string(d.path().join("container.log")).ok())
        .collect();
    strip_ansi(&logs)
}

/// A session outlives its client certificate. A relay restart (`kubectl
/// rollout restart`: a new pod, whose client CA lives in its memory only)
/// invalidates every certificate at once, as expiry does one: the relay
/// refuses it, and the `devnet connect` still running enrols again as the
/// user and hands the new certificate to devnetd, whose engine reconnects
/// with it. Nobody reconnects by hand; the relay logs the new enrolment.
/// (When renewal falls due ahead of expiry is `RenewalSchedule`'s unit
/// tests, on a stepped clock.)
fn outlives_relay_restart(lab: &Lab) -> Res {
    lab.sh_ok("firewall", &["api-only"])?;
    connect(lab, "lab", &[])?;
    reach_cluster(lab)?;
    let enrolments = || relay_logs(lab).lines().filter(|l| l.contains("enrolled") && l.contains("user=dev")).count();
    let enrolled_before = enrolments();
    let reconnects = lab.status()?["reconnects"].as_u64().unwrap_or(0);
    let pod_before = api_get(lab, "/api/v1/namespaces/devnet/pods")?["items"][0]["metadata"]["uid"].clone();
    // What `kubectl rollout restart deployment/devnet-relay` sends.
    let restarted_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations":
        {"kubectl.kubernetes.io/restartedAt": restarted_at.to_string()}}}}});
    let url = "https://10.60.20.10:6443/apis/apps/v1/namespaces/devnet/deployments/devnet-relay";
    let (auth, merge) = ("Authorization: Bearer dev-token", "Content-Type: application/merge-patch+json");
    let out = lab.exec(
        "api",
        &["curl", "-sk", "-m", "10", "-X", "PATCH", "-H", auth, "-H", merge, "-d", &patch.to_string(), url],
    )?;
    if !out.status.success() {
        return Err(format!("rollout restart: {}", text(&out)));
    }
    let start = Instant::now();
    let mut last = serde_json::Value::Null;
    loop {
        if let Ok(s) = lab.status() {
            if s["state"] == "connected" && s["reconnects"].as_u64().unwrap_or(0) > reconnects {
                break;
            }
            last = s;
        }
        if start.elapsed() > Duration::from_secs(60) {
            return Err(format!(
                "the session did not recover within 60 s of the relay's restart; last status {last}\n{}",
                lab.engine_log()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("    recovered {:.1} s after the relay restarted", start.elapsed().as_secs_f64());
    reach_cluster(lab)?;
    let pod_after = api_get(lab, "/api/v1/namespaces/devnet/pods")?["items"][0]["metadata"]["uid"].clone();
    if pod_after == pod_before {
        return Err(format!("the relay pod was not replaced (uid {pod_after})"));
    }
    if enrolments() <= enrolled_before {
        return Err(format!("the relay logged no new enrolment for dev:\n{}", relay_logs(lab)));
    }
    let log = lab.engine_log();
    if !log.contains("the relay refused the client certificate; enrolling again")
        || !log.contains("client certificate renewed")
    {
        return Err(format!("devnet connect did not say it renewed the certificate:\n{log}"));
    }
    lab.disconnect()?;
    lab.laptop_unchanged("after disconnect")
}

/// Sets the relay container's args (a rollout: a new pod) with a merge patch.
fn set_relay_args(lab: &Lab, args: &serde_json::Value) -> Res {
    let path = "/apis/apps/v1/namespaces/devnet/deployments/devnet-relay";
    let mut containers = api_get(lab, path)?["spec"]["template"]["spec"]["containers"].clone();
    containers[0]["args"] = args.clone();
    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": containers}}}});
    let url = format!("https://10.60.20.10:6443{path}");
    let (auth, merge) = ("Authorization: Bearer dev-token", "Content-Type: application/merge-patch+json");
    let out = lab.exec(
        "api",
        &["curl", "-sk", "-m", "10", "-X", "PATCH", "-H", auth, "-H", merge, "-d", &patch.to_string(), &url],
    )?;
    if !out.status.success() || !text(&out).contains("devnet-relay") {
        return Err(format!("patching the relay's args: {}", text(&out)));
    }
    Ok(())
}

/// Expiry itself, with a relay that issues 60 s certificates
/// (`--client-cert-lifetime 60s`; 8 h by default): `devnet connect`
/// renews with a quarter of the lifetime left, so after the first
/// certificate has expired a reconnect (the port-forward dropped) presents
/// the renewed one and is taken at once, with no refusal on the way.
fn renewed_before_expiry(lab: &Lab) -> Res {
    lab.sh_ok("firewall", &["api-only"])?;
    let path = "/apis/apps/v1/namespaces/devnet/deployments/devnet-relay";
    let original = api_get(lab, path)?["spec"]["template"]["spec"]["containers"][0]["args"].clone();
    let mut short = original.as_array().cloned().ok_or("the relay container has no args")?;
    short.extend(["--client-cert-lifetime".into(), "60s".into()]);
    set_relay_args(lab, &serde_json::Value::Array(short))?;
    let result = (|| {
        connect(lab, "lab", &[])?;
        let connected = Instant::now();
        reach_cluster(lab)?;
        // Renewed ahead of expiry (at about 45 s).
        // What `devnet connect` said (devnetd's log holds earlier trials' refusals).
        let said = || lab.engine_log().split("--- devnetd ---").next().unwrap_or_default().to_owned();
        while !said().contains("client certificate renewed") {
            if connected.elapsed() > Duration::from_secs(70) {
                return Err(format!("no renewal within 70 s of a 60 s certificate:\n{}", lab.engine_log()));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        // Past the first certificate's expiry, the link is made again.
        std::thread::sleep(Duration::from_secs(65).saturating_sub(connected.elapsed()));
        let before = lab.status()?["reconnects"].as_u64().unwrap_or(0);
        standin(lab, "drop-portforwards")?;
        wait_reconnected(lab, before + 1)?;
        reach_cluster(lab)?;
        let log = said();
        if !log.contains("expires soon; enrolling again") || log.contains("refused th") {
            return Err(format!("expected a renewal ahead of expiry and no refusal:\n{log}"));
        }
        lab.disconnect()
    })();
    set_relay_args(lab, &original)?;
    result?;
    lab.laptop_unchanged("after disconnect")
}

fn uninstall(lab: &Lab) -> Res {
    let kc = kubeconfig(lab);
    let out = lab.devnet(&["relay", "uninstall", "--context", "lab", "--kubeconfig", &kc], &[])?;
    if !out.status.success() || !text(&out).contains("relay uninstalled") {
        return Err(format!("relay uninstall: {}", text(&out)));
    }
    let ns = api_get(lab, "/api/v1/namespaces/devnet")?;
    if ns["code"] != 404 {
        return Err(format!("namespace devnet still there: {ns}"));
    }
    let start = Instant::now();
    loop {
        let pids = std::process::Command::new("ip").args(["netns", "pids", &format!("{LAB}-relay")]).output();
        if pids.is_ok_and(|o| o.stdout.is_empty()) {
            break;
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err("the relay pod's process still runs after uninstall".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let stored = lab.devnet(&["credential", "load", "--account", "https://10.60.20.10:6443#devnet"], &[])?;
    if !stored.stdout.is_empty() {
        return Err(format!("the keyring still holds the relay credentials: {}", text(&stored)));
    }
    let out = lab.devnet(&["relay", "uninstall", "--context", "lab", "--kubeconfig", &kc], &[])?;
    if !out.status.success() || !text(&out).contains("no relay was installed") {
        return Err(format!("a second uninstall should say there is nothing to remove: {}", text(&out)));
    }
    // A namespace named devnet that devnet did not make is never deleted.
    let url = "https://10.60.20.10:6443/api/v1/namespaces";
    let body = r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"devnet"}}"#;
    let auth = "Authorization: Bearer dev-token";
    let json = "Content-Type: application/json";
    lab.exec("api", &["curl", "-sk", "-m", "3", "-H", auth, "-H", json, "-d", body, url])?;
    let out = lab.devnet(&["relay", "uninstall", "--context", "lab", "--kubeconfig", &kc], &[])?;
    if out.status.success() || !text(&out).contains("was not created by devnet") {
        return Err(format!("uninstall of a namespace devnet did not make: {}", text(&out)));
    }
    if api_get(lab, "/api/v1/namespaces/devnet")?["metadata"]["name"] != "devnet" {
        return Err("the foreign namespace devnet was deleted".into());
    }
    lab.exec("api", &["curl", "-sk", "-m", "3", "-X", "DELETE", "-H", auth, &format!("{url}/devnet")])?;
    Ok(())
}

//! `devnet preflight` against REAL debuggers in REAL pods: the lab's real
//! control plane and node (`lab.sh realapi`, `realnode`) run a JVM with the
//! JDWP agent, debugpy, Node's inspector and Delve (`lab.sh realdebug`,
//! Debian's runtimes). For each, preflight passes through the tunnel and
//! directly, and then a real debugger client attaches and works (jdb, `dlv
//! connect`, a DAP client, a Chrome DevTools Protocol WebSocket), which
//! proves the probe left the debugger usable. Every failure class gets its
//! exit code and a one-line fix.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use devnet_lab::harness::{self, Lab, OnFailure, Res, text};
use serde_json::Value;

const LAB: &str = "pf";

fn main() {
    harness::run(
        "preflight",
        setup,
        &[
            ("preflight_01_not_connected_says_so_and_how_to_fix_it", not_connected),
            ("preflight_02_connect_starts_a_session_that_outlives_the_preflight", connect_fixes_it),
            ("preflight_03_jdwp_through_the_tunnel_then_jdb_attaches_by_name", jdwp_tunnel),
            ("preflight_04_delve_multiclient_is_probed_then_dlv_connect_works", delve_multiclient),
            ("preflight_05_debugpy_is_left_alone_and_a_dap_client_attaches", debugpy),
            ("preflight_06_node_inspector_answers_and_its_host_check_is_explained", node_inspector),
            ("preflight_07_delve_without_multiclient_is_left_alone", delve_single),
            ("preflight_08_directly_through_the_office_every_debugger_attaches", direct),
            ("preflight_09_debugger_bound_to_localhost_is_refused_with_the_fix", bound_to_localhost),
            ("preflight_10_another_debugger_attached_is_named", already_attached),
            ("preflight_11_wrong_protocol_on_the_port", wrong_protocol),
            ("preflight_12_name_that_does_not_exist", name_not_found),
            ("preflight_13_target_outside_every_cluster_cidr", outside),
            ("preflight_13b_the_timeout_bounds_the_whole_run", timeout_bounds_the_run),
            ("preflight_14_progress_events_for_ides", progress),
            ("preflight_15_the_ide_recipes_run_as_written", recipes),
            ("preflight_16_an_exec_plugin_is_told_nobody_can_answer_it", exec_plugin_not_interactive),
            ("preflight_16b_debugpy_is_identified_on_request", debugpy_deep),
            ("preflight_17_disconnect_restores_the_laptop", disconnect),
        ],
        OnFailure::Keep,
    )
}

fn setup() -> Res<Lab> {
    let lab = Lab::up(LAB)?;
    lab.sh_ok("realapi", &[])?;
    lab.sh_ok("realnode", &[])?;
    lab.sh_ok("realdebug", &[])?;
    // The laptop reaches only the API server: the tunnel goes through its port-forward.
    lab.sh_ok("firewall", &["api-only"])?;
    Ok(lab)
}

fn kubeconfig(lab: &Lab) -> String {
    lab.dir.join("kubeconfig").display().to_string()
}

/// `name -> (pod IP, ClusterIP, port)` from `lab.sh realdebug`.
fn pods(lab: &Lab) -> Res<HashMap<String, (String, String, u16)>> {
    let list = std::fs::read_to_string(lab.dir.join("debug-pods")).map_err(|e| format!("debug-pods: {e}"))?;
    Ok(list
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.to_string(), (f.get(1)?.to_string(), f.get(2)?.to_string(), f.get(3)?.parse().ok()?)))
        })
        .collect())
}

fn pod_ip(lab: &Lab, name: &str) -> Res<String> {
    pods(lab)?.get(name).map(|p| p.0.clone()).ok_or(format!("no debug pod {name}"))
}

/// A tool from `tests/lab/debuggers/build.sh` (jdb, dlv, …).
fn debugger_tool(lab: &Lab, name: &str) -> Res<String> {
    let env = std::fs::read_to_string(lab.dir.join("debuggers.env")).map_err(|e| format!("debuggers.env: {e}"))?;
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .map(str::to_owned)
        .ok_or(format!("no {name} in {env}"))
}

/// What one preflight run gave.
struct Run {
    code: i32,
    report: Value,
    stdout: String,
    stderr: String,
}

impl Run {
    fn target(&self) -> &Value {
        &self.report["targets"][0]
    }

    fn expect(&self, code: i32) -> Res<&Self> {
        if self.code != code {
            return Err(format!("preflight exited {} (wanted {code}):\n{}\n{}", self.code, self.stderr, self.stdout));
        }
        if self.report["schema"] != 1 || self.report["exit_code"] != code {
            return Err(format!("the report does not match the exit code {code}: {}", self.report));
        }
        Ok(self)
    }

    fn expect_failure(&self, code: i32, class: &str, message: &str, fix: &str) -> Res {
        self.expect(code)?;
        let t = self.target();
        let (m, f) = (t["message"].as_str().unwrap_or(""), t["fix"].as_str().unwrap_or(""));
        if t["failure"] != class || !m.contains(message) || !f.contains(fix) {
            return Err(format!("wanted {class} saying {message:?} with fix {fix:?}, got {t}"));
        }
        // One line each, as an IDE shows it.
        if m.contains('\n') || f.contains('\n') || !self.stderr.contains(&format!("fix: {f}")) {
            return Err(format!("the message and fix are not one line each on stderr:\n{}", self.stderr));
        }
        Ok(())
    }
}

/// `devnet preflight --json <args…>` on the laptop, as the user's IDE runs it.
fn preflight(lab: &Lab, args: &[&str]) -> Res<Run> {
    let kc = kubeconfig(lab);
    let home = lab.dir.join("home").display().to_string();
    let mut all = vec!["preflight", "--context", "lab", "--kubeconfig", &kc, "--json"];
    all.extend(args);
    let out = lab.devnet(&all, &[("HOME", &home)])?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let last = stdout.lines().last().unwrap_or("");
    let report: Value =
        serde_json::from_str(last).map_err(|e| format!("preflight printed no report ({e}): {}", text(&out)))?;
    Ok(Run {
        code: out.status.code().unwrap_or(-1),
        report,
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn ready(run: &Run, via: &str, version: &str) -> Res {
    run.expect(0)?;
    let t = run.target();
    if t["way"]["via"] != via
        || !t["probe"]["version"].as_str().unwrap_or("").contains(version)
        || t["probe"]["probed"] != true
    {
        return Err(format!("wanted {version:?} via {via}, got {t}\n{}", run.stderr));
    }
    Ok(())
}

/// A shell script on the laptop (the debugger clients run there).
fn on_laptop(lab: &Lab, script: &str) -> Res<String> {
    let out = lab.exec("laptop", &["bash", "-c", script])?;
    let all = text(&out);
    if !out.status.success() {
        return Err(format!("{script}\nfailed:\n{all}"));
    }
    Ok(all)
}

/// jdb attaches, stops in `Main.tick`, prints the counter, clears the
/// breakpoint and detaches (the JVM runs on and listens again).
fn jdb_works(lab: &Lab, addr: &str) -> Res {
    let jdb = debugger_tool(lab, "jdb")?;
    let out = on_laptop(
        lab,
        &format!(
            "{{ echo 'stop in Main.tick'; sleep 2; echo 'print Main.counter'; sleep 0.5; echo 'clear Main.tick'; sleep 0.5; echo cont; sleep 0.5; echo quit; }} | timeout 30 {jdb} -attach {addr}"
        ),
    )?;
    if !out.contains("Breakpoint hit") || !out.contains("Main.counter = ") {
        return Err(format!("jdb at {addr} did not stop in Main.tick and print the counter:\n{out}"));
    }
    Ok(())
}

/// `dlv connect`: goroutines, a breakpoint in main.tick, the counter, then
/// `quit -c` (the debuggee continues; the server keeps serving).
fn dlv_works(lab: &Lab, addr: &str) -> Res {
    let dlv = debugger_tool(lab, "dlv")?;
    let init = lab.dir.join("dlv.init");
    std::fs::write(&init, "goroutines\nbreak main.tick\ncontinue\nprint counter\nclearall\nquit -c\n")
        .map_err(|e| e.to_string())?;
    let out = on_laptop(lab, &format!("timeout 30 {dlv} connect {addr} --init {} </dev/null", init.display()))?;
    if !out.contains("main.tick()") || !out.contains("Breakpoint 1") && !out.contains("Breakpoint") {
        return Err(format!("dlv connect {addr} did not stop in main.tick:\n{out}"));
    }
    Ok(())
}

/// A DAP client attaches to debugpy, lists its threads and detaches.
fn dap_works(lab: &Lab, addr: &str) -> Res {
    let out = lab.probe(&["dap", addr])?;
    if !out.contains("MainThread") {
        return Err(format!("the DAP client at {addr} saw no MainThread: {out}"));
    }
    Ok(())
}

/// A Chrome DevTools Protocol client evaluates in the Node process.
fn cdp_works(lab: &Lab, addr: &str) -> Res {
    let out = lab.probe(&["cdp", addr, "process.argv.join(' ')"])?;
    if !out.contains("/app/node/app.js") {
        return Err(format!("Runtime.evaluate through {addr} gave {out:?}"));
    }
    Ok(())
}

fn not_connected(lab: &Lab) -> Res {
    let run = preflight(lab, &["svc/jvm.debug:5005"])?;
    run.expect_failure(3, "not-connected", "devnet is not connected", "--connect")
}

/// `--connect` starts `devnet connect` in the background (the debugger
/// comes next, so the session must outlive the preflight) and goes on.
///
/// The target is a Deployment (its pod's address comes from the API), not a
/// name: `ip netns exec` bind-mounts the laptop's resolv.conf when a process
/// starts, so a process already running when devnet replaces that file (by
/// rename, as it must) keeps reading the old one. On a real machine glibc
/// sees the new file; the trials after this one resolve names in new processes.
fn connect_fixes_it(lab: &Lab) -> Res {
    let run = preflight(lab, &["--connect", "--timeout", "180s", "deploy/jvm.debug:5005"])?;
    ready(&run, "tunnel", "OpenJDK")?;
    if !run.stderr.contains("started session lab") {
        return Err(format!("preflight did not say it started the session:\n{}", run.stderr));
    }
    // The session runs on after the preflight exited.
    std::thread::sleep(Duration::from_secs(1));
    let status = lab.status()?;
    if status["session"] != "lab" || !matches!(status["state"].as_str(), Some("connected")) {
        return Err(format!("no connected session after the preflight: {status}"));
    }
    if !status["transport"].as_str().unwrap_or("").starts_with("port-forward") {
        return Err(format!(
            "with only the API server reachable the relay should be behind the port-forward: {status}"
        ));
    }
    Ok(())
}

fn jdwp_tunnel(lab: &Lab) -> Res {
    let began = Instant::now();
    let run = preflight(lab, &["svc/jvm.debug:5005"])?;
    println!("a preflight of svc/jvm.debug:5005 through the port-forward tunnel took {:?} in all", began.elapsed());
    ready(&run, "tunnel", "OpenJDK")?;
    let t = run.target();
    if t["pod"]["debugger"]["protocol"] != "jdwp" || t["pod"]["container"] != "jvm" || t["pod"]["ready"] != true {
        return Err(format!("the pod's spec was not read: {}", t["pod"]));
    }
    // The debugger uses the same name, through the same resolver.
    jdb_works(lab, "jvm.debug.svc.cluster.local:5005")?;
    jdb_works(lab, "jvm.debug:5005")?;
    // And the JVM takes the next debugger after jdb left.
    ready(&preflight(lab, &["svc/jvm.debug:5005"])?, "tunnel", "OpenJDK")
}

fn delve_multiclient(lab: &Lab) -> Res {
    let run = preflight(lab, &["deploy/go.debug:2345"])?;
    ready(&run, "tunnel", "Delve")?;
    if !run.target()["resolved"]["by"].as_str().unwrap_or("").contains("status.podIP") {
        return Err(format!("a Deployment target should resolve to a ready pod: {}", run.target()));
    }
    let ip = pod_ip(lab, "go")?;
    dlv_works(lab, &format!("{ip}:2345"))?;
    dlv_works(lab, "go.debug:2345")?;
    ready(&preflight(lab, &["svc/go.debug:2345"])?, "tunnel", "Delve")
}

fn debugpy(lab: &Lab) -> Res {
    let run = preflight(lab, &["svc/py.debug:5678"])?;
    run.expect(0)?;
    let t = run.target();
    if t["probe"]["probed"] != false || !t["probe"]["note"].as_str().unwrap_or("").contains("debugpy serves one client")
    {
        return Err(format!("debugpy should be left alone by default: {t}"));
    }
    let (ip, cluster_ip, _) = pods(lab)?.get("py").cloned().ok_or("no py pod")?;
    dap_works(lab, &format!("{cluster_ip}:5678"))?;
    // Checked again, it is still left alone, and the next client gets in.
    let pod = format!("pod/{}.debug:5678", pod_name(lab, "py")?);
    preflight(lab, &[&pod])?.expect(0)?;
    dap_works(lab, &format!("{ip}:5678"))
}

/// On request (`--probe deep`) debugpy is identified from what it says
/// first, without a byte sent to it. That still takes its one connection:
/// in the lab a DAP client right after a deep probe has been refused at
/// times, which is why it is opt-in; so this runs after every attach.
fn debugpy_deep(lab: &Lab) -> Res {
    ready(&preflight(lab, &["--probe", "deep", "svc/py.debug:5678"])?, "tunnel", "debugpy 1.8.22")
}

fn node_inspector(lab: &Lab) -> Res {
    let run = preflight(lab, &["svc/node.debug:9229"])?;
    ready(&run, "tunnel", "node.js/v")?;
    let warnings = run.target()["warnings"].to_string();
    if !warnings.contains("refuses the Host node.debug.svc.cluster.local:9229")
        || !warnings.contains("attach by the address")
    {
        return Err(format!("no warning about the inspector's Host check: {warnings}"));
    }
    // By address the inspector accepts the IDE: a CDP client evaluates in the pod.
    let (ip, cluster_ip, _) = pods(lab)?.get("node").cloned().ok_or("no node pod")?;
    cdp_works(lab, &format!("{cluster_ip}:9229"))?;
    let by_ip = preflight(lab, &[&format!("{ip}:9229")])?;
    ready(&by_ip, "tunnel", "node.js/v")?;
    if by_ip.target()["warnings"].as_array().is_some_and(|w| !w.is_empty()) {
        return Err(format!("an address target should get no Host warning: {}", by_ip.target()));
    }
    Ok(())
}

/// Delve without `--accept-multiclient` serves one client and then kills
/// its debuggee: preflight must not touch it, and the debugger after it
/// must still get in.
fn delve_single(lab: &Lab) -> Res {
    let restarts = |lab: &Lab| -> Res<u64> {
        let pods = lab.real_api("GET", "/api/v1/namespaces/debug/pods?labelSelector=app%3Dgo-single", None)?;
        Ok(pods["items"][0]["status"]["containerStatuses"][0]["restartCount"].as_u64().unwrap_or(u64::MAX))
    };
    let before = restarts(lab)?;
    let run = preflight(lab, &["svc/go-single.debug:2345"])?;
    run.expect(0)?;
    let t = run.target();
    if t["probe"]["probed"] != false
        || !t["probe"]["note"].as_str().unwrap_or("").contains("without --accept-multiclient")
    {
        return Err(format!("dlv without --accept-multiclient must not be probed: {t}"));
    }
    std::thread::sleep(Duration::from_secs(1));
    if restarts(lab)? != before {
        return Err("the single-client dlv restarted after the preflight: it was touched".into());
    }
    // The one client it serves is still free: a real `dlv connect`.
    let dlv = debugger_tool(lab, "dlv")?;
    let ip = pod_ip(lab, "go-single")?;
    let init = lab.dir.join("dlv-single.init");
    std::fs::write(&init, "goroutines\nbreak main.tick\ncontinue\nprint counter\nquit\n").map_err(|e| e.to_string())?;
    let out =
        on_laptop(lab, &format!("timeout 30 {dlv} connect {ip}:2345 --init {} </dev/null; true", init.display()))?;
    if !out.contains("main.tick()") {
        return Err(format!("dlv connect to the single-client server after the preflight failed:\n{out}"));
    }
    Ok(())
}

/// The office routes the pod CIDR (via a forwarding node): devnet sees the
/// direct path, and every debugger is reached and attached without the tunnel.
fn direct(lab: &Lab) -> Res {
    lab.sh_ok("office-routes", &["pods"])?;
    let attached = attach_directly(lab);
    // Back to the tunnel for the trials after this one, whatever happened.
    lab.sh_ok("office-routes", &["none"])?;
    wait_pod_cidr(lab, "tunnel")?;
    attached
}

/// Waits until devnet's status shows the pod CIDR going `path`.
fn wait_pod_cidr(lab: &Lab, path: &str) -> Res {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = lab.status()?;
        if status["paths"].as_array().into_iter().flatten().any(|v| v["cidr"] == "10.244.0.0/16" && v["path"] == path) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the pod CIDR did not turn {path}: {}", status["paths"]));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn attach_directly(lab: &Lab) -> Res {
    wait_pod_cidr(lab, "direct")?;
    let ip = |name: &str| pod_ip(lab, name);
    let jvm_pod = pod_name(lab, "jvm")?;
    let began = Instant::now();
    let run = preflight(lab, &[&format!("pod/{jvm_pod}.debug:5005")])?;
    println!("a preflight of pod/{jvm_pod}.debug:5005 on the direct path took {:?} in all", began.elapsed());
    ready(&run, "direct", "OpenJDK")?;
    jdb_works(lab, &format!("{}:5005", ip("jvm")?))?;
    ready(&preflight(lab, &["deploy/go.debug:2345"])?, "direct", "Delve")?;
    dlv_works(lab, &format!("{}:2345", ip("go")?))?;
    ready(&preflight(lab, &["deploy/node.debug:9229"])?, "direct", "node.js/v")?;
    cdp_works(lab, &format!("{}:9229", ip("node")?))?;
    let py = preflight(lab, &["deploy/py.debug:5678"])?;
    py.expect(0)?;
    if py.target()["way"]["via"] != "direct" || py.target()["probe"]["probed"] != false {
        return Err(format!("debugpy should have a direct way and be left alone: {}", py.target()));
    }
    dap_works(lab, &format!("{}:5678", ip("py")?))
}

fn pod_name(lab: &Lab, app: &str) -> Res<String> {
    let pods = lab.real_api("GET", &format!("/api/v1/namespaces/debug/pods?labelSelector=app%3D{app}"), None)?;
    pods["items"][0]["metadata"]["name"].as_str().map(str::to_owned).ok_or(format!("no pod for {app}: {pods}"))
}

fn bound_to_localhost(lab: &Lab) -> Res {
    let run = preflight(lab, &["svc/jvm-local.debug:5005"])?;
    run.expect_failure(6, "refused", "listens on localhost (the JDK 9+ default):5005 only", "address=*:5005")?;
    // And jdb indeed cannot attach: the preflight told the truth.
    let jdb = debugger_tool(lab, "jdb")?;
    let out =
        lab.exec("laptop", &["bash", "-c", &format!("echo quit | timeout 20 {jdb} -attach jvm-local.debug:5005")])?;
    if !text(&out).contains("Unable to attach") {
        return Err(format!("jdb attached to a JVM bound to localhost?\n{}", text(&out)));
    }
    Ok(())
}

/// JDWP serves one debugger: while jdb holds the JVM, preflight says so.
fn already_attached(lab: &Lab) -> Res {
    let jdb = debugger_tool(lab, "jdb")?;
    let ip = pod_ip(lab, "jvm")?;
    let mut holder = lab
        .on_laptop()
        .args(["bash", "-c", &format!("sleep 30 | {jdb} -attach {ip}:5005")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_secs(4));
    let run = preflight(lab, &["svc/jvm.debug:5005"]);
    let _ = Command::new("pkill").args(["-f", &format!("jdb.* -attach {ip}:5005")]).status();
    let _ = holder.kill();
    let _ = holder.wait();
    run?.expect_failure(6, "refused", "another debugger is probably attached", "detach the other debugger")?;
    // Once it has gone, the JVM listens again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let again = preflight(lab, &["svc/jvm.debug:5005"])?;
        if again.code == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the JVM did not listen again after the other debugger left:\n{}", again.stderr));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn wrong_protocol(lab: &Lab) -> Res {
    // The demo web server's HTTP port, checked as a JVM debugger.
    let run = preflight(lab, &["--proto", "jdwp", "svc/web.demo:80"])?;
    run.expect_failure(
        7,
        "wrong-protocol",
        "answers, but not as JDWP: nothing answered the JDWP handshake",
        "port 8080 of pod demo/web-",
    )?;
    // The inspector's port checked as Delve: the spec says which it is.
    let node = preflight(lab, &["--proto", "dlv", "--probe", "deep", "svc/node.debug:9229"])?;
    node.expect_failure(
        7,
        "wrong-protocol",
        "not as Delve",
        "the pod's spec starts Node inspector on port 9229: pass --proto",
    )
}

fn name_not_found(lab: &Lab) -> Res {
    preflight(lab, &["svc/nope.debug:5005"])?.expect_failure(
        4,
        "name-not-found",
        "service nope does not exist in namespace debug",
        "kubectl get services -n debug",
    )?;
    preflight(lab, &["deploy/jvm.nowhere:5005"])?.expect_failure(
        4,
        "name-not-found",
        "deployment jvm does not exist in namespace nowhere",
        "check the name and namespace",
    )?;
    preflight(lab, &["nope.debug:5005"])?.expect_failure(
        4,
        "name-not-found",
        "does not exist in namespace debug",
        "kubectl get services",
    )
}

fn outside(lab: &Lab) -> Res {
    preflight(lab, &["203.0.113.7:5005"])?.expect_failure(
        5,
        "no-path",
        "203.0.113.7 is outside every CIDR devnet routes (lab: ",
        "devnet connect --cidr",
    )?;
    // With the context's session already up, --connect has nothing to start.
    preflight(lab, &["--connect", "203.0.113.7:5005"])?.expect_failure(
        5,
        "no-path",
        "outside every CIDR",
        "devnet connect --cidr",
    )
}

/// `--timeout` bounds the run: an address in node4's pod block where no pod
/// lives gets no answer (the relay's dial waits for ARP, about 3 s), and the
/// run ends at 2 s with the way it tried.
fn timeout_bounds_the_run(lab: &Lab) -> Res {
    let began = Instant::now();
    let run = preflight(lab, &["--timeout", "2s", "10.244.4.250:5005"])?;
    let took = began.elapsed();
    run.expect_failure(8, "timed-out", "no answer from 10.244.4.250:5005 within", "devnet doctor")?;
    if !run.target()["message"].as_str().unwrap_or("").contains("over devnet's tunnel way (10.244.0.0/16") {
        return Err(format!("the timeout does not name the way it tried: {}", run.target()));
    }
    if took > Duration::from_secs(4) {
        return Err(format!("a 2 s preflight took {took:?}"));
    }
    Ok(())
}

/// `--json --progress`: one event per line as each step starts and ends, the
/// report last (what an IDE shows while it waits).
fn progress(lab: &Lab) -> Res {
    let run = preflight(lab, &["--progress", "svc/jvm.debug:5005"])?;
    run.expect(0)?;
    let events: Vec<Value> = run.stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let finished: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "finished" && e["ok"] == true)
        .filter_map(|e| e["step"].as_str())
        .collect();
    if finished != ["session", "resolve", "path", "pod", "connect", "probe"] {
        return Err(format!("the steps were {finished:?}:\n{}", run.stdout));
    }
    if events.last().map(|e| e["event"].clone()) != Some("report".into()) || events.len() != 13 {
        return Err(format!("wanted 12 step events then the report:\n{}", run.stdout));
    }
    Ok(())
}

/// The VS Code and JetBrains recipes in docs/ide: their preflight commands,
/// with the inputs an IDE would fill in, run in the lab and pass.
fn recipes(lab: &Lab) -> Res {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/ide");
    let tasks = std::fs::read_to_string(root.join("vscode/tasks.json")).map_err(|e| format!("tasks.json: {e}"))?;
    let tasks: Value =
        serde_json::from_str(&devnet_lab::jsonc::strip(&tasks)).map_err(|e| format!("tasks.json: {e}"))?;
    let inputs: HashMap<&str, &str> = HashMap::from([("context", "lab"), ("namespace", "debug")]);
    let kc = kubeconfig(lab);
    let home = lab.dir.join("home").display().to_string();
    let mut ran = 0;
    for task in tasks["tasks"].as_array().into_iter().flatten() {
        let args: Vec<String> = task["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|a| {
                let mut a = a.to_owned();
                for (k, v) in &inputs {
                    a = a.replace(&format!("${{input:{k}}}"), v);
                }
                a
            })
            .collect();
        if task["command"] != "devnet" || args.first().map(String::as_str) != Some("preflight") {
            continue;
        }
        if args.iter().any(|a| a.contains("${")) {
            return Err(format!("task {} has a variable the test does not fill: {args:?}", task["label"]));
        }
        let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
        all.extend(["--kubeconfig", &kc]);
        let out = lab.devnet(&all, &[("HOME", &home)])?;
        if !out.status.success() {
            return Err(format!("task {}: devnet {all:?} failed:\n{}", task["label"], text(&out)));
        }
        ran += 1;
    }
    if ran < 4 {
        return Err(format!("only {ran} preflight tasks in tasks.json (Java, Go, Python and Node each need one)"));
    }
    Ok(())
}

/// An IDE has no terminal: the kubeconfig's exec plugin (an SSO login, say)
/// gets `interactive: false` and a closed stdin, so it fails fast instead of
/// waiting for a password nobody can type.
fn exec_plugin_not_interactive(lab: &Lab) -> Res {
    let plugin = lab.dir.join("sso-login.sh");
    let seen = lab.dir.join("sso-login.seen");
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$KUBERNETES_EXEC_INFO\" >{seen}\nif read -r answer; then echo \"stdin gave: $answer\" >>{seen}; else echo 'stdin closed' >>{seen}; fi\nprintf '{{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"dev-token\"}}}}\\n'\n",
            seen = seen.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let _ = Command::new("chmod").args(["755", &plugin.display().to_string()]).status();
    let kc = lab.dir.join("kubeconfig-sso");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: lab\nclusters: [{{name: lab, cluster: {{server: \"https://10.60.20.10:6443\", certificate-authority: \"{}\"}}}}]\nusers: [{{name: sso, user: {{exec: {{apiVersion: client.authentication.k8s.io/v1, command: {}, interactiveMode: IfAvailable}}}}}}]\ncontexts: [{{name: lab, context: {{cluster: lab, user: sso}}}}]\n",
            lab.dir.join("api/ca.crt").display(),
            plugin.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let kc = kc.display().to_string();
    // Something to read on stdin, as a terminal would offer it.
    let out = lab
        .on_laptop()
        .arg(lab.tool("devnet"))
        .args(["preflight", "--context", "lab", "--kubeconfig", &kc, "--json", "svc/jvm.debug:5005"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            if let Some(mut stdin) = c.stdin.take() {
                let _ = stdin.write_all(b"hunter2\n");
            }
            c.wait_with_output()
        })
        .map_err(|e| e.to_string())?;
    let seen =
        std::fs::read_to_string(&seen).map_err(|e| format!("the exec plugin did not run: {e}\n{}", text(&out)))?;
    if !seen.contains("\"interactive\":false") || !seen.contains("stdin closed") {
        return Err(format!("the exec plugin was offered a terminal: {seen}"));
    }
    if !out.status.success() {
        return Err(format!("preflight through the exec plugin's token failed: {}", text(&out)));
    }
    Ok(())
}

fn disconnect(lab: &Lab) -> Res {
    let out = lab.devnet(&["disconnect", "--session", "lab"], &[])?;
    if !out.status.success() {
        return Err(format!("disconnect failed: {}", text(&out)));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = lab.status()?;
        if s.as_array().is_some_and(|a| a.is_empty()) {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("the session is still there: {s}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // The background `devnet connect` that --connect started has gone too.
    let left =
        Command::new("pgrep").args(["-f", "devnet connect --context lab"]).output().map_err(|e| e.to_string())?;
    if left.status.success() {
        return Err(format!("the background devnet connect is still running: {}", text(&left)));
    }
    lab.laptop_unchanged("after the preflight sessions")
}

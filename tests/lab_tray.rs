//! The tray app as a person uses it: the real app (`devnet-tray`), in a
//! real window under Xvfb, driven through tauri-driver and WebKitGTK's
//! WebKitWebDriver, as a desktop user (no root, group devnet) on the lab's
//! laptop, against the lab's real devnetd. Connect from the window and see
//! "tunnel" with each CIDR's evidence; walk into the office (Calico's BIRD
//! starts peering with the office switch) and see "direct" and one
//! notification, shown by a real notification daemon (dunst) and recorded
//! off the session bus; read the tray's menu and tooltip over D-Bus as a
//! panel does; disconnect from the window and find the laptop restored.
//! Screenshots go to `$DEVNET_ARTIFACTS/tray/` (default
//! `target/test-artifacts/tray/`).
//!
//! The cluster is the lab's stand-in API server (`lab.sh api`): the office
//! walk-in needs the lab's BGP nodes, which the real node does not join.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use devnet_lab::harness::{self, Lab, OnFailure, Res, text};
use devnet_lab::webdriver::Session;

const LAB: &str = "tr";
/// The desktop user.
const UID: u32 = 4243;

static WINDOW: Mutex<Option<Session>> = Mutex::new(None);

fn main() {
    harness::run(
        "tray",
        setup,
        &[
            ("tray_01_the_window_opens_and_reads_devnetd_and_the_kubeconfig", opens),
            ("tray_02_connect_from_the_window_shows_tunnel_with_each_cidrs_evidence", connect_tunnel),
            ("tray_03_walking_into_the_office_shows_direct_and_one_notification", walk_into_office),
            ("tray_04_the_tray_menu_and_tooltip_read_over_dbus_as_a_panel_does", tray_over_dbus),
            ("tray_05_disconnect_from_the_window_restores_the_laptop", disconnect),
            ("tray_05b_a_failed_connect_says_why_in_the_window_and_the_icon", failed_connect),
            ("tray_06_idle_the_app_sleeps_and_stays_small", idle),
        ],
        OnFailure::Keep,
    )
}

fn setup() -> Res<Lab> {
    let lab = Lab::up(LAB)?;
    lab.sh_ok("api", &[])?;
    Ok(lab)
}

fn artifacts() -> PathBuf {
    std::env::var_os("DEVNET_ARTIFACTS")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts"), PathBuf::from)
        .join("tray")
}

fn desktop(lab: &Lab, args: &[&str]) -> Res<String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("lab/desktop.sh");
    let out = Command::new("bash")
        .arg(script)
        .args(args)
        .env("DEVNET_BIN", &lab.bin)
        .output()
        .map_err(|e| format!("desktop.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!("desktop.sh {args:?} failed: {}", text(&out)));
    }
    Ok(text(&out))
}

/// The context names of the kubeconfig the window's user has (a copy of the
/// lab's), in file order, read as devnet reads kubeconfigs.
fn kubeconfig_contexts(lab: &Lab) -> Res<Vec<String>> {
    let path = lab.dir.join("kubeconfig");
    let config = kube::config::Kubeconfig::read_from(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(config.contexts.into_iter().map(|c| c.name).collect())
}

fn with_window<T>(f: impl FnOnce(&Session) -> Res<T>) -> Res<T> {
    let w = WINDOW.lock().map_err(|e| e.to_string())?;
    f(w.as_ref().ok_or("the window did not open (see the first trial)")?)
}

fn badge(w: &Session, state: &str, within: Duration) -> Res {
    w.wait_text("[data-testid=badge]", state, within).map(drop)
}

fn opens(lab: &Lab) -> Res {
    lab.ensure_daemon()?;
    harness::ensure_group(devnet_ipc::GROUP)?;
    desktop(lab, &["start", LAB, &UID.to_string()])?;
    let ns = format!("{LAB}-laptop");
    let app = lab.bin.join("devnet-tray");
    let w = Session::start(&ns, 4444, &app, &["--window"])?;
    if let Err(e) = badge(&w, "off", Duration::from_secs(30)) {
        let _ = w.screenshot(&artifacts().join("01-failed.png"));
        let page = w.script("return document.documentElement.outerHTML.slice(0, 3000)").unwrap_or_default();
        return Err(format!("{e}\nthe page: {page}"));
    }
    let daemon = w.text_of("[data-testid=daemon]")?;
    if !daemon.contains("devnetd") {
        return Err(format!("the window should say which devnetd answered: {daemon:?}"));
    }
    // The kubeconfig's contexts, the current one chosen.
    let chosen = w.script("return document.querySelector('#context').value")?;
    if chosen != "lab" {
        return Err(format!("the current context should be chosen: {chosen}"));
    }
    let options = w.script("return Array.from(document.querySelectorAll('#context option')).map(o => o.value)")?;
    let want = kubeconfig_contexts(lab)?;
    if options != serde_json::json!(want) {
        return Err(format!(
            "every context of the kubeconfig should be offered, in its order: {options}, want {want:?}"
        ));
    }
    w.screenshot(&artifacts().join("01-off.png"))?;
    *WINDOW.lock().map_err(|e| e.to_string())? = Some(w);
    Ok(())
}

fn connect_tunnel(lab: &Lab) -> Res {
    with_window(|w| {
        let connect = w.xpath("//button[normalize-space()='Connect']")?;
        let began = Instant::now();
        w.click(&connect)?;
        // Progress shows while discovery and the relay run.
        badge(w, "tunnel", Duration::from_secs(120)).map_err(|e| format!("{e}\nengine log: {}", lab.daemon_log()))?;
        println!("connect from the window to tunnel: {:?}", began.elapsed());
        let rows = w.texts("[data-testid=path-row]")?;
        if rows.len() < 4 {
            return Err(format!("every discovered CIDR should have its row: {rows:?}"));
        }
        for t in &rows {
            if !t.contains("tunnel") || !t.contains("did not answer") {
                return Err(format!("a tunnelled CIDR should show its evidence (the probe that got no answer): {t}"));
            }
        }
        let relay = w.text_of("[data-testid=relay]")?;
        if !relay.contains("transport") || !relay.contains("devnet-relay") {
            return Err(format!("the relay and its transport should show: {relay}"));
        }
        let found = w.text_of("[data-testid=discovered]")?;
        if !found.contains("pod CIDR") || !found.contains("10.244.1.0/24") {
            return Err(format!("what discovery found, and where, should show: {found}"));
        }
        // The user hears of it once it settled.
        wait_notification(lab, 0, "lab: tunnel", Duration::from_secs(15))?;
        // devnetd agrees.
        let s = lab.status()?;
        if s["state"] != "connected" {
            return Err(format!("devnetd's session should be connected: {s}"));
        }
        w.screenshot(&artifacts().join("02-tunnel.png"))
    })
}

fn notifications(lab: &Lab) -> String {
    std::fs::read_to_string(lab.dir.join("desktop/notifications.log")).unwrap_or_default()
}

/// Waits for a Notify call, after the first `skip` bytes of the log, that
/// carries `want`; the log from `skip` on.
fn wait_notification(lab: &Lab, skip: usize, want: &str, within: Duration) -> Res<String> {
    let start = Instant::now();
    loop {
        let fresh = notifications(lab).get(skip..).unwrap_or_default().to_owned();
        if fresh.contains(want) {
            return Ok(fresh);
        }
        if start.elapsed() > within {
            return Err(format!("no notification {want:?} within {within:?}:\n{fresh}"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn walk_into_office(lab: &Lab) -> Res {
    let before = notifications(lab);
    lab.sh_ok("bgp", &["all"])?;
    with_window(|w| {
        let began = Instant::now();
        badge(w, "direct", Duration::from_secs(120))?;
        println!("BGP up to the window saying direct: {:?}", began.elapsed());
        for t in w.texts("[data-testid=path-row]")? {
            if !t.contains("direct") || !t.contains("ms") {
                return Err(format!("a direct CIDR should show its route and probe RTT: {t}"));
            }
        }
        // One notification says so, once the change settled and at most one
        // per 30 s (the connect's came moments ago).
        let fresh = wait_notification(lab, before.len(), "lab: direct", Duration::from_secs(45))?;
        if !fresh.contains("the office routes pods and services now: direct") {
            return Err(format!("the notification should say what the office routes now:\n{fresh}"));
        }
        w.screenshot(&artifacts().join("03-direct.png"))?;
        // devnetd re-checks every path again and again: no more notifications.
        std::thread::sleep(Duration::from_secs(15));
        let later = notifications(lab)[before.len()..].matches("member=Notify").count();
        if later != 1 {
            return Err(format!(
                "exactly one notification for one change, not one per re-check: {later}\n{}",
                &notifications(lab)[before.len()..]
            ));
        }
        Ok(())
    })
}

/// A command on the laptop as the desktop user, on its session bus.
fn as_desktop_user(lab: &Lab, cmd: &[&str]) -> Res<String> {
    let bus = format!("DBUS_SESSION_BUS_ADDRESS=unix:path={}", lab.dir.join("desktop/bus").display());
    let uid = UID.to_string();
    let mut all = vec!["setpriv", "--reuid", &uid, "--regid", &uid, "--clear-groups", "--", "env", &bus];
    all.extend(cmd);
    lab.laptop_ok(&all)
}

/// A D-Bus method call on the desktop user's session bus, as a panel makes it.
fn gdbus(lab: &Lab, dest: &str, path: &str, method: &str, args: &[&str]) -> Res<String> {
    let mut cmd = vec!["gdbus", "call", "--session", "--dest", dest, "--object-path", path, "--method", method, "--"];
    cmd.extend(args);
    as_desktop_user(lab, &cmd)
}

/// A property of the tray's StatusNotifierItem.
fn item_property(lab: &Lab, item: &str, name: &str) -> Res<String> {
    gdbus(
        lab,
        item,
        "/StatusNotifierItem",
        "org.freedesktop.DBus.Properties.Get",
        &["org.kde.StatusNotifierItem", name],
    )
}

fn tray_over_dbus(lab: &Lab) -> Res {
    let names = gdbus(lab, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus.ListNames", &[])?;
    let item = names
        .split(['\'', '"'])
        .find(|n| n.starts_with("org.kde.StatusNotifierItem-"))
        .ok_or_else(|| format!("the tray item is not on the session bus: {names}"))?
        .to_owned();
    let layout = gdbus(lab, &item, "/MenuBar", "com.canonical.dbusmenu.GetLayout", &["0", "-1", "[]"])?;
    for want in [
        "lab: direct",
        "Disconnect lab",
        "Open devnet",
        "Run doctor",
        "Start at login",
        "Disconnect and quit",
        "lab (current)",
    ] {
        if !layout.contains(want) {
            return Err(format!("the tray menu should have {want:?}:\n{layout}"));
        }
    }
    let tooltip = item_property(lab, &item, "ToolTip")?;
    if !tooltip.contains("devnet: lab direct") || !tooltip.contains("10.244.1.0/24 pods: direct via") {
        return Err(format!("the tooltip should say the state and each CIDR's path: {tooltip}"));
    }
    let title = item_property(lab, &item, "Title")?;
    if !title.contains("devnet: direct") {
        return Err(format!("the item's title should carry the state: {title}"));
    }
    // The icon is the direct one, at every size a panel may ask for.
    let icon = item_property(lab, &item, "IconPixmap")?;
    if ["16, 16", "22, 22", "32, 32"].iter().any(|size| !icon.contains(size)) {
        return Err(format!("the icon should come in 16, 22 and 32 px: {}", &icon[..icon.len().min(200)]));
    }
    Ok(())
}

fn disconnect(lab: &Lab) -> Res {
    let result = with_window(|w| {
        let button = w.xpath("//button[normalize-space()='Disconnect lab']")?;
        w.click(&button)?;
        if let Err(e) = badge(w, "off", Duration::from_secs(30)) {
            let _ = w.screenshot(&artifacts().join("04-failed.png"));
            return Err(format!("{e}\n{}", daemon_log_tail(lab)));
        }
        w.screenshot(&artifacts().join("04-off-again.png"))
    });
    lab.sh_ok("bgp", &["off"])?;
    result?;
    lab.laptop_unchanged("after disconnecting from the tray app's window")
        .map_err(|e| format!("{e}\n{}", daemon_log_tail(lab)))
}

/// The end of devnetd's log, for a failure's message (the whole log of a
/// session would bury it).
fn daemon_log_tail(lab: &Lab) -> String {
    let log = lab.daemon_log();
    let lines: Vec<&str> = log.lines().collect();
    format!("devnetd's log, last lines:\n{}", lines[lines.len().saturating_sub(30)..].join("\n"))
}

/// A cluster whose API server does not answer (context lab-down): the
/// window says so in the client's words, the state is "error", and nothing
/// on the laptop changed.
fn failed_connect(lab: &Lab) -> Res {
    with_window(|w| {
        w.script(
            "const s = document.querySelector('#context'); s.value = 'lab-down'; \
             s.dispatchEvent(new Event('change', {bubbles: true})); return s.value",
        )?;
        w.click(&w.xpath("//button[normalize-space()='Connect']")?)?;
        badge(w, "error", Duration::from_secs(30))?;
        let failure = w.text_of("[data-testid=failure]")?;
        if !failure.contains("6449") {
            return Err(format!("the failure should name the API server that did not answer: {failure:?}"));
        }
        let headline = w.text_of("h1")?;
        if !headline.contains("could not connect to lab-down") {
            return Err(format!("the headline should say the connect failed: {headline:?}"));
        }
        // Nothing is in progress: nothing may keep animating (a spinner left
        // running would cost CPU for as long as the window is open).
        std::thread::sleep(Duration::from_secs(2));
        let running = w.script(
            "return document.getAnimations().map(a => (a.animationName || a.transitionProperty) + ' on ' + (a.effect && a.effect.target ? a.effect.target.className : '?'))",
        )?;
        if running.as_array().is_none_or(|a| !a.is_empty()) {
            return Err(format!("animations still run after the connect failed: {running}"));
        }
        w.screenshot(&artifacts().join("05-failed-connect.png"))
    })?;
    lab.laptop_unchanged("after a failed connect from the window")
}

/// The app and every process it started (WebKit's web and network processes).
fn app_processes() -> Res<Vec<u32>> {
    let out = Command::new("pgrep")
        .args(["-u", &UID.to_string(), "-x", "devnet-tray"])
        .output()
        .map_err(|e| e.to_string())?;
    let mut pids: Vec<u32> =
        String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect();
    if pids.len() != 1 {
        return Err(format!("one devnet-tray should run, found {pids:?}"));
    }
    // Children, by walking every process's parent.
    let parent_of = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
    };
    let all: Vec<u32> = std::fs::read_dir("/proc")
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let mut grew = true;
    while grew {
        grew = false;
        for &p in &all {
            if !pids.contains(&p) && parent_of(p).is_some_and(|pp| pids.contains(&pp)) {
                pids.push(p);
                grew = true;
            }
        }
    }
    Ok(pids)
}

/// Proportional set size in KiB (shared pages split between their users, so
/// the processes' sum is what the app costs).
fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("Pss:"))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// CPU ticks (user + system) and context switches (wake-ups) of each thread.
fn per_thread(pids: &[u32]) -> std::collections::HashMap<(u32, String), (u64, u64)> {
    let mut out = std::collections::HashMap::new();
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for t in tasks.flatten() {
            let dir = t.path();
            let (mut ticks, mut wakeups) = (0, 0);
            if let Ok(stat) = std::fs::read_to_string(dir.join("stat"))
                && let Some((_, rest)) = stat.rsplit_once(')')
            {
                let f: Vec<&str> = rest.split_whitespace().collect();
                ticks = [11, 12].iter().filter_map(|i| f.get(*i)?.parse::<u64>().ok()).sum();
            }
            if let Ok(status) = std::fs::read_to_string(dir.join("status")) {
                wakeups = status
                    .lines()
                    .filter(|l| l.contains("ctxt_switches"))
                    .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                    .sum();
            }
            out.insert((*pid, t.file_name().to_string_lossy().into_owned()), (ticks, wakeups));
        }
    }
    out
}

/// Memory, CPU and wake-ups over `secs` of nothing happening.
fn measure(what: &str, secs: u64) -> Res<(u64, u64, u64)> {
    let pids = app_processes()?;
    let before = per_thread(&pids);
    std::thread::sleep(Duration::from_secs(secs));
    // Per thread, so one that ends in between subtracts nothing.
    let (mut ticks, mut wakeups) = (0, 0);
    let mut by_process: std::collections::BTreeMap<u32, (u64, u64)> = Default::default();
    for (thread, (t, w)) in per_thread(&pids) {
        let (t0, w0) = before.get(&thread).copied().unwrap_or_default();
        let (dt, dw) = (t.saturating_sub(t0), w.saturating_sub(w0));
        ticks += dt;
        wakeups += dw;
        let e = by_process.entry(thread.0).or_default();
        e.0 += dt;
        e.1 += dw;
    }
    for (pid, (t, w)) in &by_process {
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        println!("  {pid} {}: {t} ticks, {w} wake-ups, {:.1} MiB PSS", name.trim(), pss_kib(*pid) as f64 / 1024.0);
    }
    let pss: u64 = pids.iter().map(|p| pss_kib(*p)).sum();
    println!(
        "{what}: {} processes, {:.1} MiB PSS; over {secs} s idle: {ticks} CPU ticks, {wakeups} wake-ups",
        pids.len(),
        pss as f64 / 1024.0
    );
    Ok((pss, ticks, wakeups))
}

/// Nothing changes (devnetd runs no session): the app does not poll, and
/// with its window closed it is a tray icon and a socket.
fn idle(lab: &Lab) -> Res {
    let result = (|| {
        // Let WebKit finish what the last screenshot and re-render started.
        std::thread::sleep(Duration::from_secs(5));
        // A burst (WebKit re-rendering after a screenshot) may take a few
        // seconds; a spinner would never stop. Up to three windows of 10 s.
        let mut open_ticks = u64::MAX;
        for _ in 0..3 {
            open_ticks = measure("tray app, window open", 10)?.1;
            if open_ticks <= 10 {
                break;
            }
        }
        if open_ticks > 10 {
            return Err(format!("an idle open window should not spin: {open_ticks} CPU ticks in 10 s"));
        }
        // As a login starts it: no window, a tray icon and a socket.
        if let Some(w) = WINDOW.lock().map_err(|e| e.to_string())?.take() {
            w.quit()?;
        }
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("lab/desktop.sh");
        let mut app = Command::new("bash")
            .arg(script)
            .args(["app", LAB])
            .env("DEVNET_BIN", &lab.bin)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_secs(5));
        let measured = measure("tray app, no window", 10);
        let _ = app.kill();
        let (pss, ticks, wakeups) = measured?;
        if pss > 80 * 1024 {
            return Err(format!("the idle tray app should stay under 80 MiB, not {} MiB", pss / 1024));
        }
        if ticks > 1 || wakeups > 30 {
            return Err(format!("an idle tray app should not poll: {ticks} CPU ticks, {wakeups} wake-ups in 10 s"));
        }
        Ok(())
    })();
    if let Ok(w) = WINDOW.lock()
        && let Some(w) = w.as_ref()
    {
        let _ = w.quit();
    }
    let _ = desktop(lab, &["stop", LAB]);
    result
}

//! Driving the lab from a test: build it, run commands in its hosts, start
//! devnetd on the laptop as its service unit would, connect the real `devnet`
//! client to it, and snapshot what the engine may change. Errors are strings that say what failed and show the
//! command's output, for the test report.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A result whose error is a message for the test report.
pub type Res<T = ()> = Result<T, String>;

/// A lab built by `lab/lab.sh` and the engine running in its laptop.
#[derive(Debug)]
pub struct Lab {
    pub name: &'static str,
    pub bin: PathBuf,
    pub script: PathBuf,
    pub dir: PathBuf,
    /// The running `devnet connect` (a devnetd client, or `--foreground`).
    engine: Mutex<Option<Child>>,
    /// The laptop's devnetd, started on first use.
    daemon: Mutex<Option<Child>>,
    /// The laptop's network before devnet touched it.
    pub laptop_before: String,
    /// Set by the first [`down`](Self::down).
    torn_down: std::sync::atomic::AtomicBool,
}

/// Both output streams of a command.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// systemd's side of `Type=notify`: the datagram socket a service is
/// pointed at with `$NOTIFY_SOCKET`, and the wait for its `READY=1`.
#[derive(Debug)]
pub struct ReadySocket(std::os::unix::net::UnixDatagram);

impl ReadySocket {
    /// Binds `path` (replacing a stale one).
    pub fn bind(path: &Path) -> Res<Self> {
        let _ = std::fs::remove_file(path);
        let socket = std::os::unix::net::UnixDatagram::bind(path).map_err(|e| e.to_string())?;
        socket.set_nonblocking(true).map_err(|e| e.to_string())?;
        Ok(Self(socket))
    }

    /// Waits up to 10 s for `READY=1`; `exited` says whether devnetd died
    /// meanwhile, `log` what it said (for the error).
    pub fn wait(&self, mut exited: impl FnMut() -> Option<std::process::ExitStatus>, log: impl Fn() -> String) -> Res {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Some(status) = exited() {
                return Err(format!("devnetd exited with {status}:\n{}", log()));
            }
            let mut buf = [0u8; 256];
            if let Ok(n) = self.0.recv(&mut buf)
                && String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "READY=1")
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("devnetd did not say READY=1 within 10 s:\n{}", log()))
    }
}

/// The directory holding the workspace's binaries (target/<profile>).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test>-<hash> → target/<profile>
    exe.parent().and_then(Path::parent).expect("target dir").to_owned()
}

impl Lab {
    /// Builds lab `name` (1-6 characters). Fails, never skips, without root.
    pub fn up(name: &'static str) -> Res<Self> {
        let uid = Command::new("id").arg("-u").output().map_err(|e| e.to_string())?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("the lab needs root (network namespaces, TUN devices): run the tests as root".into());
        }
        let bin = bin_dir();
        for b in ["devnet", "devnetd", "devnet-relay", "devnet-labd"] {
            if !bin.join(b).exists() {
                return Err(format!(
                    "{} is missing: run `cargo build --workspace --bins` first",
                    bin.join(b).display()
                ));
            }
        }
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("lab/lab.sh");
        let dir = PathBuf::from(format!("/tmp/devnet-lab-{name}"));
        let mut lab = Lab {
            name,
            bin,
            script,
            dir,
            engine: Mutex::new(None),
            daemon: Mutex::new(None),
            laptop_before: String::new(),
            torn_down: Default::default(),
        };
        let out = lab.sh(&["up", name])?;
        if !out.status.success() {
            return Err(format!("building the lab failed: {}", text(&out)));
        }
        lab.laptop_before = lab.laptop_snapshot()?;
        Ok(lab)
    }

    /// Tears the lab down, once.
    pub fn down(&self) {
        if self.torn_down.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if let Some(mut child) = self.engine.lock().expect("lock").take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.stop_daemon();
        let _ = self.sh(&["down", self.name]);
    }

    /// Runs `lab.sh <args…>`.
    pub fn sh(&self, args: &[&str]) -> Res<Output> {
        Command::new("bash")
            .arg(&self.script)
            .args(args)
            .env("DEVNET_BIN", &self.bin)
            .env("DEVNET_SOCKET", self.socket())
            .output()
            .map_err(|e| format!("running lab.sh {args:?}: {e}"))
    }

    /// Runs `lab.sh <command> <lab> <args…>` and requires success.
    pub fn sh_ok(&self, command: &str, args: &[&str]) -> Res {
        let mut all = vec![command, self.name];
        all.extend_from_slice(args);
        let out = self.sh(&all)?;
        if !out.status.success() {
            return Err(format!("lab.sh {all:?} failed: {}", text(&out)));
        }
        Ok(())
    }

    /// Runs a command in one of the lab's hosts.
    pub fn exec(&self, host: &str, cmd: &[&str]) -> Res<Output> {
        let mut args = vec!["exec", self.name, host];
        args.extend_from_slice(cmd);
        self.sh(&args)
    }

    /// Runs a command on the laptop and requires success; returns stdout.
    pub fn laptop_ok(&self, cmd: &[&str]) -> Res<String> {
        let out = self.exec("laptop", cmd)?;
        if !out.status.success() {
            return Err(format!("{cmd:?} failed on the laptop: {}", text(&out)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Path of one of the workspace's binaries.
    pub fn tool(&self, name: &str) -> String {
        self.bin.join(name).display().to_string()
    }

    /// The engine's state directory on the laptop.
    pub fn state_dir(&self) -> String {
        self.dir.join("laptop-state").display().to_string()
    }

    /// devnetd's socket for this lab.
    pub fn socket(&self) -> String {
        self.dir.join("run/devnetd.sock").display().to_string()
    }

    /// What devnetd logged.
    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("devnetd.log")).unwrap_or_default()
    }

    /// The pid of the running devnetd.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.lock().expect("lock").as_ref().map(Child::id)
    }

    /// Starts devnetd on the laptop unless it runs.
    pub fn ensure_daemon(&self) -> Res {
        {
            let mut daemon = self.daemon.lock().expect("lock");
            if let Some(child) = daemon.as_mut() {
                if matches!(child.try_wait(), Ok(None)) {
                    return Ok(());
                }
                // It exited: with the lab's systemd-resolved stopped, the
                // mount namespace devnetd ran in went away with it.
                *daemon = None;
            }
        }
        self.start_daemon()
    }

    /// Starts devnetd on the laptop as `installers/linux/devnetd.service`
    /// starts it: the unit's capability bounding set, no ambient or
    /// inheritable capabilities, no_new_privs and its supplementary group,
    /// translated to setpriv. Waits, as systemd does for `Type=notify`, for
    /// its `READY=1` on `$NOTIFY_SOCKET`.
    pub fn start_daemon(&self) -> Res {
        ensure_group(devnet_ipc::GROUP)?;
        let unit = service_unit()?;
        let setpriv = unit.setpriv_args()?;
        // The lab's resolv.conf: the laptop namespace's own file, or with
        // the lab's systemd-resolved, the mount namespace's /etc/resolv.conf.
        let resolv_conf = if self.dir.join("resolved/holder.pid").exists() {
            "/etc/resolv.conf".to_owned()
        } else {
            format!("/etc/netns/{}-laptop/resolv.conf", self.name)
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("devnetd.log"))
            .map_err(|e| e.to_string())?;
        let notify_path = self.dir.join("devnetd.notify");
        let ready = ReadySocket::bind(&notify_path)?;
        let child = self
            .on_laptop()
            .arg("setpriv")
            .args(&setpriv)
            .arg("--")
            .arg(self.bin.join("devnetd"))
            .args(["--socket", &self.socket(), "--state-dir", &self.state_dir(), "--resolv-conf", &resolv_conf])
            .env("NOTIFY_SOCKET", &notify_path)
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting devnetd: {e}"))?;
        *self.daemon.lock().expect("lock") = Some(child);
        ready.wait(
            || self.daemon.lock().expect("lock").as_mut().and_then(|c| c.try_wait().ok().flatten()),
            || self.daemon_log(),
        )?;
        // Ready means a client can connect now, not soon.
        std::os::unix::net::UnixStream::connect(self.socket())
            .map_err(|e| format!("devnetd said READY=1 but its socket refuses: {e}"))?;
        Ok(())
    }

    /// Stops devnetd as its unit would (SIGTERM) and waits for it.
    pub fn stop_daemon(&self) -> Res {
        let Some(pid) = self.daemon_pid() else { return Ok(()) };
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let waited = self.wait_daemon_exit(Duration::from_secs(15));
        self.kill_daemon();
        waited
    }

    /// Waits for devnetd to exit on its own (after a signal); it must exit 0.
    pub fn wait_daemon_exit(&self, within: Duration) -> Res {
        match wait_child(&self.daemon, within)? {
            Some(status) if !status.success() => Err(format!("devnetd exited with {status}")),
            _ => Ok(()),
        }
    }

    /// SIGKILL to devnetd (and so to every session's engine).
    pub fn kill_daemon(&self) {
        if let Some(mut child) = self.daemon.lock().expect("lock").take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// After a crash: what the machine's next boot of the service does.
    /// devnetd starts, undoes what the dead one journaled, and serves.
    pub fn restart_daemon_after_crash(&self) -> Res {
        self.kill_engine();
        let had_journal = self.journal_exists();
        let before = self.daemon_log().len();
        self.start_daemon()?;
        let log = self.daemon_log();
        if had_journal && !log[before..].contains("undid a previous session's changes") {
            return Err(format!("devnetd did not undo the crashed session:\n{log}"));
        }
        Ok(())
    }

    /// Whether any session journal is left in the state directory.
    pub fn journal_exists(&self) -> bool {
        !state_files(Path::new(&self.state_dir())).is_empty()
    }

    /// Starts `devnet connect` on the laptop and waits for `state`.
    pub fn connect(&self, state: &str) -> Res {
        self.connect_with(&self.dir.join("profile.toml"), state)
    }

    /// [`connect`](Self::connect) with another profile.
    pub fn connect_with(&self, profile: &Path, state: &str) -> Res {
        let profile = profile.display().to_string();
        self.connect_args(&["--profile", &profile], &[], state, Duration::from_secs(10))
    }

    /// `devnet connect <args…>` on the laptop with extra environment, waiting
    /// up to `within` for `state`.
    pub fn connect_args(&self, args: &[&str], env: &[(&str, &str)], state: &str, within: Duration) -> Res {
        self.connect_as(&[], args, env, state, within)
    }

    /// [`connect_args`](Self::connect_args) behind a command prefix, such as
    /// [`as_user`] to run as an unprivileged user.
    pub fn connect_as(
        &self,
        prefix: &[String],
        args: &[&str],
        env: &[(&str, &str)],
        state: &str,
        within: Duration,
    ) -> Res {
        if !args.contains(&"--foreground") {
            self.ensure_daemon()?;
        }
        let log = std::fs::File::create(self.dir.join("engine.log")).map_err(|e| e.to_string())?;
        let child = self
            .on_laptop()
            .args(prefix)
            .arg(self.bin.join("devnet"))
            .args(["--state-dir", &self.foreground_state_dir(), "connect"])
            .args(args)
            .envs(env.iter().copied())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting devnet connect: {e}"))?;
        *self.engine.lock().expect("lock") = Some(child);
        self.wait_status(state, within)
    }

    /// The pid of the running `devnet connect`.
    pub fn client_pid(&self) -> Option<u32> {
        self.engine.lock().expect("lock").as_ref().map(Child::id)
    }

    /// Waits for `devnet connect` to exit; its exit status.
    pub fn wait_client_exit(&self, within: Duration) -> Res<std::process::ExitStatus> {
        wait_child(&self.engine, within)?.ok_or_else(|| "no devnet connect runs".to_owned())
    }

    /// A command prefix that runs on the laptop: its network namespace, and
    /// when the lab's systemd-resolved runs (`lab.sh resolved`), the mount
    /// namespace it lives in (its /run, its system bus, its resolv.conf).
    pub fn on_laptop(&self) -> Command {
        let mut c = match std::fs::read_to_string(self.dir.join("resolved/holder.pid")) {
            Ok(pid) => {
                let mut c = Command::new("nsenter");
                c.args(["-t", pid.trim(), "-m", "-n"]);
                c
            }
            Err(_) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &format!("{}-laptop", self.name)]);
                c
            }
        };
        c.env("DEVNET_SOCKET", self.socket());
        c
    }

    /// The state directory of `devnet connect --foreground` (devnetd's is
    /// [`state_dir`](Self::state_dir)).
    pub fn foreground_state_dir(&self) -> String {
        self.dir.join("laptop-state/foreground").display().to_string()
    }

    /// Runs `devnet <args…>` on the laptop to completion.
    pub fn devnet(&self, args: &[&str], env: &[(&str, &str)]) -> Res<Output> {
        self.ensure_daemon()?;
        self.on_laptop()
            .arg(self.bin.join("devnet"))
            .args(["--state-dir", &self.foreground_state_dir()])
            .args(args)
            .envs(env.iter().copied())
            .output()
            .map_err(|e| format!("running devnet {args:?}: {e}"))
    }

    /// `devnet status --json`.
    /// Exit 3 (not connected) still prints the sessions.
    pub fn status(&self) -> Res<serde_json::Value> {
        let out = self
            .exec("laptop", &[&self.tool("devnet"), "--state-dir", &self.foreground_state_dir(), "status", "--json"])?;
        if !matches!(out.status.code(), Some(0 | 3)) {
            return Err(format!("devnet status failed: {}", text(&out)));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("status is not JSON: {e}"))
    }

    /// Waits until the engine reports `state`.
    pub fn wait_status(&self, state: &str, within: Duration) -> Res {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < within {
            match self.status() {
                Ok(s) if s["state"] == state => return Ok(()),
                Ok(s) => last = s.to_string(),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("engine not {state} within {within:?}; last status: {last}; engine log:\n{}", self.engine_log()))
    }

    /// What `devnet connect` printed, then what devnetd logged (the
    /// engine runs there).
    pub fn engine_log(&self) -> String {
        let client = std::fs::read_to_string(self.dir.join("engine.log")).unwrap_or_default();
        format!("{client}\n--- devnetd ---\n{}", self.daemon_log())
    }

    /// `devnet disconnect`, then waits for the engine to exit cleanly.
    pub fn disconnect(&self) -> Res {
        self.laptop_ok(&[&self.tool("devnet"), "--state-dir", &self.foreground_state_dir(), "disconnect"])?;
        self.wait_engine_exit(Duration::from_secs(5))
    }

    /// After a failed trial: stop any engine and undo what it left, so the
    /// next trial starts from a clean laptop.
    pub fn reset(&self) {
        self.kill_engine();
        let _ = self.cleanup();
    }

    /// Kills the engine with SIGKILL: devnetd (where it runs) and the
    /// client, or the `--foreground` process.
    pub fn kill_engine(&self) {
        self.kill_daemon();
        if let Some(mut child) = self.engine.lock().expect("lock").take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `devnet cleanup` on the laptop (both state directories); its output.
    pub fn cleanup(&self) -> Res<String> {
        self.laptop_ok(&[
            &self.tool("devnet"),
            "--state-dir",
            &self.foreground_state_dir(),
            "cleanup",
            "--daemon-state-dir",
            &self.state_dir(),
        ])
    }

    /// Waits for the engine process to exit; a non-zero exit is an error.
    pub fn wait_engine_exit(&self, within: Duration) -> Res {
        match wait_child(&self.engine, within)? {
            Some(status) if !status.success() && status.code().is_some() => {
                Err(format!("engine exited with {status}; log:\n{}", self.engine_log()))
            }
            _ => Ok(()),
        }
    }

    /// Everything about the laptop's network that devnet may touch.
    pub fn laptop_snapshot(&self) -> Res<String> {
        let mut s = String::new();
        for cmd in [
            &["ip", "-o", "link", "show"][..],
            &["ip", "-o", "addr", "show"],
            &["ip", "route", "show", "table", "all"],
            &["ip", "-6", "route", "show", "table", "all"],
            &["ip", "-4", "rule", "show"],
            &["ip", "-6", "rule", "show"],
        ] {
            s += &self.laptop_ok(cmd)?;
        }
        s += &std::fs::read_to_string(format!("/etc/netns/{}-laptop/resolv.conf", self.name)).unwrap_or_default();
        for f in state_files(Path::new(&self.state_dir())) {
            s += &format!("state file left: {f}\n");
        }
        Ok(s)
    }

    /// Requires the laptop's network to be as it was before devnet.
    pub fn laptop_unchanged(&self, when: &str) -> Res {
        let after = self.laptop_snapshot()?;
        if after != self.laptop_before {
            return Err(format!("laptop differs {when}:\n{}", snapshot_diff(&self.laptop_before, &after)));
        }
        Ok(())
    }

    /// An HTTP GET from the laptop; returns the body.
    pub fn curl(&self, url: &str) -> Res<String> {
        self.laptop_ok(&["curl", "-sS", "-m", "5", "-g", url])
    }

    /// `devnet-labd probe <args…>` on the laptop; returns stdout.
    pub fn probe(&self, args: &[&str]) -> Res<String> {
        let labd = self.tool("devnet-labd");
        let mut cmd = vec![labd.as_str(), "probe"];
        cmd.extend_from_slice(args);
        self.laptop_ok(&cmd)
    }

    /// A relay counter from its /metrics, read from the laptop through the NodePort.
    pub fn relay_metric(&self, name: &str) -> Res<u64> {
        let metrics = self.curl("http://10.60.20.11:31090/metrics")?;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("devnet_relay_{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("no metric {name} in:\n{metrics}"))
    }
}

/// Waits up to `within` for the process in `slot` to exit and empties the
/// slot; `None` when none ran.
fn wait_child(slot: &Mutex<Option<Child>>, within: Duration) -> Res<Option<std::process::ExitStatus>> {
    let start = Instant::now();
    let mut guard = slot.lock().expect("lock");
    let Some(child) = guard.as_mut() else { return Ok(None) };
    while start.elapsed() < within {
        if let Ok(Some(status)) = child.try_wait() {
            *guard = None;
            return Ok(Some(status));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("process {} did not exit within {within:?}", child.id()))
}

/// Journals, control sockets and resolv.conf backups under `dir`, at any
/// depth (devnetd keeps one directory per session).
fn state_files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            found.extend(state_files(&path));
        } else if ["journal.json", "engine.sock", "resolv.conf.orig"].iter().any(|f| path.ends_with(f)) {
            found.push(path.display().to_string());
        }
    }
    found
}

/// A command prefix that runs as `uid` (same gid) with the supplementary
/// groups named, with no capabilities: a user at a desktop.
pub fn as_user(uid: u32, groups: &[&str]) -> Res<Vec<String>> {
    let mut prefix = vec!["setpriv".to_owned(), format!("--reuid={uid}"), format!("--regid={uid}")];
    if groups.is_empty() {
        prefix.push("--clear-groups".into());
    } else {
        let gids: Res<Vec<String>> = groups.iter().map(|g| group_id(g).map(|id| id.to_string())).collect();
        prefix.push(format!("--groups={}", gids?.join(",")));
    }
    prefix.push("--".into());
    Ok(prefix)
}

/// Creates `group` as the package's sysusers.d file would, if it is missing.
pub fn ensure_group(group: &str) -> Res {
    if Command::new("getent").args(["group", group]).output().is_ok_and(|o| o.status.success()) {
        return Ok(());
    }
    let out = Command::new("groupadd").args(["--system", group]).output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("groupadd {group} failed: {}", text(&out)));
    }
    Ok(())
}

/// The gid of `group`.
pub fn group_id(group: &str) -> Res<u32> {
    let out = Command::new("getent").args(["group", group]).output().map_err(|e| e.to_string())?;
    String::from_utf8_lossy(&out.stdout)
        .split(':')
        .nth(2)
        .and_then(|g| g.trim().parse().ok())
        .ok_or_else(|| format!("no group {group}"))
}

/// The settings of `installers/linux/devnetd.service` that decide what
/// devnetd may do.
#[derive(Debug, Default)]
pub struct ServiceUnit {
    /// `ExecStart=`, split into words (no quoting in ours).
    pub exec_start: Vec<String>,
    pub bounding: Vec<String>,
    pub no_new_privs: bool,
    pub groups: Vec<String>,
}

/// Reads the service unit the package installs, from the repository.
pub fn service_unit() -> Res<ServiceUnit> {
    ServiceUnit::read(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../installers/linux/devnetd.service"))
}

impl ServiceUnit {
    /// Reads a unit file (the repository's, or one a package installed).
    pub fn read(path: &Path) -> Res<ServiceUnit> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut unit = ServiceUnit::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else { continue };
            let words = || value.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
            match key.trim() {
                "ExecStart" => unit.exec_start = words(),
                "CapabilityBoundingSet" => unit.bounding = words(),
                "NoNewPrivileges" => unit.no_new_privs = value.trim() == "yes",
                "SupplementaryGroups" => unit.groups = words(),
                _ => {}
            }
        }
        Ok(unit)
    }

    /// The same restrictions as setpriv arguments, with the host's gids.
    pub fn setpriv_args(&self) -> Res<Vec<String>> {
        self.setpriv_args_with(|g| group_id(g).map(|id| id.to_string()))
    }

    /// The same restrictions as setpriv arguments, each group given as
    /// `group` turns its name (a setpriv run inside a chroot can take the
    /// names and resolve them in the chroot's own group file).
    pub fn setpriv_args_with(&self, group: impl Fn(&str) -> Res<String>) -> Res<Vec<String>> {
        let caps: Vec<String> =
            self.bounding.iter().map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase())).collect();
        let mut args = vec![format!("--bounding-set=-all,{}", caps.join(",")), "--inh-caps=-all".to_owned()];
        if self.no_new_privs {
            args.push("--no-new-privs".into());
        }
        if !self.groups.is_empty() {
            let gids: Res<Vec<String>> = self.groups.iter().map(|g| group(g)).collect();
            args.push(format!("--groups={}", gids?.join(",")));
        }
        Ok(args)
    }
}

/// What the host's own namespace looks like; it must not change.
/// The lines one snapshot has and the other lacks (`-` before only, `+`
/// after only), in each one's order: what changed, without the whole of
/// both, so a failure's message stays short enough for CI's log tail.
pub fn snapshot_diff(before: &str, after: &str) -> String {
    let missing = before.lines().filter(|l| !after.lines().any(|a| a == *l)).map(|l| format!("- {l}"));
    let added = after.lines().filter(|l| !before.lines().any(|b| b == *l)).map(|l| format!("+ {l}"));
    let lines: Vec<String> = missing.chain(added).collect();
    if lines.is_empty() {
        // Same lines, other order or count.
        return format!("the same lines, reordered or repeated:\nbefore:\n{before}\nafter:\n{after}");
    }
    lines.join("\n")
}

pub fn host_snapshot() -> String {
    let mut s = String::new();
    for cmd in [
        &["ip", "-o", "link", "show"][..],
        &["ip", "route", "show", "table", "all"],
        &["ip", "-6", "route", "show", "table", "all"],
    ] {
        if let Ok(o) = Command::new(cmd[0]).args(&cmd[1..]).output() {
            s += &String::from_utf8_lossy(&o.stdout);
        }
    }
    s += &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if let Ok(o) = Command::new("iptables-save").output() {
        // Rules only: the set of (empty) tables listed can change when the lab
        // loads a netfilter module, which is not a change to the firewall.
        s += &String::from_utf8_lossy(&o.stdout).lines().filter(|l| l.starts_with("-A")).collect::<Vec<_>>().join("\n");
    }
    s
}

impl Lab {
    /// The real cluster's web pod, by its pod IP, and its Service's
    /// ClusterIP (real kube-proxy) answer from the laptop.
    pub fn real_web_answers(&self) -> Res {
        let pods = self.real_api("GET", "/api/v1/namespaces/demo/pods?labelSelector=app%3Dweb", None)?;
        let ip = pods["items"][0]["status"]["podIP"].as_str().ok_or(format!("no web pod IP: {pods}"))?.to_owned();
        for url in [format!("http://{ip}:8080/"), "http://10.96.0.20/".to_owned()] {
            let body = self.curl(&url)?;
            if !body.contains("hello from a real pod") {
                return Err(format!("{url} answered {body:?}"));
            }
        }
        Ok(())
    }

    /// `getent hosts <name>` on the laptop: the system resolver, as any
    /// program would use it. Returns the addresses.
    pub fn getent(&self, name: &str) -> Res<Vec<String>> {
        let out = self.laptop_ok(&["getent", "hosts", name])?;
        Ok(out.lines().filter_map(|l| l.split_whitespace().next().map(str::to_owned)).collect())
    }

    /// A request to the lab's REAL API server (`lab.sh realapi`) as its
    /// admin, from the api host; the answer's JSON.
    pub fn real_api(&self, method: &str, path: &str, body: Option<&str>) -> Res<serde_json::Value> {
        let url = format!("https://10.60.20.10:6443{path}");
        let mut args = vec!["curl", "-sk", "-m", "5", "-X", method, "-H", "Authorization: Bearer admin-token"];
        if let Some(body) = body {
            args.extend(["-H", "Content-Type: application/json", "--data-binary", body]);
        }
        args.push(&url);
        let out = self.exec("api", &args)?;
        serde_json::from_slice(&out.stdout).map_err(|e| format!("{method} {path}: {e}: {}", text(&out)))
    }

    /// The names the cluster DNS was asked for so far (its query log).
    pub fn cluster_dns_queries(&self) -> String {
        std::fs::read_to_string(self.dir.join("cluster-dns-queries.log")).unwrap_or_default()
    }
}

/// A lab test: a name and a function of the shared lab.
pub type TrialFn = (&'static str, fn(&Lab) -> Res);

/// After a failed trial: whether to stop the engine and undo what it left
/// (trials that stand alone), or leave the lab as it is (trials that build
/// on each other's state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    Reset,
    Keep,
}

/// Runs lab trials in order, one thread, on one lab built by `setup`; then
/// tears the lab down and checks, as a last trial named `<prefix>_99_…`,
/// that the host's own namespace did not change.
pub fn run(prefix: &str, setup: fn() -> Res<Lab>, trials: &[TrialFn], on_failure: OnFailure) -> ! {
    use libtest_mimic::{Arguments, Failed, Trial};
    let mut args = Arguments::from_args();
    args.test_threads = Some(1);
    let host_before = host_snapshot();
    let lab = setup().map(Arc::new);
    let mut list: Vec<Trial> = trials
        .iter()
        .map(|&(name, f)| {
            let lab = lab.clone();
            Trial::test(name, move || match &lab {
                Ok(lab) => f(lab).map_err(|e| {
                    if on_failure == OnFailure::Reset {
                        lab.reset();
                    }
                    Failed::from(e)
                }),
                Err(e) => Err(Failed::from(format!("lab unavailable: {e}"))),
            })
        })
        .collect();
    let lab_after = lab.clone();
    list.push(Trial::test(format!("{prefix}_99_host_namespace_unchanged"), move || {
        if let Ok(lab) = &lab {
            lab.down();
        }
        let after = host_snapshot();
        if after != host_before {
            return Err(Failed::from(format!("host namespace changed:\n{}", snapshot_diff(&host_before, &after))));
        }
        Ok(())
    }));
    let conclusion = libtest_mimic::run(&args, list);
    // A filter that leaves out the last trial must not leave the lab up.
    if let Ok(lab) = &lab_after {
        lab.down();
    }
    conclusion.exit()
}

#[cfg(test)]
mod tests {
    use super::snapshot_diff;

    #[test]
    fn a_snapshot_diff_names_only_the_changed_lines() {
        let before = "1: lo: <LOOPBACK,UP>\n2: eth0: <UP>\ndefault via 10.0.0.1 dev eth0\n";
        let after = "1: lo: <LOOPBACK,UP>\n2: eth0: <UP>\n9: devnet0: <UP>\n10.96.0.0/16 dev devnet0\n";
        assert_eq!(
            snapshot_diff(before, after),
            "- default via 10.0.0.1 dev eth0\n+ 9: devnet0: <UP>\n+ 10.96.0.0/16 dev devnet0"
        );
        let reordered = snapshot_diff("a\nb\n", "b\na\n");
        assert!(reordered.starts_with("the same lines, reordered"), "{reordered}");
    }
}

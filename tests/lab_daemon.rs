//! devnetd in the lab: started as its service unit starts it, used by
//! unprivileged members of group devnet, and refusing everyone and
//! everything else. The no-path lab (everything goes through the tunnel).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use devnet_ipc::client::{self, ClientError};
use devnet_ipc::codec;
use devnet_ipc::message::{ClientKind, ClientMsg, IpcError, ServerMsg, Upgrade};
use devnet_lab::harness::{self, Lab, OnFailure, Res, as_user, text};
use tokio::io::AsyncWriteExt;

const LAB: &str = "dmn";
/// A desktop user in group devnet, another one, and one outside it.
const ALICE: u32 = 2101;
const BOB: u32 = 2102;
const MALLORY: u32 = 2103;

/// When set (to a session's name), this binary is not the lab but an IPC
/// client, run as another user by a trial: it hands devnetd a credential
/// for that session and prints devnetd's answer as JSON. (devnet has no
/// command for it: only a running `devnet connect` renews its own session.)
const RENEW_SESSION: &str = "DEVNET_LAB_RENEW_SESSION";

fn main() {
    if let Ok(session) = std::env::var(RENEW_SESSION) {
        renew_client(&session);
    }
    harness::run(
        "daemon",
        setup,
        &[
            ("daemon_01_runs_with_exactly_its_capabilities", capabilities),
            ("daemon_02_members_connect_without_sudo", member_connects),
            ("daemon_03_versions_and_malformed_frames_are_refused", protocol_refusals),
            ("daemon_04_sigkill_then_start_restores_the_laptop", sigkill_then_start),
            ("daemon_05_sessions_side_by_side_unless_they_collide", side_by_side),
            ("daemon_06_sigterm_and_sighup_undo_like_disconnect", signals_undo),
            ("daemon_07_a_client_killed_leaves_devnetd_and_its_session_serving", client_killed),
        ],
        OnFailure::Reset,
    )
}

fn setup() -> Res<Lab> {
    Lab::up(LAB)
}

fn profile(lab: &Lab) -> String {
    lab.dir.join("profile.toml").display().to_string()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// `devnet <args>` on the laptop as `uid` with `groups`.
fn devnet_as(lab: &Lab, uid: u32, groups: &[&str], args: &[&str]) -> Res<std::process::Output> {
    lab.ensure_daemon()?;
    lab.on_laptop()
        .args(as_user(uid, groups)?)
        .arg(lab.tool("devnet"))
        .args(args)
        .output()
        .map_err(|e| format!("devnet {args:?}: {e}"))
}

/// The [`RENEW_SESSION`] client: one `RenewCredential`, its answer on stdout.
fn renew_client(session: &str) -> ! {
    let socket = devnet_ipc::socket_path();
    let answer = runtime().block_on(async {
        let mut conn = client::connect(&socket, ClientKind::Cli).await.map_err(|e| e.to_string())?;
        let credential = devnet_model::Secret::new("-----BEGIN CERTIFICATE-----\nnot one\n");
        conn.send(&ClientMsg::RenewCredential { session: session.to_owned(), credential })
            .await
            .map_err(|e| e.to_string())?;
        conn.recv().await.map_err(|e| e.to_string())
    });
    match answer {
        Ok(Some(msg)) => {
            println!("{}", serde_json::to_string(&msg).unwrap_or_default());
            std::process::exit(0)
        }
        other => {
            eprintln!("no answer to the renewal: {other:?}");
            std::process::exit(1)
        }
    }
}

/// devnetd's answer when `uid` hands it a credential for `session`.
fn renew_as(lab: &Lab, uid: u32, session: &str) -> Res<serde_json::Value> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let prefix = as_user(uid, &["devnet"])?;
    let out = std::process::Command::new(&prefix[0])
        .args(&prefix[1..])
        .arg(me)
        .env(RENEW_SESSION, session)
        .env(devnet_ipc::SOCKET_ENV, lab.socket())
        .output()
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&out.stdout).map_err(|e| format!("the renewing client: {e}: {}", text(&out)))
}

fn capabilities(lab: &Lab) -> Res {
    lab.ensure_daemon()?;
    let pid = lab.daemon_pid().ok_or("devnetd is not running")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or_default();
    // CAP_NET_ADMIN (12) and CAP_NET_BIND_SERVICE (10), nothing else.
    let keep = format!("{:016x}", (1u64 << 12) | (1u64 << 10));
    for (set, want) in [
        ("CapEff:", keep.as_str()),
        ("CapPrm:", keep.as_str()),
        ("CapBnd:", keep.as_str()),
        ("CapInh:", "0000000000000000"),
        ("CapAmb:", "0000000000000000"),
        ("NoNewPrivs:", "1"),
    ] {
        if field(set) != want {
            return Err(format!("devnetd's {set} is {}, not {want}:\n{status}", field(set)));
        }
    }
    if field("Uid:").split_whitespace().next() != Some("0") {
        return Err(format!("devnetd should keep uid 0: {}", field("Uid:")));
    }
    let socket = std::fs::metadata(lab.socket()).map_err(|e| e.to_string())?;
    let gid = harness::group_id(devnet_ipc::GROUP)?;
    if socket.mode() & 0o777 != 0o660 || socket.uid() != 0 || socket.gid() != gid {
        return Err(format!(
            "socket is {:o} {}:{}, not 660 root:devnet",
            socket.mode() & 0o777,
            socket.uid(),
            socket.gid()
        ));
    }
    let dir = std::fs::metadata(Path::new(&lab.socket()).parent().ok_or("no dir")?).map_err(|e| e.to_string())?;
    if dir.permissions().mode() & 0o777 != 0o750 || dir.gid() != gid {
        return Err(format!("socket directory is {:o} gid {}", dir.permissions().mode() & 0o777, dir.gid()));
    }
    // Never a TCP listener.
    let tcp = lab.laptop_ok(&["ss", "-Hltnp"])?;
    if tcp.contains("devnetd") {
        return Err(format!("devnetd listens on TCP:\n{tcp}"));
    }
    Ok(())
}

fn member_connects(lab: &Lab) -> Res {
    let p = profile(lab);
    lab.connect_as(&as_user(ALICE, &["devnet"])?, &["--profile", &p], &[], "connected", Duration::from_secs(15))?;
    lab.curl("http://10.96.0.20/")?;
    // Status without sudo: exit 0 while connected, the owner named.
    let out = devnet_as(lab, BOB, &["devnet"], &["status", "--json"])?;
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", text(&out)))?;
    if out.status.code() != Some(0) || s["state"] != "connected" || s["owner_uid"] != ALICE {
        return Err(format!("status as another member (exit {:?}): {s}", out.status.code()));
    }
    // Another member cannot end my session.
    let out = devnet_as(lab, BOB, &["devnet"], &["disconnect"])?;
    if out.status.success() || !text(&out).contains(&format!("started by uid {ALICE}: only that user or root")) {
        return Err(format!("another member's disconnect: {}", text(&out)));
    }
    // Nor hand it a client certificate (what `devnet connect` does when
    // it renews its own): refused, naming the owner, before the engine
    // sees it.
    let answer = renew_as(lab, BOB, "profile")?;
    if answer["type"] != "error"
        || answer["error"]["kind"] != "not-owner-of-credential"
        || answer["error"]["owner"] != ALICE
    {
        return Err(format!("another member's credential renewal: {answer}"));
    }
    // The owner's reaches the engine, which says why it does not apply
    // (this session logs in with a token).
    let answer = renew_as(lab, ALICE, "profile")?;
    if answer["type"] != "error" || !answer["error"]["message"].as_str().is_some_and(|m| m.contains("token")) {
        return Err(format!("the owner's renewal of a token session: {answer}"));
    }
    // A non-member is refused with one line that says how to join.
    let out = devnet_as(lab, MALLORY, &[], &["status"])?;
    let said = text(&out);
    if out.status.success() || said.trim().lines().count() != 1 || !said.contains("sudo usermod -aG devnet $USER") {
        return Err(format!("a non-member should get one line saying how to join: {said}"));
    }
    lab.curl("http://10.96.0.20/")?;
    let out = devnet_as(lab, ALICE, &["devnet"], &["disconnect"])?;
    if !out.status.success() {
        return Err(format!("the owner's disconnect: {}", text(&out)));
    }
    let exit = lab.wait_client_exit(Duration::from_secs(10))?;
    if !exit.success() {
        return Err(format!("devnet connect exited with {exit}:\n{}", lab.engine_log()));
    }
    let out = devnet_as(lab, ALICE, &["devnet"], &["status"])?;
    if out.status.code() != Some(3) {
        return Err(format!("status with no session should exit 3: {:?} {}", out.status.code(), text(&out)));
    }
    lab.laptop_unchanged("after the member disconnected")
}

fn protocol_refusals(lab: &Lab) -> Res {
    lab.ensure_daemon()?;
    let socket = std::path::PathBuf::from(lab.socket());
    runtime().block_on(async {
        for (version, upgrade) in [(devnet_ipc::IPC_VERSION + 1, Upgrade::Daemon), (0, Upgrade::Client)] {
            match client::connect_as(&socket, ClientKind::Cli, version).await {
                Err(ClientError::Refused(e @ IpcError::VersionMismatch { upgrade: u, .. })) if u == upgrade => {
                    let said = e.to_string();
                    if !said.contains("upgrade") {
                        return Err(format!("the refusal does not say what to upgrade: {said}"));
                    }
                }
                other => return Err(format!("IPC version {version}: expected a refusal, got {other:?}")),
            }
        }
        // No hello: refused.
        let mut raw = tokio::net::UnixStream::connect(&socket).await.map_err(|e| e.to_string())?;
        raw.write_all(&codec::encode(&ClientMsg::Status).map_err(|e| e.to_string())?)
            .await
            .map_err(|e| e.to_string())?;
        let mut framed = devnet_ipc::stream::Framed::new(raw);
        match framed.read::<ServerMsg>().await {
            Ok(Some(ServerMsg::Refused { error: IpcError::NoHello })) => {}
            other => return Err(format!("a connection without hello: {other:?}")),
        }
        // A malformed frame after the hello is answered, and the connection goes on.
        let mut conn = client::connect(&socket, ClientKind::Cli).await.map_err(|e| e.to_string())?;
        let junk = b"{\"type\":\"no-such-message\"}";
        let mut frame = u32::try_from(junk.len()).map_err(|e| e.to_string())?.to_be_bytes().to_vec();
        frame.extend_from_slice(junk);
        let mut raw = conn.framed;
        raw_write(&mut raw, &frame).await?;
        match raw.read::<ServerMsg>().await {
            Ok(Some(ServerMsg::Error { error: IpcError::BadRequest { .. } })) => {}
            other => return Err(format!("a malformed frame: {other:?}")),
        }
        raw.write(&ClientMsg::Status).await.map_err(|e| e.to_string())?;
        if !matches!(raw.read::<ServerMsg>().await, Ok(Some(ServerMsg::Sessions { .. }))) {
            return Err("the connection did not go on after a malformed frame".into());
        }
        // A frame claiming 4 GiB: the connection is closed, nothing allocated.
        conn = client::connect(&socket, ClientKind::Cli).await.map_err(|e| e.to_string())?;
        let mut raw = conn.framed;
        raw_write(&mut raw, &u32::MAX.to_be_bytes()).await?;
        if !matches!(raw.read::<ServerMsg>().await, Ok(None) | Err(_)) {
            return Err("an oversized frame should close the connection".into());
        }
        // devnetd still serves.
        let mut conn = client::connect(&socket, ClientKind::Tray).await.map_err(|e| e.to_string())?;
        conn.send(&ClientMsg::Status).await.map_err(|e| e.to_string())?;
        match conn.recv().await {
            Ok(Some(ServerMsg::Sessions { .. })) => Ok(()),
            other => Err(format!("devnetd stopped serving after bad frames: {other:?}")),
        }
    })?;
    lab.laptop_unchanged("after refused clients")
}

async fn raw_write(framed: &mut devnet_ipc::stream::Framed<tokio::net::UnixStream>, bytes: &[u8]) -> Res {
    // Bytes that are not a frame of ours, written under the framing.
    let stream: &tokio::net::UnixStream = framed.get_ref();
    let mut written = 0;
    while written < bytes.len() {
        stream.writable().await.map_err(|e| e.to_string())?;
        match stream.try_write(&bytes[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

fn sigkill_then_start(lab: &Lab) -> Res {
    let p = profile(lab);
    lab.connect_as(&as_user(ALICE, &["devnet"])?, &["--profile", &p], &[], "connected", Duration::from_secs(15))?;
    lab.curl("http://10.96.0.20/")?;
    // The service's next start after a crash: it undoes the journal first.
    lab.restart_daemon_after_crash()?;
    lab.laptop_unchanged("after SIGKILL of devnetd and its next start")?;
    lab.connect_as(&as_user(ALICE, &["devnet"])?, &["--profile", &p], &[], "connected", Duration::from_secs(15))?;
    lab.curl("http://10.96.0.20/")?;
    lab.disconnect()?;
    lab.laptop_unchanged("after the new session ended")
}

fn side_by_side(lab: &Lab) -> Res {
    let p = profile(lab);
    let alice = as_user(ALICE, &["devnet"])?;
    lab.connect_as(&alice, &["--profile", &p], &[], "connected", Duration::from_secs(15))?;
    // Profiles for a second cluster behind the same relay.
    let base = std::fs::read_to_string(&p).map_err(|e| e.to_string())?;
    let keep = ["relay", "token-file", "relay-ca"];
    // Exactly these keys (not `relay-endpoints`: this cluster's relay
    // addresses lie in the first cluster's CIDRs).
    let key = |l: &str| l.split('=').next().unwrap_or_default().trim().to_owned();
    let relay: String = base.lines().filter(|l| keep.contains(&key(l).as_str())).map(|l| format!("{l}\n")).collect();
    let write = |name: &str, rest: &str| -> Res<String> {
        let path = lab.dir.join(name);
        std::fs::write(&path, format!("{relay}{rest}")).map_err(|e| e.to_string())?;
        Ok(path.display().to_string())
    };
    // One whose CIDR overlaps the first's: refused, naming the session.
    let overlapping = write("overlapping.toml", "cidrs = [\"10.96.0.0/17\"]\ncluster-domain = \"other.local\"\n")?;
    let out = devnet_as(lab, BOB, &["devnet"], &["connect", "--profile", &overlapping])?;
    if out.status.success()
        || !text(&out).contains("CIDR 10.96.0.0/17 (overlaps 10.96.0.0/16) collides with session profile")
    {
        return Err(format!("an overlapping session: {}", text(&out)));
    }
    // One with the same cluster domain: refused too.
    let same_domain = write("same-domain.toml", "cidrs = [\"10.97.0.0/16\"]\n")?;
    let out = devnet_as(lab, BOB, &["devnet"], &["connect", "--profile", &same_domain])?;
    if out.status.success() || !text(&out).contains("DNS domain cluster.local collides with session profile") {
        return Err(format!("a session with the same domain: {}", text(&out)));
    }
    // One that takes nothing of the first runs beside it, on its own device.
    let second = write("second.toml", "cidrs = [\"10.97.0.0/16\"]\ncluster-domain = \"second.local\"\n")?;
    let bob = lab
        .on_laptop()
        .args(as_user(BOB, &["devnet"])?)
        .arg(lab.tool("devnet"))
        .args(["connect", "--profile", &second])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut bob = KillOnDrop(bob);
    let mut two = false;
    for _ in 0..100 {
        let out = devnet_as(lab, BOB, &["devnet"], &["status", "--json"])?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if v.as_array().is_some_and(|a| a.len() == 2 && a.iter().all(|s| s["status"]["state"] == "connected")) {
            two = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !two {
        return Err(format!("two sessions did not both connect:\n{}", lab.daemon_log()));
    }
    lab.laptop_ok(&["ip", "link", "show", "devnet1"])?;
    // Bob ends his; Alice's still works (the shared rule stays).
    let out = devnet_as(lab, BOB, &["devnet"], &["disconnect", "--session", "second"])?;
    if !out.status.success() {
        return Err(format!("bob's disconnect: {}", text(&out)));
    }
    let _ = bob.0.wait();
    lab.curl("http://10.96.0.20/")?;
    if lab.exec("laptop", &["ip", "link", "show", "devnet1"])?.status.success() {
        return Err("devnet1 outlived its session".into());
    }
    lab.disconnect()?;
    lab.laptop_unchanged("after both sessions ended")
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signals_undo(lab: &Lab) -> Res {
    let p = profile(lab);
    for signal in ["-TERM", "-HUP"] {
        lab.connect_as(&as_user(ALICE, &["devnet"])?, &["--profile", &p], &[], "connected", Duration::from_secs(15))?;
        lab.curl("http://10.96.0.20/")?;
        let pid = lab.daemon_pid().ok_or("no devnetd")?;
        std::process::Command::new("kill").args([signal, &pid.to_string()]).status().map_err(|e| e.to_string())?;
        lab.wait_daemon_exit(Duration::from_secs(15))?;
        let _ = lab.wait_client_exit(Duration::from_secs(5));
        lab.laptop_unchanged(&format!("after kill {signal} devnetd"))?;
        if lab.journal_exists() {
            return Err(format!("a journal is left after kill {signal}"));
        }
    }
    Ok(())
}

/// SIGKILL to `devnet connect`: devnetd goes on serving, the session keeps
/// its direct way to the relay, and its owner can still end it.
fn client_killed(lab: &Lab) -> Res {
    let p = profile(lab);
    lab.connect_as(&as_user(ALICE, &["devnet"])?, &["--profile", &p], &[], "connected", Duration::from_secs(15))?;
    let pid = lab.client_pid().ok_or("no devnet connect")?;
    std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().map_err(|e| e.to_string())?;
    lab.wait_client_exit(Duration::from_secs(5))?;
    lab.curl("http://10.96.0.20/")?;
    let out = devnet_as(lab, ALICE, &["devnet"], &["status", "--json"])?;
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", text(&out)))?;
    if out.status.code() != Some(0) || s["state"] != "connected" {
        return Err(format!("after the client died: {s}"));
    }
    let out = devnet_as(lab, ALICE, &["devnet"], &["disconnect"])?;
    if !out.status.success() {
        return Err(format!("the owner's disconnect after the client died: {}", text(&out)));
    }
    for _ in 0..100 {
        let out = devnet_as(lab, ALICE, &["devnet"], &["status"])?;
        if out.status.code() == Some(3) {
            return lab.laptop_unchanged("after the orphaned session ended");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("the session did not end:\n{}", lab.daemon_log()))
}

//! The relay binary's start-up (`devnet_startup`): on a CPU where glibc's
//! `rep movsb` copies are slow (the lab's AMD EPYC is one), `serve` execs
//! itself once with the tunable that turns them off, keeping its pid and
//! arguments; a threshold the operator set is left alone. The real binary,
//! started the way a pod starts it; `/proc` says what it runs with.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use devnet_startup::{Facts, Plan, REEXECED, plan};

const RELAY: &str = env!("CARGO_BIN_EXE_devnet-relay");

/// Starts `devnet-relay serve` on loopback with `GLIBC_TUNABLES` as given
/// (none, if `None`) and waits until it logs from inside `serve`, past any
/// exec.
fn serve(tunables: Option<&str>) -> (Child, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("devnet-startup-{}-{}", std::process::id(), tunables.is_some()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let status = Command::new(RELAY).args(["gen-cert", "--out"]).arg(&dir).status().expect("gen-cert");
    assert!(status.success());
    std::fs::write(dir.join("token"), "a-token-for-this-test\n").expect("token");
    let mut cmd = Command::new(RELAY);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0", "--allow", "10.244.0.0/16"])
        .arg("--cert")
        .arg(dir.join("cert.pem"))
        .arg("--key")
        .arg(dir.join("key.pem"))
        .arg("--token-file")
        .arg(dir.join("token"))
        .env("RUST_LOG", "info")
        .env_remove(REEXECED)
        .env_remove("GLIBC_TUNABLES")
        .stderr(Stdio::piped());
    if let Some(t) = tunables {
        cmd.env("GLIBC_TUNABLES", t);
    }
    let mut child = cmd.spawn().expect("spawn the relay");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let line = lines.next().expect("the relay exited before serving").expect("read its log");
        if line.contains("open-files limit") {
            break;
        }
    }
    // Keep draining its log so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, dir)
}

/// A NUL-separated file of `/proc/<pid>`, its entries as strings.
fn proc_entries(pid: u32, file: &str) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/{file}")).expect(file);
    raw.split(|b| *b == 0).filter(|v| !v.is_empty()).map(|v| String::from_utf8_lossy(v).into_owned()).collect()
}

fn stop(mut child: Child, dir: std::path::PathBuf) {
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn serve_runs_with_rep_movsb_off_where_it_is_slow_same_pid_same_arguments() {
    // What this machine calls for, from a clean environment.
    let facts = Facts { tunables: None, reexeced: false, ..devnet_startup::this_process() };
    let (child, dir) = serve(None);
    let pid = child.id();
    let env = proc_entries(pid, "environ");
    let args = proc_entries(pid, "cmdline");
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).expect("comm");
    stop(child, dir);
    assert_eq!(args[0], RELAY, "argv[0] kept");
    assert_eq!(comm.trim_end(), "devnet-relay", "the name ps and pgrep show kept");
    assert_eq!(args[1], "serve");
    match plan(&facts) {
        Plan::Reexec { tunables } => {
            assert!(env.contains(&format!("GLIBC_TUNABLES={tunables}")), "{env:?}");
            assert!(env.contains(&format!("{REEXECED}=1")), "{env:?}");
            assert_eq!(tunables, "glibc.cpu.x86_rep_movsb_threshold=0xffffffffffffffff");
        }
        Plan::Keep(why) => {
            assert!(!env.iter().any(|v| v.starts_with("GLIBC_TUNABLES=") || v.starts_with(REEXECED)), "{why}: {env:?}");
        }
    }
}

#[test]
fn a_threshold_the_operator_set_is_kept_and_nothing_is_execed() {
    let (child, dir) = serve(Some("glibc.cpu.x86_rep_movsb_threshold=0x840"));
    let env = proc_entries(child.id(), "environ");
    stop(child, dir);
    assert!(env.contains(&"GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=0x840".to_owned()), "{env:?}");
    assert!(!env.iter().any(|v| v.starts_with(REEXECED)), "{env:?}");
}

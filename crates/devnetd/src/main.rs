//! # devnetd: the privileged helper
//!
//! **Layer:** the one root process of devnet. It owns what needs privilege:
//! TUN devices, routes and rules, the resolver's settings and the DNS stub
//! (all through `devnet-engine`), and serves unprivileged clients (the CLI,
//! the tray app, the IDE preflight) over `devnet-ipc` on a Unix socket
//! owned `root:devnet`, mode 0660.
//!
//! At start it undoes what a previous devnetd left in its journals (only
//! after it holds the lock that proves no other devnetd runs), binds its
//! socket, and drops every capability but `CAP_NET_ADMIN` and
//! `CAP_NET_BIND_SERVICE` ([`privilege`]). SIGTERM, SIGHUP and SIGINT end
//! every session and undo its changes before it exits.
//!
//! **What it does not do:** read kubeconfigs, run exec plugins or auth
//! providers, touch keyrings, or open any file a client names. Clients send
//! contents (token, CA, profile values); the API server's port-forward is
//! opened by the client and handed over as a byte stream ([`bridge`]).

mod bridge;
mod connection;
#[cfg(target_os = "linux")]
mod notify;
#[cfg(target_os = "linux")]
mod privilege;
mod sessions;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Parser;
use devnet_engine::runner::SystemRunner;
use tokio::net::UnixListener;
use tracing::{info, warn};

use crate::sessions::Sessions;

/// The lock file in the state directory that one devnetd holds while it runs.
pub const LOCK_FILE: &str = "devnetd.lock";

#[derive(Parser, Debug)]
#[command(name = "devnetd", version, about = "devnet's privileged helper (run as a service)")]
struct Args {
    /// The socket clients connect to.
    #[arg(long, env = devnet_ipc::SOCKET_ENV, default_value = devnet_ipc::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Journals and backups; kept across reboots so a crash is undone after one.
    #[arg(long, default_value = "/var/lib/devnet")]
    state_dir: PathBuf,
    /// The group whose members may use devnetd.
    #[arg(long, default_value = devnet_ipc::GROUP)]
    group: String,
    /// The resolv.conf devnetd manages when systemd-resolved is not in use.
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    // The engine carries the data path in this process.
    let plan = devnet_startup::reexec_with_fast_copies();
    tracing::debug!(?plan, "start-up");
    let runtime = match devnet_engine::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("devnetd must run as root (it is started by its service, devnetd.service)");
    }
    let gid = nix::unistd::Group::from_name(&args.group)
        .context("reading the group database")?
        .with_context(|| {
            format!("group {} does not exist: create it with `groupadd --system {}`", args.group, args.group)
        })?
        .gid;
    std::fs::create_dir_all(&args.state_dir).with_context(|| format!("creating {}", args.state_dir.display()))?;
    std::fs::set_permissions(&args.state_dir, std::fs::Permissions::from_mode(0o700))?;
    let _lock = lock(&args.state_dir)?;
    recover_all(&args.state_dir);
    let listener = bind(&args.socket, gid)?;
    privilege::drop_to_keep().context("dropping capabilities")?;
    info!(socket = %args.socket.display(), group = %args.group, capabilities = %privilege::effective(), "devnetd serving");
    // Only now may `systemctl start` return: a client can connect.
    if let Err(e) = notify::notify("READY=1") {
        warn!(error = %e, "could not tell the service manager that devnetd is ready");
    }

    let sessions = Arc::new(Sessions::new(args.state_dir.clone(), args.resolv_conf.clone()));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(connection::serve(stream, sessions.clone()));
                }
                Err(e) => warn!(error = %e, "accept failed"),
            },
            _ = term.recv() => { info!("SIGTERM: ending every session"); break; }
            _ = hup.recv() => { info!("SIGHUP: ending every session"); break; }
            _ = &mut ctrl_c => { info!("interrupted: ending every session"); break; }
        }
    }
    let _ = notify::notify("STOPPING=1");
    sessions.end_all().await;
    let _ = std::fs::remove_file(&args.socket);
    info!("devnetd stopped; every network change is undone");
    Ok(())
}

/// Holds the state directory's lock for the life of the process: while it
/// is held, no other devnetd (nor `devnet cleanup`) touches the journals.
fn lock(state_dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    let path = state_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| anyhow::anyhow!("another devnetd is running (it holds {})", path.display()))
}

/// Undoes what sessions of a devnetd that died left behind.
fn recover_all(state_dir: &Path) {
    let dir = Sessions::sessions_dir(state_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        match devnet_engine::recover_dead(&path, &SystemRunner) {
            Ok(r) if r.journaled.is_empty() => {}
            Ok(r) => {
                info!(session_dir = %path.display(), journaled = r.journaled.len(), undone = ?r.undone, "undid a previous session's changes")
            }
            Err(e) => {
                warn!(session_dir = %path.display(), error = %format!("{e:#}"), "could not undo a previous session's changes")
            }
        }
    }
}

/// Binds the socket: its directory root-owned and searchable by the group,
/// the socket itself `root:<group>` 0660, never world-accessible.
fn bind(path: &Path, gid: nix::unistd::Gid) -> Result<UnixListener> {
    let dir = path.parent().context("the socket path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::os::unix::fs::chown(dir, Some(0), Some(gid.as_raw()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))?;
    // The lock proves no devnetd is alive, so a socket file here is stale.
    let _ = std::fs::remove_file(path);
    // Created with no access for anyone, then opened to the group: never a
    // moment where others could connect.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.with_context(|| format!("binding {}", path.display()))?;
    std::os::unix::fs::chown(path, Some(0), Some(gid.as_raw()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

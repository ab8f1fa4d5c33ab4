//! # devnet-engine: the privileged part of devnet
//!
//! **Layer:** the I/O shell around [`devnet_netstack::Tunnel`]. It owns the
//! OS state (TUN device, routes), the TLS link to the relay, and the control
//! socket. Commands come in (over [`control`] or [`EngineHandle`]), status
//! goes out ([`status::Status`]).
//!
//! Every OS change is journaled before it is made ([`journal`]), undone on
//! disconnect, and undone at the next start if the engine died first.
//!
//! **What it does not do:** parse packets or speak the wire protocol (the
//! sans-IO crates do), or discover clusters (profiles are explicit for now).

pub mod config;
pub mod control;
pub mod detect;
pub mod journal;
pub mod os;
pub mod runner;
pub mod status;

mod dataplane;

use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::config::Profile;
use crate::control::Command;
use crate::journal::{Entry, Journal};
use crate::os::platform;
use crate::runner::Runner;
use crate::status::{LinkState, Status};

/// A running engine.
#[derive(Debug)]
pub struct EngineHandle {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<Status>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl EngineHandle {
    /// The engine's status, updated as it changes.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Asks the engine to disconnect and clean up.
    pub async fn disconnect(&self) {
        let _ = self.commands.send(Command::Disconnect).await;
    }

    /// Waits until the engine stopped and undid its OS changes.
    pub async fn wait(self) -> Result<()> {
        self.task.await.context("engine task panicked")?
    }
}

/// What [`recover`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Changes the journal listed (some may have vanished with the process).
    pub journaled: Vec<String>,
    /// Commands run to undo what was still there.
    pub undone: Vec<String>,
}

/// Undoes whatever a previous run left in the journal at `state_dir`.
pub fn recover(state_dir: &std::path::Path, runner: &dyn Runner) -> Result<Recovery> {
    let mut journal = Journal::open(state_dir)?;
    if journal.entries().is_empty() {
        return Ok(Recovery::default());
    }
    let journaled = journal.entries().iter().map(|e| format!("{e:?}")).collect();
    warn!(entries = journal.entries().len(), "undoing network changes left by a previous run");
    let undone = platform::undo(&mut journal, runner)?;
    Ok(Recovery { journaled, undone })
}

/// Sets up the OS state and starts the engine. On error nothing is left
/// configured.
pub async fn start(profile: Profile, runner: Arc<dyn Runner>) -> Result<EngineHandle> {
    let recovery = recover(&profile.state_dir, runner.as_ref())?;
    for cmd in &recovery.undone {
        info!(command = %cmd, "undid leftover");
    }
    let socket = control::socket_path(&profile.state_dir);
    let listener = control::bind(&socket).await?;
    let tls = devnet_relay::tls::client_config(&profile.relay_ca)
        .with_context(|| format!("loading the relay CA from {}", profile.relay_ca.display()))?;

    // Decide each CIDR's path before any route of ours exists.
    let paths = match detect::detect(&profile, runner.as_ref()).await {
        Ok(p) => p,
        Err(e) => {
            let _ = std::fs::remove_file(&socket);
            return Err(e.context("detecting paths"));
        }
    };
    for v in &paths {
        info!(cidr = %v.cidr, path = ?v.path, reason = %v.reason, "path chosen");
    }
    let mut tunnel_profile = profile.clone();
    tunnel_profile.cidrs = paths.iter().filter(|v| v.path == devnet_path::Path::Tunnel).map(|v| v.cidr).collect();

    let mut journal = Journal::open(&profile.state_dir)?;
    let tun = if tunnel_profile.cidrs.is_empty() {
        None
    } else {
        match setup_os(&tunnel_profile, &mut journal, runner.as_ref()) {
            Ok(tun) => Some(tun),
            Err(e) => {
                let _ = platform::undo(&mut journal, runner.as_ref());
                let _ = std::fs::remove_file(&socket);
                return Err(e);
            }
        }
    };

    let mut status = initial_status(&tunnel_profile);
    status.paths = paths;
    if tun.is_none() {
        status.state = LinkState::Direct;
    }
    let (status_tx, status_rx) = watch::channel(status);
    let (cmd_tx, mut cmd_rx) = mpsc::channel(8);
    let control_task = tokio::spawn(control::serve(listener, socket.clone(), status_rx.clone(), cmd_tx.clone()));
    let task = tokio::spawn(async move {
        let result = match tun {
            Some(tun) => dataplane::run(&tunnel_profile, tun, tls, status_tx.clone(), cmd_rx).await,
            None => {
                // Every CIDR is routed by the network itself: nothing to carry.
                let _ = cmd_rx.recv().await;
                Ok(())
            }
        };
        control_task.abort();
        // The TUN device is gone with its file descriptor; its routes with it.
        // Undo the journal anyway: it checks what is left and removes only ours.
        let undone = platform::undo(&mut journal, runner.as_ref());
        let _ = std::fs::remove_file(&socket);
        status_tx.send_modify(|s| s.state = LinkState::Stopped);
        info!("disconnected; network changes undone");
        result.and(undone.map(|_| ()))
    });
    Ok(EngineHandle { commands: cmd_tx, status: status_rx, task })
}

fn setup_os(profile: &Profile, journal: &mut Journal, runner: &dyn Runner) -> Result<tun_rs::AsyncDevice> {
    let existing = platform::routes(runner)?;
    // Check every route before making anything, so a conflict leaves no trace.
    let route_cmds = platform::plan_add(&profile.cidrs, &profile.tun_name, &existing)?;

    journal.record(Entry::Tun { name: profile.tun_name.clone() })?;
    let tun =
        tun_rs::DeviceBuilder::new().name(&profile.tun_name).mtu(profile.mtu).enable(true).build_async().with_context(
            || format!("creating TUN device {} (are you root? is /dev/net/tun there?)", profile.tun_name),
        )?;
    platform::adopt_link(runner, &profile.tun_name, profile.cidrs.iter().any(|n| matches!(n, ipnet::IpNet::V6(_))))?;
    for net in &profile.cidrs {
        journal.record(Entry::Route { dst: *net, dev: profile.tun_name.clone() })?;
    }
    for cmd in route_cmds {
        runner.run(&cmd)?;
    }
    info!(tun = %profile.tun_name, routes = ?profile.cidrs, "network configured");
    Ok(tun)
}

fn initial_status(profile: &Profile) -> Status {
    Status {
        state: LinkState::Connecting,
        relay: profile.relay,
        relay_name: None,
        relay_rtt_ms: None,
        last_error: None,
        reconnects: 0,
        tun: profile.tun_name.clone(),
        routes: profile.cidrs.clone(),
        dns_server: profile.dns_server,
        cluster_domain: profile.cluster_domain.clone(),
        paths: Vec::new(),
        tcp_flows: 0,
        pending_opens: 0,
        udp_associations: 0,
        packets_from_tun: 0,
        packets_to_tun: 0,
        bytes_to_relay: 0,
        bytes_from_relay: 0,
        refused: 0,
        unreachable: 0,
    }
}

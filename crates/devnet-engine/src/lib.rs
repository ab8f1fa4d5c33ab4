//! # devnet-engine: the privileged part of devnet
//!
//! **Layer:** the I/O shell around the sans-IO crates. It decides each
//! CIDR's path ([`detect`], `devnet_path`) and re-checks it every few
//! seconds, owns the OS state that follows from that (TUN device, policy
//! rule, routes, systemd-resolved's link settings or resolv.conf), runs the
//! DNS stub and the TLS link to the relay ([`devnet_netstack::Tunnel`]).
//! It runs inside devnetd (one engine per session) or in `devnet connect
//! --foreground`, and answers on a root-only [`control`] socket in its state
//! directory. Commands come in ([`EngineHandle`], [`EngineControl`]), status
//! goes out ([`status::Status`]).
//!
//! Every OS change is journaled before it is made ([`journal`]), undone on
//! disconnect, and undone at the next start if the engine died first.
//!
//! **What it does not do:** parse packets, speak the wire protocol or decide
//! paths and names (the sans-IO crates do), discover clusters or read
//! kubeconfigs (`devnet-session`, as the user), or speak devnetd's IPC.

/// The profile types live in `devnet-model`, shared with every client.
pub use devnet_model::profile as config;
pub mod control;
pub mod detect;
mod dns;
pub use dns::office_forwarding;
pub mod journal;
pub mod os;
#[cfg(target_os = "linux")]
pub mod resolved;
pub mod runner;
pub use devnet_model::status;
pub mod transport;

mod dataplane;
mod netstate;
#[cfg(test)]
mod test_support;

use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::config::Profile;
use crate::dataplane::Control;
use crate::journal::Journal;
use crate::netstate::NetState;
use crate::os::platform;
use crate::runner::Runner;
use crate::status::{LinkState, Status};

/// A running engine.
#[derive(Debug)]
pub struct EngineHandle {
    commands: mpsc::Sender<control::Command>,
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
        self.control().disconnect().await;
    }

    /// A handle that can only ask the engine to stop, for whoever does not
    /// own the engine's task (devnetd's request handlers).
    pub fn control(&self) -> EngineControl {
        EngineControl { commands: self.commands.clone() }
    }

    /// Waits until the engine stopped and undid its OS changes.
    pub async fn wait(self) -> Result<()> {
        self.task.await.context("engine task panicked")?
    }
}

/// Asks a running engine to disconnect, or hands it a renewed client
/// credential; cheap to clone.
#[derive(Debug, Clone)]
pub struct EngineControl {
    commands: mpsc::Sender<control::Command>,
}

impl EngineControl {
    /// Asks the engine to disconnect and undo its changes (it may already
    /// have stopped: then nothing happens).
    pub async fn disconnect(&self) {
        let _ = self.commands.send(control::Command::Disconnect).await;
    }

    /// Hands the engine a new client credential (certificate and key, as
    /// enrolment gave them) for every later (re)connect to the relay; a
    /// link the relay refused is dialled again at once. Refused, with the
    /// reason, when it is no certificate for the session's relay CA, or the
    /// session logs in with a token.
    pub async fn renew_credential(&self, credential: devnet_model::Secret) -> Result<(), String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.commands
            .send(control::Command::RenewCredential { credential, reply })
            .await
            .map_err(|_| "the session has ended".to_owned())?;
        answer.await.map_err(|_| "the session has ended".to_owned())?
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

/// The runtime a process that runs engines (the CLI in the foreground,
/// devnetd) uses for everything but the data path, which runs on a thread
/// and runtime of its own (see `Dataplane`). Blocking calls in the
/// control plane go through `block_in_place`, which needs a multi-thread
/// runtime.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()
}

/// Undoes what an engine that is known to be dead (its owner's lock is
/// free, or nothing answers on its socket) left at `state_dir`: the
/// journal, then its control socket, then the directory if that empties it.
pub fn recover_dead(state_dir: &std::path::Path, runner: &dyn Runner) -> Result<Recovery> {
    let recovery = recover(state_dir, runner)?;
    let _ = std::fs::remove_file(control::socket_path(state_dir));
    let _ = std::fs::remove_dir(state_dir);
    Ok(recovery)
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
    let direct =
        transport::DirectDial { addrs: vec![profile.relay], timeout: std::time::Duration::from_secs(3), bypass: false };
    start_with(profile, runner, Arc::new(direct), Vec::new()).await
}

/// [`start`] with the relay reached through `dialer`, and what cluster
/// discovery found (shown in status).
pub async fn start_with(
    profile: Profile,
    runner: Arc<dyn Runner>,
    dialer: Arc<dyn transport::Dial>,
    discovered: Vec<status::Discovered>,
) -> Result<EngineHandle> {
    let recovery = recover(&profile.state_dir, runner.as_ref())?;
    for cmd in &recovery.undone {
        info!(command = %cmd, "undid leftover");
    }
    let socket = control::socket_path(&profile.state_dir);
    let listener = control::bind(&socket).await?;
    // The relay CA, and the client certificate when the credential is one
    // (a relay in Kubernetes): the data path and the path proofs present it.
    let tls = detect::relay_tls(&profile)?;
    // The data path dials with whatever configuration this holds last: a
    // renewed client certificate replaces it (a new configuration, so no
    // session resumed under the old certificate either).
    let (tls_tx, tls_rx) = watch::channel(tls.clone());

    // Decide each CIDR's path, then make the OS match.
    let mut tracker = devnet_path::Tracker::default();
    // Proofs use the data path's own TLS configuration: one CA, one name.
    let mut prover = detect::Prover::new(Some(tls.clone()));
    let journal = Journal::open(&profile.state_dir)?;
    let mut net = NetState::new(profile.clone(), runner.clone(), journal);
    let first = async {
        net.prepare_gateways()?;
        tracker.update(detect::detect(&profile, runner.as_ref(), &mut prover).await.context("detecting paths")?);
        let tun = net.apply(&tracker.tunnelled(), &tracker.via_gateway())?;
        // Cluster names: the stub first, then the resolver pointed at it.
        let resolver = match profile.dns_server {
            Some(_) => Some(dns::configure(&profile, &mut net).await?),
            None => None,
        };
        Ok::<_, anyhow::Error>((tun, resolver))
    }
    .await;
    let (tun, resolver) = match first {
        Ok(pair) => pair,
        Err(e) => {
            let _ = net.teardown();
            let _ = std::fs::remove_file(&socket);
            return Err(e);
        }
    };
    for v in tracker.current() {
        info!(cidr = %v.cidr, path = ?v.path, reason = %v.reason, "path chosen");
    }

    let mut status = initial_status(&profile);
    status.discovered = discovered;
    status.paths = tracker.current().to_vec();
    status.routes = net.routed().to_vec();
    status.dns_backend = resolver.as_ref().map(|r| r.description.clone());
    if tun.is_none() {
        status.state = LinkState::Direct;
    }
    let (status_tx, status_rx) = watch::channel(status);
    let (cmd_tx, mut cmd_rx) = mpsc::channel(8);
    let control_task = tokio::spawn(control::serve(listener, socket.clone(), status_rx.clone(), cmd_tx.clone()));
    // Local network changes trigger a re-check at once; remote ones (the
    // office router learning or losing a route) only show in probes, so
    // polling stays.
    let mut changes = match platform::network_changes() {
        Ok(rx) => Some(rx),
        Err(e) => {
            warn!(error = %e, "cannot watch network changes; re-checking every {RECHECK_INTERVAL:?} only");
            None
        }
    };
    let task = tokio::spawn(async move {
        let mut dataplane: Option<Dataplane> = None;
        // Our own route and device changes echo back as events: after a
        // re-check that changed the OS, those are drained, not acted on.
        let drain_echoes = async |changes: &mut Option<mpsc::Receiver<()>>| {
            tokio::time::sleep(CHANGE_SETTLE).await;
            while changes.as_mut().is_some_and(|rx| rx.try_recv().is_ok()) {}
        };
        drain_echoes(&mut changes).await;
        if let Some(tun) = tun {
            dataplane = Some(Dataplane::spawn(
                &profile,
                net.routed().to_vec(),
                tun,
                &dialer,
                tls_rx.clone(),
                status_tx.clone(),
            ));
        }
        let result = loop {
            let finished = async {
                match dataplane.as_mut() {
                    Some(d) => d.ended().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = cmd_rx.recv() => {
                    if let Some(control::Command::RenewCredential { credential, reply }) = command {
                        let taken = renewed_tls(&profile, &credential).map(|tls| {
                            tls_tx.send_replace(tls);
                            info!("client credential renewed; later (re)connects present it");
                        });
                        let _ = reply.send(taken);
                        continue;
                    }
                    // Disconnect, or every sender gone.
                    if let Some(mut d) = dataplane.take() {
                        let _ = d.control.send(Control::Disconnect).await;
                        break d.ended().await;
                    }
                    break Ok(());
                }
                done = finished => break done,
                () = tokio::time::sleep(if tracker.has_pending() { CONFIRM_INTERVAL } else { RECHECK_INTERVAL }) => {
                    match recheck(&profile, runner.as_ref(), &mut prover, &mut tracker, &mut net, &mut dataplane, &dialer, &tls_rx, &status_tx).await {
                        Ok(true) => drain_echoes(&mut changes).await,
                        Ok(false) => {}
                        Err(e) => warn!(error = %format!("{e:#}"), "path re-check failed; keeping the current paths"),
                    }
                }
                Some(()) = async { match changes.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                    // Let the burst (address, then routes) finish first.
                    drain_echoes(&mut changes).await;
                    info!("network changed on this machine; re-checking paths now");
                    // The same device and next hop may now be a stranger's:
                    // every direct path is proven again.
                    prover.forget();
                    match recheck(&profile, runner.as_ref(), &mut prover, &mut tracker, &mut net, &mut dataplane, &dialer, &tls_rx, &status_tx).await {
                        Ok(true) => drain_echoes(&mut changes).await,
                        Ok(false) => {}
                        Err(e) => warn!(error = %format!("{e:#}"), "path re-check failed; keeping the current paths"),
                    }
                }
            }
        };
        control_task.abort();
        if let Some(resolver) = resolver {
            resolver.stop().await;
        }
        // The TUN device is gone with the data path; its routes with it. The
        // journal still lists them: undo checks what is left and removes
        // only what is ours (the rules, at least).
        let undone = net.teardown();
        let _ = std::fs::remove_file(&socket);
        status_tx.send_modify(|s| s.state = LinkState::Stopped);
        info!("disconnected; network changes undone");
        result.and(undone.map(|_| ()))
    });
    Ok(EngineHandle { commands: cmd_tx, status: status_rx, task })
}

/// How long a burst of kernel network events takes to settle (also: our own
/// route changes echoing back).
const CHANGE_SETTLE: std::time::Duration = std::time::Duration::from_millis(200);

/// How often paths are checked again while connected.
const RECHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// A change takes two agreeing checks (see [`devnet_path::Tracker`]); the
/// confirming one follows quickly, so a move between office and home is
/// followed within about one interval plus two probe timeouts.
const CONFIRM_INTERVAL: std::time::Duration = std::time::Duration::from_millis(300);

/// The data path, on a thread of its own with a current-thread runtime:
/// its TUN device and its direct relay socket are registered with that
/// runtime's I/O driver alone, so when it busy-polls (see
/// [`dataplane`]) the thread that polls is the one that sees their
/// readiness, and the control plane's tasks (re-checks, DNS stub, control
/// socket, the Kubernetes client) never share its CPU turn.
struct Dataplane {
    control: mpsc::Sender<Control>,
    /// The data path's end: its error, or `Ok` after a disconnect. Closed
    /// without a value if the thread panicked.
    task: tokio::sync::oneshot::Receiver<Result<()>>,
}

impl Dataplane {
    fn spawn(
        profile: &Profile,
        cidrs: Vec<ipnet::IpNet>,
        tun: tun_rs::SyncDevice,
        dialer: &Arc<dyn transport::Dial>,
        tls: watch::Receiver<Arc<rustls::ClientConfig>>,
        status: watch::Sender<Status>,
    ) -> Self {
        let dialer = dialer.clone();
        let (control, rx) = mpsc::channel(8);
        let (done, task) = tokio::sync::oneshot::channel();
        let mut profile = profile.clone();
        profile.cidrs = cidrs;
        let thread = move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the data path's runtime")
                .and_then(|runtime| {
                    runtime.block_on(async {
                        let tun = tun_rs::AsyncDevice::new(tun).context("registering the TUN device")?;
                        dataplane::run(&profile, tun, dialer, tls, status, rx).await
                    })
                });
            let _ = done.send(result);
        };
        let task = match std::thread::Builder::new().name("devnet-datapath".into()).spawn(thread) {
            Ok(_) => task,
            Err(e) => {
                // The engine's loop sees a data path that ended with this error.
                let (done, task) = tokio::sync::oneshot::channel();
                let _ = done.send(Err(anyhow::Error::new(e).context("starting the data path's thread")));
                task
            }
        };
        Self { control, task }
    }

    /// Waits for the data path to end: its result, or an error if its
    /// thread panicked.
    async fn ended(&mut self) -> Result<()> {
        (&mut self.task).await.unwrap_or_else(|_| Err(anyhow::anyhow!("the data path's thread panicked")))
    }
}

/// Detects again and makes the OS follow; returns whether anything changed.
#[expect(clippy::too_many_arguments, reason = "the loop's state, passed apart to keep borrows disjoint")]
async fn recheck(
    profile: &Profile,
    runner: &dyn Runner,
    prover: &mut detect::Prover,
    tracker: &mut devnet_path::Tracker,
    net: &mut NetState,
    dataplane: &mut Option<Dataplane>,
    dialer: &Arc<dyn transport::Dial>,
    tls: &watch::Receiver<Arc<rustls::ClientConfig>>,
    status: &watch::Sender<Status>,
) -> Result<bool> {
    let fresh = detect::detect(profile, runner, prover).await?;
    let changed = tracker.update(fresh);
    if !changed {
        status.send_modify(|s| s.paths = tracker.current().to_vec());
        return Ok(false);
    }
    let want = tracker.tunnelled();
    for v in tracker.current() {
        info!(cidr = %v.cidr, path = ?v.path, reason = %v.reason, "path re-checked");
    }
    if let Some(tun) = net.apply(&want, &tracker.via_gateway())? {
        *dataplane = Some(Dataplane::spawn(profile, want.clone(), tun, dialer, tls.clone(), status.clone()));
        status.send_modify(|s| s.state = LinkState::Connecting);
    } else if let Some(d) = dataplane.as_ref() {
        let _ = d.control.send(Control::SetCidrs(want.clone())).await;
    }
    // Status shows a new path only once the OS follows it.
    status.send_modify(|s| {
        s.paths = tracker.current().to_vec();
        s.routes = want;
    });
    Ok(true)
}

/// The data path's TLS configuration with `credential` as the client
/// certificate, for a session that logs in with one.
fn renewed_tls(profile: &Profile, credential: &devnet_model::Secret) -> Result<Arc<rustls::ClientConfig>, String> {
    use devnet_tls::RelayCredential;
    let is_certificate = |c: &str| matches!(RelayCredential::parse(c), Ok(RelayCredential::Certificate { .. }));
    if !is_certificate(profile.token.expose()) {
        return Err(
            "this session logs in with the relay token, not a client certificate: there is nothing to renew".into()
        );
    }
    if !is_certificate(credential.expose()) {
        return Err(
            "the renewed credential is no client certificate with its key (PEM, as enrolment gives them)".into()
        );
    }
    let mut renewed = profile.clone();
    renewed.token = credential.clone();
    detect::relay_tls(&renewed).map_err(|e| format!("{e:#}"))
}

fn initial_status(profile: &Profile) -> Status {
    Status {
        state: LinkState::Connecting,
        relay: profile.relay,
        relay_name: None,
        transport: None,
        discovered: Vec::new(),
        relay_rtt_ms: None,
        last_error: None,
        reconnects: 0,
        tun: profile.tun_name.clone(),
        routes: profile.cidrs.clone(),
        dns_server: profile.dns_server,
        cluster_domain: profile.cluster_domain.clone(),
        dns_backend: None,
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

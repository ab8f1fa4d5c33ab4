//! The app's shell around `devnet-desktop`'s decisions: it keeps the model
//! (devnetd's sessions, the kubeconfig's contexts, a connect's progress,
//! doctor, recent events), follows devnetd, runs connects and doctor as
//! the user, and after every change publishes one snapshot to the window,
//! the tray and the notifier.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use devnet_desktop::notify::{Notification, Notifier, Policy};
use devnet_desktop::state::{AppActivity, overall};
use devnet_desktop::view::{
    ConnectProgress, ContextEntry, DaemonView, DoctorView, EventLine, Phase, ProgressStep, SessionView, Snapshot,
    headline,
};
use devnet_ipc::client;
use devnet_ipc::message::{ClientKind, ClientMsg, ServerMsg};
use devnet_session::keeper::{self, Event};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// How many events the window keeps.
const EVENTS_KEPT: usize = 50;

/// Where snapshots go after each change.
pub trait Sink: Send + Sync {
    fn snapshot(&self, snapshot: &Snapshot);
    fn notify(&self, notification: Notification);
}

#[derive(Debug)]
struct Model {
    daemon: DaemonView,
    uid: Option<u32>,
    sessions: Vec<SessionView>,
    contexts: Vec<ContextEntry>,
    contexts_error: Option<String>,
    progress: Option<ConnectProgress>,
    events: VecDeque<EventLine>,
    doctor: DoctorView,
    autostart: bool,
    /// Sessions this process keeps (their port-forwards live here): the stop for each.
    kept: BTreeMap<String, oneshot::Sender<()>>,
}

/// The app's state and its work, shared by the commands, the tray and the tasks.
pub struct Core {
    socket: PathBuf,
    kubeconfig: Option<PathBuf>,
    model: Mutex<Model>,
    notifier: Mutex<Notifier>,
    started: Instant,
    sink: Box<dyn Sink>,
    /// Wakes the notifier loop when a change may be due.
    wake: mpsc::UnboundedSender<()>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").field("socket", &self.socket).finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Core {
    pub fn new(socket: PathBuf, kubeconfig: Option<PathBuf>, autostart: bool, sink: Box<dyn Sink>) -> Arc<Core> {
        let (wake, wakes) = mpsc::unbounded_channel();
        let core = Arc::new(Core {
            socket,
            kubeconfig,
            model: Mutex::new(Model {
                daemon: DaemonView::Unknown,
                uid: None,
                sessions: Vec::new(),
                contexts: Vec::new(),
                contexts_error: None,
                progress: None,
                events: VecDeque::new(),
                doctor: DoctorView::NotRun,
                autostart,
                kept: BTreeMap::new(),
            }),
            notifier: Mutex::new(Notifier::new(Policy::default())),
            started: Instant::now(),
            sink,
            wake,
        });
        tokio::spawn(notify_loop(core.clone(), wakes));
        tokio::spawn(follow_daemon(core.clone()));
        core.reload_contexts();
        core
    }

    fn with<R>(&self, f: impl FnOnce(&mut Model) -> R) -> R {
        let r = {
            let mut m = self.model.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut m)
        };
        self.publish();
        r
    }

    fn event(m: &mut Model, text: String) {
        info!(event = %text);
        m.events.push_back(EventLine { at_ms: now_ms(), text });
        while m.events.len() > EVENTS_KEPT {
            m.events.pop_front();
        }
    }

    /// The snapshot now.
    pub fn snapshot(&self) -> Snapshot {
        let m = self.model.lock().unwrap_or_else(|e| e.into_inner());
        let activity = match &m.progress {
            Some(p) if !p.done => AppActivity::Connecting,
            Some(p) if p.failure.is_some() => AppActivity::Failed,
            _ if matches!(m.daemon, DaemonView::Unreachable { .. }) => AppActivity::Failed,
            _ => AppActivity::Idle,
        };
        let state = overall(m.sessions.iter().map(|s| s.state), activity);
        let running: Vec<&str> = m.sessions.iter().map(|s| s.name.as_str()).collect();
        let contexts = m
            .contexts
            .iter()
            .map(|c| ContextEntry { connected: running.contains(&c.name.as_str()), ..c.clone() })
            .collect();
        let mut headline = headline(state, &m.sessions, m.progress.as_ref());
        if let (DaemonView::Unreachable { .. }, true) = (&m.daemon, m.sessions.is_empty()) {
            headline = "devnet: the devnet service (devnetd) is not reachable".to_owned();
        }
        Snapshot {
            state,
            headline,
            daemon: m.daemon.clone(),
            sessions: m.sessions.clone(),
            contexts,
            contexts_error: m.contexts_error.clone(),
            progress: m.progress.clone(),
            events: m.events.iter().cloned().collect(),
            doctor: m.doctor.clone(),
            autostart: m.autostart,
        }
    }

    fn publish(&self) {
        let snap = self.snapshot();
        {
            let mut n = self.notifier.lock().unwrap_or_else(|e| e.into_inner());
            n.observe(self.started.elapsed(), &snap.sessions);
        }
        let _ = self.wake.send(());
        self.sink.snapshot(&snap);
    }

    /// Reads the kubeconfig's contexts again (as the user; nothing runs).
    pub fn reload_contexts(&self) {
        let opts = devnet_kube::ClusterOptions { kubeconfig: self.kubeconfig.clone(), ..Default::default() };
        let read = devnet_kube::cluster::load_kubeconfig(&opts);
        self.with(|m| match read {
            Ok(kc) => {
                let current = kc.current_context.clone().unwrap_or_default();
                m.contexts = kc
                    .contexts
                    .iter()
                    .map(|c| {
                        let cluster = c.context.as_ref().map(|x| x.cluster.clone());
                        let server = cluster.and_then(|name| {
                            kc.clusters
                                .iter()
                                .find(|k| k.name == name)
                                .and_then(|k| k.cluster.as_ref().and_then(|x| x.server.clone()))
                        });
                        ContextEntry { name: c.name.clone(), server, current: c.name == current, connected: false }
                    })
                    .collect();
                m.contexts_error = None;
            }
            Err(e) => {
                m.contexts.clear();
                m.contexts_error = Some(e.to_string());
            }
        });
    }

    pub fn set_autostart_flag(&self, enabled: bool) {
        self.with(|m| {
            m.autostart = enabled;
            Self::event(m, format!("start at login {}", if enabled { "on" } else { "off" }));
        });
    }

    /// Starts a session for `context`: discovery, the relay, then devnetd,
    /// all as the user in this process; the session lives as long as the
    /// app (its port-forward is opened here).
    pub fn connect(self: &Arc<Self>, context: String) -> Result<()> {
        let busy = self.with(|m| {
            if m.progress.as_ref().is_some_and(|p| !p.done) {
                return Err(anyhow!(
                    "already connecting to {}",
                    m.progress.as_ref().map_or("", |p| p.context.as_str())
                ));
            }
            if m.kept.contains_key(&context) || m.sessions.iter().any(|s| s.name == context) {
                return Err(anyhow!("a session for {context} already runs"));
            }
            m.progress =
                Some(ConnectProgress { context: context.clone(), steps: Vec::new(), failure: None, done: false });
            Self::event(m, format!("connecting to {context}"));
            Ok(())
        });
        busy?;
        let core = self.clone();
        tokio::spawn(async move {
            let result = core.run_session(context.clone()).await;
            core.with(|m| {
                m.kept.remove(&context);
                match result {
                    Ok(()) => Self::event(m, format!("session {context} ended")),
                    Err(e) => {
                        let text = format!("{e:#}");
                        Self::event(m, format!("{context}: {text}"));
                        match m.progress.as_mut().filter(|p| p.context == context && !p.done) {
                            Some(p) => {
                                p.failure = Some(text);
                                p.done = true;
                            }
                            None => {
                                m.progress = Some(ConnectProgress {
                                    context: context.clone(),
                                    steps: Vec::new(),
                                    failure: Some(text),
                                    done: true,
                                })
                            }
                        }
                    }
                }
            });
        });
        Ok(())
    }

    fn step(&self, context: &str, text: &str) {
        self.with(|m| {
            if let Some(p) = m.progress.as_mut().filter(|p| p.context == context) {
                p.steps.push(ProgressStep { phase: Phase::of_line(text), text: text.to_owned() });
            }
        });
    }

    async fn run_session(self: &Arc<Self>, context: String) -> Result<()> {
        let args = devnet_session::cluster::ClusterArgs {
            options: devnet_kube::ClusterOptions {
                kubeconfig: self.kubeconfig.clone(),
                context: Some(context.clone()),
                invoking_user: None,
                // No terminal: an exec plugin that would ask fails and says so.
                non_interactive: true,
            },
            ..Default::default()
        };
        let core = self.clone();
        let ctx = context.clone();
        let say = move |line: &str| core.step(&ctx, line);
        let keyring: std::sync::Arc<dyn devnet_session::cluster::CredentialStore> =
            std::sync::Arc::new(devnet_session::cluster::UserKeyring);
        let prepared = devnet_session::cluster::prepare(&args, keyring.as_ref(), &say).await?;
        // The tray keeps a long session's certificate valid as the CLI does:
        // it enrols again as this user (devnetd holds no cluster credentials).
        let renew = keeper::Renew { renewal: prepared.renewal.clone(), keyring };
        let (req, port_forward) = prepared.into_request(Some(context.clone()), Ok)?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        self.with(|m| {
            m.kept.insert(context.clone(), stop_tx);
        });
        self.step(&context, "session: asking devnetd");
        let core = self.clone();
        let name = context.clone();
        keeper::keep(
            &self.socket,
            ClientKind::Tray,
            req,
            port_forward,
            Some(renew),
            move |event| match event {
                Event::Started => core.with(|m| {
                    if let Some(p) = m.progress.as_mut().filter(|p| p.context == name) {
                        p.steps.push(ProgressStep { phase: Phase::Session, text: "session started by devnetd".into() });
                        p.done = true;
                    }
                    Self::event(m, format!("session {name} started"));
                }),
                // Status comes through the subscription every client shares.
                Event::Status(_) => {}
                Event::BridgeFailed(e) => core.with(|m| Self::event(m, format!("{name}: port-forward failed: {e}"))),
                Event::Renewing(_) => core.with(|m| Self::event(m, format!("{name}: renewing the client certificate"))),
                Event::Renewed { .. } => core.with(|m| Self::event(m, format!("{name}: client certificate renewed"))),
                Event::RenewFailed(e) => {
                    core.with(|m| Self::event(m, format!("{name}: could not renew the client certificate: {e}")))
                }
            },
            async move {
                let _ = stop_rx.await;
            },
        )
        .await
    }

    /// Ends `session`: the one this process keeps through its keeper,
    /// another of this user's through devnetd.
    pub async fn disconnect(&self, session: String) -> Result<()> {
        let stop = self.with(|m| {
            Self::event(m, format!("disconnecting {session}"));
            m.kept.remove(&session)
        });
        match stop {
            Some(stop) => {
                let _ = stop.send(());
                Ok(())
            }
            None => keeper::disconnect(&self.socket, ClientKind::Tray, Some(session)).await.map(drop),
        }
    }

    /// Ends every session this process keeps, and waits (a little) until
    /// devnetd has them gone.
    pub async fn disconnect_all(&self) {
        let names: Vec<String> = self.with(|m| m.kept.keys().cloned().collect());
        for name in &names {
            let _ = self.disconnect(name.clone()).await;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let gone = self.with(|m| !m.sessions.iter().any(|s| names.contains(&s.name)));
            if gone {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        warn!(?names, "sessions still listed after quitting; devnetd ends them when this process's keepers close");
    }

    /// Runs `devnet doctor --json` for `context` as the user and keeps its report.
    pub fn run_doctor(self: &Arc<Self>, context: String) {
        self.with(|m| {
            m.doctor = DoctorView::Running { context: context.clone() };
            Self::event(m, format!("doctor: checking {context}"));
        });
        let core = self.clone();
        tokio::spawn(async move {
            let result = doctor(&context, core.kubeconfig.as_ref()).await;
            core.with(|m| {
                m.doctor = match result {
                    Ok(report) => {
                        Self::event(m, format!("doctor: {} findings for {context}", report.findings.len()));
                        DoctorView::Done { context, report }
                    }
                    Err(e) => DoctorView::Failed { context, error: format!("{e:#}") },
                }
            });
        });
    }

    fn daemon(&self, view: DaemonView, uid: Option<u32>) {
        self.with(|m| {
            if m.daemon != view {
                match &view {
                    DaemonView::Connected { version } => Self::event(m, format!("devnetd {version} answered")),
                    DaemonView::Unreachable { message } => Self::event(m, message.clone()),
                    DaemonView::Unknown => {}
                }
            }
            if !matches!(view, DaemonView::Connected { .. }) {
                m.sessions.clear();
            }
            m.daemon = view;
            m.uid = uid.or(m.uid);
        });
    }

    fn sessions(&self, sessions: Vec<devnet_ipc::message::SessionStatus>) {
        self.with(|m| {
            let uid = m.uid;
            m.sessions =
                sessions.into_iter().map(|s| SessionView::new(s.name, Some(s.owner_uid) == uid, s.status)).collect();
        });
    }
}

/// Finds the `devnet` CLI: `$DEVNET_CLI`, beside this program, or on PATH.
fn devnet_cli() -> PathBuf {
    if let Some(p) = std::env::var_os("DEVNET_CLI") {
        return p.into();
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("devnet")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| "devnet".into())
}

async fn doctor(context: &str, kubeconfig: Option<&PathBuf>) -> Result<devnet_model::doctor::DoctorReport> {
    let mut cmd = tokio::process::Command::new(devnet_cli());
    cmd.args(["doctor", "--json", "--context", context]);
    if let Some(k) = kubeconfig {
        cmd.arg("--kubeconfig").arg(k);
    }
    cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .context("doctor took over 2 minutes")?
        .context("running devnet doctor")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(anyhow!("devnet doctor failed: {}", err.trim()));
    }
    serde_json::from_slice(&out.stdout).context("reading devnet doctor's report")
}

/// Follows devnetd: one subscription, re-made after a pause whenever it
/// breaks (devnetd restarted, not yet started).
async fn follow_daemon(core: Arc<Core>) {
    let mut pause = devnet_desktop::retry::Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    loop {
        match subscribe_once(&core).await {
            Ok(()) => pause.reset(),
            Err(e) => core.daemon(DaemonView::Unreachable { message: e }, None),
        }
        tokio::time::sleep(pause.next_delay()).await;
    }
}

async fn subscribe_once(core: &Core) -> std::result::Result<(), String> {
    let mut conn = client::connect(&core.socket, ClientKind::Tray).await.map_err(|e| e.to_string())?;
    core.daemon(DaemonView::Connected { version: conn.daemon_version.clone() }, Some(conn.caller_uid));
    conn.send(&ClientMsg::Subscribe).await.map_err(|e| e.to_string())?;
    loop {
        match conn.recv().await.map_err(|e| e.to_string())? {
            Some(ServerMsg::Sessions { sessions }) => core.sessions(sessions),
            Some(_) => {}
            None => return Err("devnetd closed the connection (restarting?)".to_owned()),
        }
    }
}

/// Shows notifications when the notifier says so: after a push, and at
/// the time it asks to be woken.
async fn notify_loop(core: Arc<Core>, mut wakes: mpsc::UnboundedReceiver<()>) {
    loop {
        let (due, next) = {
            let mut n = core.notifier.lock().unwrap_or_else(|e| e.into_inner());
            let now = core.started.elapsed();
            let mut due = Vec::new();
            while let Some(x) = n.poll(now) {
                due.push(x);
            }
            (due, n.next_wake().map(|at| at.saturating_sub(now)))
        };
        for note in due {
            core.with(|m| Core::event(m, format!("{}: {}", note.title, note.body)));
            core.sink.notify(note);
        }
        // Sleeps until the next due time or the next push; with nothing
        // pending it only waits for a push (no timer: no wake-ups at idle).
        match next {
            Some(after) => {
                tokio::select! {
                    w = wakes.recv() => if w.is_none() { return },
                    () = tokio::time::sleep(after) => {}
                }
            }
            None => {
                if wakes.recv().await.is_none() {
                    return;
                }
            }
        }
    }
}

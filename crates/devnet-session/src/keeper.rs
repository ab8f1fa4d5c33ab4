//! Keeping a session with devnetd: start it, follow its status, open a
//! bridge (the API server's port-forward, with the user's credentials)
//! whenever devnetd asks for one, renew the client certificate before it
//! expires or when the relay refuses it ([`crate::renewal`]), and end it
//! when asked to.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use devnet_ipc::client::{self, Connection};
use devnet_ipc::message::{ClientKind, ClientMsg, ConnectRequest, ServerMsg, SessionStatus};
use devnet_model::Secret;
use tracing::{debug, info, warn};

use crate::cluster::{CredentialStore, PortForward};
use crate::renewal::{Action, Reason, Renewal, RenewalSchedule};

/// The longest the keeper sleeps before looking at the renewal schedule
/// again: its timer does not count time the laptop spent asleep, the wall
/// clock (which certificates follow) does.
const SCHEDULE_TICK: Duration = Duration::from_secs(30);

/// What the keeper reports as the session goes.
#[derive(Debug)]
pub enum Event<'a> {
    /// devnetd started the session.
    Started,
    /// The session's status changed.
    Status(&'a SessionStatus),
    /// A bridge could not be opened (devnetd retries).
    BridgeFailed(String),
    /// Enrolling again (the certificate expires soon, or the relay refused it).
    Renewing(Reason),
    /// The engine presents a new client certificate from now on.
    Renewed { serial: String, not_after: u64 },
    /// A renewal failed; it is tried again later.
    RenewFailed(String),
}

/// The user's side of certificate renewal: how to enrol, and where the
/// result is kept for the next connect.
pub struct Renew {
    pub renewal: Renewal,
    pub keyring: Arc<dyn CredentialStore>,
}

impl std::fmt::Debug for Renew {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renew").field("renewal", &self.renewal).finish_non_exhaustive()
    }
}

/// Starts `req` in devnetd at `socket` and keeps it until `stop` resolves
/// (then ends it) or devnetd ends it. With `port_forward`, every bridge
/// devnetd asks for is opened here; with `renew`, the client certificate
/// is renewed as [`RenewalSchedule`] says.
pub async fn keep(
    socket: &Path,
    kind: ClientKind,
    req: ConnectRequest,
    port_forward: Option<PortForward>,
    renew: Option<Renew>,
    mut on_event: impl FnMut(Event<'_>),
    stop: impl Future<Output = ()>,
) -> Result<()> {
    let name = req.session.clone();
    let mut conn = client::connect(socket, kind).await?;
    conn.send(&ClientMsg::Connect(Box::new(req))).await?;
    match conn.recv().await? {
        Some(ServerMsg::Started { .. }) => on_event(Event::Started),
        Some(ServerMsg::Error { error }) => bail!("devnetd: {error}"),
        other => bail!("devnetd answered {other:?} to connect"),
    }
    conn.send(&ClientMsg::Subscribe).await?;
    tokio::pin!(stop);
    let mut stopping = false;
    let (failed_tx, mut failed_rx) = tokio::sync::mpsc::channel::<String>(4);
    let renew = renew.map(Arc::new);
    let mut schedule = renew.as_ref().map(|r| RenewalSchedule::new(r.renewal.not_after, unix_now()));
    // Whether the engine reports that the relay refused the certificate,
    // and whether a renewal runs now.
    let mut refused = false;
    let mut renewing = false;
    let (renewed_tx, mut renewed_rx) = tokio::sync::mpsc::channel::<Result<(String, u64), String>>(1);
    loop {
        let mut tick = SCHEDULE_TICK;
        if let (Some(s), Some(r), false) = (schedule.as_ref(), renew.as_ref(), renewing || stopping) {
            match s.next(unix_now(), refused) {
                Action::Wait(d) => tick = tick.min(d),
                Action::Renew(reason) => {
                    renewing = true;
                    on_event(Event::Renewing(reason));
                    let (socket, session, r, done) = (socket.to_owned(), name.clone(), r.clone(), renewed_tx.clone());
                    tokio::spawn(async move {
                        let result = renew_credential(&socket, kind, session, &r).await.map_err(|e| format!("{e:#}"));
                        let _ = done.send(result).await;
                    });
                }
            }
        }
        tokio::select! {
            Some(error) = failed_rx.recv() => on_event(Event::BridgeFailed(error)),
            Some(result) = renewed_rx.recv() => {
                renewing = false;
                let Some(s) = schedule.as_mut() else { continue };
                match result {
                    Ok((serial, not_after)) => {
                        s.renewed(not_after, unix_now());
                        on_event(Event::Renewed { serial, not_after });
                    }
                    Err(error) => {
                        s.failed(unix_now());
                        on_event(Event::RenewFailed(error));
                    }
                }
            }
            () = tokio::time::sleep(tick), if schedule.is_some() => {}
            () = &mut stop, if !stopping => {
                stopping = true;
                conn.send(&ClientMsg::Disconnect { session: Some(name.clone()) }).await?;
            }
            msg = conn.recv() => match msg? {
                None => bail!("devnetd went away (it undoes the session's changes when it starts again)"),
                Some(ServerMsg::Sessions { sessions }) => {
                    if let Some(s) = sessions.iter().find(|s| s.name == name) {
                        refused = s.status.credential_refused();
                        on_event(Event::Status(s));
                    }
                }
                Some(ServerMsg::OpenBridge { session, attempt }) if session == name => {
                    let (socket, pf, failed) = (socket.to_owned(), port_forward.clone(), failed_tx.clone());
                    tokio::spawn(async move {
                        if let Err(e) = bridge(socket, kind, session, attempt, pf).await {
                            let _ = failed.send(format!("{e:#}")).await;
                        }
                    });
                }
                Some(ServerMsg::Ended { session, error }) if session == name => {
                    return match error {
                        None => Ok(()),
                        Some(e) => Err(anyhow!("the session ended: {e}")),
                    };
                }
                Some(ServerMsg::Error { error }) => {
                    if stopping {
                        bail!("devnetd: {error}");
                    }
                    warn!(%error, "devnetd reported an error");
                }
                Some(other) => debug!(?other, "ignored"),
            }
        }
    }
}

/// Enrols again as the user and hands the new certificate to devnetd for
/// `session` (on a connection of its own: the keeper's carries status).
/// Returns the new certificate's serial and expiry.
async fn renew_credential(socket: &Path, kind: ClientKind, session: String, renew: &Renew) -> Result<(String, u64)> {
    let identity = renew.renewal.enrol(renew.keyring.as_ref()).await.context("enrolling again with the relay")?;
    let mut conn = client::connect(socket, kind).await?;
    let credential = Secret::new(identity.credential());
    conn.send(&ClientMsg::RenewCredential { session, credential }).await?;
    match conn.recv().await? {
        Some(ServerMsg::CredentialRenewed { .. }) => {
            info!(serial = %identity.serial, not_after = identity.not_after, "client certificate renewed");
            Ok((identity.serial, identity.not_after))
        }
        Some(ServerMsg::Error { error }) => bail!("devnetd: {error}"),
        other => bail!("devnetd answered {other:?} to the renewed credential"),
    }
}

/// The wall clock, which certificates follow, in seconds since the Unix epoch.
fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Opens a port-forward and hands it to devnetd as a bridge, then pumps
/// bytes both ways until either side closes. devnetd's TLS to the relay
/// runs through it end to end; this process never sees inside.
async fn bridge(
    socket: PathBuf,
    kind: ClientKind,
    session: String,
    attempt: u64,
    port_forward: Option<PortForward>,
) -> Result<()> {
    let mut conn = client::connect(&socket, kind).await?;
    let opened = match port_forward {
        Some(pf) => pf.open().await,
        None => Err(anyhow!("this client may not use the API server's port-forward")),
    };
    let (mut stream, label) = match opened {
        Ok(pair) => pair,
        Err(e) => {
            let error = format!("{e:#}");
            conn.send(&ClientMsg::BridgeFailed { session, attempt, error: error.clone() }).await?;
            bail!("{error}");
        }
    };
    conn.send(&ClientMsg::Bridge { session, attempt, label }).await?;
    match conn.recv().await? {
        Some(ServerMsg::BridgeAccepted) => {}
        other => bail!("devnetd did not take the bridge: {other:?}"),
    }
    let Connection { framed, .. } = conn;
    let mut pipe = framed.into_pipe();
    let copied = tokio::io::copy_bidirectional(&mut pipe, &mut stream).await;
    debug!(?copied, "bridge closed");
    Ok(())
}

/// Status of every session devnetd runs (one request, no subscription).
pub async fn sessions(socket: &Path, kind: ClientKind) -> Result<Vec<SessionStatus>> {
    let mut conn = client::connect(socket, kind).await?;
    conn.send(&ClientMsg::Status).await?;
    match conn.recv().await.context("reading devnetd's answer")? {
        Some(ServerMsg::Sessions { sessions }) => Ok(sessions),
        Some(ServerMsg::Error { error }) => bail!("devnetd: {error}"),
        other => bail!("devnetd answered {other:?} to status"),
    }
}

/// Asks devnetd to end `session` (the only one when `None`).
pub async fn disconnect(socket: &Path, kind: ClientKind, session: Option<String>) -> Result<String> {
    let mut conn = client::connect(socket, kind).await?;
    conn.send(&ClientMsg::Disconnect { session }).await?;
    match conn.recv().await? {
        Some(ServerMsg::Disconnecting { session }) => Ok(session),
        Some(ServerMsg::Error { error }) => bail!("{error}"),
        other => bail!("devnetd answered {other:?} to disconnect"),
    }
}

//! Keeping a session with devnetd: start it, follow its status, open a
//! bridge (the API server's port-forward, with the user's credentials)
//! whenever devnetd asks for one, and end it when asked to.

use std::future::Future;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use devnet_ipc::client::{self, Connection};
use devnet_ipc::message::{ClientKind, ClientMsg, ConnectRequest, ServerMsg, SessionStatus};
use tracing::{debug, warn};

use crate::cluster::PortForward;

/// What the keeper reports as the session goes.
#[derive(Debug)]
pub enum Event<'a> {
    /// devnetd started the session.
    Started,
    /// The session's status changed.
    Status(&'a SessionStatus),
    /// A bridge could not be opened (devnetd retries).
    BridgeFailed(String),
}

/// Starts `req` in devnetd at `socket` and keeps it until `stop` resolves
/// (then ends it) or devnetd ends it. With `port_forward`, every bridge
/// devnetd asks for is opened here.
pub async fn keep(
    socket: &Path,
    kind: ClientKind,
    req: ConnectRequest,
    port_forward: Option<PortForward>,
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
    loop {
        tokio::select! {
            Some(error) = failed_rx.recv() => on_event(Event::BridgeFailed(error)),
            () = &mut stop, if !stopping => {
                stopping = true;
                conn.send(&ClientMsg::Disconnect { session: Some(name.clone()) }).await?;
            }
            msg = conn.recv() => match msg? {
                None => bail!("devnetd went away (it undoes the session's changes when it starts again)"),
                Some(ServerMsg::Sessions { sessions }) => {
                    if let Some(s) = sessions.iter().find(|s| s.name == name) {
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

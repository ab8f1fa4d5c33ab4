//! One client connection: hello, then requests, pushes and bridge requests
//! until it closes (or turns into a bridge).

use std::sync::Arc;

use devnet_ipc::IPC_VERSION;
use devnet_ipc::message::{ClientMsg, IpcError, ServerMsg};
use devnet_ipc::stream::{Framed, StreamError};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::sessions::Sessions;

/// Serves one client until it goes away.
pub async fn serve(stream: UnixStream, sessions: Arc<Sessions>) {
    // The kernel's word for who is calling; the socket's mode already
    // admitted only root and the group.
    let uid = match stream.peer_cred() {
        Ok(c) => c.uid(),
        Err(e) => {
            warn!(error = %e, "no peer credentials; closing");
            return;
        }
    };
    let mut framed = Framed::new(stream);
    if let Err(e) = hello(&mut framed, uid).await {
        debug!(uid, error = %e, "hello failed");
        return;
    }
    let (out_tx, mut out_rx) = mpsc::channel::<ServerMsg>(16);
    let mut subscription: Option<tokio::sync::watch::Receiver<u64>> = None;
    loop {
        let pushed = async {
            match subscription.as_mut() {
                Some(rx) => rx.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        let reply = tokio::select! {
            msg = framed.read::<ClientMsg>() => match msg {
                Ok(Some(ClientMsg::Bridge { session, attempt, label })) => {
                    // The connection becomes the pipe; this task ends here.
                    bridge(framed, &sessions, uid, session, attempt, label).await;
                    sessions.owner_gone(&out_tx);
                    return;
                }
                Ok(Some(msg)) => handle(msg, uid, &sessions, &out_tx, &mut subscription).await,
                Ok(None) => break,
                Err(StreamError::Frame(e)) if e.is_recoverable() => {
                    Some(ServerMsg::Error { error: IpcError::BadRequest { message: e.to_string() } })
                }
                Err(e) => {
                    debug!(uid, error = %e, "client connection failed");
                    break;
                }
            },
            Some(msg) = out_rx.recv() => Some(msg),
            alive = pushed => {
                if !alive { break; }
                Some(ServerMsg::Sessions { sessions: sessions.snapshot() })
            }
        };
        if let Some(reply) = reply
            && framed.write(&reply).await.is_err()
        {
            break;
        }
    }
    sessions.owner_gone(&out_tx);
}

/// Reads the hello and answers it; a client of another protocol version
/// is told which side to upgrade.
async fn hello(framed: &mut Framed<UnixStream>, uid: u32) -> Result<(), StreamError> {
    let refuse = |error| ServerMsg::Refused { error };
    match framed.read::<ClientMsg>().await {
        Ok(Some(ClientMsg::Hello { ipc_version, client, app_version })) if ipc_version == IPC_VERSION => {
            debug!(uid, ?client, %app_version, "client connected");
            let answer = ServerMsg::Hello {
                ipc_version: IPC_VERSION,
                daemon_version: env!("CARGO_PKG_VERSION").into(),
                caller_uid: uid,
            };
            framed.write(&answer).await
        }
        Ok(Some(ClientMsg::Hello { ipc_version, client, app_version })) => {
            info!(uid, ?client, %app_version, ipc_version, "refused a client of another IPC version");
            framed.write(&refuse(IpcError::version_mismatch(ipc_version, IPC_VERSION))).await?;
            Err(StreamError::Io(std::io::Error::other("version mismatch")))
        }
        Ok(Some(_)) | Err(StreamError::Frame(_)) => {
            framed.write(&refuse(IpcError::NoHello)).await?;
            Err(StreamError::Io(std::io::Error::other("no hello")))
        }
        Ok(None) => Err(StreamError::Io(std::io::ErrorKind::UnexpectedEof.into())),
        Err(e) => Err(e),
    }
}

async fn handle(
    msg: ClientMsg,
    uid: u32,
    sessions: &Arc<Sessions>,
    out: &mpsc::Sender<ServerMsg>,
    subscription: &mut Option<tokio::sync::watch::Receiver<u64>>,
) -> Option<ServerMsg> {
    let error = |error| Some(ServerMsg::Error { error });
    match msg {
        ClientMsg::Hello { .. } => error(IpcError::BadRequest { message: "hello was already said".into() }),
        ClientMsg::Connect(req) => {
            let session = req.session.clone();
            match sessions.start(uid, *req, out.clone()).await {
                Ok(()) => Some(ServerMsg::Started { session }),
                Err(e) => error(e),
            }
        }
        ClientMsg::Disconnect { session } => match sessions.end(uid, session).await {
            Ok(session) => Some(ServerMsg::Disconnecting { session }),
            Err(e) => error(e),
        },
        ClientMsg::Status => Some(ServerMsg::Sessions { sessions: sessions.snapshot() }),
        ClientMsg::Subscribe => {
            *subscription = Some(sessions.subscribe());
            Some(ServerMsg::Sessions { sessions: sessions.snapshot() })
        }
        ClientMsg::BridgeFailed { session, attempt, error: why } => {
            if let Some(slot) = sessions.bridge(&session, uid) {
                slot.deliver(attempt, Err(why));
            }
            None
        }
        ClientMsg::RenewCredential { session, credential } => {
            match sessions.renew_credential(uid, &session, credential).await {
                Ok(()) => Some(ServerMsg::CredentialRenewed { session }),
                Err(e) => error(e),
            }
        }
        ClientMsg::Bridge { .. } => None,
    }
}

/// Hands this connection to the dial waiting for it, if the caller owns
/// the session and a dial waits for that attempt.
async fn bridge(
    mut framed: Framed<UnixStream>,
    sessions: &Sessions,
    uid: u32,
    session: String,
    attempt: u64,
    label: String,
) {
    let Some(slot) = sessions.bridge(&session, uid).filter(|s| s.expects(attempt)) else {
        let _ = framed.write(&ServerMsg::Error { error: IpcError::NoBridge { session, attempt } }).await;
        return;
    };
    if framed.write(&ServerMsg::BridgeAccepted).await.is_err() {
        return;
    }
    let label = if label.is_empty() { "bridge".to_owned() } else { label };
    info!(session = %slot.session, attempt, %label, "bridge opened by the session's owner");
    slot.deliver(attempt, Ok((Box::new(framed.into_pipe()), label)));
}

//! The relay through the user's port-forward: a [`Dial`] that asks the
//! session's owner (its `devnet connect`, its tray app) to open the API
//! server's port-forward with *their* credentials and hand the byte stream
//! over a second connection to devnetd. TLS runs end to end with the relay
//! over it, so the bridge is an untrusted pipe: it can cut the link, never
//! read or forge it.

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use devnet_engine::transport::{Dial, DialFuture, RelayStream};
use devnet_ipc::message::ServerMsg;
use tokio::sync::{mpsc, oneshot};

/// How long the owner has to open a port-forward (API server round trips,
/// maybe an exec plugin refreshing a token).
const OPEN_TIMEOUT: Duration = Duration::from_secs(20);

type Pending = oneshot::Sender<Result<(RelayStream, String), String>>;

/// One session's bridge: who may provide it, and the dials waiting for one.
pub struct BridgeSlot {
    pub session: String,
    pub owner_uid: u32,
    /// The owner's connection, while it is open.
    owner: Mutex<Option<mpsc::Sender<ServerMsg>>>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_attempt: AtomicU64,
}

impl std::fmt::Debug for BridgeSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeSlot")
            .field("session", &self.session)
            .field("owner_uid", &self.owner_uid)
            .finish_non_exhaustive()
    }
}

impl BridgeSlot {
    pub fn new(session: String, owner_uid: u32, owner: mpsc::Sender<ServerMsg>) -> Self {
        Self {
            session,
            owner_uid,
            owner: Mutex::new(Some(owner)),
            pending: Mutex::new(HashMap::new()),
            next_attempt: AtomicU64::new(1),
        }
    }

    /// The owner's connection closed: no more bridges from it.
    pub fn owner_gone_if(&self, conn: &mpsc::Sender<ServerMsg>) {
        let mut owner = self.owner.lock().expect("lock");
        if owner.as_ref().is_some_and(|o| o.same_channel(conn)) {
            *owner = None;
        }
    }

    /// Hands a bridge (or the owner's failure to open one) to the dial
    /// waiting for `attempt`. Whether one was waiting.
    pub fn deliver(&self, attempt: u64, bridge: Result<(RelayStream, String), String>) -> bool {
        match self.pending.lock().expect("lock").remove(&attempt) {
            Some(waiting) => waiting.send(bridge).is_ok(),
            None => false,
        }
    }

    /// Whether a dial waits for `attempt` (checked before a connection is
    /// turned into a pipe).
    pub fn expects(&self, attempt: u64) -> bool {
        self.pending.lock().expect("lock").contains_key(&attempt)
    }
}

/// The engine's transport through a [`BridgeSlot`].
#[derive(Debug)]
pub struct BridgeDial(pub std::sync::Arc<BridgeSlot>);

impl Dial for BridgeDial {
    fn dial(&self) -> DialFuture {
        let slot = self.0.clone();
        Box::pin(async move {
            let owner = slot.owner.lock().expect("lock").clone();
            let Some(owner) = owner else {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    format!(
                        "the relay is reachable only through the API server's port-forward, which the program that started session {} opens, and it has exited: run `devnet connect` again",
                        slot.session
                    ),
                ));
            };
            let attempt = slot.next_attempt.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            slot.pending.lock().expect("lock").insert(attempt, tx);
            let asked = owner.send(ServerMsg::OpenBridge { session: slot.session.clone(), attempt }).await;
            let result = match asked {
                Err(_) => Err("the session's owner disconnected before opening the port-forward".to_owned()),
                Ok(()) => match tokio::time::timeout(OPEN_TIMEOUT, rx).await {
                    Ok(Ok(bridge)) => bridge,
                    Ok(Err(_)) => Err("the port-forward request was dropped".to_owned()),
                    Err(_) => Err(format!("the port-forward was not opened within {OPEN_TIMEOUT:?}")),
                },
            };
            slot.pending.lock().expect("lock").remove(&attempt);
            result.map_err(io::Error::other)
        })
    }
}

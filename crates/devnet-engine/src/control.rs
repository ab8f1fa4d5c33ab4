//! The engine's local control socket: `devnet status` and `devnet
//! disconnect` (and later the tray app) talk to the running engine here.
//!
//! A Unix socket, never loopback TCP: the file is mode 0600 and every
//! caller's uid is checked with the kernel (SO_PEERCRED), so only root or the
//! engine's own user can read status or disconnect. One JSON request line,
//! one JSON response line.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::status::Status;

/// The socket's file name inside the state directory.
pub const SOCKET_FILE: &str = "engine.sock";

/// A request to the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    Status,
    Disconnect,
}

/// The engine's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    Status { status: Box<Status> },
    Disconnecting,
    Error { message: String },
}

/// Commands the control socket (and devnetd) hand to the engine.
#[derive(Debug)]
pub enum Command {
    Disconnect,
    /// Present this client credential (certificate and key) from now on;
    /// the answer says whether it was taken.
    RenewCredential {
        credential: devnet_model::Secret,
        reply: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
}

/// Path of the control socket in `state_dir`.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_FILE)
}

/// Binds the socket, refusing to take over one a live engine still serves.
pub async fn bind(path: &Path) -> Result<UnixListener> {
    if UnixStream::connect(path).await.is_ok() {
        anyhow::bail!(
            "another devnet engine is running (it answers on {}): run `devnet disconnect` first",
            path.display()
        );
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).with_context(|| format!("binding control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Removes the socket file a dead engine left behind; returns whether it did.
/// A socket a live engine answers on is left alone.
pub async fn remove_stale(state_dir: &Path) -> bool {
    let path = socket_path(state_dir);
    if !path.exists() || UnixStream::connect(&path).await.is_ok() {
        return false;
    }
    std::fs::remove_file(&path).is_ok()
}

/// Serves requests until the listener fails.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    status: watch::Receiver<Status>,
    commands: mpsc::Sender<Command>,
) {
    let owner = std::fs::metadata(&path).map(|m| m.uid()).unwrap_or(0);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let uid = stream.peer_cred().map(|c| c.uid()).ok();
        if uid != Some(0) && uid != Some(owner) {
            warn!(?uid, "control socket: caller is neither root nor the engine's user; refused");
            continue;
        }
        let (status, commands) = (status.clone(), commands.clone());
        tokio::spawn(async move {
            if let Err(e) = answer(stream, status, commands).await {
                debug!(error = %e, "control request failed");
            }
        });
    }
}

async fn answer(stream: UnixStream, status: watch::Receiver<Status>, commands: mpsc::Sender<Command>) -> Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut line = String::new();
    BufReader::new(rd).take_line(&mut line).await?;
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(Request::Status) => Response::Status { status: Box::new(status.borrow().clone()) },
        Ok(Request::Disconnect) => {
            let _ = commands.send(Command::Disconnect).await;
            Response::Disconnecting
        }
        Err(e) => Response::Error { message: format!("bad request: {e}") },
    };
    let mut out = serde_json::to_vec(&response)?;
    out.push(b'\n');
    wr.write_all(&out).await?;
    Ok(())
}

trait TakeLine {
    async fn take_line(&mut self, line: &mut String) -> std::io::Result<usize>;
}

impl<R: tokio::io::AsyncRead + Unpin> TakeLine for BufReader<R> {
    /// One line of at most 64 KiB, so a misbehaving client cannot grow memory.
    async fn take_line(&mut self, line: &mut String) -> std::io::Result<usize> {
        use tokio::io::AsyncReadExt;
        let mut limited = (&mut *self).take(64 * 1024);
        limited.read_line(line).await
    }
}

/// Sends one request to the engine at `state_dir` and returns its answer.
pub async fn request(state_dir: &Path, req: Request) -> Result<Response> {
    let path = socket_path(state_dir);
    let stream = UnixStream::connect(&path).await.with_context(|| {
        format!("no devnet engine answers on {} (is `devnet connect` running? are you root?)", path.display())
    })?;
    let (rd, mut wr) = stream.into_split();
    let mut out = serde_json::to_vec(&req)?;
    out.push(b'\n');
    wr.write_all(&out).await?;
    let mut line = String::new();
    BufReader::new(rd).take_line(&mut line).await?;
    serde_json::from_str(&line).with_context(|| format!("unexpected answer from the engine: {line:?}"))
}

//! The client side: connect to devnetd and say hello.

use std::io;
use std::path::{Path, PathBuf};

use tokio::net::UnixStream;

use crate::message::{ClientKind, ClientMsg, IpcError, ServerMsg};
use crate::stream::{Framed, StreamError};
use crate::{GROUP, IPC_VERSION};

/// Why a client could not reach devnetd.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "devnetd is not running (nothing listens on {0}): start the devnet service (`sudo systemctl start devnetd`), or connect without it as root with `sudo devnet connect --foreground`"
    )]
    NotRunning(PathBuf),
    #[error(
        "you may not use devnetd ({0}): add yourself to group {GROUP} with `sudo usermod -aG {GROUP} $USER`, then log out and in again"
    )]
    NotMember(PathBuf),
    #[error("devnetd refused: {0}")]
    Refused(IpcError),
    #[error("devnetd answered {0:?} to the hello")]
    Unexpected(Box<ServerMsg>),
    #[error("devnetd closed the connection")]
    Closed,
    #[error("talking to devnetd at {path}: {error}")]
    Io { path: PathBuf, error: String },
}

impl ClientError {
    fn from_stream(path: &Path, e: StreamError) -> Self {
        Self::Io { path: path.to_owned(), error: e.to_string() }
    }
}

/// A connection to devnetd that has said hello.
#[derive(Debug)]
pub struct Connection {
    pub framed: Framed<UnixStream>,
    pub daemon_version: String,
    /// Our uid as devnetd sees it.
    pub caller_uid: u32,
}

/// Connects to devnetd at `path` and says hello as `client`.
pub async fn connect(path: &Path, client: ClientKind) -> Result<Connection, ClientError> {
    connect_as(path, client, IPC_VERSION).await
}

/// [`connect`] claiming another protocol version (for tests of the refusal).
pub async fn connect_as(path: &Path, client: ClientKind, ipc_version: u32) -> Result<Connection, ClientError> {
    let stream = UnixStream::connect(path).await.map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ClientError::NotRunning(path.to_owned()),
        io::ErrorKind::PermissionDenied => ClientError::NotMember(path.to_owned()),
        _ => ClientError::Io { path: path.to_owned(), error: e.to_string() },
    })?;
    let mut framed = Framed::new(stream);
    let hello = ClientMsg::Hello { ipc_version, client, app_version: env!("CARGO_PKG_VERSION").to_owned() };
    framed.write(&hello).await.map_err(|e| ClientError::from_stream(path, e))?;
    match framed.read::<ServerMsg>().await.map_err(|e| ClientError::from_stream(path, e))? {
        Some(ServerMsg::Hello { ipc_version: theirs, daemon_version, caller_uid }) => {
            if theirs != ipc_version {
                return Err(ClientError::Refused(IpcError::version_mismatch(ipc_version, theirs)));
            }
            Ok(Connection { framed, daemon_version, caller_uid })
        }
        Some(ServerMsg::Refused { error }) => Err(ClientError::Refused(error)),
        Some(other) => Err(ClientError::Unexpected(Box::new(other))),
        None => Err(ClientError::Closed),
    }
}

impl Connection {
    pub async fn send(&mut self, msg: &ClientMsg) -> Result<(), StreamError> {
        self.framed.write(msg).await
    }

    /// The next message; `None` when devnetd closed the connection.
    pub async fn recv(&mut self) -> Result<Option<ServerMsg>, StreamError> {
        self.framed.read().await
    }
}

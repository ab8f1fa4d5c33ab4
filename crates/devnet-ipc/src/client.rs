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
    #[error(
        "you were added to group {GROUP}, but this login started before that ({0} admits the group's members): log out and back in, or run `newgrp {GROUP}` in this terminal"
    )]
    NewLoginNeeded(PathBuf),
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
        io::ErrorKind::PermissionDenied if membership_pending_here() => ClientError::NewLoginNeeded(path.to_owned()),
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

/// Whether this process's user is listed in group [`GROUP`] while the
/// process itself does not carry that group: the package added them after
/// they logged in, and only a new login (or `newgrp`) picks it up.
fn membership_pending_here() -> bool {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    membership_pending(&read("/etc/group"), &read("/etc/passwd"), &read("/proc/self/status"))
}

/// [`membership_pending_here`] on the three files' contents.
fn membership_pending(group_file: &str, passwd_file: &str, status: &str) -> bool {
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).unwrap_or_default();
    let Some(uid) = field("Uid:").split_whitespace().next() else { return false };
    let Some(user) = passwd_file
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find_map(|f| (f.len() > 2 && f[2] == uid).then(|| f[0].to_owned()))
    else {
        return false;
    };
    let Some((gid, members)) = group_file
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find_map(|f| (f.len() > 3 && f[0] == GROUP).then(|| (f[2].to_owned(), f[3].to_owned())))
    else {
        return false;
    };
    let listed = members.split(',').any(|m| m.trim() == user);
    let carried = field("Groups:").split_whitespace().any(|g| g == gid)
        || field("Gid:").split_whitespace().next() == Some(gid.as_str());
    listed && !carried
}

#[cfg(test)]
mod membership_tests {
    use super::membership_pending;

    const GROUP: &str = "root:x:0:\ndevnet:x:997:alice,bob\n";
    const PASSWD: &str =
        "root:x:0:0::/root:/bin/sh\nalice:x:2201:2201::/home/alice:/bin/sh\nmallory:x:2202:2202::/:/bin/sh\n";

    fn status(uid: u32, groups: &str) -> String {
        format!(
            "Name:\tdevnet\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t{uid}\t{uid}\t{uid}\t{uid}\nGroups:\t{groups}\n"
        )
    }

    #[test]
    fn added_to_the_group_after_logging_in() {
        assert!(membership_pending(GROUP, PASSWD, &status(2201, "2201 27")));
    }

    #[test]
    fn a_login_that_carries_the_group_or_a_user_not_listed_is_not_pending() {
        assert!(!membership_pending(GROUP, PASSWD, &status(2201, "2201 997")));
        assert!(!membership_pending(GROUP, PASSWD, &status(2202, "2202")), "mallory is not a member at all");
        assert!(!membership_pending("root:x:0:\n", PASSWD, &status(2201, "2201")), "no group devnet");
        assert!(!membership_pending(GROUP, PASSWD, &status(4242, "")), "a uid with no name");
    }
}

//! The messages. Tagged JSON (`{"type": "connect", …}`), so a message of a
//! newer client that this devnetd does not know is refused as malformed
//! rather than misread.

use std::net::SocketAddr;

use devnet_model::Secret;
use devnet_model::profile::ProfileFile;
use devnet_model::status::{Discovered, Status};
use serde::{Deserialize, Serialize};

/// Which program is calling (for devnetd's log, and so a later devnetd can
/// tell the tray app from the CLI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientKind {
    Cli,
    Tray,
    Preflight,
}

/// From a client to devnetd.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ClientMsg {
    /// The first message on every connection. Never changes shape.
    Hello { ipc_version: u32, client: ClientKind, app_version: String },
    /// Start a session. The caller becomes its owner and, if it offers a
    /// bridge, is asked to open one whenever the relay must be reached
    /// through the API server.
    Connect(Box<ConnectRequest>),
    /// End a session (the only one, when `None`). Only its owner or root.
    Disconnect { session: Option<String> },
    /// One status answer.
    Status,
    /// Status now and on every change, until the connection closes.
    Subscribe,
    /// This connection becomes the byte pipe devnetd asked for with
    /// [`ServerMsg::OpenBridge`]: after [`ServerMsg::BridgeAccepted`], raw
    /// bytes (TLS to the relay, end to end) flow both ways.
    /// `label` says what it is, for status (`port-forward devnet/… via https://…`).
    Bridge { session: String, attempt: u64, label: String },
    /// The bridge devnetd asked for could not be opened.
    BridgeFailed { session: String, attempt: u64, error: String },
    /// A new client credential (certificate and key, as enrolment gave
    /// them) for `session`: the engine presents it on every later
    /// (re)connect, and reconnects now if the relay refused the old one.
    /// Only the session's owner (or root). Answered by
    /// [`ServerMsg::CredentialRenewed`] or an error.
    RenewCredential { session: String, credential: Secret },
}

/// Everything devnetd needs to start a session: contents, never paths.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectRequest {
    /// The session's name (the kubeconfig context, or the profile's).
    pub session: String,
    /// What to reach. Fields that name files are refused.
    pub profile: ProfileFile,
    /// The relay token.
    pub token: Secret,
    /// The CA the relay's certificate must chain to, in PEM.
    pub relay_ca_pem: String,
    /// Relay addresses to dial directly (pod IP, node port), in order.
    pub direct: Vec<SocketAddr>,
    /// Whether this client opens bridges (the API server's port-forward)
    /// when no direct address answers.
    pub bridge: bool,
    /// What cluster discovery found, for status.
    pub discovered: Vec<Discovered>,
}

impl std::fmt::Debug for ConnectRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectRequest")
            .field("session", &self.session)
            .field("profile", &self.profile)
            .field("token", &self.token)
            .field("direct", &self.direct)
            .field("bridge", &self.bridge)
            .finish_non_exhaustive()
    }
}

/// From devnetd to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMsg {
    /// The answer to a hello that was accepted. Never changes shape.
    Hello { ipc_version: u32, daemon_version: String, caller_uid: u32 },
    /// The hello was refused; the connection closes.
    Refused { error: IpcError },
    /// A session started (its status follows as it changes).
    Started { session: String },
    /// Every session's status (the answer to `Status`, and each push to a
    /// subscriber).
    Sessions { sessions: Vec<SessionStatus> },
    /// A session ended; `error` says why when it was not asked to.
    Ended { session: String, error: Option<String> },
    /// Open a bridge for `session` (see [`ClientMsg::Bridge`]).
    OpenBridge { session: String, attempt: u64 },
    /// The connection is now a bridge.
    BridgeAccepted,
    /// The session is being ended.
    Disconnecting { session: String },
    /// The session's engine took the new credential.
    CredentialRenewed { session: String },
    /// The request failed; the connection stays usable.
    Error { error: IpcError },
}

/// One session, as every client sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionStatus {
    pub name: String,
    /// Who started it (only they or root may end it).
    pub owner_uid: u32,
    pub status: Status,
}

/// Which side of a version mismatch must be upgraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Upgrade {
    /// The client (devnet, the tray app) is older.
    Client,
    /// devnetd is older.
    Daemon,
}

/// What went wrong, typed, so a GUI can tell the cases apart; each says
/// the fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum IpcError {
    #[error(
        "this devnet speaks IPC version {client} but devnetd speaks {daemon}: {}",
        match upgrade {
            Upgrade::Client => "upgrade devnet on this machine (the CLI or tray app) to match devnetd",
            Upgrade::Daemon => "upgrade the devnet service (devnetd), then restart it",
        }
    )]
    VersionMismatch { client: u32, daemon: u32, upgrade: Upgrade },
    #[error("the first message must be a hello")]
    NoHello,
    #[error("session {session} was started by uid {owner}: only that user or root may end it")]
    NotOwner { session: String, owner: u32 },
    #[error("session {session} was started by uid {owner}: only that user (or root) may renew its client certificate")]
    NotOwnerOfCredential { session: String, owner: u32 },
    #[error("no session named {session} (running: {})", if running.is_empty() { "none".to_owned() } else { running.join(", ") })]
    NoSession { session: String, running: Vec<String> },
    #[error("several sessions run ({}): name one with --session", running.join(", "))]
    WhichSession { running: Vec<String> },
    #[error("a session named {session} is already running: disconnect it first")]
    Exists { session: String },
    #[error("{what} collides with session {session}: disconnect it first, or leave that out of this one")]
    Collision { session: String, what: String },
    #[error(
        "devnetd never opens files a client names ({}): send the token and CA contents instead",
        fields.join(", ")
    )]
    NamedPaths { fields: Vec<String> },
    #[error("{message}")]
    Config { message: String },
    #[error("cannot connect: {message}")]
    Engine { message: String },
    #[error("no bridge was asked for as session {session} attempt {attempt}")]
    NoBridge { session: String, attempt: u64 },
    #[error("bad request: {message}")]
    BadRequest { message: String },
}

impl IpcError {
    /// The refusal for a hello of another version.
    pub fn version_mismatch(client: u32, daemon: u32) -> Self {
        let upgrade = if client < daemon { Upgrade::Client } else { Upgrade::Daemon };
        Self::VersionMismatch { client, daemon, upgrade }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_mismatch_names_the_side_to_upgrade() {
        let old_client = IpcError::version_mismatch(1, 2).to_string();
        assert!(old_client.contains("upgrade devnet on this machine"), "{old_client}");
        let old_daemon = IpcError::version_mismatch(3, 2).to_string();
        assert!(old_daemon.contains("upgrade the devnet service (devnetd)"), "{old_daemon}");
    }

    #[test]
    fn the_hello_keeps_its_shape() {
        // Other versions read exactly this; it must never change.
        let hello = ClientMsg::Hello { ipc_version: 7, client: ClientKind::Tray, app_version: "0.9".into() };
        assert_eq!(
            serde_json::to_string(&hello).expect("json"),
            r#"{"type":"hello","ipc_version":7,"client":"tray","app_version":"0.9"}"#
        );
        let answer = ServerMsg::Hello { ipc_version: 7, daemon_version: "0.9".into(), caller_uid: 1000 };
        assert_eq!(
            serde_json::to_string(&answer).expect("json"),
            r#"{"type":"hello","ipc_version":7,"daemon_version":"0.9","caller_uid":1000}"#
        );
    }

    #[test]
    fn the_token_never_shows_in_debug() {
        let req = ConnectRequest {
            session: "lab".into(),
            profile: ProfileFile::default(),
            token: Secret::new("s3cr3t-token"),
            relay_ca_pem: String::new(),
            direct: Vec::new(),
            bridge: true,
            discovered: Vec::new(),
        };
        assert!(!format!("{:?}", ClientMsg::Connect(Box::new(req))).contains("s3cr3t"));
        let renew = ClientMsg::RenewCredential { session: "lab".into(), credential: Secret::new("s3cr3t-key") };
        assert!(!format!("{renew:?}").contains("s3cr3t"));
    }

    #[test]
    fn a_renewal_travels_as_tagged_json_and_back() {
        let renew = ClientMsg::RenewCredential { session: "lab".into(), credential: Secret::new("pem") };
        let json = serde_json::to_string(&renew).expect("json");
        assert_eq!(json, r#"{"type":"renew-credential","session":"lab","credential":"pem"}"#);
        assert_eq!(serde_json::from_str::<ClientMsg>(&json).expect("back"), renew);
        let answer = ServerMsg::CredentialRenewed { session: "lab".into() };
        let json = serde_json::to_string(&answer).expect("json");
        assert_eq!(serde_json::from_str::<ServerMsg>(&json).expect("back"), answer);
        let refused = IpcError::NotOwnerOfCredential { session: "lab".into(), owner: 1000 }.to_string();
        assert!(refused.contains("uid 1000") && refused.contains("renew"), "{refused}");
    }
}

//! # devnet-ipc: how clients talk to devnetd
//!
//! **Layer:** the local protocol between the privileged helper (`devnetd`)
//! and its unprivileged clients: the CLI, the tray app and the IDE
//! preflight. A Unix socket ([`DEFAULT_SOCKET`], owned `root:devnet`, mode
//! 0660), never TCP; the kernel names the caller (`SO_PEERCRED`).
//!
//! A connection starts with a [`message::ClientMsg::Hello`] answered by a
//! [`message::ServerMsg::Hello`], each carrying [`IPC_VERSION`]; a mismatch
//! is refused with which side to upgrade. Then typed messages flow as
//! length-prefixed JSON frames ([`codec`]) of at most
//! [`codec::MAX_FRAME`] bytes, decoded by a sans-IO decoder that never
//! panics on any input.
//!
//! **Compatibility rule:** the `Hello` messages never change shape, so two
//! versions can always tell each other what they are. Anything else may
//! change with [`IPC_VERSION`].
//!
//! **What it does not do:** decide anything. Authorisation (who may end a
//! session) is devnetd's; the data carried (profile, status) is
//! `devnet-model`'s.

pub mod client;
pub mod codec;
pub mod message;
pub mod stream;

/// The version of this protocol. Bump it with any change to a message
/// other than the hellos. 2: `RenewCredential` / `CredentialRenewed`.
pub const IPC_VERSION: u32 = 2;

/// Where devnetd listens.
pub const DEFAULT_SOCKET: &str = "/run/devnet/devnetd.sock";

/// Overrides [`DEFAULT_SOCKET`] for clients and devnetd (the lab runs one
/// devnetd per lab).
pub const SOCKET_ENV: &str = "DEVNET_SOCKET";

/// The group whose members may use devnetd.
pub const GROUP: &str = "devnet";

/// The socket clients should use: `$DEVNET_SOCKET`, else [`DEFAULT_SOCKET`].
pub fn socket_path() -> std::path::PathBuf {
    std::env::var_os(SOCKET_ENV).map_or_else(|| DEFAULT_SOCKET.into(), Into::into)
}

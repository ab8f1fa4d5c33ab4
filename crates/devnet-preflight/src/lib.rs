//! # devnet-preflight: is the way to a debugger in the cluster ready?
//!
//! **Layer:** user side, run by `devnet preflight` (and later the tray) as
//! the user, before an IDE attaches a debugger. It asks devnetd which way
//! each CIDR goes, reads the pod's spec with the user's credentials,
//! connects to the debugger through the same resolver and routes the IDE
//! will use, and checks who answers without ever breaking the debug session.
//!
//! The decisions are pure and table-tested: [`target`] (kubectl-style
//! targets), [`podspec`] (what a pod's spec says about a port and its
//! debugger), [`probe`] (sans-IO debugger handshakes), [`advice`] (which
//! probe is safe, and for each failure what is wrong and the fix). [`run`]
//! is the thin tokio shell around them.
//!
//! **What it does not do:** change anything on the machine (with
//! `--connect` it starts `devnet connect`, which asks devnetd), prompt for a
//! password, or send a debugger more than the handshake that identifies it.

pub mod advice;
pub mod podspec;
pub mod probe;
pub mod run;
pub mod target;

pub use run::{Options, run};
pub use target::{Target, TargetError};

//! # devnet-session: devnet's user side
//!
//! **Layer:** what runs in the user's own process, never as root, for every
//! client (the CLI, the tray app, the IDE preflight): the kubeconfig and
//! its exec plugins and auth providers, cluster discovery, the relay's
//! install, the keyring ([`cluster`]); reading a profile's files
//! ([`profile`]); and keeping a session with devnetd: asking for it with
//! contents, never paths, and opening the API server's port-forward with
//! the user's credentials whenever devnetd asks for a bridge ([`keeper`]),
//! and enrolling again before the client certificate expires or when the
//! relay refuses it ([`renewal`]).
//!
//! **What it does not do:** change the OS network. Routes, resolver and
//! TUN devices are devnetd's (or, with `--foreground`, the in-process
//! engine's).

pub mod cluster;
pub mod keeper;
pub mod profile;
pub mod renewal;

//! # devnet-desktop: what the tray app shows, decided without a desktop
//!
//! **Layer:** sans-IO, like `devnet-proto`. Sessions' status in, and out
//! come the tray's [`state::TrayState`], the [`menu`] model, the [`icon`]'s
//! pixels, the [`notify`] decisions (given the time, so they are tested on a
//! stepped clock), and the window's [`view::Snapshot`]. The app in
//! `src-tauri/` is a thin shell that feeds it devnetd's pushes and draws
//! what it says; the window in `ui/` renders the snapshot, whose
//! TypeScript types are generated from these (feature `ts`).
//!
//! **What it does not do:** talk to devnetd, Kubernetes, D-Bus or a
//! window system, or read a clock.

pub mod icon;
pub mod menu;
pub mod notify;
pub mod retry;
pub mod samples;
pub mod state;
pub mod view;

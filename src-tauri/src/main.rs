//! # devnet-tray: devnet on the desktop
//!
//! **Layer:** a thin Tauri v2 shell, run as the user. It follows devnetd
//! through the IPC crate, runs connects (discovery, the relay, the
//! port-forward) and doctor in its own process with the user's kubeconfig
//! and keyring, and draws what `devnet-desktop` decides: the tray's icon
//! and menu, notifications, and the window (`ui/`), which it sends a
//! snapshot after every change.
//!
//! **What it does not do:** touch the OS network (devnetd does), or run
//! anything as root. The window exists only while it is open, so the app
//! idles as a tray icon and a socket.

#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod core;
mod shell;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as platform;
#[cfg(any(target_os = "macos", target_os = "windows"))]
mod other_os;
#[cfg(any(target_os = "macos", target_os = "windows"))]
use other_os as platform;

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DEVNET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    if let Err(e) = shell::run() {
        eprintln!("devnet-tray: {e:#}");
        std::process::exit(1);
    }
}

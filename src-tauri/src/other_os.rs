//! macOS and Windows: the tray through Tauri's tray icon ([`tauri_tray`]). Not
//! compiled on the Linux CI machines. Notifications and start at login are
//! not built for this OS yet: the app says so rather than pretending.

#[path = "tauri_tray.rs"]
mod tauri_tray;

pub use tauri_tray::Tray;

use anyhow::{Result, bail};
use devnet_desktop::notify::Notification;

pub fn notify(n: Notification) {
    tracing::info!(title = %n.title, body = %n.body, "notification (not shown: not built for this OS yet)");
}

pub fn autostart_enabled() -> bool {
    false
}

pub fn set_autostart(_enabled: bool) -> Result<()> {
    bail!("start at login is not built for this OS yet")
}

//! Linux: the tray as a StatusNotifierItem with a DBusMenu (ksni, over the
//! session bus), notifications through `org.freedesktop.Notifications`,
//! and start at login as an XDG autostart entry.
//!
//! Why not Tauri's own tray (libappindicator) here: it drops menu-item
//! icons, has no tooltip, needs GTK's main thread for every change, and
//! cannot be read back; StatusNotifierItem is what GNOME's AppIndicator
//! extension, KDE, and other panels speak anyway, and a test can read the
//! menu and icon over D-Bus exactly as a panel does.

mod autostart;
mod notify;
mod tray;

pub use autostart::{autostart_enabled, set_autostart};
pub use notify::notify;
pub use tray::Tray;

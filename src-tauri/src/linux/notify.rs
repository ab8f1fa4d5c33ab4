//! Notifications through the desktop's `org.freedesktop.Notifications`
//! service on the session bus (the protocol every Linux desktop's
//! notification daemon speaks).

use std::collections::HashMap;

use devnet_desktop::notify::Notification;
use tracing::warn;

pub fn notify(n: Notification) {
    tauri::async_runtime::spawn(async move {
        if let Err(e) = send(&n).await {
            warn!(error = %e, title = %n.title, "could not show a notification");
        }
    });
}

async fn send(n: &Notification) -> zbus::Result<u32> {
    let bus = zbus::Connection::session().await?;
    let hints: HashMap<&str, zbus::zvariant::Value<'_>> = HashMap::new();
    let reply = bus
        .call_method(
            Some("org.freedesktop.Notifications"),
            "/org/freedesktop/Notifications",
            Some("org.freedesktop.Notifications"),
            "Notify",
            &("devnet", 0u32, "network-vpn", n.title.as_str(), n.body.as_str(), Vec::<&str>::new(), hints, -1i32),
        )
        .await?;
    reply.body().deserialize::<u32>()
}

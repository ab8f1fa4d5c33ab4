//! systemd's readiness protocol (`Type=notify`, sd_notify(3)): one datagram
//! to the socket named by `$NOTIFY_SOCKET`. devnetd says `READY=1` once its
//! socket is bound and its capabilities are dropped, so `systemctl start`
//! returns only when a client can connect; and `STOPPING=1` when it begins
//! to end its sessions. Written here rather than taken from a crate: it is
//! one `sendto`, and devnetd's dependencies are its attack surface.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (e.g. `READY=1`) to `$NOTIFY_SOCKET`. Returns `Ok(false)`
/// when devnetd was not started by a service manager that listens.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os(NOTIFY_SOCKET) {
        Some(path) => send(&path.to_string_lossy(), state).map(|()| true),
        None => Ok(false),
    }
}

/// One datagram to `path`; a leading `@` names an abstract socket, as
/// systemd writes it.
fn send(path: &str, state: &str) -> io::Result<()> {
    let addr = match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        }
        None if path.starts_with('/') => SocketAddr::from_pathname(path)?,
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{NOTIFY_SOCKET}={path} is neither a path nor an abstract socket"),
            ));
        }
    };
    let socket = UnixDatagram::unbound()?;
    let sent = socket.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "the notification was cut short"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn readiness_reaches_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("devnetd-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        let path = dir.join("notify");
        let listener = UnixDatagram::bind(&path).expect("a listening socket");
        send(&path.to_string_lossy(), "READY=1").expect("sent");
        assert_eq!(receive(&listener), "READY=1");
        std::fs::remove_dir_all(&dir).expect("removed");
    }

    #[test]
    fn readiness_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("devnetd-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("an abstract name");
        let listener = UnixDatagram::bind_addr(&addr).expect("a listening socket");
        send(&format!("@{name}"), "STOPPING=1").expect("sent");
        assert_eq!(receive(&listener), "STOPPING=1");
    }

    #[test]
    fn a_relative_socket_name_is_refused_with_the_reason() {
        let err = send("notify", "READY=1").expect_err("a relative name is refused");
        assert!(err.to_string().contains("neither a path nor an abstract socket"), "{err}");
    }

    #[test]
    fn nobody_listening_is_an_error_not_a_hang() {
        let err = send("/nonexistent/devnetd-notify", "READY=1").expect_err("nobody listens");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}

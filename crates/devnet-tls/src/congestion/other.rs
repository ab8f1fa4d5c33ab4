//! Elsewhere there is no BBR to restart from user space (macOS and Windows
//! choose the algorithm themselves): [`super::RestartAfterQuiet`] passes
//! writes through.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

pub(super) fn runs_bbr(_tcp: &TcpStream) -> bool {
    false
}

pub(super) fn restart_bbr(_tcp: &TcpStream) -> io::Result<()> {
    Ok(())
}

pub(super) fn smoothed_rtt(_tcp: &TcpStream) -> Option<Duration> {
    None
}

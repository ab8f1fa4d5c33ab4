//! Elsewhere there is no BBR to restart from user space (macOS and Windows
//! choose the algorithm themselves): [`super::RestartAfterQuiet`] passes
//! writes through.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

pub(super) fn runs_bbr(_fd: BorrowedFd<'_>) -> bool {
    false
}

pub(super) fn restart_bbr(_fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(())
}

pub(super) fn smoothed_rtt(_fd: BorrowedFd<'_>) -> Option<Duration> {
    None
}

//! The socket options behind [`super::RestartAfterQuiet`] on Linux.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use socket2::SockRef;
use tokio::net::TcpStream;

const BBR: &[u8] = b"bbr";
/// Always allowed, to anyone (`tcp_allowed_congestion_control`).
const RENO: &[u8] = b"reno";

/// Whether the socket's congestion control is BBR.
pub(super) fn runs_bbr(tcp: &TcpStream) -> bool {
    SockRef::from(tcp).tcp_congestion().is_ok_and(|name| name.split(|b| *b == 0).next() == Some(BBR))
}

/// Re-initialises BBR on the socket: to Reno and back, because setting the
/// algorithm in use again changes nothing. Switching back is allowed to an
/// unprivileged process when BBR is the system's default (the only way it
/// came to run on our sockets); if it fails, the socket stays on Reno and
/// the error says so.
pub(super) fn restart_bbr(tcp: &TcpStream) -> io::Result<()> {
    let socket = SockRef::from(tcp);
    socket.set_tcp_congestion(RENO)?;
    socket
        .set_tcp_congestion(BBR)
        .map_err(|e| io::Error::new(e.kind(), format!("back to bbr after reno: {e} (the socket stays on reno)")))
}

/// The kernel's smoothed round trip for the socket (`tcpi_rtt`).
pub(super) fn smoothed_rtt(tcp: &TcpStream) -> Option<Duration> {
    // SAFETY: `tcp_info` is plain integers, so all zeroes is a valid value;
    // getsockopt writes at most `len` bytes into it and says how many.
    #[allow(unsafe_code, reason = "TCP_INFO has no safe wrapper in socket2 or nix")]
    let (rc, info, len) = unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::tcp_info>()).ok()?;
        let rc =
            libc::getsockopt(tcp.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, (&raw mut info).cast(), &raw mut len);
        (rc, info, len)
    };
    // Old kernels fill less; tcpi_rtt has been there since 2.6.
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_rtt) + std::mem::size_of::<u32>();
    (rc == 0 && usize::try_from(len).is_ok_and(|l| l >= needed) && info.tcpi_rtt > 0)
        .then(|| Duration::from_micros(u64::from(info.tcpi_rtt)))
}

/// BBR's pacing gain (in 1/256ths) from `TCP_CC_INFO`, for tests: 739 in
/// its start-up phase.
#[cfg(test)]
pub(super) fn bbr_pacing_gain(tcp: &TcpStream) -> Option<u32> {
    // `struct tcp_bbr_info`: bw_lo, bw_hi, min_rtt, pacing_gain, cwnd_gain.
    let mut info = [0u32; 5];
    let mut len = libc::socklen_t::try_from(std::mem::size_of_val(&info)).ok()?;
    // SAFETY: getsockopt writes at most `len` bytes into the array.
    #[allow(unsafe_code, reason = "TCP_CC_INFO has no safe wrapper")]
    let rc = unsafe {
        libc::getsockopt(tcp.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_CC_INFO, info.as_mut_ptr().cast(), &raw mut len)
    };
    (rc == 0 && usize::try_from(len).is_ok_and(|l| l == std::mem::size_of_val(&info))).then_some(info[3])
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::AsyncWriteExt;

    use super::*;

    /// BBR's gain in its start-up phase (2.885, in 1/256ths).
    const STARTUP_GAIN: u32 = 739;

    /// On a real socket over loopback: after a transfer long enough for BBR
    /// to leave its start-up phase, a restart puts it back there, and the
    /// socket still runs BBR. Needs BBR in the kernel and, unless BBR is
    /// the default, root (to pick it for this socket).
    #[tokio::test]
    async fn a_restart_puts_bbr_back_in_its_start_up_phase() {
        let (mut tcp, sink) = super::super::socket_tests::connected_to_a_sink(BBR).await;
        assert!(runs_bbr(&tcp));
        let chunk = vec![7u8; 1 << 20];
        let deadline = Instant::now() + Duration::from_secs(20);
        while bbr_pacing_gain(&tcp) == Some(STARTUP_GAIN) {
            assert!(Instant::now() < deadline, "BBR never left its start-up phase");
            tcp.write_all(&chunk).await.expect("write");
        }
        assert!(smoothed_rtt(&tcp).is_some_and(|rtt| rtt < Duration::from_secs(1)));
        restart_bbr(&tcp).expect("restart");
        // The gain is set on the next acknowledgement.
        let mut gain = None;
        while gain.is_none_or(|g| g == 0) {
            assert!(Instant::now() < deadline, "no acknowledgement after the restart");
            tcp.write_all(&chunk[..64 * 1024]).await.expect("write");
            tokio::task::yield_now().await;
            gain = bbr_pacing_gain(&tcp);
        }
        assert_eq!(gain, Some(STARTUP_GAIN), "back in the start-up phase");
        assert!(runs_bbr(&tcp), "the socket must be back on BBR");
        drop(tcp);
        sink.await.expect("sink");
    }
}

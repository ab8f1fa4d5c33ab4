//! Restarting the relay link's congestion control when bulk data follows a
//! quiet spell, so a transfer through the tunnel starts the way the same
//! transfer would on a connection of its own.
//!
//! **Why:** every stream through devnet shares one long-lived TCP connection
//! to the relay. With BBR (the congestion control this machine's kernel and
//! many others default to), a quiet spell hurts the next transfer: BBR keeps
//! the highest delivery rate of the last 10 round trips, a quiet link's
//! small exchanges (heartbeats, a client's handshake) count as round trips
//! but give only "application limited" samples, which BBR ignores, so when
//! bulk data comes back the window has expired and the first sample, taken
//! before the link is full, becomes the estimate. BBR then grows it by at
//! most a quarter per 8 round trips. Measured through devnet 60 ms and 1 %
//! loss away (`bench/README.md`): the first 5 s upload on a new relay
//! connection carried 164 Mbit/s, the next ones, 1.5 s apart on the same
//! connection, 109, 125 and 49, while the estimate restarted at 23–56
//! Mbit/s each time; with a new connection before each run, 134–176. A
//! fresh connection starts in BBR's start-up phase, which doubles its rate
//! each round trip: re-initialising the algorithm on the socket gives the
//! long-lived link that start.
//!
//! **What it does not do:** touch any algorithm but BBR, change which
//! algorithm a socket uses (it switches to Reno and straight back, the only
//! way Linux re-initialises the one in use: setting the same name again is
//! a no-op), or anything outside Linux. Only the sending side's algorithm
//! matters, so both ends wrap their socket: the engine for uploads, the
//! relay for downloads.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as platform;
#[cfg(not(target_os = "linux"))]
mod other;
#[cfg(not(target_os = "linux"))]
use other as platform;

/// A write at least this large is bulk data: a full TLS record (16 KiB of
/// plaintext) or more. A keystroke, a query or a heartbeat is smaller.
pub const BULK_WRITE: usize = 16 * 1024;

/// BBR's bandwidth filter spans this many round trips: a quiet spell
/// shorter than that cannot have emptied it.
pub const FILTER_ROUND_TRIPS: u32 = 10;

/// The shortest quiet spell that restarts, whatever the round trip: on a
/// LAN, 10 round trips are a millisecond, and restarting the start-up phase
/// between a transfer's own bursts would only cost syscalls.
pub const QUIET_FLOOR: Duration = Duration::from_millis(100);

/// When to restart (sans-IO: the caller gives the time, the write's size
/// and the socket's smoothed round trip, and does the restart).
#[derive(Debug, Clone)]
pub struct QuietSpell {
    floor: Duration,
    last_bulk: Option<Instant>,
}

impl Default for QuietSpell {
    fn default() -> Self {
        Self::new(QUIET_FLOOR)
    }
}

impl QuietSpell {
    pub fn new(floor: Duration) -> Self {
        Self { floor, last_bulk: None }
    }

    /// A write of `len` bytes at `now`: true if the algorithm should be
    /// restarted before it goes out. `srtt` is asked only when the answer
    /// depends on it. The first bulk write of a connection never restarts:
    /// a new connection is still in its start-up phase, however much small
    /// traffic came first (BBR leaves it only on samples that were not
    /// application limited).
    pub fn on_write(&mut self, now: Instant, len: usize, srtt: impl FnOnce() -> Option<Duration>) -> bool {
        if len < BULK_WRITE {
            return false;
        }
        let quiet = self.last_bulk.replace(now).map(|last| now.saturating_duration_since(last));
        let Some(quiet) = quiet.filter(|q| *q >= self.floor) else { return false };
        // Without a round trip (not a TCP socket, or the kernel would not
        // say) nothing says the filter expired.
        srtt().is_some_and(|rtt| quiet >= rtt * FILTER_ROUND_TRIPS)
    }

    /// The link was busy until `now`: a write waited for room in the
    /// socket. A stall (a retransmission timeout, a full window) is not a
    /// quiet spell, and the transfer behind it must not restart.
    pub fn busy(&mut self, now: Instant) {
        if self.last_bulk.is_some() {
            self.last_bulk = Some(now);
        }
    }
}

/// A TCP stream whose writes go through [`QuietSpell`]: the relay link's
/// socket, under TLS. Concrete, not generic: only a TCP socket has an
/// algorithm to restart, and the type compiles on every OS.
#[derive(Debug)]
pub struct RestartAfterQuiet {
    inner: TcpStream,
    spell: QuietSpell,
    /// Whether the socket runs BBR, read once: the only algorithm restarted.
    bbr: bool,
    /// The last write found the socket full: the next one continues it.
    blocked: bool,
    restarts: u64,
}

impl RestartAfterQuiet {
    pub fn new(inner: TcpStream) -> Self {
        Self::with_spell(inner, QuietSpell::default())
    }

    pub fn with_spell(inner: TcpStream, spell: QuietSpell) -> Self {
        let bbr = platform::runs_bbr(&inner);
        Self { inner, spell, bbr, blocked: false, restarts: 0 }
    }

    /// How many times the algorithm was restarted (for logs and tests).
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    pub fn get_ref(&self) -> &TcpStream {
        &self.inner
    }

    /// One write of `len` bytes: restarts first if the spell says so, then
    /// notes whether the socket was full.
    fn write_with(
        &mut self,
        len: usize,
        write: impl FnOnce(Pin<&mut TcpStream>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        self.before_write(len);
        let written = write(Pin::new(&mut self.inner));
        self.blocked = written.is_pending();
        written
    }

    fn before_write(&mut self, len: usize) {
        if !self.bbr {
            return;
        }
        let now = Instant::now();
        if self.blocked {
            self.spell.busy(now);
        }
        let tcp = &self.inner;
        if !self.spell.on_write(now, len, || platform::smoothed_rtt(tcp)) {
            return;
        }
        match platform::restart_bbr(&self.inner) {
            Ok(()) => {
                self.restarts += 1;
                tracing::debug!(
                    restarts = self.restarts,
                    "bulk data after a quiet spell: BBR restarted on the relay link"
                );
            }
            Err(e) => {
                // Not again: the socket keeps whatever it has now.
                tracing::warn!(error = %e, "restarting the relay link's congestion control failed; not trying again");
                self.bbr = false;
            }
        }
    }
}

impl AsyncRead for RestartAfterQuiet {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for RestartAfterQuiet {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.write_with(buf.len(), |tcp| tcp.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.write_with(bufs.iter().map(|b| b.len()).sum(), |tcp| tcp.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A stepped clock: the spell restarts only for bulk data after a quiet
    /// spell of at least 10 round trips and the floor, never on a
    /// connection's first bulk write, and small writes neither restart nor
    /// end a quiet spell.
    #[test]
    fn restarts_only_bulk_after_ten_round_trips_of_quiet() {
        let t0 = Instant::now();
        let rtt = |ms: u64| move || Some(MS * u32::try_from(ms).expect("small"));
        let mut spell = QuietSpell::new(100 * MS);
        // Small traffic first (a handshake, heartbeats): no restart, and the
        // first bulk write after it is the connection's start-up.
        assert!(!spell.on_write(t0, 200, rtt(60)));
        assert!(!spell.on_write(t0 + 5000 * MS, BULK_WRITE, rtt(60)));
        // A transfer's own writes, close together.
        assert!(!spell.on_write(t0 + 5010 * MS, 256 * 1024, rtt(60)));
        // 60 ms away, 10 round trips are 600 ms: 590 ms of heartbeats and
        // keystrokes are not enough...
        assert!(!spell.on_write(t0 + 5300 * MS, 100, rtt(60)));
        assert!(!spell.on_write(t0 + 5600 * MS, BULK_WRITE, rtt(60)));
        // ...600 ms are.
        assert!(spell.on_write(t0 + 6200 * MS, BULK_WRITE, rtt(60)));
        // Right after, the transfer runs on.
        assert!(!spell.on_write(t0 + 6201 * MS, BULK_WRITE, rtt(60)));
        // Below a full record, nothing restarts, however long the quiet.
        assert!(!spell.on_write(t0 + 60_000 * MS, BULK_WRITE - 1, rtt(60)));
        // On a LAN the floor decides: 50 ms is not quiet, 100 ms is.
        let lan = || Some(Duration::from_micros(80));
        assert!(spell.on_write(t0 + 60_010 * MS, BULK_WRITE, lan));
        assert!(!spell.on_write(t0 + 60_060 * MS, BULK_WRITE, lan));
        assert!(spell.on_write(t0 + 60_160 * MS, BULK_WRITE, lan));
        // Without a round trip, no restart.
        assert!(!spell.on_write(t0 + 70_000 * MS, BULK_WRITE, || None));
    }

    /// A write that waited a second for room in the socket (a stalled
    /// link) continues its transfer: no restart.
    #[test]
    fn a_stall_is_not_a_quiet_spell() {
        let t0 = Instant::now();
        let mut spell = QuietSpell::new(100 * MS);
        assert!(!spell.on_write(t0, BULK_WRITE, || Some(MS)));
        assert!(!spell.on_write(t0 + MS, BULK_WRITE, || Some(MS)));
        // Pending until t0 + 1 s, then written.
        spell.busy(t0 + 1001 * MS);
        assert!(!spell.on_write(t0 + 1001 * MS, BULK_WRITE, || Some(MS)));
        // Busy before any bulk data starts nothing: the first bulk write is
        // still the start-up.
        let mut fresh = QuietSpell::new(100 * MS);
        fresh.busy(t0);
        assert!(!fresh.on_write(t0 + 1000 * MS, BULK_WRITE, || Some(MS)));
    }

    /// The round trip is read only when a restart depends on it: a bulk
    /// write after a quiet spell longer than the floor.
    #[test]
    fn asks_for_the_round_trip_only_when_it_decides() {
        let t0 = Instant::now();
        let mut spell = QuietSpell::new(100 * MS);
        let never = || -> Option<Duration> { panic!("round trip read needlessly") };
        assert!(!spell.on_write(t0, 10, never));
        assert!(!spell.on_write(t0, BULK_WRITE, never));
        assert!(!spell.on_write(t0 + 99 * MS, BULK_WRITE, never));
        let mut asked = false;
        assert!(spell.on_write(t0 + 300 * MS, BULK_WRITE, || {
            asked = true;
            Some(MS)
        }));
        assert!(asked);
    }
}

/// The wrapper on real loopback sockets: it restarts a BBR socket for bulk
/// data after a quiet spell, not for a small write, and never touches a
/// socket on another algorithm.
#[cfg(all(test, target_os = "linux"))]
mod socket_tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A loopback connection on `algorithm` (root, unless it is the
    /// default) to a task that reads and drops everything.
    pub(super) async fn connected_to_a_sink(algorithm: &[u8]) -> (TcpStream, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let sink = tokio::spawn(async move {
            let (mut peer, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 1 << 20];
            while peer.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        });
        let tcp = TcpStream::connect(addr).await.expect("connect");
        socket2::SockRef::from(&tcp)
            .set_tcp_congestion(algorithm)
            .expect("set the algorithm (is it in the kernel? are we root?)");
        (tcp, sink)
    }

    async fn pair(algorithm: &[u8]) -> (RestartAfterQuiet, tokio::task::JoinHandle<()>) {
        let (tcp, sink) = connected_to_a_sink(algorithm).await;
        (RestartAfterQuiet::with_spell(tcp, QuietSpell::new(Duration::from_millis(20))), sink)
    }

    #[tokio::test]
    async fn restarts_bbr_for_bulk_after_quiet_and_leaves_other_algorithms() {
        let bulk = vec![1u8; 4 * BULK_WRITE];
        let (mut link, sink) = pair(b"bbr").await;
        link.write_all(&bulk).await.expect("write");
        assert_eq!(link.restarts(), 0, "a connection's first bulk data is its start-up");
        tokio::time::sleep(Duration::from_millis(40)).await;
        link.write_all(b"a keystroke").await.expect("write");
        assert_eq!(link.restarts(), 0);
        link.write_all(&bulk).await.expect("write");
        assert_eq!(link.restarts(), 1);
        assert!(linux::runs_bbr(link.get_ref()));
        link.write_all(&bulk).await.expect("write");
        assert_eq!(link.restarts(), 1, "the same transfer goes on");
        drop(link);
        sink.await.expect("sink");

        let (mut link, sink) = pair(b"reno").await;
        link.write_all(&bulk).await.expect("write");
        tokio::time::sleep(Duration::from_millis(40)).await;
        link.write_all(&bulk).await.expect("write");
        assert_eq!(link.restarts(), 0, "only BBR is restarted");
        drop(link);
        sink.await.expect("sink");
    }
}

//! The data path: one task that moves packets between the TUN device and
//! the [`Tunnel`], and bytes between the tunnel's relay connection and TLS.
//!
//! One task, not several, because the tunnel is a single state machine: a
//! `select!` over "packet from TUN", "bytes from relay", "relay writable",
//! "timer" and "command" feeds it and then drains what it produced. The relay
//! link is re-dialled with backoff whenever it is lost; flows it carried are
//! reset so clients see an error instead of a hang.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use devnet_netstack::{BufferPool, Tunnel, TunnelConfig};
use devnet_proto::{Connection, ConnectionError, RejectCode};
use devnet_tls::link::{LinkReader, LinkWriter, Received, send_now};
use devnet_tls::readahead::ReadAhead;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tracing::{info, warn};

use crate::config::Profile;
use crate::os::platform::{TUN_HEADER_LEN, tun_write_header};
use crate::transport::{Dial, RelayStream};
use devnet_model::profile::BUSY_POLL_NEAR_RELAY;

/// What the engine tells the data path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Control {
    /// The tunnel now carries these CIDRs.
    SetCidrs(Vec<ipnet::IpNet>),
    /// Close the relay link and stop.
    Disconnect,
}
use crate::status::{LinkState, Status};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Packets read from the TUN device per wake-up before the stack runs.
const TUN_BATCH: usize = 64;
/// About the most taken from the relay link in one turn (a TLS record more
/// at most).
const RELAY_READ_PER_TURN: usize = 256 * 1024;

type Tls = TlsStream<ReadAhead<RelayStream>>;

struct Link {
    rd: LinkReader<Tls>,
    wr: LinkWriter<Tls>,
    needs_flush: bool,
}

enum Relay {
    Dialling(oneshot::Receiver<io::Result<Tls>>),
    Up(Link),
    Waiting(Instant),
}

pub(crate) async fn run(
    profile: &Profile,
    tun: tun_rs::AsyncDevice,
    dialer: Arc<dyn Dial>,
    mut tls: watch::Receiver<Arc<rustls::ClientConfig>>,
    status: watch::Sender<Status>,
    mut commands: mpsc::Receiver<Control>,
) -> Result<()> {
    let config = TunnelConfig {
        mtu: usize::from(profile.mtu),
        cidrs: profile.cidrs.clone(),
        // The TUN device takes a virtio-net header: see `tun_write_header`.
        partial_checksums: true,
        ..TunnelConfig::default()
    };
    keep_large_buffers_off_the_heap();
    let mut tunnel = Tunnel::new(config, BufferPool::default(), Instant::now().into_std());
    // Each dial takes the configuration current then: a renewed client
    // certificate applies from the next (re)connect on.
    let connector = |tls: &watch::Receiver<Arc<rustls::ClientConfig>>| TlsConnector::from(tls.borrow().clone());
    let proto = devnet_proto::Config {
        name: format!("devnet {} on {}", env!("CARGO_PKG_VERSION"), hostname()),
        // A client certificate logs in by itself: its Hello carries no token.
        token: devnet_tls::RelayCredential::parse(profile.token.expose())?.hello_token().to_owned(),
        ..Default::default()
    };
    let mut relay = Relay::Dialling(dial(dialer.clone(), connector(&tls), status.clone()));
    let mut backoff = BACKOFF_MIN;
    // Each packet is read straight into a buffer the stack then owns; the
    // virtio-net header is read apart, into `tun_header`.
    let mut tun_header = [0u8; TUN_HEADER_LEN];
    let mut next_read = tunnel.read_buffer();
    let mut ever_connected = false;
    // The last turn took one packet from the TUN device: this one reads
    // the rest that are queued.
    let mut tun_batch_next = false;
    // Until when the loop polls instead of sleeping (after traffic, with
    // the relay near).
    let mut busy_until = Instant::now();
    // Whether the relay link is up now, and whether any CIDR uses it: with
    // none (every CIDR went direct) the link stays up for a quick way back,
    // and status says Direct.
    let mut link_up = false;
    let mut tunnelling = !profile.cidrs.is_empty();
    let mut last_status = Instant::now();
    let mut bytes = (0u64, 0u64);
    // Traffic seen at the last status tick, since when none moved, and
    // whether freed memory went back to the system since.
    let mut quiet = (bytes, Instant::now(), true);

    // One timer for the life of the loop, moved only when the deadline does
    // (not a new one registered with the runtime on every turn).
    let timer = tokio::time::sleep_until(Instant::now());
    tokio::pin!(timer);

    loop {
        let now = Instant::now();
        let mut wake = tunnel.poll_at(now.into_std()).map(Instant::from_std);
        if let Relay::Waiting(at) = relay {
            wake = Some(wake.map_or(at, |w| w.min(at)));
        }
        let wake = wake.unwrap_or(now + Duration::from_secs(1)).min(now + Duration::from_millis(500));
        if timer.deadline() != wake {
            timer.as_mut().reset(wake);
        }
        let transmit: &[u8] = tunnel.connection().map_or(&[], Connection::transmit);
        let (rd, wr, flush, dialling) = match &mut relay {
            Relay::Up(link) => (Some(&mut link.rd), Some(&mut link.wr), link.needs_flush, None),
            Relay::Dialling(rx) => (None, None, false, Some(rx)),
            Relay::Waiting(_) => (None, None, false, None),
        };
        let can_write = wr.is_some() && (flush || !transmit.is_empty());

        enum Wake {
            Tun(io::Result<usize>),
            /// The packets queued behind the one the last turn took.
            TunBatch,
            RelayRead(io::Result<usize>),
            RelayWrite(io::Result<usize>),
            Dialled(io::Result<Tls>),
            Command(Option<Control>),
            Credential,
            Timer,
            BusyPoll,
        }
        let woke = if std::mem::take(&mut tun_batch_next) {
            Wake::TunBatch
        } else {
            let mut read_into = [io::IoSliceMut::new(&mut tun_header), io::IoSliceMut::new(&mut next_read)];
            tokio::select! {
            cmd = commands.recv() => Wake::Command(cmd),
            r = tun.recv_vectored(&mut read_into) => Wake::Tun(r),
            r = readable_opt(rd) => Wake::RelayRead(r),
            r = write_opt(wr, transmit), if can_write => Wake::RelayWrite(r),
            r = recv_opt(dialling) => Wake::Dialled(r),
            () = credential_changed(&mut tls) => Wake::Credential,
            () = &mut timer => Wake::Timer,
            // Busy polling: the data path's own current-thread runtime
            // looks at its I/O without waiting and comes back here.
            () = tokio::task::yield_now(), if busy_until > now => Wake::BusyPoll,
            }
        };
        let now = Instant::now();
        let mut lost: Option<String> = None;
        if matches!(woke, Wake::Tun(Ok(_)) | Wake::TunBatch | Wake::RelayRead(Ok(_))) {
            let rtt = tunnel.connection().and_then(Connection::rtt);
            busy_until = now + busy_poll_window(profile.busy_poll, rtt);
        }
        match woke {
            Wake::BusyPoll => continue,
            Wake::Command(Some(Control::SetCidrs(cidrs))) => {
                tunnelling = !cidrs.is_empty();
                tunnel.set_cidrs(cidrs);
            }
            Wake::Command(Some(Control::Disconnect) | None) => {
                info!("disconnect requested");
                if let Relay::Up(link) = &mut relay {
                    if let Some(conn) = tunnel.connection_mut() {
                        conn.close("client disconnected");
                        let pending = conn.transmit().to_vec();
                        let _ = tokio::time::timeout(Duration::from_millis(500), link.wr.write_all(&pending)).await;
                    }
                    let _ = tokio::time::timeout(Duration::from_millis(500), link.wr.shutdown()).await;
                }
                tunnel.detach();
                flush_tun(&mut tunnel, &tun).await;
                return Ok(());
            }
            Wake::Tun(Ok(n)) => {
                take_read(&mut tunnel, &mut next_read, n);
                // What else is queued is read next turn, as a batch, so the
                // stack runs once for it. Not now: for a request the read
                // would find nothing and only hold the request back from
                // the relay.
                tun_batch_next = true;
            }
            Wake::TunBatch => {
                let mut taken = 0;
                while taken < TUN_BATCH {
                    let mut read_into = [io::IoSliceMut::new(&mut tun_header), io::IoSliceMut::new(&mut next_read)];
                    match tun.try_recv_vectored(&mut read_into) {
                        Ok(n) => take_read(&mut tunnel, &mut next_read, n),
                        Err(_) => break,
                    }
                    taken += 1;
                }
                if taken == 0 {
                    // Nothing was queued (the TUN branch sees the next packet).
                    continue;
                }
            }
            Wake::Tun(Err(e)) => {
                return Err(anyhow::anyhow!("reading the TUN device failed: {e}"));
            }
            Wake::RelayRead(Ok(0)) => lost = Some("the relay closed the connection".into()),
            Wake::RelayRead(Ok(_)) => {
                if let Relay::Up(link) = &mut relay {
                    // Stream data goes straight from TLS's buffer into the
                    // clients' sockets where it can; a protocol error shows
                    // at the next poll. Every record already readable is
                    // taken, so the stack runs once for them all. (With no
                    // connection attached the bytes are dropped: taken all
                    // the same, or `readable` would wake at once again.)
                    let mut feed = |bytes: &[u8]| drop(tunnel.handle_relay_input(bytes, now.into_std()));
                    let all = std::future::poll_fn(|cx| {
                        std::task::Poll::Ready(link.rd.receive_ready(&mut feed, RELAY_READ_PER_TURN, cx))
                    });
                    match all.await {
                        Ok(Received::Bytes(n)) => bytes.1 += n as u64,
                        Ok(Received::Closed(_)) => lost = Some("the relay closed the connection".into()),
                        Err(e) => lost = Some(read_error(&e)),
                    }
                }
            }
            Wake::RelayRead(Err(e)) => lost = Some(read_error(&e)),
            Wake::RelayWrite(Ok(n)) => {
                if let (Relay::Up(link), Some(conn)) = (&mut relay, tunnel.connection_mut()) {
                    if n == 0 {
                        link.needs_flush = false;
                    } else {
                        conn.advance_transmit(n);
                        bytes.0 += n as u64;
                        link.needs_flush = true;
                    }
                }
            }
            Wake::RelayWrite(Err(e)) => lost = Some(format!("writing to the relay failed: {e}")),
            Wake::Dialled(Ok(mut tls)) => {
                // Each write to the link one offload packet, not a full one
                // and a tiny one (see `WRITE_AHEAD`).
                devnet_tls::link::bound_write_ahead(tls.get_mut().1);
                let (rd, wr) = devnet_tls::link::split(tls);
                tunnel.attach(Connection::client(proto.clone(), now.into_std()));
                relay = Relay::Up(Link { rd, wr, needs_flush: false });
            }
            Wake::Dialled(Err(e)) => lost = Some(format!("cannot reach the relay: {e}")),
            Wake::Credential => {
                drop(tls.borrow_and_update());
                // A link waiting out its backoff (the relay refused the old
                // certificate) tries the new one now.
                if matches!(relay, Relay::Waiting(_)) {
                    info!("client credential renewed; dialling the relay now");
                    relay = Relay::Dialling(dial(dialer.clone(), connector(&tls), status.clone()));
                }
            }
            Wake::Timer => {
                if matches!(relay, Relay::Waiting(at) if now >= at) {
                    relay = Relay::Dialling(dial(dialer.clone(), connector(&tls), status.clone()));
                }
            }
        }

        if let Some(error) = tunnel.poll(now.into_std()) {
            if !ever_connected && is_permanent(&error) {
                // Retrying cannot fix a wrong token or version: stop and say so.
                tunnel.detach();
                return Err(anyhow::anyhow!("{error}"));
            }
            lost = Some(error.to_string());
        }
        let connected = tunnel.connection().is_some_and(Connection::is_established);
        let headline = if tunnelling { LinkState::Connected } else { LinkState::Direct };
        if connected && !link_up {
            backoff = BACKOFF_MIN;
            info!(relay = %profile.relay, "relay connected");
            let name = tunnel.relay_name().map(str::to_owned);
            status.send_modify(|s| {
                s.state = headline;
                s.relay_name = name;
                s.last_error = None;
            });
            ever_connected = true;
            link_up = true;
        } else if connected && status.borrow().state != headline {
            status.send_modify(|s| s.state = headline);
        }
        if let Some(reason) = lost {
            warn!(relay = %profile.relay, %reason, retry_in = ?backoff, "relay link lost");
            tunnel.detach();
            relay = Relay::Waiting(now + backoff);
            backoff = (backoff * 2).min(BACKOFF_MAX);
            let was_up = std::mem::replace(&mut link_up, false);
            status.send_modify(|s| {
                if was_up {
                    s.reconnects += 1;
                }
                s.state = if ever_connected { LinkState::Reconnecting } else { LinkState::Connecting };
                s.last_error = Some(reason);
            });
        }
        // What the stack produced for the relay goes out before what it
        // produced for the TUN device: for a request, the relay's bytes are
        // on the critical path and the client's ACK is not.
        if let (Relay::Up(link), Some(conn)) = (&mut relay, tunnel.connection_mut()) {
            match std::future::poll_fn(|cx| {
                std::task::Poll::Ready(send_now(&mut link.wr, conn, &mut link.needs_flush, cx))
            })
            .await
            {
                Ok(n) => bytes.0 += n as u64,
                Err(e) => {
                    warn!(relay = %profile.relay, error = %e, "writing to the relay failed");
                    // Seen again by the select's write branch, which reports it.
                    link.needs_flush = true;
                }
            }
        }
        flush_tun(&mut tunnel, &tun).await;

        if now.duration_since(last_status) >= Duration::from_millis(250) {
            last_status = now;
            // Heartbeats move a few bytes every second: only more than
            // that counts as traffic, or the link would never look quiet.
            if bytes.0 + bytes.1 > quiet.0.0 + quiet.0.1 + QUIET_BYTES {
                quiet = (bytes, now, false);
            } else if !quiet.2 && now.duration_since(quiet.1) >= QUIET_BEFORE_TRIM {
                // The connection gave its drained buffers back at its last
                // heartbeat tick; now hand the freed pages to the system.
                release_freed_memory();
                quiet.2 = true;
            }
            let stats = tunnel.stats();
            let rtt = tunnel.connection().and_then(Connection::rtt);
            status.send_modify(|s| {
                s.tcp_flows = stats.tcp_flows;
                s.pending_opens = stats.pending_opens;
                s.udp_associations = stats.udp_associations;
                s.packets_from_tun = stats.packets_in;
                s.packets_to_tun = stats.packets_out;
                s.refused = stats.refused;
                s.unreachable = stats.unreachable;
                s.bytes_to_relay = bytes.0;
                s.bytes_from_relay = bytes.1;
                s.relay_rtt_ms = rtt.map(|d| d.as_secs_f64() * 1000.0);
            });
        }
    }
}

/// How long the loop keeps polling after traffic before it sleeps: the
/// profile's busy poll while the relay's last measured round trip is below
/// [`BUSY_POLL_NEAR_RELAY`], else none. Near, the answer to what was just
/// sent usually arrives within the window and is taken at once; without
/// it, the engine sleeps and that answer must first wake an idle CPU, which
/// costs tens of microseconds per wake-up on a VM or a laptop in a deep
/// C-state. Far, or before the first heartbeat measured the relay, polling
/// would only burn CPU.
fn busy_poll_window(configured: Duration, relay_rtt: Option<Duration>) -> Duration {
    match relay_rtt {
        Some(rtt) if rtt < BUSY_POLL_NEAR_RELAY => configured,
        _ => Duration::ZERO,
    }
}

/// How long the relay link must carry nothing before freed memory is
/// returned: past the connection's heartbeat tick (1 s), which releases
/// drained buffers, and long enough that a pause inside a transfer does
/// not trim in vain.
const QUIET_BEFORE_TRIM: Duration = Duration::from_secs(3);

/// Relay bytes (both ways) that still count as quiet: heartbeats and a
/// status poll or two, not a transfer.
const QUIET_BYTES: u64 = 16 * 1024;

/// Returns memory freed after a burst to the system. glibc keeps freed heap
/// memory (and raises its mmap threshold after large frees, so the next
/// large buffers come from the heap too): without this the engine stays at
/// its busiest size for the rest of the session.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and trims glibc's own arenas; it takes
    // no pointers and is safe to call from any thread at any time.
    #[allow(unsafe_code, reason = "one libc call without arguments that could be misused")]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Large allocations at or above this size get their own mapping.
const MMAP_THRESHOLD: usize = 256 * 1024;

/// Makes every large buffer (a flow's socket buffers, the relay read
/// buffer) a mapping of its own. glibc's default raises its mmap threshold
/// after the first large free, so from the second flow on the 1 MiB socket
/// buffers come from the heap: `calloc` must zero them (2 MiB of memset per
/// connection, all resident at once), and a freed one stays resident until
/// a trim. As mappings, they are zero pages until written, resident only as
/// far as a flow used them, and gone from the RSS the moment they are freed.
/// Setting the threshold also turns glibc's raising of it off.
fn keep_large_buffers_off_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocation policy for later
    // allocations; it takes no pointers.
    #[allow(unsafe_code, reason = "one libc call with constant arguments")]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
    }
}

/// Why reading from the relay failed, worded with the fix when the relay
/// refused this laptop's client certificate: with TLS 1.3 its verdict
/// arrives as an alert on the first read, after the handshake looked done.
fn read_error(e: &io::Error) -> String {
    use devnet_model::status::CREDENTIAL_REFUSED;
    use rustls::AlertDescription as A;
    let alert = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()).and_then(|r| match r {
        rustls::Error::AlertReceived(a) => Some(*a),
        _ => None,
    });
    match alert {
        Some(A::CertificateExpired) => format!(
            "{CREDENTIAL_REFUSED}: it has expired; a running `devnet connect` enrols anew by itself (else reconnect: `devnet disconnect`, then `devnet connect`)"
        ),
        Some(A::UnknownCA | A::BadCertificate | A::DecryptError) => format!(
            "{CREDENTIAL_REFUSED}: the relay does not know it (it restarted, or was reinstalled, since you enrolled); a running `devnet connect` enrols anew by itself (else reconnect: `devnet disconnect`, then `devnet connect`)"
        ),
        _ => format!("reading from the relay failed: {e}"),
    }
}

fn is_permanent(error: &ConnectionError) -> bool {
    matches!(
        error,
        ConnectionError::VersionMismatch { .. }
            | ConnectionError::NotDevnet
            | ConnectionError::Rejected { code: RejectCode::Unauthorized | RejectCode::VersionMismatch, .. }
    )
}

/// Hands the packet one read put in `buf` (`read` bytes with the
/// virtio-net header before it) to the stack, and puts a fresh read buffer
/// in its place: the packet itself is not copied. The header says at most
/// that the packet's checksum is partial, which the stack does not check
/// anyway.
fn take_read(tunnel: &mut Tunnel, buf: &mut Vec<u8>, read: usize) {
    let Some(len) = read.checked_sub(TUN_HEADER_LEN).filter(|&len| len > 0) else { return };
    let packet = std::mem::replace(buf, tunnel.read_buffer());
    tunnel.handle_read(packet, len);
}

async fn flush_tun(tunnel: &mut Tunnel, tun: &tun_rs::AsyncDevice) {
    while let Some(packet) = tunnel.pop_packet() {
        let header = tun_write_header(packet.partial_checksum());
        let frame = [io::IoSlice::new(&header), io::IoSlice::new(&packet)];
        if let Err(e) = tun.send_vectored(&frame).await {
            warn!(error = %e, "writing to the TUN device failed; packet dropped");
        }
        tunnel.recycle(packet);
    }
}

fn dial(
    dialer: Arc<dyn Dial>,
    connector: TlsConnector,
    status: watch::Sender<Status>,
) -> oneshot::Receiver<io::Result<Tls>> {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let result = async {
            let (stream, transport) = dialer.dial().await?;
            info!(%transport, "relay transport open");
            status.send_modify(|s| s.transport = Some(transport));
            tokio::time::timeout(
                CONNECT_TIMEOUT,
                connector.connect(devnet_tls::relay_server_name(), ReadAhead::new(stream)),
            )
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
        }
        .await;
        let _ = tx.send(result);
    });
    rx
}

/// Resolves when the TLS configuration was replaced (never once its
/// sender is gone).
async fn credential_changed(tls: &mut watch::Receiver<Arc<rustls::ClientConfig>>) {
    if tls.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// [`LinkReader::readable`] when the link is up.
async fn readable_opt(rd: Option<&mut LinkReader<Tls>>) -> io::Result<usize> {
    match rd {
        Some(rd) => rd.readable().await,
        None => std::future::pending().await,
    }
}

/// [`devnet_tls::link::write_or_flush`] when the link is up.
async fn write_opt<W: AsyncWrite + Unpin>(wr: Option<&mut W>, data: &[u8]) -> io::Result<usize> {
    match wr {
        Some(wr) => devnet_tls::link::write_or_flush(wr, data).await,
        None => std::future::pending().await,
    }
}

async fn recv_opt(rx: Option<&mut oneshot::Receiver<io::Result<Tls>>>) -> io::Result<Tls> {
    match rx {
        Some(rx) => rx.await.unwrap_or_else(|_| Err(io::Error::other("dial task vanished"))),
        None => std::future::pending().await,
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod busy_poll_tests {
    use super::*;

    #[test]
    fn polls_only_while_the_relay_is_measured_near() {
        let configured = Duration::from_micros(100);
        let cases = [
            (None, Duration::ZERO),
            (Some(Duration::from_micros(150)), configured),
            (Some(BUSY_POLL_NEAR_RELAY - Duration::from_micros(1)), configured),
            (Some(BUSY_POLL_NEAR_RELAY), Duration::ZERO),
            (Some(Duration::from_millis(20)), Duration::ZERO),
        ];
        for (rtt, want) in cases {
            assert_eq!(busy_poll_window(configured, rtt), want, "relay rtt {rtt:?}");
        }
        assert_eq!(busy_poll_window(Duration::ZERO, Some(Duration::from_micros(150))), Duration::ZERO);
    }
}

#[cfg(test)]
mod read_error_tests {
    use super::read_error;

    #[test]
    fn a_refused_client_certificate_names_the_fix() {
        let alert = |a| std::io::Error::new(std::io::ErrorKind::InvalidData, rustls::Error::AlertReceived(a));
        let expired = read_error(&alert(rustls::AlertDescription::CertificateExpired));
        assert!(expired.contains("expired") && expired.contains("devnet connect"), "{expired}");
        let unknown = read_error(&alert(rustls::AlertDescription::UnknownCA));
        assert!(unknown.contains("restarted") && unknown.contains("devnet connect"), "{unknown}");
        // The user's side recognises both as a refused certificate.
        for refused in [&expired, &unknown] {
            assert!(refused.starts_with(devnet_model::status::CREDENTIAL_REFUSED), "{refused}");
        }
        let other = read_error(&std::io::Error::other("reset"));
        assert_eq!(other, "reading from the relay failed: reset");
    }
}

//! Sessions over real loopback sockets: a relay's session loop, clients
//! driving the real protocol state machine, and destinations that are real
//! listeners (one that never reads, one that echoes, one that never answers).
//! Plain TCP stands in for TLS between client and relay: the session code is
//! the same for any byte stream, and TLS would only add set-up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use devnet_proto::{Config, Connection, Event, StreamId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use super::SessionEnd;
use crate::budget::{Global, Limits};
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::{LoggingIn, Shared};

const TOKEN: &str = "session-test-token";
const KIB: usize = 1024;

fn limits() -> Limits {
    Limits { initial_window: 16 * KIB, max_window: 64 * KIB, session: 1024 * KIB, floor: 256 * KIB }
}

fn shared(max_dialing: usize) -> Arc<Shared> {
    Arc::new(Shared {
        proto: Config { token: TOKEN.into(), max_streams: crate::MAX_STREAMS_PER_SESSION, ..Config::default() },
        policy: Policy::loopback_for_tests(),
        dial_timeout: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(1),
        metrics: Arc::new(Metrics::default()),
        login_timeout: Duration::from_secs(10),
        logging_in: LoggingIn::new(16, 16),
        budget: Arc::new(Global::new(8 * 1024 * KIB)),
        credit: limits(),
        max_dialing,
        identities: None,
    })
}

/// Runs sessions for every connection to the returned address.
async fn start_relay(shared: Arc<Shared>) -> (SocketAddr, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
    let addr = listener.local_addr().expect("addr");
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(async move {
        while let Ok((tcp, peer)) = listener.accept().await {
            let slot = shared.logging_in.admit(peer.ip()).expect("a login place");
            let login = super::Login {
                deadline: Instant::now() + shared.login_timeout,
                slot,
                auth: devnet_proto::TransportAuth::None,
                identity: None,
            };
            let (shared, shutdown_rx) = (shared.clone(), shutdown_rx.clone());
            tokio::spawn(async move {
                let end = super::run(tokio::io::BufReader::new(tcp), peer, shared, shutdown_rx, login).await;
                eprintln!("session from {peer} ended: {end:?}");
            });
        }
    });
    (addr, shutdown_tx)
}

/// A devnet client: the protocol state machine over a TCP connection.
struct Client {
    conn: Connection,
    tcp: TcpStream,
    events: Vec<Event>,
}

impl Client {
    async fn connect(relay: SocketAddr) -> Self {
        let config = Config { token: TOKEN.into(), ..Config::default() };
        let tcp = TcpStream::connect(relay).await.expect("connect to the relay");
        let mut client = Self { conn: Connection::client(config, std::time::Instant::now()), tcp, events: Vec::new() };
        assert!(client.drive_until(Duration::from_secs(5), |c| c.conn.is_established()).await, "logged in");
        client
    }

    /// Moves bytes both ways until `done` holds (true) or `timeout` passes (false).
    async fn drive_until(&mut self, timeout: Duration, mut done: impl FnMut(&mut Self) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 256 * KIB];
        loop {
            while let Some(event) = self.conn.poll_event() {
                self.events.push(event);
            }
            if done(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            let tick = tokio::time::sleep(Duration::from_millis(20));
            let pending = self.conn.transmit();
            let pending = pending[..pending.len().min(256 * KIB)].to_vec();
            let (mut rd, mut wr) = self.tcp.split();
            tokio::select! {
                written = wr.write(&pending), if !pending.is_empty() => {
                    self.conn.advance_transmit(written.expect("write to the relay"));
                }
                read = rd.read(&mut buf) => {
                    let n = read.expect("read from the relay");
                    assert!(n > 0, "the relay closed the session");
                    self.conn.handle_input(&buf[..n], std::time::Instant::now()).expect("a valid relay");
                }
                () = tick => self.conn.handle_timeout(std::time::Instant::now()),
            }
        }
    }

    fn opened(&self, id: StreamId) -> bool {
        self.events.contains(&Event::Opened { id })
    }
}

/// A listener that accepts and never reads, with a small receive buffer so
/// the kernel soaks up little of what the relay writes.
fn sink() -> SocketAddr {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4 * KIB).expect("SO_RCVBUF");
    socket.bind(&"127.0.0.1:0".parse::<SocketAddr>().expect("addr").into()).expect("bind sink");
    socket.listen(1024).expect("listen");
    let listener = std::net::TcpListener::from(socket);
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    addr
}

async fn echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut rd, mut wr) = tcp.split();
                let _ = tokio::io::copy(&mut rd, &mut wr).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_streams_stay_within_the_byte_budget_and_other_clients_keep_working() {
    let shared = shared(crate::MAX_DIALING_PER_SESSION);
    let (relay, _shutdown) = start_relay(shared.clone()).await;
    let (sink, echo) = (sink(), echo().await);

    // One client opens 1,000 streams to a sink and writes all it is allowed to.
    let mut flood = Client::connect(relay).await;
    let mut ids = Vec::new();
    let payload = vec![0x5au8; 256 * KIB];
    for _ in 0..1000 {
        ids.push(flood.conn.open(sink).expect("open"));
        // Opened a few at a time: the relay dials at most 64 at once.
        if ids.len() % 50 == 0 {
            let batch = ids.clone();
            let all_open = flood.drive_until(Duration::from_secs(10), |c| batch.iter().all(|id| c.opened(*id))).await;
            assert!(all_open, "every stream to the sink opens");
        }
    }
    let mut quiet_rounds = 0;
    let pushed = flood
        .drive_until(Duration::from_secs(20), |c| {
            let mut sent = 0;
            for id in &ids {
                sent += c.conn.write(*id, &payload).unwrap_or(0);
            }
            quiet_rounds = if sent == 0 && c.conn.transmit().is_empty() { quiet_rounds + 1 } else { 0 };
            quiet_rounds >= 25
        })
        .await;
    assert!(pushed, "the flood reaches a standstill");
    let sent = flood.conn.stats().bytes_out;
    let held = shared.budget.held();
    assert!(sent > 2 * limits().session as u64, "the flood sent {sent} bytes, enough to overrun the budget");
    assert!(held <= limits().session, "the relay holds {held} bytes, more than the session budget");
    assert!(held >= limits().session / 2, "the budget is what stopped the flood (held {held})");

    // Another client's round trip still works, and the flood is still connected.
    let mut honest = Client::connect(relay).await;
    let id = honest.conn.open(echo).expect("open");
    assert!(honest.drive_until(Duration::from_secs(10), |c| c.opened(id)).await, "the echo stream opens");
    assert_eq!(honest.conn.write(id, b"ping").expect("write"), 4);
    let mut got = Vec::new();
    let answered = honest
        .drive_until(Duration::from_secs(10), |c| {
            let mut buf = [0u8; 16];
            let n = c.conn.read(id, &mut buf);
            got.extend_from_slice(&buf[..n]);
            got == b"ping"
        })
        .await;
    assert!(answered, "the echo came back (got {got:?})");
    assert!(flood.drive_until(Duration::from_secs(1), |c| c.conn.is_established()).await);
    assert!(shared.budget.held() <= limits().session + limits().floor, "two sessions within their budgets");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dials_beyond_the_cap_wait_their_turn_and_none_fails() {
    // A listener whose accept queue is full: the kernel drops further SYNs,
    // so dials to it stay in progress until it accepts.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.bind(&"127.0.0.1:0".parse::<SocketAddr>().expect("addr").into()).expect("bind");
    socket.listen(0).expect("listen");
    let silent = std::net::TcpListener::from(socket);
    let silent_addr = silent.local_addr().expect("addr");
    let mut fillers = Vec::new();
    for _ in 0..3 {
        fillers.push(tokio::spawn(TcpStream::connect(silent_addr)));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let shared = shared(4);
    let (relay, _shutdown) = start_relay(shared.clone()).await;
    let mut client = Client::connect(relay).await;
    let ids: Vec<_> = (0..6).map(|_| client.conn.open(silent_addr).expect("open")).collect();
    let ended =
        |c: &Client| c.events.iter().filter(|e| matches!(e, Event::OpenFailed { .. } | Event::Opened { .. })).count();
    // Four dials in progress, two waiting for a slot, nothing refused.
    assert!(!client.drive_until(Duration::from_millis(500), |c| ended(c) > 0).await, "{:?}", client.events);
    assert_eq!(shared.metrics.dials_queued.load(std::sync::atomic::Ordering::Relaxed), 2);
    // The listener takes everything now: every open succeeds, the waiting
    // ones after a slot frees.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept() {
            held.push(s);
        }
    });
    assert!(client.drive_until(Duration::from_secs(15), |c| ended(c) >= 6).await, "{:?}", client.events);
    let opened: Vec<_> =
        client.events.iter().filter_map(|e| if let Event::Opened { id } = e { Some(*id) } else { None }).collect();
    for id in ids {
        assert!(opened.contains(&id), "stream {id} should have opened: {:?}", client.events);
    }
    for f in fillers {
        f.abort();
    }
}

/// A laptop proving a direct path (finding 1's TLS handshake, then a clean
/// close) is counted as a proof, not as a failed login; a client that sent
/// anything at all and left is not.
#[tokio::test]
async fn a_path_proof_is_not_a_failed_login() {
    async fn end_after(sent: &'static [u8]) -> SessionEnd {
        let shared = shared(4);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("addr");
        let client = tokio::spawn(async move {
            let mut tcp = TcpStream::connect(addr).await.expect("connect");
            tcp.write_all(sent).await.expect("write");
            tcp.shutdown().await.expect("close");
            tcp
        });
        let (tcp, peer) = listener.accept().await.expect("accept");
        let slot = shared.logging_in.admit(peer.ip()).expect("a login place");
        let login = super::Login {
            deadline: Instant::now() + shared.login_timeout,
            slot,
            auth: devnet_proto::TransportAuth::None,
            identity: None,
        };
        let (_tx, shutdown) = watch::channel(false);
        let end = super::run(tokio::io::BufReader::new(tcp), peer, shared, shutdown, login).await;
        drop(client.await);
        end
    }
    assert!(matches!(end_after(b"").await, SessionEnd::PathProof));
    assert!(!matches!(end_after(b"x").await, SessionEnd::PathProof));
}

/// A listener whose every connection sends zeros as fast as it can once
/// `go` is set, until the other side goes away.
fn source(go: Arc<std::sync::atomic::AtomicBool>) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind source");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let go = go.clone();
            std::thread::spawn(move || {
                while !go.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let zeros = vec![0u8; 64 * KIB];
                while std::io::Write::write_all(&mut conn, &zeros).is_ok() {}
            });
        }
    });
    addr
}

/// A client that grants 16 windows of 4 MiB and then stops reading its
/// connection: the relay reads from the destinations only while its unsent
/// output is below the cap, so it holds about 1 MiB for the client, not
/// the 64 MiB the windows allow; the rest waits in the destinations'
/// sockets. Once the client reads again, every stream moves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_holds_the_relay_to_its_output_cap() {
    use std::sync::atomic::Ordering::Relaxed;
    let shared = shared(crate::MAX_DIALING_PER_SESSION);
    let (relay, _shutdown) = start_relay(shared.clone()).await;
    let go = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let source = source(go.clone());
    let mut client = Client::connect(relay).await;
    let ids: Vec<_> = (0..16).map(|_| client.conn.open(source).expect("open")).collect();
    assert!(client.drive_until(Duration::from_secs(10), |c| ids.iter().all(|id| c.opened(*id))).await);

    // The client stops reading, the destinations start sending; wait until
    // the relay stops reading from them.
    go.store(true, Relaxed);
    let metrics = &shared.metrics;
    let mut last = metrics.bytes_from_destinations.load(Relaxed);
    let mut still = 0;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = metrics.bytes_from_destinations.load(Relaxed);
        still = if now == last { still + 1 } else { 0 };
        last = now;
        if still == 5 {
            break;
        }
    }
    assert_eq!(still, 5, "the relay kept reading from the destinations ({last} bytes)");
    let windows = 16 * Config::default().stream_window as u64;
    let peak = metrics.session_output_peak_bytes.load(Relaxed);
    let bound = (super::OUTBUF_CAP + super::READ_CHUNK + 4 * KIB) as u64;
    assert!(last > 2 * super::OUTBUF_CAP as u64, "the relay read {last} bytes before it stopped");
    assert!(last < windows / 2, "the relay read {last} bytes: the windows stopped it, not the cap");
    assert!(peak <= bound, "the relay held {peak} bytes for the client, above {bound}");

    // Reading again, every stream moves again.
    let mut got = vec![0usize; ids.len()];
    let mut buf = vec![0u8; 256 * KIB];
    let resumed = client
        .drive_until(Duration::from_secs(30), |c| {
            for (i, id) in ids.iter().enumerate() {
                got[i] += c.conn.read(*id, &mut buf);
            }
            got.iter().all(|n| *n >= 2 * super::OUTBUF_CAP)
        })
        .await;
    assert!(resumed, "some streams stalled after the client read again: {got:?}");
}

/// A UDP server on loopback that answers each datagram with itself.
fn udp_echo() -> SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind UDP echo");
    let addr = socket.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    addr
}

/// Sends one datagram on `assoc` and waits for its echo (10 s, for a loaded
/// machine: a datagram the relay dropped is never answered, so a drop still
/// fails).
async fn udp_round_trip(client: &mut Client, assoc: u32, to: SocketAddr) -> bool {
    let payload = assoc.to_be_bytes().to_vec();
    client.conn.send_datagram(assoc, to, &payload).expect("send a datagram");
    client
        .drive_until(Duration::from_secs(10), |c| {
            c.events
                .iter()
                .any(|e| matches!(e, Event::Datagram { assoc: a, payload: p, .. } if *a == assoc && *p == payload))
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_udp_associations_than_the_table_holds_all_get_answers() {
    // A stub resolver asks each query from a new source port, so a burst of
    // lookups is a burst of new associations: more than the relay keeps at
    // once must still all be answered, the least recently used making room.
    crate::limits::raise_open_files().expect("open-files limit");
    let shared = shared(crate::MAX_DIALING_PER_SESSION);
    let (relay, _shutdown) = start_relay(shared.clone()).await;
    let echo = udp_echo();
    let mut client = Client::connect(relay).await;
    let total = super::MAX_UDP_ASSOCS as u32 + 64;
    for assoc in 1..=total {
        assert!(udp_round_trip(&mut client, assoc, echo).await, "association {assoc} of {total} was answered");
        client.events.clear();
    }
    // The first association was the least recently used: gone, but a new
    // datagram on it simply opens it again.
    assert!(udp_round_trip(&mut client, 1, echo).await, "a forgotten association opens again");
    let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(count(&shared.metrics.udp_associations_opened), u64::from(total) + 1);
    assert_eq!(
        count(&shared.metrics.udp_associations_evicted),
        64 + 1,
        "one eviction per association beyond the table"
    );
}

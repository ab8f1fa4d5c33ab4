//! One client session: a TLS stream driven through the sans-IO
//! [`Connection`], and the destination sockets it dialled, all owned by the
//! session's one task.
//!
//! There is no task, channel or buffer per stream. Each destination socket
//! wakes the session with its stream id ([`ReadyStreams`]) when it becomes
//! readable or writable, and the session moves bytes in that turn: client
//! bytes are written to the socket straight from the connection's receive
//! buffer (once per turn, with one write), and destination bytes are read
//! straight into the `Data` frame the connection sends. Dials are futures inside the session
//! too. Only UDP associations keep a reader task each (a datagram at a
//! time, for DNS).
//!
//! Backpressure runs end to end. Towards a destination, bytes stay in the
//! connection's receive buffer until the socket took them, and only then
//! does the stream get credit again, from the session's [`Credit`] (the
//! byte budget): a destination that never reads holds at most its stream's
//! window, and all of a session's at most its budget. From a destination,
//! the session reads only as much as the stream's send window allows, and
//! nothing while the connection's unsent output exceeds [`OUTBUF_CAP`], so
//! a client that grants credit and never reads cannot make the relay
//! buffer for it either: what it does not take stays in the kernel's
//! socket buffers, and the destination's TCP window closes.
//!
//! Not here: TLS and login admission (the accept loop in `lib.rs`), the
//! destination policy (`policy.rs`) and the byte budget (`budget.rs`).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use devnet_proto::{Connection, ConnectionError, Event, OpenStatus, StreamId, udp};
use devnet_tls::link::{Received, send_now, write_or_flush};
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use tokio::io::{AsyncBufRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::Shared;
use crate::budget::Credit;
use crate::metrics::Metrics;

/// The most read from a destination at once: one `Data` frame's payload,
/// read straight into the frame.
const READ_CHUNK: usize = 64 * 1024;
/// The most read from one destination in one turn before the others (and
/// the client's connection) get theirs.
const READ_PER_TURN: usize = 4 * READ_CHUNK;
/// The most taken from the client's link in one turn before the
/// destinations get theirs. Each stream's bytes of a turn go to its
/// destination in one write, so the turn sets how large those writes are
/// when streams share the link: with 8 uploads, 256 KiB turns wrote about
/// 43 KiB per write, each a wake-up of the destination and a packet through
/// the node; with 1 MiB turns (and the engine's 128 KiB turns per flow)
/// the relay's syscalls per 3 GiB fell from 76,000–96,000 to
/// 57,000–66,000 (bench/README.md, "Waiting bytes in 2 MiB"). Decrypting
/// 1 MiB takes well under a millisecond, which is what another stream's
/// bytes can wait behind.
const LINK_READ_PER_TURN: usize = 1024 * 1024;
/// UDP associations kept per client (`devnet_proto::udp`, as the client
/// does). A full table makes room by dropping the least recently used: the
/// client forgets an association without telling the relay, so a burst of
/// lookups (over a thousand new associations within `udp::DNS_IDLE`) must
/// not find the table full of ones nobody will use again.
const MAX_UDP_ASSOCS: usize = udp::MAX_ASSOCIATIONS;
/// The largest UDP payload a datagram can carry.
const MAX_DATAGRAM: usize = 65_535;
/// Unsent output above which the session reads no more from destinations.
pub const OUTBUF_CAP: usize = 1024 * 1024;

/// Messages from UDP reader tasks to the session.
enum UdpUp {
    Datagram {
        assoc: u32,
        from: SocketAddr,
        payload: Vec<u8>,
    },
    /// Nothing arrived for the association's idle time; the session drops
    /// it unless the client sent on it within that time.
    Quiet {
        assoc: u32,
    },
}

type DialResult = Result<TcpStream, (OpenStatus, String)>;
type Dial = Pin<Box<dyn Future<Output = (StreamId, DialResult)> + Send>>;

/// A dialled destination, driven by the session.
struct StreamIo {
    socket: TcpStream,
    /// Registered with the socket's readiness: puts this stream's id on the
    /// session's [`ReadyStreams`].
    waker: Waker,
    /// The client finished: shut the socket's write side once every byte
    /// before the Fin is written.
    fin_pending: bool,
    /// The destination closed its side, or the stream was finished towards
    /// the client: nothing more is read.
    read_done: bool,
    /// On the session's list of streams waiting for the output to drain.
    waiting_for_output: bool,
}

/// The ids of streams whose sockets became ready since the session last
/// looked, and the session task's waker. A stream's waker pushes its id
/// and wakes the session, so a turn visits only the streams that have
/// something to do, never all of them.
#[derive(Default)]
struct ReadyStreams(Mutex<ReadyState>);

#[derive(Default)]
struct ReadyState {
    ids: Vec<StreamId>,
    session: Option<Waker>,
}

struct StreamWaker {
    id: StreamId,
    ready: Arc<ReadyStreams>,
}

impl Wake for StreamWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let session = {
            let mut state = self.ready.lock();
            state.ids.push(self.id);
            state.session.take()
        };
        if let Some(waker) = session {
            waker.wake();
        }
    }
}

impl ReadyStreams {
    fn lock(&self) -> std::sync::MutexGuard<'_, ReadyState> {
        // A panic while holding it leaves only ids behind: still usable.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn waker_for(self: &Arc<Self>, id: StreamId) -> Waker {
        Waker::from(Arc::new(StreamWaker { id, ready: self.clone() }))
    }

    /// Swaps the ready ids into `out` (which must be empty), or remembers
    /// the session's waker when there are none.
    fn poll_take(&self, cx: &Context<'_>, out: &mut Vec<StreamId>) -> Poll<()> {
        let mut state = self.lock();
        if state.ids.is_empty() {
            if !state.session.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                state.session = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        std::mem::swap(&mut state.ids, out);
        Poll::Ready(())
    }
}

struct UdpAssoc {
    /// One socket, read by the association's reader task and written here.
    /// It is connected to `target`, so the kernel drops datagrams from
    /// anyone else: nobody can inject answers.
    socket: Arc<UdpSocket>,
    /// The one destination of this association (the client keys them by
    /// source and destination).
    target: SocketAddr,
    /// The last datagram either way.
    last_used: Instant,
    reader: AbortHandle,
}

impl UdpAssoc {
    fn idle_after(&self) -> Duration {
        idle_after(self.target)
    }

    /// Sends without waiting. Through the descriptor itself: a non-blocking
    /// UDP send completes or fails at once, whereas tokio's `try_send`
    /// reports WouldBlock until the reactor has seen the new socket, which
    /// would drop every association's first datagram.
    fn send(&self, payload: &[u8]) -> io::Result<usize> {
        socket2::SockRef::from(&*self.socket).send(payload)
    }
}

fn idle_after(target: SocketAddr) -> Duration {
    udp::idle_limit(target.port(), udp::IDLE, udp::DNS_IDLE)
}

impl Drop for UdpAssoc {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// How a session ended, for the accept loop's logs and metrics.
#[derive(Debug)]
pub enum SessionEnd {
    /// TLS, preface and Hello took longer than the login deadline.
    LoginTimedOut,
    /// The handshake never completed.
    HandshakeFailed(ConnectionError),
    /// The client closed cleanly after TLS without a byte of the preface: a
    /// laptop proving that a direct path reaches this relay (its CA-verified
    /// handshake is the proof), not a failed login.
    PathProof,
    /// The client's certificate (or its user) was revoked while the
    /// session was live: it was closed with this message.
    Revoked(String),
    /// The session was established and later ended.
    Ended(String),
}

/// A connection that has not logged in yet: the time it has left, and its
/// place among those logging in (given back once it has).
#[derive(Debug)]
pub struct Login {
    pub deadline: Instant,
    pub slot: crate::LoginSlot,
    /// What the TLS layer decided about the client (its certificate).
    pub auth: devnet_proto::TransportAuth,
    /// Whose certificate it presented, if any.
    pub identity: Option<crate::identity::Issued>,
}

/// Runs a session to completion.
pub async fn run<S>(
    io: S,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    login: Login,
) -> SessionEnd
where
    S: AsyncBufRead + AsyncWrite + Unpin,
{
    let mut proto = shared.proto.clone();
    proto.transport_auth = login.auth.clone();
    // A session with a certificate follows the revocation list.
    let identity = login.identity.clone();
    let mut revoked = shared.identities.as_ref().filter(|_| identity.is_some()).map(|ids| ids.revoked());
    let mut login = Some(login);
    let (mut rd, mut wr) = devnet_tls::link::split(io);
    let (udp_tx, mut udp_rx) = mpsc::unbounded_channel();
    let mut session = Session {
        conn: Connection::server(proto, Instant::now().into_std()),
        streams: HashMap::new(),
        ready: Arc::default(),
        waiting_for_output: VecDeque::new(),
        udp: HashMap::new(),
        udp_tx,
        credit: Credit::new(shared.budget.clone(), shared.credit),
        dials: FuturesUnordered::new(),
        waiting_dials: VecDeque::new(),
        shared,
        established: false,
        identity: identity.clone(),
        output_peak: 0,
    };
    let mut ready_ids = Vec::new();
    let mut needs_flush = false;
    let mut drain_deadline: Option<Instant> = None;
    let mut shutting_down = *shutdown.borrow();
    let mut received = 0usize;
    // One timer for the life of the session, moved only when the deadline
    // does (not a new one registered with the runtime on every turn).
    let timer = tokio::time::sleep_until(Instant::now());
    tokio::pin!(timer);
    let end = loop {
        let deadline = session.conn.poll_timeout().map(Instant::from_std);
        let deadline = [deadline, drain_deadline, login.as_ref().map(|l| l.deadline)].into_iter().flatten().min();
        if let Some(at) = deadline
            && timer.deadline() != at
        {
            timer.as_mut().reset(at);
        }
        tokio::select! {
            read = rd.readable() => match read {
                Ok(0) if received == 0 => break SessionEnd::PathProof,
                Ok(0) => break SessionEnd::Ended("client closed the connection".into()),
                Ok(_) => {
                    // Every record already readable, in this turn, fed
                    // from TLS's own buffer.
                    let now = Instant::now().into_std();
                    let mut feed = |bytes: &[u8]| session.handle_link_input(bytes, now);
                    let all = std::future::poll_fn(|cx| Poll::Ready(rd.receive_ready(&mut feed, LINK_READ_PER_TURN, cx)));
                    match all.await {
                        Ok(Received::Bytes(n)) => received += n,
                        Ok(Received::Closed(_)) => break SessionEnd::Ended("client closed the connection".into()),
                        Err(e) => break SessionEnd::Ended(format!("read error: {e}")),
                    }
                }
                Err(e) => break SessionEnd::Ended(format!("read error: {e}")),
            },
            written = write_or_flush(&mut wr, session.conn.transmit()),
                if needs_flush || !session.conn.transmit().is_empty() => match written {
                Ok(0) => needs_flush = false,
                Ok(n) => {
                    session.conn.advance_transmit(n);
                    needs_flush = true;
                    session.output_drained();
                }
                Err(e) => break SessionEnd::Ended(format!("write error: {e}")),
            },
            () = std::future::poll_fn(|cx| session.ready.poll_take(cx, &mut ready_ids)) => {
                session.serve_ready(&mut ready_ids);
            }
            Some((id, result)) = session.dials.next(), if !session.dials.is_empty() => session.dialed(id, result),
            Some(msg) = udp_rx.recv() => session.handle_udp(msg),
            () = &mut timer, if deadline.is_some() => {
                let now = Instant::now();
                if login.as_ref().is_some_and(|l| now >= l.deadline) {
                    break SessionEnd::LoginTimedOut;
                }
                session.conn.handle_timeout(now.into_std());
                if drain_deadline.is_some_and(|d| now >= d) {
                    session.conn.close("relay shut down");
                }
            }
            Some(list) = next_revocation(&mut revoked) => {
                if let Some(who) = identity.as_ref().filter(|who| list.covers(who)) {
                    let message = crate::identity::revoked_message(who);
                    session.conn.refuse_identity(&message);
                    send_last_words(&mut wr, &session.conn).await;
                    break SessionEnd::Revoked(message);
                }
            }
            changed = shutdown.changed(), if !shutting_down => {
                shutting_down = true;
                if changed.is_ok() {
                    session.conn.go_away("relay shutting down");
                    drain_deadline = Some(Instant::now() + session.shared.shutdown_grace);
                }
            }
        }
        if let Some(end) = session.handle_events() {
            send_last_words(&mut wr, &session.conn).await;
            break end;
        }
        session.note_output_peak();
        // What this turn produced goes out now, not a turn later.
        let sent = std::future::poll_fn(|cx| Poll::Ready(send_now(&mut wr, &mut session.conn, &mut needs_flush, cx)));
        match sent.await {
            Ok(0) => {}
            Ok(_) => session.output_drained(),
            Err(e) => break SessionEnd::Ended(format!("write error: {e}")),
        }
        if session.established {
            // Logged in: no deadline any more, and room for the next one.
            login = None;
        }
        if shutting_down && session.streams.is_empty() && session.conn.transmit().is_empty() {
            session.conn.close("relay shut down");
        }
    };
    let _ = wr.shutdown().await;
    debug!(%peer, "session over");
    end
}

/// Best effort before a session ends: lets the client read why (a Reject
/// or a revocation), waiting at most a second for it to take the bytes.
async fn send_last_words<W: AsyncWrite + Unpin>(wr: &mut W, conn: &Connection) {
    let pending = conn.transmit();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        wr.write_all(pending).await?;
        wr.flush().await
    })
    .await;
}

/// The next revocation list, when this session follows one.
async fn next_revocation(
    revoked: &mut Option<watch::Receiver<crate::identity::Revoked>>,
) -> Option<crate::identity::Revoked> {
    match revoked {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(rx.borrow_and_update().clone()),
            Err(_) => {
                *revoked = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

struct Session {
    conn: Connection,
    streams: HashMap<StreamId, StreamIo>,
    /// Streams whose sockets woke the session.
    ready: Arc<ReadyStreams>,
    /// Streams that stopped reading because the output was above
    /// [`OUTBUF_CAP`], oldest first.
    waiting_for_output: VecDeque<StreamId>,
    udp: HashMap<u32, UdpAssoc>,
    udp_tx: mpsc::UnboundedSender<UdpUp>,
    /// The window credit this session's streams hold (the byte budget).
    credit: Credit,
    /// Dials in progress.
    dials: FuturesUnordered<Dial>,
    /// Opens waiting for a dial slot, oldest first: a burst (a browser, a
    /// connection pool warming up) waits its turn instead of failing; the
    /// queue is bounded by the streams a client may have open.
    waiting_dials: VecDeque<(StreamId, SocketAddr)>,
    shared: Arc<Shared>,
    established: bool,
    /// The client's certificate identity, for the logs.
    identity: Option<crate::identity::Issued>,
    /// The most output this session has held unsent, so the shared
    /// high-water mark is touched only when it grows, not on every turn.
    output_peak: usize,
}

impl Session {
    /// Feeds the connection bytes read from the client's link. Stream data
    /// is buffered, and `forward_down` writes each stream's bytes once the
    /// turn's input is in, with one write. Written straight from each read
    /// instead (one copy fewer), a destination took one write per TLS
    /// record: 16 KiB writes cost the relay 1.7× the CPU per byte uploaded
    /// and a third of the throughput (`counts.sh`, bench/README). A
    /// protocol error is the connection's to report as an event.
    fn handle_link_input(&mut self, bytes: &[u8], now: std::time::Instant) {
        let _ = self.conn.handle_input(bytes, now);
    }

    fn note_output_peak(&mut self) {
        let unsent = self.conn.transmit().len();
        if unsent > self.output_peak {
            self.output_peak = unsent;
            Metrics::raise(&self.shared.metrics.session_output_peak_bytes, unsent as u64);
        }
    }

    fn handle_events(&mut self) -> Option<SessionEnd> {
        while let Some(event) = self.conn.poll_event() {
            match event {
                Event::Connected { peer } => {
                    self.established = true;
                    let (user, serial) =
                        self.identity.as_ref().map_or(("", ""), |i| (i.user.as_str(), i.serial.as_str()));
                    let by = if self.identity.is_some() { "certificate" } else { "token" };
                    info!(client = %peer, %user, %serial, by, "client authenticated");
                }
                Event::OpenRequested { id, addr } => self.open(id, addr),
                Event::Readable { id } => self.forward_down(id),
                Event::Writable { id } => self.forward_up(id),
                Event::Finished { id } => {
                    if let Some(s) = self.streams.get_mut(&id) {
                        s.fin_pending = true;
                    }
                    self.forward_down(id);
                }
                Event::Reset { id, message } => {
                    debug!(id, %message, "client reset stream");
                    // Dropping the socket closes it, unsent bytes and all.
                    self.forget(id);
                }
                Event::Datagram { assoc, addr, payload } => self.send_datagram(assoc, addr, &payload),
                Event::Opened { .. } | Event::OpenFailed { .. } | Event::GoAway { .. } => {}
                Event::Closed { error } => {
                    return Some(if self.established {
                        SessionEnd::Ended(error.to_string())
                    } else {
                        SessionEnd::HandshakeFailed(error)
                    });
                }
            }
        }
        None
    }

    fn open(&mut self, id: StreamId, addr: SocketAddr) {
        let target = match self.shared.policy.check(addr.ip()) {
            Ok(ip) => SocketAddr::new(ip, addr.port()),
            Err(denial) => {
                Metrics::add(&self.shared.metrics.streams_denied, 1);
                warn!(id, dst = %addr, reason = %denial, "refused TCP destination");
                self.conn.refuse(id, OpenStatus::Denied, &format!("relay refuses {addr}: {denial}"));
                return;
            }
        };
        if self.dials.len() >= self.shared.max_dialing {
            Metrics::add(&self.shared.metrics.dials_queued, 1);
            debug!(id, dst = %addr, limit = self.shared.max_dialing, "dial waits for a slot");
            self.waiting_dials.push_back((id, target));
            return;
        }
        self.dial(id, target);
    }

    fn dial(&mut self, id: StreamId, target: SocketAddr) {
        let timeout = self.shared.dial_timeout;
        self.dials.push(Box::pin(async move {
            let result = match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
                Ok(Ok(stream)) => Ok(stream),
                Ok(Err(e)) => Err(classify_dial_error(target, &e)),
                Err(_) => Err((OpenStatus::TimedOut, format!("no answer from {target} within {timeout:?}"))),
            };
            (id, result)
        }));
    }

    /// A dial ended: the oldest waiting opens whose streams the client still
    /// wants take the free slots, then the stream is accepted or refused.
    fn dialed(&mut self, id: StreamId, result: DialResult) {
        while self.dials.len() < self.shared.max_dialing
            && let Some((id, target)) = self.waiting_dials.pop_front()
        {
            if self.conn.contains(id) {
                self.dial(id, target);
            }
        }
        let stream = match result {
            Ok(stream) => stream,
            Err((status, message)) => {
                Metrics::add(&self.shared.metrics.dial_failures, 1);
                debug!(id, ?status, %message, "dial failed");
                self.conn.refuse(id, status, &message);
                return;
            }
        };
        if !self.conn.contains(id) {
            return; // the client gave up on the stream meanwhile
        }
        let window = self.credit.open(id);
        if self.conn.accept_with_window(id, window).is_err() {
            self.forget(id);
            return;
        }
        Metrics::add(&self.shared.metrics.streams_opened, 1);
        let _ = stream.set_nodelay(true);
        let waker = self.ready.waker_for(id);
        // A client that finished before the dial completed still gets its Fin.
        let fin_pending = self.conn.is_read_closed(id);
        let io = StreamIo { socket: stream, waker, fin_pending, read_done: false, waiting_for_output: false };
        self.streams.insert(id, io);
        // Registers the socket's read interest (and writes anything queued).
        self.forward_down(id);
        self.forward_up(id);
    }

    /// Streams whose sockets woke the session: each moves what it can both ways.
    fn serve_ready(&mut self, ids: &mut Vec<StreamId>) {
        ids.sort_unstable();
        ids.dedup();
        for id in ids.drain(..) {
            self.forward_down(id);
            self.forward_up(id);
        }
    }

    /// Writes the bytes the client sent on `id` to its destination, straight
    /// from the connection's receive buffer, until the socket would block
    /// (then its writability wakes the session); shuts the socket's write
    /// side after the last byte once the client finished.
    fn forward_down(&mut self, id: StreamId) {
        let Some(s) = self.streams.get_mut(&id) else { return };
        loop {
            let (a, b) = self.conn.peek(id);
            if a.is_empty() {
                break;
            }
            let error = match s.socket.try_write_vectored(&[IoSlice::new(a), IoSlice::new(b)]) {
                Ok(0) => break,
                Ok(n) => {
                    Metrics::add(&self.shared.metrics.bytes_to_destinations, n as u64);
                    self.conn.release(id, n);
                    for (id, increment) in self.credit.drained(id, n) {
                        self.conn.grant(id, increment);
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match s.socket.poll_write_ready(&mut Context::from_waker(&s.waker)) {
                        Poll::Ready(Ok(())) => continue, // writable again already
                        Poll::Ready(Err(e)) => e,
                        Poll::Pending => return,
                    }
                }
                Err(e) => e,
            };
            return self.fail(id, format!("destination write error: {error}"));
        }
        if s.fin_pending {
            s.fin_pending = false;
            let _ = socket2::SockRef::from(&s.socket).shutdown(std::net::Shutdown::Write);
        }
        self.reap(id);
    }

    /// Reads what the destination of `id` sent into the stream, as far as
    /// its send window allows and while the output is below [`OUTBUF_CAP`].
    /// Stops at [`READ_PER_TURN`] and asks for another turn, so one busy
    /// destination does not hold up the others.
    fn forward_up(&mut self, id: StreamId) {
        let Some(s) = self.streams.get_mut(&id) else { return };
        let mut turn_left = READ_PER_TURN;
        while !s.read_done {
            if self.conn.transmit().len() >= OUTBUF_CAP {
                if !s.waiting_for_output {
                    s.waiting_for_output = true;
                    self.waiting_for_output.push_back(id);
                }
                return;
            }
            // No credit: the client's Window frame brings the stream back (Writable).
            let room = self.conn.send_capacity(id).min(READ_CHUNK);
            if room == 0 {
                return;
            }
            if turn_left == 0 {
                s.waker.wake_by_ref();
                return;
            }
            // Straight into the frame the connection sends (`write_with`),
            // not through a buffer of ours. `poll_read`, not `try_read`:
            // after a short read it marks the socket as drained (a new
            // arrival is a new edge), so a reply goes to the client without
            // first reading again for an EAGAIN.
            let mut cx = Context::from_waker(&s.waker);
            let socket = Pin::new(&mut s.socket);
            let read = self.conn.write_with(id, room, |frame| tokio_util::io::poll_read_buf(socket, &mut cx, frame));
            let error = match read {
                Ok((_, Poll::Ready(Ok(0)))) => {
                    s.read_done = true;
                    self.conn.finish(id);
                    continue;
                }
                Ok((n, Poll::Ready(Ok(_)))) => {
                    Metrics::add(&self.shared.metrics.bytes_from_destinations, n as u64);
                    turn_left = turn_left.saturating_sub(n);
                    continue;
                }
                Ok((_, Poll::Pending)) => return,
                Ok((_, Poll::Ready(Err(e)))) => format!("destination read error: {e}"),
                // Not open or finished: nothing the checks above let through.
                Err(e) => e.to_string(),
            };
            return self.fail(id, error);
        }
        self.reap(id);
    }

    /// The output drained: streams held back by [`OUTBUF_CAP`] read again,
    /// oldest first, while it stays below.
    fn output_drained(&mut self) {
        while self.conn.transmit().len() < OUTBUF_CAP {
            let Some(id) = self.waiting_for_output.pop_front() else { return };
            if let Some(s) = self.streams.get_mut(&id) {
                s.waiting_for_output = false;
                self.forward_up(id);
            }
        }
    }

    /// The destination socket of `id` failed: the client's stream is reset.
    fn fail(&mut self, id: StreamId, message: String) {
        if self.forget(id).is_some() {
            self.conn.reset(id, &message);
        }
    }

    /// Drops our side of a stream and gives its credit to streams owed some.
    fn forget(&mut self, id: StreamId) -> Option<StreamIo> {
        for (id, increment) in self.credit.close(id) {
            self.conn.grant(id, increment);
        }
        self.streams.remove(&id)
    }

    /// Drops our side of a stream once the connection has forgotten it,
    /// which it does when both directions finished and every byte was written.
    fn reap(&mut self, id: StreamId) {
        if !self.conn.contains(id) {
            self.forget(id);
        }
    }

    fn handle_udp(&mut self, msg: UdpUp) {
        match msg {
            UdpUp::Datagram { assoc, from, payload } => {
                if let Some(a) = self.udp.get_mut(&assoc) {
                    a.last_used = Instant::now();
                }
                let _ = self.conn.send_datagram(assoc, from, &payload);
            }
            UdpUp::Quiet { assoc } => {
                if self.udp.get(&assoc).is_some_and(|a| a.last_used.elapsed() >= a.idle_after()) {
                    self.udp.remove(&assoc);
                }
            }
        }
    }

    fn send_datagram(&mut self, assoc: u32, addr: SocketAddr, payload: &[u8]) {
        let target = match self.shared.policy.check(addr.ip()) {
            Ok(ip) => SocketAddr::new(ip, addr.port()),
            Err(denial) => {
                Metrics::add(&self.shared.metrics.streams_denied, 1);
                warn!(assoc, dst = %addr, reason = %denial, "refused UDP destination");
                return;
            }
        };
        if !self.udp.contains_key(&assoc) {
            if self.udp.len() >= MAX_UDP_ASSOCS {
                let oldest = self.udp.iter().min_by_key(|(_, a)| a.last_used).map(|(id, _)| *id);
                if let Some(oldest) = oldest {
                    debug!(assoc, evicted = oldest, "UDP association table full; the least recently used makes room");
                    self.udp.remove(&oldest);
                    Metrics::add(&self.shared.metrics.udp_associations_evicted, 1);
                }
            }
            let bind: SocketAddr = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
            let socket = std::net::UdpSocket::bind(bind).and_then(|s| {
                s.connect(target)?;
                s.set_nonblocking(true)?;
                UdpSocket::from_std(s)
            });
            let socket = match socket {
                Ok(socket) => Arc::new(socket),
                Err(e) => {
                    warn!(assoc, error = %e, "cannot open UDP socket");
                    return;
                }
            };
            let reader = tokio::spawn(udp_reader(assoc, socket.clone(), idle_after(target), self.udp_tx.clone()));
            let reader = reader.abort_handle();
            self.udp.insert(assoc, UdpAssoc { socket, target, last_used: Instant::now(), reader });
            Metrics::add(&self.shared.metrics.udp_associations_opened, 1);
        }
        if let Some(a) = self.udp.get_mut(&assoc) {
            if a.target != target {
                warn!(assoc, dst = %target, first = %a.target, "a datagram for another destination on the same association; dropped");
                return;
            }
            a.last_used = Instant::now();
            Metrics::add(&self.shared.metrics.datagrams_relayed, 1);
            // UDP semantics: a full socket buffer drops the datagram.
            if let Err(e) = a.send(payload) {
                debug!(assoc, dst = %target, error = %e, "UDP send failed; datagram dropped");
            }
        }
    }
}

fn classify_dial_error(target: SocketAddr, e: &io::Error) -> (OpenStatus, String) {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => {
            (OpenStatus::Refused, format!("{target} refused the connection (nothing listens on that port)"))
        }
        io::ErrorKind::TimedOut => (OpenStatus::TimedOut, format!("connecting to {target} timed out")),
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
            (OpenStatus::Unreachable, format!("{target} is unreachable from the relay: {e}"))
        }
        _ => (OpenStatus::Unreachable, format!("cannot connect to {target}: {e}")),
    }
}

/// Reads answers until the session drops the association (and aborts this
/// task), saying so each time nothing arrived for `idle`.
///
/// It holds no buffer while it waits: a session may have a thousand readers
/// (one per DNS lookup), and a zeroed 64 KiB buffer each, recycled by the
/// allocator and zeroed again, kept the lab's relay at 68 MiB resident after
/// 2000 lookups (7 MiB now). A datagram is read into a buffer taken when the socket is
/// readable, uninitialised (only what the datagram fills is touched), and
/// leaves in it, shrunk to its size (the allocator shrinks in place).
async fn udp_reader(assoc: u32, socket: Arc<UdpSocket>, idle: Duration, up_tx: mpsc::UnboundedSender<UdpUp>) {
    loop {
        let msg = match tokio::time::timeout(idle, socket.readable()).await {
            Ok(Ok(())) => {
                let mut buf = Vec::with_capacity(MAX_DATAGRAM);
                match socket.try_recv_buf_from(&mut buf) {
                    Ok((_, from)) => {
                        buf.shrink_to_fit();
                        UdpUp::Datagram { assoc, from, payload: buf }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => {
                        debug!(assoc, error = %e, "UDP receive error");
                        continue;
                    }
                }
            }
            // Only when the runtime is shutting down.
            Ok(Err(_)) => return,
            Err(_) => UdpUp::Quiet { assoc },
        };
        if up_tx.send(msg).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests;

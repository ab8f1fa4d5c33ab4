//! One client session: a TLS stream driven through the sans-IO
//! [`Connection`], with a task per dialled socket.
//!
//! Backpressure runs end to end. Towards a destination, bytes stay in the
//! connection's receive buffer until the socket writer reports them written,
//! and only then does the stream get credit again, from the session's
//! [`Credit`] (the byte budget): a destination that never reads holds at
//! most its stream's window, and all of a session's at most its budget.
//! From a destination, each socket reader holds a one-chunk gate that
//! reopens only when the connection accepted the previous chunk within the
//! stream's send window; chunks read and not yet taken count against
//! [`UP_BUDGET`], and the connection takes none while its unsent output
//! exceeds [`OUTBUF_CAP`], so a client that grants credit and never reads
//! cannot make the relay buffer for it either.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use devnet_proto::{Connection, ConnectionError, Event, OpenStatus, StreamId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::Shared;
use crate::budget::Credit;
use crate::metrics::Metrics;

const READ_CHUNK: usize = 64 * 1024;
const UDP_IDLE: Duration = Duration::from_secs(60);
/// UDP associations per client: the client keeps at most as many (and
/// forgets idle ones sooner), so an honest one never meets this.
const MAX_UDP_ASSOCS: usize = 1024;
/// Bytes read from a session's destinations and not yet taken by the
/// connection (each stream reads a chunk at a time).
pub const UP_BUDGET: usize = 4 * 1024 * 1024;
/// Unsent output above which the connection takes no more stream data.
pub const OUTBUF_CAP: usize = 1024 * 1024;

/// Messages from socket tasks to the session.
enum Up {
    Dialed { id: StreamId, result: Result<TcpStream, (OpenStatus, String)> },
    Data { id: StreamId, data: Vec<u8> },
    Eof { id: StreamId },
    ReadError { id: StreamId, message: String },
    Written { id: StreamId, n: usize },
    WriteError { id: StreamId, message: String },
    Datagram { assoc: u32, from: SocketAddr, payload: Vec<u8> },
    UdpIdle { assoc: u32 },
}

/// Messages from the session to a socket writer.
enum Down {
    Data(Vec<u8>),
    Fin,
}

struct StreamIo {
    /// Shared with the socket tasks; the session writes to it directly when
    /// the writer task has nothing queued, saving a task hop per chunk.
    socket: Arc<TcpStream>,
    down: mpsc::UnboundedSender<Down>,
    gate: Arc<Semaphore>,
    /// The session's [`UP_BUDGET`]; a chunk holds its length until taken.
    up_bytes: Arc<Semaphore>,
    /// A chunk the connection could not yet take in full, and how much it took.
    pending_up: Option<(Vec<u8>, usize)>,
    eof_pending: bool,
    /// Bytes of the connection's receive buffer already handed to the writer.
    forwarded: usize,
    reader: AbortHandle,
    writer: AbortHandle,
}

impl Drop for StreamIo {
    fn drop(&mut self) {
        // The writer is left to flush what it has; the reader must stop.
        self.reader.abort();
        if let Some((data, _)) = &self.pending_up {
            self.up_bytes.add_permits(data.len());
        }
    }
}

struct UdpAssoc {
    /// The sending side, used directly: a non-blocking UDP send completes or
    /// fails at once, whereas tokio's `try_send_to` reports WouldBlock until
    /// the reactor has seen the new socket, dropping the first datagram.
    sender: std::net::UdpSocket,
    /// The one destination of this association (the client keys them by
    /// source and destination). The socket is connected to it, so the
    /// kernel drops datagrams from anyone else: nobody can inject answers.
    target: SocketAddr,
    reader: AbortHandle,
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
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut proto = shared.proto.clone();
    proto.transport_auth = login.auth.clone();
    // A session with a certificate follows the revocation list.
    let identity = login.identity.clone();
    let mut revoked = shared.identities.as_ref().filter(|_| identity.is_some()).map(|ids| ids.revoked());
    let mut login = Some(login);
    let (mut rd, mut wr) = tokio::io::split(io);
    let mut session = Session {
        conn: Connection::server(proto, Instant::now().into_std()),
        streams: HashMap::new(),
        udp: HashMap::new(),
        credit: Credit::new(shared.budget.clone(), shared.credit),
        dialing: 0,
        waiting_dials: VecDeque::new(),
        up_bytes: Arc::new(Semaphore::new(UP_BUDGET)),
        blocked_up: VecDeque::new(),
        shared,
        established: false,
        identity: identity.clone(),
    };
    let (up_tx, mut up_rx) = mpsc::unbounded_channel();
    let mut buf = vec![0u8; 256 * 1024];
    let mut needs_flush = false;
    let mut drain_deadline: Option<Instant> = None;
    let mut shutting_down = *shutdown.borrow();
    let mut received = 0usize;
    let end = loop {
        let timer = session.conn.poll_timeout().map(Instant::from_std);
        let timer = [timer, drain_deadline, login.as_ref().map(|l| l.deadline)].into_iter().flatten().min();
        tokio::select! {
            read = rd.read(&mut buf) => match read {
                Ok(0) if received == 0 => break SessionEnd::PathProof,
                Ok(0) => break SessionEnd::Ended("client closed the connection".into()),
                Ok(n) => {
                    received += n;
                    let _ = session.conn.handle_input(&buf[..n], Instant::now().into_std());
                }
                Err(e) => break SessionEnd::Ended(format!("read error: {e}")),
            },
            written = write_or_flush(&mut wr, session.conn.transmit()),
                if needs_flush || !session.conn.transmit().is_empty() => match written {
                Ok(0) => needs_flush = false,
                Ok(n) => {
                    session.conn.advance_transmit(n);
                    needs_flush = true;
                    session.resume_up();
                }
                Err(e) => break SessionEnd::Ended(format!("write error: {e}")),
            },
            Some(msg) = up_rx.recv() => session.handle_up(msg, &up_tx),
            () = sleep_until_opt(timer) => {
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
                    let pending = session.conn.transmit().to_vec();
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        wr.write_all(&pending).await?;
                        wr.flush().await
                    })
                    .await;
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
        if let Some(end) = session.handle_events(&up_tx) {
            // Best effort: let the peer read why (a Reject frame).
            let pending = session.conn.transmit().to_vec();
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                wr.write_all(&pending).await?;
                wr.flush().await
            })
            .await;
            break end;
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

/// Writes what is pending, or flushes when nothing is (TLS keeps records
/// buffered until flushed). One future, so the write half is borrowed once.
pub use devnet_tls::write_or_flush;

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

pub(crate) async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

struct Session {
    conn: Connection,
    streams: HashMap<StreamId, StreamIo>,
    udp: HashMap<u32, UdpAssoc>,
    /// The window credit this session's streams hold (the byte budget).
    credit: Credit,
    /// Dials in progress.
    dialing: usize,
    /// Opens waiting for a dial slot, oldest first: a burst (a browser, a
    /// connection pool warming up) waits its turn instead of failing; the
    /// queue is bounded by the streams a client may have open.
    waiting_dials: VecDeque<(StreamId, SocketAddr)>,
    up_bytes: Arc<Semaphore>,
    /// Streams with a chunk waiting for the output to drain below [`OUTBUF_CAP`].
    blocked_up: VecDeque<StreamId>,
    shared: Arc<Shared>,
    established: bool,
    /// The client's certificate identity, for the logs.
    identity: Option<crate::identity::Issued>,
}

impl Session {
    fn handle_events(&mut self, up_tx: &mpsc::UnboundedSender<Up>) -> Option<SessionEnd> {
        while let Some(event) = self.conn.poll_event() {
            match event {
                Event::Connected { peer } => {
                    self.established = true;
                    let (user, serial) =
                        self.identity.as_ref().map_or(("", ""), |i| (i.user.as_str(), i.serial.as_str()));
                    let by = if self.identity.is_some() { "certificate" } else { "token" };
                    info!(client = %peer, %user, %serial, by, "client authenticated");
                }
                Event::OpenRequested { id, addr } => self.open(id, addr, up_tx),
                Event::Readable { id } => self.forward_down(id),
                Event::Writable { id } => self.retry_up(id),
                Event::Finished { id } => {
                    self.forward_down(id);
                    if let Some(s) = self.streams.get(&id) {
                        let _ = s.down.send(Down::Fin);
                    }
                    self.reap(id);
                }
                Event::Reset { id, message } => {
                    debug!(id, %message, "client reset stream");
                    if let Some(s) = self.forget(id) {
                        s.writer.abort();
                    }
                }
                Event::Datagram { assoc, addr, payload } => self.send_datagram(assoc, addr, &payload, up_tx),
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

    fn open(&mut self, id: StreamId, addr: SocketAddr, up_tx: &mpsc::UnboundedSender<Up>) {
        let target = match self.shared.policy.check(addr.ip()) {
            Ok(ip) => SocketAddr::new(ip, addr.port()),
            Err(denial) => {
                Metrics::add(&self.shared.metrics.streams_denied, 1);
                warn!(id, dst = %addr, reason = %denial, "refused TCP destination");
                self.conn.refuse(id, OpenStatus::Denied, &format!("relay refuses {addr}: {denial}"));
                return;
            }
        };
        if self.dialing >= self.shared.max_dialing {
            Metrics::add(&self.shared.metrics.dials_queued, 1);
            debug!(id, dst = %addr, limit = self.shared.max_dialing, "dial waits for a slot");
            self.waiting_dials.push_back((id, target));
            return;
        }
        self.dial(id, target, up_tx);
    }

    fn dial(&mut self, id: StreamId, target: SocketAddr, up_tx: &mpsc::UnboundedSender<Up>) {
        self.dialing += 1;
        let timeout = self.shared.dial_timeout;
        let up_tx = up_tx.clone();
        tokio::spawn(async move {
            let result = match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
                Ok(Ok(stream)) => Ok(stream),
                Ok(Err(e)) => Err(classify_dial_error(target, &e)),
                Err(_) => Err((OpenStatus::TimedOut, format!("no answer from {target} within {timeout:?}"))),
            };
            let _ = up_tx.send(Up::Dialed { id, result });
        });
    }

    /// A dial ended: the oldest waiting open whose stream the client still
    /// wants takes its slot.
    fn dial_done(&mut self, up_tx: &mpsc::UnboundedSender<Up>) {
        self.dialing -= 1;
        while self.dialing < self.shared.max_dialing
            && let Some((id, target)) = self.waiting_dials.pop_front()
        {
            if self.conn.contains(id) {
                self.dial(id, target, up_tx);
            }
        }
    }

    fn handle_up(&mut self, msg: Up, up_tx: &mpsc::UnboundedSender<Up>) {
        match msg {
            Up::Dialed { id, result: Ok(stream) } => {
                self.dial_done(up_tx);
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
                self.streams.insert(id, spawn_stream_tasks(id, stream, up_tx, &self.up_bytes));
            }
            Up::Dialed { id, result: Err((status, message)) } => {
                self.dial_done(up_tx);
                Metrics::add(&self.shared.metrics.dial_failures, 1);
                debug!(id, ?status, %message, "dial failed");
                self.conn.refuse(id, status, &message);
            }
            Up::Data { id, data } => {
                Metrics::add(&self.shared.metrics.bytes_from_destinations, data.len() as u64);
                if let Some(s) = self.streams.get_mut(&id) {
                    s.pending_up = Some((data, 0));
                    self.retry_up(id);
                } else {
                    self.up_bytes.add_permits(data.len());
                }
            }
            Up::Eof { id } => {
                if let Some(s) = self.streams.get_mut(&id) {
                    if s.pending_up.is_some() {
                        s.eof_pending = true;
                    } else {
                        self.conn.finish(id);
                        self.reap(id);
                    }
                }
            }
            Up::ReadError { id, message } | Up::WriteError { id, message } => {
                if self.forget(id).is_some() {
                    self.conn.reset(id, &message);
                }
            }
            Up::Written { id, n } => {
                Metrics::add(&self.shared.metrics.bytes_to_destinations, n as u64);
                if let Some(s) = self.streams.get_mut(&id) {
                    s.forwarded -= n;
                }
                self.drained(id, n);
                self.reap(id);
            }
            Up::Datagram { assoc, from, payload } => {
                let _ = self.conn.send_datagram(assoc, from, &payload);
            }
            Up::UdpIdle { assoc } => {
                self.udp.remove(&assoc);
            }
        }
    }

    /// Hands bytes the client sent on `id` to the destination: written
    /// straight to the socket when nothing is queued for the writer task and
    /// the socket takes them, otherwise queued for the writer (in order).
    fn forward_down(&mut self, id: StreamId) {
        let Some(s) = self.streams.get_mut(&id) else { return };
        if s.forwarded == 0 {
            loop {
                let (a, _) = self.conn.peek(id);
                if a.is_empty() {
                    break;
                }
                match s.socket.try_write(a) {
                    Ok(n) if n > 0 => {
                        Metrics::add(&self.shared.metrics.bytes_to_destinations, n as u64);
                        self.conn.release(id, n);
                        for (id, increment) in self.credit.drained(id, n) {
                            self.conn.grant(id, increment);
                        }
                    }
                    _ => break,
                }
            }
        }
        let Some(s) = self.streams.get_mut(&id) else { return };
        let (a, b) = self.conn.peek(id);
        let total = a.len() + b.len();
        if total <= s.forwarded {
            return;
        }
        let mut chunk = Vec::with_capacity(total - s.forwarded);
        if s.forwarded < a.len() {
            chunk.extend_from_slice(&a[s.forwarded..]);
            chunk.extend_from_slice(b);
        } else {
            chunk.extend_from_slice(&b[s.forwarded - a.len()..]);
        }
        s.forwarded = total;
        let _ = s.down.send(Down::Data(chunk));
    }

    /// Pushes a pending chunk from a destination into the stream's window.
    fn retry_up(&mut self, id: StreamId) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let Some((data, done)) = &mut s.pending_up else {
            return;
        };
        if self.conn.transmit().len() >= OUTBUF_CAP {
            self.blocked_up.push_back(id);
            return;
        }
        match self.conn.write(id, &data[*done..]) {
            Ok(n) => *done += n,
            Err(_) => return,
        }
        if *done == data.len() {
            self.up_bytes.add_permits(data.len());
            s.pending_up = None;
            s.gate.add_permits(1);
            if s.eof_pending {
                self.conn.finish(id);
                self.reap(id);
            }
        }
    }

    /// Retries chunks held back while the output was above [`OUTBUF_CAP`].
    fn resume_up(&mut self) {
        while self.conn.transmit().len() < OUTBUF_CAP {
            let Some(id) = self.blocked_up.pop_front() else { return };
            self.retry_up(id);
        }
    }

    /// The destination of `id` took `n` bytes: they leave the receive
    /// buffer and the budget grants credit where it is owed.
    fn drained(&mut self, id: StreamId, n: usize) {
        self.conn.release(id, n);
        for (id, increment) in self.credit.drained(id, n) {
            self.conn.grant(id, increment);
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

    fn send_datagram(&mut self, assoc: u32, addr: SocketAddr, payload: &[u8], up_tx: &mpsc::UnboundedSender<Up>) {
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
                warn!(assoc, "UDP association limit reached; datagram dropped");
                return;
            }
            let bind: SocketAddr = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
            let sockets = std::net::UdpSocket::bind(bind).and_then(|s| {
                s.connect(target)?;
                s.set_nonblocking(true)?;
                let sender = s.try_clone()?;
                Ok((sender, UdpSocket::from_std(s)?))
            });
            let (sender, receiver) = match sockets {
                Ok(pair) => pair,
                Err(e) => {
                    warn!(assoc, error = %e, "cannot open UDP socket");
                    return;
                }
            };
            let reader = tokio::spawn(udp_reader(assoc, Arc::new(receiver), up_tx.clone())).abort_handle();
            self.udp.insert(assoc, UdpAssoc { sender, target, reader });
        }
        if let Some(a) = self.udp.get(&assoc) {
            if a.target != target {
                warn!(assoc, dst = %target, first = %a.target, "a datagram for another destination on the same association; dropped");
                return;
            }
            Metrics::add(&self.shared.metrics.datagrams_relayed, 1);
            // UDP semantics: a full socket buffer drops the datagram.
            if let Err(e) = a.sender.send(payload) {
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

fn spawn_stream_tasks(
    id: StreamId,
    stream: TcpStream,
    up_tx: &mpsc::UnboundedSender<Up>,
    up_bytes: &Arc<Semaphore>,
) -> StreamIo {
    let socket = Arc::new(stream);
    let gate = Arc::new(Semaphore::new(1));
    let reader = {
        let (gate, up_tx, socket, up_bytes) = (gate.clone(), up_tx.clone(), socket.clone(), up_bytes.clone());
        tokio::spawn(async move {
            loop {
                let Ok(permit) = gate.acquire().await else { return };
                permit.forget();
                // The buffer exists only while bytes wait: an idle stream holds none.
                let read = loop {
                    if let Err(e) = socket.readable().await {
                        break Err(e);
                    }
                    let Ok(budget) = up_bytes.acquire_many(READ_CHUNK as u32).await else { return };
                    let mut data = vec![0u8; READ_CHUNK];
                    match socket.try_read(&mut data) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => break Err(e),
                        Ok(n) => {
                            // The chunk keeps its own length of the budget until taken.
                            budget.forget();
                            up_bytes.add_permits(READ_CHUNK - n);
                            data.truncate(n);
                            data.shrink_to_fit();
                            break Ok(data);
                        }
                    }
                };
                match read {
                    Ok(data) if data.is_empty() => {
                        let _ = up_tx.send(Up::Eof { id });
                        return;
                    }
                    Ok(data) => {
                        if up_tx.send(Up::Data { id, data }).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = up_tx.send(Up::ReadError { id, message: format!("destination read error: {e}") });
                        return;
                    }
                }
            }
        })
        .abort_handle()
    };
    let (down, mut down_rx) = mpsc::unbounded_channel::<Down>();
    let writer = {
        let (up_tx, socket) = (up_tx.clone(), socket.clone());
        tokio::spawn(async move {
            while let Some(msg) = down_rx.recv().await {
                match msg {
                    Down::Data(data) => {
                        if let Err(e) = write_all_shared(&socket, &data).await {
                            let _ = up_tx.send(Up::WriteError { id, message: format!("destination write error: {e}") });
                            return;
                        }
                        let _ = up_tx.send(Up::Written { id, n: data.len() });
                    }
                    Down::Fin => {
                        let _ = socket2::SockRef::from(&*socket).shutdown(std::net::Shutdown::Write);
                    }
                }
            }
        })
        .abort_handle()
    };
    StreamIo {
        socket,
        down,
        gate,
        up_bytes: up_bytes.clone(),
        pending_up: None,
        eof_pending: false,
        forwarded: 0,
        reader,
        writer,
    }
}

async fn write_all_shared(socket: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        socket.writable().await?;
        match socket.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn udp_reader(assoc: u32, socket: Arc<UdpSocket>, up_tx: mpsc::UnboundedSender<Up>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(UDP_IDLE, socket.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) => {
                if up_tx.send(Up::Datagram { assoc, from, payload: buf[..n].to_vec() }).is_err() {
                    return;
                }
            }
            Ok(Err(e)) => debug!(assoc, error = %e, "UDP receive error"),
            Err(_) => {
                let _ = up_tx.send(Up::UdpIdle { assoc });
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;

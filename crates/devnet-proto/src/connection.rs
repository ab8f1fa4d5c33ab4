//! The connection state machine: handshake, streams, flow control,
//! datagrams and heartbeats, driven by bytes and time.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BufMut;
use bytes::buf::Limit;

use crate::frame::{
    DATA_OVERHEAD, DataHead, DecodeError, Frame, MAX_DATA_PAYLOAD, OpenStatus, RejectCode, data_head, data_head_bytes,
    missing as missing_from_frame,
};
use crate::{MAGIC, PREFACE_LEN, PROTOCOL_VERSION, preface};

/// Written transmit bytes left in place before they are compacted away.
const COMPACT_AFTER: usize = 64 * 1024;

/// Capacity an empty buffer keeps after a burst: a few frames' worth, so
/// steady small traffic does not reallocate.
const KEEP_CAPACITY: usize = 64 * 1024;

/// A stream's id. Clients allocate odd ids in increasing order; ids are never
/// reused within a connection, so late frames for a closed stream are
/// recognised and dropped.
pub type StreamId = u32;

/// Where stream data may go straight from the bytes read, instead of
/// through the stream's receive buffer: the application's own socket or
/// buffer. Each byte is copied once fewer. Only when a stream's buffer is
/// empty is anything offered, so order is kept; what is not taken is
/// buffered and reported with [`Event::Readable`] as usual. Bytes taken
/// count as read: the application grants their credit as it would for
/// bytes it read ([`Connection::credit_consumed`], or its own grants).
pub trait Deliver {
    /// Takes what it can of `data`, the next bytes of stream `id`; returns
    /// how many it took.
    fn deliver(&mut self, id: StreamId, data: &[u8]) -> usize;
}

/// What a [`Deliver`] took, per stream, in the order taken (consecutive
/// takes for one stream summed): to credit once the input is handled.
#[derive(Debug, Default)]
pub struct Taken(Vec<(StreamId, usize)>);

impl Taken {
    /// Counts `n` bytes taken of stream `id`.
    pub fn add(&mut self, id: StreamId, n: usize) {
        match self.0.last_mut() {
            Some((last, sum)) if *last == id => *sum += n,
            _ if n > 0 => self.0.push((id, n)),
            _ => {}
        }
    }

    /// Every stream's count, leaving none (the allocation stays).
    pub fn drain(&mut self) -> impl Iterator<Item = (StreamId, usize)> + '_ {
        self.0.drain(..)
    }
}

/// Delivers nothing: every byte goes through the receive buffers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Buffered;

impl Deliver for Buffered {
    fn deliver(&mut self, _id: StreamId, _data: &[u8]) -> usize {
        0
    }
}

/// Which end of the connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The laptop side: sends `Hello`, opens streams.
    Client,
    /// The relay side: checks the token, answers `Open`.
    Server,
}

/// Tunables. The defaults suit a LAN or a port-forward with tens of ms RTT.
/// Its `Debug` leaves the token out.
#[derive(Clone)]
pub struct Config {
    /// Our name, for the peer's logs (`devnet 0.1.0 on laptop`).
    pub name: String,
    /// Client: the token to present. Server: the token to require.
    pub token: String,
    /// Receive window per stream, in bytes. It bounds memory per stream and
    /// caps one stream's throughput at `window / RTT`: 4 MiB carries
    /// 3.3 Gbit/s at 10 ms.
    pub stream_window: u32,
    /// How often to send a ping when nothing else was sent.
    pub heartbeat_interval: Duration,
    /// Silence after which the peer is declared dead.
    pub dead_after: Duration,
    /// Most streams open at once; more are refused.
    pub max_streams: usize,
    /// Server: what the transport already decided about the client (its
    /// TLS client certificate). The `Hello` keeps its layout: a client
    /// with a certificate sends an empty token.
    pub transport_auth: TransportAuth,
}

/// Server: how the transport under the connection authenticated the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TransportAuth {
    /// Not at all: the `Hello`'s token must match [`Config::token`].
    #[default]
    None,
    /// By a client certificate the relay issued: the token is not checked.
    Authenticated,
    /// Refused (a revoked certificate): the `Hello` is answered with a
    /// `Reject` carrying this message, which tells the user the fix.
    Refused(String),
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Config { name, token, stream_window, heartbeat_interval, dead_after, max_streams, transport_auth } = self;
        f.debug_struct("Config")
            .field("name", name)
            .field("token", &if token.is_empty() { "<empty>" } else { "<redacted>" })
            .field("stream_window", stream_window)
            .field("heartbeat_interval", heartbeat_interval)
            .field("dead_after", dead_after)
            .field("max_streams", max_streams)
            .field("transport_auth", transport_auth)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            name: format!("devnet {}", env!("CARGO_PKG_VERSION")),
            token: String::new(),
            stream_window: 4 * 1024 * 1024,
            heartbeat_interval: Duration::from_secs(1),
            dead_after: Duration::from_secs(4),
            max_streams: 16 * 1024,
            transport_auth: TransportAuth::None,
        }
    }
}

/// Something the application must act on. Drained with
/// [`Connection::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The handshake completed; `peer` is the other side's name.
    Connected { peer: String },
    /// Server: the client asks to dial `addr`. Answer with
    /// [`Connection::accept`] or [`Connection::refuse`].
    OpenRequested { id: StreamId, addr: SocketAddr },
    /// Client: the relay connected stream `id`.
    Opened { id: StreamId },
    /// Client: the relay could not connect stream `id`; it is gone.
    OpenFailed { id: StreamId, status: OpenStatus, message: String },
    /// Bytes arrived on a stream whose receive buffer was empty. The
    /// application reads what [`Connection::peek`] shows; more bytes
    /// arriving before it has read them all are not announced again, so
    /// an application that stops short (its destination is full) resumes
    /// on its own signal, not on this one.
    Readable { id: StreamId },
    /// The stream's send window opened after being exhausted.
    Writable { id: StreamId },
    /// The peer will send no more bytes on the stream.
    Finished { id: StreamId },
    /// The peer aborted the stream; it is gone.
    Reset { id: StreamId, message: String },
    /// A UDP datagram for association `assoc`.
    Datagram { assoc: u32, addr: SocketAddr, payload: Vec<u8> },
    /// The peer is shutting down and accepts no new streams.
    GoAway { message: String },
    /// The connection is over. Flush [`Connection::transmit`] (it may hold a
    /// `Reject` for the peer), then close the transport.
    Closed { error: ConnectionError },
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    #[error("the peer is not speaking the devnet protocol (bad preface): check the address points at a devnet relay")]
    NotDevnet,
    #[error("{}", version_mismatch_message(*role, *ours, *theirs))]
    VersionMismatch { role: Role, ours: u16, theirs: u16 },
    #[error("the relay refused the connection ({code:?}): {message}")]
    Rejected { code: RejectCode, message: String },
    #[error("the client presented a wrong or missing token")]
    Unauthorized,
    /// The relay refused this client's identity; the message says why and what to do.
    #[error("{0}")]
    IdentityRefused(String),
    #[error("malformed frame from peer: {0}")]
    Decode(#[from] DecodeError),
    #[error("protocol violation by peer: {0}")]
    Violation(String),
    #[error("nothing heard from the peer for {0:?}: the connection is dead or black-holed")]
    HeartbeatTimeout(Duration),
    #[error("closed locally: {0}")]
    Local(String),
}

fn version_mismatch_message(role: Role, ours: u16, theirs: u16) -> String {
    match role {
        Role::Client if theirs < ours => format!(
            "the relay speaks devnet protocol v{theirs} but this client speaks v{ours}: upgrade the relay (`devnet relay install`)"
        ),
        Role::Client => format!(
            "the relay speaks devnet protocol v{theirs} but this client speaks v{ours}: upgrade devnet on this machine"
        ),
        Role::Server => format!(
            "the client speaks devnet protocol v{theirs} but this relay speaks v{ours}: use a devnet client of the same release as the relay"
        ),
    }
}

/// Misuse of a stream by the local application.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("stream {0} does not exist (closed, reset or never opened)")]
    Unknown(StreamId),
    #[error("stream {0} is not open yet")]
    NotOpen(StreamId),
    #[error("stream {0} was already finished for sending")]
    Finished(StreamId),
    #[error("the connection is not established")]
    NotEstablished,
    #[error("too many open streams (limit {0})")]
    TooMany(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitPreface,
    AwaitHandshake,
    Established,
    Closed,
}

#[derive(Debug)]
struct Stream {
    open: bool,
    /// Bytes we may still send before the peer grants more.
    send_credit: u64,
    /// Bytes the peer may still send before we grant more.
    recv_allowance: u64,
    /// Bytes the application consumed but we have not yet granted back.
    recv_ungranted: u32,
    recv: VecDeque<u8>,
    local_fin: bool,
    remote_fin: bool,
}

impl Stream {
    fn new(open: bool, send_credit: u32, recv_window: u32) -> Self {
        Self {
            open,
            send_credit: u64::from(send_credit),
            recv_allowance: u64::from(recv_window),
            recv_ungranted: 0,
            recv: VecDeque::new(),
            local_fin: false,
            remote_fin: false,
        }
    }
    fn done(&self) -> bool {
        self.local_fin && self.remote_fin && self.recv.is_empty()
    }
}

/// One end of a devnet connection. See the crate docs for the driving loop.
#[derive(Debug)]
pub struct Connection {
    role: Role,
    config: Config,
    state: State,
    inbuf: Vec<u8>,
    /// The `Data` frame whose head was handled and whose payload is still
    /// arriving: its stream and how many payload bytes are to come.
    body: Option<DataHead>,
    outbuf: Vec<u8>,
    out_start: usize,
    events: VecDeque<Event>,
    streams: HashMap<StreamId, Stream>,
    next_stream_id: StreamId,
    last_peer_stream_id: StreamId,
    last_recv: Instant,
    next_ping: Instant,
    ping_sent: Option<(u64, Instant)>,
    nonce: u64,
    rtt: Option<Duration>,
    peer_going_away: bool,
    stats: Stats,
}

/// Counters for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub streams_opened: u64,
    pub datagrams_in: u64,
    pub datagrams_out: u64,
}

impl Connection {
    /// Starts a client connection: the preface and `Hello` are queued at once.
    pub fn client(config: Config, now: Instant) -> Self {
        let mut conn = Self::new(Role::Client, config, now);
        conn.outbuf.extend_from_slice(&preface());
        let (token, name) = (conn.config.token.clone(), conn.config.name.clone());
        conn.queue(&Frame::Hello { token: &token, client: &name });
        conn
    }

    /// Starts a server connection that waits for the client's preface.
    pub fn server(config: Config, now: Instant) -> Self {
        Self::new(Role::Server, config, now)
    }

    fn new(role: Role, config: Config, now: Instant) -> Self {
        Self {
            role,
            state: State::AwaitPreface,
            inbuf: Vec::new(),
            body: None,
            outbuf: Vec::new(),
            out_start: 0,
            events: VecDeque::new(),
            streams: HashMap::new(),
            next_stream_id: 1,
            last_peer_stream_id: 0,
            last_recv: now,
            next_ping: now + config.heartbeat_interval,
            ping_sent: None,
            nonce: 0,
            rtt: None,
            peer_going_away: false,
            stats: Stats::default(),
            config,
        }
    }

    /// Whether the handshake completed and the connection is not closed.
    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// Whether the connection is over.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Whether the peer announced it is going away.
    pub fn peer_going_away(&self) -> bool {
        self.peer_going_away
    }

    /// The last measured heartbeat round-trip time.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// Counters since the connection started.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether stream `id` is still tracked (not reset, not finished and drained both ways).
    pub fn contains(&self, id: StreamId) -> bool {
        self.streams.contains_key(&id)
    }

    /// Number of streams currently tracked.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes waiting to be written to the transport.
    pub fn transmit(&self) -> &[u8] {
        &self.outbuf[self.out_start..]
    }

    /// Marks `n` bytes of [`transmit`](Self::transmit) as written.
    ///
    /// The written prefix is dropped when it is at least [`COMPACT_AFTER`]
    /// and larger than what remains, so each move copies fewer bytes than
    /// were written since the last one (and never more than the queue holds,
    /// which the shells bound).
    pub fn advance_transmit(&mut self, n: usize) {
        self.out_start += n;
        debug_assert!(self.out_start <= self.outbuf.len());
        if self.out_start == self.outbuf.len() {
            self.outbuf.clear();
            self.out_start = 0;
        } else if self.out_start >= COMPACT_AFTER && self.out_start * 2 > self.outbuf.len() {
            self.outbuf.drain(..self.out_start);
            self.out_start = 0;
        }
    }

    /// Bytes of buffer capacity held: the transmit and input buffers and
    /// every stream's receive buffer (what [`handle_timeout`](Self::handle_timeout)
    /// gives back once they drain).
    pub fn buffered_capacity(&self) -> usize {
        self.outbuf.capacity() + self.inbuf.capacity() + self.streams.values().map(|s| s.recv.capacity()).sum::<usize>()
    }

    /// Gives back the capacity a burst left in empty buffers: a drained
    /// transmit queue, input buffer or stream receive buffer keeps at most
    /// [`KEEP_CAPACITY`], so a long session's memory follows its current
    /// traffic rather than its largest burst.
    fn release_idle_capacity(&mut self) {
        if self.out_start == self.outbuf.len() && self.outbuf.capacity() > KEEP_CAPACITY {
            self.outbuf.clear();
            self.out_start = 0;
            self.outbuf.shrink_to(KEEP_CAPACITY);
        }
        if self.inbuf.is_empty() && self.inbuf.capacity() > KEEP_CAPACITY {
            self.inbuf.shrink_to(KEEP_CAPACITY);
        }
        for stream in self.streams.values_mut() {
            // Empty, or holding a small part of what a larger burst grew it to.
            if stream.recv.capacity() > 4 * stream.recv.len() + KEEP_CAPACITY {
                stream.recv.shrink_to(KEEP_CAPACITY);
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Closed {
            return None;
        }
        Some(self.next_ping.min(self.last_recv + self.config.dead_after))
    }

    /// Advances timers: sends heartbeats and declares a silent peer dead.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        let silent = now.saturating_duration_since(self.last_recv);
        if silent >= self.config.dead_after {
            self.close_with(ConnectionError::HeartbeatTimeout(silent), None);
            return;
        }
        if now >= self.next_ping {
            // Once per heartbeat interval: cheap, and a burst's buffers are
            // back within a second or two of it ending.
            self.release_idle_capacity();
            if self.state == State::Established {
                self.nonce += 1;
                self.ping_sent = Some((self.nonce, now));
                self.queue(&Frame::Ping { nonce: self.nonce });
            }
            self.next_ping = now + self.config.heartbeat_interval;
        }
    }

    /// Feeds bytes read from the transport.
    ///
    /// On error the connection is closed, a [`Event::Closed`] is queued and a
    /// `Reject` for the peer may be waiting in [`transmit`](Self::transmit).
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) -> Result<(), ConnectionError> {
        self.handle_input_with(bytes, now, &mut Buffered)
    }

    /// [`handle_input`](Self::handle_input), offering stream data to
    /// `deliver` first (see [`Deliver`]).
    pub fn handle_input_with(
        &mut self,
        bytes: &[u8],
        now: Instant,
        deliver: &mut dyn Deliver,
    ) -> Result<(), ConnectionError> {
        if self.state == State::Closed {
            return Ok(());
        }
        self.last_recv = now;
        self.stats.bytes_in += bytes.len() as u64;
        match self.take_input(bytes, now, deliver) {
            Ok(()) => Ok(()),
            Err(e) => {
                let reject = match &e {
                    ConnectionError::NotDevnet | ConnectionError::Decode(_) | ConnectionError::Violation(_) => {
                        Some(RejectCode::ProtocolViolation)
                    }
                    ConnectionError::VersionMismatch { .. } => Some(RejectCode::VersionMismatch),
                    ConnectionError::Unauthorized | ConnectionError::IdentityRefused(_) => {
                        Some(RejectCode::Unauthorized)
                    }
                    _ => None,
                };
                self.close_with(e.clone(), reject);
                Err(e)
            }
        }
    }

    /// Decodes frames straight from `bytes`: only a frame cut by the end of
    /// one read is copied, into `inbuf`, and completed from the next read
    /// with just the bytes it lacks. Copying every read into `inbuf` first
    /// was one pass over every byte received (a bulk stream's reads end
    /// mid-frame almost every time, so "only when `inbuf` is empty" would not
    /// have saved it). A cut `Data` frame is not copied at all once its head
    /// is in: its payload goes to its stream as it arrives (`body`).
    fn take_input(&mut self, mut bytes: &[u8], now: Instant, deliver: &mut dyn Deliver) -> Result<(), ConnectionError> {
        if self.state == State::AwaitPreface {
            // The preface is not a frame: it goes through the buffer, once.
            self.inbuf.extend_from_slice(bytes);
            return self.process_input(now, deliver);
        }
        loop {
            if bytes.is_empty() || self.state == State::Closed {
                return Ok(());
            }
            if let Some(body) = self.body {
                let (chunk, rest) = bytes.split_at(body.len.min(bytes.len()));
                bytes = rest;
                self.body = (chunk.len() < body.len).then_some(DataHead { len: body.len - chunk.len(), ..body });
                self.stream_data(body.id, chunk, deliver);
            } else if !self.inbuf.is_empty() {
                let (head, rest) = bytes.split_at(missing_from_frame(&self.inbuf).min(bytes.len()));
                self.inbuf.extend_from_slice(head);
                bytes = rest;
                self.process_input(now, deliver)?;
            } else {
                let (consumed, result) = self.decode_frames(bytes, now, deliver);
                if self.state != State::Closed {
                    self.inbuf.extend_from_slice(&bytes[consumed..]);
                }
                return result;
            }
        }
    }

    /// Handles the frames in `inbuf` and keeps what is left of it.
    fn process_input(&mut self, now: Instant, deliver: &mut dyn Deliver) -> Result<(), ConnectionError> {
        // Frames borrow from the input buffer while handlers need `&mut self`:
        // take the buffer out for the duration and put the unread tail back.
        let mut inbuf = std::mem::take(&mut self.inbuf);
        let (consumed, result) = self.decode_frames(&inbuf, now, deliver);
        inbuf.drain(..consumed);
        self.inbuf = inbuf;
        result
    }

    /// Handles every whole frame (and the preface) at the start of `inbuf`;
    /// returns how many bytes they took.
    fn decode_frames(
        &mut self,
        inbuf: &[u8],
        now: Instant,
        deliver: &mut dyn Deliver,
    ) -> (usize, Result<(), ConnectionError>) {
        let mut consumed = 0;
        let result = loop {
            if self.state == State::Closed {
                break Ok(());
            }
            if self.state == State::AwaitPreface {
                let have = &inbuf[consumed..];
                let n = have.len().min(MAGIC.len());
                // A peer that is not devnet may never send eight bytes: reject
                // as soon as what arrived differs from the magic.
                if have[..n] != MAGIC[..n] {
                    break Err(ConnectionError::NotDevnet);
                }
                if have.len() < PREFACE_LEN {
                    break Ok(());
                }
                let theirs = u16::from_be_bytes([have[MAGIC.len()], have[MAGIC.len() + 1]]);
                if theirs != PROTOCOL_VERSION {
                    break Err(ConnectionError::VersionMismatch { role: self.role, ours: PROTOCOL_VERSION, theirs });
                }
                consumed += PREFACE_LEN;
                self.state = State::AwaitHandshake;
                continue;
            }
            match Frame::decode(&inbuf[consumed..]) {
                Ok(Some((frame, used))) => {
                    consumed += used;
                    if let Err(e) = self.handle_frame(frame, now, deliver) {
                        break Err(e);
                    }
                }
                Ok(None) => match data_head(&inbuf[consumed..]) {
                    // Refused at its head, as it would be whole: waiting for
                    // the rest would ask for no more bytes (see `missing`).
                    Ok(Some(_)) if self.state != State::Established => {
                        break Err(ConnectionError::Violation("expected a handshake frame, got Data".into()));
                    }
                    // The rest of the input is a cut `Data` frame: its
                    // payload so far goes to the stream now, not to `inbuf`.
                    Ok(Some(head)) => {
                        let payload = &inbuf[consumed + DATA_OVERHEAD..];
                        consumed = inbuf.len();
                        if let Err(e) = self.accept_data(head.id, head.len) {
                            break Err(e);
                        }
                        self.body = Some(DataHead { len: head.len - payload.len(), ..head });
                        self.stream_data(head.id, payload, deliver);
                        break Ok(());
                    }
                    Ok(_) => break Ok(()),
                    Err(e) => break Err(e.into()),
                },
                Err(e) => break Err(e.into()),
            }
        };
        (consumed, result)
    }

    fn handle_frame(
        &mut self,
        frame: Frame<'_>,
        now: Instant,
        deliver: &mut dyn Deliver,
    ) -> Result<(), ConnectionError> {
        if self.state == State::AwaitHandshake {
            return self.handle_handshake(frame);
        }
        match frame {
            Frame::Hello { .. } | Frame::Welcome { .. } => {
                return Err(ConnectionError::Violation("handshake frame after the handshake".into()));
            }
            Frame::Reject { code, message } => {
                self.close_with(ConnectionError::Rejected { code, message: message.to_owned() }, None);
            }
            Frame::Open { id, addr, window } => {
                if self.role != Role::Server {
                    return Err(ConnectionError::Violation("the relay may not open streams".into()));
                }
                if id <= self.last_peer_stream_id || id % 2 == 0 {
                    return Err(ConnectionError::Violation(format!("stream id {id} reused or not a client id")));
                }
                self.last_peer_stream_id = id;
                if self.streams.len() >= self.config.max_streams {
                    let message = format!("relay stream limit of {} reached", self.config.max_streams);
                    self.queue(&Frame::OpenResult {
                        id,
                        status: OpenStatus::Unreachable,
                        window: 0,
                        message: &message,
                    });
                    return Ok(());
                }
                if self.peer_going_away {
                    return Ok(());
                }
                // No window until the relay accepts: bytes sent before then
                // are a violation, not something the relay must hold.
                self.streams.insert(id, Stream::new(false, window, 0));
                self.events.push_back(Event::OpenRequested { id, addr });
            }
            Frame::OpenResult { id, status, window, message } => {
                if self.role != Role::Client {
                    return Err(ConnectionError::Violation("only the relay answers Open".into()));
                }
                let Some(stream) = self.streams.get_mut(&id) else {
                    return Ok(());
                };
                if stream.open {
                    return Err(ConnectionError::Violation(format!("second OpenResult for stream {id}")));
                }
                if status == OpenStatus::Connected {
                    stream.open = true;
                    stream.send_credit = u64::from(window);
                    self.events.push_back(Event::Opened { id });
                } else {
                    self.streams.remove(&id);
                    self.events.push_back(Event::OpenFailed { id, status, message: message.to_owned() });
                }
            }
            Frame::Data { id, payload } => {
                self.accept_data(id, payload.len())?;
                self.stream_data(id, payload, deliver);
            }
            Frame::Window { id, increment } => {
                let Some(stream) = self.streams.get_mut(&id) else {
                    return Ok(());
                };
                let was_blocked = stream.send_credit == 0;
                stream.send_credit = stream.send_credit.saturating_add(u64::from(increment));
                if was_blocked && increment > 0 {
                    self.events.push_back(Event::Writable { id });
                }
            }
            Frame::Fin { id } => {
                let Some(stream) = self.streams.get_mut(&id) else {
                    return Ok(());
                };
                stream.remote_fin = true;
                self.events.push_back(Event::Finished { id });
                self.reap(id);
            }
            Frame::Reset { id, message } => {
                if self.streams.remove(&id).is_some() {
                    self.events.push_back(Event::Reset { id, message: message.to_owned() });
                }
            }
            Frame::Datagram { assoc, addr, payload } => {
                self.stats.datagrams_in += 1;
                self.events.push_back(Event::Datagram { assoc, addr, payload: payload.to_vec() });
            }
            Frame::Ping { nonce } => self.queue(&Frame::Pong { nonce }),
            Frame::Pong { nonce } => {
                if let Some((sent, at)) = self.ping_sent
                    && sent == nonce
                {
                    self.rtt = Some(now.saturating_duration_since(at));
                    self.ping_sent = None;
                }
            }
            Frame::GoAway { message } => {
                self.peer_going_away = true;
                self.events.push_back(Event::GoAway { message: message.to_owned() });
            }
        }
        Ok(())
    }

    /// Checks a `Data` frame's head against its stream before any of its
    /// payload is taken: no data after FIN, none beyond the window. The
    /// whole payload counts against the window at once.
    fn accept_data(&mut self, id: StreamId, len: usize) -> Result<(), ConnectionError> {
        let Some(stream) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        if stream.remote_fin {
            return Err(ConnectionError::Violation(format!("data after FIN on stream {id}")));
        }
        let len = len as u64;
        if len > stream.recv_allowance {
            return Err(ConnectionError::Violation(format!(
                "stream {id} sent {len} bytes with only {} of window left",
                stream.recv_allowance
            )));
        }
        stream.recv_allowance -= len;
        Ok(())
    }

    /// The next payload bytes of stream `id` (all or part of a `Data`
    /// frame that [`accept_data`](Self::accept_data) let in): straight to
    /// the application while nothing waits before them, else buffered. A
    /// stream that is gone (reset, or never known) drops them.
    fn stream_data(&mut self, id: StreamId, payload: &[u8], deliver: &mut dyn Deliver) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let was_empty = stream.recv.is_empty();
        let taken = if was_empty { deliver.deliver(id, payload).min(payload.len()) } else { 0 };
        let rest = &payload[taken..];
        stream.recv.extend(rest);
        // Once per filling of the buffer: a frame that comes in four reads
        // would otherwise announce itself four times.
        if was_empty && !rest.is_empty() {
            self.events.push_back(Event::Readable { id });
        }
    }

    fn handle_handshake(&mut self, frame: Frame<'_>) -> Result<(), ConnectionError> {
        match (self.role, frame) {
            (Role::Server, Frame::Hello { token, client }) => {
                match &self.config.transport_auth {
                    TransportAuth::Authenticated => {}
                    TransportAuth::Refused(why) => return Err(ConnectionError::IdentityRefused(why.clone())),
                    TransportAuth::None => {
                        if !constant_time_eq(token.as_bytes(), self.config.token.as_bytes())
                            || self.config.token.is_empty()
                        {
                            return Err(ConnectionError::Unauthorized);
                        }
                    }
                }
                self.outbuf.extend_from_slice(&preface());
                let name = self.config.name.clone();
                let heartbeat_ms = u32::try_from(self.config.heartbeat_interval.as_millis()).unwrap_or(u32::MAX);
                self.queue(&Frame::Welcome { server: &name, heartbeat_ms });
                self.state = State::Established;
                self.events.push_back(Event::Connected { peer: client.to_owned() });
                Ok(())
            }
            (Role::Client, Frame::Welcome { server, .. }) => {
                self.state = State::Established;
                self.events.push_back(Event::Connected { peer: server.to_owned() });
                Ok(())
            }
            (_, Frame::Reject { code, message }) => {
                self.close_with(ConnectionError::Rejected { code, message: message.to_owned() }, None);
                Ok(())
            }
            (_, other) => {
                Err(ConnectionError::Violation(format!("expected a handshake frame, got {}", frame_name(&other))))
            }
        }
    }

    // ---- application API -------------------------------------------------

    /// Client: asks the relay to dial `addr` over TCP. The stream is usable
    /// once [`Event::Opened`] arrives.
    pub fn open(&mut self, addr: SocketAddr) -> Result<StreamId, StreamError> {
        if self.role != Role::Client || self.state != State::Established || self.peer_going_away {
            return Err(StreamError::NotEstablished);
        }
        if self.streams.len() >= self.config.max_streams {
            return Err(StreamError::TooMany(self.config.max_streams));
        }
        let id = self.next_stream_id;
        self.next_stream_id += 2;
        self.streams.insert(id, Stream::new(false, 0, self.config.stream_window));
        self.stats.streams_opened += 1;
        let window = self.config.stream_window;
        self.queue(&Frame::Open { id, addr, window });
        Ok(id)
    }

    /// Server: the dial for stream `id` succeeded; the client may send a
    /// full [`Config::stream_window`].
    pub fn accept(&mut self, id: StreamId) -> Result<(), StreamError> {
        self.accept_with_window(id, self.config.stream_window)
    }

    /// Server: the dial for stream `id` succeeded; the client may send
    /// `window` bytes (possibly none) until [`grant`](Self::grant) allows more.
    /// For a relay that shares a byte budget among its streams.
    pub fn accept_with_window(&mut self, id: StreamId, window: u32) -> Result<(), StreamError> {
        let stream = self.streams.get_mut(&id).ok_or(StreamError::Unknown(id))?;
        stream.open = true;
        stream.recv_allowance = u64::from(window);
        self.stats.streams_opened += 1;
        self.queue(&Frame::OpenResult { id, status: OpenStatus::Connected, window, message: "" });
        Ok(())
    }

    /// Lets the peer send `increment` more bytes on `id`. With
    /// [`release`](Self::release), the application decides the window itself.
    pub fn grant(&mut self, id: StreamId, increment: u32) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        if increment == 0 || stream.remote_fin {
            return;
        }
        stream.recv_allowance += u64::from(increment);
        self.queue(&Frame::Window { id, increment });
    }

    /// Like [`consume`](Self::consume), but grants no credit back: the
    /// application grants it with [`grant`](Self::grant) when it sees fit.
    pub fn release(&mut self, id: StreamId, n: usize) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let n = n.min(stream.recv.len());
        stream.recv.drain(..n);
        // The allocation stays for the stream's next frames: a bulk stream
        // drains to empty on most writes, and freeing it each time made every
        // turn allocate and regrow it, copying the bytes at each doubling.
        // The heartbeat gives back what a stream no longer uses
        // (`release_idle_capacity`).
        self.reap(id);
    }

    /// Server: the dial for stream `id` failed or was denied; the stream is gone.
    pub fn refuse(&mut self, id: StreamId, status: OpenStatus, message: &str) {
        if self.streams.remove(&id).is_some() {
            self.queue(&Frame::OpenResult { id, status, window: 0, message });
        }
    }

    /// How many bytes [`write`](Self::write) would accept on `id` now.
    pub fn send_capacity(&self, id: StreamId) -> usize {
        self.streams
            .get(&id)
            .filter(|s| s.open && !s.local_fin)
            .map_or(0, |s| usize::try_from(s.send_credit).unwrap_or(usize::MAX))
    }

    /// Queues up to the stream's send window of `data`; returns how much was taken.
    pub fn write(&mut self, id: StreamId, data: &[u8]) -> Result<usize, StreamError> {
        let stream = sending(&mut self.streams, id)?;
        let n = data.len().min(usize::try_from(stream.send_credit).unwrap_or(usize::MAX));
        stream.send_credit -= n as u64;
        self.outbuf.reserve(n + n.div_ceil(MAX_DATA_PAYLOAD) * DATA_OVERHEAD);
        for chunk in data[..n].chunks(MAX_DATA_PAYLOAD) {
            Frame::Data { id, payload: chunk }.encode(&mut self.outbuf);
        }
        self.stats.bytes_out += n as u64;
        Ok(n)
    }

    /// [`write`](Self::write), with the payload written in place: `fill`
    /// appends the bytes to the transmit queue itself, at most `max` of
    /// them (fewer where the send window or a frame's limit is smaller:
    /// the [`Limit`] says), and the frame's head is written around them.
    /// A relay reads a destination socket straight into the frame this
    /// way, where reading into a buffer of its own and calling `write`
    /// copied every byte once more. Returns how many bytes `fill` appended
    /// (none: no frame is sent) and what `fill` returned (an I/O result).
    /// `fill` is called even when nothing fits (its limit is then 0): check
    /// [`send_capacity`](Self::send_capacity) first.
    pub fn write_with<R>(
        &mut self,
        id: StreamId,
        max: usize,
        fill: impl FnOnce(&mut Limit<&mut Vec<u8>>) -> R,
    ) -> Result<(usize, R), StreamError> {
        let stream = sending(&mut self.streams, id)?;
        let room = max.min(MAX_DATA_PAYLOAD).min(usize::try_from(stream.send_credit).unwrap_or(usize::MAX));
        let head_at = self.outbuf.len();
        // Room for all of it up front: a reader fills spare capacity, and
        // would stop at its end.
        self.outbuf.reserve(DATA_OVERHEAD + room);
        self.outbuf.extend_from_slice(&[0; DATA_OVERHEAD]);
        let result = fill(&mut (&mut self.outbuf).limit(room));
        let n = (self.outbuf.len().checked_sub(head_at + DATA_OVERHEAD))
            .filter(|&n| n <= room)
            .expect("`fill` only appends, within its limit");
        if n == 0 {
            self.outbuf.truncate(head_at);
            return Ok((0, result));
        }
        self.outbuf[head_at..head_at + DATA_OVERHEAD].copy_from_slice(&data_head_bytes(id, n));
        stream.send_credit -= n as u64;
        self.stats.bytes_out += n as u64;
        Ok((n, result))
    }

    /// Bytes buffered for the application on `id`, as two slices (a ring).
    pub fn peek(&self, id: StreamId) -> (&[u8], &[u8]) {
        self.streams.get(&id).map_or((&[], &[]), |s| s.recv.as_slices())
    }

    /// Number of bytes buffered for the application on `id`.
    pub fn readable(&self, id: StreamId) -> usize {
        self.streams.get(&id).map_or(0, |s| s.recv.len())
    }

    /// Whether the peer finished `id` and every byte was read.
    pub fn is_read_closed(&self, id: StreamId) -> bool {
        self.streams.get(&id).is_none_or(|s| s.remote_fin && s.recv.is_empty())
    }

    /// Marks `n` buffered bytes of `id` as consumed and grants the peer
    /// credit in batches of a quarter window, so credit frames stay rare.
    pub fn consume(&mut self, id: StreamId, n: usize) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let n = n.min(stream.recv.len());
        stream.recv.drain(..n);
        self.credit_consumed(id, n);
    }

    /// Counts `n` bytes of `id` the application took (read, or taken by a
    /// [`Deliver`]) toward the peer's credit, granted in batches of a
    /// quarter window as with [`consume`](Self::consume).
    pub fn credit_consumed(&mut self, id: StreamId, n: usize) {
        let threshold = self.config.stream_window / 4;
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        stream.recv_ungranted = stream.recv_ungranted.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        if stream.recv_ungranted >= threshold && !stream.remote_fin {
            let increment = std::mem::take(&mut stream.recv_ungranted);
            stream.recv_allowance += u64::from(increment);
            self.queue(&Frame::Window { id, increment });
        }
        self.reap(id);
    }

    /// Copies buffered bytes of `id` into `buf` and consumes them.
    pub fn read(&mut self, id: StreamId, buf: &mut [u8]) -> usize {
        let (a, b) = self.peek(id);
        let n1 = a.len().min(buf.len());
        buf[..n1].copy_from_slice(&a[..n1]);
        let n2 = b.len().min(buf.len() - n1);
        buf[n1..n1 + n2].copy_from_slice(&b[..n2]);
        self.consume(id, n1 + n2);
        n1 + n2
    }

    /// Half-closes `id`: no more bytes will be written.
    pub fn finish(&mut self, id: StreamId) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        if stream.local_fin {
            return;
        }
        stream.local_fin = true;
        self.queue(&Frame::Fin { id });
        self.reap(id);
    }

    /// Aborts `id` in both directions.
    pub fn reset(&mut self, id: StreamId, message: &str) {
        if self.streams.remove(&id).is_some() {
            self.queue(&Frame::Reset { id, message });
        }
    }

    /// Sends a UDP datagram on association `assoc`.
    pub fn send_datagram(&mut self, assoc: u32, addr: SocketAddr, payload: &[u8]) -> Result<(), StreamError> {
        if self.state != State::Established {
            return Err(StreamError::NotEstablished);
        }
        let payload = &payload[..payload.len().min(MAX_DATA_PAYLOAD)];
        self.stats.datagrams_out += 1;
        self.queue(&Frame::Datagram { assoc, addr, payload });
        Ok(())
    }

    /// Tells the peer we are shutting down: no new streams will be accepted.
    pub fn go_away(&mut self, message: &str) {
        if self.state == State::Established {
            self.queue(&Frame::GoAway { message });
        }
    }

    /// Closes the connection locally, telling the peer why.
    pub fn close(&mut self, message: &str) {
        self.close_with(ConnectionError::Local(message.to_owned()), Some(RejectCode::Unavailable));
    }

    /// Server: ends a session whose client is no longer admitted (its
    /// certificate was revoked): the client is told `message` as an
    /// `Unauthorized` rejection, which it does not retry.
    pub fn refuse_identity(&mut self, message: &str) {
        self.close_with(ConnectionError::IdentityRefused(message.to_owned()), Some(RejectCode::Unauthorized));
    }

    // ---- internals -------------------------------------------------------

    fn queue(&mut self, frame: &Frame<'_>) {
        frame.encode(&mut self.outbuf);
    }

    fn reap(&mut self, id: StreamId) {
        if self.streams.get(&id).is_some_and(Stream::done) {
            self.streams.remove(&id);
        }
    }

    fn close_with(&mut self, error: ConnectionError, reject: Option<RejectCode>) {
        if self.state == State::Closed {
            return;
        }
        if let Some(code) = reject {
            // The peer may not have seen our preface yet (server before a
            // good Hello): send it so the Reject can be parsed.
            if self.role == Role::Server && self.state != State::Established {
                self.outbuf.extend_from_slice(&preface());
            }
            let message = error.to_string();
            self.queue(&Frame::Reject { code, message: &message });
        }
        self.state = State::Closed;
        self.streams.clear();
        self.events.push_back(Event::Closed { error });
    }
}

/// Stream `id`, if the application may send on it: open, not finished.
/// Takes the map, not the connection, so the transmit queue can be
/// written while the stream is held.
fn sending(streams: &mut HashMap<StreamId, Stream>, id: StreamId) -> Result<&mut Stream, StreamError> {
    let stream = streams.get_mut(&id).ok_or(StreamError::Unknown(id))?;
    if !stream.open {
        return Err(StreamError::NotOpen(id));
    }
    if stream.local_fin {
        return Err(StreamError::Finished(id));
    }
    Ok(stream)
}

fn frame_name(frame: &Frame<'_>) -> &'static str {
    match frame {
        Frame::Hello { .. } => "Hello",
        Frame::Welcome { .. } => "Welcome",
        Frame::Reject { .. } => "Reject",
        Frame::Open { .. } => "Open",
        Frame::OpenResult { .. } => "OpenResult",
        Frame::Data { .. } => "Data",
        Frame::Window { .. } => "Window",
        Frame::Fin { .. } => "Fin",
        Frame::Reset { .. } => "Reset",
        Frame::Datagram { .. } => "Datagram",
        Frame::Ping { .. } => "Ping",
        Frame::Pong { .. } => "Pong",
        Frame::GoAway { .. } => "GoAway",
    }
}

/// Compares secrets without an early exit, so timing reveals nothing of how
/// much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;

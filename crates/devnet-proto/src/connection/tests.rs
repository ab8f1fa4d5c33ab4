//! Connection tests: two state machines wired back to back, a virtual clock.

use super::*;

const TOKEN: &str = "correct horse";

fn config(token: &str) -> Config {
    Config { token: token.into(), stream_window: 64 * 1024, ..Config::default() }
}

struct Pair {
    client: Connection,
    server: Connection,
    now: Instant,
}

impl Pair {
    fn new(client_token: &str) -> Self {
        let now = Instant::now();
        Self {
            client: Connection::client(config(client_token), now),
            server: Connection::server(config(TOKEN), now),
            now,
        }
    }

    fn established() -> Self {
        let mut pair = Self::new(TOKEN);
        pair.pump();
        assert!(pair.client.is_established() && pair.server.is_established());
        assert!(matches!(pair.client.poll_event(), Some(Event::Connected { .. })));
        assert!(matches!(pair.server.poll_event(), Some(Event::Connected { .. })));
        pair
    }

    /// Moves bytes both ways until neither side has anything to send.
    fn pump(&mut self) {
        loop {
            let c = self.client.transmit().to_vec();
            self.client.advance_transmit(c.len());
            let s = self.server.transmit().to_vec();
            self.server.advance_transmit(s.len());
            if c.is_empty() && s.is_empty() {
                return;
            }
            if !c.is_empty() {
                let _ = self.server.handle_input(&c, self.now);
            }
            if !s.is_empty() {
                let _ = self.client.handle_input(&s, self.now);
            }
        }
    }

    fn events(conn: &mut Connection) -> Vec<Event> {
        std::iter::from_fn(|| conn.poll_event()).collect()
    }

    fn open(&mut self, addr: &str) -> StreamId {
        let id = self.client.open(addr.parse().expect("addr")).expect("open");
        self.pump();
        let Some(Event::OpenRequested { id: sid, .. }) = self.server.poll_event() else { panic!("no open request") };
        assert_eq!(sid, id);
        self.server.accept(id).expect("accept");
        self.pump();
        assert_eq!(self.client.poll_event(), Some(Event::Opened { id }));
        id
    }
}

#[test]
fn handshake_with_the_right_token_connects() {
    let pair = Pair::established();
    assert_eq!(pair.client.stream_count(), 0);
}

#[test]
fn wrong_token_is_rejected_with_a_reason_on_both_sides() {
    let mut pair = Pair::new("wrong");
    pair.pump();
    assert!(pair.server.is_closed() && pair.client.is_closed());
    assert_eq!(Pair::events(&mut pair.server), vec![Event::Closed { error: ConnectionError::Unauthorized }]);
    let events = Pair::events(&mut pair.client);
    let [Event::Closed { error: ConnectionError::Rejected { code: RejectCode::Unauthorized, message } }] = &events[..]
    else {
        panic!("unexpected {events:?}")
    };
    assert!(message.contains("token"), "{message}");
}

#[test]
fn an_empty_server_token_accepts_nobody() {
    let now = Instant::now();
    let mut server = Connection::server(config(""), now);
    let client = Connection::client(config(""), now);
    let bytes = client.transmit().to_vec();
    assert_eq!(server.handle_input(&bytes, now), Err(ConnectionError::Unauthorized));
}

#[test]
fn version_mismatch_names_the_fix() {
    let now = Instant::now();
    let mut server = Connection::server(config(TOKEN), now);
    let mut hello = b"DEVNET".to_vec();
    hello.extend_from_slice(&(PROTOCOL_VERSION + 1).to_be_bytes());
    let err = server.handle_input(&hello, now).expect_err("mismatch");
    assert!(err.to_string().contains("same release"), "{err}");

    // The client facing an older relay is told to upgrade the relay.
    let mut client = Connection::client(config(TOKEN), now);
    let mut old = b"DEVNET".to_vec();
    old.extend_from_slice(&0u16.to_be_bytes());
    let err = client.handle_input(&old, now).expect_err("mismatch");
    assert!(err.to_string().contains("upgrade the relay"), "{err}");
}

#[test]
fn garbage_is_refused_before_eight_bytes_arrive() {
    let now = Instant::now();
    let mut server = Connection::server(config(TOKEN), now);
    assert_eq!(server.handle_input(b"GET ", now), Err(ConnectionError::NotDevnet));
    // The reject carries the server preface so a devnet peer could read it.
    assert!(server.transmit().starts_with(b"DEVNET"));
}

#[test]
fn frames_before_the_handshake_are_violations() {
    let now = Instant::now();
    let mut server = Connection::server(config(TOKEN), now);
    let mut bytes = preface().to_vec();
    Frame::Open { id: 1, addr: "10.0.0.1:80".parse().expect("addr"), window: 1 }.encode(&mut bytes);
    assert!(matches!(server.handle_input(&bytes, now), Err(ConnectionError::Violation(_))));
}

#[test]
fn a_cut_data_frame_before_the_handshake_is_refused_at_its_head() {
    // Whole or cut, in one read with the preface or after it: refused, and
    // at once (a head the connection would not act on once looped forever).
    let now = Instant::now();
    let mut frame = Vec::new();
    Frame::Data { id: 1, payload: &[7; 1000] }.encode(&mut frame);
    for (with_preface, cut) in [(true, 100), (false, 100), (false, DATA_OVERHEAD), (true, frame.len())] {
        let mut server = Connection::server(config(TOKEN), now);
        let mut bytes = preface().to_vec();
        if !with_preface {
            server.handle_input(&bytes, now).expect("the preface");
            bytes.clear();
        }
        bytes.extend_from_slice(&frame[..cut]);
        let err = server.handle_input(&bytes, now).expect_err("refused");
        assert!(err.to_string().contains("expected a handshake frame, got Data"), "{err}");
        assert!(server.is_closed());
    }
}

#[test]
fn bytes_split_at_every_boundary_give_the_same_events() {
    let now = Instant::now();
    let mut whole = Connection::client(config(TOKEN), now);
    let hello = whole.transmit().to_vec();
    for cut in 0..hello.len() {
        let mut server = Connection::server(config(TOKEN), now);
        server.handle_input(&hello[..cut], now).expect("prefix");
        server.handle_input(&hello[cut..], now).expect("rest");
        assert!(server.is_established(), "cut at {cut}");
    }
    whole.advance_transmit(hello.len());
}

#[test]
fn stream_data_flows_both_ways_and_half_closes() {
    let mut pair = Pair::established();
    let id = pair.open("10.244.1.10:8080");
    assert_eq!(pair.client.write(id, b"ping").expect("write"), 4);
    pair.pump();
    assert_eq!(pair.server.poll_event(), Some(Event::Readable { id }));
    let mut buf = [0u8; 16];
    assert_eq!(pair.server.read(id, &mut buf), 4);
    assert_eq!(&buf[..4], b"ping");

    pair.server.write(id, b"pong").expect("write");
    pair.server.finish(id);
    pair.pump();
    assert_eq!(Pair::events(&mut pair.client), vec![Event::Readable { id }, Event::Finished { id }]);
    assert!(!pair.client.is_read_closed(id), "data still buffered");
    assert_eq!(pair.client.read(id, &mut buf), 4);
    assert!(pair.client.is_read_closed(id));
    pair.client.finish(id);
    pair.pump();
    assert_eq!(pair.client.stream_count(), 0, "finished both ways and drained: reaped");
    assert_eq!(pair.server.poll_event(), Some(Event::Finished { id }));
    assert_eq!(pair.server.stream_count(), 0);
}

#[test]
fn open_failures_are_told_apart() {
    let mut pair = Pair::established();
    for status in [OpenStatus::Refused, OpenStatus::Unreachable, OpenStatus::TimedOut, OpenStatus::Denied] {
        let id = pair.client.open("10.244.9.9:1".parse().expect("addr")).expect("open");
        pair.pump();
        let Some(Event::OpenRequested { id: sid, .. }) = pair.server.poll_event() else { panic!() };
        pair.server.refuse(sid, status, "because");
        pair.pump();
        assert_eq!(pair.client.poll_event(), Some(Event::OpenFailed { id, status, message: "because".into() }));
    }
    assert_eq!(pair.client.stream_count(), 0);
    assert_eq!(pair.server.stream_count(), 0);
}

#[test]
fn sender_stops_at_the_window_and_resumes_on_credit() {
    let mut pair = Pair::established();
    let id = pair.open("10.244.1.10:8080");
    let data = vec![7u8; 200 * 1024];
    let window = 64 * 1024;
    assert_eq!(pair.client.send_capacity(id), window);
    assert_eq!(pair.client.write(id, &data).expect("write"), window);
    assert_eq!(pair.client.write(id, &data).expect("write"), 0, "window exhausted");
    pair.pump();
    assert_eq!(pair.server.readable(id), window);
    // Reading less than a quarter window grants nothing yet.
    pair.server.consume(id, window / 8);
    pair.pump();
    assert_eq!(pair.client.send_capacity(id), 0);
    pair.server.consume(id, window / 8);
    pair.pump();
    assert_eq!(pair.client.send_capacity(id), window / 4);
    assert_eq!(pair.client.poll_event(), Some(Event::Writable { id }));
}

#[test]
fn a_peer_that_overruns_the_window_is_cut_off() {
    let mut pair = Pair::established();
    let id = pair.open("10.244.1.10:8080");
    let mut bytes = Vec::new();
    for _ in 0..2 {
        Frame::Data { id, payload: &[0u8; 40 * 1024] }.encode(&mut bytes);
    }
    let err = pair.server.handle_input(&bytes, pair.now).expect_err("overrun");
    assert!(err.to_string().contains("window"), "{err}");
}

#[test]
fn streams_are_independent() {
    let mut pair = Pair::established();
    let a = pair.open("10.244.1.10:1");
    let b = pair.open("10.244.1.10:2");
    assert_eq!(pair.client.write(a, &vec![0u8; 64 * 1024]).expect("write"), 64 * 1024);
    // Stream a is blocked on the server not reading; b still has its full window.
    assert_eq!(pair.client.send_capacity(b), 64 * 1024);
    pair.client.reset(a, "client went away");
    pair.pump();
    let events = Pair::events(&mut pair.server);
    assert!(events.contains(&Event::Reset { id: a, message: "client went away".into() }), "{events:?}");
    assert_eq!(pair.server.stream_count(), 1);
}

#[test]
fn datagrams_carry_their_address() {
    let mut pair = Pair::established();
    let dns: SocketAddr = "10.96.0.10:53".parse().expect("addr");
    pair.client.send_datagram(5, dns, b"query").expect("send");
    pair.pump();
    assert_eq!(pair.server.poll_event(), Some(Event::Datagram { assoc: 5, addr: dns, payload: b"query".to_vec() }));
}

#[test]
fn heartbeats_keep_a_live_connection_and_measure_rtt() {
    let mut pair = Pair::established();
    for _ in 0..20 {
        pair.now += Duration::from_millis(500);
        pair.client.handle_timeout(pair.now);
        pair.server.handle_timeout(pair.now);
        pair.pump();
    }
    assert!(pair.client.is_established() && pair.server.is_established());
    assert_eq!(pair.client.rtt(), Some(Duration::ZERO));
}

#[test]
fn a_black_holed_peer_is_declared_dead_within_dead_after() {
    let mut pair = Pair::established();
    let start = pair.now;
    // From now on nothing the server sends reaches the client.
    let mut t = start;
    while !pair.client.is_closed() {
        t += Duration::from_millis(100);
        let deadline = pair.client.poll_timeout().expect("timer armed");
        if t >= deadline {
            pair.client.handle_timeout(t);
        }
        assert!(t - start <= Duration::from_secs(5), "not noticed within 5 s");
    }
    let events = Pair::events(&mut pair.client);
    assert!(matches!(events.last(), Some(Event::Closed { error: ConnectionError::HeartbeatTimeout(_) })), "{events:?}");
    // And the client did try: pings were queued.
    assert!(!pair.client.transmit().is_empty());
}

#[test]
fn go_away_stops_new_streams() {
    let mut pair = Pair::established();
    pair.server.go_away("relay shutting down");
    pair.pump();
    assert_eq!(pair.client.poll_event(), Some(Event::GoAway { message: "relay shutting down".into() }));
    assert_eq!(pair.client.open("10.0.0.1:1".parse().expect("addr")), Err(StreamError::NotEstablished));
}

#[test]
fn reused_stream_ids_are_violations() {
    let mut pair = Pair::established();
    let _ = pair.open("10.244.1.10:1");
    let mut bytes = Vec::new();
    Frame::Open { id: 1, addr: "10.244.1.10:1".parse().expect("addr"), window: 1 }.encode(&mut bytes);
    assert!(matches!(pair.server.handle_input(&bytes, pair.now), Err(ConnectionError::Violation(_))));
}

proptest::proptest! {
    /// After a good handshake, any bytes from the peer either parse or close
    /// the connection with an error; nothing panics.
    #[test]
    fn established_connections_survive_any_input(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
        let mut pair = Pair::established();
        let _ = pair.server.handle_input(&bytes, pair.now);
        let _ = pair.client.handle_input(&bytes, pair.now);
    }
}

/// A client's bytes after the handshake: a stream opened and accepted, then
/// data in frames of several sizes (one cut at the 64 KiB payload limit), a
/// datagram, a ping and the stream's FIN, written while nothing is sent.
/// Returns the pair (the server has not seen the bytes) and the bytes.
fn a_busy_clients_bytes() -> (Pair, StreamId, Vec<u8>) {
    let mut pair = Pair::established();
    let id = pair.open("10.244.1.10:5432");
    let data: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(pair.client.write(id, &data[..40_000]).expect("write"), 40_000);
    pair.client.send_datagram(7, "10.96.0.10:53".parse().expect("addr"), b"a query").expect("datagram");
    assert_eq!(pair.client.write(id, &data[40_000..40_001]).expect("write"), 1);
    pair.now += Duration::from_millis(1100);
    pair.client.handle_timeout(pair.now);
    assert_eq!(pair.client.write(id, &data[40_001..]).expect("write"), data.len() - 40_001);
    pair.client.finish(id);
    let bytes = pair.client.transmit().to_vec();
    pair.client.advance_transmit(bytes.len());
    (pair, id, bytes)
}

/// What the server made of its input: its events, then the stream's bytes.
fn what_the_server_saw(pair: &mut Pair, id: StreamId) -> (Vec<Event>, Vec<u8>) {
    let events = Pair::events(&mut pair.server);
    let mut data = vec![0; pair.server.readable(id)];
    let n = pair.server.read(id, &mut data);
    data.truncate(n);
    (events, data)
}

#[test]
fn frames_cut_anywhere_by_reads_arrive_as_if_read_at_once() {
    let (mut whole, id, bytes) = a_busy_clients_bytes();
    whole.server.handle_input(&bytes, whole.now).expect("input");
    let expected = what_the_server_saw(&mut whole, id);
    assert_eq!(expected.1.len(), 64 * 1024);
    // Readable once, though four frames filled the buffer: it was never read empty.
    assert!(
        matches!(
            &expected.0[..],
            [Event::Readable { id: r }, Event::Datagram { assoc: 7, .. }, Event::Finished { id: f }] if *r == id && *f == id
        ),
        "{:?}",
        expected.0
    );
    // Every cut point at once: one byte per read.
    let (mut bytewise, id, bytes) = a_busy_clients_bytes();
    for b in &bytes {
        bytewise.server.handle_input(std::slice::from_ref(b), bytewise.now).expect("input");
    }
    assert_eq!(what_the_server_saw(&mut bytewise, id), expected);
}

#[test]
fn a_handshake_read_a_byte_at_a_time_connects() {
    let mut pair = Pair::new(TOKEN);
    let hello = pair.client.transmit().to_vec();
    pair.client.advance_transmit(hello.len());
    for b in &hello {
        pair.server.handle_input(std::slice::from_ref(b), pair.now).expect("input");
    }
    pair.pump();
    assert!(pair.client.is_established() && pair.server.is_established());
}

#[test]
fn a_bad_frame_after_a_cut_one_closes_the_connection() {
    let mut pair = Pair::established();
    let mut bytes = Vec::new();
    Frame::Ping { nonce: 9 }.encode(&mut bytes);
    let (first, rest) = bytes.split_at(3);
    pair.server.handle_input(first, pair.now).expect("a cut length prefix waits");
    // The rest of the ping, then a frame claiming more than the limit.
    let mut more = rest.to_vec();
    more.extend_from_slice(&u32::try_from(crate::frame::MAX_FRAME_LEN + 1).expect("fits").to_be_bytes());
    assert!(matches!(pair.server.handle_input(&more, pair.now), Err(ConnectionError::Decode(_))));
    assert!(matches!(Pair::events(&mut pair.server).last(), Some(Event::Closed { .. })));
}

proptest::proptest! {
    /// However reads cut the bytes, the server sees the same events and data.
    #[test]
    fn any_reads_give_the_same_events(cuts in proptest::collection::vec(1usize..70_000, 1..40)) {
        let (mut whole, id, bytes) = a_busy_clients_bytes();
        whole.server.handle_input(&bytes, whole.now).expect("input");
        let expected = what_the_server_saw(&mut whole, id);
        let (mut cut, id, bytes) = a_busy_clients_bytes();
        let mut rest = &bytes[..];
        for n in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (read, after) = rest.split_at((*n).min(rest.len()));
            cut.server.handle_input(read, cut.now).expect("input");
            rest = after;
        }
        proptest::prop_assert_eq!(what_the_server_saw(&mut cut, id), expected);
    }
}

#[test]
fn a_stream_drained_by_release_keeps_its_buffer_until_the_heartbeat() {
    let mut pair = Pair::established();
    let id = pair.client.open("10.244.1.10:8080".parse().expect("addr")).expect("open");
    pair.pump();
    let _ = Pair::events(&mut pair.server);
    pair.server.accept_with_window(id, 256 * 1024).expect("accept");
    pair.pump();
    // Several frames, as a relay's read of its link brings them.
    assert_eq!(pair.client.write(id, &[3u8; 200_000]).expect("write"), 200_000);
    pair.pump();
    let held = pair.server.buffered_capacity();
    assert!(held >= 200_000, "{held}");
    // A relay wrote it all to the destination: the next frames reuse the
    // allocation rather than growing a new one.
    pair.server.release(id, 200_000);
    assert_eq!(pair.server.readable(id), 0);
    assert_eq!(pair.server.buffered_capacity(), held);
    // Quiet until the heartbeat: then it is given back.
    pair.now += Duration::from_millis(1100);
    pair.server.handle_timeout(pair.now);
    assert!(pair.server.buffered_capacity() <= 3 * KEEP_CAPACITY, "{}", pair.server.buffered_capacity());
}

#[test]
fn debug_never_shows_the_token() {
    let config = Config { token: "hunter2-token".into(), ..Config::default() };
    let shown = format!("{config:?}");
    assert!(!shown.contains("hunter2-token") && shown.contains("<redacted>"), "{shown}");
    assert!(format!("{:?}", Config::default()).contains("<empty>"));
}

#[test]
fn streams_beyond_the_relays_limit_are_refused_with_the_reason() {
    let now = Instant::now();
    let mut pair = Pair {
        client: Connection::client(config(TOKEN), now),
        server: Connection::server(Config { max_streams: 2, ..config(TOKEN) }, now),
        now,
    };
    pair.pump();
    let _ = Pair::events(&mut pair.client);
    let _ = Pair::events(&mut pair.server);
    pair.open("10.0.0.1:80");
    pair.open("10.0.0.2:80");
    let third = pair.client.open("10.0.0.3:80".parse().expect("addr")).expect("open");
    pair.pump();
    assert!(Pair::events(&mut pair.server).is_empty(), "the relay never sees the third");
    match pair.client.poll_event() {
        Some(Event::OpenFailed { id, status: OpenStatus::Unreachable, message }) => {
            assert_eq!(id, third);
            assert_eq!(message, "relay stream limit of 2 reached");
        }
        other => panic!("expected the third open refused, got {other:?}"),
    }
}

#[test]
fn data_before_the_relay_accepts_is_a_violation() {
    let mut pair = Pair::established();
    let id = pair.client.open("10.244.1.10:8080".parse().expect("addr")).expect("open");
    pair.pump();
    assert!(matches!(pair.server.poll_event(), Some(Event::OpenRequested { .. })));
    let mut early = Vec::new();
    Frame::Data { id, payload: b"early" }.encode(&mut early);
    let err = pair.server.handle_input(&early, pair.now).expect_err("no window before accept");
    assert!(err.to_string().contains("window"), "{err}");
}

#[test]
fn a_relay_granting_its_own_credit_bounds_what_the_client_sends() {
    let mut pair = Pair::established();
    let id = pair.client.open("10.244.1.10:8080".parse().expect("addr")).expect("open");
    pair.pump();
    assert!(matches!(pair.server.poll_event(), Some(Event::OpenRequested { .. })));
    pair.server.accept_with_window(id, 1000).expect("accept");
    pair.pump();
    assert_eq!(pair.client.poll_event(), Some(Event::Opened { id }));
    assert_eq!(pair.client.send_capacity(id), 1000);
    assert_eq!(pair.client.write(id, &[1u8; 4000]).expect("write"), 1000);
    pair.pump();
    assert_eq!(pair.server.readable(id), 1000);
    // Released bytes give no credit back by themselves…
    pair.server.release(id, 1000);
    pair.pump();
    assert_eq!(pair.client.send_capacity(id), 0);
    // … the relay grants what its budget allows.
    pair.server.grant(id, 300);
    pair.pump();
    assert_eq!(pair.client.send_capacity(id), 300);
    assert_eq!(pair.client.poll_event(), Some(Event::Writable { id }));
    // A zero window at accept is allowed: the client waits for a grant.
    let other = pair.client.open("10.244.1.10:8081".parse().expect("addr")).expect("open");
    pair.pump();
    let _ = Pair::events(&mut pair.server);
    pair.server.accept_with_window(other, 0).expect("accept");
    pair.pump();
    assert_eq!(pair.client.send_capacity(other), 0);
    pair.server.grant(other, 10);
    pair.pump();
    assert_eq!(pair.client.send_capacity(other), 10);
}

#[test]
fn a_burst_s_buffers_are_given_back_once_drained() {
    let mut pair = Pair::established();
    let id = pair.open("10.0.0.1:80");
    // A window's worth each way, written while nothing is sent.
    let data = vec![5u8; 64 * 1024];
    assert_eq!(pair.client.write(id, &data).expect("write"), data.len());
    let queued = pair.client.transmit().len();
    assert!(queued > data.len());
    // Written out in pieces: the written prefix is compacted away, so the
    // queue never holds much more than what is still unsent.
    let mut sent = Vec::new();
    while !pair.client.transmit().is_empty() {
        let n = pair.client.transmit().len().min(10_000);
        sent.extend_from_slice(&pair.client.transmit()[..n]);
        pair.client.advance_transmit(n);
    }
    pair.server.handle_input(&sent, pair.now).expect("server input");
    assert_eq!(pair.server.readable(id), data.len());
    let before = pair.server.buffered_capacity();
    assert!(before >= data.len(), "{before}");
    let mut buf = vec![0; data.len()];
    assert_eq!(pair.server.read(id, &mut buf), data.len());
    pair.pump();
    // Drained, but the capacity stays until the next heartbeat tick.
    pair.now += Duration::from_millis(1100);
    pair.server.handle_timeout(pair.now);
    pair.client.handle_timeout(pair.now);
    assert!(
        pair.server.buffered_capacity() <= 3 * KEEP_CAPACITY,
        "{} bytes of buffers still held after the burst drained (before: {before})",
        pair.server.buffered_capacity()
    );
    assert!(pair.client.buffered_capacity() <= 3 * KEEP_CAPACITY);
    // And the stream still works.
    assert_eq!(pair.client.write(id, b"again").expect("write"), 5);
    pair.pump();
    assert_eq!(pair.server.read(id, &mut buf), 5);
    assert_eq!(&buf[..5], b"again");
}

/// A [`Deliver`] that takes up to a set number of bytes per offer, cycling
/// through `takes`, and keeps what it took in order.
struct Taker {
    takes: Vec<usize>,
    next: usize,
    got: Vec<u8>,
    offers: usize,
}

impl Taker {
    fn new(takes: &[usize]) -> Self {
        Self { takes: takes.to_vec(), next: 0, got: Vec::new(), offers: 0 }
    }
}

impl Deliver for Taker {
    fn deliver(&mut self, _id: StreamId, data: &[u8]) -> usize {
        self.offers += 1;
        let n = self.takes[self.next % self.takes.len()].min(data.len());
        self.next += 1;
        self.got.extend_from_slice(&data[..n]);
        n
    }
}

#[test]
fn delivered_data_skips_the_buffer_and_what_is_left_is_buffered_after_it() {
    let mut pair = Pair::established();
    let id = pair.open("10.244.1.10:5432");
    let data: Vec<u8> = (0..30_000u32).map(|i| (i % 253) as u8).collect();
    pair.client.write(id, &data[..10_000]).expect("write");
    let first = pair.client.transmit().to_vec();
    pair.client.advance_transmit(first.len());
    // All of the first frame is taken: nothing buffered, nothing to read.
    let mut taker = Taker::new(&[usize::MAX]);
    pair.server.handle_input_with(&first, pair.now, &mut taker).expect("input");
    assert_eq!(taker.got, data[..10_000]);
    assert_eq!(pair.server.readable(id), 0);
    assert!(!Pair::events(&mut pair.server).contains(&Event::Readable { id }));
    // Part of the next: the rest is buffered and readable, in order.
    pair.client.write(id, &data[10_000..20_000]).expect("write");
    let second = pair.client.transmit().to_vec();
    pair.client.advance_transmit(second.len());
    let mut taker = Taker::new(&[4_000]);
    pair.server.handle_input_with(&second, pair.now, &mut taker).expect("input");
    assert_eq!(taker.got, data[10_000..14_000]);
    assert_eq!(Pair::events(&mut pair.server), vec![Event::Readable { id }]);
    // While bytes wait in the buffer, later frames are not offered: they
    // would overtake them.
    pair.client.write(id, &data[20_000..]).expect("write");
    let third = pair.client.transmit().to_vec();
    pair.client.advance_transmit(third.len());
    let mut taker = Taker::new(&[usize::MAX]);
    pair.server.handle_input_with(&third, pair.now, &mut taker).expect("input");
    assert_eq!(taker.offers, 0);
    let mut rest = vec![0; pair.server.readable(id)];
    pair.server.read(id, &mut rest);
    assert_eq!(rest, data[14_000..]);
}

#[test]
fn delivered_bytes_are_credited_like_read_ones() {
    let mut pair = Pair::established();
    let id = pair.open("10.244.1.10:8080");
    let window = 64 * 1024;
    let data = vec![9u8; window];
    assert_eq!(pair.client.write(id, &data).expect("write"), window);
    assert_eq!(pair.client.send_capacity(id), 0);
    let bytes = pair.client.transmit().to_vec();
    pair.client.advance_transmit(bytes.len());
    let mut taker = Taker::new(&[usize::MAX]);
    pair.server.handle_input_with(&bytes, pair.now, &mut taker).expect("input");
    assert_eq!(taker.got.len(), window);
    // Taken is not yet credited: the application says when it is.
    pair.pump();
    assert_eq!(pair.client.send_capacity(id), 0);
    pair.server.credit_consumed(id, window / 8);
    pair.pump();
    assert_eq!(pair.client.send_capacity(id), 0, "less than a quarter window grants nothing yet");
    pair.server.credit_consumed(id, window / 8);
    pair.pump();
    assert_eq!(pair.client.send_capacity(id), window / 4);
    assert_eq!(pair.client.poll_event(), Some(Event::Writable { id }));
}

proptest::proptest! {
    /// However reads cut the bytes and however much each offer takes, the
    /// bytes taken and then the ones read are the stream, in order, and
    /// the server sees the same events apart from Readable.
    #[test]
    fn any_reads_and_takes_keep_the_stream_whole(
        cuts in proptest::collection::vec(1usize..70_000, 1..20),
        takes in proptest::collection::vec(0usize..20_000, 1..20),
    ) {
        let (mut whole, id, bytes) = a_busy_clients_bytes();
        whole.server.handle_input(&bytes, whole.now).expect("input");
        let (events, data) = what_the_server_saw(&mut whole, id);
        let (mut cut, id, bytes) = a_busy_clients_bytes();
        let mut taker = Taker::new(&takes);
        let mut rest = &bytes[..];
        for n in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (read, after) = rest.split_at((*n).min(rest.len()));
            cut.server.handle_input_with(read, cut.now, &mut taker).expect("input");
            rest = after;
        }
        let (cut_events, read) = what_the_server_saw(&mut cut, id);
        let mut got = taker.got.clone();
        got.extend_from_slice(&read);
        proptest::prop_assert_eq!(got, data);
        let not_readable = |e: &Vec<Event>| e.iter().filter(|e| !matches!(e, Event::Readable { .. })).cloned().collect::<Vec<_>>();
        proptest::prop_assert_eq!(not_readable(&cut_events), not_readable(&events));
    }
}

#[test]
fn takes_are_summed_per_run_of_one_stream() {
    let mut taken = Taken::default();
    for (id, n) in [(1, 10), (1, 5), (3, 0), (3, 7), (1, 2)] {
        taken.add(id, n);
    }
    assert_eq!(taken.drain().collect::<Vec<_>>(), vec![(1, 15), (3, 7), (1, 2)]);
    assert_eq!(taken.drain().count(), 0);
}

/// A 64 KiB frame's encoding, cut as TLS records cut it: 16 KiB per read.
fn a_full_frame_in_records(id: StreamId, data: &[u8]) -> Vec<Vec<u8>> {
    let mut bytes = Vec::new();
    Frame::Data { id, payload: data }.encode(&mut bytes);
    bytes.chunks(16 * 1024).map(<[u8]>::to_vec).collect()
}

#[test]
fn a_cut_frame_s_payload_is_delivered_as_it_arrives_and_never_held_whole() {
    let mut pair = Pair::established();
    let id = pair.open("10.244.1.10:5432");
    let data: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 241) as u8).collect();
    let records = a_full_frame_in_records(id, &data);
    assert_eq!(records.len(), 5, "the frame's head pushes its last byte into a fifth record");
    let mut taker = Taker::new(&[usize::MAX]);
    let mut delivered = Vec::new();
    let before = pair.server.buffered_capacity();
    for record in &records {
        pair.server.handle_input_with(record, pair.now, &mut taker).expect("input");
        delivered.push(taker.got.len());
        // Nothing of the payload waits for the rest of its frame.
        let held = pair.server.buffered_capacity();
        assert!(held < before + 64, "{held} bytes held, {before} before the frame");
    }
    let record = 16 * 1024;
    let head = DATA_OVERHEAD;
    assert_eq!(delivered, vec![record - head, 2 * record - head, 3 * record - head, 4 * record - head, data.len()]);
    assert_eq!(taker.got, data);
    assert!(Pair::events(&mut pair.server).is_empty(), "all taken: nothing to announce");
}

#[test]
fn a_head_cut_before_its_stream_id_waits_for_it() {
    let mut pair = Pair::established();
    let id = pair.open("10.244.1.10:5432");
    let mut bytes = Vec::new();
    Frame::Data { id, payload: b"hello, database" }.encode(&mut bytes);
    Frame::Ping { nonce: 4 }.encode(&mut bytes);
    // Cut inside the head (after the type, before the id's last byte), then
    // inside the payload, then in the next frame.
    for piece in [&bytes[..7], &bytes[7..12], &bytes[12..26], &bytes[26..]] {
        pair.server.handle_input(piece, pair.now).expect("input");
    }
    let mut buf = [0u8; 64];
    let n = pair.server.read(id, &mut buf);
    assert_eq!(&buf[..n], b"hello, database");
    assert_eq!(Pair::events(&mut pair.server), vec![Event::Readable { id }]);
    let pong = pair.server.transmit();
    assert!(matches!(Frame::decode(pong), Ok(Some((Frame::Pong { nonce: 4 }, _)))), "{pong:?}");
}

#[test]
fn a_head_that_overruns_the_window_is_refused_before_its_payload_arrives() {
    let mut pair = Pair::established();
    let id = pair.open("10.244.1.10:8080");
    // The window is 64 KiB: the first frame takes 40 KiB of it whole, the
    // second's head claims 40 KiB more.
    let mut bytes = Vec::new();
    Frame::Data { id, payload: &[0u8; 40 * 1024] }.encode(&mut bytes);
    let first = bytes.len();
    Frame::Data { id, payload: &[0u8; 40 * 1024] }.encode(&mut bytes);
    pair.server.handle_input(&bytes[..first], pair.now).expect("within the window");
    let err = pair.server.handle_input(&bytes[first..first + DATA_OVERHEAD], pair.now).expect_err("overrun");
    assert!(err.to_string().contains("window"), "{err}");
    assert!(pair.server.is_closed());
}

#[test]
fn a_head_claiming_too_large_a_payload_is_refused_at_once() {
    let mut pair = Pair::established();
    let id = pair.open("10.244.1.10:8080");
    let body = u32::try_from(5 + MAX_DATA_PAYLOAD + 1).expect("fits");
    let mut head = body.to_be_bytes().to_vec();
    head.push(0x12); // Data
    head.extend_from_slice(&id.to_be_bytes());
    let err = pair.server.handle_input(&head, pair.now).expect_err("too large");
    assert!(matches!(err, ConnectionError::Decode(DecodeError::PayloadTooLarge { .. })), "{err}");
}

#[test]
fn the_rest_of_a_frame_for_a_stream_reset_meanwhile_is_dropped_and_the_next_frame_read() {
    let mut pair = Pair::established();
    let id = pair.open("10.244.1.10:5432");
    let records = a_full_frame_in_records(id, &[1u8; 64 * 1024]);
    pair.server.handle_input(&records[0], pair.now).expect("input");
    pair.server.reset(id, "the destination went away");
    let _ = pair.server.transmit().len();
    let mut rest: Vec<u8> = records[1..].concat();
    Frame::Ping { nonce: 11 }.encode(&mut rest);
    let before = pair.server.transmit().len();
    pair.server.handle_input(&rest, pair.now).expect("the rest is dropped, not a violation");
    assert!(pair.server.is_established());
    let pong = &pair.server.transmit()[before..];
    assert!(matches!(Frame::decode(pong), Ok(Some((Frame::Pong { nonce: 11 }, _)))), "{pong:?}");
    assert_eq!(pair.server.readable(id), 0);
}

#[test]
fn readable_is_announced_again_once_the_buffer_was_read_empty() {
    let mut pair = Pair::established();
    let id = pair.open("10.244.1.10:5432");
    let mut buf = [0u8; 16];
    for round in 0..2 {
        pair.client.write(id, b"first").expect("write");
        pair.pump();
        pair.client.write(id, b"second").expect("write");
        pair.pump();
        assert_eq!(Pair::events(&mut pair.server), vec![Event::Readable { id }], "round {round}");
        assert_eq!(pair.server.read(id, &mut buf), 11);
    }
}

#[test]
fn a_payload_written_in_place_is_sent_as_write_would_send_it() {
    use bytes::BufMut;
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 239) as u8).collect();
    let mut by_write = Pair::established();
    let id = by_write.open("10.244.1.10:5432");
    assert_eq!(by_write.server.write(id, &data).expect("write"), data.len());
    let mut in_place = Pair::established();
    let id = in_place.open("10.244.1.10:5432");
    let before = in_place.server.transmit().len();
    let (n, limit) = in_place
        .server
        .write_with(id, usize::MAX, |space| {
            let limit = space.remaining_mut();
            space.put_slice(&data);
            limit
        })
        .expect("write_with");
    assert_eq!(n, data.len());
    assert_eq!(limit, 64 * 1024, "the limit is the send window here (64 KiB), below a frame's");
    assert_eq!(&in_place.server.transmit()[before..], by_write.server.transmit());
    assert_eq!(in_place.server.send_capacity(id), 64 * 1024 - data.len());
    assert_eq!(in_place.server.stats().bytes_out, by_write.server.stats().bytes_out);
    in_place.pump();
    let mut got = vec![0; 64 * 1024];
    let read = in_place.client.read(id, &mut got);
    assert_eq!(got[..read], data[..]);
}

#[test]
fn writing_in_place_stops_at_the_window_and_sends_nothing_for_nothing() {
    use bytes::BufMut;
    let mut pair = Pair::established();
    let id = pair.open("10.244.1.10:5432");
    let before = pair.server.transmit().to_vec();
    // A read that found nothing: no frame, no credit spent.
    let (n, ()) = pair.server.write_with(id, 1000, |_| ()).expect("write_with");
    assert_eq!(n, 0);
    assert_eq!(pair.server.transmit(), &before[..]);
    assert_eq!(pair.server.send_capacity(id), 64 * 1024);
    // `max` is below the window: that is the limit.
    let (n, limit) = pair.server.write_with(id, 1000, |space| space.remaining_mut()).expect("write_with");
    assert_eq!((n, limit), (0, 1000));
    // The window spent: the limit is 0.
    pair.server.write(id, &vec![1; 64 * 1024]).expect("write");
    let (_, limit) = pair.server.write_with(id, 1000, |space| space.remaining_mut()).expect("write_with");
    assert_eq!(limit, 0);
    pair.server.finish(id);
    assert_eq!(pair.server.write_with(id, 10, |_| ()), Err(StreamError::Finished(id)));
    assert_eq!(pair.server.write_with(99, 10, |_| ()), Err(StreamError::Unknown(99)));
}

//! The debugger handshakes, sans-IO: a probe gives the bytes to send and
//! is fed the bytes that come back, until it knows what answered. Each stops
//! as soon as the debugger has said who it is, and never sends anything that
//! changes the debuggee (JDWP allows arbitrary code execution; Delve and
//! debugpy may serve only one client).

use devnet_model::preflight::Protocol;
use serde_json::Value;

/// What a probe wants next, or what it concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feed {
    /// Keep reading.
    NeedMore,
    /// Send these bytes, then keep reading.
    Send(Vec<u8>),
    /// The debugger identified itself.
    Identified(String),
    /// Something else answered: what it said, for the message.
    Wrong(String),
}

/// At most this much is read from a port before the probe gives up.
const MAX_READ: usize = 64 * 1024;

/// The first bytes of an answer, printable, for "this is what answered".
pub fn show_bytes(buf: &[u8]) -> String {
    let head = &buf[..buf.len().min(48)];
    let text: String = head
        .iter()
        .map(|&b| if b.is_ascii_graphic() || b == b' ' { (b as char).to_string() } else { format!("\\x{b:02x}") })
        .collect();
    if buf.len() > head.len() { format!("\"{text}\"…") } else { format!("\"{text}\"") }
}

/// One debugger handshake.
#[derive(Debug)]
pub struct Probe {
    protocol: Protocol,
    state: State,
    buf: Vec<u8>,
    /// For the Node inspector: the `Host` header it sends.
    host: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Greeting,
    /// JDWP: the handshake came back; waiting for the Version reply.
    JdwpVersion,
    Done,
}

const JDWP_HANDSHAKE: &[u8] = b"JDWP-Handshake";
/// VirtualMachine.Version: length 11, id 1, flags 0, command set 1, command 1.
const JDWP_VERSION: [u8; 11] = [0, 0, 0, 11, 0, 0, 0, 1, 0, 1, 1];

impl Probe {
    /// A probe for `protocol`; `host` is the `Host` header a Node inspector
    /// gets (an IP literal, which it accepts).
    pub fn new(protocol: Protocol, host: &str) -> Self {
        Self { protocol, state: State::Greeting, buf: Vec::new(), host: host.to_owned() }
    }

    /// What to send right after the connect (may be nothing: debugpy and
    /// plain TCP speak first or not at all).
    pub fn greeting(&self) -> Vec<u8> {
        match self.protocol {
            Protocol::Jdwp => JDWP_HANDSHAKE.to_vec(),
            Protocol::Delve => br#"{"method":"RPCServer.GetVersion","params":[{}],"id":1}"#.to_vec(),
            Protocol::NodeInspector => {
                format!("GET /json/version HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.host).into_bytes()
            }
            Protocol::Debugpy | Protocol::Tcp => Vec::new(),
        }
    }

    /// Whether the probe is done as soon as the connect succeeds.
    pub fn connect_is_enough(&self) -> bool {
        self.protocol == Protocol::Tcp
    }

    /// Feeds bytes read from the socket.
    pub fn feed(&mut self, bytes: &[u8]) -> Feed {
        if self.state == State::Done {
            return Feed::NeedMore;
        }
        self.buf.extend_from_slice(bytes);
        let out = match self.protocol {
            Protocol::Jdwp => self.jdwp(),
            Protocol::Delve => self.delve(),
            Protocol::NodeInspector => self.inspector(false),
            Protocol::Debugpy => self.debugpy(),
            Protocol::Tcp => Feed::Identified("a TCP listener".into()),
        };
        let out = match out {
            Feed::NeedMore if self.buf.len() > MAX_READ => {
                Feed::Wrong(format!("{} bytes without a complete answer: {}", self.buf.len(), show_bytes(&self.buf)))
            }
            other => other,
        };
        if matches!(out, Feed::Identified(_) | Feed::Wrong(_)) {
            self.state = State::Done;
        }
        out
    }

    /// The peer closed the connection.
    pub fn eof(&mut self) -> Feed {
        if self.state == State::Done {
            return Feed::NeedMore;
        }
        self.state = State::Done;
        if self.protocol == Protocol::NodeInspector {
            // HTTP/1.0 without a length ends with the connection.
            if let f @ (Feed::Identified(_) | Feed::Wrong(_)) = self.inspector(true) {
                return f;
            }
        }
        if self.buf.is_empty() {
            Feed::Wrong("it closed the connection without a word".into())
        } else {
            Feed::Wrong(format!("it closed the connection after {}", show_bytes(&self.buf)))
        }
    }

    fn jdwp(&mut self) -> Feed {
        match self.state {
            State::Greeting => {
                let n = self.buf.len().min(JDWP_HANDSHAKE.len());
                if self.buf[..n] != JDWP_HANDSHAKE[..n] {
                    return Feed::Wrong(format!("not the JDWP handshake: {}", show_bytes(&self.buf)));
                }
                if n < JDWP_HANDSHAKE.len() {
                    return Feed::NeedMore;
                }
                self.buf.drain(..JDWP_HANDSHAKE.len());
                self.state = State::JdwpVersion;
                Feed::Send(JDWP_VERSION.to_vec())
            }
            State::JdwpVersion => jdwp_version(&self.buf),
            State::Done => Feed::NeedMore,
        }
    }

    fn delve(&mut self) -> Feed {
        let start = self.buf.iter().position(|b| !b.is_ascii_whitespace());
        match start.map(|i| self.buf[i]) {
            None => return Feed::NeedMore,
            Some(b'{') => {}
            Some(_) => return Feed::Wrong(format!("not Delve's JSON-RPC: {}", show_bytes(&self.buf))),
        }
        let mut stream = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
        match stream.next() {
            Some(Ok(reply)) => {
                let r = &reply["result"];
                match (reply["id"].as_u64(), r["DelveVersion"].as_str()) {
                    (Some(1), Some(v)) => Feed::Identified(format!(
                        "Delve {} (API v{}, backend {}, debuggee built with {})",
                        v.lines().next().unwrap_or(v).trim_start_matches("Version: "),
                        r["APIVersion"],
                        r["Backend"].as_str().unwrap_or("?"),
                        r["TargetGoVersion"].as_str().unwrap_or("?")
                    )),
                    _ => Feed::Wrong(format!("JSON, but not Delve's version reply: {}", show_bytes(&self.buf))),
                }
            }
            Some(Err(e)) if e.is_eof() => Feed::NeedMore,
            _ => Feed::Wrong(format!("not Delve's JSON-RPC: {}", show_bytes(&self.buf))),
        }
    }

    /// debugpy speaks first: `output` events carrying its package version.
    fn debugpy(&mut self) -> Feed {
        let prefix = b"Content-Length:";
        let n = self.buf.len().min(prefix.len());
        if !self.buf[..n].eq_ignore_ascii_case(&prefix[..n]) {
            return Feed::Wrong(format!("not a Debug Adapter Protocol message: {}", show_bytes(&self.buf)));
        }
        let mut rest: &[u8] = &self.buf;
        while let Some((body, after)) = dap_message(rest) {
            if let Some(v) = body["body"]["data"]["packageVersion"].as_str() {
                return Feed::Identified(format!("debugpy {v}"));
            }
            rest = after;
        }
        Feed::NeedMore
    }

    fn inspector(&mut self, at_eof: bool) -> Feed {
        match http_response(&self.buf, at_eof) {
            Http::Incomplete => Feed::NeedMore,
            Http::Garbled => Feed::Wrong(format!("not HTTP: {}", show_bytes(&self.buf))),
            Http::Response { status, body } => {
                let json: Option<Value> = serde_json::from_slice(body).ok();
                match (status, json.as_ref().and_then(|j| j["Browser"].as_str())) {
                    (200, Some(browser)) => Feed::Identified(format!(
                        "{browser} inspector (protocol {})",
                        json.as_ref().and_then(|j| j["Protocol-Version"].as_str()).unwrap_or("?")
                    )),
                    (status, _) => {
                        Feed::Wrong(format!("an HTTP server, not the Node inspector: {status} {}", show_bytes(body)))
                    }
                }
            }
        }
    }
}

/// Parses the VirtualMachine.Version reply (11-byte header, then the
/// description, JDWP major and minor, VM version and VM name).
fn jdwp_version(buf: &[u8]) -> Feed {
    if buf.len() < 11 {
        return Feed::NeedMore;
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(11..=MAX_READ).contains(&len) || buf[8] != 0x80 {
        return Feed::Wrong(format!("a JDWP handshake, then not a reply: {}", show_bytes(buf)));
    }
    if buf.len() < len {
        return Feed::NeedMore;
    }
    let error = u16::from_be_bytes([buf[9], buf[10]]);
    if error != 0 {
        return Feed::Identified(format!("a JVM (JDWP; VirtualMachine.Version answered error {error})"));
    }
    let mut reply = Reader(&buf[11..len]);
    let parsed = (|| {
        let _description = reply.string()?;
        let (_major, _minor) = (reply.int()?, reply.int()?);
        let version = reply.string()?;
        let name = reply.string()?;
        Some(format!("{name} {version} (JDWP)"))
    })();
    match parsed {
        Some(v) => Feed::Identified(v),
        None => Feed::Wrong(format!("a JDWP handshake, then a malformed Version reply: {}", show_bytes(buf))),
    }
}

/// Reads JDWP's big-endian ints and length-prefixed strings.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn int(&mut self) -> Option<u32> {
        let v = u32::from_be_bytes(self.0.get(..4)?.try_into().ok()?);
        self.0 = &self.0[4..];
        Some(v)
    }

    fn string(&mut self) -> Option<String> {
        let n = self.int()? as usize;
        let s = String::from_utf8_lossy(self.0.get(..n)?).into_owned();
        self.0 = &self.0[n..];
        Some(s)
    }
}

/// One DAP message (`Content-Length: N\r\n\r\n` + N bytes of JSON) and what follows it.
fn dap_message(buf: &[u8]) -> Option<(Value, &[u8])> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))?
        .1
        .trim()
        .parse()
        .ok()?;
    let body = buf.get(end + 4..end + 4 + len)?;
    Some((serde_json::from_slice(body).ok()?, &buf[end + 4 + len..]))
}

enum Http<'a> {
    Incomplete,
    Garbled,
    Response { status: u16, body: &'a [u8] },
}

/// A whole HTTP/1.x response: by Content-Length, or at the connection's end.
fn http_response(buf: &[u8], at_eof: bool) -> Http<'_> {
    let n = buf.len().min(5);
    if buf[..n] != b"HTTP/"[..n] {
        return Http::Garbled;
    }
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if at_eof { Http::Garbled } else { Http::Incomplete };
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let Some(status) = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()) else {
        return Http::Garbled;
    };
    let body = &buf[end + 4..];
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok()).flatten()
    });
    match length {
        Some(len) if body.len() >= len => Http::Response { status, body: &body[..len] },
        None if at_eof => Http::Response { status, body },
        _ if at_eof => Http::Response { status, body },
        _ => Http::Incomplete,
    }
}

/// The Node inspector's own Host check, asked with the name a person would
/// attach by: the request to send, and whether the answer refuses it.
pub fn inspector_host_check(name_and_port: &str) -> Vec<u8> {
    format!("GET /json/version HTTP/1.1\r\nHost: {name_and_port}\r\nConnection: close\r\n\r\n").into_bytes()
}

/// Whether the inspector refused the Host (it answers 400 to names).
pub fn inspector_refused_host(answer: &[u8]) -> Option<bool> {
    match http_response(answer, true) {
        Http::Response { status, .. } => Some(status == 400),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(protocol: Protocol, replies: &[&[u8]]) -> (Vec<Vec<u8>>, Feed) {
        let mut p = Probe::new(protocol, "10.244.4.7:9229");
        let mut sent = vec![p.greeting()];
        for r in replies {
            match p.feed(r) {
                Feed::NeedMore => {}
                Feed::Send(b) => sent.push(b),
                done => return (sent, done),
            }
        }
        (sent, p.eof())
    }

    fn jdwp_string(s: &str) -> Vec<u8> {
        let mut v = (s.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v
    }

    fn jdwp_reply() -> Vec<u8> {
        let mut data = jdwp_string("Java Debug Wire Protocol (Reference Implementation) version 17.0");
        data.extend(17u32.to_be_bytes());
        data.extend(0u32.to_be_bytes());
        data.extend(jdwp_string("17.0.15"));
        data.extend(jdwp_string("OpenJDK 64-Bit Server VM"));
        let mut reply = ((11 + data.len()) as u32).to_be_bytes().to_vec();
        reply.extend([0, 0, 0, 1, 0x80, 0, 0]);
        reply.extend(data);
        reply
    }

    #[test]
    fn jdwp_handshake_then_version_in_any_split() {
        let reply = jdwp_reply();
        for (a, b) in [(1, 1), (7, 20), (13, 11), (14, reply.len() - 1), (14, 0)] {
            let (h1, h2) = JDWP_HANDSHAKE.split_at(a.min(JDWP_HANDSHAKE.len()));
            let (r1, r2) = reply.split_at(b);
            let (sent, done) = run(Protocol::Jdwp, &[h1, h2, r1, r2]);
            assert_eq!(done, Feed::Identified("OpenJDK 64-Bit Server VM 17.0.15 (JDWP)".into()), "cuts {a} {b}");
            assert_eq!(sent, vec![JDWP_HANDSHAKE.to_vec(), JDWP_VERSION.to_vec()], "cuts {a} {b}");
        }
    }

    #[test]
    fn wrong_protocols_show_what_answered() {
        let http = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        let table: Vec<(Protocol, &[u8], &str)> = vec![
            (Protocol::Jdwp, http, "not the JDWP handshake: \"HTTP/1.1 200 OK\\x0d\\x0a"),
            (Protocol::Delve, http, "not Delve's JSON-RPC"),
            (Protocol::Delve, b"{\"id\":1,\"result\":{}}", "JSON, but not Delve's"),
            (Protocol::Debugpy, http, "not a Debug Adapter Protocol message"),
            (Protocol::NodeInspector, b"SSH-2.0-OpenSSH_9.2\r\n", "not HTTP"),
            (Protocol::NodeInspector, http, "an HTTP server, not the Node inspector: 200 \"hello\""),
        ];
        for (protocol, reply, want) in table {
            match run(protocol, &[reply]).1 {
                Feed::Wrong(got) => assert!(got.contains(want), "{protocol:?}: {got}"),
                other => panic!("{protocol:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn silence_and_hang_ups_are_not_a_debugger() {
        assert_eq!(run(Protocol::Jdwp, &[]).1, Feed::Wrong("it closed the connection without a word".into()));
        match run(Protocol::Jdwp, &[b"JDWP"]).1 {
            Feed::Wrong(w) => assert!(w.contains("after \"JDWP\""), "{w}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn delve_version_reply() {
        let reply = br#"{"id":1,"result":{"DelveVersion":"Version: 1.27.2\nBuild: $Id$","APIVersion":2,"Backend":"native","TargetGoVersion":"go1.26.8","MinSupportedVersionOfGo":"1.24.0","MaxSupportedVersionOfGo":"1.26.0"},"error":null}"#;
        let (sent, done) = run(Protocol::Delve, &[&reply[..30], &reply[30..]]);
        assert_eq!(
            done,
            Feed::Identified("Delve 1.27.2 (API v2, backend native, debuggee built with go1.26.8)".into())
        );
        assert_eq!(sent[0], br#"{"method":"RPCServer.GetVersion","params":[{}],"id":1}"#.to_vec());
    }

    #[test]
    fn debugpy_is_identified_from_what_it_says_first() {
        let event = |output: &str| {
            let body = format!(
                r#"{{"seq": 1, "type": "event", "event": "output", "body": {{"category": "telemetry", "output": "{output}", "data": {{"packageVersion": "1.8.22"}}}}}}"#
            );
            format!("Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
        };
        let two = [event("ptvsd"), event("debugpy")].concat();
        let (sent, done) = run(Protocol::Debugpy, &[&two[..10], &two[10..]]);
        assert_eq!(done, Feed::Identified("debugpy 1.8.22".into()));
        assert_eq!(sent, vec![Vec::<u8>::new()], "debugpy is never sent a byte");
    }

    #[test]
    fn node_inspector_by_length_or_by_close() {
        let body = "{\n  \"Browser\": \"node.js/v20.20.2\",\n  \"Protocol-Version\": \"1.1\"\n}";
        let with_len = format!(
            "HTTP/1.0 200 OK\r\nContent-Type: application/json; charset=UTF-8\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let want = Feed::Identified("node.js/v20.20.2 inspector (protocol 1.1)".into());
        assert_eq!(run(Protocol::NodeInspector, &[with_len.as_bytes()]).1, want);
        let by_close = format!("HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{body}");
        assert_eq!(run(Protocol::NodeInspector, &[by_close.as_bytes()]).1, want);
        let (sent, _) = run(Protocol::NodeInspector, &[]);
        assert!(String::from_utf8_lossy(&sent[0]).contains("Host: 10.244.4.7:9229\r\n"));
        let refused = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/html; charset=UTF-8\r\n\r\nWebSockets request was expected\r\n";
        assert_eq!(inspector_refused_host(refused), Some(true));
        assert_eq!(inspector_refused_host(with_len.as_bytes()), Some(false));
    }

    #[test]
    fn endless_babble_is_cut_off() {
        let mut p = Probe::new(Protocol::Debugpy, "");
        assert_eq!(p.feed(b"Content-Length: 99999999\r\n\r\n"), Feed::NeedMore);
        let out = (0..2000).map(|_| p.feed(&[b'x'; 64])).find(|f| *f != Feed::NeedMore);
        assert!(matches!(out, Some(Feed::Wrong(ref w)) if w.contains("without a complete answer")), "{out:?}");
    }
}

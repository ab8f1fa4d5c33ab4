//! Seed inputs built from real examples: frames the protocol sends,
//! handshakes and stream exchanges, TCP and DNS-over-UDP flows through the
//! tunnel, real DNS queries and answers, IPC messages the CLI and devnetd
//! exchange, and the README's profile. `cargo run -p devnet-fuzz-targets
//! --example write_seeds DIR` writes them; `cargo fuzz cmin` then merges
//! them into `fuzz/corpus/`.

use std::net::{Ipv4Addr, SocketAddr};

use devnet_ipc::message::{ClientKind, ClientMsg, ServerMsg};
use devnet_proto::{Frame, OpenStatus, RejectCode};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// `(target, input)` pairs.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    for f in frames() {
        out.push(("proto_frame", f));
    }
    let mut stream = Vec::new();
    for f in frames() {
        stream.extend_from_slice(&f);
    }
    out.push(("proto_frame", stream));
    for p in connection_programs() {
        out.push(("proto_connection", p));
    }
    for p in tunnel_programs() {
        out.push(("netstack_tunnel", p));
    }
    for (mode, p) in dns_packets() {
        let mut v = vec![mode];
        v.extend_from_slice(&p);
        out.push(("dns_rewrite", v));
    }
    for p in ipc_streams() {
        out.push(("ipc_codec", p));
    }
    for p in PROFILES {
        out.push(("profile_toml", p.as_bytes().to_vec()));
    }
    for p in CIDRS {
        out.push(("cidr_parse", p.as_bytes().to_vec()));
    }
    out
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal address")
}

fn frames() -> Vec<Vec<u8>> {
    let (v4, v6) = (addr("10.96.0.10:53"), addr("[fd00:96::20]:80"));
    let frames = [
        Frame::Hello { token: "s3cret", client: "devnet 0.1.0 on laptop" },
        Frame::Welcome { server: "devnet-relay 0.1.0", heartbeat_ms: 1000 },
        Frame::Reject { code: RejectCode::Unauthorized, message: "the client presented a wrong or missing token" },
        Frame::Open { id: 1, addr: v4, window: 4 << 20 },
        Frame::Open { id: 3, addr: v6, window: 4 << 20 },
        Frame::OpenResult { id: 1, status: OpenStatus::Connected, window: 4 << 20, message: "" },
        Frame::OpenResult { id: 3, status: OpenStatus::Refused, window: 0, message: "connection refused" },
        Frame::Data { id: 1, payload: b"GET / HTTP/1.1\r\nHost: web.demo\r\n\r\n" },
        Frame::Window { id: 1, increment: 1 << 20 },
        Frame::Fin { id: 1 },
        Frame::Reset { id: 1, message: "the client reset the connection" },
        Frame::Datagram { assoc: 1, addr: v4, payload: &[0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0] },
        Frame::Ping { nonce: 1 },
        Frame::Pong { nonce: 1 },
        Frame::GoAway { message: "relay shutting down" },
    ];
    frames
        .iter()
        .map(|f| {
            let mut v = Vec::new();
            f.encode(&mut v);
            v
        })
        .collect()
}

/// Op bytes for `proto_connection` (see its body): 1 = a frame, 6 = the
/// application, 12 = time.
fn connection_programs() -> Vec<Vec<u8>> {
    // frame op: [1, id-choice, text-len, text.., payload u16, kind, fields..]
    let frame = |id_choice: u8, text: &[u8], payload: u16, kind: u8, fields: &[u8]| {
        let mut v = vec![1, id_choice, text.len() as u8];
        v.extend_from_slice(text);
        v.extend_from_slice(&payload.to_be_bytes());
        v.push(kind);
        v.extend_from_slice(fields);
        v
    };
    // app op: [6, id-choice, action, fields..]
    let app = |id_choice: u8, action: u8, fields: &[u8]| {
        let mut v = vec![6, id_choice, action];
        v.extend_from_slice(fields);
        v
    };
    let mut server = vec![0];
    server.extend(frame(0x80, b"", 0, 3, &[1, 0, 0, 4, 0])); // Open a fresh id to 10.96.0.20:80
    server.extend(app(0, 1, &[])); // accept
    server.extend(frame(0, b"", 100, 5, &[])); // Data
    server.extend(app(0, 4, &[0, 64])); // read 64
    server.extend(app(0, 3, &[1, 0])); // write 256
    server.extend(frame(0, b"", 0, 6, &[0, 0, 4, 0])); // Window
    server.extend(frame(0, b"", 0, 7, &[])); // Fin
    server.extend(app(0, 5, &[])); // finish
    server.extend([12, 0x03, 0xe8]); // a second passes
    server.extend(frame(0, b"", 0, 10, &[0, 0, 0, 0, 0, 0, 0, 9])); // Ping

    let mut client = vec![1];
    client.extend(app(0, 0, &[1])); // open 10.96.0.20:80
    client.extend(frame(0, b"", 0, 4, &[0, 0, 0, 8, 0])); // OpenResult connected, window 2048
    client.extend(app(0, 3, &[8, 0])); // write 2048
    client.extend(frame(0, b"hello", 300, 5, &[])); // Data
    client.extend(app(0, 4, &[1, 0])); // read
    client.extend(frame(0, b"", 0, 9, &[0, 0, 0, 1, 0])); // Datagram
    client.extend(frame(0, b"bye", 0, 8, &[])); // Reset
    client.extend(frame(0, b"going", 0, 12, &[])); // GoAway
    client.extend([12, 0x13, 0x88]); // five seconds: heartbeat timeout
    vec![server, client]
}

fn dns_query(name: &str, ty: RecordType) -> Vec<u8> {
    let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), ty));
    m.to_vec().expect("encode")
}

fn dns_answer(name: &str) -> Vec<u8> {
    let mut m = Message::new(0x1234, MessageType::Response, OpCode::Query);
    let name = Name::from_ascii(name).expect("name");
    m.add_query(Query::query(name.clone(), RecordType::A));
    m.add_answer(Record::from_rdata(name, 5, RData::A(A(Ipv4Addr::new(10, 96, 0, 20)))));
    m.to_vec().expect("encode")
}

fn dns_packets() -> Vec<(u8, Vec<u8>)> {
    let mut truncated = dns_query("web.demo.", RecordType::A);
    truncated.truncate(14);
    vec![
        (0, dns_query("web.demo.", RecordType::A)),
        (0, dns_query("web.demo.svc.", RecordType::AAAA)),
        (0, dns_query("kubernetes.", RecordType::A)),
        (0, dns_query("web.demo.svc.cluster.local.", RecordType::SRV)),
        (0, dns_query("www.example.com.", RecordType::A)),
        (0, truncated),
        (1, dns_answer("web.demo.svc.cluster.local.")),
    ]
}

/// Op bytes for `netstack_tunnel`: 0 = raw packet, 1 = TCP, 4 = UDP,
/// 5 = the relay answers an open, 6 = the relay acts on a stream, 8 = the
/// relay answers a datagram, 9 = time.
fn tunnel_programs() -> Vec<Vec<u8>> {
    // TCP op: [1, pick, flags, mode, len, payload..]; pick 0 = v4 client 0 to 10.96.0.20:80.
    let tcp = |pick: u8, flags: u8, payload: &[u8]| {
        let mut v = vec![1, pick, flags, 0, payload.len() as u8];
        v.extend_from_slice(payload);
        v
    };
    let mut http = Vec::new();
    http.extend(tcp(0, 0x02, b"")); // SYN
    http.extend([5, 0]); // the relay accepts
    http.extend(tcp(0, 0x10, b"")); // ACK of the SYN-ACK
    http.extend(tcp(0, 0x18, b"GET / HTTP/1.1\r\nHost: web.demo\r\n\r\n"));
    http.extend([6, 0, 0, 0, 200]); // the relay writes 200 bytes
    http.extend(tcp(0, 0x10, b""));
    http.extend([6, 0, 2]); // the relay finishes
    http.extend(tcp(0, 0x11, b"")); // FIN
    http.extend([9, 0, 100]);

    let mut refused = Vec::new();
    refused.extend(tcp(1, 0x02, b"")); // v6 SYN to [fd00:96::20]:80
    refused.extend([5, 2]);
    refused.extend(tcp(4, 0x02, b"")); // v4 SYN to 10.96.0.10:53
    refused.extend([5, 3]);
    refused.extend(tcp(8, 0x02, b"")); // v4 SYN to 10.97.0.1:80, not routed

    let mut dns = Vec::new();
    let q = dns_query("web.demo.svc.cluster.local.", RecordType::A);
    dns.extend([4, 4, q.len() as u8]); // v4 UDP to 10.96.0.10:53
    dns.extend_from_slice(&q);
    dns.extend([8, 0, 0, 40]); // an 80-byte answer
    dns.extend([9, 0x2f, 0xff]); // 12 s: the association expires
    dns.extend([4, 5, q.len() as u8]); // v6 UDP to [fd00:96::a]:53
    dns.extend_from_slice(&q);

    let mut raw = Vec::new();
    let mut syn = Vec::new();
    // A real SYN as Linux sends it (with options), to 10.96.0.20:80.
    syn.extend_from_slice(&[
        0x45, 0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 192, 168, 10, 2, 10, 96, 0, 20,
    ]);
    syn.extend_from_slice(&[
        0x9c, 0x40, 0x00, 0x50, 0x3a, 0x5c, 0x1e, 0x0b, 0, 0, 0, 0, 0xa0, 0x02, 0xfa, 0xf0, 0, 0, 0, 0, 0x02, 0x04,
        0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x00, 0x9c, 0x27, 0x24, 0, 0, 0, 0, 0x01, 0x03, 0x03, 0x07,
    ]);
    fix_ipv4_tcp(&mut syn);
    raw.push(0);
    raw.extend_from_slice(&(syn.len() as u16).to_be_bytes());
    raw.extend_from_slice(&syn);
    raw.extend([5, 0]);
    raw.extend([11, 0]); // reconnect
    vec![http, refused, dns, raw]
}

fn fix_ipv4_tcp(p: &mut [u8]) {
    fn sum(acc: u32, d: &[u8]) -> u32 {
        d.chunks(2).fold(acc, |a, c| a + u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
    }
    fn fold(mut a: u32) -> u16 {
        while a > 0xffff {
            a = (a & 0xffff) + (a >> 16);
        }
        !(a as u16)
    }
    let c = fold(sum(0, &p[..20]));
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let tcp_len = p.len() - 20;
    let pseudo = sum(sum(0, &p[12..16]), &p[16..20]) + 6 + tcp_len as u32;
    let c = fold(sum(pseudo, &p[20..]));
    p[36..38].copy_from_slice(&c.to_be_bytes());
}

fn ipc_streams() -> Vec<Vec<u8>> {
    let client = [
        ClientMsg::Hello { ipc_version: 1, client: ClientKind::Cli, app_version: "0.1.0".into() },
        ClientMsg::Status,
        ClientMsg::Subscribe,
        ClientMsg::Disconnect { session: Some("dev".into()) },
        ClientMsg::Bridge { session: "dev".into(), attempt: 1, label: "port-forward devnet/relay".into() },
        ClientMsg::BridgeFailed { session: "dev".into(), attempt: 2, error: "forbidden".into() },
    ];
    let server = [
        ServerMsg::Hello { ipc_version: 1, daemon_version: "0.1.0".into(), caller_uid: 1000 },
        ServerMsg::Started { session: "dev".into() },
        ServerMsg::OpenBridge { session: "dev".into(), attempt: 1 },
        ServerMsg::BridgeAccepted,
        ServerMsg::Ended { session: "dev".into(), error: None },
    ];
    let mut a = vec![0, 7];
    for m in &client {
        a.extend(devnet_ipc::codec::encode(m).expect("encode"));
    }
    let mut connect = vec![0, 255];
    connect.extend((br#"{"type":"connect","session":"dev","profile":{"relay":"10.60.20.11:31443","cidrs":["10.96.0.0/12"],"namespaces":["team-a"]},"token":"t","relay_ca_pem":"","direct":["10.244.1.5:8443"],"bridge":true,"discovered":[]}"#.len() as u32).to_be_bytes());
    connect.extend_from_slice(br#"{"type":"connect","session":"dev","profile":{"relay":"10.60.20.11:31443","cidrs":["10.96.0.0/12"],"namespaces":["team-a"]},"token":"t","relay_ca_pem":"","direct":["10.244.1.5:8443"],"bridge":true,"discovered":[]}"#);
    let mut b = vec![1, 13];
    for m in &server {
        b.extend(devnet_ipc::codec::encode(m).expect("encode"));
    }
    vec![a, connect, b]
}

const PROFILES: &[&str] = &[
    r#"relay = "10.60.20.11:31443"           # a node IP and the relay's NodePort
token-file = "/home/me/.config/devnet/token"
relay-ca = "/home/me/.config/devnet/ca.pem"
cidrs = ["10.244.0.0/16", "10.96.0.0/12"]   # pod and service CIDRs
dns-server = "10.96.0.10"             # the kube-dns ClusterIP
namespaces = ["team-a", "team-b"]     # so `mysql.team-a` resolves
# gateways = ["192.168.1.30"]        # a forwarding node on your LAN (seed 001), tried before the tunnel
"#,
    r#"relay = "[fd00:60::11]:31443"
relay-ca = "/etc/devnet/ca.pem"
cidrs = ["fd00:244::/56", "fd00:96::/112", "10.96.0.0/16"]
dns-server = "fd00:96::a"
probe-targets = ["[fd00:244::5]:8080"]
cluster-domain = "corp.cluster."
default-namespace = "default"
dns-stub = "127.0.0.53"
dns-backend = "resolv-conf"
dns-link-address = "169.254.53.53"
gateways = ["192.168.1.30"]
allow-overlap = ["10.96.0.0/16"]
tun-name = "devnet0"
mtu = 1400
"#,
];

const CIDRS: &[&str] = &[
    "10.60.20.11\n10.244.0.0/16\n10.96.0.0/12",
    "fd00:60::11\nfd00:244::/56\nfd00:96::/112",
    "10.0.0.1\n10.0.0.0/8",
    "192.168.1.1\n10.96.0.1/12\n 172.16.0.0/12 ",
];

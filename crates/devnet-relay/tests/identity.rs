//! Per-user identities on a real relay over loopback (security review R-1,
//! issue 11 finding 3): laptops enrol on the relay's enrolment port, log in
//! over TLS with the client certificate they got, and the relay refuses
//! expired, revoked and foreign certificates, closing a revoked user's
//! live session. Real sockets, real TLS, the real accept loop; only the
//! port-forward in front of the enrolment port is left out (it carries
//! bytes unchanged).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use devnet_proto::{Config, Connection, ConnectionError, Event, RejectCode};
use devnet_relay::budget::{Global, Limits};
use devnet_relay::identity::{Identities, Revoked};
use devnet_relay::metrics::Metrics;
use devnet_relay::policy::Policy;
use devnet_relay::threads::SessionThreads;
use devnet_relay::{LoggingIn, Shared};
use devnet_tls::identity::{ClientKey, EnrolReply};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

struct Relay {
    addr: SocketAddr,
    enrol: SocketAddr,
    identities: Arc<Identities>,
    metrics: Arc<Metrics>,
    revoked_dir: std::path::PathBuf,
    _shutdown: watch::Sender<bool>,
}

async fn start_relay(name: &str) -> Relay {
    let dir = std::env::temp_dir().join(format!("devnet-identity-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    devnet_tls::write_generated(&dir).expect("relay certificates");
    let ca_pem = std::fs::read_to_string(dir.join("ca.pem")).expect("CA");
    let identities = Arc::new(Identities::new(ca_pem, Duration::from_secs(8 * 3600)).expect("identities"));
    let tls =
        devnet_tls::server_config_with_clients(&dir.join("cert.pem"), &dir.join("key.pem"), identities.client_ca_der())
            .expect("server config");
    let metrics = Arc::new(Metrics::default());
    let shared = Arc::new(Shared {
        // No token file: certificates only, as in Kubernetes.
        proto: Config { max_streams: 64, ..Config::default() },
        // These sessions dial nothing.
        policy: Policy::new(vec!["10.244.0.0/16".parse().expect("cidr")], vec![]).expect("policy"),
        dial_timeout: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(1),
        metrics: metrics.clone(),
        login_timeout: Duration::from_secs(10),
        logging_in: LoggingIn::new(64, 64),
        budget: Arc::new(Global::new(64 * 1024 * 1024)),
        credit: Limits::default(),
        max_dialing: 8,
        identities: Some(identities.clone()),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let enrol_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind enrol");
    let enrol = enrol_listener.local_addr().expect("addr");
    let (shutdown, shutdown_rx) = watch::channel(false);
    // Two session threads: each session moves off the test's runtime, as
    // in the relay binary.
    let threads = SessionThreads::start(std::num::NonZeroUsize::new(2).expect("2")).expect("session threads");
    tokio::spawn(devnet_relay::serve(listener, tls, shared, threads, shutdown_rx));
    tokio::spawn(devnet_relay::identity::serve_enrol(enrol_listener, identities.clone(), metrics.clone()));
    let revoked_dir = dir.join("revoked");
    std::fs::create_dir_all(&revoked_dir).expect("revoked dir");
    tokio::spawn(devnet_relay::identity::watch_revoked(
        revoked_dir.clone(),
        identities.clone(),
        Duration::from_millis(100),
    ));
    Relay { addr, enrol, identities, metrics, revoked_dir, _shutdown: shutdown }
}

/// What a laptop keeps after enrolling: the credential (certificate and
/// key) and the relay CA.
struct Enrolled {
    credential: String,
    relay_ca_pem: String,
}

async fn enrol(relay: &Relay, user: &str) -> Result<Enrolled, String> {
    let key = ClientKey::generate().expect("key");
    let mut tcp = TcpStream::connect(relay.enrol).await.expect("connect to enrolment");
    let mut line = serde_json::to_string(&key.request(user)).expect("json");
    line.push('\n');
    tcp.write_all(line.as_bytes()).await.expect("send");
    let mut reply = String::new();
    BufReader::new(tcp).read_line(&mut reply).await.expect("reply");
    match serde_json::from_str::<EnrolReply>(&reply).expect("a reply") {
        EnrolReply::Issued { cert_pem, relay_ca_pem, .. } => {
            Ok(Enrolled { credential: devnet_tls::certificate_credential(&cert_pem, &key.private_pem()), relay_ca_pem })
        }
        EnrolReply::Refused { message, .. } => Err(message),
    }
}

/// A logged-in session, driven by the test.
struct Session {
    conn: Connection,
    tls: tokio_rustls::client::TlsStream<TcpStream>,
}

impl Session {
    /// Moves bytes until the connection is established (Ok) or closed (Err
    /// with why), within five seconds.
    async fn drive(&mut self, until_established: bool) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            while let Some(event) = self.conn.poll_event() {
                if let Event::Closed { error } = event {
                    return Err(describe(&error));
                }
            }
            if until_established && self.conn.is_established() {
                return Ok(());
            }
            let pending = self.conn.transmit().to_vec();
            if !pending.is_empty() {
                self.tls.write_all(&pending).await.map_err(|e| e.to_string())?;
                self.tls.flush().await.map_err(|e| e.to_string())?;
                self.conn.advance_transmit(pending.len());
            }
            let read = tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + Duration::from_millis(200)),
                self.tls.read(&mut buf),
            )
            .await;
            match read {
                Ok(Ok(0)) => return Err("the relay closed the connection".into()),
                Ok(Ok(n)) => {
                    let _ = self.conn.handle_input(&buf[..n], std::time::Instant::now());
                }
                Ok(Err(e)) => return Err(format!("TLS: {e}")),
                Err(_) if tokio::time::Instant::now() >= deadline => return Err("timed out".into()),
                Err(_) => self.conn.handle_timeout(std::time::Instant::now()),
            }
        }
    }
}

fn describe(error: &ConnectionError) -> String {
    match error {
        ConnectionError::Rejected { code: RejectCode::Unauthorized, message } => format!("unauthorized: {message}"),
        other => other.to_string(),
    }
}

async fn connect(relay: &Relay, ca_pem: &str, credential: &str) -> Result<Session, String> {
    let tls_config = devnet_tls::client_config_for(ca_pem, credential).expect("client config");
    let tcp = TcpStream::connect(relay.addr).await.expect("connect");
    let tls = tokio_rustls::TlsConnector::from(tls_config)
        .connect(devnet_tls::relay_server_name(), tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let hello = devnet_tls::RelayCredential::parse(credential).expect("credential").hello_token().to_owned();
    let config = Config { token: hello, ..Config::default() };
    let mut session = Session { conn: Connection::client(config, std::time::Instant::now()), tls };
    session.drive(true).await?;
    Ok(session)
}

fn count(counter: &std::sync::atomic::AtomicU64) -> u64 {
    counter.load(std::sync::atomic::Ordering::Relaxed)
}

#[tokio::test]
async fn each_user_has_an_identity_and_a_revoked_one_is_refused() {
    let relay = start_relay("revoke").await;
    let alice = enrol(&relay, "alice@example.com").await.expect("alice enrols");
    let bob = enrol(&relay, "bob@example.com").await.expect("bob enrols");
    let mut alice_live = connect(&relay, &alice.relay_ca_pem, &alice.credential).await.expect("alice connects");
    let _bob_live = connect(&relay, &bob.relay_ca_pem, &bob.credential).await.expect("bob connects");

    // An admin revokes alice (the ConfigMap, as the kubelet writes it).
    std::fs::write(relay.revoked_dir.join("users"), "alice@example.com\n").expect("revoke");

    // Her live session is closed, with the reason and the fix.
    let closed = alice_live.drive(false).await.expect_err("alice's live session is closed");
    assert!(closed.starts_with("unauthorized: ") && closed.contains("revoked"), "{closed}");
    assert!(closed.contains("devnet relay revoke --undo"), "names the fix: {closed}");
    // Her certificate no longer logs in, and she cannot enrol again.
    let refused = connect(&relay, &alice.relay_ca_pem, &alice.credential).await.err().expect("alice refused");
    assert!(refused.contains("revoked") && refused.contains("alice@example.com"), "{refused}");
    let again = enrol(&relay, "alice@example.com").await.err().expect("enrolment refused");
    assert!(again.contains("refused enrolment for user alice@example.com: revoked"), "{again}");
    // Bob is not affected.
    connect(&relay, &bob.relay_ca_pem, &bob.credential).await.expect("bob still connects");
    assert!(count(&relay.metrics.refused_revoked) >= 2, "{}", relay.metrics.render());

    // Revoking by serial works too, and undoing a revocation admits again.
    std::fs::write(relay.revoked_dir.join("users"), "").expect("undo");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*relay.identities.revoked().borrow(), Revoked::default());
    connect(&relay, &alice.relay_ca_pem, &alice.credential).await.expect("alice admitted again");

    // A cert-less client is told how to get one.
    let anonymous = connect(&relay, &alice.relay_ca_pem, "some-token").await.err().expect("no certificate");
    assert!(anonymous.contains("client certificate") && anonymous.contains("devnet connect"), "{anonymous}");
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused() {
    let relay = start_relay("expired").await;
    let fresh = enrol(&relay, "carol").await.expect("carol enrols");
    let key = ClientKey::generate().expect("key");
    let hour = Duration::from_secs(3600);
    let now = SystemTime::now();
    let old = relay.identities.issue_valid(&key.request("carol"), now - 10 * hour, now - 2 * hour).expect("issued");
    let credential = devnet_tls::certificate_credential(&old.cert_pem, &key.private_pem());
    let refused = connect(&relay, &fresh.relay_ca_pem, &credential).await.err().expect("expired is refused");
    // TLS 1.3: the relay's alert arrives after the client's side of the handshake.
    assert!(refused.contains("CertificateExpired"), "{refused}");
    for _ in 0..50 {
        if count(&relay.metrics.refused_expired) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(count(&relay.metrics.refused_expired), 1, "{}", relay.metrics.render());
    connect(&relay, &fresh.relay_ca_pem, &fresh.credential).await.expect("a valid one still logs in");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let relay = start_relay("foreign").await;
    let other = start_relay("other").await;
    let mine = enrol(&relay, "dave").await.expect("dave enrols here");
    // A certificate another relay (or a relay before its restart) issued.
    let theirs = enrol(&other, "dave").await.expect("dave enrols there");
    let refused = connect(&relay, &mine.relay_ca_pem, &theirs.credential).await.err().expect("foreign refused");
    assert!(refused.contains("UnknownCA"), "{refused}");
    for _ in 0..50 {
        if count(&relay.metrics.refused_unknown_ca) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(count(&relay.metrics.refused_unknown_ca), 1, "{}", relay.metrics.render());
    connect(&relay, &mine.relay_ca_pem, &mine.credential).await.expect("its own certificate logs in");
}

#[tokio::test]
async fn a_path_proof_with_a_client_certificate_counts_as_a_proof() {
    let relay = start_relay("proof").await;
    let me = enrol(&relay, "erin").await.expect("enrols");
    for credential in [me.credential.as_str(), ""] {
        let tls_config = devnet_tls::client_config_for(&me.relay_ca_pem, credential).expect("client config");
        let tcp = TcpStream::connect(relay.addr).await.expect("connect");
        let mut tls = tokio_rustls::TlsConnector::from(tls_config)
            .connect(devnet_tls::relay_server_name(), tcp)
            .await
            .expect("handshake");
        tls.shutdown().await.expect("close");
    }
    for _ in 0..50 {
        if count(&relay.metrics.path_proofs) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(count(&relay.metrics.path_proofs), 2, "with and without a certificate: {}", relay.metrics.render());
}

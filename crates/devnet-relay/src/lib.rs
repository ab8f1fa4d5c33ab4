//! # devnet-relay: the in-cluster end of the tunnel
//!
//! **Layer:** a thin tokio shell around [`devnet_proto::Connection`]. It
//! accepts TLS sessions from devnet clients, authenticates them by a
//! client certificate it issued at enrolment ([`identity`]: a relay in
//! Kubernetes) or by token (a relay an operator runs with a token file),
//! dials TCP destinations and relays UDP datagrams for them, within a
//! [`policy::Policy`] that admits only the cluster's CIDRs and never
//! loopback, link-local, metadata endpoints or the relay itself.
//!
//! It also serves `/healthz`, `/readyz` and `/metrics` on a plain-HTTP
//! health port, and shuts down gracefully: on SIGTERM it tells clients it is
//! going away, stops accepting, and lets open streams drain for a grace
//! period.
//!
//! **What it does not do:** decide routes, touch the node's network
//! configuration, or talk to the Kubernetes API.

pub mod budget;
pub mod identity;
pub mod limits;
pub mod metrics;
pub mod policy;
pub mod session;
pub mod threads;
pub use devnet_tls as tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use devnet_proto::TransportAuth;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::session::SessionEnd;
use crate::threads::SessionThreads;

/// Settings shared by every session.
#[derive(Debug)]
pub struct Shared {
    /// Protocol settings; `token` is the one clients must present.
    pub proto: devnet_proto::Config,
    pub policy: Policy,
    pub dial_timeout: Duration,
    pub shutdown_grace: Duration,
    pub metrics: Arc<Metrics>,
    /// From accept to an authenticated login (TLS, preface and Hello
    /// together): a client that dribbles its handshake is cut here, however
    /// often it sends a byte.
    pub login_timeout: Duration,
    /// Connections not yet logged in: beyond [`MAX_LOGGING_IN`] in all, or
    /// [`MAX_LOGGING_IN_PER_SOURCE`] from one address, a new connection is
    /// closed at once. Logged-in clients are not affected, and one noisy
    /// address cannot keep everyone else from logging in.
    pub logging_in: LoggingIn,
    /// The window credit all sessions hold together (see [`budget`]).
    pub budget: Arc<budget::Global>,
    /// The sizes each session's credit follows.
    pub credit: budget::Limits,
    /// Dials one session may have in progress; beyond, an open waits for a
    /// slot, oldest first (each dial holds a socket for up to the dial timeout).
    pub max_dialing: usize,
    /// Client certificates (a relay in Kubernetes); `None`: token logins only.
    pub identities: Option<Arc<identity::Identities>>,
}

/// The connections logging in, in all and per source address.
#[derive(Debug)]
pub struct LoggingIn {
    all: Arc<tokio::sync::Semaphore>,
    per_source: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    per_source_max: usize,
}

impl LoggingIn {
    pub fn new(max: usize, per_source_max: usize) -> Self {
        Self { all: Arc::new(tokio::sync::Semaphore::new(max)), per_source: Arc::default(), per_source_max }
    }

    /// A place for a connection from `source`, or `None` when full.
    pub fn admit(&self, source: std::net::IpAddr) -> Option<LoginSlot> {
        let mut counts = self.per_source.lock().ok()?;
        let count = counts.entry(source).or_default();
        if *count >= self.per_source_max {
            return None;
        }
        let permit = self.all.clone().try_acquire_owned().ok()?;
        *count += 1;
        Some(LoginSlot { _permit: permit, source, per_source: self.per_source.clone() })
    }
}

/// A connection's place among those logging in; given back when dropped.
#[derive(Debug)]
pub struct LoginSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    source: std::net::IpAddr,
    per_source: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
}

impl Drop for LoginSlot {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.per_source.lock()
            && let Some(count) = counts.get_mut(&self.source)
        {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.source);
            }
        }
    }
}

/// The default [`Shared::login_timeout`].
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The default number of connections that may be logging in at once…
pub const MAX_LOGGING_IN: usize = 256;
/// … and from one source address.
pub const MAX_LOGGING_IN_PER_SOURCE: usize = 32;
/// Streams one client may have open at once; its next open is refused
/// with "relay stream limit of 1024 reached" (each holds a socket and up
/// to a window of buffered bytes).
pub const MAX_STREAMS_PER_SESSION: usize = 1024;
/// The default [`Shared::max_dialing`]: dials in progress per client; more
/// opens wait for a slot (bounded by [`MAX_STREAMS_PER_SESSION`]).
pub const MAX_DIALING_PER_SESSION: usize = 64;

/// Accepts sessions on `listener` until `shutdown` turns true, then waits
/// for sessions to drain (bounded by the grace period). Each session runs
/// on one of `threads`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shared: Arc<Shared>,
    threads: SessionThreads,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let mut sessions = JoinSet::new();
    info!(listen = %listener.local_addr()?, allowed = ?shared.policy.allowed(), session_threads = threads.len(), "relay serving");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                let Some(login) = shared.logging_in.admit(peer.ip().to_canonical()) else {
                    Metrics::add(&shared.metrics.logins_refused_busy, 1);
                    debug!(%peer, "too many connections logging in; closed");
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                // Off this runtime's I/O driver, onto the session thread's.
                let tcp = match tcp.into_std() {
                    Ok(tcp) => tcp,
                    Err(e) => {
                        warn!(%peer, error = %e, "could not hand the connection to a session thread");
                        continue;
                    }
                };
                let (acceptor, shared, shutdown) = (acceptor.clone(), shared.clone(), shutdown.clone());
                threads.spawn(&mut sessions, move || async move {
                    match tokio::net::TcpStream::from_std(tcp) {
                        Ok(tcp) => handle_client(tcp, peer, acceptor, shared, shutdown, login).await,
                        Err(e) => warn!(%peer, error = %e, "could not register the connection on its session thread"),
                    }
                });
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    info!(sessions = sessions.len(), "shutting down: draining sessions");
    let drain = async { while sessions.join_next().await.is_some() {} };
    if tokio::time::timeout(shared.shutdown_grace + Duration::from_secs(2), drain).await.is_err() {
        warn!("grace period over; aborting remaining sessions");
    }
    Ok(())
}

async fn handle_client(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    login: LoginSlot,
) {
    let metrics = shared.metrics.clone();
    // One deadline for the first byte, the TLS handshake and the login.
    let deadline = tokio::time::Instant::now() + shared.login_timeout;
    // A whoami question instead of TLS: answer it and close.
    let mut first = [0u8; 1];
    if let Ok(Ok(1)) = tokio::time::timeout_at(deadline, tcp.peek(&mut first)).await
        && devnet_proto::whoami::starts_request(first[0])
    {
        answer_whoami(tcp, peer).await;
        return;
    }
    // Downloads leave through this socket: restart its BBR after a quiet
    // spell as the engine does for uploads (`devnet_tls::congestion`).
    let tcp = devnet_tls::readahead::ReadAhead::new(devnet_tls::congestion::RestartAfterQuiet::new(tcp));
    let tls = match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
        Ok(Ok(mut tls)) => {
            // Each write to the link one offload packet (see `WRITE_AHEAD`).
            devnet_tls::link::bound_write_ahead(tls.get_mut().1);
            tls
        }
        Ok(Err(e)) => {
            Metrics::add(&metrics.handshake_failures, 1);
            match certificate_refusal(&e) {
                Some(reason) => {
                    Metrics::add(
                        match reason {
                            CertificateRefusal::Expired => &metrics.refused_expired,
                            CertificateRefusal::UnknownCa => &metrics.refused_unknown_ca,
                        },
                        1,
                    );
                    warn!(%peer, reason = reason.as_str(), error = %e, "client certificate refused");
                }
                None => {
                    warn!(%peer, error = %e, "TLS handshake failed (not a devnet client, or a client that does not trust this relay's CA)")
                }
            }
            return;
        }
        Err(_) => {
            Metrics::add(&metrics.logins_timed_out, 1);
            warn!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let (auth, identity) = authenticate(&tls, &shared);
    if matches!(auth, TransportAuth::Refused(_)) && identity.is_some() {
        Metrics::add(&metrics.refused_revoked, 1);
    }
    let (user, serial) = identity.as_ref().map_or(("", ""), |i| (i.user.as_str(), i.serial.as_str()));
    let (user, serial) = (user.to_owned(), serial.to_owned());
    Metrics::add(&metrics.sessions_total, 1);
    Metrics::add(&metrics.sessions_active, 1);
    let shared_login_timeout = shared.login_timeout;
    let login = session::Login { deadline, slot: login, auth, identity };
    match session::run(tls, peer, shared, shutdown, login).await {
        SessionEnd::HandshakeFailed(error) => {
            Metrics::add(&metrics.handshake_failures, 1);
            warn!(%peer, %user, %serial, %error, "client refused at the handshake");
        }
        SessionEnd::PathProof => {
            Metrics::add(&metrics.path_proofs, 1);
            debug!(%peer, "a direct path proven (TLS handshake, then a clean close)");
        }
        SessionEnd::LoginTimedOut => {
            Metrics::add(&metrics.logins_timed_out, 1);
            warn!(%peer, timeout = ?shared_login_timeout, "no login within the deadline; closed");
        }
        SessionEnd::Revoked(message) => {
            Metrics::add(&metrics.refused_revoked, 1);
            warn!(%peer, %user, %serial, %message, "session closed: revoked");
        }
        SessionEnd::Ended(reason) => info!(%peer, %user, %serial, %reason, "session ended"),
    }
    metrics.sessions_active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

/// Why a client certificate was refused at the TLS handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateRefusal {
    Expired,
    /// Not signed by this relay process's client CA.
    UnknownCa,
}

impl CertificateRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::UnknownCa => "unknown CA",
        }
    }
}

/// The client-certificate refusal behind a failed TLS accept, if that was it.
pub fn certificate_refusal(error: &std::io::Error) -> Option<CertificateRefusal> {
    use rustls::CertificateError as C;
    match error.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => Some(CertificateRefusal::Expired),
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => Some(CertificateRefusal::UnknownCa),
        _ => None,
    }
}

/// How a TLS session's client is admitted: by the certificate it
/// presented (already verified against the client CA), or, without one,
/// by the token in its `Hello` (only a relay with a token file has one).
fn authenticate<S>(
    tls: &tokio_rustls::server::TlsStream<S>,
    shared: &Shared,
) -> (TransportAuth, Option<identity::Issued>) {
    let presented = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
    match (&shared.identities, presented) {
        (Some(ids), Some(cert)) => match ids.identify(cert) {
            Some(issued) if ids.revoked().borrow().covers(&issued) => {
                (TransportAuth::Refused(identity::revoked_message(&issued)), Some(issued))
            }
            Some(issued) => (TransportAuth::Authenticated, Some(issued)),
            // Verified by our CA yet not issued by us: cannot happen while
            // the CA lives only in this process; refused all the same.
            None => (TransportAuth::Refused("the relay does not know this client certificate: connect again (devnet enrols anew)".into()), None),
        },
        (Some(_), None) if shared.proto.token.is_empty() => (
            TransportAuth::Refused(
                "this relay admits laptops by a client certificate: connect with `devnet connect --context <your context>`, which enrols you through the API server".into(),
            ),
            None,
        ),
        _ => (TransportAuth::None, None),
    }
}

/// Answers [`devnet_proto::whoami`]: the address this relay sees the client
/// as, so doctor can tell whether the path to the pods rewrites it.
async fn answer_whoami(mut tcp: tokio::net::TcpStream, peer: SocketAddr) {
    use devnet_proto::whoami;
    let mut request = [0u8; whoami::REQUEST.len()];
    let read = tokio::time::timeout(LOGIN_TIMEOUT, tcp.read_exact(&mut request)).await;
    if !matches!(read, Ok(Ok(_))) || request != whoami::REQUEST {
        debug!(%peer, "neither TLS nor a whoami request; closing");
        return;
    }
    debug!(%peer, "whoami answered");
    let _ = tcp.write_all(whoami::reply(peer).as_bytes()).await;
    let _ = tcp.shutdown().await;
}

/// Serves `/healthz`, `/readyz` and `/metrics` over plain HTTP/1.1.
pub async fn serve_health(listener: TcpListener, metrics: Arc<Metrics>, shutdown: watch::Receiver<bool>) {
    loop {
        let Ok((mut tcp, _)) = listener.accept().await else {
            continue;
        };
        let (metrics, shutdown) = (metrics.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut req = [0u8; 1024];
            let n = match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut req)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let line = String::from_utf8_lossy(&req[..n]);
            let path = line.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = match path {
                "/healthz" => ("200 OK", "ok\n".to_owned()),
                "/readyz" if *shutdown.borrow() => ("503 Service Unavailable", "shutting down\n".to_owned()),
                "/readyz" => ("200 OK", "ready\n".to_owned()),
                "/metrics" => ("200 OK", metrics.render()),
                _ => ("404 Not Found", "try /healthz, /readyz or /metrics\n".to_owned()),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tcp.write_all(resp.as_bytes()).await;
        });
    }
}

/// Addresses of this host's interfaces, which the relay must never dial.
pub fn own_addresses() -> Result<Vec<std::net::IpAddr>> {
    Ok(if_addrs::get_if_addrs().context("listing interface addresses")?.into_iter().map(|i| i.ip()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_address_cannot_take_every_login_place() {
        let logging_in = LoggingIn::new(4, 2);
        let (a, b, c): (std::net::IpAddr, std::net::IpAddr, std::net::IpAddr) = (
            "192.0.2.1".parse().unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
            "192.0.2.2".parse().unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
            "192.0.2.3".parse().unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
        );
        let a1 = logging_in.admit(a);
        let a2 = logging_in.admit(a);
        assert!(a1.is_some() && a2.is_some());
        assert!(logging_in.admit(a).is_none(), "a third from the same address");
        let b1 = logging_in.admit(b);
        let b2 = logging_in.admit(b);
        assert!(b1.is_some() && b2.is_some());
        assert!(logging_in.admit(c).is_none(), "every place is taken");
        drop(a1);
        assert!(logging_in.admit(c).is_some(), "a place given back is free again");
        drop((a2, b1, b2));
        assert!(logging_in.per_source.lock().map(|m| m.len()).unwrap_or(9) <= 1, "counts are forgotten");
    }
}

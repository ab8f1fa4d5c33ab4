//! Who is connected: the per-user client certificates a relay in
//! Kubernetes issues at enrolment, and the revocation list it follows.
//!
//! Enrolment listens on the pod's loopback only, which nothing but the
//! kubelet's port-forward reaches: Kubernetes RBAC (`create
//! pods/portforward` in the relay's namespace) authorises each user, the
//! relay only signs. The client CA is made at start and kept in memory
//! ([`devnet_tls::identity::ClientCa`]): every certificate this process
//! issued is in [`Identities`], so a session's peer certificate names its
//! user and serial without parsing X.509, and a restart revokes them all
//! (laptops re-enrol on their next connect).
//!
//! Revocation is a directory (the ConfigMap `devnet-relay-revoked`, mounted)
//! with two files, `users` and `serials`, one entry a line; it is re-read
//! periodically (the kubelet rewrites mounted ConfigMaps), and a change
//! closes the live sessions it covers.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

pub use devnet_tls::identity::Issued;
use devnet_tls::identity::{ClientCa, EnrolReply, EnrolRequest, Refusal};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;

/// The revoked users and certificate serials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revoked {
    pub users: BTreeSet<String>,
    /// Lower-case hex, no separators.
    pub serials: BTreeSet<String>,
}

impl Revoked {
    /// From the two files' texts: one entry a line; blank lines and `#`
    /// comments are skipped; serials may be written with `:` and in any case.
    pub fn parse(users: &str, serials: &str) -> Self {
        let entries = |text: &str| -> Vec<String> {
            text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect()
        };
        Self {
            users: entries(users).into_iter().collect(),
            serials: entries(serials).into_iter().map(|s| normalise_serial(&s)).collect(),
        }
    }

    /// Reads `dir/users` and `dir/serials`; a missing file (or directory)
    /// is an empty list.
    pub fn read_dir(dir: &Path) -> std::io::Result<Self> {
        let read = |name: &str| match std::fs::read_to_string(dir.join(name)) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(e),
        };
        Ok(Self::parse(&read("users")?, &read("serials")?))
    }

    /// Whether `issued` is revoked, by its user or its serial.
    pub fn covers(&self, issued: &Issued) -> bool {
        self.users.contains(&issued.user) || self.serials.contains(&issued.serial)
    }
}

/// A serial as the relay keeps it: lower-case hex without separators.
pub fn normalise_serial(text: &str) -> String {
    text.chars().filter(char::is_ascii_hexdigit).collect::<String>().to_ascii_lowercase()
}

/// The relay's client identities: the CA, what it issued, what is revoked.
#[derive(Debug)]
pub struct Identities {
    ca: ClientCa,
    relay_ca_pem: String,
    lifetime: Duration,
    /// Keyed by the certificate's DER: what a TLS peer presents.
    issued: Mutex<HashMap<Vec<u8>, Issued>>,
    revoked: watch::Sender<Revoked>,
}

/// The message a revoked user reads.
pub fn revoked_message(issued: &Issued) -> String {
    format!(
        "the relay refused user {} (certificate {}): revoked; ask a cluster admin to run `devnet relay revoke --undo --user {}` if this is a mistake",
        issued.user, issued.serial, issued.user
    )
}

impl Identities {
    /// A fresh client CA; `relay_ca_pem` is handed to every laptop that enrols.
    pub fn new(relay_ca_pem: String, lifetime: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            ca: ClientCa::generate()?,
            relay_ca_pem,
            lifetime,
            issued: Mutex::default(),
            revoked: watch::Sender::new(Revoked::default()),
        })
    }

    /// The client CA certificate the TLS verifier trusts.
    pub fn client_ca_der(&self) -> rustls_pki_types::CertificateDer<'static> {
        self.ca.cert_der()
    }

    /// Answers an enrolment: a revoked user is refused.
    pub fn enrol(&self, req: &EnrolRequest) -> EnrolReply {
        if self.revoked.borrow().users.contains(&req.user) {
            return EnrolReply::Refused {
                reason: Refusal::Revoked,
                message: format!(
                    "the relay refused enrolment for user {}: revoked; ask a cluster admin to run `devnet relay revoke --undo --user {}` if this is a mistake",
                    req.user, req.user
                ),
            };
        }
        let now = SystemTime::now();
        match self.record(self.ca.issue_valid(req, now - Duration::from_secs(300), now + self.lifetime)) {
            Ok(issued) => EnrolReply::Issued {
                cert_pem: issued.cert_pem,
                relay_ca_pem: self.relay_ca_pem.clone(),
                serial: issued.serial,
                not_after: devnet_tls::identity::unix_secs(issued.not_after),
            },
            Err(message) => EnrolReply::Refused { reason: Refusal::BadRequest, message },
        }
    }

    /// Issues and records a certificate with the given validity (tests
    /// issue expired ones this way).
    pub fn issue_valid(
        &self,
        req: &EnrolRequest,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Issued, String> {
        self.record(self.ca.issue_valid(req, not_before, not_after))
    }

    fn record(&self, issued: Result<Issued, String>) -> Result<Issued, String> {
        let issued = issued?;
        if let Ok(mut map) = self.issued.lock() {
            // Expired ones can never log in again: forget them.
            let now = SystemTime::now();
            map.retain(|_, i| i.not_after > now);
            map.insert(issued.cert_der.clone(), issued.clone());
        }
        Ok(issued)
    }

    /// The identity a verified peer certificate belongs to.
    pub fn identify(&self, cert_der: &[u8]) -> Option<Issued> {
        self.issued.lock().ok()?.get(cert_der).cloned()
    }

    /// The revocation list, to be told of changes.
    pub fn revoked(&self) -> watch::Receiver<Revoked> {
        self.revoked.subscribe()
    }

    /// Replaces the revocation list; true when it changed.
    pub fn set_revoked(&self, revoked: Revoked) -> bool {
        self.revoked.send_if_modified(|now| {
            if *now == revoked {
                return false;
            }
            *now = revoked;
            true
        })
    }
}

/// Serves enrolment on `listener` (the pod's loopback): one request line,
/// one reply line, per connection.
pub async fn serve_enrol(listener: TcpListener, identities: Arc<Identities>, metrics: Arc<Metrics>) {
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            continue;
        };
        let (identities, metrics) = (identities.clone(), metrics.clone());
        tokio::spawn(async move {
            let (rd, mut wr) = tcp.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(rd).take(devnet_tls::identity::MAX_LINE as u64);
            let read = tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line)).await;
            let reply = match (read, serde_json::from_str::<EnrolRequest>(line.trim())) {
                (Ok(Ok(_)), Ok(req)) => {
                    let reply = identities.enrol(&req);
                    match &reply {
                        EnrolReply::Issued { serial, not_after, .. } => {
                            Metrics::add(&metrics.enrolments, 1);
                            info!(user = %req.user, %serial, not_after, "enrolled");
                        }
                        EnrolReply::Refused { reason, message } => {
                            Metrics::add(&metrics.enrolments_refused, 1);
                            warn!(user = %req.user, ?reason, %message, "enrolment refused");
                        }
                    }
                    reply
                }
                _ => {
                    Metrics::add(&metrics.enrolments_refused, 1);
                    debug!(%peer, "not an enrolment request");
                    EnrolReply::Refused {
                        reason: Refusal::BadRequest,
                        message: "not a devnet enrolment request (one JSON line): is this devnet 0.1 or newer?".into(),
                    }
                }
            };
            let mut text = serde_json::to_string(&reply).unwrap_or_default();
            text.push('\n');
            let _ = wr.write_all(text.as_bytes()).await;
            let _ = wr.shutdown().await;
        });
    }
}

/// Re-reads the revocation directory every `period`; a change reaches
/// every session through [`Identities::revoked`].
pub async fn watch_revoked(dir: std::path::PathBuf, identities: Arc<Identities>, period: Duration) {
    let mut last_error = None;
    loop {
        match Revoked::read_dir(&dir) {
            Ok(revoked) => {
                last_error = None;
                let (users, serials) = (revoked.users.len(), revoked.serials.len());
                if identities.set_revoked(revoked) {
                    info!(dir = %dir.display(), users, serials, "revocation list changed");
                }
            }
            Err(e) => {
                // Keep the last list: an unreadable file must not un-revoke anyone.
                let shown = e.to_string();
                if last_error.as_ref() != Some(&shown) {
                    warn!(dir = %dir.display(), error = %shown, "cannot read the revocation list; keeping the last one");
                }
                last_error = Some(shown);
            }
        }
        tokio::time::sleep(period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_lists_are_read_leniently() {
        let r = Revoked::parse("alice\n\n# left in March\n  bob  \n", "AB:CD:01\n");
        assert_eq!(r.users.iter().collect::<Vec<_>>(), ["alice", "bob"]);
        assert_eq!(r.serials.iter().collect::<Vec<_>>(), ["abcd01"]);
        let dir = std::env::temp_dir().join(format!("devnet-revoked-{}", std::process::id()));
        assert_eq!(Revoked::read_dir(&dir).expect("missing is empty"), Revoked::default());
    }
}

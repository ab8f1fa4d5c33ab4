//! Per-user client identities for relays that run in Kubernetes.
//!
//! A laptop enrols over the API server's port-forward, which only the
//! kubelet carries to the relay pod's loopback, so Kubernetes RBAC
//! (`create pods/portforward` in the relay's namespace) decides who may
//! enrol. The laptop sends its user name and a public key it generated
//! ([`EnrolRequest`]); the relay answers with a client certificate for that
//! key, signed by its [`ClientCa`], and the relay CA ([`EnrolReply`]). The
//! private key never leaves the laptop.
//!
//! The wire is one JSON line each way: small, typed, and easy to read in a
//! packet capture of a port-forward (nothing in it is secret).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PublicKeyData, SerialNumber, SignatureAlgorithm,
};
use serde::{Deserialize, Serialize};

/// The version of the enrolment exchange.
pub const ENROL_VERSION: u16 = 1;
/// How long a client certificate is valid.
pub const CLIENT_CERT_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// The longest line either side sends (a certificate chain in PEM is ~1.5 KiB).
pub const MAX_LINE: usize = 16 * 1024;

/// What a laptop asks the relay for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolRequest {
    pub version: u16,
    /// The user as the API server knows them (SelfSubjectReview), else the
    /// kubeconfig's user name. It names the identity in the relay's logs and
    /// in revocation; who may enrol at all is RBAC's decision.
    pub user: String,
    /// The laptop's public key: an uncompressed ECDSA P-256 point, hex.
    pub public_key: String,
}

/// The relay's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum EnrolReply {
    Issued {
        /// The client certificate, PEM.
        cert_pem: String,
        /// The CA the relay's own certificate is signed by: the laptop
        /// trusts it for the tunnel (it came over the API server's
        /// authenticated connection).
        relay_ca_pem: String,
        /// The certificate's serial, hex (what `devnet relay revoke --serial` takes).
        serial: String,
        /// When it expires, in seconds since the Unix epoch.
        not_after: u64,
    },
    Refused {
        reason: Refusal,
        message: String,
    },
}

/// Why the relay refuses an enrolment or a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Refusal {
    /// The user or the certificate is on the relay's revocation list.
    Revoked,
    /// The request is not one this relay understands.
    BadRequest,
}

/// A user name the relay accepts: printable, no spaces or control
/// characters (it lands in log fields and in the revocation list, one per
/// line), at most 256 bytes.
pub fn check_user(user: &str) -> Result<(), String> {
    if user.is_empty() || user.len() > 256 || user.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("{user:?} is not a user name devnet accepts (1 to 256 printable characters, no spaces)"));
    }
    Ok(())
}

/// A raw ECDSA P-256 public key, as a laptop sends it.
struct RawP256(Vec<u8>);

impl PublicKeyData for RawP256 {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

/// A key pair for a laptop's identity (ECDSA P-256), and the request that
/// enrols it.
pub struct ClientKey(KeyPair);

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientKey(<redacted>)")
    }
}

impl ClientKey {
    pub fn generate() -> anyhow::Result<Self> {
        Ok(Self(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?))
    }

    /// The request for `user`.
    pub fn request(&self, user: &str) -> EnrolRequest {
        EnrolRequest { version: ENROL_VERSION, user: user.to_owned(), public_key: hex(self.0.public_key_raw()) }
    }

    /// The private key, PEM (for the keyring, nowhere else).
    pub fn private_pem(&self) -> String {
        self.0.serialize_pem()
    }
}

/// A certificate the [`ClientCa`] issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub user: String,
    pub serial: String,
    pub not_after: SystemTime,
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
}

/// The CA that signs client certificates. It lives in the relay's memory
/// only: its key is never written anywhere, so nobody who can read a
/// Secret can mint identities, and a relay restart revokes every
/// certificate at once (laptops re-enrol without asking their user).
pub struct ClientCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for ClientCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCa").field("key", &"<redacted>").finish()
    }
}

impl ClientCa {
    pub fn generate() -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        // A name of its own: a certificate from another relay's CA (or this
        // relay's before a restart) is then an unknown issuer, not a bad
        // signature under the same name.
        let serial = random_serial()?;
        params.distinguished_name.push(DnType::CommonName, format!("devnet relay client CA {}", hex(&serial[..6])));
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        Ok(Self { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate()?)? })
    }

    /// The CA certificate, DER (the relay's client verifier trusts it).
    pub fn cert_der(&self) -> rustls_pki_types::CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// Issues a certificate for `req`, valid from now for `lifetime`.
    pub fn issue(&self, req: &EnrolRequest, lifetime: Duration) -> Result<Issued, String> {
        let now = SystemTime::now();
        // A few minutes back: a laptop whose clock runs late still accepts it.
        self.issue_valid(req, now - Duration::from_secs(300), now + lifetime)
    }

    /// Issues a certificate valid from `not_before` to `not_after` (tests
    /// issue one that has already expired).
    pub fn issue_valid(
        &self,
        req: &EnrolRequest,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Issued, String> {
        if req.version != ENROL_VERSION {
            return Err(format!(
                "enrolment version {} is not this relay's ({ENROL_VERSION}): upgrade devnet on this machine, or the relay",
                req.version
            ));
        }
        check_user(&req.user)?;
        let key = unhex(&req.public_key)
            .filter(|k| k.len() == 65 && k[0] == 4)
            .ok_or_else(|| "the public key is not an uncompressed ECDSA P-256 point in hex".to_owned())?;
        let serial = random_serial().map_err(|e| e.to_string())?;
        let build = || -> Result<rcgen::Certificate, rcgen::Error> {
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.distinguished_name.push(DnType::CommonName, req.user.as_str());
            params.distinguished_name.push(DnType::OrganizationName, "devnet users");
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.serial_number = Some(SerialNumber::from_slice(&serial));
            params.not_before = to_offset(not_before);
            params.not_after = to_offset(not_after);
            params.signed_by(&RawP256(key.clone()), &self.issuer)
        };
        let cert = build().map_err(|e| format!("signing the certificate: {e}"))?;
        Ok(Issued {
            user: req.user.clone(),
            serial: hex(&serial),
            not_after,
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
        })
    }
}

fn to_offset(t: SystemTime) -> time::OffsetDateTime {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// Seconds since the Unix epoch.
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A positive 16-byte serial (the top bit clear: DER integers are signed).
fn random_serial() -> anyhow::Result<[u8; 16]> {
    let mut serial = [0u8; 16];
    getrandom::fill(&mut serial).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    Ok(serial)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_certificate_names_the_user_and_carries_a_unique_serial() {
        let ca = ClientCa::generate().expect("CA");
        let key = ClientKey::generate().expect("key");
        let a = ca.issue(&key.request("alice@example.com"), CLIENT_CERT_LIFETIME).expect("issued");
        let b = ca.issue(&key.request("alice@example.com"), CLIENT_CERT_LIFETIME).expect("issued");
        assert_ne!(a.serial, b.serial);
        assert_eq!(a.user, "alice@example.com");
        let left = a.not_after.duration_since(SystemTime::now()).expect("in the future");
        assert!(left > CLIENT_CERT_LIFETIME - Duration::from_secs(60) && left <= CLIENT_CERT_LIFETIME, "{left:?}");
        assert!(!format!("{key:?}").contains("PRIVATE"), "{key:?}");
    }

    #[test]
    fn bad_requests_are_refused_with_the_reason() {
        let ca = ClientCa::generate().expect("CA");
        let key = ClientKey::generate().expect("key");
        let mut req = key.request("bob");
        req.public_key = "00ff".into();
        assert!(ca.issue(&req, CLIENT_CERT_LIFETIME).expect_err("short key").contains("P-256"));
        let req = key.request("bob smith");
        assert!(ca.issue(&req, CLIENT_CERT_LIFETIME).expect_err("space").contains("not a user name"));
        let mut req = key.request("bob");
        req.version = 9;
        assert!(ca.issue(&req, CLIENT_CERT_LIFETIME).expect_err("version").contains("upgrade devnet"));
    }

    #[test]
    fn replies_read_back() {
        let reply = EnrolReply::Refused { reason: Refusal::Revoked, message: "no".into() };
        let text = serde_json::to_string(&reply).expect("json");
        assert_eq!(text, r#"{"result":"refused","reason":"revoked","message":"no"}"#);
        assert_eq!(serde_json::from_str::<EnrolReply>(&text).expect("parse"), reply);
    }
}

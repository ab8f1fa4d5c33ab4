//! # devnet-tls: TLS material for the relay and its clients
//!
//! **Layer:** shared by the in-cluster relay, the laptop's engine and the
//! user side that installs the relay (`devnet-kube`), so none of them
//! depends on another for TLS.
//!
//! **What it does not do:** open sockets or keep secrets anywhere: it turns
//! PEM into rustls configurations and generates a CA and leaf, and
//! ([`link`]) moves a protocol connection's bytes over a stream it is given;
//! [`congestion`] restarts the link socket's BBR after a quiet spell, and
//! [`readahead`] reads the link's socket in large reads under TLS.
//!
//! The relay presents a leaf certificate for the name [`RELAY_SERVER_NAME`]
//! signed by a per-cluster CA; clients trust only that CA. The name is fixed
//! because the relay is reached by pod IP, node port or port-forward alike.

pub mod congestion;
pub mod identity;
pub mod link;
pub mod readahead;

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The DNS name in the relay's certificate and the client's SNI.
pub const RELAY_SERVER_NAME: &str = "devnet-relay";

/// A freshly generated CA and relay leaf, PEM encoded. Its `Debug` leaves
/// the private key out.
pub struct GeneratedCerts {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for GeneratedCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedCerts")
            .field("ca_pem", &self.ca_pem)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Generates a CA and a relay certificate signed by it.
pub fn generate() -> Result<GeneratedCerts> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.distinguished_name.push(DnType::CommonName, "devnet relay CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let leaf_key = KeyPair::generate()?;
    let mut leaf_params = CertificateParams::new(vec![RELAY_SERVER_NAME.to_owned()])?;
    leaf_params.distinguished_name.push(DnType::CommonName, RELAY_SERVER_NAME);
    let leaf = leaf_params.signed_by(&leaf_key, &ca)?;
    Ok(GeneratedCerts { ca_pem: ca.pem(), cert_pem: leaf.pem(), key_pem: leaf_key.serialize_pem() })
}

/// Writes generated certificates as `ca.pem`, `cert.pem` and `key.pem`
/// (the key readable by its owner only).
pub fn write_generated(dir: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let certs = generate()?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("ca.pem"), &certs.ca_pem)?;
    std::fs::write(dir.join("cert.pem"), &certs.cert_pem)?;
    let mut key =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(dir.join("key.pem"))?;
    std::io::Write::write_all(&mut key, certs.key_pem.as_bytes())?;
    Ok(())
}

fn ensure_provider() {
    // Several crates in one process may try; the first wins, the rest are no-ops.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The data path's crypto: ring's, with TLS13_AES_128_GCM_SHA256 first
/// (ring's default order puts AES-256 first). AES-128 has 10 rounds to
/// AES-256's 14 and the same GHASH, and is as strong as the X25519/P-256
/// key exchange that feeds it. Both ends use this order; a rustls server
/// follows the client's, so this is what they agree on.
fn data_path_provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

/// A certificate chain and its key from PEM files.
fn chain_and_key(cert_pem: &Path, key_pem: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let certs = CertificateDer::pem_file_iter(cert_pem)
        .with_context(|| format!("reading certificate {}", cert_pem.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificate {}", cert_pem.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", cert_pem.display());
    let key = PrivateKeyDer::from_pem_file(key_pem).with_context(|| format!("reading key {}", key_pem.display()))?;
    Ok((certs, key))
}

/// The relay's TLS configuration from a certificate chain and key in PEM.
pub fn server_config(cert_pem: &Path, key_pem: &Path) -> Result<Arc<rustls::ServerConfig>> {
    ensure_provider();
    let (certs, key) = chain_and_key(cert_pem, key_pem)?;
    let config = rustls::ServerConfig::builder_with_provider(data_path_provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// The relay's TLS configuration when it also admits clients by
/// certificate: a client may present one signed by `client_ca` (checked
/// here, expiry included) or none (a path proof, or a token login on a
/// relay that has a token file: the session decides).
pub fn server_config_with_clients(
    cert_pem: &Path,
    key_pem: &Path,
    client_ca: CertificateDer<'static>,
) -> Result<Arc<rustls::ServerConfig>> {
    ensure_provider();
    let (certs, key) = chain_and_key(cert_pem, key_pem)?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(client_ca)?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), data_path_provider())
        .allow_unauthenticated()
        .build()?;
    let config = rustls::ServerConfig::builder_with_provider(data_path_provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// How a laptop logs in to the relay: a bearer token (a relay an operator
/// runs with a token file), or a client certificate and its key (a relay
/// in Kubernetes, after enrolment). Both travel in the one credential
/// field a profile and devnetd's IPC carry (a redacting `Secret`); a
/// certificate credential is its PEM chain followed by its private key.
pub enum RelayCredential<'a> {
    Token(&'a str),
    Certificate { chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static> },
}

impl std::fmt::Debug for RelayCredential<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Token(_) => f.write_str("Token(<redacted>)"),
            Self::Certificate { chain, .. } => write!(f, "Certificate({} certificates, key <redacted>)", chain.len()),
        }
    }
}

const CERT_BEGIN: &str = "-----BEGIN CERTIFICATE-----";

impl<'a> RelayCredential<'a> {
    /// Reads a credential: PEM with a certificate is a certificate
    /// credential (and must hold a key), anything else a token.
    pub fn parse(text: &'a str) -> Result<Self> {
        if !text.trim_start().starts_with(CERT_BEGIN) {
            return Ok(Self::Token(text));
        }
        let chain = CertificateDer::pem_slice_iter(text.as_bytes()).collect::<Result<Vec<_>, _>>().context(
            "the client certificate is not valid PEM: run `devnet relay credentials --forget` and connect again",
        )?;
        let key = PrivateKeyDer::from_pem_slice(text.as_bytes()).context(
            "the relay credential holds a client certificate without its private key: connect with `devnet connect --context <context>`, which enrols anew",
        )?;
        Ok(Self::Certificate { chain, key })
    }

    /// The token the protocol's `Hello` carries: none with a certificate.
    pub fn hello_token(&self) -> &'a str {
        match self {
            Self::Token(t) => t,
            Self::Certificate { .. } => "",
        }
    }
}

/// The credential text for a certificate and its key.
pub fn certificate_credential(cert_pem: &str, key_pem: &str) -> String {
    format!("{}\n{}", cert_pem.trim_end(), key_pem.trim_end())
}

/// A client configuration that trusts only the CA in `ca_pem` and, with a
/// certificate credential, presents it.
pub fn client_config_for(ca_pem: &str, credential: &str) -> Result<Arc<rustls::ClientConfig>> {
    ensure_provider();
    let roots = roots_from_pem(ca_pem)?;
    let builder = rustls::ClientConfig::builder_with_provider(data_path_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    Ok(Arc::new(match RelayCredential::parse(credential)? {
        RelayCredential::Token(_) => builder.with_no_client_auth(),
        RelayCredential::Certificate { chain, key } => {
            builder.with_client_auth_cert(chain, key).context("the client certificate does not match its key")?
        }
    }))
}

fn roots_from_pem(pem: &str) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert.context("parsing the relay CA")?)?;
    }
    anyhow::ensure!(!roots.is_empty(), "the relay CA holds no certificate");
    Ok(roots)
}

/// A client TLS configuration that trusts only the CA in `ca_pem`.
pub fn client_config(ca_pem: &Path) -> Result<Arc<rustls::ClientConfig>> {
    ensure_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).with_context(|| format!("reading CA {}", ca_pem.display()))? {
        roots.add(cert.with_context(|| format!("parsing CA {}", ca_pem.display()))?)?;
    }
    anyhow::ensure!(!roots.is_empty(), "{} holds no CA certificate", ca_pem.display());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(data_path_provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// A client TLS configuration that trusts only the CA in `pem` (as kept in
/// the keyring, never on disk).
pub fn client_config_from_pem(pem: &str) -> Result<Arc<rustls::ClientConfig>> {
    ensure_provider();
    let roots = roots_from_pem(pem)?;
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(data_path_provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// The server name clients verify.
pub fn relay_server_name() -> ServerName<'static> {
    ServerName::try_from(RELAY_SERVER_NAME).expect("valid DNS name")
}

#[cfg(test)]
mod tests {
    /// Fresh certificates, the relay's written to files in `dir` as
    /// `server_config` reads them.
    fn certificates_in(dir: &std::path::Path) -> (super::GeneratedCerts, std::path::PathBuf, std::path::PathBuf) {
        let certs = super::generate().expect("certificates");
        std::fs::create_dir_all(dir).expect("dir");
        std::fs::write(dir.join("cert.pem"), &certs.cert_pem).expect("cert");
        std::fs::write(dir.join("key.pem"), &certs.key_pem).expect("key");
        (certs, dir.join("cert.pem"), dir.join("key.pem"))
    }

    #[test]
    fn both_ends_agree_on_aes_128_gcm() {
        use rustls_pki_types::pem::PemObject;
        let dir = std::env::temp_dir().join(format!("devnet-tls-suite-{}", std::process::id()));
        let (certs, cert, key) = certificates_in(&dir);
        let client_ca = rustls_pki_types::CertificateDer::from_pem_slice(certs.ca_pem.as_bytes()).expect("a CA");
        // Token relays and certificate relays, with the configs each side
        // really builds.
        let pairs = [
            (
                super::server_config(&cert, &key).expect("server config"),
                super::client_config_from_pem(&certs.ca_pem).expect("client config"),
            ),
            (
                super::server_config_with_clients(&cert, &key, client_ca).expect("server config with clients"),
                super::client_config_for(&certs.ca_pem, "a token").expect("client config for a token"),
            ),
        ];
        let _ = std::fs::remove_dir_all(&dir);
        for (server, client) in pairs {
            let (c, _) = handshake(server, client);
            let suite = c.negotiated_cipher_suite().map(|s| s.suite());
            assert_eq!(suite, Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
        }
    }

    /// A client and a server connection past their handshake, in memory.
    fn handshake(
        server: std::sync::Arc<rustls::ServerConfig>,
        client: std::sync::Arc<rustls::ClientConfig>,
    ) -> (rustls::ClientConnection, rustls::ServerConnection) {
        let mut c = rustls::ClientConnection::new(client, super::relay_server_name()).expect("client");
        let mut s = rustls::ServerConnection::new(server).expect("server");
        for _ in 0..10 {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).expect("client write");
            s.read_tls(&mut &buf[..]).expect("server read");
            s.process_new_packets().expect("server process");
            let mut buf = Vec::new();
            s.write_tls(&mut buf).expect("server write");
            c.read_tls(&mut &buf[..]).expect("client read");
            c.process_new_packets().expect("client process");
        }
        assert!(!c.is_handshaking() && !s.is_handshaking());
        (c, s)
    }

    #[test]
    fn a_bounded_link_writes_three_records_that_fit_one_offload_packet() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("devnet-tls-ahead-{}", std::process::id()));
        let (certs, cert, key) = certificates_in(&dir);
        let server = super::server_config(&cert, &key).expect("server config");
        let _ = std::fs::remove_dir_all(&dir);
        let client = super::client_config_from_pem(&certs.ca_pem).expect("client config");
        // The largest TCP payload one segmentation-offload packet carries
        // (64 KiB less the headers, in whole 1448-byte segments).
        const ONE_PACKET: usize = 45 * 1448;
        // What one write of a long burst takes, and the bytes it puts on the wire.
        fn burst<D>(conn: &mut rustls::ConnectionCommon<D>) -> (usize, usize) {
            let taken = conn.writer().write(&[7u8; 256 * 1024]).expect("write");
            let mut wire = Vec::new();
            conn.write_tls(&mut wire).expect("write_tls");
            (taken, wire.len())
        }
        let (mut c, _) = handshake(server.clone(), client.clone());
        let default = burst(&mut c);
        let (mut c, mut s) = handshake(server, client);
        super::link::bound_write_ahead(&mut c);
        super::link::bound_write_ahead(&mut s);
        let bounded = [burst(&mut c), burst(&mut s)];
        // rustls' default: four records, 88 bytes past one packet.
        assert_eq!(default, (64 * 1024, 4 * (16 * 1024 + 22)));
        assert!(default.1 > ONE_PACKET);
        // Bounded, on both ends: three records, one packet.
        for (taken, wire) in bounded {
            assert_eq!((taken, wire), (super::link::WRITE_AHEAD, 3 * (16 * 1024 + 22)));
            assert!(wire <= ONE_PACKET, "{wire} bytes");
        }
    }

    #[test]
    fn a_credential_is_a_token_or_a_certificate_with_its_key() {
        use super::RelayCredential;
        let token = RelayCredential::parse("s3cret").expect("a token");
        assert_eq!(token.hello_token(), "s3cret");
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
        let certs = super::generate().expect("certificates");
        let both = super::certificate_credential(&certs.cert_pem, &certs.key_pem);
        let cert = RelayCredential::parse(&both).expect("a certificate");
        assert_eq!(cert.hello_token(), "", "a certificate login sends no token");
        assert!(!format!("{cert:?}").contains("PRIVATE"), "{cert:?}");
        let err = RelayCredential::parse(&certs.cert_pem).expect_err("no key");
        assert!(format!("{err:#}").contains("without its private key"), "{err:#}");
        super::client_config_for(&certs.ca_pem, &both).expect("a client configuration presenting it");
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        let certs = super::generate().expect("certificates");
        let shown = format!("{certs:?}");
        assert!(!shown.contains(certs.key_pem.trim()) && !shown.contains("PRIVATE KEY"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}

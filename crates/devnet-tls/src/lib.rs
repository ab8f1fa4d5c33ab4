//! # devnet-tls: TLS material for the relay and its clients
//!
//! **Layer:** shared by the in-cluster relay, the laptop's engine and the
//! user side that installs the relay (`devnet-kube`), so none of them
//! depends on another for TLS.
//!
//! **What it does not do:** open sockets or keep secrets anywhere: it turns
//! PEM into rustls configurations and generates a CA and leaf.
//!
//! The relay presents a leaf certificate for the name [`RELAY_SERVER_NAME`]
//! signed by a per-cluster CA; clients trust only that CA. The name is fixed
//! because the relay is reached by pod IP, node port or port-forward alike.

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

/// The relay's TLS configuration from a certificate chain and key in PEM.
pub fn server_config(cert_pem: &Path, key_pem: &Path) -> Result<Arc<rustls::ServerConfig>> {
    ensure_provider();
    let certs = CertificateDer::pem_file_iter(cert_pem)
        .with_context(|| format!("reading certificate {}", cert_pem.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificate {}", cert_pem.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", cert_pem.display());
    let key = PrivateKeyDer::from_pem_file(key_pem).with_context(|| format!("reading key {}", key_pem.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(data_path_provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
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
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert.context("parsing the relay CA")?)?;
    }
    anyhow::ensure!(!roots.is_empty(), "the relay CA holds no certificate");
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

/// Writes `data`, or flushes when there is nothing to write (returns 0
/// then): one call for "make progress on the send side" in a `select!`.
pub async fn write_or_flush<W: tokio::io::AsyncWrite + Unpin>(wr: &mut W, data: &[u8]) -> std::io::Result<usize> {
    use tokio::io::AsyncWriteExt;
    if data.is_empty() { wr.flush().await.map(|()| 0) } else { wr.write(data).await }
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_ends_agree_on_aes_128_gcm() {
        let certs = super::generate().expect("certificates");
        let dir = std::env::temp_dir().join(format!("devnet-tls-suite-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("cert.pem"), &certs.cert_pem).expect("cert");
        std::fs::write(dir.join("key.pem"), &certs.key_pem).expect("key");
        let server = super::server_config(&dir.join("cert.pem"), &dir.join("key.pem")).expect("server config");
        let client = super::client_config_from_pem(&certs.ca_pem).expect("client config");
        let _ = std::fs::remove_dir_all(&dir);
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
        let suite = c.negotiated_cipher_suite().map(|s| s.suite());
        assert_eq!(suite, Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        let certs = super::generate().expect("certificates");
        let shown = format!("{certs:?}");
        assert!(!shown.contains(certs.key_pem.trim()) && !shown.contains("PRIVATE KEY"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}

//! The relay's client credentials in the OS keyring, one entry per
//! cluster: the user's own client certificate, its private key (made on
//! this machine, never sent anywhere) and the relay CA, as enrolment gave
//! them ([`crate::enrol`]); never written to disk in clear. On Linux the store is the kernel keyring (keyutils: the
//! session keyring, with the entry also linked into the user's persistent
//! keyring so the next process finds it), which works headless; on macOS the Keychain and on Windows the Credential Manager.
//!
//! Under sudo the entry belongs to the invoking user: `devnet` re-runs
//! itself as that user for keyring calls (see the CLI's `credential`
//! command), so root never holds the user's secrets in its own keyring.

use serde::{Deserialize, Serialize};

/// What enrolment gave this user for one relay. Its `Debug` leaves the
/// private key out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientIdentity {
    /// Who the certificate names.
    pub user: String,
    /// Its serial, hex (what an admin revokes with `--serial`).
    pub serial: String,
    /// When it expires, seconds since the Unix epoch.
    pub not_after: u64,
    pub cert_pem: String,
    pub key_pem: String,
    /// The CA of the relay's own certificate.
    pub relay_ca_pem: String,
    /// The relay process that issued it ([`crate::relay::RelayState::instance`]):
    /// its client CA lives in that process only, so a restarted relay
    /// knows the certificate no more and the laptop enrols again.
    #[serde(default)]
    pub relay_instance: String,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("user", &self.user)
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .field("relay_ca_sha256", &crate::relay::ca_fingerprint(&self.relay_ca_pem))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl ClientIdentity {
    /// The credential the engine logs in with (certificate and key, in the
    /// profile's redacting `Secret`).
    pub fn credential(&self) -> String {
        devnet_tls::certificate_credential(&self.cert_pem, &self.key_pem)
    }

    /// Seconds it is still valid at `now` (0 when expired).
    pub fn seconds_left(&self, now: std::time::SystemTime) -> u64 {
        self.not_after.saturating_sub(devnet_tls::identity::unix_secs(now))
    }
}

const SERVICE: &str = "devnet-relay";

/// A keyring failure, with the fix.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(
        "the OS keyring is not available ({0}); on Linux devnet uses the kernel keyring (keyutils), which a container may block"
    )]
    Unavailable(String),
    #[error("the keyring entry for {0} is damaged; run `devnet relay credentials --forget` and connect again")]
    Damaged(String),
}

/// The keyring account name for a relay: its cluster's API server and its
/// namespace (`https://api:6443#devnet`).
pub fn account(server: &str, namespace: &str) -> String {
    format!("{}#{}", server.trim_end_matches('/'), namespace)
}

fn entry(account: &str) -> Result<keyring::Entry, CredentialError> {
    #[cfg(target_os = "linux")]
    possess_session_keyring()?;
    keyring::Entry::new(SERVICE, account).map_err(|e| CredentialError::Unavailable(e.to_string()))
}

/// Makes sure this process possesses a session keyring. A desktop login
/// has one (pam_keyinit); a service, a cron job or `sudo` without
/// pam_keyinit has none, and then the kernel hands out the shared
/// user-session keyring *without possession*: every add, search and link
/// is refused (EACCES, which `keyring` reports as "no entry"). With a
/// session keyring of our own, `keyring` links the per-user persistent
/// keyring into it, and entries outlive the process there.
#[cfg(target_os = "linux")]
fn possess_session_keyring() -> Result<(), CredentialError> {
    use linux_keyutils::{KeyRing, KeyRingIdentifier};
    KeyRing::from_special_id(KeyRingIdentifier::Session, true)
        .map(drop)
        .map_err(|e| CredentialError::Unavailable(format!("no session keyring: {e:?}")))
}

/// The stored identity, if any. An entry an older devnet stored (a shared
/// token and CA) is no identity: `None`, and the next enrolment replaces it.
pub fn load(account: &str) -> Result<Option<ClientIdentity>, CredentialError> {
    match entry(account)?.get_password() {
        Ok(text) => Ok(serde_json::from_str(&text).ok()),
        Err(keyring::Error::NoEntry) => Ok(None),
        Err(e) => Err(CredentialError::Unavailable(e.to_string())),
    }
}

/// Stores (replaces) the identity for `account`.
pub fn store(account: &str, identity: &ClientIdentity) -> Result<(), CredentialError> {
    let text = serde_json::to_string(identity).map_err(|e| CredentialError::Unavailable(e.to_string()))?;
    entry(account)?.set_password(&text).map_err(|e| CredentialError::Unavailable(e.to_string()))
}

/// Forgets the stored credentials; `Ok(false)` when there were none.
pub fn forget(account: &str) -> Result<bool, CredentialError> {
    match entry(account)?.delete_credential() {
        Ok(()) => Ok(true),
        Err(keyring::Error::NoEntry) => Ok(false),
        Err(e) => Err(CredentialError::Unavailable(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the real kernel keyring (keyutils): store, load, replace, forget.
    #[test]
    fn round_trip_through_the_kernel_keyring() {
        let account = format!("https://test.invalid:6443#{}", std::process::id());
        let id = ClientIdentity {
            user: "alice".into(),
            serial: "01ab".into(),
            not_after: 1,
            cert_pem: "C".into(),
            key_pem: "K".into(),
            relay_ca_pem: "CA".into(),
            relay_instance: "uid/2026-12-02T06:00:00Z".into(),
        };
        store(&account, &id).expect("store");
        assert_eq!(load(&account).expect("load").as_ref(), Some(&id));
        let newer = ClientIdentity { serial: "02cd".into(), ..id.clone() };
        store(&account, &newer).expect("replace");
        assert_eq!(load(&account).expect("load").map(|c| c.serial), Some("02cd".into()));
        assert!(!format!("{id:?}").contains("\"K\""), "{id:?}");
        // What an older devnet kept (a shared token) reads as no identity.
        entry(&account).expect("entry").set_password(r#"{"token":"t","ca_pem":"CA"}"#).expect("old entry");
        assert_eq!(load(&account).expect("load"), None);
        assert!(forget(&account).expect("forget"));
        assert_eq!(load(&account).expect("load"), None);
        assert!(!forget(&account).expect("forget again"));
    }
}

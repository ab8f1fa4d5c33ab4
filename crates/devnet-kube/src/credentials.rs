//! The relay's client credentials (token and CA) in the OS keyring, one
//! entry per cluster: fetched once through the API, never written to disk
//! in clear. On Linux the store is the kernel keyring (keyutils: the
//! session keyring, with the entry also linked into the user's persistent
//! keyring so the next process finds it), which works headless; on macOS the Keychain and on Windows the Credential Manager.
//!
//! Under sudo the entry belongs to the invoking user: `devnet` re-runs
//! itself as that user for keyring calls (see the CLI's `credential`
//! command), so root never holds the user's secrets in its own keyring.

use crate::relay::Credentials;

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

/// The stored credentials, if any.
pub fn load(account: &str) -> Result<Option<Credentials>, CredentialError> {
    match entry(account)?.get_password() {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|_| CredentialError::Damaged(account.to_owned())),
        Err(keyring::Error::NoEntry) => Ok(None),
        Err(e) => Err(CredentialError::Unavailable(e.to_string())),
    }
}

/// Stores (replaces) the client's half of `creds`.
pub fn store(account: &str, creds: &Credentials) -> Result<(), CredentialError> {
    let text = serde_json::to_string(&creds.for_client()).map_err(|e| CredentialError::Unavailable(e.to_string()))?;
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
        let creds = Credentials { token: "t1".into(), ca_pem: "CA".into(), cert_pem: "C".into(), key_pem: "K".into() };
        store(&account, &creds).expect("store");
        let back = load(&account).expect("load").expect("stored");
        assert_eq!(back, creds.for_client(), "only the client's half is kept");
        let newer = Credentials { token: "t2".into(), ..creds.for_client() };
        store(&account, &newer).expect("replace");
        assert_eq!(load(&account).expect("load").map(|c| c.token), Some("t2".into()));
        assert!(forget(&account).expect("forget"));
        assert_eq!(load(&account).expect("load"), None);
        assert!(!forget(&account).expect("forget again"));
    }
}

//! The relay's client credentials (token and CA) in the OS keyring, one
//! entry per cluster: fetched once through the API, never written to disk
//! in clear. On Linux the store is the kernel keyring (keyutils: the
//! user's session keyring, linked to their persistent keyring), which works
//! headless; on macOS the Keychain and on Windows the Credential Manager.
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

/// The keyring account name for a cluster: its API server and the relay's namespace.
pub fn account(server: &str) -> String {
    format!("{}#{}", server.trim_end_matches('/'), crate::relay::NAMESPACE)
}

fn entry(account: &str) -> Result<keyring::Entry, CredentialError> {
    keyring::Entry::new(SERVICE, account).map_err(|e| CredentialError::Unavailable(e.to_string()))
}

/// The same entry in the session keyring only. Some kernels and containers
/// refuse links into the per-user persistent keyring (EACCES, which
/// `keyring` reports as "no entry"); the session keyring still works.
#[cfg(target_os = "linux")]
fn session_only_entry(account: &str) -> Result<keyring::Entry, CredentialError> {
    let mut cred = keyring::keyutils::KeyutilsCredential::new_with_target(None, SERVICE, account)
        .map_err(|e| CredentialError::Unavailable(e.to_string()))?;
    cred.persistent = None;
    Ok(keyring::Entry::new_with_credential(Box::new(cred)))
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
    match entry(account)?.set_password(&text) {
        Ok(()) => Ok(()),
        #[cfg(target_os = "linux")]
        Err(keyring::Error::NoEntry) => {
            tracing::debug!("the persistent keyring refused the link; keeping the entry in the session keyring");
            session_only_entry(account)?.set_password(&text).map_err(|e| CredentialError::Unavailable(e.to_string()))
        }
        Err(e) => Err(CredentialError::Unavailable(e.to_string())),
    }
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

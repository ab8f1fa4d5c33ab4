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
    #[error("the OS keyring is not available ({0}); on Linux devnet uses the kernel keyring (keyutils), which a container may block")]
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

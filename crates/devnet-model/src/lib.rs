//! # devnet-model: the types every devnet client and the helper share
//!
//! **Layer:** plain data with serde. The CLI, the tray app, the IDE
//! preflight and `devnetd` all speak in these types: the connection
//! [`profile`] (what to reach, validated up front), the engine's
//! [`status`], [`doctor`]'s report, the [`preflight`] report IDEs read, and [`Secret`] for the
//! relay token.
//!
//! **What it does not do:** talk to anything. No sockets, no tokio, no OS
//! calls; the only file it reads is a profile (and its token file) that the
//! user's own process names.

pub mod doctor;
pub mod preflight;
pub mod profile;
pub mod status;

use std::fmt;

use serde::{Deserialize, Serialize};

/// A secret (the relay token): its `Debug` and `Display` never show it, so
/// it cannot reach a log line by accident. Serialised as the plain string,
/// because it does travel to devnetd over the IPC socket, and nowhere else.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let s = Secret::new("hunter2-token");
        assert!(!format!("{s:?}").contains("hunter2"));
        let p = profile::ProfileFile { token: Some(s.clone()), ..Default::default() };
        assert!(!format!("{p:?}").contains("hunter2"), "{p:?}");
        assert_eq!(s.expose(), "hunter2-token");
        assert_eq!(serde_json::to_string(&s).expect("json"), "\"hunter2-token\"");
    }
}

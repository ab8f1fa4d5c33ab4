//! Fixtures shared by the engine's unit tests.

use std::path::Path;

use crate::config::{Profile, ProfileFile};

/// A valid profile whose files live in `dir`.
pub(crate) fn profile(dir: &Path) -> Profile {
    let token = dir.join("token");
    std::fs::write(&token, "secret\n").expect("write token");
    ProfileFile {
        relay: Some("10.60.20.11:31443".into()),
        token_file: Some(token),
        relay_ca: Some(dir.join("ca.pem")),
        cidrs: vec!["10.244.0.0/16".into(), "10.96.0.0/16".into()],
        dns_server: Some("10.96.0.10".into()),
        state_dir: Some(dir.to_owned()),
        ..Default::default()
    }
    .validate()
    .expect("valid profile")
}

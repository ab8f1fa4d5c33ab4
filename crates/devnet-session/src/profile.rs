//! A profile file's contents as devnetd takes them: the token and CA read
//! here, as the user, and sent; no path travels.

use std::path::Path;

use anyhow::{Context, Result, bail};
use devnet_model::Secret;
use devnet_model::profile::{ConfigError, ProfileFile};

/// The token and CA of `file`, read as this user, and `file` without any
/// field that names a path on this machine. Fields devnetd decides itself
/// (`state-dir`, `resolv-conf`) are refused with the reason.
pub fn contents(mut file: ProfileFile) -> Result<(ProfileFile, Secret, String)> {
    let token = match file.token.take() {
        Some(t) => t,
        None => {
            let path = file.token_file.take().ok_or(ConfigError::Missing("token-file"))?;
            let text = read(&path, "token")?;
            let token = text.trim();
            if token.is_empty() {
                return Err(ConfigError::EmptyToken(path).into());
            }
            Secret::new(token)
        }
    };
    file.token_file = None;
    let ca = match (file.relay_ca_pem.take(), file.relay_ca.take()) {
        (Some(pem), _) => pem,
        (None, Some(path)) => read(&path, "relay CA")?,
        (None, None) => return Err(ConfigError::Missing("relay-ca").into()),
    };
    let decided: Vec<&str> = file.named_paths();
    if !decided.is_empty() {
        bail!(
            "{} is set by devnetd, not by a profile (it runs as root and never writes where a client says): remove it, or use `sudo devnet connect --foreground`",
            decided.join(", ")
        );
    }
    Ok((file, token, ca))
}

/// Checks a request the way devnetd will, so bad input fails in the
/// client, with its words, before anything is asked of the helper.
pub fn check(req: &devnet_ipc::message::ConnectRequest) -> Result<()> {
    let mut file = req.profile.clone();
    file.token = Some(req.token.clone());
    file.relay_ca_pem = Some(req.relay_ca_pem.clone());
    file.validate()?;
    Ok(())
}

fn read(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read the {what} file {}", path.display()))
}

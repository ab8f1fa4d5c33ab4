//! Start at login: an XDG autostart entry in the user's own config
//! (`$XDG_CONFIG_HOME/autostart`), the way desktop sessions start GUI
//! programs with their display (a systemd user unit would lack it).

use std::path::PathBuf;

use anyhow::{Context, Result};

const FILE: &str = "dev.devnet.tray.desktop";

fn path() -> Option<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(config.join("autostart").join(FILE))
}

/// The entry's text for this program.
fn entry(exe: &std::path::Path) -> String {
    // Quoted per the Desktop Entry spec's Exec rules.
    let quoted =
        exe.display().to_string().replace('\\', "\\\\").replace('"', "\\\"").replace('`', "\\`").replace('$', "\\$");
    // TryExec: once the package is removed, the session skips this entry
    // instead of failing to start a program that is gone (the package's
    // scripts never touch a user's home).
    let plain = exe.display().to_string().replace('\\', "\\\\");
    format!(
        "[Desktop Entry]\nType=Application\nName=devnet\nComment=Reach your Kubernetes cluster's network\nTryExec={plain}\nExec=\"{quoted}\"\nIcon=devnet\nTerminal=false\nX-GNOME-Autostart-enabled=true\n"
    )
}

pub fn autostart_enabled() -> bool {
    path().is_some_and(|p| p.exists())
}

pub fn set_autostart(enabled: bool) -> Result<()> {
    let path = path().context("neither XDG_CONFIG_HOME nor HOME is set")?;
    if enabled {
        let exe = std::env::current_exe().context("finding this program")?;
        std::fs::create_dir_all(path.parent().context("autostart folder")?)?;
        std::fs::write(&path, entry(&exe)).with_context(|| format!("writing {}", path.display()))
    } else {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", path.display()))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_quotes_the_program_path() {
        let e = entry(std::path::Path::new("/opt/my apps/dev$net/devnet-tray"));
        assert!(e.contains("\nExec=\"/opt/my apps/dev\\$net/devnet-tray\"\n"), "{e}");
        assert!(e.contains("\nTryExec=/opt/my apps/dev$net/devnet-tray\n"), "{e}");
        assert!(e.starts_with("[Desktop Entry]\nType=Application\n"));
    }
}

//! The journal of OS changes: each is recorded *before* it is made, so a
//! crash at any point leaves a record of everything that may exist. The next
//! start undoes the record (see [`crate::os::platform::undo`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// One change to the OS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Entry {
    /// A TUN device we created.
    Tun { name: String },
    /// A route we added (in our table).
    Route { dst: IpNet, dev: String },
    /// The policy rule sending unmarked traffic to our table.
    Rule { ipv6: bool },
    /// A route via a forwarding node in `table` (the main path or the trial table).
    ViaRoute { dst: IpNet, via: std::net::IpAddr, table: String },
    /// The rule sending gateway probes to the trial table.
    GatewayRule { ipv6: bool },
    /// A resolv.conf we rewrote; `backup` holds the original, byte for byte,
    /// and `symlink` where the path pointed when it was a symlink (systemd-
    /// resolved's stub-resolv.conf, NetworkManager's), to put the link back.
    ResolvConf {
        path: std::path::PathBuf,
        backup: std::path::PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        symlink: Option<std::path::PathBuf>,
    },
    /// Per-link DNS settings in systemd-resolved for our link `ifname`.
    /// They live as long as the link: undoing the [`Entry::Tun`] undoes them.
    ResolvedLink { ifname: String },
}

/// The on-disk journal.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    entries: Vec<Entry>,
}

impl Journal {
    /// The journal's file name inside the state directory.
    pub const FILE: &'static str = "journal.json";

    /// Opens the journal in `state_dir`, loading what a previous run left.
    pub fn open(state_dir: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("creating state directory {}", state_dir.display()))?;
        let path = state_dir.join(Self::FILE);
        let entries = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("journal {} is corrupt; inspect and delete it by hand", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Self { path, entries })
    }

    /// What the journal holds.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Records a change about to be made. Durable before it returns.
    pub fn record(&mut self, entry: Entry) -> anyhow::Result<()> {
        if !self.entries.contains(&entry) {
            self.entries.push(entry);
            self.persist()?;
        }
        Ok(())
    }

    /// Forgets a change that was undone.
    pub fn forget(&mut self, entry: &Entry) -> anyhow::Result<()> {
        self.entries.retain(|e| e != entry);
        self.persist()
    }

    fn persist(&self) -> anyhow::Result<()> {
        if self.entries.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(()),
            };
        }
        // Write-then-rename so a crash never leaves half a journal.
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(&self.entries)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening_and_empty_journals_leave_no_file() {
        let dir = std::env::temp_dir().join(format!("devnet-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut j = Journal::open(&dir).expect("open");
        let tun = Entry::Tun { name: "devnet0".into() };
        let route = Entry::Route { dst: "10.96.0.0/16".parse().expect("net"), dev: "devnet0".into() };
        j.record(tun.clone()).expect("record");
        j.record(route.clone()).expect("record");
        j.record(route.clone()).expect("record twice is a no-op");
        let reopened = Journal::open(&dir).expect("reopen");
        assert_eq!(reopened.entries(), &[tun.clone(), route.clone()]);
        j.forget(&route).expect("forget");
        j.forget(&tun).expect("forget");
        assert!(!dir.join(Journal::FILE).exists());
    }
}

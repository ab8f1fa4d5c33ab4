//! Process start-up for devnet's data-path binaries: the relay, devnetd
//! and the CLI's foreground engine call [`reexec_with_fast_copies`] first
//! thing in `main`.
//!
//! **Why:** on AMD CPUs with ERMS/FSRM, glibc (Debian 12's 2.36, in the
//! relay's static binary too) copies anything over 2 KiB with `rep movsb`,
//! and there `rep movsb` moves 16 KiB at 2.2–3.4 GB/s instead of 50–110
//! GB/s when the destination lies 1–15 bytes past the source modulo 4096
//! (measured on the lab's AMD EPYC, `bench/copy-alignment.sh`; glibc's
//! vector loop copies at full speed whatever the distance). rustls copies
//! each received TLS record's payload into a new buffer
//! (`Payload::into_vec`): in a lab profile of an upload that one copy was
//! 28 % of the relay's CPU against 10 % for decrypting the same bytes,
//! which only the slow case explains (the buffers' places repeat from
//! record to record, so a connection can stay on a bad distance). glibc
//! reads its tunables only from the environment at start-up, so the
//! process execs itself once with
//! `GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=` [`NEVER`]: no copy
//! uses `rep movsb`, and copies past the non-temporal threshold still use
//! non-temporal stores. Newer glibc stops preferring `rep movsb` on these
//! CPUs (sourceware bug 30994); the setting then changes nothing.
//!
//! **What it does not do:** change anything elsewhere (other CPUs, musl,
//! macOS, Windows), override a `glibc.cpu.x86_rep_movsb_threshold` the user
//! set, or exec more than once ([`REEXECED`] marks the second start). The
//! tunable is inherited by what the process spawns (a kubeconfig's exec
//! plugin, for one), where it only selects a copy loop.

/// `rep movsb` for no copy size: glibc's memmove uses it only for sizes
/// above this threshold and below its stop threshold.
pub const NEVER: u64 = u64::MAX;

/// The tunable that [`reexec_with_fast_copies`] sets.
pub const REP_MOVSB_THRESHOLD: &str = "glibc.cpu.x86_rep_movsb_threshold";

/// Set in the environment of the process [`reexec_with_fast_copies`]
/// starts, so a start that still lacks the tunable (an environment a
/// loader cleans) does not exec again.
pub const REEXECED: &str = "DEVNET_REEXECED_FOR_COPIES";

/// What decides the start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// The CPU's vendor is AMD.
    pub amd: bool,
    /// The CPU has ERMS or FSRM, so glibc picks its `rep movsb` copies.
    pub rep_movsb: bool,
    /// `GLIBC_TUNABLES` as the process found it.
    pub tunables: Option<String>,
    /// [`REEXECED`] is set.
    pub reexeced: bool,
}

/// What to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Go on as started; the reason, for the log.
    Keep(&'static str),
    /// Exec this binary again with `GLIBC_TUNABLES` set to this.
    Reexec { tunables: String },
}

/// The pure decision: [`Facts`] in, [`Plan`] out.
pub fn plan(facts: &Facts) -> Plan {
    if facts.reexeced {
        return Plan::Keep("already started again once");
    }
    if !(facts.amd && facts.rep_movsb) {
        return Plan::Keep("glibc's rep movsb is not known to be slow on this CPU");
    }
    let setting = format!("{REP_MOVSB_THRESHOLD}={NEVER:#x}");
    match facts.tunables.as_deref() {
        Some(t) if t.split(':').any(|kv| kv.split('=').next() == Some(REP_MOVSB_THRESHOLD)) => {
            Plan::Keep("GLIBC_TUNABLES already sets the rep movsb threshold")
        }
        Some(t) if !t.is_empty() => Plan::Reexec { tunables: format!("{t}:{setting}") },
        _ => Plan::Reexec { tunables: setting },
    }
}

#[cfg(all(target_os = "linux", target_arch = "x86_64", target_env = "gnu"))]
mod glibc_x86_64;
#[cfg(all(target_os = "linux", target_arch = "x86_64", target_env = "gnu"))]
use glibc_x86_64 as platform;

#[cfg(not(all(target_os = "linux", target_arch = "x86_64", target_env = "gnu")))]
mod other;
#[cfg(not(all(target_os = "linux", target_arch = "x86_64", target_env = "gnu")))]
use other as platform;

/// The [`Facts`] of this process: its CPU and its environment.
pub fn this_process() -> Facts {
    platform::facts()
}

/// Execs this binary again, same arguments, with glibc told not to copy
/// with `rep movsb`, where that is slow (see the crate). Returns only when
/// the process goes on as it was started; the [`Plan`] says why. Call it
/// before any thread starts: exec keeps the pid and drops the threads.
pub fn reexec_with_fast_copies() -> Plan {
    let plan = plan(&this_process());
    match plan {
        Plan::Keep(_) => plan,
        Plan::Reexec { tunables } => {
            let err = platform::exec_self(&tunables);
            // Still here: the exec failed (no /proc, say). Copies stay slow,
            // nothing else changes.
            eprintln!("devnet: could not start again with faster copies ({err}); going on");
            Plan::Keep("the exec failed")
        }
    }
}

/// The command [`reexec_with_fast_copies`] execs: `exe` (this binary),
/// with its own `argv[0]` and arguments, and the two variables.
#[cfg(unix)]
pub fn self_command(
    exe: &std::path::Path,
    args: impl IntoIterator<Item = std::ffi::OsString>,
    tunables: &str,
) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut args = args.into_iter();
    let mut cmd = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        cmd.arg0(arg0);
    }
    cmd.args(args).env("GLIBC_TUNABLES", tunables).env(REEXECED, "1");
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amd(tunables: Option<&str>) -> Facts {
        Facts { amd: true, rep_movsb: true, tunables: tunables.map(str::to_owned), reexeced: false }
    }

    #[test]
    fn plans() {
        let never = "glibc.cpu.x86_rep_movsb_threshold=0xffffffffffffffff";
        let table: Vec<(Facts, Plan)> = vec![
            (amd(None), Plan::Reexec { tunables: never.into() }),
            (amd(Some("")), Plan::Reexec { tunables: never.into() }),
            (
                amd(Some("glibc.malloc.arena_max=2")),
                Plan::Reexec { tunables: format!("glibc.malloc.arena_max=2:{never}") },
            ),
            (
                amd(Some("glibc.malloc.arena_max=2:glibc.cpu.x86_rep_movsb_threshold=0x840")),
                Plan::Keep("GLIBC_TUNABLES already sets the rep movsb threshold"),
            ),
            // A longer name that starts the same is another tunable.
            (
                amd(Some("glibc.cpu.x86_rep_movsb_threshold_x=1")),
                Plan::Reexec { tunables: format!("glibc.cpu.x86_rep_movsb_threshold_x=1:{never}") },
            ),
            (Facts { reexeced: true, ..amd(None) }, Plan::Keep("already started again once")),
            (Facts { amd: false, ..amd(None) }, Plan::Keep("glibc's rep movsb is not known to be slow on this CPU")),
            (
                Facts { rep_movsb: false, ..amd(None) },
                Plan::Keep("glibc's rep movsb is not known to be slow on this CPU"),
            ),
        ];
        for (facts, want) in table {
            assert_eq!(plan(&facts), want, "{facts:?}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn the_command_is_this_binary_with_its_own_argv_and_the_two_variables() {
        let args = ["devnet", "connect", "--foreground"].map(std::ffi::OsString::from);
        let cmd = self_command(std::path::Path::new("/usr/bin/devnet"), args, "t=1");
        assert_eq!(cmd.get_program(), "/usr/bin/devnet");
        assert_eq!(cmd.get_args().collect::<Vec<_>>(), ["connect", "--foreground"]);
        let envs: Vec<_> = cmd.get_envs().map(|(k, v)| (k.to_owned(), v.map(ToOwned::to_owned))).collect();
        assert_eq!(
            envs,
            [("DEVNET_REEXECED_FOR_COPIES".into(), Some("1".into())), ("GLIBC_TUNABLES".into(), Some("t=1".into()))]
        );
    }
}

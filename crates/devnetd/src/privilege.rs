//! What devnetd may do as root, and nothing more.
//!
//! devnetd keeps uid 0 (the files it owns, `/etc/resolv.conf` and
//! `/var/lib/devnet`, are root's, so no `CAP_DAC_OVERRIDE` is needed) but
//! drops every capability except [`KEEP`] once its socket is bound:
//! - `CAP_NET_ADMIN`: TUN devices, routes and rules (also for the `ip`
//!   commands it runs: a root process's children get the bounding set),
//!   `SO_MARK` on probes and direct relay dials, and systemd-resolved's
//!   per-link settings, which resolved grants to callers holding it;
//! - `CAP_NET_BIND_SERVICE`: the DNS stub listens on port 53.
//!
//! It never needs `CAP_SETUID` (kubeconfigs, exec plugins and keyrings run
//! in the user's own process), `CAP_DAC_*`, `CAP_SYS_ADMIN` or `CAP_NET_RAW`
//! (probes are TCP, traces UDP with the error queue).

use caps::{CapSet, Capability};

/// The capabilities devnetd keeps.
pub const KEEP: [Capability; 2] = [Capability::CAP_NET_ADMIN, Capability::CAP_NET_BIND_SERVICE];

/// Drops every other capability from every set, the bounding set first,
/// and sets no_new_privs, so the `ip` commands devnetd runs get no more
/// than it has.
pub fn drop_to_keep() -> anyhow::Result<()> {
    let keep: caps::CapsHashSet = KEEP.into_iter().collect();
    let permitted = caps::read(None, CapSet::Permitted)?;
    if let Some(missing) = keep.iter().find(|c| !permitted.contains(c)) {
        anyhow::bail!("devnetd needs {missing}, which it was started without (see installers/linux/devnetd.service)");
    }
    if permitted.contains(&Capability::CAP_SETPCAP) {
        for cap in caps::all().difference(&keep) {
            caps::drop(None, CapSet::Bounding, *cap)?;
        }
    }
    caps::clear(None, CapSet::Ambient)?;
    caps::set(None, CapSet::Inheritable, &caps::CapsHashSet::new())?;
    caps::set(None, CapSet::Effective, &keep)?;
    caps::set(None, CapSet::Permitted, &keep)?;
    // A root process's children would otherwise get the bounding set back
    // (all of it, when devnetd could not shrink it without CAP_SETPCAP):
    // with no_new_privs they get at most what devnetd has.
    nix::sys::prctl::set_no_new_privs()?;
    Ok(())
}

/// The effective set, for the log.
pub fn effective() -> String {
    let mut names: Vec<String> =
        caps::read(None, CapSet::Effective).map(|s| s.iter().map(ToString::to_string).collect()).unwrap_or_default();
    names.sort();
    names.join(",")
}

//! Per-OS network state: routes and device ownership.
//!
//! One module per OS with the same functions; the engine calls
//! `os::platform::…` and never names an OS. Planning is pure (state in,
//! commands out) and tested with golden commands; applying goes through the
//! injectable [`Runner`](crate::runner::Runner).
//!
//! [`macos`] and [`windows`] are that planning for the other two systems:
//! `route` and `netsh` commands from the routes the OS reports, pinned by
//! golden tests that run on Linux. Their executors (and the engine built for
//! those systems) do not exist yet, so they are compiled everywhere and used
//! only by their tests.

use ipnet::IpNet;

#[cfg(target_os = "linux")]
pub mod linux;
#[cfg(target_os = "linux")]
pub use linux as platform;

pub mod macos;
pub mod windows;

/// A CIDR we may not route through the tunnel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{dst} overlaps the existing route {existing}, which devnet would take over: \
     leave {dst} out of the CIDRs, remove that route (a VPN, a container bridge or the home LAN may own it), \
     or allow it with allow-overlap = [\"{dst}\"] in the profile"
)]
pub struct RouteConflict {
    pub dst: IpNet,
    pub existing: String,
}

/// The first of `cidrs` that overlaps one of the machine's routes
/// (destination, description), other than default and link-local ones.
/// Each OS's module turns what its OS reports into these pairs.
pub fn check_overlaps(
    cidrs: &[IpNet],
    existing: impl Iterator<Item = (IpNet, String)> + Clone,
) -> Result<(), RouteConflict> {
    for net in cidrs {
        for (other, describe) in existing.clone() {
            let link_local = match other {
                IpNet::V4(n) => n.network().is_link_local(),
                IpNet::V6(n) => n.network().is_unicast_link_local(),
            };
            if other.prefix_len() == 0 || link_local {
                continue;
            }
            if net.contains(&other.network()) || other.contains(&net.network()) {
                return Err(RouteConflict { dst: *net, existing: describe });
            }
        }
    }
    Ok(())
}

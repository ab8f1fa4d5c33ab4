//! The OS state the engine owns while connected, kept in step with the paths
//! chosen: the TUN device (created the first time a CIDR needs the tunnel),
//! our policy rule per address family, and one route per tunnelled CIDR in
//! our table. Every change is journaled before it is made.

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use ipnet::IpNet;
use tracing::info;

use crate::config::Profile;
use crate::journal::{Entry, Journal};
use crate::os::platform;
use crate::runner::Runner;

pub(crate) struct NetState {
    profile: Profile,
    runner: Arc<dyn Runner>,
    journal: Journal,
    tun_created: bool,
    /// The TUN device made for DNS alone (systemd-resolved needs a link of
    /// ours), not yet carrying traffic: handed to the data path the first
    /// time a CIDR needs the tunnel.
    idle_tun: Option<tun_rs::SyncDevice>,
    rules: [bool; 2],
    routed: Vec<IpNet>,
    via: Vec<(IpNet, IpAddr)>,
}

impl NetState {
    pub(crate) fn new(profile: Profile, runner: Arc<dyn Runner>, journal: Journal) -> Self {
        Self {
            profile,
            runner,
            journal,
            tun_created: false,
            idle_tun: None,
            rules: [false; 2],
            routed: Vec::new(),
            via: Vec::new(),
        }
    }

    /// Sets up the trial table for the configured forwarding nodes: a route
    /// for every CIDR of the node's family via the node, used only by probes
    /// carrying the gateway mark. A node not on a directly connected network
    /// is skipped (detection will say so).
    pub(crate) fn prepare_gateways(&mut self) -> Result<()> {
        let runner = self.runner.clone();
        let runner = runner.as_ref();
        for gw in self.profile.gateways.clone() {
            let family = if gw.is_ipv4() { "-4" } else { "-6" };
            let on_link = platform::route_get(runner, gw)?.is_some_and(|r| r.gateway.is_none());
            if !on_link {
                tracing::warn!(gateway = %gw, "the forwarding node is not on a directly connected network; not using it");
                continue;
            }
            self.journal.record(Entry::GatewayRule { ipv6: gw.is_ipv6() })?;
            if let Some(cmd) = platform::GATEWAY_RULE.plan(runner, family)? {
                runner.run(&cmd)?;
            }
            let routes: Vec<(IpNet, IpAddr)> =
                self.profile.cidrs.iter().filter(|n| n.network().is_ipv4() == gw.is_ipv4()).map(|n| (*n, gw)).collect();
            for (dst, via) in &routes {
                self.journal.record(Entry::ViaRoute { dst: *dst, via: *via, table: platform::GATEWAY_TABLE.into() })?;
            }
            let existing = platform::table_routes(runner, platform::GATEWAY_TABLE)?;
            for cmd in platform::plan_via_add(&routes, platform::GATEWAY_TABLE, &existing) {
                runner.run(&cmd)?;
            }
        }
        Ok(())
    }

    /// CIDRs now routed through the tunnel.
    pub(crate) fn routed(&self) -> &[IpNet] {
        &self.routed
    }

    /// Routes exactly `want` through the tunnel and `via` through their
    /// forwarding nodes. Returns the TUN device when this call created it
    /// (the first time any CIDR needs the tunnel); the data path registers
    /// it with its own runtime.
    pub(crate) fn apply(&mut self, want: &[IpNet], via: &[(IpNet, IpAddr)]) -> Result<Option<tun_rs::SyncDevice>> {
        let runner = self.runner.clone();
        let runner = runner.as_ref();
        let added: Vec<IpNet> = want.iter().filter(|n| !self.routed.contains(n)).copied().collect();
        let removed: Vec<IpNet> = self.routed.iter().filter(|n| !want.contains(n)).copied().collect();
        let via_added: Vec<(IpNet, IpAddr)> = via.iter().filter(|r| !self.via.contains(r)).copied().collect();
        let via_removed: Vec<(IpNet, IpAddr)> = self.via.iter().filter(|r| !via.contains(r)).copied().collect();
        // Refuse before making anything if a new CIDR would take over a route
        // (unless the profile allows that CIDR to).
        let checked: Vec<IpNet> = added
            .iter()
            .copied()
            .chain(via_added.iter().map(|(n, _)| *n))
            .filter(|n| !self.profile.allow_overlap.contains(n))
            .collect();
        platform::check_overlaps(&checked, &platform::routes(runner)?)?;

        let mut new_tun = None;
        if !added.is_empty() {
            new_tun = match self.idle_tun.take() {
                Some(tun) => Some(tun),
                None if !self.tun_created => Some(self.create_tun()?),
                None => None,
            };
        }
        for (i, family, ipv6) in [(0, "-4", false), (1, "-6", true)] {
            let needed =
                added.iter().chain(via_added.iter().map(|(n, _)| n)).any(|n| matches!(n, IpNet::V6(_)) == ipv6);
            if needed && !self.rules[i] {
                self.journal.record(Entry::Rule { ipv6 })?;
                if let Some(cmd) = platform::TUNNEL_RULE.plan(runner, family)? {
                    runner.run(&cmd)?;
                }
                self.rules[i] = true;
            }
        }
        let dev = self.profile.tun_name.clone();
        let ours = platform::our_routes(runner)?;
        for cmd in platform::plan_remove(&removed, &dev, &ours) {
            runner.run(&cmd)?;
        }
        for net in &removed {
            self.journal.forget(&Entry::Route { dst: *net, dev: dev.clone() })?;
        }
        for net in &added {
            self.journal.record(Entry::Route { dst: *net, dev: dev.clone() })?;
        }
        for cmd in platform::plan_add(&added, &dev, &ours) {
            runner.run(&cmd)?;
        }
        for cmd in platform::plan_via_remove(&via_removed, platform::ROUTE_TABLE, &ours) {
            runner.run(&cmd)?;
        }
        for (dst, gw) in &via_removed {
            self.journal.forget(&Entry::ViaRoute { dst: *dst, via: *gw, table: platform::ROUTE_TABLE.into() })?;
        }
        for (dst, gw) in &via_added {
            self.journal.record(Entry::ViaRoute { dst: *dst, via: *gw, table: platform::ROUTE_TABLE.into() })?;
        }
        for cmd in platform::plan_via_add(&via_added, platform::ROUTE_TABLE, &ours) {
            runner.run(&cmd)?;
        }
        if !added.is_empty() || !removed.is_empty() || !via_added.is_empty() || !via_removed.is_empty() {
            info!(tunnel = ?want, via = ?via, "routes updated");
        }
        self.routed = want.to_vec();
        self.via = via.to_vec();
        Ok(new_tun)
    }

    /// Creates our TUN device (journaled first) and marks it as ours.
    fn create_tun(&mut self) -> Result<tun_rs::SyncDevice> {
        let name = self.profile.tun_name.clone();
        self.journal.record(Entry::Tun { name: name.clone() })?;
        let tun = tun_rs::DeviceBuilder::new()
            .name(&name)
            .mtu(self.profile.mtu)
            // IFF_VNET_HDR: packets carry a virtio-net header (the data
            // path strips and adds it), so the kernel may leave checksums.
            .offload(true)
            .enable(true)
            .build_sync()
            .with_context(|| format!("creating TUN device {name} (are you root? is /dev/net/tun there?)"))?;
        platform::tun_checksum_offload(&tun).with_context(|| format!("setting checksum offload on {name}"))?;
        let any_v6 = self.profile.cidrs.iter().any(|n| matches!(n, IpNet::V6(_)));
        platform::adopt_link(self.runner.as_ref(), &name, any_v6)?;
        self.tun_created = true;
        Ok(tun)
    }

    /// Makes sure devnet has a link of its own (for systemd-resolved, even
    /// when every CIDR is direct), with `address` on it for the DNS stub.
    /// Returns the link's interface index.
    pub(crate) fn ensure_dns_link(&mut self, address: IpAddr) -> Result<i32> {
        if !self.tun_created {
            let tun = self.create_tun()?;
            self.idle_tun = Some(tun);
        }
        let runner = self.runner.clone();
        platform::add_link_address(runner.as_ref(), &self.profile.tun_name, address)?;
        Ok(platform::link_index(runner.as_ref(), &self.profile.tun_name)?)
    }

    /// The journal, for OS changes made elsewhere (the resolver backends).
    pub(crate) fn journal_mut(&mut self) -> &mut Journal {
        &mut self.journal
    }

    /// Undoes everything (the journal knows what).
    pub(crate) fn teardown(&mut self) -> Result<Vec<String>> {
        self.routed.clear();
        self.idle_tun = None;
        platform::undo(&mut self.journal, self.runner.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::RecordingRunner;

    /// The exact commands for routing a CIDR via a forwarding node, and that
    /// applying the same paths again changes nothing.
    #[test]
    fn golden_commands_for_a_gateway_route_and_idempotence() {
        let dir = std::env::temp_dir().join(format!("devnet-netstate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let profile = crate::test_support::profile(&dir);
        let runner = Arc::new(RecordingRunner::with_outputs(&[
            ("ip -j -4 route show table main", r#"[{"dst":"default","gateway":"192.168.10.1","dev":"eth0"}]"#),
            ("ip -j -4 rule show", "[]"),
        ]));
        let journal = Journal::open(&dir).expect("journal");
        let mut net = NetState::new(profile, runner.clone(), journal);
        let via = [("10.96.0.0/16".parse().expect("net"), "192.168.10.30".parse().expect("ip"))];
        assert!(net.apply(&[], &via).expect("apply").is_none(), "no TUN for a gateway route");
        assert_eq!(
            runner.take(),
            [
                "ip -j -4 route show table main",
                "ip -j -6 route show table main",
                "ip -j -4 rule show",
                "ip -4 rule add pref 5350 fwmark 0x0/0xffffffff iif lo lookup 3559",
                "ip -j -4 route show table 3559",
                "ip -j -6 route show table 3559",
                "ip -4 route add 10.96.0.0/16 via 192.168.10.30 table 3559 proto 222",
            ]
        );
        net.apply(&[], &via).expect("apply again");
        let again = runner.take();
        assert!(again.iter().all(|c| c.starts_with("ip -j")), "only reads the second time: {again:?}");
        // The journal lists what was made, so a crash can be undone.
        let journal = Journal::open(&dir).expect("journal");
        assert_eq!(journal.entries().len(), 2, "{:?}", journal.entries());
    }
}

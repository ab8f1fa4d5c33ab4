//! Cluster DNS for the laptop: a stub resolver that sends cluster names (as
//! `devnet_dns::NamePolicy` decides) to the cluster DNS and everything else
//! to the laptop's own nameservers, and the backends that point the system
//! at it ([`configure`] picks one):
//! - **systemd-resolved**: the stub listens on an address on devnet's own
//!   link, and resolved sends only the cluster's domains there
//!   ([`crate::resolved`]);
//! - **resolv.conf**: the stub listens on a loopback address and the file
//!   points at it; the stub forwards the rest to the file's old servers.
//!
//! The cluster DNS server is reached at its ClusterIP like any other
//! address, so queries follow whatever path that CIDR has (direct or
//! tunnel) and keep working while it switches.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use devnet_dns::rewrite::{self, Handling};
use devnet_dns::{NamePolicy, resolv_conf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::config::{DnsBackend, Profile};
use crate::journal::{Entry, Journal};
use crate::netstate::NetState;
use crate::resolved::{self, SystemBus};

const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
/// Queries being answered at once, per destination: a flood of names the
/// upstream never answers cannot starve cluster names, nor the reverse,
/// and the stub's sockets stay bounded (one per query in flight).
const MAX_IN_FLIGHT: usize = 128;
/// TCP clients at once, and how long one may sit idle.
const MAX_TCP_CLIENTS: usize = 32;
const TCP_IDLE: Duration = Duration::from_secs(10);
/// The largest DNS message (EDNS answers go past 4096 bytes).
const MAX_MESSAGE: usize = 65_535;

struct Stub {
    policy: NamePolicy,
    cluster: SocketAddr,
    upstreams: Vec<SocketAddr>,
    /// Permits for queries in flight to the cluster DNS and to the upstreams.
    to_cluster: Arc<Semaphore>,
    to_upstream: Arc<Semaphore>,
    local: LocalSources,
}

/// Who may ask the stub: this machine only. With systemd-resolved the stub
/// listens on an address of devnet's link, which a LAN neighbour could
/// route to (Linux is a weak host) and so use an open resolver that tells
/// cluster names. A packet from another host cannot carry one of this
/// machine's addresses as its source (the kernel drops such martians), so
/// a source that is ours, or loopback, is this machine.
struct LocalSources {
    known: std::sync::Mutex<(Option<Instant>, HashSet<IpAddr>)>,
}

impl LocalSources {
    fn new() -> Self {
        Self { known: std::sync::Mutex::new((None, HashSet::new())) }
    }

    fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if ip.is_loopback() {
            return true;
        }
        let Ok(mut known) = self.known.lock() else { return false };
        if known.1.contains(&ip) {
            return true;
        }
        // An address this machine gained since the last look: look again,
        // at most once a second (a flood of foreign sources costs nothing).
        if known.0.is_none_or(|at| at.elapsed() > Duration::from_secs(1)) {
            *known = (Some(Instant::now()), machine_addresses());
        }
        known.1.contains(&ip)
    }
}

/// Every address on this machine's interfaces.
fn machine_addresses() -> HashSet<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return HashSet::new() };
    addrs
        .filter_map(|a| {
            let a = a.address?;
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .collect()
}

/// The resolver set-up of a session: the stub, and with systemd-resolved
/// the link configured in it.
pub(crate) struct Resolver {
    stub: tokio::task::JoinHandle<()>,
    resolved: Option<resolved::Session>,
    /// For status: the backend, where the stub listens, and why this backend.
    pub(crate) description: String,
}

impl Resolver {
    /// Stops the stub and reverts resolved's link settings (resolv.conf is
    /// restored with the rest of the journal).
    pub(crate) async fn stop(self) {
        self.stub.abort();
        if let Some(session) = self.resolved {
            session.stop().await;
        }
    }
}

/// Starts the stub and points the system at it with the backend the
/// profile asks for or, by default, the one programs here actually use.
/// Every OS change is journaled in `net`; on error the caller tears down.
pub(crate) async fn configure(profile: &Profile, net: &mut NetState) -> Result<Resolver> {
    let (backend, why, bus) = choose_backend(profile).await?;
    info!(backend = ?backend, reason = %why, "DNS backend chosen");
    match (backend, bus) {
        (devnet_dns::resolved::Backend::SystemdResolved, Some(bus)) => {
            let address = profile.dns_link_address;
            let ifindex = net.ensure_dns_link(address)?;
            let upstreams = bus.servers(ifindex).await;
            let (policy, left) = policy_for(profile, &upstreams).await?;
            let stub = start_stub(profile, policy.clone(), address, upstreams).await?;
            let calls = devnet_dns::resolved::link_calls(ifindex, address, &policy);
            let configured = async {
                net.journal_mut().record(Entry::ResolvedLink { ifname: profile.tun_name.clone() })?;
                resolved::Session::start(bus, ifindex, calls).await.context("configuring systemd-resolved")
            };
            let session = match configured.await {
                Ok(session) => session,
                Err(e) => {
                    stub.abort();
                    return Err(e);
                }
            };
            let (link, domains) = (&profile.tun_name, policy.resolver_domains());
            info!(%link, ifindex, server = %address, ?domains, "systemd-resolved configured");
            Ok(Resolver {
                stub,
                resolved: Some(session),
                description: format!(
                    "systemd-resolved: link {link} (index {ifindex}), server {address}; {why}{}",
                    left_note(&left)
                ),
            })
        }
        _ => {
            let upstreams = upstreams(profile)?;
            let (policy, left) = policy_for(profile, &upstreams).await?;
            let stub = start_stub(profile, policy, profile.dns_stub, upstreams).await?;
            if let Err(e) = configure_resolv_conf(profile, net.journal_mut()) {
                stub.abort();
                return Err(e);
            }
            Ok(Resolver {
                stub,
                resolved: None,
                description: format!(
                    "resolv.conf: {} -> {}; {why}{}",
                    profile.resolv_conf.display(),
                    profile.dns_stub,
                    left_note(&left)
                ),
            })
        }
    }
}

/// The backend to use, why, and the bus when it is systemd-resolved.
async fn choose_backend(profile: &Profile) -> Result<(devnet_dns::resolved::Backend, String, Option<Arc<SystemBus>>)> {
    use devnet_dns::resolved::{Backend, System, detect};
    let bus = async {
        let bus = SystemBus::connect().await.ok()?;
        bus.resolved_running().await.then(|| Arc::new(bus))
    };
    match profile.dns_backend {
        DnsBackend::ResolvConf => Ok((Backend::ResolvConf, "chosen in the profile".into(), None)),
        DnsBackend::SystemdResolved => match bus.await {
            Some(bus) => Ok((Backend::SystemdResolved, "chosen in the profile".into(), Some(bus))),
            None => anyhow::bail!(
                "dns-backend is systemd-resolved, but systemd-resolved is not on the system bus: \
                 start it (systemctl start systemd-resolved) or use dns-backend = \"resolv-conf\""
            ),
        },
        DnsBackend::Auto => {
            let path = &profile.resolv_conf;
            let target = std::fs::read_link(path).ok();
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let nsswitch = std::fs::read_to_string("/etc/nsswitch.conf").unwrap_or_default();
            let hosts = nsswitch.lines().find(|l| l.trim_start().starts_with("hosts:"));
            let bus = bus.await;
            let system = System {
                resolv_conf_target: target.as_deref(),
                resolv_conf: &text,
                nsswitch_hosts: hosts,
                resolved_on_bus: bus.is_some(),
            };
            let (backend, why) = detect(&system);
            Ok((backend, why.to_owned(), bus))
        }
    }
}

/// How long the laptop's own resolvers get to say which namespaces' names
/// they answer: once, before the session's DNS is configured.
const EXISTENCE_TIMEOUT: Duration = Duration::from_millis(700);

/// The session's name policy: the profile's namespaces less those whose
/// names the laptop's own resolvers already answer (an office zone `acme`
/// keeps `git.acme` when the cluster also has a namespace `acme`). Returns
/// the namespaces left to the network.
async fn policy_for(profile: &Profile, upstreams: &[IpAddr]) -> Result<(NamePolicy, Vec<String>)> {
    let policy = NamePolicy::new(&profile.cluster_domain, &profile.namespaces, profile.default_namespace.as_deref())?;
    let servers: Vec<SocketAddr> = upstreams.iter().map(|ip| SocketAddr::new(*ip, 53)).collect();
    let left = answered_elsewhere(&policy.routed_namespaces(), &servers).await;
    if !left.is_empty() {
        warn!(namespaces = ?left, "the network's DNS answers these names: they stay its own, not routing domains");
    }
    Ok((policy.without(&left), left))
}

/// The labels among `labels` that a resolver in `servers` says exist. A
/// resolver that says every name exists (one that rewrites NXDOMAIN, a
/// captive portal's) is caught by a random label it cannot know, and then
/// decides nothing.
async fn answered_elsewhere(labels: &[String], servers: &[SocketAddr]) -> Vec<String> {
    use devnet_dns::rewrite::NameExists;
    if labels.is_empty() || servers.is_empty() {
        return Vec::new();
    }
    let canary = format!("devnet-{:08x}", rand_u32());
    let ask = |label: String, id: u16| {
        let servers = servers.to_vec();
        async move {
            let Ok(query) = rewrite::existence_query(&label, id) else { return (label, NameExists::Unknown) };
            let said = match tokio::time::timeout(EXISTENCE_TIMEOUT, forward(&servers, &query, false)).await {
                Ok(Some(answer)) => rewrite::existence_answer(&answer, id),
                _ => NameExists::Unknown,
            };
            (label, said)
        }
    };
    let base = rand_u32() as u16;
    let asked = labels.iter().cloned().chain(std::iter::once(canary.clone()));
    // All at once: the whole check takes one timeout at most.
    let asking: Vec<_> = asked.enumerate().map(|(i, l)| tokio::spawn(ask(l, base.wrapping_add(i as u16)))).collect();
    let mut said = Vec::with_capacity(asking.len());
    for a in asking {
        said.extend(a.await.ok());
    }
    if said.iter().any(|(l, e)| *l == canary && *e == NameExists::Yes) {
        warn!(servers = ?servers, "the network's DNS says every name exists; namespaces stay routing domains");
        return Vec::new();
    }
    said.into_iter().filter(|(l, e)| *l != canary && *e == NameExists::Yes).map(|(l, _)| l).collect()
}

/// A random number: the canary's label and the queries' ids, which an
/// off-path stranger should not guess.
fn rand_u32() -> u32 {
    use std::hash::BuildHasher;
    // Each RandomState is seeded from the OS's randomness.
    std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now()) as u32
}

/// What status says about namespaces left to the network's DNS.
fn left_note(left: &[String]) -> String {
    if left.is_empty() {
        return String::new();
    }
    format!(
        "; namespaces left to the network's DNS, which answers them: {} (use svc.<namespace>.svc.<cluster domain>)",
        left.join(", ")
    )
}

/// Starts the stub on `listen`:53 (UDP and TCP).
async fn start_stub(
    profile: &Profile,
    policy: NamePolicy,
    listen: IpAddr,
    upstreams: Vec<IpAddr>,
) -> Result<tokio::task::JoinHandle<()>> {
    let cluster = SocketAddr::new(profile.dns_server.context("no DNS server configured")?, 53);
    let listen = SocketAddr::new(listen, 53);
    let udp = UdpSocket::bind(listen).await.with_context(|| format!("binding the DNS stub on {listen}"))?;
    let tcp = TcpListener::bind(listen).await.with_context(|| format!("binding the DNS stub on {listen}/tcp"))?;
    let stub = Stub::new(policy, cluster, upstreams.into_iter().map(|ip| SocketAddr::new(ip, 53)).collect());
    info!(%listen, %cluster, upstreams = ?stub.upstreams, "DNS stub serving");
    Ok(tokio::spawn(serve(udp, tcp, stub)))
}

/// Answers on `udp` and `tcp` until aborted.
async fn serve(udp: UdpSocket, tcp: TcpListener, stub: Stub) {
    let (udp, stub) = (Arc::new(udp), Arc::new(stub));
    let udp_loop = {
        let (udp, stub) = (udp.clone(), stub.clone());
        async move {
            let mut buf = vec![0u8; MAX_MESSAGE];
            loop {
                let (n, from) = match udp.recv_from(&mut buf).await {
                    Ok(got) => got,
                    Err(e) => {
                        debug!(error = %e, "DNS stub: receive failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                if !stub.local.allows(from.ip()) {
                    debug!(%from, "DNS stub: a query from another host, dropped");
                    continue;
                }
                let Some((handling, permit)) = stub.admit(&buf[..n]) else { continue };
                let (query, udp, stub) = (buf[..n].to_vec(), udp.clone(), stub.clone());
                tokio::spawn(async move {
                    if let Some(answer) = stub.resolve(handling, &query, false).await {
                        let _ = udp.send_to(&answer, from).await;
                    }
                    drop(permit);
                });
            }
        }
    };
    let tcp_loop = async move {
        let clients = Arc::new(Semaphore::new(MAX_TCP_CLIENTS));
        loop {
            let (conn, from) = match tcp.accept().await {
                Ok(got) => got,
                Err(e) => {
                    // Out of descriptors (EMFILE) or the like: back off
                    // instead of spinning on the error.
                    warn!(error = %e, "DNS stub: accept failed; backing off");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if !stub.local.allows(from.ip()) {
                debug!(%from, "DNS stub: a TCP client from another host, dropped");
                continue;
            }
            let Ok(permit) = clients.clone().try_acquire_owned() else {
                debug!(%from, "DNS stub: too many TCP clients, dropped");
                continue;
            };
            let stub = stub.clone();
            tokio::spawn(async move {
                let _ = serve_tcp(conn, &stub).await;
                drop(permit);
            });
        }
    };
    tokio::join!(udp_loop, tcp_loop);
}

async fn serve_tcp(mut conn: TcpStream, stub: &Stub) -> std::io::Result<()> {
    loop {
        let Ok(len) = tokio::time::timeout(TCP_IDLE, conn.read_u16()).await else { return Ok(()) };
        let mut query = vec![0u8; len? as usize];
        tokio::time::timeout(TCP_IDLE, conn.read_exact(&mut query)).await.map_err(std::io::Error::other)??;
        let Some((handling, _permit)) = stub.admit(&query) else { continue };
        if let Some(answer) = stub.resolve(handling, &query, true).await {
            conn.write_u16(answer.len() as u16).await?;
            conn.write_all(&answer).await?;
        }
    }
}

impl Stub {
    fn new(policy: NamePolicy, cluster: SocketAddr, upstreams: Vec<SocketAddr>) -> Self {
        Self {
            policy,
            cluster,
            upstreams,
            to_cluster: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            to_upstream: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            local: LocalSources::new(),
        }
    }

    /// Decides where a query goes and takes a permit for it, or drops it
    /// (not DNS, or too many already in flight there: the client retries).
    fn admit(&self, query: &[u8]) -> Option<(Handling, Option<tokio::sync::OwnedSemaphorePermit>)> {
        let handling = match rewrite::query(query, &self.policy) {
            Ok(h) => h,
            Err(e) => {
                debug!(error = %e, "dropping a packet that is not DNS");
                return None;
            }
        };
        let budget = match &handling {
            Handling::Answer(_) => return Some((handling, None)),
            Handling::Cluster { .. } => &self.to_cluster,
            Handling::Upstream => &self.to_upstream,
        };
        match budget.clone().try_acquire_owned() {
            Ok(permit) => Some((handling, Some(permit))),
            Err(_) => {
                debug!("DNS stub: too many queries in flight, dropped");
                None
            }
        }
    }

    async fn resolve(&self, handling: Handling, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        match handling {
            Handling::Answer(packet) => Some(packet),
            Handling::Cluster { packet, original, asked } => {
                debug!(%original, %asked, "cluster name");
                let answer = forward(&[self.cluster], &packet, tcp).await?;
                rewrite::restore(&answer, &original, &asked).ok()
            }
            Handling::Upstream => forward(&self.upstreams, query, tcp).await,
        }
    }
}

/// Sends a query to each server in turn until one answers.
async fn forward(servers: &[SocketAddr], query: &[u8], tcp: bool) -> Option<Vec<u8>> {
    for server in servers {
        let attempt = async {
            if tcp {
                let mut s = TcpStream::connect(server).await?;
                s.write_u16(query.len() as u16).await?;
                s.write_all(query).await?;
                let len = s.read_u16().await? as usize;
                let mut answer = vec![0u8; len];
                s.read_exact(&mut answer).await?;
                Ok::<_, std::io::Error>(answer)
            } else {
                let bind: SocketAddr = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
                let s = UdpSocket::bind(bind).await?;
                s.connect(server).await?;
                s.send(query).await?;
                let mut answer = vec![0u8; MAX_MESSAGE];
                let n = s.recv(&mut answer).await?;
                answer.truncate(n);
                Ok(answer)
            }
        };
        match tokio::time::timeout(FORWARD_TIMEOUT, attempt).await {
            Ok(Ok(answer)) => return Some(answer),
            Ok(Err(e)) => debug!(%server, error = %e, "DNS server failed"),
            Err(_) => debug!(%server, "DNS server timed out"),
        }
    }
    None
}

/// The nameservers the system uses now: where the stub forwards the rest.
fn upstreams(profile: &Profile) -> Result<Vec<IpAddr>> {
    let path = &profile.resolv_conf;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(resolv_conf::nameservers(&text).into_iter().filter(|ip| *ip != profile.dns_stub).collect())
}

/// Points `profile.resolv_conf` at the stub, journaling first and keeping the
/// original byte for byte. Returns the nameservers the file had.
pub(crate) fn configure_resolv_conf(profile: &Profile, journal: &mut Journal) -> Result<Vec<IpAddr>> {
    let path = &profile.resolv_conf;
    let original = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    anyhow::ensure!(
        !resolv_conf::is_managed(&original),
        "{} is still marked as devnet's from an earlier run: run `devnet cleanup`",
        path.display()
    );
    let backup = profile.state_dir.join("resolv.conf.orig");
    write_file(&backup, &original)?;
    // A symlink (to systemd-resolved's or NetworkManager's file) is replaced
    // by our file for the session and put back as the same link: writing
    // through it would edit the other manager's file instead.
    let symlink = std::fs::read_link(path).ok();
    journal.record(Entry::ResolvConf { path: path.clone(), backup: backup.clone(), symlink: symlink.clone() })?;
    write_file(path, &resolv_conf::managed(&original, profile.dns_stub))?;
    info!(path = %path.display(), stub = %profile.dns_stub, "resolver configured");
    Ok(resolv_conf::nameservers(&original).into_iter().filter(|ip| *ip != profile.dns_stub).collect())
}

/// Puts the original resolv.conf back (the same symlink, when it was one), if
/// the file is still ours; a file someone else rewrote meanwhile is left as
/// it is.
pub(crate) fn restore_resolv_conf(path: &Path, backup: &Path, symlink: Option<&Path>) -> Result<Option<String>> {
    let current = std::fs::read_to_string(path).unwrap_or_default();
    let original = match std::fs::read_to_string(backup) {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", backup.display())),
    };
    let ours = resolv_conf::is_managed(&current) && std::fs::read_link(path).is_err();
    let action = if ours {
        match symlink {
            Some(target) => {
                relink(path, target)?;
                Some(format!("restored {} as a link to {}", path.display(), target.display()))
            }
            None => {
                write_file(path, &original)?;
                Some(format!("restored {}", path.display()))
            }
        }
    } else {
        warn!(path = %path.display(), "resolv.conf was changed by someone else since devnet wrote it; leaving it");
        None
    };
    std::fs::remove_file(backup).ok();
    Ok(action)
}

/// Replaces a file's contents atomically (write beside, then rename). Where
/// the file is a mount point (a bind-mounted resolv.conf in a container or a
/// network namespace) rename fails, and the file is rewritten in place.
fn write_file(path: &Path, contents: &str) -> Result<()> {
    let tmp: PathBuf = path.with_extension(format!("devnet-{}.tmp", std::process::id()));
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(&tmp, meta.permissions());
    }
    // A symlink is replaced by the rename, never written through: its
    // target belongs to another manager (systemd-resolved, NetworkManager).
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        anyhow::ensure!(!is_link, "replacing the symlink {}: {e}", path.display());
        std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Makes `path` a symlink to `target` again, atomically.
fn relink(path: &Path, target: &Path) -> Result<()> {
    let tmp: PathBuf = path.with_extension(format!("devnet-{}.link", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).with_context(|| format!("creating {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("putting the link {} back", path.display()))
}

/// Asks the laptop's own nameserver (the office DNS) for a name every
/// cluster has, to tell whether it forwards the cluster domain (doctor).
/// Reads the original resolv.conf when devnet manages it now.
pub async fn office_forwarding(profile: &Profile) -> Option<(IpAddr, String, devnet_path::doctor::OfficeDns)> {
    use devnet_path::doctor::OfficeDns;
    let backup = profile.state_dir.join("resolv.conf.orig");
    let text = std::fs::read_to_string(&backup).or_else(|_| std::fs::read_to_string(&profile.resolv_conf)).ok()?;
    let server = resolv_conf::nameservers(&text).into_iter().find(|ip| *ip != profile.dns_stub)?;
    let name = format!("kube-dns.kube-system.svc.{}.", profile.cluster_domain.trim_end_matches('.'));
    let id = (std::process::id() & 0xffff) as u16;
    let query = rewrite::probe_query(&name, id).ok()?;
    let said = match forward(&[SocketAddr::new(server, 53)], &query, false).await {
        None => OfficeDns::Silent,
        Some(answer) => match rewrite::probe_answer(&answer, id) {
            Ok(rewrite::ProbeAnswer::Records) => OfficeDns::Forwards,
            Ok(rewrite::ProbeAnswer::Code(code)) => OfficeDns::Refuses(code),
            Err(e) => OfficeDns::Refuses(format!("garbage ({e})")),
        },
    };
    Some((server, name.trim_end_matches('.').to_owned(), said))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_machine_may_ask_the_stub() {
        let local = LocalSources::new();
        for ip in ["127.0.0.1", "127.0.0.153", "::1", "::ffff:127.0.0.1"] {
            assert!(local.allows(ip.parse().expect("literal")), "{ip}");
        }
        if let Some(own) = machine_addresses().into_iter().find(|ip| !ip.is_loopback()) {
            assert!(local.allows(own), "{own} is this machine's");
        }
        for ip in ["203.0.113.9", "192.0.2.1", "2001:db8::1"] {
            assert!(!local.allows(ip.parse().expect("literal")), "{ip} is another host");
        }
    }

    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
    }

    /// A local flood of names the upstream never answers (the review's
    /// 500 qps against a 1024-descriptor limit) leaves the descriptors
    /// bounded and cluster names answered.
    #[tokio::test]
    async fn a_flood_to_a_silent_upstream_neither_exhausts_descriptors_nor_starves_cluster_names() {
        let cluster = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let cluster_addr = cluster.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, from)) = cluster.recv_from(&mut buf).await {
                // An empty answer to the question asked: the QR bit set.
                buf[2] |= 0x80;
                let _ = cluster.send_to(&buf[..n], from).await;
            }
        });
        let silent = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let silent_addr = silent.local_addr().expect("addr");
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let stub_addr = udp.local_addr().expect("addr");
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let policy = NamePolicy::new("cluster.local", &["demo".to_owned()], None).expect("policy");
        let serving = tokio::spawn(serve(udp, tcp, Stub::new(policy, cluster_addr, vec![silent_addr])));
        let before = open_fds();
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        for i in 0..3000u16 {
            let q = rewrite::probe_query(&format!("n{i}.example.com."), i).expect("query");
            client.send_to(&q, stub_addr).await.expect("send");
            if i % 200 == 0 {
                tokio::task::yield_now().await;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let during = open_fds();
        // Unbounded, each of the 3000 would hold a socket for the 2 s the
        // silent upstream takes to time out.
        assert!(
            during < before + 400,
            "{during} descriptors open during the flood (from {before}): the stub must cap its queries in flight"
        );
        // A cluster name still gets its answer while the upstream budget is spent.
        let asker = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let q = rewrite::probe_query("web.demo.svc.cluster.local.", 0xbeef).expect("query");
        asker.send_to(&q, stub_addr).await.expect("send");
        let mut buf = vec![0u8; 4096];
        let got = tokio::time::timeout(Duration::from_secs(1), asker.recv(&mut buf)).await;
        let n = got.expect("a cluster name was starved by the flood").expect("recv");
        assert_eq!(&buf[..2], &[0xbe, 0xef], "the answer to our query");
        assert!(n > 12 && buf[2] & 0x80 != 0, "an answer");
        serving.abort();
    }

    #[test]
    fn resolv_conf_round_trips_and_foreign_edits_are_kept() {
        let dir = std::env::temp_dir().join(format!("devnet-dns-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("resolv.conf");
        let original = "search office.example\nnameserver 192.168.10.1\n";
        std::fs::write(&path, original).expect("write");
        let mut profile = crate::test_support::profile(&dir);
        profile.resolv_conf = path.clone();
        let mut journal = Journal::open(&dir).expect("journal");
        let upstreams = configure_resolv_conf(&profile, &mut journal).expect("configure");
        assert_eq!(upstreams, vec!["192.168.10.1".parse::<IpAddr>().expect("ip")]);
        let managed = std::fs::read_to_string(&path).expect("read");
        assert!(resolv_conf::is_managed(&managed) && managed.contains("nameserver 127.0.0.153"));
        // Configuring over our own file is refused (a crashed run's leftover).
        assert!(configure_resolv_conf(&profile, &mut journal).is_err());
        let backup = profile.state_dir.join("resolv.conf.orig");
        assert!(restore_resolv_conf(&path, &backup, None).expect("restore").is_some());
        assert_eq!(std::fs::read_to_string(&path).expect("read"), original, "restored byte for byte");

        // Someone else rewrote it after us: theirs stays.
        configure_resolv_conf(&profile, &mut journal).expect("configure");
        std::fs::write(&path, "nameserver 9.9.9.9\n").expect("foreign write");
        assert_eq!(restore_resolv_conf(&path, &backup, None).expect("restore"), None);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "nameserver 9.9.9.9\n");
    }

    /// systemd-resolved's and NetworkManager's resolv.conf is a symlink: the
    /// link is replaced for the session, never written through, and comes
    /// back as the same link.
    #[test]
    fn a_symlinked_resolv_conf_comes_back_as_the_same_link() {
        let dir = std::env::temp_dir().join(format!("devnet-dns-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let target = dir.join("stub-resolv.conf");
        let stub = "nameserver 127.0.0.53\noptions edns0 trust-ad\n";
        std::fs::write(&target, stub).expect("write");
        let path = dir.join("resolv.conf");
        std::os::unix::fs::symlink(&target, &path).expect("symlink");
        let mut profile = crate::test_support::profile(&dir);
        profile.resolv_conf = path.clone();
        let mut journal = Journal::open(&dir).expect("journal");
        let upstreams = configure_resolv_conf(&profile, &mut journal).expect("configure");
        assert_eq!(upstreams, vec!["127.0.0.53".parse::<IpAddr>().expect("ip")], "non-cluster names go to resolved");
        assert!(std::fs::read_link(&path).is_err(), "our file replaced the link");
        assert_eq!(std::fs::read_to_string(&target).expect("read"), stub, "the link's target is untouched");
        let Some(Entry::ResolvConf { symlink, backup, .. }) = journal.entries().last().cloned() else {
            panic!("journaled")
        };
        assert_eq!(symlink.as_deref(), Some(target.as_path()));
        assert!(restore_resolv_conf(&path, &backup, symlink.as_deref()).expect("restore").is_some());
        assert_eq!(std::fs::read_link(&path).expect("a link again"), target);
        assert_eq!(std::fs::read_to_string(&target).expect("read"), stub);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

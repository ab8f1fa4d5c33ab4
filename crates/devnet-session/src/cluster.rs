//! From a kubeconfig to what a session needs: discover the cluster, make
//! sure the relay runs (installing or upgrading it when the user may), the
//! user's client certificate for the relay from the keyring (or from
//! enrolment through the API server's port-forward), and the
//! ways to reach the relay: direct to its pod or node port, or the API
//! server's port-forward, opened here with the user's credentials.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Result, bail};
use devnet_kube::credentials::ClientIdentity;
use devnet_kube::discover::{Discovery, discover};
use devnet_kube::relay::{self, Credentials, RelayParams, RelaySettings};
use devnet_kube::{Cluster, ClusterOptions};
use devnet_model::profile::ProfileFile;
use devnet_model::status::Discovered;

/// What the user asked for on the cluster side.
#[derive(Debug, Clone, Default)]
pub struct ClusterArgs {
    pub options: ClusterOptions,
    /// Where the relay is looked for, and what an install (or upgrade)
    /// deploys: its namespace, image, resources, NodePort or not.
    pub relay: RelaySettings,
    /// Never install or upgrade the relay; fail instead.
    pub no_install: bool,
    /// Overrides the discovered cluster domain.
    pub cluster_domain: Option<String>,
    /// Public ranges the cluster may claim (`--allow-public-cidr`).
    pub allow_public_cidrs: Vec<ipnet::IpNet>,
    /// Whose short names (`svc.ns`) resolve, each namespace a routing domain
    /// of the laptop's resolver.
    pub namespaces: NamespaceChoice,
}

/// Which namespaces' short names (`svc.ns`) the laptop resolves. Each one
/// becomes a routing domain of the laptop's resolver, so a name the cluster
/// controls decides where lookups of `*.ns` go: by default only the
/// namespaces the user works in, never every namespace a tenant can create.
/// (Full names, `svc.ns.svc.<domain>`, resolve for every namespace.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NamespaceChoice {
    /// The namespaces the user's kubeconfig names for this cluster.
    #[default]
    Kubeconfig,
    /// These, as the user chose them (`--namespace`).
    These(Vec<String>),
    /// Every namespace the cluster has (`--all-namespaces`).
    All,
}

impl NamespaceChoice {
    /// The namespaces to resolve short names for, and a line for each
    /// choice that could not be honoured. `cluster` is the cluster's own
    /// list, empty when it may not be read.
    pub fn resolve(&self, working: &[String], cluster: &[String]) -> (Vec<String>, Vec<String>) {
        let known = |ns: &String| cluster.is_empty() || cluster.contains(ns);
        match self {
            // A kubeconfig's namespace the cluster lacks is an old context:
            // left out quietly.
            Self::Kubeconfig => (working.iter().filter(|ns| known(ns)).cloned().collect(), Vec::new()),
            // A chosen one is kept (it may be created later), and said.
            Self::These(chosen) => (
                chosen.clone(),
                chosen
                    .iter()
                    .filter(|ns| !known(ns))
                    .map(|ns| {
                        format!(
                            "namespace {ns} does not exist in the cluster (yet); its short names resolve once it does"
                        )
                    })
                    .collect(),
            ),
            Self::All => (cluster.to_vec(), Vec::new()),
        }
    }
}

/// Where the user's client identity for a relay (certificate, key, relay
/// CA) is kept: their keyring, or, for a root process under sudo, the
/// invoking user's keyring through a helper run as them.
pub trait CredentialStore: Send + Sync {
    fn load(&self, account: &str) -> Result<Option<ClientIdentity>>;
    fn store(&self, account: &str, identity: &ClientIdentity) -> Result<()>;
}

/// This process's own user's keyring.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserKeyring;

impl CredentialStore for UserKeyring {
    fn load(&self, account: &str) -> Result<Option<ClientIdentity>> {
        Ok(devnet_kube::credentials::load(account)?)
    }

    fn store(&self, account: &str, identity: &ClientIdentity) -> Result<()> {
        Ok(devnet_kube::credentials::store(account, identity)?)
    }
}

/// Progress lines for the person waiting (`installing the relay`, …).
pub type Say<'a> = &'a (dyn Fn(&str) + Sync);

/// What a session needs from the cluster.
#[derive(Debug)]
pub struct Prepared {
    /// The session's name: the kubeconfig context.
    pub name: String,
    /// The profile discovery makes (with the client certificate and CA inline).
    pub file: ProfileFile,
    /// The relay's pod IP and node port, to dial directly.
    pub direct: Vec<SocketAddr>,
    /// The API server's port-forward, when the user may use it.
    pub port_forward: Option<PortForward>,
    pub discovered: Vec<Discovered>,
    /// How the keeper enrols again while the session runs.
    pub renewal: crate::renewal::Renewal,
}

impl Prepared {
    /// What devnetd is asked for: the profile (after `overlay`, the
    /// caller's own settings) as contents, checked here so bad input fails
    /// before devnetd is asked (devnetd checks again); and the
    /// port-forward this process opens when devnetd asks for a bridge.
    pub fn into_request(
        self,
        session: Option<String>,
        overlay: impl FnOnce(ProfileFile) -> Result<ProfileFile>,
    ) -> Result<(devnet_ipc::message::ConnectRequest, Option<PortForward>)> {
        let (profile, token, ca) = crate::profile::contents(overlay(self.file)?)?;
        let req = devnet_ipc::message::ConnectRequest {
            session: session.unwrap_or(self.name),
            profile,
            token,
            relay_ca_pem: ca,
            direct: self.direct,
            bridge: self.port_forward.is_some(),
            discovered: self.discovered,
        };
        crate::profile::check(&req)?;
        Ok((req, self.port_forward))
    }
}

/// Discovery's findings as status lines.
pub fn discovered(cluster: &Cluster, d: &Discovery) -> Vec<Discovered> {
    let mut out =
        vec![Discovered { what: "cluster".into(), value: cluster.context.clone(), source: cluster.server.clone() }];
    let fact = |what: &str, value: String, source: String| Discovered { what: what.into(), value, source };
    out.extend(d.pod_cidrs.iter().map(|f| fact("pod CIDR", f.value.to_string(), f.source.to_string())));
    out.extend(d.service_cidrs.iter().map(|f| fact("service CIDR", f.value.to_string(), f.source.to_string())));
    out.extend(d.dns_servers.iter().map(|f| fact("cluster DNS", f.value.to_string(), f.source.to_string())));
    out.push(fact("domain", d.cluster_domain.value.clone(), d.cluster_domain.source.to_string()));
    for p in &d.calico_pools {
        out.push(fact(
            "calico pool",
            p.cidr.to_string(),
            format!("{}: ipipMode {}, vxlanMode {}, natOutgoing {}", p.pool, p.ipip, p.vxlan, p.nat_outgoing),
        ));
    }
    out
}

/// Connects to the cluster and discovers its networks.
pub async fn discover_cluster(args: &ClusterArgs, say: Say<'_>) -> Result<(Cluster, Discovery, Vec<SocketAddr>)> {
    let cluster = Cluster::connect(&args.options).await?;
    say(&format!("cluster {} at {}", cluster.context, cluster.server));
    let mut sources = cluster.gather(args.cluster_domain.clone()).await?;
    sources.allow_public = args.allow_public_cidrs.clone();
    let found = discover(&sources)?;
    for f in discovered(&cluster, &found).iter().skip(1) {
        say(&format!("found {} {} (from {})", f.what, f.value, f.source));
    }
    let pod_cidrs: Vec<_> = found.pod_cidrs.iter().map(|f| f.value).collect();
    let probes = devnet_kube::discover::pod_probe_targets(sources.pods.as_deref().unwrap_or_default(), &pod_cidrs);
    Ok((cluster, found, probes))
}

/// Everything a session needs from the cluster, gathered as the user.
pub async fn prepare(args: &ClusterArgs, keyring: &dyn CredentialStore, say: Say<'_>) -> Result<Prepared> {
    let (cluster, found, pod_probes) = discover_cluster(args, say).await?;
    let ns = args.relay.namespace.as_str();
    let state = ensure_relay(&cluster, args, &found, say).await?;
    let identity = identity_for(&cluster, ns, &state, keyring, say).await?;

    // Ways to the relay: direct to the pod IP and the node port, then the
    // API server.
    let node = match (state.host_ip, state.node_port) {
        (Some(ip), Some(port)) => Some(SocketAddr::new(ip, port)),
        _ => None,
    };
    let mut direct: Vec<SocketAddr> = state.pod_ips.iter().map(|ip| SocketAddr::new(*ip, relay::TUNNEL_PORT)).collect();
    direct.extend(node);
    let may_portforward = cluster.can_i("create", "", "pods/portforward", Some(ns)).await?;
    let port_forward = if may_portforward {
        Some(PortForward { cluster: cluster.clone(), namespace: ns.to_owned() })
    } else if !any_answers(&direct).await {
        bail!(
            "the relay is not reachable directly ({}), and you may not use the API server's port-forward: ask a cluster admin for {{apiGroups: [\"\"], resources: [\"pods/portforward\"], verbs: [\"create\"]}} in namespace {ns}",
            direct.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        );
    } else {
        say("you may not use pods/portforward: only the direct transport will be tried");
        None
    };

    // The profile's relay address must lie outside the routed CIDRs (a
    // hand-written profile's relay is dialled without the bypass mark and
    // would route into the tunnel). Here every dial is marked, so it only
    // names where the relay is reached: its node port; its pod IP when that
    // is outside the CIDRs; else (no node port, pod IPs in a routed CIDR)
    // the API server, whose port-forward leads to it.
    let cidrs = found.cidrs();
    let outside = |a: &SocketAddr| !cidrs.iter().any(|c| c.contains(&a.ip()));
    let relay_addr = match node.or_else(|| direct.iter().copied().find(outside)) {
        Some(addr) => addr,
        None if direct.is_empty() => bail!("the relay pod has no IP and no node port"),
        None => {
            let api = match api_server_host_port(&cluster.server) {
                Some(hp) => tokio::net::lookup_host(hp).await.map(Iterator::collect).unwrap_or_default(),
                None => Vec::new(),
            };
            api.into_iter().find(outside).ok_or_else(|| {
                anyhow::anyhow!(
                    "the relay in namespace {ns} has no node port, its pod IP lies in the CIDRs devnet routes, and the API server {} has no address outside them either: give the relay a node port (`devnet relay install` without --no-node-port, or the chart's nodePort.enabled)",
                    cluster.server
                )
            })?
        }
    };
    let dns = found
        .dns_servers
        .iter()
        .map(|f| f.value)
        .find(|ip| ip.is_ipv4())
        .or(found.dns_servers.first().map(|f| f.value));
    // Live targets: a pod per pod CIDR, the relay pod, the cluster DNS.
    let mut probes: Vec<String> = pod_probes.iter().map(ToString::to_string).collect();
    probes.extend(state.pod_ips.iter().map(|ip| SocketAddr::new(*ip, relay::TUNNEL_PORT).to_string()));
    probes.extend(found.dns_servers.iter().map(|f| SocketAddr::new(f.value, 53).to_string()));
    // Where the relay proves that a direct answer is this cluster's.
    let relay_endpoints = relay_endpoints(&cluster, ns, &state.pod_ips, &found.cidrs()).await;
    let file = ProfileFile {
        relay: Some(relay_addr.to_string()),
        // The credential slot carries the client certificate and its key.
        token: Some(identity.credential().into()),
        relay_ca_pem: Some(identity.relay_ca_pem.clone()),
        cidrs: found.cidrs().iter().map(ToString::to_string).collect(),
        dns_server: dns.map(|d| d.to_string()),
        probe_targets: probes,
        relay_endpoints,
        cluster_domain: Some(found.cluster_domain.value.clone()),
        namespaces: {
            let (namespaces, notes) = args.namespaces.resolve(&cluster.working_namespaces, &cluster.namespaces().await);
            for note in &notes {
                say(note);
            }
            say(&format!("short names (svc.namespace) for namespaces {}", namespaces.join(", ")));
            namespaces
        },
        ..Default::default()
    };
    let renewal =
        crate::renewal::Renewal { cluster: cluster.clone(), namespace: ns.to_owned(), not_after: identity.not_after };
    Ok(Prepared {
        name: cluster.context.clone(),
        file,
        direct,
        port_forward,
        discovered: discovered(&cluster, &found),
        renewal,
    })
}

/// How long a kept client certificate must still be valid to be used
/// rather than replaced (a session started now should not expire soon).
pub const ENROL_MARGIN: Duration = Duration::from_secs(3600);

/// The user's client identity for the relay in `ns`: the keyring's while
/// it is good ([`devnet_kube::enrol::still_good`]), else a new one from
/// enrolment, kept in the keyring. A keyring that cannot be used (a
/// container without keyutils) costs an enrolment per connect, nothing more.
pub async fn identity_for(
    cluster: &Cluster,
    ns: &str,
    state: &relay::RelayState,
    keyring: &dyn CredentialStore,
    say: Say<'_>,
) -> Result<ClientIdentity> {
    let account = devnet_kube::credentials::account(&cluster.server, ns);
    let kept = keyring.load(&account).unwrap_or_else(|e| {
        say(&format!("the keyring cannot be read ({e:#}); enrolling anew"));
        None
    });
    let (fp, instance) = (state.ca_sha256.as_deref(), state.instance.as_deref());
    // The keyring entry is per cluster, and one person may use contexts
    // with different users there: only this user's certificate serves.
    let user = devnet_kube::enrol::user_name(cluster).await;
    if let Some(kept) = kept
        && kept.user == user
        && devnet_kube::enrol::still_good(&kept, fp, instance, std::time::SystemTime::now(), ENROL_MARGIN)
    {
        return Ok(kept);
    }
    say(&format!(
        "enrolling as {user} with the relay in namespace {ns} (a client certificate for 8 h, through the API server)"
    ));
    let identity = devnet_kube::enrol::enrol(cluster, ns, &user, fp, instance).await?;
    if let Err(e) = keyring.store(&account, &identity) {
        say(&format!("the client certificate could not be kept in the keyring ({e:#}); the next connect enrols again"));
    }
    Ok(identity)
}

/// The relay's own addresses inside the routed `cidrs`, where it proves
/// that a direct answer is this cluster's (a TLS handshake verified by its
/// CA): its pod IPs on the tunnel port (the pod CIDRs) and its Service's
/// ClusterIPs on the Service's port (the service CIDRs). The Service is
/// read here rather than by `relay::state`, which other callers share.
pub async fn relay_endpoints(
    cluster: &Cluster,
    ns: &str,
    pod_ips: &[std::net::IpAddr],
    cidrs: &[ipnet::IpNet],
) -> Vec<String> {
    let mut endpoints: Vec<SocketAddr> = pod_ips.iter().map(|ip| SocketAddr::new(*ip, relay::TUNNEL_PORT)).collect();
    if let Ok(svc) = cluster.get(&format!("/api/v1/namespaces/{ns}/services/{}", relay::NAME)).await {
        endpoints.extend(service_endpoints(&svc));
    }
    endpoints.into_iter().filter(|e| cidrs.iter().any(|c| c.contains(&e.ip()))).map(|e| e.to_string()).collect()
}

/// A Service's ClusterIPs (`spec.clusterIPs`, else `spec.clusterIP`; none
/// when headless) on its first port.
fn service_endpoints(svc: &serde_json::Value) -> Vec<SocketAddr> {
    let spec = &svc["spec"];
    let Some(port) = spec["ports"][0]["port"].as_u64().and_then(|p| u16::try_from(p).ok()) else {
        return Vec::new();
    };
    let ips: Vec<&str> = match spec["clusterIPs"].as_array() {
        Some(list) => list.iter().filter_map(serde_json::Value::as_str).collect(),
        None => spec["clusterIP"].as_str().into_iter().collect(),
    };
    ips.into_iter().filter_map(|ip| ip.parse().ok()).map(|ip| SocketAddr::new(ip, port)).collect()
}

/// The host and port of an API server URL (`https://host:port/…`; 443
/// when the URL names none).
fn api_server_host_port(server: &str) -> Option<(String, u16)> {
    let rest = server.split_once("://").map_or(server, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => 443,
    };
    Some((host.to_owned(), port))
}

/// Whether any address accepts a TCP connection within a short time.
async fn any_answers(addrs: &[SocketAddr]) -> bool {
    let mut attempts = tokio::task::JoinSet::new();
    for addr in addrs.iter().copied() {
        attempts.spawn(tokio::time::timeout(Duration::from_millis(800), tokio::net::TcpStream::connect(addr)));
    }
    while let Some(done) = attempts.join_next().await {
        if matches!(done, Ok(Ok(Ok(_)))) {
            return true;
        }
    }
    false
}

/// Makes sure a relay of this version runs; returns its state.
async fn ensure_relay(
    cluster: &Cluster,
    args: &ClusterArgs,
    found: &Discovery,
    say: Say<'_>,
) -> Result<relay::RelayState> {
    let ns = args.relay.namespace.as_str();
    let state = relay::state(cluster, ns).await?;
    let advice = state.version_advice();
    // A relay stuck on a bad image or a crash is re-applied too (with the
    // image asked for now), rather than waited on.
    let needs_install = !state.installed || !state.protocol_matches() || state.is_older() || state.problem.is_some();
    if !needs_install {
        if let Some(a) = advice {
            say(&a);
        }
        if state.ready {
            return Ok(state);
        }
        return relay::wait_ready(cluster, ns, Duration::from_secs(120), say).await.map_err(Into::into);
    }
    if args.no_install {
        bail!(
            "{}",
            advice.unwrap_or_else(|| format!(
                "no relay runs in namespace {ns}: run `devnet relay install --context {}`{} (or drop --no-install)",
                cluster.context,
                if ns == relay::DEFAULT_NAMESPACE { String::new() } else { format!(" --relay-namespace {ns}") },
            ))
        );
    }
    say(match (&state.installed, &state.problem) {
        (false, _) => "installing the relay".to_owned(),
        (true, Some(problem)) => format!("re-installing the relay, whose pod is stuck ({problem})"),
        (true, None) => "upgrading the relay".to_owned(),
    }
    .as_str());
    install_relay(cluster, args, found, say).await
}

/// Installs (or re-applies) the relay with a fresh CA and key, and waits
/// for its pod. Laptops enrol with it afterwards (nothing to keep here).
pub async fn install_relay(
    cluster: &Cluster,
    args: &ClusterArgs,
    found: &Discovery,
    say: Say<'_>,
) -> Result<relay::RelayState> {
    let params = relay_params(&args.relay, found, Credentials::generate()?);
    relay::install(cluster, &params).await?;
    let ns = args.relay.namespace.as_str();
    Ok(relay::wait_ready(cluster, ns, Duration::from_secs(120), say).await?)
}

/// What an install applies: the settings, and from discovery the CIDRs the
/// relay may dial and the cluster DNS it may ask. `devnet relay manifests`
/// prints the same.
pub fn relay_params(settings: &RelaySettings, found: &Discovery, credentials: Credentials) -> RelayParams {
    RelayParams {
        settings: settings.clone(),
        allow: found.cidrs(),
        dns: found.dns_servers.iter().map(|f| f.value).collect(),
        credentials,
    }
}

/// The API server's port-forward to the relay pod, opened with the user's
/// credentials (an exec plugin's token is refreshed by the client as it
/// expires, so each new port-forward carries a valid one).
#[derive(Debug, Clone)]
pub struct PortForward {
    cluster: Cluster,
    namespace: String,
}

/// A byte stream to the relay, before TLS.
pub trait RelayIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> RelayIo for T {}

impl PortForward {
    /// Opens one port-forward stream; the label says where it goes.
    pub async fn open(&self) -> Result<(Box<dyn RelayIo>, String)> {
        let (stream, label) = devnet_kube::portforward::open(&self.cluster, &self.namespace).await?;
        Ok((Box::new(stream), label))
    }
}

#[cfg(test)]
mod tests {
    use super::{NamespaceChoice, SocketAddr, api_server_host_port, service_endpoints};

    #[test]
    fn namespace_choices() {
        let v = |xs: &[&str]| xs.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let working = v(&["team-a", "old-project"]);
        let cluster = v(&["default", "team-a", "payments", "acme"]);
        let k = NamespaceChoice::Kubeconfig;
        assert_eq!(k.resolve(&working, &cluster), (v(&["team-a"]), vec![]));
        // The cluster's list may not be readable: the kubeconfig decides.
        assert_eq!(k.resolve(&working, &[]), (working.clone(), vec![]));
        let (chosen, notes) = NamespaceChoice::These(v(&["payments", "later"])).resolve(&working, &cluster);
        assert_eq!(chosen, v(&["payments", "later"]));
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("later"), "{notes:?}");
        assert_eq!(NamespaceChoice::All.resolve(&working, &cluster).0, cluster);
    }

    #[test]
    fn the_relay_service_gives_its_cluster_ips_as_endpoints() {
        use serde_json::json;
        let dual = json!({"spec": {"clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5", "fd00:96::5"],
            "ports": [{"name": "tunnel", "port": 8443, "targetPort": 8443, "nodePort": 31443}]}});
        let got: Vec<String> = service_endpoints(&dual).iter().map(ToString::to_string).collect();
        assert_eq!(got, ["10.96.0.5:8443", "[fd00:96::5]:8443"]);
        let old = json!({"spec": {"clusterIP": "10.96.0.5", "ports": [{"port": 9443}]}});
        assert_eq!(service_endpoints(&old), ["10.96.0.5:9443".parse::<SocketAddr>().expect("addr")]);
        let headless = json!({"spec": {"clusterIP": "None", "clusterIPs": ["None"], "ports": [{"port": 8443}]}});
        assert!(service_endpoints(&headless).is_empty());
        assert!(service_endpoints(&json!({"spec": {"clusterIP": "10.96.0.5"}})).is_empty(), "no port");
    }

    #[test]
    fn api_server_urls_name_host_and_port() {
        let hp = |h: &str, p: u16| Some((h.to_owned(), p));
        assert_eq!(api_server_host_port("https://10.60.20.10:6443/"), hp("10.60.20.10", 6443));
        assert_eq!(api_server_host_port("https://api.example.com"), hp("api.example.com", 443));
        assert_eq!(api_server_host_port("https://[fd00::1]:6443/k8s/clusters/c-1"), hp("fd00::1", 6443));
        assert_eq!(api_server_host_port("https://[fd00::1]"), hp("fd00::1", 443));
        assert_eq!(api_server_host_port("https://api.example.com:x/"), None);
        assert_eq!(api_server_host_port("https:///"), None);
    }
}

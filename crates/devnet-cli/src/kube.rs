//! `devnet connect --context …`: from a kubeconfig to an engine profile.
//! Discover the cluster, make sure the relay runs (installing or upgrading
//! it when the user may), get the relay's credentials from the keyring (or
//! once from the API), and pick transports: direct to the relay pod or its
//! node port first, the API server's port-forward otherwise.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use devnet_engine::config::ProfileFile;
use devnet_engine::status::Discovered;
use devnet_engine::transport::{Dial, DialFuture, DirectDial, Fallback, RelayStream};
use devnet_kube::discover::{Discovery, discover};
use devnet_kube::relay::{self, Credentials, RelayParams};
use devnet_kube::{Cluster, ClusterOptions, InvokingUser, KubeError};

/// Kubernetes flags shared by connect, doctor and relay.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct KubeArgs {
    /// The kubeconfig context (default: the current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The relay image `devnet connect` and `devnet relay install` deploy.
    #[arg(long, env = "DEVNET_RELAY_IMAGE", global = true)]
    pub relay_image: Option<String>,
    /// Never install or upgrade the relay; fail instead.
    #[arg(long, global = true)]
    pub no_install: bool,
}

impl KubeArgs {
    pub fn wanted(&self) -> bool {
        self.context.is_some() || self.kubeconfig.is_some()
    }

    pub fn options(&self) -> ClusterOptions {
        ClusterOptions {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            invoking_user: if crate::is_root() { InvokingUser::from_sudo() } else { None },
        }
    }

    fn image(&self) -> String {
        self.relay_image.clone().unwrap_or_else(|| format!("ghcr.io/devnet-dev/devnet-relay:{}", relay::VERSION))
    }
}

/// What `connect` hands the engine.
pub struct Prepared {
    pub file: ProfileFile,
    pub dialer: Arc<dyn Dial>,
    pub discovered: Vec<Discovered>,
}

fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "devnet: {msg}");
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
pub async fn discover_cluster(
    args: &KubeArgs,
    domain: Option<String>,
) -> Result<(Cluster, Discovery, Vec<SocketAddr>)> {
    let cluster = Cluster::connect(&args.options()).await?;
    say(&format!("cluster {} at {}", cluster.context, cluster.server));
    let sources = cluster.gather(domain).await?;
    let found = discover(&sources)?;
    for f in discovered(&cluster, &found).iter().skip(1) {
        say(&format!("found {} {} (from {})", f.what, f.value, f.source));
    }
    let pod_cidrs: Vec<_> = found.pod_cidrs.iter().map(|f| f.value).collect();
    let probes = devnet_kube::discover::pod_probe_targets(sources.pods.as_deref().unwrap_or_default(), &pod_cidrs);
    Ok((cluster, found, probes))
}

/// Everything `devnet connect --context` does before the engine starts.
pub async fn prepare(args: &KubeArgs, domain: Option<String>) -> Result<Prepared> {
    let (cluster, found, pod_probes) = discover_cluster(args, domain).await?;
    let (state, fresh) = ensure_relay(&cluster, args, &found).await?;
    let account = devnet_kube::credentials::account(&cluster.server);
    let creds = match fresh {
        Some(c) => c.for_client(),
        None => match keyring_load(&account)? {
            // Only if it belongs to the relay installed now.
            Some(c) if state.ca_sha256.as_ref().is_none_or(|fp| *fp == relay::ca_fingerprint(&c.ca_pem)) => c,
            _ => {
                say("fetching the relay's credentials once from the API server into the keyring");
                let c = relay::fetch_credentials(&cluster).await.map_err(|e| match e {
                    KubeError::Forbidden(m) => anyhow::anyhow!(
                        "{m}: reading the relay's credentials needs {{apiGroups: [\"\"], resources: [\"secrets\"], verbs: [\"get\"]}} in namespace {}; ask a cluster admin for it",
                        relay::NAMESPACE
                    ),
                    e => e.into(),
                })?;
                keyring_store(&account, &c)?;
                c
            }
        },
    };

    // Transports: direct to the pod IP and the node port, then the API server.
    let node = match (state.host_ip, state.node_port) {
        (Some(ip), Some(port)) => Some(SocketAddr::new(ip, port)),
        _ => None,
    };
    let mut direct: Vec<SocketAddr> = state.pod_ips.iter().map(|ip| SocketAddr::new(*ip, relay::TUNNEL_PORT)).collect();
    direct.extend(node);
    let may_portforward = cluster.can_i("create", "", "pods/portforward", Some(relay::NAMESPACE)).await?;
    let direct_dial =
        DirectDial { addrs: direct.clone(), timeout: Duration::from_millis(800), bypass: crate::is_root() };
    let mut transports: Vec<Box<dyn Dial>> = vec![Box::new(direct_dial.clone())];
    if may_portforward {
        transports.push(Box::new(PortForward { cluster: cluster.clone() }));
    } else if direct_dial.dial().await.is_err() {
        bail!(
            "the relay is not reachable directly ({}), and you may not use the API server's port-forward: ask a cluster admin for {{apiGroups: [\"\"], resources: [\"pods/portforward\"], verbs: [\"create\"]}} in namespace {}",
            direct.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
            relay::NAMESPACE
        );
    } else {
        say("you may not use pods/portforward: only the direct transport will be tried");
    }

    let relay_addr = node.or(direct.first().copied()).context("the relay pod has no IP and no node port")?;
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
    let file = ProfileFile {
        relay: Some(relay_addr.to_string()),
        token: Some(creds.token.into()),
        relay_ca_pem: Some(creds.ca_pem),
        cidrs: found.cidrs().iter().map(ToString::to_string).collect(),
        dns_server: dns.map(|d| d.to_string()),
        probe_targets: probes,
        cluster_domain: Some(found.cluster_domain.value.clone()),
        namespaces: cluster.namespaces().await,
        ..Default::default()
    };
    Ok(Prepared { file, dialer: Arc::new(Fallback(transports)), discovered: discovered(&cluster, &found) })
}

/// Makes sure a relay of this version runs; returns its state, and the
/// credentials when this call (re)installed it.
async fn ensure_relay(
    cluster: &Cluster,
    args: &KubeArgs,
    found: &Discovery,
) -> Result<(relay::RelayState, Option<Credentials>)> {
    let state = relay::state(cluster).await?;
    let advice = state.version_advice();
    // A relay stuck on a bad image or a crash is re-applied too (with the
    // image asked for now), rather than waited on.
    let needs_install = !state.installed || !state.protocol_matches() || state.is_older() || state.problem.is_some();
    if !needs_install {
        if let Some(a) = advice {
            say(&a);
        }
        if state.ready {
            return Ok((state, None));
        }
        return Ok((relay::wait_ready(cluster, Duration::from_secs(120), say).await?, None));
    }
    if args.no_install {
        bail!(
            "{}",
            advice.unwrap_or_else(|| format!(
                "no relay runs in namespace {}: run `devnet relay install --context {}` (or drop --no-install)",
                relay::NAMESPACE,
                cluster.context
            ))
        );
    }
    say(match (&state.installed, &state.problem) {
        (false, _) => "installing the relay".to_owned(),
        (true, Some(problem)) => format!("re-installing the relay, whose pod is stuck ({problem})"),
        (true, None) => "upgrading the relay".to_owned(),
    }
    .as_str());
    let (state, creds) = install_relay(cluster, args, found).await?;
    Ok((state, Some(creds)))
}

/// Installs (or re-applies) the relay with fresh credentials, waits for its
/// pod, and keeps the client's half of the credentials in the keyring.
pub async fn install_relay(
    cluster: &Cluster,
    args: &KubeArgs,
    found: &Discovery,
) -> Result<(relay::RelayState, Credentials)> {
    let creds = Credentials::generate()?;
    let params = RelayParams {
        image: args.image(),
        allow: found.cidrs(),
        dns: found.dns_servers.iter().map(|f| f.value).collect(),
        credentials: creds.clone(),
    };
    relay::install(cluster, &params).await?;
    let state = relay::wait_ready(cluster, Duration::from_secs(120), say).await?;
    keyring_store(&devnet_kube::credentials::account(&cluster.server), &creds)?;
    Ok((state, creds))
}

/// The API server's port-forward as an engine transport.
#[derive(Debug)]
struct PortForward {
    cluster: Cluster,
}

impl Dial for PortForward {
    fn dial(&self) -> DialFuture {
        let cluster = self.cluster.clone();
        Box::pin(async move {
            let (stream, label) = devnet_kube::portforward::open(&cluster).await?;
            Ok((Box::new(stream) as RelayStream, label))
        })
    }
}

// Keyring calls run as the invoking user under sudo (their keyring, not root's).

fn keyring_load(account: &str) -> Result<Option<Credentials>> {
    match InvokingUser::from_sudo().filter(|_| crate::is_root()) {
        None => Ok(devnet_kube::credentials::load(account)?),
        Some(user) => {
            let out = as_user(&user, &["credential", "load", "--account", account], None)?;
            if out.trim().is_empty() { Ok(None) } else { Ok(Some(serde_json::from_str(&out)?)) }
        }
    }
}

fn keyring_store(account: &str, creds: &Credentials) -> Result<()> {
    match InvokingUser::from_sudo().filter(|_| crate::is_root()) {
        None => Ok(devnet_kube::credentials::store(account, creds)?),
        Some(user) => {
            let json = serde_json::to_string(&creds.for_client())?;
            as_user(&user, &["credential", "store", "--account", account], Some(&json)).map(drop)
        }
    }
}

fn as_user(user: &InvokingUser, args: &[&str], stdin: Option<&str>) -> Result<String> {
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    let exe = std::env::current_exe().context("finding the devnet binary")?;
    let mut child = std::process::Command::new(exe)
        .args(args)
        .uid(user.uid)
        .gid(user.gid)
        .env("HOME", &user.home)
        .env_remove("SUDO_UID")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running the keyring helper as the invoking user")?;
    if let Some(text) = stdin
        && let Some(mut pipe) = child.stdin.take()
    {
        pipe.write_all(text.as_bytes())?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim().trim_start_matches("error: "));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

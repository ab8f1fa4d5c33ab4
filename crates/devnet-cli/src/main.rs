//! `devnet`: reach a Kubernetes cluster's pods, services and DNS from this
//! machine.
//!
//! **Layer:** the command-line client. `connect` runs the engine in the
//! foreground (as root); `status` and `disconnect` talk to a running engine
//! over its control socket.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use devnet_engine::config::{DEFAULT_STATE_DIR, ProfileFile};
use devnet_engine::control::{self, Request, Response};
use devnet_engine::runner::SystemRunner;
use devnet_engine::status::LinkState;
use tracing::info;

mod kube;

#[derive(Parser, Debug)]
#[command(name = "devnet", version, about = "Reach a Kubernetes cluster's network from this machine")]
struct Cli {
    /// Where the engine keeps its journal and control socket.
    #[arg(long, global = true, env = "DEVNET_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Connect and stay in the foreground until Ctrl-C or `devnet disconnect` (needs root).
    Connect(ConnectArgs),
    /// Show the running engine's state.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Ask the running engine to disconnect and undo its network changes.
    Disconnect,
    /// Undo network changes a crashed engine left behind, then exit (needs root).
    Cleanup,
    /// Install, check or remove the relay in the cluster.
    Relay {
        #[command(subcommand)]
        action: RelayAction,
        #[command(flatten)]
        kube: kube::KubeArgs,
    },
    /// The keyring helper devnet runs as the invoking user under sudo.
    #[command(hide = true)]
    Credential {
        #[arg(value_parser = ["load", "store", "forget"])]
        action: String,
        #[arg(long)]
        account: String,
    },
    /// Explain which way each CIDR goes and what the office network could fix.
    Doctor {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        profile: ConnectArgs,
    },
}

#[derive(Subcommand, Debug)]
enum RelayAction {
    /// Install or upgrade the relay (discovers the CIDRs it may reach).
    Install,
    /// Show the relay's version, pod and readiness.
    Status,
    /// Remove the relay's namespace and everything in it.
    Uninstall,
}

#[derive(Args, Debug)]
struct ConnectArgs {
    #[command(flatten)]
    kube: kube::KubeArgs,
    /// A TOML profile; flags override its fields.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// The relay's address, IP:PORT.
    #[arg(long)]
    relay: Option<String>,
    /// A file holding the relay token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The CA certificate (PEM) the relay's certificate must chain to.
    #[arg(long)]
    relay_ca: Option<PathBuf>,
    /// A pod or service CIDR to route through the tunnel; repeat or comma-separate.
    #[arg(long = "cidr", value_delimiter = ',')]
    cidrs: Vec<String>,
    /// The cluster DNS server (kube-dns ClusterIP).
    #[arg(long)]
    dns_server: Option<String>,
    /// A live IP:PORT inside a CIDR (a pod or Service) used to prove a direct path; repeatable.
    #[arg(long = "probe", value_delimiter = ',')]
    probe_targets: Vec<String>,
    /// The cluster domain.
    #[arg(long)]
    cluster_domain: Option<String>,
    /// How the system is pointed at devnet's DNS: auto, systemd-resolved or resolv-conf.
    #[arg(long)]
    dns_backend: Option<String>,
    /// The TUN device's name.
    #[arg(long)]
    tun_name: Option<String>,
    /// The TUN device's MTU.
    #[arg(long)]
    mtu: Option<u16>,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Connect(args) => connect(args, cli.state_dir).await,
        Command::Relay { action, kube } => relay(action, kube).await,
        Command::Credential { action, account } => credential(&action, &account),
        Command::Doctor { json, profile } => doctor(profile, cli.state_dir, json).await,
        Command::Status { json } => match control::request(&cli.state_dir, Request::Status).await? {
            Response::Status { status } => {
                if json {
                    println!("{}", serde_json::to_string_pretty(&status)?);
                } else {
                    println!("{}", status.human());
                }
                Ok(())
            }
            other => anyhow::bail!("unexpected answer from the engine: {other:?}"),
        },
        Command::Disconnect => match control::request(&cli.state_dir, Request::Disconnect).await? {
            Response::Disconnecting => {
                println!("disconnecting");
                Ok(())
            }
            other => anyhow::bail!("unexpected answer from the engine: {other:?}"),
        },
        Command::Cleanup => {
            anyhow::ensure!(is_root(), "devnet cleanup needs root: it removes routes and devices (run it with sudo)");
            if control::remove_stale(&cli.state_dir).await {
                println!("removed the control socket of an engine that is gone");
            }
            let recovery = devnet_engine::recover(&cli.state_dir, &SystemRunner)?;
            if recovery.journaled.is_empty() {
                println!("nothing to undo: the journal is empty");
                return Ok(());
            }
            println!("the journal held {} changes:", recovery.journaled.len());
            for entry in &recovery.journaled {
                println!("  {entry}");
            }
            for cmd in &recovery.undone {
                println!("undid: {cmd}");
            }
            if recovery.undone.is_empty() {
                println!("all were already gone (a TUN device and its routes vanish with the engine)");
            }
            Ok(())
        }
    }
}

impl ConnectArgs {
    /// Whether to start from the kubeconfig: asked for, or nothing else
    /// says where the relay is (plain `devnet connect` uses the current context).
    fn uses_cluster(&self) -> bool {
        self.kube.wanted() || (self.profile.is_none() && self.relay.is_none())
    }
}

/// Whether this process runs as root: `/proc/self` belongs to the effective uid.
pub(crate) fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn load_profile(args: ConnectArgs, state_dir: PathBuf) -> Result<devnet_engine::config::Profile> {
    load_profile_over(ProfileFile::default(), args, state_dir)
}

/// The profile from `discovered` (the cluster), then the profile file, then flags.
fn load_profile_over(
    discovered: ProfileFile,
    args: ConnectArgs,
    state_dir: PathBuf,
) -> Result<devnet_engine::config::Profile> {
    let from_file = match &args.profile {
        Some(path) => discovered.overlay(ProfileFile::load(path)?),
        None => discovered,
    };
    let from_flags = ProfileFile {
        relay: args.relay,
        token_file: args.token_file,
        relay_ca: args.relay_ca,
        cidrs: args.cidrs,
        dns_server: args.dns_server,
        probe_targets: args.probe_targets,
        namespaces: Vec::new(),
        default_namespace: None,
        resolv_conf: None,
        dns_stub: None,
        dns_backend: args.dns_backend,
        dns_link_address: None,
        allow_overlap: Vec::new(),
        gateways: Vec::new(),
        cluster_domain: args.cluster_domain,
        tun_name: args.tun_name,
        mtu: args.mtu,
        state_dir: Some(state_dir),
        token: None,
        relay_ca_pem: None,
    };
    Ok(from_file.overlay(from_flags).validate()?)
}

/// Findings from a running engine's evidence, or from a fresh detection.
async fn doctor(args: ConnectArgs, state_dir: PathBuf, json: bool) -> Result<()> {
    let mut facts = Vec::new();
    let mut notes = Vec::new();
    // The relay pod's tunnel port, where doctor asks which source address
    // the pods see (SNAT on the path).
    let mut relay_pods: Vec<std::net::SocketAddr> = Vec::new();
    let profile = if args.uses_cluster() {
        let (cluster, found, pod_probes) = kube::discover_cluster(&args.kube, args.cluster_domain.clone()).await?;
        if let Ok(relay) = devnet_kube::relay::state(&cluster).await {
            relay_pods = relay
                .pod_ips
                .iter()
                .map(|ip| std::net::SocketAddr::new(*ip, devnet_kube::relay::TUNNEL_PORT))
                .collect();
        }
        facts = kube::discovered(&cluster, &found);
        notes = found.notes.clone();
        for p in found.calico_pools.iter().filter(|p| p.is_overlay()) {
            notes.push(format!(
                "Calico pool {} ({}) uses {}: pod IPs are not routable from outside the cluster unless the office peers with Calico over BGP; devnet tunnels them",
                p.pool,
                p.cidr,
                if p.ipip == "Always" { "IPIP" } else { "VXLAN" }
            ));
        }
        let mut file = ProfileFile {
            cidrs: found.cidrs().iter().map(ToString::to_string).collect(),
            dns_server: found.dns_servers.first().map(|f| f.value.to_string()),
            cluster_domain: Some(found.cluster_domain.value.clone()),
            // Doctor only probes paths: no relay is dialled.
            relay: Some("192.0.2.1:9".into()),
            token: Some("unused".into()),
            relay_ca_pem: Some(String::new()),
            ..Default::default()
        };
        file.probe_targets = pod_probes.iter().map(ToString::to_string).collect();
        file.probe_targets.extend(found.dns_servers.iter().map(|f| std::net::SocketAddr::new(f.value, 53).to_string()));
        load_profile_over(file, args, state_dir.clone())?
    } else {
        load_profile(args, state_dir.clone())?
    };
    let mut verdicts = match control::request(&state_dir, Request::Status).await {
        // An engine is connected: its routes would capture our probes, so
        // use the evidence it gathered with the bypass mark.
        Ok(Response::Status { status }) => status.paths,
        _ => devnet_engine::detect::detect_with(&profile, &SystemRunner, is_root()).await?,
    };
    // Where the way ends for each CIDR whose probe got no answer: traced
    // hop by hop, over the path the machine has without devnet.
    for v in
        verdicts.iter_mut().filter(|v| matches!(v.path, devnet_path::Path::Tunnel | devnet_path::Path::Unreachable))
    {
        if let Some(std::net::IpAddr::V4(target)) = v.evidence.target.map(|t| t.ip()) {
            match devnet_engine::detect::trace(target, 8, is_root()).await {
                Ok(hops) => v.evidence.hops = hops,
                Err(e) => notes.push(format!("could not trace the way to {target}: {e}")),
            }
        }
    }
    let roles = devnet_engine::detect::roles(&profile);
    let pairs: Vec<_> = verdicts
        .iter()
        .filter_map(|v| profile.cidrs.iter().position(|c| *c == v.cidr).map(|i| (v.clone(), roles[i])))
        .collect();
    let mut findings = devnet_path::doctor::diagnose(&pairs);
    if let (Some(cluster_dns), Some((server, name, said))) =
        (profile.dns_server, devnet_engine::office_forwarding(&profile).await)
    {
        findings.push(devnet_path::doctor::dns_forwarding(&profile.cluster_domain, &name, server, cluster_dns, &said));
    }
    // Only a pod reached over the network's own path says anything about it.
    let routed = |ip: &std::net::IpAddr| {
        verdicts
            .iter()
            .any(|v| v.cidr.contains(ip) && matches!(v.path, devnet_path::Path::Direct | devnet_path::Path::Gateway))
    };
    if let Some(&target) = relay_pods.iter().find(|t| routed(&t.ip())) {
        match devnet_engine::detect::whoami(target, is_root()).await {
            Ok((local, seen)) => findings.push(devnet_path::doctor::source_nat(target, local.ip(), seen.ip())),
            Err(e) => notes.push(format!("could not ask the relay pod at {target} which address it sees: {e}")),
        }
    }
    if json {
        let doc =
            serde_json::json!({"discovered": facts, "discovery_notes": notes, "paths": verdicts, "findings": findings});
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    for f in &facts {
        println!("found {:<13} {:<20} from {}", f.what, f.value, f.source);
    }
    for n in &notes {
        println!("note: {n}");
    }
    for v in &verdicts {
        println!("{:<18} {:<7} {}", v.cidr.to_string(), format!("{:?}", v.path).to_lowercase(), v.reason);
    }
    for f in &findings {
        println!("\n[{}] {}\n  {}", format!("{:?}", f.severity).to_lowercase(), f.title, f.detail);
        if let Some(fix) = &f.fix {
            println!("  fix: {fix}");
        }
    }
    Ok(())
}

async fn connect(args: ConnectArgs, state_dir: PathBuf) -> Result<()> {
    anyhow::ensure!(
        is_root(),
        "devnet connect needs root: it creates a TUN device and routes (run it with sudo; `devnet status` then needs sudo too)"
    );
    let engine = if args.uses_cluster() {
        let prepared = kube::prepare(&args.kube, args.cluster_domain.clone()).await?;
        let profile = load_profile_over(prepared.file, args, state_dir)?;
        devnet_engine::start_with(profile, Arc::new(SystemRunner), prepared.dialer, prepared.discovered)
            .await
            .context("cannot connect")?
    } else {
        let profile = load_profile(args, state_dir)?;
        devnet_engine::start(profile, Arc::new(SystemRunner)).await.context("cannot connect")?
    };
    let mut status = engine.status();
    let mut printed = None;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = &mut ctrl_c => {
                info!("interrupted; disconnecting");
                engine.disconnect().await;
                break;
            }
            _ = term.recv() => {
                info!("terminated; disconnecting");
                engine.disconnect().await;
                break;
            }
            changed = status.changed() => {
                if changed.is_err() {
                    break;
                }
                let s = status.borrow().clone();
                if printed != Some((s.state, s.last_error.clone())) {
                    match (&s.last_error, s.state) {
                        (Some(e), _) => eprintln!("devnet: {:?} ({e})", s.state),
                        (None, LinkState::Direct) => {
                            eprintln!("devnet: no CIDR needs the tunnel (each is routed directly or via a forwarding node)")
                        }
                        (None, _) => eprintln!(
                            "devnet: {:?} to relay {} ({})",
                            s.state,
                            s.relay,
                            s.transport.as_deref().unwrap_or("dialling")
                        ),
                    }
                    for v in s.paths.iter().filter(|_| printed.is_none()) {
                        eprintln!("devnet:   {} {:?}: {}", v.cidr, v.path, v.reason);
                    }
                    printed = Some((s.state, s.last_error));
                }
            }
        }
    }
    engine.wait().await
}

async fn relay(action: RelayAction, args: kube::KubeArgs) -> Result<()> {
    use devnet_kube::relay as r;
    match action {
        RelayAction::Install => {
            let (cluster, found, _) = kube::discover_cluster(&args, None).await?;
            let (st, _) = kube::install_relay(&cluster, &args, &found).await?;
            println!(
                "relay {} installed in namespace {} (pod {})",
                r::VERSION,
                r::NAMESPACE,
                st.pod.unwrap_or_default()
            );
            Ok(())
        }
        RelayAction::Status => {
            let cluster = devnet_kube::Cluster::connect(&args.options()).await?;
            let st = r::state(&cluster).await?;
            println!("{}", serde_json::to_string_pretty(&st)?);
            if let Some(a) = st.version_advice() {
                println!("{a}");
            }
            Ok(())
        }
        RelayAction::Uninstall => {
            let cluster = devnet_kube::Cluster::connect(&args.options()).await?;
            let account = devnet_kube::credentials::account(&cluster.server);
            let removed = r::uninstall(&cluster).await?;
            let _ = devnet_kube::credentials::forget(&account);
            println!("{}", if removed { "relay uninstalled" } else { "no relay was installed" });
            Ok(())
        }
    }
}

/// The keyring helper: JSON credentials on stdin (store) or stdout (load).
fn credential(action: &str, account: &str) -> Result<()> {
    use devnet_kube::credentials as c;
    match action {
        "load" => {
            if let Some(creds) = c::load(account)? {
                println!("{}", serde_json::to_string(&creds)?);
            }
        }
        "store" => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
            c::store(account, &serde_json::from_str(&text)?)?;
        }
        _ => {
            c::forget(account)?;
        }
    }
    Ok(())
}

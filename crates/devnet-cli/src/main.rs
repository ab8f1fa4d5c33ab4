//! `devnet`: reach a Kubernetes cluster's pods, services and DNS from this
//! machine.
//!
//! **Layer:** the command-line client, run as the user. `connect`,
//! `status` and `disconnect` talk to devnetd (`devnet-ipc`); the cluster
//! side runs here (`devnet-session`). `connect --foreground` runs the engine
//! in this process instead, as root, for machines without the service.
//!
//! Exit codes: 0 success (for `status`: connected), 1 an error, 3 `status`
//! found no connected session; `preflight` has one per failure class
//! (`devnet_model::preflight::Failure`, docs/preflight.md).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand};
use devnet_engine::config::{DEFAULT_STATE_DIR, ProfileFile};
use devnet_engine::control::{self, Request, Response};
use devnet_engine::runner::SystemRunner;
use devnet_engine::status::LinkState;
use devnet_ipc::message::{ClientKind, SessionStatus};

mod connect;
mod kube;
mod preflight;

/// `devnet status` exits with this when no session is connected.
const EXIT_NOT_CONNECTED: u8 = 3;

#[derive(Parser, Debug)]
#[command(name = "devnet", version, about = "Reach a Kubernetes cluster's network from this machine")]
struct Cli {
    /// Where the in-process engine (`connect --foreground`) keeps its journal and control socket.
    #[arg(long, global = true, env = "DEVNET_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// devnetd's socket.
    #[arg(long, global = true, env = devnet_ipc::SOCKET_ENV, default_value = devnet_ipc::DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Connect through devnetd and stay until Ctrl-C or `devnet disconnect`.
    Connect(ConnectArgs),
    /// Show each session's state; exits 0 when connected, 3 when not.
    Status {
        /// Print JSON instead of text: the session's status (an array of
        /// sessions when several run and none is named).
        #[arg(long)]
        json: bool,
        /// The session to show (default: every session).
        #[arg(long)]
        session: Option<String>,
    },
    /// End a session and undo its network changes (only its owner or root).
    Disconnect {
        /// The session to end (default: the only one).
        #[arg(long)]
        session: Option<String>,
    },
    /// Undo network changes a crashed engine or devnetd left behind, then exit (needs root).
    Cleanup {
        /// devnetd's state directory.
        #[arg(long, default_value = DEVNETD_STATE_DIR)]
        daemon_state_dir: PathBuf,
    },
    /// Print a shell completion script: `devnet completion bash > /etc/bash_completion.d/devnet`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
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
    /// The file reader devnet runs as the invoking user under sudo: root
    /// reads no file the invoker named, the invoker's own process does.
    #[command(hide = true)]
    ReadFile { path: PathBuf },
    /// Check the way to a debugger in the cluster before an IDE attaches (exit code per failure class).
    Preflight(preflight::PreflightArgs),
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
    Install(kube::SettingsArgs),
    /// Show the relay's version, pod and readiness.
    Status,
    /// Remove the relay's namespace and everything in it.
    Uninstall,
    /// Revoke a user's (or one certificate's) access to the relay: their
    /// live sessions are closed and they can enrol no more. Needs rights on
    /// the ConfigMap devnet-relay-revoked, which cluster admins have.
    Revoke(RevokeArgs),
    /// Print, as YAML, the objects `devnet relay install` applies, for GitOps.
    ///
    /// The same objects in the same order as `devnet relay install` with the
    /// same flags: Namespace, ServiceAccount, the Secret devnet-relay-tls,
    /// the ConfigMap devnet-relay-revoked, the Role devnet-user (bind users
    /// to it), Deployment, Service, NetworkPolicy. The CIDRs the relay may
    /// dial come from --allow (and the cluster DNS from --dns); without
    /// --allow they are discovered from the cluster (--context, --kubeconfig)
    /// as install does.
    ///
    /// devnet-relay-tls holds the relay's TLS key pair and CA (only the
    /// relay pod mounts it; no user may read it). It is generated afresh on
    /// every run and left out unless --include-secret, and so is the
    /// Deployment's devnet.dev/ca-sha256 annotation (the fingerprint of that
    /// CA): a private key does not belong in plain git. Create it once in the
    /// cluster with `devnet relay manifests --secret-only | kubectl apply -f
    /// -`, or seal that output (kubeseal, SOPS) and commit the sealed form.
    /// Users read no Secret: `devnet connect` enrols them through the API
    /// server's port-forward for a client certificate of their own.
    Manifests(ManifestsArgs),
}

#[derive(Args, Debug)]
struct RevokeArgs {
    /// The user, as the relay logs them (the API server's name for them); repeatable.
    #[arg(long = "user", value_name = "NAME")]
    users: Vec<String>,
    /// A certificate serial, as the relay logs it (hex); repeatable.
    #[arg(long = "serial", value_name = "HEX")]
    serials: Vec<String>,
    /// Admit them again instead.
    #[arg(long)]
    undo: bool,
}

#[derive(Args, Debug)]
struct ManifestsArgs {
    #[command(flatten)]
    settings: kube::SettingsArgs,
    /// A CIDR the relay may dial (the cluster's pod and service networks);
    /// repeat or comma-separate. Without any, discovered from the cluster.
    #[arg(long = "allow", value_delimiter = ',', value_name = "CIDR")]
    allow: Vec<String>,
    /// A cluster DNS server (the kube-dns ClusterIP) the relay may ask on
    /// port 53; repeat or comma-separate. With --allow; else discovered.
    #[arg(long = "dns", value_delimiter = ',', value_name = "IP", requires = "allow")]
    dns: Vec<String>,
    /// Also print the Secrets, with fresh credentials, and the Deployment's CA
    /// fingerprint: only for a store meant for secrets.
    #[arg(long)]
    include_secret: bool,
    /// Print only the Secrets, with fresh credentials (to create them once, or
    /// to seal them).
    #[arg(long, conflicts_with_all = ["include_secret", "allow", "dns"])]
    secret_only: bool,
}

#[derive(Args, Debug)]
struct ConnectArgs {
    #[command(flatten)]
    kube: kube::KubeArgs,
    /// Run the engine in this process (as root) instead of asking devnetd.
    #[arg(long)]
    foreground: bool,
    /// The session's name (default: the kubeconfig context, or the profile's file name).
    #[arg(long)]
    session: Option<String>,
    /// With --foreground: the resolv.conf to manage (devnetd has its own setting).
    #[arg(long)]
    resolv_conf: Option<PathBuf>,
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
    /// A namespace whose short names (`svc.namespace`) resolve; repeat or
    /// comma-separate. Default: the namespaces your kubeconfig's contexts
    /// name for this cluster. Full names (`svc.ns.svc.cluster.local`)
    /// resolve for every namespace either way.
    #[arg(long = "namespace", value_name = "NAMESPACE", value_delimiter = ',', conflicts_with = "all_namespaces")]
    namespaces: Vec<String>,
    /// Short names for every namespace of the cluster. Whoever may create a
    /// namespace then decides where your lookups of `*.<its name>` go.
    #[arg(long)]
    all_namespaces: bool,
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
    if matches!(&cli.command, Command::Connect(args) if args.foreground) {
        // The foreground engine carries the data path in this process.
        let plan = devnet_startup::reexec_with_fast_copies();
        tracing::debug!(?plan, "start-up");
    }
    let runtime = match devnet_engine::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Connect(args) if args.foreground => connect::in_process(args, cli.state_dir).await.map(|()| 0),
        Command::Connect(args) => connect::through_daemon(args, cli.socket).await.map(|()| 0),
        Command::Relay { action, kube } => relay(action, kube).await.map(|()| 0),
        Command::Credential { action, account } => credential(&action, &account).map(|()| 0),
        Command::ReadFile { path } => read_file(&path).map(|()| 0),
        Command::Doctor { json, profile } => doctor(profile, cli.socket, cli.state_dir, json).await.map(|()| 0),
        Command::Preflight(args) => Ok(preflight::run(args, cli.socket).await),
        Command::Status { json, session } => status(&cli.socket, &cli.state_dir, session, json).await,
        Command::Disconnect { session } => disconnect(&cli.socket, &cli.state_dir, session).await.map(|()| 0),
        Command::Cleanup { daemon_state_dir } => cleanup(&cli.state_dir, &daemon_state_dir).await.map(|()| 0),
        Command::Completion { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "devnet", &mut script);
            // `devnet completion bash | head` is not an error.
            match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(0),
            }
        }
    }
}

/// Every session: devnetd's, else the in-process engine's (`--foreground`).
async fn sessions(socket: &std::path::Path, state_dir: &std::path::Path) -> Result<Vec<SessionStatus>> {
    match devnet_session::keeper::sessions(socket, ClientKind::Cli).await {
        Ok(s) => Ok(s),
        Err(daemon) => match control::request(state_dir, Request::Status).await {
            Ok(Response::Status { status }) => {
                Ok(vec![SessionStatus { name: "foreground".into(), owner_uid: 0, status: *status }])
            }
            // Neither answers: devnetd's reason is the one to show.
            _ => Err(daemon),
        },
    }
}

async fn status(
    socket: &std::path::Path,
    state_dir: &std::path::Path,
    session: Option<String>,
    json: bool,
) -> Result<u8> {
    let all = sessions(socket, state_dir).await?;
    let shown: Vec<&SessionStatus> = all.iter().filter(|s| session.as_ref().is_none_or(|n| *n == s.name)).collect();
    if let Some(name) = &session
        && shown.is_empty()
    {
        anyhow::bail!("no session named {name}");
    }
    let connected = shown.iter().any(|s| matches!(s.status.state, LinkState::Connected | LinkState::Direct));
    if json {
        let doc = match shown.as_slice() {
            [one] => {
                let mut v = serde_json::to_value(&one.status)?;
                v["session"] = one.name.clone().into();
                v["owner_uid"] = one.owner_uid.into();
                v
            }
            many => serde_json::to_value(many)?,
        };
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else if shown.is_empty() {
        println!("not connected: no session runs (start one with `devnet connect`)");
    } else {
        for (i, s) in shown.iter().enumerate() {
            if i > 0 {
                println!();
            }
            println!("session:  {} (uid {})\n{}", s.name, s.owner_uid, s.status.human());
        }
    }
    Ok(if connected { 0 } else { EXIT_NOT_CONNECTED })
}

async fn disconnect(socket: &std::path::Path, state_dir: &std::path::Path, session: Option<String>) -> Result<()> {
    match devnet_session::keeper::disconnect(socket, ClientKind::Cli, session.clone()).await {
        Ok(name) => {
            println!("disconnecting {name}");
            Ok(())
        }
        // No devnetd: the in-process engine, if one runs.
        Err(e) if session.is_none() && e.downcast_ref::<devnet_ipc::client::ClientError>().is_some() => {
            match control::request(state_dir, Request::Disconnect).await {
                Ok(Response::Disconnecting) => {
                    println!("disconnecting");
                    Ok(())
                }
                _ => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Undoes what a crashed engine left: the in-process engine's journal, and
/// devnetd's when devnetd is not running. A live engine's state is never
/// touched.
async fn cleanup(state_dir: &std::path::Path, daemon_dir: &std::path::Path) -> Result<()> {
    anyhow::ensure!(is_root(), "devnet cleanup needs root: it removes routes and devices (run it with sudo)");
    let mut dirs = Vec::new();
    if control::request(state_dir, Request::Status).await.is_ok() {
        println!(
            "an engine is running (it answers on {}): leaving its state alone; use `devnet disconnect`",
            control::socket_path(state_dir).display()
        );
    } else {
        if control::remove_stale(state_dir).await {
            println!("removed the control socket of an engine that is gone");
        }
        dirs.push(state_dir.to_owned());
    }
    if daemon_dir.join("sessions").exists() {
        if devnetd_alive(daemon_dir) {
            println!(
                "devnetd is running and owns {}: leaving it alone (it undoes its own sessions)",
                daemon_dir.display()
            );
        } else {
            dirs.extend(std::fs::read_dir(daemon_dir.join("sessions"))?.flatten().map(|e| e.path()));
        }
    }
    let mut any = false;
    for dir in dirs {
        let recovery = devnet_engine::recover_dead(&dir, &SystemRunner)?;
        if recovery.journaled.is_empty() {
            continue;
        }
        any = true;
        println!("the journal in {} held {} changes:", dir.display(), recovery.journaled.len());
        for entry in &recovery.journaled {
            println!("  {entry}");
        }
        for cmd in &recovery.undone {
            println!("undid: {cmd}");
        }
        if recovery.undone.is_empty() {
            println!("all were already gone (a TUN device and its routes vanish with the engine)");
        }
    }
    if !any {
        println!("nothing to undo: the journal is empty");
    }
    Ok(())
}

/// devnetd's state directory (its journals survive a reboot there).
const DEVNETD_STATE_DIR: &str = "/var/lib/devnet";

/// Whether a devnetd holds the lock on `state_dir`.
fn devnetd_alive(state_dir: &std::path::Path) -> bool {
    let Ok(file) = std::fs::OpenOptions::new().write(true).open(state_dir.join("devnetd.lock")) else { return false };
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).is_err()
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

/// The profile doctor checks: `base` (the cluster), the profile file, flags.
fn doctor_profile(base: ProfileFile, args: &ConnectArgs, state_dir: PathBuf) -> Result<devnet_engine::config::Profile> {
    let mut file = connect::overlay(base, args)?;
    file.state_dir = Some(state_dir);
    Ok(file.validate()?)
}

/// Findings from a running engine's evidence, or from a fresh detection.
async fn doctor(args: ConnectArgs, socket: PathBuf, state_dir: PathBuf, json: bool) -> Result<()> {
    let mut facts = Vec::new();
    let mut notes = Vec::new();
    // The relay pod's tunnel port, where doctor asks which source address
    // the pods see (SNAT on the path).
    let mut relay_pods: Vec<std::net::SocketAddr> = Vec::new();
    let profile = if args.uses_cluster() {
        let (cluster, found, pod_probes) =
            devnet_session::cluster::discover_cluster(&args.kube.cluster(args.cluster_domain.clone())?, &kube::say)
                .await?;
        let ns = args.kube.relay()?.namespace;
        // Where the relay proves a direct path is this cluster's, and the CA
        // its handshake is checked against: the one kept in the keyring for
        // this relay (without it, no path can be proven direct).
        let mut relay_endpoints = Vec::new();
        if let Ok(relay) = devnet_kube::relay::state(&cluster, &ns).await {
            relay_pods = relay
                .pod_ips
                .iter()
                .map(|ip| std::net::SocketAddr::new(*ip, devnet_kube::relay::TUNNEL_PORT))
                .collect();
            relay_endpoints =
                devnet_session::cluster::relay_endpoints(&cluster, &ns, &relay.pod_ips, &found.cidrs()).await;
        }
        let account = devnet_kube::credentials::account(&cluster.server, &ns);
        let relay_ca_pem = kube::keyring().load(&account).ok().flatten().map(|c| c.relay_ca_pem);
        if relay_ca_pem.is_none() {
            notes.push(format!(
                "no relay credentials in your keyring for {}: direct paths cannot be proven until `devnet connect` has fetched them once",
                cluster.context
            ));
        }
        facts = devnet_session::cluster::discovered(&cluster, &found);
        notes.extend(found.notes.iter().cloned());
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
            // Doctor only probes paths (and proves them with the relay's
            // own handshake): the tunnel is never dialled.
            relay: Some("192.0.2.1:9".into()),
            token: Some("unused".into()),
            relay_ca_pem: Some(relay_ca_pem.unwrap_or_default()),
            relay_endpoints,
            ..Default::default()
        };
        file.probe_targets = pod_probes.iter().map(ToString::to_string).collect();
        file.probe_targets.extend(found.dns_servers.iter().map(|f| std::net::SocketAddr::new(f.value, 53).to_string()));
        doctor_profile(file, &args, state_dir.clone())?
    } else {
        doctor_profile(ProfileFile::default(), &args, state_dir.clone())?
    };
    // A session that routes these CIDRs would capture our probes: use the
    // evidence its engine gathered with the bypass mark.
    let running = sessions(&socket, &state_dir).await.unwrap_or_default();
    let mut verdicts = match running.iter().find(|s| s.status.paths.iter().any(|v| profile.cidrs.contains(&v.cidr))) {
        Some(s) => s.status.paths.clone(),
        None => devnet_engine::detect::detect_with(&profile, &SystemRunner, is_root()).await?,
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
        let report =
            devnet_model::doctor::DoctorReport { discovered: facts, discovery_notes: notes, paths: verdicts, findings };
        println!("{}", serde_json::to_string_pretty(&report)?);
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

async fn relay(action: RelayAction, args: kube::KubeArgs) -> Result<()> {
    use devnet_kube::relay as r;
    match action {
        RelayAction::Install(settings) => {
            let mut cluster_args = args.cluster(None)?;
            cluster_args.relay = settings.apply(cluster_args.relay)?;
            let (cluster, found, _) = devnet_session::cluster::discover_cluster(&cluster_args, &kube::say).await?;
            let st = devnet_session::cluster::install_relay(&cluster, &cluster_args, &found, &kube::say).await?;
            println!(
                "relay {} installed in namespace {} (pod {})",
                r::VERSION,
                cluster_args.relay.namespace,
                st.pod.unwrap_or_default()
            );
            Ok(())
        }
        RelayAction::Status => {
            let ns = args.relay()?.namespace;
            let cluster = devnet_kube::Cluster::connect(&args.options()).await?;
            let st = r::state(&cluster, &ns).await?;
            println!("{}", serde_json::to_string_pretty(&st)?);
            if let Some(a) = st.version_advice() {
                println!("{a}");
            }
            Ok(())
        }
        RelayAction::Uninstall => {
            let ns = args.relay()?.namespace;
            let cluster = devnet_kube::Cluster::connect(&args.options()).await?;
            let account = devnet_kube::credentials::account(&cluster.server, &ns);
            let removed = r::uninstall(&cluster, &ns).await?;
            let _ = devnet_kube::credentials::forget(&account);
            println!("{}", if removed { "relay uninstalled" } else { "no relay was installed" });
            Ok(())
        }
        RelayAction::Revoke(v) => {
            anyhow::ensure!(
                !v.users.is_empty() || !v.serials.is_empty(),
                "name whom to revoke: --user NAME (as the relay's log shows it) or --serial HEX"
            );
            for user in &v.users {
                devnet_kube::enrol::check_user(user).map_err(anyhow::Error::msg)?;
            }
            let ns = args.relay()?.namespace;
            let cluster = devnet_kube::Cluster::connect(&args.options()).await?;
            let (users, serials) = r::revoke(&cluster, &ns, &v.users, &v.serials, v.undo).await?;
            let what = v.users.iter().chain(&v.serials).cloned().collect::<Vec<_>>().join(", ");
            if v.undo {
                println!("re-admitted {what}");
            } else {
                println!(
                    "revoked {what}: the relay closes their sessions once the kubelet updates its copy of {ns}/{} (usually within a minute)",
                    r::REVOKED_CONFIGMAP
                );
            }
            println!("revoked now: users [{}], serials [{}]", users.join(", "), serials.join(", "));
            Ok(())
        }
        RelayAction::Manifests(m) => manifests(m, args).await,
    }
}

/// `devnet relay manifests`: YAML on stdout, progress and notes on stderr.
async fn manifests(m: ManifestsArgs, args: kube::KubeArgs) -> Result<()> {
    use anyhow::Context;
    use devnet_kube::relay as r;
    let settings = m.settings.apply(args.relay()?)?;
    let credentials = r::Credentials::generate()?;
    let mut params = if m.allow.is_empty() && !m.secret_only {
        let mut cluster_args = args.cluster(None)?;
        cluster_args.relay = settings;
        let (_, found, _) = devnet_session::cluster::discover_cluster(&cluster_args, &kube::say).await?;
        devnet_session::cluster::relay_params(&cluster_args.relay, &found, credentials)
    } else {
        r::RelayParams { settings, allow: Vec::new(), dns: Vec::new(), credentials }
    };
    for cidr in &m.allow {
        params
            .allow
            .push(cidr.parse().with_context(|| format!("--allow {cidr}: not a CIDR (write e.g. 10.244.0.0/16)"))?);
    }
    for ip in &m.dns {
        params.dns.push(ip.parse().with_context(|| format!("--dns {ip}: not an IP address"))?);
    }
    let objs = r::manifests(&params);
    let objs = if m.secret_only {
        objs.into_iter().filter(|o| o["kind"] == "Secret").collect()
    } else {
        r::check_allow(&params.allow)?;
        if m.include_secret { objs } else { r::without_secret(objs) }
    };
    let text = r::to_yaml(&objs)?;
    // `devnet relay manifests | head` is not an error.
    match std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    if !m.include_secret && !m.secret_only {
        let ns = &params.settings.namespace;
        let flag = if ns == r::DEFAULT_NAMESPACE { String::new() } else { format!(" --relay-namespace {ns}") };
        kube::say(&format!(
            "the Secret {ns}/{} (the relay's private key and CA) is left out: create it once with `devnet relay manifests --secret-only{flag} | kubectl apply -f -`, or seal that output (kubeseal, SOPS) and commit the sealed form; users read no Secret (the Role {} lets them port-forward to the relay, and `devnet connect` enrols them for a client certificate of their own)",
            r::TLS_SECRET,
            r::USER_ROLE,
        ));
    }
    Ok(())
}

/// The keyring helper: JSON credentials on stdin (store) or stdout (load).
/// Prints a file (at most 1 MiB: profiles, tokens and CAs are small).
fn read_file(path: &std::path::Path) -> Result<()> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(1 << 20).read_to_string(&mut text))
        .with_context(|| format!("reading {}", path.display()))?;
    std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes())?;
    Ok(())
}

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

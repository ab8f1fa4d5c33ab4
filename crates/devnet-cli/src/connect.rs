//! `devnet connect`: through devnetd (the default, no sudo), or with the
//! engine in this process (`--foreground`, as root, for machines without
//! the service). Either way it stays in the foreground until Ctrl-C,
//! SIGTERM or `devnet disconnect`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use devnet_engine::runner::SystemRunner;
use devnet_engine::status::{LinkState, Status};
use devnet_engine::transport::{Dial, DirectDial, Fallback};
use devnet_ipc::message::{ClientKind, ConnectRequest};
use devnet_model::profile::ProfileFile;
use devnet_session::keeper::{self, Event};
use devnet_session::renewal::Reason;
use tracing::info;

use crate::kube::{self, PortForwardDial, say};
use crate::{ConnectArgs, is_root};

/// Prints what changed in the session's status, once per change.
#[derive(Default)]
struct Printer {
    printed: Option<(LinkState, Option<String>)>,
}

impl Printer {
    fn show(&mut self, s: &Status) {
        if self.printed.as_ref() == Some(&(s.state, s.last_error.clone())) {
            return;
        }
        match (&s.last_error, s.state) {
            (Some(e), _) => eprintln!("devnet: {:?} ({e})", s.state),
            (None, LinkState::Direct) => {
                eprintln!("devnet: no CIDR needs the tunnel (each is routed directly or via a forwarding node)")
            }
            (None, _) => {
                eprintln!(
                    "devnet: {:?} to relay {} ({})",
                    s.state,
                    s.relay,
                    s.transport.as_deref().unwrap_or("dialling")
                )
            }
        }
        for v in s.paths.iter().filter(|_| self.printed.is_none()) {
            eprintln!("devnet:   {} {:?}: {}", v.cidr, v.path, v.reason);
        }
        self.printed = Some((s.state, s.last_error.clone()));
    }
}

/// How long a certificate valid until `not_after` (Unix seconds) has left: `7 h 59 min`.
fn valid_for(not_after: u64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let minutes = not_after.saturating_sub(now) / 60;
    format!("{} h {} min", minutes / 60, minutes % 60)
}

/// Resolves on Ctrl-C or SIGTERM (or SIGHUP: the terminal went away).
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("interrupted; disconnecting"),
        _ = term.recv() => info!("terminated; disconnecting"),
        _ = hup.recv() => info!("hung up; disconnecting"),
    }
}

/// `devnet connect` through devnetd: everything user-side runs here, as
/// the user; devnetd gets contents and, when needed, bridges.
pub async fn through_daemon(args: ConnectArgs, socket: PathBuf) -> Result<()> {
    anyhow::ensure!(
        !(is_root() && std::env::var_os("SUDO_UID").is_some()),
        "devnet connect does not need sudo: devnetd does the privileged part, and your kubeconfig and keyring are yours; run it as yourself (or `sudo devnet connect --foreground` on a machine without the service)"
    );
    let session_name = args.session.clone();
    let (req, port_forward, renew) = if args.uses_cluster() {
        let keyring: Arc<dyn devnet_session::cluster::CredentialStore> = Arc::from(kube::keyring());
        let prepared = devnet_session::cluster::prepare(&args.cluster_args()?, keyring.as_ref(), &say).await?;
        // Enrolling again later, as this user, keeps a long session's
        // certificate valid (devnetd holds no cluster credentials).
        let renew = keeper::Renew { renewal: prepared.renewal.clone(), keyring };
        let (req, port_forward) = prepared.into_request(session_name, |file| overlay(file, &args))?;
        (req, port_forward, Some(renew))
    } else {
        let file = overlay(ProfileFile::default(), &args)?;
        let name = session_name
            .or_else(|| args.profile.as_ref().and_then(|p| p.file_stem()).map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "default".into());
        let (profile, token, ca) = devnet_session::profile::contents(file)?;
        let req = ConnectRequest {
            session: name,
            profile,
            token,
            relay_ca_pem: ca,
            direct: Vec::new(),
            bridge: false,
            discovered: Vec::new(),
        };
        devnet_session::profile::check(&req)?;
        (req, None, None)
    };
    let name = req.session.clone();
    let mut printer = Printer::default();
    keeper::keep(
        &socket,
        ClientKind::Cli,
        req,
        port_forward,
        renew,
        |event| match event {
            Event::Started => eprintln!("devnet: session {name} started by devnetd"),
            Event::Status(s) => printer.show(&s.status),
            Event::BridgeFailed(e) => eprintln!("devnet: could not open the port-forward: {e}"),
            Event::Renewing(Reason::Expiring) => {
                eprintln!("devnet: the client certificate expires soon; enrolling again");
            }
            Event::Renewing(Reason::Refused) => {
                eprintln!("devnet: the relay refused the client certificate; enrolling again");
            }
            Event::Renewed { serial, not_after } => {
                eprintln!("devnet: client certificate renewed (serial {serial}, valid for {})", valid_for(not_after));
            }
            Event::RenewFailed(e) => {
                eprintln!("devnet: could not renew the client certificate (tried again later): {e}")
            }
        },
        stop_signal(),
    )
    .await
}

/// `devnet connect --foreground`: the engine in this process (root).
pub async fn in_process(args: ConnectArgs, state_dir: PathBuf) -> Result<()> {
    anyhow::ensure!(
        is_root(),
        "devnet connect --foreground needs root: it creates a TUN device and routes (run it with sudo, or drop --foreground to use devnetd)"
    );
    let (file, dialer, discovered) = if args.uses_cluster() {
        let prepared = devnet_session::cluster::prepare(&args.cluster_args()?, kube::keyring().as_ref(), &say).await?;
        let direct = DirectDial { addrs: prepared.direct, timeout: Duration::from_millis(800), bypass: true };
        let mut transports: Vec<Box<dyn Dial>> = vec![Box::new(direct)];
        if let Some(pf) = prepared.port_forward {
            transports.push(Box::new(PortForwardDial(pf)));
        }
        (prepared.file, Some(Arc::new(Fallback(transports)) as Arc<dyn Dial>), prepared.discovered)
    } else {
        (ProfileFile::default(), None, Vec::new())
    };
    let invoker = devnet_kube::InvokingUser::from_sudo();
    let mut file = match &invoker {
        None => overlay(file, &args)?,
        Some(user) => under_sudo(file, &args, user, &state_dir)?,
    };
    file.state_dir = Some(state_dir);
    file.resolv_conf = args.resolv_conf.clone().or(file.resolv_conf);
    let profile = file.validate()?;
    let engine = match dialer {
        Some(dialer) => devnet_engine::start_with(profile, Arc::new(SystemRunner), dialer, discovered).await,
        None => devnet_engine::start(profile, Arc::new(SystemRunner)).await,
    }
    .context("cannot connect")?;
    let mut status = engine.status();
    let mut printer = Printer::default();
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => {
                engine.disconnect().await;
                break;
            }
            changed = status.changed() => {
                if changed.is_err() {
                    break;
                }
                let s = status.borrow().clone();
                printer.show(&s);
            }
        }
    }
    engine.wait().await
}

/// The profile from `base` (the cluster), then the profile file, then flags.
impl ConnectArgs {
    /// What `devnet-session` needs to reach the cluster for this connect.
    fn cluster_args(&self) -> Result<devnet_session::cluster::ClusterArgs> {
        use devnet_session::cluster::NamespaceChoice;
        let mut args = self.kube.cluster(self.cluster_domain.clone())?;
        args.namespaces = match (self.all_namespaces, self.namespaces.is_empty()) {
            (true, _) => NamespaceChoice::All,
            (false, false) => NamespaceChoice::These(self.namespaces.clone()),
            (false, true) => NamespaceChoice::Kubeconfig,
        };
        Ok(args)
    }
}

pub fn overlay(base: ProfileFile, args: &ConnectArgs) -> Result<ProfileFile> {
    let from_file = match &args.profile {
        Some(path) => base.overlay(ProfileFile::load(path)?),
        None => base,
    };
    Ok(from_file.overlay(from_flags(args)))
}

/// The profile as `sudo devnet connect --foreground` may use it: root opens
/// no path the invoking user named. The profile, token and CA are read by
/// the user's own process (their rights, not root's); a resolv.conf of the
/// user's choosing is refused (root would rewrite it), and so is a state
/// folder anyone but root could write (its journal says what root undoes).
fn under_sudo(
    base: ProfileFile,
    args: &ConnectArgs,
    user: &devnet_kube::InvokingUser,
    state_dir: &std::path::Path,
) -> Result<ProfileFile> {
    let from_file = match &args.profile {
        Some(path) => base.overlay(ProfileFile::parse(&kube::read_as_user(user, path)?, path)?),
        None => base,
    };
    let mut file = from_file.overlay(from_flags(args));
    if let Some(path) = file.token_file.take() {
        let text = kube::read_as_user(user, &path)?;
        anyhow::ensure!(!text.trim().is_empty(), "the token file {} is empty", path.display());
        file.token = Some(devnet_model::Secret::new(text.trim()));
    }
    if let Some(path) = file.relay_ca.take() {
        file.relay_ca_pem = Some(kube::read_as_user(user, &path)?);
    }
    if let Some(path) = file.resolv_conf.as_ref().or(args.resolv_conf.as_ref()) {
        anyhow::bail!(
            "resolv-conf {} was named by the user who ran sudo: under sudo devnet manages only the system's resolver; drop resolv-conf",
            path.display()
        );
    }
    root_only(state_dir)?;
    Ok(file)
}

/// The state folder, or its nearest existing parent, must be root's and
/// writable by no one else, like every folder above it (a sticky one such
/// as /tmp may be shared: nobody can replace root's entries in it).
fn root_only(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut path = Some(dir);
    while let Some(p) = path {
        if let Ok(meta) = std::fs::metadata(p) {
            let shared_sticky = p != dir && meta.mode() & 0o1000 != 0;
            anyhow::ensure!(
                meta.uid() == 0 && (meta.mode() & 0o022 == 0 || shared_sticky),
                "the state folder {} is not root's alone ({} is owned by uid {}, mode {:o}): under sudo, use a folder only root can write, or leave --state-dir out",
                dir.display(),
                p.display(),
                meta.uid(),
                meta.mode() & 0o7777
            );
        }
        path = p.parent();
    }
    Ok(())
}

fn from_flags(args: &ConnectArgs) -> ProfileFile {
    ProfileFile {
        relay: args.relay.clone(),
        token_file: args.token_file.clone(),
        relay_ca: args.relay_ca.clone(),
        cidrs: args.cidrs.clone(),
        dns_server: args.dns_server.clone(),
        probe_targets: args.probe_targets.clone(),
        dns_backend: args.dns_backend.clone(),
        cluster_domain: args.cluster_domain.clone(),
        namespaces: args.namespaces.clone(),
        tun_name: args.tun_name.clone(),
        mtu: args.mtu,
        ..Default::default()
    }
}

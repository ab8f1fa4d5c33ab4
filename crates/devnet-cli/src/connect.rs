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
    let (req, port_forward) = if args.uses_cluster() {
        devnet_session::cluster::prepare(
            &args.kube.cluster(args.cluster_domain.clone())?,
            kube::keyring().as_ref(),
            &say,
        )
        .await?
        .into_request(session_name, |file| overlay(file, &args))?
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
        (req, None)
    };
    let name = req.session.clone();
    let mut printer = Printer::default();
    keeper::keep(
        &socket,
        ClientKind::Cli,
        req,
        port_forward,
        |event| match event {
            Event::Started => eprintln!("devnet: session {name} started by devnetd"),
            Event::Status(s) => printer.show(&s.status),
            Event::BridgeFailed(e) => eprintln!("devnet: could not open the port-forward: {e}"),
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
        let prepared = devnet_session::cluster::prepare(
            &args.kube.cluster(args.cluster_domain.clone())?,
            kube::keyring().as_ref(),
            &say,
        )
        .await?;
        let direct = DirectDial { addrs: prepared.direct, timeout: Duration::from_millis(800), bypass: true };
        let mut transports: Vec<Box<dyn Dial>> = vec![Box::new(direct)];
        if let Some(pf) = prepared.port_forward {
            transports.push(Box::new(PortForwardDial(pf)));
        }
        (prepared.file, Some(Arc::new(Fallback(transports)) as Arc<dyn Dial>), prepared.discovered)
    } else {
        (ProfileFile::default(), None, Vec::new())
    };
    let mut file = overlay(file, &args)?;
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
pub fn overlay(base: ProfileFile, args: &ConnectArgs) -> Result<ProfileFile> {
    let from_file = match &args.profile {
        Some(path) => base.overlay(ProfileFile::load(path)?),
        None => base,
    };
    let from_flags = ProfileFile {
        relay: args.relay.clone(),
        token_file: args.token_file.clone(),
        relay_ca: args.relay_ca.clone(),
        cidrs: args.cidrs.clone(),
        dns_server: args.dns_server.clone(),
        probe_targets: args.probe_targets.clone(),
        dns_backend: args.dns_backend.clone(),
        cluster_domain: args.cluster_domain.clone(),
        tun_name: args.tun_name.clone(),
        mtu: args.mtu,
        ..Default::default()
    };
    Ok(from_file.overlay(from_flags))
}

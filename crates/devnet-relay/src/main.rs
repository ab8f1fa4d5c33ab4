//! `devnet-relay`: see the library docs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use devnet_relay::identity::Identities;
use devnet_relay::metrics::Metrics;
use devnet_relay::policy::Policy;
use devnet_relay::threads::SessionThreads;
use devnet_relay::{Shared, tls};
use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::{info, warn};

#[derive(Parser, Debug)]
#[command(name = "devnet-relay", version, about = "The in-cluster end of a devnet tunnel")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve clients.
    Serve(ServeArgs),
    /// Generate a CA (ca.pem) and a relay certificate (cert.pem, key.pem).
    GenCert {
        /// Directory to write the PEM files into.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Parser, Debug)]
struct ServeArgs {
    /// Address for client sessions (TLS).
    #[arg(long, default_value = "[::]:8443")]
    listen: SocketAddr,
    /// Address for /healthz, /readyz and /metrics (plain HTTP).
    #[arg(long, default_value = "[::]:9090")]
    health_listen: SocketAddr,
    /// The relay certificate chain, PEM.
    #[arg(long)]
    cert: PathBuf,
    /// The relay private key, PEM.
    #[arg(long)]
    key: PathBuf,
    /// A file holding the token clients must present (never pass it as an argument:
    /// arguments are visible to every user of the node). For a relay an
    /// operator runs outside Kubernetes; a relay in Kubernetes admits
    /// laptops by the client certificates it issues (--enrol-listen).
    #[arg(long, env = "DEVNET_RELAY_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Where laptops enrol for a per-user client certificate: the pod's
    /// loopback (127.0.0.1:8444), which only the API server's port-forward
    /// reaches, so Kubernetes RBAC decides who may.
    #[arg(long)]
    enrol_listen: Option<SocketAddr>,
    /// The CA of the relay's own certificate, PEM: handed to laptops at
    /// enrolment (needed with --enrol-listen).
    #[arg(long)]
    relay_ca: Option<PathBuf>,
    /// A directory with the revocation list (files `users` and `serials`,
    /// one entry a line): the ConfigMap devnet-relay-revoked, mounted.
    #[arg(long)]
    revoked_dir: Option<PathBuf>,
    /// How often the revocation list is re-read.
    #[arg(long, default_value_t = 5)]
    revoked_every_secs: u64,
    /// How long an issued client certificate is valid: `8h`, `90m`, `120s`
    /// (at least 60 s). Laptops renew theirs ahead of expiry, so a shorter
    /// one costs an enrolment more often, nothing else.
    #[arg(long, default_value = "8h", value_parser = parse_lifetime)]
    client_cert_lifetime: Duration,
    /// A CIDR the relay may dial into (the cluster's pod and service CIDRs); repeat or comma-separate.
    #[arg(long = "allow", required = true, value_delimiter = ',')]
    allow: Vec<IpNet>,
    /// A node address the relay must never dial, even inside an allowed CIDR
    /// (the nodes `devnet relay install` found); repeat or comma-separate.
    #[arg(long = "deny-node", value_delimiter = ',')]
    deny_node: Vec<std::net::IpAddr>,
    /// The relay's own node's addresses, comma-separated; the Deployment sets
    /// it from the downward API (status.hostIP), so a node that joined after
    /// the install is covered when the relay lands on it.
    #[arg(long, env = "DEVNET_RELAY_HOST_IPS", default_value = "")]
    host_ips: String,
    /// How long a dial may take before the client is told it timed out.
    #[arg(long, default_value_t = 5000)]
    dial_timeout_ms: u64,
    /// How long open streams may drain after SIGTERM.
    #[arg(long, default_value_t = 5)]
    shutdown_grace_secs: u64,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve(_)) {
        // Before the session threads start: this may exec the relay again.
        let plan = devnet_startup::reexec_with_fast_copies();
        tracing::debug!(?plan, "start-up");
    }
    match cli.command {
        Command::GenCert { out } => {
            tls::write_generated(&out).with_context(|| format!("writing certificates to {}", out.display()))
        }
        // Sessions run on threads of their own (`devnet_relay::threads`):
        // this runtime only accepts, serves health and enrolment, and waits
        // for signals.
        Command::Serve(args) => {
            // Started outside any runtime: a runtime may not be dropped in
            // one, as a pool that failed half-way would be.
            let threads = SessionThreads::per_core().context("starting the session threads")?;
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?
                .block_on(serve(args, threads))
        }
    }
}

async fn serve(args: ServeArgs, threads: SessionThreads) -> Result<()> {
    match devnet_relay::limits::raise_open_files() {
        Ok(limit) => info!(open_files = limit, "open-files limit"),
        Err(e) => warn!(error = %e, "could not raise the open-files limit"),
    }
    let token = match &args.token_file {
        Some(path) => {
            let token = std::fs::read_to_string(path)
                .with_context(|| format!("reading the token file {}", path.display()))?
                .trim()
                .to_owned();
            anyhow::ensure!(
                !token.is_empty(),
                "the token file {} is empty: put the client token in it",
                path.display()
            );
            token
        }
        None => String::new(),
    };
    anyhow::ensure!(
        args.token_file.is_some() || args.enrol_listen.is_some(),
        "no way for a laptop to log in: pass --enrol-listen (a relay in Kubernetes: per-user client certificates) or --token-file (a relay you run yourself)"
    );
    let identities = match args.enrol_listen {
        None => None,
        Some(_) => {
            let path = args.relay_ca.as_ref().context(
                "--enrol-listen needs --relay-ca: the CA of the relay's certificate, which laptops receive at enrolment",
            )?;
            let relay_ca =
                std::fs::read_to_string(path).with_context(|| format!("reading the relay CA {}", path.display()))?;
            anyhow::ensure!(relay_ca.contains("BEGIN CERTIFICATE"), "{} holds no PEM certificate", path.display());
            Some(Arc::new(Identities::new(relay_ca, args.client_cert_lifetime)?))
        }
    };
    let mut own = devnet_relay::own_addresses()?;
    if !args.listen.ip().is_unspecified() {
        own.push(args.listen.ip());
    }
    let host_ips = parse_ips(&args.host_ips).context("invalid DEVNET_RELAY_HOST_IPS (--host-ips)")?;
    let policy =
        Policy::new(args.allow, own).context("invalid --allow")?.with_nodes(args.deny_node.into_iter().chain(host_ips));
    info!(nodes = ?policy.nodes(), "node addresses refused");
    let tls = match &identities {
        Some(ids) => tls::server_config_with_clients(&args.cert, &args.key, ids.client_ca_der())?,
        None => tls::server_config(&args.cert, &args.key)?,
    };
    let metrics = Arc::new(Metrics::default());
    if let (Some(ids), Some(addr)) = (&identities, args.enrol_listen) {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr} (--enrol-listen)"))?;
        info!(listen = %addr, lifetime_secs = args.client_cert_lifetime.as_secs(), "enrolment serving");
        tokio::spawn(devnet_relay::identity::serve_enrol(listener, ids.clone(), metrics.clone()));
        if let Some(dir) = args.revoked_dir.clone() {
            let period = Duration::from_secs(args.revoked_every_secs.max(1));
            tokio::spawn(devnet_relay::identity::watch_revoked(dir, ids.clone(), period));
        }
    }
    let shared = Arc::new(Shared {
        proto: devnet_proto::Config {
            name: format!("devnet-relay {}", env!("CARGO_PKG_VERSION")),
            token,
            max_streams: devnet_relay::MAX_STREAMS_PER_SESSION,
            ..Default::default()
        },
        policy,
        dial_timeout: Duration::from_millis(args.dial_timeout_ms),
        shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
        metrics: metrics.clone(),
        login_timeout: devnet_relay::LOGIN_TIMEOUT,
        logging_in: devnet_relay::LoggingIn::new(devnet_relay::MAX_LOGGING_IN, devnet_relay::MAX_LOGGING_IN_PER_SOURCE),
        budget: Arc::new(devnet_relay::budget::Global::new(devnet_relay::budget::GLOBAL_BUDGET)),
        credit: devnet_relay::budget::Limits::default(),
        max_dialing: devnet_relay::MAX_DIALING_PER_SESSION,
        identities,
    });
    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let health =
        TcpListener::bind(args.health_listen).await.with_context(|| format!("binding {}", args.health_listen))?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(devnet_relay::serve_health(health, metrics, shutdown_rx.clone()));
    tokio::spawn(async move {
        let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(t), Ok(i)) => (t, i),
            _ => return,
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        info!("signal received; shutting down gracefully");
        let _ = shutdown_tx.send(true);
    });
    devnet_relay::serve(listener, tls, shared, threads, shutdown_rx).await?;
    info!("relay stopped");
    Ok(())
}

/// A comma-separated list of addresses; empty entries (an unset variable) are skipped.
fn parse_ips(list: &str) -> Result<Vec<std::net::IpAddr>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().with_context(|| format!("{s:?} is not an IP address")))
        .collect()
}

/// A certificate lifetime: a number and `h`, `m` or `s`, at least 60 s.
fn parse_lifetime(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is no lifetime: write it as 8h, 90m or 120s (at least 60 s)");
    let text = text.trim();
    let (number, unit) = [('h', 3600), ('m', 60), ('s', 1)]
        .into_iter()
        .find_map(|(suffix, unit)| text.strip_suffix(suffix).map(|n| (n, unit)))
        .ok_or_else(bad)?;
    let secs = number.parse::<u64>().ok().and_then(|n| n.checked_mul(unit)).ok_or_else(bad)?;
    if secs < 60 {
        return Err(bad());
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_lifetimes_take_hours_minutes_or_seconds() {
        assert_eq!(parse_lifetime("8h"), Ok(Duration::from_secs(8 * 3600)));
        assert_eq!(parse_lifetime("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_lifetime("60s"), Ok(Duration::from_secs(60)));
        for bad in ["8", "30s", "h", "-1h", "8d", "8é", ""] {
            let err = parse_lifetime(bad).expect_err(bad);
            assert!(err.contains("8h, 90m or 120s"), "{err}");
        }
    }

    #[test]
    fn host_ips_from_the_downward_api_are_read() {
        assert_eq!(parse_ips("").expect("empty"), Vec::<std::net::IpAddr>::new());
        let got = parse_ips("10.60.20.11, fd00:10::11").expect("two");
        assert_eq!(got, ["10.60.20.11".parse::<std::net::IpAddr>().expect("ip"), "fd00:10::11".parse().expect("ip")]);
        let err = parse_ips("node1").expect_err("a name");
        assert!(format!("{err:#}").contains("\"node1\" is not an IP address"), "{err:#}");
    }
}

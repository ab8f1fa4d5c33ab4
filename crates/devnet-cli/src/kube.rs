//! The cluster flags, and what the CLI adds to `devnet-session` when it runs
//! as root under sudo (`--foreground`): the invoking user's keyring through
//! a helper run as them, and the port-forward as an engine transport.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use devnet_engine::transport::{Dial, DialFuture, RelayStream};
use devnet_kube::credentials::ClientIdentity;
use devnet_kube::relay::{Quantities, RelaySettings, Resources};
use devnet_kube::{ClusterOptions, InvokingUser};
use devnet_session::cluster::{ClusterArgs, CredentialStore, PortForward, UserKeyring};

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
    /// The namespace the relay runs in (default: devnet): where connect,
    /// status and uninstall look for it and where install puts it. An admin
    /// may have deployed it elsewhere (Helm chart, `devnet relay manifests`).
    #[arg(long, env = "DEVNET_RELAY_NAMESPACE", global = true, value_name = "NAMESPACE")]
    pub relay_namespace: Option<String>,
    /// Never install or upgrade the relay; fail instead.
    #[arg(long, global = true)]
    pub no_install: bool,
    /// A public range the cluster may claim as its pod or service network
    /// (repeat it for more). Without it, discovery refuses ranges outside
    /// private address space: routing them would send traffic for those
    /// internet addresses into the cluster.
    #[arg(long, global = true, value_name = "CIDR")]
    pub allow_public_cidr: Vec<ipnet::IpNet>,
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
            non_interactive: false,
        }
    }

    /// The relay's namespace and image as asked for; resources and the
    /// node port as `devnet connect` installs them.
    pub fn relay(&self) -> Result<RelaySettings> {
        let defaults = RelaySettings::default();
        let settings = RelaySettings {
            namespace: self.relay_namespace.clone().unwrap_or(defaults.namespace),
            image: self.relay_image.clone().unwrap_or(defaults.image),
            ..defaults
        };
        settings.check()?;
        Ok(settings)
    }

    pub fn cluster(&self, cluster_domain: Option<String>) -> Result<ClusterArgs> {
        Ok(ClusterArgs {
            options: self.options(),
            relay: self.relay()?,
            no_install: self.no_install,
            cluster_domain,
            allow_public_cidrs: self.allow_public_cidr.clone(),
            namespaces: Default::default(),
        })
    }
}

/// What an admin may choose for `devnet relay install` and `manifests`
/// beyond the namespace and image (the Helm chart's values are the same).
#[derive(clap::Args, Debug, Clone)]
pub struct SettingsArgs {
    /// The relay container's CPU request.
    #[arg(long, value_name = "QUANTITY", default_value_t = Resources::default().requests.cpu)]
    pub cpu_request: String,
    /// The relay container's memory request.
    #[arg(long, value_name = "QUANTITY", default_value_t = Resources::default().requests.memory)]
    pub memory_request: String,
    /// The relay container's CPU limit.
    #[arg(long, value_name = "QUANTITY", default_value_t = Resources::default().limits.cpu)]
    pub cpu_limit: String,
    /// The relay container's memory limit.
    #[arg(long, value_name = "QUANTITY", default_value_t = Resources::default().limits.memory)]
    pub memory_limit: String,
    /// A ClusterIP Service instead of a NodePort: laptops then reach the
    /// relay at its pod IP or through the API server's port-forward (which
    /// needs `create pods/portforward` in the relay's namespace).
    #[arg(long)]
    pub no_node_port: bool,
}

impl SettingsArgs {
    /// `base` (namespace and image from the kube flags) with these.
    pub fn apply(&self, base: RelaySettings) -> Result<RelaySettings> {
        let settings = RelaySettings {
            resources: Resources {
                requests: Quantities { cpu: self.cpu_request.clone(), memory: self.memory_request.clone() },
                limits: Quantities { cpu: self.cpu_limit.clone(), memory: self.memory_limit.clone() },
            },
            node_port: !self.no_node_port,
            ..base
        };
        settings.check()?;
        Ok(settings)
    }
}

/// Progress lines on stderr.
pub fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "devnet: {msg}");
}

/// The keyring of the person at the keyboard: our own, or under sudo the
/// invoking user's (never root's).
pub fn keyring() -> Box<dyn CredentialStore> {
    match InvokingUser::from_sudo().filter(|_| crate::is_root()) {
        None => Box::new(UserKeyring),
        Some(user) => Box::new(SudoKeyring(user)),
    }
}

/// The invoking user's keyring, through `devnet credential …` run as them.
struct SudoKeyring(InvokingUser);

impl CredentialStore for SudoKeyring {
    fn load(&self, account: &str) -> Result<Option<ClientIdentity>> {
        let out = as_user(&self.0, &["credential", "load", "--account", account], None)?;
        if out.trim().is_empty() { Ok(None) } else { Ok(Some(serde_json::from_str(&out)?)) }
    }

    fn store(&self, account: &str, identity: &ClientIdentity) -> Result<()> {
        // On the helper's stdin, never in its arguments or environment.
        let json = serde_json::to_string(identity)?;
        as_user(&self.0, &["credential", "store", "--account", account], Some(&json)).map(drop)
    }
}

/// A file's contents, read by the invoking user's own process (under sudo,
/// root opens no path the invoker named: the kernel checks their rights).
pub fn read_as_user(user: &InvokingUser, path: &std::path::Path) -> Result<String> {
    let path_text = path.to_str().with_context(|| format!("{} is not UTF-8", path.display()))?;
    as_user(user, &["read-file", path_text], None)
        .with_context(|| format!("reading {} as uid {} (the user who ran sudo)", path.display(), user.uid))
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

/// The API server's port-forward as an in-process engine transport
/// (`--foreground`; with devnetd it is a bridge instead).
#[derive(Debug)]
pub struct PortForwardDial(pub PortForward);

impl Dial for PortForwardDial {
    fn dial(&self) -> DialFuture {
        let pf = self.0.clone();
        Box::pin(async move {
            let (stream, label) = pf.open().await.map_err(|e| std::io::Error::other(format!("{e:#}")))?;
            Ok((Box::new(stream) as RelayStream, label))
        })
    }
}

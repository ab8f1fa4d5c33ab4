//! Cluster access: the kubeconfig as kubectl reads it (`--kubeconfig`, else
//! every file in `KUBECONFIG`, else `~/.kube/config`; `--context`, else the
//! current context), credentials from it (token, client certificate, exec
//! plugin), and API errors turned into one line that names the fix.
//!
//! Exec plugins (`aws eks get-token`, `gke-gcloud-auth-plugin`, …) run as
//! the user who invoked devnet, never as root: when devnet runs under sudo,
//! the plugin is started with the invoking user's uid, gid and home, and
//! its token is handed to the client.

use std::path::PathBuf;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};
use tracing::debug;

use crate::discover::Sources;

/// The user devnet acts for: the sudo caller when running as root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvokingUser {
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl InvokingUser {
    /// `SUDO_UID`/`SUDO_GID` and that user's home from /etc/passwd.
    pub fn from_sudo() -> Option<Self> {
        let uid: u32 = std::env::var("SUDO_UID").ok()?.parse().ok()?;
        let gid: u32 = std::env::var("SUDO_GID").ok().and_then(|g| g.parse().ok()).unwrap_or(uid);
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let home = passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 5 && f[2] == uid.to_string())
            .map(|f| PathBuf::from(f[5]))
            .unwrap_or_else(|| PathBuf::from("/nonexistent"));
        Some(InvokingUser { uid, gid, home })
    }
}

/// Where to find the cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// Run exec plugins as this user (None: as ourselves).
    pub invoking_user: Option<InvokingUser>,
    /// Never let an exec plugin ask the person anything (IDE preflights run
    /// without a terminal): its stdin is closed and it is told so.
    pub non_interactive: bool,
}

/// The namespaces a kubeconfig names for the cluster of `context`: that
/// context's own (`default` when it names none), then those of the other
/// contexts on the same cluster, each once. These are where the user works,
/// and so the namespaces whose short names (`svc.ns`) devnet resolves by
/// default.
pub fn working_namespaces(kc: &Kubeconfig, context: &str) -> Vec<String> {
    let of = |c: &kube::config::NamedContext| c.context.as_ref().map(|c| (c.cluster.clone(), c.namespace.clone()));
    let Some((cluster, own)) = kc.contexts.iter().find(|c| c.name == context).and_then(of) else {
        return Vec::new();
    };
    let mut out = vec![own.unwrap_or_else(|| "default".to_owned())];
    for (other_cluster, ns) in kc.contexts.iter().filter_map(of) {
        if let Some(ns) = ns
            && other_cluster == cluster
            && !out.contains(&ns)
        {
            out.push(ns);
        }
    }
    out
}

/// Makes the exec plugin of `context`'s user non-interactive
/// (`interactiveMode: Never`): kube then closes its stdin and sets
/// `spec.interactive: false` in `KUBERNETES_EXEC_INFO`.
pub fn never_interactive(kc: &mut Kubeconfig, context: &str) {
    let user = kc.contexts.iter().find(|c| c.name == context).and_then(|c| c.context.as_ref()?.user.clone());
    if let Some(exec) = kc
        .auth_infos
        .iter_mut()
        .find(|a| Some(&a.name) == user.as_ref())
        .and_then(|a| a.auth_info.as_mut()?.exec.as_mut())
    {
        exec.interactive_mode = Some(kube::config::ExecInteractiveMode::Never);
    }
}

/// A cluster problem, worded for the person at the keyboard.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("no kubeconfig at {0}: set KUBECONFIG, pass --kubeconfig, or run your cluster's login command first")]
    NoKubeconfig(PathBuf),
    #[error(
        "kubeconfig {path} is not valid: {error}; fix the file (`kubectl config view` shows what kubectl makes of it)"
    )]
    BadKubeconfig { path: PathBuf, error: String },
    #[error("context {name:?} is not in the kubeconfig (it has: {available}); pick one with --context")]
    UnknownContext { name: String, available: String },
    #[error("the kubeconfig has no current context; pass --context (one of: {0})")]
    NoContext(String),
    #[error("the kubeconfig's exec plugin {command:?} failed: {error}; run it by hand to log in again")]
    ExecPlugin { command: String, error: String },
    #[error(
        "the API server at {server} rejected the credentials of context {context:?} (401 Unauthorized): they have expired or are wrong; log in again (re-run your cluster's get-credentials command) and retry"
    )]
    Unauthorized { server: String, context: String },
    #[error("cannot reach the API server at {server}: {error}; check your network or VPN, and that the cluster is up")]
    Unreachable { server: String, error: String },
    #[error("{0}")]
    Forbidden(String),
    #[error("the API server at {server} said: {message}")]
    Api { server: String, code: u16, reason: String, message: String },
    #[error("{0}")]
    Other(String),
}

/// A connected cluster.
#[derive(Clone)]
pub struct Cluster {
    pub client: kube::Client,
    pub context: String,
    pub server: String,
    /// The namespaces the user's kubeconfig names for this cluster
    /// ([`working_namespaces`]): where they work.
    pub working_namespaces: Vec<String>,
    /// The context's user name in the kubeconfig: who the user is when the
    /// API server cannot say (no SelfSubjectReview).
    pub kubeconfig_user: Option<String>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("context", &self.context).field("server", &self.server).finish()
    }
}

fn kubeconfig_paths(opts: &ClusterOptions) -> Vec<PathBuf> {
    if let Some(p) = &opts.kubeconfig {
        return vec![p.clone()];
    }
    if let Ok(list) = std::env::var("KUBECONFIG")
        && !list.is_empty()
    {
        return std::env::split_paths(&list).collect();
    }
    let home = match &opts.invoking_user {
        Some(u) => u.home.clone(),
        None => std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root")),
    };
    vec![home.join(".kube/config")]
}

/// Reads and merges the kubeconfig files, as kubectl does.
pub fn load_kubeconfig(opts: &ClusterOptions) -> Result<Kubeconfig, KubeError> {
    let mut merged: Option<Kubeconfig> = None;
    let paths = kubeconfig_paths(opts);
    for path in &paths {
        if !path.exists() {
            if paths.len() == 1 {
                return Err(KubeError::NoKubeconfig(path.clone()));
            }
            continue;
        }
        let kc = Kubeconfig::read_from(path)
            .map_err(|e| KubeError::BadKubeconfig { path: path.clone(), error: format!("{e}").replace('\n', " ") })?;
        merged = Some(match merged {
            None => kc,
            Some(m) => {
                m.merge(kc).map_err(|e| KubeError::BadKubeconfig { path: path.clone(), error: e.to_string() })?
            }
        });
    }
    merged.ok_or_else(|| KubeError::NoKubeconfig(paths.first().cloned().unwrap_or_default()))
}

impl Cluster {
    /// Loads the kubeconfig, picks the context, gets credentials, and checks
    /// the API server answers and accepts them.
    pub async fn connect(opts: &ClusterOptions) -> Result<Cluster, KubeError> {
        let mut kc = load_kubeconfig(opts)?;
        let names: Vec<String> = kc.contexts.iter().map(|c| c.name.clone()).collect();
        let context = match (&opts.context, &kc.current_context) {
            (Some(c), _) => c.clone(),
            (None, Some(c)) if !c.is_empty() => c.clone(),
            _ => return Err(KubeError::NoContext(names.join(", "))),
        };
        let Some(ctx) = kc.contexts.iter().find(|c| c.name == context).and_then(|c| c.context.clone()) else {
            return Err(KubeError::UnknownContext { name: context, available: names.join(", ") });
        };
        let working_namespaces = working_namespaces(&kc, &context);
        // Under sudo, credential commands must run as the invoking user, not
        // root: an exec plugin is run here as that user and its token handed
        // to the client (no refresh: `--foreground` sessions are short); an
        // auth-provider command, which kube would run in this (root)
        // process, is refused. As the user itself (devnetd's clients), kube
        // runs both and refreshes an exec plugin's token as it expires.
        if let Some(invoking) = opts.invoking_user.as_ref()
            && let Some(user) = ctx.user.as_deref()
            && let Some(auth) = kc.auth_infos.iter_mut().find(|a| a.name == user).and_then(|a| a.auth_info.as_mut())
        {
            if auth.auth_provider.as_ref().is_some_and(|p| p.config.contains_key("cmd-path")) {
                return Err(KubeError::Other(format!(
                    "user {user} in the kubeconfig gets its token from an auth-provider command, which would run as root under sudo: run `devnet connect` as yourself (devnetd does the privileged part)"
                )));
            }
            if let Some(exec) = auth.exec.take() {
                let token = run_exec_plugin(&exec, Some(invoking))?;
                auth.token = Some(token.into());
            }
        }
        if opts.non_interactive {
            never_interactive(&mut kc, &context);
        }
        let options = KubeConfigOptions { context: Some(context.clone()), ..Default::default() };
        let config = kube::Config::from_custom_kubeconfig(kc, &options)
            .await
            .map_err(|e| KubeError::BadKubeconfig { path: kubeconfig_paths(opts)[0].clone(), error: e.to_string() })?;
        let server = config.cluster_url.to_string();
        let client = build_client(config).map_err(|e| KubeError::Other(e.to_string()))?;
        let kubeconfig_user = ctx.user.clone();
        let cluster = Cluster { client, context, server, working_namespaces, kubeconfig_user };
        cluster.get("/version").await?;
        Ok(cluster)
    }

    /// Turns a kube error into a [`KubeError`].
    pub fn explain(&self, e: kube::Error) -> KubeError {
        match e {
            kube::Error::Api(s) if s.code == 401 => {
                KubeError::Unauthorized { server: self.server.clone(), context: self.context.clone() }
            }
            kube::Error::Api(s) if s.code == 403 => KubeError::Forbidden(s.message.clone()),
            kube::Error::Api(s) => KubeError::Api {
                server: self.server.clone(),
                code: s.code,
                reason: s.reason.clone(),
                message: s.message.clone(),
            },
            kube::Error::HyperError(e) => KubeError::Unreachable { server: self.server.clone(), error: root_cause(&e) },
            kube::Error::Service(e) => {
                KubeError::Unreachable { server: self.server.clone(), error: root_cause(e.as_ref()) }
            }
            other => KubeError::Other(format!("talking to the API server at {}: {other}", self.server)),
        }
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        content_type: &str,
    ) -> Result<Value, KubeError> {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type)
            .body(body.map(|b| serde_json::to_vec(b).unwrap_or_default()).unwrap_or_default())
            .map_err(|e| KubeError::Other(e.to_string()))?;
        self.client.request::<Value>(req).await.map_err(|e| self.explain(e))
    }

    pub async fn get(&self, path: &str) -> Result<Value, KubeError> {
        self.request("GET", path, None, "application/json").await
    }
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, KubeError> {
        self.request("POST", path, Some(body), "application/json").await
    }
    /// Server-side apply (create or update, owned by field manager devnet).
    pub async fn apply(&self, path: &str, body: &Value) -> Result<Value, KubeError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        self.request(
            "PATCH",
            &format!("{path}{sep}fieldManager=devnet&force=true"),
            Some(body),
            "application/apply-patch+yaml",
        )
        .await
    }
    /// A JSON merge patch (only the fields in `body` change).
    pub async fn merge_patch(&self, path: &str, body: &Value) -> Result<Value, KubeError> {
        self.request("PATCH", path, Some(body), "application/merge-patch+json").await
    }
    pub async fn delete(&self, path: &str) -> Result<Value, KubeError> {
        self.request("DELETE", path, None, "application/json").await
    }

    /// Whether the user may do `verb` on `resource` (with `group`) in `namespace`.
    pub async fn can_i(
        &self,
        verb: &str,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
    ) -> Result<bool, KubeError> {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        let review = json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"verb": verb, "group": group, "resource": resource,
                                            "subresource": subresource, "namespace": namespace.unwrap_or("")}},
        });
        let answer = self.post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", &review).await?;
        Ok(answer["status"]["allowed"].as_bool() == Some(true))
    }

    /// Fetches what discovery reads. Missing sources become notes; only an
    /// unreachable server or rejected credentials fail.
    pub async fn gather(&self, domain_override: Option<String>) -> Result<Sources, KubeError> {
        // The independent reads go out together: on a distant API server the
        // round trips, not the bytes, are what `connect` waits for.
        // Running pods are the last-resort pod CIDR source and the live
        // targets that prove a direct path to each pod CIDR.
        let (v3, v1, nodes, service_cidrs, kubeadm, kubelet, dns, pods) = tokio::join!(
            self.fetch("Calico IPPools (projectcalico.org/v3)", "/apis/projectcalico.org/v3/ippools"),
            self.fetch("Calico IPPools (crd.projectcalico.org/v1)", "/apis/crd.projectcalico.org/v1/ippools"),
            self.fetch("Nodes", "/api/v1/nodes"),
            self.fetch("ServiceCIDRs (networking.k8s.io/v1)", "/apis/networking.k8s.io/v1/servicecidrs"),
            self.fetch("kube-system/kubeadm-config", "/api/v1/namespaces/kube-system/configmaps/kubeadm-config"),
            self.fetch("kube-system/kubelet-config", "/api/v1/namespaces/kube-system/configmaps/kubelet-config"),
            self.fetch("kube-system/kube-dns", "/api/v1/namespaces/kube-system/services/kube-dns"),
            self.fetch("Pods", "/api/v1/pods?limit=500&fieldSelector=status.phase%3DRunning"),
        );
        let mut s = Sources { domain_override, ..Default::default() };
        let mut take = |r: Fetched| -> Result<Option<Value>, KubeError> {
            match r? {
                Ok(v) => Ok(Some(v)),
                Err(note) => {
                    s.unavailable.push(note);
                    Ok(None)
                }
            }
        };
        let items = |v: Option<Value>| v.map(|l| l["items"].as_array().cloned().unwrap_or_default());
        let v3 = items(take(v3)?);
        let v1 = items(take(v1)?);
        let nodes = items(take(nodes)?);
        let service_cidrs = items(take(service_cidrs)?);
        let kubeadm = take(kubeadm)?;
        let kubelet = take(kubelet)?;
        let mut dns = take(dns)?;
        if dns.is_none() {
            let labelled = take(
                self.fetch(
                    "Services labelled k8s-app=kube-dns",
                    "/api/v1/namespaces/kube-system/services?labelSelector=k8s-app%3Dkube-dns",
                )
                .await,
            )?;
            dns = labelled.and_then(|l| l["items"].as_array().and_then(|i| i.first().cloned()));
        }
        s.pods = items(take(pods)?);
        if service_cidrs.as_ref().is_none_or(Vec::is_empty) {
            // Ask the allocator: a dry-run Service with a ClusterIP outside
            // any sane range is refused with the valid range named.
            let probe = |ip: &str, family: &str| {
                json!({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "devnet-probe", "namespace": "default"},
                    "spec": {"clusterIP": ip, "clusterIPs": [ip], "ipFamilies": [family], "ports": [{"port": 80}]}})
            };
            let path = "/api/v1/namespaces/default/services?dryRun=All";
            let (p4, p6) = (probe("1.1.1.1", "IPv4"), probe("2001:db8::1", "IPv6"));
            let (a4, a6) = tokio::join!(self.post(path, &p4), self.post(path, &p6));
            for (ip, answer) in [("1.1.1.1", a4), ("2001:db8::1", a6)] {
                match answer {
                    Err(KubeError::Api { message, .. }) => s.rejected_cluster_ip.push(message),
                    Err(e @ (KubeError::Unauthorized { .. } | KubeError::Unreachable { .. })) => return Err(e),
                    Err(e) => s.unavailable.push(format!("dry-run ClusterIP probe: {}", short(&e))),
                    Ok(_) => s.unavailable.push(format!("dry-run ClusterIP probe: {ip} was accepted")),
                }
            }
        }
        s.calico_v3_pools = v3;
        s.calico_v1_pools = v1;
        s.nodes = nodes;
        s.service_cidrs = service_cidrs;
        s.kubeadm_config = kubeadm;
        s.kubelet_config = kubelet;
        s.kube_dns = dns;
        Ok(s)
    }

    /// One source: the object, or a note saying why it is missing; only an
    /// unreachable server or rejected credentials are errors.
    async fn fetch(&self, what: &str, path: &str) -> Fetched {
        match self.get(path).await {
            Ok(v) => Ok(Ok(v)),
            Err(e @ (KubeError::Unauthorized { .. } | KubeError::Unreachable { .. })) => Err(e),
            Err(e) => {
                debug!(%what, error = %e, "source unavailable");
                Ok(Err(format!("{what}: {}", short(&e))))
            }
        }
    }

    /// The cluster's namespace names (for `svc.ns` short names).
    pub async fn namespaces(&self) -> Vec<String> {
        match self.get("/api/v1/namespaces").await {
            Ok(list) => list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_owned))
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// A source's object, or why it is unavailable.
type Fetched = Result<Result<Value, String>, KubeError>;

/// kube's default stack, but with TCP_NODELAY: the port-forward carries the
/// tunnel's small frames (a SYN's Open, an echo's byte) back to back, and
/// Nagle plus delayed ACKs would hold each for tens of milliseconds.
fn build_client(config: kube::Config) -> Result<kube::Client, kube::Error> {
    use hyper_util::client::legacy::connect::HttpConnector;
    use kube::client::ConfigExt;
    use tower::ServiceBuilder;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    // An API server behind a dropping firewall must fail, not hang.
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let https = config.rustls_https_connector_with_connector(http)?;
    let hyper = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .layer(config.extra_headers_layer()?)
        .option_layer(config.auth_layer()?)
        .map_err(tower::BoxError::from)
        .service(hyper);
    Ok(kube::Client::new(service, config.default_namespace))
}

fn short(e: &KubeError) -> String {
    match e {
        // A missing object of a served type is named (`configmaps "x" not
        // found`); an API the server does not serve is not ("404 page not
        // found", "the server could not find the requested resource").
        KubeError::Api { code: 404, message, .. } if message.contains('"') && message.ends_with("not found") => {
            "not in this cluster".to_owned()
        }
        KubeError::Api { code: 404, .. } => "not served by this cluster".to_owned(),
        KubeError::Api { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Runs a kubeconfig exec plugin (client.authentication.k8s.io) and returns
/// its token.
fn run_exec_plugin(exec: &kube::config::ExecConfig, user: Option<&InvokingUser>) -> Result<String, KubeError> {
    use std::os::unix::process::CommandExt;
    let command = exec.command.clone().unwrap_or_default();
    let fail = |error: String| KubeError::ExecPlugin { command: command.clone(), error };
    let mut cmd = std::process::Command::new(&command);
    cmd.args(exec.args.iter().flatten());
    for env in exec.env.iter().flatten() {
        if let (Some(k), Some(v)) = (env.get("name"), env.get("value")) {
            cmd.env(k, v);
        }
    }
    let api = exec.api_version.clone().unwrap_or_else(|| "client.authentication.k8s.io/v1".into());
    cmd.env(
        "KUBERNETES_EXEC_INFO",
        json!({"apiVersion": api, "kind": "ExecCredential", "spec": {"interactive": false}}).to_string(),
    );
    if let Some(u) = user {
        // Never as root: the plugin reads the user's cloud credentials and
        // may write caches in their home.
        cmd.uid(u.uid).gid(u.gid).env("HOME", &u.home);
        cmd.current_dir(if u.home.is_dir() { u.home.as_path() } else { std::path::Path::new("/") });
        cmd.env_remove("SUDO_COMMAND");
        if let Ok(name) = std::env::var("SUDO_USER") {
            cmd.env("USER", &name).env("LOGNAME", &name);
        }
    }
    let out = cmd.output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(format!("{} ({})", String::from_utf8_lossy(&out.stderr).trim(), out.status)));
    }
    let cred: Value =
        serde_json::from_slice(&out.stdout).map_err(|e| fail(format!("its output is not an ExecCredential: {e}")))?;
    cred["status"]["token"].as_str().map(str::to_owned).ok_or_else(|| {
        fail("its ExecCredential has no status.token (client certificates from plugins are not supported yet)".into())
    })
}

/// The kubeconfig path a message should name.
pub fn describe_kubeconfig(opts: &ClusterOptions) -> String {
    kubeconfig_paths(opts).iter().map(|p: &PathBuf| p.display().to_string()).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_namespaces_are_the_contexts_on_the_same_cluster() {
        let kc = Kubeconfig::from_yaml(
            r#"
contexts:
- name: a
  context: {cluster: dev, user: me, namespace: team-a}
- name: b
  context: {cluster: dev, user: me, namespace: payments}
- name: c
  context: {cluster: dev, user: admin}
- name: d
  context: {cluster: prod, user: me, namespace: prod-only}
- name: e
  context: {cluster: dev, user: me, namespace: team-a}
"#,
        )
        .expect("kubeconfig");
        assert_eq!(working_namespaces(&kc, "a"), ["team-a", "payments"]);
        // A context without a namespace works in `default`.
        assert_eq!(working_namespaces(&kc, "c"), ["default", "team-a", "payments"]);
        assert_eq!(working_namespaces(&kc, "d"), ["prod-only"]);
        assert!(working_namespaces(&kc, "nope").is_empty());
    }

    #[test]
    fn never_interactive_touches_only_the_contexts_user() {
        let yaml = r#"
apiVersion: v1
kind: Config
contexts:
- {name: dev, context: {cluster: c, user: sso}}
- {name: other, context: {cluster: c, user: other}}
users:
- name: sso
  user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: sso-login, interactiveMode: IfAvailable}}
- name: other
  user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: other-login, interactiveMode: Always}}
"#;
        let mut kc = Kubeconfig::from_yaml(yaml).unwrap_or_default();
        never_interactive(&mut kc, "dev");
        let mode = |name: &str| {
            kc.auth_infos
                .iter()
                .find(|a| a.name == name)
                .and_then(|a| a.auth_info.as_ref()?.exec.as_ref()?.interactive_mode.clone())
        };
        assert_eq!(mode("sso"), Some(kube::config::ExecInteractiveMode::Never));
        assert_eq!(mode("other"), Some(kube::config::ExecInteractiveMode::Always));
    }

    #[test]
    fn a_missing_object_is_not_an_unserved_api() {
        let api = |code, message: &str| KubeError::Api {
            server: "https://api".into(),
            code,
            reason: "NotFound".into(),
            message: message.into(),
        };
        // The real API server's two 404s.
        assert_eq!(short(&api(404, "the server could not find the requested resource")), "not served by this cluster");
        assert_eq!(short(&api(404, "404 page not found")), "not served by this cluster");
        assert_eq!(short(&api(404, "configmaps \"kubelet-config\" not found")), "not in this cluster");
        assert_eq!(short(&api(403, "forbidden: nope")), "forbidden: nope");
    }
}

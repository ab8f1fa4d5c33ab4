//! A **stand-in Kubernetes API server** for the lab: a real API server cannot
//! run on these machines, and this is the one stand-in the tests allow.
//!
//! It speaks the real wire protocols, so `kube` (and kubectl) cannot tell:
//! HTTPS with bearer-token authentication, the REST paths of the core and
//! named API groups (get, list with label and field selectors, watch,
//! create, update, merge and apply patch, delete, `dryRun=All`), `Status`
//! errors worded as the real server words them (401, 403, 404, 409, 422),
//! and `pods/{name}/portforward` over WebSocket (`v4.channel.k8s.io`),
//! dialling the pod's IP from the lab.
//!
//! Objects start from a folder of YAML manifests. A small "kubelet" stands
//! in for the controllers too: a Deployment gets one Pod, which runs in a
//! lab namespace as a real process (the image maps to a binary), with its
//! Secret volumes written to files ([`kubelet`]).
//!
//! What it does not do: admission, defaulting beyond what the tests read,
//! garbage collection by owner references, or enforcing NetworkPolicy.

pub mod kubelet;
mod portforward;
pub mod rbac;
pub mod store;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use ipnet::IpNet;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use self::rbac::{Decision, Users};
use self::store::{Kind, Store, StoreError};

/// How the stand-in is set up.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Where `ca.crt` (for kubeconfigs) is written.
    pub tls_dir: PathBuf,
    pub manifests: Option<PathBuf>,
    pub users: PathBuf,
    /// The service ranges the dry-run ClusterIP probe is refused against.
    pub service_ranges: Vec<IpNet>,
    /// Whether `networking.k8s.io/v1 ServiceCIDR` is served (1.33+).
    pub servicecidr_api: bool,
    pub kubelet: Option<kubelet::Runtime>,
}

type Body = BoxBody<Bytes, std::io::Error>;

#[derive(Debug)]
pub struct Server {
    pub store: Mutex<Store>,
    pub users: Users,
    pub config: Config,
    pub kubelet: kubelet::Kubelet,
    pub portforwards: portforward::Control,
}

/// Runs the stand-in until the process is killed.
pub async fn serve(config: Config) -> Result<()> {
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    serve_on(listener, config).await
}

/// [`serve`] on a listener already bound (tests bind port 0 on loopback).
pub async fn serve_on(listener: tokio::net::TcpListener, mut config: Config) -> Result<()> {
    config.listen = listener.local_addr()?;
    let tls = tls_config(&config)?;
    let users = Users::load(&config.users)?;
    let mut store = Store::new(config.servicecidr_api);
    if let Some(dir) = &config.manifests {
        store.load_dir(dir).with_context(|| format!("loading manifests from {}", dir.display()))?;
    }
    let server = Arc::new(Server {
        store: Mutex::new(store),
        users,
        kubelet: kubelet::Kubelet::new(config.kubelet.clone()),
        config,
        portforwards: portforward::Control::default(),
    });
    eprintln!("stand-in API server listening on https://{}", server.config.listen);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, _) = listener.accept().await?;
        // Port-forwards carry small frames back to back (see devnet-kube).
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let server = server.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let service = hyper::service::service_fn(move |req| {
                let server = server.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(server, req).await) }
            });
            let io = hyper_util::rt::TokioIo::new(tls);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).with_upgrades().await;
        });
    }
}

fn tls_config(config: &Config) -> Result<Arc<rustls::ServerConfig>> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    use rustls_pki_types::pem::PemObject;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "stand-in kubernetes CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let names = vec![config.listen.ip().to_string(), "kubernetes.default.svc".to_owned(), "localhost".to_owned()];
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    let leaf = params.signed_by(&key, &ca)?;
    std::fs::create_dir_all(&config.tls_dir)?;
    std::fs::write(config.tls_dir.join("ca.crt"), ca.pem())?;
    let chain = vec![rustls_pki_types::CertificateDer::from_pem_slice(leaf.pem().as_bytes())?];
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())?;
    let mut tls = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

/// Where a request points, parsed from its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl Target {
    pub fn parse(path: &str) -> Option<Target> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, rest) = match segs.as_slice() {
            ["api", v, rest @ ..] => ("", *v, rest),
            ["apis", g, v, rest @ ..] => (*g, *v, rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
            _ => (None, rest),
        };
        let (plural, name, subresource) = match rest {
            [p] => (*p, None, None),
            [p, n] => (*p, Some(n.to_string()), None),
            [p, n, s] => (*p, Some(n.to_string()), Some(s.to_string())),
            _ => return None,
        };
        Some(Target {
            group: group.to_owned(),
            version: version.to_owned(),
            plural: plural.to_owned(),
            namespace,
            name,
            subresource,
        })
    }

    /// `deployments.apps`, `pods`: how the real server names a resource in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }
}

fn verb_of(method: &Method, target: &Target, query: &Query) -> &'static str {
    match *method {
        Method::GET if target.subresource.as_deref() == Some("portforward") => "create",
        Method::GET if target.name.is_some() => "get",
        Method::GET if query.flag("watch") => "watch",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "unknown",
    }
}

/// The query string, decoded.
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: Option<&str>) -> Self {
        Query(
            q.unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect(),
        )
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    Ok(b) => out.push(b),
                    Err(_) => out.extend_from_slice(&bytes[i..i + 3]),
                }
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).map_err(|never| match never {}).boxed()
}

pub(crate) fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    let mut resp = Response::new(full(serde_json::to_vec(value).unwrap_or_default()));
    *resp.status_mut() = code;
    resp.headers_mut().insert("content-type", "application/json".parse().expect("header"));
    resp
}

/// A `Status` failure as the real server sends it.
pub(crate) fn status(code: u16, reason: &str, message: &str, details: Value) -> Response<Body> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "details": details, "code": code,
    });
    json_response(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &body)
}

fn store_error(e: StoreError, target: &Target) -> Response<Body> {
    let details = |name: &str| json!({"name": name, "group": target.group, "kind": target.plural});
    match e {
        StoreError::NotFound(name) => {
            status(404, "NotFound", &format!("{} \"{name}\" not found", target.qualified()), details(&name))
        }
        StoreError::NamespaceNotFound(ns) => status(
            404,
            "NotFound",
            &format!("namespaces \"{ns}\" not found"),
            json!({"name": ns, "kind": "namespaces"}),
        ),
        StoreError::AlreadyExists(name) => {
            status(409, "AlreadyExists", &format!("{} \"{name}\" already exists", target.qualified()), details(&name))
        }
        StoreError::Conflict(name) => status(
            409,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                target.qualified()
            ),
            details(&name),
        ),
        StoreError::Invalid { kind, name, message } => status(
            422,
            "Invalid",
            &format!("{kind} \"{name}\" is invalid: {message}"),
            json!({"name": name, "group": target.group, "kind": kind}),
        ),
        StoreError::BadRequest(message) => status(400, "BadRequest", &message, json!({})),
        StoreError::MethodNotAllowed => status(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            json!({}),
        ),
        StoreError::UnknownResource => {
            status(404, "NotFound", "the server could not find the requested resource", json!({}))
        }
    }
}

async fn handle(server: Arc<Server>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query = Query::parse(req.uri().query());
    let method = req.method().clone();

    // Lab controls, reachable only from inside the stand-in's own namespace.
    if let Some(action) = path.strip_prefix("/standin/") {
        return portforward::admin(&server, action).await;
    }

    let token = req
        .headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::to_owned);
    let Some(user) = token.as_deref().and_then(|t| server.users.authenticate(t)) else {
        return status(401, "Unauthorized", "Unauthorized", json!({}));
    };

    if path == "/version" {
        return json_response(
            StatusCode::OK,
            &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-devnet-standin", "platform": "linux/amd64"}),
        );
    }
    // Who am I (what `kubectl auth whoami` asks; devnet names its client
    // certificate after the answer).
    if path == "/apis/authentication.k8s.io/v1/selfsubjectreviews" && method == Method::POST {
        return json_response(
            StatusCode::CREATED,
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
                    "status": {"userInfo": {"username": user.name, "groups": ["system:authenticated"]}}}),
        );
    }
    if path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" && method == Method::POST {
        let body = match read_json(req).await {
            Ok(v) => v,
            Err(r) => return r,
        };
        return rbac::self_subject_access_review(user, body);
    }
    let Some(target) = Target::parse(&path) else {
        return status(404, "NotFound", "the server could not find the requested resource", json!({}));
    };
    let Some(kind) = server.store.lock().await.kind(&target.group, &target.version, &target.plural) else {
        return store_error(StoreError::UnknownResource, &target);
    };
    let verb = verb_of(&method, &target, &query);
    let resource = match &target.subresource {
        Some(s) => format!("{}/{s}", target.plural),
        None => target.plural.clone(),
    };
    if let Decision::Deny(message) = user.authorize(verb, &target, &resource, kind.namespaced) {
        let details =
            json!({"name": target.name.clone().unwrap_or_default(), "group": target.group, "kind": target.plural});
        return status(403, "Forbidden", &message, details);
    }

    match (verb, target.subresource.as_deref()) {
        ("create", Some("portforward")) => portforward::handle(server, req, target, query).await,
        (_, Some(_)) => store_error(StoreError::MethodNotAllowed, &target),
        ("get", None) => {
            let store = server.store.lock().await;
            match store.get(&kind, target.namespace.as_deref(), target.name.as_deref().unwrap_or_default()) {
                Ok(obj) => json_response(StatusCode::OK, &obj),
                Err(e) => store_error(e, &target),
            }
        }
        ("list", None) => {
            let store = server.store.lock().await;
            json_response(StatusCode::OK, &store.list(&kind, target.namespace.as_deref(), &query))
        }
        ("watch", None) => watch(server, kind, target, query).await,
        ("create" | "update" | "patch", None) => {
            let content_type = req.headers().get("content-type").and_then(|h| h.to_str().ok()).unwrap_or("").to_owned();
            let body = match read_json(req).await {
                Ok(v) => v,
                Err(r) => return r,
            };
            let dry_run = query.get("dryRun") == Some("All");
            let result = {
                let mut store = server.store.lock().await;
                match verb {
                    "create" => {
                        store.create(&kind, target.namespace.as_deref(), body, dry_run, &server.config.service_ranges)
                    }
                    "update" => store.update(
                        &kind,
                        target.namespace.as_deref(),
                        target.name.as_deref().unwrap_or_default(),
                        body,
                        dry_run,
                    ),
                    _ => store.patch(
                        &kind,
                        target.namespace.as_deref(),
                        target.name.as_deref().unwrap_or_default(),
                        body,
                        content_type.contains("apply-patch"),
                        dry_run,
                    ),
                }
            };
            match result {
                Ok((obj, created)) => {
                    if !dry_run {
                        kubelet::after_write(&server, &kind, &obj).await;
                    }
                    json_response(if created { StatusCode::CREATED } else { StatusCode::OK }, &obj)
                }
                Err(e) => store_error(e, &target),
            }
        }
        ("delete", None) => {
            let name = target.name.clone().unwrap_or_default();
            let result = server.store.lock().await.delete(&kind, target.namespace.as_deref(), &name);
            match result {
                Ok(removed) => {
                    for obj in &removed {
                        kubelet::after_delete(&server, obj).await;
                    }
                    json_response(
                        StatusCode::OK,
                        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                "details": {"name": name, "group": target.group, "kind": target.plural}}),
                    )
                }
                Err(e) => store_error(e, &target),
            }
        }
        _ => store_error(StoreError::MethodNotAllowed, &target),
    }
}

async fn read_json(req: Request<Incoming>) -> Result<Value, Response<Body>> {
    let bytes = req
        .into_body()
        .collect()
        .await
        .map_err(|e| status(400, "BadRequest", &format!("reading the body: {e}"), json!({})))?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .or_else(|_| serde_saphyr::from_str(std::str::from_utf8(&bytes).unwrap_or("")))
        .map_err(|e| status(400, "BadRequest", &format!("the body is not valid JSON or YAML: {e}"), json!({})))
}

/// A watch: the objects already there as ADDED (unless the client names a
/// resourceVersion it has), then every change, one JSON event per line.
async fn watch(server: Arc<Server>, kind: Kind, target: Target, query: Query) -> Response<Body> {
    let (initial, mut changes) = {
        let store = server.store.lock().await;
        let since = query.get("resourceVersion").and_then(|v| v.parse::<u64>().ok()).filter(|v| *v > 0);
        let initial: Vec<Value> = match since {
            Some(_) => Vec::new(),
            None => store.list(&kind, target.namespace.as_deref(), &query)["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|o| json!({"type": "ADDED", "object": o}))
                .collect(),
        };
        (initial, store.subscribe())
    };
    let timeout = query.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).unwrap_or(300);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(64);
    tokio::spawn(async move {
        let line = |v: &Value| {
            let mut b = serde_json::to_vec(v).unwrap_or_default();
            b.push(b'\n');
            Ok(Frame::data(Bytes::from(b)))
        };
        for ev in &initial {
            if tx.send(line(ev)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(std::time::Duration::from_secs(timeout));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => return,
                ev = changes.recv() => match ev {
                    Ok(ev) if store::matches_watch(&ev, &kind, target.namespace.as_deref(), &query) => {
                        if tx.send(line(&json!({"type": ev.kind, "object": ev.object}))).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                    Err(_) => return,
                },
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    resp.headers_mut().insert("content-type", "application/json".parse().expect("header"));
    resp
}

/// A stand-in for tests on 127.0.0.1 (the kernel picks the port), with a
/// kubeconfig holding one context per user; the folder goes when dropped.
#[derive(Debug)]
pub struct Loopback {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Loopback {
    /// Starts a stand-in serving `manifests`, with `users_yaml` as its users
    /// file. `users` are the names to put in the kubeconfig; each user's
    /// token must equal its name. The first is the current context.
    pub async fn start(
        name: &str,
        users_yaml: &str,
        users: &[&str],
        manifests: Option<PathBuf>,
        service_ranges: Vec<IpNet>,
        servicecidr_api: bool,
    ) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("devnet-standin-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("users.yaml"), users_yaml)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let config = Config {
            listen: addr,
            tls_dir: dir.clone(),
            manifests,
            users: dir.join("users.yaml"),
            service_ranges,
            servicecidr_api,
            kubelet: None,
        };
        let ca_path = dir.join("ca.crt");
        let _ = std::fs::remove_file(&ca_path);
        tokio::spawn(async move {
            if let Err(e) = serve_on(listener, config).await {
                eprintln!("stand-in API server: {e:#}");
            }
        });
        let mut waited = 0;
        while !ca_path.exists() {
            anyhow::ensure!(waited < 200, "the stand-in API server did not start");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            waited += 1;
        }
        let ca = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, std::fs::read(&ca_path)?);
        let current = users.first().context("at least one user")?;
        let mut kc = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: {current}\nclusters:\n- name: c\n  cluster: {{server: \"https://{addr}\", certificate-authority-data: \"{ca}\"}}\nusers:\n"
        );
        for u in users {
            kc += &format!("- {{name: {u}, user: {{token: {u}}}}}\n");
        }
        kc += "contexts:\n";
        for u in users {
            kc += &format!("- {{name: {u}, context: {{cluster: c, user: {u}}}}}\n");
        }
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, kc)?;
        Ok(Loopback { dir, kubeconfig })
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads a users file (see [`rbac::Users`]).
pub fn users_path(dir: &Path) -> PathBuf {
    dir.join("users.yaml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_like_the_real_server() {
        let t = Target::parse("/api/v1/namespaces/devnet/pods/relay-1/portforward").expect("path");
        assert_eq!(
            (t.group.as_str(), t.plural.as_str(), t.namespace.as_deref(), t.name.as_deref(), t.subresource.as_deref()),
            ("", "pods", Some("devnet"), Some("relay-1"), Some("portforward"))
        );
        let t = Target::parse("/apis/apps/v1/namespaces/devnet/deployments").expect("path");
        assert_eq!((t.qualified().as_str(), t.name), ("deployments.apps", None));
        let t = Target::parse("/api/v1/namespaces/devnet").expect("path");
        assert_eq!((t.plural.as_str(), t.namespace, t.name.as_deref()), ("namespaces", None, Some("devnet")));
        let t = Target::parse("/api/v1/nodes").expect("path");
        assert_eq!((t.plural.as_str(), t.namespace), ("nodes", None));
        assert_eq!(percent_decode("ports=8443%2C9090&a=b+c"), "ports=8443,9090&a=b c");
    }
}

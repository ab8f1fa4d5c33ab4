//! The relay's lifecycle in the cluster: `devnet relay install | status |
//! uninstall`, and what `devnet connect` does before tunnelling.
//!
//! [`manifests`] is pure (golden-tested): a namespace, a ServiceAccount with
//! no token and no RBAC (the relay only dials addresses), the relay's TLS
//! key pair and CA in a Secret ([`TLS_SECRET`], which only the relay pod
//! mounts and no user may read), the revocation list ([`REVOKED_CONFIGMAP`],
//! which admins edit with `devnet relay revoke`), the Role users are bound
//! to ([`USER_ROLE`]: finding the relay pod and port-forwarding to it, no
//! Secret at all: laptops enrol for a per-user client certificate through
//! the port-forward, see [`crate::enrol`]), a Deployment (one replica, requests
//! and limits, probes, non-root, read-only root filesystem, no
//! capabilities), a NodePort Service, and a NetworkPolicy that admits only
//! the tunnel port and lets the relay reach only the cluster's CIDRs and DNS.
//!
//! What an admin may choose ([`RelaySettings`]: namespace, image, requests
//! and limits, whether the Service is a NodePort) defaults to what `devnet
//! connect` installs. [`to_yaml`] prints the same objects for GitOps
//! (`devnet relay manifests`); the Helm chart in `installers/relay/chart`
//! renders them too, and a test holds the two equal.

use std::time::{Duration, Instant};

use base64::Engine;
use ipnet::IpNet;
use serde::Serialize;
use serde_json::{Value, json};

use crate::cluster::{Cluster, KubeError};

/// The namespace the relay lives in unless told otherwise (`--relay-namespace`).
pub const DEFAULT_NAMESPACE: &str = "devnet";
pub const NAME: &str = "devnet-relay";
pub const TUNNEL_PORT: u16 = 8443;
/// Where laptops enrol: on the relay pod's loopback, which only the API
/// server's port-forward reaches (RBAC `create pods/portforward`).
pub const ENROL_PORT: u16 = 8444;
pub const HEALTH_PORT: u16 = 9090;
/// This client's version; the relay it installs is the same.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
const VERSION_LABEL: &str = "devnet.dev/version";
const PROTOCOL_LABEL: &str = "devnet.dev/protocol";
const MOUNT: &str = "/etc/devnet-relay";
/// The relay's TLS key pair and its CA: mounted by the relay pod, readable
/// by no user (whoever holds the key can pose as the relay on the office LAN).
pub const TLS_SECRET: &str = "devnet-relay-tls";
/// The Secret earlier releases gave users (a CA and a token everyone
/// shared): an install deletes it, laptops enrol instead.
pub const CLIENT_SECRET: &str = "devnet-relay-client";
/// The revoked users and certificate serials (keys `users` and `serials`,
/// one a line), mounted into the relay pod, which re-reads it.
pub const REVOKED_CONFIGMAP: &str = "devnet-relay-revoked";
/// The one Secret earlier releases installed: it held the key and the token
/// together, so an install deletes it once the two above are in place.
pub const LEGACY_SECRET: &str = NAME;
/// The Role an admin binds users to (a RoleBinding of their own).
pub const USER_ROLE: &str = "devnet-user";
/// The relay CA's fingerprint on the Deployment: public, and enough for a
/// client to tell that its keyring entry belongs to an older install.
const CA_ANNOTATION: &str = "devnet.dev/ca-sha256";

/// The fingerprint [`CA_ANNOTATION`] carries.
pub fn ca_fingerprint(ca_pem: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(ca_pem.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The image this release installs.
pub fn default_image() -> String {
    format!("ghcr.io/devnet-dev/devnet-relay:{VERSION}")
}

/// CPU and memory as Kubernetes quantities (`50m`, `1`, `32Mi`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantities {
    pub cpu: String,
    pub memory: String,
}

/// The relay container's requests and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub requests: Quantities,
    pub limits: Quantities,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            requests: Quantities { cpu: "50m".into(), memory: "32Mi".into() },
            limits: Quantities { cpu: "1".into(), memory: "256Mi".into() },
        }
    }
}

/// What an admin may choose about the relay. The defaults are what `devnet
/// connect` installs; the Helm chart's values are the same settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySettings {
    /// Where every namespaced object goes; clients look here
    /// (`--relay-namespace`).
    pub namespace: String,
    pub image: String,
    pub resources: Resources,
    /// A NodePort Service (laptops that reach a node dial it directly);
    /// off, a ClusterIP Service, and laptops come through the pod IP or the
    /// API server's port-forward.
    pub node_port: bool,
}

impl Default for RelaySettings {
    fn default() -> Self {
        RelaySettings {
            namespace: DEFAULT_NAMESPACE.into(),
            image: default_image(),
            resources: Resources::default(),
            node_port: true,
        }
    }
}

/// A setting or an allowed CIDR that cannot be installed; the message says
/// what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

impl RelaySettings {
    /// Refuses what the API server would refuse later, or worse, accept.
    pub fn check(&self) -> Result<(), SettingsError> {
        check_namespace(&self.namespace)?;
        if self.image.trim().is_empty() || self.image.chars().any(char::is_whitespace) {
            return Err(SettingsError(format!("the relay image {:?} is not an image reference", self.image)));
        }
        let r = &self.resources;
        for (what, q) in [
            ("CPU request", &r.requests.cpu),
            ("memory request", &r.requests.memory),
            ("CPU limit", &r.limits.cpu),
            ("memory limit", &r.limits.memory),
        ] {
            if !is_quantity(q) {
                return Err(SettingsError(format!(
                    "the {what} {q:?} is not a Kubernetes quantity (write e.g. 50m or 1 for CPU, 32Mi or 1Gi for memory)"
                )));
            }
        }
        Ok(())
    }
}

/// A namespace name: an RFC 1123 label.
pub fn check_namespace(ns: &str) -> Result<(), SettingsError> {
    let ok = !ns.is_empty()
        && ns.len() <= 63
        && ns.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ns.starts_with('-')
        && !ns.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(SettingsError(format!(
            "the relay namespace {ns:?} is not a namespace name (at most 63 of a-z, 0-9 and '-', starting and ending with a letter or digit)"
        )))
    }
}

/// A Kubernetes quantity in the forms people write: digits with an
/// optional fraction, then an optional suffix (m, k, M, G, T, P, E, Ki,
/// Mi, Gi, Ti, Pi, Ei). Exponents (`1e3`) are not taken.
pub fn is_quantity(q: &str) -> bool {
    const SUFFIXES: [&str; 14] = ["", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    let number_end = q.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(q.len());
    let (number, suffix) = q.split_at(number_end);
    let mut parts = number.split('.');
    let whole = parts.next().unwrap_or_default();
    let fraction = parts.next();
    parts.next().is_none()
        && !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
        && SUFFIXES.contains(&suffix)
}

/// The relay may dial these: at least one, and none so wide it would
/// reach beyond a cluster (the rule discovery applies).
pub fn check_allow(allow: &[IpNet]) -> Result<(), SettingsError> {
    if allow.is_empty() {
        return Err(SettingsError(
            "the relay may dial nothing: name the cluster's pod and service CIDRs (--allow), or leave --allow out to discover them".into(),
        ));
    }
    for net in allow {
        if let Some(why) = crate::discover::too_broad(net) {
            return Err(SettingsError(format!(
                "{net} is {why}: the relay would dial far beyond the cluster; name the cluster's pod and service CIDRs"
            )));
        }
    }
    Ok(())
}

/// What the relay is installed with.
#[derive(Debug, Clone)]
pub struct RelayParams {
    pub settings: RelaySettings,
    /// What the relay may dial: the cluster's pod and service CIDRs.
    pub allow: Vec<IpNet>,
    /// The cluster DNS servers (egress on 53).
    pub dns: Vec<std::net::IpAddr>,
    pub credentials: Credentials,
}

/// What the relay serves with: its CA, its certificate and key (the Secret
/// [`TLS_SECRET`]). Laptops get the CA at enrolment; nothing here is shared
/// with users. Its `Debug` shows the CA's fingerprint, never the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Credentials { ca_pem, cert_pem, key_pem } = self;
        f.debug_struct("Credentials")
            .field("ca_sha256", &ca_fingerprint(ca_pem))
            .field("cert_pem", &if cert_pem.is_empty() { "<none>" } else { "<certificate>" })
            .field("key_pem", &if key_pem.is_empty() { "<none>" } else { "<redacted>" })
            .finish()
    }
}

impl Credentials {
    /// A fresh CA and relay key pair.
    pub fn generate() -> anyhow::Result<Self> {
        let certs = devnet_tls::generate()?;
        Ok(Credentials { ca_pem: certs.ca_pem, cert_pem: certs.cert_pem, key_pem: certs.key_pem })
    }
}

fn labels() -> Value {
    json!({"app.kubernetes.io/name": NAME, "app.kubernetes.io/managed-by": "devnet",
           VERSION_LABEL: VERSION, PROTOCOL_LABEL: devnet_proto::PROTOCOL_VERSION.to_string()})
}

fn namespace_labels() -> Value {
    let mut l = labels();
    for mode in ["enforce", "audit", "warn"] {
        l[format!("pod-security.kubernetes.io/{mode}")] = json!("restricted");
    }
    l
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

/// Every object of an install, in the order they are applied.
pub fn manifests(p: &RelayParams) -> Vec<Value> {
    let ns = p.settings.namespace.as_str();
    let res = &p.settings.resources;
    let service_type = if p.settings.node_port { "NodePort" } else { "ClusterIP" };
    let selector = json!({"app.kubernetes.io/name": NAME});
    let allow = p.allow.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    let egress_to: Vec<Value> = p.allow.iter().map(|c| json!({"ipBlock": {"cidr": c.to_string()}})).collect();
    let dns_to: Vec<Value> =
        p.dns.iter().map(|ip| json!({"ipBlock": {"cidr": IpNet::from(*ip).to_string()}})).collect();
    vec![
        // The relay passes the `restricted` Pod Security profile, so the
        // namespace enforces it: nothing laxer can run beside it.
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": namespace_labels()}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": NAME, "namespace": ns, "labels": labels()},
               "automountServiceAccountToken": false}),
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
               "metadata": {"name": TLS_SECRET, "namespace": ns, "labels": labels()},
               "data": {"tls.crt": b64(&p.credentials.cert_pem), "tls.key": b64(&p.credentials.key_pem),
                        "ca.crt": b64(&p.credentials.ca_pem)}}),
        // No data here: `devnet relay revoke` owns it, and an upgrade must
        // never empty it (install creates it only when it is missing).
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": REVOKED_CONFIGMAP, "namespace": ns, "labels": labels()}}),
        user_role(ns),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": ns, "labels": labels(),
                     "annotations": {CA_ANNOTATION: ca_fingerprint(&p.credentials.ca_pem)}},
        "spec": {
          "replicas": 1, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": selector},
          "template": {
            // The CA's fingerprint on the pod too: fresh credentials (an
            // install that replaced a stuck relay) change the template, so
            // the pod restarts and serves them (the relay reads its CA
            // and key once, at start).
            "metadata": {"labels": labels(), "annotations": {CA_ANNOTATION: ca_fingerprint(&p.credentials.ca_pem)}},
            "spec": {
              "serviceAccountName": NAME, "automountServiceAccountToken": false,
              // fsGroup: a real kubelet mounts Secret files root-owned; with
              // fsGroup they belong to the relay's group, mode 0440.
              "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                                  "fsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
              "containers": [{
                "name": "relay", "image": p.settings.image, "imagePullPolicy": "IfNotPresent",
                "args": ["serve", "--listen", format!("[::]:{TUNNEL_PORT}"), "--health-listen", format!("[::]:{HEALTH_PORT}"),
                         "--cert", format!("{MOUNT}/tls/tls.crt"), "--key", format!("{MOUNT}/tls/tls.key"),
                         "--relay-ca", format!("{MOUNT}/tls/ca.crt"),
                         // Loopback: only the kubelet's port-forward reaches it.
                         "--enrol-listen", format!("127.0.0.1:{ENROL_PORT}"),
                         "--revoked-dir", format!("{MOUNT}/revoked"), "--allow", allow],
                // The relay's own node, whichever it lands on (a node that
                // joined after the install included): never dialled.
                "env": [{"name": "DEVNET_RELAY_HOST_IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}],
                "ports": [{"name": "tunnel", "containerPort": TUNNEL_PORT, "protocol": "TCP"},
                          {"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"}],
                "resources": {"requests": {"cpu": res.requests.cpu, "memory": res.requests.memory},
                              "limits": {"cpu": res.limits.cpu, "memory": res.limits.memory}},
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": HEALTH_PORT}, "periodSeconds": 2},
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": HEALTH_PORT}, "periodSeconds": 10},
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "tls", "mountPath": format!("{MOUNT}/tls"), "readOnly": true},
                                 {"name": "revoked", "mountPath": format!("{MOUNT}/revoked"), "readOnly": true}],
              }],
              // The revocation list as the kubelet keeps it current (a
              // directory mount, not subPath, so updates arrive).
              "volumes": [{"name": "tls", "secret": {"secretName": TLS_SECRET, "defaultMode": 0o440}},
                          {"name": "revoked", "configMap": {"name": REVOKED_CONFIGMAP, "optional": true}}],
            }}}}),
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": NAME, "namespace": ns, "labels": labels()},
               "spec": {"type": service_type, "selector": selector,
                        // The node port is the API server's to allocate (a
                        // fixed one may be taken); status reads it back.
                        // Without one, laptops come through the pod IP or
                        // the API server's port-forward.
                        "ports": [{"name": "tunnel", "port": TUNNEL_PORT, "targetPort": TUNNEL_PORT}]}}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": NAME, "namespace": ns, "labels": labels()},
        "spec": {
          "podSelector": {"matchLabels": selector},
          "policyTypes": ["Ingress", "Egress"],
          // Laptops come from anywhere (node port or port-forward);
          // only the tunnel port is open. Probes come from the kubelet,
          // which NetworkPolicy does not filter.
          "ingress": [{"ports": [{"protocol": "TCP", "port": TUNNEL_PORT}]}],
          // ipBlock for the CIDRs, and selectors as well: on many CNIs
          // ipBlock never matches pod IPs, only the selectors do.
          "egress": [{"to": egress_to},
                     {"to": [{"namespaceSelector": {}}]},
                     {"to": dns_to.into_iter().chain([json!({
                          "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                          "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}})]).collect::<Vec<_>>(),
                      "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}],
        }}),
    ]
}

/// The Role an admin binds the relay's users to: what `devnet connect`
/// reads ([`connect_rights`]), each rule on the relay's own objects where
/// RBAC can name them. No rule on Secrets: the TLS key stays with the relay
/// pod, and laptops enrol through the port-forward instead.
fn user_role(ns: &str) -> Value {
    let rules: Vec<Value> = connect_rights(ns)
        .into_iter()
        .map(|(verb, group, resource, _, name)| match name {
            Some(name) => {
                json!({"apiGroups": [group], "resources": [resource], "resourceNames": [name], "verbs": [verb]})
            }
            None => json!({"apiGroups": [group], "resources": [resource], "verbs": [verb]}),
        })
        .collect();
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
           "metadata": {"name": USER_ROLE, "namespace": ns, "labels": labels()},
           "rules": rules})
}

/// The objects for a repository that must not hold secrets (GitOps):
/// [`manifests`] without the Secret, which holds the relay's private key,
/// and without the Deployment's CA fingerprint, which would name that
/// Secret's CA. Clients then trust the CA the relay hands them at enrolment.
pub fn without_secret(objs: Vec<Value>) -> Vec<Value> {
    objs.into_iter()
        .filter(|o| o["kind"] != "Secret")
        .map(|mut o| {
            // `get_mut`, not indexing: indexing would add a null
            // `annotations` to every object that has none.
            let strip = |meta: Option<&mut Value>| {
                if let Some(meta) = meta.and_then(Value::as_object_mut)
                    && let Some(notes) = meta.get_mut("annotations").and_then(Value::as_object_mut)
                {
                    notes.remove(CA_ANNOTATION);
                    if notes.is_empty() {
                        meta.remove("annotations");
                    }
                }
            };
            strip(o.get_mut("metadata"));
            strip(o.pointer_mut("/spec/template/metadata"));
            o
        })
        .collect()
}

/// Kubernetes objects as multi-document YAML, each object's fields in the
/// order people read them (apiVersion, kind, metadata, then the rest; a
/// name first wherever there is one).
pub fn to_yaml(objs: &[Value]) -> anyhow::Result<String> {
    let ordered: Vec<Ordered<'_>> = objs.iter().map(Ordered).collect();
    Ok(serde_saphyr::to_string_multiple(&ordered)?)
}

struct Ordered<'a>(&'a Value);

impl Serialize for Ordered<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        const FIRST: [&str; 6] = ["apiVersion", "kind", "metadata", "name", "namespace", "type"];
        match self.0 {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort_by_key(|k| (FIRST.iter().position(|f| f == k).unwrap_or(FIRST.len()), k.as_str()));
                let mut out = s.serialize_map(Some(keys.len()))?;
                for k in keys {
                    out.serialize_entry(k, &Ordered(&map[k]))?;
                }
                out.end()
            }
            Value::Array(items) => s.collect_seq(items.iter().map(Ordered)),
            other => other.serialize(s),
        }
    }
}

/// The REST path an object is applied at.
pub fn path_of(obj: &Value) -> String {
    let api = obj["apiVersion"].as_str().unwrap_or("v1");
    let kind = obj["kind"].as_str().unwrap_or_default();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let plural = match kind {
        "NetworkPolicy" => "networkpolicies".to_owned(),
        "ReplicaSet" => "replicasets".to_owned(),
        k => format!("{}s", k.to_lowercase()),
    };
    let base = if api.contains('/') { format!("/apis/{api}") } else { format!("/api/{api}") };
    match obj["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{base}/namespaces/{ns}/{plural}/{name}"),
        None => format!("{base}/{plural}/{name}"),
    }
}

/// A right as (verb, group, resource, namespace (`None`: cluster-wide),
/// the one object's name it is limited to (`None`: any)).
pub type Right<'a> = (&'static str, &'static str, &'static str, Option<&'a str>, Option<&'static str>);

/// The rights an install into namespace `ns` needs: the Role it makes
/// grants users rights the installer must hold itself (RBAC refuses to
/// grant more), and the Secret of an older install is deleted.
pub fn install_rights(ns: &str) -> Vec<Right<'_>> {
    let mut rights = vec![
        ("create", "", "namespaces", None, None),
        ("patch", "", "serviceaccounts", Some(ns), None),
        ("patch", "", "secrets", Some(ns), None),
        ("delete", "", "secrets", Some(ns), Some(LEGACY_SECRET)),
        ("delete", "", "secrets", Some(ns), Some(CLIENT_SECRET)),
        ("create", "", "configmaps", Some(ns), None),
        ("patch", "rbac.authorization.k8s.io", "roles", Some(ns), None),
        ("patch", "apps", "deployments", Some(ns), None),
        ("patch", "", "services", Some(ns), None),
        ("patch", "networking.k8s.io", "networkpolicies", Some(ns), None),
    ];
    rights.extend(connect_rights(ns));
    rights
}

/// The rights `connect` needs once the relay runs in namespace `ns`, and
/// what the [`USER_ROLE`] grants. The relay pod is found through its
/// Deployment's current ReplicaSet (a pod that merely carries the relay's
/// label is never dialled); the port-forward carries enrolment (a per-user
/// client certificate) and, when no direct path answers, the tunnel. No
/// rule touches a Secret.
pub fn connect_rights(ns: &str) -> Vec<Right<'_>> {
    vec![
        ("get", "apps", "deployments", Some(ns), Some(NAME)),
        ("list", "apps", "replicasets", Some(ns), None),
        ("list", "", "pods", Some(ns), None),
        ("get", "", "services", Some(ns), Some(NAME)),
        ("create", "", "pods/portforward", Some(ns), None),
        // The port-forward is a WebSocket upgrade of a GET: a real API server
        // (1.30 and newer) authorises it as `get` too.
        ("get", "", "pods/portforward", Some(ns), None),
    ]
}

/// The rights `devnet relay revoke` needs (an admin's, not a user's).
pub fn revoke_rights(ns: &str) -> Vec<Right<'_>> {
    vec![
        ("get", "", "configmaps", Some(ns), Some(REVOKED_CONFIGMAP)),
        ("patch", "", "configmaps", Some(ns), Some(REVOKED_CONFIGMAP)),
    ]
}

/// The RBAC rule that grants `right`, as a user asks an admin for it.
pub fn rule_text(right: &Right<'_>) -> String {
    let (verb, group, resource, ns, name) = right;
    let names = name.map_or(String::new(), |n| format!(", resourceNames: [\"{n}\"]"));
    let scope = ns.map_or("cluster-wide".to_owned(), |ns| format!("in namespace {ns}"));
    format!("{{apiGroups: [\"{group}\"], resources: [\"{resource}\"]{names}, verbs: [\"{verb}\"]}} {scope}")
}

/// The rights among `rights` the user lacks, as RBAC rules to ask for.
pub async fn missing_rights(cluster: &Cluster, rights: &[Right<'_>]) -> Result<Vec<String>, KubeError> {
    let mut missing = Vec::new();
    for right in rights {
        let (verb, group, resource, ns, name) = *right;
        let (resource_only, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        let review = json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"verb": verb, "group": group, "resource": resource_only,
                                            "subresource": subresource, "namespace": ns.unwrap_or(""),
                                            "name": name.unwrap_or("")}},
        });
        let answer = cluster.post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", &review).await?;
        if answer["status"]["allowed"].as_bool() != Some(true) {
            missing.push(rule_text(right));
        }
    }
    Ok(missing)
}

/// The relay as found in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RelayState {
    /// Where it was looked for.
    pub namespace: String,
    pub installed: bool,
    pub version: Option<String>,
    pub protocol: Option<String>,
    pub ready: bool,
    pub pod: Option<String>,
    pub pod_ips: Vec<std::net::IpAddr>,
    pub host_ip: Option<std::net::IpAddr>,
    pub node_port: Option<u16>,
    /// The fingerprint of the CA the relay serves with.
    pub ca_sha256: Option<String>,
    /// The pod's own reason when it is not running (ErrImagePull, …).
    pub problem: Option<String>,
    /// The relay process now running: the pod's uid and its container's
    /// start time. Client certificates outlive neither (the client CA is
    /// in the process's memory).
    pub instance: Option<String>,
}

impl RelayState {
    /// What to run when this client and the relay disagree on versions.
    pub fn version_advice(&self) -> Option<String> {
        let theirs = self.version.as_deref()?;
        if theirs == VERSION {
            return None;
        }
        let ours = semver_tuple(VERSION);
        let older = semver_tuple(theirs) < ours;
        Some(if older {
            format!(
                "the relay in namespace {} is {theirs}, older than this client ({VERSION}): run `devnet relay install` to upgrade it",
                self.namespace
            )
        } else {
            format!(
                "the relay in namespace {} is {theirs}, newer than this client ({VERSION}): upgrade devnet on this machine",
                self.namespace
            )
        })
    }

    /// Whether the installed relay is older than this client.
    pub fn is_older(&self) -> bool {
        self.version.as_deref().is_some_and(|v| semver_tuple(v) < semver_tuple(VERSION))
    }

    /// Whether the wire protocol matches (a mismatch cannot work).
    pub fn protocol_matches(&self) -> bool {
        self.protocol.as_deref().is_none_or(|p| p == devnet_proto::PROTOCOL_VERSION.to_string())
    }
}

fn semver_tuple(v: &str) -> (u64, u64, u64) {
    let mut it = v.split(['.', '-']).map(|p| p.parse::<u64>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// Reads the relay's Deployment, pod and Service in namespace `ns`.
pub async fn state(cluster: &Cluster, ns: &str) -> Result<RelayState, KubeError> {
    let mut st = RelayState {
        namespace: ns.to_owned(),
        installed: false,
        version: None,
        protocol: None,
        ready: false,
        pod: None,
        pod_ips: Vec::new(),
        host_ip: None,
        node_port: None,
        ca_sha256: None,
        problem: None,
        instance: None,
    };
    let deploy = match cluster.get(&format!("/apis/apps/v1/namespaces/{ns}/deployments/{NAME}")).await {
        Ok(d) => d,
        Err(KubeError::Api { code: 404, .. }) => return Ok(st),
        Err(e) => return Err(e),
    };
    st.installed = true;
    st.version = deploy["metadata"]["labels"][VERSION_LABEL].as_str().map(str::to_owned);
    st.protocol = deploy["metadata"]["labels"][PROTOCOL_LABEL].as_str().map(str::to_owned);
    st.ca_sha256 = deploy["metadata"]["annotations"][CA_ANNOTATION].as_str().map(str::to_owned);
    let selector = format!("labelSelector=app.kubernetes.io%2Fname%3D{NAME}");
    let replica_sets =
        cluster.get(&format!("/apis/apps/v1/namespaces/{ns}/replicasets?{selector}")).await.map_err(|e| match e {
            KubeError::Forbidden(m) => KubeError::Forbidden(format!(
                "{m}: finding the relay pod through its Deployment's ReplicaSet needs {}; ask a cluster admin for it (the Role {USER_ROLE} in namespace {ns} grants it)",
                rule_text(&("list", "apps", "replicasets", Some(ns), None))
            )),
            e => e,
        })?;
    let pods = cluster.get(&format!("/api/v1/namespaces/{ns}/pods?{selector}")).await?;
    if let Some(pod) = relay_pod(&deploy, &replica_sets, &pods) {
        st.pod = pod["metadata"]["name"].as_str().map(str::to_owned);
        let status = &pod["status"];
        st.ready = status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        st.pod_ips =
            status["podIPs"].as_array().into_iter().flatten().filter_map(|i| i["ip"].as_str()?.parse().ok()).collect();
        st.host_ip = status["hostIP"].as_str().and_then(|i| i.parse().ok());
        st.problem = pod_problem(pod);
        st.instance = instance(pod);
    }
    if let Ok(svc) = cluster.get(&format!("/api/v1/namespaces/{ns}/services/{NAME}")).await {
        st.node_port = svc["spec"]["ports"][0]["nodePort"].as_u64().and_then(|p| u16::try_from(p).ok());
    }
    Ok(st)
}

/// The relay's pod among `pods`: one whose controller is the Deployment's
/// current ReplicaSet (the one the Deployment owns, by uid, at the
/// Deployment's revision), ready ones first, then the newest. The label
/// alone proves nothing: whoever may create pods in the namespace can label
/// one `devnet-relay`, and it must never be dialled as the relay.
pub fn relay_pod<'a>(deploy: &Value, replica_sets: &Value, pods: &'a Value) -> Option<&'a Value> {
    const REVISION: &str = "deployment.kubernetes.io/revision";
    let controlled_by = |obj: &Value, uid: &Value| {
        obj["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|o| o["controller"] == true && o["uid"].is_string() && o["uid"] == *uid)
    };
    let revision = deploy["metadata"]["annotations"][REVISION].as_str()?;
    let current = replica_sets["items"].as_array()?.iter().find(|rs| {
        controlled_by(rs, &deploy["metadata"]["uid"]) && rs["metadata"]["annotations"][REVISION] == revision
    })?;
    let hash = current["metadata"]["labels"]["pod-template-hash"].as_str()?;
    let ready = |p: &Value| {
        p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    };
    pods["items"]
        .as_array()?
        .iter()
        .filter(|p| {
            controlled_by(p, &current["metadata"]["uid"]) && p["metadata"]["labels"]["pod-template-hash"] == hash
        })
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .max_by_key(|p| (ready(p), p["metadata"]["creationTimestamp"].as_str().unwrap_or_default().to_owned()))
}

/// The relay process in `pod`: its uid and its running container's start.
pub fn instance(pod: &Value) -> Option<String> {
    let uid = pod["metadata"]["uid"].as_str()?;
    let started = pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"].as_str()?;
    Some(format!("{uid}/{started}"))
}

/// The pod's own words for why it is not running, if it is stuck.
pub fn pod_problem(pod: &Value) -> Option<String> {
    let status = &pod["status"];
    for cs in status["containerStatuses"].as_array().into_iter().flatten() {
        if let Some(w) = cs["state"]["waiting"].as_object() {
            let reason = w.get("reason").and_then(Value::as_str).unwrap_or_default();
            if [
                "ErrImagePull",
                "ImagePullBackOff",
                "CrashLoopBackOff",
                "InvalidImageName",
                "CreateContainerConfigError",
                "CreateContainerError",
                "RunContainerError",
            ]
            .contains(&reason)
            {
                let message = w.get("message").and_then(Value::as_str).unwrap_or_default();
                return Some(format!("{reason}: {message}"));
            }
        }
    }
    for c in status["conditions"].as_array().into_iter().flatten() {
        if c["type"] == "PodScheduled" && c["status"] == "False" {
            return Some(format!(
                "{}: {}",
                c["reason"].as_str().unwrap_or("Unschedulable"),
                c["message"].as_str().unwrap_or_default()
            ));
        }
    }
    None
}

/// Adds `--deny-node` for `nodes` to the relay's arguments: it then refuses
/// them even inside an allowed CIDR (CNIs that give pods node-network
/// addresses put the nodes there).
pub fn deny_nodes(mut objs: Vec<Value>, nodes: &[std::net::IpAddr]) -> Vec<Value> {
    if nodes.is_empty() {
        return objs;
    }
    let list = nodes.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    for obj in objs.iter_mut().filter(|o| o["kind"] == "Deployment") {
        if let Some(args) = obj["spec"]["template"]["spec"]["containers"][0]["args"].as_array_mut() {
            args.extend([json!("--deny-node"), json!(list)]);
        }
    }
    objs
}

/// The nodes' InternalIP and ExternalIP addresses, when the installer may
/// list nodes (an admin may; a user installing into a namespace often may
/// not, and then the relay still refuses its own node from the downward API).
pub async fn node_addresses(cluster: &Cluster) -> Vec<std::net::IpAddr> {
    let nodes = match cluster.get("/api/v1/nodes").await {
        Ok(n) => n,
        Err(e) => {
            tracing::info!(error = %e, "cannot list nodes; the relay refuses only its own node's address");
            return Vec::new();
        }
    };
    let mut ips: Vec<std::net::IpAddr> = nodes["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|n| n["status"]["addresses"].as_array().into_iter().flatten())
        .filter(|a| a["type"] == "InternalIP" || a["type"] == "ExternalIP")
        .filter_map(|a| a["address"].as_str()?.parse().ok())
        .collect();
    ips.sort_unstable();
    ips.dedup();
    ips
}

/// Applies every object (server-side apply: installing twice changes nothing,
/// a new version replaces the old). The relay is told the nodes' addresses
/// known now ([`node_addresses`]); a node that joins later is refused once
/// the relay runs on it (downward API) or the next install lists it.
pub async fn install(cluster: &Cluster, params: &RelayParams) -> Result<(), KubeError> {
    params.settings.check().map_err(|e| KubeError::Other(e.to_string()))?;
    check_allow(&params.allow).map_err(|e| KubeError::Other(e.to_string()))?;
    let missing = missing_rights(cluster, &install_rights(&params.settings.namespace)).await?;
    if !missing.is_empty() {
        return Err(KubeError::Forbidden(format!(
            "installing the relay needs rights you lack; ask a cluster admin to grant {} (or to run `devnet relay install` once)",
            missing.join(", ")
        )));
    }
    let nodes = node_addresses(cluster).await;
    for obj in deny_nodes(manifests(params), &nodes) {
        // The namespace may exist; the revocation list must survive an
        // upgrade: both are created only when missing.
        if obj["kind"] == "ConfigMap" {
            match cluster.post(&format!("/api/v1/namespaces/{}/configmaps", params.settings.namespace), &obj).await {
                Ok(_) | Err(KubeError::Api { code: 409, .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        if obj["kind"] == "Namespace" {
            match cluster.post("/api/v1/namespaces", &obj).await {
                Ok(_) | Err(KubeError::Api { code: 409, .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        cluster.apply(&path_of(&obj), &obj).await?;
    }
    // Older installs gave users Secrets: the key and a shared token in one,
    // then a CA and the shared token in another. Laptops now enrol, so both go.
    for old in [LEGACY_SECRET, CLIENT_SECRET] {
        match cluster.delete(&format!("/api/v1/namespaces/{}/secrets/{old}", params.settings.namespace)).await {
            Ok(_) => {
                tracing::info!(namespace = %params.settings.namespace, secret = old, "deleted an older install's Secret users could read")
            }
            Err(KubeError::Api { code: 404, .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Removes everything `install` made in namespace `ns` (the namespace takes
/// the rest along).
pub async fn uninstall(cluster: &Cluster, ns: &str) -> Result<bool, KubeError> {
    let path = format!("/api/v1/namespaces/{ns}");
    let ns = match cluster.get(&path).await {
        Ok(ns) => ns,
        Err(KubeError::Api { code: 404, .. }) => return Ok(false),
        Err(e) => return Err(e),
    };
    // Only a namespace devnet made is ours to delete.
    if ns["metadata"]["labels"]["app.kubernetes.io/managed-by"] != "devnet" {
        return Err(KubeError::Other(format!(
            "namespace {ns} was not created by devnet (it lacks the label app.kubernetes.io/managed-by=devnet): delete the relay's objects in it by hand, or the namespace if it is really unused"
        )));
    }
    match cluster.delete(&path).await {
        Ok(_) => Ok(true),
        Err(KubeError::Api { code: 404, .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Revokes (or with `undo`, re-admits) users and certificate serials in the
/// relay's revocation list in namespace `ns`, with the caller's own rights
/// (an admin's: users have none on ConfigMaps). Returns the list as it is now.
pub async fn revoke(
    cluster: &Cluster,
    ns: &str,
    users: &[String],
    serials: &[String],
    undo: bool,
) -> Result<(Vec<String>, Vec<String>), KubeError> {
    let forbidden = |e: KubeError| match e {
        KubeError::Forbidden(m) => KubeError::Forbidden(format!(
            "{m}: revoking needs {} and {}, which a cluster admin has (users bound to {USER_ROLE} do not)",
            rule_text(&revoke_rights(ns)[0]),
            rule_text(&revoke_rights(ns)[1])
        )),
        e => e,
    };
    let path = format!("/api/v1/namespaces/{ns}/configmaps/{REVOKED_CONFIGMAP}");
    let current = match cluster.get(&path).await {
        Ok(cm) => cm,
        Err(KubeError::Api { code: 404, .. }) => {
            return Err(KubeError::Other(format!(
                "there is no revocation list ({ns}/{REVOKED_CONFIGMAP}): is a relay of devnet {VERSION} installed in namespace {ns}? run `devnet relay install` (or pass --relay-namespace)"
            )));
        }
        Err(e) => return Err(forbidden(e)),
    };
    let lines = |key: &str| -> Vec<String> {
        current["data"][key]
            .as_str()
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let change = |mut list: Vec<String>, entries: &[String]| {
        for e in entries {
            if undo {
                list.retain(|l| l != e);
            } else if !list.contains(e) {
                list.push(e.clone());
            }
        }
        list
    };
    let serials: Vec<String> = serials
        .iter()
        .map(|s| s.chars().filter(char::is_ascii_hexdigit).collect::<String>().to_ascii_lowercase())
        .collect();
    let (users, serials) = (change(lines("users"), users), change(lines("serials"), &serials));
    let text = |list: &[String]| list.iter().map(|l| format!("{l}\n")).collect::<String>();
    let patch = json!({"data": {"users": text(&users), "serials": text(&serials)}});
    cluster.merge_patch(&path, &patch).await.map_err(forbidden)?;
    Ok((users, serials))
}

/// Waits for the relay pod to be ready, reporting each change of phase, and
/// failing early with the pod's own reason when it is stuck.
pub async fn wait_ready(
    cluster: &Cluster,
    ns: &str,
    timeout: Duration,
    mut progress: impl FnMut(&str),
) -> Result<RelayState, KubeError> {
    let start = Instant::now();
    let mut last = String::new();
    let mut stuck_since: Option<Instant> = None;
    loop {
        let st = state(cluster, ns).await?;
        let now = match (&st.pod, st.ready, &st.problem) {
            (None, _, _) => "waiting for the relay pod to be created".to_owned(),
            (Some(p), true, _) => format!("relay pod {p} is ready"),
            (Some(p), false, Some(problem)) => format!("relay pod {p}: {problem}"),
            (Some(p), false, None) => format!("relay pod {p} is starting"),
        };
        if now != last {
            progress(&now);
            last = now;
        }
        if st.ready {
            return Ok(st);
        }
        if let Some(problem) = &st.problem {
            // Image pulls and crash loops rarely fix themselves; a few
            // seconds of grace lets a transient pull error clear.
            let since = *stuck_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(3) {
                return Err(KubeError::Other(format!(
                    "the relay pod in namespace {ns} cannot start: {problem}; check the image (--relay-image) and `kubectl -n {ns} describe pod`"
                )));
            }
        } else {
            stuck_since = None;
        }
        if start.elapsed() > timeout {
            return Err(KubeError::Other(format!(
                "the relay pod in namespace {ns} was not ready within {timeout:?} (last: {last}); see `kubectl -n {ns} describe pod`"
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> RelayParams {
        RelayParams {
            settings: RelaySettings { image: "ghcr.io/devnet/relay:0.1.0".into(), ..RelaySettings::default() },
            allow: vec!["10.244.0.0/16".parse().expect("net"), "10.96.0.0/16".parse().expect("net")],
            dns: vec!["10.96.0.10".parse().expect("ip")],
            credentials: Credentials { ca_pem: "CA".into(), cert_pem: "CERT".into(), key_pem: "KEY".into() },
        }
    }

    #[test]
    fn debug_never_shows_the_key() {
        let p = params();
        for shown in [format!("{:?}", p.credentials), format!("{p:?}")] {
            assert!(!shown.contains("KEY"), "{shown}");
            assert!(shown.contains(&ca_fingerprint("CA")), "{shown}");
        }
    }

    #[test]
    fn install_objects_are_locked_down() {
        let objs = manifests(&params());
        let kinds: Vec<&str> = objs.iter().map(|o| o["kind"].as_str().expect("kind")).collect();
        assert_eq!(
            kinds,
            ["Namespace", "ServiceAccount", "Secret", "ConfigMap", "Role", "Deployment", "Service", "NetworkPolicy"]
        );
        let deploy = &objs[5];
        let pod = &deploy["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["automountServiceAccountToken"], false, "the relay needs no API access");
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(c["resources"]["limits"]["memory"], "256Mi");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        let args: Vec<&str> = c["args"].as_array().expect("args").iter().map(|a| a.as_str().expect("str")).collect();
        assert_eq!(args.last(), Some(&"10.244.0.0/16,10.96.0.0/16"), "the relay may dial only the cluster's CIDRs");
        assert_eq!(objs[1]["automountServiceAccountToken"], false);
        let np = &objs[7]["spec"];
        assert_eq!(np["ingress"], json!([{"ports": [{"protocol": "TCP", "port": 8443}]}]));
        assert_eq!(
            np["egress"][0]["to"],
            json!([{"ipBlock": {"cidr": "10.244.0.0/16"}}, {"ipBlock": {"cidr": "10.96.0.0/16"}}])
        );
        // A real kubelet mounts Secret files root-owned: the relay reads them
        // through fsGroup and group read.
        assert_eq!(pod["securityContext"]["fsGroup"], 65532);
        assert_eq!(pod["volumes"][0]["secret"]["defaultMode"], 0o440);
        // The revocation list is a directory mount (a subPath never updates).
        assert_eq!(pod["volumes"][1]["configMap"], json!({"name": REVOKED_CONFIGMAP, "optional": true}));
        assert_eq!(objs[3]["metadata"]["name"], REVOKED_CONFIGMAP);
        assert!(objs[3].get("data").is_none(), "an upgrade never empties the revocation list: {}", objs[3]);
        // The namespace enforces the Pod Security profile the relay meets.
        assert_eq!(objs[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted");
        // Selectors too, for CNIs where ipBlock never matches pod IPs.
        assert_eq!(np["egress"][1]["to"], json!([{"namespaceSelector": {}}]));
        assert_eq!(np["egress"][2]["to"][1]["podSelector"]["matchLabels"]["k8s-app"], "kube-dns");
    }

    /// Security review R-1: every user who may connect could read the
    /// Secret that held the relay's TLS key, and pose as the relay to
    /// colleagues on the office LAN; and everyone shared one token.
    #[test]
    fn the_relay_key_is_in_a_secret_clients_may_not_read() {
        let objs = manifests(&params());
        let secrets: Vec<&Value> = objs.iter().filter(|o| o["kind"] == "Secret").collect();
        assert_eq!(secrets.len(), 1, "the relay's own Secret only: {secrets:?}");
        let tls = secrets[0];
        assert_eq!(tls["metadata"]["name"], TLS_SECRET);
        assert_eq!(tls["data"].as_object().expect("data").keys().collect::<Vec<_>>(), ["ca.crt", "tls.crt", "tls.key"]);
        assert!(!objs.iter().any(|o| o["metadata"]["name"] == CLIENT_SECRET), "no shared client Secret");
        assert!(!serde_json::to_string(&objs).expect("json").contains("token"), "no shared token anywhere");

        // The relay mounts its key and the revocation list; it enrols on
        // its loopback and serves client certificates, with no token file.
        let pod = &objs.iter().find(|o| o["kind"] == "Deployment").expect("deployment")["spec"]["template"]["spec"];
        assert_eq!(pod["volumes"][0]["secret"]["secretName"], TLS_SECRET);
        assert_eq!(pod["volumes"].as_array().expect("volumes").len(), 2);
        let args = pod["containers"][0]["args"].to_string();
        for arg in [
            "/etc/devnet-relay/tls/tls.crt",
            "/etc/devnet-relay/tls/tls.key",
            "\"--relay-ca\",\"/etc/devnet-relay/tls/ca.crt\"",
            "\"--enrol-listen\",\"127.0.0.1:8444\"",
            "\"--revoked-dir\",\"/etc/devnet-relay/revoked\"",
        ] {
            assert!(args.contains(arg), "{arg} in {args}");
        }
        assert!(!args.contains("--token-file"), "{args}");
        // Upgrades delete the Secrets older installs let users read.
        let install = install_rights("devnet");
        assert!(install.contains(&("delete", "", "secrets", Some("devnet"), Some(LEGACY_SECRET))));
        assert!(install.contains(&("delete", "", "secrets", Some("devnet"), Some(CLIENT_SECRET))));
    }

    /// Issue 11 finding 3: users need the port-forward and what finds the
    /// relay pod, never `get secrets`.
    #[test]
    fn the_user_role_grants_no_secrets_at_all() {
        let objs = manifests(&params());
        let role = objs.iter().find(|o| o["kind"] == "Role").expect("the users' Role");
        assert_eq!(role["metadata"]["name"], USER_ROLE);
        let rules = role["rules"].as_array().expect("rules");
        for r in rules {
            let resources = r["resources"].as_array().expect("resources");
            assert!(!resources.contains(&json!("secrets")), "no rule on Secrets: {r}");
            assert!(!resources.contains(&json!("configmaps")), "users cannot edit the revocation list: {r}");
            let verbs = r["verbs"].as_array().expect("verbs");
            assert!(!verbs.contains(&json!("*")) && !resources.contains(&json!("*")), "{r}");
        }
        assert_eq!(
            rules
                .iter()
                .map(|r| format!(
                    "{} {}",
                    r["verbs"][0].as_str().expect("verb"),
                    r["resources"][0].as_str().expect("resource")
                ))
                .collect::<Vec<_>>(),
            [
                "get deployments",
                "list replicasets",
                "list pods",
                "get services",
                "create pods/portforward",
                "get pods/portforward"
            ]
        );
        // What connect checks is what the Role grants; an install asks for
        // those rights too (RBAC lets no one grant more than they hold).
        let connect = connect_rights(DEFAULT_NAMESPACE);
        assert_eq!(rules.len(), connect.len());
        assert!(connect.iter().all(|r| install_rights("devnet").contains(r)));
        assert!(revoke_rights("devnet").iter().all(|r| !connect.contains(r)), "revoking is an admin's right");
    }

    /// A Deployment as the controller-manager leaves it, its current
    /// ReplicaSet (revision 2), an older one (revision 1), and pods.
    fn cluster_fixture() -> (Value, Value) {
        let deploy = json!({"metadata": {"name": NAME, "uid": "d-uid",
            "annotations": {"deployment.kubernetes.io/revision": "2"}}});
        let rs = |uid: &str, hash: &str, revision: &str| {
            json!({"metadata": {"name": format!("{NAME}-{hash}"), "uid": uid,
                "labels": {"app.kubernetes.io/name": NAME, "pod-template-hash": hash},
                "annotations": {"deployment.kubernetes.io/revision": revision},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME,
                                     "uid": "d-uid", "controller": true}]}})
        };
        (deploy, json!({"items": [rs("rs-new", "7c9f", "2"), rs("rs-old", "5b4d", "1")]}))
    }

    fn pod(name: &str, owner: Option<&str>, hash: &str, ready: bool, created: &str) -> Value {
        let owners = owner.map_or(
            json!([]),
            |uid| json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "x", "uid": uid, "controller": true}]),
        );
        json!({"metadata": {"name": name, "creationTimestamp": created, "ownerReferences": owners,
                            "labels": {"app.kubernetes.io/name": NAME, "pod-template-hash": hash}},
               "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                          "podIPs": [{"ip": "10.244.1.7"}]}})
    }

    /// Security review R-1: `relay::state` took the last pod labelled
    /// `devnet-relay`, so anyone who may create a pod in the relay's
    /// namespace became the relay for direct dials and port-forwards.
    #[test]
    fn a_stray_pod_labelled_as_the_relay_is_never_dialled() {
        let (deploy, replica_sets) = cluster_fixture();
        let name = |p: Option<&Value>| p.and_then(|p| p["metadata"]["name"].as_str()).map(str::to_owned);
        let relay = pod("devnet-relay-7c9f-abcde", Some("rs-new"), "7c9f", true, "2026-01-01T00:00:00Z");
        let strays = [
            // The label alone, listed last and newest, ready.
            pod("devnet-relay-evil", None, "7c9f", true, "2026-01-02T00:00:00Z"),
            // Owned by a ReplicaSet of the same name but not that uid.
            pod("devnet-relay-7c9f-fake1", Some("rs-forged"), "7c9f", true, "2026-01-02T00:00:00Z"),
            // The previous revision's pod, still terminating.
            pod("devnet-relay-5b4d-old", Some("rs-old"), "5b4d", true, "2026-01-02T00:00:00Z"),
            // The current ReplicaSet's uid but another template's hash.
            pod("devnet-relay-0000-fake2", Some("rs-new"), "0000", true, "2026-01-02T00:00:00Z"),
        ];
        let mut items = vec![relay.clone()];
        items.extend(strays.iter().cloned());
        assert_eq!(
            name(relay_pod(&deploy, &replica_sets, &json!({"items": items}))).as_deref(),
            Some("devnet-relay-7c9f-abcde")
        );
        // With the relay pod gone, no stray takes its place.
        assert_eq!(name(relay_pod(&deploy, &replica_sets, &json!({"items": strays}))), None);

        // A ReplicaSet someone else made, claiming the current revision but
        // not owned by the Deployment's uid, vouches for nothing.
        let mut forged = replica_sets.clone();
        forged["items"][0]["metadata"]["ownerReferences"][0]["uid"] = json!("other");
        assert_eq!(name(relay_pod(&deploy, &forged, &json!({"items": [relay.clone()]}))), None);
        // Before the controller has stamped a revision there is no pod yet.
        let mut fresh = deploy.clone();
        fresh["metadata"].as_object_mut().expect("meta").remove("annotations");
        assert_eq!(name(relay_pod(&fresh, &replica_sets, &json!({"items": [relay.clone()]}))), None);
        // Of the current ReplicaSet's pods, a ready one beats a newer one
        // that is not.
        let starting = pod("devnet-relay-7c9f-zzzzz", Some("rs-new"), "7c9f", false, "2026-01-03T00:00:00Z");
        let both = json!({"items": [relay, starting]});
        assert_eq!(name(relay_pod(&deploy, &replica_sets, &both)).as_deref(), Some("devnet-relay-7c9f-abcde"));
    }

    #[test]
    fn the_relay_is_told_every_node_address() {
        let objs = manifests(&params());
        let env = &objs[5]["spec"]["template"]["spec"]["containers"][0]["env"];
        assert_eq!(
            env,
            &json!([{"name": "DEVNET_RELAY_HOST_IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}]),
            "its own node from the downward API"
        );
        let nodes = ["10.60.20.11".parse().expect("ip"), "fd00:10::11".parse().expect("ip")];
        let objs = deny_nodes(objs, &nodes);
        let args = &objs[5]["spec"]["template"]["spec"]["containers"][0]["args"];
        let args: Vec<&str> = args.as_array().expect("args").iter().filter_map(Value::as_str).collect();
        assert_eq!(args[args.len() - 2..], ["--deny-node", "10.60.20.11,fd00:10::11"]);
        assert_eq!(deny_nodes(manifests(&params()), &[]), manifests(&params()), "no nodes known: no flag");
    }

    /// Compares `text` with the golden file `name`; `DEVNET_BLESS=1` writes
    /// it instead (then review the diff).
    fn golden(name: &str, text: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
        if std::env::var_os("DEVNET_BLESS").is_some() {
            std::fs::write(&path, text).expect("write golden");
            return;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            want == text,
            "{} differs (DEVNET_BLESS=1 rewrites it):\n--- golden\n{want}\n--- now\n{text}",
            path.display()
        );
    }

    #[test]
    fn default_install_is_golden() {
        // The defaults are what every release before the settings installed.
        golden("relay-default.yaml", &to_yaml(&manifests(&params())).expect("yaml"));
    }

    fn admin_params() -> RelayParams {
        let mut p = params();
        p.settings = RelaySettings {
            namespace: "team-net".into(),
            image: "registry.example.com/mirror/devnet-relay:0.1.0".into(),
            resources: Resources {
                requests: Quantities { cpu: "100m".into(), memory: "64Mi".into() },
                limits: Quantities { cpu: "2".into(), memory: "512Mi".into() },
            },
            node_port: false,
        };
        p.allow.push("fd00:96::/112".parse().expect("net"));
        p.dns.push("fd00:96::a".parse().expect("ip"));
        p
    }

    #[test]
    fn admin_settings_are_golden() {
        golden("relay-admin.yaml", &to_yaml(&manifests(&admin_params())).expect("yaml"));
        golden("relay-admin-gitops.yaml", &to_yaml(&without_secret(manifests(&admin_params()))).expect("yaml"));
    }

    #[test]
    fn settings_reach_every_object() {
        let objs = manifests(&admin_params());
        assert_eq!(objs[0]["metadata"]["name"], "team-net");
        for o in &objs[1..] {
            assert_eq!(o["metadata"]["namespace"], "team-net", "{}", o["kind"]);
        }
        let c = &objs[5]["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "registry.example.com/mirror/devnet-relay:0.1.0");
        assert_eq!(
            c["resources"],
            json!({"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "2", "memory": "512Mi"}})
        );
        // No node port: a ClusterIP Service; laptops use the pod IP or the
        // API server's port-forward.
        assert_eq!(objs[6]["spec"]["type"], "ClusterIP");
        assert_eq!(objs[6]["spec"]["ports"][0].get("nodePort"), None);
        assert_eq!(
            objs[7]["spec"]["egress"][2]["to"][1]["ipBlock"]["cidr"], "fd00:96::a/128",
            "an IPv6 DNS server is one address"
        );
        assert_eq!(
            path_of(&objs[5]),
            "/apis/apps/v1/namespaces/team-net/deployments/devnet-relay",
            "install applies where the settings say"
        );
        let rights = install_rights("team-net");
        assert!(rights.contains(&("patch", "apps", "deployments", Some("team-net"), None)));
    }

    /// An install with fresh credentials (replacing a stuck relay of the
    /// same version) must restart the pod: the relay reads its key and CA
    /// once, so an unchanged template would keep serving the old ones.
    #[test]
    fn fresh_credentials_change_the_pod_template() {
        let old = manifests(&params());
        let mut p = params();
        p.credentials = Credentials::generate().expect("credentials");
        let new = manifests(&p);
        let template = |objs: &[Value]| objs[5]["spec"]["template"].clone();
        assert_ne!(template(&old), template(&new));
        assert_eq!(
            template(&new)["metadata"]["annotations"][CA_ANNOTATION],
            new[5]["metadata"]["annotations"][CA_ANNOTATION]
        );
    }

    #[test]
    fn gitops_objects_hold_no_secret_and_no_ca_fingerprint() {
        let all = manifests(&params());
        assert!(all[5]["metadata"]["annotations"][CA_ANNOTATION].is_string());
        let objs = without_secret(all.clone());
        let kinds: Vec<&str> = objs.iter().map(|o| o["kind"].as_str().expect("kind")).collect();
        assert_eq!(
            kinds,
            ["Namespace", "ServiceAccount", "ConfigMap", "Role", "Deployment", "Service", "NetworkPolicy"]
        );
        assert_eq!(objs[4]["metadata"].get("annotations"), None, "no annotation left empty");
        assert_eq!(objs[4]["spec"]["template"]["metadata"].get("annotations"), None, "nor on the pod");
        // Nothing else changes: the pod still mounts the Secret by name.
        let mut rest = all;
        rest.remove(2);
        rest[4]["metadata"].as_object_mut().expect("meta").remove("annotations");
        rest[4]["spec"]["template"]["metadata"].as_object_mut().expect("meta").remove("annotations");
        assert_eq!(objs, rest);
        let text = to_yaml(&objs).expect("yaml");
        assert!(!text.contains("tls.key:") && !text.contains("kind: Secret"), "{text}");
    }

    #[test]
    fn yaml_reads_back_as_the_same_objects() {
        for objs in [manifests(&params()), manifests(&admin_params())] {
            let text = to_yaml(&objs).expect("yaml");
            let back: Vec<Value> = serde_saphyr::from_multiple(&text).expect("parse");
            assert_eq!(back, objs, "{text}");
            // Strings that look like numbers stay strings for every reader.
            let cpu = objs[5]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"].clone();
            assert!(text.contains(&format!("cpu: {cpu}")), "{cpu} unquoted in:\n{text}");
            assert!(text.contains("devnet.dev/protocol: \"1\""), "{text}");
            assert!(text.starts_with("apiVersion: v1\nkind: Namespace\nmetadata:\n"), "{text}");
        }
    }

    #[test]
    fn bad_settings_are_refused_with_the_fix() {
        let ok = RelaySettings::default();
        assert_eq!(ok.check(), Ok(()));
        for (settings, says) in [
            (RelaySettings { namespace: "Team_Net".into(), ..ok.clone() }, "is not a namespace name"),
            (RelaySettings { namespace: "-x".into(), ..ok.clone() }, "is not a namespace name"),
            (RelaySettings { namespace: "x".repeat(64), ..ok.clone() }, "is not a namespace name"),
            (RelaySettings { image: " ".into(), ..ok.clone() }, "is not an image reference"),
            (
                RelaySettings {
                    resources: Resources {
                        limits: Quantities { cpu: "1".into(), memory: "lots".into() },
                        ..Resources::default()
                    },
                    ..ok.clone()
                },
                "the memory limit \"lots\" is not a Kubernetes quantity",
            ),
        ] {
            let err = settings.check().expect_err("refused").to_string();
            assert!(err.contains(says), "{err}");
        }
        for q in ["50m", "1", "0.5", "32Mi", "1Gi", "100k", "2.5G"] {
            assert!(is_quantity(q), "{q}");
        }
        for q in ["", "m", "1.", ".5", "1.2.3", "32mi", "1e3", "-1", "1 Gi", "Mi"] {
            assert!(!is_quantity(q), "{q}");
        }
    }

    #[test]
    fn allowed_cidrs_must_be_cluster_sized() {
        let nets = |list: &[&str]| list.iter().map(|n| n.parse().expect("net")).collect::<Vec<IpNet>>();
        assert_eq!(check_allow(&nets(&["10.244.0.0/16", "10.96.0.0/12", "fd00:96::/112", "10.0.0.0/8"])), Ok(()));
        assert!(check_allow(&[]).expect_err("empty").to_string().contains("may dial nothing"));
        for (net, says) in [
            ("0.0.0.0/0", "0.0.0.0/0 is a default route"),
            ("::/0", "::/0 is a default route"),
            ("10.0.0.0/7", "far wider than any cluster network"),
            ("fd00::/8", "far wider than any cluster network"),
            ("127.0.0.0/8", "127.0.0.0/8 is loopback"),
        ] {
            let err = check_allow(&nets(&["10.244.0.0/16", net])).expect_err(net).to_string();
            assert!(err.contains(says), "{net}: {err}");
        }
    }

    #[test]
    fn paths_are_the_rest_paths() {
        let objs = manifests(&params());
        let paths: Vec<String> = objs.iter().map(path_of).collect();
        assert_eq!(
            paths,
            [
                "/api/v1/namespaces/devnet",
                "/api/v1/namespaces/devnet/serviceaccounts/devnet-relay",
                "/api/v1/namespaces/devnet/secrets/devnet-relay-tls",
                "/api/v1/namespaces/devnet/configmaps/devnet-relay-revoked",
                "/apis/rbac.authorization.k8s.io/v1/namespaces/devnet/roles/devnet-user",
                "/apis/apps/v1/namespaces/devnet/deployments/devnet-relay",
                "/api/v1/namespaces/devnet/services/devnet-relay",
                "/apis/networking.k8s.io/v1/namespaces/devnet/networkpolicies/devnet-relay",
            ]
        );
    }

    #[test]
    fn version_advice_says_what_to_run() {
        let mut st = state_with(Some("0.0.9"));
        assert!(st.version_advice().expect("advice").contains("run `devnet relay install` to upgrade it"));
        st.version = Some("9.0.0".into());
        assert!(st.version_advice().expect("advice").contains("upgrade devnet on this machine"));
        st.version = Some(VERSION.into());
        assert_eq!(st.version_advice(), None);
    }

    fn state_with(version: Option<&str>) -> RelayState {
        RelayState {
            namespace: DEFAULT_NAMESPACE.into(),
            installed: true,
            version: version.map(str::to_owned),
            protocol: None,
            ready: true,
            pod: None,
            pod_ips: vec![],
            host_ip: None,
            node_port: None,
            ca_sha256: None,
            problem: None,
            instance: None,
        }
    }

    #[test]
    fn stuck_pods_are_explained_in_their_own_words() {
        let pod = json!({"status": {"phase": "Pending", "containerStatuses": [{"state": {"waiting": {
            "reason": "ImagePullBackOff", "message": "Back-off pulling image \"x\""}}}]}});
        assert_eq!(pod_problem(&pod).as_deref(), Some("ImagePullBackOff: Back-off pulling image \"x\""));
        let pending = json!({"status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient memory."}]}});
        assert!(pod_problem(&pending).expect("problem").contains("Insufficient memory"));
        let creating =
            json!({"status": {"containerStatuses": [{"state": {"waiting": {"reason": "ContainerCreating"}}}]}});
        assert_eq!(pod_problem(&creating), None);
    }
}

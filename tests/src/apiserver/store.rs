//! The stand-in's object store: what etcd and the registry do for the real
//! server, for the resource types devnet reads and writes.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::Query;

/// Where the NodePort allocator starts (the lab's node1 forwards 31443 to
/// the relay pod, as kube-proxy would for the port allocated here).
pub const NODE_PORT_BASE: u64 = 31443;

/// A served resource type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
}

const fn k(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
) -> Kind {
    Kind { group, version, plural, kind, namespaced }
}

/// Every type the stand-in knows. ServiceCIDR is served only when
/// configured (Kubernetes 1.33+); the Calico types only when the manifests
/// hold objects of that API (its CRDs or API server are installed).
const KINDS: &[Kind] = &[
    k("", "v1", "namespaces", "Namespace", false),
    k("", "v1", "nodes", "Node", false),
    k("", "v1", "pods", "Pod", true),
    k("", "v1", "services", "Service", true),
    k("", "v1", "configmaps", "ConfigMap", true),
    k("", "v1", "secrets", "Secret", true),
    k("", "v1", "serviceaccounts", "ServiceAccount", true),
    k("apps", "v1", "deployments", "Deployment", true),
    k("apps", "v1", "replicasets", "ReplicaSet", true),
    k("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", true),
    k("networking.k8s.io", "v1", "servicecidrs", "ServiceCIDR", false),
    k("rbac.authorization.k8s.io", "v1", "roles", "Role", true),
    k("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", true),
    k("crd.projectcalico.org", "v1", "ippools", "IPPool", false),
    k("projectcalico.org", "v3", "ippools", "IPPool", false),
];

/// Why a write failed; worded by the caller as the real server words it.
#[derive(Debug)]
pub enum StoreError {
    NotFound(String),
    NamespaceNotFound(String),
    AlreadyExists(String),
    Conflict(String),
    Invalid { kind: String, name: String, message: String },
    BadRequest(String),
    MethodNotAllowed,
    UnknownResource,
}

/// A change, for watchers.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: &'static str,
    pub group: &'static str,
    pub plural: &'static str,
    pub object: Value,
}

type Key = (&'static str, &'static str, String, String); // group, plural, namespace, name

#[derive(Debug)]
pub struct Store {
    objects: BTreeMap<Key, Value>,
    served: Vec<Kind>,
    revision: u64,
    events: broadcast::Sender<Event>,
}

impl Store {
    pub fn new(servicecidr_api: bool) -> Self {
        let served = KINDS
            .iter()
            .filter(|k| servicecidr_api || k.plural != "servicecidrs")
            .filter(|k| !k.group.contains("projectcalico"))
            .cloned()
            .collect();
        let mut store = Store { objects: BTreeMap::new(), served, revision: 1000, events: broadcast::channel(1024).0 };
        for ns in ["default", "kube-system", "kube-public"] {
            let kind = store.kind("", "v1", "namespaces").expect("namespaces");
            let _ = store.create(
                &kind,
                None,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                false,
                &[],
            );
        }
        store
    }

    /// Loads every `*.yaml` in `dir` (multi-document), in name order.
    pub fn load_dir(&mut self, dir: &Path) -> anyhow::Result<()> {
        let mut files: Vec<_> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file)?;
            let docs: Vec<Value> =
                serde_saphyr::from_multiple(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            for doc in docs.into_iter().filter(|d| d.is_object()) {
                self.load(doc).map_err(|e| anyhow::anyhow!("{}: {e:?}", file.display()))?;
            }
        }
        Ok(())
    }

    fn load(&mut self, obj: Value) -> Result<(), StoreError> {
        let api = obj["apiVersion"].as_str().unwrap_or_default().to_owned();
        let (group, version) = api.rsplit_once('/').unwrap_or(("", &api));
        let kind_name = obj["kind"].as_str().unwrap_or_default();
        let kind = KINDS
            .iter()
            .find(|k| k.group == group && k.version == version && k.kind == kind_name)
            .cloned()
            .ok_or_else(|| StoreError::BadRequest(format!("unknown type {api} {kind_name}")))?;
        if !self.served.contains(&kind) {
            self.served.push(kind.clone());
        }
        let ns = kind.namespaced.then(|| obj["metadata"]["namespace"].as_str().unwrap_or("default").to_owned());
        if let Some(ns) = &ns {
            self.ensure_namespace(ns);
        }
        self.create(&kind, ns.as_deref(), obj, false, &[]).map(|_| ())
    }

    fn ensure_namespace(&mut self, ns: &str) {
        let key: Key = ("", "namespaces", String::new(), ns.to_owned());
        if !self.objects.contains_key(&key) {
            let kind = KINDS[0].clone();
            let _ = self.create(
                &kind,
                None,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                false,
                &[],
            );
        }
    }

    pub fn kind(&self, group: &str, version: &str, plural: &str) -> Option<Kind> {
        self.served.iter().find(|k| k.group == group && k.version == version && k.plural == plural).cloned()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn key(kind: &Kind, ns: Option<&str>, name: &str) -> Key {
        (
            kind.group,
            kind.plural,
            if kind.namespaced { ns.unwrap_or("default").to_owned() } else { String::new() },
            name.to_owned(),
        )
    }

    /// What the server sets on a new object: a unique uid and a creation time.
    fn stamp_new(&self, obj: &mut Value) {
        obj["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", self.revision + 1));
        obj["metadata"]["creationTimestamp"] = json!("2026-11-25T00:00:00Z");
    }

    fn bump(&mut self, obj: &mut Value) {
        self.revision += 1;
        obj["metadata"]["resourceVersion"] = json!(self.revision.to_string());
    }

    fn emit(&self, kind: &Kind, ev: &'static str, object: &Value) {
        let _ = self.events.send(Event { kind: ev, group: kind.group, plural: kind.plural, object: object.clone() });
    }

    pub fn get(&self, kind: &Kind, ns: Option<&str>, name: &str) -> Result<Value, StoreError> {
        self.objects.get(&Self::key(kind, ns, name)).cloned().ok_or_else(|| StoreError::NotFound(name.to_owned()))
    }

    /// Objects of `kind` in `ns` (all namespaces when `None`), filtered by the
    /// query's `labelSelector` and `fieldSelector`, as a `…List`.
    pub fn list(&self, kind: &Kind, ns: Option<&str>, query: &Query) -> Value {
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|((g, p, n, _), _)| *g == kind.group && *p == kind.plural && ns.is_none_or(|ns| n == ns))
            .map(|(_, v)| v.clone())
            .filter(|o| selected(o, query))
            .collect();
        let api =
            if kind.group.is_empty() { kind.version.to_owned() } else { format!("{}/{}", kind.group, kind.version) };
        json!({"kind": format!("{}List", kind.kind), "apiVersion": api,
               "metadata": {"resourceVersion": self.revision.to_string()}, "items": items})
    }

    /// Creates an object. Returns it and `true` (created).
    pub fn create(
        &mut self,
        kind: &Kind,
        ns: Option<&str>,
        mut obj: Value,
        dry_run: bool,
        service_ranges: &[IpNet],
    ) -> Result<(Value, bool), StoreError> {
        let name = match obj["metadata"]["name"].as_str() {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => match obj["metadata"]["generateName"].as_str() {
                Some(prefix) => format!("{prefix}{:05x}", self.revision % 0xfffff),
                None => {
                    return Err(StoreError::Invalid {
                        kind: kind.kind.to_owned(),
                        name: String::new(),
                        message: "metadata.name: Required value: name or generateName is required".into(),
                    });
                }
            },
        };
        if kind.namespaced {
            let ns = ns.or(obj["metadata"]["namespace"].as_str()).unwrap_or("default").to_owned();
            if !self.objects.contains_key(&("", "namespaces", String::new(), ns.clone())) {
                return Err(StoreError::NamespaceNotFound(ns));
            }
            obj["metadata"]["namespace"] = json!(ns);
        }
        let key = Self::key(kind, obj["metadata"]["namespace"].as_str(), &name);
        if self.objects.contains_key(&key) {
            return Err(StoreError::AlreadyExists(name));
        }
        if kind.kind == "Service" && !service_ranges.is_empty() {
            check_cluster_ip(&obj, &name, service_ranges)?;
        }
        if kind.kind == "Service" && !dry_run {
            self.allocate_node_ports(&mut obj, None);
        }
        obj["metadata"]["name"] = json!(name);
        self.stamp_new(&mut obj);
        if kind.kind == "Deployment" {
            obj["metadata"]["generation"] = json!(1);
        }
        if dry_run {
            return Ok((obj, true));
        }
        self.bump(&mut obj);
        self.objects.insert(key, obj.clone());
        self.emit(kind, "ADDED", &obj);
        Ok((obj, true))
    }

    /// Replaces an object (PUT), checking `resourceVersion` when given.
    pub fn update(
        &mut self,
        kind: &Kind,
        ns: Option<&str>,
        name: &str,
        mut obj: Value,
        dry_run: bool,
    ) -> Result<(Value, bool), StoreError> {
        let key = Self::key(kind, ns, name);
        let old = self.objects.get(&key).ok_or_else(|| StoreError::NotFound(name.to_owned()))?;
        if let Some(rv) = obj["metadata"]["resourceVersion"].as_str()
            && Some(rv) != old["metadata"]["resourceVersion"].as_str()
        {
            return Err(StoreError::Conflict(name.to_owned()));
        }
        for keep in ["uid", "creationTimestamp", "namespace", "name"] {
            obj["metadata"][keep] = old["metadata"][keep].clone();
        }
        self.store_changed(kind, key, old.clone(), obj, dry_run)
    }

    /// A JSON merge patch, or a server-side apply (create when absent).
    pub fn patch(
        &mut self,
        kind: &Kind,
        ns: Option<&str>,
        name: &str,
        patch: Value,
        apply: bool,
        dry_run: bool,
    ) -> Result<(Value, bool), StoreError> {
        let key = Self::key(kind, ns, name);
        let Some(old) = self.objects.get(&key).cloned() else {
            if apply {
                return self.create(kind, ns, patch, dry_run, &[]);
            }
            return Err(StoreError::NotFound(name.to_owned()));
        };
        let mut obj = old.clone();
        merge(&mut obj, &patch);
        self.store_changed(kind, key, old, obj, dry_run)
    }

    /// The NodePort allocator: a `NodePort` Service's ports without a
    /// `nodePort` get the lowest free one from [`NODE_PORT_BASE`]; on update
    /// a port keeps the one it had (as server-side apply keeps fields the
    /// client does not own).
    fn allocate_node_ports(&mut self, svc: &mut Value, old: Option<&Value>) {
        if svc["spec"]["type"] != "NodePort" {
            return;
        }
        let mut taken: Vec<u64> = self
            .objects
            .values()
            .filter(|o| o["kind"] == "Service")
            .flat_map(|o| o["spec"]["ports"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p["nodePort"].as_u64())
            .collect();
        let Some(ports) = svc["spec"]["ports"].as_array_mut() else { return };
        for port in ports.iter_mut().filter(|p| p["nodePort"].is_null()) {
            let kept = old
                .and_then(|o| o["spec"]["ports"].as_array())
                .and_then(|ps| ps.iter().find(|p| p["port"] == port["port"]))
                .and_then(|p| p["nodePort"].as_u64());
            let chosen =
                kept.unwrap_or_else(|| (NODE_PORT_BASE..).find(|n| !taken.contains(n)).unwrap_or(NODE_PORT_BASE));
            taken.push(chosen);
            port["nodePort"] = json!(chosen);
        }
    }

    fn store_changed(
        &mut self,
        kind: &Kind,
        key: Key,
        old: Value,
        mut obj: Value,
        dry_run: bool,
    ) -> Result<(Value, bool), StoreError> {
        if kind.kind == "Service" {
            self.allocate_node_ports(&mut obj, Some(&old));
        }
        if kind.kind == "Deployment" && old["spec"] != obj["spec"] {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            obj["metadata"]["generation"] = json!(generation);
        }
        if dry_run || old == obj {
            return Ok((if dry_run { obj } else { old }, false));
        }
        self.bump(&mut obj);
        self.objects.insert(key, obj.clone());
        self.emit(kind, "MODIFIED", &obj);
        Ok((obj, false))
    }

    /// Deletes an object; a Namespace takes everything in it along.
    pub fn delete(&mut self, kind: &Kind, ns: Option<&str>, name: &str) -> Result<Vec<Value>, StoreError> {
        let key = Self::key(kind, ns, name);
        let obj = self.objects.remove(&key).ok_or_else(|| StoreError::NotFound(name.to_owned()))?;
        self.emit(kind, "DELETED", &obj);
        let mut removed = vec![obj];
        if kind.kind == "Namespace" {
            let inside: Vec<Key> = self.objects.keys().filter(|(_, _, n, _)| n == name).cloned().collect();
            for key in inside {
                if let Some(o) = self.objects.remove(&key) {
                    if let Some(k) = KINDS.iter().find(|k| k.group == key.0 && k.plural == key.1) {
                        self.emit(k, "DELETED", &o);
                    }
                    removed.push(o);
                }
            }
        }
        Ok(removed)
    }

    /// Writes an object's status as the controllers would (no RBAC, no event
    /// for unchanged objects).
    pub fn put_internal(&mut self, kind: &Kind, obj: Value) {
        let ns = obj["metadata"]["namespace"].as_str().map(str::to_owned);
        let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let key = Self::key(kind, ns.as_deref(), &name);
        let existed = self.objects.contains_key(&key);
        let mut obj = obj;
        if !existed {
            self.stamp_new(&mut obj);
        }
        self.bump(&mut obj);
        self.objects.insert(key, obj.clone());
        self.emit(kind, if existed { "MODIFIED" } else { "ADDED" }, &obj);
    }

    pub fn all_of(&self, kind: &Kind) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((g, p, _, _), _)| *g == kind.group && *p == kind.plural)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

pub fn kind_named(kind: &str) -> Kind {
    KINDS.iter().find(|k| k.kind == kind && !k.group.contains("projectcalico")).cloned().expect("known kind")
}

/// The ClusterIP allocator's check, worded as the real one.
fn check_cluster_ip(svc: &Value, name: &str, ranges: &[IpNet]) -> Result<(), StoreError> {
    let Some(ip) = svc["spec"]["clusterIP"].as_str().filter(|ip| !ip.is_empty() && *ip != "None") else {
        return Ok(());
    };
    let invalid = |message: String| StoreError::Invalid { kind: "Service".into(), name: name.to_owned(), message };
    let addr: IpAddr = ip
        .parse()
        .map_err(|_| invalid(format!("spec.clusterIPs[0]: Invalid value: \"{ip}\": must be a valid IP address")))?;
    let family: Vec<&IpNet> = ranges.iter().filter(|r| r.addr().is_ipv4() == addr.is_ipv4()).collect();
    if family.is_empty() {
        let fam = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
        return Err(invalid(format!("spec.ipFamilies[0]: Invalid value: \"{fam}\": not configured on this cluster")));
    }
    if !family.iter().any(|r| r.contains(&addr)) {
        let range = family.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(",");
        return Err(invalid(format!(
            "spec.clusterIPs[0]: Invalid value: \"{ip}\": failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {range}"
        )));
    }
    Ok(())
}

/// RFC 7386 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

fn selected(obj: &Value, query: &Query) -> bool {
    let labels_ok = query.get("labelSelector").is_none_or(|sel| {
        sel.split(',').filter(|s| !s.is_empty()).all(|term| match term.split_once('=') {
            Some((k, v)) => obj["metadata"]["labels"][k.trim_end_matches('=')].as_str() == Some(v),
            None => obj["metadata"]["labels"].get(term).is_some(),
        })
    });
    let fields_ok = query.get("fieldSelector").is_none_or(|sel| {
        sel.split(',').filter(|s| !s.is_empty()).all(|term| match term.split_once('=') {
            Some(("metadata.name", v)) => obj["metadata"]["name"].as_str() == Some(v.trim_start_matches('=')),
            Some(("metadata.namespace", v)) => obj["metadata"]["namespace"].as_str() == Some(v.trim_start_matches('=')),
            _ => true,
        })
    });
    labels_ok && fields_ok
}

pub fn matches_watch(ev: &Event, kind: &Kind, ns: Option<&str>, query: &Query) -> bool {
    ev.group == kind.group
        && ev.plural == kind.plural
        && ns.is_none_or(|ns| ev.object["metadata"]["namespace"].as_str() == Some(ns))
        && selected(&ev.object, query)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ports_are_allocated_and_kept_across_apply() {
        let mut store = Store::new(false);
        let kind = kind_named("Service");
        let svc = |name: &str| {
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                                      "spec": {"type": "NodePort", "ports": [{"port": 8443}]}})
        };
        let (a, _) = store.create(&kind, Some("default"), svc("a"), false, &[]).expect("a");
        let (b, _) = store.create(&kind, Some("default"), svc("b"), false, &[]).expect("b");
        assert_eq!(a["spec"]["ports"][0]["nodePort"], 31443);
        assert_eq!(b["spec"]["ports"][0]["nodePort"], 31444, "the next free port");
        let (again, _) = store.patch(&kind, Some("default"), "a", svc("a"), true, false).expect("apply");
        assert_eq!(again["spec"]["ports"][0]["nodePort"], 31443, "re-applying keeps the allocated port");
        assert_eq!(again["metadata"]["resourceVersion"], a["metadata"]["resourceVersion"], "and changes nothing");
    }

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn out_of_range_cluster_ip_is_refused_with_the_real_wording() {
        let ranges: Vec<IpNet> = vec!["10.96.0.0/16".parse().expect("net")];
        let svc = json!({"spec": {"clusterIP": "1.1.1.1"}});
        let Err(StoreError::Invalid { message, .. }) = check_cluster_ip(&svc, "p", &ranges) else { panic!("refused") };
        assert!(message.ends_with("The range of valid IPs is 10.96.0.0/16"), "{message}");
        let svc6 = json!({"spec": {"clusterIP": "2001:db8::1"}});
        let Err(StoreError::Invalid { message, .. }) = check_cluster_ip(&svc6, "p", &ranges) else { panic!("refused") };
        assert!(message.contains("not configured on this cluster"), "{message}");
    }
}

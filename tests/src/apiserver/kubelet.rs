//! The stand-in's controllers and kubelet, cut down to what devnet's relay
//! needs: a Deployment gets a ReplicaSet per pod template, as the real
//! controller-manager makes them (named and labelled with the template's
//! `pod-template-hash`, owned by the Deployment's uid, the revision
//! annotation on both, the older ones kept at zero replicas), and the
//! current one gets one Pod, owned by its uid; the Pod runs as a real process in a lab
//! network namespace (the pod's IP lives there), with its Secret volumes
//! written to files as a real kubelet writes them (root-owned, `defaultMode`,
//! group `fsGroup`), its `runAsUser`, `runAsGroup` and `fsGroup` honoured
//! (`setpriv`), and its status
//! (Pending with the image-pull reason, Running, Ready once the readiness
//! probe's port answers, CrashLoopBackOff) written back as the real kubelet
//! would.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use sha2::Digest;
use tokio::process::Child;
use tokio::sync::Mutex;

use super::Server;
use super::store::{Kind, kind_named};

/// Where pods run.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// The network namespace the pod's process runs in.
    pub netns: String,
    pub pod_ips: Vec<IpAddr>,
    pub node: String,
    pub host_ip: IpAddr,
    /// Image name prefix → the binary that image runs.
    pub images: Vec<(String, PathBuf)>,
    /// Where Secret volumes and pod logs are written.
    pub work_dir: PathBuf,
}

#[derive(Debug)]
pub struct Kubelet {
    runtime: Option<Runtime>,
    running: Mutex<HashMap<String, Child>>,
}

impl Kubelet {
    /// The network namespace pods run in (`None` without a runtime).
    pub fn netns(&self) -> Option<String> {
        self.runtime.as_ref().map(|rt| rt.netns.clone())
    }

    pub fn new(runtime: Option<Runtime>) -> Self {
        Kubelet { runtime, running: Mutex::new(HashMap::new()) }
    }

    async fn kill(&self, pod: &str) {
        if let Some(mut child) = self.running.lock().await.remove(pod) {
            if let Some(pid) = child.id() {
                // SIGTERM first, as the kubelet does, then SIGKILL after a grace period.
                let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
            }
            if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
    }
}

/// Called after every successful write.
pub async fn after_write(server: &Arc<Server>, kind: &Kind, obj: &Value) {
    if kind.kind == "Deployment" {
        reconcile_deployment(server, obj).await;
    }
}

/// Called for every object a delete removed.
pub async fn after_delete(server: &Arc<Server>, obj: &Value) {
    match obj["kind"].as_str() {
        Some("Deployment") => {
            // The garbage collector: the ReplicaSets go, and their pods.
            for rs in owned(server, "ReplicaSet", obj).await {
                for pod in owned(server, "Pod", &rs).await {
                    delete_pod(server, &pod).await;
                }
                let ns = rs["metadata"]["namespace"].as_str().map(str::to_owned);
                let name = rs["metadata"]["name"].as_str().unwrap_or_default();
                let _ = server.store.lock().await.delete(&kind_named("ReplicaSet"), ns.as_deref(), name);
            }
        }
        Some("Pod") => server.kubelet.kill(obj["metadata"]["name"].as_str().unwrap_or_default()).await,
        _ => {}
    }
}

const REVISION: &str = "deployment.kubernetes.io/revision";

/// The objects of `kind` whose controller is `owner` (by uid, as the
/// garbage collector and the controllers match them).
async fn owned(server: &Arc<Server>, kind: &str, owner: &Value) -> Vec<Value> {
    let uid = &owner["metadata"]["uid"];
    let store = server.store.lock().await;
    store
        .all_of(&kind_named(kind))
        .into_iter()
        .filter(|o| {
            o["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r["controller"] == true && r["uid"] == *uid)
        })
        .collect()
}

async fn delete_pod(server: &Arc<Server>, pod: &Value) {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    server.kubelet.kill(&name).await;
    let ns = pod["metadata"]["namespace"].as_str().map(str::to_owned);
    let _ = server.store.lock().await.delete(&kind_named("Pod"), ns.as_deref(), &name);
}

fn owner_ref(kind: &str, owner: &Value) -> Value {
    json!([{"apiVersion": "apps/v1", "kind": kind, "controller": true, "blockOwnerDeletion": true,
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"]}])
}

async fn reconcile_deployment(server: &Arc<Server>, deploy: &Value) {
    let template = &deploy["spec"]["template"];
    let hash = hex8(&serde_json::to_vec(template).unwrap_or_default());
    let deploy_name = deploy["metadata"]["name"].as_str().unwrap_or("deploy").to_owned();
    let rs_name = format!("{deploy_name}-{hash}");
    let ns = deploy["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
    let rs_kind = kind_named("ReplicaSet");
    let sets = owned(server, "ReplicaSet", deploy).await;
    let revision_of = |rs: &Value| rs["metadata"]["annotations"][REVISION].as_str().and_then(|r| r.parse::<u64>().ok());
    let current = match sets.iter().find(|rs| rs["metadata"]["name"] == rs_name.as_str()) {
        Some(rs) => rs.clone(),
        None => {
            // A new template: a new ReplicaSet at the next revision; the old
            // ones are scaled to zero (their pods go: one replica, strategy
            // Recreate) and kept, as revision history.
            let revision = sets.iter().filter_map(revision_of).max().unwrap_or(0) + 1;
            for old in &sets {
                for pod in owned(server, "Pod", old).await {
                    delete_pod(server, &pod).await;
                }
                let mut old = old.clone();
                old["spec"]["replicas"] = json!(0);
                old["status"] = json!({"replicas": 0});
                server.store.lock().await.put_internal(&rs_kind, old);
            }
            let mut labels = template["metadata"]["labels"].clone();
            labels["pod-template-hash"] = json!(hash);
            let rs = json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": rs_name, "namespace": ns, "labels": labels,
                             "annotations": {REVISION: revision.to_string()},
                             "ownerReferences": owner_ref("Deployment", deploy)},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"pod-template-hash": hash}},
                         "template": {"metadata": {"labels": labels}, "spec": template["spec"]}},
            });
            let mut store = server.store.lock().await;
            store.put_internal(&rs_kind, rs);
            store.get(&rs_kind, Some(&ns), &rs_name).expect("just written")
        }
    };
    // The Deployment carries its current revision (a write may have
    // replaced its annotations).
    {
        let mut store = server.store.lock().await;
        let kind = kind_named("Deployment");
        if let Ok(mut now) = store.get(&kind, Some(&ns), &deploy_name)
            && now["metadata"]["uid"] == deploy["metadata"]["uid"]
            && now["metadata"]["annotations"][REVISION] != current["metadata"]["annotations"][REVISION]
        {
            now["metadata"]["annotations"][REVISION] = current["metadata"]["annotations"][REVISION].clone();
            store.put_internal(&kind, now);
        }
    }
    if !owned(server, "Pod", &current).await.is_empty() {
        return;
    }
    let suffix = hex8(current["metadata"]["uid"].to_string().as_bytes());
    let labels = current["metadata"]["labels"].clone();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("{rs_name}-{}", &suffix[..5]), "namespace": ns,
            "labels": labels,
            "ownerReferences": owner_ref("ReplicaSet", &current),
        },
        "spec": template["spec"],
        "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}],
                   "containerStatuses": [{"name": template["spec"]["containers"][0]["name"], "ready": false,
                                          "state": {"waiting": {"reason": "ContainerCreating"}}}]},
    });
    server.store.lock().await.put_internal(&kind_named("Pod"), pod.clone());
    let server = server.clone();
    let deploy = deploy.clone();
    tokio::spawn(async move { run_pod(server, deploy, pod).await });
}

fn hex8(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes).iter().take(5).map(|b| format!("{b:02x}")).collect::<String>()[..8].to_owned()
}

async fn set_status(server: &Arc<Server>, pod: &Value, status: Value) -> Value {
    let mut store = server.store.lock().await;
    let kind = kind_named("Pod");
    let ns = pod["metadata"]["namespace"].as_str().map(str::to_owned);
    let Ok(mut current) = store.get(&kind, ns.as_deref(), pod["metadata"]["name"].as_str().unwrap_or_default()) else {
        return pod.clone(); // deleted meanwhile
    };
    current["status"] = status;
    store.put_internal(&kind, current.clone());
    current
}

async fn set_deployment_ready(server: &Arc<Server>, deploy: &Value, ready: u64) {
    let mut store = server.store.lock().await;
    let kind = kind_named("Deployment");
    let ns = deploy["metadata"]["namespace"].as_str().map(str::to_owned);
    let Ok(mut current) = store.get(&kind, ns.as_deref(), deploy["metadata"]["name"].as_str().unwrap_or_default())
    else {
        return;
    };
    if current["metadata"]["uid"] != deploy["metadata"]["uid"] {
        return;
    }
    current["status"] = json!({
        "observedGeneration": current["metadata"]["generation"], "replicas": 1, "updatedReplicas": 1,
        "readyReplicas": ready, "availableReplicas": ready,
        "conditions": [{"type": "Available", "status": if ready > 0 { "True" } else { "False" }}],
    });
    store.put_internal(&kind, current);
}

fn waiting(container: &str, reason: &str, message: &str) -> Value {
    json!({"phase": "Pending",
           "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}],
           "containerStatuses": [{"name": container, "ready": false, "restartCount": 0,
                                  "state": {"waiting": {"reason": reason, "message": message}}}]})
}

async fn run_pod(server: Arc<Server>, deploy: Value, pod: Value) {
    let spec = &pod["spec"];
    let container = &spec["containers"][0];
    let cname = container["name"].as_str().unwrap_or("main").to_owned();
    let Some(rt) = server.kubelet.runtime.clone() else {
        let status = json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }."}]});
        set_status(&server, &pod, status).await;
        return;
    };
    let image = container["image"].as_str().unwrap_or_default().to_owned();
    let Some(binary) = rt.images.iter().find(|(prefix, _)| image.starts_with(prefix.as_str())).map(|(_, b)| b.clone())
    else {
        let message =
            format!("failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": not found");
        set_status(&server, &pod, waiting(&cname, "ErrImagePull", &message)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let message = format!("Back-off pulling image \"{image}\"");
        set_status(&server, &pod, waiting(&cname, "ImagePullBackOff", &message)).await;
        return;
    };
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
    let run_as = spec["securityContext"]["runAsUser"].as_u64().or(container["securityContext"]["runAsUser"].as_u64());
    let run_as_group =
        container["securityContext"]["runAsGroup"].as_u64().or(spec["securityContext"]["runAsGroup"].as_u64());
    let fs_group = spec["securityContext"]["fsGroup"].as_u64();

    // Volumes: each Secret volume becomes a folder of files.
    let pod_dir = rt.work_dir.join(&pod_name);
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    for vol in spec["volumes"].as_array().into_iter().flatten() {
        let vname = vol["name"].as_str().unwrap_or_default();
        if let Some(cm) = vol["configMap"]["name"].as_str() {
            // As the real kubelet: the ConfigMap's keys as files, kept
            // current while the pod runs (the real one syncs within about a
            // minute; here within a second), absent and optional: empty.
            let dir = pod_dir.join(vname);
            let _ = std::fs::create_dir_all(&dir);
            sync_configmap_volume(&server, &ns, cm, &dir).await;
            tokio::spawn(keep_configmap_volume(
                server.clone(),
                ns.clone(),
                cm.to_owned(),
                dir.clone(),
                pod_name.clone(),
            ));
            for m in container["volumeMounts"].as_array().into_iter().flatten() {
                if m["name"] == vname
                    && let Some(path) = m["mountPath"].as_str()
                {
                    mounts.push((path.trim_end_matches('/').to_owned(), dir.clone()));
                }
            }
            continue;
        }
        let Some(secret) = vol["secret"]["secretName"].as_str() else { continue };
        let dir = pod_dir.join(vname);
        let data = {
            let store = server.store.lock().await;
            store.get(&kind_named("Secret"), Some(&ns), secret).map(|s| s["data"].clone())
        };
        let Ok(data) = data else {
            let message = format!("MountVolume.SetUp failed for volume \"{vname}\" : secret \"{secret}\" not found");
            set_status(&server, &pod, waiting(&cname, "ContainerCreating", &message)).await;
            return;
        };
        let mode = vol["secret"]["defaultMode"].as_u64().and_then(|m| u32::try_from(m).ok()).unwrap_or(0o644);
        if let Err(e) = write_secret_volume(&dir, &data, mode, fs_group) {
            set_status(&server, &pod, waiting(&cname, "CreateContainerError", &e.to_string())).await;
            return;
        }
        for m in container["volumeMounts"].as_array().into_iter().flatten() {
            if m["name"] == vname
                && let Some(path) = m["mountPath"].as_str()
            {
                mounts.push((path.trim_end_matches('/').to_owned(), dir.clone()));
            }
        }
    }
    let args: Vec<String> = container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|a| {
            let mut a = a.to_owned();
            for (path, dir) in &mounts {
                a = a.replace(path.as_str(), &dir.display().to_string());
            }
            a
        })
        .collect();

    let mut cmd = tokio::process::Command::new("ip");
    cmd.args(["netns", "exec", &rt.netns]);
    if let Some(uid) = run_as {
        // As the runtime does: the primary group, and fsGroup as a
        // supplementary group.
        let gid = run_as_group.unwrap_or(0);
        let groups = match fs_group {
            Some(g) => format!("--groups={g}"),
            None => "--clear-groups".to_owned(),
        };
        cmd.args(["setpriv", &format!("--reuid={uid}"), &format!("--regid={gid}"), &groups, "--"]);
    }
    cmd.arg(&binary).args(&args);
    for env in container["env"].as_array().into_iter().flatten() {
        if let (Some(k), Some(v)) = (env["name"].as_str(), env["value"].as_str()) {
            cmd.env(k, v);
        }
    }
    let log = std::fs::File::create(pod_dir.join("container.log"));
    if let Ok(log) = log {
        if let Ok(err) = log.try_clone() {
            cmd.stderr(err);
        }
        cmd.stdout(log);
    }
    cmd.kill_on_drop(true);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            set_status(&server, &pod, waiting(&cname, "RunContainerError", &e.to_string())).await;
            return;
        }
    };
    server.kubelet.running.lock().await.insert(pod_name.clone(), child);
    let ips: Vec<Value> = rt.pod_ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect();
    let running = |ready: bool| {
        json!({"phase": "Running", "hostIP": rt.host_ip.to_string(), "podIP": rt.pod_ips[0].to_string(), "podIPs": ips,
               "conditions": [{"type": "PodScheduled", "status": "True"},
                              {"type": "Ready", "status": if ready { "True" } else { "False" }}],
               "containerStatuses": [{"name": cname, "ready": ready, "restartCount": 0, "image": image,
                                      "state": {"running": {"startedAt": "2026-11-25T00:00:00Z"}}}]})
    };
    let mut pod_now = set_status(&server, &pod, running(false)).await;
    let _ = &mut pod_now;
    let probe_port =
        container["readinessProbe"]["httpGet"]["port"].as_u64().or(container["ports"][0]["containerPort"].as_u64());
    for _ in 0..200 {
        if !server.kubelet.running.lock().await.contains_key(&pod_name) {
            return; // deleted
        }
        if let Some(exit) = exited(&server, &pod_name).await {
            let status = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [{"name": cname, "ready": false, "restartCount": 1,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": format!("back-off restarting failed container {cname}")}},
                    "lastState": {"terminated": {"exitCode": exit, "reason": "Error"}}}]});
            set_status(&server, &pod, status).await;
            return;
        }
        let ready = match probe_port {
            Some(port) => {
                let addr = SocketAddr::new(rt.pod_ips[0], port as u16);
                tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(addr))
                    .await
                    .is_ok_and(|r| r.is_ok())
            }
            None => true,
        };
        if ready {
            set_status(&server, &pod, running(true)).await;
            set_deployment_ready(&server, &deploy, 1).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes the ConfigMap's data as files in `dir` (world-readable, as the
/// kubelet's default 0644), removing keys it no longer has.
async fn sync_configmap_volume(server: &Arc<Server>, ns: &str, name: &str, dir: &std::path::Path) {
    let data = {
        let store = server.store.lock().await;
        store.get(&kind_named("ConfigMap"), Some(ns), name).map(|c| c["data"].clone()).unwrap_or(Value::Null)
    };
    let keys: Vec<(String, String)> = data
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !keys.iter().any(|(k, _)| *k == name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    for (key, value) in keys {
        let path = dir.join(&key);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(value.as_str()) {
            // Atomically, as the kubelet swaps its ..data link.
            let tmp = dir.join(format!(".{key}.tmp"));
            if std::fs::write(&tmp, &value).is_ok() {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644));
                let _ = std::fs::rename(&tmp, &path);
            }
        }
    }
}

async fn keep_configmap_volume(server: Arc<Server>, ns: String, name: String, dir: PathBuf, pod: String) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if !server.kubelet.running.lock().await.contains_key(&pod) {
            return;
        }
        sync_configmap_volume(&server, &ns, &name, &dir).await;
    }
}

async fn exited(server: &Arc<Server>, pod: &str) -> Option<i32> {
    let mut running = server.kubelet.running.lock().await;
    let child = running.get_mut(pod)?;
    match child.try_wait() {
        Ok(Some(status)) => Some(status.code().unwrap_or(-1)),
        _ => None,
    }
}

/// A Secret volume as the real kubelet writes it: files owned by root,
/// with the volume's `defaultMode`, and with `fsGroup` as their group (the
/// kubelet's ownership management); the directory root-owned too.
fn write_secret_volume(dir: &std::path::Path, data: &Value, mode: u32, fs_group: Option<u64>) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, chown};
    std::fs::create_dir_all(dir)?;
    let gid = fs_group.map(|g| g as u32);
    chown(dir, Some(0), gid.or(Some(0)))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(if gid.is_some() { 0o2750 } else { 0o755 }))?;
    if let Some(pod_dir) = dir.parent() {
        std::fs::set_permissions(pod_dir, std::fs::Permissions::from_mode(0o755))?;
    }
    for (key, value) in data.as_object().into_iter().flatten() {
        let bytes = base64::engine::general_purpose::STANDARD.decode(value.as_str().unwrap_or_default())?;
        let path = dir.join(key);
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path)?;
        std::io::Write::write_all(&mut f, &bytes)?;
        chown(&path, Some(0), gid.or(Some(0)))?;
        // With fsGroup, the kubelet adds group read to the mode it was given.
        let file_mode = if gid.is_some() { mode | 0o040 } else { mode };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(file_mode))?;
    }
    Ok(())
}

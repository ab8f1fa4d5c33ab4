//! devnet against a REAL Kubernetes control plane: etcd, kube-apiserver and
//! kube-controller-manager v1.37.2 built from Kubernetes' own Go modules
//! (`tests/realkube/build.sh`, cached outside the repository), running in the
//! lab's api namespace (`lab.sh realapi`). Discovery, RBAC, server-side
//! apply, Pod Security admission and the namespace controller are the real
//! ones here; nothing agrees with devnet because devnet assumed it.
//!
//! Not yet real: the node. No kubelet runs, so the relay pod is admitted
//! and stays Pending; the tunnel trials still run against the stand-in's
//! kubelet (`lab_kube`).

use std::time::{Duration, Instant};

use devnet_lab::harness::{self, Lab, OnFailure, Res, text};

const LAB: &str = "rk";

fn main() {
    harness::run(
        "realkube",
        setup,
        &[
            ("realkube_01_discovery_through_the_real_api_server", discovery),
            ("realkube_02_rights_from_a_real_selfsubjectaccessreview", rbac),
            ("realkube_03_relay_install_passes_real_admission_and_pod_security", install),
            ("realkube_04_uninstall_really_removes_the_namespace_and_spares_foreign", uninstall),
        ],
        OnFailure::Reset,
    )
}

fn setup() -> Res<Lab> {
    let lab = Lab::up(LAB)?;
    lab.sh_ok("realapi", &[])?;
    Ok(lab)
}

fn kubeconfig(lab: &Lab) -> String {
    lab.dir.join("kubeconfig").display().to_string()
}

/// A request to the real API server as its admin, from the api host.
fn api(lab: &Lab, method: &str, path: &str, body: Option<&str>) -> Res<serde_json::Value> {
    let url = format!("https://10.60.20.10:6443{path}");
    let mut args = vec!["curl", "-sk", "-m", "5", "-X", method, "-H", "Authorization: Bearer admin-token"];
    if let Some(body) = body {
        args.extend(["-H", "Content-Type: application/json", "--data-binary", body]);
    }
    args.push(&url);
    let out = lab.exec("api", &args)?;
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{method} {path}: {e}: {}", text(&out)))
}

fn discovery(lab: &Lab) -> Res {
    let version = api(lab, "GET", "/version", None)?;
    if version["gitVersion"] != "v1.37.2" {
        return Err(format!("not the pinned real API server: {version}"));
    }
    let kc = kubeconfig(lab);
    let out = lab.devnet(&["doctor", "--json", "--context", "lab", "--kubeconfig", &kc], &[])?;
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", text(&out)))?;
    let facts: Vec<String> = doc["discovered"]
        .as_array()
        .ok_or_else(|| format!("no discovered facts: {doc}"))?
        .iter()
        .map(|f| {
            format!(
                "{} {} from {}",
                f["what"].as_str().unwrap_or(""),
                f["value"].as_str().unwrap_or(""),
                f["source"].as_str().unwrap_or("")
            )
        })
        .collect();
    for want in [
        "pod CIDR 10.244.0.0/16 from Calico IPPool default-ipv4-ippool (crd.projectcalico.org/v1)",
        // The API server made this ServiceCIDR itself from its flags.
        "service CIDR 10.96.0.0/16 from ServiceCIDR kubernetes",
        "service CIDR fd00:96::/112 from ServiceCIDR kubernetes",
        "cluster DNS 10.96.0.10 from kube-system/kube-dns Service",
        "domain cluster.local from kube-system/kubeadm-config",
    ] {
        if !facts.iter().any(|f| f == want) {
            return Err(format!("discovery did not find {want:?}; it found:\n{}", facts.join("\n")));
        }
    }
    lab.laptop_unchanged("after doctor")
}

fn rbac(lab: &Lab) -> Res {
    let kc = kubeconfig(lab);
    let out = lab.devnet(&["relay", "install", "--context", "lab-reader", "--kubeconfig", &kc], &[])?;
    let err = text(&out);
    let last = err.lines().rev().find(|l| l.starts_with("error:")).unwrap_or_default();
    for rule in [
        r#"{apiGroups: [""], resources: ["namespaces"], verbs: ["create"]} cluster-wide"#,
        r#"{apiGroups: ["apps"], resources: ["deployments"], verbs: ["patch"]} in namespace devnet"#,
        r#"{apiGroups: ["networking.k8s.io"], resources: ["networkpolicies"], verbs: ["patch"]} in namespace devnet"#,
    ] {
        if out.status.success() || !last.contains(rule) {
            return Err(format!("a viewer's install should name {rule}; got:\n{err}"));
        }
    }
    // Nothing was made for them.
    let ns = api(lab, "GET", "/api/v1/namespaces/devnet", None)?;
    if ns["code"] != 404 {
        return Err(format!("a refused install left a namespace: {ns}"));
    }
    Ok(())
}

fn install(lab: &Lab) -> Res {
    let kc = kubeconfig(lab);
    // No kubelet: the install is applied and admitted, and then waits for a
    // pod that cannot start; the trial looks at what the real server made.
    let mut waiting = lab
        .on_laptop()
        .arg(lab.tool("devnet"))
        .args(["relay", "install", "--context", "lab", "--kubeconfig", &kc])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let result = look_at_install(lab);
    let _ = waiting.kill();
    let _ = waiting.wait();
    result
}

fn look_at_install(lab: &Lab) -> Res {
    let start = Instant::now();
    let pod = loop {
        let pods = api(lab, "GET", "/api/v1/namespaces/devnet/pods", None)?;
        if let Some(pod) = pods["items"].as_array().and_then(|a| a.first()) {
            break pod.clone();
        }
        if start.elapsed() > Duration::from_secs(20) {
            let events = api(lab, "GET", "/api/v1/namespaces/devnet/events", None)?;
            return Err(format!("the ReplicaSet made no relay pod (admission?): {events}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // The pod passed Pod Security "restricted", which the namespace enforces.
    let ns = api(lab, "GET", "/api/v1/namespaces/devnet", None)?;
    if ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] != "restricted" {
        return Err(format!("the namespace does not enforce restricted: {ns}"));
    }
    if pod["spec"]["securityContext"]["fsGroup"] != 65532 || pod["spec"]["volumes"][0]["secret"]["defaultMode"] != 0o440
    {
        return Err(format!("the relay pod cannot read its Secret on a real kubelet: {}", pod["spec"]));
    }
    // ... and the enforcement is real: an ordinary pod (root allowed, no
    // seccomp profile, capabilities kept) is refused there.
    let bad = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"bad","namespace":"devnet"},
        "spec":{"containers":[{"name":"c","image":"x"}]}}"#;
    let refused = api(lab, "POST", "/api/v1/namespaces/devnet/pods", Some(bad))?;
    if refused["code"] != 403
        || !refused["message"].as_str().unwrap_or("").contains("violates PodSecurity \"restricted")
    {
        return Err(format!("an unrestricted pod was not refused by Pod Security: {refused}"));
    }
    // The real allocator gave the Service a node port; the NetworkPolicy
    // with selectors beside ipBlock was accepted as written.
    let svc = api(lab, "GET", "/api/v1/namespaces/devnet/services/devnet-relay", None)?;
    let port = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap_or(0);
    if !(30000..=32767).contains(&port) {
        return Err(format!("no node port allocated: {svc}"));
    }
    let np = api(lab, "GET", "/apis/networking.k8s.io/v1/namespaces/devnet/networkpolicies/devnet-relay", None)?;
    if np["spec"]["egress"][1]["to"][0]["namespaceSelector"] != serde_json::json!({}) {
        return Err(format!("the NetworkPolicy lacks its selectors: {np}"));
    }
    // Server-side apply: devnet is the field manager of what it applied.
    let deploy = api(lab, "GET", "/apis/apps/v1/namespaces/devnet/deployments/devnet-relay", None)?;
    let managers: Vec<&str> = deploy["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["operation"] == "Apply")
        .filter_map(|m| m["manager"].as_str())
        .collect();
    if managers.is_empty() {
        return Err(format!("the Deployment was not server-side applied: {}", deploy["metadata"]));
    }
    Ok(())
}

fn uninstall(lab: &Lab) -> Res {
    let kc = kubeconfig(lab);
    let out = lab.devnet(&["relay", "uninstall", "--context", "lab", "--kubeconfig", &kc], &[])?;
    if !out.status.success() || !text(&out).contains("relay uninstalled") {
        return Err(format!("uninstall: {}", text(&out)));
    }
    // The namespace controller really finalizes it.
    let start = Instant::now();
    loop {
        let ns = api(lab, "GET", "/api/v1/namespaces/devnet", None)?;
        if ns["code"] == 404 {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            return Err(format!("namespace devnet still exists 60 s after uninstall: {}", ns["status"]));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // A namespace named devnet that devnet did not make is never deleted.
    api(
        lab,
        "POST",
        "/api/v1/namespaces",
        Some(r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"devnet"}}"#),
    )?;
    let out = lab.devnet(&["relay", "uninstall", "--context", "lab", "--kubeconfig", &kc], &[])?;
    if out.status.success() || !text(&out).contains("was not created by devnet") {
        return Err(format!("uninstall of a namespace devnet did not make: {}", text(&out)));
    }
    if api(lab, "GET", "/api/v1/namespaces/devnet", None)?["metadata"]["name"] != "devnet" {
        return Err("the foreign namespace was deleted".into());
    }
    Ok(())
}

//! devnet against a REAL Kubernetes cluster: etcd, kube-apiserver,
//! kube-controller-manager and kube-scheduler v1.37.2 built from Kubernetes'
//! own Go modules (`tests/realkube/build.sh`, cached outside the repository)
//! in the lab's api namespace (`lab.sh realapi`), and a real node, node4
//! (`lab.sh realnode`): Debian's containerd, runc and CNI plugins, the real
//! kubelet and kube-proxy. The relay runs from its product image
//! (`installers/relay/build-image.sh`), imported, never pulled. Discovery,
//! RBAC, server-side apply, Pod Security, scheduling, the kubelet's Secret
//! volumes, port-forward (API server → kubelet → containerd), kube-proxy,
//! CoreDNS and the namespace controller are all the real ones: nothing here agrees with
//! devnet because devnet assumed it.

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
            ("realkube_03_connect_from_nothing_installs_a_relay_the_real_kubelet_runs", install),
            ("realkube_03b_the_relay_key_is_in_a_secret_clients_may_not_read", relay_key_unreadable),
            ("realkube_04_tunnel_through_the_real_port_forward_to_pods_clusterips_and_coredns", through_portforward),
            ("realkube_05_direct_to_the_node_port_through_real_kube_proxy", direct_node_port),
            ("realkube_06_a_user_without_pods_portforward_is_told_so", no_portforward),
            ("realkube_06b_a_token_the_api_server_stops_accepting_means_log_in_again", token_invalidated),
            ("realkube_07_uninstall_really_removes_the_namespace_and_spares_foreign", uninstall),
        ],
        OnFailure::Reset,
    )
}

fn setup() -> Res<Lab> {
    let lab = Lab::up(LAB)?;
    lab.sh_ok("realapi", &[])?;
    lab.sh_ok("realnode", &[])?;
    Ok(lab)
}

fn kubeconfig(lab: &Lab) -> String {
    lab.dir.join("kubeconfig").display().to_string()
}

fn discovery(lab: &Lab) -> Res {
    let version = lab.real_api("GET", "/version", None)?;
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
    // A served API with the object missing is told apart from an API the
    // cluster does not serve (the real server's two kinds of 404).
    let notes = doc["discovery_notes"].to_string();
    if !notes.contains("kube-system/kubelet-config: not in this cluster")
        || !notes.contains("Calico IPPools (projectcalico.org/v3): not served by this cluster")
    {
        return Err(format!("discovery notes: {notes}"));
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
    let ns = lab.real_api("GET", "/api/v1/namespaces/devnet", None)?;
    if ns["code"] != 404 {
        return Err(format!("a refused install left a namespace: {ns}"));
    }
    Ok(())
}

/// `devnet connect --context lab` from nothing, at home (only the API
/// server reachable): discovery, the relay installed by server-side apply,
/// admitted under Pod Security, scheduled, started by the real kubelet from
/// its product image; then the session through the port-forward.
fn install(lab: &Lab) -> Res {
    lab.sh_ok("firewall", &["api-only"])?;
    let kc = kubeconfig(lab);
    lab.connect_args(&["--context", "lab", "--kubeconfig", &kc], &[], "connected", Duration::from_secs(120))?;
    if !lab.engine_log().contains("installing the relay") {
        return Err(format!("connect did not install the relay:\n{}", lab.engine_log()));
    }
    look_at_install(lab)
}

fn look_at_install(lab: &Lab) -> Res {
    let pods = lab.real_api("GET", "/api/v1/namespaces/devnet/pods", None)?;
    let pod = pods["items"].as_array().and_then(|a| a.first()).cloned().ok_or(format!("no relay pod: {pods}"))?;
    // The real scheduler put it on the real node, whose kubelet started it
    // from the product image and found it ready: it read its Secret (root's
    // files, mode 0440, group fsGroup) as uid 65532.
    let status = &pod["status"]["containerStatuses"][0];
    if pod["spec"]["nodeName"] != "node4" || status["ready"] != true {
        return Err(format!("the relay pod is not running ready on node4: {}", pod["status"]));
    }
    if !status["image"].as_str().unwrap_or("").contains("ghcr.io/devnet-dev/devnet-relay:") {
        return Err(format!("the relay did not run from its product image: {status}"));
    }
    // The pod passed Pod Security "restricted", which the namespace enforces.
    let ns = lab.real_api("GET", "/api/v1/namespaces/devnet", None)?;
    if ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] != "restricted" {
        return Err(format!("the namespace does not enforce restricted: {ns}"));
    }
    if pod["spec"]["securityContext"]["fsGroup"] != 65532
        || pod["spec"]["volumes"][0]["secret"]["defaultMode"] != 0o440
        || pod["spec"]["volumes"][1]["configMap"]["name"] != "devnet-relay-revoked"
    {
        return Err(format!("the relay pod cannot read its Secret on a real kubelet: {}", pod["spec"]));
    }
    // ... and the enforcement is real: an ordinary pod (root allowed, no
    // seccomp profile, capabilities kept) is refused there.
    let bad = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"bad","namespace":"devnet"},
        "spec":{"containers":[{"name":"c","image":"x"}]}}"#;
    let refused = lab.real_api("POST", "/api/v1/namespaces/devnet/pods", Some(bad))?;
    if refused["code"] != 403
        || !refused["message"].as_str().unwrap_or("").contains("violates PodSecurity \"restricted")
    {
        return Err(format!("an unrestricted pod was not refused by Pod Security: {refused}"));
    }
    // The real allocator gave the Service a node port; the NetworkPolicy
    // with selectors beside ipBlock was accepted as written.
    let svc = lab.real_api("GET", "/api/v1/namespaces/devnet/services/devnet-relay", None)?;
    let port = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap_or(0);
    if !(30000..=32767).contains(&port) {
        return Err(format!("no node port allocated: {svc}"));
    }
    let np = lab.real_api("GET", "/apis/networking.k8s.io/v1/namespaces/devnet/networkpolicies/devnet-relay", None)?;
    if np["spec"]["egress"][1]["to"][0]["namespaceSelector"] != serde_json::json!({}) {
        return Err(format!("the NetworkPolicy lacks its selectors: {np}"));
    }
    // Server-side apply: devnet is the field manager of what it applied.
    let deploy = lab.real_api("GET", "/apis/apps/v1/namespaces/devnet/deployments/devnet-relay", None)?;
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

/// The laptop reaches only the API server: the tunnel goes through the
/// API server's port-forward to the real kubelet, into the relay pod.
fn through_portforward(lab: &Lab) -> Res {
    let transport = lab.status()?["transport"].as_str().unwrap_or_default().to_owned();
    if !transport.starts_with("port-forward devnet/devnet-relay-") {
        return Err(format!("expected the port-forward with only the API server reachable, got {transport:?}"));
    }
    reach_real_pods(lab)
}

/// HTTP to the web pod on the real node, and to its ClusterIP (the relay
/// dials it from its pod; the real kube-proxy on node4 answers); its names
/// through the system resolver, answered by the real CoreDNS.
fn reach_real_pods(lab: &Lab) -> Res {
    for name in ["web.demo.svc.cluster.local", "web.demo"] {
        let addrs = lab.getent(name)?;
        if !addrs.iter().any(|a| a == "10.96.0.20") {
            return Err(format!("getent hosts {name} gave {addrs:?} (CoreDNS through the tunnel)"));
        }
    }
    lab.real_web_answers()?;
    Ok(())
}

/// With the office firewall open, the next connect reaches the relay
/// directly at its node port, which the real kube-proxy forwards.
fn direct_node_port(lab: &Lab) -> Res {
    lab.disconnect()?;
    lab.sh_ok("firewall", &["open"])?;
    let kc = kubeconfig(lab);
    lab.connect_args(&["--context", "lab", "--kubeconfig", &kc], &[], "connected", Duration::from_secs(30))?;
    let svc = lab.real_api("GET", "/api/v1/namespaces/devnet/services/devnet-relay", None)?;
    let port = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap_or(0);
    let transport = lab.status()?["transport"].as_str().unwrap_or_default().to_owned();
    if transport != format!("direct 10.60.20.14:{port}") {
        return Err(format!("expected the node port 10.60.20.14:{port} through kube-proxy, got {transport:?}"));
    }
    reach_real_pods(lab)?;
    lab.disconnect()?;
    lab.laptop_unchanged("after the real-cluster sessions")
}

/// A viewer may read the relay's state but not open a port-forward; with
/// only the API server reachable, connect says which right is missing.
fn no_portforward(lab: &Lab) -> Res {
    lab.sh_ok("firewall", &["api-only"])?;
    let kc = kubeconfig(lab);
    let out = lab.devnet(&["connect", "--context", "lab-reader", "--kubeconfig", &kc, "--no-install"], &[])?;
    let said = text(&out);
    if out.status.success() || !said.contains(r#"resources: ["pods/portforward"], verbs: ["create"]"#) {
        return Err(format!("a viewer without pods/portforward: {said}"));
    }
    lab.sh_ok("firewall", &["open"])?;
    lab.laptop_unchanged("after the refused connect")
}

/// Security review R-1 and issue 11 finding 3: the relay's key sat in a
/// Secret users could read, and everyone shared one token. Now a colleague
/// bound only to the Role devnet installs (devnet-user, plus the cluster's
/// read-only `view`, which discovery reads and which grants no Secret)
/// enrols through the REAL port-forward (API server, kubelet, the pod's
/// loopback) for a certificate naming them as the real API server knows
/// them, connects with it, and the real RBAC refuses them every Secret in
/// the relay's namespace.
fn relay_key_unreadable(lab: &Lab) -> Res {
    lab.disconnect()?;
    lab.real_api("POST", "/api/v1/namespaces/devnet/serviceaccounts", Some(r#"{"metadata":{"name":"colleague"}}"#))?;
    let binding = r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":"colleague","namespace":"devnet"},
        "roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"devnet-user"},
        "subjects":[{"kind":"ServiceAccount","name":"colleague","namespace":"devnet"}]}"#;
    lab.real_api("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/devnet/rolebindings", Some(binding))?;
    let view = r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding","metadata":{"name":"colleague-view"},
        "roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"view"},
        "subjects":[{"kind":"ServiceAccount","name":"colleague","namespace":"devnet"}]}"#;
    lab.real_api("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", Some(view))?;
    let request = r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":600}}"#;
    let answer = lab.real_api("POST", "/api/v1/namespaces/devnet/serviceaccounts/colleague/token", Some(request))?;
    let token = answer["status"]["token"].as_str().ok_or(format!("no token: {answer}"))?.to_owned();
    let auth = format!("Authorization: Bearer {token}");
    let get = |path: &str| -> Res<serde_json::Value> {
        let url = format!("https://10.60.20.10:6443{path}");
        let out = lab.exec("api", &["curl", "-sk", "-m", "5", "-H", &auth, &url])?;
        serde_json::from_slice(&out.stdout).map_err(|e| format!("{path}: {e}: {}", text(&out)))
    };
    for path in [
        "/api/v1/namespaces/devnet/secrets/devnet-relay-tls",
        "/api/v1/namespaces/devnet/secrets/devnet-relay-client",
        "/api/v1/namespaces/devnet/secrets",
    ] {
        let refused = get(path)?;
        if refused["code"] != 403 {
            return Err(format!("{path} should be Forbidden to a user bound to devnet-user: {refused}"));
        }
    }
    // What connect reads to find the relay pod, the user may read.
    let sets = get("/apis/apps/v1/namespaces/devnet/replicasets")?;
    if sets["items"].as_array().is_none_or(Vec::is_empty) {
        return Err(format!("a user bound to devnet-user cannot list the relay's ReplicaSets: {sets}"));
    }
    // The colleague connects through the API server only: enrolment and
    // tunnel both ride the real port-forward.
    let kc = std::fs::read_to_string(kubeconfig(lab)).map_err(|e| e.to_string())?;
    let kc = kc.replace("users:\n", &format!("users:\n- {{name: colleague, user: {{token: {token}}}}}\n")).replace(
        "contexts:\n",
        "contexts:\n- {name: colleague, context: {cluster: lab, user: colleague, namespace: demo}}\n",
    );
    let path = lab.dir.join("kubeconfig-colleague");
    std::fs::write(&path, kc).map_err(|e| e.to_string())?;
    let path = path.display().to_string();
    lab.connect_args(
        &["--context", "colleague", "--kubeconfig", &path, "--no-install", "--session", "lab"],
        &[],
        "connected",
        Duration::from_secs(60),
    )?;
    if !lab.engine_log().contains("enrolling as system:serviceaccount:devnet:colleague") {
        return Err(format!(
            "the colleague did not enrol under the name the API server gives them:\n{}",
            lab.engine_log()
        ));
    }
    reach_real_pods(lab)?;
    let stored = lab.devnet(&["credential", "load", "--account", "https://10.60.20.10:6443#devnet"], &[])?;
    let stored = String::from_utf8_lossy(&stored.stdout).into_owned();
    if !stored.contains("system:serviceaccount:devnet:colleague") {
        return Err(format!("the keyring holds no certificate for the colleague: {}", stored.len()));
    }
    lab.disconnect()?;
    lab.real_api("DELETE", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/colleague-view", None)?;
    lab.real_api("DELETE", "/apis/rbac.authorization.k8s.io/v1/namespaces/devnet/rolebindings/colleague", None)?;
    lab.real_api("DELETE", "/api/v1/namespaces/devnet/serviceaccounts/colleague", None)?;
    // The next trial expects the admin's session through the port-forward.
    let kc = kubeconfig(lab);
    lab.connect_args(&["--context", "lab", "--kubeconfig", &kc], &[], "connected", Duration::from_secs(60))
}

/// A real TokenRequest token, bound to a Secret: while the Secret exists
/// devnet works with it; once the Secret is deleted the API server refuses
/// the token at once (the shortest expiry a TokenRequest may ask is ten
/// minutes; a bound object's deletion ends it now), and devnet says to log in
/// again, in one line, leaving nothing behind.
fn token_invalidated(lab: &Lab) -> Res {
    lab.real_api("POST", "/api/v1/namespaces/demo/serviceaccounts", Some(r#"{"metadata":{"name":"laptop"}}"#))?;
    lab.real_api("POST", "/api/v1/namespaces/demo/secrets", Some(r#"{"metadata":{"name":"laptop-session"}}"#))?;
    let binding = r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding","metadata":{"name":"laptop-view"},
        "roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"view"},
        "subjects":[{"kind":"ServiceAccount","name":"laptop","namespace":"demo"}]}"#;
    lab.real_api("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", Some(binding))?;
    let request = r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest",
        "spec":{"expirationSeconds":600,"boundObjectRef":{"kind":"Secret","apiVersion":"v1","name":"laptop-session"}}}"#;
    let answer = lab.real_api("POST", "/api/v1/namespaces/demo/serviceaccounts/laptop/token", Some(request))?;
    let token = answer["status"]["token"].as_str().ok_or(format!("no token: {answer}"))?;
    let kc = std::fs::read_to_string(kubeconfig(lab)).map_err(|e| e.to_string())?;
    let kc = kc.replace(
        "- {name: reader, user: {token: reader-token}}",
        &format!("- {{name: reader, user: {{token: {token}}}}}"),
    );
    let path = lab.dir.join("kubeconfig-bound");
    std::fs::write(&path, kc).map_err(|e| e.to_string())?;
    let path = path.display().to_string();
    let out = lab.devnet(&["relay", "status", "--context", "lab-reader", "--kubeconfig", &path], &[])?;
    if !out.status.success() {
        return Err(format!("the bound token should work while its Secret exists: {}", text(&out)));
    }
    lab.real_api("DELETE", "/api/v1/namespaces/demo/secrets/laptop-session", None)?;
    // The API server caches a token's verdict for ten seconds.
    let start = Instant::now();
    loop {
        let out = lab.devnet(&["relay", "status", "--context", "lab-reader", "--kubeconfig", &path], &[])?;
        let err = text(&out);
        let last = err.lines().rev().find(|l| l.starts_with("error:")).unwrap_or_default();
        if !out.status.success() {
            if last.contains("401 Unauthorized") && last.contains("log in again") {
                break;
            }
            return Err(format!("a token the API server stopped accepting: {err}"));
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err(format!("the bound token still works 30 s after its Secret was deleted: {err}"));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    lab.laptop_unchanged("after the refused token")
}

fn uninstall(lab: &Lab) -> Res {
    let kc = kubeconfig(lab);
    let out = lab.devnet(&["relay", "uninstall", "--context", "lab", "--kubeconfig", &kc], &[])?;
    if !out.status.success() || !text(&out).contains("relay uninstalled") {
        return Err(format!("uninstall: {}", text(&out)));
    }
    // The namespace controller really finalizes it; the kubelet stops the pod.
    let start = Instant::now();
    loop {
        let ns = lab.real_api("GET", "/api/v1/namespaces/devnet", None)?;
        if ns["code"] == 404 {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            return Err(format!("namespace devnet still exists 60 s after uninstall: {}", ns["status"]));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // A namespace named devnet that devnet did not make is never deleted.
    lab.real_api(
        "POST",
        "/api/v1/namespaces",
        Some(r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"devnet"}}"#),
    )?;
    let out = lab.devnet(&["relay", "uninstall", "--context", "lab", "--kubeconfig", &kc], &[])?;
    if out.status.success() || !text(&out).contains("was not created by devnet") {
        return Err(format!("uninstall of a namespace devnet did not make: {}", text(&out)));
    }
    if lab.real_api("GET", "/api/v1/namespaces/devnet", None)?["metadata"]["name"] != "devnet" {
        return Err("the foreign namespace was deleted".into());
    }
    Ok(())
}

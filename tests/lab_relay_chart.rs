//! The relay's Helm chart (`installers/relay/chart/devnet-relay`) and
//! `devnet relay manifests` against the REAL API server of the realkube lab
//! (`lab.sh realapi`, `realnode`: kube-apiserver v1.37.2 built from
//! Kubernetes' own Go modules, and a real kubelet). Helm is the real one
//! (`tests/lab/helm/build.sh`, cached outside the repository; or
//! `DEVNET_HELM`). What `helm template` renders, and what devnet prints, goes
//! to the API server as YAML, parsed by Kubernetes' own YAML reader, through
//! server-side apply with `dryRun=All`: validation, defaulting, admission
//! (Pod Security "restricted" warns about a Deployment whose pods would be
//! refused) and the node-port allocator, all real, and nothing is stored.
//! Then a relay from the chart, in a namespace of its own and without a
//! node port, is installed for real and `devnet connect --relay-namespace`
//! finds it and tunnels through the API server's port-forward.
//!
//! The chart-against-devnet comparisons without a cluster are in
//! `crates/devnet-cli/tests/relay_chart.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use devnet_lab::harness::{self, Lab, OnFailure, Res, text};
use serde_json::Value;

const LAB: &str = "chart";

fn main() {
    harness::run(
        "relaychart",
        setup,
        &[
            ("relaychart_01_chart_and_manifests_pass_a_server_side_dry_run_on_the_real_api_server", dry_run),
            ("relaychart_02_a_chart_relay_in_its_own_namespace_without_node_port_is_found_by_connect", chart_relay),
        ],
        OnFailure::Reset,
    )
}

fn setup() -> Res<Lab> {
    helm()?;
    let lab = Lab::up(LAB)?;
    lab.sh_ok("realapi", &[])?;
    lab.sh_ok("realnode", &[])?;
    Ok(lab)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `DEVNET_HELM`, else the binary `tests/lab/helm/build.sh` prints (built
/// once from the pinned module when missing).
fn helm() -> Res<PathBuf> {
    if let Some(h) = std::env::var_os("DEVNET_HELM") {
        return Ok(PathBuf::from(h));
    }
    let out = Command::new("bash")
        .arg(repo().join("tests/lab/helm/build.sh"))
        .output()
        .map_err(|e| format!("running tests/lab/helm/build.sh: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().find_map(|l| l.strip_prefix("helm=")) {
        Some(path) if out.status.success() => Ok(PathBuf::from(path)),
        _ => Err(format!("tests/lab/helm/build.sh failed (it needs Go >= 1.26): {}", text(&out))),
    }
}

/// `helm template` of the chart with `values` (a values file's text).
fn render(lab: &Lab, name: &str, values: &str) -> Res<String> {
    let file = lab.dir.join(format!("values-{name}.yaml"));
    std::fs::write(&file, values).map_err(|e| e.to_string())?;
    let chart = repo().join("installers/relay/chart/devnet-relay");
    let out = Command::new(helm()?)
        .args(["template", "devnet-relay"])
        .arg(&chart)
        .arg("-f")
        .arg(&file)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("helm template ({name}): {}", text(&out)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `devnet relay manifests <args>` on the host (no cluster: the CIDRs are given).
fn manifests(lab: &Lab, args: &[&str]) -> Res<String> {
    let out = Command::new(lab.tool("devnet"))
        .args(["relay", "manifests"])
        .args(args)
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("devnet relay manifests {args:?}: {}", text(&out)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Each YAML document's own text and what it says.
fn documents(yaml: &str) -> Res<Vec<(String, Value)>> {
    let mut docs = Vec::new();
    let mut push = |chunk: &str| -> Res {
        let v: Value = serde_saphyr::from_str(chunk).map_err(|e| format!("{e}: {chunk}"))?;
        if !v.is_null() {
            docs.push((chunk.to_owned(), v));
        }
        Ok(())
    };
    let mut chunk = String::new();
    for line in yaml.lines() {
        if line == "---" {
            push(&chunk)?;
            chunk.clear();
        } else {
            chunk.push_str(line);
            chunk.push('\n');
        }
    }
    push(&chunk)?;
    Ok(docs)
}

/// Server-side apply of one document's YAML text as the lab's admin
/// (`dryRun=All` when `dry`): the API server's answer and its warnings.
fn apply(lab: &Lab, yaml: &str, obj: &Value, dry: bool) -> Res<(Value, Vec<String>)> {
    let path = devnet_kube::relay::path_of(obj);
    let url = format!(
        "https://10.60.20.10:6443{path}?fieldManager=devnet-chart-test&force=true{}",
        if dry { "&dryRun=All" } else { "" }
    );
    let headers = lab.dir.join("apply-headers");
    let headers = headers.to_str().ok_or("path")?;
    let out = lab.exec(
        "api",
        &[
            "curl",
            "-sk",
            "-m",
            "10",
            "-X",
            "PATCH",
            "-H",
            "Authorization: Bearer admin-token",
            "-H",
            "Content-Type: application/apply-patch+yaml",
            "-H",
            "Expect:",
            "-D",
            headers,
            "--data-binary",
            yaml,
            &url,
        ],
    )?;
    let answer: Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("PATCH {path}: {e}: {}", text(&out)))?;
    let warnings = std::fs::read_to_string(headers)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("warning:"))
        .map(str::to_owned)
        .collect();
    Ok((answer, warnings))
}

/// Dry-runs every document; the namespace, which the others need to exist
/// (a dry-run create in a namespace that does not is refused by
/// NamespaceLifecycle), is dry-run and then applied for real when `make_ns`.
fn dry_run_all(lab: &Lab, what: &str, yaml: &str, make_ns: bool) -> Res<Vec<Value>> {
    let mut answers = Vec::new();
    for (doc, obj) in documents(yaml)? {
        let kind = obj["kind"].as_str().unwrap_or_default().to_owned();
        let (answer, warnings) = apply(lab, &doc, &obj, true)?;
        if answer["kind"] != kind.as_str() {
            return Err(format!("{what}: the API server refused the {kind}: {answer}"));
        }
        // The namespace warns (Pod Security "restricted") about a Deployment
        // whose pods it would refuse; nothing here may draw a warning.
        if !warnings.is_empty() {
            return Err(format!("{what}: the {kind} drew warnings: {warnings:?}"));
        }
        if kind == "Namespace" && make_ns {
            let (real, _) = apply(lab, &doc, &obj, false)?;
            if real["kind"] != "Namespace" {
                return Err(format!("{what}: could not make the namespace: {real}"));
            }
        }
        answers.push(answer);
    }
    Ok(answers)
}

fn delete_namespace(lab: &Lab, ns: &str) -> Res {
    lab.real_api("DELETE", &format!("/api/v1/namespaces/{ns}"), None)?;
    let start = Instant::now();
    while lab.real_api("GET", &format!("/api/v1/namespaces/{ns}"), None)?["code"] != 404 {
        if start.elapsed() > Duration::from_secs(60) {
            return Err(format!("namespace {ns} still there 60 s after its deletion"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

/// The chart with its defaults and with every setting changed, and devnet's
/// manifests with the same settings, through the real API server's dry run.
fn dry_run(lab: &Lab) -> Res {
    let cases: [(&str, &str, &str, &[&str]); 2] = [
        (
            "defaults",
            "devnet",
            "allowedCIDRs: [10.244.0.0/16, 10.96.0.0/16, \"fd00:96::/112\"]\nclusterDNS: [10.96.0.10]\n",
            &["--allow", "10.244.0.0/16,10.96.0.0/16,fd00:96::/112", "--dns", "10.96.0.10", "--include-secret"],
        ),
        (
            "admin",
            "team-net",
            "namespace: team-net\nimage: registry.example.com/mirror/devnet-relay:0.1.0\n\
             allowedCIDRs: [10.244.0.0/16, 10.96.0.0/16]\nclusterDNS: [10.96.0.10, \"fd00:96::a\"]\n\
             resources:\n  requests: {cpu: 100m, memory: 64Mi}\n  limits: {cpu: 2, memory: 512Mi}\n\
             nodePort: {enabled: false}\n",
            &[
                "--relay-namespace",
                "team-net",
                "--relay-image",
                "registry.example.com/mirror/devnet-relay:0.1.0",
                "--allow",
                "10.244.0.0/16,10.96.0.0/16",
                "--dns",
                "10.96.0.10,fd00:96::a",
                "--cpu-request",
                "100m",
                "--memory-request",
                "64Mi",
                "--cpu-limit",
                "2",
                "--memory-limit",
                "512Mi",
                "--no-node-port",
                "--include-secret",
            ],
        ),
    ];
    for (name, ns, values, flags) in cases {
        let chart = render(lab, name, values)?;
        let answers = dry_run_all(lab, &format!("chart ({name})"), &chart, true)?;
        let ours = dry_run_all(lab, &format!("devnet relay manifests ({name})"), &manifests(lab, flags)?, false)?;
        for answers in [&answers, &ours] {
            let kinds: Vec<&str> = answers.iter().filter_map(|a| a["kind"].as_str()).collect();
            for kind in
                ["Namespace", "ServiceAccount", "Secret", "ConfigMap", "Role", "Deployment", "Service", "NetworkPolicy"]
            {
                if !kinds.contains(&kind) {
                    return Err(format!("{name}: no {kind} among {kinds:?}"));
                }
            }
            // The allocator's answer: a node port, or none. (A dry run's node
            // port is not taken from the range: v1.37.2 answered 32769.)
            let svc = answers.iter().find(|a| a["kind"] == "Service").ok_or("no Service")?;
            let port = svc["spec"]["ports"][0]["nodePort"].as_u64();
            if (ns == "devnet") != port.is_some_and(|p| p > 0) {
                return Err(format!("{name}: the Service as the API server would make it: {}", svc["spec"]));
            }
            // Defaulting ran: the real server filled in what nobody wrote.
            let deploy = answers.iter().find(|a| a["kind"] == "Deployment").ok_or("no Deployment")?;
            let c = &deploy["spec"]["template"]["spec"]["containers"][0];
            let cpu_limit = if ns == "devnet" { "1" } else { "2" };
            if c["terminationMessagePath"] != "/dev/termination-log" || c["resources"]["limits"]["cpu"] != cpu_limit {
                return Err(format!("{name}: the Deployment as the API server would make it: {c}"));
            }
        }
        // A dry run stores nothing.
        let got = lab.real_api("GET", &format!("/apis/apps/v1/namespaces/{ns}/deployments/devnet-relay"), None)?;
        if got["code"] != 404 {
            return Err(format!("{name}: a dry run left a Deployment: {got}"));
        }
        delete_namespace(lab, ns)?;
    }
    Ok(())
}

/// `helm <args>` on the laptop, as the lab's admin (context `lab`), its
/// own state in the lab's directory.
fn helm_on_laptop(lab: &Lab, args: &[&str]) -> Res<String> {
    let helm = helm()?;
    let home = lab.dir.join("helm");
    let kc = lab.dir.join("kubeconfig");
    let vars = [
        format!("HELM_CACHE_HOME={}/cache", home.display()),
        format!("HELM_CONFIG_HOME={}/config", home.display()),
        format!("HELM_DATA_HOME={}/data", home.display()),
        format!("KUBECONFIG={}", kc.display()),
    ];
    let mut cmd: Vec<&str> = vec!["env"];
    cmd.extend(vars.iter().map(String::as_str));
    let helm = helm.display().to_string();
    cmd.push(&helm);
    cmd.extend(args);
    cmd.extend(["--kube-context", "lab", "--namespace", "default"]);
    let out = lab.exec("laptop", &cmd)?;
    if !out.status.success() {
        return Err(format!("helm {args:?}: {}", text(&out)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ca_annotation(lab: &Lab) -> Res<String> {
    let deploy = lab.real_api("GET", "/apis/apps/v1/namespaces/team-relay/deployments/devnet-relay", None)?;
    deploy["metadata"]["annotations"]["devnet.dev/ca-sha256"]
        .as_str()
        .map(str::to_owned)
        .ok_or(format!("the chart's Deployment has no CA fingerprint: {}", deploy["metadata"]))
}

/// A relay installed by the real `helm install` (its key pair and CA
/// generated by Helm, namespace team-relay, no node port): `devnet connect
/// --relay-namespace team-relay --no-install` finds it, enrols through the
/// port-forward (no Secret read), and with only the API server reachable
/// tunnels through the port-forward to a real pod. `helm upgrade` keeps the
/// key pair (the chart reads its Secret back) and the pod, so the next
/// connect uses the keyring's certificate; status finds it; `helm
/// uninstall` takes it all away.
fn chart_relay(lab: &Lab) -> Res {
    let kc = lab.dir.join("kubeconfig").display().to_string();
    // The CIDRs as devnet discovers them, from the real API server.
    let out = lab.exec(
        "laptop",
        &[
            &lab.tool("devnet"),
            "relay",
            "manifests",
            "--context",
            "lab",
            "--kubeconfig",
            &kc,
            "--relay-namespace",
            "team-relay",
            "--no-node-port",
        ],
    )?;
    if !out.status.success() {
        return Err(format!("devnet relay manifests with discovery: {}", text(&out)));
    }
    let discovered: Vec<Value> = documents(&String::from_utf8_lossy(&out.stdout))?.into_iter().map(|d| d.1).collect();
    let np = discovered.iter().find(|o| o["kind"] == "NetworkPolicy").ok_or("no NetworkPolicy")?;
    let allow: Vec<String> = np["spec"]["egress"][0]["to"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["ipBlock"]["cidr"].as_str().map(|c| format!("{c:?}")))
        .collect();
    if !allow.contains(&"\"10.244.0.0/16\"".to_owned()) || !allow.contains(&"\"10.96.0.0/16\"".to_owned()) {
        return Err(format!("discovery gave the relay {allow:?}: {}", text(&out)));
    }
    let values = lab.dir.join("values-team-relay.yaml");
    std::fs::write(
        &values,
        format!(
            "namespace: team-relay\nallowedCIDRs: [{}]\nclusterDNS: [10.96.0.10]\nnodePort: {{enabled: false}}\n",
            allow.join(", ")
        ),
    )
    .map_err(|e| e.to_string())?;
    let values = values.display().to_string();
    let chart = repo().join("installers/relay/chart/devnet-relay").display().to_string();
    let helm_args = ["devnet-relay", chart.as_str(), "-f", values.as_str(), "--wait", "--timeout", "2m"];
    let mut install = vec!["install"];
    install.extend(helm_args);
    let said = helm_on_laptop(lab, &install)?;
    if !said.contains("--relay-namespace team-relay") {
        return Err(format!("helm's notes should tell users the namespace: {said}"));
    }
    let fingerprint = ca_annotation(lab)?;

    lab.sh_ok("firewall", &["api-only"])?;
    let args = ["--context", "lab", "--kubeconfig", &kc, "--relay-namespace", "team-relay", "--no-install"];
    lab.connect_args(&args, &[], "connected", Duration::from_secs(120))?;
    let transport = lab.status()?["transport"].as_str().unwrap_or_default().to_owned();
    if !transport.starts_with("port-forward team-relay/devnet-relay-") {
        return Err(format!("expected the port-forward into team-relay, got {transport:?}"));
    }
    let log = lab.engine_log();
    if log.contains("installing the relay") || !log.contains("enrolling as dev with the relay in namespace team-relay")
    {
        return Err(format!("connect should use the chart's relay and enrol with it:\n{log}"));
    }
    lab.real_web_answers()?;
    lab.disconnect()?;

    // An upgrade keeps the Secret, so clients keep their keyring entry.
    let mut upgrade = vec!["upgrade"];
    upgrade.extend(helm_args);
    helm_on_laptop(lab, &upgrade)?;
    if ca_annotation(lab)? != fingerprint {
        return Err("helm upgrade replaced the relay's CA: every client's keyring entry is stale".into());
    }
    lab.connect_args(&args, &[], "connected", Duration::from_secs(60))?;
    if lab.engine_log().contains("enrolling as") {
        return Err(format!(
            "after an upgrade that kept the relay running, connect enrolled again:\n{}",
            lab.engine_log()
        ));
    }
    lab.disconnect()?;
    lab.sh_ok("firewall", &["open"])?;

    let out = lab.devnet(
        &["relay", "status", "--context", "lab", "--kubeconfig", &kc, "--relay-namespace", "team-relay"],
        &[],
    )?;
    let json: String =
        String::from_utf8_lossy(&out.stdout).lines().take_while(|l| !l.starts_with("the relay")).collect();
    let st: Value = serde_json::from_str(&json).map_err(|e| format!("{e}: {}", text(&out)))?;
    if st["namespace"] != "team-relay" || st["ready"] != true || !st["node_port"].is_null() {
        return Err(format!("relay status in team-relay: {st}"));
    }
    helm_on_laptop(lab, &["uninstall", "devnet-relay", "--wait"])?;
    let start = Instant::now();
    while lab.real_api("GET", "/api/v1/namespaces/team-relay", None)?["code"] != 404 {
        if start.elapsed() > Duration::from_secs(60) {
            return Err("namespace team-relay still exists 60 s after helm uninstall".into());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    lab.laptop_unchanged("after the chart's relay")
}

//! The relay's Helm chart (`installers/relay/chart/devnet-relay`) against
//! `devnet relay manifests`: for every value set, `helm lint` passes and
//! `helm template` renders the same objects as `devnet relay manifests` with
//! the same settings (both parsed as YAML and compared as JSON values);
//! values that would install something wrong are refused, each with its
//! reason; and the credentials the chart generates are ones the relay and
//! its clients accept.
//!
//! Helm is the real one, v3.22.0, built from its Go module by
//! `tests/lab/helm/build.sh` into a cache outside the repository (a no-op
//! when it is there). `DEVNET_HELM` may name another binary.
//!
//! The server-side dry run against the real API server is in the lab:
//! `tests/lab_relay_chart.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use base64::Engine;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn chart() -> PathBuf {
    root().join("installers/relay/chart/devnet-relay")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The helm binary: `DEVNET_HELM`, else what `tests/lab/helm/build.sh`
/// prints (it builds Helm once, from the pinned module, when it is missing).
fn helm() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        if let Some(h) = std::env::var_os("DEVNET_HELM") {
            return PathBuf::from(h);
        }
        let out = Command::new("bash")
            .arg(root().join("tests/lab/helm/build.sh"))
            .output()
            .expect("run tests/lab/helm/build.sh");
        assert!(out.status.success(), "tests/lab/helm/build.sh failed (it needs Go >= 1.26):\n{}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let path = stdout.lines().find_map(|l| l.strip_prefix("helm=")).expect("build.sh prints helm=PATH");
        PathBuf::from(path)
    })
}

fn run_helm(args: &[&str]) -> Output {
    Command::new(helm()).args(args).output().expect("run helm")
}

fn devnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_devnet"))
        .args(args)
        // Never the machine's own cluster: every run here names its CIDRs.
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("DEVNET_RELAY_NAMESPACE")
        .env_remove("DEVNET_RELAY_IMAGE")
        .output()
        .expect("run devnet")
}

/// Every YAML document in `text` (comments and empty documents dropped).
fn documents(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .unwrap_or_else(|e| panic!("not YAML: {e}\n{text}"))
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

/// Objects by kind, namespace and name (Helm orders by kind; devnet in the
/// order it applies, which `devnet-kube`'s own tests pin).
fn by_identity(objs: Vec<Value>) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for o in objs {
        let key = format!(
            "{} {}/{}",
            o["kind"].as_str().unwrap_or("?"),
            o["metadata"]["namespace"].as_str().unwrap_or("-"),
            o["metadata"]["name"].as_str().unwrap_or("?")
        );
        assert!(out.insert(key.clone(), o).is_none(), "{key} twice");
    }
    out
}

/// A value set: the chart's values (a file) and the same settings as
/// `devnet relay manifests` flags.
struct Case {
    name: &'static str,
    values: &'static str,
    flags: &'static [&'static str],
}

const DEFAULTS: Case = Case {
    name: "defaults",
    values: "allowedCIDRs: [10.244.0.0/16, 10.96.0.0/16]\nclusterDNS: [10.96.0.10]\n",
    flags: &["--allow", "10.244.0.0/16,10.96.0.0/16", "--dns", "10.96.0.10", "--include-secret"],
};

const ADMIN: Case = Case {
    name: "admin",
    values: r#"
namespace: team-net
image: registry.example.com/mirror/devnet-relay:0.1.0
allowedCIDRs: [10.244.0.0/16, 10.96.0.0/12, "fd00:244::/56", "fd00:96::/112"]
clusterDNS: [10.96.0.10, "fd00:96::a"]
resources:
  requests: {cpu: 100m, memory: 64Mi}
  # A number, as people write it: the chart quotes it as devnet does.
  limits: {cpu: 2, memory: 512Mi}
nodePort: {enabled: false}
credentials: {create: false}
"#,
    flags: &[
        "--relay-namespace",
        "team-net",
        "--relay-image",
        "registry.example.com/mirror/devnet-relay:0.1.0",
        "--allow",
        "10.244.0.0/16,10.96.0.0/12",
        "--allow",
        "fd00:244::/56,fd00:96::/112",
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
    ],
};

/// The namespace made elsewhere: the chart leaves it out, and otherwise
/// renders what devnet prints.
const OWN_NAMESPACE: Case = Case {
    name: "own-namespace",
    values: "createNamespace: false\nnamespace: platform\nallowedCIDRs: [172.16.0.0/12]\nresources:\n  requests: {cpu: 0.5, memory: 1Gi}\n  limits: {cpu: \"1\", memory: 1Gi}\ncredentials: {create: false}\n",
    flags: &[
        "--relay-namespace",
        "platform",
        "--allow",
        "172.16.0.0/12",
        "--cpu-request",
        "0.5",
        "--memory-request",
        "1Gi",
        "--memory-limit",
        "1Gi",
    ],
};

fn values_file(case: &Case) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("relay-chart");
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let path = dir.join(format!("{}.yaml", case.name));
    std::fs::write(&path, case.values).expect("write values");
    path
}

fn render(case: &Case) -> Vec<Value> {
    let values = values_file(case);
    let chart = chart();
    let (chart, values) = (chart.to_str().expect("path"), values.to_str().expect("path"));
    let lint = run_helm(&["lint", "--strict", chart, "-f", values]);
    assert!(lint.status.success(), "{}: helm lint:\n{}", case.name, text(&lint));
    let out = run_helm(&["template", "devnet-relay", chart, "-f", values]);
    assert!(out.status.success(), "{}: helm template:\n{}", case.name, text(&out));
    documents(&String::from_utf8_lossy(&out.stdout))
}

fn manifests(case: &Case) -> (Vec<Value>, String) {
    let mut args = vec!["relay", "manifests"];
    args.extend(case.flags);
    let out = devnet(&args);
    assert!(out.status.success(), "{}: devnet {args:?}:\n{}", case.name, text(&out));
    (documents(&String::from_utf8_lossy(&out.stdout)), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn assert_same(case: &str, chart: &BTreeMap<String, Value>, devnet: &BTreeMap<String, Value>) {
    assert_eq!(
        chart.keys().collect::<Vec<_>>(),
        devnet.keys().collect::<Vec<_>>(),
        "{case}: the chart and devnet render different objects"
    );
    for (key, want) in devnet {
        let got = &chart[key];
        assert!(
            got == want,
            "{case}: {key} differs\n--- helm template\n{}\n--- devnet relay manifests\n{}",
            serde_json::to_string_pretty(got).unwrap_or_default(),
            serde_json::to_string_pretty(want).unwrap_or_default()
        );
    }
}

fn decode(v: &Value) -> String {
    let raw = base64::engine::general_purpose::STANDARD.decode(v.as_str().expect("base64 string")).expect("base64");
    String::from_utf8(raw).expect("text")
}

const TLS_SECRET: &str = "Secret devnet/devnet-relay-tls";
const DEPLOYMENT: &str = "Deployment devnet/devnet-relay";
const CA_ANNOTATION: &str = "devnet.dev/ca-sha256";

/// Defaults: the same objects, except what is random on both sides: the
/// Secret's data (a fresh CA and key pair each run) and the CA fingerprint
/// on the Deployment and its pod. Those are checked for what they must be
/// instead: the key pair and CA in the one Secret (no token, no Secret
/// for users), and a fingerprint of that CA.
#[test]
fn chart_defaults_render_what_devnet_installs() {
    let mut chart = by_identity(render(&DEFAULTS));
    let (devnet, _) = manifests(&DEFAULTS);
    let mut devnet = by_identity(devnet);
    for objs in [&mut chart, &mut devnet] {
        let data = objs.get_mut(TLS_SECRET).expect("the TLS Secret")["data"].take();
        let keys: Vec<&String> = data.as_object().expect("data").keys().collect();
        assert_eq!(keys, ["ca.crt", "tls.crt", "tls.key"]);
        assert!(!objs.keys().any(|k| k.starts_with("Secret ") && k != TLS_SECRET), "one Secret: {:?}", objs.keys());
        let deploy = objs.get_mut(DEPLOYMENT).expect("a Deployment");
        let fingerprint = deploy["metadata"]["annotations"][CA_ANNOTATION].take();
        assert_eq!(fingerprint, devnet_kube::relay::ca_fingerprint(&decode(&data["ca.crt"])).as_str());
        // The pod carries it too (new credentials restart the pod).
        let on_pod = deploy["spec"]["template"]["metadata"]["annotations"][CA_ANNOTATION].take();
        assert_eq!(on_pod, fingerprint);
    }
    assert_same("defaults", &chart, &devnet);
    // The image is this release's, as `devnet connect` deploys it.
    let image = &devnet[DEPLOYMENT]["spec"]["template"]["spec"]["containers"][0]["image"];
    assert_eq!(image, &format!("ghcr.io/devnet-dev/devnet-relay:{}", env!("CARGO_PKG_VERSION")).as_str());
}

/// Every setting changed, and nothing random: no Secret on either side
/// (made out of band), no fingerprint, so the objects are equal as they are.
#[test]
fn chart_with_every_setting_changed_renders_what_devnet_prints() {
    let chart = by_identity(render(&ADMIN));
    let (devnet, note) = manifests(&ADMIN);
    let devnet = by_identity(devnet);
    assert_same("admin", &chart, &devnet);
    let svc = &devnet["Service team-net/devnet-relay"];
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    // Without the Secret, devnet says how to make it.
    assert!(
        note.contains("devnet relay manifests --secret-only --relay-namespace team-net | kubectl apply -f -"),
        "{note}"
    );
}

#[test]
fn chart_without_its_namespace_renders_the_rest() {
    let chart = by_identity(render(&OWN_NAMESPACE));
    let (devnet, _) = manifests(&OWN_NAMESPACE);
    let mut devnet = by_identity(devnet);
    assert!(devnet.remove("Namespace -/platform").is_some(), "devnet prints the Namespace it would make");
    assert_same("own-namespace", &chart, &devnet);
}

/// Values that would install something wrong are refused before anything
/// renders, each with its reason, and devnet refuses the same CIDRs for the
/// same reason.
#[test]
fn bad_values_are_refused_with_their_reason() {
    let chart = chart();
    let chart = chart.to_str().expect("path");
    // The defaults name no CIDR: nothing installs until the admin says which.
    let out = run_helm(&["template", "devnet-relay", chart]);
    assert!(
        !out.status.success() && text(&out).contains("at '/allowedCIDRs': minItems: got 0, want 1"),
        "{}",
        text(&out)
    );
    let out = run_helm(&["lint", chart]);
    assert!(!out.status.success() && text(&out).contains("'/allowedCIDRs'"), "{}", text(&out));
    let cases: &[(&str, &str)] = &[
        ("allowedCIDRs={0.0.0.0/0}", "allowedCIDRs: 0.0.0.0/0 is a default route"),
        ("allowedCIDRs={10.244.0.0/16,::/0}", "allowedCIDRs: ::/0 is a default route"),
        ("allowedCIDRs={10.0.0.0/7}", "10.0.0.0/7 is a range far wider than any cluster network"),
        ("allowedCIDRs={fd00::/8}", "fd00::/8 is a range far wider than any cluster network"),
        ("allowedCIDRs={127.0.0.0/8}", "127.0.0.0/8 is loopback"),
        ("allowedCIDRs={pods}", "at '/allowedCIDRs/0': 'pods' does not match pattern"),
        ("clusterDNS={kube-dns}", "at '/clusterDNS/0': 'kube-dns' does not match pattern"),
        ("namespace=Team_Net", "at '/namespace': 'Team_Net' does not match pattern"),
        ("resources.limits.memory=lots", "at '/resources/limits/memory': 'lots' does not match pattern"),
        ("nodePort.enabled=yes", "at '/nodePort/enabled': got string, want boolean"),
        // A typo is an error, not a setting silently ignored.
        ("nodeport.enabled=false", "additional properties 'nodeport' not allowed"),
        ("credentials.existing=x", "additional properties 'existing' not allowed"),
    ];
    for (set, says) in cases {
        let out = run_helm(&["template", "devnet-relay", chart, "--set", "allowedCIDRs={10.244.0.0/16}", "--set", set]);
        assert!(!out.status.success(), "--set {set} was accepted");
        assert!(text(&out).contains(says), "--set {set}: expected {says:?} in:\n{}", text(&out));
    }
    for (allow, says) in [
        ("0.0.0.0/0", "0.0.0.0/0 is a default route"),
        ("127.0.0.0/8", "127.0.0.0/8 is loopback"),
        ("10.0.0.0/7", "10.0.0.0/7 is a range far wider than any cluster network"),
        ("pods", "--allow pods: not a CIDR"),
    ] {
        let out = devnet(&["relay", "manifests", "--allow", allow]);
        assert!(!out.status.success() && text(&out).contains(says), "--allow {allow}: {}", text(&out));
        assert!(out.stdout.is_empty(), "--allow {allow}: printed objects before refusing");
    }
    let out = devnet(&["relay", "manifests", "--allow", "10.244.0.0/16", "--relay-namespace", "Team_Net"]);
    assert!(!out.status.success() && text(&out).contains("is not a namespace name"), "{}", text(&out));
    let out = devnet(&["relay", "manifests", "--allow", "10.244.0.0/16", "--memory-limit", "lots"]);
    assert!(!out.status.success() && text(&out).contains("is not a Kubernetes quantity"), "{}", text(&out));
}

/// The key pair and CA the chart generates (ECDSA P-256 through Helm's
/// `genCAWithKey`/`genSignedCertWithKey`) load in the relay's TLS
/// configuration, and a client that trusts only that CA completes a
/// handshake for the relay's fixed name, as `devnet connect` does.
#[test]
fn credentials_the_chart_generates_serve_the_relay() {
    let objs = by_identity(render(&DEFAULTS));
    let data = &objs[TLS_SECRET]["data"];
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("relay-chart-credentials");
    std::fs::create_dir_all(&dir).expect("dir");
    for f in ["tls.crt", "tls.key"] {
        std::fs::write(dir.join(f), decode(&data[f])).expect("write");
    }
    let server = devnet_tls::server_config(&dir.join("tls.crt"), &dir.join("tls.key")).expect("the relay loads them");
    let client = devnet_tls::client_config_from_pem(&decode(&data["ca.crt"])).expect("a client trusts the CA");
    handshake(server, client).expect("TLS handshake with the chart's credentials");
    // A CA from another render is refused: the pin is real.
    let other = by_identity(render(&DEFAULTS));
    let client = devnet_tls::client_config_from_pem(&decode(&other[TLS_SECRET]["data"]["ca.crt"])).expect("CA");
    let server = devnet_tls::server_config(&dir.join("tls.crt"), &dir.join("tls.key")).expect("server");
    assert!(handshake(server, client).is_err(), "a client pinned to another CA accepted the relay");
}

/// Both sides of a TLS handshake in memory.
fn handshake(
    server: std::sync::Arc<rustls::ServerConfig>,
    client: std::sync::Arc<rustls::ClientConfig>,
) -> Result<(), rustls::Error> {
    let mut c = rustls::ClientConnection::new(client, devnet_tls::relay_server_name())?;
    let mut s = rustls::ServerConnection::new(server)?;
    for _ in 0..10 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).expect("write");
        }
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            s.read_tls(&mut rd).expect("read");
        }
        s.process_new_packets()?;
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).expect("write");
        }
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            c.read_tls(&mut rd).expect("read");
        }
        c.process_new_packets()?;
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok(());
        }
    }
    panic!("the handshake did not finish");
}

/// `--secret-only` prints the relay's Secret with fresh credentials;
/// `--include-secret` adds it (and the CA fingerprint) to the rest; by
/// default it is not there.
#[test]
fn the_secret_is_printed_only_when_asked_for() {
    let (objs, note) =
        manifests(&Case { name: "plain", values: "", flags: &["--allow", "10.244.0.0/16", "--dns", "10.96.0.10"] });
    let kinds: Vec<&str> = objs.iter().map(|o| o["kind"].as_str().expect("kind")).collect();
    // The order devnet applies in (install is the same function).
    assert_eq!(kinds, ["Namespace", "ServiceAccount", "ConfigMap", "Role", "Deployment", "Service", "NetworkPolicy"]);
    assert_eq!(objs[4]["metadata"].get("annotations"), None);
    assert!(note.contains("the Secret devnet/devnet-relay-tls (the relay's private key and CA) is left out"), "{note}");
    assert!(note.contains("users read no Secret"), "{note}");
    let out = devnet(&["relay", "manifests", "--secret-only", "--relay-namespace", "team-net"]);
    assert!(out.status.success(), "{}", text(&out));
    let objs = documents(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(objs.len(), 1);
    assert!(objs.iter().all(|o| o["kind"] == "Secret" && o["metadata"]["namespace"] == "team-net"));
    assert_eq!(objs[0]["metadata"]["name"], "devnet-relay-tls");
    assert!(decode(&objs[0]["data"]["tls.key"]).contains("PRIVATE KEY"));
    assert!(decode(&objs[0]["data"]["ca.crt"]).contains("BEGIN CERTIFICATE"));
    let out = devnet(&["relay", "manifests", "--secret-only", "--allow", "10.0.0.0/16"]);
    assert!(!out.status.success(), "--secret-only takes no CIDRs: {}", text(&out));
}

//! Discovery through the REST API: `devnet-kube`'s client against the
//! **stand-in API server** (a real one cannot run here) on loopback, serving
//! the same fixture clusters as the pure discovery tests. This covers what
//! those cannot: the REST paths, a 404 for an API the cluster does not
//! serve (ServiceCIDR before 1.33, Calico without its API server), and the
//! dry-run ClusterIP probe answered by the allocator's real wording, for
//! IPv4 and IPv6-only clusters.

use std::path::{Path, PathBuf};

use devnet_kube::discover::{Source, discover};
use devnet_kube::{Cluster, ClusterOptions};
use devnet_lab::apiserver::{Config, serve_on};

struct StandIn {
    dir: PathBuf,
    kubeconfig: PathBuf,
}

/// Starts the stand-in on 127.0.0.1 for one fixture cluster.
async fn stand_in(fixture: &str, service_ranges: &str, servicecidr_api: bool) -> StandIn {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/devnet-kube/tests/fixtures").join(fixture);
    let dir = std::env::temp_dir().join(format!("devnet-standin-{fixture}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(
        dir.join("users.yaml"),
        "users:\n- name: dev\n  token: t\n  rules:\n  - {verbs: [\"*\"], resources: [\"*\"]}\n",
    )
    .expect("users");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let config = Config {
        listen: addr,
        tls_dir: dir.clone(),
        manifests: Some(fixtures),
        users: dir.join("users.yaml"),
        service_ranges: service_ranges.split(',').map(|r| r.parse().expect("range")).collect(),
        servicecidr_api,
        kubelet: None,
    };
    tokio::spawn(async move { serve_on(listener, config).await.expect("stand-in") });
    for _ in 0..100 {
        if dir.join("ca.crt").exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let ca = std::fs::read(dir.join("ca.crt")).expect("ca");
    let ca = base64_encode(&ca);
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: t\nclusters:\n- name: t\n  cluster: {{server: \"https://{addr}\", certificate-authority-data: \"{ca}\"}}\nusers:\n- {{name: t, user: {{token: t}}}}\ncontexts:\n- {{name: t, context: {{cluster: t, user: t}}}}\n"
        ),
    )
    .expect("kubeconfig");
    StandIn { dir, kubeconfig }
}

fn base64_encode(bytes: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
}

async fn discover_via_api(s: &StandIn) -> (devnet_kube::discover::Discovery, devnet_kube::discover::Sources) {
    let opts = ClusterOptions { kubeconfig: Some(s.kubeconfig.clone()), ..Default::default() };
    let cluster = Cluster::connect(&opts).await.expect("connect to the stand-in");
    let sources = cluster.gather(None).await.expect("gather");
    (discover(&sources).expect("discover"), sources)
}

#[tokio::test]
async fn calico_ipip_cluster_without_servicecidr_api() {
    let s = stand_in("calico-ipip-v1", "10.96.0.0/12", false).await;
    let (d, sources) = discover_via_api(&s).await;
    assert_eq!(d.pod_cidrs[0].source, Source::CalicoV1Pool("default-ipv4-ippool".into()));
    assert!(d.calico_pools[0].is_overlay());
    assert_eq!(d.service_cidrs[0].value.to_string(), "10.96.0.0/12");
    assert_eq!(d.service_cidrs[0].source, Source::RejectedClusterIp, "the allocator named the range");
    assert!(
        sources.unavailable.iter().any(|n| n.starts_with("ServiceCIDRs") && n.contains("not served")),
        "the 404 is noted: {:?}",
        sources.unavailable
    );
    assert!(sources.unavailable.iter().any(|n| n.contains("projectcalico.org/v3")), "{:?}", sources.unavailable);
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[tokio::test]
async fn ipv6_only_cluster() {
    let s = stand_in("ipv6-only", "fd00:96::/108", false).await;
    let (d, sources) = discover_via_api(&s).await;
    assert_eq!(d.pod_cidrs[0].value.to_string(), "fd00:244::/63");
    assert_eq!(d.service_cidrs[0].value.to_string(), "fd00:96::/108");
    assert_eq!(d.dns_servers[0].value.to_string(), "fd00:96::a");
    assert!(
        sources.rejected_cluster_ip.iter().any(|m| m.contains("IPv4") && m.contains("not configured")),
        "the IPv4 probe is refused as on a real IPv6-only cluster: {:?}",
        sources.rejected_cluster_ip
    );
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[tokio::test]
async fn servicecidr_api_wins_over_the_probe() {
    let s = stand_in("calico-v3-vxlan", "10.100.0.0/16", true).await;
    let (d, sources) = discover_via_api(&s).await;
    assert_eq!(d.service_cidrs[0].source, Source::ServiceCidr("kubernetes".into()));
    assert!(sources.rejected_cluster_ip.is_empty(), "no probe when the API answers");
    assert_eq!(d.cluster_domain.value, "corp.internal");
    let _ = std::fs::remove_dir_all(&s.dir);
}

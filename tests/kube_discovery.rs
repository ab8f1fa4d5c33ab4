//! Discovery through the REST API: `devnet-kube`'s client against the
//! **stand-in API server** (a real one cannot run here) on loopback, serving
//! the same fixture clusters as the pure discovery tests. This covers what
//! those cannot: the REST paths, a 404 for an API the cluster does not
//! serve (ServiceCIDR before 1.33, Calico without its API server), and the
//! dry-run ClusterIP probe answered by the allocator's real wording, for
//! IPv4 and IPv6-only clusters.

use std::path::Path;

use devnet_kube::discover::{Source, discover};
use devnet_kube::{Cluster, ClusterOptions};
use devnet_lab::apiserver::Loopback;

/// Starts the stand-in on 127.0.0.1 for one fixture cluster.
async fn stand_in(fixture: &str, service_ranges: &str, servicecidr_api: bool) -> Loopback {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/devnet-kube/tests/fixtures").join(fixture);
    let users = "users:\n- name: t\n  token: t\n  rules:\n  - {verbs: [\"*\"], resources: [\"*\"]}\n";
    let ranges = service_ranges.split(',').map(|r| r.parse().expect("range")).collect();
    Loopback::start(fixture, users, &["t"], Some(fixtures), ranges, servicecidr_api).await.expect("stand-in")
}

async fn discover_via_api(s: &Loopback) -> (devnet_kube::discover::Discovery, devnet_kube::discover::Sources) {
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
}

#[tokio::test]
async fn servicecidr_api_wins_over_the_probe() {
    let s = stand_in("calico-v3-vxlan", "10.100.0.0/16", true).await;
    let (d, sources) = discover_via_api(&s).await;
    assert_eq!(d.service_cidrs[0].source, Source::ServiceCidr("kubernetes".into()));
    assert!(sources.rejected_cluster_ip.is_empty(), "no probe when the API answers");
    assert_eq!(d.cluster_domain.value, "corp.internal");
}

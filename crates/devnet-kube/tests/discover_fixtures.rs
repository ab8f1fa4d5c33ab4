//! Discovery on fixture clusters: each folder under `fixtures/` holds the API
//! objects a cluster would serve (`objects.yaml`), the API server's answers
//! to the dry-run ClusterIP probe (`rejected.txt`), and the APIs it does not
//! serve (`unavailable.txt`).

use std::net::IpAddr;
use std::path::Path;

use devnet_kube::discover::{Discovery, DiscoveryError, Source, Sources, discover};
use ipnet::IpNet;
use serde_json::Value;

fn load(name: &str) -> Sources {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let text = std::fs::read_to_string(dir.join("objects.yaml")).expect("objects.yaml");
    let objects: Vec<Value> = serde_saphyr::from_multiple(&text).expect("fixture YAML");
    let lines = |file: &str| -> Vec<String> {
        std::fs::read_to_string(dir.join(file))
            .map(|t| t.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let of = |api: &str, kind: &str| -> Vec<Value> {
        objects.iter().filter(|o| o["apiVersion"] == api && o["kind"] == kind).cloned().collect()
    };
    let some = |v: Vec<Value>| (!v.is_empty()).then_some(v);
    let configmap = |name: &str| of("v1", "ConfigMap").into_iter().find(|o| o["metadata"]["name"] == name);
    Sources {
        nodes: some(of("v1", "Node")),
        calico_v3_pools: some(of("projectcalico.org/v3", "IPPool")),
        calico_v1_pools: some(of("crd.projectcalico.org/v1", "IPPool")),
        pods: some(of("v1", "Pod")),
        service_cidrs: some(of("networking.k8s.io/v1", "ServiceCIDR")),
        rejected_cluster_ip: lines("rejected.txt"),
        kubeadm_config: configmap("kubeadm-config"),
        kubelet_config: configmap("kubelet-config"),
        kube_dns: of("v1", "Service").into_iter().find(|o| o["metadata"]["name"] == "kube-dns"),
        domain_override: None,
        unavailable: lines("unavailable.txt"),
    }
}

fn nets(found: &[devnet_kube::discover::Found<IpNet>]) -> Vec<(String, Source)> {
    found.iter().map(|f| (f.value.to_string(), f.source.clone())).collect()
}

fn ok(name: &str) -> Discovery {
    discover(&load(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn calico_v1_ipip_pool_wins_over_node_cidrs_and_service_range_comes_from_the_probe() {
    let d = ok("calico-ipip-v1");
    assert_eq!(nets(&d.pod_cidrs), [("10.245.0.0/16".into(), Source::CalicoV1Pool("default-ipv4-ippool".into()))]);
    assert_eq!(nets(&d.service_cidrs), [("10.96.0.0/12".into(), Source::RejectedClusterIp)]);
    assert_eq!(d.dns_servers[0].value, "10.96.0.10".parse::<IpAddr>().expect("ip"));
    assert_eq!((d.cluster_domain.value.as_str(), &d.cluster_domain.source), ("cluster.local", &Source::KubeadmConfig));
    let pool = &d.calico_pools[0];
    assert!(pool.is_overlay(), "ipipMode Always is an overlay");
    assert_eq!((pool.ipip.as_str(), pool.vxlan.as_str(), pool.nat_outgoing), ("Always", "Never", true));
    assert!(d.notes.iter().any(|n| n.contains("ServiceCIDR")), "{:?}", d.notes);
}

#[test]
fn calico_v3_pools_skip_disabled_ones_and_servicecidr_api_wins() {
    let d = ok("calico-v3-vxlan");
    assert_eq!(nets(&d.pod_cidrs), [("172.20.0.0/16".into(), Source::CalicoV3Pool("pods-v4".into()))]);
    assert_eq!(nets(&d.service_cidrs), [("10.100.0.0/16".into(), Source::ServiceCidr("kubernetes".into()))]);
    assert_eq!((d.cluster_domain.value.as_str(), &d.cluster_domain.source), ("corp.internal", &Source::KubeletConfig));
    assert_eq!(d.calico_pools.len(), 1, "the v1 copy of the same pool is not read twice");
    assert!(d.calico_pools[0].is_overlay(), "vxlanMode Always is an overlay");
    assert!(d.notes.iter().any(|n| n.contains("old-pool is disabled")), "{:?}", d.notes);
}

#[test]
fn ipv6_only_cluster() {
    let d = ok("ipv6-only");
    assert_eq!(nets(&d.pod_cidrs), [("fd00:244::/63".into(), Source::NodePodCidrs)], "node /64s merge");
    assert_eq!(nets(&d.service_cidrs), [("fd00:96::/108".into(), Source::RejectedClusterIp)]);
    assert_eq!(d.dns_servers[0].value, "fd00:96::a".parse::<IpAddr>().expect("ip"));
    assert_eq!(d.cluster_domain.source, Source::Default);
    assert!(d.notes.iter().any(|n| n.contains("named no range")), "the IPv4 refusal is noted: {:?}", d.notes);
}

#[test]
fn dual_stack_with_servicecidr_api() {
    let d = ok("dual-stack-servicecidr");
    assert_eq!(
        nets(&d.pod_cidrs),
        [("10.244.0.0/23".into(), Source::NodePodCidrs), ("fd00:244::/63".into(), Source::NodePodCidrs)]
    );
    assert_eq!(
        d.service_cidrs.iter().map(|f| f.value.to_string()).collect::<Vec<_>>(),
        ["10.96.0.0/16", "fd00:96::/108"]
    );
    assert_eq!(d.dns_servers.len(), 2, "both families' DNS addresses");
    assert_eq!(d.cidrs().len(), 4);
}

#[test]
fn pod_ips_are_the_last_resort_and_skip_host_network_pods() {
    let d = ok("pod-ips-only");
    assert_eq!(nets(&d.pod_cidrs), [("10.42.0.0/16".into(), Source::PodIps)]);
    assert_eq!(nets(&d.service_cidrs), [("10.43.0.0/16".into(), Source::RejectedClusterIp)]);
}

#[test]
fn a_default_route_is_refused_with_its_source() {
    let err = discover(&load("default-route")).expect_err("0.0.0.0/0 must be refused");
    assert!(matches!(err, DiscoveryError::TooBroad { from: Source::KubeadmConfig, .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("0.0.0.0/0") && text.contains("kubeadm-config") && text.contains("--cidr"), "{text}");
}

#[test]
fn missing_dns_names_the_fix() {
    let err = discover(&load("no-dns")).expect_err("no kube-dns");
    assert_eq!(err, DiscoveryError::NoDns);
    assert!(err.to_string().contains("--dns-server"));
}

#[test]
fn override_beats_every_domain_source() {
    let mut s = load("calico-v3-vxlan");
    s.domain_override = Some("dev.example.".into());
    let d = discover(&s).expect("discover");
    assert_eq!((d.cluster_domain.value.as_str(), d.cluster_domain.source), ("dev.example", Source::Override));
}

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
        allow_public: Vec::new(),
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
fn a_public_range_is_refused_unless_the_user_allows_it() {
    // A service range in a provider's own public space, as GKE gives some
    // clusters: the cluster's word alone must not route it.
    let mut s = load("calico-ipip-v1");
    s.rejected_cluster_ip = vec![
        "Service \"devnet-probe\" is invalid: spec.clusterIPs: Invalid value: []string{\"1.1.1.1\"}: failed to allocate IP 1.1.1.1: the provided IP (1.1.1.1) is not in the valid range. The range of valid IPs is 34.118.224.0/20".into(),
    ];
    let err = discover(&s).expect_err("a public range without the user's word");
    assert!(matches!(err, DiscoveryError::PublicRange { from: Source::RejectedClusterIp, .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("34.118.224.0/20") && text.contains("--allow-public-cidr 34.118.224.0/20"), "{text}");
    // Allowed by the user (the same range, or one holding it), it is used.
    for allowed in ["34.118.224.0/20", "34.118.0.0/16"] {
        s.allow_public = vec![allowed.parse().expect("cidr")];
        assert_eq!(
            nets(&discover(&s).expect("allowed").service_cidrs),
            [("34.118.224.0/20".into(), Source::RejectedClusterIp)]
        );
    }
    // A narrower allowance does not cover it.
    s.allow_public = vec!["34.118.224.0/24".parse().expect("cidr")];
    assert!(discover(&s).is_err());
}

#[test]
fn private_and_shared_space_is_not_public() {
    use devnet_kube::discover::is_private;
    for private in
        ["10.96.0.0/12", "172.20.0.0/16", "192.168.0.0/16", "100.64.0.0/10", "198.18.0.0/15", "fd00:244::/48"]
    {
        assert!(is_private(&private.parse().expect("cidr")), "{private}");
    }
    for public in ["34.118.224.0/20", "8.0.0.0/8", "172.32.0.0/16", "2001:db8::/32", "11.0.0.0/8"] {
        assert!(!is_private(&public.parse().expect("cidr")), "{public}");
    }
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

//! Cluster discovery as pure functions: the API objects go in (as JSON, the
//! way the API server sent them), the cluster's networks come out, each
//! with the source it was read from.
//!
//! No I/O here: [`crate::Cluster::gather`] fetches the [`Sources`], and the
//! fixture tests feed them from files. The order sources are tried in:
//!
//! - **pod CIDRs**: Calico IPPools (`projectcalico.org/v3`, then
//!   `crd.projectcalico.org/v1`), because with Calico IPAM the nodes'
//!   `podCIDRs` are allocated but unused; then `Node.spec.podCIDRs`; then
//!   kubeadm's `podSubnet`; last, live pod IPs widened to a /16 or /64.
//! - **service CIDRs**: `networking.k8s.io/v1 ServiceCIDR`; then the range
//!   named in the API server's answer to a dry-run Service with a ClusterIP
//!   outside it; then kubeadm's `serviceSubnet`.
//! - **cluster DNS**: the `kube-dns` Service's ClusterIPs; the domain from an
//!   override, the kubelet config, kubeadm's `dnsDomain`, else `cluster.local`.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;
use serde_json::Value;

/// Everything discovery reads. `None` means the source was not available
/// (the API is not served, or the user may not read it); the reason goes to
/// [`Discovery::notes`] through [`Sources::unavailable`].
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub nodes: Option<Vec<Value>>,
    pub calico_v3_pools: Option<Vec<Value>>,
    pub calico_v1_pools: Option<Vec<Value>>,
    pub pods: Option<Vec<Value>>,
    pub service_cidrs: Option<Vec<Value>>,
    /// The API server's messages refusing dry-run Services whose ClusterIP
    /// lies outside the service range (one per address family tried).
    pub rejected_cluster_ip: Vec<String>,
    /// `kube-system/kubeadm-config`.
    pub kubeadm_config: Option<Value>,
    /// `kube-system/kubelet-config`.
    pub kubelet_config: Option<Value>,
    /// `kube-system/kube-dns` (or the Service labelled `k8s-app=kube-dns`).
    pub kube_dns: Option<Value>,
    /// The user's `--cluster-domain`.
    pub domain_override: Option<String>,
    /// Public ranges the user allows the cluster to claim
    /// (`--allow-public-cidr`): some providers give clusters ranges of
    /// their own public space.
    pub allow_public: Vec<IpNet>,
    /// Why a source is missing, for `status` and `doctor`.
    pub unavailable: Vec<String>,
}

/// Where a value was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    CalicoV3Pool(String),
    CalicoV1Pool(String),
    NodePodCidrs,
    KubeadmConfig,
    PodIps,
    ServiceCidr(String),
    RejectedClusterIp,
    KubeDnsService,
    KubeletConfig,
    Override,
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CalicoV3Pool(n) => write!(f, "Calico IPPool {n} (projectcalico.org/v3)"),
            Self::CalicoV1Pool(n) => write!(f, "Calico IPPool {n} (crd.projectcalico.org/v1)"),
            Self::NodePodCidrs => f.write_str("Node.spec.podCIDRs"),
            Self::KubeadmConfig => f.write_str("kube-system/kubeadm-config"),
            Self::PodIps => f.write_str("live pod IPs (estimated)"),
            Self::ServiceCidr(n) => write!(f, "ServiceCIDR {n}"),
            Self::RejectedClusterIp => f.write_str("the API server's answer to a dry-run ClusterIP"),
            Self::KubeDnsService => f.write_str("kube-system/kube-dns Service"),
            Self::KubeletConfig => f.write_str("kube-system/kubelet-config"),
            Self::Override => f.write_str("--cluster-domain"),
            Self::Default => f.write_str("the default"),
        }
    }
}

/// A discovered value and its source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Found<T> {
    pub value: T,
    pub source: Source,
}

/// How a Calico pool carries pod traffic between nodes: with IPIP or VXLAN
/// always on, pod IPs are not routable from outside the cluster (seed 002).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PoolMode {
    pub pool: String,
    pub cidr: IpNet,
    pub ipip: String,
    pub vxlan: String,
    pub nat_outgoing: bool,
}

impl PoolMode {
    /// Whether pods in this pool are reached through an overlay.
    pub fn is_overlay(&self) -> bool {
        self.ipip == "Always" || self.vxlan == "Always"
    }
}

/// What discovery found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Discovery {
    pub pod_cidrs: Vec<Found<IpNet>>,
    pub service_cidrs: Vec<Found<IpNet>>,
    pub dns_servers: Vec<Found<IpAddr>>,
    pub cluster_domain: Found<String>,
    pub calico_pools: Vec<PoolMode>,
    /// Sources that were missing or unusable, and why.
    pub notes: Vec<String>,
}

impl Discovery {
    /// Every CIDR to route, pods first.
    pub fn cidrs(&self) -> Vec<IpNet> {
        self.pod_cidrs.iter().chain(&self.service_cidrs).map(|f| f.value).collect()
    }
}

/// Why discovery cannot produce a usable answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DiscoveryError {
    #[error(
        "found no pod CIDR: no Calico IPPool, no Node.spec.podCIDRs, no kubeadm podSubnet and no running pod; pass --cidr for the pod network"
    )]
    NoPodCidr,
    #[error(
        "found no service CIDR: no ServiceCIDR API, the dry-run ClusterIP probe named no range, and no kubeadm serviceSubnet; pass --cidr for the service network"
    )]
    NoServiceCidr,
    #[error(
        "found no cluster DNS: kube-system has no kube-dns Service with a ClusterIP; pass --dns-server with the cluster DNS address"
    )]
    NoDns,
    #[error(
        "{from} says {cidr}, which would route {what} into the cluster; refusing it. Fix the cluster's setting, or pass --cidr with the real range"
    )]
    TooBroad { cidr: IpNet, from: Source, what: &'static str },
    #[error(
        "{from} says {cidr}, a public range: routing it would send traffic for those internet addresses into the cluster, so devnet refuses it. If the cluster really uses it (some providers give clusters ranges of their own public space), allow it with --allow-public-cidr {cidr}"
    )]
    PublicRange { cidr: IpNet, from: Source },
}

/// Turns the fetched objects into the cluster's networks.
pub fn discover(sources: &Sources) -> Result<Discovery, DiscoveryError> {
    let mut notes = sources.unavailable.clone();
    let kubeadm = sources.kubeadm_config.as_ref().and_then(|cm| kubeadm_networking(cm, &mut notes));

    let mut calico_pools = Vec::new();
    let mut pod_cidrs = Vec::new();
    for (pools, v3) in [(&sources.calico_v3_pools, true), (&sources.calico_v1_pools, false)] {
        if !pod_cidrs.is_empty() {
            break;
        }
        for pool in pools.iter().flatten() {
            let Some(mode) = calico_pool(pool, &mut notes) else { continue };
            let source =
                if v3 { Source::CalicoV3Pool(mode.pool.clone()) } else { Source::CalicoV1Pool(mode.pool.clone()) };
            pod_cidrs.push(Found { value: mode.cidr, source });
            calico_pools.push(mode);
        }
    }
    if pod_cidrs.is_empty() {
        let from_nodes = node_pod_cidrs(sources.nodes.as_deref().unwrap_or_default(), &mut notes);
        pod_cidrs.extend(from_nodes.into_iter().map(|value| Found { value, source: Source::NodePodCidrs }));
    }
    if pod_cidrs.is_empty()
        && let Some(k) = &kubeadm
    {
        pod_cidrs.extend(k.pod_subnets.iter().map(|&value| Found { value, source: Source::KubeadmConfig }));
    }
    if pod_cidrs.is_empty() {
        let estimated = pod_ip_ranges(sources.pods.as_deref().unwrap_or_default());
        pod_cidrs.extend(estimated.into_iter().map(|value| Found { value, source: Source::PodIps }));
    }
    if pod_cidrs.is_empty() {
        return Err(DiscoveryError::NoPodCidr);
    }

    let mut service_cidrs: Vec<Found<IpNet>> = Vec::new();
    for sc in sources.service_cidrs.iter().flatten() {
        let name = str_at(sc, &["metadata", "name"]).unwrap_or("?").to_owned();
        for c in sc.pointer("/spec/cidrs").and_then(Value::as_array).into_iter().flatten() {
            match c.as_str().map(str::parse::<IpNet>) {
                Some(Ok(net)) => {
                    service_cidrs.push(Found { value: net.trunc(), source: Source::ServiceCidr(name.clone()) })
                }
                _ => notes.push(format!("ServiceCIDR {name} has an unreadable CIDR {c}")),
            }
        }
    }
    if service_cidrs.is_empty() {
        for message in &sources.rejected_cluster_ip {
            match parse_valid_range(message) {
                Some(nets) => service_cidrs
                    .extend(nets.into_iter().map(|value| Found { value, source: Source::RejectedClusterIp })),
                None => notes.push(format!("the dry-run ClusterIP probe named no range: {message}")),
            }
        }
    }
    if service_cidrs.is_empty()
        && let Some(k) = &kubeadm
    {
        service_cidrs.extend(k.service_subnets.iter().map(|&value| Found { value, source: Source::KubeadmConfig }));
    }
    if service_cidrs.is_empty() {
        return Err(DiscoveryError::NoServiceCidr);
    }
    dedup(&mut pod_cidrs);
    dedup(&mut service_cidrs);
    for f in pod_cidrs.iter().chain(&service_cidrs) {
        refuse_too_broad(f, "every address of the family")?;
        refuse_public(f, &sources.allow_public)?;
    }

    let dns_servers: Vec<Found<IpAddr>> = sources
        .kube_dns
        .as_ref()
        .map(cluster_ips)
        .unwrap_or_default()
        .into_iter()
        .map(|value| Found { value, source: Source::KubeDnsService })
        .collect();
    if dns_servers.is_empty() {
        return Err(DiscoveryError::NoDns);
    }

    let kubelet_domain = sources.kubelet_config.as_ref().and_then(|cm| kubelet_domain(cm, &mut notes));
    let cluster_domain = match (&sources.domain_override, kubelet_domain, kubeadm.and_then(|k| k.dns_domain)) {
        (Some(d), _, _) => Found { value: d.trim_end_matches('.').to_owned(), source: Source::Override },
        (None, Some(d), _) => Found { value: d, source: Source::KubeletConfig },
        (None, None, Some(d)) => Found { value: d, source: Source::KubeadmConfig },
        (None, None, None) => Found { value: "cluster.local".to_owned(), source: Source::Default },
    };

    Ok(Discovery { pod_cidrs, service_cidrs, dns_servers, cluster_domain, calico_pools, notes })
}

fn dedup(found: &mut Vec<Found<IpNet>>) {
    let mut seen = BTreeSet::new();
    found.retain(|f| seen.insert(f.value));
}

/// A default route, or anything wider than a /8 (IPv4) or /16 (IPv6), is a
/// misconfiguration or a lie: routing it would capture the internet.
fn refuse_too_broad(found: &Found<IpNet>, what: &'static str) -> Result<(), DiscoveryError> {
    if too_broad(&found.value).is_some() {
        let what = if found.value.prefix_len() == 0 { what } else { "a range far wider than any cluster network" };
        return Err(DiscoveryError::TooBroad { cidr: found.value, from: found.source.clone(), what });
    }
    Ok(())
}

/// The cluster steers the laptop's routes: a range outside the private
/// and shared address space is refused unless the user allowed it.
fn refuse_public(found: &Found<IpNet>, allowed: &[IpNet]) -> Result<(), DiscoveryError> {
    if is_private(&found.value) || allowed.iter().any(|a| a.contains(&found.value)) {
        return Ok(());
    }
    Err(DiscoveryError::PublicRange { cidr: found.value, from: found.source.clone() })
}

/// Whether `net` lies inside address space no internet host uses: RFC 1918,
/// shared address space (RFC 6598, 100.64.0.0/10), benchmarking
/// (198.18.0.0/15), and IPv6 unique local addresses (fc00::/7).
pub fn is_private(net: &IpNet) -> bool {
    const PRIVATE: [&str; 6] =
        ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "198.18.0.0/15", "fc00::/7"];
    PRIVATE.iter().filter_map(|p| p.parse::<IpNet>().ok()).any(|p| p.contains(net))
}

/// Why `net` can be no cluster network: a default route, loopback, the
/// unspecified address, or wider than a /8 (IPv4) or /16 (IPv6). The same
/// rule holds for the CIDRs an admin lets the relay dial.
pub fn too_broad(net: &IpNet) -> Option<&'static str> {
    let min = match net {
        IpNet::V4(_) => 8,
        IpNet::V6(_) => 16,
    };
    if net.prefix_len() == 0 {
        Some("a default route")
    } else if net.addr().is_loopback() {
        Some("loopback")
    } else if net.addr().is_unspecified() || net.prefix_len() < min {
        Some("a range far wider than any cluster network")
    } else {
        None
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn calico_pool(pool: &Value, notes: &mut Vec<String>) -> Option<PoolMode> {
    let name = str_at(pool, &["metadata", "name"]).unwrap_or("?").to_owned();
    let spec = pool.get("spec")?;
    if spec.get("disabled").and_then(Value::as_bool) == Some(true) {
        notes.push(format!("Calico IPPool {name} is disabled; skipped"));
        return None;
    }
    let cidr = match spec.get("cidr").and_then(Value::as_str).map(str::parse::<IpNet>) {
        Some(Ok(c)) => c.trunc(),
        _ => {
            notes.push(format!("Calico IPPool {name} has no readable spec.cidr; skipped"));
            return None;
        }
    };
    let mode = |key| spec.get(key).and_then(Value::as_str).unwrap_or("Never").to_owned();
    Some(PoolMode {
        pool: name,
        cidr,
        ipip: mode("ipipMode"),
        vxlan: mode("vxlanMode"),
        nat_outgoing: spec.get("natOutgoing").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// Each node's `podCIDRs` (or the older single `podCIDR`), merged into the
/// fewest covering networks.
fn node_pod_cidrs(nodes: &[Value], notes: &mut Vec<String>) -> Vec<IpNet> {
    let mut nets = Vec::new();
    for node in nodes {
        let spec = node.get("spec");
        let many = spec.and_then(|s| s.get("podCIDRs")).and_then(Value::as_array);
        let single = spec.and_then(|s| s.get("podCIDR"));
        for c in many.into_iter().flatten().chain(single) {
            match c.as_str().map(str::parse::<IpNet>) {
                Some(Ok(n)) => nets.push(n.trunc()),
                _ => notes.push(format!(
                    "node {} has an unreadable pod CIDR {c}",
                    str_at(node, &["metadata", "name"]).unwrap_or("?")
                )),
            }
        }
    }
    IpNet::aggregate(&nets)
}

/// The /16 (IPv4) or /64 (IPv6) around each non-host-network pod's IP: a
/// guess, flagged as such, for clusters that publish nothing else.
fn pod_ip_ranges(pods: &[Value]) -> Vec<IpNet> {
    let mut nets = BTreeSet::new();
    for pod in pods {
        if pod.pointer("/spec/hostNetwork").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        let ips = pod.pointer("/status/podIPs").and_then(Value::as_array);
        for ip in ips.into_iter().flatten().filter_map(|i| i.get("ip")?.as_str()?.parse::<IpAddr>().ok()) {
            let prefix = if ip.is_ipv4() { 16 } else { 64 };
            if let Ok(net) = IpNet::new(ip, prefix) {
                nets.insert(net.trunc());
            }
        }
    }
    nets.into_iter().collect()
}

/// The ranges in the API server's refusal of an out-of-range ClusterIP:
/// "... The range of valid IPs is 10.96.0.0/12" (one per family on a
/// dual-stack cluster; older servers say "valid IPs is", newer ones list
/// several ServiceCIDRs separated by commas).
pub fn parse_valid_range(message: &str) -> Option<Vec<IpNet>> {
    let idx = message.find("range of valid IPs is")?;
    let rest = &message[idx + "range of valid IPs is".len()..];
    let nets: Vec<IpNet> = rest
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == '"' || c == '\'' || c == ')' || c == '(')
        .filter_map(|w| w.trim_end_matches('.').parse::<IpNet>().ok())
        .map(|n| n.trunc())
        .collect();
    (!nets.is_empty()).then_some(nets)
}

/// Live targets that prove a direct path to each pod CIDR: per CIDR, a
/// running pod (not on the host network) that declares a TCP port, as
/// `IP:port`. The path check connects to it; a CIDR without one can only be
/// tunnelled, never proven direct.
pub fn pod_probe_targets(pods: &[Value], cidrs: &[IpNet]) -> Vec<std::net::SocketAddr> {
    let mut targets = Vec::new();
    for cidr in cidrs {
        let found = pods.iter().find_map(|pod| {
            if pod.pointer("/status/phase").and_then(Value::as_str) != Some("Running")
                || pod.pointer("/spec/hostNetwork").and_then(Value::as_bool) == Some(true)
            {
                return None;
            }
            let port = pod.pointer("/spec/containers")?.as_array()?.iter().find_map(|c| {
                c.get("ports")?.as_array()?.iter().find_map(|p| {
                    let tcp = p.get("protocol").and_then(Value::as_str).is_none_or(|proto| proto == "TCP");
                    tcp.then(|| p.get("containerPort")?.as_u64().and_then(|n| u16::try_from(n).ok()))?
                })
            })?;
            let ips = pod.pointer("/status/podIPs").and_then(Value::as_array)?;
            ips.iter()
                .filter_map(|i| i.get("ip")?.as_str()?.parse::<IpAddr>().ok())
                .find(|ip| cidr.contains(ip))
                .map(|ip| std::net::SocketAddr::new(ip, port))
        });
        targets.extend(found);
    }
    targets
}

/// A Service's ClusterIPs (`clusterIPs`, else `clusterIP`), without `None`.
fn cluster_ips(svc: &Value) -> Vec<IpAddr> {
    let many = svc.pointer("/spec/clusterIPs").and_then(Value::as_array).cloned().unwrap_or_default();
    let one = svc.pointer("/spec/clusterIP").cloned().into_iter();
    let mut ips: Vec<IpAddr> = Vec::new();
    for ip in many.into_iter().chain(one).filter_map(|v| v.as_str()?.parse().ok()) {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    ips
}

#[derive(Debug, Default)]
struct KubeadmNetworking {
    pod_subnets: Vec<IpNet>,
    service_subnets: Vec<IpNet>,
    dns_domain: Option<String>,
}

/// `data.ClusterConfiguration.networking` of the kubeadm-config ConfigMap.
fn kubeadm_networking(cm: &Value, notes: &mut Vec<String>) -> Option<KubeadmNetworking> {
    let text = cm.pointer("/data/ClusterConfiguration")?.as_str()?;
    let config: Value = match serde_saphyr::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            notes.push(format!("kube-system/kubeadm-config is not readable YAML: {e}"));
            return None;
        }
    };
    let net = config.get("networking")?;
    let list = |key: &str| -> Vec<IpNet> {
        net.get(key)
            .and_then(Value::as_str)
            .map(|s| s.split(',').filter_map(|c| c.trim().parse::<IpNet>().ok()).map(|n| n.trunc()).collect())
            .unwrap_or_default()
    };
    Some(KubeadmNetworking {
        pod_subnets: list("podSubnet"),
        service_subnets: list("serviceSubnet"),
        dns_domain: net.get("dnsDomain").and_then(Value::as_str).map(|d| d.trim_end_matches('.').to_owned()),
    })
}

/// `clusterDomain` from the kubelet-config ConfigMap's `data.kubelet`.
fn kubelet_domain(cm: &Value, notes: &mut Vec<String>) -> Option<String> {
    let text = cm.pointer("/data/kubelet")?.as_str()?;
    match serde_saphyr::from_str::<Value>(text) {
        Ok(v) => v.get("clusterDomain")?.as_str().map(|d| d.trim_end_matches('.').to_owned()),
        Err(e) => {
            notes.push(format!("kube-system/kubelet-config is not readable YAML: {e}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_targets_are_running_pods_with_a_tcp_port_in_each_cidr() {
        let pods: Vec<Value> = serde_json::from_str(
            r#"[
            {"spec": {"containers": [{"ports": [{"containerPort": 53, "protocol": "UDP"}, {"containerPort": 9153}]}]},
             "status": {"phase": "Running", "podIPs": [{"ip": "10.244.2.53"}, {"ip": "fd00:244:0:2::53"}]}},
            {"spec": {"containers": [{"ports": [{"containerPort": 8080}]}]},
             "status": {"phase": "Pending", "podIPs": [{"ip": "10.244.1.9"}]}},
            {"spec": {"hostNetwork": true, "containers": [{"ports": [{"containerPort": 10250}]}]},
             "status": {"phase": "Running", "podIPs": [{"ip": "10.244.1.1"}]}},
            {"spec": {"containers": [{"name": "no-ports"}, {"ports": [{"containerPort": 8080, "protocol": "TCP"}]}]},
             "status": {"phase": "Running", "podIPs": [{"ip": "10.244.1.10"}]}}
            ]"#,
        )
        .expect("pods");
        let cidrs: Vec<IpNet> = ["10.244.1.0/24", "10.244.2.0/23", "fd00:244:0:2::/63", "10.244.9.0/24"]
            .iter()
            .map(|c| c.parse().expect("cidr"))
            .collect();
        let got: Vec<String> = pod_probe_targets(&pods, &cidrs).iter().map(ToString::to_string).collect();
        assert_eq!(got, ["10.244.1.10:8080", "10.244.2.53:9153", "[fd00:244:0:2::53]:9153"]);
    }

    #[test]
    fn valid_range_messages_from_real_servers() {
        let cases: &[(&str, &[&str])] = &[
            (
                r#"Service "devnet-probe" is invalid: spec.clusterIPs: Invalid value: []string{"1.1.1.1"}: failed to allocate IP 1.1.1.1: the provided IP (1.1.1.1) is not in the valid range. The range of valid IPs is 10.96.0.0/12"#,
                &["10.96.0.0/12"],
            ),
            (
                r#"Service "devnet-probe" is invalid: spec.clusterIPs[0]: Invalid value: "2001:db8::1": failed to allocate IP 2001:db8::1: the provided IP (2001:db8::1) is not in the valid range. The range of valid IPs is fd00:96::/108"#,
                &["fd00:96::/108"],
            ),
            (
                r#"spec.clusterIPs[0]: Invalid value: "1.1.1.1": provided IP is not in the valid range. The range of valid IPs is 10.43.0.0/16,10.44.0.0/16."#,
                &["10.43.0.0/16", "10.44.0.0/16"],
            ),
        ];
        for (msg, want) in cases {
            let got = parse_valid_range(msg).expect(msg);
            let want: Vec<IpNet> = want.iter().map(|s| s.parse().expect("cidr")).collect();
            assert_eq!(got, want, "{msg}");
        }
        assert_eq!(
            parse_valid_range(
                r#"Service "x" is invalid: spec.ipFamilies[0]: Invalid value: "IPv6": not configured on this cluster"#
            ),
            None
        );
    }
}

//! The lab's **stand-in Kubernetes API server** (see `devnet_lab::apiserver`):
//! a real API server cannot run on these machines.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use devnet_lab::apiserver::{Config, kubelet::Runtime, serve};
use ipnet::IpNet;

#[derive(Debug, Parser)]
#[command(
    about = "A stand-in Kubernetes API server for the devnet lab (REST, watch, dry-run, portforward over WebSocket)"
)]
struct Args {
    #[arg(long)]
    listen: SocketAddr,
    /// Where ca.crt is written.
    #[arg(long)]
    tls_dir: PathBuf,
    /// A folder of YAML manifests to serve.
    #[arg(long)]
    manifests: Option<PathBuf>,
    /// Tokens and their RBAC rules (YAML).
    #[arg(long)]
    users: PathBuf,
    /// The service ranges (comma separated) ClusterIPs are allocated from.
    #[arg(long, value_delimiter = ',')]
    service_range: Vec<IpNet>,
    /// Serve networking.k8s.io/v1 ServiceCIDR (Kubernetes 1.33+).
    #[arg(long)]
    servicecidr_api: bool,
    /// Run pods: the network namespace the pod's process runs in.
    #[arg(long)]
    pod_netns: Option<String>,
    #[arg(long, value_delimiter = ',')]
    pod_ip: Vec<IpAddr>,
    #[arg(long, default_value = "node1")]
    node: String,
    #[arg(long)]
    host_ip: Option<IpAddr>,
    /// IMAGE_PREFIX=BINARY: what a pod with that image runs.
    #[arg(long)]
    image: Vec<String>,
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let kubelet = match args.pod_netns {
        Some(netns) => {
            anyhow::ensure!(!args.pod_ip.is_empty(), "--pod-netns needs --pod-ip");
            let images = args
                .image
                .iter()
                .map(|m| {
                    let (prefix, bin) = m.split_once('=').context("--image takes IMAGE_PREFIX=BINARY")?;
                    Ok((prefix.to_owned(), PathBuf::from(bin)))
                })
                .collect::<Result<Vec<_>>>()?;
            Some(Runtime {
                netns,
                host_ip: args.host_ip.unwrap_or(args.pod_ip[0]),
                pod_ips: args.pod_ip,
                node: args.node,
                images,
                work_dir: args.work_dir.clone().unwrap_or_else(|| args.tls_dir.join("pods")),
            })
        }
        None => None,
    };
    serve(Config {
        listen: args.listen,
        tls_dir: args.tls_dir,
        manifests: args.manifests,
        users: args.users,
        service_ranges: args.service_range,
        servicecidr_api: args.servicecidr_api,
        kubelet,
    })
    .await
}

//! The API server's pod port-forward as a byte stream to the relay: one
//! WebSocket upgrade (`v4.channel.k8s.io`) per relay session. The tunnel's
//! multiplexed session runs inside it, TLS end to end with the relay, so
//! the API server carries bytes it cannot read.
//!
//! A dropped port-forward ends the stream; a black-holed one is found by
//! the session's keepalive (devnet-proto's ping), and either way the data
//! path dials again, which comes back here for a fresh upgrade.

use std::io;

use tokio::io::DuplexStream;

use crate::cluster::Cluster;
use crate::relay::TUNNEL_PORT;

/// Opens a port-forward to the tunnel port of the relay pod in namespace `ns`.
pub async fn open(cluster: &Cluster, ns: &str) -> io::Result<(DuplexStream, String)> {
    open_port(cluster, ns, TUNNEL_PORT).await
}

/// Opens a port-forward to `port` of the relay pod in namespace `ns` (the
/// kubelet connects to it on the pod's own loopback).
pub async fn open_port(cluster: &Cluster, ns: &str, port: u16) -> io::Result<(DuplexStream, String)> {
    let st = crate::relay::state(cluster, ns).await.map_err(|e| io::Error::other(e.to_string()))?;
    let pod = st
        .pod
        .filter(|_| st.ready)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no ready relay pod in namespace {ns}")))?;
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(cluster.client.clone(), ns);
    let mut forwarder = pods.portforward(&pod, &[port]).await.map_err(|e| {
        io::Error::new(io::ErrorKind::ConnectionRefused, format!("port-forward to {ns}/{pod}: {}", cluster.explain(e)))
    })?;
    let stream = forwarder.take_stream(port).ok_or_else(|| io::Error::other("the port-forward gave no stream"))?;
    let errors = forwarder.take_error(port);
    // The forwarder's task pumps the WebSocket; it ends when either side closes.
    tokio::spawn(async move {
        if let Some(errors) = errors
            && let Some(message) = errors.await
        {
            tracing::warn!(%message, "the API server reported a port-forward error");
        }
        let _ = forwarder.join().await;
    });
    Ok((stream, format!("port-forward {ns}/{pod}:{port} via {}", cluster.server)))
}

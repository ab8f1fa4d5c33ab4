//! `pods/{name}/portforward` over WebSocket, subprotocol `v4.channel.k8s.io`
//! (what `kube` and kubectl speak): each port gets a data channel (2·i) and
//! an error channel (2·i+1); the server opens each with a frame naming the
//! port (little-endian u16), then every binary message is one channel byte
//! and payload. The stand-in dials the pod's IP from the lab, as the kubelet
//! dials inside the pod's network namespace.
//!
//! Lab controls (`/standin/…`, no auth; reachable only from the stand-in's
//! own namespace in the lab) drop or black-hole the open port-forwards, so
//! tests can show the client reconnecting.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::store::kind_named;
use super::{Body, Query, Server, Target, full, status};

/// What the lab has asked of open port-forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Normal,
    /// Bytes stop flowing both ways; connections stay open.
    Blackhole,
}

#[derive(Debug)]
pub struct Control {
    mode: watch::Sender<Mode>,
    /// Bumped to close every open port-forward.
    drops: watch::Sender<u64>,
    opened: std::sync::atomic::AtomicU64,
}

impl Default for Control {
    fn default() -> Self {
        Control { mode: watch::channel(Mode::Normal).0, drops: watch::channel(0).0, opened: Default::default() }
    }
}

pub async fn admin(server: &Arc<Server>, action: &str) -> Response<Body> {
    let c = &server.portforwards;
    match action {
        "drop-portforwards" => c.drops.send_modify(|n| *n += 1),
        "blackhole-portforwards" => {
            c.mode.send_replace(Mode::Blackhole);
        }
        "heal-portforwards" => {
            c.mode.send_replace(Mode::Normal);
        }
        "stats" => {}
        _ => return status(404, "NotFound", "no such lab control", json!({})),
    }
    let opened = c.opened.load(std::sync::atomic::Ordering::Relaxed);
    super::json_response(
        StatusCode::OK,
        &json!({"portforwards_opened": opened, "mode": format!("{:?}", *c.mode.borrow())}),
    )
}

pub async fn handle(server: Arc<Server>, req: Request<Incoming>, target: Target, query: Query) -> Response<Body> {
    let name = target.name.clone().unwrap_or_default();
    let pod = {
        let store = server.store.lock().await;
        store.get(&kind_named("Pod"), target.namespace.as_deref(), &name)
    };
    let Ok(pod) = pod else {
        return status(404, "NotFound", &format!("pods \"{name}\" not found"), json!({"name": name, "kind": "pods"}));
    };
    if pod["status"]["phase"] != "Running" {
        let phase = pod["status"]["phase"].as_str().unwrap_or("Unknown");
        return status(
            400,
            "BadRequest",
            &format!("unable to upgrade connection: pod {name} is not running (phase {phase})"),
            json!({}),
        );
    }
    let ports: Vec<u16> =
        query.get("ports").unwrap_or_default().split(',').filter_map(|p| p.trim().parse().ok()).collect();
    if ports.is_empty() {
        return status(400, "BadRequest", "query parameter \"port\" is required", json!({}));
    }
    let Some(ip) = pod["status"]["podIP"].as_str().and_then(|ip| ip.parse::<std::net::IpAddr>().ok()) else {
        return status(500, "InternalError", "pod has no IP", json!({}));
    };
    let key = req.headers().get("sec-websocket-key").map(|k| k.as_bytes().to_vec());
    let wants_v4 = req
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h.split(',').any(|p| p.trim() == "v4.channel.k8s.io"));
    let (Some(key), true) = (key, wants_v4) else {
        return status(
            400,
            "BadRequest",
            "port-forward needs a WebSocket upgrade with subprotocol v4.channel.k8s.io",
            json!({}),
        );
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    let netns = server.kubelet.netns();
    server.portforwards.opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mode = server.portforwards.mode.subscribe();
    let drops = server.portforwards.drops.subscribe();
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else { return };
        let io = hyper_util::rt::TokioIo::new(upgraded);
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        forward(ws, ip, netns, ports, mode, drops).await;
    });
    let mut resp = Response::new(full(""));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert("upgrade", "websocket".parse().expect("header"));
    h.insert("connection", "Upgrade".parse().expect("header"));
    h.insert("sec-websocket-accept", accept.parse().expect("header"));
    h.insert("sec-websocket-protocol", "v4.channel.k8s.io".parse().expect("header"));
    resp
}

/// A TCP connection to 127.0.0.1:`port` inside the network namespace
/// `netns` (`/run/netns/NAME`), made on a thread of its own (setns changes
/// the calling thread for good); the socket stays in that namespace.
async fn connect_in_netns(netns: String, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = (|| -> std::io::Result<std::net::TcpStream> {
            let ns = std::fs::File::open(format!("/run/netns/{netns}"))?;
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let tcp = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(3))?;
            tcp.set_nonblocking(true)?;
            Ok(tcp)
        })();
        let _ = tx.send(result);
    });
    let tcp = rx.await.map_err(|_| std::io::Error::other("the netns dialler thread died"))??;
    tokio::net::TcpStream::from_std(tcp)
}

/// Pumps one port (the one devnet uses; more ports would each get a task).
async fn forward<S>(
    ws: tokio_tungstenite::WebSocketStream<S>,
    ip: std::net::IpAddr,
    netns: Option<String>,
    ports: Vec<u16>,
    mut mode: watch::Receiver<Mode>,
    mut drops: watch::Receiver<u64>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut tx, mut rx) = ws.split();
    for (i, port) in ports.iter().enumerate() {
        let p = port.to_le_bytes();
        for ch in [2 * i as u8, 2 * i as u8 + 1] {
            if tx.send(Message::Binary(vec![ch, p[0], p[1]].into())).await.is_err() {
                return;
            }
        }
    }
    let port = ports[0];
    // The real kubelet (through the runtime) dials localhost inside the
    // pod's network namespace: a port the pod serves on its loopback only
    // is reachable this way and from nowhere else.
    let dialled = match netns {
        Some(netns) => connect_in_netns(netns, port).await,
        None => tokio::net::TcpStream::connect(SocketAddr::new(ip, port)).await,
    };
    let tcp = match dialled {
        Ok(t) => t,
        Err(e) => {
            let ip = "localhost";
            let msg = format!("error forwarding port {port} to pod: dial tcp {ip}:{port}: {e}");
            let mut frame = vec![1u8];
            frame.extend_from_slice(msg.as_bytes());
            let _ = tx.send(Message::Binary(frame.into())).await;
            let _ = tx.close().await;
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let (mut tcp_rd, mut tcp_wr) = tcp.into_split();
    let mut buf = vec![0u8; 64 * 1024];
    drops.mark_unchanged();
    loop {
        let blackholed = *mode.borrow() == Mode::Blackhole;
        tokio::select! {
            _ = drops.changed() => return,
            _ = mode.changed() => {}
            n = tcp_rd.read(&mut buf[1..]), if !blackholed => match n {
                Ok(0) | Err(_) => { let _ = tx.close().await; return; }
                Ok(n) => {
                    buf[0] = 0;
                    if tx.send(Message::Binary(buf[..=n].to_vec().into())).await.is_err() { return; }
                }
            },
            msg = rx.next(), if !blackholed => match msg {
                Some(Ok(Message::Binary(b))) if b.first() == Some(&0) => {
                    if tcp_wr.write_all(&b[1..]).await.is_err() { return; }
                }
                Some(Ok(Message::Binary(_) | Message::Ping(_) | Message::Pong(_) | Message::Text(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => { let _ = tcp_wr.shutdown().await; return; }
            },
        }
    }
}

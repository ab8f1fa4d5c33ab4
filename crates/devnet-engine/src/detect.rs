//! Path detection: for each CIDR, ask the OS which route it would use for a
//! live target inside it *without devnet*, and probe that target over TCP on
//! that route; `devnet_path` decides from the two. Both the look-up and the
//! probe carry the bypass mark, so devnet's own routes never mask (or fake)
//! a direct path, and detection can run again while connected.
//!
//! An answer is only evidence of routing: a CIDR whose probe answered is
//! proven this cluster's by a TLS handshake with the relay at its own
//! address inside the CIDR, over the same way, verified by the relay CA
//! ([`Prover`]; security review finding 1).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use devnet_path::{GatewayTrial, Observation, ProbeOutcome, Proof, ProofOutcome, RouteUsed, Verdict};
use tokio::net::TcpSocket;

use crate::config::Profile;
use crate::os::platform;
use crate::runner::Runner;

/// How long a probe may take. Short: a direct path on a LAN answers in
/// milliseconds, and every CIDR is probed at once.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(700);

/// How long a proof's TCP connect and TLS handshake may take together.
pub const PROOF_TIMEOUT: Duration = Duration::from_millis(1500);

/// How long a verified proof stands for the same endpoint over the same
/// way before it is made again (a network change on this machine forgets
/// every proof at once: [`Prover::forget`]).
pub const PROOF_KEPT: Duration = Duration::from_secs(60);

/// Proves that an answering way reaches this cluster: a TLS handshake with
/// the relay, verified by the relay CA for its fixed name, through the same
/// route (or forwarding node) as the probe. Verified proofs are kept per
/// (endpoint, mark, route) for [`PROOF_KEPT`], so re-checks every two
/// seconds cost no handshake; failures are never kept, so a path the office
/// gains (a BGP route learned) is found by the next re-check.
#[derive(Debug, Clone)]
pub struct Prover {
    tls: Option<Arc<rustls::ClientConfig>>,
    verified: HashMap<ProofKey, Instant>,
}

/// What a proof holds for: the relay's address, the socket mark, and the
/// way the OS chose (device and next hop), or the forwarding node.
type ProofKey = (SocketAddr, Option<u32>, Option<(String, Option<IpAddr>)>);

impl Prover {
    /// A prover that trusts the relay CA in `tls`; without one nothing can
    /// be proven (and the evidence says so).
    pub fn new(tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        Self { tls, verified: HashMap::new() }
    }

    /// A prover with the profile's relay CA (and client certificate), if
    /// they can be loaded.
    pub fn for_profile(profile: &Profile) -> Self {
        Self::new(relay_tls(profile).ok())
    }

    /// Forgets every proof: the network this machine is on changed, and the
    /// same device and next hop may now be a stranger's.
    pub fn forget(&mut self) {
        self.verified.clear();
    }

    /// Proves each (endpoint, mark, route) at once; a kept proof is used
    /// without a handshake.
    async fn prove_all(&mut self, asks: Vec<(SocketAddr, Option<u32>, Option<RouteUsed>)>) -> Vec<Proof> {
        let now = Instant::now();
        self.verified.retain(|_, at| now.duration_since(*at) < PROOF_KEPT);
        let key = |e: SocketAddr, m: Option<u32>, r: &Option<RouteUsed>| -> ProofKey {
            (e, m, r.as_ref().map(|r| (r.dev.clone(), r.gateway)))
        };
        let mut handshakes = Vec::new();
        for (endpoint, mark, route) in &asks {
            let kept = self.verified.get(&key(*endpoint, *mark, route)).copied();
            handshakes.push(match (kept, &self.tls) {
                (Some(at), _) => Err(Ok(at)),
                (None, None) => Err(Err("the relay CA is not known here, so no answer can be proven".to_owned())),
                (None, Some(tls)) => Ok(tokio::spawn(handshake(*endpoint, *mark, tls.clone()))),
            });
        }
        let mut proofs = Vec::new();
        for ((endpoint, mark, route), h) in asks.into_iter().zip(handshakes) {
            let outcome = match h {
                Err(Ok(at)) => ProofOutcome::Verified { age_s: now.duration_since(at).as_secs() },
                Err(Err(error)) => ProofOutcome::Failed { error },
                Ok(task) => match task.await {
                    Ok(Ok(())) => {
                        self.verified.insert(key(endpoint, mark, &route), now);
                        ProofOutcome::Verified { age_s: 0 }
                    }
                    Ok(Err(error)) => ProofOutcome::Failed { error },
                    Err(e) => ProofOutcome::Failed { error: format!("the proof task failed: {e}") },
                },
            };
            proofs.push(Proof { endpoint, route, outcome });
        }
        proofs
    }
}

/// The client TLS configuration for the profile's relay: its CA, from the
/// keyring or a file, and the credential's client certificate if it is one.
pub fn relay_tls(profile: &Profile) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use anyhow::Context;
    let ca = match &profile.relay_ca_pem {
        Some(pem) => pem.clone(),
        None => std::fs::read_to_string(&profile.relay_ca)
            .with_context(|| format!("loading the relay CA from {}", profile.relay_ca.display()))?,
    };
    devnet_tls::client_config_for(&ca, profile.token.expose()).context("loading the relay CA and client credential")
}

/// A TLS handshake with the relay at `endpoint` through a socket carrying
/// `mark`, verified as the data path verifies it (the same client
/// configuration, the relay's fixed name); closed with close_notify at once.
async fn handshake(endpoint: SocketAddr, mark: Option<u32>, tls: Arc<rustls::ClientConfig>) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let attempt = async {
        let tcp = connect_marked(endpoint, mark).await.map_err(|e| format!("connecting: {e}"))?;
        let mut stream = tokio_rustls::TlsConnector::from(tls)
            .connect(devnet_tls::relay_server_name(), tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let _ = stream.shutdown().await;
        Ok(())
    };
    tokio::time::timeout(PROOF_TIMEOUT, attempt).await.unwrap_or_else(|_| {
        Err(format!(
            "no TLS answer within {:.1} s (something accepts connections there, but it is not the relay)",
            PROOF_TIMEOUT.as_secs_f64()
        ))
    })
}

/// Decides the path of every CIDR in the profile. Probes carry the bypass
/// mark, which needs root (CAP_NET_ADMIN); see [`detect_with`].
pub async fn detect(profile: &Profile, runner: &dyn Runner, prover: &mut Prover) -> anyhow::Result<Vec<Verdict>> {
    detect_proving(profile, runner, true, prover).await
}

/// [`detect`], choosing whether probes carry the bypass mark, proving with
/// the profile's relay CA. Unmarked probes are right only while no engine
/// has routes in place (`devnet doctor` run by a user without an engine).
pub async fn detect_with(profile: &Profile, runner: &dyn Runner, mark: bool) -> anyhow::Result<Vec<Verdict>> {
    detect_proving(profile, runner, mark, &mut Prover::for_profile(profile)).await
}

async fn detect_proving(
    profile: &Profile,
    runner: &dyn Runner,
    mark: bool,
    prover: &mut Prover,
) -> anyhow::Result<Vec<Verdict>> {
    let mut observations = Vec::new();
    for cidr in &profile.cidrs {
        let target = profile.probe_target_for(cidr);
        let route = match target {
            // `ip` runs as a child process: keep the runtime's other work going.
            Some(t) => tokio::task::block_in_place(|| platform::route_get(runner, t.ip()))?,
            None => None,
        };
        observations.push(Observation {
            cidr: *cidr,
            target,
            route,
            probe: None,
            gateway: None,
            hops: Vec::new(),
            proof: None,
        });
    }
    // All probes at once: detection takes one probe timeout at most.
    let probes: Vec<_> = observations
        .iter()
        .map(|o| match (o.target, &o.route) {
            (Some(t), Some(_)) => Some(tokio::spawn(probe(t, mark))),
            _ => None,
        })
        .collect();
    for (o, p) in observations.iter_mut().zip(probes) {
        if let Some(p) = p {
            o.probe = p.await.ok();
        }
    }
    // An answer proves routing, not the cluster: where one came, the relay
    // proves the way at its own address inside the CIDR.
    let bypass = mark.then_some(platform::BYPASS_MARK);
    let mut asks = Vec::new();
    let mut asked = Vec::new();
    for (i, o) in observations.iter().enumerate() {
        let answered = o.probe.as_ref().is_some_and(ProbeOutcome::answered);
        if let (true, Some(endpoint)) = (answered, profile.relay_endpoint_for(&o.cidr)) {
            let route = tokio::task::block_in_place(|| platform::route_get(runner, endpoint.ip()))?;
            asks.push((endpoint, bypass, route));
            asked.push(i);
        }
    }
    for (i, proof) in asked.into_iter().zip(prover.prove_all(asks).await) {
        observations[i].proof = Some(proof);
    }
    // No direct answer: try the forwarding node of the target's family, if
    // one is configured, through the trial table (probes with GATEWAY_MARK).
    let mut trials = Vec::new();
    for o in observations.iter_mut() {
        let answered = o.probe.as_ref().is_some_and(ProbeOutcome::answered);
        let (Some(target), false) = (o.target, answered) else { continue };
        let Some(gw) = profile.gateways.iter().copied().find(|g| g.is_ipv4() == target.is_ipv4()) else { continue };
        // On-link: the kernel reaches it without a next hop.
        let on_link =
            tokio::task::block_in_place(|| platform::route_get(runner, gw))?.is_some_and(|r| r.gateway.is_none());
        o.gateway = Some(GatewayTrial { gateway: gw, on_link, probe: None, proof: None });
        if on_link && mark {
            trials.push((o.cidr, tokio::spawn(probe_with(target, Some(platform::GATEWAY_MARK)))));
        }
    }
    for (cidr, t) in trials {
        if let (Some(o), Ok(outcome)) = (observations.iter_mut().find(|o| o.cidr == cidr), t.await)
            && let Some(g) = o.gateway.as_mut()
        {
            g.probe = Some(outcome);
        }
    }
    // Through the node too, an answer needs the relay's proof.
    let mut asks = Vec::new();
    let mut asked = Vec::new();
    for (i, o) in observations.iter().enumerate() {
        let Some(g) = &o.gateway else { continue };
        let answered = g.probe.as_ref().is_some_and(ProbeOutcome::answered);
        if let (true, Some(endpoint)) = (answered, profile.relay_endpoint_for(&o.cidr)) {
            // The key names the node: the trial table's route is devnet's own.
            let via = RouteUsed { dev: "forwarding node".into(), gateway: Some(g.gateway), src: None };
            asks.push((endpoint, Some(platform::GATEWAY_MARK), Some(via)));
            asked.push(i);
        }
    }
    for (i, mut proof) in asked.into_iter().zip(prover.prove_all(asks).await) {
        proof.route = None;
        if let Some(g) = observations[i].gateway.as_mut() {
            g.proof = Some(proof);
        }
    }
    Ok(devnet_path::decide_all(observations, &profile.tun_name, true))
}

async fn probe(target: std::net::SocketAddr, mark: bool) -> ProbeOutcome {
    probe_with(target, mark.then_some(platform::BYPASS_MARK)).await
}

async fn probe_with(target: std::net::SocketAddr, mark: Option<u32>) -> ProbeOutcome {
    let start = Instant::now();
    let result = match tokio::time::timeout(PROBE_TIMEOUT, connect_marked(target, mark)).await {
        Ok(r) => r.map(drop),
        Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut)),
    };
    ProbeOutcome::from_connect(&result, start.elapsed(), PROBE_TIMEOUT)
}

/// A TCP connect whose packets carry `mark`: the bypass mark takes the route
/// the machine has without devnet, the gateway mark the trial table.
pub(crate) async fn connect_marked(
    target: std::net::SocketAddr,
    mark: Option<u32>,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = if target.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(mark) = mark {
        socket2::SockRef::from(&socket).set_mark(mark)?;
    }
    socket.connect(target).await
}

/// Asks the relay at `target` which address it sees this machine as
/// ([`devnet_proto::whoami`]), over the path the machine has without devnet
/// when `bypass`. Returns (our address on that connection, the one the
/// relay saw).
pub async fn whoami(
    target: std::net::SocketAddr,
    bypass: bool,
) -> std::io::Result<(std::net::SocketAddr, std::net::SocketAddr)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mark = bypass.then_some(crate::os::platform::BYPASS_MARK);
    let ask = async {
        let mut tcp = connect_marked(target, mark).await?;
        let local = tcp.local_addr()?;
        tcp.write_all(devnet_proto::whoami::REQUEST).await?;
        let mut reply = Vec::new();
        (&mut tcp).take(128).read_to_end(&mut reply).await?;
        let seen = devnet_proto::whoami::parse_reply(&reply)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        Ok((local, seen))
    };
    tokio::time::timeout(std::time::Duration::from_secs(2), ask)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{target}: no answer within 2 s")))?
}

/// Traces the way to `target` hop by hop, as traceroute does (UDP with TTL
/// 1, 2, …; the kernel reports each ICMP answer on the socket's error
/// queue): a router that forwards says "time exceeded", one without a route
/// "unreachable", the target "port unreachable". Stops at the first hop
/// that ends the way, after three silent hops (each tried three times), or
/// at `max_hops`. IPv4 only;
/// with `bypass`, over the path the machine has without devnet.
pub async fn trace(target: std::net::Ipv4Addr, max_hops: u8, bypass: bool) -> std::io::Result<Vec<devnet_path::Hop>> {
    tokio::task::spawn_blocking(move || trace_blocking(target, max_hops, bypass))
        .await
        .map_err(std::io::Error::other)?
}

fn trace_blocking(target: std::net::Ipv4Addr, max_hops: u8, bypass: bool) -> std::io::Result<Vec<devnet_path::Hop>> {
    use devnet_path::{Hop, HopAnswer};
    use socket2::{Domain, Protocol, Socket, Type};
    let mut hops = Vec::new();
    let mut silent = 0;
    for ttl in 1..=max_hops {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_ttl_v4(u32::from(ttl))?;
        if bypass {
            socket.set_mark(crate::os::platform::BYPASS_MARK)?;
        }
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Ipv4RecvErr, &true)?;
        // traceroute's ports: unlikely to be listened on, so the target
        // itself answers "port unreachable".
        socket.connect(&std::net::SocketAddrV4::new(target, 33434 + u16::from(ttl)).into())?;
        // Routers rate-limit their ICMP errors per destination. A Linux
        // router allows a burst of two or three, then about one "no route"
        // every two seconds (ip_error and icmp_send both take a token), and
        // the probes before the trace may have used the burst up: a hop is
        // silent only when three tries, each over two seconds apart, get no
        // answer.
        let mut heard = (None, HopAnswer::Silent);
        for attempt in 0..3 {
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_millis(1600));
            }
            socket.send(b"devnet doctor: tracing the way to the cluster")?;
            heard = hop_answer(&socket, target)?;
            if heard.1 != HopAnswer::Silent {
                break;
            }
        }
        let (from, answer) = heard;
        silent = if answer == HopAnswer::Silent { silent + 1 } else { 0 };
        hops.push(Hop { ttl, from, answer });
        if matches!(answer, HopAnswer::NoRoute | HopAnswer::Prohibited | HopAnswer::Reached) || silent == 3 {
            break;
        }
    }
    Ok(hops)
}

/// Waits up to half a second for the ICMP answer to a trace packet.
fn hop_answer(
    socket: &socket2::Socket,
    target: std::net::Ipv4Addr,
) -> std::io::Result<(Option<std::net::IpAddr>, devnet_path::HopAnswer)> {
    use devnet_path::HopAnswer;
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrIn, recvmsg};
    use std::os::fd::{AsFd, AsRawFd};
    let mut fds = [nix::poll::PollFd::new(socket.as_fd(), nix::poll::PollFlags::POLLIN)];
    // POLLERR (the error queue) is always reported.
    if nix::poll::poll(&mut fds, 500u16)? == 0 {
        return Ok((None, HopAnswer::Silent));
    }
    let mut buf = [0u8; 512];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!(libc::sock_extended_err, libc::sockaddr_in);
    let msg = match recvmsg::<SockaddrIn>(socket.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_ERRQUEUE) {
        Ok(msg) => msg,
        // Nothing queued as an error: the target answered the datagram itself.
        Err(nix::errno::Errno::EAGAIN) => return Ok((Some(target.into()), HopAnswer::Reached)),
        Err(e) => return Err(e.into()),
    };
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::Ipv4RecvErr(err, offender) = cmsg {
            let from =
                offender.map(|a| std::net::IpAddr::from(std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))));
            const ICMP_TIME_EXCEEDED: u8 = 11;
            const ICMP_DEST_UNREACH: u8 = 3;
            let answer = match (err.ee_origin, err.ee_type, err.ee_code) {
                (libc::SO_EE_ORIGIN_ICMP, ICMP_TIME_EXCEEDED, _) => HopAnswer::Forwards,
                (libc::SO_EE_ORIGIN_ICMP, ICMP_DEST_UNREACH, 3) => HopAnswer::Reached,
                (libc::SO_EE_ORIGIN_ICMP, ICMP_DEST_UNREACH, 9 | 10 | 13) => HopAnswer::Prohibited,
                (libc::SO_EE_ORIGIN_ICMP, ICMP_DEST_UNREACH, _) => HopAnswer::NoRoute,
                // This machine itself has no route.
                _ => HopAnswer::NoRoute,
            };
            return Ok((from, answer));
        }
    }
    Ok((None, HopAnswer::Silent))
}

/// What each CIDR of the profile holds, for doctor: the one holding the DNS
/// server, or a probe target on port 53, is a service CIDR; the rest pods.
pub fn roles(profile: &Profile) -> Vec<devnet_path::doctor::Role> {
    use devnet_path::doctor::Role;
    profile
        .cidrs
        .iter()
        .map(|c| {
            let dns = profile.dns_server.is_some_and(|d| c.contains(&d));
            let port_53 = profile.probe_targets.iter().any(|t| t.port() == 53 && c.contains(&t.ip()));
            if dns || port_53 { Role::Services } else { Role::Pods }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real relay-like TLS server on loopback with a fresh CA; returns its
    /// address, the CA, and a count of accepted connections.
    async fn relay(dir: &str) -> (SocketAddr, String, Arc<std::sync::atomic::AtomicUsize>) {
        let dir = std::env::temp_dir().join(format!("devnet-proof-{dir}-{}", std::process::id()));
        devnet_tls::write_generated(&dir).expect("certificates");
        let config = devnet_tls::server_config(&dir.join("cert.pem"), &dir.join("key.pem")).expect("server config");
        let ca = std::fs::read_to_string(dir.join("ca.pem")).expect("ca");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move { acceptor.accept(tcp).await.map(drop) });
            }
        });
        (addr, ca, accepted)
    }

    fn lo() -> Option<RouteUsed> {
        Some(RouteUsed { dev: "lo".into(), gateway: None, src: None })
    }

    #[tokio::test]
    async fn the_relay_proves_a_way_once_and_is_kept_until_the_network_changes() {
        let (addr, ca, accepted) = relay("ok").await;
        let mut prover = Prover::new(Some(devnet_tls::client_config_from_pem(&ca).expect("client")));
        let proofs = prover.prove_all(vec![(addr, None, lo())]).await;
        assert_eq!(proofs[0].outcome, ProofOutcome::Verified { age_s: 0 }, "{proofs:?}");
        assert_eq!(proofs[0].route, lo());
        // Re-checks every two seconds cost no handshake.
        let again = prover.prove_all(vec![(addr, None, lo())]).await;
        assert!(matches!(again[0].outcome, ProofOutcome::Verified { .. }), "{again:?}");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1, "the kept proof was used");
        // Another way to the same address is proven on its own.
        let eth = Some(RouteUsed { dev: "eth0".into(), gateway: None, src: None });
        prover.prove_all(vec![(addr, None, eth)]).await;
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
        // A network change forgets every proof.
        prover.forget();
        prover.prove_all(vec![(addr, None, lo())]).await;
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    /// Security review finding 1: what a stranger can do instead of the
    /// relay proves nothing.
    #[tokio::test]
    async fn hostile_router_answers_prove_nothing() {
        let (stranger, _, _) = relay("stranger").await;
        let (_, ca, _) = relay("ours").await;
        let ours = devnet_tls::client_config_from_pem(&ca).expect("client");
        // A TLS server whose certificate another CA signed.
        let mut prover = Prover::new(Some(ours.clone()));
        let p = prover.prove_all(vec![(stranger, None, lo())]).await;
        assert!(matches!(&p[0].outcome, ProofOutcome::Failed { error } if error.contains("TLS handshake")), "{p:?}");
        // A listener that accepts every connection and says nothing.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let silent_addr = silent.local_addr().expect("addr");
        let held = tokio::spawn(async move {
            let mut kept = Vec::new();
            while let Ok((tcp, _)) = silent.accept().await {
                kept.push(tcp);
            }
        });
        let p = prover.prove_all(vec![(silent_addr, None, lo())]).await;
        assert!(matches!(&p[0].outcome, ProofOutcome::Failed { error } if error.contains("no TLS answer")), "{p:?}");
        held.abort();
        // Nothing listening (a reset).
        let p = prover.prove_all(vec![(silent_addr, None, lo())]).await;
        assert!(matches!(&p[0].outcome, ProofOutcome::Failed { error } if error.contains("connecting")), "{p:?}");
        // Failures are never kept: each check tries again.
        assert!(prover.verified.is_empty());
        // Without the CA nothing is proven, and the evidence says why.
        let p = Prover::new(None).prove_all(vec![(stranger, None, lo())]).await;
        assert!(matches!(&p[0].outcome, ProofOutcome::Failed { error } if error.contains("relay CA is not known")));
    }
}

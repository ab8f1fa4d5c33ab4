//! Path detection: for each CIDR, ask the OS which route it would use for a
//! live target inside it *without devnet*, and probe that target over TCP on
//! that route; `devnet_path` decides from the two. Both the look-up and the
//! probe carry the bypass mark, so devnet's own routes never mask (or fake)
//! a direct path, and detection can run again while connected.

use std::time::{Duration, Instant};

use devnet_path::{GatewayTrial, Observation, ProbeOutcome, Verdict};
use tokio::net::TcpSocket;

use crate::config::Profile;
use crate::os::platform;
use crate::runner::Runner;

/// How long a probe may take. Short: a direct path on a LAN answers in
/// milliseconds, and every CIDR is probed at once.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(700);

/// Decides the path of every CIDR in the profile. Probes carry the bypass
/// mark, which needs root (CAP_NET_ADMIN); see [`detect_with`].
pub async fn detect(profile: &Profile, runner: &dyn Runner) -> anyhow::Result<Vec<Verdict>> {
    detect_with(profile, runner, true).await
}

/// [`detect`], choosing whether probes carry the bypass mark. Unmarked
/// probes are right only while no engine has routes in place (`devnet
/// doctor` run by a user without an engine).
pub async fn detect_with(profile: &Profile, runner: &dyn Runner, mark: bool) -> anyhow::Result<Vec<Verdict>> {
    let mut observations = Vec::new();
    for cidr in &profile.cidrs {
        let target = profile.probe_target_for(cidr);
        let route = match target {
            // `ip` runs as a child process: keep the runtime's other work going.
            Some(t) => tokio::task::block_in_place(|| platform::route_get(runner, t.ip()))?,
            None => None,
        };
        observations.push(Observation { cidr: *cidr, target, route, probe: None, gateway: None, hops: Vec::new() });
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
        o.gateway = Some(GatewayTrial { gateway: gw, on_link, probe: None });
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
    Ok(observations.into_iter().map(|o| devnet_path::decide(o, &profile.tun_name, true)).collect())
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

//! `devnet-labd`: the lab's pod servers and laptop-side probes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use devnet_lab::pattern;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

#[path = "labd/wan_link.rs"]
mod wan_link;

const SEED: u64 = 0x5eed;
/// More TCP echo ports: 17…67, one per benchmarked path, and each plus
/// 1000 for that path's concurrent connection-rate probe (its own TIME_WAIT
/// table too: after the sequential probe's thousands of connections to one
/// port, port selection for that port slows connects down fivefold).
const ALT_ECHO_PORTS: [u16; 13] = [17, 27, 37, 47, 57, 67, 1007, 1017, 1027, 1037, 1047, 1057, 1067];

#[derive(Parser)]
#[command(about = "devnet lab servers and probes")]
enum Cli {
    /// Serve HTTP on 8080, TCP+UDP echo on 7 (and TCP echo on ALT_ECHO_PORTS, so a
    /// benchmark can give each probe of each path its own port and TIME_WAIT table), a sink on 9000 and a source on 9001.
    Serve {
        #[arg(long)]
        name: String,
    },
    /// Probe from a client.
    #[command(subcommand)]
    Probe(Probe),
    /// A WAN link in userspace (for kernels without netem): a TAP in each of
    /// two network namespaces, frames forwarded both ways after DELAY_US and
    /// with LOSS_PERCENT random loss each way, until killed.
    WanLink {
        /// One end, NETNS:IFNAME (e.g. bench-laptop:eth0); the TAP is created there.
        #[arg(long)]
        a: String,
        /// The other end, NETNS:IFNAME (e.g. bench-office:lan0).
        #[arg(long)]
        b: String,
        /// One-way delay in microseconds, each direction (half the added round trip).
        #[arg(long, default_value_t = 0)]
        delay_us: u64,
        /// Random loss in percent, each direction independently.
        #[arg(long, default_value_t = 0.0)]
        loss_percent: f64,
        /// Frames in flight per direction before tail drop (the default: more
        /// than this machine fills, so the only loss is LOSS_PERCENT).
        #[arg(long, default_value_t = 50_000)]
        limit: usize,
        /// Seed of the loss decisions, so a run is repeatable.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Subcommand)]
enum Probe {
    /// Send N bytes to a sink and check its checksum of them.
    Upload { to: SocketAddr, bytes: u64 },
    /// Fetch N bytes from a source and check their checksum.
    Download { from: SocketAddr, bytes: u64 },
    /// Open N concurrent connections to an echo server; each must echo.
    Many { to: SocketAddr, count: usize },
    /// Try one connection and report how it ended, as JSON.
    Connect {
        to: SocketAddr,
        #[arg(long, default_value_t = 15_000)]
        timeout_ms: u64,
    },
    /// Send a datagram to TO from an unconnected socket and print, as JSON,
    /// where the first answer came from (null: none within 3 s).
    UdpAny { to: SocketAddr },
    /// Send one UDP datagram to an echo server and wait for it back.
    Udp { to: SocketAddr },
    /// Request/response round trips on one connection: prints p50 and p99 in microseconds.
    Rr { to: SocketAddr, count: usize },
    /// New connections per second (connect, 1-byte echo, close) for some
    /// seconds, from CONCURRENCY connectors at once (1: one after another,
    /// which measures the latency of a connection; more: the capacity).
    Cps {
        to: SocketAddr,
        seconds: u64,
        #[arg(default_value_t = 1)]
        concurrency: usize,
    },
    /// Name lookups, one after another, each for a name never asked before
    /// (`b<i>-<pid>.<suffix>`, so no cache answers it): prints p50 and p99
    /// in microseconds and how many got no answer within 2 s.
    Dns { server: SocketAddr, suffix: String, count: usize },
    /// A Chrome DevTools Protocol client: evaluate EXPRESSION in the Node
    /// process behind an inspector; prints the value as JSON.
    Cdp { inspector: SocketAddr, expression: String },
    /// A Debug Adapter Protocol client: attach to debugpy, list threads,
    /// detach; prints the thread names as JSON.
    Dap { adapter: SocketAddr },
    /// Open COUNT connections that never say a word and hold them for
    /// HOLD seconds; prints how many the other end closed at once (within
    /// 500 ms) and how many it held.
    Crowd { to: SocketAddr, count: usize, hold_secs: u64 },
    /// Speak the devnet protocol to a relay directly and ask it to open a
    /// stream to `dst`; prints the outcome as JSON. With --mode, misbehave
    /// instead: wrong-token, wrong-version or garbage; prints the error.
    Relay {
        relay: SocketAddr,
        #[arg(long)]
        ca: std::path::PathBuf,
        #[arg(long)]
        token_file: std::path::PathBuf,
        #[arg(long)]
        dst: Option<SocketAddr>,
        #[arg(long)]
        mode: Option<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // The link needs no runtime: one thread, which steps into namespaces.
    if let Cli::WanLink { a, b, delay_us, loss_percent, limit, seed } = cli {
        return wan_link::run(wan_link::Config {
            a: wan_link::parse_end(&a)?,
            b: wan_link::parse_end(&b)?,
            delay: Duration::from_micros(delay_us),
            loss_percent,
            limit,
            seed,
        });
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    match cli {
        Cli::Serve { name } => rt.block_on(serve(name)),
        Cli::Probe(p) => rt.block_on(probe(p)),
        Cli::WanLink { .. } => unreachable!("handled above"),
    }
}

async fn serve(name: String) -> Result<()> {
    let http = TcpListener::bind("[::]:8080").await?;
    let echo = TcpListener::bind("[::]:7").await?;
    let mut echo_listeners = vec![echo];
    for port in ALT_ECHO_PORTS {
        echo_listeners.push(TcpListener::bind(("::", port)).await?);
    }
    let udp = UdpSocket::bind("[::]:7").await?;
    // A UDP server that answers from another port than it was asked on
    // (port 8, answered from 9): what an attacker injecting answers looks like.
    let other_in = UdpSocket::bind("[::]:8").await?;
    let other_out = UdpSocket::bind("[::]:9").await?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = other_in.recv_from(&mut buf).await {
            let _ = other_out.send_to(&buf[..n], from).await;
        }
    });
    let sink = TcpListener::bind("[::]:9000").await?;
    let source = TcpListener::bind("[::]:9001").await?;
    let name = Arc::new(name);
    tokio::spawn(accept_loop(http, move |s| {
        let name = name.clone();
        async move {
            let mut r = BufReader::new(s);
            let mut line = String::new();
            r.read_line(&mut line).await?;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).await? == 0 || h == "\r\n" || h == "\n" {
                    break;
                }
            }
            let body = format!("hello from {name}\n");
            let resp = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
            r.get_mut().write_all(resp.as_bytes()).await?;
            Ok(())
        }
    }));
    for listener in echo_listeners {
        tokio::spawn(accept_loop(listener, |mut s| async move {
            let (mut r, mut w) = s.split();
            tokio::io::copy(&mut r, &mut w).await?;
            Ok(())
        }));
    }
    tokio::spawn(accept_loop(sink, |mut s| async move {
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
        }
        s.write_all(format!("{:x}\n", hash.finalize()).as_bytes()).await?;
        Ok(())
    }));
    tokio::spawn(accept_loop(source, |s| async move {
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).await?;
        let total: u64 = line.trim().parse()?;
        let mut s = r.into_inner();
        send_pattern(&mut s, total).await?;
        s.shutdown().await?;
        Ok(())
    }));
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = udp.recv_from(&mut buf).await?;
        let _ = udp.send_to(&buf[..n], from).await;
    }
}

async fn accept_loop<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    loop {
        if let Ok((s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(handler(s));
        }
    }
}

async fn send_pattern(s: &mut TcpStream, total: u64) -> Result<String> {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut sent = 0u64;
    while sent < total {
        let n = (total - sent).min(buf.len() as u64) as usize;
        pattern(SEED, sent, &mut buf[..n]);
        hash.update(&buf[..n]);
        s.write_all(&buf[..n]).await?;
        sent += n as u64;
    }
    Ok(format!("{:x}", hash.finalize()))
}

fn expected_sha(total: u64) -> String {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut done = 0u64;
    while done < total {
        let n = (total - done).min(buf.len() as u64) as usize;
        pattern(SEED, done, &mut buf[..n]);
        hash.update(&buf[..n]);
        done += n as u64;
    }
    format!("{:x}", hash.finalize())
}

async fn probe(p: Probe) -> Result<()> {
    match p {
        Probe::Crowd { to, count, hold_secs } => {
            let mut conns = Vec::new();
            for _ in 0..count {
                conns.push(TcpStream::connect(to).await?);
            }
            let checks = conns.into_iter().map(|mut c| async move {
                let mut b = [0u8; 1];
                match tokio::time::timeout(Duration::from_millis(500), c.read(&mut b)).await {
                    Ok(Ok(0) | Err(_)) => None,
                    _ => Some(c),
                }
            });
            let results = futures::future::join_all(checks).await;
            let closed_at_once = results.iter().filter(|r| r.is_none()).count();
            let held: Vec<TcpStream> = results.into_iter().flatten().collect();
            println!("{}", serde_json::json!({"closed_at_once": closed_at_once, "held": held.len()}));
            tokio::time::sleep(Duration::from_secs(hold_secs)).await;
        }
        Probe::Cdp { inspector, expression } => {
            println!("{}", devnet_lab::debug_clients::cdp_evaluate(inspector, &expression).await?);
        }
        Probe::Dap { adapter } => {
            println!("{}", serde_json::to_string(&devnet_lab::debug_clients::dap_threads(adapter).await?)?);
        }
        Probe::Upload { to, bytes } => {
            let start = Instant::now();
            let mut s = TcpStream::connect(to).await.with_context(|| format!("connecting to {to}"))?;
            let ours = send_pattern(&mut s, bytes).await?;
            s.shutdown().await?;
            let mut theirs = String::new();
            s.read_to_string(&mut theirs).await?;
            if theirs.trim() != ours {
                bail!("checksum mismatch: sent {ours}, sink saw {}", theirs.trim());
            }
            println!("ok {bytes} bytes up in {:?}, sha256 {ours}", start.elapsed());
        }
        Probe::Download { from, bytes } => {
            let start = Instant::now();
            let mut s = TcpStream::connect(from).await.with_context(|| format!("connecting to {from}"))?;
            s.write_all(format!("{bytes}\n").as_bytes()).await?;
            let mut hash = Sha256::new();
            let mut buf = vec![0u8; 256 * 1024];
            let mut got = 0u64;
            loop {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                hash.update(&buf[..n]);
                got += n as u64;
            }
            let ours = format!("{:x}", hash.finalize());
            let want = expected_sha(bytes);
            if got != bytes || ours != want {
                bail!("download broken: got {got} of {bytes} bytes, sha256 {ours}, expected {want}");
            }
            println!("ok {bytes} bytes down in {:?}, sha256 {ours}", start.elapsed());
        }
        Probe::Many { to, count } => {
            let ok = Arc::new(AtomicUsize::new(0));
            let mut tasks = Vec::new();
            for i in 0..count {
                let ok = ok.clone();
                tasks.push(tokio::spawn(async move {
                    let r: Result<()> = async {
                        let mut s = TcpStream::connect(to).await?;
                        let msg = format!("hello {i:>10}\n");
                        s.write_all(msg.as_bytes()).await?;
                        let mut back = vec![0u8; msg.len()];
                        s.read_exact(&mut back).await?;
                        anyhow::ensure!(back == msg.as_bytes(), "echo mismatch");
                        Ok(())
                    }
                    .await;
                    match r {
                        Ok(()) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => eprintln!("connection {i}: {e}"),
                    }
                }));
            }
            let all = async {
                for t in tasks {
                    let _ = t.await;
                }
            };
            tokio::time::timeout(Duration::from_secs(60), all).await.context("connections did not finish in 60 s")?;
            let ok = ok.load(Ordering::Relaxed);
            println!("{ok} of {count} connections echoed");
            if ok != count {
                bail!("{} connections failed", count - ok);
            }
        }
        Probe::Connect { to, timeout_ms } => {
            let start = Instant::now();
            let r = tokio::time::timeout(Duration::from_millis(timeout_ms), TcpStream::connect(to)).await;
            let (result, error) = match r {
                Ok(Ok(_)) => ("connected", String::new()),
                Ok(Err(e)) => (
                    match e.kind() {
                        std::io::ErrorKind::ConnectionRefused => "refused",
                        std::io::ErrorKind::HostUnreachable | std::io::ErrorKind::NetworkUnreachable => "unreachable",
                        std::io::ErrorKind::TimedOut => "timeout",
                        _ => "error",
                    },
                    e.to_string(),
                ),
                Err(_) => ("timeout", format!("no answer within {timeout_ms} ms")),
            };
            println!(
                "{}",
                serde_json::json!({"result": result, "ms": start.elapsed().as_millis() as u64, "error": error})
            );
        }
        Probe::UdpAny { to } => {
            let s = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).await?;
            let mut buf = [0u8; 64];
            let mut from = None;
            for _ in 0..3 {
                s.send_to(b"who answers", to).await?;
                if let Ok(Ok((_, f))) = tokio::time::timeout(Duration::from_secs(1), s.recv_from(&mut buf)).await {
                    from = Some(f.to_string());
                    break;
                }
            }
            println!("{}", serde_json::json!({"reply_from": from}));
        }
        Probe::Udp { to } => {
            let bind = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let s = UdpSocket::bind(bind).await?;
            s.connect(to).await?;
            let mut buf = [0u8; 64];
            for _ in 0..5 {
                s.send(b"ping over udp").await?;
                if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(1), s.recv(&mut buf)).await {
                    anyhow::ensure!(&buf[..n] == b"ping over udp", "udp echo mismatch");
                    println!("ok udp echo from {to}");
                    return Ok(());
                }
            }
            bail!("no UDP echo from {to}");
        }
        Probe::Rr { to, count } => {
            let mut s = TcpStream::connect(to).await?;
            s.set_nodelay(true)?;
            let mut samples = Vec::with_capacity(count);
            let mut b = [0u8; 1];
            for _ in 0..count {
                let t = Instant::now();
                s.write_all(b"x").await?;
                s.read_exact(&mut b).await?;
                samples.push(t.elapsed().as_secs_f64() * 1e6);
            }
            samples.sort_by(f64::total_cmp);
            let q = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize];
            println!("{}", serde_json::json!({"p50_us": q(0.5), "p99_us": q(0.99), "count": count}));
        }
        Probe::Dns { server, suffix, count } => {
            let bind: SocketAddr = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse()?;
            let s = tokio::net::UdpSocket::bind(bind).await?;
            s.connect(server).await?;
            let (mut samples, mut lost) = (Vec::with_capacity(count), 0usize);
            let mut buf = [0u8; 1500];
            for i in 0..count {
                let id = (i & 0xffff) as u16;
                let query = devnet_dns::rewrite::probe_query(&format!("b{i}-{}.{suffix}.", std::process::id()), id)?;
                let t = Instant::now();
                s.send(&query).await?;
                let answered = tokio::time::timeout(Duration::from_secs(2), async {
                    loop {
                        let n = s.recv(&mut buf).await?;
                        // A late answer to an earlier query is not this one's.
                        if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
                            return Ok::<_, std::io::Error>(());
                        }
                    }
                })
                .await;
                match answered {
                    Ok(r) => {
                        r?;
                        samples.push(t.elapsed().as_secs_f64() * 1e6);
                    }
                    Err(_) => lost += 1,
                }
            }
            anyhow::ensure!(!samples.is_empty(), "no lookup was answered by {server}");
            samples.sort_by(f64::total_cmp);
            let q = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize];
            println!("{}", serde_json::json!({"p50_us": q(0.5), "p99_us": q(0.99), "count": count, "lost": lost}));
        }
        Probe::Relay { relay, ca, token_file, dst, mode } => {
            relay_probe(relay, &ca, &token_file, dst, mode.as_deref()).await?
        }
        Probe::Cps { to, seconds, concurrency } => {
            let start = Instant::now();
            let end = start + Duration::from_secs(seconds);
            let connector = |_| async move {
                let mut n = 0u64;
                while Instant::now() < end {
                    let mut s = TcpStream::connect(to).await?;
                    s.write_all(b"x").await?;
                    let mut b = [0u8; 1];
                    s.read_exact(&mut b).await?;
                    n += 1;
                }
                Ok::<_, anyhow::Error>(n)
            };
            let counts = futures::future::try_join_all((0..concurrency.max(1)).map(connector)).await?;
            let n: u64 = counts.iter().sum();
            println!(
                "{}",
                serde_json::json!({"connections_per_second": n as f64 / start.elapsed().as_secs_f64(), "concurrency": concurrency.max(1)})
            );
        }
    }
    Ok(())
}

/// A hand-driven devnet client, for checking the relay's answers.
async fn relay_probe(
    relay: SocketAddr,
    ca: &std::path::Path,
    token_file: &std::path::Path,
    dst: Option<SocketAddr>,
    mode: Option<&str>,
) -> Result<()> {
    use devnet_proto::{Config, Connection, Event};
    let tls = devnet_tls::client_config(ca)?;
    let tcp = TcpStream::connect(relay).await?;
    let mut s = tokio_rustls::TlsConnector::from(tls).connect(devnet_tls::relay_server_name(), tcp).await?;
    let mut token = std::fs::read_to_string(token_file)?.trim().to_owned();
    let now = std::time::Instant::now();
    let mut hello = Vec::new();
    match mode {
        Some("garbage") => {
            s.write_all(b"GET / HTTP/1.1\r\nHost: relay\r\n\r\n").await?;
            s.flush().await?;
            let mut back = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut back)).await;
            // The relay answers with its preface and a Reject naming the problem.
            let text = String::from_utf8_lossy(&back);
            println!("{}", serde_json::json!({"closed": true, "answer": text}));
            return Ok(());
        }
        Some("wrong-version") => {
            hello.extend_from_slice(devnet_proto::MAGIC);
            hello.extend_from_slice(&(devnet_proto::PROTOCOL_VERSION + 1).to_be_bytes());
        }
        Some("wrong-token") => token.push('x'),
        Some("dribble") => {}
        Some(other) => bail!("unknown mode {other}"),
        None => {}
    }
    let mut conn = Connection::client(Config { token, ..Config::default() }, now);
    if hello.is_empty() {
        hello = conn.transmit().to_vec();
    }
    let n = conn.transmit().len();
    conn.advance_transmit(n);
    if mode == Some("dribble") {
        // A slowloris: the login one byte at a time, each well inside the
        // protocol's 4 s silence limit; how long until the relay hangs up.
        let began = Instant::now();
        let mut buf = [0u8; 4096];
        for (sent, byte) in hello.iter().chain(std::iter::repeat(&0u8)).enumerate() {
            if s.write_all(&[*byte]).await.is_err() || s.flush().await.is_err() {
                println!(
                    "{}",
                    serde_json::json!({"closed_after_ms": began.elapsed().as_millis() as u64, "sent": sent})
                );
                return Ok(());
            }
            match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => {
                    println!(
                        "{}",
                        serde_json::json!({"closed_after_ms": began.elapsed().as_millis() as u64, "sent": sent + 1})
                    );
                    return Ok(());
                }
                _ if began.elapsed() > Duration::from_secs(30) => bail!("the relay kept a dribbling login for 30 s"),
                _ => {}
            }
        }
    }
    s.write_all(&hello).await?;
    s.flush().await?;
    let mut opened = false;
    let mut buf = vec![0u8; 65536];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let pending = conn.transmit().to_vec();
        conn.advance_transmit(pending.len());
        if !pending.is_empty() {
            s.write_all(&pending).await?;
            s.flush().await?;
        }
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::Connected { .. } => match dst {
                    Some(dst) if !opened => {
                        conn.open(dst)?;
                        opened = true;
                    }
                    _ => {
                        println!("{}", serde_json::json!({"connected": true}));
                        return Ok(());
                    }
                },
                Event::Opened { .. } => {
                    println!("{}", serde_json::json!({"status": "Connected", "message": ""}));
                    return Ok(());
                }
                Event::OpenFailed { status, message, .. } => {
                    println!("{}", serde_json::json!({"status": format!("{status:?}"), "message": message}));
                    return Ok(());
                }
                Event::Closed { error } => {
                    println!("{}", serde_json::json!({"closed": true, "error": error.to_string()}));
                    return Ok(());
                }
                _ => {}
            }
        }
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf)).await.context("relay did not answer")??;
        if n == 0 {
            println!("{}", serde_json::json!({"closed": true, "error": "relay closed the connection"}));
            return Ok(());
        }
        let _ = conn.handle_input(&buf[..n], std::time::Instant::now());
    }
}

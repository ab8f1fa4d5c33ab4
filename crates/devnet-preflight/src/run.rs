//! The IO shell: asks devnetd which sessions run (and, with `--connect`,
//! starts one), reads the cluster as the user, resolves the target with the
//! system resolver, connects, and drives a [`Probe`]. Every decision it
//! makes is in [`crate::podspec`], [`crate::probe`] and [`crate::advice`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use devnet_ipc::message::{ClientKind, SessionStatus};
use devnet_kube::{Cluster, ClusterOptions};
use devnet_model::preflight::{
    Failure, PodFacts, Probed, Progress, Protocol, Report, Resolved, Step, TargetReport, Way,
};
use devnet_model::status::LinkState;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::advice;
use crate::podspec;
use crate::probe::{self, Feed, Probe};
use crate::target::{self, Kind, Target};

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub targets: Vec<Target>,
    pub cluster: ClusterOptions,
    /// The namespace for targets that name none (default: the context's).
    pub namespace: Option<String>,
    /// The protocol to check (default: from the pod spec, else the port).
    pub protocol: Option<Protocol>,
    /// Also probe debuggers that serve one client (Delve without
    /// `--accept-multiclient`, debugpy): this uses up their connection.
    pub deep: bool,
    /// Start a session when none covers the target.
    pub connect: bool,
    /// The whole run's budget.
    pub timeout: Duration,
    /// devnetd's socket.
    pub socket: PathBuf,
    /// The `devnet` binary `--connect` starts.
    pub devnet: PathBuf,
}

/// A check that stopped: the class, what is wrong, and the fix.
#[derive(Debug)]
pub struct Stop {
    pub failure: Failure,
    pub message: String,
    pub fix: Option<String>,
}

pub(crate) fn stop(failure: Failure, message: impl Into<String>, fix: impl Into<Option<String>>) -> Stop {
    Stop { failure, message: message.into(), fix: fix.into() }
}

/// Runs every target in turn, reporting progress to `emit`.
pub async fn run(opts: &Options, emit: &mut dyn FnMut(Progress)) -> Report {
    let deadline = Instant::now() + opts.timeout;
    let mut run = Run { opts, emit, deadline, cluster: None, sessions: None, started: false };
    let mut reports = Vec::new();
    for target in &opts.targets {
        let mut report = TargetReport::new(&target.text);
        match run.check(target, &mut report).await {
            Ok(message) => {
                report.ok = true;
                report.message = message;
            }
            Err(s) => {
                report.failure = Some(s.failure);
                report.message = s.message;
                report.fix = s.fix;
            }
        }
        reports.push(report);
    }
    Report::new(reports)
}

struct Run<'a> {
    opts: &'a Options,
    emit: &'a mut dyn FnMut(Progress),
    deadline: Instant,
    /// The cluster, read once (an error is kept as text: it only ever warns).
    cluster: Option<Result<Cluster, String>>,
    sessions: Option<Vec<SessionStatus>>,
    /// `--connect` started a session in this run.
    started: bool,
}

impl Run<'_> {
    fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    fn started(&mut self, target: &Target, step: Step) {
        (self.emit)(Progress::Started { target: target.text.clone(), step });
    }

    fn finished(&mut self, target: &Target, step: Step, ok: bool, message: impl Into<String>) {
        (self.emit)(Progress::Finished { target: target.text.clone(), step, ok, message: message.into() });
    }

    fn warn(&mut self, target: &Target, report: &mut TargetReport, message: String) {
        (self.emit)(Progress::Warning { target: target.text.clone(), message: message.clone() });
        report.warnings.push(message);
    }

    /// Runs a step, reporting its start and its end.
    async fn step<T>(
        &mut self,
        target: &Target,
        step: Step,
        what: impl AsyncFnOnce(&mut Self) -> Result<(T, String), Stop>,
    ) -> Result<T, Stop> {
        self.started(target, step);
        match what(self).await {
            Ok((value, message)) => {
                self.finished(target, step, true, message);
                Ok(value)
            }
            Err(s) => {
                self.finished(target, step, false, s.message.clone());
                Err(s)
            }
        }
    }

    async fn cluster(&mut self) -> Result<Cluster, String> {
        if self.cluster.is_none() {
            let left = self.left();
            let got = match tokio::time::timeout(left, Cluster::connect(&self.opts.cluster)).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("the API server did not answer within {} s", left.as_secs())),
            };
            self.cluster = Some(got);
        }
        self.cluster.clone().unwrap_or_else(|| Err("no cluster".into()))
    }

    async fn get(&mut self, path: &str) -> Result<Value, String> {
        let cluster = self.cluster().await?;
        match tokio::time::timeout(self.left(), cluster.get(path)).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("the API server did not answer GET {path} in time")),
        }
    }

    fn namespace(&self, target: &Target) -> String {
        target
            .namespace()
            .map(str::to_owned)
            .or_else(|| self.opts.namespace.clone())
            .or_else(|| match &self.cluster {
                Some(Ok(c)) => Some(c.client.default_namespace().to_owned()),
                _ => None,
            })
            .unwrap_or_else(|| "default".to_owned())
    }

    async fn sessions(&mut self, refresh: bool) -> Result<Vec<SessionStatus>, String> {
        if refresh || self.sessions.is_none() {
            let sessions = devnet_session::keeper::sessions(&self.opts.socket, ClientKind::Preflight)
                .await
                .map_err(|e| format!("{e:#}"))?;
            self.sessions = Some(sessions);
        }
        Ok(self.sessions.clone().unwrap_or_default())
    }

    /// The cluster domain of the session for this context (or the only one).
    fn cluster_domain(&self) -> String {
        let sessions = self.sessions.as_deref().unwrap_or_default();
        let by_context = self.opts.cluster.context.as_ref().and_then(|c| sessions.iter().find(|s| &s.name == c));
        by_context
            .or(sessions.first())
            .map(|s| s.status.cluster_domain.clone())
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "cluster.local".to_owned())
    }

    async fn check(&mut self, target: &Target, report: &mut TargetReport) -> Result<String, Stop> {
        self.step(target, Step::Session, async |run| run.session_step().await).await?;
        let (addr, pod_hint) = self.step(target, Step::Resolve, async |run| run.resolve_step(target).await).await?;
        report.resolved = Some(addr.clone());
        let way = self.step(target, Step::Path, async |run| run.path_step(addr.address.ip()).await).await;
        let way = match way {
            Err(s)
                if s.failure == Failure::NoPath && self.opts.connect && !self.started && !self.context_runs().await =>
            {
                // The session that would route it (this context's) does not run yet.
                self.step(target, Step::Session, async |run| run.connect_session().await).await?;
                self.step(target, Step::Path, async |run| run.path_step(addr.address.ip()).await).await?
            }
            other => other?,
        };
        if way.via == devnet_path::Path::Tunnel
            && let Some(s) = self.sessions.as_deref().unwrap_or_default().iter().find(|s| s.name == way.session)
            && s.status.state == LinkState::Reconnecting
        {
            let msg =
                format!("the relay link is down and reconnecting: {}", s.status.last_error.clone().unwrap_or_default());
            self.warn(target, report, msg);
        }
        report.way = Some(way.clone());
        let facts = self.step(target, Step::Pod, async |run| run.pod_step(target, &addr, pod_hint).await).await?;
        if let Some(w) = facts.as_ref().and_then(advice::pod_warning) {
            self.warn(target, report, w);
        }
        report.pod = facts.clone();
        let protocol = advice::protocol(self.opts.protocol, facts.as_ref(), target.port);
        if let Some(why) = advice::unsafe_to_probe(protocol, facts.as_ref(), self.opts.deep) {
            report.probe =
                Some(Probed { protocol, probed: false, version: None, note: Some(why.clone()), connect_ms: None });
            self.started(target, Step::Probe);
            self.finished(target, Step::Probe, true, format!("not probed: {why}"));
            if let Some(f) = facts.as_ref().filter(|f| !f.ready) {
                return Err(stop(
                    Failure::NotReady,
                    format!("pod {}/{} is not ready", f.namespace, f.name),
                    Some(format!("look at `kubectl describe pod -n {} {}`", f.namespace, f.name)),
                ));
            }
            return Ok(format!(
                "{} has a way ({} via {}); the debugger was not probed: {why}",
                addr.address,
                way.cidr,
                advice::via(way.via)
            ));
        }
        let (stream, connect_ms) = self
            .step(target, Step::Connect, async |run| {
                run.connect_step(addr.address, &way, facts.as_ref(), protocol).await
            })
            .await?;
        let version = self
            .step(target, Step::Probe, async |run| run.probe_step(stream, addr.address, protocol, facts.as_ref()).await)
            .await?;
        report.probe = Some(Probed {
            protocol,
            probed: true,
            version: Some(version.clone()),
            note: None,
            connect_ms: Some(connect_ms),
        });
        if protocol == Protocol::NodeInspector && target.by_name() {
            let name = match &target.kind {
                Kind::Host(h) => h.clone(),
                _ => addr.by.split_whitespace().last().unwrap_or_default().to_owned(),
            };
            if let Some(w) = self.inspector_host_check(addr.address, &name).await {
                self.warn(target, report, w);
            }
        }
        Ok(format!("{version} answers at {} via {} ({})", addr.address, advice::via(way.via), way.cidr))
    }

    async fn session_step(&mut self) -> Result<((), String), Stop> {
        let sessions = match self.sessions(false).await {
            Ok(s) => s,
            Err(e) => return Err(stop(Failure::NotConnected, format!("devnet is not connected: {e}"), None)),
        };
        if sessions.is_empty() {
            if self.opts.connect {
                return self.connect_session().await;
            }
            return Err(stop(
                Failure::NotConnected,
                "devnet is not connected: no session runs",
                Some(advice::connect_fix(self.opts.cluster.context.as_deref())),
            ));
        }
        let names: Vec<String> = sessions.iter().map(|s| format!("{} ({:?})", s.name, s.status.state)).collect();
        Ok(((), format!("sessions: {}", names.join(", "))))
    }

    /// The kubeconfig context: the one asked for, else the current one
    /// (which names its session).
    async fn context(&mut self) -> Result<String, String> {
        match &self.opts.cluster.context {
            Some(c) => Ok(c.clone()),
            None => self.cluster().await.map(|c| c.context),
        }
    }

    /// Whether a session for the context already runs (then `--connect`
    /// has nothing to start: an address outside it stays outside).
    async fn context_runs(&mut self) -> bool {
        let Ok(context) = self.context().await else { return false };
        self.sessions.as_deref().unwrap_or_default().iter().any(|s| s.name == context)
    }

    /// `--connect`: starts `devnet connect` for the context, detached (the
    /// session must outlive this preflight: the debugger comes next), and
    /// waits until devnetd reports it up.
    async fn connect_session(&mut self) -> Result<((), String), Stop> {
        self.started = true;
        let context = self
            .context()
            .await
            .map_err(|e| stop(Failure::NotConnected, format!("cannot start a session: {e}"), None))?;
        let log = advice::connect_log_path(&context);
        if let Some(dir) = log.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let out = std::fs::File::create(&log)
            .map_err(|e| stop(Failure::Internal, format!("cannot write {}: {e}", log.display()), None))?;
        let err = out.try_clone().map_err(|e| stop(Failure::Internal, e.to_string(), None))?;
        let mut cmd = std::process::Command::new(&self.opts.devnet);
        cmd.arg("connect").arg("--context").arg(&context);
        if let Some(kc) = &self.opts.cluster.kubeconfig {
            cmd.arg("--kubeconfig").arg(kc);
        }
        // Short names (`svc.ns`, what launch configurations use) resolve
        // only for the namespaces a user works in: the kubeconfig's, and
        // here the targets' too, since the debugger attaches by that name.
        let mut namespaces = match devnet_kube::cluster::load_kubeconfig(&self.opts.cluster) {
            Ok(kc) => devnet_kube::cluster::working_namespaces(&kc, &context),
            Err(_) => Vec::new(),
        };
        for t in &self.opts.targets {
            let ns = self.namespace(t);
            if !namespaces.contains(&ns) {
                namespaces.push(ns);
            }
        }
        if !namespaces.is_empty() {
            cmd.arg("--namespace").arg(namespaces.join(","));
        }
        use std::os::unix::process::CommandExt;
        // Its own process group: the IDE's task ending (or Ctrl-C in its
        // terminal) must not end the session the debugger is about to use.
        cmd.stdin(std::process::Stdio::null()).stdout(out).stderr(err).process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| stop(Failure::Internal, format!("cannot start {}: {e}", self.opts.devnet.display()), None))?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                let last = tail.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("").to_owned();
                return Err(stop(
                    Failure::NotConnected,
                    format!("`devnet connect --context {context}` exited ({status}): {last}"),
                    Some(format!("its output is in {}", log.display())),
                ));
            }
            if let Ok(sessions) = self.sessions(true).await
                && let Some(s) = sessions.iter().find(|s| s.name == context)
                && matches!(s.status.state, LinkState::Connected | LinkState::Direct)
            {
                return Ok((
                    (),
                    format!("started session {context} (`devnet connect`, pid {}, log {})", child.id(), log.display()),
                ));
            }
            if self.left().is_zero() {
                return Err(stop(
                    Failure::TimedOut,
                    format!("the session for {context} did not come up within the timeout"),
                    Some(format!("`devnet connect` goes on in the background; see {}", log.display())),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200).min(self.left())).await;
        }
    }

    async fn resolve_step(&mut self, target: &Target) -> Result<((Resolved, Option<Value>), String), Stop> {
        let port = target.port;
        let (resolved, pod) = match &target.kind {
            Kind::Ip(ip) => (Resolved { address: SocketAddr::new(*ip, port), by: "the address as given".into() }, None),
            Kind::Host(host) => (self.system_resolve(target, host).await?, None),
            Kind::Service { name, .. } => {
                let _ = self.cluster().await;
                let ns = self.namespace(target);
                let host = format!("{name}.{ns}.svc.{}", self.cluster_domain());
                (self.system_resolve(target, &host).await?, None)
            }
            Kind::Pod { name, .. } => {
                let _ = self.cluster().await;
                let ns = self.namespace(target);
                let pod = self
                    .get(&format!("/api/v1/namespaces/{ns}/pods/{name}"))
                    .await
                    .map_err(|e| advice::api_miss(&e, "pod", name, &ns))?;
                (self.pod_address(&pod, port)?, Some(pod))
            }
            Kind::Deployment { name, .. } => {
                let _ = self.cluster().await;
                let ns = self.namespace(target);
                let pod = self.deployment_pod(name, &ns).await?;
                (self.pod_address(&pod, port)?, Some(pod))
            }
        };
        let message = format!("{} ({})", resolved.address, resolved.by);
        Ok(((resolved, pod), message))
    }

    fn pod_address(&self, pod: &Value, port: u16) -> Result<Resolved, Stop> {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
        let ip = podspec::ips(pod).into_iter().next().ok_or_else(|| {
            stop(
                Failure::NotReady,
                format!("pod {ns}/{name} has no IP yet (phase {})", pod["status"]["phase"].as_str().unwrap_or("?")),
                Some(format!("wait for it, or look at `kubectl describe pod -n {ns} {name}`")),
            )
        })?;
        Ok(Resolved { address: SocketAddr::new(ip, port), by: format!("pod {ns}/{name} status.podIP") })
    }

    /// A ready pod of the Deployment (the newest), else why there is none.
    async fn deployment_pod(&mut self, name: &str, ns: &str) -> Result<Value, Stop> {
        let deploy = self
            .get(&format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}"))
            .await
            .map_err(|e| advice::api_miss(&e, "deployment", name, ns))?;
        let selector = advice::label_selector(&deploy["spec"]["selector"]["matchLabels"]);
        let pods = self
            .get(&format!("/api/v1/namespaces/{ns}/pods?labelSelector={}", advice::query_escape(&selector)))
            .await
            .map_err(|e| stop(Failure::Internal, e, None))?;
        let mut pods: Vec<Value> = pods["items"].as_array().cloned().unwrap_or_default();
        pods.retain(|p| p["metadata"]["deletionTimestamp"].is_null());
        pods.sort_by_key(|p| {
            std::cmp::Reverse(p["metadata"]["creationTimestamp"].as_str().unwrap_or_default().to_owned())
        });
        if let Some(p) = pods.iter().find(|p| podspec::ready(p)) {
            return Ok(p.clone());
        }
        let states: Vec<String> = pods
            .iter()
            .map(|p| {
                format!(
                    "{} {}",
                    p["metadata"]["name"].as_str().unwrap_or("?"),
                    p["status"]["phase"].as_str().unwrap_or("?")
                )
            })
            .collect();
        Err(stop(
            Failure::NotReady,
            format!(
                "deployment {ns}/{name} has no ready pod ({})",
                if states.is_empty() { "no pods".to_owned() } else { states.join(", ") }
            ),
            Some(format!("look at `kubectl describe deployment -n {ns} {name}`")),
        ))
    }

    /// The system resolver (getaddrinfo), as the debugger will use it.
    async fn system_resolve(&mut self, target: &Target, host: &str) -> Result<Resolved, Stop> {
        // A session `--connect` just started may need a moment before its
        // resolver answers (the first query goes through a new relay link).
        let settle = Instant::now() + if self.started { Duration::from_secs(10) } else { Duration::ZERO };
        let first = loop {
            let lookup = tokio::time::timeout(self.left(), tokio::net::lookup_host((host, target.port))).await;
            match lookup {
                Ok(Ok(mut addrs)) => break addrs.next(),
                _ if Instant::now() < settle && !self.left().is_zero() => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                _ => break None,
            }
        };
        if let Some(address) = first {
            return Ok(Resolved { address, by: format!("the system resolver for {host}") });
        }
        // Why not: is there such a Service at all?
        let domain = self.cluster_domain();
        let service = match &target.kind {
            Kind::Service { name, .. } => Some((name.clone(), self.namespace(target))),
            _ => target::service_of_host(host, &domain),
        };
        let Some((name, ns)) = service else {
            return Err(stop(
                Failure::NameNotFound,
                format!("{host} does not resolve through the system resolver"),
                Some("check the name; for a Service write svc/NAME.NAMESPACE:PORT".to_owned()),
            ));
        };
        match self.get(&format!("/api/v1/namespaces/{ns}/services/{name}")).await {
            Ok(_) => Err(stop(
                Failure::NameNotFound,
                format!("service {ns}/{name} exists, but {host} does not resolve on this machine"),
                Some(format!(
                    "devnet's resolver is not answering for {domain}: run `devnet doctor`, or reconnect (`devnet disconnect`, then `devnet connect`)"
                )),
            )),
            Err(e) => Err(advice::api_miss(&e, "service", &name, &ns)),
        }
    }

    async fn path_step(&mut self, ip: IpAddr) -> Result<(Way, String), Stop> {
        let sessions = self.sessions(self.started).await.map_err(|e| stop(Failure::NotConnected, e, None))?;
        let hit = sessions.iter().find_map(|s| {
            s.status.paths.iter().filter(|v| v.cidr.contains(&ip)).max_by_key(|v| v.cidr.prefix_len()).map(|v| (s, v))
        });
        let Some((session, verdict)) = hit else {
            let cidrs: Vec<String> = sessions
                .iter()
                .map(|s| {
                    format!(
                        "{}: {}",
                        s.name,
                        s.status.paths.iter().map(|v| v.cidr.to_string()).collect::<Vec<_>>().join(", ")
                    )
                })
                .collect();
            return Err(stop(
                Failure::NoPath,
                format!("{ip} is outside every CIDR devnet routes ({})", cidrs.join("; ")),
                Some(
                    "is it in this cluster? devnet routes the pod and service CIDRs it discovered; if the cluster has more, add them with `devnet connect --cidr …`"
                        .to_owned(),
                ),
            ));
        };
        let way = Way {
            session: session.name.clone(),
            cidr: verdict.cidr,
            via: verdict.path,
            evidence: verdict.reason.clone(),
            transport: (verdict.path == devnet_path::Path::Tunnel).then(|| session.status.transport.clone()).flatten(),
        };
        if verdict.path == devnet_path::Path::Unreachable {
            return Err(stop(
                Failure::NoPath,
                format!("{} has no way: {}", verdict.cidr, verdict.reason),
                Some("run `devnet doctor`".to_owned()),
            ));
        }
        let message = format!(
            "{} via {} ({}){}",
            verdict.cidr,
            advice::via(verdict.path),
            verdict.reason,
            way.transport.as_deref().map(|t| format!(", relay over {t}")).unwrap_or_default()
        );
        Ok((way, message))
    }

    /// The pod behind the address, from the API (never fatal: a user who
    /// may not list pods still gets the probe).
    async fn pod_step(
        &mut self,
        target: &Target,
        addr: &Resolved,
        pod: Option<Value>,
    ) -> Result<(Option<PodFacts>, String), Stop> {
        let found = match pod {
            Some(p) => Ok(Some((p, target.port))),
            None => self.find_pod(target, addr).await,
        };
        match found {
            Ok(Some((pod, port))) => {
                let f = podspec::facts(&pod, port);
                let msg = advice::describe_facts(&f);
                Ok((Some(f), msg))
            }
            Ok(None) => Ok((None, "no pod found behind the address; checking the port alone".to_owned())),
            Err(e) => Ok((None, format!("could not read the pod spec ({e}); checking the port alone"))),
        }
    }

    async fn find_pod(&mut self, target: &Target, addr: &Resolved) -> Result<Option<(Value, u16)>, String> {
        let ip = addr.address.ip();
        let service = match &target.kind {
            Kind::Service { name, .. } => Some((name.clone(), self.namespace(target))),
            Kind::Host(h) => target::service_of_host(h, &self.cluster_domain()),
            _ => None,
        };
        let service = match service {
            Some((name, ns)) => Some(self.get(&format!("/api/v1/namespaces/{ns}/services/{name}")).await?),
            None => {
                let pods = self.get(&format!("/api/v1/pods?fieldSelector=status.podIP%3D{ip}")).await?;
                if let Some(p) = pods["items"].as_array().and_then(|a| a.first()) {
                    return Ok(Some((p.clone(), target.port)));
                }
                let services = self.get("/api/v1/services").await?;
                services["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|s| {
                        s["spec"]["clusterIPs"]
                            .as_array()
                            .is_some_and(|ips| ips.iter().any(|i| i.as_str() == Some(&ip.to_string())))
                    })
                    .cloned()
            }
        };
        let Some(service) = service else { return Ok(None) };
        let ns = service["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
        let selector = advice::label_selector(&service["spec"]["selector"]);
        if selector.is_empty() {
            return Ok(None);
        }
        let pods = self
            .get(&format!("/api/v1/namespaces/{ns}/pods?labelSelector={}", advice::query_escape(&selector)))
            .await?;
        let mut pods: Vec<Value> = pods["items"].as_array().cloned().unwrap_or_default();
        pods.sort_by_key(|p| !podspec::ready(p));
        let Some(pod) = pods.into_iter().next() else { return Ok(None) };
        let Some(port) = podspec::service_target_port(&service, target.port, &pod) else {
            return Err(format!(
                "service {ns}/{} has no port {} (it has {:?})",
                service["metadata"]["name"].as_str().unwrap_or("?"),
                target.port,
                podspec::service_ports(&service)
            ));
        };
        Ok(Some((pod, port)))
    }

    async fn connect_step(
        &mut self,
        addr: SocketAddr,
        way: &Way,
        facts: Option<&PodFacts>,
        protocol: Protocol,
    ) -> Result<((TcpStream, f64), String), Stop> {
        let began = Instant::now();
        let limit = self.left();
        match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let ms = began.elapsed().as_secs_f64() * 1000.0;
                Ok(((s, ms), format!("connected to {addr} in {ms:.1} ms")))
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                Err(advice::refused(addr, facts, protocol))
            }
            Ok(Err(e)) if matches!(e.raw_os_error(), Some(libc::EHOSTUNREACH | libc::ENETUNREACH)) => Err(stop(
                Failure::NoPath,
                format!("{addr}: {e} (devnet's way: {} via {}: {})", way.cidr, advice::via(way.via), way.evidence),
                Some("run `devnet doctor`".to_owned()),
            )),
            Ok(Err(e)) => Err(stop(Failure::Internal, format!("connecting to {addr}: {e}"), None)),
            Err(_) => Err(advice::connect_timed_out(addr, way, facts, limit)),
        }
    }

    async fn probe_step(
        &mut self,
        mut stream: TcpStream,
        addr: SocketAddr,
        protocol: Protocol,
        facts: Option<&PodFacts>,
    ) -> Result<(String, String), Stop> {
        let mut probe = Probe::new(protocol, &addr.to_string());
        if probe.connect_is_enough() {
            return Ok(("a TCP listener".to_owned(), "connected (plain TCP: nothing more to check)".to_owned()));
        }
        let limit = self.left().min(Duration::from_secs(5));
        let result = tokio::time::timeout(limit, async {
            let greeting = probe.greeting();
            if !greeting.is_empty() {
                stream.write_all(&greeting).await?;
            }
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = stream.read(&mut buf).await?;
                let feed = if n == 0 { probe.eof() } else { probe.feed(&buf[..n]) };
                match feed {
                    Feed::NeedMore if n == 0 => return Ok(Feed::Wrong("it closed the connection".into())),
                    Feed::NeedMore => {}
                    Feed::Send(bytes) => stream.write_all(&bytes).await?,
                    done => return Ok::<Feed, std::io::Error>(done),
                }
            }
        })
        .await;
        // Close at once: a debugger that serves one client at a time is
        // free again for the IDE.
        drop(stream);
        match result {
            Ok(Ok(Feed::Identified(v))) => Ok((v.clone(), v)),
            Ok(Ok(Feed::Wrong(what))) => Err(advice::wrong_protocol(addr, protocol, &what, facts)),
            Ok(Ok(_)) => Err(stop(Failure::Internal, "the probe ended without a verdict", None)),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                Err(advice::wrong_protocol(addr, protocol, "it reset the connection", facts))
            }
            Ok(Err(e)) => Err(stop(Failure::Internal, format!("talking to {addr}: {e}"), None)),
            Err(_) => Err(advice::silent(addr, protocol, limit, facts)),
        }
    }

    /// Asks the inspector with the name a person would attach by; it
    /// refuses names (DNS rebinding protection), which breaks attaching by a
    /// service name even though the way works.
    async fn inspector_host_check(&mut self, addr: SocketAddr, name: &str) -> Option<String> {
        let check = async {
            let mut s = TcpStream::connect(addr).await.ok()?;
            s.write_all(&probe::inspector_host_check(&format!("{name}:{}", addr.port()))).await.ok()?;
            let mut answer = Vec::new();
            s.read_to_end(&mut answer).await.ok()?;
            probe::inspector_refused_host(&answer)
        };
        match tokio::time::timeout(self.left().min(Duration::from_secs(3)), check).await {
            Ok(Some(true)) => Some(format!(
                "the Node inspector refuses the Host {name}:{} (it accepts only IP addresses and localhost), so a client that sends the name it was given (Chrome DevTools, `node inspect`) cannot attach by that name: attach by the address {} instead (VS Code's Node debugger sends Host: localhost and is not affected)",
                addr.port(),
                addr.ip()
            )),
            _ => None,
        }
    }
}

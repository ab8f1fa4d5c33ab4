// Generated from devnet's Rust types by crates/devnet-desktop/tests/generated.rs: do not edit.

export type Snapshot = { state: TrayState, 
/**
 * One line: what the icon means now (the menu's first line; copied on click).
 */
headline: string, daemon: DaemonView, sessions: Array<SessionView>, 
/**
 * The user's kubeconfig contexts, each a cluster to connect to.
 */
contexts: Array<ContextEntry>, 
/**
 * Why the contexts could not be read (no kubeconfig, a bad one).
 */
contexts_error: string | null, 
/**
 * A connect in progress, or the last one that failed.
 */
progress: ConnectProgress | null, 
/**
 * What happened lately, newest last.
 */
events: Array<EventLine>, doctor: DoctorView, 
/**
 * Whether the app starts at login.
 */
autostart: boolean, };

export type TrayState = "off" | "connecting" | "direct" | "tunnel" | "split" | "degraded" | "error";

export type DaemonView = { "kind": "unknown" } | { "kind": "connected", version: string, } | { "kind": "unreachable", message: string, };

export type SessionView = { name: string, 
/**
 * Whether this user started it (only they may end it).
 */
mine: boolean, state: TrayState, 
/**
 * Each CIDR's path, in words and with its evidence.
 */
paths: Array<PathView>, status: Status, };

export type PathView = { 
/**
 * `pods`, `services`, or none when discovery did not say.
 */
role: string | null, 
/**
 * `10.244.0.0/16 pods: direct via 192.168.10.1 (eth0), 0.42 ms`.
 */
summary: string, verdict: Verdict, };

export type ContextEntry = { name: string, 
/**
 * The API server's address, when the kubeconfig names it.
 */
server: string | null, 
/**
 * The kubeconfig's current context.
 */
current: boolean, 
/**
 * Whether devnetd runs a session for it.
 */
connected: boolean, };

export type ConnectProgress = { context: string, steps: Array<ProgressStep>, 
/**
 * Why it failed, in the cluster's own words (a pod's waiting reason and message).
 */
failure: string | null, done: boolean, };

export type ProgressStep = { phase: Phase, text: string, };

export type Phase = "discovery" | "relay" | "session";

export type EventLine = { 
/**
 * Milliseconds since the Unix epoch.
 */
at_ms: number, text: string, };

export type DoctorView = { "kind": "not-run" } | { "kind": "running", context: string, } | { "kind": "done", context: string, report: DoctorReport, } | { "kind": "failed", context: string, error: string, };

export type DoctorReport = { discovered: Array<Discovered>, 
/**
 * What discovery could not settle, in words.
 */
discovery_notes: Array<string>, paths: Array<Verdict>, findings: Array<Finding>, };

export type Status = { state: LinkState, relay: string, 
/**
 * The relay's name from its handshake.
 */
relay_name: string | null, 
/**
 * How the relay is reached now: `direct 10.60.20.11:31443`, or
 * `port-forward devnet/devnet-relay-… via https://…`.
 */
transport: string | null, 
/**
 * What cluster discovery found, and where.
 */
discovered: Array<Discovered>, relay_rtt_ms: number | null, 
/**
 * Why the link was last lost or could not be made.
 */
last_error: string | null, reconnects: number, tun: string, 
/**
 * CIDRs routed through the tunnel.
 */
routes: Array<string>, 
/**
 * The path chosen for every CIDR, with the evidence.
 */
paths: Array<Verdict>, dns_server: string | null, cluster_domain: string, 
/**
 * How the system's resolver is pointed at devnet's stub, and why that
 * backend: `systemd-resolved: link devnet0 … (…)`, `resolv.conf: …`.
 */
dns_backend: string | null, tcp_flows: number, pending_opens: number, udp_associations: number, packets_from_tun: number, packets_to_tun: number, bytes_to_relay: number, bytes_from_relay: number, refused: number, unreachable: number, };

export type LinkState = "connecting" | "connected" | "reconnecting" | "direct" | "stopped";

export type Discovered = { what: string, value: string, source: string, };

export type Verdict = { cidr: string, path: Path, 
/**
 * One sentence: why.
 */
reason: string, evidence: Observation, };

export type Path = "direct" | "gateway" | "tunnel" | "unreachable";

export type Observation = { cidr: string, 
/**
 * The live target probed, if the CIDR has one.
 */
target: string | null, 
/**
 * The route the OS chose for the target (None: no route at all).
 */
route: RouteUsed | null, probe: ProbeOutcome | null, 
/**
 * When no direct path answered and a forwarding node is configured: the
 * node, and how the target answered through it.
 */
gateway?: GatewayTrial | null, 
/**
 * Where packets to the target stop, hop by hop, when doctor traced a
 * probe that did not answer.
 */
hops?: Array<Hop>, 
/**
 * Whether the way is this cluster's: tried when the probe answered and
 * the relay has an address inside the CIDR (None: not tried).
 */
proof?: Proof | null, };

export type RouteUsed = { dev: string, gateway: string | null, src: string | null, };

export type ProbeOutcome = { "outcome": "connected", rtt_us: number, } | { "outcome": "refused", rtt_us: number, } | { "outcome": "timed-out", after_ms: number, } | { "outcome": "unreachable", error: string, };

export type GatewayTrial = { gateway: string, 
/**
 * Whether the node is on a directly connected network; devnet only
 * routes through on-link nodes.
 */
on_link: boolean, probe: ProbeOutcome | null, 
/**
 * The proof through the node (tried when its probe answered).
 */
proof?: Proof | null, };

export type Hop = { ttl: number, 
/**
 * The router or host that answered, if any did.
 */
from: string | null, answer: HopAnswer, };

export type HopAnswer = "forwards" | "no-route" | "prohibited" | "reached" | "silent";

export type Proof = { 
/**
 * The relay's address that was dialled.
 */
endpoint: string, 
/**
 * The route the OS chose for it; none for a trial through a forwarding
 * node (devnet's own trial table decides that way).
 */
route: RouteUsed | null, outcome: ProofOutcome, };

export type ProofOutcome = { "outcome": "verified", age_s: number, } | { "outcome": "failed", error: string, };

export type Finding = { severity: Severity, title: string, detail: string, 
/**
 * What to change, when something should change.
 */
fix: string | null, };

export type Severity = "info" | "warning";


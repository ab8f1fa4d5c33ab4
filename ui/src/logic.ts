// What the window shows, as pure functions of the snapshot: formatting,
// defaults, which actions apply. Unit-tested in tests/unit/logic.test.ts.

import type {
  ConnectProgress,
  ContextEntry,
  EventLine,
  Path,
  Phase,
  ProbeOutcome,
  RouteUsed,
  Snapshot,
  Status,
  TrayState,
} from './generated/devnet';

export const STATES: readonly TrayState[] = ['off', 'connecting', 'direct', 'tunnel', 'split', 'degraded', 'error'];

export type Scheme = 'light' | 'dark';

/** The tray icon for a state, as served from public/icons (relative: works under Tauri's protocol and any static server). */
export function iconPath(state: TrayState, scheme: Scheme): string {
  return `icons/${state}-${scheme}.png`;
}

/**
 * How a badge is coloured, matching the tray icon's badge: green for the
 * office's own routes, blue for the tunnel, both for split, amber when
 * degraded, red on error; grey when off, a ring while connecting.
 */
export type Tone = 'neutral' | 'busy' | 'ok' | 'info' | 'split' | 'warn' | 'bad';

export function stateTone(state: TrayState): Tone {
  switch (state) {
    case 'off':
      return 'neutral';
    case 'connecting':
      return 'busy';
    case 'direct':
      return 'ok';
    case 'tunnel':
      return 'info';
    case 'split':
      return 'split';
    case 'degraded':
      return 'warn';
    case 'error':
      return 'bad';
  }
}

export function pathTone(path: Path): Tone {
  switch (path) {
    case 'direct':
    case 'gateway':
      return 'ok';
    case 'tunnel':
      return 'info';
    case 'unreachable':
      return 'bad';
  }
}

/** A path in a word, as the Rust side says it (`gateway` is a forwarding node). */
export function pathWord(path: Path): string {
  return path === 'gateway' ? 'via forwarding node' : path;
}

/** Milliseconds, two decimals under 10 ms, one under 100, none above: `0.42 ms`, `12.3 ms`, `240 ms`. */
export function formatMs(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '–';
  if (ms < 10) return `${ms.toFixed(2)} ms`;
  if (ms < 100) return `${ms.toFixed(1)} ms`;
  return `${Math.round(ms)} ms`;
}

/** A relay round trip, or a dash when there is none (a direct session has no relay in use). */
export function formatRtt(ms: number | null): string {
  return ms === null ? '–' : formatMs(ms);
}

/** A probe's outcome in words: `0.42 ms`, `refused in 0.42 ms`, `no answer in 800 ms`, the OS error. */
export function probeWords(probe: ProbeOutcome | null): string {
  if (probe === null) return 'not probed';
  switch (probe.outcome) {
    case 'connected':
      return formatMs(probe.rtt_us / 1000);
    case 'refused':
      return `refused in ${formatMs(probe.rtt_us / 1000)}`;
    case 'timed-out':
      return `no answer in ${probe.after_ms} ms`;
    case 'unreachable':
      return probe.error;
  }
}

/** Whether a probe got an answer (a refusal is an answer: the host is reachable). */
export function probeAnswered(probe: ProbeOutcome | null): boolean {
  return probe !== null && (probe.outcome === 'connected' || probe.outcome === 'refused');
}

/** The route the OS picked: `eth0 via 192.168.10.1`, `eth0 (on link)`, or `no route`. */
export function routeWords(route: RouteUsed | null): string {
  if (route === null) return 'no route';
  return route.gateway === null ? `${route.dev} (on link)` : `${route.dev} via ${route.gateway}`;
}

/** Bytes in binary units: `812 B`, `177.8 KiB`, `2.30 MiB`. */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n) || n < 0) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  if (i === 0) return `${v} B`;
  return `${v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : Math.round(v).toString()} ${units[i]}`;
}

/** A count with thousands separators, locale-independent: `1,804`. */
export function formatCount(n: number): string {
  return Math.trunc(n)
    .toString()
    .replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

const pad = (n: number) => n.toString().padStart(2, '0');

/** An event's time in local time: `14:03:07` today, `2026-12-01 14:03:07` another day. */
export function formatEventTime(atMs: number, nowMs: number = Date.now()): string {
  const at = new Date(atMs);
  const now = new Date(nowMs);
  const time = `${pad(at.getHours())}:${pad(at.getMinutes())}:${pad(at.getSeconds())}`;
  const sameDay =
    at.getFullYear() === now.getFullYear() && at.getMonth() === now.getMonth() && at.getDate() === now.getDate();
  return sameDay ? time : `${at.getFullYear()}-${pad(at.getMonth() + 1)}-${pad(at.getDate())} ${time}`;
}

/** Events newest first (the snapshot lists them newest last); a copy, the snapshot is left alone. */
export function newestFirst(events: readonly EventLine[]): EventLine[] {
  return events
    .map((e, i) => ({ e, i }))
    .sort((a, b) => b.e.at_ms - a.e.at_ms || b.i - a.i)
    .map(({ e }) => e);
}

/** The context the picker starts on: the kubeconfig's current one, else the first; none without contexts. */
export function defaultContext(contexts: readonly ContextEntry[]): string | null {
  return (contexts.find((c) => c.current) ?? contexts[0])?.name ?? null;
}

/** Keep the user's pick across snapshots while it still exists; otherwise fall back to the default. */
export function keepSelection(selected: string | null, contexts: readonly ContextEntry[]): string | null {
  if (selected !== null && contexts.some((c) => c.name === selected)) return selected;
  return defaultContext(contexts);
}

/** A context in the picker: `lab (current, connected)`. */
export function contextLabel(c: ContextEntry): string {
  const tags = [c.current ? 'current' : null, c.connected ? 'connected' : null].filter(Boolean);
  return tags.length ? `${c.name} (${tags.join(', ')})` : c.name;
}

/** A connect that is still going. */
export function connecting(p: ConnectProgress | null): p is ConnectProgress {
  return p !== null && !p.done;
}

export interface Actions {
  /** Connect is offered for the selected context. */
  canConnect: boolean;
  /** Why Connect is not offered, when it is not. */
  connectBlocked: string | null;
  /** Sessions this user may end. */
  disconnect: string[];
  /** Sessions someone else started (shown, not endable). */
  othersSessions: string[];
  /** The context doctor runs on, and whether it can run now. */
  doctorContext: string | null;
  canRunDoctor: boolean;
}

/** Which actions the window offers, for a snapshot and the picker's selection. */
export function actionsFor(s: Snapshot, selected: string | null): Actions {
  const daemonDown = s.daemon.kind === 'unreachable';
  const ctx = s.contexts.find((c) => c.name === selected) ?? null;
  const busy = connecting(s.progress);
  const hasSession = ctx !== null && (ctx.connected || s.sessions.some((x) => x.name === ctx.name));
  let connectBlocked: string | null = null;
  if (daemonDown) connectBlocked = 'devnetd is not reachable';
  else if (ctx === null) connectBlocked = s.contexts.length ? 'pick a cluster' : 'no cluster to connect to';
  else if (busy) connectBlocked = `connecting to ${s.progress!.context}`;
  else if (hasSession) connectBlocked = `${ctx.name} is connected`;
  const doctorContext = s.sessions[0]?.name ?? selected ?? defaultContext(s.contexts);
  return {
    canConnect: connectBlocked === null,
    connectBlocked,
    disconnect: s.sessions.filter((x) => x.mine).map((x) => x.name),
    othersSessions: s.sessions.filter((x) => !x.mine).map((x) => x.name),
    doctorContext,
    canRunDoctor: !daemonDown && doctorContext !== null && s.doctor.kind !== 'running',
  };
}

export const PHASES: readonly Phase[] = ['discovery', 'relay', 'session'];

export const PHASE_TITLES: Record<Phase, string> = { discovery: 'Discovery', relay: 'Relay', session: 'Session' };

export type PhaseState = 'done' | 'current' | 'failed' | 'pending';

export interface StepperPhase {
  phase: Phase;
  title: string;
  state: PhaseState;
  lines: string[];
}

/** The phase a connect is in (or stopped in): the last step's. */
export function currentPhase(p: ConnectProgress): Phase {
  return p.steps[p.steps.length - 1]?.phase ?? 'discovery';
}

/**
 * The stepper: Discovery → Relay → Session, each done, current, failed or
 * pending, with its steps' texts. Null when there is nothing to show (no
 * connect, or one that finished well).
 */
export function stepper(p: ConnectProgress | null): StepperPhase[] | null {
  if (p === null || (p.done && p.failure === null)) return null;
  const at = PHASES.indexOf(currentPhase(p));
  return PHASES.map((phase, i) => ({
    phase,
    title: PHASE_TITLES[phase],
    state: i < at ? 'done' : i > at ? 'pending' : p.done ? 'failed' : 'current',
    lines: p.steps.filter((s) => s.phase === phase).map((s) => s.text),
  }));
}

export interface Counter {
  label: string;
  value: string;
}

/** The session's counters, compactly. */
export function counters(st: Status): Counter[] {
  return [
    { label: 'TCP flows', value: formatCount(st.tcp_flows) },
    { label: 'UDP', value: formatCount(st.udp_associations) },
    { label: 'opening', value: formatCount(st.pending_opens) },
    { label: 'to relay', value: formatBytes(st.bytes_to_relay) },
    { label: 'from relay', value: formatBytes(st.bytes_from_relay) },
    { label: 'packets in/out', value: `${formatCount(st.packets_from_tun)}/${formatCount(st.packets_to_tun)}` },
    { label: 'refused', value: formatCount(st.refused) },
    { label: 'unreachable', value: formatCount(st.unreachable) },
  ];
}

/** A rejected command's reason as text (Tauri rejects with a string). */
export function errorText(e: unknown): string {
  if (typeof e === 'string') return e;
  if (e instanceof Error) return e.message;
  try {
    return JSON.stringify(e);
  } catch {
    return String(e);
  }
}

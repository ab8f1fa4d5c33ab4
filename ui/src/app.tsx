import { useEffect, useRef, useState } from 'preact/hooks';
import type { Backend } from './backend';
import type {
  DoctorView,
  Finding,
  PathView,
  Snapshot,
  SessionView,
  Status,
  Verdict,
} from './generated/devnet';
import {
  actionsFor,
  contextLabel,
  counters,
  errorText,
  formatEventTime,
  formatRtt,
  iconPath,
  keepSelection,
  newestFirst,
  pathTone,
  pathWord,
  probeAnswered,
  probeWords,
  routeWords,
  stateTone,
  stepper,
  type StepperPhase,
} from './logic';

/** Runs a command once at a time; shows its error; resolves to whether it worked. */
type Run = (what: string, act: () => Promise<void>, done?: string) => Promise<boolean>;

export function App({ backend }: { backend: Backend | null }) {
  const [snap, setSnap] = useState<Snapshot | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [note, setNote] = useState<string>('');
  const [busy, setBusy] = useState<Record<string, boolean>>({});
  const noteTimer = useRef<number | undefined>(undefined);
  // The checkbox shows the user's click at once; the next snapshot is the truth.
  const [autostart, setAutostart] = useState<{ enabled: boolean; over: Snapshot | null } | null>(null);
  const autostartShown = autostart && autostart.over === snap ? autostart.enabled : (snap?.autostart ?? false);

  useEffect(() => {
    if (backend === null) {
      setError('No devnet backend: open this window from the devnet tray app.');
      return;
    }
    let live = true;
    let unsubscribe: (() => void) | null = null;
    backend
      .subscribe((s) => live && setSnap(s))
      .then((u) => (live ? (unsubscribe = u) : u()))
      .catch((e) => setError(`Listening for updates failed: ${errorText(e)}`));
    backend
      .snapshot()
      .then((s) => live && setSnap((cur) => cur ?? s))
      .catch((e) => setError(`Reading devnet's state failed: ${errorText(e)}`));
    return () => {
      live = false;
      unsubscribe?.();
    };
  }, [backend]);

  const flash = (text: string) => {
    setNote(text);
    window.clearTimeout(noteTimer.current);
    noteTimer.current = window.setTimeout(() => setNote(''), 2500);
  };

  // A command in flight is not sent again; its control stays focusable
  // (disabling a focused button would drop keyboard focus to the page).
  const inFlight = useRef(new Set<string>());
  const run: Run = async (what, act, done) => {
    if (inFlight.current.has(what)) return false;
    inFlight.current.add(what);
    setBusy((b) => ({ ...b, [what]: true }));
    try {
      await act();
      setError(null);
      if (done) flash(done);
      return true;
    } catch (e) {
      setError(`${what} failed: ${errorText(e)}`);
      return false;
    } finally {
      inFlight.current.delete(what);
      setBusy((b) => ({ ...b, [what]: false }));
    }
  };

  const copy = (text: string) => backend && run('Copy', () => backend.copyText(text), 'Copied to the clipboard');

  return (
    <div class="app" data-state={snap?.state ?? 'loading'}>
      <Header snap={snap} onCopy={copy} />
      <main>
        <div class="alert-region" role="alert">
          {error && (
            <div class="notice bad" data-testid="error">
              <span>{error}</span>
              <button type="button" class="quiet" onClick={() => setError(null)}>
                Dismiss
              </button>
            </div>
          )}
        </div>
        {snap === null ? (
          <p class="muted loading">Waiting for devnet…</p>
        ) : (
          <Body snap={snap} backend={backend!} run={run} busy={busy} onCopy={copy} />
        )}
      </main>
      <footer>
        <label class="check">
          <input
            type="checkbox"
            checked={autostartShown}
            disabled={snap === null}
            onChange={(e) => {
              const enabled = (e.currentTarget as HTMLInputElement).checked;
              setAutostart({ enabled, over: snap });
              void run('Start at login', () => backend!.setAutostart(enabled)).then((ok) => ok || setAutostart(null));
            }}
          />
          Start at login
        </label>
        <span class="footer-note" role="status" aria-live="polite">
          {note}
        </span>
        <button
          type="button"
          disabled={snap === null}
          onClick={() => void run('Copy status', () => backend!.copyStatus(), 'Status copied to the clipboard')}
        >
          Copy status
        </button>
      </footer>
    </div>
  );
}

function Header({ snap, onCopy }: { snap: Snapshot | null; onCopy: (t: string) => void }) {
  const state = snap?.state ?? 'off';
  return (
    <header class="top">
      <div class="top-row">
        <picture class="state-icon">
          <source srcset={iconPath(state, 'dark')} media="(prefers-color-scheme: dark)" />
          <img src={iconPath(state, 'light')} width={32} height={32} alt="" />
        </picture>
        <div class="headline-region" aria-live="polite" aria-atomic="true">
          <h1>
            {snap ? (
              <button
                type="button"
                class="copyable headline"
                title="Copy the headline"
                onClick={() => onCopy(snap.headline)}
              >
                {snap.headline}
              </button>
            ) : (
              'devnet'
            )}
          </h1>
        </div>
        {snap && (
          <span class={`badge tone-${stateTone(snap.state)}`} data-testid="badge">
            <span class="sr-only">State: </span>
            <span class="badge-word">{snap.state}</span>
          </span>
        )}
      </div>
      {snap && <Daemon snap={snap} />}
    </header>
  );
}

function Daemon({ snap }: { snap: Snapshot }) {
  const d = snap.daemon;
  if (d.kind === 'unreachable') {
    return (
      <div class="banner" role="alert" data-testid="daemon-banner">
        <strong>devnetd is not reachable</strong>
        <p class="pre">{d.message}</p>
      </div>
    );
  }
  return (
    <p class="daemon muted" data-testid="daemon">
      {d.kind === 'connected' ? `devnetd ${d.version}` : 'devnetd: asking…'}
    </p>
  );
}

interface BodyProps {
  snap: Snapshot;
  backend: Backend;
  run: Run;
  busy: Record<string, boolean>;
  onCopy: (t: string) => void;
}

function Body({ snap, backend, run, busy, onCopy }: BodyProps) {
  const [picked, setPicked] = useState<string | null>(null);
  const selected = keepSelection(picked, snap.contexts);
  const act = actionsFor(snap, selected);
  const selectedEntry = snap.contexts.find((c) => c.name === selected) ?? null;
  const steps = stepper(snap.progress);
  const multi = snap.sessions.length > 1;

  return (
    <>
      <section class="card" aria-labelledby="connect-h">
        <h2 id="connect-h">Connect</h2>
        {snap.contexts_error && (
          <p class="notice warn" data-testid="contexts-error">
            Could not read the clusters: {snap.contexts_error}
          </p>
        )}
        <div class="connect-row">
          <label for="context" class="field-label">
            Cluster
          </label>
          <select
            id="context"
            value={selected ?? ''}
            disabled={snap.contexts.length === 0}
            aria-describedby="context-server"
            onChange={(e) => setPicked((e.currentTarget as HTMLSelectElement).value)}
          >
            {snap.contexts.length === 0 && <option value="">no clusters</option>}
            {snap.contexts.map((c) => (
              <option key={c.name} value={c.name}>
                {contextLabel(c)}
              </option>
            ))}
          </select>
          <button
            type="button"
            class="primary"
            disabled={!act.canConnect}
            title={act.connectBlocked ?? undefined}
            onClick={() => selected && void run('Connect', () => backend.connect(selected))}
          >
            {busy['Connect'] ? 'Connecting…' : 'Connect'}
          </button>
          {act.disconnect.map((name) => (
            <button
              type="button"
              key={name}
              class="danger"
              onClick={() => void run(`Disconnect ${name}`, () => backend.disconnect(name))}
            >
              Disconnect {name}
            </button>
          ))}
        </div>
        <p id="context-server" class="muted small" data-testid="context-server">
          {selectedEntry && (selectedEntry.server ?? 'no server named in the kubeconfig')}
          {selectedEntry && act.connectBlocked ? ` · ${act.connectBlocked}` : ''}
        </p>
        {act.othersSessions.length > 0 && (
          <p class="muted small">Started by another user (only they can end it): {act.othersSessions.join(', ')}</p>
        )}
        {steps && snap.progress && <Progress steps={steps} context={snap.progress.context} failure={snap.progress.failure} done={snap.progress.done} />}
        {snap.sessions.length === 0 && !steps && (
          <p class="muted empty">No session. Pick a cluster and connect; devnet finds its CIDRs and DNS itself.</p>
        )}
      </section>

      {snap.sessions.map((s, i) => (
        <Session key={s.name} s={s} idx={i} onCopy={onCopy} />
      ))}

      {snap.sessions.length > 0 && (
        <section class="card" aria-labelledby="found-h">
          <h2 id="found-h">What discovery found</h2>
          {snap.sessions.map((s) => (
            <table key={s.name} class="grid discovered" data-testid="discovered">
              {multi && <caption>{s.name}</caption>}
              <thead>
                <tr>
                  <th scope="col">What</th>
                  <th scope="col">Value</th>
                  <th scope="col">Source</th>
                </tr>
              </thead>
              <tbody>
                {s.status.discovered.map((d, j) => (
                  <tr key={j}>
                    <th scope="row">{d.what}</th>
                    <td class="mono">{d.value}</td>
                    <td class="muted">{d.source}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          ))}
        </section>
      )}

      <Doctor
        view={snap.doctor}
        context={act.doctorContext}
        canRun={act.canRunDoctor}
        onRun={() => act.doctorContext && void run('Doctor', () => backend.runDoctor(act.doctorContext!))}
      />

      <section class="card" aria-labelledby="events-h">
        <h2 id="events-h">Recent events</h2>
        {snap.events.length === 0 ? (
          <p class="muted">Nothing yet.</p>
        ) : (
          <ol class="events" data-testid="events">
            {newestFirst(snap.events).map((e, i) => (
              <li key={`${e.at_ms}-${i}`}>
                <time dateTime={new Date(e.at_ms).toISOString()}>{formatEventTime(e.at_ms)}</time>
                <span>{e.text}</span>
              </li>
            ))}
          </ol>
        )}
      </section>
    </>
  );
}

function Progress(p: { steps: StepperPhase[]; context: string; failure: string | null; done: boolean }) {
  const title = p.done ? `Connecting to ${p.context} failed` : `Connecting to ${p.context}`;
  return (
    <div class="progress" role="group" aria-labelledby="progress-h" data-testid="progress">
      <h3 id="progress-h">{title}</h3>
      <ol class="stepper">
        {p.steps.map((ph) => (
          <li
            key={ph.phase}
            class={`phase ${ph.state}`}
            data-phase={ph.phase}
            data-state={ph.state}
            aria-current={ph.state === 'current' ? 'step' : undefined}
          >
            <div class="phase-head">
              <span class="dot" aria-hidden="true">
                {ph.state === 'done' ? '✓' : ph.state === 'failed' ? '!' : ''}
              </span>
              <span class="phase-title">{ph.title}</span>
              <span class="sr-only">
                {' '}
                ({ph.state === 'current' ? 'in progress' : ph.state})
              </span>
            </div>
            {ph.lines.length > 0 && (
              <ul class="lines">
                {ph.lines.map((l, i) => (
                  <li key={i}>{l}</li>
                ))}
              </ul>
            )}
          </li>
        ))}
      </ol>
      {p.failure && (
        <div class="failure" role="alert" data-testid="failure">
          <strong>In the cluster's own words</strong>
          <p class="pre mono">{p.failure}</p>
        </div>
      )}
    </div>
  );
}

function Session({ s, idx, onCopy }: { s: SessionView; idx: number; onCopy: (t: string) => void }) {
  const h = `session-${idx}-h`;
  const st = s.status;
  return (
    <section class="card session" aria-labelledby={h} data-testid="session" data-session={s.name}>
      <div class="card-head">
        <h2 id={h}>
          Session <span class="name">{s.name}</span>
        </h2>
        <span class={`badge small tone-${stateTone(s.state)}`}>{s.state}</span>
        <span class="muted small">
          link {st.state} · {st.tun}
          {s.mine ? '' : ' · started by another user'}
        </span>
      </div>
      <table class="grid paths" data-testid="paths">
        <thead>
          <tr>
            <th scope="col">CIDR</th>
            <th scope="col">Role</th>
            <th scope="col">Path</th>
            <th scope="col">Evidence</th>
          </tr>
        </thead>
        <tbody>
          {s.paths.map((p) => (
            <PathRow key={p.verdict.cidr} p={p} onCopy={onCopy} />
          ))}
        </tbody>
      </table>
      <div class="facts">
        <Relay st={st} />
        <Dns st={st} />
      </div>
      <ul class="counters" aria-label="Counters" data-testid="counters">
        {counters(st).map((c) => (
          <li key={c.label}>
            <b>{c.value}</b> {c.label}
          </li>
        ))}
      </ul>
    </section>
  );
}

function PathRow({ p, onCopy }: { p: PathView; onCopy: (t: string) => void }) {
  const v = p.verdict;
  return (
    <tr data-cidr={v.cidr} data-testid="path-row">
      <th scope="row">
        <button
          type="button"
          class="copyable mono"
          title={`Copy: ${p.summary}`}
          aria-label={`Copy ${p.summary}`}
          onClick={() => onCopy(p.summary)}
        >
          {v.cidr}
        </button>
      </th>
      <td>{p.role ?? <span class="muted">–</span>}</td>
      <td>
        <span class={`pill tone-${pathTone(v.path)}`}>{pathWord(v.path)}</span>
      </td>
      <td class="evidence">
        <Evidence v={v} />
      </td>
    </tr>
  );
}

function Evidence({ v }: { v: Verdict }) {
  const ev = v.evidence;
  const gw = ev.gateway ?? null;
  return (
    <>
      <div class="ev-line">
        <span>
          <span class="k">route</span> <span class="mono">{routeWords(ev.route)}</span>
        </span>
        <span>
          <span class="k">probe</span> <span class="mono">{ev.target ?? 'no target'}</span>{' '}
          <span class={probeAnswered(ev.probe) ? 'ok-text' : 'muted'}>{probeWords(ev.probe)}</span>
        </span>
      </div>
      {gw && (
        <div class="ev-line">
          <span>
            <span class="k">node</span> <span class="mono">{gw.gateway}</span>
            {gw.on_link ? '' : ' (not on link)'} {probeWords(gw.probe)}
          </span>
        </div>
      )}
      {ev.hops && ev.hops.length > 0 && (
        <div class="ev-line">
          <span class="k">hops</span>{' '}
          <span class="mono">{ev.hops.map((h) => `${h.ttl} ${h.from ?? '*'} ${h.answer}`).join(' → ')}</span>
        </div>
      )}
      <div class="reason">{v.reason}</div>
    </>
  );
}

function Relay({ st }: { st: Status }) {
  return (
    <div class={`fact-group${st.last_error ? ' troubled' : ''}`} data-testid="relay">
      <h3>Relay</h3>
      <dl>
        {st.relay_name && (
          <>
            <dt>name</dt>
            <dd class="mono">{st.relay_name}</dd>
          </>
        )}
        <dt>address</dt>
        <dd class="mono">{st.relay}</dd>
        <dt>transport</dt>
        <dd>{st.transport ?? <span class="muted">not in use</span>}</dd>
        <dt>RTT</dt>
        <dd class="mono">{formatRtt(st.relay_rtt_ms)}</dd>
        <dt>reconnects</dt>
        <dd class="mono">{st.reconnects}</dd>
        <dt>tunnelled</dt>
        <dd class="mono">{st.routes.length ? st.routes.join(', ') : <span class="muted">nothing</span>}</dd>
        {st.last_error && (
          <>
            <dt>last error</dt>
            <dd class="warn-text">{st.last_error}</dd>
          </>
        )}
      </dl>
    </div>
  );
}

function Dns({ st }: { st: Status }) {
  return (
    <div class="fact-group" data-testid="dns">
      <h3>DNS</h3>
      <dl>
        <dt>server</dt>
        <dd class="mono">{st.dns_server ?? <span class="muted">none</span>}</dd>
        <dt>domain</dt>
        <dd class="mono">{st.cluster_domain}</dd>
        <dt>backend</dt>
        <dd>{st.dns_backend ?? <span class="muted">not set up</span>}</dd>
      </dl>
    </div>
  );
}

function Doctor(p: { view: DoctorView; context: string | null; canRun: boolean; onRun: () => void }) {
  const v = p.view;
  return (
    <section class="card" aria-labelledby="doctor-h" data-testid="doctor" data-doctor={v.kind}>
      <div class="card-head">
        <h2 id="doctor-h">Doctor</h2>
        <button type="button" class="push" disabled={!p.canRun} onClick={p.onRun}>
          {v.kind === 'running' ? 'Running…' : p.context ? `Run doctor on ${p.context}` : 'Run doctor'}
        </button>
      </div>
      {v.kind === 'not-run' && (
        <p class="muted">Checks discovery, each CIDR's path and DNS, and says what to change.</p>
      )}
      {v.kind === 'running' && (
        <p role="status" aria-busy="true">
          Running doctor on {v.context}…
        </p>
      )}
      {v.kind === 'failed' && (
        <p class="notice bad" role="alert">
          Doctor on {v.context} failed: {v.error}
        </p>
      )}
      {v.kind === 'done' && (
        <>
          <p class="muted small">
            Doctor on {v.context}:{' '}
            {v.report.findings.length === 0
              ? 'nothing to fix.'
              : `${v.report.findings.length} finding${v.report.findings.length > 1 ? 's' : ''}.`}
          </p>
          {v.report.findings.length > 0 && (
            <ul class="findings" data-testid="findings">
              {v.report.findings.map((f, i) => (
                <FindingItem key={i} f={f} />
              ))}
            </ul>
          )}
          {v.report.discovery_notes.length > 0 && (
            <ul class="notes">
              {v.report.discovery_notes.map((n, i) => (
                <li key={i}>{n}</li>
              ))}
            </ul>
          )}
        </>
      )}
    </section>
  );
}

function FindingItem({ f }: { f: Finding }) {
  return (
    <li class={`finding ${f.severity}`} data-severity={f.severity}>
      <div class="finding-head">
        <span class={`pill tone-${f.severity === 'warning' ? 'warn' : 'neutral'}`}>{f.severity}</span>
        <strong>{f.title}</strong>
      </div>
      <p>{f.detail}</p>
      {f.fix && (
        <p class="fix">
          <span class="k">Fix</span> {f.fix}
        </p>
      )}
    </li>
  );
}

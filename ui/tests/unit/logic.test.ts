import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import type { ConnectProgress, Snapshot, TrayState } from '../../src/generated/devnet';
import {
  actionsFor,
  connecting,
  contextLabel,
  counters,
  currentPhase,
  defaultContext,
  errorText,
  formatBytes,
  formatCount,
  formatEventTime,
  formatMs,
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
  STATES,
  stepper,
} from '../../src/logic';

const SNAPSHOTS: Record<TrayState, Snapshot> = JSON.parse(
  readFileSync(new URL('../fixtures/snapshots.json', import.meta.url), 'utf8'),
);
const snap = (state: TrayState): Snapshot => structuredClone(SNAPSHOTS[state]);

describe('formatting', () => {
  test('milliseconds: two decimals when small, fewer as they grow', () => {
    expect(formatMs(0.42)).toBe('0.42 ms');
    expect(formatMs(0.84)).toBe('0.84 ms');
    expect(formatMs(12.345)).toBe('12.3 ms');
    expect(formatMs(240.4)).toBe('240 ms');
    expect(formatMs(-1)).toBe('–');
    expect(formatMs(Number.NaN)).toBe('–');
  });

  test('relay RTT, or a dash when no relay is in use', () => {
    expect(formatRtt(0.84)).toBe('0.84 ms');
    expect(formatRtt(null)).toBe('–');
  });

  test('probe outcomes in words, as the Rust side says them', () => {
    expect(probeWords({ outcome: 'connected', rtt_us: 420 })).toBe('0.42 ms');
    expect(probeWords({ outcome: 'refused', rtt_us: 1500 })).toBe('refused in 1.50 ms');
    expect(probeWords({ outcome: 'timed-out', after_ms: 800 })).toBe('no answer in 800 ms');
    expect(probeWords({ outcome: 'unreachable', error: 'Network is unreachable (os error 101)' })).toBe(
      'Network is unreachable (os error 101)',
    );
    expect(probeWords(null)).toBe('not probed');
  });

  test('a refusal is an answer, a timeout is not', () => {
    expect(probeAnswered({ outcome: 'connected', rtt_us: 1 })).toBe(true);
    expect(probeAnswered({ outcome: 'refused', rtt_us: 1 })).toBe(true);
    expect(probeAnswered({ outcome: 'timed-out', after_ms: 800 })).toBe(false);
    expect(probeAnswered({ outcome: 'unreachable', error: 'x' })).toBe(false);
    expect(probeAnswered(null)).toBe(false);
  });

  test('the route the OS chose', () => {
    expect(routeWords({ dev: 'eth0', gateway: '192.168.10.1', src: '192.168.10.50' })).toBe('eth0 via 192.168.10.1');
    expect(routeWords({ dev: 'wlan0', gateway: null, src: null })).toBe('wlan0 (on link)');
    expect(routeWords(null)).toBe('no route');
  });

  test('the evidence words match the summaries the Rust side wrote', () => {
    for (const s of Object.values(SNAPSHOTS))
      for (const sess of s.sessions)
        for (const p of sess.paths) {
          const ev = p.verdict.evidence;
          if (p.verdict.path === 'direct' && ev.probe) expect(p.summary).toContain(probeWords(ev.probe));
          if (p.verdict.path === 'direct' && ev.route?.gateway) expect(p.summary).toContain(`via ${ev.route.gateway} (${ev.route.dev})`);
          expect(p.summary.startsWith(`${p.verdict.cidr} ${p.role}: ${pathWord(p.verdict.path)}`)).toBe(true);
        }
  });

  test('bytes in binary units', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1023)).toBe('1023 B');
    expect(formatBytes(1024)).toBe('1.00 KiB');
    expect(formatBytes(182044)).toBe('178 KiB');
    expect(formatBytes(2411977)).toBe('2.30 MiB');
    expect(formatBytes(50 * 1024 * 1024)).toBe('50.0 MiB');
    expect(formatBytes(3 * 1024 ** 4)).toBe('3.00 TiB');
    expect(formatBytes(-5)).toBe('–');
  });

  test('counts with separators', () => {
    expect(formatCount(0)).toBe('0');
    expect(formatCount(999)).toBe('999');
    expect(formatCount(1804)).toBe('1,804');
    expect(formatCount(1234567)).toBe('1,234,567');
  });

  test('event times in local time; the date only for another day', () => {
    const at = new Date(2026, 11, 1, 9, 5, 7).getTime();
    expect(formatEventTime(at, new Date(2026, 11, 1, 23, 0, 0).getTime())).toBe('09:05:07');
    expect(formatEventTime(at, new Date(2026, 11, 2, 0, 0, 1).getTime())).toBe('2026-12-01 09:05:07');
  });

  test('events newest first, without touching the snapshot', () => {
    const events = [
      { at_ms: 1, text: 'a' },
      { at_ms: 3, text: 'c' },
      { at_ms: 2, text: 'b' },
      { at_ms: 3, text: 'd' },
    ];
    expect(newestFirst(events).map((e) => e.text)).toEqual(['d', 'c', 'b', 'a']);
    expect(events.map((e) => e.text)).toEqual(['a', 'c', 'b', 'd']);
  });

  test('counters, compact', () => {
    const c = counters(snap('tunnel').sessions[0]!.status);
    expect(c).toContainEqual({ label: 'TCP flows', value: '3' });
    expect(c).toContainEqual({ label: 'from relay', value: '2.30 MiB' });
    expect(c).toContainEqual({ label: 'to relay', value: '178 KiB' });
    expect(c).toContainEqual({ label: 'packets in/out', value: '1,804/1,733' });
  });

  test('errors as text: Tauri rejects with a string', () => {
    expect(errorText('no such context')).toBe('no such context');
    expect(errorText(new Error('boom'))).toBe('boom');
    expect(errorText({ code: 1 })).toBe('{"code":1}');
  });
});

describe('states', () => {
  test('the icon for each state and scheme is a generated file', () => {
    for (const s of STATES)
      for (const scheme of ['light', 'dark'] as const) {
        const path = iconPath(s, scheme);
        expect(path).toBe(`icons/${s}-${scheme}.png`);
        expect(readFileSync(new URL(`../../public/${path}`, import.meta.url)).subarray(1, 4).toString()).toBe('PNG');
      }
  });

  test('badge tones follow the icon: green direct, blue tunnel, both split, amber degraded, red error', () => {
    expect(STATES.map(stateTone)).toEqual(['neutral', 'busy', 'ok', 'info', 'split', 'warn', 'bad']);
    expect(pathTone('direct')).toBe('ok');
    expect(pathTone('gateway')).toBe('ok');
    expect(pathTone('tunnel')).toBe('info');
    expect(pathTone('unreachable')).toBe('bad');
    expect(pathWord('gateway')).toBe('via forwarding node');
  });

  test('every state the tray knows has a sample', () => {
    expect(Object.keys(SNAPSHOTS).sort()).toEqual([...STATES].sort());
    for (const s of STATES) expect(SNAPSHOTS[s].state).toBe(s);
  });
});

describe('the context picker', () => {
  test('starts on the kubeconfig’s current context', () => {
    expect(defaultContext(snap('off').contexts)).toBe('lab');
    const flipped = snap('off').contexts.map((c) => ({ ...c, current: c.name === 'staging-eu' }));
    expect(defaultContext(flipped)).toBe('staging-eu');
  });

  test('falls back to the first context, or none', () => {
    const none = snap('off').contexts.map((c) => ({ ...c, current: false }));
    expect(defaultContext(none)).toBe('lab');
    expect(defaultContext([])).toBe(null);
  });

  test('keeps the user’s pick while it exists', () => {
    const cs = snap('off').contexts;
    expect(keepSelection('staging-eu', cs)).toBe('staging-eu');
    expect(keepSelection('gone', cs)).toBe('lab');
    expect(keepSelection(null, cs)).toBe('lab');
  });

  test('labels say current and connected', () => {
    expect(contextLabel(snap('tunnel').contexts[0]!)).toBe('lab (current, connected)');
    expect(contextLabel(snap('off').contexts[0]!)).toBe('lab (current)');
    expect(contextLabel(snap('off').contexts[1]!)).toBe('staging-eu');
  });
});

describe('which actions show', () => {
  test('off: connect to the current context, nothing to disconnect', () => {
    const a = actionsFor(snap('off'), 'lab');
    expect(a.canConnect).toBe(true);
    expect(a.connectBlocked).toBe(null);
    expect(a.disconnect).toEqual([]);
    expect(a.doctorContext).toBe('lab');
    expect(a.canRunDoctor).toBe(true);
  });

  test('connecting: no second connect while one runs', () => {
    const a = actionsFor(snap('connecting'), 'staging-eu');
    expect(a.canConnect).toBe(false);
    expect(a.connectBlocked).toBe('connecting to lab');
  });

  test('connected states: disconnect my session; connect only to another context', () => {
    for (const state of ['direct', 'tunnel', 'split', 'degraded'] as const) {
      const s = snap(state);
      const onLab = actionsFor(s, 'lab');
      expect(onLab.disconnect, state).toEqual(['lab']);
      expect(onLab.canConnect, state).toBe(false);
      expect(onLab.connectBlocked).toBe('lab is connected');
      expect(actionsFor(s, 'staging-eu').canConnect, state).toBe(true);
      expect(onLab.doctorContext).toBe('lab');
    }
  });

  test('someone else’s session is shown, not endable', () => {
    const s = snap('tunnel');
    s.sessions[0]!.mine = false;
    const a = actionsFor(s, 'lab');
    expect(a.disconnect).toEqual([]);
    expect(a.othersSessions).toEqual(['lab']);
  });

  test('error: a failed connect can be retried', () => {
    const a = actionsFor(snap('error'), 'staging-eu');
    expect(a.canConnect).toBe(true);
  });

  test('doctor runs on the first session, else the pick', () => {
    expect(actionsFor(snap('split'), 'staging-eu').doctorContext).toBe('lab');
    expect(actionsFor(snap('off'), 'staging-eu').doctorContext).toBe('staging-eu');
    const s = snap('off');
    s.doctor = { kind: 'running', context: 'lab' };
    expect(actionsFor(s, 'lab').canRunDoctor).toBe(false);
  });

  test('an unreachable devnetd blocks connect and doctor', () => {
    const s = snap('off');
    s.daemon = { kind: 'unreachable', message: 'start it' };
    const a = actionsFor(s, 'lab');
    expect(a.canConnect).toBe(false);
    expect(a.connectBlocked).toBe('devnetd is not reachable');
    expect(a.canRunDoctor).toBe(false);
  });

  test('no contexts: nothing to connect to', () => {
    const s = snap('off');
    s.contexts = [];
    s.contexts_error = 'no kubeconfig';
    const a = actionsFor(s, null);
    expect(a.canConnect).toBe(false);
    expect(a.connectBlocked).toBe('no cluster to connect to');
    expect(a.doctorContext).toBe(null);
    expect(a.canRunDoctor).toBe(false);
  });
});

describe('the stepper', () => {
  test('connecting: discovery done, relay current, session pending, each with its lines', () => {
    const p = snap('connecting').progress!;
    expect(connecting(p)).toBe(true);
    expect(currentPhase(p)).toBe('relay');
    const st = stepper(p)!;
    expect(st.map((x) => [x.phase, x.state])).toEqual([
      ['discovery', 'done'],
      ['relay', 'current'],
      ['session', 'pending'],
    ]);
    expect(st.map((x) => x.title)).toEqual(['Discovery', 'Relay', 'Session']);
    expect(st[0]!.lines).toEqual(p.steps.filter((s) => s.phase === 'discovery').map((s) => s.text));
    expect(st[1]!.lines.at(-1)).toBe('waiting for the relay pod to be ready');
    expect(st[2]!.lines).toEqual([]);
  });

  test('a failed connect marks the phase it stopped in', () => {
    const p = snap('error').progress!;
    expect(connecting(p)).toBe(false);
    expect(stepper(p)!.map((x) => x.state)).toEqual(['done', 'failed', 'pending']);
  });

  test('each phase can be current', () => {
    const p: ConnectProgress = { context: 'lab', steps: [], failure: null, done: false };
    expect(stepper(p)!.map((x) => x.state)).toEqual(['current', 'pending', 'pending']);
    p.steps.push({ phase: 'discovery', text: 'a' }, { phase: 'relay', text: 'b' }, { phase: 'session', text: 'c' });
    expect(stepper(p)!.map((x) => x.state)).toEqual(['done', 'done', 'current']);
  });

  test('nothing to show without a connect, or after one that went well', () => {
    expect(stepper(null)).toBe(null);
    expect(stepper({ context: 'lab', steps: [{ phase: 'session', text: 'up' }], failure: null, done: true })).toBe(null);
    expect(connecting(null)).toBe(false);
  });
});

import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, test, vi } from 'vitest';
import { mockBackend, pickBackend, tauriBackend, type MockHost } from '../../src/backend';
import type { Snapshot, TrayState } from '../../src/generated/devnet';

const SNAPSHOTS: Record<TrayState, Snapshot> = JSON.parse(
  readFileSync(new URL('../fixtures/snapshots.json', import.meta.url), 'utf8'),
);

describe('the mock backend', () => {
  const host = (): MockHost => ({ snapshot: SNAPSHOTS.off, calls: [] });

  test('records each command with its arguments, in order', async () => {
    const h = host();
    const b = mockBackend(h);
    expect(await b.snapshot()).toBe(SNAPSHOTS.off);
    await b.connect('lab');
    await b.disconnect('lab');
    await b.runDoctor('staging-eu');
    await b.copyText('10.96.0.0/12 services: tunnel');
    await b.copyStatus();
    await b.setAutostart(true);
    expect(h.calls).toEqual([
      { cmd: 'snapshot' },
      { cmd: 'connect', args: { context: 'lab' } },
      { cmd: 'disconnect', args: { session: 'lab' } },
      { cmd: 'run_doctor', args: { context: 'staging-eu' } },
      { cmd: 'copy_text', args: { text: '10.96.0.0/12 services: tunnel' } },
      { cmd: 'copy_status' },
      { cmd: 'set_autostart', args: { enabled: true } },
    ]);
  });

  test('push delivers a snapshot to subscribers, and later reads see it', async () => {
    const h = host();
    const b = mockBackend(h);
    const seen: TrayState[] = [];
    const stop = await b.subscribe((s) => seen.push(s.state));
    h.push!(SNAPSHOTS.connecting);
    h.push!(SNAPSHOTS.tunnel);
    expect(seen).toEqual(['connecting', 'tunnel']);
    expect((await b.snapshot()).state).toBe('tunnel');
    stop();
    h.push!(SNAPSHOTS.off);
    expect(seen).toEqual(['connecting', 'tunnel']);
  });

  test('a failing command rejects with its string, and is still recorded', async () => {
    const h = { ...host(), fail: { connect: 'no such context' } };
    const b = mockBackend(h);
    await expect(b.connect('nope')).rejects.toBe('no such context');
    await expect(b.disconnect('lab')).resolves.toBeUndefined();
    expect(h.calls.map((c) => c.cmd)).toEqual(['connect', 'disconnect']);
  });
});

describe('the Tauri backend', () => {
  afterEach(() => vi.unstubAllGlobals());

  /** A stand-in for what Tauri injects in its webview. */
  function fakeTauri(answers: Record<string, unknown> = {}) {
    const invoke = vi.fn(async (cmd: string, _args?: unknown, _opts?: unknown) => {
      if (cmd in answers) {
        const a = answers[cmd];
        if (a instanceof Error) throw a.message;
        return a;
      }
      return null;
    });
    const callbacks = new Map<number, (x: unknown) => void>();
    const internals = {
      invoke,
      transformCallback: (cb: (x: unknown) => void) => {
        const id = callbacks.size + 1;
        callbacks.set(id, cb);
        return id;
      },
    };
    vi.stubGlobal('window', { __TAURI_INTERNALS__: internals, __TAURI_EVENT_PLUGIN_INTERNALS__: { unregisterListener: vi.fn() } });
    return { invoke, callbacks };
  }

  test('each method invokes its command with the contract’s argument names', async () => {
    const { invoke } = fakeTauri({ snapshot: SNAPSHOTS.split });
    const b = tauriBackend();
    expect(await b.snapshot()).toBe(SNAPSHOTS.split);
    await b.connect('lab');
    await b.disconnect('lab');
    await b.runDoctor('lab');
    await b.copyText('devnet: lab split');
    await b.copyStatus();
    await b.setAutostart(false);
    expect(invoke.mock.calls.map(([cmd, args]) => [cmd, args])).toEqual([
      ['snapshot', {}],
      ['connect', { context: 'lab' }],
      ['disconnect', { session: 'lab' }],
      ['run_doctor', { context: 'lab' }],
      ['copy_text', { text: 'devnet: lab split' }],
      ['copy_status', {}],
      ['set_autostart', { enabled: false }],
    ]);
  });

  test('a command’s error string rejects the call', async () => {
    fakeTauri({ connect: new Error('kubeconfig has no context "x"') });
    await expect(tauriBackend().connect('x')).rejects.toBe('kubeconfig has no context "x"');
  });

  test('subscribes to the `snapshot` event and hands over its payload', async () => {
    const { invoke, callbacks } = fakeTauri({ 'plugin:event|listen': 7 });
    const seen: TrayState[] = [];
    const stop = await tauriBackend().subscribe((s) => seen.push(s.state));
    const [cmd, args] = invoke.mock.calls[0]!;
    expect(cmd).toBe('plugin:event|listen');
    expect(args).toMatchObject({ event: 'snapshot' });
    const handler = callbacks.get((args as { handler: number }).handler)!;
    handler({ event: 'snapshot', id: 7, payload: SNAPSHOTS.degraded });
    expect(seen).toEqual(['degraded']);
    stop();
    await vi.waitFor(() => expect(invoke.mock.calls.at(-1)![0]).toBe('plugin:event|unlisten'));
  });
});

describe('picking the backend', () => {
  afterEach(() => vi.unstubAllGlobals());

  test('Tauri when its internals are there, even with a mock injected', async () => {
    const invoke = vi.fn(async () => SNAPSHOTS.tunnel);
    vi.stubGlobal('window', { __TAURI_INTERNALS__: { invoke } });
    const mock: MockHost = { snapshot: SNAPSHOTS.off, calls: [] };
    const b = pickBackend({ __TAURI_INTERNALS__: {}, __DEVNET_MOCK__: mock })!;
    expect((await b.snapshot()).state).toBe('tunnel');
    expect(invoke).toHaveBeenCalledWith('snapshot', {}, undefined);
    expect(mock.calls).toEqual([]);
  });

  test('the mock in a plain browser, none without either', async () => {
    const mock: MockHost = { snapshot: SNAPSHOTS.off, calls: [] };
    const b = pickBackend({ __DEVNET_MOCK__: mock })!;
    await b.connect('lab');
    expect(mock.calls).toEqual([{ cmd: 'connect', args: { context: 'lab' } }]);
    expect(typeof mock.push).toBe('function');
    expect(pickBackend({})).toBe(null);
  });
});

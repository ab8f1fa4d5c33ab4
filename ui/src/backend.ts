// The window's one door to the app: Tauri's commands and the `snapshot`
// event inside the app; a tiny in-page mock (window.__DEVNET_MOCK__) for
// the browser tests, the only way this page runs outside Tauri.

import { invoke } from '@tauri-apps/api/core';
import { listen } from '@tauri-apps/api/event';
import type { Snapshot } from './generated/devnet';

export interface Backend {
  snapshot(): Promise<Snapshot>;
  /** Calls `on` with every pushed snapshot; resolves to an unsubscribe. */
  subscribe(on: (s: Snapshot) => void): Promise<() => void>;
  connect(context: string): Promise<void>;
  disconnect(session: string): Promise<void>;
  runDoctor(context: string): Promise<void>;
  copyText(text: string): Promise<void>;
  copyStatus(): Promise<void>;
  setAutostart(enabled: boolean): Promise<void>;
}

export type Call = { cmd: string; args?: Record<string, unknown> };

/** What the browser tests inject with `page.addInitScript`. */
export interface MockHost {
  snapshot: Snapshot;
  calls: Call[];
  /** Commands that reject, with their message: `{connect: "no such context"}`. */
  fail?: Record<string, string>;
  /** Set by the mock: replace the snapshot and push it to the page. */
  push?: (s: Snapshot) => void;
}

/** Inside the app: Tauri v2 commands (errors reject with a string). */
export function tauriBackend(): Backend {
  const call = (cmd: string, args?: Record<string, unknown>) => invoke<void>(cmd, args);
  return {
    snapshot: () => invoke<Snapshot>('snapshot'),
    subscribe: (on) => listen<Snapshot>('snapshot', (e) => on(e.payload)),
    ...commands(call),
  };
}

/** The commands, each by its Tauri name and argument keys, over any transport. */
function commands(
  call: (cmd: string, args?: Record<string, unknown>) => Promise<void>,
): Omit<Backend, 'snapshot' | 'subscribe'> {
  return {
    connect: (context) => call('connect', { context }),
    disconnect: (session) => call('disconnect', { session }),
    runDoctor: (context) => call('run_doctor', { context }),
    copyText: (text) => call('copy_text', { text }),
    copyStatus: () => call('copy_status'),
    setAutostart: (enabled) => call('set_autostart', { enabled }),
  };
}

/** In a plain browser: records each call in `host.calls`; `host.push(s)` pushes a snapshot. */
export function mockBackend(host: MockHost): Backend {
  host.calls ??= [];
  const listeners = new Set<(s: Snapshot) => void>();
  host.push = (s) => {
    host.snapshot = s;
    listeners.forEach((on) => on(s));
  };
  const call = async (cmd: string, args?: Record<string, unknown>) => {
    host.calls.push(args === undefined ? { cmd } : { cmd, args });
    const why = host.fail?.[cmd];
    if (why !== undefined) throw why;
  };
  return {
    snapshot: async () => {
      await call('snapshot');
      return host.snapshot;
    },
    subscribe: async (on) => {
      listeners.add(on);
      return () => listeners.delete(on);
    },
    ...commands(call),
  };
}

export type Host = { __TAURI_INTERNALS__?: unknown; __DEVNET_MOCK__?: MockHost };

/** Tauri when the page runs in the app, else the injected mock; null when neither is there. */
export function pickBackend(w: Host): Backend | null {
  if (w.__TAURI_INTERNALS__) return tauriBackend();
  if (w.__DEVNET_MOCK__) return mockBackend(w.__DEVNET_MOCK__);
  return null;
}

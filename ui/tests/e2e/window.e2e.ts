// The window in real Chromium against the built page (ui/dist), fed each
// generated sample snapshot through the in-page mock backend.

import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import type { Call, MockHost } from '../../src/backend';
import type { Snapshot, TrayState } from '../../src/generated/devnet';
import { formatBytes, formatRtt, pathWord, probeWords, routeWords } from '../../src/logic';

const UI = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const DIST = join(UI, 'dist');
const ARTIFACTS = process.env.DEVNET_ARTIFACTS ? join(process.env.DEVNET_ARTIFACTS, 'ui') : join(UI, 'test-artifacts');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const SNAPSHOTS: Record<TrayState, Snapshot> = JSON.parse(readFileSync(join(UI, 'tests/fixtures/snapshots.json'), 'utf8'));
const STATES = Object.keys(SNAPSHOTS) as TrayState[];

type Scheme = 'light' | 'dark';
type Mock = { __DEVNET_MOCK__: MockHost };

let ctx: BrowserContext;
let base: string;
let closeServer: () => Promise<void>;
let profile: string;

/** Each page's console errors, uncaught errors and requests that left the page's origin. */
const trouble = new Map<Page, string[]>();

const copy = (s: Snapshot): Snapshot => structuredClone(s);

beforeAll(async () => {
  if (!existsSync(join(DIST, 'index.html'))) throw new Error(`${DIST}/index.html is missing: run \`npm run build\` first`);
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: apt-get install -y chromium (or set CHROMIUM_PATH)`);
  mkdirSync(ARTIFACTS, { recursive: true });
  const { serve } = await import('./serve');
  const server = await serve(DIST);
  base = server.url;
  closeServer = server.close;
  profile = mkdtempSync(join(tmpdir(), 'devnet-ui-chromium-'));
  ctx = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 720, height: 640 },
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
});

afterAll(async () => {
  await ctx?.close();
  await closeServer?.();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

async function open(snapshot: Snapshot, opts: { scheme?: Scheme; fail?: Record<string, string> } = {}): Promise<Page> {
  const page = await ctx.newPage();
  const problems: string[] = [];
  trouble.set(page, problems);
  page.on('console', (m) => m.type() === 'error' && problems.push(`console: ${m.text()}`));
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('request', (r) => {
    const u = r.url();
    if (!u.startsWith(base) && !u.startsWith('data:')) problems.push(`request off the page's origin: ${u}`);
  });
  await page.emulateMedia({ colorScheme: opts.scheme ?? 'light' });
  await page.addInitScript(
    (m) => {
      (window as unknown as Mock).__DEVNET_MOCK__ = m;
    },
    { snapshot, calls: [] as Call[], fail: opts.fail ?? {} },
  );
  await page.goto(base);
  await page.waitForSelector('[data-testid=badge]');
  return page;
}

async function done(page: Page) {
  const problems = trouble.get(page) ?? [];
  trouble.delete(page);
  await page.close();
  expect(problems).toEqual([]);
}

const calls = (page: Page) => page.evaluate(() => (window as unknown as Mock).__DEVNET_MOCK__.calls.filter((c) => c.cmd !== 'snapshot'));
const push = (page: Page, s: Snapshot) => page.evaluate((s) => (window as unknown as Mock).__DEVNET_MOCK__.push!(s), s);
const text = (page: Page, sel: string) => page.locator(sel).innerText();

/** Presses Tab until `done` matches the focused element (at most `max` times); returns what was focused, in order. */
async function tabUntil(page: Page, until: (desc: string) => boolean, max = 15): Promise<string[]> {
  const seen: string[] = [];
  for (let i = 0; i < max; i++) {
    await page.keyboard.press('Tab');
    const desc = await page.evaluate(() => {
      const e = document.activeElement as HTMLElement | null;
      if (!e || e === document.body) return 'body';
      return `${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''}:${(e.innerText || e.getAttribute('aria-label') || '').trim().slice(0, 40)}`;
    });
    seen.push(desc);
    if (until(desc)) return seen;
  }
  throw new Error(`Tab never reached the target; focus went ${seen.join(' → ')}`);
}

/** The window as the user sees it (`name.png`, 720x640), and all of it (`name-full.png`: the window made as tall as the page, so the sticky footer sits at the bottom). */
async function shoot(page: Page, name: string) {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), animations: 'disabled' });
  const height = await page.evaluate(() => document.documentElement.scrollHeight);
  await page.setViewportSize({ width: 720, height: Math.max(640, height) });
  await page.screenshot({ path: join(ARTIFACTS, `${name}-full.png`), animations: 'disabled' });
  await page.setViewportSize({ width: 720, height: 640 });
}

async function focusRing(page: Page) {
  return page.evaluate(() => {
    const s = getComputedStyle(document.activeElement!);
    return { style: s.outlineStyle, width: parseFloat(s.outlineWidth), color: s.outlineColor };
  });
}

describe('every sample state renders', () => {
  test('there is a sample for every state', () => {
    expect(STATES.sort()).toEqual(['connecting', 'degraded', 'direct', 'error', 'off', 'split', 'tunnel']);
  });

  for (const state of STATES) {
    for (const scheme of ['light', 'dark'] as const) {
      test(`${state} (${scheme})`, async () => {
        const s = SNAPSHOTS[state];
        const page = await open(s, { scheme });

        // Header: badge, headline (live region), icon for the scheme, daemon.
        expect(await text(page, '.badge-word')).toBe(state);
        expect(await text(page, 'h1')).toBe(s.headline);
        expect(await page.locator('[aria-live=polite] h1').count()).toBe(1);
        const icon = await page.locator('header img').evaluate((i: HTMLImageElement) =>
          i.decode().then(() => ({ src: i.currentSrc, w: i.naturalWidth })),
        );
        expect(icon.src.endsWith(`icons/${state}-${scheme}.png`)).toBe(true);
        expect(icon.w).toBe(32);
        expect(await text(page, '[data-testid=daemon]')).toContain('devnetd 0.1.0');
        expect(await page.locator('[data-testid=daemon-banner]').count()).toBe(0);

        // Landmarks, and a name for every section.
        expect(await page.locator('header').count()).toBe(1);
        expect(await page.locator('main').count()).toBe(1);
        expect(await page.locator('footer').count()).toBe(1);
        const unnamed = await page.locator('section:not([aria-labelledby])').count();
        expect(unnamed).toBe(0);
        for (const id of await page.locator('section').evaluateAll((ss) => ss.map((x) => x.getAttribute('aria-labelledby')!)))
          expect((await text(page, `#${id}`)).length).toBeGreaterThan(0);

        // The picker: every context, the current one chosen.
        const options = await page.locator('#context option').evaluateAll((os) => os.map((o) => (o as HTMLOptionElement).value));
        expect(options).toEqual(s.contexts.map((c) => c.name));
        expect(await page.locator('#context').inputValue()).toBe(s.contexts.find((c) => c.current)!.name);
        expect(await text(page, '#context-server')).toContain(s.contexts.find((c) => c.current)!.server!);
        const disconnects = await page.getByRole('button', { name: /^Disconnect / }).allInnerTexts();
        expect(disconnects).toEqual(s.sessions.filter((x) => x.mine).map((x) => `Disconnect ${x.name}`));

        // Every session: each CIDR with its role, path and evidence; relay, DNS, counters.
        expect(await page.locator('[data-testid=session]').count()).toBe(s.sessions.length);
        for (const sess of s.sessions) {
          const sec = page.locator(`[data-session="${sess.name}"]`);
          expect(await sec.locator('[data-testid=path-row]').count()).toBe(sess.paths.length);
          for (const p of sess.paths) {
            const row = sec.locator(`tr[data-cidr="${p.verdict.cidr}"]`);
            const t = await row.innerText();
            const ev = p.verdict.evidence;
            expect(t).toContain(p.verdict.cidr);
            if (p.role) expect(t).toContain(p.role);
            expect(t).toContain(pathWord(p.verdict.path));
            expect(t).toContain(routeWords(ev.route));
            expect(t).toContain(probeWords(ev.probe));
            if (ev.target) expect(t).toContain(ev.target);
            expect(t).toContain(p.verdict.reason);
            expect(await row.getByRole('button').getAttribute('aria-label')).toBe(`Copy ${p.summary}`);
          }
          const relay = await sec.locator('[data-testid=relay]').innerText();
          const st = sess.status;
          expect(relay).toContain(st.relay);
          if (st.relay_name) expect(relay).toContain(st.relay_name);
          if (st.transport) expect(relay).toContain(st.transport);
          else expect(relay).toContain('not in use');
          expect(relay).toContain(formatRtt(st.relay_rtt_ms));
          expect(relay).toMatch(new RegExp(`reconnects\\s+${st.reconnects}`));
          if (st.last_error) expect(relay).toContain(st.last_error);
          const dns = await sec.locator('[data-testid=dns]').innerText();
          for (const v of [st.dns_backend, st.dns_server, st.cluster_domain]) if (v) expect(dns).toContain(v);
          const counters = await sec.locator('[data-testid=counters]').innerText();
          expect(counters).toContain(formatBytes(st.bytes_from_relay));
          expect(counters).toContain(formatBytes(st.bytes_to_relay));
          expect(counters).toMatch(new RegExp(`${st.tcp_flows}\\s+TCP flows`));
        }
        // What discovery found.
        const found = page.locator('[data-testid=discovered] tbody tr');
        expect(await found.count()).toBe(s.sessions.reduce((n, x) => n + x.status.discovered.length, 0));
        for (const sess of s.sessions)
          for (const d of sess.status.discovered) {
            const row = found.filter({ hasText: d.source });
            expect(await row.first().innerText()).toContain(d.value);
          }

        // The connect's progress, and a failure in the cluster's words.
        const p = s.progress;
        const showsProgress = p !== null && !(p.done && p.failure === null);
        expect(await page.locator('[data-testid=progress]').count()).toBe(showsProgress ? 1 : 0);
        if (p && showsProgress) {
          const prog = await text(page, '[data-testid=progress]');
          for (const step of p.steps) expect(prog).toContain(step.text);
          const last = p.steps[p.steps.length - 1]!.phase;
          const marked = page.locator(`.stepper > li[data-phase=${last}]`);
          expect(await marked.getAttribute('data-state')).toBe(p.done ? 'failed' : 'current');
          if (!p.done) expect(await marked.getAttribute('aria-current')).toBe('step');
        }
        if (p?.failure) {
          const alert = page.locator('[data-testid=failure]');
          expect(await alert.getAttribute('role')).toBe('alert');
          expect(await alert.innerText()).toContain(p.failure);
        }

        // Doctor.
        expect(await page.locator('[data-testid=doctor]').getAttribute('data-doctor')).toBe(s.doctor.kind);
        if (s.doctor.kind === 'done') {
          const doc = await text(page, '[data-testid=doctor]');
          for (const f of s.doctor.report.findings) {
            for (const v of [f.severity, f.title, f.detail, f.fix]) if (v) expect(doc).toContain(v);
          }
        }

        // Events, newest first.
        const events = await page.locator('[data-testid=events] li span').allInnerTexts();
        expect(events).toEqual(s.events.map((e) => e.text).reverse());

        // Footer.
        expect(await page.getByRole('checkbox', { name: 'Start at login' }).isChecked()).toBe(s.autostart);
        expect(await page.getByRole('button', { name: 'Copy status' }).count()).toBe(1);

        // It fits the window's width: no sideways scrolling.
        expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(720);

        await shoot(page, `${state}-${scheme}`);
        await done(page);
      });
    }
  }
});

describe('keyboard', () => {
  test('Tab reaches the picker, then Connect; Enter connects to the current context; focus is visible', async () => {
    const page = await open(SNAPSHOTS.off);
    const order = await tabUntil(page, (d) => d.startsWith('button:Connect'));
    const picker = order.findIndex((d) => d.startsWith('select#context'));
    expect(picker, order.join(' → ')).toBeGreaterThanOrEqual(0);
    expect(picker).toBe(order.length - 2);
    expect(order.length).toBeLessThanOrEqual(4);
    const ring = await focusRing(page);
    expect(ring.style).toBe('solid');
    expect(ring.width).toBeGreaterThanOrEqual(2);
    await page.keyboard.press('Enter');
    await expect.poll(() => calls(page)).toEqual([{ cmd: 'connect', args: { context: 'lab' } }]);
    await done(page);
  });

  test('the picker works with arrow keys; Space on Connect connects to the pick', async () => {
    const page = await open(SNAPSHOTS.off);
    await tabUntil(page, (d) => d.startsWith('select#context'));
    expect((await focusRing(page)).style).toBe('solid');
    await page.keyboard.press('ArrowDown');
    expect(await page.locator('#context').inputValue()).toBe('staging-eu');
    expect(await text(page, '#context-server')).toContain('https://k8s.staging.example.com');
    await page.keyboard.press('Tab');
    await page.keyboard.press('Space');
    await expect.poll(() => calls(page)).toEqual([{ cmd: 'connect', args: { context: 'staging-eu' } }]);
    await done(page);
  });

  test('connected: Connect is off for the connected context; Tab reaches Disconnect, Enter disconnects', async () => {
    const page = await open(SNAPSHOTS.tunnel);
    expect(await page.getByRole('button', { name: 'Connect', exact: true }).isDisabled()).toBe(true);
    await tabUntil(page, (d) => d.startsWith('button:Disconnect lab'));
    const ring = await focusRing(page);
    expect(ring.style).toBe('solid');
    expect(ring.width).toBeGreaterThanOrEqual(2);
    await page.keyboard.press('Enter');
    await expect.poll(() => calls(page)).toEqual([{ cmd: 'disconnect', args: { session: 'lab' } }]);
    await done(page);
  });

  test('doctor, copy and autostart are keyboard-usable too', async () => {
    const page = await open(SNAPSHOTS.split);
    const order = await tabUntil(page, (d) => d.startsWith('button:Run doctor on lab'), 25);
    // Header first, then connect, the CIDRs, then doctor.
    expect(order[0]).toMatch(/^button:devnet: lab split/);
    expect(order.findIndex((d) => d.startsWith('select#context'))).toBeLessThan(order.findIndex((d) => d.includes('10.244.0.0/16')));
    await page.keyboard.press('Space');
    await tabUntil(page, (d) => d.startsWith('input:'));
    await page.keyboard.press('Space');
    await tabUntil(page, (d) => d.startsWith('button:Copy status'));
    await page.keyboard.press('Enter');
    await expect
      .poll(() => calls(page))
      .toEqual([
        { cmd: 'run_doctor', args: { context: 'lab' } },
        { cmd: 'set_autostart', args: { enabled: true } },
        { cmd: 'copy_status' },
      ]);
    await done(page);
  });
});

describe('behaviour', () => {
  test('pushed snapshots update the page: off → connecting → tunnel', async () => {
    const page = await open(SNAPSHOTS.off);
    expect(await text(page, '.badge-word')).toBe('off');
    expect(await page.locator('[data-testid=progress]').count()).toBe(0);

    await push(page, SNAPSHOTS.connecting);
    await expect.poll(() => text(page, '.badge-word')).toBe('connecting');
    expect(await text(page, '.headline-region[aria-live=polite]')).toBe(SNAPSHOTS.connecting.headline);
    expect(await page.locator('.stepper > li[aria-current=step]').getAttribute('data-phase')).toBe('relay');
    expect(await page.locator('.stepper > li[data-phase=discovery]').getAttribute('data-state')).toBe('done');
    expect(await page.locator('.stepper > li[data-phase=session]').getAttribute('data-state')).toBe('pending');
    expect(await page.getByRole('button', { name: 'Connect', exact: true }).isDisabled()).toBe(true);
    expect(await page.locator('header img').getAttribute('src')).toBe('icons/connecting-light.png');

    await push(page, SNAPSHOTS.tunnel);
    await expect.poll(() => text(page, '.badge-word')).toBe('tunnel');
    expect(await text(page, 'h1')).toBe(SNAPSHOTS.tunnel.headline);
    expect(await page.locator('[data-testid=progress]').count()).toBe(0);
    expect(await page.locator('[data-testid=path-row]').count()).toBe(2);
    expect(await page.locator('header img').getAttribute('src')).toBe('icons/tunnel-light.png');
    await done(page);
  });

  test('the picker keeps the user’s pick across pushes', async () => {
    const page = await open(SNAPSHOTS.off);
    await page.locator('#context').selectOption('staging-eu');
    await push(page, { ...copy(SNAPSHOTS.off), events: [] });
    await expect.poll(() => page.locator('[data-testid=events]').count()).toBe(0);
    expect(await page.locator('#context').inputValue()).toBe('staging-eu');
    await done(page);
  });

  test('an unreachable devnetd shows a banner with its message, and Connect is off', async () => {
    const s = copy(SNAPSHOTS.off);
    const message = 'cannot reach devnetd at /run/devnetd.sock: No such file or directory; start it: sudo systemctl start devnetd';
    s.daemon = { kind: 'unreachable', message };
    const page = await open(s);
    const banner = page.locator('[data-testid=daemon-banner]');
    expect(await banner.getAttribute('role')).toBe('alert');
    expect(await banner.innerText()).toContain(message);
    expect(await banner.isVisible()).toBe(true);
    expect(await page.getByRole('button', { name: 'Connect', exact: true }).isDisabled()).toBe(true);
    await shoot(page, 'daemon-unreachable-light');

    // It comes back: the banner goes.
    await push(page, SNAPSHOTS.off);
    await expect.poll(() => banner.count()).toBe(0);
    expect(await page.getByRole('button', { name: 'Connect', exact: true }).isEnabled()).toBe(true);
    await done(page);
  });

  test('a rejected command shows its message in an alert, and can be dismissed', async () => {
    const page = await open(SNAPSHOTS.off, { fail: { connect: 'context "lab" has no cluster: check ~/.kube/config' } });
    await page.getByRole('button', { name: 'Connect', exact: true }).click();
    const alert = page.locator('main > [role=alert]');
    await expect.poll(() => alert.innerText()).toContain('Connect failed: context "lab" has no cluster: check ~/.kube/config');
    await page.getByRole('button', { name: 'Dismiss' }).click();
    await expect.poll(() => alert.innerText()).toBe('');
    await done(page);
  });

  test('clicking the headline or a CIDR copies it; Copy status and Start at login call the app', async () => {
    const s = SNAPSHOTS.degraded;
    const page = await open(s);
    await page.locator('h1 button').click();
    await page.locator('tr[data-cidr="10.96.0.0/12"] button').click();
    await page.getByRole('button', { name: 'Copy status' }).click();
    await page.getByRole('checkbox', { name: 'Start at login' }).check();
    await expect
      .poll(() => calls(page))
      .toEqual([
        { cmd: 'copy_text', args: { text: s.headline } },
        { cmd: 'copy_text', args: { text: s.sessions[0]!.paths[1]!.summary } },
        { cmd: 'copy_status' },
        { cmd: 'set_autostart', args: { enabled: true } },
      ]);
    await expect.poll(() => text(page, 'footer [role=status]')).toContain('copied');
    expect(await page.getByRole('checkbox', { name: 'Start at login' }).isChecked()).toBe(true);
    // The app's next snapshot is the truth.
    await push(page, { ...copy(s), autostart: false, events: [] });
    await expect.poll(() => page.locator('[data-testid=events]').count()).toBe(0);
    expect(await page.getByRole('checkbox', { name: 'Start at login' }).isChecked()).toBe(false);
    await done(page);
  });

  test('Start at login: a refusal un-ticks the box and says why', async () => {
    const page = await open(SNAPSHOTS.off, { fail: { set_autostart: 'cannot write ~/.config/autostart/devnet.desktop: read-only file system' } });
    const box = page.getByRole('checkbox', { name: 'Start at login' });
    await box.click();
    await expect.poll(() => page.locator('main > [role=alert]').innerText()).toContain('read-only file system');
    expect(await box.isChecked()).toBe(false);
    await done(page);
  });

  test('doctor: run on the current context with no session; running, then failed', async () => {
    const page = await open(SNAPSHOTS.off);
    await page.getByRole('button', { name: 'Run doctor on lab' }).click();
    await expect.poll(() => calls(page)).toEqual([{ cmd: 'run_doctor', args: { context: 'lab' } }]);

    await push(page, { ...copy(SNAPSHOTS.off), doctor: { kind: 'running', context: 'lab' } });
    await expect.poll(() => page.locator('[data-testid=doctor]').getAttribute('data-doctor')).toBe('running');
    expect(await page.getByRole('button', { name: 'Running…' }).isDisabled()).toBe(true);
    expect(await text(page, '[data-testid=doctor] [role=status]')).toContain('Running doctor on lab');

    await push(page, { ...copy(SNAPSHOTS.off), doctor: { kind: 'failed', context: 'lab', error: 'forbidden: cannot list nodes' } });
    await expect.poll(() => text(page, '[data-testid=doctor] [role=alert]')).toContain('forbidden: cannot list nodes');
    expect(await page.getByRole('button', { name: 'Run doctor on lab' }).isEnabled()).toBe(true);
    await done(page);
  });

  test('contexts that cannot be read: the reason is shown and Connect is off', async () => {
    const s = { ...copy(SNAPSHOTS.off), contexts: [], contexts_error: 'no kubeconfig: ~/.kube/config does not exist' };
    const page = await open(s);
    expect(await text(page, '[data-testid=contexts-error]')).toContain('no kubeconfig: ~/.kube/config does not exist');
    expect(await page.locator('#context').isDisabled()).toBe(true);
    expect(await page.getByRole('button', { name: 'Connect', exact: true }).isDisabled()).toBe(true);
    await done(page);
  });
});

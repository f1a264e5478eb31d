import test from 'ava';
import type { Browser, Page } from 'playwright-core';
import type { ExecutionContext } from 'ava';
import { TrafficWindow, buildStatus, type Status } from '../../src/admin/status.js';
import {
  adminUrl, channel, configOf, get, listenerUrl, putConfig, startSidecar, startUpstream, twoRoles, uniqueHost, until, vsetOf, weighted, yaml, role as roleOf,
  type ConfigSpec, type FilterSpec, type Upstream,
} from '../helpers.js';
import { switchable } from '../reload/safety_support.js';
import { launchChromium } from './browser_support.js';

/*
 * The admin status page (GET /) in a real headless Chromium against a running
 * sidecar: what it shows, that it follows a reload without navigating, the
 * token, and that config text cannot inject markup; a guarded rollout's
 * progress and the rollbacks, with real traffic through the listener. GET
 * /status's window is tested directly, with a short window.
 */

let browser: Browser | undefined;

test.before(async () => {
  browser = await launchChromium();
});

test.after.always(async () => {
  await browser?.close();
});

/** A page in a fresh browser context (no shared storage), closed at the end of the test; noPageErrors() checks its console. */
async function openPage(t: ExecutionContext, url: string): Promise<Page> {
  const context = await browser!.newContext({ viewport: { width: 1200, height: 900 } });
  t.teardown(() => context.close());
  const page = await context.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  // 401s are expected while the page asks for a token.
  page.on('console', (m) => { if (m.type() === 'error' && !/status of 401/.test(m.text())) errors.push(m.text()); });
  errorsOf.set(page, errors);
  await page.goto(url);
  return page;
}

const errorsOf = new WeakMap<Page, string[]>();

function noPageErrors(t: ExecutionContext, page: Page): void {
  t.deepEqual(errorsOf.get(page), [], 'no script or CSP errors in the page');
}

/** Waits (bounded) until the element at `selector` has exactly `text` (or matches it). */
async function waitText(page: Page, selector: string, text: string | RegExp, ms = 10_000): Promise<void> {
  const want = typeof text === 'string' ? { s: text } : { re: text.source };
  try {
    await page.waitForFunction(([sel, w]) => {
      const got = document.querySelector(sel)?.textContent;
      return got != null && ('s' in w ? got === w.s : new RegExp(w.re!).test(got));
    }, [selector, want] as const, { timeout: ms, polling: 50 });
  } catch {
    const got = await page.locator(selector).first().textContent({ timeout: 100 }).catch(() => '(no such element)');
    throw new Error(`${selector}: wanted ${String(text)}, got ${JSON.stringify(got)}`);
  }
}

async function send(url: string, n: number, headers: Record<string, string> = {}): Promise<void> {
  for (let i = 0; i < n; i++) await get(url, headers);
}

const role = (vset: string, r: string, cell: string): string => `[data-vset="${vset}"] tr[data-role="${r}"] td.${cell}`;

/** Roles a, b and c (versions 1.0.0, 2.0.0, 3.0.0-rc.1) in vset svc; listener web on `webAddress` pins by x-pin, else 1:1:2; listener api (filters `api`) on its host, port 0. */
function threeRoleConfig(a: Upstream, b: Upstream, c: Upstream, webAddress: string, api: FilterSpec[] = []): ConfigSpec {
  const { roles, vsets, listeners } = vsetOf({
    a: roleOf(a, { meta: { version: '1.0.0' } }),
    b: roleOf(b, { meta: { version: '2.0.0' } }),
    c: roleOf(c, { meta: { version: '3.0.0-rc.1' } }),
  }, {
    address: webAddress,
    filters: [
      { type: 'header_route', rules: [{ header: 'x-pin', equals: 'a', role: 'a' }, { header: 'x-pin', equals: 'c', role: 'c' }] },
      weighted({ a: 1, b: 1, c: 2 }),
    ],
  });
  return { roles, vsets, listeners: { ...listeners, api: { address: webAddress.replace(/:\d+$/, ':0'), target: 'svc.http', ...(api.length ? { filters: api } : {}) } } };
}

test('the page shows listeners, roles, weights and live shares, and follows a reload without navigating', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const c = await startUpstream(t, 'c', (req, res) => {
    res.writeHead(req.url === '/fail' ? 500 : 200);
    res.end('c');
  });
  const sc = await startSidecar(t, twoRoles(a, b, {
    filters: [
      { type: 'header_route', rules: [{ header: 'x-pin', equals: 'a', role: 'a' }] },
      weighted({ a: 3, b: 1 }),
    ],
  }));
  const web = sc.addresses().get('web')!;
  await send(listenerUrl(sc, 'web'), 20, { 'x-pin': 'a' });

  const page = await openPage(t, `${adminUrl(sc)}/`);
  await waitText(page, '[data-listener="web"] td.address', `${web.host}:${web.port}`);
  await waitText(page, '[data-listener="web"] td.target', 'svc.http');
  await waitText(page, role('svc', 'a', 'weight'), '3 (75 %)');
  await waitText(page, role('svc', 'b', 'weight'), '1 (25 %)');
  await waitText(page, role('svc', 'a', 'meta'), 'version 1.0.0track stable');
  await waitText(page, role('svc', 'a', 'share .value'), '100 %');
  await waitText(page, role('svc', 'b', 'share .value'), '0 %');
  await waitText(page, role('svc', 'a', 'errors'), '0 %');
  await waitText(page, '#generation', '#1');
  await waitText(page, 'tr[data-generation="1"] td.outcome', /applied.*serving/);
  t.regex(await page.locator('#window').textContent() ?? '', /^last \d+(\.\d)? s$/, 'the page says which window the shares cover');

  // A marker in the page's own state: it survives only if the page is never reloaded.
  await page.evaluate(() => { (window as unknown as { marker: number }).marker = 42; });
  const put = await get(`${adminUrl(sc)}/config`, { 'content-type': 'application/yaml' },
    { method: 'PUT', body: yaml({ admin: { address: '127.0.0.1:0' }, ...threeRoleConfig(a, b, c, `${web.host}:${web.port}`) }) });
  t.is(put.status, 200, put.body);

  await waitText(page, '#generation', '#2');
  await waitText(page, role('svc', 'a', 'weight'), /^1 \(25 %\)/);
  await waitText(page, role('svc', 'c', 'weight'), /^2 \(50 %\)/);
  await waitText(page, role('svc', 'c', 'meta'), 'version 3.0.0-rc.1');
  await waitText(page, '[data-listener="api"] td.routing', 'equal split');
  await waitText(page, `${role('svc', 'b', 'weight')}[data-listener="api"]`, 'equal (33 %)');
  await waitText(page, 'tr[data-generation="2"] td.outcome', /applied.*serving/);
  await waitText(page, 'tr[data-generation="1"] td.outcome', /^applied/);

  // Live traffic after the reload: c serves 6 requests, half of them 500s.
  for (let i = 0; i < 6; i++) await get(`${listenerUrl(sc, 'web')}/${i % 2 ? 'fail' : 'ok'}`, { 'x-pin': 'c' });
  await waitText(page, `${role('svc', 'c', 'share')}[data-listener="web"]`, /· 6 req$/);
  await waitText(page, `${role('svc', 'c', 'errors')}[data-listener="web"]`, '50 % (3 of 6)');
  t.true((await page.locator(`${role('svc', 'c', 'errors')}[data-listener="web"]`).getAttribute('class'))!.includes('bad'), 'a high error ratio stands out');
  t.is(await page.evaluate(() => (window as unknown as { marker?: number }).marker), 42, 'the page updated without navigating');

  if (process.env.SWITCHYARD_SCREENSHOT) await page.screenshot({ path: process.env.SWITCHYARD_SCREENSHOT, fullPage: true });
  noPageErrors(t, page);
});

test('with an admin token, the page asks for it (or takes it from #token=) and sends it; the HTML carries no data', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const sc = await startSidecar(t, { admin: { address: '127.0.0.1:0', token: 's3cret-token' }, ...twoRoles(a, b, { filters: [weighted({ a: 1, b: 1 })] }) });
  const web = sc.addresses().get('web')!;

  const shell = await get(`${adminUrl(sc)}/`);
  t.is(shell.status, 200, 'the HTML shell needs no token');
  t.false(shell.body.includes(String(web.port)) || shell.body.includes('svc'), 'and holds nothing of the config');
  t.is((await get(`${adminUrl(sc)}/status`)).status, 401, 'the data does');

  const page = await openPage(t, `${adminUrl(sc)}/`);
  await page.locator('#token').waitFor({ state: 'visible', timeout: 10_000 });
  await waitText(page, '#state', 'token required');
  await page.locator('#token').fill('wrong');
  await page.locator('#auth button').click();
  await waitText(page, '#state', 'token refused');
  await page.locator('#token').fill('s3cret-token');
  await page.locator('#auth button').click();
  await waitText(page, '[data-listener="web"] td.address', `${web.host}:${web.port}`);
  t.false(await page.locator('#token').isVisible(), 'the form goes once the token works');

  const direct = await openPage(t, `${adminUrl(sc)}/#token=s3cret-token`);
  await waitText(direct, role('svc', 'b', 'weight'), '1 (50 %)');
  noPageErrors(t, page);
  noPageErrors(t, direct);
});

test('config text reaches the page as text, never as markup or script', async (t) => {
  const a = await startUpstream(t, 'a');
  const hostile = `<img src=x onerror="window.pwned=1"></script><script>window.pwned=2</script>`;
  const sc = await startSidecar(t, vsetOf({ a: roleOf(a, { meta: { version: hostile } }) }, { address: '127.0.0.1:0' }));
  const page = await openPage(t, `${adminUrl(sc)}/`);
  await waitText(page, role('svc', 'a', 'meta'), `version ${hostile}`);
  t.is(await page.locator('#content img, #content script').count(), 0);
  t.is(await page.evaluate(() => (window as unknown as { pwned?: number }).pwned), undefined);
  noPageErrors(t, page);
});

test('GET /status counts traffic over a recent window, not since start', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const sc = await startSidecar(t, twoRoles(a, b, {
    filters: [
      { type: 'header_route', rules: [{ header: 'x-pin', equals: 'a', role: 'a' }, { header: 'x-pin', equals: 'b', role: 'b' }] },
      weighted({ a: 9, b: 1 }),
    ],
  }));
  const url = listenerUrl(sc, 'web');

  const status = async (): Promise<Status> => JSON.parse((await get(`${adminUrl(sc)}/status`)).body) as Status;
  await send(url, 4, { 'x-pin': 'a' });
  const s = await status();
  const web = s.listeners.find((l) => l.name === 'web')!;
  t.like(web, { protocol: 'http', vset: 'svc', channel: 'http', filters: ['header_route', 'weighted'], weights: { a: 9, b: 1 }, served: 4, unrouted: 0 });
  t.is(web.address, `${sc.addresses().get('web')!.host}:${sc.addresses().get('web')!.port}`);
  const svc = s.vsets.find((v) => v.name === 'svc')!;
  t.deepEqual(svc.roles.map((r) => [r.name, r.traffic[0]!.intended, r.traffic[0]!.count, r.traffic[0]!.share]), [['a', 0.9, 4, 1], ['b', 0.1, 0, 0]]);
  t.deepEqual(s.generations.recent.map((g) => [g.generation, g.source, g.outcome]), [[1, 'file', 'applied']]);

  // The same runtime through a short window: what is older than it drops out. Four
  // seconds, so that the three requests below stay inside it on a loaded machine
  // (two were not always enough with the whole suite running).
  const window = new TrafficWindow(sc.runtime.metrics, { windowMs: 4_000, everyMs: 50 });
  t.teardown(() => window.stop());
  await until(async () => traffic(await buildStatus(sc.runtime, window), 'a').count === 0, 15_000, 'the requests to a to leave the window');
  await send(url, 3, { 'x-pin': 'b' });
  // A request is counted when its response closes, which can be just after the client has it.
  let later = await buildStatus(sc.runtime, window);
  await until(async () => traffic(later = await buildStatus(sc.runtime, window), 'b').count === 3, 10_000, 'the three requests to b to be counted');
  t.like(traffic(later, 'b'), { count: 3, share: 1, errorRatio: 0 });
  t.like(traffic(later, 'a'), { count: 0, share: 0, errorRatio: null });
  t.true(later.windowSeconds <= 4);
});

function traffic(s: Status, r: string) {
  return s.vsets.find((v) => v.name === 'svc')!.roles.find((x) => x.name === r)!.traffic[0]!;
}

test('the page shows each role\'s endpoints that take work, and follows their health', async (t) => {
  const a = await startUpstream(t, 'a');
  let bHealth = 200;
  const b = await startUpstream(t, 'b', (req, res) => {
    req.resume();
    res.writeHead(req.url === '/healthz' ? bHealth : 200, { 'content-length': '0' });
    res.end();
  });
  const healthCheck = { path: '/healthz', interval: '100ms', timeout: '100ms', healthyThreshold: 1, unhealthyThreshold: 1 };
  const sc = await startSidecar(t, twoRoles(a, channel(b, { healthCheck }), { filters: [weighted({ a: 1, b: 1 })] }));
  const page = await openPage(t, adminUrl(sc) + '/');
  await waitText(page, role('svc', 'a', 'health'), '1 of 1');
  await waitText(page, role('svc', 'b', 'health'), '1 of 1');
  bHealth = 503;
  await waitText(page, role('svc', 'b', 'health'), '0 of 1');
  t.regex(await page.locator(role('svc', 'b', 'health')).getAttribute('class') ?? '', /\bbad\b/);
  bHealth = 200;
  await waitText(page, role('svc', 'b', 'health'), '1 of 1');
  noPageErrors(t, page);
});

test('with two listeners the page fits a 1,200 px laptop window: no column is cut off', async (t) => {
  const [a, b, c] = [await startUpstream(t, 'a'), await startUpstream(t, 'b'), await startUpstream(t, 'c')];
  const host = uniqueHost();
  const sc = await startSidecar(t, threeRoleConfig(a, b, c, `${host}:0`, [
    { type: 'header_route', rules: [{ header: 'x-canary-cohort', equals: 'internal-testers', role: 'c' }] },
    weighted({ a: 90, b: 5, c: 5 }, { stickyHeader: 'x-user-id' }),
  ]));
  const page = await openPage(t, `${adminUrl(sc)}/`);
  await waitText(page, 'tr[data-listener="api"] td.rate', /\/s$/);
  const fit = await page.evaluate(() => {
    const cells = [...document.querySelectorAll('td, th')];
    const widest = cells.reduce((w, e) => (e.getBoundingClientRect().right > w.getBoundingClientRect().right ? e : w), cells[0]!);
    const right = widest.getBoundingClientRect().right;
    return { scroll: document.documentElement.scrollWidth, inner: window.innerWidth, right, cell: `${widest.tagName} ${widest.className} ${widest.textContent}` };
  });
  t.true(fit.scroll <= fit.inner, `the page is ${fit.scroll} px wide in a ${fit.inner} px window`);
  t.true(fit.right <= fit.inner, `a cell ends at ${fit.right} px (${fit.cell})`);
  noPageErrors(t, page);
});

/** Listener web's filters: x-pin b routes to b (so a test decides how many requests b gets), the others go by `split`. */
const pinnedB = (split: FilterSpec): FilterSpec[] => [{ type: 'header_route', rules: [{ header: 'x-pin', equals: 'b', role: 'b' }] }, split];

/** Roles a and b in svc, listener web splitting a:100 b:0 with `rollout` of b (none if null), behind pinnedB; `more`: top-level keys. */
function rolloutSidecarConfig(a: Upstream, b: Upstream, rollout: Record<string, unknown> | null, more: Partial<ConfigSpec> = {}): ConfigSpec {
  const split = rollout ? { type: 'weighted', weights: { a: 100, b: 0 }, rollout } : weighted({ a: 100, b: 0 });
  return configOf({ ...more, ...vsetOf({ a: roleOf(a), b: roleOf(b) }, { filters: pinnedB(split) }) });
}

const ROLLOUT = { role: 'b', steps: [10, 50, 100], interval: '500ms', minRequests: 10, maxErrorRatio: 0.05 };
const rollout = (cell: string): string => `tr[data-rollout="web"] td.${cell}`;

test('the page shows a rollout beside its split: role, state and step as it advances, the figures judged, and its rollback', async (t) => {
  const a = await switchable(t, 'a');
  const b = await switchable(t, 'b');
  const sc = await startSidecar(t, rolloutSidecarConfig(a, b, ROLLOUT, { admin: { address: '127.0.0.1:0', token: 'roll-token' } }));
  const toB = (): Promise<void> => send(listenerUrl(sc, 'web'), 12, { 'x-pin': 'b' });

  const page = await openPage(t, `${adminUrl(sc)}/#token=roll-token`);
  // No traffic: the first step waits for data, and says for how much.
  await waitText(page, rollout('role'), 'b');
  await waitText(page, rollout('step .value'), '10 %');
  await waitText(page, rollout('state .badge'), 'waiting-for-data');
  await waitText(page, rollout('figures .requests'), 'requests 0 (min 10)');
  await waitText(page, rollout('next'), /^after 10 more requests/);
  await waitText(page, '[data-listener="web"] td.routing .rollout-note', 'rollout of b at 10 % waiting-for-data');
  await waitText(page, '[data-listener="web"] td.routing .weights', 'weighted a 9b 1');

  // Twelve requests to b pass the step: the next one runs, judged on the first one's figures.
  await toB();
  await waitText(page, rollout('step .value'), '50 %');
  await waitText(page, rollout('step .muted'), 'step 2 of 3: 10 → 50 → 100 %');
  await waitText(page, rollout('judged .requests'), /^requests 1[0-2] \(min 10\)$/);
  await waitText(page, rollout('judged .error-ratio'), 'errors 0 % (max 5.0 %)');
  await waitText(page, '[data-listener="web"] td.routing .weights', 'weighted a 1b 1');
  await waitText(page, rollout('state .badge'), 'waiting-for-data');

  // b fails at 50 %: rolled back to 0 at once, and the rollback is listed with its figures.
  b.failing = true;
  await toB();
  await waitText(page, rollout('state .badge'), 'rolled-back');
  await waitText(page, rollout('step .value'), '0 %');
  await waitText(page, '[data-listener="web"] td.routing .weights', 'weighted a 1b 0');
  // The requests after the 10th may have landed in the second step: the verdict's figures are GET /generations'.
  const back = JSON.parse((await get(`${adminUrl(sc)}/generations`, { authorization: 'Bearer roll-token' })).body).history.at(-1);
  const { requests, errors, errorRatio } = back.detail.judged;
  t.true(requests >= 10 && errorRatio > 0.05, JSON.stringify(back));
  const ratio = `${errorRatio < 0.1 ? (errorRatio * 100).toFixed(1) : Math.round(errorRatio * 100)} %`;
  await waitText(page, rollout('state .reason'), `step 50 %: error ratio ${errorRatio.toFixed(3)} over 0.05 (${errors} of ${requests})`);
  await waitText(page, rollout('judged .error-ratio'), `errors ${ratio} (max 5.0 %)`);
  t.regex(await page.locator(rollout('judged .error-ratio')).getAttribute('class') ?? '', /\bbad\b/, 'the failing figure stands out');
  const row = `tr[data-rollback="${back.generation}"]`;
  await waitText(page, `${row} td.kind`, 'rollout');
  await waitText(page, `${row} td.reason`, 'rollout-error-ratio');
  await waitText(page, `${row} td.target`, 'web role b');
  await waitText(page, `${row} td.figures`, `errors ${ratio} (${errors} of ${requests})`);
  await waitText(page, `tr[data-generation="${back.generation}"] td.source`, 'rollout · rollout-error-ratio');

  // Both tables still fit a 1,200 px window.
  const fit = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, inner: window.innerWidth,
    right: Math.max(...[...document.querySelectorAll('td, th')].map((e) => e.getBoundingClientRect().right)) }));
  t.true(fit.scroll <= fit.inner && fit.right <= fit.inner, `the page is ${fit.scroll} px wide, a cell ends at ${fit.right} px, in a ${fit.inner} px window`);
  if (process.env.SWITCHYARD_SCREENSHOT) await page.screenshot({ path: process.env.SWITCHYARD_SCREENSHOT.replace(/(\.png)?$/, '-rollout.png'), fullPage: true });
  noPageErrors(t, page);
});

test('a healthy rollout shows done at 100 %, with p99 judged when the rollout sets maxLatencyP99', async (t) => {
  const a = await switchable(t, 'a');
  const b = await switchable(t, 'b');
  const sc = await startSidecar(t, rolloutSidecarConfig(a, b, { ...ROLLOUT, steps: [50, 100], maxLatencyP99: '5s' }));
  const page = await openPage(t, `${adminUrl(sc)}/`);
  await waitText(page, rollout('step .value'), '50 %');
  await waitText(page, rollout('figures .p99'), 'p99 — (max 5000 ms)');
  await send(listenerUrl(sc, 'web'), 12, { 'x-pin': 'b' });
  await waitText(page, rollout('step .value'), '100 %');
  await send(listenerUrl(sc, 'web'), 12, { 'x-pin': 'b' });
  await waitText(page, rollout('state .badge'), 'done');
  await waitText(page, rollout('next'), /^—/);
  await waitText(page, rollout('judged .p99'), /^p99 \d+(\.\d)? ms \(max 5000 ms\)$/);
  t.is(await page.locator('tr[data-rollback]').count(), 0, 'no rollback listed');
  noPageErrors(t, page);
});

test('a change autoRollback reverted is listed under recent rollbacks with its reason and figures', async (t) => {
  const a = await switchable(t, 'a');
  const b = await switchable(t, 'b');
  b.failing = true;
  const auto = { autoRollback: { window: '4s', minRequests: 10, maxErrorRatio: 0.1 } };
  const config = rolloutSidecarConfig(a, b, null, auto);
  const sc = await startSidecar(t, config);
  const page = await openPage(t, `${adminUrl(sc)}/`);
  await waitText(page, '#generation', '#1');
  t.is(await page.locator('tr[data-rollout]').count(), 0, 'no rollout listed');

  const put = await putConfig(sc, { ...config, listeners: { web: { ...config.listeners!.web!, filters: pinnedB(weighted({ a: 50, b: 50 })) } } });
  t.is(put.status, 200, put.body);
  await send(listenerUrl(sc, 'web'), 12, { 'x-pin': 'b' });
  const row = 'tr[data-rollback="3"]';
  await waitText(page, `${row} td.kind`, 'auto-rollback');
  await waitText(page, `${row} td.reason`, 'error-ratio · reverted #2');
  await waitText(page, `${row} td.target`, 'role b');
  await waitText(page, `${row} td.figures`, /^errors 100 % \((\d+) of \1\)before no requestsmax 10 %$/);
  await waitText(page, '#generation', '#3');
  noPageErrors(t, page);
});

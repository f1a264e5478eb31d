import test from 'ava';
import type { Browser, Page } from 'playwright-core';
import type { ExecutionContext } from 'ava';
import { TrafficWindow, buildStatus, type Status } from '../../src/admin/status.js';
import {
  adminUrl, channel, get, listenerUrl, startSidecar, startUpstream, twoRoles, uniqueHost, until, vsetOf, weighted, yaml, role as roleOf,
  type ConfigSpec, type FilterSpec, type Upstream,
} from '../helpers.js';
import { launchChromium } from './browser_support.js';

/*
 * The admin status page (GET /) in a real headless Chromium against a running
 * sidecar: what it shows, that it follows a reload without navigating, the
 * token, and that config text cannot inject markup. GET /status's window is
 * tested directly, with a short window.
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

  // The same runtime through a short window: what is older than it drops out. Two
  // seconds, so that the three requests below stay inside it on a loaded machine.
  const window = new TrafficWindow(sc.runtime.metrics, { windowMs: 2_000, everyMs: 50 });
  t.teardown(() => window.stop());
  await until(async () => traffic(await buildStatus(sc.runtime, window), 'a').count === 0, 10_000, 'the requests to a to leave the window');
  await send(url, 3, { 'x-pin': 'b' });
  // A request is counted when its response closes, which can be just after the client has it.
  let later = await buildStatus(sc.runtime, window);
  await until(async () => traffic(later = await buildStatus(sc.runtime, window), 'b').count === 3, 10_000, 'the three requests to b to be counted');
  t.like(traffic(later, 'b'), { count: 3, share: 1, errorRatio: 0 });
  t.like(traffic(later, 'a'), { count: 0, share: 0, errorRatio: null });
  t.true(later.windowSeconds <= 2);
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

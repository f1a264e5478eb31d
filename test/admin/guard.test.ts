import test from 'ava';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { ROOT, adminUrl, client, startSidecar, startUpstream, tempFiles, twoRoles, type ConfigSpec, type Upstream } from '../helpers.js';
import type { Sidecar } from '../../src/sidecar.js';
import { ConfigError } from '../../src/errors.js';

/*
 * The admin API against web pages, with raw requests (test/admin/guard_browser.test.ts runs
 * the same attacks from a real Chromium page): Host, Origin / Sec-Fetch-Site, typed
 * bodies, no CORS; admin.public; what a pushed config may not do.
 */

type Admin = ConfigSpec['admin'];

/** Roles a and b behind listener web, whose ratelimit filter uses component `limit`; `admin` as given (the test's own by default). */
const limited = (a: Upstream, b: Upstream, admin: Admin = { address: '127.0.0.1:0' }): ConfigSpec => ({
  admin,
  components: { limit: { type: 'ratelimit', metadata: { requestsPerSecond: '100', burst: '100' } } },
  ...twoRoles(a, b, { filters: [{ type: 'ratelimit', component: 'limit' }] }),
});

async function sidecar(t: Parameters<typeof startSidecar>[0], admin?: Admin): Promise<Sidecar> {
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  return startSidecar(t, limited(a, b, admin));
}

async function call(sc: Sidecar, method: string, path: string, headers: Record<string, string> = {}, body?: string) {
  const res = await request(`${adminUrl(sc)}${path}`, { dispatcher: client, method: method as 'GET', headers, body });
  return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
}

const rate = (sc: Sidecar): string | undefined => sc.runtime.current!.config.components['limit']!.metadata['requestsPerSecond'];

test('a Host that does not name the admin API is refused on every route (DNS rebinding)', async (t) => {
  const sc = await sidecar(t, { address: '127.0.0.1:0', hosts: ['sidecar.internal'] });
  const port = sc.adminAddress!.port;
  for (const host of ['rebind.attacker.example', `rebind.attacker.example:${port}`, `localhost.attacker.example:${port}`, 'evil.com.']) {
    for (const [method, path] of [['GET', '/config'], ['GET', '/'], ['GET', '/metrics'], ['POST', '/rollback']] as const) {
      const r = await call(sc, method, path, { host });
      t.is(r.status, 403, `${method} ${path} with Host ${host}`);
      t.regex(r.text, /does not name this admin API/);
    }
  }
  for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, 'LOCALHOST', `sidecar.internal:${port}`, '[::1]', '10.1.2.3:80']) {
    t.is((await call(sc, 'GET', '/config', { host })).status, 200, `Host ${host}`);
  }
});

test('a change from a web page (Origin, Sec-Fetch-Site) is refused; curl-like and same-origin requests pass', async (t) => {
  const sc = await sidecar(t);
  const own = `http://127.0.0.1:${sc.adminAddress!.port}`;
  const json = { 'content-type': 'application/json' };
  const body = JSON.stringify({ metadata: { requestsPerSecond: '0.001', burst: '1' } });
  const pages: Record<string, string>[] = [{ origin: 'http://attacker.example' }, { origin: 'null' }, { origin: 'http://127.0.0.1:8080' },
    { 'sec-fetch-site': 'cross-site' }, { 'sec-fetch-site': 'same-site' }, { 'sec-fetch-site': 'same-origin', origin: 'http://localhost:1' }];
  for (const headers of pages) {
    const r = await call(sc, 'POST', '/components/limit', { ...json, ...headers }, body);
    t.is(r.status, 403, JSON.stringify(headers));
    t.is((await call(sc, 'POST', '/rollback', headers)).status, 403, JSON.stringify(headers));
  }
  t.is(rate(sc), '100', 'nothing changed');
  t.is(sc.runtime.current!.number, 1);
  // The admin API's own origin (its status page), and no browser at all.
  t.is((await call(sc, 'POST', '/components/limit', { ...json, origin: own, 'sec-fetch-site': 'same-origin' }, body)).status, 200);
  t.is(rate(sc), '0.001');
  t.is((await call(sc, 'POST', '/rollback', {})).status, 200);
  // Reading cross-site is not refused here (a GET changes nothing), but no CORS header lets the page read it.
  const read = await call(sc, 'GET', '/config', { origin: 'http://attacker.example', 'sec-fetch-site': 'cross-site' });
  t.is(read.headers['access-control-allow-origin'], undefined);
  const preflight = await call(sc, 'OPTIONS', '/config', { origin: 'http://attacker.example', 'access-control-request-method': 'PUT' });
  t.not(preflight.status, 200);
  t.is(preflight.headers['access-control-allow-origin'], undefined);
});

test('bodies must be typed JSON or YAML: form and text/plain bodies (all a form or a no-cors fetch can send) get 415', async (t) => {
  const sc = await sidecar(t);
  const yaml = `admin: { address: "127.0.0.1:0" }\n`;
  const form = '{"metadata": {"requestsPerSecond": "0.001", "burst": "1"}, "pad": "=x"}';
  for (const type of ['text/plain', 'text/plain;charset=UTF-8', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', undefined]) {
    const headers: Record<string, string> = type ? { 'content-type': type } : {};
    t.is((await call(sc, 'POST', '/components/limit', headers, form)).status, 415, `components, ${type}`);
    t.is((await call(sc, 'PUT', '/config', headers, yaml)).status, 415, `config, ${type}`);
    if (type) t.is((await call(sc, 'POST', '/rollback', headers, '')).status, 415, `rollback, ${type}`);
  }
  t.is(rate(sc), '100');
  t.is(sc.runtime.current!.number, 1);
  const r = await call(sc, 'PUT', '/config', { 'content-type': 'application/yaml' }, 'listeners: {}');
  t.is(r.status, 200, r.text);
});

test('admin.public serves /ready and /metrics without the token; everything else still needs it', async (t) => {
  const sc = await sidecar(t, { address: '127.0.0.1:0', token: 's3cret', public: ['ready', 'metrics'] });
  t.is((await call(sc, 'GET', '/ready')).status, 200);
  t.regex((await call(sc, 'GET', '/metrics')).text, /switchyard_config_generation/);
  for (const path of ['/config', '/generations', '/vsets', '/status']) t.is((await call(sc, 'GET', path)).status, 401, path);
  t.is((await call(sc, 'POST', '/rollback')).status, 401);
  t.is((await call(sc, 'GET', '/config', { authorization: 'Bearer s3cret' })).status, 200);

  const closed = await sidecar(t, { address: '127.0.0.1:0', token: 's3cret' });
  t.is((await call(closed, 'GET', '/ready')).status, 401);
  t.is((await call(closed, 'GET', '/metrics')).status, 401);
});

test('admin.public and admin.hosts take only what they name', async (t) => {
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const err = await t.throwsAsync(startSidecar(t, limited(a, b, { address: '127.0.0.1:0', public: ['ready', 'config'], hosts: ['a b'] })), { instanceOf: ConfigError });
  t.deepEqual((err as ConfigError).issues.map((i) => [i.path, i.code]), [['admin.public[1]', 'SY_ERR_CONFIG_VALUE'], ['admin.hosts[0]', 'SY_ERR_CONFIG_VALUE']]);
});

test('a pushed config may not load a new plugin module (its code does not run) nor name a new access log file', async (t) => {
  const sc = await sidecar(t);
  const mark = Symbol.for('switchyard.test.sideEffectPlugin');
  const g = globalThis as Record<symbol, unknown>;
  const before = g[mark];
  const plugin = join(ROOT, 'test/fixtures/side-effect-plugin.mjs');
  const current = sc.runtime.current!.raw!.value as Record<string, unknown>;
  const yaml = (extra: Record<string, unknown>) => JSON.stringify({ ...current, ...extra });
  const pushed = await call(sc, 'PUT', '/config', { 'content-type': 'application/json' }, yaml({ plugins: [plugin] }));
  t.is(pushed.status, 400);
  t.like(JSON.parse(pushed.text).errors[0], { code: 'SY_ERR_CONFIG_PUSH_FORBIDDEN', path: 'plugins[0]' });
  t.is(g[mark], before, 'the module was never imported');
  const dry = await call(sc, 'PUT', '/config?dryRun=1', { 'content-type': 'application/json' }, yaml({ plugins: [plugin] }));
  t.is(dry.status, 400, 'nor by a dry run');
  t.is(g[mark], before);

  const { dir } = await tempFiles(t, {});
  const file = join(dir, 'pushed.log');
  const log = await call(sc, 'PUT', '/config', { 'content-type': 'application/json' }, yaml({ accessLog: { path: file } }));
  t.is(log.status, 400);
  t.like(JSON.parse(log.text).errors[0], { code: 'SY_ERR_CONFIG_PUSH_FORBIDDEN', path: 'accessLog.path' });
  t.false(existsSync(file));
  t.is(sc.runtime.current!.number, 1);
  // stdout, or off, is no new file.
  t.is((await call(sc, 'PUT', '/config', { 'content-type': 'application/json' }, yaml({ accessLog: { path: 'stdout' } }))).status, 200);
});

test('with allowPush, a pushed config may load a plugin and name an access log file', async (t) => {
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const sc = await startSidecar(t, limited(a, b), { allowPush: ['plugins', 'accessLog'] });
  const current = sc.runtime.current!.raw!.value as Record<string, unknown>;
  const { dir } = await tempFiles(t, {});
  const file = join(dir, 'pushed.log');
  const plugin = join(ROOT, 'test/fixtures/side-effect-plugin.mjs');
  const r = await call(sc, 'PUT', '/config', { 'content-type': 'application/json' }, JSON.stringify({ ...current, plugins: [plugin], accessLog: { path: file } }));
  t.is(r.status, 200, r.text);
  t.true(existsSync(file));
  t.truthy((globalThis as Record<symbol, unknown>)[Symbol.for('switchyard.test.sideEffectPlugin')]);
});

test('a malformed percent escape in POST /components/<name> is a 400, not a 500', async (t) => {
  const sc = await sidecar(t);
  const r = await call(sc, 'POST', '/components/%E0%A4%A', { 'content-type': 'application/json' }, '{"metadata": {}}');
  t.is(r.status, 400);
  t.regex(r.text, /percent-encoded/);
});

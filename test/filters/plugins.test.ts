import test, { type ExecutionContext } from 'ava';
import { join } from 'node:path';
import { ConfigError, type ConfigIssue } from '../../src/errors.js';
import { request } from 'undici';
import {
  ROOT, adminUrl, client, get, listenerUrl, startSidecar, startUpstream, twoRoles, until, weighted, yaml, type ConfigSpec, type FilterSpec,
} from '../helpers.js';

/*
 * Plugins end to end: modules under test/fixtures (plain .mjs, so tsc does not
 * touch them; ava runs from dist, so they are referenced by absolute path from
 * ROOT) register filter types through the same registry as the built-ins.
 */

const COOKIE_PLUGIN = join(ROOT, 'test/fixtures/routing-cookie-plugin.mjs');
const DUP_PLUGIN = join(ROOT, 'test/fixtures/routing-dup-weighted-plugin.mjs');

/** A two-role sidecar (a, b) whose `web` listener runs `filters`, with `plugins` loaded. */
async function withPlugins(t: ExecutionContext, plugins: string[], filters: FilterSpec[]) {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const config: ConfigSpec = { plugins, ...twoRoles(a, b, { filters }) };
  // Some tests push configs that name other plugin modules.
  const sc = await startSidecar(t, config, { allowPush: ['plugins'] });
  return { sc, url: listenerUrl(sc, 'web'), a, b, config };
}

const role = async (url: string, headers: Record<string, string> = {}): Promise<unknown> => {
  const r = await get(url, headers);
  if (r.status !== 200) throw new Error(`status ${r.status}: ${r.body}`);
  return r.headers['x-role'];
};

test('a plugin filter type picks a role by cookie, end to end, before weighted', async (t) => {
  const { url } = await withPlugins(t, [COOKIE_PLUGIN], [{ type: 'cookie_role', cookie: 'pin' }, weighted({ a: 1 })]);
  t.is(await role(url, { cookie: 'pin=b' }), 'b');
  t.is(await role(url, { cookie: 'theme=dark; pin=b; x=1' }), 'b');
  t.is(await role(url, { cookie: 'pin=a' }), 'a');
  // Not a role, another cookie, or no cookie: the plugin leaves it to weighted.
  t.is(await role(url, { cookie: 'pin=nope' }), 'a');
  t.is(await role(url, { cookie: 'xpin=b' }), 'a');
  t.is(await role(url), 'a');
});

test('a plugin path relative to the config directory loads too', async (t) => {
  // startSidecar parses with baseDir = ROOT.
  const { url } = await withPlugins(t, ['./test/fixtures/routing-cookie-plugin.mjs'], [{ type: 'cookie_role', cookie: 'pin' }, weighted({ a: 1 })]);
  t.is(await role(url, { cookie: 'pin=b' }), 'b');
});

test('a plugin filter validates its config through the same context as the built-ins', async (t) => {
  const err = await t.throwsAsync(withPlugins(t, [COOKIE_PLUGIN], [{ type: 'cookie_role', cookei: 'pin' }]), { instanceOf: ConfigError });
  const paths = (err as ConfigError).issues.map((i) => `${i.path} ${i.code}`);
  t.true(paths.includes('listeners.web.filters[0].cookei SY_ERR_CONFIG_UNKNOWN_KEY'), paths.join('\n'));
  t.true(paths.includes('listeners.web.filters[0].cookie SY_ERR_CONFIG_REQUIRED'), paths.join('\n'));
});

test('a filter type of a plugin that is not listed is unknown', async (t) => {
  const err = await t.throwsAsync(withPlugins(t, [], [{ type: 'cookie_role', cookie: 'pin' }]), { instanceOf: ConfigError });
  t.deepEqual((err as ConfigError).issues.map((i) => [i.path, i.code]), [['listeners.web.filters[0].type', 'SY_ERR_UNKNOWN_FILTER']]);
});

test('a plugin that registers a type already registered (weighted) is rejected', async (t) => {
  const err = await t.throwsAsync(withPlugins(t, [DUP_PLUGIN], [weighted({ a: 1 })]), { instanceOf: ConfigError });
  const issues = (err as ConfigError).issues;
  t.is(issues.length, 1, JSON.stringify(issues));
  t.is(issues[0]!.code, 'SY_ERR_DUPLICATE_TYPE');
  t.is(issues[0]!.path, 'plugins[0]');
  t.regex(issues[0]!.message, /"weighted" is already registered/);
  t.is(typeof issues[0]!.line, 'number', 'the issue points at a line of the YAML');
});

test('a plugin path that does not exist is rejected at plugins[i]; a push of it changes nothing', async (t) => {
  const missing = join(ROOT, 'test/fixtures/no-such-plugin.mjs');
  // At start.
  const err = await t.throwsAsync(withPlugins(t, [missing], [weighted({ a: 1 })]), { instanceOf: ConfigError });
  t.deepEqual((err as ConfigError).issues.map((i) => [i.path, i.code]), [['plugins[0]', 'SY_ERR_PLUGIN_LOAD']]);
  t.regex((err as ConfigError).issues[0]!.message, /no-such-plugin\.mjs/);

  // Pushed to a running sidecar: 400, same generation, traffic as before. The
  // second entry is the missing one, so the path names its index.
  const { sc, url, config } = await withPlugins(t, [COOKIE_PLUGIN], [{ type: 'cookie_role', cookie: 'pin' }, weighted({ a: 1 })]);
  const pushed = { ...config, plugins: [COOKIE_PLUGIN, missing] };
  t.notDeepEqual(pushed.plugins, config.plugins);
  const res = await get(`${adminUrl(sc)}/config`, { 'content-type': 'application/yaml' }, { method: 'PUT', body: yaml(pushed) });
  t.is(res.status, 400, res.body);
  const errors = (JSON.parse(res.body) as { errors: ConfigIssue[] }).errors;
  t.deepEqual(errors.map((i) => [i.path, i.code]), [['plugins[1]', 'SY_ERR_PLUGIN_LOAD']]);
  t.is(sc.runtime.current!.number, 1);
  t.is(await role(url, { cookie: 'pin=b' }), 'b');
});

/** Collects process warnings with code SY_ERR_FILTER_FAILED while the test runs. */
function filterWarnings(t: ExecutionContext): string[] {
  const seen: string[] = [];
  const on = (w: Error & { code?: string }): void => { if (w.code === 'SY_ERR_FILTER_FAILED') seen.push(w.message); };
  process.on('warning', on);
  t.teardown(() => { process.off('warning', on); });
  return seen;
}

const MISBEHAVING: FilterSpec[] = [{ type: 'async_pick' }, { type: 'misbehave' }, weighted({ a: 1 })];

test('a filter that throws answers 500 for that request, and the proxy keeps serving', async (t) => {
  const warnings = filterWarnings(t);
  const { url, a, b } = await withPlugins(t, [COOKIE_PLUGIN], MISBEHAVING);
  const upstreamRequests = (): number => a.requests.length + b.requests.length;
  // The async path works when nothing misbehaves.
  t.is(await role(url, { 'x-pick': 'b' }), 'b');
  t.is(await role(url), 'a');
  const before = upstreamRequests();
  for (let i = 0; i < 5; i++) {
    const r = await get(url, { 'x-misbehave': 'throw' });
    t.is(r.status, 500);
    t.regex(r.body, /a filter failed/);
    // On the same keep-alive client, the next request is served.
    t.is(await role(url), 'a');
  }
  // A sync throw after an async filter (the chain went async first).
  const r = await get(url, { 'x-pick': 'b', 'x-misbehave': 'throw' });
  t.is(r.status, 500);
  t.is(upstreamRequests(), before + 5, 'failed requests never reach an upstream');
  await until(() => warnings.some((w) => w.includes('thrown on purpose')), 5000, 'the filter-failed warning');
});

test('a filter returning a rejected promise, or throwing after an await, answers 500', async (t) => {
  const { url } = await withPlugins(t, [COOKIE_PLUGIN], MISBEHAVING);
  for (const how of ['reject', 'async-throw']) {
    const rs = await Promise.all(Array.from({ length: 10 }, () => get(url, { 'x-misbehave': how })));
    t.deepEqual(rs.map((r) => r.status), new Array(10).fill(500), how);
  }
  t.is(await role(url, { 'x-pick': 'b' }), 'b');
  t.is(await role(url), 'a');
});

test('a plugin filter may answer itself and stop the chain', async (t) => {
  const { url, a, b } = await withPlugins(t, [COOKIE_PLUGIN], MISBEHAVING);
  const r = await get(url, { 'x-misbehave': 'reply' });
  t.is(r.status, 418);
  t.is(r.body, 'short and stout\n');
  t.is(r.headers['x-replied-by'], 'misbehave');
  t.is(a.requests.length + b.requests.length, 0);
});

test('a filter that breaks the verdict contract answers 500 instead of leaving the request hanging', async (t) => {
  // Regression: a filter that returned undefined (forgot `return true`) failed with
  // "cannot read properties of undefined (reading 'then')", and one whose promise
  // resolved to undefined, or that returned false without answering, stopped the
  // chain with nobody answering: the request hung (and held its generation, so a
  // reload could not drain) until the client gave up.
  const warnings = filterWarnings(t);
  const { url, a, b } = await withPlugins(t, [COOKIE_PLUGIN], MISBEHAVING);
  for (const how of ['undefined', 'async-undefined', 'silent-false', 'async-silent-false']) {
    const res = await request(url, { dispatcher: client, headers: { 'x-misbehave': how }, signal: AbortSignal.timeout(3000) });
    t.is(res.statusCode, 500, how);
    await res.body.text();
  }
  t.is(a.requests.length + b.requests.length, 0);
  t.is(await role(url), 'a');
  await until(() => warnings.some((w) => /returned undefined/.test(w)) && warnings.some((w) => /without answering/.test(w)), 5000, 'the warnings');
});

test('an async register() is awaited: its types exist when the config is validated', async (t) => {
  // Regression: register() was not awaited, so types it registered after an await
  // were "unknown filter type" (and a rejection went unhandled).
  const { url } = await withPlugins(t, [join(ROOT, 'test/fixtures/routing-async-register-plugin.mjs')], [{ type: 'async_registered' }]);
  t.is(await role(url), 'b');
});

test.serial('an async register() that rejects is a plugin load error, not an unhandled rejection', async (t) => {
  // Serial: the fixture reads a process-wide flag.
  (globalThis as { __routingAsyncRegisterFail?: boolean }).__routingAsyncRegisterFail = true;
  t.teardown(() => { delete (globalThis as { __routingAsyncRegisterFail?: boolean }).__routingAsyncRegisterFail; });
  const err = await t.throwsAsync(withPlugins(t, [join(ROOT, 'test/fixtures/routing-async-register-plugin.mjs')], [weighted({ a: 1 })]), { instanceOf: ConfigError });
  const issues = (err as ConfigError).issues;
  t.deepEqual(issues.map((i) => [i.path, i.code]), [['plugins[0]', 'SY_ERR_PLUGIN_LOAD']]);
  t.regex(issues[0]!.message, /async register failed on purpose/);
});

test('a plugin that registers a malformed filter descriptor is rejected when it loads', async (t) => {
  // Without a check at registration, the descriptor failed later and elsewhere: a
  // "scope" error on the listener, or a TypeError from create() in the build.
  const err = await t.throwsAsync(withPlugins(t, [join(ROOT, 'test/fixtures/routing-malformed-plugin.mjs')], [weighted({ a: 1 })]), { instanceOf: ConfigError });
  const issues = (err as ConfigError).issues;
  t.deepEqual(issues.map((i) => [i.path, i.code]), [['plugins[0]', 'SY_ERR_PLUGIN_LOAD']]);
  t.regex(issues[0]!.message, /malformed/);
  t.regex(issues[0]!.message, /scope/);
  t.regex(issues[0]!.message, /create/);
});

test('a filter that stops a WebSocket upgrade without answering gets 500, not a hung socket', async (t) => {
  // Regression: an upgrade has no response object, so the chain could not see that
  // nobody answered; the client socket stayed open until drainTimeout.
  const { connect } = await import('node:net');
  const { url } = await withPlugins(t, [COOKIE_PLUGIN], MISBEHAVING);
  const { hostname, port } = new URL(url);
  for (const how of ['silent-false', 'async-silent-false']) {
    const s = connect(Number(port), hostname);
    t.teardown(() => s.destroy());
    let data = '';
    s.on('data', (c) => (data += c));
    s.write(`GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nx-misbehave: ${how}\r\n\r\n`);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${how}: no answer within 3 s`)), 3000);
      s.once('close', () => { clearTimeout(timer); resolve(); });
    });
    t.regex(data, /^HTTP\/1.1 500 /, how);
  }
});

test('a filter that picks a role index out of range answers 500; the process survives and keeps serving', async (t) => {
  // Regression: the index reached the forwarder as `undefined` and threw inside the
  // server's request handler (sync) or an unhandled rejection (async): both end Node.
  const warnings = filterWarnings(t);
  const { url, a, b } = await withPlugins(t, [COOKIE_PLUGIN], [{ type: 'misbehave' }]);
  for (const how of ['bad-role', 'fraction-role', 'async-bad-role']) {
    const res = await request(url, { dispatcher: client, headers: { 'x-misbehave': how }, signal: AbortSignal.timeout(3000) });
    t.is(res.statusCode, 500, how);
    await res.body.text();
  }
  t.is(a.requests.length + b.requests.length, 0);
  t.is((await get(url)).status, 200);
  await until(() => warnings.filter((w) => /a filter set role/.test(w)).length === 3, 5000, 'the warnings');
});

test('a plugin filter that splits traffic (splitWeights) shows its weights in PUT /config?dryRun=1 and in GET /status', async (t) => {
  const { sc, url, config } = await withPlugins(t, [COOKIE_PLUGIN, join(ROOT, 'test/fixtures/control-plugin.mjs')], [{ type: 'plugin_split', weights: { a: 1, b: 3 } }]);
  const seen = new Set<unknown>();
  await until(async () => { seen.add(await role(url)); return seen.size === 2; }, 10_000, 'both roles to serve');

  const status = JSON.parse((await get(`${adminUrl(sc)}/status`)).body) as {
    listeners: { name: string; filters: string[]; weights: Record<string, number> | null }[];
    vsets: { name: string; roles: { name: string; traffic: { listener: string; weight: number | null; intended: number }[] }[] }[];
  };
  t.like(status.listeners.find((l) => l.name === 'web'), { filters: ['plugin_split'], weights: { a: 1, b: 3 } });
  const traffic = status.vsets.find((v) => v.name === 'svc')!.roles.map((r) => [r.name, r.traffic[0]!.weight, r.traffic[0]!.intended]);
  t.deepEqual(traffic, [['a', 1, 0.25], ['b', 3, 0.75]]);

  const dryRun = async (filter: FilterSpec) => {
    const pushed = yaml({ ...config, listeners: { web: { ...config.listeners!.web!, filters: [filter] } } });
    const res = await get(`${adminUrl(sc)}/config?dryRun=1`, { 'content-type': 'application/yaml' }, { method: 'PUT', body: pushed });
    t.is(res.status, 200, res.body);
    return (JSON.parse(res.body) as { weights: unknown }).weights;
  };
  t.deepEqual(await dryRun({ type: 'plugin_split', weights: { a: 2, b: 0 } }), { web: { before: { a: 1, b: 3 }, after: { a: 2, b: 0 } } });
  t.deepEqual(await dryRun({ type: 'cookie_role', cookie: 'pin' }), { web: { before: { a: 1, b: 3 }, after: null } }, 'no splitter left: the roles split equally');
  t.is(sc.runtime.current!.number, 1, 'a dry run applies nothing');
});

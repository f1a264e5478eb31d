import test from 'ava';
import { join } from 'node:path';
import { rawFromObject } from '../../src/config/load.js';
import { ComponentError, ConfigCodes, ConfigError, ControlCodes, RuntimeCodes, SwitchyardError } from '../../src/errors.js';
import { ROOT, deadAddress, startUpstream, uniqueHost, until, type Upstream } from '../helpers.js';
import { admin, heldUpstream, httpGet, startFromObject } from '../reload/support.js';
import { freePort, twoRoles, weighted, within, type ListenerSpec } from '../helpers.js';

/*
 * Every error switchyard raises outside the data path is a SwitchyardError with a
 * stable code, and every admin API error body carries that code next to the
 * fields it always had (`error`, or `errors`). A failed build's message tells the
 * whole story, its `cause` chain keeps each step.
 */

const CONTROL_PLUGIN = join(ROOT, 'test/fixtures/control-plugin.mjs');
const KNOWN = new Set([...Object.keys(ConfigCodes), ...Object.keys(RuntimeCodes), ...Object.keys(ControlCodes)]);

function base(a: Upstream, b: Upstream, extra: Record<string, unknown> = {}) {
  return { plugins: [CONTROL_PLUGIN], drainTimeout: '1s', ...twoRoles(a, b), listeners: { web: httpListener([weighted({ a: 1, b: 0 })]) }, ...extra };
}

test('404 bodies carry their code: an unknown path, and an unknown component', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const { sc } = await startFromObject(t, base(a, b));
  const path = await admin(sc, 'GET', '/nope');
  t.is(path.status, 404);
  t.deepEqual(path.json, { code: 'SY_ERR_API_NOT_FOUND', error: 'no such endpoint: /nope' });
  const component = await admin(sc, 'POST', '/components/nope', { metadata: { address: '127.0.0.1:1' } });
  t.is(component.status, 404);
  t.deepEqual(component.json, { code: 'SY_ERR_API_NO_COMPONENT', error: 'no component named "nope" in the running config (give "kind" to add one)' });
});

test('409 bodies carry their code: nothing to roll back to, and a failed build (in `errors` too); an access log that cannot open has its own', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const { sc } = await startFromObject(t, base(a, b));
  const none = await admin(sc, 'POST', '/rollback');
  t.is(none.status, 409);
  t.deepEqual(none.json, { code: 'SY_ERR_NO_ROLLBACK', error: 'there is no previous config to roll back to' });

  // A listener on an address someone else holds.
  const host = uniqueHost();
  const port = await freePort(host);
  const { createServer } = await import('node:net');
  const squatter = createServer();
  await new Promise<void>((r) => squatter.listen(port, host, r));
  t.teardown(() => new Promise<void>((r) => squatter.close(() => r())));
  const clash = base(a, b);
  (clash.listeners as Record<string, unknown>).clash = httpListener([], 'svc.http', `${host}:${port}`);
  const bind = await admin(sc, 'PUT', '/config', clash);
  t.is(bind.status, 409, bind.text);
  t.is(bind.json.code, 'SY_ERR_BIND');
  t.is(bind.json.errors.length, 1);
  t.is(bind.json.errors[0].code, 'SY_ERR_BIND');
  t.regex(bind.json.errors[0].message, new RegExp(`^cannot listen on ${host.replaceAll('.', '\\.')}:${port}: listen EADDRINUSE`));

  // From the files (a push may not name a new access log file).
  const withLog = base(a, b, { admin: { address: '127.0.0.1:0' }, accessLog: { path: `/nonexistent-dir-${process.pid}/access.log` } });
  const log = await sc.runtime.apply(rawFromObject(withLog, ROOT), 'file');
  t.false(log.ok);
  if (log.ok || log.kind !== 'failed') return;
  t.is(log.error.code, 'SY_ERR_ACCESS_LOG_OPEN');
  t.regex(log.error.message, /^accessLog\.path: cannot open \/nonexistent-dir-\d+\/access\.log for append: ENOENT/);
  t.is((log.error.cause as NodeJS.ErrnoException).code, 'ENOENT');
  t.is(sc.runtime.current!.number, 1, 'nothing changed');
});

test("a build failure's message tells the whole story, and its cause chain keeps every step", async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const { sc, log } = await startFromObject(t, base(a, b));
  const nobody = await deadAddress();
  const next = base(a, b, { components: { 'cart-limit': { type: 'dial', metadata: { address: nobody } } } });

  const res = await admin(sc, 'PUT', '/config', next);
  t.is(res.status, 409, res.text);
  const story = `component cart-limit: init: connect ECONNREFUSED ${nobody}`;
  t.deepEqual(res.json, { code: 'SY_ERR_COMPONENT_INIT', errors: [{ code: 'SY_ERR_COMPONENT_INIT', message: story }] });
  t.true(log.some((l) => l.includes(`rejected (failed)`) && l.includes(story)), log.join('\n'));

  // In process: a ComponentError, down to the socket's own error.
  const applied = await sc.runtime.apply(rawFromObject({ admin: { address: '127.0.0.1:0' }, ...next }, ROOT), 'api');
  t.false(applied.ok);
  if (applied.ok || applied.kind !== 'failed') return;
  const err = applied.error;
  t.true(err instanceof ComponentError);
  t.like(err, { code: 'SY_ERR_COMPONENT_INIT', component: 'cart-limit', mode: 'added', message: story });
  const chain: unknown[] = [];
  for (let e: unknown = err; e instanceof Error; e = e.cause) chain.push(e);
  const root = chain.at(-1) as NodeJS.ErrnoException;
  t.is(root.code, 'ECONNREFUSED');
  t.is(root.message, `connect ECONNREFUSED ${nobody}`);
  t.true(chain.length >= 2);
});

test('every other admin API error body has its code too: 400, 403, 405, 415, 503', async (t) => {
  const a = await heldUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const { sc } = await startFromObject(t, base(a, b));
  const codes: Record<string, unknown> = {};

  const empty = await admin(sc, 'PUT', '/config', ' ');
  t.deepEqual(empty.json, { code: 'SY_ERR_API_BAD_REQUEST', errors: [{ message: 'empty body: PUT /config takes a whole config (YAML or JSON)' }] });
  const notJson = await admin(sc, 'POST', '/components/x', '{', { 'content-type': 'application/json' });
  t.is(notJson.status, 400);
  codes.notJson = notJson.json.code;
  const invalid = await admin(sc, 'PUT', '/config', { ...base(a, b), drainTimeout: 'soon' });
  t.is(invalid.status, 400);
  t.is(invalid.json.code, 'SY_ERR_CONFIG_INVALID');
  t.deepEqual(invalid.json.errors.map((e: { code: string }) => e.code), ['SY_ERR_CONFIG_VALUE']);
  const host = await admin(sc, 'GET', '/status', undefined, { host: 'evil.example' });
  t.is(host.status, 403);
  codes.host = host.json.code;
  const method = await admin(sc, 'DELETE', '/config');
  t.is(method.status, 405);
  codes.method = method.json.code;
  const type = await admin(sc, 'PUT', '/config', 'x', { 'content-type': 'text/plain' });
  t.is(type.status, 415);
  codes.type = type.json.code;
  t.deepEqual(codes, { notJson: 'SY_ERR_API_BAD_REQUEST', host: 'SY_ERR_API_FORBIDDEN', method: 'SY_ERR_API_METHOD', type: 'SY_ERR_API_CONTENT_TYPE' });

  // 503 while shutting down: a request held open keeps the drain going.
  const addr = sc.addresses().get('web')!;
  const held = httpGet(`http://${addr.host}:${addr.port}/`, { agent: false, headers: { 'x-hold': '1' } });
  held.catch(() => {});
  await until(() => a.held.length === 1, 10_000, 'the held request to arrive');
  const stopped = sc.stop();
  let ready = await admin(sc, 'GET', '/ready');
  await until(async () => (ready = await admin(sc, 'GET', '/ready')).status === 503, 10_000, '/ready to answer 503');
  t.deepEqual(ready.json, { code: 'SY_ERR_NOT_READY', error: 'not ready' });
  a.releaseAll();
  await within(stopped, 10_000, 'the stop');
});

test('no code name is in two tables of errors.ts; a config rejected at start is a SwitchyardError with its own code', async (t) => {
  t.true([...Object.keys(ControlCodes)].every((c) => c.startsWith('SY_ERR_')));
  t.is(new Set([...Object.keys(ConfigCodes), ...Object.keys(RuntimeCodes), ...Object.keys(ControlCodes)]).size, KNOWN.size);
  const err = await t.throwsAsync(startFromObject(t, { listeners: { web: { target: 'nowhere' } } }), { instanceOf: ConfigError });
  t.true(err instanceof SwitchyardError);
  t.is((err as ConfigError).code, 'SY_ERR_CONFIG_INVALID');
  t.true(KNOWN.has((err as ConfigError).issues[0]!.code));
});

/** An http listener on `address` (a fresh loopback host, port 0) that targets `target`. */
function httpListener(filters: readonly unknown[], target = 'svc.http', address = `${uniqueHost()}:0`): ListenerSpec {
  return { address, protocol: 'http', target, filters: filters as ListenerSpec['filters'] };
}

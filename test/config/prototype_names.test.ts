// Issue 11, item 8: names that Object.prototype has (toString, constructor,
// hasOwnProperty, valueOf) are valid names in every section, and `__proto__` is
// either an entry like any other (meta and metadata keys) or refused with its path
// (names). Before, a listener named `toString` made PUT /config answer 409 "nothing
// changed" while the new generation served (the history said both, and
// config_last_reload_successful was 0), and POST /rollback took the same path.
import test from 'ava';
import { request } from 'undici';
import { checkConfig } from '../../src/reload/check.js';
import { parseConfigTexts } from '../../src/config/load.js';
import { formatIssue, type ConfigIssue } from '../../src/errors.js';
import {
  ROOT, adminUrl, get, listenerUrl, metric, oneRole, putConfig, startSidecar, startUpstream, uniqueHost, type ConfigSpec, type Upstream,
} from '../helpers.js';

async function issuesOf(text: string): Promise<ConfigIssue[]> {
  const r = await checkConfig(parseConfigTexts([{ name: 'test.yaml', text }], ROOT), {});
  return r.ok ? [] : r.issues;
}

function show(issues: readonly ConfigIssue[]): string {
  return issues.map(formatIssue).join('\n') || '(none)';
}

/** A config whose every table has a key named like an Object.prototype member. */
function prototypeNames(a: Upstream, b: Upstream, host: string): string {
  return `
roles:
  toString:
    meta: { version: "1", toString: t, constructor: c, hasOwnProperty: h, __proto__: p }
    channels: { constructor: { endpoints: ["${a.address}"] } }
  constructor:
    meta: { version: "2" }
    channels: { constructor: { endpoints: ["${b.address}"] } }
vsets:
  hasOwnProperty:
    channels: [valueOf]
    roles:
      toString: { map: { valueOf: constructor }, meta: { __proto__: vp } }
      constructor: { map: { valueOf: constructor } }
components:
  toString: { type: ratelimit, metadata: { requestsPerSecond: "1000" } }
listeners:
  toString:
    address: "${host}:0"
    target: hasOwnProperty.valueOf
    filters:
      - { type: ratelimit, component: toString }
      - { type: header_route, rules: [{ header: x-pin, meta: __proto__ }] }
      - { type: weighted, weights: { toString: 0, constructor: 1 } }
  constructor:
    address: "${host}:0"
    target: toString
`;
}

function baseConfig(a: Upstream, host: string): ConfigSpec {
  return oneRole(a, { address: `${host}:0`, target: 'a' }, { role: 'a' });
}

async function admin(sc: Parameters<typeof adminUrl>[0], method: 'GET' | 'POST', path: string, body?: unknown): Promise<{ status: number; json: any; text: string }> {
  const res = await request(`${adminUrl(sc)}${path}`, { method, body: body === undefined ? undefined : JSON.stringify(body),
    headers: body === undefined ? {} : { 'content-type': 'application/json' } });
  const text = await res.body.text();
  let json: unknown;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.statusCode, json, text };
}

test('PUT /config and POST /rollback with names like toString, constructor, hasOwnProperty in every table apply and serve', async (t) => {
  const a = await startUpstream(t, 'A');
  const b = await startUpstream(t, 'B');
  const host = uniqueHost();
  const sc = await startSidecar(t, baseConfig(a, host));

  // Into the config with prototype names: applied, and nothing says otherwise.
  const put = await putConfig(sc, prototypeNames(a, b, host));
  t.is(put.status, 200, put.body);
  t.deepEqual(JSON.parse(put.body), { generation: 2, components: { toString: 'added' } });
  const gens = await admin(sc, 'GET', '/generations');
  t.deepEqual(gens.json.history.map((h: { generation: number | null; outcome: string }) => [h.generation, h.outcome]), [[1, 'applied'], [2, 'applied']]);
  t.is(await metric(sc, 'switchyard_config_last_reload_successful'), 1);

  const serves = async (): Promise<void> => {
    t.is((await get(listenerUrl(sc, 'toString'))).headers['x-role'], 'B', 'weights: constructor 1, toString 0');
    t.is((await get(listenerUrl(sc, 'toString'), { 'x-pin': 'vp' })).headers['x-role'], 'A', 'meta key __proto__ picks role toString');
    t.is((await get(listenerUrl(sc, 'constructor'))).headers['x-role'], 'A', 'target toString: the role\'s own vset');
  };
  await serves();
  const vsets = await admin(sc, 'GET', '/vsets');
  t.deepEqual(vsets.json.vsets.hasOwnProperty.roles.toString.meta, { version: '1', toString: 't', constructor: 'c', hasOwnProperty: 'h', ['__proto__']: 'vp' });
  t.deepEqual(Object.keys(vsets.json.listeners).sort(), ['constructor', 'toString']);

  // Out of it again (every name is removed), and back by rollback, twice.
  const back = await putConfig(sc, baseConfig(a, host));
  t.is(back.status, 200, back.body);
  t.deepEqual(JSON.parse(back.body), { generation: 3, components: { toString: 'removed' } });
  const rb = await admin(sc, 'POST', '/rollback');
  t.is(rb.status, 200, rb.text);
  t.deepEqual(rb.json, { generation: 4, components: { toString: 'added' } });
  await serves();

  // POST /components/<name>: a component named toString is found; one named constructor is not there.
  const upd = await admin(sc, 'POST', '/components/toString', { metadata: { requestsPerSecond: '500' } });
  t.is(upd.status, 200, upd.text);
  t.deepEqual(upd.json, { generation: 5, components: { toString: 'updated' } });
  const none = await admin(sc, 'POST', '/components/constructor', { metadata: { requestsPerSecond: '5' } });
  t.is(none.status, 404, none.text);

  const rb2 = await admin(sc, 'POST', '/rollback');
  t.is(rb2.status, 200, rb2.text);
  t.is(rb2.json.generation, 6);
  const after = await admin(sc, 'GET', '/generations');
  t.deepEqual(after.json.history.map((h: { outcome: string }) => h.outcome), ['applied', 'applied', 'applied', 'applied', 'applied', 'applied']);
  t.is(after.json.current, 6);
  t.is(await metric(sc, 'switchyard_config_last_reload_successful'), 1);
});

test('PUT /config with a name __proto__ in any section is refused with its path, and nothing changes', async (t) => {
  const a = await startUpstream(t, 'A');
  const host = uniqueHost();
  const sc = await startSidecar(t, baseConfig(a, host));
  const put = await putConfig(sc, `
roles:
  a: { channels: { http: { endpoints: ["${a.address}"] } } }
listeners:
  web: { address: "${host}:0", target: a }
  __proto__: { address: "${host}:0", target: a }
`);
  t.is(put.status, 400, put.body);
  t.deepEqual(JSON.parse(put.body).errors.map((e: ConfigIssue) => [e.code, e.path]), [['SY_ERR_CONFIG_NAME', 'listeners.__proto__']]);
  const gens = await admin(sc, 'GET', '/generations');
  t.is(gens.json.current, 1);
});

test('validator: __proto__ as a name is refused in every section, with its path', async (t) => {
  const issues = await issuesOf(`
roles:
  __proto__: { channels: { http: { endpoints: ["127.0.0.1:7001"] } } }
  a: { channels: { __proto__: { endpoints: ["127.0.0.1:7001"] }, http: { endpoints: ["127.0.0.1:7001"] } } }
vsets:
  __proto__: { channels: [http], roles: { a: {} } }
  v: { channels: [http, __proto__], roles: { a: {}, __proto__: {} } }
components:
  __proto__: { type: ratelimit, metadata: { requestsPerSecond: "1" } }
listeners:
  __proto__: { target: a }
`);
  t.deepEqual(issues.map((i) => `${i.code} ${i.path}`).sort(), [
    'SY_ERR_CONFIG_NAME components.__proto__',
    'SY_ERR_CONFIG_NAME listeners.__proto__',
    'SY_ERR_CONFIG_NAME roles.__proto__',
    'SY_ERR_CONFIG_NAME roles.a.channels.__proto__',
    'SY_ERR_CONFIG_NAME vsets.__proto__',
    'SY_ERR_CONFIG_NAME vsets.v.channels[1]',
    'SY_ERR_CONFIG_NAME vsets.v.roles.__proto__',
  ], show(issues));
  for (const i of issues) t.true(typeof i.line === 'number', formatIssue(i));
});

test('validator: a name Object.prototype has is not found where it was not declared', async (t) => {
  const issues = await issuesOf(`
roles:
  a:
    meta: { version: "1" }
    channels: { http: { endpoints: ["127.0.0.1:7001"] } }
vsets:
  toString: { channels: [http], roles: { a: {} } }
  v:
    channels: [http]
    roles:
      a: { map: { http: valueOf } }
      hasOwnProperty: {}
components:
  lim: { type: ratelimit, metadata: { requestsPerSecond: "1" } }
listeners:
  l1: { address: "127.0.0.2:8001", target: constructor }
  l2:
    address: "127.0.0.2:8002"
    target: toString
    filters:
      - { type: ratelimit, component: toString }
      - { type: header_route, rules: [{ header: x-v, meta: constructor }] }
      - { type: weighted, weights: { a: 1, hasOwnProperty: 1, __proto__: 1 } }
`);
  t.deepEqual(issues.map((i) => `${i.code} ${i.path}`).sort(), [
    'SY_ERR_CHANNEL_UNMAPPED vsets.v.roles.a.map.http',
    'SY_ERR_CONFIG_VALUE listeners.l2.filters[1].rules[0].meta',
    'SY_ERR_ROLE_NOT_IN_VSET listeners.l2.filters[2].weights.__proto__',
    'SY_ERR_ROLE_NOT_IN_VSET listeners.l2.filters[2].weights.hasOwnProperty',
    'SY_ERR_UNKNOWN_COMPONENT listeners.l2.filters[0].component',
    'SY_ERR_UNKNOWN_ROLE vsets.v.roles.hasOwnProperty',
    'SY_ERR_UNKNOWN_VSET listeners.l1.target',
  ].sort(), show(issues));
});

test('validator: meta and metadata keys named like Object.prototype members, __proto__ included, are entries like any other', async (t) => {
  const text = `
roles:
  toString:
    meta: { __proto__: p, toString: t, constructor: c, hasOwnProperty: h }
    channels: { constructor: { endpoints: ["127.0.0.1:7001"] } }
vsets:
  valueOf:
    channels: [hasOwnProperty]
    roles: { toString: { map: { hasOwnProperty: constructor }, meta: { __proto__: vp } } }
components:
  constructor: { type: ratelimit, metadata: { requestsPerSecond: "1" } }
listeners:
  hasOwnProperty: { address: "127.0.0.2:8001", target: valueOf, filters: [{ type: ratelimit, component: constructor }] }
`;
  const r = await checkConfig(parseConfigTexts([{ name: 'test.yaml', text }], ROOT), {});
  if (!r.ok) return t.fail(show(r.issues));
  const c = r.config;
  // A string-typed key, so TypeScript reads the index signature, not Object's members.
  const at = <T>(tbl: Record<string, T>, key: string): T | undefined => tbl[key];
  t.deepEqual(Object.keys(c.roles), ['toString']);
  t.deepEqual(Object.keys(at(c.roles, 'toString')!.channels), ['constructor']);
  t.deepEqual(Object.keys(at(c.roles, 'toString')!.meta), ['__proto__', 'toString', 'constructor', 'hasOwnProperty']);
  t.is(at(at(c.roles, 'toString')!.meta, '__proto__'), 'p');
  t.deepEqual({ ...at(at(c.vsets, 'valueOf')!.roles, 'toString')!.meta }, { ['__proto__']: 'vp', toString: 't', constructor: 'c', hasOwnProperty: 'h' });
  t.deepEqual(Object.keys(c.vsets).sort(), ['toString', 'valueOf']);
  t.deepEqual(Object.keys(c.components), ['constructor']);
  t.deepEqual(Object.keys(c.listeners), ['hasOwnProperty']);
  // Names not declared find nothing, whatever Object.prototype has.
  t.is(at(c.roles, 'constructor'), undefined);
  t.is(at(c.vsets, 'hasOwnProperty'), undefined);
  t.is(at(c.listeners, 'toString'), undefined);
  t.is(at(c.components, 'toString'), undefined);

  // A component type sees metadata keys as they are: ratelimit refuses the unknown ones, __proto__ included.
  const issues = await issuesOf(`
components:
  lim: { type: ratelimit, metadata: { requestsPerSecond: "1", __proto__: "x", toString: "y", constructor: "z" } }
`);
  t.deepEqual(issues.map((i) => `${i.code} ${i.path}`).sort(), [
    'SY_ERR_CONFIG_VALUE components.lim.metadata.__proto__',
    'SY_ERR_CONFIG_VALUE components.lim.metadata.constructor',
    'SY_ERR_CONFIG_VALUE components.lim.metadata.toString',
  ], show(issues));
});

import test from 'ava';
import { createServer as createTcpServer } from 'node:net';
import { rawFromObject } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';
import { Sidecar } from '../../src/sidecar.js';
import {
  ROOT, freePort, metric, startUpstream, twoRoles, uniqueHost, until, weighted, type ConfigSpec, type ListenerSpec, type Upstream,
} from '../helpers.js';
import { PLUGIN, admin, eventsNamed, eventsOf, openGate, httpGet, newScope, refused, startFromObject } from '../reload/support.js';

/*
 * The admin API contract (DESIGN.md "Admin API"): every route, the answer shapes,
 * the sources a config can come from, and what a rejected change leaves behind
 * (nothing). Component types come from the reload-lifecycle test plugin.
 */

type Components = Record<string, { type: 'reload-counter' | 'reload-plain'; metadata: Record<string, string> }>;

function config(a: Upstream, b: Upstream, host: string, opts: { w?: [number, number]; components?: Components; use?: string } = {}) {
  const [wa, wb] = opts.w ?? [1, 0];
  return {
    plugins: [PLUGIN],
    drainTimeout: '2s',
    ...(opts.components ? { components: opts.components } : {}),
    ...twoRoles(a, b, {
      address: `${host}:0`, protocol: 'http',
      filters: [...(opts.use ? [{ type: 'reload-use', component: opts.use }] : []), weighted({ a: wa, b: wb })],
    }),
  } satisfies ConfigSpec;
}

/** An http listener on svc.http (or `target`) with these filters. */
const listener = (address: string, filters: ListenerSpec['filters'] = [], target = 'svc.http'): ListenerSpec => ({ address, protocol: 'http', target, filters });

function webUrl(sc: Sidecar): string {
  const a = sc.addresses().get('web')!;
  return `http://${a.host}:${a.port}`;
}

async function roleServing(sc: Sidecar): Promise<string> {
  return String((await httpGet(webUrl(sc), { agent: false })).headers['x-role']);
}

test('/ready, /config and /generations say what serves, its generation, its source and when', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const scope = newScope('cfg');
  const host = uniqueHost();
  const c = { type: 'reload-counter' as const, metadata: { scope, label: 'one' } };
  const given = config(a, b, host, { components: { c }, use: 'c' });
  const { sc } = await startFromObject(t, given);

  t.deepEqual((await admin(sc, 'GET', '/ready')).json, { ready: true, generation: 1 });
  const first = await admin(sc, 'GET', '/config');
  t.is(first.status, 200);
  t.like(first.json, { generation: 1, source: 'file' });
  t.deepEqual(first.json.config, { admin: { address: '127.0.0.1:0' }, ...given }, 'the config as given');
  t.true(Math.abs(Date.parse(first.json.appliedAt) - Date.now()) < 60_000, 'appliedAt is an ISO time of now');

  // PUT as YAML text.
  const yaml = `plugins: ["${PLUGIN}"]
drainTimeout: 2s
roles:
  a: { meta: { version: "1.0.0" }, channels: { http: { endpoints: ["${a.address}"] } } }
  b: { meta: { version: "2.0.0" }, channels: { http: { endpoints: ["${b.address}"] } } }
vsets: { svc: { channels: [http], roles: { a: {}, b: {} } } }
components:
  c: { type: reload-counter, metadata: { scope: ${scope}, label: one } }
listeners:
  web:
    address: "${host}:0"
    target: svc.http
    filters:
      - { type: reload-use, component: c }
      - { type: weighted, weights: { a: 0, b: 1 } }
`;
  const put = await admin(sc, 'PUT', '/config', yaml, { 'content-type': 'application/yaml' });
  t.is(put.status, 200, put.text);
  t.deepEqual(put.json, { generation: 2, components: { c: 'unchanged' } });
  t.is(await roleServing(sc), 'b');
  const second = await admin(sc, 'GET', '/config');
  t.like(second.json, { generation: 2, source: 'api' });
  t.deepEqual(second.json.config.listeners.web.filters[1], { type: 'weighted', weights: { a: 0, b: 1 } });
  t.true(Date.parse(second.json.appliedAt) >= Date.parse(first.json.appliedAt));

  const comp = await admin(sc, 'POST', '/components/c', { metadata: { scope, label: 'two' } });
  t.deepEqual(comp.json, { generation: 3, components: { c: 'updated' } });
  t.like((await admin(sc, 'GET', '/config')).json, { generation: 3, source: 'component', config: { components: { c: { metadata: { label: 'two' } } } } });

  const back = await admin(sc, 'POST', '/rollback');
  t.deepEqual(back.json, { generation: 4, components: { c: 'updated' } });
  t.like((await admin(sc, 'GET', '/config')).json, { generation: 4, source: 'rollback', config: { components: { c: { metadata: { label: 'one' } } } } });

  const gens = await admin(sc, 'GET', '/generations');
  t.is(gens.json.current, 4);
  t.deepEqual(gens.json.history.map((h: { generation: number; source: string; outcome: string }) => [h.generation, h.source, h.outcome]),
    [[1, 'file', 'applied'], [2, 'api', 'applied'], [3, 'component', 'applied'], [4, 'rollback', 'applied']]);
  for (const h of gens.json.history) t.false(Number.isNaN(Date.parse(h.at)));

  const text = (await admin(sc, 'GET', '/metrics')).text;
  t.regex(text, /^switchyard_config_generation 4$/m);
  for (const source of ['api', 'component', 'rollback']) {
    t.regex(text, new RegExp(`^switchyard_config_reloads_total\\{source="${source}",result="success"\\} 1$`, 'm'));
  }
});

test('PUT /config with an invalid config answers 400 with every error, and changes nothing', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const host = uniqueHost();
  const { sc } = await startFromObject(t, config(a, b, host));
  const bad = config(a, b, host, { w: [0, 1] }) as Record<string, any>;
  bad.drainTimeout = 'soon';
  bad.roles.b.channels.http.endpoints = ['nohost'];
  bad.listeners.web.filters[0].weights = { a: 1, zz: 2 };
  bad.listners = {};
  const res = await admin(sc, 'PUT', '/config', bad);
  t.is(res.status, 400, res.text);
  const paths = res.json.errors.map((e: { path: string }) => e.path).sort();
  t.deepEqual(paths, ['drainTimeout', 'listeners.web.filters[0].weights.zz', 'listners', 'roles.b.channels.http.endpoints[0]'].sort(), res.text);
  for (const e of res.json.errors) t.is(typeof e.code, 'string');

  // An empty body is not taken as "remove everything".
  const empty = await admin(sc, 'PUT', '/config', '', { 'content-type': 'application/yaml' });
  t.is(empty.status, 400, empty.text);
  t.regex(empty.json.errors[0].message, /empty body/);

  // YAML errors name the line.
  const yaml = await admin(sc, 'PUT', '/config', 'roles:\n  a: [unclosed\n', { 'content-type': 'application/yaml' });
  t.is(yaml.status, 400);
  t.true(yaml.json.errors.every((e: { line?: number }) => typeof e.line === 'number'), yaml.text);

  t.is(sc.runtime.current!.number, 1, 'generation 1 keeps serving');
  t.is(await roleServing(sc), 'a');
  t.is(await metric(sc, 'switchyard_config_reloads_total', { source: 'api', result: 'invalid' }), 2, 'the empty body is refused before it is a reload');
  t.like((await admin(sc, 'GET', '/generations')).json.history.at(-1), { generation: null, source: 'api', outcome: 'invalid' });
  t.like((await admin(sc, 'GET', '/config')).json, { generation: 1, source: 'file' });
});

test('POST /components/<name> takes {metadata} or Layotto\'s {kind, name, metadata}', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const scope = newScope('post');
  const host = uniqueHost();
  const { sc } = await startFromObject(t, config(a, b, host, { components: { c: { type: 'reload-counter', metadata: { scope, label: 'one' } } }, use: 'c' }));
  const label = async () => String((await httpGet(webUrl(sc), { agent: false })).headers['x-reload-component']).split(':').slice(0, 2);
  const [firstId] = await label();

  const inPlace = await admin(sc, 'POST', '/components/c', { metadata: { scope, label: 'two' } });
  t.deepEqual(inPlace.json, { generation: 2, components: { c: 'updated' } });
  t.deepEqual(await label(), [firstId, 'two']);

  // Layotto's ComponentConfig: kind is our type; a new type means a new instance.
  const layotto = await admin(sc, 'POST', '/components/c', { kind: 'reload-plain', name: 'c', metadata: { scope, label: 'three' } });
  t.deepEqual(layotto.json, { generation: 3, components: { c: 'reinitialized' } });
  const [id3, label3] = await label();
  t.not(id3, firstId);
  t.is(label3, 'three');
  t.like((await admin(sc, 'GET', '/config')).json.config.components.c, { type: 'reload-plain', metadata: { scope, label: 'three' } });

  const added = await admin(sc, 'POST', '/components/extra', { kind: 'reload-plain', name: 'extra', metadata: { scope } });
  t.deepEqual(added.json, { generation: 4, components: { c: 'unchanged', extra: 'added' } });

  // Refusals: nothing changes.
  t.is((await admin(sc, 'POST', '/components/c', { name: 'other', metadata: { scope } })).status, 400, 'name differs from the path');
  t.is((await admin(sc, 'POST', '/components/nope', { metadata: { scope } })).status, 404, 'unknown component without kind');
  t.is((await admin(sc, 'POST', '/components/c', 'not json')).status, 400);
  t.is((await admin(sc, 'POST', '/components/c', { label: 'x' })).status, 400, 'no metadata');
  const invalid = await admin(sc, 'POST', '/components/c', { metadata: { scope, invalid: 'yes' } });
  t.is(invalid.status, 400);
  t.deepEqual(invalid.json.errors.map((e: { path: string }) => e.path), ['components.c.metadata.invalid']);
  t.is(await metric(sc, 'switchyard_config_reloads_total', { source: 'component', result: 'invalid' }), 1);
  const failing = await admin(sc, 'POST', '/components/c', { metadata: { scope, ready: 'false' } });
  t.is(failing.status, 409);
  t.is(await metric(sc, 'switchyard_config_reloads_total', { source: 'component', result: 'failed' }), 1);
  t.is(sc.runtime.current!.number, 4);
  t.deepEqual(await label(), [id3, 'three']);
});

test('concurrent POST /components for two components both take effect', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const scope = newScope('concurrent');
  const host = uniqueHost();
  const components: Components = {
    c1: { type: 'reload-plain', metadata: { scope, label: 'one' } },
    c2: { type: 'reload-counter', metadata: { scope, label: 'one' } },
  };
  const { sc } = await startFromObject(t, config(a, b, host, { components }));
  // Count the calls that reach the runtime, to know when the second one is in.
  const rt = sc.runtime;
  const original = rt.applyComponent.bind(rt);
  let calls = 0;
  rt.applyComponent = (name, change) => { calls++; return original(name, change); };

  // The first change is slow (its new instance waits at the readiness gate) …
  const readyBefore = eventsNamed(scope, 'ready').length;
  const first = admin(sc, 'POST', '/components/c1', { metadata: { scope, label: 'c1-new', ready: 'gate' } });
  await until(() => eventsNamed(scope, 'ready').length === readyBefore + 1, 5_000, 'the first change to wait for readiness');
  // … and the second arrives while it runs.
  const second = admin(sc, 'POST', '/components/c2', { metadata: { scope, label: 'c2-new' } });
  await until(() => calls === 2, 5_000, 'the second change to reach the runtime');
  t.true(openGate(scope));
  const [r1, r2] = await Promise.all([first, second]);
  t.is(r1.status, 200, r1.text);
  t.is(r2.status, 200, r2.text);
  t.deepEqual(r2.json.components, { c1: 'unchanged', c2: 'updated' }, 'the second change started from the first one\'s result');
  const cur = (await admin(sc, 'GET', '/config')).json;
  t.is(cur.generation, 3);
  t.is(cur.config.components.c1.metadata.label, 'c1-new', 'the first change survived the second');
  t.is(cur.config.components.c2.metadata.label, 'c2-new');
});

test('POST /rollback makes the previous config current again; 409 when there is none or its build fails', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const host = uniqueHost();
  const extraHost = uniqueHost();
  const extraPort = await freePort(extraHost);
  const withExtra = config(a, b, host);
  withExtra.listeners.extra = listener(`${extraHost}:${extraPort}`);
  const { sc } = await startFromObject(t, withExtra);
  const none = await admin(sc, 'POST', '/rollback');
  t.is(none.status, 409, 'nothing to roll back to');
  t.regex(none.json.error, /no previous config/);

  t.is((await admin(sc, 'PUT', '/config', config(a, b, host, { w: [0, 1] }))).status, 200);
  t.is(await roleServing(sc), 'b');
  t.true(await refused(extraHost, extraPort));
  const back = await admin(sc, 'POST', '/rollback');
  t.is(back.status, 200, back.text);
  t.is(back.json.generation, 3);
  t.is(await roleServing(sc), 'a');
  t.is((await httpGet(`http://${extraHost}:${extraPort}/`, { agent: false })).status, 200, 'the rolled-back listener serves again');
  // Rolling back again returns to generation 2's config.
  t.is((await admin(sc, 'POST', '/rollback')).json.generation, 4);
  t.is(await roleServing(sc), 'b');
  await until(() => sc.runtime.draining.size === 0, 5_000, 'old generations to drain');
  t.true(await refused(extraHost, extraPort));

  // Someone else takes the address the previous config needs: the rollback fails, nothing changes.
  const squatter = createTcpServer();
  await new Promise<void>((r) => squatter.listen(extraPort, extraHost, r));
  t.teardown(() => new Promise<void>((r) => squatter.close(() => r())));
  const failed = await admin(sc, 'POST', '/rollback');
  t.is(failed.status, 409, failed.text);
  t.regex(failed.json.errors[0].message, /cannot listen/);
  t.is(sc.runtime.current!.number, 4);
  t.is(await roleServing(sc), 'b');
  t.is(await metric(sc, 'switchyard_config_reloads_total', { source: 'rollback', result: 'failed' }), 1);
});

test('GET /vsets lists the vsets, their roles with meta, and each listener\'s local address', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const host = uniqueHost();
  const { sc } = await startFromObject(t, config(a, b, host));
  const res = await admin(sc, 'GET', '/vsets');
  t.is(res.status, 200);
  const addr = sc.addresses().get('web')!;
  t.is(res.json.generation, 1);
  t.deepEqual(res.json.listeners, { web: { address: `${addr.host}:${addr.port}`, protocol: 'http', target: 'svc.http' } });
  t.like(res.json.vsets.svc, { channels: ['http'], roles: { a: { meta: { version: '1.0.0' } }, b: { meta: { version: '2.0.0' } } } });
  t.like(res.json.vsets.a, { implicit: true, roles: { a: { meta: { version: '1.0.0' } } } }, 'every role is a vset of its own name');
  t.is(addr.host, host);
});

test('a bearer token guards the admin API; a reload rotates it; GET /config masks it', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const host = uniqueHost();
  const withToken = (token: string) => ({ ...config(a, b, host), admin: { address: '127.0.0.1:0', token } });
  const { sc } = await startFromObject(t, withToken('first-token'));
  t.is((await admin(sc, 'GET', '/config')).status, 401);
  t.is((await admin(sc, 'GET', '/config', undefined, { authorization: 'Bearer wrong' })).status, 401);
  t.is((await admin(sc, 'PUT', '/config', withToken('x'))).status, 401, 'no change without the token');
  const ok = await admin(sc, 'GET', '/config', undefined, { authorization: 'Bearer first-token' });
  t.is(ok.status, 200);
  t.is(ok.json.config.admin.token, '***', 'the token is not shown');
  t.false(ok.text.includes('first-token'));

  const rotate = await admin(sc, 'PUT', '/config', withToken('second-token'), { authorization: 'Bearer first-token' });
  t.is(rotate.status, 200, rotate.text);
  t.is((await admin(sc, 'GET', '/config', undefined, { authorization: 'Bearer first-token' })).status, 401, 'the old token no longer works');
  t.is((await admin(sc, 'GET', '/config', undefined, { authorization: 'Bearer second-token' })).status, 200, 'the new token works');
});

test('a non-loopback admin address without a token is refused, at start and on reload', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const host = uniqueHost();
  const open = { ...config(a, b, host), admin: { address: '0.0.0.0:0' } };
  const err = await t.throwsAsync(Sidecar.start({ raw: rawFromObject(open, ROOT), log: () => {} }));
  t.true(err instanceof ConfigError);
  t.deepEqual((err as ConfigError).issues.map((i) => [i.code, i.path]), [['SY_ERR_ADMIN_TOKEN_REQUIRED', 'admin.address']]);

  const { sc } = await startFromObject(t, config(a, b, host));
  const res = await admin(sc, 'PUT', '/config', open);
  t.is(res.status, 400);
  t.deepEqual(res.json.errors.map((e: { code: string }) => e.code), ['SY_ERR_ADMIN_TOKEN_REQUIRED']);
  t.is(sc.runtime.current!.number, 1);
});

test('PUT /config?dryRun=1 answers what would change and builds nothing', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const scope = newScope('dry');
  const host = uniqueHost();
  const gone = uniqueHost();
  const fresh = uniqueHost();
  const md = (label: string) => ({ scope, label });
  const before = config(a, b, host, {
    use: 'upd',
    components: {
      keep: { type: 'reload-plain', metadata: md('k') },
      upd: { type: 'reload-counter', metadata: md('u1') },
      re: { type: 'reload-plain', metadata: md('r1') },
      del: { type: 'reload-plain', metadata: md('d') },
    },
  });
  before.listeners.gone = listener(`${gone}:0`, [weighted({ a: 1, b: 1 })]);
  before.listeners.same = listener(`${uniqueHost()}:0`, [], 'a');
  const { sc } = await startFromObject(t, before);
  const after = config(a, b, host, {
    w: [1, 3],
    use: 'upd',
    components: {
      keep: { type: 'reload-plain', metadata: md('k') },
      upd: { type: 'reload-counter', metadata: md('u2') },
      re: { type: 'reload-plain', metadata: md('r2') },
      add: { type: 'reload-plain', metadata: md('new') },
    },
  });
  after.listeners.fresh = listener(`${fresh}:0`, [weighted({ a: 0, b: 1 })]);
  after.listeners.same = before.listeners.same!;
  const eventsBefore = eventsOf(scope).length;
  const reloadsBefore = await admin(sc, 'GET', '/metrics');

  const res = await admin(sc, 'PUT', '/config?dryRun=1', after);
  t.is(res.status, 200, res.text);
  t.true(res.json.dryRun);
  t.deepEqual(res.json.listeners, { added: ['fresh'], removed: ['gone'], changed: ['web'], unchanged: ['same'] });
  t.deepEqual(res.json.components, { keep: 'unchanged', upd: 'updated', re: 'reinitialized', add: 'added', del: 'removed' });
  t.deepEqual(res.json.weights, {
    web: { before: { a: 1, b: 0 }, after: { a: 1, b: 3 } },
    fresh: { before: null, after: { a: 0, b: 1 } },
    gone: { before: { a: 1, b: 1 }, after: null },
  });

  // Nothing was built or changed.
  t.is(eventsOf(scope).length, eventsBefore, 'no component was created, updated or closed');
  t.is(sc.runtime.current!.number, 1);
  t.false(sc.addresses().has('fresh'));
  t.is(await roleServing(sc), 'a');
  const reloadsAfter = await admin(sc, 'GET', '/metrics');
  const reloads = (s: string) => s.split('\n').filter((l) => l.startsWith('switchyard_config_reloads_total')).join('\n');
  t.is(reloads(reloadsAfter.text), reloads(reloadsBefore.text), 'a dry run is not a reload');
  t.is((await admin(sc, 'GET', '/generations')).json.history.length, 1);

  // An invalid config: 400 with every error, as for a real PUT.
  const bad = { ...after, drainTimeout: 'soon', listeners: { ...after.listeners, web: { ...(after.listeners.web as object), target: 'nowhere' } } };
  const invalid = await admin(sc, 'PUT', '/config?dryRun=1', bad);
  t.is(invalid.status, 400);
  t.deepEqual(invalid.json.errors.map((e: { path: string }) => e.path).sort(), ['drainTimeout', 'listeners.web.target']);

  // The same config, applied for real, does what the dry run said.
  const real = await admin(sc, 'PUT', '/config', after);
  t.deepEqual(real.json.components, res.json.components);
});

test('unknown admin paths answer 404 and wrong methods 405', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const { sc } = await startFromObject(t, config(a, b, uniqueHost()));
  t.is((await admin(sc, 'GET', '/nope')).status, 404);
  t.is((await admin(sc, 'DELETE', '/config')).status, 405);
  t.is((await admin(sc, 'GET', '/rollback')).status, 405);
});

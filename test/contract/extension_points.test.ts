import test from 'ava';
import { request } from 'undici';
import { builtinRegistry } from '../../src/builtins.js';
import { Registry } from '../../src/registry.js';
import { adminUrl, get, listenerUrl, startSidecar, startUpstream, twoRoles, yaml, ROOT, type ConfigSpec, type FilterSpec } from '../helpers.js';

/*
 * One contract suite per extension point (hono runs one suite over every router):
 * the same checks over every built-in filter type, every built-in component type,
 * and the example plugin's, through the real validator, build and data path.
 */

const PLUGIN = `${ROOT}/examples/plugins/cookie-pin.mjs`;

/** Per filter type: a valid entry (without `type`), and how it stops a chain (the status it answers), if it does. */
const FILTERS: Record<string, { config: Record<string, unknown>; stops?: number }> = {
  header_route: { config: { rules: [{ header: 'x-pin', equals: 'b', role: 'b' }] } },
  weighted: { config: { weights: { a: 1, b: 1 } } },
  ratelimit: { config: { component: 'limit' }, stops: 429 },
  fault: { config: { abort: { status: 503, percent: 100 } }, stops: 503 },
  headers: { config: { request: { set: { 'x-contract': '1' } } } },
  cookie_pin: { config: { cookie: 'user', component: 'pins' } },
};

/** Per component type: valid metadata, a change made in place, one that needs a new instance (null: none), and an entry its validate refuses, with the key it names. */
const COMPONENTS: Record<string, { name: string; metadata: Record<string, string>; inPlace: Record<string, string>; reinit: Record<string, string> | null; bad: [Record<string, string>, string] }> = {
  ratelimit: {
    name: 'limit', metadata: { requestsPerSecond: '0.001', burst: '1' }, inPlace: { requestsPerSecond: '0.002', burst: '1' },
    reinit: { requestsPerSecond: '0.001', burst: '1', key: 'client' }, bad: [{ requestsPerSecond: '0.001', bogus: '1' }, 'bogus'],
  },
  cookie_table: { name: 'pins', metadata: { alice: 'a' }, inPlace: { alice: 'b' }, reinit: null, bad: [{ alice: 'not a role!' }, 'alice'] },
};

async function registry(): Promise<Registry> {
  const r = builtinRegistry();
  const plugin = (await import(PLUGIN)) as { register(r: Registry): void };
  plugin.register(r);
  return r;
}

/** Roles a and b on `upstream`, both sample components, and listener `web` running `filters`. */
function configOf(upstream: string, filters: FilterSpec[], components: Record<string, Record<string, string>> = {}): ConfigSpec {
  const comps = Object.fromEntries(Object.entries(COMPONENTS).map(([type, c]) => [c.name, { type, metadata: components[c.name] ?? c.metadata }]));
  return { plugins: [PLUGIN], components: comps, ...twoRoles(upstream, upstream, { filters }) };
}

async function admin(base: string, method: string, path: string, body: ConfigSpec | string): Promise<{ status: number; json: Record<string, unknown> }> {
  // A config (as YAML) keeps the running admin address (startSidecar's); a component body is JSON text.
  const text = typeof body === 'string' ? body : yaml({ admin: { address: '127.0.0.1:0' }, ...body });
  const res = await request(`${base}${path}`, {
    method: method as 'PUT', body: text, headers: { 'content-type': typeof body === 'string' ? 'application/json' : 'application/yaml' },
  });
  return { status: res.statusCode, json: (await res.body.json()) as Record<string, unknown> };
}

test('the suite covers every filter and component type the built-ins and the example plugin register', async (t) => {
  const r = await registry();
  t.deepEqual(r.filterTypes().sort(), Object.keys(FILTERS).sort());
  t.deepEqual(r.componentTypes().sort(), Object.keys(COMPONENTS).sort());
});

for (const [type, sample] of Object.entries(FILTERS)) {
  test(`filter ${type}: validate reports an unknown key at its path`, async (t) => {
    const up = await startUpstream(t, 'u');
    const sc = await startSidecar(t, configOf(up.address, [{ type, ...sample.config }]));
    const res = await admin(adminUrl(sc), 'PUT', '/config?dryRun=1', configOf(up.address, [{ type, ...sample.config, bogus: 1 }]));
    t.is(res.status, 400);
    const errors = res.json.errors as { code: string; path: string }[];
    t.true(errors.some((e) => e.code === 'SY_ERR_CONFIG_UNKNOWN_KEY' && e.path === 'listeners.web.filters[0].bogus'), JSON.stringify(errors));
  });

  test(`filter ${type}: create returns a named sync function, and its close (if any) is idempotent`, async (t) => {
    const up = await startUpstream(t, 'u');
    const sc = await startSidecar(t, configOf(up.address, [{ type, ...sample.config }]));
    const filter = sc.runtime.current!.plans.get('web')!.filters[0]!;
    t.is(typeof filter, 'function');
    t.not(filter.name, '', 'named, so a profile and a stack trace say which filter');
    t.is(filter.constructor.name, 'Function', 'not an async function: sync is the fast path');
    if (filter.close !== undefined) {
      await filter.close();
      await t.notThrowsAsync(async () => filter.close!());
    }
  });

  test(`filter ${type}: a chain stops only when the filter answered`, async (t) => {
    const up = await startUpstream(t, 'u');
    const sc = await startSidecar(t, configOf(up.address, [{ type, ...sample.config }]));
    const warnings: string[] = [];
    const onWarning = (w: Error & { code?: string }): void => { if (w.code === 'SY_ERR_FILTER_FAILED') warnings.push(w.message); };
    process.on('warning', onWarning);
    t.teardown(() => { process.off('warning', onWarning); });
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) {
      const before = up.requests.length;
      const res = await get(listenerUrl(sc, 'web'), { 'x-pin': 'b', cookie: 'user=alice' });
      statuses.push(res.status);
      // Either the upstream answered (the chain ran through), or the filter did and nothing was forwarded.
      if (up.requests.length === before) t.is(res.status, sample.stops ?? 200, 'a stopped chain answers with the filter\'s status');
      else t.is(res.status, 200);
    }
    t.deepEqual(warnings.filter((w) => w.includes('listener web:')), [], 'no contract break (a false without an answer is one)');
    if (sample.stops !== undefined) t.true(statuses.includes(sample.stops), `this sample stops the chain: ${statuses.join(',')}`);
  });
}

for (const [type, sample] of Object.entries(COMPONENTS)) {
  test(`component ${type}: validate reports a bad entry at its path`, async (t) => {
    const up = await startUpstream(t, 'u');
    const sc = await startSidecar(t, configOf(up.address, []));
    const res = await admin(adminUrl(sc), 'PUT', '/config?dryRun=1', configOf(up.address, [], { [sample.name]: sample.bad[0] }));
    t.is(res.status, 400);
    const errors = res.json.errors as { path: string }[];
    t.true(errors.some((e) => e.path === `components.${sample.name}.metadata.${sample.bad[1]}`), JSON.stringify(errors));
  });

  test(`component ${type}: applyConfig updates in place (same instance), needReload re-creates it, and close is idempotent`, async (t) => {
    const up = await startUpstream(t, 'u');
    const sc = await startSidecar(t, configOf(up.address, []));
    const instance = (): unknown => sc.runtime.current!.components.get(sample.name)!.instance;
    const first = instance();
    const updated = await admin(adminUrl(sc), 'POST', `/components/${sample.name}`, JSON.stringify({ metadata: sample.inPlace }));
    t.is(updated.status, 200);
    t.like(updated.json, { components: { [sample.name]: 'updated' } });
    t.is(instance(), first, 'updated in place: the same instance, its state kept');
    if (sample.reinit !== null) {
      const re = await admin(adminUrl(sc), 'POST', `/components/${sample.name}`, JSON.stringify({ metadata: sample.reinit }));
      t.is(re.status, 200);
      t.like(re.json, { components: { [sample.name]: 'reinitialized' } });
      t.not(instance(), first, 'needReload: a new instance');
    }
    const last = instance() as { close(): Promise<void> };
    await sc.stop();
    await t.notThrowsAsync(async () => { await last.close(); await last.close(); });
  });
}

import test from 'ava';
import jsyaml from 'js-yaml';
import { writeFile } from 'node:fs/promises';
import { Sidecar } from '../../src/sidecar.js';
import { mergeConfig } from '../../src/config/load.js';
import type { Generation } from '../../src/reload/generation.js';
import {
  adminUrl, get, listenerUrl, metric, putConfig, startUpstream, twoRoles, uniqueHost, until, untilMetric, weighted, yaml, type Upstream,
} from '../helpers.js';
import { Etcd, startFromBootstrap } from '../etcd_support.js';

/*
 * The fleet config source (DESIGN.md "Config from a distributed store"): a real
 * etcd, documents written with etcdctl behind the sidecar's back, one sidecar
 * started from a bootstrap file that names `source.etcd`.
 */

const APP = 'cart-client';

/** The bootstrap: admin on port 0, roles a and b, listener web splitting `w`, and source.etcd on `endpoint`. */
function bootstrap(a: Upstream, b: Upstream, endpoint: string, prefix: string, more: Record<string, unknown> = {}): string {
  return yaml({
    admin: { address: '127.0.0.1:0' },
    drainTimeout: '30s',
    ...twoRoles(a, b, { address: `${uniqueHost()}:0`, target: 'svc', filters: [weighted({ a: 100, b: 0 })] }),
    source: { etcd: { endpoints: [endpoint], prefix, app: APP, instance: 'pod-1', timeout: '2s', checkInterval: '5s', leaseTtl: '5s' } },
    ...more,
  } as never);
}

const start = startFromBootstrap;

interface ConfigAnswer { generation: number; source: string; revision?: number; config: Record<string, unknown> }

async function config(sc: Sidecar): Promise<ConfigAnswer> {
  const r = await get(`${adminUrl(sc)}/config`);
  return JSON.parse(r.body) as ConfigAnswer;
}

async function roleOf(sc: Sidecar): Promise<string> {
  return String((await get(listenerUrl(sc, 'web'))).headers['x-role']);
}

/** The weighted filter as a document: listener web's filters replaced (a list replaces a list). */
function weights(a: number, b: number): Record<string, unknown> {
  return { listeners: { web: { filters: [{ type: 'weighted', weights: { a, b } }] } } };
}

test('both keys are read at one revision and merged app over common over bootstrap; GET /config says etcd and the revision', async (t) => {
  const etcd = await Etcd.start(t);
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const prefix = '/sy1';
  // drainTimeout: set by all three; accessLog: only common; listener weights: only the app.
  const rev = await etcd.putAll({
    [`${prefix}/common`]: { drainTimeout: '7s', roles: { a: { meta: { track: 'common' } } } },
    [`${prefix}/apps/${APP}`]: { drainTimeout: '3s', ...weights(0, 100) },
    [`${prefix}/apps/other-app`]: { drainTimeout: '1s' },
  });
  const { sc } = await start(t, bootstrap(a, b, etcd.url, prefix));
  const c = await config(sc);
  t.is(c.source, 'etcd');
  t.is(c.revision, rev);
  t.is(c.config.drainTimeout, '3s', 'the app document wins over common and the bootstrap');
  t.like(c.config.roles, { a: { meta: { version: '1.0.0', track: 'common' } } }, 'common over the bootstrap, key by key');
  t.false('source' in c.config, 'the bootstrap\'s source is no part of the config');
  t.is(sc.runtime.current!.config.drainTimeoutMs, 3_000);
  t.is(await roleOf(sc), 'b');
  t.is(await metric(sc, 'switchyard_config_source_up', { source: 'etcd' }), 1);
  t.is(await metric(sc, 'switchyard_config_source_revision', { source: 'etcd' }), rev);

  // The status key: applied, generation 1, at that revision.
  const status = JSON.parse((await etcd.get(`${prefix}/status/${APP}/pod-1`))!) as Record<string, unknown>;
  t.like(status, { generation: 1, revision: rev, result: 'applied', errors: [] });

  // Another app's document changes nothing here.
  await etcd.put(`${prefix}/apps/other-app`, 'drainTimeout: 2s');
  const changed = await etcd.put(`${prefix}/common`, 'drainTimeout: 9s');
  await until(async () => (await config(sc)).revision! >= changed, 10_000, 'the common change');
  t.is(sc.runtime.current!.config.drainTimeoutMs, 3_000, 'the app still wins');
  t.is(sc.runtime.current!.config.roles.a!.meta.track, 'stable', 'common no longer sets the track: the bootstrap\'s shows');
  t.is(sc.runtime.history.filter((h) => h.source === 'etcd').length, 2, 'the other app\'s change made no generation');

  // The app's document deleted: common over the bootstrap, known by the deletion's revision.
  const deleted = await etcd.del(`${prefix}/apps/${APP}`);
  await until(async () => (await config(sc)).revision === deleted, 10_000, 'the deletion');
  t.is(sc.runtime.current!.config.drainTimeoutMs, 9_000);
  t.is(await roleOf(sc), 'a');
});

test('a transaction changing both keys is one generation: none is built from a half-written pair', async (t) => {
  const etcd = await Etcd.start(t);
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const prefix = '/sy2';
  const pair = (n: number) => ({
    [`${prefix}/common`]: { roles: { a: { meta: { pair: String(n) } } } },
    // The app's listener names role c, which only the same revision of common has.
    [`${prefix}/apps/${APP}`]: { roles: { b: { meta: { pair: String(n) } } }, ...weights(n % 2, 1) },
  });
  await etcd.putAll(pair(0));
  const { sc } = await start(t, bootstrap(a, b, etcd.url, prefix));
  const seen: Generation[] = [];
  sc.runtime.onApplied = (g) => seen.push(g);
  const first = sc.runtime.current!.number;
  let last = 0;
  for (let n = 1; n <= 15; n++) last = await etcd.putAll(pair(n));
  await until(async () => (await config(sc)).revision! >= last, 15_000, 'the last transaction');
  t.true(seen.length >= 1);
  for (const g of seen) {
    const { a: ra, b: rb } = g.config.roles;
    t.is(ra!.meta.pair, rb!.meta.pair, `generation ${g.number}: common and app from one revision`);
    t.is(g.source, 'etcd');
  }
  t.is(seen.at(-1)!.config.roles.a!.meta.pair, '15');
  t.true(sc.runtime.history.every((h) => h.outcome === 'applied'), 'no change was rejected');
  t.is(sc.runtime.current!.number - first, seen.length, 'one generation per applied read, none half-way');
});

test('a bad document is rejected whole: the last good config keeps serving, and the status key says rejected', async (t) => {
  const etcd = await Etcd.start(t);
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const prefix = '/sy3';
  await etcd.put(`${prefix}/apps/${APP}`, yaml(weights(0, 100) as never));
  const { sc, log } = await start(t, bootstrap(a, b, etcd.url, prefix));
  const good = await config(sc);
  t.is(await roleOf(sc), 'b');
  const statusKey = `${prefix}/status/${APP}/pod-1`;

  // A typo in the app's document, and a weight that names no role.
  const rejectedAt = await etcd.put(`${prefix}/apps/${APP}`, 'listeners:\n  web:\n    filters:\n      - type: weighted\n        weights: { a: 100, zz: 1 }\n    timeoutz: 5s\n');
  await until(async () => (JSON.parse((await etcd.get(statusKey)) ?? '{}') as { revision?: number }).revision === rejectedAt, 10_000, 'the rejection in the status key');
  const status = JSON.parse((await etcd.get(statusKey))!) as { generation: number; result: string; errors: string[] };
  t.is(status.result, 'rejected');
  t.is(status.generation, good.generation, 'the generation that keeps serving');
  t.true(status.errors.some((e) => e.startsWith(`etcd:${prefix}/apps/${APP}:6:5: listeners.web.timeoutz`)), status.errors.join('\n'));
  t.true(status.errors.some((e) => e.includes('listeners.web.filters[0].weights.zz')), status.errors.join('\n'));
  t.deepEqual(await config(sc), good, 'nothing changed');
  t.is(await roleOf(sc), 'b');
  t.true(log.some((l) => l.includes(`etcd: revision ${rejectedAt} rejected`)));

  // A document may not name a source: only the bootstrap may.
  await etcd.put(`${prefix}/common`, 'source:\n  etcd: { endpoints: ["http://127.0.0.1:1"], app: x }\n');
  const fixedAt = await etcd.put(`${prefix}/apps/${APP}`, yaml(weights(100, 0) as never));
  await until(async () => (JSON.parse((await etcd.get(statusKey)) ?? '{}') as { revision?: number }).revision === fixedAt, 10_000, 'the next status');
  const bad = JSON.parse((await etcd.get(statusKey))!) as { result: string; errors: string[] };
  t.is(bad.result, 'rejected');
  t.true(bad.errors.some((e) => e.includes(`etcd:${prefix}/common:1:1: source:`) && e.includes('SY_ERR_CONFIG_SOURCE_NOT_BOOTSTRAP')), bad.errors.join('\n'));

  const clean = await etcd.put(`${prefix}/common`, '{}');
  await until(async () => (await config(sc)).revision === clean, 10_000, 'the fixed documents');
  t.is(await roleOf(sc), 'a');
  await until(async () => (JSON.parse((await etcd.get(statusKey))!) as { revision: number }).revision === clean, 5_000, 'the status');
  t.like(JSON.parse((await etcd.get(statusKey))!), { result: 'applied', revision: clean });
});

test('the status key lives on a lease: it vanishes when the sidecar stops', async (t) => {
  const etcd = await Etcd.start(t);
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const prefix = '/sy4';
  const { sc } = await start(t, bootstrap(a, b, etcd.url, prefix));
  const key = `${prefix}/status/${APP}/pod-1`;
  t.like(JSON.parse((await etcd.get(key))!), { result: 'applied', generation: 1 });
  const lease = JSON.parse(await etcd.ctl('get', key, '-w', 'json')) as { kvs: { lease: number }[] };
  t.true(lease.kvs[0]!.lease > 0, 'written with a lease');
  await sc.stop();
  t.is(await etcd.get(key), null);
});

test('a pushed config may not name a source; an admin push is overwritten by the next etcd change', async (t) => {
  const etcd = await Etcd.start(t);
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const prefix = '/sy5';
  const { sc } = await start(t, bootstrap(a, b, etcd.url, prefix));
  const body = yaml({ ...twoRoles(a, b, { address: `${uniqueHost()}:0`, target: 'svc' }), source: { etcd: { endpoints: [etcd.url], app: 'x' } } } as never);
  const refused = await putConfig(sc, JSON.parse(JSON.stringify(jsyaml.load(body))) as never);
  t.is(refused.status, 400);
  t.regex(refused.body, /SY_ERR_CONFIG_SOURCE_NOT_BOOTSTRAP/);

  const current = (await config(sc)).config;
  const pushed = await putConfig(sc, mergeConfig(current, weights(0, 100)) as never);
  t.is(pushed.status, 200, pushed.body);
  const c = await config(sc);
  t.is(c.source, 'api');
  t.is(c.revision, undefined, 'a pushed config names no etcd revision');
  t.is(await roleOf(sc), 'b');
  await etcd.put(`${prefix}/apps/${APP}`, yaml({ drainTimeout: '4s' } as never));
  await until(async () => (await config(sc)).source === 'etcd', 10_000, 'the etcd change');
  t.is(await roleOf(sc), 'a', 'the etcd change is merged over the bootstrap, not over the push');
  await untilMetric(sc, 'switchyard_config_reloads_total', { source: 'etcd', result: 'success' }, 2);
});

test('an edit of the bootstrap file is applied under the etcd documents of the config serving', async (t) => {
  const etcd = await Etcd.start(t);
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const prefix = '/sy6';
  const rev = await etcd.put(`${prefix}/apps/${APP}`, yaml(weights(0, 100) as never));
  const { sc, log } = await start(t, bootstrap(a, b, etcd.url, prefix));
  t.is(await roleOf(sc), 'b');
  await writeFile(sc.files[0]!, bootstrap(a, b, etcd.url, prefix, { drainTimeout: '4s' }).replace(`prefix: ${prefix}`, 'prefix: /elsewhere'));
  const r = await sc.reload('sighup');
  t.true(r.ok);
  const c = await config(sc);
  t.like(c, { source: 'sighup', revision: rev });
  t.is(sc.runtime.current!.config.drainTimeoutMs, 4_000, 'the bootstrap change');
  t.is(await roleOf(sc), 'b', 'the app document still over it');
  t.true(log.includes('source changed in the config files: it takes effect at the next restart'));
  await until(async () => (JSON.parse((await etcd.get(`${prefix}/status/${APP}/pod-1`))!) as { source: string }).source === 'sighup', 5_000, 'the status');
});

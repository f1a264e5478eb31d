import test from 'ava';
import { Sidecar } from '../../src/sidecar.js';
import { SwitchyardError } from '../../src/errors.js';
import {
  adminUrl, get, listenerUrl, metric, startUpstream, tempFiles, twoRoles, uniqueHost, until, untilMetric, weighted, yaml, type Upstream,
} from '../helpers.js';
import { Etcd, Relay, startFromBootstrap } from '../etcd_support.js';

/*
 * The etcd source under faults: etcd killed and restarted, a partition while
 * history is compacted, a connection that silently stops carrying bytes, and
 * etcd down at start. The relay (etcd_support.ts) stands between the sidecar and
 * etcd where a test needs to cut or stall the network; etcdctl talks to etcd directly.
 */

const APP = 'web-app';

function bootstrap(a: Upstream, b: Upstream, endpoint: string, prefix: string, etcd: Record<string, string> = {}, listeners = true): string {
  const routing = twoRoles(a, b, { address: `${uniqueHost()}:0`, target: 'svc', filters: [weighted({ a: 100, b: 0 })] });
  return yaml({
    admin: { address: '127.0.0.1:0' },
    ...(listeners ? routing : { roles: routing.roles, vsets: routing.vsets }),
    source: { etcd: { endpoints: [endpoint], prefix, app: APP, instance: 'i1', timeout: '1s', checkInterval: '60s', leaseTtl: '5s', ...etcd } },
  } as never);
}

const start = startFromBootstrap;

async function revisionServed(sc: Sidecar): Promise<number | undefined> {
  return (JSON.parse((await get(`${adminUrl(sc)}/config`)).body) as { revision?: number }).revision;
}

async function roleOf(sc: Sidecar): Promise<string> {
  return String((await get(listenerUrl(sc, 'web'))).headers['x-role']);
}

const toB = yaml({ listeners: { web: { filters: [{ type: 'weighted', weights: { a: 0, b: 100 } }] } } } as never);
const toA = yaml({ listeners: { web: { filters: [{ type: 'weighted', weights: { a: 100, b: 0 } }] } } } as never);

test('etcd killed: the sidecar keeps serving with source_up 0, and catches up a change once etcd is back', async (t) => {
  const etcd = await Etcd.start(t);
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const prefix = '/f1';
  await etcd.put(`${prefix}/apps/${APP}`, toA);
  const { sc, log } = await start(t, bootstrap(a, b, etcd.url, prefix));
  t.is(await metric(sc, 'switchyard_config_source_up', { source: 'etcd' }), 1);
  await etcd.kill();
  await untilMetric(sc, 'switchyard_config_source_up', { source: 'etcd' }, 0, 10_000);
  t.is(await roleOf(sc), 'a', 'still serving');
  t.true(log.some((l) => /etcd: unreachable .* generation 1 keeps serving; retrying with back-off/.test(l)), log.join('\n'));

  await etcd.restart();
  const changed = await etcd.put(`${prefix}/apps/${APP}`, toB);
  await until(async () => (await revisionServed(sc)) === changed, 15_000, 'the change made after the restart');
  t.is(await roleOf(sc), 'b');
  await untilMetric(sc, 'switchyard_config_source_up', { source: 'etcd' }, 1);
  t.is(await metric(sc, 'switchyard_config_source_revision', { source: 'etcd' }), changed);
  // The status key is written again under the restarted etcd.
  await until(async () => (JSON.parse((await etcd.get(`${prefix}/status/${APP}/i1`)) ?? '{}') as { revision?: number }).revision === changed, 10_000, 'the status key');
});

test('cut off while history is compacted: the watch resumes from a compacted revision, re-lists at one revision, and watches on', async (t) => {
  const etcd = await Etcd.start(t);
  const relay = await Relay.start(t, etcd.url);
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const prefix = '/f2';
  await etcd.put(`${prefix}/apps/${APP}`, toA);
  const { sc, log } = await start(t, bootstrap(a, b, relay.url, prefix));
  await relay.cut();
  await untilMetric(sc, 'switchyard_config_source_up', { source: 'etcd' }, 0, 10_000);
  await etcd.put(`${prefix}/common`, 'drainTimeout: 3s');
  const changed = await etcd.put(`${prefix}/apps/${APP}`, toB);
  await etcd.compact();
  await relay.restore();
  await until(async () => (await revisionServed(sc)) === changed, 15_000, 'the changes made while cut off');
  t.is(await roleOf(sc), 'b');
  t.is(sc.runtime.current!.config.drainTimeoutMs, 3_000, 'both changes, in one generation');
  await until(() => log.some((l) => /etcd: watch of .* from revision \d+ cancelled \(revision \d+ is compacted\); re-listing at one new revision/.test(l)), 10_000, 'the compaction line');
  // The watch works again: with checkInterval 60s, only the watch can bring this change.
  const next = await etcd.put(`${prefix}/apps/${APP}`, toA);
  await until(async () => (await revisionServed(sc)) === next, 10_000, 'a change after the re-list');
  t.is(await roleOf(sc), 'a');
});

test('a connection that silently stops carrying bytes is found by the periodic check, and a new one catches up', async (t) => {
  const etcd = await Etcd.start(t);
  const relay = await Relay.start(t, etcd.url);
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const prefix = '/f3';
  await etcd.put(`${prefix}/apps/${APP}`, toA);
  const { sc, log } = await start(t, bootstrap(a, b, relay.url, prefix, { checkInterval: '500ms' }));
  relay.stall();
  const changed = await etcd.put(`${prefix}/apps/${APP}`, toB);
  await until(async () => (await revisionServed(sc)) === changed, 15_000, 'the change the stalled watch did not carry');
  t.is(await roleOf(sc), 'b');
  t.true(log.some((l) => l.startsWith('etcd: unreachable')), log.join('\n'));
  await untilMetric(sc, 'switchyard_config_source_up', { source: 'etcd' }, 1);
});

test('etcd down at start: a bootstrap with listeners serves alone, and the documents apply once etcd answers', async (t) => {
  const etcd = await Etcd.start(t);
  const relay = await Relay.start(t, etcd.url);
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const prefix = '/f4';
  const changed = await etcd.put(`${prefix}/apps/${APP}`, toB);
  await relay.cut();
  const { sc, log } = await start(t, bootstrap(a, b, relay.url, prefix));
  const c = JSON.parse((await get(`${adminUrl(sc)}/config`)).body) as { source: string; revision?: number };
  t.is(c.source, 'file');
  t.is(c.revision, undefined);
  t.is(await roleOf(sc), 'a');
  t.is(await metric(sc, 'switchyard_config_source_up', { source: 'etcd' }), 0);
  t.true(log.some((l) => l.includes('serving the bootstrap files alone')), log.join('\n'));
  await relay.restore();
  await until(async () => (await revisionServed(sc)) === changed, 15_000, 'the documents once etcd answers');
  t.is(await roleOf(sc), 'b');
});

test('etcd down at start and no listeners in the bootstrap: the sidecar refuses to start', async (t) => {
  const etcd = await Etcd.start(t);
  const relay = await Relay.start(t, etcd.url);
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  await relay.cut();
  const { paths } = await tempFiles(t, { 'boot.yaml': bootstrap(a, b, relay.url, '/f5', {}, false) });
  const err = await t.throwsAsync(Sidecar.start({ files: [paths['boot.yaml']!] }));
  t.true(err instanceof SwitchyardError);
  t.is((err as SwitchyardError).code, 'SY_ERR_CONFIG_SOURCE_DOWN');
  t.regex(err!.message, /did not answer.*no listeners of its own: not started/);
});

import test from 'ava';
import { admin } from './support.js';
import { configOf, findMetric, listenerUrl, putConfig, role, startSidecar, until, vsetOf, weighted, type ConfigSpec } from '../helpers.js';
import { switchable, traffic } from './safety_support.js';

/*
 * autoRollback end to end: a real sidecar, real upstreams (one of which answers
 * 500s), traffic through the listener, and the verdict read through the admin
 * API and /metrics.
 */

const AUTO = { window: '1s', minRequests: 20, maxErrorRatio: 0.1 };

async function setup(t: Parameters<typeof switchable>[0], weights: Record<string, number> = { a: 100, b: 0, c: 0 }, auto: typeof AUTO = AUTO) {
  const ups = { a: await switchable(t, 'a'), b: await switchable(t, 'b'), c: await switchable(t, 'c') };
  ups.b.failing = true;
  const roles = { a: role(ups.a), b: role(ups.b), c: role(ups.c) };
  const base = configOf({ autoRollback: auto, ...vsetOf(roles, { filters: [weighted(weights)] }) });
  const withWeights = (w: Record<string, number>): ConfigSpec => ({ ...base, listeners: { web: { ...base.listeners.web, filters: [weighted(w)] } } });
  const sc = await startSidecar(t, base);
  return { ups, sc, withWeights };
}

test('a change that sends half the traffic to a role answering 500s is reverted within the window (source auto-rollback, reason and figures in GET /generations, the rollbacks counter)', async (t) => {
  // A window long enough for 20 requests of b on a loaded machine; the verdict comes as soon as they are in.
  const { sc, withWeights } = await setup(t, undefined, { ...AUTO, window: '4s' });
  const load = traffic(listenerUrl(sc, 'web'));
  t.teardown(() => load.stop());
  const bad = await putConfig(sc, withWeights({ a: 50, b: 50, c: 0 }));
  t.is(bad.status, 200);
  const badGen = JSON.parse(bad.body).generation as number;
  const started = Date.now();
  let record: any;
  await until(async () => {
    record = (await admin(sc, 'GET', '/generations')).json.history.find((h: any) => h.source === 'auto-rollback');
    return record !== undefined;
  }, 8_000, 'the auto-rollback generation');
  t.true(Date.now() - started < 4_000, `reverted after ${Date.now() - started} ms`);
  await load.stop();
  t.like(record, { outcome: 'applied', reason: 'error-ratio', detail: { rolledBack: badGen, role: 'b', maxErrorRatio: 0.1 } });
  t.true(record.detail.figures.requests >= 20);
  t.true(record.detail.figures.errorRatio > 0.1);
  t.is(record.detail.previous.requests, 0);
  const cfg = (await admin(sc, 'GET', '/config')).json;
  t.is(cfg.source, 'auto-rollback');
  t.deepEqual(cfg.config.listeners.web.filters[0].weights, { a: 100, b: 0, c: 0 });
  t.is(await findMetric(sc, 'switchyard_config_rollbacks_total', { reason: 'error-ratio' }), 1);
  // Under load, the healthy role failed no request, and no request failed in transit.
  t.deepEqual(load.errors, []);
  t.true(load.byRole.get('a')!.length > 0);
  t.true(load.byRole.get('a')!.every((s) => s === 200));
});

test('a healthy change of the same size stays after its window', async (t) => {
  const { sc, withWeights } = await setup(t);
  const load = traffic(listenerUrl(sc, 'web'));
  t.teardown(() => load.stop());
  const good = await putConfig(sc, withWeights({ a: 50, b: 0, c: 50 }));
  t.is(good.status, 200);
  const gen = JSON.parse(good.body).generation as number;
  await until(() => (load.byRole.get('c')?.length ?? 0) >= 40, 5_000, 'traffic to c');
  await new Promise((r) => setTimeout(r, 1_300));
  await load.stop();
  const g = (await admin(sc, 'GET', '/generations')).json;
  t.is(g.current, gen);
  t.false(g.history.some((h: any) => h.source === 'auto-rollback'));
  t.is(await findMetric(sc, 'switchyard_config_rollbacks_total', { reason: 'error-ratio' }), undefined);
});

test('a role no worse than in the previous generation is not a reason to revert, whatever its ratio', async (t) => {
  const { sc, withWeights } = await setup(t, { a: 50, b: 50, c: 0 });
  const load = traffic(listenerUrl(sc, 'web'));
  t.teardown(() => load.stop());
  // b fails every request already, in the generation that was there first.
  await until(() => (load.byRole.get('b')?.length ?? 0) >= 30, 5_000, 'traffic to b');
  const change = await putConfig(sc, withWeights({ a: 40, b: 50, c: 10 }));
  t.is(change.status, 200);
  const gen = JSON.parse(change.body).generation as number;
  const before = load.byRole.get('b')!.length;
  await new Promise((r) => setTimeout(r, 1_300));
  await load.stop();
  t.true(load.byRole.get('b')!.length - before >= 20, 'b was judged on enough requests');
  const g = (await admin(sc, 'GET', '/generations')).json;
  t.is(g.current, gen);
  t.false(g.history.some((h: any) => h.source === 'auto-rollback'));
});

test('autoRollback: bad values are rejected with their paths', async (t) => {
  const { sc, withWeights } = await setup(t);
  const bad = await putConfig(sc, { ...withWeights({ a: 1 }), autoRollback: { window: 'soon', minRequests: 0, maxErrorRatio: 2, extra: 1 } } as ConfigSpec);
  t.is(bad.status, 400);
  const paths = JSON.parse(bad.body).errors.map((e: any) => e.path).sort();
  t.deepEqual(paths, ['autoRollback.extra', 'autoRollback.maxErrorRatio', 'autoRollback.minRequests', 'autoRollback.window']);
});

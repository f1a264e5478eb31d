import test, { type ExecutionContext } from 'ava';
import { admin } from './support.js';
import { configOf, findMetric, listenerUrl, putConfig, role, startSidecar, until, vsetOf, type ConfigSpec } from '../helpers.js';
import { switchable, traffic } from './safety_support.js';

/*
 * Guarded rollouts end to end: a real sidecar ramps role b of listener web
 * through its steps while real traffic flows; b's upstream can be told to
 * answer 500s. Everything is read through the admin API and /metrics.
 */

interface RolloutSpec { steps?: number[]; interval?: string; minRequests?: number; maxErrorRatio?: number; maxLatencyP99?: string; onFailure?: string; startStep?: number }

function rolloutConfig(ups: { a: { address: string }; b: { address: string } }, spec: RolloutSpec = {}, more: Record<string, unknown> = {}): ConfigSpec {
  const rollout = { role: 'b', steps: [10, 50, 100], interval: '300ms', minRequests: 10, maxErrorRatio: 0.05, ...spec };
  return configOf({ ...vsetOf({ a: role(ups.a), b: role(ups.b) }, { filters: [{ type: 'weighted', weights: { a: 100, b: 0 }, rollout, ...more }] }) });
}

async function setup(t: ExecutionContext, spec: RolloutSpec = {}) {
  const ups = { a: await switchable(t, 'a'), b: await switchable(t, 'b') };
  const config = rolloutConfig(ups, spec);
  const sc = await startSidecar(t, config);
  return { ups, sc, config };
}

async function rollout(sc: Parameters<typeof admin>[0]): Promise<any> {
  return (await admin(sc, 'GET', '/rollouts')).json.rollouts.find((r: any) => r.listener === 'web');
}

async function untilRollout(sc: Parameters<typeof admin>[0], want: (r: any) => boolean, ms = 10_000, what = 'the rollout'): Promise<any> {
  let last: any;
  await until(async () => { last = await rollout(sc); return last !== undefined && want(last); }, ms, what)
    .catch((err: Error) => { throw new Error(`${err.message}; last: ${JSON.stringify(last)}`); });
  return last;
}

async function weightsInEffect(sc: Parameters<typeof admin>[0]): Promise<Record<string, number>> {
  return (await admin(sc, 'GET', '/config')).json.config.listeners.web.filters[0].weights;
}

test('a healthy canary goes through every step to 100 %, one generation per step (source rollout), and GET /config shows the weights in effect', async (t) => {
  const { sc } = await setup(t);
  const load = traffic(listenerUrl(sc, 'web'), 4);
  t.teardown(() => load.stop());
  const done = await untilRollout(sc, (r) => r.state === 'done', 8_000, 'done');
  await load.stop();
  t.like(done, { listener: 'web', role: 'b', state: 'done', step: 100, nextStepAt: null });
  t.true(done.judged.requests >= 10);
  t.deepEqual(await weightsInEffect(sc), { a: 0, b: 1 });
  const steps = (await admin(sc, 'GET', '/generations')).json.history.filter((h: any) => h.source === 'rollout');
  t.deepEqual(steps.map((h: any) => h.detail.step), [10, 50, 100]);
  t.true(steps.every((h: any) => h.reason === 'step' && h.outcome === 'applied'));
  t.is(await findMetric(sc, 'switchyard_rollout_step', { listener: 'web', role: 'b' }), 100);
  t.deepEqual(load.errors, []);
  t.true([...load.byRole.values()].flat().every((s) => s === 200));
});

test('a canary that fails at its second step is rolled back to 0 within one interval; the healthy role fails no request', async (t) => {
  const { sc, ups } = await setup(t, { interval: '1s' });
  const load = traffic(listenerUrl(sc, 'web'), 4);
  t.teardown(() => load.stop());
  await untilRollout(sc, (r) => r.step === 50, 10_000, 'the second step');
  ups.b.failing = true;
  const failedAt = Date.now();
  const back = await untilRollout(sc, (r) => r.state === 'rolled-back', 5_000, 'rolled back');
  const took = Date.now() - failedAt;
  await load.stop();
  t.true(took < 1_000, `rolled back ${took} ms after b began to fail`);
  t.like(back, { state: 'rolled-back', step: 0, role: 'b' });
  t.true(back.judged.errorRatio > 0.05);
  t.regex(back.reason, /step 50 %: error ratio/);
  t.deepEqual(await weightsInEffect(sc), { a: 1, b: 0 });
  t.is(await findMetric(sc, 'switchyard_config_rollbacks_total', { reason: 'rollout-error-ratio' }), 1);
  t.is(await findMetric(sc, 'switchyard_rollout_step', { listener: 'web', role: 'b' }), 0);
  const last = (await admin(sc, 'GET', '/generations')).json.history.at(-1);
  t.like(last, { source: 'rollout', reason: 'rollout-error-ratio', detail: { step: 0, state: 'rolled-back' } });
  t.deepEqual(load.errors, []);
  t.true(load.byRole.get('a')!.every((s) => s === 200));
  // It stays rolled back: no step comes after.
  await new Promise((r) => setTimeout(r, 1_100));
  t.is((await rollout(sc)).state, 'rolled-back');
});

test('onFailure pause holds the failed step instead', async (t) => {
  const { sc, ups } = await setup(t, { onFailure: 'pause' });
  ups.b.failing = true;
  const load = traffic(listenerUrl(sc, 'web'), 4);
  t.teardown(() => load.stop());
  const held = await untilRollout(sc, (r) => r.state === 'paused', 10_000, 'paused');
  await load.stop();
  t.like(held, { step: 10, state: 'paused' });
  t.deepEqual(await weightsInEffect(sc), { a: 9, b: 1 });
  t.is(await findMetric(sc, 'switchyard_config_rollbacks_total', {}), undefined);
});

test('a rollout with no traffic waits for data at its first step: no data is never a pass', async (t) => {
  const { sc } = await setup(t);
  const first = await untilRollout(sc, (r) => r.step === 10);
  t.is(first.state, 'running');
  const waiting = await untilRollout(sc, (r) => r.state === 'waiting-for-data', 3_000, 'waiting-for-data');
  await new Promise((r) => setTimeout(r, 700));
  t.like(await rollout(sc), { state: 'waiting-for-data', step: 10, requests: 0, nextStepAt: null });
  t.is(waiting.step, 10);
  // Data comes: the step is judged and passes.
  const load = traffic(listenerUrl(sc, 'web'), 4);
  t.teardown(() => load.stop());
  await untilRollout(sc, (r) => r.step === 50, 10_000, 'the second step');
  await load.stop();
  t.pass();
});

test('p99 over maxLatencyP99 fails a step', async (t) => {
  const ups = { a: await switchable(t, 'a'), b: await switchable(t, 'b') };
  const { startUpstream } = await import('../helpers.js');
  const slow = await startUpstream(t, 'b', (req, res) => { req.resume(); setTimeout(() => { res.writeHead(200, { 'x-role': 'b' }); res.end('b'); }, 60); });
  const sc = await startSidecar(t, rolloutConfig({ a: ups.a, b: slow }, { maxLatencyP99: '30ms', steps: [50, 100] }));
  const load = traffic(listenerUrl(sc, 'web'), 8);
  t.teardown(() => load.stop());
  const back = await untilRollout(sc, (r) => r.state === 'rolled-back', 5_000, 'rolled back');
  await load.stop();
  t.true(back.judged.latencyP99Ms > 30);
  t.regex(back.reason, /p99/);
  t.is(await findMetric(sc, 'switchyard_config_rollbacks_total', { reason: 'rollout-latency' }), 1);
});

test('pause, resume, promote and abort through POST /rollouts/<listener>/<action>', async (t) => {
  const { sc } = await setup(t, { steps: [10, 20, 30, 40, 50], interval: '400ms', minRequests: 5 });
  const load = traffic(listenerUrl(sc, 'web'), 4);
  t.teardown(() => load.stop());
  await untilRollout(sc, (r) => r.step === 20);
  const paused = await admin(sc, 'POST', '/rollouts/web/pause');
  t.is(paused.status, 200);
  t.is(paused.json.rollout.state, 'paused');
  const at = paused.json.rollout.step;
  await new Promise((r) => setTimeout(r, 900));
  t.like(await rollout(sc), { state: 'paused', step: at });
  t.is((await admin(sc, 'POST', '/rollouts/web/pause')).status, 409);

  const resumed = await admin(sc, 'POST', '/rollouts/web/resume');
  t.is(resumed.status, 200);
  t.like(resumed.json.rollout, { state: 'running', step: at });
  await untilRollout(sc, (r) => r.step > at, 3_000, 'the next step after resume');
  t.is((await admin(sc, 'POST', '/rollouts/web/resume')).json.code, 'SY_ERR_API_ROLLOUT_STATE');

  const promoted = await admin(sc, 'POST', '/rollouts/web/promote');
  t.is(promoted.status, 200);
  t.like(promoted.json.rollout, { state: 'done', step: 100 });
  t.deepEqual(await weightsInEffect(sc), { a: 0, b: 1 });

  const aborted = await admin(sc, 'POST', '/rollouts/web/abort');
  t.is(aborted.status, 200);
  t.like(aborted.json.rollout, { state: 'rolled-back', step: 0, reason: 'aborted by the operator' });
  t.deepEqual(await weightsInEffect(sc), { a: 1, b: 0 });
  t.is(await findMetric(sc, 'switchyard_config_rollbacks_total', { reason: 'rollout-aborted' }), 1);
  await load.stop();

  t.is((await admin(sc, 'POST', '/rollouts/nope/pause')).status, 404);
  t.is((await admin(sc, 'POST', '/rollouts/web/explode')).status, 400);
  t.is((await admin(sc, 'GET', '/rollouts/web/pause')).status, 405);
});

test('a rollout survives a reload that does not touch it, and starts anew when its key changes', async (t) => {
  const { sc, ups, config } = await setup(t, { steps: [10, 50, 100] });
  const load = traffic(listenerUrl(sc, 'web'), 4);
  t.teardown(() => load.stop());
  await untilRollout(sc, (r) => r.step === 50);
  t.is((await admin(sc, 'POST', '/rollouts/web/pause')).status, 200);
  // The same file pushed again, with another change (drainTimeout): the split stays at 50 %.
  const again = await putConfig(sc, { ...config, drainTimeout: '5s' });
  t.is(again.status, 200);
  t.like(await rollout(sc), { state: 'paused', step: 50 });
  t.deepEqual(await weightsInEffect(sc), { a: 1, b: 1 });
  // A changed rollout key starts it anew (at startStep here).
  const changed = rolloutConfig(ups, { steps: [10, 25, 50, 100], startStep: 25 });
  t.is((await putConfig(sc, { ...changed, listeners: { web: { ...changed.listeners!.web!, address: config.listeners!.web!.address } } })).status, 200);
  await untilRollout(sc, (r) => r.step >= 25 && r.state !== 'paused', 3_000, 'the new rollout');
  const fresh = await rollout(sc);
  t.deepEqual(fresh.steps, [10, 25, 50, 100]);
  t.true(fresh.stepIndex >= 1);
  // Removing the rollout forgets it.
  t.is((await putConfig(sc, { ...config, listeners: { web: { ...config.listeners!.web!, filters: [{ type: 'weighted', weights: { a: 1, b: 0 } }] } } })).status, 200);
  await load.stop();
  t.deepEqual((await admin(sc, 'GET', '/rollouts')).json.rollouts, []);
  t.is(await findMetric(sc, 'switchyard_rollout_step', { listener: 'web' }), undefined);
});

test('rollout: bad values are rejected with their paths', async (t) => {
  const ups = { a: await switchable(t, 'a'), b: await switchable(t, 'b') };
  const sc = await startSidecar(t, configOf(vsetOf({ a: role(ups.a), b: role(ups.b) })));
  const bad = rolloutConfig(ups, { steps: [50, 10, 200], interval: 'x', maxErrorRatio: -1, onFailure: 'panic', startStep: 7 } as RolloutSpec);
  (bad.listeners!.web!.filters![0]!.rollout as Record<string, unknown>).role = 'zz';
  (bad.listeners!.web!.filters![0]!.rollout as Record<string, unknown>).typo = 1;
  const answer = await putConfig(sc, bad);
  t.is(answer.status, 400);
  const paths = JSON.parse(answer.body).errors.map((e: any) => e.path.replace(/^listeners\.web\.filters\[0\]\.rollout\./, '')).sort();
  t.deepEqual(paths, ['interval', 'maxErrorRatio', 'onFailure', 'role', 'startStep', 'steps[1]', 'steps[2]', 'typo']);
});

test('rollout: a second rollout on one listener is an error', async (t) => {
  const ups = { a: await switchable(t, 'a'), b: await switchable(t, 'b') };
  const sc = await startSidecar(t, configOf(vsetOf({ a: role(ups.a), b: role(ups.b) })));
  const twice = rolloutConfig(ups);
  const f = twice.listeners!.web!.filters!;
  f.push({ ...f[0]! });
  const answer = await putConfig(sc, twice);
  t.is(answer.status, 400);
  t.deepEqual(JSON.parse(answer.body).errors.map((e: any) => e.path), ['listeners.web.filters[1].rollout']);
});

import test from 'ava';
import { join } from 'node:path';
import { Disposer } from '../../src/reload/disposer.js';
import { Generation } from '../../src/reload/generation.js';
import { builtinRegistry } from '../../src/builtins.js';
import type { Config } from '../../src/config/types.js';
import type { RawConfig } from '../../src/config/load.js';
import { ROOT, startUpstream, uniqueHost, until, type Upstream } from '../helpers.js';
import { admin, startFromObject } from './support.js';
import { twoRoles, type ListenerSpec } from '../helpers.js';

/*
 * A generation owns what its build acquired: one disposer stack, released once
 * (Generation.close after its work drained, or destroy now), last acquired first;
 * a failed build releases it at once. Filters' close() rides on the same stack.
 */

// ---------------------------------------------------------------- the disposer stack

test('a disposer releases last acquired first, once, and a failing release stops none of the others', async (t) => {
  const errors: string[] = [];
  const order: string[] = [];
  const d = new Disposer((err) => errors.push(err.message));
  d.push(() => order.push('first'));
  d.push(async () => { await new Promise((r) => setTimeout(r, 5)); order.push('second (async)'); });
  d.push(() => { throw new Error('third failed'); });
  d.push(() => Promise.reject(new Error('fourth failed')));
  d.push(() => { throw new AggregateError([new Error('fifth a'), new Error('fifth b')]); });
  d.push(() => order.push('last'));
  const a = d.dispose();
  const b = d.dispose();
  t.is(a, b, 'one dispose: later calls get the same promise');
  await a;
  t.deepEqual(order, ['last', 'second (async)', 'first']);
  t.deepEqual(errors, ['fifth a', 'fifth b', 'fourth failed', 'third failed']);
  await d.dispose();
  t.deepEqual(order, ['last', 'second (async)', 'first'], 'nothing runs twice');
  t.true(d.disposed);
});

test('commit() drops the undo entries and keeps the releases; a release pushed on a disposed stack runs at once', async (t) => {
  const order: string[] = [];
  const failed = new Disposer(() => {});
  failed.push(() => order.push('release 1'));
  failed.undoOnFailure(() => order.push('undo'));
  failed.push(() => order.push('release 2'));
  await failed.dispose();
  t.deepEqual(order, ['release 2', 'undo', 'release 1'], 'a failed build undoes, in its place on the stack');

  order.length = 0;
  const built = new Disposer(() => {});
  built.push(() => order.push('release 1'));
  built.undoOnFailure(() => order.push('undo'));
  built.push(() => order.push('release 2'));
  built.commit();
  await built.dispose();
  t.deepEqual(order, ['release 2', 'release 1'], 'a committed build only releases');

  order.length = 0;
  built.push(() => order.push('late'));
  t.deepEqual(order, ['late']);
});

// ---------------------------------------------------------------- close() and destroy()

/** A generation with no listeners, whose stack records what it releases. */
function bareGeneration(drainTimeoutMs: number) {
  const released: string[] = [];
  const log: string[] = [];
  const resources = new Disposer((err) => log.push(err.message));
  const listening = new Disposer((err) => log.push(err.message));
  resources.push(() => released.push('access log'));
  resources.push(() => listening.dispose());
  listening.push(() => released.push('socket lease'));
  resources.push(() => released.push('endpoints'));
  const raw = { value: {}, baseDir: ROOT, issues: [] } as unknown as RawConfig;
  const gen = new Generation({
    number: 7, source: 'api', config: { drainTimeoutMs } as Config, raw, previous: null, registry: builtinRegistry(),
    accessLog: null, tracing: null, plans: new Map(), components: new Map(), sockets: new Map(), resources, listening, log: (l) => log.push(l),
  });
  return { gen, released, log };
}

/** A unit of work that lets go of its generation some time after it is destroyed (as a request's close handler does). */
function unit(gen: Generation, letGoAfterMs = 0) {
  const work = { destroyed: 0, linkPrev: null, linkNext: null, destroy() { this.destroyed++; setTimeout(() => gen.release(work), letGoAfterMs); } };
  gen.hold(work);
  return work;
}

test('close() stops accepting at once, waits for the work, then releases everything once; every call gets the same promise', async (t) => {
  const { gen, released } = bareGeneration(5_000);
  const work = unit(gen);
  const closing = gen.close();
  t.is(gen.close(), closing);
  await new Promise((r) => setTimeout(r, 20));
  t.deepEqual(released, ['socket lease'], 'its socket leases go first; the rest waits for the work');
  t.false(gen.closed);
  gen.release(work);
  t.is(await closing, 'drained');
  t.true(gen.closed);
  t.deepEqual(released, ['socket lease', 'endpoints', 'access log']);
  t.is(work.destroyed, 0);
  await gen.destroy(new Error('late'));
  t.deepEqual(released, ['socket lease', 'endpoints', 'access log'], 'nothing is released twice');
});

test('at drainTimeout, close() cuts the work still running and waits for it to let go before it releases', async (t) => {
  const { gen, released } = bareGeneration(50);
  const work = unit(gen, 30);
  const t0 = performance.now();
  t.is(await gen.close(), 'timeout');
  t.true(performance.now() - t0 >= 75, 'released only after the unit let go');
  t.is(work.destroyed, 1);
  t.is(gen.inFlight, 0);
  t.deepEqual(released, ['socket lease', 'endpoints', 'access log']);
});

test('destroy() ends the work now, also under a close() that drains; both settle once it is released', async (t) => {
  const { gen, released, log } = bareGeneration(60_000);
  const work = unit(gen);
  const closing = gen.close();
  await new Promise((r) => setTimeout(r, 10));
  const destroying = gen.destroy(new Error('operator asked'));
  t.is(gen.destroy(), destroying);
  await destroying;
  t.is(await closing, 'destroyed');
  t.is(work.destroyed, 1);
  t.true(gen.closed);
  t.deepEqual(released, ['socket lease', 'endpoints', 'access log']);
  t.deepEqual(log, ['generation 7 destroyed: operator asked']);
});

test('a unit that never lets go holds the release up for the destroy grace only', async (t) => {
  const { gen, released } = bareGeneration(60_000);
  gen.hold({ linkPrev: null, linkNext: null, destroy() { /* never lets go */ } });
  // The grace timer is unref'd (it must not keep a stopping process alive): this one keeps the test's alive.
  const alive = setTimeout(() => {}, 10_000);
  t.teardown(() => clearTimeout(alive));
  const t0 = performance.now();
  await gen.destroy();
  const waited = performance.now() - t0;
  t.true(waited >= 900 && waited < 5_000, `${waited} ms`);
  t.is(gen.inFlight, 0);
  t.deepEqual(released, ['socket lease', 'endpoints', 'access log']);
});

// ---------------------------------------------------------------- filters' close() through real builds

const CONTROL_PLUGIN = join(ROOT, 'test/fixtures/control-plugin.mjs');
interface Closed { tag: string; generation: number; listener: string }
const closedFilters = (): Closed[] => ((globalThis as { __controlPluginClosed?: Closed[] }).__controlPluginClosed ??= []);
let tags = 0;
const newTag = (what: string): string => `${what}-${process.pid}-${++tags}`;
const closesOf = (tag: string): Closed[] => closedFilters().filter((c) => c.tag === tag);

function closingConfig(a: Upstream, b: Upstream, listeners: Record<string, unknown[]>) {
  return {
    plugins: [CONTROL_PLUGIN],
    drainTimeout: '1s',
    ...twoRoles(a, b),
    listeners: Object.fromEntries(Object.entries(listeners).map(([name, filters]) => [name, httpListener(filters, 'svc.http', `${uniqueHost()}:0`)])),
  };
}

test("a filter's close runs once, when its generation has closed, not while a newer one serves", async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const tag = newTag('reload');
  const first = closingConfig(a, b, { web: [{ type: 'closing', tag }] });
  const { sc } = await startFromObject(t, first);
  t.deepEqual(closesOf(tag), []);

  // The same filter config again is a new generation: its own filter instance.
  t.is((await admin(sc, 'PUT', '/config', first)).status, 200);
  await until(() => closesOf(tag).length === 1, 5_000, "generation 1's filter to close");
  t.deepEqual(closesOf(tag), [{ tag, generation: 1, listener: 'web' }]);
  t.is(sc.runtime.current!.number, 2);

  await sc.stop();
  t.deepEqual(closesOf(tag).map((c) => c.generation), [1, 2], 'each generation closed its own filter, once');
});

test('a build that fails after creating filters closes them at once; the running generation keeps its own', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const tag = newTag('failed');
  const { sc, log } = await startFromObject(t, closingConfig(a, b, { web: [{ type: 'closing', tag }] }));
  const next = closingConfig(a, b, {
    web: [{ type: 'closing', tag }],
    more: [{ type: 'closing', tag, failClose: true }, { type: 'closing', tag: 'throw-create' }],
  });
  const res = await admin(sc, 'PUT', '/config', next);
  t.is(res.status, 409, res.text);
  t.is(res.json.code, 'SY_ERR_FILTER_CREATE');
  t.is(res.json.errors[0].message, 'listener more: filters[1] (closing): create: create failed on purpose');
  t.deepEqual(closesOf(tag).map((c) => [c.generation, c.listener]).sort(), [[2, 'more'], [2, 'web']],
    'both filters the failed build created were closed, the one whose close fails too');
  t.true(log.some((l) => l === 'listener more: filters[0] (closing): close: close of ' + tag + ' failed on purpose'), log.join('\n'));
  t.is(sc.runtime.current!.number, 1);
  t.false(closesOf(tag).some((c) => c.generation === 1), "generation 1's filter is still open");
});

/** An http listener on `address` (a fresh loopback host, port 0) that targets `target`. */
function httpListener(filters: readonly unknown[], target = 'svc.http', address = `${uniqueHost()}:0`): ListenerSpec {
  return { address, protocol: 'http', target, filters: filters as ListenerSpec['filters'] };
}

import test, { type ExecutionContext } from 'ava';
import { Agent as HttpAgent } from 'node:http';
import { createServer as createTcpServer } from 'node:net';
import { freePort, metric, startUpstream, twoRoles, uniqueHost, until, weighted, within, type ConfigSpec } from '../helpers.js';
import {
  PLUGIN, admin, eventsNamed, eventsOf, heldUpstream, httpGet, newScope, openGate, refused, startFromObject, startTcpEcho, tcpClient,
} from './support.js';

/*
 * Hot reload, end to end (DESIGN.md "Data flow" 3–5): real sidecars in this
 * process, real upstreams on loopback, changes pushed through the runtime or the
 * admin API. Component lifecycles are observed through the reload-lifecycle
 * plugin (test/fixtures/reload-lifecycle-plugin.mjs), which records every call.
 */

/** Sidecar, host and a config builder for tests whose listener `web` uses component `c`. */
function componentConfig(a: { address: string }, b: { address: string }, host: string, scope: string,
  component: { type: 'reload-counter' | 'reload-plain'; metadata?: Record<string, string> } | null, w: [number, number] = [1, 0]): ConfigSpec {
  return {
    plugins: [PLUGIN],
    drainTimeout: '5s',
    ...(component ? { components: { c: { type: component.type, metadata: { scope, ...component.metadata } } } } : {}),
    ...twoRoles(a, b, {
      address: `${host}:0`, protocol: 'http',
      filters: [...(component ? [{ type: 'reload-use', component: 'c' }] : []), weighted({ a: w[0], b: w[1] })],
    }),
  };
}

type Component = Parameters<typeof componentConfig>[4];

/**
 * Upstreams a (which holds requests with x-hold: 1, see heldUpstream) and b, a fresh
 * scope, and a sidecar whose listener web uses `first` as component c; `configWith(c, w)`
 * is the config for the same listener with another component (or none) and weights.
 */
async function withComponent(t: ExecutionContext, name: string, first: Component, opts: { readyTimeoutMs?: number } = {}) {
  const a = await heldUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const scope = newScope(name);
  const host = uniqueHost();
  const configWith = (component: Component, w?: [number, number]): ConfigSpec => componentConfig(a, b, host, scope, component, w);
  const { sc } = await startFromObject(t, configWith(first), { readyTimeoutMs: opts.readyTimeoutMs });
  return { a, sc, scope, configWith };
}

function url(sc: { addresses(): Map<string, { host: string; port: number }> }, name = 'web'): string {
  const a = sc.addresses().get(name)!;
  return `http://${a.host}:${a.port}`;
}

/** "id:label:hits" from the reload-use filter's header. */
function componentOf(h: { headers: Record<string, unknown> }): { id: number; label: string; hits: number } {
  const [id, label, hits] = String(h.headers['x-reload-component']).split(':');
  return { id: Number(id), label: label!, hits: Number(hits) };
}

test('a slow request that spans a reload finishes on its old generation; the next request on its connection uses the new one', async (t) => {
  const a = await heldUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const host = uniqueHost();
  const { sc } = await startFromObject(t, componentConfig(a, b, host, '', null, [1, 0]));
  const agent = new HttpAgent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());

  const slow = httpGet(`${url(sc)}/slow`, { agent, headers: { 'x-hold': '1' } });
  slow.catch(() => {});
  await until(() => a.held.length === 1, 10_000, 'the slow request to reach role a');

  const r = await admin(sc, 'PUT', '/config', componentConfig(a, b, host, '', null, [0, 1]));
  t.is(r.status, 200, r.text);
  t.is(sc.runtime.current!.number, 2);
  t.deepEqual([...sc.runtime.draining].map((g) => g.number), [1], 'generation 1 drains while the slow request runs');
  // A new request on another connection already sees generation 2.
  t.is((await httpGet(`${url(sc)}/fresh`, { agent: false })).headers['x-role'], 'b');

  a.releaseAll();
  const first = await within(slow, 10_000, 'the slow request');
  t.is(first.status, 200);
  t.is(first.headers['x-role'], 'a', 'the slow request finished on generation 1 (role a)');
  const second = await httpGet(`${url(sc)}/next`, { agent });
  t.true(second.reusedSocket, 'the second request went over the same keep-alive connection');
  t.is(second.status, 200);
  t.is(second.headers['x-role'], 'b', 'the next request on that connection used generation 2 (role b)');
  await until(() => sc.runtime.draining.size === 0, 10_000, 'generation 1 to drain');
});

test('a TCP connection opened before a reload stays on its generation, and is closed at drainTimeout; its components close after it', async (t) => {
  const one = await startTcpEcho(t, 'one');
  const two = await startTcpEcho(t, 'two');
  const scope = newScope('tcp');
  const host = uniqueHost();
  const config = (endpoint: string, bump: string): ConfigSpec => ({
    plugins: [PLUGIN],
    // Long enough for the steps below even on a busy machine; the test waits it out once.
    drainTimeout: '2500ms',
    roles: { db: { channels: { pg: { endpoints: [endpoint] } } } },
    components: { c: { type: 'reload-plain', metadata: { scope, bump } } },
    listeners: { db: { address: `${host}:0`, protocol: 'tcp', target: 'db', filters: [{ type: 'reload-use', component: 'c' }] } },
  });
  const { sc } = await startFromObject(t, config(one.address, '1'));
  const addr = sc.addresses().get('db')!;

  const c1 = await tcpClient(addr.host, addr.port);
  c1.send('x');
  await until(() => c1.received() === 'one:x', 10_000, 'the first echo');

  const res = await admin(sc, 'PUT', '/config', config(two.address, '2'));
  t.is(res.status, 200, res.text);
  t.is(res.json.components.c, 'reinitialized');
  const swappedAt = performance.now();
  const [oldId] = eventsNamed(scope, 'init').map((e) => e.id);

  // The old connection still talks to the old upstream; a new one goes to the new upstream.
  c1.send('y');
  await until(() => c1.received() === 'one:xone:y', 10_000, 'the old connection to keep its upstream');
  const c2 = await tcpClient(addr.host, addr.port);
  t.teardown(() => c2.socket.destroy());
  c2.send('z');
  await until(() => c2.received() === 'two:z', 10_000, 'a new connection on the new generation');

  // drainTimeout (2.5 s) ends the old connection, then the old component closes, once, unused.
  await within(c1.closed, 10_000, 'the old connection to be closed at drainTimeout');
  const elapsed = performance.now() - swappedAt;
  t.true(elapsed >= 2_400, `closed after ${elapsed.toFixed(0)} ms, not before drainTimeout`);
  await until(() => eventsNamed(scope, 'close', oldId).length === 1, 10_000, 'the old component to close');
  const close = eventsNamed(scope, 'close', oldId)[0]!;
  t.true(close.at - swappedAt >= 2_400, 'the old component is not closed while its connection is open');
  t.is(close.inUse, 0, 'closed only once no connection used it');
  t.is(c2.socket.destroyed, false, 'the new connection stays open');
  c2.send('w');
  await until(() => c2.received() === 'two:ztwo:w', 10_000, 'the new connection to keep working');
  t.is(eventsNamed(scope, 'close', oldId).length, 1);
});

test('an added listener serves as soon as the reload answers; a removed one refuses new connections and drains the open ones', async (t) => {
  const a = await heldUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const hosts = { web: uniqueHost(), old: uniqueHost(), fresh: uniqueHost() };
  const { roles, vsets } = twoRoles(a, b);
  const config = (names: (keyof typeof hosts)[]): ConfigSpec => ({
    drainTimeout: '5s',
    roles,
    vsets,
    listeners: Object.fromEntries(names.map((n) => [n, {
      address: `${hosts[n]}:0`, protocol: 'http', target: 'svc.http', filters: [weighted({ a: 1, b: 0 })],
      // Long enough that only the drain can close an idle connection within the test.
      timeouts: { keepAlive: '30s' },
    }])),
  });
  const { sc } = await startFromObject(t, config(['web', 'old']));
  const oldAddr = sc.addresses().get('old')!;
  // A keep-alive connection with a request in flight, and an idle keep-alive connection.
  const busy = await tcpClient(oldAddr.host, oldAddr.port);
  t.teardown(() => busy.socket.destroy());
  busy.send('GET /held HTTP/1.1\r\nHost: old\r\nx-hold: 1\r\n\r\n');
  await until(() => a.held.length === 1, 10_000, 'the request on the old listener to arrive');
  const idle = await tcpClient(oldAddr.host, oldAddr.port);
  t.teardown(() => idle.socket.destroy());
  idle.send('GET /quick HTTP/1.1\r\nHost: old\r\n\r\n');
  await until(() => idle.received().includes('"role":"a"'), 10_000, 'the quick answer');

  const res = await admin(sc, 'PUT', '/config', config(['web', 'fresh']));
  t.is(res.status, 200, res.text);
  t.false(sc.addresses().has('old'));
  t.is((await httpGet(`${url(sc, 'fresh')}/`, { agent: false })).status, 200, 'the added listener serves right away');
  t.true(await refused(oldAddr.host, oldAddr.port), 'the removed listener accepts no new connection');
  t.is((await httpGet(`${url(sc, 'web')}/`, { agent: false })).status, 200);
  await within(idle.closed, 3_000, 'the idle connection of the removed listener to close');

  a.releaseAll();
  await until(() => busy.received().includes('"role":"a"'), 10_000, 'the held answer');
  t.regex(busy.received(), /^HTTP\/1.1 200 /, 'the request in flight on the removed listener completed');
  await within(busy.closed, 3_000, 'its connection to close once drained');
  await until(() => sc.runtime.draining.size === 0, 10_000, 'the old generation to drain');
});

test('a protocol change (tcp ↔ http) on the same address refuses no connection', async (t) => {
  const up = await startUpstream(t, 'a');
  const host = uniqueHost();
  const config = (protocol: 'http' | 'tcp'): ConfigSpec => ({
    roles: { a: { channels: { web: { endpoints: [up.address] } } } },
    listeners: { flip: { address: `${host}:0`, protocol, target: 'a' } },
  });
  const { sc } = await startFromObject(t, config('tcp'));
  const addr = sc.addresses().get('flip')!;
  let stop = false;
  const seen = { tcp: 0, http: 0 };
  const failures: string[] = [];
  const load = Array.from({ length: 4 }, async () => {
    while (!stop) {
      try {
        const r = await httpGet(`http://${addr.host}:${addr.port}/`, { agent: false, timeoutMs: 5_000 });
        if (r.status !== 200) failures.push(`status ${r.status}`);
        // Only the HTTP listener adds x-forwarded-for; the TCP pipe passes the bytes as they are.
        else if (JSON.parse(r.body).headers['x-forwarded-for']) seen.http++;
        else seen.tcp++;
      } catch (err) {
        failures.push((err as Error).message);
      }
    }
  });
  for (let i = 0; i < 10; i++) {
    const before = seen.tcp + seen.http;
    await until(() => seen.tcp + seen.http >= before + 3 || failures.length > 0, 10_000, 'requests between changes');
    const r = await admin(sc, 'PUT', '/config', config(i % 2 === 0 ? 'http' : 'tcp'));
    t.is(r.status, 200, r.text);
    t.deepEqual(sc.addresses().get('flip'), addr, 'the listener keeps its address (and socket)');
  }
  await until(() => seen.tcp + seen.http > 0 && seen.tcp > 0 && seen.http > 0, 10_000, 'both protocols to serve');
  stop = true;
  await Promise.all(load);
  t.deepEqual(failures, [], `${seen.tcp} via tcp, ${seen.http} via http`);
});

test('an unchanged component is reused with its state', async (t) => {
  const { sc, scope, configWith } = await withComponent(t, 'keep', { type: 'reload-plain', metadata: { label: 'one' } });
  for (let i = 1; i <= 3; i++) t.is(componentOf(await httpGet(url(sc), { agent: false })).hits, i);
  const id = componentOf(await httpGet(url(sc), { agent: false })).id;

  const res = await admin(sc, 'PUT', '/config', configWith({ type: 'reload-plain', metadata: { label: 'one' } }, [0, 1]));
  t.is(res.status, 200, res.text);
  t.deepEqual(res.json.components, { c: 'unchanged' });
  const r = await httpGet(url(sc), { agent: false });
  t.is(r.headers['x-role'], 'b', 'the new generation serves');
  t.deepEqual(componentOf(r), { id, label: 'one', hits: 5 }, 'same instance, state kept');
  await until(() => sc.runtime.draining.size === 0, 10_000, 'the old generation to drain');
  t.is(eventsNamed(scope, 'init').length, 1, 'initialised once');
  t.is(eventsNamed(scope, 'close').length, 0, 'never closed while a generation uses it');
});

test('a changed component with applyConfig is updated in place', async (t) => {
  const { sc, scope, configWith } = await withComponent(t, 'inplace', { type: 'reload-counter', metadata: { label: 'one' } });
  const before = componentOf(await httpGet(url(sc), { agent: false }));

  const res = await admin(sc, 'PUT', '/config', configWith({ type: 'reload-counter', metadata: { label: 'two' } }));
  t.is(res.status, 200, res.text);
  t.deepEqual(res.json.components, { c: 'updated' });
  const after = componentOf(await httpGet(url(sc), { agent: false }));
  t.deepEqual(after, { id: before.id, label: 'two', hits: before.hits + 1 }, 'same instance, new config, state kept');
  t.deepEqual(eventsNamed(scope, 'applyConfig').map((e) => e.metadata?.label), ['two']);
  t.is(eventsNamed(scope, 'init').length, 1);
  t.is(await metric(sc, 'switchyard_component_updates_total', { component: 'c', mode: 'updated', result: 'success' }), 1);
  await until(() => sc.runtime.draining.size === 0, 10_000, 'the old generation to drain');
  t.is(eventsNamed(scope, 'close').length, 0, 'an instance updated in place is not closed');
});

test('a component that answers needReload is re-created, and the new generation uses the new instance', async (t) => {
  const { sc, scope, configWith } = await withComponent(t, 'needreload', { type: 'reload-counter', metadata: { label: 'one' } });
  const oldId = componentOf(await httpGet(url(sc), { agent: false })).id;

  const res = await admin(sc, 'PUT', '/config', configWith({ type: 'reload-counter', metadata: { label: 'two', needReload: 'true' } }));
  t.is(res.status, 200, res.text);
  t.deepEqual(res.json.components, { c: 'reinitialized' });
  const inits = eventsNamed(scope, 'init');
  t.is(inits.length, 2, 'a second instance was initialised');
  const newId = inits[1]!.id;
  const r = await httpGet(url(sc), { agent: false });
  t.is(r.status, 200);
  t.deepEqual(componentOf(r), { id: newId, label: 'two', hits: 1 }, 'the new generation uses the new instance');
  await until(() => eventsNamed(scope, 'close', oldId).length === 1, 10_000, 'the old instance to close');
  for (let i = 0; i < 3; i++) t.is((await httpGet(url(sc), { agent: false })).status, 200);
  t.is(eventsNamed(scope, 'usedAfterClose').length, 0, 'no request used a closed instance');
  t.is(eventsNamed(scope, 'close', newId).length, 0);
});

test('a re-created component takes over only once it is ready (make before break)', async (t) => {
  const { sc, scope, configWith } = await withComponent(t, 'mbb', { type: 'reload-plain', metadata: { label: 'one' } });
  const oldId = componentOf(await httpGet(url(sc), { agent: false })).id;

  const pending = admin(sc, 'PUT', '/config', configWith({ type: 'reload-plain', metadata: { label: 'two', ready: 'gate' } }));
  await until(() => eventsNamed(scope, 'ready').some((e) => e.id !== oldId), 10_000, 'the new instance to be asked for readiness');
  // Not ready yet: the old instance and generation 1 keep serving.
  for (let i = 0; i < 3; i++) {
    const r = await httpGet(url(sc), { agent: false });
    t.is(r.status, 200);
    t.is(componentOf(r).id, oldId);
  }
  t.is(sc.runtime.current!.number, 1);
  const openedAt = Date.now();
  t.true(openGate(scope));
  const res = await within(pending, 10_000, 'the reload');
  t.is(res.status, 200, res.text);
  t.deepEqual(res.json.components, { c: 'reinitialized' });
  t.true(Date.parse((await admin(sc, 'GET', '/config')).json.appliedAt) >= openedAt - 1, 'appliedAt is when it took over');
  const r = await httpGet(url(sc), { agent: false });
  t.not(componentOf(r).id, oldId);
  t.is(componentOf(r).label, 'two');
  await until(() => eventsNamed(scope, 'close', oldId).length === 1, 10_000, 'the old instance to close');
  t.deepEqual(eventsOf(scope).filter((e) => e.id !== oldId).map((e) => e.event), ['create', 'init', 'ready'], 'the new instance: init, ready, and not closed');
});

test('a component\'s close is called exactly once, after the drain, never while a request uses it', async (t) => {
  const { a, sc, scope, configWith } = await withComponent(t, 'close', { type: 'reload-plain', metadata: { label: 'one' } });
  const held = httpGet(url(sc), { agent: false, headers: { 'x-hold': '1' } });
  held.catch(() => {});
  await until(() => a.held.length === 1, 10_000, 'the held request to arrive');
  const [id] = eventsNamed(scope, 'init').map((e) => e.id);

  // The next generation no longer has the component.
  const res = await admin(sc, 'PUT', '/config', configWith(null));
  t.is(res.status, 200, res.text);
  t.deepEqual(res.json.components, { c: 'removed' });
  t.is((await httpGet(url(sc), { agent: false })).status, 200);
  const gens = await admin(sc, 'GET', '/generations');
  t.deepEqual(gens.json.draining, [1]);
  t.is(eventsNamed(scope, 'close').length, 0, 'not closed while a request of its generation runs');

  a.releaseAll();
  const r = await within(held, 10_000, 'the held request');
  const doneAt = performance.now();
  t.is(r.status, 200);
  t.is(componentOf(r).id, id);
  await until(() => eventsNamed(scope, 'close').length > 0, 10_000, 'the component to close');
  const close = eventsNamed(scope, 'close')[0]!;
  t.is(close.inUse, 0);
  t.true(close.at <= doneAt + 1_000);
  // More reloads and the shutdown do not close it again.
  for (const w of [[1, 1], [0, 1], [1, 0]] as [number, number][]) {
    t.is((await admin(sc, 'PUT', '/config', configWith(null, w))).status, 200);
  }
  await sc.stop();
  t.is(eventsNamed(scope, 'close').length, 1, 'closed exactly once');
});

test('a failing readiness check rejects the change (409) and leaves the old instance serving', async (t) => {
  const { sc, scope, configWith } = await withComponent(t, 'notready', { type: 'reload-plain', metadata: { label: 'one' } });
  const oldId = componentOf(await httpGet(url(sc), { agent: false })).id;

  const res = await admin(sc, 'PUT', '/config', configWith({ type: 'reload-plain', metadata: { label: 'two', ready: 'false' } }, [0, 1]));
  t.is(res.status, 409, res.text);
  t.regex(res.json.errors[0].message, /component c: ready/);
  t.is(sc.runtime.current!.number, 1, 'generation 1 keeps serving');
  const r = await httpGet(url(sc), { agent: false });
  t.is(r.headers['x-role'], 'a', 'with its own weights');
  t.deepEqual(componentOf(r), { id: oldId, label: 'one', hits: 2 }, 'and its own component instance');
  const rejected = eventsOf(scope).filter((e) => e.id !== oldId).map((e) => e.event);
  t.deepEqual(rejected, ['create', 'init', 'ready', 'close'], 'the rejected instance was closed');
  t.is(eventsNamed(scope, 'close', oldId).length, 0);
  t.is(await metric(sc, 'switchyard_config_reloads_total', { source: 'api', result: 'failed' }), 1);
  t.is(await metric(sc, 'switchyard_component_updates_total', { component: 'c', mode: 'reinitialized', result: 'failed' }), 1);
  const gens = await admin(sc, 'GET', '/generations');
  t.like(gens.json.history.at(-1), { generation: null, source: 'api', outcome: 'failed' });
});

test('a readiness check that never answers times out and rejects the change', async (t) => {
  const { sc, configWith } = await withComponent(t, 'hang', { type: 'reload-plain', metadata: { label: 'one' } }, { readyTimeoutMs: 300 });
  const t0 = performance.now();
  const res = await admin(sc, 'PUT', '/config', configWith({ type: 'reload-plain', metadata: { label: 'two', ready: 'hang' } }));
  t.is(res.status, 409, res.text);
  t.regex(res.json.errors[0].message, /timed out after 300 ms/);
  t.true(performance.now() - t0 < 3_000);
  t.is(componentOf(await httpGet(url(sc), { agent: false })).label, 'one');
  t.is(sc.runtime.current!.number, 1);
});

test('a component whose init fails rejects the change and leaves the old one serving', async (t) => {
  const { sc, configWith } = await withComponent(t, 'initfail', { type: 'reload-plain', metadata: { label: 'one' } });
  const res = await admin(sc, 'PUT', '/config', configWith({ type: 'reload-plain', metadata: { label: 'two', failInit: 'true' } }));
  t.is(res.status, 409, res.text);
  t.regex(res.json.errors[0].message, /init failed on purpose/);
  t.is(componentOf(await httpGet(url(sc), { agent: false })).label, 'one');
  t.is(sc.runtime.current!.number, 1);
});

test('a component whose init never settles times out and rejects the change', async (t) => {
  const { sc, configWith } = await withComponent(t, 'inithang', { type: 'reload-plain', metadata: { label: 'one' } }, { readyTimeoutMs: 300 });
  const t0 = performance.now();
  const res = await admin(sc, 'PUT', '/config', configWith({ type: 'reload-plain', metadata: { label: 'two', failInit: 'hang' } }));
  t.is(res.status, 409, res.text);
  t.regex(res.json.errors[0].message, /init: timed out after 300 ms/);
  t.true(performance.now() - t0 < 3_000);
  t.is(componentOf(await httpGet(url(sc), { agent: false })).label, 'one');
  t.is(sc.runtime.current!.number, 1);
});

test('when one new component fails, another still coming up is closed too, once it settles', async (t) => {
  const { sc, scope, configWith } = await withComponent(t, 'twonew', null);
  const next = configWith(null, [0, 1]);
  next.components = {
    fails: { type: 'reload-plain', metadata: { scope, label: 'fails', failInit: 'true' } },
    slow: { type: 'reload-plain', metadata: { scope, label: 'slow', ready: 'gate' } },
  };
  const pending = admin(sc, 'PUT', '/config', next);
  await until(() => eventsNamed(scope, 'ready').length === 1 && eventsNamed(scope, 'init').length === 2, 10_000, 'both to start');
  t.true(openGate(scope));
  const res = await within(pending, 10_000, 'the reload');
  t.is(res.status, 409, res.text);
  t.regex(res.json.errors[0].message, /component fails: init/);
  const slowId = eventsNamed(scope, 'init').find((e) => e.metadata?.label === 'slow')!.id;
  await until(() => eventsNamed(scope, 'close', slowId).length === 1, 10_000, 'the slow instance to be closed');
  t.is(sc.runtime.current!.number, 1);
  t.is(await metric(sc, 'switchyard_component_updates_total', { component: 'fails', mode: 'added', result: 'failed' }), 1);
});

test('a bind error on a new address rejects the whole change and leaves nothing half-built', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const scope = newScope('bind');
  const host = uniqueHost();
  // Something else owns the address the new config wants.
  const squatHost = uniqueHost();
  const squatter = createTcpServer();
  await new Promise<void>((r) => squatter.listen(0, squatHost, r));
  t.teardown(() => new Promise<void>((r) => squatter.close(() => r())));
  const squatPort = (squatter.address() as { port: number }).port;
  const otherHost = uniqueHost();
  const otherPort = await freePort(otherHost);

  const base = componentConfig(a, b, host, scope, { type: 'reload-plain', metadata: { label: 'one' } });
  const { sc } = await startFromObject(t, base);
  const next = componentConfig(a, b, host, scope, { type: 'reload-plain', metadata: { label: 'two' } }, [0, 1]);
  next.listeners!.other = { address: `${otherHost}:${otherPort}`, protocol: 'http', target: 'svc.http', filters: [] };
  next.listeners!.clash = { address: `${squatHost}:${squatPort}`, protocol: 'http', target: 'svc.http', filters: [] };
  const res = await admin(sc, 'PUT', '/config', next);
  t.is(res.status, 409, res.text);
  t.regex(res.json.errors[0].message, /cannot listen on/);
  t.is(sc.runtime.current!.number, 1);
  t.deepEqual([...sc.addresses().keys()], ['web']);
  const r = await httpGet(url(sc), { agent: false });
  t.is(r.headers['x-role'], 'a');
  t.is(componentOf(r).label, 'one');
  t.true(await refused(otherHost, otherPort), 'the address the failed build bound is released again');
  const created = eventsOf(scope).filter((e) => e.event === 'init' && e.metadata?.label === 'two').map((e) => e.id);
  t.is(created.length, 1);
  t.is(eventsNamed(scope, 'close', created[0]).length, 1, 'the instance the failed build created is closed');
  // The same address can be taken by a later, good change.
  delete (next.listeners as Record<string, unknown>).clash;
  const ok = await admin(sc, 'PUT', '/config', next);
  t.is(ok.status, 200, ok.text);
  t.is((await httpGet(`http://${otherHost}:${otherPort}/`, { agent: false })).status, 200);
});

test('drainTimeout cuts an HTTP request that outlives it; the old generation then closes', async (t) => {
  const a = await heldUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const scope = newScope('httpdrain');
  const host = uniqueHost();
  const config = (label: string): ConfigSpec => ({ ...componentConfig(a, b, host, scope, { type: 'reload-plain', metadata: { label } }), drainTimeout: '300ms' });
  const { sc } = await startFromObject(t, config('one'));
  const held = httpGet(url(sc), { agent: false, headers: { 'x-hold': '1' } });
  held.catch(() => {});
  await until(() => a.held.length === 1, 10_000, 'the held request to arrive');
  const [oldId] = eventsNamed(scope, 'init').map((e) => e.id);
  t.is((await admin(sc, 'PUT', '/config', config('two'))).status, 200);
  await t.throwsAsync(within(held, 10_000, 'the held request'), undefined, 'the request is cut at drainTimeout');
  await until(() => eventsNamed(scope, 'close', oldId).length === 1, 10_000, 'the old component to close');
  t.is(eventsNamed(scope, 'close', oldId)[0]!.inUse, 0);
  t.is(sc.runtime.draining.size, 0);
});

test('shutdown: /ready answers 503, listeners stop accepting, running requests finish, components close once', async (t) => {
  const { a, sc, scope } = await withComponent(t, 'shutdown', { type: 'reload-plain', metadata: { label: 'one' } });
  const addr = sc.addresses().get('web')!;
  t.is((await admin(sc, 'GET', '/ready')).status, 200);
  const held = httpGet(url(sc), { agent: false, headers: { 'x-hold': '1' } });
  held.catch(() => {});
  await until(() => a.held.length === 1, 10_000, 'the held request to arrive');

  const stopped = sc.stop();
  await until(async () => (await admin(sc, 'GET', '/ready')).status === 503, 10_000, '/ready to answer 503');
  t.true(await refused(addr.host, addr.port), 'no new connection is accepted');
  t.is(eventsNamed(scope, 'close').length, 0, 'components stay open while work drains');
  a.releaseAll();
  const r = await within(held, 10_000, 'the held request');
  t.is(r.status, 200, 'the running request finished');
  await within(stopped, 10_000, 'the stop');
  t.is(eventsNamed(scope, 'close').length, 1, 'the component closed once');
});

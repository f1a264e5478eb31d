import test from 'ava';
import { createServer } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { Agent, request } from 'undici';
import {
  channel, deadAddress, findMetric, get, listenerUrl, metric, role, startSidecar, twoRoles, uniqueHost, untilMetric, vsetOf, weighted,
} from '../helpers.js';
import { controlled } from './support.js';

const CHECK = { healthCheck: { interval: '100ms', timeout: '100ms', unhealthyThreshold: 1 } };
const HTTP_CHECK = { healthCheck: { path: '/healthz', interval: '100ms', timeout: '100ms', unhealthyThreshold: 1 } };

test('a pinned role with no healthy endpoint: fallback weighted serves from the split and says so; strict does not', async (t) => {
  const a = await controlled(t, 'a');
  const b = await controlled(t, 'b');
  await b.kill();
  const sc = await startSidecar(t, twoRoles(channel([a], CHECK), channel([b], CHECK), {
    filters: [
      {
        type: 'header_route',
        rules: [
          { header: 'x-canary', equals: 'soft', role: 'b', fallback: 'weighted' },
          { header: 'x-canary', equals: 'hard', role: 'b', fallback: 'strict' },
          { header: 'x-canary', equals: 'default', role: 'b' },
        ],
      },
      weighted({ a: 90, b: 10 }),
    ],
  }));
  const url = listenerUrl(sc, 'web');
  await untilMetric(sc, 'switchyard_endpoints_healthy', { role: 'b' }, 0, 5000, 'b unhealthy');
  const soft = await get(url, { 'x-canary': 'soft' });
  t.is(soft.status, 200);
  t.is(soft.body, 'a');
  t.is(soft.headers['x-switchyard-fallback'], 'b');
  for (const v of ['hard', 'default']) {
    const hard = await get(url, { 'x-canary': v });
    t.is(hard.status, 502, `fallback ${v}`);
    t.regex(hard.body, /role b/);
    t.is(hard.headers['x-switchyard-fallback'], undefined);
  }
  // A request the split sends: never a failure, and no header for a share spread by health.
  for (let i = 0; i < 20; i++) {
    const r = await get(url);
    t.is(r.status, 200);
    t.is(r.headers['x-switchyard-fallback'], undefined);
  }
});

test('a pin with fallback weighted whose role fails while serving moves to the split (connect failures before health checks notice)', async (t) => {
  const a = await controlled(t, 'a');
  const b = await controlled(t, 'b');
  await b.kill();
  const sc = await startSidecar(t, twoRoles(channel([a]), channel([b]), {
    filters: [
      { type: 'header_route', rules: [{ header: 'x-canary', equals: '1', role: 'b', fallback: 'weighted' }] },
      weighted({ a: 1, b: 1 }),
    ],
  }));
  const r = await get(listenerUrl(sc, 'web'), { 'x-canary': '1' });
  t.is(r.status, 200);
  t.is(r.body, 'a');
  t.is(r.headers['x-switchyard-fallback'], 'b');
  // Counted once, under the role that served it; the failed try under the role it tried.
  await untilMetric(sc, 'switchyard_requests_total', { listener: 'web', vset: 'svc', role: 'a', code: '200' }, 1, 5000, 'the request counted');
  t.is(await findMetric(sc, 'switchyard_requests_total', { role: 'b' }), undefined, 'no request counted under role b');
  t.is(await metric(sc, 'switchyard_upstream_errors_total', { listener: 'web', role: 'b', reason: 'connect-failure' }), 1);
});

test('allowFrom: only listed client addresses may pin a role', async (t) => {
  const a = await controlled(t, 'a');
  const b = await controlled(t, 'b');
  const sc = await startSidecar(t, twoRoles(channel([a]), channel([b]), {
    filters: [
      { type: 'header_route', allowFrom: ['127.0.0.1/32'], rules: [{ header: 'x-canary', equals: '1', role: 'b' }] },
      weighted({ a: 1 }),
    ],
  }));
  const url = listenerUrl(sc, 'web');
  t.is((await get(url, { 'x-canary': '1' })).body, 'b', 'from 127.0.0.1: pinned');
  const other = uniqueHost();
  const agent = new Agent({ localAddress: other });
  t.teardown(() => agent.close());
  const res = await request(url, { dispatcher: agent, headers: { 'x-canary': '1' } });
  t.is(await res.body.text(), 'a', `from ${other}: the header is ignored, the split decides`);
});

/**
 * `total` GETs from `workers` concurrent loops; `kill` runs when request `killAt` starts.
 * Statuses counted; `failures` has the bodies of the answers that were not 200 (for the assertion's message).
 */
async function loadWithKill(url: string, o: { total: number; workers: number; killAt: number }, kill: () => void):
  Promise<Map<number, number> & { failures: string }> {
  const statuses = Object.assign(new Map<number, number>(), { failures: '' });
  let sent = 0;
  const worker = async (): Promise<void> => {
    while (sent < o.total) {
      if (++sent === o.killAt) kill();
      const r = await get(url);
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      if (r.status !== 200) statuses.failures += `${r.status} ${r.body.trim()}; `;
    }
  };
  await Promise.all(Array.from({ length: o.workers }, worker));
  return statuses;
}

test('a role whose endpoints die mid-load: no client request fails while another role can serve it', async (t) => {
  const a1 = await controlled(t, 'a1');
  const a2 = await controlled(t, 'a2');
  const b1 = await controlled(t, 'b1');
  const b2 = await controlled(t, 'b2');
  for (const c of [a1, a2, b1, b2]) c.up.server.keepAliveTimeout = 60_000;
  const sc = await startSidecar(t, twoRoles(channel([a1, a2], CHECK), channel([b1, b2], CHECK), { retries: { attempts: 2 }, filters: [weighted({ a: 50, b: 50 })] }));
  const statuses = await loadWithKill(listenerUrl(sc, 'web'), { total: 2000, workers: 8, killAt: 500 }, () => {
    void b1.kill();
    void b2.kill();
  });
  t.deepEqual([...statuses.entries()], [[200, 2000]], `every request succeeded (${statuses.failures})`);
  t.true(b1.hits + b2.hits > 100, 'b served its share before it died');
  t.is(await metric(sc, 'switchyard_endpoints_healthy', { role: 'b' }), 0);
});

test('a one-endpoint canary dies under 32 concurrent requests with the default budget: none of its requests in flight fails', async (t) => {
  const a1 = await controlled(t, 'a1');
  const a2 = await controlled(t, 'a2');
  const canary = await controlled(t, 'canary');
  for (const c of [a1, a2, canary]) c.up.server.keepAliveTimeout = 60_000;
  const sc = await startSidecar(t, twoRoles(channel([a1, a2], CHECK), channel([canary], CHECK), { retries: { attempts: 1 }, filters: [weighted({ a: 50, b: 50 })] }));
  // Every connection at once, with ~16 requests on them (the demo's step 5).
  const statuses = await loadWithKill(listenerUrl(sc, 'web'), { total: 1500, workers: 32, killAt: 400 }, () => void canary.kill());
  t.deepEqual([...statuses.entries()], [[200, 1500]], `every request succeeded (${statuses.failures})`);
  t.is(await findMetric(sc, 'switchyard_retry_budget_exhausted_total'), undefined, 'the budget never ran out');
});

test('tcp: a connection whose role cannot connect goes to another role of the split', async (t) => {
  const { createServer } = await import('node:net');
  const echo = createServer((s) => s.pipe(s));
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  t.teardown(() => echo.close());
  // On this process's own address: a port freed on 127.0.0.1 was once taken by another
  // test process's HTTP server, which answered "hello 0" with a 400.
  const deadAddr = await deadAddress();
  const host = uniqueHost();
  const sc = await startSidecar(t, vsetOf({
    a: role(`127.0.0.1:${(echo.address() as { port: number }).port}`, { channel: 'raw' }),
    b: role(deadAddr, { channel: 'raw' }),
  }, { address: `${host}:0`, protocol: 'tcp', target: 'svc', filters: [weighted({ a: 1, b: 1000 })] }, { channel: 'raw', listener: 'raw' }));
  const addr = sc.addresses().get('raw')!;
  for (let i = 0; i < 5; i++) {
    const s = connect({ host: addr.host, port: addr.port });
    const got = await new Promise<string>((resolve, reject) => {
      s.once('error', reject);
      s.once('data', (d) => resolve(d.toString()));
      s.write(`hello ${i}`);
    });
    s.destroy();
    t.is(got, `hello ${i}`);
  }
  const fails = await metric(sc, 'switchyard_upstream_errors_total', { listener: 'raw', role: 'b', reason: 'connect-failure' });
  t.true(fails >= 4, `${fails} connect failures on b`);
  // Counted at close, under the role that served.
  await untilMetric(sc, 'switchyard_tcp_connections_total', { listener: 'raw', vset: 'svc', role: 'a', result: 'ok' }, 5, 5000, 'five connections served by a');
});

// The mid-load test above failed 1 run in 3 of the whole suite with one 502: under load, the
// health checks of a's endpoints timed out too, so no role was "available"; the picker then
// tried b (panic mode) and gave up after b's connect failures without trying a.
test('every role marked unhealthy and one of them dead: a request that cannot connect to its role moves to the other role', async (t) => {
  const a1 = await controlled(t, 'a1');
  const a2 = await controlled(t, 'a2');
  const b1 = await controlled(t, 'b1');
  const b2 = await controlled(t, 'b2');
  // a answers requests but fails its checks (as a check that times out on a loaded machine does).
  a1.health = a2.health = 503;
  await b1.kill();
  await b2.kill();
  const sc = await startSidecar(t, twoRoles(channel([a1, a2], HTTP_CHECK), channel([b1, b2], HTTP_CHECK), { filters: [weighted({ a: 50, b: 50 })] }));
  await untilMetric(sc, 'switchyard_endpoints_healthy', {}, 0, 5000, 'every endpoint unhealthy');
  const url = listenerUrl(sc, 'web');
  for (let i = 0; i < 40; i++) {
    const r = await get(url);
    t.is(r.status, 200, r.body);
    t.is(r.body.slice(0, 1), 'a');
  }
});

test('a role left by its own pick because it looked unavailable is still tried when the role it moved to cannot connect', async (t) => {
  const a1 = await controlled(t, 'a1');
  const b1 = await controlled(t, 'b1');
  a1.health = 503;
  await b1.kill();
  // b has no health check: it looks available, though it is dead.
  const sc = await startSidecar(t, twoRoles(channel([a1], HTTP_CHECK), channel([b1]), { filters: [weighted({ a: 50, b: 50 })] }));
  await untilMetric(sc, 'switchyard_endpoints_healthy', { role: 'a' }, 0, 5000, 'a unhealthy');
  const url = listenerUrl(sc, 'web');
  for (let i = 0; i < 40; i++) {
    const r = await get(url);
    t.is(r.status, 200, r.body);
    t.is(r.body, 'a1');
  }
});

// The same test's other way to fail: both of b's endpoints died with more of b's requests in
// flight than the budget's minimum concurrency (3), each retry stayed on b (its other endpoint
// still looked healthy) and needed a share; the fourth was refused and answered 502.
test('a retry the budget refuses on a failing role moves the request to another role of the split', async (t) => {
  const a1 = await controlled(t, 'a1');
  const b1 = await controlled(t, 'b1');
  const b2 = await controlled(t, 'b2');
  b1.mode = b2.mode = 'reset';
  const sc = await startSidecar(t, twoRoles(channel([a1]), channel([b1, b2]), {
    retries: { attempts: 2, budgetPercent: 0, minRetryConcurrency: 0 },
    filters: [
      { type: 'header_route', rules: [{ header: 'x-pin', equals: 'b', role: 'b', fallback: 'weighted' }] },
      weighted({ a: 1, b: 1 }),
    ],
  }));
  const url = listenerUrl(sc, 'web');
  for (let i = 0; i < 10; i++) {
    const r = await get(url, { 'x-pin': 'b' });
    t.is(r.status, 200, r.body);
    t.is(r.body, 'a1');
    t.is(r.headers['x-switchyard-fallback'], 'b');
  }
  t.is(b1.hits + b2.hits, 10, 'one try on b per request, no retry on b without a share');
  t.true(await metric(sc, 'switchyard_retry_budget_exhausted_total') >= 10);
});

test('a WebSocket upgrade pinned with fallback: weighted that falls back says so in x-switchyard-fallback, as HTTP does', async (t) => {
  // a: answers every upgrade with 101; b: nothing listens.
  const server = createServer((_req, res) => { res.end('plain'); });
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  server.on('upgrade', (_req, socket: Socket) => {
    socket.on('error', () => {});
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
      + 'Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => { for (const s of sockets) s.destroy(); server.close(() => r()); }));
  const aAddr = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  const dead = await controlled(t, 'dead');
  await dead.kill();

  const sc = await startSidecar(t, twoRoles(channel([aAddr]), channel([dead.address]), {
    filters: [
      { type: 'header_route', rules: [{ header: 'x-canary', equals: '1', role: 'b', fallback: 'weighted' }] },
      weighted({ a: 1, b: 1 }),
    ],
  }));
  const url = new URL(listenerUrl(sc, 'web'));

  // The HTTP request is answered by a with the header (as in the tests above).
  // (a is not an HTTP upstream of the controlled kind: its plain answer is "plain".)
  const http = await get(url.href, { 'x-canary': '1' });
  t.is(http.body, 'plain');
  t.is(http.headers['x-switchyard-fallback'], 'b', 'HTTP: the response names the pinned role');

  const head = await new Promise<string>((resolve, reject) => {
    const s = connect({ host: url.hostname, port: Number(url.port) });
    let buf = '';
    const timer = setTimeout(() => { s.destroy(); reject(new Error('no upgrade answer')); }, 5000);
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      const end = buf.indexOf('\r\n\r\n');
      if (end >= 0) { clearTimeout(timer); s.destroy(); resolve(buf.slice(0, end)); }
    });
    s.on('error', (err) => { clearTimeout(timer); reject(err); });
    s.write(`GET /ws HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n`
      + 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nx-canary: 1\r\n\r\n');
  });
  t.regex(head, /^HTTP\/1\.1 101/);
  t.regex(head, /\r\nx-switchyard-fallback: b(\r\n|$)/i, `WebSocket: the 101 names the pinned role; got:\n${head}`);
});

test('when every role is down, a request pinned (fallback: weighted) that its own role serves is not said to have fallen back from it', async (t) => {
  const a = await controlled(t, 'a');
  const b = await controlled(t, 'b');
  const CHECK = { healthCheck: { path: '/healthz', interval: '100ms', timeout: '100ms', unhealthyThreshold: 1 } };
  // Both roles fail their health check but still serve (panic mode tries them anyway).
  a.health = 503;
  b.health = 503;
  const sc = await startSidecar(t, twoRoles(channel([a], CHECK), channel([b], CHECK), {
    filters: [
      { type: 'header_route', rules: [{ header: 'x-canary', equals: '1', role: 'b', fallback: 'weighted' }] },
      weighted({ a: 1, b: 1 }),
    ],
  }));
  await untilMetric(sc, 'switchyard_endpoints_healthy', {}, 0, 5000, 'every endpoint unhealthy');
  const url = listenerUrl(sc, 'web');
  let servedByB = 0;
  let wrong = 0;
  for (let i = 0; i < 20; i++) {
    const r = await get(url, { 'x-canary': '1' });
    t.is(r.status, 200);
    if (r.headers['x-served-by'] === 'b') {
      servedByB++;
      if (r.headers['x-switchyard-fallback'] === 'b') wrong++;
    }
  }
  t.log(`${servedByB} of 20 served by the pinned role b`);
  t.is(wrong, 0, `${wrong} responses served by b say x-switchyard-fallback: b`);
});

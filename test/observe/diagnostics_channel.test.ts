import test, { type ExecutionContext } from 'ava';
import diagnostics from 'node:diagnostics_channel';
import { connect, type AddressInfo } from 'node:net';
import { WebSocket, WebSocketServer } from 'ws';
import { configOf, deadAddress, get, listenerUrl, oneRole, putConfig, role, ROOT, startEcho, startSidecar, startUpstream, until, type ConfigSpec } from '../helpers.js';

/* The data path publishes each unit's outcome once on node:diagnostics_channel (README, "Observing"). */

type Event = Record<string, unknown>;

/** Collects the events of `channel` whose listener is one of `listeners`, until the test ends. */
function collect(t: ExecutionContext, channel: string, listeners: string[]): Event[] {
  const got: Event[] = [];
  const fn = (m: unknown): void => {
    const e = m as Event;
    if (listeners.includes(e.listener as string)) got.push(e);
  };
  diagnostics.subscribe(channel, fn);
  t.teardown(() => { diagnostics.unsubscribe(channel, fn); });
  return got;
}

/** A unique listener name, so the events of tests running side by side in this process keep apart. */
let n = 0;
const name = (what: string): string => `${what}-${process.pid}-${n++}`;

test('a request served by a role is published once on switchyard:request, with its role, endpoint, status and timing', async (t) => {
  const up = await startUpstream(t, 'a');
  const web = name('web');
  const sc = await startSidecar(t, oneRole(up, {}, { role: 'a', listener: web }));
  const events = collect(t, 'switchyard:request', [web]);
  for (let i = 0; i < 3; i++) t.is((await get(`${listenerUrl(sc, web)}/p${i}?q=1`)).status, 200);
  await until(() => events.length >= 3, 5_000, 'three events');
  t.is(events.length, 3, 'one event per request');
  const e = events[0]!;
  t.like(e, { listener: web, vset: 'a', role: 'a', endpoint: up.address, method: 'GET', path: '/p0?q=1', status: 200, error: '', upgrade: false, generation: 1 });
  t.regex(e.client as string, /^127\./);
  t.true((e.bytesIn as number) > 0 && (e.bytesOut as number) > 0, 'bytes of the request and its response');
  t.true((e.durationMs as number) >= 0 && e.answerMs === e.durationMs, 'a plain request is answered when it ends');
  t.deepEqual(Object.keys(e).sort(), ['answerMs', 'bytesIn', 'bytesOut', 'client', 'clientCert', 'durationMs', 'endpoint', 'error', 'generation', 'grpcStatus',
    'listener', 'method', 'path', 'role', 'sinks', 'status', 'traceId', 'tries', 'upgrade', 'vset'], 'the documented shape');
  t.is(e.tries, 1);
});

test('a filter\'s answer and a failed upstream are published with no role, or with the failing role and its code', async (t) => {
  const dead = await deadAddress();
  const limited = name('limited');
  const broken = name('broken');
  const sc = await startSidecar(t, configOf({
    roles: { ok: role(dead), gone: role(dead) },
    listeners: {
      [limited]: { target: 'ok.http', filters: [{ type: 'fault', abort: { status: 429, percent: 100 } }] },
      [broken]: { target: 'gone.http' },
    },
  }));
  const requests = collect(t, 'switchyard:request', [limited, broken]);
  const tries = collect(t, 'switchyard:upstream', [broken]);
  t.is((await get(listenerUrl(sc, limited))).status, 429);
  t.is((await get(listenerUrl(sc, broken))).status, 502);
  await until(() => requests.length >= 2, 5_000, 'two events');
  t.like(requests.find((e) => e.listener === limited), { role: '', endpoint: '', status: 429, error: '' });
  t.like(requests.find((e) => e.listener === broken), { role: 'gone', endpoint: dead, status: 502, error: 'SY_ERR_UPSTREAM_CONNECT' });
  t.like(tries[0], { kind: 'failed', listener: broken, role: 'gone', reason: 'connect-failure' });
});

test('a retry is published on switchyard:upstream as the failed try and the retry, before the request event', async (t) => {
  let hits = 0;
  const up = await startUpstream(t, 'a', (req, res) => {
    req.resume();
    res.writeHead(hits++ === 0 ? 503 : 200).end('x');
  });
  const web = name('retry');
  const sc = await startSidecar(t, oneRole(up, { retries: { attempts: 1, on: [503], backoff: { base: '1ms', max: '1ms' } } }, { role: 'a', listener: web }));
  const order: string[] = [];
  const onTry = (m: unknown): void => { const e = m as Event; if (e.listener === web) order.push(`${e.kind}:${e.reason}`); };
  let requestTries = 0;
  const onRequest = (m: unknown): void => {
    const e = m as Event;
    if (e.listener !== web) return;
    order.push(`request:${e.status}`);
    requestTries = e.tries as number;
  };
  diagnostics.subscribe('switchyard:upstream', onTry);
  diagnostics.subscribe('switchyard:request', onRequest);
  t.teardown(() => { diagnostics.unsubscribe('switchyard:upstream', onTry); diagnostics.unsubscribe('switchyard:request', onRequest); });
  t.is((await get(listenerUrl(sc, web))).status, 200);
  await until(() => order.includes('request:200'), 5_000, 'the request event');
  // A 503 answer is no transport error (no "failed" event unless it ejected the endpoint): only the retry.
  t.deepEqual(order, ['retried:503', 'request:200']);
  t.is(requestTries, 2, 'the first try and its retry');
});

test('a TCP connection is published once on switchyard:connection when it closes, with its bytes', async (t) => {
  const echoAt = (await startEcho(t)).address;
  const raw = name('raw');
  const sc = await startSidecar(t, oneRole(echoAt, { protocol: 'tcp' }, { role: 'echo', channel: 'tcp', listener: raw }));
  const events = collect(t, 'switchyard:connection', [raw]);
  const a = sc.addresses().get(raw)!;
  const c = connect(a.port, a.host);
  c.write('hello');
  await new Promise<void>((r) => c.once('data', () => r()));
  c.end();
  await until(() => events.length >= 1, 5_000, 'the connection event');
  t.like(events[0], { listener: raw, vset: 'echo', role: 'echo', endpoint: echoAt, result: 'ok', bytesIn: 5, bytesOut: 5, error: '' });
  t.is(events.length, 1);
});

test('a WebSocket tunnel is published once when it closes, as an upgrade with status 101, its handshake time apart from its life', async (t) => {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((r) => wss.once('listening', () => r()));
  t.teardown(() => new Promise<void>((r) => wss.close(() => r())));
  wss.on('connection', (s) => s.on('message', (m) => s.send(m)));
  const ws = name('ws');
  const sc = await startSidecar(t, oneRole(`127.0.0.1:${(wss.address() as AddressInfo).port}`, {}, { role: 'a', listener: ws }));
  const events = collect(t, 'switchyard:request', [ws]);
  const client = new WebSocket(`${listenerUrl(sc, ws).replace('http', 'ws')}/chat`);
  await new Promise<void>((r, j) => { client.once('open', () => r()); client.once('error', j); });
  client.send('hi');
  await new Promise<void>((r) => client.once('message', () => r()));
  t.is(events.length, 0, 'nothing while the tunnel is open');
  client.close();
  await until(() => events.length >= 1, 5_000, 'the tunnel event');
  t.like(events[0], { listener: ws, role: 'a', status: 101, upgrade: true, path: '/chat', method: 'GET' });
  t.true((events[0]!.answerMs as number) < (events[0]!.durationMs as number), 'the handshake ends before the tunnel does');
});

test('config changes are published on switchyard:reload, and each component change on switchyard:component', async (t) => {
  const up = await startUpstream(t, 'a');
  const web = name('reload');
  const base = oneRole(up, { filters: [{ type: 'ratelimit', component: 'limit' }] }, { role: 'a', listener: web });
  const config = (rps: string): ConfigSpec => ({ ...base, components: { limit: { type: 'ratelimit', metadata: { requestsPerSecond: rps } } } });
  const reloads: Event[] = [];
  const components: Event[] = [];
  const sc = await startSidecar(t, config('100'));
  const mine = (e: Event): boolean => (e.sinks as { metrics: unknown }).metrics === sc.runtime.metrics;
  const onReload = (m: unknown): void => { if (mine(m as Event)) reloads.push(m as Event); };
  const onComponent = (m: unknown): void => { if (mine(m as Event)) components.push(m as Event); };
  diagnostics.subscribe('switchyard:reload', onReload);
  diagnostics.subscribe('switchyard:component', onComponent);
  t.teardown(() => { diagnostics.unsubscribe('switchyard:reload', onReload); diagnostics.unsubscribe('switchyard:component', onComponent); });
  t.is((await putConfig(sc, config('200'))).status, 200);
  t.is((await putConfig(sc, config('-1'))).status, 400);
  t.like(reloads[0], { generation: 2, source: 'api', result: 'applied', error: '', changes: { components: { limit: 'updated' } } });
  t.true((reloads[0]!.durationMs as number) >= 0);
  t.like(reloads[1], { generation: 2, source: 'api', result: 'invalid' });
  t.is(reloads.length, 2);
  t.deepEqual(components.map(({ sinks: _, ...e }) => e), [{ component: 'limit', mode: 'updated', result: 'success', generation: 2 }]);
});

test('a filter that leaves forwarding broken (a malformed header edit) gets its request answered 500 and recorded, sync or async, and the proxy keeps serving', async (t) => {
  const up = await startUpstream(t, 'a');
  const names = { sync: name('edit-sync'), async: name('edit-async') };
  const sc = await startSidecar(t, configOf({
    plugins: [`${ROOT}/test/fixtures/broken-edit-plugin.mjs`],
    roles: { a: role(up) },
    listeners: {
      [names.sync]: { target: 'a.http', filters: [{ type: 'broken_edit' }] },
      [names.async]: { target: 'a.http', filters: [{ type: 'broken_edit', async: true }] },
    },
  }));
  const events = collect(t, 'switchyard:request', Object.values(names));
  for (const listener of Object.values(names)) {
    const res = await get(listenerUrl(sc, listener));
    t.is(res.status, 500, listener);
    t.regex(res.body, /a filter failed/);
  }
  await until(() => events.length >= 2, 5_000, 'both requests recorded');
  for (const e of events) t.like(e, { role: '', status: 500 });
  t.is(up.requests.length, 0, 'nothing was forwarded');
  t.is(sc.runtime.current!.inFlight, 0, 'the generation holds nothing');
});

test('the client address is recorded for a TCP connection and for an upgrade answered locally, after the socket closed', async (t) => {
  const echoAt = (await startEcho(t)).address;
  const raw = name('raw-client');
  const web = name('ws-client');
  const up = await startUpstream(t, 'a');
  const sc = await startSidecar(t, configOf({
    roles: { echo: role(echoAt, { channel: 'tcp' }), a: role(up) },
    listeners: { [raw]: { target: 'echo.tcp', protocol: 'tcp' }, [web]: { target: 'a.http' } },
  }));
  const connections = collect(t, 'switchyard:connection', [raw]);
  const requests = collect(t, 'switchyard:request', [web]);
  const tcp = sc.addresses().get(raw)!;
  const c = connect(tcp.port, tcp.host);
  c.end('x');
  await until(() => connections.length >= 1, 5_000, 'the connection event');
  t.regex(connections[0]!.client as string, /^127\./);
  // Two Host lines: answered 400 by switchyard; the client never sends its FIN, the answer closes the connection.
  const w = sc.addresses().get(web)!;
  const u = connect(w.port, w.host);
  u.write('GET /chat HTTP/1.1\r\nHost: a\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
  await until(() => requests.length >= 1, 5_000, 'the upgrade event (the answer closed the connection)');
  t.like(requests[0], { status: 400, upgrade: true, role: '', error: 'SY_ERR_BAD_REQUEST' });
  t.regex(requests[0]!.client as string, /^127\./);
  u.destroy();
});

test('an upgrade whose client leaves before the upstream answered is recorded as 499 under its role, not as a 101', async (t) => {
  // An upstream that accepts and never answers.
  const { createServer } = await import('node:net');
  const held = new Set<import('node:net').Socket>();
  const silent = createServer((s) => { held.add(s); s.on('error', () => {}); });
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  t.teardown(() => { for (const s of held) s.destroy(); return new Promise<void>((r) => silent.close(() => r())); });
  const ws = name('ws-left');
  const sc = await startSidecar(t, oneRole(`127.0.0.1:${(silent.address() as AddressInfo).port}`, {}, { role: 'a', listener: ws }));
  const events = collect(t, 'switchyard:request', [ws]);
  const w = sc.addresses().get(ws)!;
  const u = connect(w.port, w.host);
  u.write('GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
  await until(() => held.size > 0, 5_000, 'the upgrade reaches the upstream');
  u.destroy();
  await until(() => events.length >= 1, 5_000, 'the upgrade event');
  t.like(events[0], { status: 499, role: 'a', upgrade: true });
});

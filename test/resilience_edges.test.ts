import test from 'ava';
import { createServer, request as httpRequest } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import {
  channel, get, listenerUrl, metric, putConfig, startSidecar, twoRoles, uniqueHost, until, untilMetric, weighted, type HealthCheckSpec,
} from './helpers.js';
import { controlled } from './resilience_support.js';

// Edge cases of the resilience features, each found in review (and failing before its fix).

const ONLY_A = { filters: [weighted({ a: 1 })] };

/** A chunked POST whose body is written in `chunks` pieces, `gapMs` apart; status 0 when the connection broke first. */
function slowPost(url: string, chunks: number, gapMs: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve) => {
    const u = new URL(url);
    const req = httpRequest({
      host: u.hostname, port: Number(u.port), method: 'POST', path: '/', agent: false,
      headers: { 'transfer-encoding': 'chunked', 'content-type': 'text/plain' },
    }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', () => resolve({ status: 0, body: '' }));
    let i = 0;
    const tick = (): void => {
      if (req.destroyed) return;
      if (i++ < chunks) {
        req.write('0123456789');
        setTimeout(tick, gapMs);
      } else req.end();
    };
    tick();
  });
}

test.serial('with retries, a streamed upload that takes longer than perTryTimeout is not cut off (undici\'s headersTimeout waits for the body)', async (t) => {
  const a = await controlled(t, 'a');
  const b = await controlled(t, 'b');
  // Control: without retries, timeouts.upstream (undici's headersTimeout) lets a slow upload finish.
  const plain = await startSidecar(t, twoRoles(channel([a]), channel([b]), { ...ONLY_A, timeouts: { upstream: '300ms' } }));
  const r0 = await slowPost(listenerUrl(plain, 'web'), 8, 100);
  t.is(r0.status, 200, 'no retries: the 800 ms upload is served');

  // With retries, our own per-try timer starts at dispatch and aborts the try while
  // the client is still sending its body: 504 (and the body is destroyed).
  const sc = await startSidecar(t, twoRoles(channel([a]), channel([b]), { ...ONLY_A, retries: { attempts: 1, perTryTimeout: '300ms' } }));
  const r = await slowPost(listenerUrl(sc, 'web'), 8, 100);
  t.is(r.status, 200, `retries: the same upload got ${r.status} ${JSON.stringify(r.body)}`);
});

test.serial('a try cut by timeouts.total counts as an upstream timeout and feeds outlier detection', async (t) => {
  const hung = await controlled(t, 'hung');
  hung.mode = 'hang';
  const b = await controlled(t, 'b');
  const sc = await startSidecar(t, twoRoles(channel([hung], { outlierDetection: { consecutiveErrors: 1 } }), channel([b]), { ...ONLY_A, timeouts: { total: '200ms' } }));
  const r = await get(listenerUrl(sc, 'web'));
  t.is(r.status, 504);
  t.is(await metric(sc, 'switchyard_upstream_errors_total', { role: 'a', reason: 'timeout' }), 1,
    'the 504 sent for a hung endpoint shows in upstream_errors_total{reason="timeout"}');
  t.is(await metric(sc, 'switchyard_endpoints_healthy', { role: 'a' }), 0,
    'a hung endpoint that timed out consecutiveErrors times is ejected');
});

test.serial('a reload that shortens healthCheck.interval takes over at once (README: "a changed healthCheck takes over at once")', async (t) => {
  const a = await controlled(t, 'a');
  const b = await controlled(t, 'b');
  const host = uniqueHost();
  const check = (interval: string): HealthCheckSpec => ({ path: '/healthz', interval, timeout: '100ms', unhealthyThreshold: 1 });
  const config = (interval: string) => twoRoles(channel([a]), channel([b], { healthCheck: check(interval) }), { ...ONLY_A, address: `${host}:0` });
  const sc = await startSidecar(t, config('60s'));
  await until(() => b.checks >= 1, 5000, 'the first check (at once)');
  const put = await putConfig(sc, config('100ms'));
  t.is(put.status, 200, put.body);
  b.health = 503;
  const start = Date.now();
  await t.notThrowsAsync(untilMetric(sc, 'switchyard_endpoints_healthy', { role: 'b' }, 0, 3000, 'b unhealthy'),
    'with a 100ms interval, b is found unhealthy within 3 s (the old 60 s timer still runs)');
  t.log(`waited ${Date.now() - start} ms`);
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

  // The HTTP request is answered by a with the header (as in fallback.test.ts).
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

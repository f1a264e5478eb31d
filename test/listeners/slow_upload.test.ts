// Slow uploads (issue 11, item 5): 200 clients uploading at 1 byte/s pinned 201 upstream
// connections for the 5 minutes of timeouts.request.
import test, { type ExecutionContext } from 'ava';
import type { IncomingMessage } from 'node:http';
import { connect, type Socket } from 'node:net';
import { request } from 'undici';
import type { Sidecar } from '../../src/sidecar.js';
import { join } from 'node:path';
import {
  adminUrl, channel, deadAddress, listenerUrl, oneRole, scrape, startSidecar, startUpstream, tempFiles, untilLogLines, within, type ConfigSpec,
  type ListenerSpec,
} from '../helpers.js';

// The timing tests run serially (ava runs them first): many sidecars starting at once can
// hold this process's event loop for long enough to blur a 300 ms grace.

/** A raw client that sends a request head, then `unit` (one byte of body) every `everyMs`; destroyed at teardown. */
function trickle(t: ExecutionContext, sc: Sidecar, head: string, everyMs: number, unit = 'x'): { socket: Socket; got: () => string; closed: Promise<void> } {
  const a = sc.addresses().get('web')!;
  const socket = connect({ host: a.host, port: a.port });
  socket.on('error', () => {});
  let got = '';
  socket.on('data', (d: Buffer) => { got += d.toString('latin1'); });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.write(head);
  const timer = setInterval(() => { if (socket.writable) socket.write(unit); }, everyMs);
  t.teardown(() => { clearInterval(timer); socket.destroy(); });
  void closed.then(() => clearInterval(timer));
  return { socket, got: () => got, closed };
}

/** An upstream that reads each body whole and answers its length; `arrived` resolves with each request as it comes. */
async function bodyUpstream(t: ExecutionContext) {
  const waiting: ((req: IncomingMessage) => void)[] = [];
  const up = await startUpstream(t, 'a', (req, res) => {
    waiting.shift()?.(req);
    let n = 0;
    req.on('data', (c: Buffer) => { n += c.length; });
    req.on('end', () => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end(String(n)); });
  });
  const next = (): Promise<IncomingMessage> => new Promise((resolve) => waiting.push(resolve));
  return { up, next };
}

/** Role a (ejected at its first error) behind listener web, which retries resets, timeouts and 5xx; `listener` and `more` added. */
const roleA = (address: string, listener: Partial<ListenerSpec>, more: ConfigSpec = {}): ConfigSpec => ({
  ...more,
  ...oneRole(channel(address, { outlierDetection: { consecutiveErrors: 1 } }),
    { target: 'a', retries: { attempts: 2, on: ['reset', 'timeout', '5xx'] }, ...listener }, { role: 'a' }),
});

test.serial('a body below minUploadRate gets 408 and its upstream request is aborted within the bound, while a normal upload succeeds; the upstream is not blamed', async (t) => {
  const { up, next } = await bodyUpstream(t);
  const { dir } = await tempFiles(t, {});
  const log = join(dir, 'access.log');
  const sc = await startSidecar(t, roleA(up.address, { minUploadRate: { bytesPerSecond: 100, grace: '300ms' }, bufferBodyBytes: 0 }, { accessLog: { path: log } }));
  const arrived = next();
  const start = performance.now();
  // 10 bytes a second, of a 100,000-byte body: streamed (bufferBodyBytes 0), so the upstream has it.
  const slow = trickle(t, sc, 'POST /slow HTTP/1.1\r\nHost: slow.test\r\nContent-Length: 100000\r\n\r\nxxxx', 100);
  const upstreamReq = await within(arrived, 5_000, 'the slow request reaches the upstream');
  t.is(upstreamReq.url, '/slow');
  const upstreamGone = new Promise<void>((resolve) => upstreamReq.once('close', () => resolve()));
  // A normal upload in parallel.
  const big = 'y'.repeat(256 * 1024);
  const normal = await request(`${listenerUrl(sc, 'web')}/normal`, { method: 'POST', body: big, headers: { 'content-type': 'text/plain' } });
  t.is(normal.statusCode, 200);
  t.is(await normal.body.text(), String(big.length));
  await within(slow.closed, 5_000, 'the slow client is answered and its connection closed');
  const ms = performance.now() - start;
  t.regex(slow.got(), /^HTTP\/1\.1 408 Request Timeout\r\n/);
  t.regex(slow.got(), /connection: close/i);
  t.regex(slow.got(), /minUploadRate/);
  await within(upstreamGone, 2_000, 'the upstream request is aborted');
  t.false(upstreamReq.complete, 'the upstream never got the whole body');
  t.true(ms < 3_000, `cut after ${Math.round(ms)} ms (grace 300 ms, checked every 300 ms)`);
  const m = await scrape(sc);
  t.is(m.value('switchyard_slow_uploads_total', { listener: 'web' }), 1);
  t.is(m.value('switchyard_requests_total', { listener: 'web', vset: 'a', role: '', code: '408' }), 1);
  t.is(m.value('switchyard_requests_total', { listener: 'web', vset: 'a', role: 'a', code: '200' }), 1);
  t.deepEqual(m.series('switchyard_upstream_errors_total'), [], 'never an upstream error');
  t.deepEqual(m.series('switchyard_retries_total'), [], 'never retried');
  t.is(m.value('switchyard_endpoints_healthy', { role: 'a', channel: 'http' }), 1, 'not ejected (consecutiveErrors: 1)');
  t.is(up.requests.length, 2);
  const [slowLine] = await untilLogLines(log, (l) => l.path === '/slow');
  t.like(slowLine, { type: 'http', status: 408, role: '', upstreamError: 'SY_ERR_UPLOAD_TOO_SLOW' });
});

test.serial('a small body is read whole before the upstream request opens: a slow one never reaches the upstream, a whole one does', async (t) => {
  const { up } = await bodyUpstream(t);
  const sc = await startSidecar(t, roleA(up.address, { minUploadRate: { bytesPerSecond: 100, grace: '300ms' } }));
  // 1,000 bytes: within the default bufferBodyBytes (16 KiB).
  const slow = trickle(t, sc, 'POST /slow HTTP/1.1\r\nHost: slow.test\r\nContent-Length: 1000\r\n\r\nxxxx', 100);
  await within(slow.closed, 5_000, 'the slow client is answered and its connection closed');
  t.regex(slow.got(), /^HTTP\/1\.1 408 /);
  t.is(up.requests.length, 0, 'the upstream never saw the slow request');
  const r = await request(`${listenerUrl(sc, 'web')}/whole`, { method: 'POST', body: 'z'.repeat(1000) });
  t.is(r.statusCode, 200);
  t.is(await r.body.text(), '1000');
  t.deepEqual(up.requests.map((q) => q.url), ['/whole']);
});

test.serial('an upstream that reads the body slowly is not the client\'s fault: time the body waits for the upstream does not count against minUploadRate', async (t) => {
  // The upstream reads nothing for 1.5 s, then everything.
  const up = await startUpstream(t, 'a', (req, res) => {
    req.pause();
    const timer = setTimeout(() => {
      let n = 0;
      req.on('data', (c: Buffer) => { n += c.length; });
      req.on('end', () => res.end(String(n)));
      req.resume();
    }, 1_500);
    t.teardown(() => clearTimeout(timer));
  });
  // 8 MB/s: loopback carries the body far faster, but not while the upstream holds it up.
  const sc = await startSidecar(t, roleA(up.address, { minUploadRate: { bytesPerSecond: 8000000, grace: '300ms' } }));
  const body = Buffer.alloc(32 * 1024 * 1024, 'b');
  const r = await request(`${listenerUrl(sc, 'web')}/held`, { method: 'POST', body });
  t.is(r.statusCode, 200);
  t.is(await r.body.text(), String(body.length));
  t.is((await scrape(sc)).value('switchyard_slow_uploads_total', { listener: 'web' }), 0);
});

test.serial('a body that slows below minUploadRate after its response started cuts the connection; it counts with the status sent', async (t) => {
  // The upstream answers at once and streams, while the body still comes.
  const up = await startUpstream(t, 'a', (req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('started\n');
    req.on('data', () => {});
    req.on('end', () => res.end('done\n'));
  });
  const sc = await startSidecar(t, roleA(up.address, { minUploadRate: { bytesPerSecond: 100, grace: '300ms' } }));
  const slow = trickle(t, sc, 'POST /slow HTTP/1.1\r\nHost: slow.test\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n', 200, '1\r\nx\r\n');
  await within(slow.closed, 5_000, 'the connection is cut');
  t.regex(slow.got(), /^HTTP\/1\.1 200 OK\r\n[\s\S]*started\n/);
  t.notRegex(slow.got(), /done/);
  const m = await scrape(sc);
  t.is(m.value('switchyard_slow_uploads_total', { listener: 'web' }), 1);
  t.is(m.value('switchyard_requests_total', { listener: 'web', vset: 'a', role: 'a', code: '200' }), 1);
  t.deepEqual(m.series('switchyard_upstream_errors_total'), []);
});

test.serial('a body too slow while an async filter still runs gets its 408, and the request is not forwarded when the filter ends', async (t) => {
  const { up } = await bodyUpstream(t);
  const sc = await startSidecar(t, roleA(up.address, {
    minUploadRate: { bytesPerSecond: 100, grace: '300ms' },
    bufferBodyBytes: 0,
    filters: [{ type: 'fault', delay: { percent: 100, duration: '1s' } }],
  }));
  const slow = trickle(t, sc, 'POST /slow HTTP/1.1\r\nHost: slow.test\r\nContent-Length: 1000\r\n\r\nxxxx', 100);
  // Sent after the slow one: once it is answered, the slow one's delay has ended too.
  const normal = request(`${listenerUrl(sc, 'web')}/after`, { method: 'POST', body: 'n'.repeat(10) });
  await within(slow.closed, 5_000, 'the slow client is answered');
  t.regex(slow.got(), /^HTTP\/1\.1 408 /);
  t.is((await normal).statusCode, 200);
  t.deepEqual(up.requests.map((q) => q.url), ['/after'], 'the answered request never went upstream');
});

test('a small POST body, read whole, moves to the next endpoint when a connect fails (it was never sent)', async (t) => {
  const { up } = await bodyUpstream(t);
  const dead = await deadAddress();
  const sc = await startSidecar(t, oneRole([dead, up.address], { target: 'a' }, { role: 'a' }));
  // Round robin: one of the two starts at the dead endpoint.
  for (let i = 0; i < 2; i++) {
    const r = await request(`${listenerUrl(sc, 'web')}/p${i}`, { method: 'POST', body: 'q'.repeat(500) });
    t.is(r.statusCode, 200);
    t.is(await r.body.text(), '500');
  }
});

test('minUploadRate and bufferBodyBytes are checked, and are for http listeners only', async (t) => {
  const up = await startUpstream(t, 'a');
  const sc = await startSidecar(t, oneRole(up, { target: 'a' }, { role: 'a' }));
  const res = await request(`${adminUrl(sc)}/config`, {
    method: 'PUT', headers: { 'content-type': 'application/yaml' },
    body: `admin: { address: "127.0.0.1:0" }
roles:
  a: { channels: { http: { endpoints: ["${up.address}"] } } }
listeners:
  w1: { target: a, minUploadRate: { bytesPerSecond: -1, grace: 0s } }
  w2: { target: a, minUploadRate: { bytesPersecond: 5 }, bufferBodyBytes: 20000000 }
  t1: { target: a, protocol: tcp, address: ":7000", minUploadRate: { bytesPerSecond: 5 }, bufferBodyBytes: 5 }
`,
  });
  t.is(res.statusCode, 400);
  const { errors } = await res.body.json() as { errors: { code: string; path: string }[] };
  t.deepEqual(errors.map((e) => `${e.path} ${e.code}`).sort(), [
    'listeners.t1.bufferBodyBytes SY_ERR_CONFIG_VALUE',
    'listeners.t1.minUploadRate SY_ERR_CONFIG_VALUE',
    'listeners.w1.minUploadRate.bytesPerSecond SY_ERR_CONFIG_VALUE',
    'listeners.w1.minUploadRate.grace SY_ERR_CONFIG_VALUE',
    'listeners.w2.bufferBodyBytes SY_ERR_CONFIG_VALUE',
    'listeners.w2.minUploadRate.bytesPersecond SY_ERR_CONFIG_UNKNOWN_KEY',
  ]);
});

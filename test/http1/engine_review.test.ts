// Issue 13, the client-side HTTP/1.1 engine under an adversarial review: what the
// smuggling corpus does not reach (flow control across requests, close paths, timers).
import test from 'ava';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import type { Sidecar } from '../../src/sidecar.js';
import { join } from 'node:path';
import { get, listenerUrl, logLines, oneRole, scrape, startSidecar, startUpstream, tempFiles, until, untilLogLines, untilMetric, within } from '../helpers.js';

/** A client connection to the listener, and everything it has received so far. */
async function client(sc: Sidecar): Promise<{ s: Socket; got: () => string; closed: Promise<void> }> {
  const a = sc.addresses().get('web')!;
  const s = connect(a.port, a.host);
  await new Promise<void>((r) => s.once('connect', () => r()));
  let text = '';
  s.setEncoding('latin1');
  s.on('data', (d: string) => { text += d; });
  s.on('error', () => {});
  const closed = new Promise<void>((r) => s.once('close', () => r()));
  return { s, got: () => text, closed };
}

const statuses = (text: string): number[] => [...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));

function echoLength(req: IncomingMessage, res: ServerResponse): void {
  let n = 0;
  req.on('data', (d: Buffer) => { n += d.length; });
  req.on('end', () => res.end(`len ${n}`));
}

for (const bufferBodyBytes of [0, 1024 * 1024]) {
  test(`a body larger than the request's buffer, come whole with its head: the next request on the connection is read (bufferBodyBytes ${bufferBodyBytes})`, async (t) => {
    const up = await startUpstream(t, 'r', echoLength);
    const sc = await startSidecar(t, oneRole(up.address, { bufferBodyBytes }));
    const c = await client(sc);
    const body = 'x'.repeat(40_000);
    c.s.write(`POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    await until(() => c.got().includes('len 40000'), 5_000, 'the first answer');
    c.s.write('GET /next HTTP/1.1\r\nHost: h\r\n\r\n');
    await until(() => statuses(c.got()).length === 2, 3_000, 'the second answer');
    t.deepEqual(statuses(c.got()), [200, 200]);
    c.s.destroy();
  });
}

test('a body larger than the request\'s buffer, answered without being read: the next request is read', async (t) => {
  const up = await startUpstream(t, 'r');
  const sc = await startSidecar(t, oneRole(up.address, { filters: [{ type: 'fault', abort: { status: 503, percent: 100 } }] }));
  const c = await client(sc);
  const body = 'x'.repeat(40_000);
  c.s.write(`POST /early HTTP/1.1\r\nHost: h\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  await until(() => statuses(c.got()).length === 1, 5_000, 'the first answer');
  c.s.write('GET /next HTTP/1.1\r\nHost: h\r\n\r\n');
  await until(() => statuses(c.got()).length === 2, 3_000, 'the second answer');
  t.deepEqual(statuses(c.got()), [503, 503]);
  c.s.destroy();
});

test('a burst of pipelined requests far past the pipeline limit: every one is answered, in order', async (t) => {
  const up = await startUpstream(t, 'r', (req, res) => { req.resume(); res.end(`u${req.url}`); });
  const sc = await startSidecar(t, oneRole(up.address));
  const c = await client(sc);
  const n = 3000;
  let burst = '';
  for (let i = 0; i < n; i++) burst += `GET /${i} HTTP/1.1\r\nHost: h\r\nX-Pad: ${'p'.repeat(40)}\r\n\r\n`;
  c.s.write(burst);
  await until(() => c.got().includes(`u/${n - 1}`), 20_000, 'the last answer');
  const order = [...c.got().matchAll(/u\/(\d+)/g)].map((m) => Number(m[1]));
  t.deepEqual(order, [...Array(n).keys()]);
  c.s.destroy();
});

// ---------------------------------------------------------------- close paths: each request recorded once, no connection left

/** Once the listener has no connection left: every request counted and logged exactly once. */
async function recordedOnce(t: import('ava').ExecutionContext, sc: Sidecar, log: string, paths: string[]): Promise<void> {
  await untilMetric(sc, 'switchyard_connections_active', { listener: 'web' }, 0, 5_000, 'no connection left');
  const lines = await untilLogLines(log, (l) => paths.includes(l.path as string), paths.length);
  await new Promise((r) => setTimeout(r, 100));
  const again = (await logLines(log)).filter((l) => paths.includes(l.path as string));
  t.is(again.length, paths.length, JSON.stringify(again));
  t.is(lines.length, paths.length);
  const m = await scrape(sc);
  t.is(m.value('switchyard_requests_total', { listener: 'web' }), paths.length + 1, JSON.stringify(m.series('switchyard_requests_total')));
}

async function logged(t: import('ava').ExecutionContext, handler?: Parameters<typeof startUpstream>[2], listener: Parameters<typeof oneRole>[1] = {}) {
  const up = await startUpstream(t, 'r', handler);
  const { dir } = await tempFiles(t, {});
  const log = join(dir, 'access.log');
  const sc = await startSidecar(t, { accessLog: { path: log }, ...oneRole(up.address, listener) });
  t.is((await get(`${listenerUrl(sc, 'web')}/warm`)).status, 200);
  await untilLogLines(log, (l) => l.path === '/warm');
  return { up, sc, log };
}

test('timeouts.request during a slow body: one 408, recorded once, the connection gone', async (t) => {
  const { sc, log } = await logged(t, (req, res) => { req.resume(); req.on('end', () => res.end('late')); }, { bufferBodyBytes: 0, timeouts: { headers: '400ms', request: '500ms' } });
  const c = await client(sc);
  c.s.write('POST /slow-body HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nsome');
  await within(c.closed, 5_000, 'the connection to close');
  t.deepEqual(statuses(c.got()), [408], c.got());
  // Before: a 408 at the edge (role "", no path) and the unit's 499, two records of one request.
  await recordedOnce(t, sc, log, ['/slow-body']);
  const [line] = await untilLogLines(log, (l) => l.path === '/slow-body');
  t.like(line, { role: '', status: 408 });
});

test('a client reset mid-answer: recorded once, the connection gone', async (t) => {
  const { sc, log } = await logged(t, (req, res) => {
    req.resume();
    if (req.url === '/warm') { res.end('w'); return; }
    res.write('first part');
  });
  const c = await client(sc);
  c.s.write('GET /mid-answer HTTP/1.1\r\nHost: h\r\n\r\n');
  await until(() => c.got().includes('first part'), 5_000, 'the answer to start');
  c.s.resetAndDestroy();
  await recordedOnce(t, sc, log, ['/mid-answer']);
});

test('a client reset mid-body: recorded once, the connection gone', async (t) => {
  const { sc, log } = await logged(t, (req, res) => { req.resume(); req.on('end', () => res.end('x')); }, { bufferBodyBytes: 0 });
  const c = await client(sc);
  c.s.write('POST /mid-body HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\nsome');
  await untilLogLines(log, () => true, 1);
  await new Promise((r) => setTimeout(r, 100));
  c.s.resetAndDestroy();
  await recordedOnce(t, sc, log, ['/mid-body']);
});

test('a client that half-closes right after its request: recorded once, the connection gone', async (t) => {
  const { sc, log } = await logged(t, (req, res) => { req.resume(); setTimeout(() => res.end('x'), 100); });
  const c = await client(sc);
  c.s.end('GET /half HTTP/1.1\r\nHost: h\r\n\r\n');
  await within(c.closed, 5_000, 'the connection to close');
  await recordedOnce(t, sc, log, ['/half']);
});

test('a request in flight longer than timeouts.keepAlive is answered; the idle connection closes after it', async (t) => {
  const { sc, log } = await logged(t, (req, res) => { req.resume(); setTimeout(() => res.end('slow'), req.url === '/warm' ? 0 : 700); }, { timeouts: { keepAlive: '300ms' } });
  const c = await client(sc);
  c.s.write('GET /long HTTP/1.1\r\nHost: h\r\n\r\n');
  const start = performance.now();
  await within(c.closed, 5_000, 'the connection to close');
  t.true(c.got().endsWith('slow'), c.got());
  t.true(performance.now() - start > 900, 'closed a keep-alive timeout after the answer');
  await recordedOnce(t, sc, log, ['/long']);
});

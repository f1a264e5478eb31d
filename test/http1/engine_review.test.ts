// Issue 13, the client-side HTTP/1.1 engine under an adversarial review: what the
// smuggling corpus does not reach (flow control across requests, close paths, timers).
import test from 'ava';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { connect } from 'node:net';
import type { Sidecar } from '../../src/sidecar.js';
import { join } from 'node:path';
import { ROOT, get, listenerUrl, logLines, oneRole, putConfig, scrape, startSidecar, startUpstream, tempFiles, uniqueHost, until, untilLogLines, untilMetric, within } from '../helpers.js';
import { client, statuses } from './support.js';

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

// ---------------------------------------------------------------- answers as Node's ServerResponse frames them

test('answers framed as the request and the upstream\'s answer need: HEAD, 204, 304, HTTP/1.0, Connection: close, trailers', async (t) => {
  const up = await startUpstream(t, 'r', (req, res) => {
    req.resume();
    switch (req.url) {
      case '/head': res.writeHead(200, { 'content-length': '5' }); res.end(req.method === 'HEAD' ? undefined : 'hello'); return;
      case '/204': res.writeHead(204, { 'x-a': '1' }); res.end(); return;
      case '/304': res.writeHead(304, { etag: '"e"' }); res.end(); return;
      case '/chunked': res.write('abc'); res.end('def'); return;
      case '/close': res.setHeader('connection', 'close'); res.end('bye'); return;
      case '/trailers': res.writeHead(200, { trailer: 'x-sum' }); res.write('abc'); res.addTrailers({ 'x-sum': '3' }); res.end(); return;
      default: res.end('?');
    }
  });
  const sc = await startSidecar(t, oneRole(up.address));
  const exchange = async (bytes: string, close: boolean, done: (text: string) => boolean): Promise<string> => {
    const c = await client(sc);
    c.s.write(bytes);
    if (close) await within(c.closed, 5_000, `${bytes} to close`);
    else await until(() => done(c.got()), 5_000, `the answer to ${bytes}`);
    c.s.destroy();
    return c.got();
  };
  const head = await exchange('HEAD /head HTTP/1.1\r\nHost: h\r\n\r\nGET /after HTTP/1.1\r\nHost: h\r\n\r\n', false, (x) => x.endsWith('?'));
  t.regex(head, /^HTTP\/1\.1 200 OK\r\n[^]*content-length: 5\r\n[^]*\r\n\r\nHTTP\/1\.1 200 /i, head);
  for (const s of ['204', '304']) {
    const text = await exchange(`GET /${s} HTTP/1.1\r\nHost: h\r\n\r\nGET /after HTTP/1.1\r\nHost: h\r\n\r\n`, false, (x) => x.endsWith('?'));
    t.deepEqual(statuses(text), [Number(s), 200], text);
    t.notRegex(text.split('\r\n\r\n')[0]!, /transfer-encoding|content-length/i, text);
  }
  const ten = await exchange('GET /chunked HTTP/1.0\r\nConnection: keep-alive\r\n\r\n', true, () => false);
  t.regex(ten, /\r\n\r\nabcdef$/, ten);
  t.notRegex(ten, /transfer-encoding/i);
  const tenClose = await exchange('GET /chunked HTTP/1.0\r\n\r\n', true, () => false);
  t.regex(tenClose, /\r\n\r\nabcdef$/, tenClose);
  // Connection is hop-by-hop: the upstream's close is its own connection's, the client's stays.
  const closed = await exchange('GET /close HTTP/1.1\r\nHost: h\r\n\r\nGET /after HTTP/1.1\r\nHost: h\r\n\r\n', false, (x) => x.endsWith('?'));
  t.regex(closed, /bye/, closed);
  const trailers = await exchange('GET /trailers HTTP/1.1\r\nHost: h\r\nTE: trailers\r\n\r\n', false, (x) => x.endsWith('\r\n\r\n') && x.includes('0\r\n'));
  t.regex(trailers, /\r\n\r\n3\r\nabc\r\n0\r\nx-sum: 3\r\n\r\n$/i, trailers);
});

test('a client that never reads its answers: requests pipelined behind them are not read, nor forwarded', async (t) => {
  const big = Buffer.alloc(1024 * 1024, 'b');
  const up = await startUpstream(t, 'r', (req, res) => { req.resume(); res.end(big); });
  const sc = await startSidecar(t, oneRole(up.address));
  const a = sc.addresses().get('web')!;
  const s = connect(a.port, a.host);
  s.on('error', () => {});
  t.teardown(() => s.destroy());
  await new Promise<void>((r) => s.once('connect', () => r()));
  s.pause();
  let burst = '';
  for (let i = 0; i < 200; i++) burst += `GET /${i} HTTP/1.1\r\nHost: h\r\n\r\n`;
  s.write(burst);
  await until(() => up.requests.length >= 2, 5_000, 'the first requests upstream');
  await new Promise((r) => setTimeout(r, 500));
  // The answers fill the socket's buffers, then nothing more is read: a few MiB at most, not 200.
  t.true(up.requests.length < 20, `${up.requests.length} forwarded`);
  // And once the client reads, every one is answered.
  let got = 0;
  s.on('data', (d: Buffer) => { got += d.length; });
  s.resume();
  await until(() => up.requests.length === 200, 20_000, 'every request forwarded');
  await until(() => got >= 200 * big.length, 20_000, 'every answer read');
  t.pass();
});

test('timeouts.headers on a kept-alive connection runs from the first byte of the later request, not from the last answer', async (t) => {
  const up = await startUpstream(t, 'r', (req, res) => { req.resume(); res.end('x'); });
  const sc = await startSidecar(t, oneRole(up.address, { timeouts: { headers: '400ms', keepAlive: '5s' } }));
  const c = await client(sc);
  c.s.write('GET /first HTTP/1.1\r\nHost: h\r\n\r\n');
  await until(() => statuses(c.got()).length === 1, 5_000, 'the first answer');
  // Idle for longer than the headers timeout: the keep-alive wait, not the head's.
  await new Promise((r) => setTimeout(r, 700));
  t.false(c.s.destroyed);
  const start = performance.now();
  c.s.write('GET /second HTTP/1.1\r\nHost: h\r\n');
  await within(c.closed, 5_000, 'the slow head to be cut');
  const ms = performance.now() - start;
  t.true(ms >= 350 && ms < 1_500, `cut after ${Math.round(ms)} ms`);
  t.deepEqual(statuses(c.got()), [200]);
});

test('a reload that shortens timeouts.keepAlive: the next answer on an open connection uses it', async (t) => {
  const up = await startUpstream(t, 'r', (req, res) => { req.resume(); res.end('x'); });
  const address = `${uniqueHost()}:0`;
  const config = (keepAlive: string) => oneRole(up.address, { address, timeouts: { keepAlive } });
  const sc = await startSidecar(t, config('30s'));
  const c = await client(sc);
  c.s.write('GET /first HTTP/1.1\r\nHost: h\r\n\r\n');
  await until(() => statuses(c.got()).length === 1, 5_000, 'the first answer');
  t.regex(c.got(), /keep-alive: timeout=30/);
  t.is((await putConfig(sc, config('300ms'))).status, 200);
  c.s.write('GET /second HTTP/1.1\r\nHost: h\r\n\r\n');
  await until(() => statuses(c.got()).length === 2, 5_000, 'the second answer');
  await within(c.closed, 2_000, 'the connection to close 300 ms after the second answer');
  t.pass();
});

test('many empty lines before a request line, then a head a byte at a time: read as one request (the empty lines are not kept)', async (t) => {
  const up = await startUpstream(t, 'r', (req, res) => { req.resume(); res.end(`u${req.url}`); });
  const sc = await startSidecar(t, oneRole(up.address));
  const c = await client(sc);
  // More empty lines than maxHeaderSize: they are not part of a head.
  c.s.write(`${'\r\n'.repeat(30_000)}G`);
  for (const ch of 'ET /late HTTP/1.1\r\nHost: h\r\n\r\n') {
    c.s.write(ch, 'latin1');
    await new Promise((r) => setImmediate(r));
  }
  await until(() => c.got().includes('u/late'), 5_000, 'the answer');
  t.deepEqual(statuses(c.got()), [200]);
  c.s.destroy();
});

// ---------------------------------------------------------------- a plugin's calls on the response

const OPS_PLUGIN = join(ROOT, 'test/fixtures/response-ops-plugin.mjs');

for (const op of ['destroy', 'twice', 'mixed']) {
  test(`a filter's ${op} on the response: answered as Node would, recorded once, no connection left`, async (t) => {
    const up = await startUpstream(t, 'r');
    const { dir } = await tempFiles(t, {});
    const log = join(dir, 'access.log');
    const sc = await startSidecar(t, { plugins: [OPS_PLUGIN], accessLog: { path: log }, ...oneRole(up.address, { filters: [{ type: 'response_ops', op }] }) });
    const c = await client(sc);
    c.s.write('GET /op HTTP/1.1\r\nHost: h\r\n\r\n');
    if (op === 'destroy') await within(c.closed, 5_000, 'the cut');
    else await until(() => /\r\n\r\n(first|5\r\nmixed\r\n0\r\n\r\n)$/.test(c.got()), 5_000, 'the answer');
    if (op === 'twice') t.regex(c.got(), /^HTTP\/1\.1 200 [^]*content-length: 5\r\n[^]*\r\n\r\nfirst$/i);
    if (op === 'mixed') {
      t.regex(c.got(), /^HTTP\/1\.1 201 /);
      t.regex(c.got(), /\r\nx-set: 1\r\n/i);
      t.regex(c.got(), /\r\nx-both: head\r\n/i);
      t.notRegex(c.got(), /x-both: set/i);
    }
    c.s.destroy();
    await untilMetric(sc, 'switchyard_connections_active', { listener: 'web' }, 0, 5_000, 'no connection left');
    await untilLogLines(log, (l) => l.path === '/op');
    await new Promise((r) => setTimeout(r, 100));
    t.is((await logLines(log)).filter((l) => l.path === '/op').length, 1);
    t.is((await scrape(sc)).value('switchyard_requests_total', { listener: 'web' }), 1);
  });
}

test('a large body still coming while a large answer that did not wait for it is written: the answer goes through whole, then the connection closes', async (t) => {
  const answer = Buffer.alloc(4 * 1024 * 1024, 'a');
  const up = await startUpstream(t, 'r', (req, res) => {
    // Answers at once, and reads the body only once its answer is out.
    res.end(answer, () => req.resume());
  });
  const sc = await startSidecar(t, oneRole(up.address, { bufferBodyBytes: 0 }));
  const c = await client(sc);
  const body = Buffer.alloc(4 * 1024 * 1024, 'b');
  c.s.write(`POST /both HTTP/1.1\r\nHost: h\r\nContent-Length: ${body.length}\r\n\r\n`);
  c.s.write(body);
  // http_forward: an answer that came before the streamed body ended closes the connection after it.
  await within(c.closed, 10_000, 'the connection to close after the answer');
  const text = c.got();
  t.deepEqual(statuses(text), [200]);
  t.is(text.length - text.indexOf('\r\n\r\n') - 4, answer.length, 'the whole answer');
  t.regex(text, /connection: close\r\n/i);
});

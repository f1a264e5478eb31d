// Issue 13: HTTP/1.1 read and written by switchyard on the client connection
// (listeners/h1_connection.ts), what it does that Node's http.Server did otherwise
// or that only an engine of its own must get right: one request at a time,
// 100-continue, heads and bodies in any split, a body read away after an early answer.
import test from 'ava';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { oneRole, startSidecar, startUpstream, tempFiles, until, untilLogLines, untilMetric, within } from '../helpers.js';
import { client, statuses } from './support.js';

test('pipelined requests are served one at a time: the second reaches the upstream only once the first is answered', async (t) => {
  const held: ServerResponse[] = [];
  const up = await startUpstream(t, 'r', (req: IncomingMessage, res: ServerResponse) => {
    req.resume();
    if (req.url === '/slow') held.push(res);
    else res.end(`answer ${req.url}`);
  });
  const sc = await startSidecar(t, oneRole(up.address));
  const c = await client(sc);
  c.s.write('GET /slow HTTP/1.1\r\nHost: h\r\n\r\nGET /second HTTP/1.1\r\nHost: h\r\n\r\n');
  await until(() => held.length === 1, 5_000, 'the first request upstream');
  // Node's server forwarded the second at once, its answer held back behind the first's.
  await new Promise((r) => setTimeout(r, 200));
  t.deepEqual(up.requests.map((r) => r.url), ['/slow']);
  held[0]!.end('answer /slow');
  await until(() => statuses(c.got()).length === 2, 5_000, 'both answers');
  t.deepEqual(up.requests.map((r) => r.url), ['/slow', '/second']);
  const text = c.got();
  t.true(text.indexOf('answer /slow') < text.indexOf('answer /second'), text);
  c.s.destroy();
});

test('Expect: 100-continue gets 100 Continue before the body is sent, and the body is forwarded', async (t) => {
  const up = await startUpstream(t, 'r', (req, res) => {
    let body = '';
    req.setEncoding('latin1');
    req.on('data', (d: string) => { body += d; });
    req.on('end', () => res.end(`got ${body}`));
  });
  const sc = await startSidecar(t, oneRole(up.address));
  const c = await client(sc);
  c.s.write('POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n');
  await until(() => c.got().startsWith('HTTP/1.1 100 Continue\r\n\r\n'), 5_000, '100 Continue');
  t.deepEqual(up.requests.length, 0, 'nothing forwarded before the body started');
  c.s.write('hello');
  await until(() => c.got().includes('got hello'), 5_000, 'the answer');
  t.deepEqual(statuses(c.got()), [100, 200]);
  c.s.destroy();
});

test('an expectation other than 100-continue gets 417, counted and logged with role "", and the connection closes', async (t) => {
  const up = await startUpstream(t, 'r');
  const { dir } = await tempFiles(t, {});
  const log = join(dir, 'access.log');
  const sc = await startSidecar(t, { accessLog: { path: log }, ...oneRole(up.address) });
  const c = await client(sc);
  c.s.write('POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: something-else\r\n\r\nhello');
  await within(c.closed, 5_000, 'the connection to close');
  t.deepEqual(statuses(c.got()), [417]);
  t.is(up.requests.length, 0);
  // Before: Node's answer, as the connection wrote it, was never counted nor logged.
  await untilMetric(sc, 'switchyard_requests_total', { listener: 'web', role: '', code: '417' }, 1);
  const [line] = await untilLogLines(log, (l) => l.path === '/up');
  t.like(line, { role: '', status: 417, upstreamError: 'SY_ERR_BAD_REQUEST' });
  // Expect from an HTTP/1.0 client is ignored, and 100-continue listed twice is still 100-continue.
  const d = await client(sc);
  d.s.write('POST /ten HTTP/1.0\r\nContent-Length: 2\r\nExpect: something-else\r\n\r\nhi');
  await within(d.closed, 5_000, 'the HTTP/1.0 answer');
  t.deepEqual(statuses(d.got()), [200]);
  const e = await client(sc);
  e.s.write('POST /twice HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nExpect: 100-continue\r\nExpect: 100-Continue\r\nConnection: close\r\n\r\nhi');
  await within(e.closed, 5_000, 'the answer');
  t.deepEqual(statuses(e.got()), [100, 200]);
});

test('heads and chunked bodies that come a byte at a time are read as when they come whole', async (t) => {
  const up = await startUpstream(t, 'r', (req, res) => {
    let body = '';
    req.setEncoding('latin1');
    req.on('data', (d: string) => { body += d; });
    req.on('end', () => res.end(`${req.url} ${body} ${JSON.stringify(req.headers['x-split'])} ${JSON.stringify(req.trailers)}`));
  });
  const sc = await startSidecar(t, oneRole(up.address));
  const c = await client(sc);
  const bytes = '\r\nPOST /bytes HTTP/1.1\r\nHost: h\r\nX-Split:  a b \r\nTransfer-Encoding: chunked\r\n\r\n'
    + '3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 5\r\n\r\n'
    + 'GET /after HTTP/1.1\r\nHost: h\r\n\r\n';
  for (const ch of bytes) {
    c.s.write(ch, 'latin1');
    await new Promise((r) => setImmediate(r));
  }
  await until(() => statuses(c.got()).length === 2, 5_000, 'both answers');
  t.regex(c.got(), /\/bytes abcde "a b" \{"x-sum":"5"\}/);
  t.regex(c.got(), /\/after  undefined \{\}/);
  c.s.destroy();
});

test('an answer before the body was read: on a kept-alive connection the rest of the body is read away, and the next request is served', async (t) => {
  const up = await startUpstream(t, 'r');
  const sc = await startSidecar(t, oneRole(up.address, { filters: [{ type: 'fault', abort: { status: 503, percent: 100 } }] }));
  const c = await client(sc);
  c.s.write('POST /early HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nhello');
  await until(() => statuses(c.got()).length === 1, 5_000, 'the early answer');
  // The body's last 5 bytes, then a request: the 5 bytes must not be read as its start.
  c.s.write('worldGET /next HTTP/1.1\r\nHost: h\r\n\r\n');
  await until(() => statuses(c.got()).length === 2, 5_000, 'the second answer');
  t.deepEqual(statuses(c.got()), [503, 503]);
  t.false(c.s.destroyed);
  t.is(up.requests.length, 0);
  c.s.destroy();
});

test('answers carry Date and the keep-alive timeout the listener keeps idle connections for', async (t) => {
  const up = await startUpstream(t, 'r', (req, res) => {
    req.resume();
    // No Date of its own: switchyard's.
    res.sendDate = false;
    res.end('x');
  });
  const sc = await startSidecar(t, oneRole(up.address, { timeouts: { keepAlive: '7s' } }));
  const c = await client(sc);
  c.s.write('GET / HTTP/1.1\r\nHost: h\r\n\r\n');
  await until(() => c.got().endsWith('x'), 5_000, 'the answer');
  t.regex(c.got(), /\r\ndate: [A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT\r\n/i);
  t.regex(c.got(), /\r\nconnection: keep-alive\r\nkeep-alive: timeout=7\r\n/i);
  c.s.destroy();
});

test('a client that leaves mid-body: the upstream request is cut, and the proxy keeps serving', async (t) => {
  let upstreamAborted = false;
  const up = await startUpstream(t, 'r', (req, res) => {
    req.on('aborted', () => { upstreamAborted = true; });
    req.on('close', () => { if (!req.complete) upstreamAborted = true; });
    req.resume();
    req.on('end', () => res.end('done'));
  });
  const sc = await startSidecar(t, oneRole(up.address, { bufferBodyBytes: 0 }));
  const c = await client(sc);
  c.s.write(`POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\n${'x'.repeat(100_000)}`);
  await until(() => up.requests.length === 1, 5_000, 'the request upstream');
  c.s.destroy();
  await until(() => upstreamAborted, 5_000, 'the upstream request to be cut');
  const d = await client(sc);
  d.s.write('GET /fine HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n');
  await within(d.closed, 5_000, 'the next answer');
  t.deepEqual(statuses(d.got()), [200]);
});

test('closing after an early answer while the client still sends its body: the answer is not lost to a reset (lingering close)', async (t) => {
  const answer = Buffer.alloc(100 * 1024, 'a');
  const up = await startUpstream(t, 'r', (_req, res) => {
    // Answers at once, never reads the body.
    res.end(answer);
  });
  const sc = await startSidecar(t, oneRole(up.address, { bufferBodyBytes: 0 }));
  const c = await client(sc);
  c.s.pause(); // the answer waits in the client's receive buffer, as with a slow reader
  c.s.write(`POST /early HTTP/1.1\r\nHost: h\r\nContent-Length: ${64 * 1024 * 1024}\r\n\r\n`);
  const chunk = Buffer.alloc(64 * 1024, 'b');
  let sending = true;
  let errored: Error | null = null;
  c.s.on('error', (err) => { errored = err; });
  const send = (): void => {
    while (sending && !c.s.destroyed && c.s.write(chunk));
    if (sending && !c.s.destroyed) c.s.once('drain', send);
  };
  send();
  await until(() => up.requests.length === 1, 5_000, 'the request upstream');
  // The proxy has the answer written and closes meanwhile; the client is still sending.
  await new Promise((r) => setTimeout(r, 500));
  sending = false;
  c.s.resume();
  await within(c.closed, 10_000, 'the connection to close');
  const text = c.got();
  t.is(errored, null, 'no reset');
  t.deepEqual(statuses(text), [200]);
  t.is(text.length - text.indexOf('\r\n\r\n') - 4, answer.length, 'the whole answer');
});

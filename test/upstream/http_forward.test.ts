import test, { type ExecutionContext } from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { connect, createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DEFAULT_TIMEOUTS } from '../../src/config/defaults.js';
import type { Sidecar } from '../../src/sidecar.js';
import { deadAddress, get, listenerUrl, once, oneRole, startSidecar, startUpstream, until, within, type ConfigSpec, type ListenerSpec } from '../helpers.js';

// Tests that measure a timeout run serially (ava runs them first, before the concurrent
// ones): dozens of sidecars starting at once can block this process's event loop for a
// second, which would blur a 300 ms timeout.

// ---------------------------------------------------------------- local helpers

/** Role `r` (or `role`) on `endpoints` behind listener `web`, which `listener` adds to; drainTimeout 2s. */
function config(endpoints: string[], listener: Partial<ListenerSpec> = {}, role = 'r'): ConfigSpec {
  return { drainTimeout: '2s', ...oneRole(endpoints, listener, { role }) };
}

function addr(sc: Sidecar): { host: string; port: number } {
  return sc.addresses().get('web')!;
}

/** A raw TCP server (for upstreams that misbehave at the protocol level). */
async function rawServer(t: ExecutionContext, onSocket: (s: Socket) => void): Promise<{ address: string; connections: () => number }> {
  const sockets = new Set<Socket>();
  const server = createNetServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    onSocket(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => { for (const s of sockets) s.destroy(); server.close(() => r()); }));
  return { address: `127.0.0.1:${(server.address() as AddressInfo).port}`, connections: () => sockets.size };
}

/** Opens a raw client connection; everything received is collected in `data()`. */
function rawClient(t: ExecutionContext, a: { host: string; port: number }): Promise<{ socket: Socket; data: () => string }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = connect({ host: a.host, port: a.port }, () => resolve({ socket, data: () => Buffer.concat(chunks).toString('latin1') }));
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    t.teardown(() => { socket.destroy(); });
  });
}

/** Sends raw bytes and resolves with everything received once the proxy closes the connection. */
async function rawExchange(t: ExecutionContext, a: { host: string; port: number }, text: string, ms = 5_000): Promise<string> {
  const c = await rawClient(t, a);
  c.socket.on('error', () => {});
  const closed = once(c.socket, 'close', ms);
  c.socket.write(text);
  await closed;
  return c.data();
}

/** Status and headers (in order, original case) of a raw HTTP response. */
function parseHead(text: string): { status: number; headers: [string, string][]; body: string } {
  const end = text.indexOf('\r\n\r\n');
  const lines = text.slice(0, end < 0 ? text.length : end).split('\r\n');
  const status = Number(lines[0]!.split(' ')[1]);
  const headers = lines.slice(1).map((l) => {
    const i = l.indexOf(':');
    return [l.slice(0, i), l.slice(i + 1).trim()] as [string, string];
  });
  return { status, headers, body: end < 0 ? '' : text.slice(end + 4) };
}

interface NodeReply { res: IncomingMessage; body: Buffer; socket: Socket }

/** A request with node:http (no agent, so each test owns its connection); the body may be a stream. */
function nodeRequest(t: ExecutionContext, url: string, opts: RequestOptions & { body?: Buffer | string | Readable } = {}): Promise<NodeReply> {
  return new Promise((resolve, reject) => {
    const { body, ...rest } = opts;
    const req = httpRequest(url, { agent: false, ...rest }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ res, body: Buffer.concat(chunks), socket: req.socket as Socket }));
      res.on('error', reject);
    });
    t.teardown(() => { req.destroy(); });
    req.on('error', reject);
    if (body instanceof Readable) body.pipe(req);
    else req.end(body);
  });
}

/** `total` bytes of pseudo-random data in 64 KiB chunks, produced on demand (so backpressure applies). */
function randomStream(total: number, hash?: ReturnType<typeof createHash>): Readable {
  let left = total;
  return new Readable({
    read() {
      if (left === 0) { this.push(null); return; }
      const n = Math.min(left, 64 * 1024);
      left -= n;
      const c = randomBytes(n);
      hash?.update(c);
      this.push(c);
    },
  });
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

// ---------------------------------------------------------------- request line and headers

test('method, path and query reach the upstream unchanged', async (t) => {
  const up = await startUpstream(t, 'r');
  const sc = await startSidecar(t, config([up.address]));
  const r = await get(`${listenerUrl(sc, 'web')}/a/b%20c/?x=1&y=%2F&x=2`, {}, { method: 'PATCH', body: 'hi' });
  t.is(r.status, 200);
  const seen = JSON.parse(r.body);
  t.is(seen.method, 'PATCH');
  t.is(seen.url, '/a/b%20c/?x=1&y=%2F&x=2');
  const d = await get(`${listenerUrl(sc, 'web')}/gone?q`, {}, { method: 'DELETE' });
  t.is(JSON.parse(d.body).method, 'DELETE');
  t.is(JSON.parse(d.body).url, '/gone?q');
});

test('request headers keep their case and repeats; x-forwarded-* are appended and set', async (t) => {
  const up = await startUpstream(t, 'r');
  const sc = await startSidecar(t, config([up.address]));
  const a = addr(sc);
  const c = await rawClient(t, a);
  const local = c.socket.localAddress;
  const closed = once(c.socket, 'close');
  c.socket.write([
    'GET /h HTTP/1.1',
    `Host: svc.example:8080`,
    'X-CamelCase-Header: one',
    'X-Multi: a',
    'x-other: between',
    'X-Multi: b',
    'X-Forwarded-For: 10.1.2.3',
    'X-Forwarded-Proto: https-spoofed',
    'Connection: close',
    '', '',
  ].join('\r\n'));
  await closed;
  t.is(parseHead(c.data()).status, 200);
  const req = up.requests[0]!;
  const raw = req.rawHeaders;
  const pairs: [string, string][] = [];
  for (let i = 0; i < raw.length; i += 2) pairs.push([raw[i]!, raw[i + 1]!]);
  // Case kept, repeats kept as separate lines, in the client's order.
  t.true(pairs.some(([k, v]) => k === 'X-CamelCase-Header' && v === 'one'));
  const multi = pairs.filter(([k]) => k === 'X-Multi').map(([, v]) => v);
  t.deepEqual(multi, ['a', 'b']);
  // x-forwarded-for: the client's chain plus the address the proxy saw.
  t.is(req.headers['x-forwarded-for'], `10.1.2.3, ${local}`);
  t.is(pairs.filter(([k]) => k.toLowerCase() === 'x-forwarded-for').length, 1);
  t.is(req.headers['x-forwarded-proto'], 'http');
  t.is(req.headers['x-forwarded-host'], 'svc.example:8080');
  t.is(req.headers.host, 'svc.example:8080');
});

test('x-forwarded-for is set when the client sent none', async (t) => {
  const up = await startUpstream(t, 'r');
  const sc = await startSidecar(t, config([up.address]));
  const r = await nodeRequest(t, `${listenerUrl(sc, 'web')}/`);
  t.is(r.res.statusCode, 200);
  t.is(up.requests[0]!.headers['x-forwarded-for'], r.socket.localAddress);
});

test('hop-by-hop request headers (and those named in Connection) are not forwarded', async (t) => {
  const up = await startUpstream(t, 'r');
  const sc = await startSidecar(t, config([up.address]));
  const text = await rawExchange(t, addr(sc), [
    'GET /hop HTTP/1.1',
    'Host: h',
    'Connection: close, X-Secret',
    'Keep-Alive: timeout=99',
    'TE: trailers',
    'Trailer: X-T',
    'Upgrade: foo/1',
    'Proxy-Connection: keep-alive',
    'X-Secret: 1',
    'X-Kept: yes',
    '', '',
  ].join('\r\n'));
  t.is(parseHead(text).status, 200);
  const h = up.requests[0]!.headers;
  t.is(h['x-kept'], 'yes');
  for (const name of ['keep-alive', 'te', 'trailer', 'upgrade', 'proxy-connection', 'x-secret']) {
    t.is(h[name], undefined, `${name} must not reach the upstream`);
  }
  // The proxy's own connection to the upstream may say keep-alive; nothing of the client's.
  t.true(h.connection === undefined || h.connection === 'keep-alive', `connection: ${h.connection}`);
});

test('hop-by-hop response headers (and those named in Connection) are not forwarded; repeated headers are', async (t) => {
  const up = await startUpstream(t, 'r', (req, res) => {
    req.resume();
    // chunked (no content-length), so Node accepts a Trailer header
    res.writeHead(200, [
      'Connection', 'keep-alive, X-Up-Secret',
      'Keep-Alive', 'timeout=77',
      'X-Up-Secret', '1',
      'Proxy-Connection', 'keep-alive',
      'Upgrade', 'h2c',
      'TE', 'trailers',
      'Trailer', 'X-T',
      'Set-Cookie', 'a=1; Path=/',
      'X-Up-Kept', 'yes',
      'Set-Cookie', 'b=2; Path=/',
    ]);
    res.end('ok');
  });
  const sc = await startSidecar(t, config([up.address]));
  // keep-alive client, so the proxy's own Connection/Keep-Alive are the keep-alive ones
  const r = await nodeRequest(t, `${listenerUrl(sc, 'web')}/`);
  t.is(r.res.statusCode, 200);
  t.is(r.body.toString(), 'ok');
  const h = r.res.headers;
  t.deepEqual(h['set-cookie'], ['a=1; Path=/', 'b=2; Path=/']);
  t.is(h['x-up-kept'], 'yes');
  for (const name of ['x-up-secret', 'proxy-connection', 'upgrade', 'te', 'trailer']) {
    t.is(h[name], undefined, `${name} must not reach the client`);
  }
  t.false(String(h.connection ?? '').toLowerCase().includes('x-up-secret'));
  t.not(h['keep-alive'], 'timeout=77');
});

// ---------------------------------------------------------------- bodies

test('a 20 MB upload streams through intact (sha256), with content-length', async (t) => {
  const up = await startUpstream(t, 'r', (req, res) => {
    const h = createHash('sha256');
    let n = 0;
    req.on('data', (c: Buffer) => { h.update(c); n += c.length; });
    req.on('end', () => res.end(JSON.stringify({ sha: h.digest('hex'), n, cl: req.headers['content-length'] ?? null })));
  });
  const sc = await startSidecar(t, config([up.address]));
  const size = 20 * 1024 * 1024;
  const h = createHash('sha256');
  const r = await nodeRequest(t, `${listenerUrl(sc, 'web')}/up`, {
    method: 'PUT', headers: { 'content-length': String(size) }, body: randomStream(size, h),
  });
  t.is(r.res.statusCode, 200);
  const got = JSON.parse(r.body.toString());
  t.is(got.n, size);
  t.is(got.sha, h.digest('hex'));
  t.is(got.cl, String(size));
});

test('a chunked request body streams through intact', async (t) => {
  const up = await startUpstream(t, 'r', (req, res) => {
    const h = createHash('sha256');
    let n = 0;
    req.on('data', (c: Buffer) => { h.update(c); n += c.length; });
    req.on('end', () => res.end(JSON.stringify({ sha: h.digest('hex'), n })));
  });
  const sc = await startSidecar(t, config([up.address]));
  const size = 3 * 1024 * 1024 + 17;
  const h = createHash('sha256');
  // no content-length: node:http sends transfer-encoding: chunked
  const r = await nodeRequest(t, `${listenerUrl(sc, 'web')}/chunked`, { method: 'POST', body: randomStream(size, h) });
  t.is(r.res.statusCode, 200);
  const got = JSON.parse(r.body.toString());
  t.is(got.n, size);
  t.is(got.sha, h.digest('hex'));
});

test('a 20 MB download streams through intact (sha256)', async (t) => {
  const size = 20 * 1024 * 1024;
  const data = randomBytes(size);
  const up = await startUpstream(t, 'r', (req, res) => {
    req.resume();
    res.writeHead(200, { 'content-length': String(size) });
    void pipeline(Readable.from((function* () { for (let i = 0; i < size; i += 65536) yield data.subarray(i, i + 65536); })()), res).catch(() => {});
  });
  const sc = await startSidecar(t, config([up.address]));
  const r = await nodeRequest(t, `${listenerUrl(sc, 'web')}/down`);
  t.is(r.res.statusCode, 200);
  t.is(r.body.length, size);
  t.is(sha(r.body), sha(data));
});

test('backpressure: a client that does not read stalls the upstream instead of filling the proxy', async (t) => {
  const total = 256 * 1024 * 1024;
  let written = 0;
  let finished = false;
  let blockedSince = 0;
  const up = await startUpstream(t, 'r', (req, res) => {
    req.resume();
    res.writeHead(200, { 'content-length': String(total) });
    const chunk = Buffer.alloc(1024 * 1024, 7);
    const pump = (): void => {
      while (written < total) {
        written += chunk.length;
        if (!res.write(chunk)) {
          blockedSince = Date.now();
          res.once('drain', () => { blockedSince = 0; pump(); });
          return;
        }
      }
      finished = true;
      res.end();
    };
    pump();
  });
  const sc = await startSidecar(t, config([up.address]));
  const req = httpRequest(`${listenerUrl(sc, 'web')}/big`, { agent: false });
  t.teardown(() => { req.destroy(); });
  req.on('error', () => {});
  req.end();
  const res = await once<IncomingMessage>(req, 'response');
  res.pause(); // never read
  // Either the upstream finishes (the proxy buffered everything: fail) or its writes stay blocked.
  await until(() => finished || (blockedSince > 0 && Date.now() - blockedSince > 500), 8_000, 'upstream to stall or finish');
  t.false(finished, 'the upstream could write everything: the proxy buffered it');
  t.true(written < 64 * 1024 * 1024, `upstream wrote ${written} bytes before stalling`);
});

test('backpressure: an upstream that does not read stalls the uploading client', async (t) => {
  const up = await startUpstream(t, 'r', (req) => { req.pause(); /* never reads, never answers */ });
  const sc = await startSidecar(t, config([up.address]));
  const total = 256 * 1024 * 1024;
  const req = httpRequest(`${listenerUrl(sc, 'web')}/slow-reader`, {
    agent: false, method: 'POST', headers: { 'content-length': String(total) },
  });
  t.teardown(() => { req.destroy(); });
  req.on('error', () => {});
  let written = 0;
  let blockedSince = 0;
  const chunk = Buffer.alloc(1024 * 1024, 3);
  const pump = (): void => {
    while (written < total) {
      written += chunk.length;
      if (!req.write(chunk)) {
        blockedSince = Date.now();
        req.once('drain', () => { blockedSince = 0; pump(); });
        return;
      }
    }
  };
  pump();
  await until(() => written >= total || (blockedSince > 0 && Date.now() - blockedSince > 500), 8_000, 'client to stall or finish');
  t.true(written < 64 * 1024 * 1024, `client wrote ${written} bytes before stalling`);
});

// ---------------------------------------------------------------- upstream connections

test('sequential requests reuse upstream keep-alive connections', async (t) => {
  const up = await startUpstream(t, 'r');
  let connections = 0;
  up.server.on('connection', () => connections++);
  const sc = await startSidecar(t, config([up.address]));
  for (let i = 0; i < 50; i++) {
    const r = await get(`${listenerUrl(sc, 'web')}/k${i}`);
    t.is(r.status, 200);
  }
  t.is(up.requests.length, 50);
  t.true(connections <= 2, `${connections} upstream connections for 50 sequential requests`);
});

test('failover: a dead endpoint is skipped, every request succeeds', async (t) => {
  const up = await startUpstream(t, 'r');
  const dead = await deadAddress();
  const sc = await startSidecar(t, config([dead, up.address]));
  for (let i = 0; i < 10; i++) {
    const r = await get(`${listenerUrl(sc, 'web')}/f${i}`);
    t.is(r.status, 200, r.body);
  }
  t.is(up.requests.length, 10);
});

test('failover: a request with a body is retried on the next endpoint when the connect failed', async (t) => {
  const up = await startUpstream(t, 'r', (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => res.end(Buffer.concat(chunks)));
  });
  const dead = await deadAddress();
  const sc = await startSidecar(t, config([dead, up.address]));
  // Round robin starts on each endpoint in turn: four requests start twice on the dead one.
  for (let i = 0; i < 4; i++) {
    const body = `payload-${i}-${'x'.repeat(1000 * i)}`;
    const r = await get(`${listenerUrl(sc, 'web')}/p${i}`, {}, { method: 'POST', body });
    t.is(r.status, 200, r.body);
    t.is(r.body, body);
    // chunked too
    const c = await nodeRequest(t, `${listenerUrl(sc, 'web')}/c${i}`, { method: 'POST', body: Readable.from([Buffer.from(body)]) });
    t.is(c.res.statusCode, 200);
    t.is(c.body.toString(), body);
  }
});

test('failover: a first endpoint whose name does not resolve is skipped', async (t) => {
  const up = await startUpstream(t, 'r');
  const sc = await startSidecar(t, config(['no-such-host.invalid:80', up.address]));
  for (let i = 0; i < 4; i++) {
    const r = await get(`${listenerUrl(sc, 'web')}/d${i}`);
    t.is(r.status, 200, r.body);
  }
});

test('all endpoints dead → 502 with a text body naming the role', async (t) => {
  const sc = await startSidecar(t, config([await deadAddress(), await deadAddress()], {}, 'orders-v1'));
  const r = await within(get(`${listenerUrl(sc, 'web')}/`), 5_000, 'answer');
  t.is(r.status, 502);
  t.regex(String(r.headers['content-type']), /^text\/plain/);
  t.true(r.body.includes('orders-v1'), r.body);
  const p = await within(get(`${listenerUrl(sc, 'web')}/`, {}, { method: 'POST', body: 'data' }), 5_000, 'answer');
  t.is(p.status, 502);
});

// ---------------------------------------------------------------- timeouts

test.serial('upstream timeout: no answer within timeouts.upstream → 504', async (t) => {
  const up = await startUpstream(t, 'r', () => { /* never answers */ });
  const sc = await startSidecar(t, config([up.address], { timeouts: { upstream: '300ms' } }));
  const t0 = Date.now();
  const r = await within(get(`${listenerUrl(sc, 'web')}/`), 6_000, 'answer');
  const took = Date.now() - t0;
  t.is(r.status, 504);
  t.true(r.body.includes('r'), r.body);
  t.true(took >= 250 && took < 6_000, `took ${took} ms`);
});

test.serial('upstream timeout: a body that stalls mid-way cuts the client connection', async (t) => {
  const up = await startUpstream(t, 'r', (req, res) => {
    req.resume();
    res.writeHead(200, { 'content-length': '1000' });
    res.write('x'.repeat(100)); // …and never the rest
  });
  const sc = await startSidecar(t, config([up.address], { timeouts: { upstream: '300ms' } }));
  const req = httpRequest(`${listenerUrl(sc, 'web')}/`, { agent: false });
  t.teardown(() => { req.destroy(); });
  req.on('error', () => {});
  req.end();
  const res = await once<IncomingMessage>(req, 'response');
  res.on('error', () => {});
  res.resume();
  await once(res, 'close', 5_000);
  t.false(res.complete);
});

test.serial('upstream timeout: a client that reads slowly is not mistaken for a silent upstream', async (t) => {
  const size = 16 * 1024 * 1024;
  const data = randomBytes(size);
  const up = await startUpstream(t, 'r', (req, res) => {
    req.resume();
    res.writeHead(200, { 'content-length': String(size) });
    res.end(data); // all of it at once: only the client's pace holds it back
  });
  const sc = await startSidecar(t, config([up.address], { timeouts: { upstream: '300ms' } }));
  const req = httpRequest(`${listenerUrl(sc, 'web')}/slow-reader`, { agent: false });
  t.teardown(() => { req.destroy(); });
  req.end();
  const res = await once<IncomingMessage>(req, 'response', 5_000);
  res.pause(); // the proxy must stop reading from the upstream meanwhile (backpressure)
  const resumeAt = Date.now() + 1_000; // well past the upstream timeout
  await until(() => Date.now() >= resumeAt, 3_000);
  const chunks: Buffer[] = [];
  res.on('data', (c: Buffer) => chunks.push(c));
  res.resume();
  await once(res, 'end', 8_000);
  t.true(res.complete);
  t.is(sha(Buffer.concat(chunks)), sha(data));
});

test.serial('upstream timeout: after a client that paused reads again, a stalled upstream is still cut', async (t) => {
  const size = 16 * 1024 * 1024;
  const up = await startUpstream(t, 'r', (req, res) => {
    req.resume();
    res.writeHead(200, { 'content-length': String(size + 1) });
    res.write(randomBytes(size)); // …and never the last byte
  });
  const sc = await startSidecar(t, config([up.address], { timeouts: { upstream: '300ms' } }));
  const req = httpRequest(`${listenerUrl(sc, 'web')}/pause-then-stall`, { agent: false });
  t.teardown(() => { req.destroy(); });
  req.on('error', () => {});
  req.end();
  const res = await once<IncomingMessage>(req, 'response', 5_000);
  res.on('error', () => {});
  res.pause(); // backpressure: the gap timer stops, past its 300 ms
  await new Promise((r) => setTimeout(r, 1_000));
  let got = 0;
  res.on('data', (c: Buffer) => { got += c.length; });
  res.resume(); // the client's drain starts the gap timer again
  await once(res, 'close', 5_000);
  t.false(res.complete);
  t.true(got > 0, `read ${got} bytes`);
});

test('the default upstream timeout is 30 s', async (t) => {
  t.is(DEFAULT_TIMEOUTS.upstreamMs, 30_000);
  const up = await startUpstream(t, 'r');
  const sc = await startSidecar(t, config([up.address]));
  t.is(sc.runtime.current!.config.listeners.web!.timeouts.upstreamMs, 30_000);
});

// ---------------------------------------------------------------- clients and upstreams going away

test('a client that goes away mid-request aborts the upstream request; the proxy keeps serving', async (t) => {
  let held: { closed: Promise<unknown> } | null = null;
  const arrived: Promise<void>[] = [];
  let signal!: () => void;
  arrived.push(new Promise<void>((r) => { signal = r; }));
  const up = await startUpstream(t, 'r', (req, res) => {
    if (req.url === '/hold') {
      held = { closed: once(res, 'close', 5_000) };
      signal();
      return; // never answers
    }
    req.resume();
    res.end('fine');
  });
  const sc = await startSidecar(t, config([up.address]));
  const req = httpRequest(`${listenerUrl(sc, 'web')}/hold`, { agent: false });
  req.on('error', () => {});
  req.end();
  await arrived[0];
  req.destroy();
  await held!.closed; // the upstream's request was aborted
  t.true(up.requests[0]!.destroyed);
  const r = await get(`${listenerUrl(sc, 'web')}/next`);
  t.is(r.status, 200);
  t.is(r.body, 'fine');
});

test('a client that goes away mid-upload aborts the upstream request', async (t) => {
  let signal!: () => void;
  const arrived = new Promise<void>((r) => { signal = r; });
  let aborted: Promise<unknown> | null = null;
  const up = await startUpstream(t, 'r', (req, res) => {
    if (req.url !== '/upload') { req.resume(); res.end('fine'); return; }
    aborted = once(req, 'close', 5_000);
    req.on('data', () => signal());
  });
  const sc = await startSidecar(t, config([up.address]));
  const req = httpRequest(`${listenerUrl(sc, 'web')}/upload`, { agent: false, method: 'POST', headers: { 'content-length': '100000' } });
  req.on('error', () => {});
  req.write(Buffer.alloc(1000, 1));
  await arrived;
  req.destroy();
  await aborted!;
  t.false(up.requests[0]!.complete);
  const r = await get(`${listenerUrl(sc, 'web')}/next`);
  t.is(r.status, 200);
});

test('an upstream reset mid-response cuts the client connection (no hang)', async (t) => {
  const up = await startUpstream(t, 'r', (req, res) => {
    req.resume();
    res.writeHead(200, { 'content-length': '100000' });
    res.write('x'.repeat(1000), () => req.socket.destroy());
  });
  const sc = await startSidecar(t, config([up.address]));
  const req = httpRequest(`${listenerUrl(sc, 'web')}/`, { agent: false });
  t.teardown(() => { req.destroy(); });
  req.on('error', () => {});
  req.end();
  const res = await once<IncomingMessage>(req, 'response', 5_000);
  res.on('error', () => {});
  res.resume();
  await once(res, 'close', 5_000);
  t.false(res.complete);
});

test('an upstream reset before any response → 502', async (t) => {
  const up = await startUpstream(t, 'r', (req) => { req.socket.destroy(); });
  const sc = await startSidecar(t, config([up.address]));
  const r = await within(get(`${listenerUrl(sc, 'web')}/`), 5_000, 'answer');
  t.is(r.status, 502);
  const raw = await rawServer(t, (s) => { s.once('data', () => s.resetAndDestroy()); });
  const sc2 = await startSidecar(t, config([raw.address]));
  const r2 = await within(get(`${listenerUrl(sc2, 'web')}/`), 5_000, 'answer');
  t.is(r2.status, 502);
});

test('an upstream that answers garbage → 502', async (t) => {
  const raw = await rawServer(t, (s) => { s.once('data', () => s.end('this is not http\r\n\r\n')); });
  const sc = await startSidecar(t, config([raw.address]));
  const r = await within(get(`${listenerUrl(sc, 'web')}/`), 5_000, 'answer');
  t.is(r.status, 502);
  const bad = await rawServer(t, (s) => { s.once('data', () => s.write('HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\nabc')); });
  const sc2 = await startSidecar(t, config([bad.address]));
  const r2 = await within(get(`${listenerUrl(sc2, 'web')}/`), 5_000, 'answer');
  t.is(r2.status, 502);
});

// ---------------------------------------------------------------- malformed clients

test('a malformed request gets 400 and never reaches the upstream', async (t) => {
  const up = await startUpstream(t, 'r');
  const sc = await startSidecar(t, config([up.address]));
  const a = addr(sc);
  t.is(parseHead(await rawExchange(t, a, 'THIS IS NOT HTTP\r\n\r\n')).status, 400);
  t.is(parseHead(await rawExchange(t, a, 'GET / HTTP/1.1\r\nHost: h\r\nBad Header: y\r\n\r\n')).status, 400);
  t.is(parseHead(await rawExchange(t, a, 'GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n')).status, 400);
  t.is(up.requests.length, 0);
});

test('headers beyond maxHeaderSize → 431, never reaching the upstream', async (t) => {
  const up = await startUpstream(t, 'r');
  const sc = await startSidecar(t, config([up.address], { maxHeaderSize: 2048 }));
  const text = await rawExchange(t, addr(sc), `GET / HTTP/1.1\r\nHost: h\r\nX-Big: ${'a'.repeat(4096)}\r\n\r\n`);
  t.is(parseHead(text).status, 431);
  t.is(up.requests.length, 0);
  // A request under the limit passes.
  const ok = await get(`${listenerUrl(sc, 'web')}/`, { 'x-small': 'a'.repeat(500) });
  t.is(ok.status, 200);
});

test.serial('a client that never finishes its headers is closed after timeouts.headers', async (t) => {
  const up = await startUpstream(t, 'r');
  const sc = await startSidecar(t, config([up.address], { timeouts: { headers: '500ms' } }));
  const c = await rawClient(t, addr(sc));
  c.socket.on('error', () => {});
  const t0 = Date.now();
  c.socket.write('GET / HTTP/1.1\r\nHost: h\r\nX-Slow: ');
  await once(c.socket, 'close', 6_000); // 500 ms + Node's 1 s checking interval (+ slack for a loaded machine)
  t.true(Date.now() - t0 < 6_000);
  const status = parseHead(c.data()).status;
  t.true(Number.isNaN(status) || status === 408, c.data());
  t.is(up.requests.length, 0);
});

test.serial('an idle keep-alive client connection is closed after timeouts.keepAlive', async (t) => {
  const up = await startUpstream(t, 'r');
  const sc = await startSidecar(t, config([up.address], { timeouts: { keepAlive: '400ms' } }));
  const c = await rawClient(t, addr(sc));
  c.socket.on('error', () => {});
  const closed = once(c.socket, 'close', 5_000);
  c.socket.write('GET /ka HTTP/1.1\r\nHost: h\r\n\r\n');
  await until(() => c.data().includes('"role":"r"'), 5_000, 'the response');
  const t0 = Date.now();
  await closed;
  const idle = Date.now() - t0;
  t.true(idle >= 200 && idle < 4_000, `closed after ${idle} ms idle`);
  t.regex(c.data(), /^HTTP\/1\.1 200 /);
});

test('CONNECT → 405', async (t) => {
  const up = await startUpstream(t, 'r');
  const sc = await startSidecar(t, config([up.address]));
  const text = await rawExchange(t, addr(sc), 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n');
  t.is(parseHead(text).status, 405);
  t.is(up.requests.length, 0);
});

// ---------------------------------------------------------------- more edges

test('an absolute-form request target is forwarded in origin form', async (t) => {
  const up = await startUpstream(t, 'r');
  const sc = await startSidecar(t, config([up.address]));
  const text = await rawExchange(t, addr(sc), 'GET http://svc.example/abs/path?x=1 HTTP/1.1\r\nHost: svc.example\r\nConnection: close\r\n\r\n');
  t.is(parseHead(text).status, 200);
  t.is(up.requests[0]!.url, '/abs/path?x=1');
});

test.serial('a slow but steady upload longer than timeouts.upstream is not cut (the timeout waits for the request to be sent)', async (t) => {
  const up = await startUpstream(t, 'r', (req, res) => {
    let n = 0;
    req.on('data', (c: Buffer) => { n += c.length; });
    req.on('end', () => res.end(String(n)));
  });
  const sc = await startSidecar(t, config([up.address], { timeouts: { upstream: '300ms' } }));
  let i = 0;
  const body = new Readable({
    read() {
      if (i === 8) { this.push(null); return; }
      i++;
      const timer = setTimeout(() => this.push(Buffer.alloc(1000, i)), 100); // paced, 800 ms in all
      t.teardown(() => clearTimeout(timer));
    },
  });
  const r = await nodeRequest(t, `${listenerUrl(sc, 'web')}/slow-upload`, { method: 'POST', body });
  t.is(r.res.statusCode, 200);
  t.is(r.body.toString(), '8000');
});

test('an upstream that answers before reading the whole upload: the client gets that answer', async (t) => {
  const up = await startUpstream(t, 'r', (req, res) => {
    // (keep-alive: an upstream that closes with the upload unread resets the connection, and
    // the kernel may then drop its answer before anyone reads it; no proxy can relay that)
    res.writeHead(413, { 'content-type': 'text/plain' });
    res.end('too big');
  });
  const sc = await startSidecar(t, config([up.address]));
  const total = 32 * 1024 * 1024;
  const req = httpRequest(`${listenerUrl(sc, 'web')}/upload`, { agent: false, method: 'POST', headers: { 'content-length': String(total) } });
  t.teardown(() => { req.destroy(); });
  req.on('error', () => {});
  const chunk = Buffer.alloc(64 * 1024, 1);
  let written = 0;
  const pump = (): void => {
    while (written < total && !req.destroyed) {
      written += chunk.length;
      if (!req.write(chunk)) { req.once('drain', pump); return; }
    }
  };
  pump();
  const res = await once<IncomingMessage>(req, 'response', 5_000);
  t.is(res.statusCode, 413);
  const chunks: Buffer[] = [];
  res.on('data', (c: Buffer) => chunks.push(c));
  res.on('error', () => {});
  await Promise.race([once(res, 'end', 5_000), once(res, 'close', 5_000)]);
  t.is(Buffer.concat(chunks).toString(), 'too big');
});

test.serial('an answer that starts before the upload ends is timed by its body gaps, not by a try timer started at the upload\'s end', async (t) => {
  const up = await startUpstream(t, 'r', (req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('a');
    // Once the upload is in: eight chunks 100 ms apart, 800 ms in all (timeouts.upstream: 300ms).
    req.resume();
    req.on('end', () => {
      let n = 0;
      const timer = setInterval(() => {
        if (++n < 8) res.write('b');
        else { clearInterval(timer); res.end('b'); }
      }, 100);
      t.teardown(() => clearInterval(timer));
    });
  });
  const sc = await startSidecar(t, config([up.address], { timeouts: { upstream: '300ms' } }));
  const req = httpRequest(`${listenerUrl(sc, 'web')}/early`, { agent: false, method: 'POST' });
  t.teardown(() => { req.destroy(); });
  req.on('error', () => {});
  req.write('first part of a chunked upload');
  const res = await once<IncomingMessage>(req, 'response', 5_000);
  const chunks: Buffer[] = [];
  res.on('data', (c: Buffer) => {
    chunks.push(c);
    if (chunks.length === 1) req.end('the rest'); // the request is sent now, after its answer started
  });
  res.on('error', () => {});
  await Promise.race([once(res, 'end', 5_000), once(res, 'close', 5_000)]);
  t.true(res.complete);
  t.is(Buffer.concat(chunks).toString(), 'abbbbbbbb');
});

test('HEAD and 304 answers pass through without a body', async (t) => {
  const up = await startUpstream(t, 'r', (req, res) => {
    req.resume();
    if (req.url === '/304') { res.writeHead(304, { etag: '"x"' }); res.end(); return; }
    res.writeHead(200, { 'content-length': '12345', 'content-type': 'application/octet-stream' });
    res.end(req.method === 'HEAD' ? undefined : Buffer.alloc(12345));
  });
  const sc = await startSidecar(t, config([up.address]));
  const h = await get(`${listenerUrl(sc, 'web')}/file`, {}, { method: 'HEAD' });
  t.is(h.status, 200);
  t.is(h.headers['content-length'], '12345');
  t.is(h.body, '');
  const n = await get(`${listenerUrl(sc, 'web')}/304`, { 'if-none-match': '"x"' });
  t.is(n.status, 304);
  t.is(n.headers.etag, '"x"');
  // and the keep-alive connection is still usable afterwards
  const after = await get(`${listenerUrl(sc, 'web')}/file`);
  t.is(after.status, 200);
  t.is(after.body.length, 12345);
});

test('Expect: 100-continue uploads go through', async (t) => {
  const up = await startUpstream(t, 'r', (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => res.end(Buffer.concat(chunks)));
  });
  const sc = await startSidecar(t, config([up.address]));
  const req = httpRequest(`${listenerUrl(sc, 'web')}/expect`, {
    agent: false, method: 'POST', headers: { expect: '100-continue', 'content-length': '5' },
  });
  t.teardown(() => { req.destroy(); });
  req.on('error', () => {});
  req.on('continue', () => req.end('hello'));
  const res = await once<IncomingMessage>(req, 'response', 5_000);
  t.is(res.statusCode, 200);
  const chunks: Buffer[] = [];
  res.on('data', (c: Buffer) => chunks.push(c));
  await once(res, 'end');
  t.is(Buffer.concat(chunks).toString(), 'hello');
});

test.serial('a client that never finishes its body is cut after timeouts.request, and the upstream request aborted', async (t) => {
  let aborted: Promise<unknown> | null = null;
  const up = await startUpstream(t, 'r', (req) => {
    aborted = once(req, 'close', 8_000);
    req.resume();
  });
  // bufferBodyBytes 0: a body this small is otherwise read whole before the upstream request opens (slow_upload.test).
  const sc = await startSidecar(t, config([up.address], { timeouts: { headers: '1s', request: '2s' }, bufferBodyBytes: 0 }));
  const c = await rawClient(t, addr(sc));
  c.socket.on('error', () => {});
  const closed = once(c.socket, 'close', 8_000); // 2 s + Node's 1 s checking interval (+ slack for a loaded machine)
  const t0 = Date.now();
  c.socket.write('POST /slow HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n0123456789');
  await until(() => aborted !== null, 5_000, 'the request to reach the upstream');
  await closed;
  t.true(Date.now() - t0 < 8_000);
  await aborted;
  t.false(up.requests[0]!.complete);
});

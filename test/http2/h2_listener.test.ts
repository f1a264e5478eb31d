import test from 'ava';
import { execFile } from 'node:child_process';
import { constants, type ClientHttp2Session } from 'node:http2';
import { promisify } from 'node:util';
import {
  configOf, get, listenerUrl, metric, putConfig, role, ROOT, startSidecar, startUpstream, tempFiles, twoRoles, until, untilLogLines, weighted, within, yaml,
  type ConfigSpec, type FilterSpec, type Upstream,
} from '../helpers.js';
import { toolPath } from '../setup/requirements.js';
import { h2Connect, h2Request, nextGoaway, uploadsWithTrailers } from './support.js';
import { makePki } from '../tls_support.js';
import { CLIENT_PREFACE, RESET_BUDGET } from '../../src/listeners/h2_sessions.js';
import { connect as netConnect } from 'node:net';
import { checkConfig } from '../../src/reload/check.js';
import { parseConfigTexts } from '../../src/config/load.js';
import { formatIssue } from '../../src/errors.js';

/*
 * HTTP/2 on http listeners: prior knowledge (h2c) beside HTTP/1.1 on one address,
 * every stream one request through the filter chain, streams across reloads, GOAWAY
 * when the listener goes, and the limits that keep one client from taking the proxy.
 */

const run = promisify(execFile);

interface Echoed { role: string; method: string; url: string; headers: Record<string, string> }

async function twoUpstreams(t: Parameters<typeof startUpstream>[0]): Promise<{ a: Upstream; b: Upstream }> {
  return { a: await startUpstream(t, 'a'), b: await startUpstream(t, 'b') };
}

function split(a: Upstream, b: Upstream, filters: FilterSpec[], more: Partial<ConfigSpec> = {}): ConfigSpec {
  return configOf({ ...twoRoles(a.address, b.address, { filters }), ...more });
}

/** Sends `n` requests on one session, `parallel` at a time; the roles that answered. */
async function rolesOver(session: ClientHttp2Session, n: number, headers: Record<string, string> = {}, parallel = 50): Promise<Record<string, number>> {
  const count: Record<string, number> = {};
  let sent = 0;
  await Promise.all(Array.from({ length: parallel }, async () => {
    while (sent < n) {
      sent++;
      const r = await h2Request(session, '/split', headers);
      const role = (JSON.parse(r.body) as Echoed).role;
      count[role] = (count[role] ?? 0) + 1;
    }
  }));
  return count;
}

test('an http listener takes HTTP/2 with prior knowledge and HTTP/1.1 on one address; the upstream gets HTTP/1.1 with :authority as Host', async (t) => {
  const { a, b } = await twoUpstreams(t);
  const sc = await startSidecar(t, split(a, b, [weighted({ a: 1, b: 0 })]));
  const session = h2Connect(t, sc);
  const r = await h2Request(session, '/p?q=1', { 'x-app': 'cart' });
  t.is(r.status, 200);
  const seen = JSON.parse(r.body) as Echoed;
  t.is(seen.url, '/p?q=1');
  t.is(seen.method, 'GET');
  const { host, port } = sc.addresses().get('web')!;
  t.is(seen.headers.host, `${host}:${port}`);
  t.is(seen.headers['x-app'], 'cart');
  t.is(seen.headers['x-forwarded-for'], '127.0.0.1');
  t.is(a.requests.at(-1)!.httpVersion, '1.1');
  t.false(Object.keys(seen.headers).some((h) => h.startsWith(':')), 'no pseudo-header reaches an HTTP/1.1 upstream');
  // The same address, HTTP/1.1.
  const h1 = await get(`${listenerUrl(sc, 'web')}/h1`);
  t.is(h1.status, 200);
  t.is((JSON.parse(h1.body) as Echoed).url, '/h1');
  // curl, a client of its own.
  const { stdout } = await run(toolPath('curl'), ['-sS', '--http2-prior-knowledge', '-o', '/dev/null', '-w', '%{http_version} %{http_code}', `${listenerUrl(sc, 'web')}/curl`]);
  t.is(stdout, '2 200');
  t.is(await metric(sc, 'switchyard_requests_total', { listener: 'web', role: 'a', code: '200' }), 3);
});

test('every stream runs the filter chain: one connection gets the 80/20 split per request (±3 points over 2,000), and a header rule pins its own streams', async (t) => {
  const { a, b } = await twoUpstreams(t);
  const sc = await startSidecar(t, split(a, b, [{ type: 'header_route', rules: [{ header: 'x-canary', equals: 'yes', role: 'b' }] }, weighted({ a: 80, b: 20 })]));
  const session = h2Connect(t, sc);
  const count = await rolesOver(session, 2000);
  const share = ((count.b ?? 0) / 2000) * 100;
  t.log(`b got ${share.toFixed(1)} % of 2,000 streams on one connection`);
  t.true(Math.abs(share - 20) <= 3, `b: ${share} %`);
  const pinned = await rolesOver(session, 100, { 'x-canary': 'yes' }, 10);
  t.deepEqual(pinned, { b: 100 });
});

test('a request body without a Content-Length goes to an HTTP/1.1 upstream chunked, whole; one with a Content-Length keeps it', async (t) => {
  const bodies: { te: string | undefined; cl: string | undefined; body: string }[] = [];
  const up = await startUpstream(t, 'a', (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      bodies.push({ te: req.headers['transfer-encoding'], cl: req.headers['content-length'], body: Buffer.concat(chunks).toString() });
      res.end('ok');
    });
  });
  const sc = await startSidecar(t, split(up, up, [weighted({ a: 1, b: 0 })]));
  const session = h2Connect(t, sc);
  const big = 'x'.repeat(100_000);
  t.is((await h2Request(session, '/up', {}, big)).body, 'ok');
  t.is((await h2Request(session, '/up', { 'content-length': '5' }, 'hello')).body, 'ok');
  t.deepEqual(bodies, [{ te: 'chunked', cl: undefined, body: big }, { te: undefined, cl: '5', body: 'hello' }]);
});

test('trailers of a chunked HTTP/1.1 answer reach an HTTP/2 client (nghttp), and the reason phrase is dropped', async (t) => {
  const up = await startUpstream(t, 'a', (req, res) => {
    req.resume();
    res.writeHead(200, 'Fine Thanks', { 'content-type': 'text/plain', trailer: 'x-checksum' });
    res.write('part one\n');
    res.addTrailers({ 'x-checksum': 'abc123' });
    res.end('part two\n');
  });
  const sc = await startSidecar(t, split(up, up, [weighted({ a: 1, b: 0 })]));
  const r = await h2Request(h2Connect(t, sc), '/t');
  t.is(r.body, 'part one\npart two\n');
  t.is(r.trailers['x-checksum'], 'abc123');
  const { stdout } = await run(toolPath('nghttp'), ['-v', `${listenerUrl(sc, 'web')}/t`], { timeout: 10_000 });
  t.regex(stdout, /recv \(stream_id=\d+\) x-checksum: abc123/);
  t.regex(stdout, /recv \(stream_id=\d+\) :status: 200/);
});

test('an answer with a Content-Length ends with its last DATA frame (no trailers asked for, no empty frame after it); a client that says TE: trailers still gets an upstream\'s trailers', async (t) => {
  const up = await startUpstream(t, 'a', (req, res) => {
    req.resume();
    if (req.url === '/trailers') {
      res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-checksum' });
      res.addTrailers({ 'x-checksum': 'abc123' });
      res.end('chunked\n');
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '6' });
    res.end('sized\n');
  });
  const sc = await startSidecar(t, split(up, up, [weighted({ a: 1, b: 0 })]));
  const frames = async (path: string, headers: string[] = []): Promise<string[]> => {
    const { stdout } = await run(toolPath('nghttp'), ['-v', ...headers.flatMap((h) => ['-H', h]), `${listenerUrl(sc, 'web')}${path}`], { timeout: 10_000 });
    return stdout.split('\n').filter((l) => / recv (DATA|HEADERS) frame /.test(l));
  };
  const sized = await frames('/sized');
  // HEADERS, then one DATA frame that carries the body and END_STREAM (flags 0x01).
  t.is(sized.length, 2, sized.join('\n'));
  t.regex(sized[1]!, /recv DATA frame <length=6, flags=0x01,/);
  const chunked = await frames('/trailers', ['te: trailers']);
  t.regex(chunked.at(-1)!, /recv HEADERS frame <length=\d+, flags=0x05,/, 'the trailers end the stream');
});

test('a reload never cuts an HTTP/2 connection: a stream open across it finishes on its generation, the next streams on the same connection use the new weights', async (t) => {
  let release: (() => void) | null = null;
  const slow = await startUpstream(t, 'a', (req, res) => {
    req.resume();
    if (req.url === '/slow') release = () => res.end(JSON.stringify({ role: 'a' }));
    else res.end(JSON.stringify({ role: 'a' }));
  });
  const b = await startUpstream(t, 'b');
  const { paths } = await tempFiles(t, { 'access.log': '' });
  const base = split(slow, b, [weighted({ a: 1, b: 0 })], { accessLog: { path: paths['access.log']! } });
  const cfg = (w: Record<string, number>): ConfigSpec => ({ ...base, listeners: { web: { ...base.listeners!.web!, filters: [weighted(w)] } } });
  const sc = await startSidecar(t, cfg({ a: 1, b: 0 }));
  const session = h2Connect(t, sc);
  const long = h2Request(session, '/slow');
  await within((async () => { while (release === null) await new Promise((r) => setTimeout(r, 5)); })(), 5_000, 'the slow request upstream');
  const before = sc.runtime.current!.number;
  t.is((await putConfig(sc, cfg({ a: 0, b: 1 }))).status, 200);
  const after = await rolesOver(session, 20, {}, 5);
  t.deepEqual(after, { b: 20 }, 'new streams on the old connection take the new weights');
  release!();
  const r = await long;
  t.is(r.status, 200);
  const [line] = await untilLogLines(paths['access.log']!, (l) => l.path === '/slow');
  t.is(line!.generation, before, 'the stream open across the reload was served by its own generation');
  t.is(line!.role, 'a');
  t.false(session.destroyed || session.closed, 'the connection is still open');
});

test('removing the listener sends GOAWAY; the stream it had open still finishes', async (t) => {
  let release: (() => void) | null = null;
  const up = await startUpstream(t, 'a', (req, res) => {
    req.resume();
    release = () => res.end('done');
  });
  const other = await startUpstream(t, 'o');
  const config = split(up, up, [weighted({ a: 1, b: 0 })], { drainTimeout: '2s' } as Partial<ConfigSpec>);
  const sc = await startSidecar(t, config);
  const session = h2Connect(t, sc);
  const open = h2Request(session, '/held');
  await within((async () => { while (release === null) await new Promise((r) => setTimeout(r, 5)); })(), 5_000, 'the request upstream');
  const goaway = nextGoaway(session);
  const moved = split(other, other, [weighted({ a: 1, b: 0 })], { drainTimeout: '2s' } as Partial<ConfigSpec>);
  const without: ConfigSpec = { ...moved, listeners: { other: moved.listeners!.web! } };
  t.is((await putConfig(sc, without)).status, 200);
  t.is(await goaway, constants.NGHTTP2_NO_ERROR);
  release!();
  t.is((await open).body, 'done');
});

test('stopping switchyard sends GOAWAY to HTTP/2 clients and lets their open streams finish', async (t) => {
  let release: (() => void) | null = null;
  const up = await startUpstream(t, 'a', (req, res) => {
    req.resume();
    release = () => res.end('finished');
  });
  const sc = await startSidecar(t, split(up, up, [weighted({ a: 1, b: 0 })], { drainTimeout: '4s' } as Partial<ConfigSpec>));
  const session = h2Connect(t, sc);
  const open = h2Request(session, '/held');
  await within((async () => { while (release === null) await new Promise((r) => setTimeout(r, 5)); })(), 5_000, 'the request upstream');
  const goaway = nextGoaway(session);
  const stopped = sc.stop();
  t.is(await goaway, constants.NGHTTP2_NO_ERROR);
  release!();
  t.is((await open).body, 'finished');
  await stopped;
});

test('a client that resets streams as fast as it opens them (rapid reset, CVE-2023-44487) has its connection closed with ENHANCE_YOUR_CALM; others are served', async (t) => {
  const up = await startUpstream(t, 'a', (req, res) => {
    req.resume();
    setTimeout(() => res.end('late'), 200);
  });
  const sc = await startSidecar(t, split(up, up, [weighted({ a: 1, b: 0 })]));
  const attacker = h2Connect(t, sc);
  const goaway = nextGoaway(attacker);
  await within(new Promise<void>((resolve) => attacker.once('connect', () => resolve())), 5_000, 'connect');
  for (let i = 0; i < RESET_BUDGET * 3 && !attacker.destroyed && !attacker.closed; i++) {
    const s = attacker.request({ ':path': `/r${i}` });
    s.on('error', () => {});
    s.close(constants.NGHTTP2_CANCEL);
    if (i % 50 === 49) await new Promise((r) => setImmediate(r));
  }
  t.is(await goaway, constants.NGHTTP2_ENHANCE_YOUR_CALM);
  const honest = h2Connect(t, sc);
  t.is((await h2Request(honest, '/ok')).body, 'late');
});

test('the listener advertises its stream limit, and a stream over it is refused without harming the others', async (t) => {
  const up = await startUpstream(t, 'a', (req, res) => {
    req.resume();
    setTimeout(() => res.end('ok'), 300);
  });
  const base = split(up, up, [weighted({ a: 1, b: 0 })]);
  base.listeners!.web!.http2 = { maxConcurrentStreams: 4 };
  const sc = await startSidecar(t, base);
  const session = h2Connect(t, sc);
  await within(new Promise<void>((resolve) => session.once('remoteSettings', () => resolve())), 5_000, 'SETTINGS');
  t.is(session.remoteSettings.maxConcurrentStreams, 4);
  const replies = await Promise.all(Array.from({ length: 8 }, (_, i) => h2Request(session, `/c${i}`)));
  // Node's client queues what the limit does not allow; every one is answered in turn.
  t.true(replies.every((r) => r.body === 'ok'));
});

test('http2 settings are checked: maxConcurrentStreams is a positive integer, on http listeners only', async (t) => {
  const issues = async (listener: Record<string, unknown>): Promise<string> => {
    const text = yaml(configOf({ roles: { r: role('127.0.0.1:1') }, listeners: { web: { address: '127.0.0.1:0', target: 'r.http', ...listener } } }));
    const r = await checkConfig(parseConfigTexts([{ name: 'test.yaml', text }], ROOT), {});
    return r.ok ? '' : r.issues.map(formatIssue).join('\n');
  };
  t.is(await issues({ http2: { maxConcurrentStreams: 10 } }), '');
  t.regex(await issues({ http2: { maxConcurrentStreams: 0 } }), /listeners\.web\.http2\.maxConcurrentStreams/);
  t.regex(await issues({ http2: { streams: 1 } }), /listeners\.web\.http2\.streams/);
  t.regex(await issues({ protocol: 'tcp', address: '127.0.0.1:1234', http2: { maxConcurrentStreams: 10 } }), /http2 is for http listeners/);
});

test('a TLS listener offers ALPN h2 and http/1.1: an h2 client gets HTTP/2, with its client certificate in the access log', async (t) => {
  const ca = await makePki('h2 listener CA');
  t.teardown(() => ca.close());
  const [server, clientCert] = await Promise.all([ca.leaf('proxy', ['proxy.test', '127.0.0.1']), ca.leaf('app', ['app.test'], { client: true })]);
  const { paths } = await tempFiles(t, {
    'cert.pem': server.cert, 'key.pem': server.key, 'ca.pem': ca.ca.cert, 'access.log': '', 'client.pem': clientCert.cert, 'client-key.pem': clientCert.key,
  });
  const up = await startUpstream(t, 'a');
  const config = split(up, up, [weighted({ a: 1, b: 0 })], { accessLog: { path: paths['access.log']! } });
  config.listeners!.web!.tls = { cert: paths['cert.pem'], key: paths['key.pem'], clientCa: paths['ca.pem'] };
  const sc = await startSidecar(t, config);
  const session = h2Connect(t, sc, 'web', { ca: ca.ca.cert, servername: 'proxy.test', cert: clientCert.cert, key: clientCert.key });
  const r = await h2Request(session, '/tls');
  t.is(r.status, 200);
  t.is((JSON.parse(r.body) as Echoed).url, '/tls');
  t.is(session.alpnProtocol, 'h2');
  const [line] = await untilLogLines(paths['access.log']!, (l) => l.path === '/tls');
  t.regex(String(line!.clientCert), /CN=app/);
  // curl negotiates h2 by ALPN, and HTTP/1.1 when told to.
  const { host, port } = sc.addresses().get('web')!;
  const curl = async (...args: string[]): Promise<string> => (await run(toolPath('curl'), ['-sS', '-o', '/dev/null', '-w', '%{http_version} %{http_code}',
    '--cacert', paths['ca.pem']!, '--cert', paths['client.pem']!, '--key', paths['client-key.pem']!, '--resolve', `proxy.test:${port}:${host}`, ...args,
    `https://proxy.test:${port}/curl`])).stdout;
  t.is(await curl('--http2'), '2 200');
  t.is(await curl('--http1.1'), '1.1 200');
});

/** A raw HTTP/2 frame: length, type, flags, stream id, payload (RFC 9113 §4.1). */
function frame(type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream, 5);
  return Buffer.concat([head, payload]);
}

for (const [what, flood] of [
  ['PING', () => frame(0x6, 0, 0, Buffer.alloc(8))],
  ['SETTINGS', () => frame(0x4, 0, 0)],
] as const) {
  test(`a client that floods ${what} frames and never reads the acknowledgements has its connection closed; the listener serves others`, async (t) => {
    const up = await startUpstream(t, 'a');
    const config = split(up, up, [weighted({ a: 1, b: 0 })]);
    config.listeners!.web!.timeouts = { keepAlive: '1s' };
    const sc = await startSidecar(t, config);
    const { host, port } = sc.addresses().get('web')!;
    const socket = netConnect({ host, port });
    socket.on('error', () => {});
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    // The session is up once the proxy's own SETTINGS come back.
    socket.write(Buffer.concat([CLIENT_PREFACE, frame(0x4, 0, 0)]));
    await within(new Promise((resolve) => socket.once('data', resolve)), 5_000, "the proxy's SETTINGS");
    t.is(sc.runtime.sockets.all().reduce((n, ls) => n + ls.h2.size, 0), 1);
    // From now on never read: the acknowledgements queue up on the proxy's side.
    socket.pause();
    const batch = Buffer.concat(Array.from({ length: 2000 }, flood));
    let sent = 0;
    while (!socket.destroyed && sent < 50) {
      if (!socket.write(batch)) await new Promise((r) => socket.once('drain', r).once('close', r));
      sent++;
    }
    const sessions = (): number => sc.runtime.sockets.all().reduce((n, ls) => n + ls.h2.size, 0);
    await until(() => sessions() === 0, 10_000, 'the proxy dropped the flooding connection');
    // The client sees the close once it reads again.
    socket.resume();
    await within(closed, 10_000, 'the flooding connection closed');
    t.log(`the client had written ${sent} batches of 2,000 frames`);
    t.is((await h2Request(h2Connect(t, sc), '/ok')).status, 200);
  });
}

/** A raw client connection to the listener; its bytes as they come, and its close. */
async function rawClient(sc: Parameters<typeof h2Connect>[1]): Promise<{ socket: ReturnType<typeof netConnect>; bytes: () => Buffer; closed: Promise<void> }> {
  const { host, port } = sc.addresses().get('web')!;
  const socket = netConnect({ host, port, noDelay: true });
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  socket.on('error', () => {});
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  return { socket, bytes: () => Buffer.concat(chunks), closed };
}

test('the HTTP/2 preface cut in pieces by the network is still HTTP/2, and its session serves a stream', async (t) => {
  const up = await startUpstream(t, 'a');
  const sc = await startSidecar(t, split(up, up, [weighted({ a: 1, b: 0 })]));
  const c = await rawClient(sc);
  // One piece per read: the listener must wait for the rest before it decides.
  for (const [from, to] of [[0, 3], [3, 10], [10, CLIENT_PREFACE.length]]) {
    c.socket.write(CLIENT_PREFACE.subarray(from, to));
    await new Promise((resolve) => setTimeout(resolve, 30));
  }
  c.socket.write(frame(0x4, 0, 0));
  // The answer is a SETTINGS frame (type 4 on stream 0), not an HTTP/1.1 400.
  await until(() => c.bytes().length >= 9, 5_000, "the proxy's SETTINGS");
  const got = c.bytes();
  t.is(got[3], 0x4);
  t.is(got.readUInt32BE(5) & 0x7fffffff, 0);
  t.false(got.toString('latin1').startsWith('HTTP/'));
  t.is(sc.runtime.sockets.all().reduce((n, ls) => n + ls.h2.size, 0), 1);
  c.socket.destroy();
  // And a client's session over the same listener serves.
  t.is((await h2Request(h2Connect(t, sc), '/after')).status, 200);
});

test('a plain connection that sends nothing within timeouts.headers is closed without an answer; one that starts as the preface does but is HTTP/1.1 is served as HTTP/1.1', async (t) => {
  const up = await startUpstream(t, 'a');
  const config = split(up, up, [weighted({ a: 1, b: 0 })]);
  config.listeners!.web!.timeouts = { headers: '1s' };
  const sc = await startSidecar(t, config);
  const silent = await rawClient(sc);
  await within(silent.closed, 5_000, 'the silent connection closed');
  t.is(silent.bytes().length, 0, 'no 408 to a connection that never said which HTTP it speaks');
  // "P", as the preface starts, then not the preface: HTTP/1.1.
  const h1 = await rawClient(sc);
  h1.socket.write('P');
  await new Promise((resolve) => setTimeout(resolve, 30));
  h1.socket.write('OST /x HTTP/1.1\r\nHost: svc\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi');
  await within(h1.closed, 5_000, 'the HTTP/1.1 answer');
  t.regex(h1.bytes().toString('latin1'), /^HTTP\/1\.1 200 /);
  t.is(up.requests.at(-1)!.method, 'POST');
});

test('a stream whose client never reads holds a bounded amount: flow control stops the upstream, not the proxy\'s memory', async (t) => {
  let written = 0;
  let stalled: (() => void) | null = null;
  const stall = new Promise<void>((resolve) => { stalled = resolve; });
  const chunk = Buffer.alloc(64 * 1024, 'x');
  const up = await startUpstream(t, 'a', (req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    const pump = (): void => {
      while (written < 256 * 1024 * 1024) {
        written += chunk.length;
        if (!res.write(chunk)) {
          res.once('drain', pump);
          // The upstream is held back: note it once it stays so for a while.
          setTimeout(() => { if (res.writableNeedDrain) stalled?.(); }, 500);
          return;
        }
      }
      res.end();
    };
    pump();
  });
  const sc = await startSidecar(t, split(up, up, [weighted({ a: 1, b: 0 })], { drainTimeout: '1s' } as Partial<ConfigSpec>));
  const session = h2Connect(t, sc);
  const stream = session.request({ ':path': '/big' });
  stream.on('error', () => {});
  stream.pause(); // never reads
  await within(stall, 10_000, 'the upstream held back');
  const held = written;
  await new Promise((r) => setTimeout(r, 500));
  t.true(written - held <= chunk.length * 2, 'the upstream stays held back');
  t.true(written < 32 * 1024 * 1024, `the upstream could write ${(written / 1048576).toFixed(1)} MiB before it was held back`);
  t.log(`held back after ${(written / 1048576).toFixed(1)} MiB`);
  stream.close();
});

test('a client\'s request trailers reach an HTTP/1.1 upstream after the last chunk, from an HTTP/1.1 chunked body and from an HTTP/2 stream; fields a trailer may not carry (authorization, host) do not', async (t) => {
  const seen: { body: string; trailers: Record<string, string | undefined> }[] = [];
  const up = await startUpstream(t, 'a', (req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => { body += c; });
    req.on('end', () => {
      seen.push({ body, trailers: { ...req.trailers } });
      res.end('ok');
    });
  });
  const sc = await startSidecar(t, split(up, up, [weighted({ a: 1, b: 0 })]));
  await uploadsWithTrailers(t, sc);
  t.deepEqual(seen, [{ body: 'hello', trailers: { 'x-sum': '42' } }, { body: 'world', trailers: { 'x-sum': '7' } }]);
});

test('an answer without a body (HEAD, 204) is one HEADERS frame that ends the stream; Expect: 100-continue gets 100 before the body is sent, another expectation 417', async (t) => {
  const up = await startUpstream(t, 'a', (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.url === '/empty') {
        res.writeHead(204);
        res.end();
        return;
      }
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '6' });
      res.end(req.method === 'POST' ? Buffer.concat(chunks).toString().slice(0, 6).padEnd(6, '.') : 'sized\n');
    });
  });
  const sc = await startSidecar(t, split(up, up, [weighted({ a: 1, b: 0 })]));
  const frames = async (path: string, headers: string[] = []): Promise<string[]> => {
    const { stdout } = await run(toolPath('nghttp'), ['-v', ...headers.flatMap((h) => ['-H', h]), `${listenerUrl(sc, 'web')}${path}`], { timeout: 10_000 });
    return stdout.split('\n').filter((l) => / recv (DATA|HEADERS) frame /.test(l));
  };
  for (const [what, path, headers] of [['HEAD', '/sized', [':method: HEAD']], ['204', '/empty', []]] as const) {
    const got = await frames(path, [...headers]);
    t.is(got.length, 1, `${what}: ${got.join('\n')}`);
    t.regex(got[0]!, /recv HEADERS frame <length=\d+, flags=0x05,/, `${what}: END_STREAM on the HEADERS`);
  }

  const session = h2Connect(t, sc);
  const continued = await within(new Promise<{ continued: boolean; status: number; body: string }>((resolve, reject) => {
    const stream = session.request({ ':method': 'POST', ':path': '/upload', expect: '100-continue' }, { endStream: false });
    let continued = false;
    let status = 0;
    const chunks: Buffer[] = [];
    stream.once('continue', () => {
      continued = true;
      stream.end('hello!');
    });
    stream.on('response', (h) => { status = Number(h[':status']); });
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => resolve({ continued, status, body: Buffer.concat(chunks).toString() }));
    stream.on('error', reject);
  }), 10_000, 'the 100-continue upload');
  t.deepEqual(continued, { continued: true, status: 200, body: 'hello!' });
  const refused = await h2Request(session, '/other', { expect: 'something-else' });
  t.is(refused.status, 417);
  t.is(up.requests.filter((r) => r.url === '/other').length, 0, 'an unmet expectation never reaches the upstream');
});

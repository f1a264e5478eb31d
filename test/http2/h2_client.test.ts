import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { connect as http2Connect, constants, createServer, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import { connect, createServer as createNetServer, type AddressInfo } from 'node:net';
import { request } from 'undici';
import { H2Connection, type StreamHandler } from '../../src/http2/h2_client.js';
import { encodeFields, HpackDecoder } from '../../src/http2/hpack.js';
import { H2Pool } from '../../src/upstream/h2_pool.js';
import { uploadsWithTrailers } from './support.js';
import { configOf, get, listenerUrl, startSidecar, uniqueHost, weighted, within, type ConfigSpec } from '../helpers.js';

/*
 * switchyard's HTTP/2 client (the upstream side of protocol: http2): HPACK against
 * RFC 7541's examples and Node's own encoder, and the connection against Node's
 * http2 server: big header blocks, flow control both ways, a peer that is not HTTP/2.
 */

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

test('HPACK decodes RFC 7541 C.3 and C.4 (literals, then Huffman), keeping the dynamic table across the requests', (t) => {
  const plain = new HpackDecoder();
  t.deepEqual(plain.decode(hex('8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d')),
    [':method', 'GET', ':scheme', 'http', ':path', '/', ':authority', 'www.example.com']);
  t.deepEqual(plain.decode(hex('8286 84be 5808 6e6f 2d63 6163 6865')),
    [':method', 'GET', ':scheme', 'http', ':path', '/', ':authority', 'www.example.com', 'cache-control', 'no-cache']);
  const huffman = new HpackDecoder();
  t.deepEqual(huffman.decode(hex('8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff')),
    [':method', 'GET', ':scheme', 'http', ':path', '/', ':authority', 'www.example.com']);
  t.deepEqual(huffman.decode(hex('8286 84be 5886 a8eb 1064 9cbf')),
    [':method', 'GET', ':scheme', 'http', ':path', '/', ':authority', 'www.example.com', 'cache-control', 'no-cache']);
  t.deepEqual(huffman.decode(hex('8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf')),
    [':method', 'GET', ':scheme', 'https', ':path', '/index.html', ':authority', 'www.example.com', 'custom-key', 'custom-value']);
});

test('HPACK refuses what breaks its rules: an index beyond the tables, bad Huffman padding, a size update above the limit', (t) => {
  t.throws(() => new HpackDecoder().decode(hex('be')), { message: /beyond the tables/ });
  // "a" (00011) padded with zeros instead of ones.
  t.throws(() => new HpackDecoder().decode(hex('0001 61 81 18')), { message: /padding/ });
  t.throws(() => new HpackDecoder().decode(hex('3fe2 1f')), { message: /table size/ });
});

test('HPACK encodes what it decodes: static pairs, static names, new names, values longer than a one-byte length', (t) => {
  const fields = [':method', 'POST', ':scheme', 'http', ':authority', 'svc.internal:8080', ':path', '/a?b=c',
    'content-type', 'application/grpc', 'x-long', 'v'.repeat(300), 'te', 'trailers', 'accept-encoding', 'gzip, deflate'];
  t.deepEqual(new HpackDecoder().decode(encodeFields(fields)), fields);
  // Entries are sized by their bytes: a value of 2,100 latin1 bytes above 0x7f fits the 4,096-byte table.
  const wide = new HpackDecoder();
  const value = 'ü'.repeat(2100);
  wide.decode(Buffer.concat([Buffer.from([0x40, 0x01, 0x61, 0x7f, ...intTail(2100 - 127)]), Buffer.from(value, 'latin1')]));
  t.deepEqual(wide.decode(Buffer.from([0xbe])), ['a', value]);
});

interface Got { status: number; fields: string[]; body: Buffer; trailers: string[] | null; code: number; err: Error | null }

/** One request on a connection, collected whole. */
function collect(conn: H2Connection, fields: string[], body?: Buffer): Promise<Got> {
  return within(new Promise<Got>((resolve) => {
    const got: Got = { status: 0, fields: [], body: Buffer.alloc(0), trailers: null, code: -1, err: null };
    const chunks: Buffer[] = [];
    const handler: StreamHandler = {
      onResponse: (status, f) => { got.status = status; got.fields = f; },
      onData: (c) => { chunks.push(Buffer.from(c)); return true; },
      onTrailers: (f) => { got.trailers = f; },
      onEnd: () => { got.code = 0; got.body = Buffer.concat(chunks); resolve(got); },
      onClose: (code, err) => { got.code = code; got.err = err; got.body = Buffer.concat(chunks); resolve(got); },
      onDrain: () => {},
    };
    const stream = conn.request(fields, body === undefined, handler);
    if (body !== undefined) stream.end(body);
  }), 10_000, 'an HTTP/2 exchange');
}

test('answers with many and large fields decode as Node\'s encoder sent them (dynamic table evictions, CONTINUATION), with trailers', async (t) => {
  const server = createServer({ maxHeaderListPairs: 4000 });
  const sent: Record<string, string>[] = [];
  server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
    const n = Number(headers['x-n']);
    const fields: Record<string, string> = {};
    // Names and values that repeat across answers (indexed), change (evicting), and one block above 16 KiB;
    // values are bytes (Node sends a string's latin1 bytes, and so do we).
    for (let i = 0; i < 40; i++) fields[`x-field-${i % 13}-${n % 3}`] = `value ${i} of ${n} ${'ü'.repeat(i % 5)}`;
    if (n === 3) fields['x-big'] = 'b'.repeat(20_000);
    sent[n] = fields;
    stream.respond({ ':status': 200, ...fields }, { waitForTrailers: true });
    stream.on('wantTrailers', () => stream.sendTrailers({ 'x-checksum': `sum-${n}` }));
    stream.end(`body ${n}`);
  });
  const host = uniqueHost();
  await new Promise<void>((r) => server.listen(0, host, r));
  const socket = connect({ host, port: (server.address() as AddressInfo).port });
  const conn = new H2Connection(socket, { closed: () => {}, settings: () => {} });
  t.teardown(() => { conn.destroy(); server.close(); });
  for (let n = 0; n < 8; n++) {
    const got = await collect(conn, [':method', 'GET', ':scheme', 'http', ':authority', host, ':path', '/', 'x-n', String(n)]);
    t.is(got.status, 200);
    t.is(got.code, 0);
    t.is(got.body.toString(), `body ${n}`);
    t.deepEqual(got.trailers, ['x-checksum', `sum-${n}`]);
    const byName: Record<string, string> = {};
    for (let i = 0; i < got.fields.length; i += 2) if (got.fields[i]!.startsWith('x-')) byName[got.fields[i]!] = got.fields[i + 1]!;
    // White space around a value is not part of it: switchyard trims it.
    t.deepEqual(byName, Object.fromEntries(Object.entries(sent[n]!).map(([k, v]) => [k, v.trim()])));
  }
});

test('flow control both ways: 5 MB up and down through an http2 channel whose upstream allows a 1 KiB window arrive whole (sha256)', async (t) => {
  const server = createServer({ settings: { initialWindowSize: 1024 } });
  server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
    stream.on('error', () => {});
    const hash = createHash('sha256');
    stream.on('data', (c: Buffer) => hash.update(c));
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'x-upload-sha256': hash.digest('hex') });
      if (headers[':path'] === '/download') stream.end(DOWNLOAD);
      else stream.end('ok');
    });
  });
  const sc = await viaHttp2Channel(t, server);
  const upload = randomBytes(5 * 1024 * 1024);
  const up = await request(`${listenerUrl(sc, 'web')}/upload`, { method: 'POST', body: upload });
  t.is(up.statusCode, 200);
  await up.body.text();
  t.is(up.headers['x-upload-sha256'], createHash('sha256').update(upload).digest('hex'));
  const down = await request(`${listenerUrl(sc, 'web')}/download`);
  t.is(down.statusCode, 200);
  t.is(createHash('sha256').update(Buffer.from(await down.body.arrayBuffer())).digest('hex'), createHash('sha256').update(DOWNLOAD).digest('hex'));
});

const DOWNLOAD = randomBytes(5 * 1024 * 1024);

/** A sidecar whose one listener reaches `server` (listening here, on its own host) as an http2 channel. */
async function viaHttp2Channel(t: Parameters<typeof startSidecar>[0], server: { listen(port: number, host: string, cb: () => void): unknown; address(): unknown; close(): unknown }) {
  const host = uniqueHost();
  await new Promise<void>((r) => server.listen(0, host, r));
  t.teardown(() => server.close());
  const config: ConfigSpec = configOf({
    roles: { a: { channels: { http: { endpoints: [`${host}:${(server.address() as AddressInfo).port}`], protocol: 'http2' } } } },
    listeners: { web: { address: `${uniqueHost()}:0`, target: 'a.http', filters: [weighted({ a: 1 })] } },
  } as ConfigSpec);
  return startSidecar(t, config);
}

test('an endpoint that does not speak HTTP/2 is a failed exchange: 502, no hang, and the proxy keeps serving', async (t) => {
  const server = createNetServer((s) => {
    s.on('error', () => {});
    s.end('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
  });
  const sc = await viaHttp2Channel(t, server);
  for (let i = 0; i < 3; i++) t.is((await get(`${listenerUrl(sc, 'web')}/x`)).status, 502);
});

test('HPACK bounds the list a block makes (references to one big entry cannot make it grow past the limit), and still keeps its table', (t) => {
  const decoder = new HpackDecoder();
  // One 3,000-byte entry added to the table (literal with incremental indexing), then 30 references to it.
  const value = 'v'.repeat(3000);
  const literal = [0x40, 0x01, 0x78, 0x7f, ...intTail(3000 - 127)];
  const block = Buffer.concat([Buffer.from(literal), Buffer.from(value), Buffer.alloc(30, 0xbe)]);
  t.is(decoder.decode(block, 64 * 1024), null);
  t.deepEqual(decoder.decode(Buffer.from([0xbe])), ['x', value], 'the block was read whole: its entry is in the table');
  t.is(new HpackDecoder().decode(block)!.length, 62, 'without a limit: the entry and its 30 references');
});

/** The bytes after a full 7-bit prefix for an integer's remainder (RFC 7541 §5.1). */
function intTail(v: number): number[] {
  const out: number[] = [];
  while (v >= 128) {
    out.push((v % 128) | 128);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return out;
}

/** An h2c server on its own host, closed at teardown. */
async function h2Server(t: Parameters<typeof startSidecar>[0], onStream: (s: ServerHttp2Stream, h: IncomingHttpHeaders) => void, settings = {}) {
  const server = createServer({ settings, maxHeaderListPairs: 10_000, maxSendHeaderBlockLength: 1 << 20 });
  server.on('stream', (s: ServerHttp2Stream, h: IncomingHttpHeaders) => {
    s.on('error', () => {});
    onStream(s, h);
  });
  const host = uniqueHost();
  await new Promise<void>((r) => server.listen(0, host, r));
  t.teardown(() => server.close());
  return { server, host, port: (server.address() as AddressInfo).port };
}

/** One exchange through an H2Pool: how it ended. */
function poolRun(pool: H2Pool, path: string, onComplete?: (trailers: string[] | null) => void): Promise<string> {
  return within(new Promise<string>((resolve) => pool.dispatch({ method: 'GET', path, headers: [], body: null, length: 0 }, {
    onConnect() {}, onRequestSent() {}, onHeaders: () => true, onData: () => true,
    onComplete: (trailers) => { resolve('complete'); onComplete?.(trailers); },
    onError: (err) => resolve(`error: ${err.message}`),
  })), 10_000, `the exchange ${path}`);
}

test('an answer shorter than its Content-Length, or a stream closed with NO_ERROR before any answer, is a failed exchange, not a complete one', async (t) => {
  const { host, port } = await h2Server(t, (s, h) => {
    if (h[':path'] === '/short') {
      s.respond({ ':status': 200, 'content-length': '100' });
      s.write('only 10 b.');
      setTimeout(() => s.close(constants.NGHTTP2_NO_ERROR), 50);
    } else s.close(constants.NGHTTP2_NO_ERROR);
  });
  const pool = new H2Pool(host, port, host, 2_000);
  t.teardown(() => pool.destroy());
  t.regex(await poolRun(pool, '/short'), /^error: .*10 bytes, not the 100 its Content-Length said/);
  t.regex(await poolRun(pool, '/none'), /^error: the upstream reset the stream/);
});

test('a field the protocol forbids, a header list above 64 KiB, or a handler that throws ends that stream only: the others on the connection finish', async (t) => {
  const { host, port } = await h2Server(t, (s, h) => {
    const path = h[':path'];
    if (path === '/slow') {
      s.respond({ ':status': 200 });
      setTimeout(() => s.end('slow done'), 300);
      return;
    }
    if (path === '/bigblock') {
      // 100 KB of random base64: Huffman cannot take it under 64 KiB, no entry can index it.
      s.respond({ ':status': 200, 'x-big': randomBytes(75_000).toString('base64') });
      s.end();
      return;
    }
    if (path === '/big') {
      // 1,500 repeats of one field: a few KiB on the wire (indexed), 1,500 × 55 = 82 KB as a header list.
      s.respond({ ':status': 200, 'x-a': Array(1500).fill('v'.repeat(20)) });
      s.end();
      return;
    }
    s.respond({ ':status': 200 }, { waitForTrailers: true });
    s.on('wantTrailers', () => s.sendTrailers(path === '/crlf' ? { 'x-t': 'a\r\nb' } : { 'x-t': 'fine' }));
    setTimeout(() => s.end('body'), 50);
  });
  const pool = new H2Pool(host, port, host, 2_000);
  t.teardown(() => pool.destroy());
  const slow = poolRun(pool, '/slow');
  t.regex(await poolRun(pool, '/crlf'), /^error: .*NUL, CR or LF in the value of x-t/);
  t.regex(await poolRun(pool, '/big'), /^error: .*header list above 65536 bytes/);
  t.regex(await poolRun(pool, '/bigblock'), /^error: .*header list above 65536 bytes/);
  const threw = await poolRun(pool, '/throws', () => { throw new Error('the data path failed on this answer'); });
  t.is(threw, 'complete', 'the handler saw the answer, then threw');
  t.is(await slow, 'complete');
  t.is(await poolRun(pool, '/after'), 'complete', 'the connection still serves');
});

test('a request body held by its stream window goes on when the upstream raises SETTINGS_INITIAL_WINDOW_SIZE (no WINDOW_UPDATE for the stream)', async (t) => {
  let got = 0;
  const { server, host, port } = await h2Server(t, (s) => {
    s.pause();
    setTimeout(() => s.session!.settings({ initialWindowSize: 1 << 20 }), 200);
    // It reads only later: no stream WINDOW_UPDATE comes before the SETTINGS.
    setTimeout(() => {
      s.on('data', (c: Buffer) => { got += c.length; });
      s.on('end', () => { s.respond({ ':status': 200 }); s.end(); });
      s.resume();
    }, 400);
  });
  server.on('session', (session) => session.setLocalWindowSize(8 << 20));
  const conn = new H2Connection(connect({ host, port }), { closed: () => {}, settings: () => {} });
  t.teardown(() => conn.destroy());
  const status = await within(new Promise<number>((resolve, reject) => {
    const stream = conn.request([':method', 'POST', ':scheme', 'http', ':authority', host, ':path', '/'], false, {
      onResponse: (s) => resolve(s), onData: () => true, onTrailers() {}, onEnd() {},
      onClose: (_code, err) => reject(err ?? new Error('reset')),
      onDrain: () => stream.end(),
    });
    t.false(stream.write(Buffer.alloc(70_000, 1)), 'more than the 65,535-byte stream window: it waits');
  }), 10_000, 'the upload');
  t.is(status, 200);
  t.is(got, 70_000);
});

test('a burst to a cold pool beyond the endpoint\'s stream limit is all served: connections opened once its SETTINGS came take the limit it said', async (t) => {
  let sessions = 0;
  const { server, host, port } = await h2Server(t, (s) => setTimeout(() => {
    s.respond({ ':status': 200 });
    s.end('ok');
  }, 100), { maxConcurrentStreams: 5 });
  server.on('session', () => sessions++);
  const pool = new H2Pool(host, port, host, 2_000);
  t.teardown(() => pool.destroy());
  // All at once, before the first connection heard the limit: 15 of them are refused, then sent again.
  const results = await Promise.all(Array.from({ length: 20 }, (_, i) => poolRun(pool, `/burst/${i}`)));
  t.deepEqual(results, Array(20).fill('complete'));
  t.true(sessions >= 4, `${sessions} connections for 20 streams at 5 per connection`);
});

test('a client\'s request trailers reach an HTTP/2 upstream after the body, from an HTTP/1.1 chunked body and from an HTTP/2 stream; fields a trailer may not carry do not', async (t) => {
  const seen: { body: string; trailers: Record<string, unknown> }[] = [];
  const server = createServer();
  server.on('stream', (s: ServerHttp2Stream) => {
    let body = '';
    let trailers: Record<string, unknown> = {};
    s.setEncoding('utf8');
    s.on('data', (c: string) => { body += c; });
    s.on('trailers', (h: IncomingHttpHeaders) => { trailers = Object.fromEntries(Object.entries(h)); });
    s.on('end', () => {
      seen.push({ body, trailers });
      s.respond({ ':status': 200 });
      s.end('ok');
    });
  });
  const sc = await viaHttp2Channel(t, server);
  await uploadsWithTrailers(t, sc);
  t.deepEqual(seen, [{ body: 'hello', trailers: { 'x-sum': '42' } }, { body: 'world', trailers: { 'x-sum': '7' } }]);
});

for (const [when, answer] of [
  ['at once', (s: ServerHttp2Stream) => { s.respond({ ':status': 413 }); s.end('too big'); }],
  ['its head at once, its end later, reading nothing', (s: ServerHttp2Stream) => {
    s.pause();
    s.respond({ ':status': 413 });
    setTimeout(() => s.end('too big'), 300);
  }],
] as const) test(`an HTTP/2 upstream that answers before the upload ended (${when}): the client gets the answer and its upload is read away, not stalled`, async (t) => {
  const server = createServer();
  server.on('stream', (s: ServerHttp2Stream) => {
    s.on('error', () => {});
    answer(s);
  });
  const sc = await viaHttp2Channel(t, server);
  const { host, port } = sc.addresses().get('web')!;
  const session = http2Connect(`http://${host}:${port}`);
  session.on('error', () => {});
  t.teardown(() => session.destroy());
  const got = await within(new Promise<{ status: number; body: string; sent: number }>((resolve, reject) => {
    const stream = session.request({ ':method': 'POST', ':path': '/upload' });
    let status = 0;
    let body = '';
    let sent = 0;
    stream.on('response', (h) => { status = Number(h[':status']); });
    stream.setEncoding('utf8');
    stream.on('data', (c: string) => { body += c; });
    stream.on('error', reject);
    const chunk = Buffer.alloc(64 * 1024, 1);
    const pump = (): void => {
      while (sent < 8 * 1024 * 1024) {
        sent += chunk.length;
        if (!stream.write(chunk)) { stream.once('drain', pump); return; }
      }
      stream.end();
    };
    pump();
    stream.on('close', () => resolve({ status, body, sent }));
  }), 10_000, 'the upload and its answer');
  t.deepEqual(got, { status: 413, body: 'too big', sent: 8 * 1024 * 1024 });
});

test('a stream closed with NO_ERROR under a GOAWAY that kept it is a failed exchange, not sent again: the upstream may have processed it', async (t) => {
  let processed = 0;
  const { host, port } = await h2Server(t, (s) => {
    processed++;
    if (processed === 1) {
      s.session!.goaway(constants.NGHTTP2_NO_ERROR, s.id);
      setTimeout(() => s.close(constants.NGHTTP2_NO_ERROR), 50);
      return;
    }
    s.respond({ ':status': 200 });
    s.end('ok');
  });
  const pool = new H2Pool(host, port, host, 2_000);
  t.teardown(() => pool.destroy());
  t.regex(await poolRun(pool, '/once'), /^error: the upstream reset the stream/);
  t.is(processed, 1);
});

test('a handler that throws while its connection fails does not keep the others from hearing it, nor the pool from closing', async (t) => {
  const server = createNetServer((sock) => {
    sock.on('error', () => {});
    sock.write(Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])); // an empty SETTINGS
    setTimeout(() => sock.destroy(), 200); // then the upstream's socket goes
  });
  const host = uniqueHost();
  await new Promise<void>((r) => server.listen(0, host, r));
  t.teardown(() => server.close());
  const pool = new H2Pool(host, (server.address() as AddressInfo).port, host, 2_000);
  const run = (path: string, throws: boolean): Promise<string> => within(new Promise<string>((resolve) => pool.dispatch({ method: 'GET', path, headers: [], body: null, length: 0 }, {
    onConnect() {}, onRequestSent() {}, onHeaders: () => true, onData: () => true,
    onComplete: () => resolve('complete'),
    onError: (err) => {
      resolve(`error: ${err.message}`);
      if (throws) throw new Error('the data path threw in onError');
    },
  })), 5_000, path);
  const [a, b] = await Promise.all([run('/a', true), run('/b', false)]);
  t.regex(a, /^error: /);
  t.regex(b, /^error: /);
  await within(pool.close(), 5_000, 'the pool to close');
});

test('a request field HTTP/2 cannot carry (CR or LF in a value, a name that is not a token) fails its exchange before anything is sent', async (t) => {
  let streams = 0;
  const { host, port } = await h2Server(t, (s) => {
    streams++;
    s.respond({ ':status': 200 });
    s.end('ok');
  });
  const pool = new H2Pool(host, port, host, 2_000);
  t.teardown(() => pool.destroy());
  const run = (headers: string[]): Promise<string> => within(new Promise<string>((resolve) => pool.dispatch({ method: 'GET', path: '/', headers, body: null, length: 0 }, {
    onConnect() {}, onRequestSent() {}, onHeaders: () => true, onData: () => true,
    onComplete: () => resolve('complete'), onError: (err) => resolve(`error: ${err.message}`),
  })), 5_000, 'the exchange');
  t.regex(await run(['x-edit', 'a\r\nx-injected: 1']), /^error: Invalid HTTP\/2 request field \["x-edit"\]/);
  t.regex(await run(['bad name', 'v']), /^error: Invalid HTTP\/2 request field/);
  t.is(streams, 0);
  t.is(await run(['x-fine', 'v']), 'complete');
});

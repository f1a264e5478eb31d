import test, { type ExecutionContext } from 'ava';
import { createServer as createHttpServer, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import type { Sidecar } from '../../src/sidecar.js';
import { findMetric, oneRole, startSidecar, within } from '../helpers.js';

/*
 * What an upstream answers, byte for byte, and what the client gets: the upstream
 * side parses only the answer's head and framing (src/upstream/h1_pool.ts), and
 * refuses what two parsers could read differently. Each upstream here is a raw TCP
 * server that answers each request head it reads with the next scripted answer.
 */

interface Scripted {
  address: string;
  /** Connections accepted so far. */
  connections: () => number;
  /** Request heads received, in order. */
  heads: string[];
}

/** A raw upstream: the n-th request head it reads (on any connection) gets answers[n % length]. */
async function scripted(t: ExecutionContext, answers: (string | Buffer)[]): Promise<Scripted> {
  const heads: string[] = [];
  let accepted = 0;
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    accepted++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString('latin1');
      let end;
      while ((end = buf.indexOf('\r\n\r\n')) >= 0) {
        heads.push(buf.slice(0, end));
        buf = buf.slice(end + 4);
        s.write(answers[(heads.length - 1) % answers.length]!);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => { for (const s of sockets) s.destroy(); server.close(() => r()); }));
  return { address: `127.0.0.1:${(server.address() as AddressInfo).port}`, connections: () => accepted, heads };
}

interface Answer { status: number; headers: IncomingHttpHeaders; body: string; trailers: NodeJS.Dict<string> }

/** One request through the proxy on a new client connection; the answer as the client parsed it. */
function ask(sc: Sidecar, method = 'GET', path = '/'): Promise<Answer> {
  const a = sc.addresses().get('web')!;
  return within(new Promise<Answer>((resolve, reject) => {
    const req = httpRequest({ host: a.host, port: a.port, method, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('latin1');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body, trailers: res.trailers }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  }), 5_000, `${method} ${path}`);
}

async function proxyTo(t: ExecutionContext, up: Scripted): Promise<Sidecar> {
  return startSidecar(t, { drainTimeout: '2s', ...oneRole([up.address]) });
}

async function protocolErrors(sc: Sidecar): Promise<number> {
  return (await findMetric(sc, 'switchyard_upstream_errors_total', { reason: 'protocol' })) ?? 0;
}

test('a 304 with Content-Length reaches the client as a 304 with it, and is no upstream failure', async (t) => {
  const up = await scripted(t, ['HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\nETag: "x"\r\n\r\n']);
  const sc = await proxyTo(t, up);
  for (let i = 0; i < 3; i++) {
    const r = await ask(sc);
    t.is(r.status, 304);
    t.is(r.headers['content-length'], '1234');
    t.is(r.headers.etag, '"x"');
    t.is(r.body, '');
  }
  t.is(up.connections(), 1, 'the connection is reused: no body was read after a 304');
  t.is(await protocolErrors(sc), 0);
});

test('a 204 and an answer to HEAD have no body whatever their Content-Length says', async (t) => {
  const up = await scripted(t, ['HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n']);
  const sc = await proxyTo(t, up);
  const r1 = await ask(sc);
  t.is(r1.status, 204);
  const r2 = await ask(sc, 'HEAD');
  t.is(r2.status, 200);
  t.is(r2.headers['content-length'], '5');
  t.is(r2.body, '');
  t.is(up.connections(), 1);
});

test('an upstream 100 Continue (and a 103) before the answer is skipped, not a 502', async (t) => {
  const up = await scripted(t, ['HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok']);
  const sc = await proxyTo(t, up);
  const r = await ask(sc);
  t.is(r.status, 200);
  t.is(r.body, 'ok');
  t.is(await protocolErrors(sc), 0);
});

test('bytes beyond an answer\'s framing close that upstream connection: they never reach the next client', async (t) => {
  // A body longer than its Content-Length, and a body after a 204: the extra bytes read
  // as an answer on a reused connection would be the next client's response.
  const poison = 'HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\npoison';
  const up = await scripted(t, [`HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok${poison}`, 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nclean',
    `HTTP/1.1 204 No Content\r\n\r\n${poison}`, 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nclean']);
  const sc = await proxyTo(t, up);
  t.is((await ask(sc)).body, 'ok', 'exactly Content-Length bytes');
  t.is((await ask(sc)).body, 'clean');
  t.is((await ask(sc)).status, 204);
  t.is((await ask(sc)).body, 'clean');
  t.is(up.connections(), 3, 'each answer with bytes beyond it closed its connection');
});

test('bytes an upstream sends on an idle keep-alive connection close it', async (t) => {
  let first: Socket | null = null;
  const server = createServer((s) => {
    s.on('error', () => {});
    first ??= s;
    s.on('data', () => {
      s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const sc = await startSidecar(t, { drainTimeout: '2s', ...oneRole([`127.0.0.1:${(server.address() as AddressInfo).port}`]) });
  t.is((await ask(sc)).body, 'ok');
  const closed = new Promise((r) => first!.once('close', r));
  first!.write('HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\npoison');
  await within(closed, 5_000, 'the proxy to close the connection');
  t.is((await ask(sc)).body, 'ok');
});

const MALFORMED: [string, string][] = [
  ['both Content-Length and Transfer-Encoding', 'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n'],
  ['two Content-Length values', 'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd'],
  ['a Content-Length with a sign', 'HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc'],
  ['a Content-Length beyond 2^53', 'HTTP/1.1 200 OK\r\nContent-Length: 9007199254740993\r\n\r\nabc'],
  ['a transfer coding other than chunked', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n'],
  ['obs-fold', 'HTTP/1.1 200 OK\r\nX-A: 1\r\n  folded\r\nContent-Length: 0\r\n\r\n'],
  ['a bare LF in the head', 'HTTP/1.1 200 OK\r\nX-A: 1\nContent-Length: 0\r\n\r\n'],
  ['a space before the colon', 'HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n'],
  ['a NUL in a value', 'HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 0\r\n\r\n'],
  ['a 101 to a plain request', 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n'],
  ['a chunk size with a 0x prefix', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n'],
];

for (const [what, answer] of MALFORMED) {
  test(`an answer with ${what} → 502, counted as a protocol error`, async (t) => {
    const up = await scripted(t, [answer]);
    const sc = await proxyTo(t, up);
    const r = await ask(sc).catch(() => null);
    // A chunked body that goes bad after the head can only be cut: the client sees the head, then a reset.
    if (r !== null) t.is(r.status, what.startsWith('a chunk') ? 200 : 502, r.body);
    t.is(await protocolErrors(sc), 1);
  });
}

test('a chunked answer is de-chunked and its trailers read; a keep-alive connection carries the next one', async (t) => {
  const up = await scripted(t, ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext="a;b"\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-Sum: 1\r\n\r\n']);
  const sc = await proxyTo(t, up);
  for (let i = 0; i < 3; i++) {
    const r = await ask(sc);
    t.is(r.status, 200);
    t.is(r.body, 'abc0123456789');
  }
  t.is(up.connections(), 1);
});

test('an answer framed by the connection\'s close is read to the end, and the connection not reused', async (t) => {
  let n = 0;
  const server = createServer((s) => {
    s.on('error', () => {});
    s.once('data', () => { n++; s.end('HTTP/1.1 200 OK\r\n\r\nuntil the end'); });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const sc = await startSidecar(t, { drainTimeout: '2s', ...oneRole([`127.0.0.1:${(server.address() as AddressInfo).port}`]) });
  t.is((await ask(sc)).body, 'until the end');
  t.is((await ask(sc)).body, 'until the end');
  t.is(n, 2);
});

test('an HTTP/1.0 answer without keep-alive, or a Connection: close, closes the upstream connection after it', async (t) => {
  const up = await scripted(t, ['HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok', 'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok']);
  const sc = await proxyTo(t, up);
  for (let i = 0; i < 4; i++) t.is((await ask(sc)).body, 'ok');
  t.is(up.connections(), 4);
});

test('the request head the upstream gets: one write, the client\'s header case and order, a Host added for HTTP/1.0', async (t) => {
  const up = await scripted(t, ['HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n']);
  const sc = await proxyTo(t, up);
  const a = sc.addresses().get('web')!;
  const s = connect(a.port, a.host);
  s.write('GET /p?q=1 HTTP/1.0\r\nX-Mixed-Case: A\r\nx-lower: b\r\n\r\n');
  await within(new Promise((r) => s.once('data', r)), 5_000, 'the answer');
  s.destroy();
  const lines = up.heads[0]!.split('\r\n');
  t.is(lines[0], 'GET /p?q=1 HTTP/1.1');
  t.deepEqual(lines.filter((l) => /^x-(mixed|lower)/i.test(l)), ['X-Mixed-Case: A', 'x-lower: b']);
  t.true(lines.includes(`host: ${up.address}`), up.heads[0]);
});

test('a kept-alive connection the upstream closes as it is reused: an idempotent request goes again on a fresh one, a POST gets its 502', async (t) => {
  // Each connection answers its first request and closes at its second, unanswered
  // (an upstream that timed the connection out just as the proxy reused it).
  let connections = 0;
  const server = createServer((s) => {
    connections++;
    let requests = 0;
    s.on('error', () => {});
    s.on('data', (d) => {
      const heads = d.toString('latin1').split('\r\n\r\n').length - 1;
      for (let i = 0; i < heads; i++) {
        if (++requests === 1) s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
        else s.destroy();
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const sc = await startSidecar(t, { drainTimeout: '2s', ...oneRole([`127.0.0.1:${(server.address() as AddressInfo).port}`]) });
  t.is((await ask(sc)).body, 'ok');
  const again = await ask(sc);
  t.is(again.status, 200, 'the GET went again on a fresh connection');
  t.is(connections, 2);
  const post = await ask(sc, 'POST');
  t.is(post.status, 502, 'a POST is never sent twice');
  t.is(connections, 2);
});

test('a connection paused by a slow client\'s backpressure on its last chunk goes back to the pool reading: the next request on it is answered', async (t) => {
  const big = Buffer.alloc(4 * 1024 * 1024, 97);
  let connections = 0;
  const up = createHttpServer((req, res) => {
    res.writeHead(200, { 'content-length': req.url === '/big' ? big.length : 2 });
    res.end(req.url === '/big' ? big : 'ok');
  });
  up.on('connection', () => { connections++; });
  await new Promise<void>((r) => up.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => { up.closeAllConnections(); up.close(() => r()); }));
  const sc = await startSidecar(t, { drainTimeout: '2s', ...oneRole([`127.0.0.1:${(up.address() as AddressInfo).port}`]) });
  const a = sc.addresses().get('web')!;
  // A client that reads the big answer slowly: the proxy's response write fills and the upstream socket pauses.
  await within(new Promise<void>((resolve) => {
    const s = connect(a.port, a.host);
    s.write('GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    s.on('data', () => { s.pause(); setTimeout(() => s.resume(), 5); });
    s.on('close', () => resolve());
  }), 20_000, 'the slow download');
  const r = await ask(sc, 'GET', '/small');
  t.is(r.status, 200);
  t.is(r.body, 'ok');
  t.is(connections, 1, 'on the same upstream connection');
});

/** POSTs a body of `total` bytes as fast as the proxy takes it; everything the client got back, once its connection closed. */
function upload(sc: Sidecar, total: number): Promise<string> {
  const a = sc.addresses().get('web')!;
  return within(new Promise<string>((resolve) => {
    const s = connect(a.port, a.host);
    let answer = '';
    s.on('data', (d) => { answer += d.toString('latin1'); });
    s.on('error', () => {});
    s.on('close', () => resolve(answer));
    s.write(`POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: ${total}\r\n\r\n`);
    const chunk = Buffer.alloc(64 * 1024, 97);
    let sent = 0;
    const pump = (): void => {
      while (sent < total && !s.destroyed) {
        sent += chunk.length;
        if (!s.write(chunk)) {
          s.once('drain', pump);
          return;
        }
      }
    };
    pump();
  }), 15_000, 'the answer and the close');
}

test('an upstream that answers before the upload ended: the client gets that answer, and its connection closes instead of stalling', async (t) => {
  // The upstream answers 401 at the request's head and keeps reading (no reset): the
  // proxy has the answer while the client is still sending.
  const up = createServer((s) => {
    s.on('error', () => {});
    let answered = false;
    s.on('data', () => {
      if (answered) return;
      answered = true;
      s.write('HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\n\r\nnope');
    });
  });
  await new Promise<void>((r) => up.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => up.close(() => r())));
  const sc = await startSidecar(t, { drainTimeout: '2s', ...oneRole([`127.0.0.1:${(up.address() as AddressInfo).port}`], { bufferBodyBytes: 0 }) });
  const total = 32 * 1024 * 1024;
  const got = await upload(sc, total);
  t.regex(got, /^HTTP\/1\.1 401 /);
  t.true(got.endsWith('nope'), got.slice(0, 200));
});

test('an upstream that answers and resets during the upload: the client gets an answer and its connection closes, without stalling', async (t) => {
  // 413 with Connection: close, the body never read: the upstream's kernel resets the
  // connection, and the proxy's next write of the body fails (the answer may lose to it).
  const up = createHttpServer((_req, res) => { res.writeHead(413, { 'content-length': 2, connection: 'close' }); res.end('no'); });
  await new Promise<void>((r) => up.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => { up.closeAllConnections(); up.close(() => r()); }));
  const sc = await startSidecar(t, { drainTimeout: '2s', ...oneRole([`127.0.0.1:${(up.address() as AddressInfo).port}`], { bufferBodyBytes: 0 }) });
  const total = 64 * 1024 * 1024;
  const started = performance.now();
  const got = await upload(sc, total);
  t.regex(got, /^HTTP\/1\.1 (413|502) /, got.slice(0, 200));
  t.regex(got, /connection: close/i);
  t.true(performance.now() - started < 4_000, 'closed at once, not after a timeout');
});

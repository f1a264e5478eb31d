import test, { type ExecutionContext } from 'ava';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import type { Sidecar } from '../../src/sidecar.js';
import {
  deadAddress, get, listenerUrl, once, oneRole, role, startSidecar, startUpstream, twoRoles, until, untilMetric, vsetOf, weighted,
  type ConfigSpec, type ListenerSpec,
} from '../helpers.js';

// Tests that measure a timeout run serially (ava runs them first, before the concurrent
// ones): dozens of sidecars starting at once can block this process's event loop for a
// second, which would blur a 300 ms timeout.

// ---------------------------------------------------------------- local helpers

interface WsUpstream {
  name: string;
  address: string;
  server: Server;
  wss: WebSocketServer;
  /** Server-side WebSockets, in order of connection. */
  clients: WebSocket[];
  /** Open TCP connections to the upstream (any kind). */
  open: () => number;
}

/** A WebSocket echo server; each message comes back prefixed with `name:` (text) or as is (binary). */
async function wsUpstream(t: ExecutionContext, name: string): Promise<WsUpstream> {
  const server = createServer((_req, res) => { res.end(`plain ${name}`); });
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  const wss = new WebSocketServer({ server });
  const clients: WebSocket[] = [];
  wss.on('connection', (ws, req) => {
    clients.push(ws);
    ws.on('error', () => {});
    ws.on('message', (data: RawData, isBinary: boolean) => {
      if (isBinary) ws.send(data, { binary: true });
      else ws.send(`${name}:${data.toString()}:${req.url}`);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => {
    for (const c of wss.clients) c.terminate();
    for (const s of sockets) s.destroy();
    wss.close();
    server.close(() => r());
  }));
  return { name, address: `127.0.0.1:${(server.address() as AddressInfo).port}`, server, wss, clients, open: () => sockets.size };
}

/** An http server whose 'upgrade' handler is `onUpgrade` (for upstreams that misbehave); counts open connections. */
async function upgradeUpstream(t: ExecutionContext, onUpgrade: (req: IncomingMessage, socket: Socket, head: Buffer) => void)
  : Promise<{ address: string; open: () => number; upgrades: Socket[] }> {
  const server = createServer((_req, res) => { res.end('plain'); });
  const sockets = new Set<Socket>();
  const upgrades: Socket[] = [];
  server.on('connection', (s: Socket) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  server.on('upgrade', (req, socket: Socket, head) => {
    upgrades.push(socket);
    socket.on('error', () => {});
    onUpgrade(req, socket, head);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => { for (const s of sockets) s.destroy(); server.close(() => r()); }));
  return { address: `127.0.0.1:${(server.address() as AddressInfo).port}`, open: () => sockets.size, upgrades };
}

const ACCEPT_101 = 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
  + 'Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n';

function config(endpoints: string[], listener: Partial<ListenerSpec> = {}, role = 'r'): ConfigSpec {
  return { drainTimeout: '2s', ...oneRole(endpoints, listener, { role }) };
}

function wsUrl(sc: Sidecar, path = '/'): string {
  return listenerUrl(sc, 'web').replace(/^http/, 'ws') + path;
}

/** Opens a client WebSocket through the proxy; closed (terminated) at teardown. */
function openWs(t: ExecutionContext, url: string, headers: Record<string, string> = {}): Promise<WebSocket> {
  const ws = new WebSocket(url, { headers });
  t.teardown(() => ws.terminate());
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`unexpected response ${res.statusCode}`)));
  });
}

/** The status of a refused upgrade (the ws client's 'unexpected-response'), and its body. */
function refusedWs(t: ExecutionContext, url: string): Promise<{ status: number; body: string; socket: Socket }> {
  const ws = new WebSocket(url);
  t.teardown(() => ws.terminate());
  ws.on('error', () => {});
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no answer to the upgrade')), 5_000);
    ws.once('open', () => { clearTimeout(timer); reject(new Error('the upgrade was accepted')); });
    ws.once('unexpected-response', (_req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', () => {});
      const settle = (): void => { clearTimeout(timer); resolve({ status: res.statusCode!, body: Buffer.concat(chunks).toString(), socket: res.socket as Socket }); };
      res.once('end', settle);
      res.once('close', settle);
    });
  });
}

const nextMessage = (ws: WebSocket): Promise<{ data: RawData; isBinary: boolean }> =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no message')), 5_000);
    ws.once('message', (data: RawData, isBinary: boolean) => { clearTimeout(timer); resolve({ data, isBinary }); });
  });

/**
 * A raw client that performs a WebSocket upgrade by hand and keeps its socket
 * half-open capable (it does not end its side when the proxy ends its own).
 */
async function rawUpgrade(t: ExecutionContext, sc: Sidecar, path = '/raw', extra = ''): Promise<{ socket: Socket; head: string; received: () => number }> {
  const a = sc.addresses().get('web')!;
  const socket = connect({ host: a.host, port: a.port, allowHalfOpen: true });
  t.teardown(() => { socket.destroy(); });
  socket.on('error', () => {});
  await once(socket, 'connect', 5_000);
  socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n`
    + `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n${extra}\r\n`);
  let buf = Buffer.alloc(0);
  let received = 0;
  const head = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no upgrade answer')), 5_000);
    const onData = (c: Buffer): void => {
      buf = Buffer.concat([buf, c]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      clearTimeout(timer);
      socket.off('data', onData);
      received = buf.length - end - 4;
      socket.on('data', (d: Buffer) => { received += d.length; });
      resolve(buf.subarray(0, end).toString('latin1'));
    };
    socket.on('data', onData);
  });
  return { socket, head, received: () => received };
}

// ---------------------------------------------------------------- echo and routing

test('text and binary messages echo through the proxy', async (t) => {
  const up = await wsUpstream(t, 'r');
  const sc = await startSidecar(t, config([up.address]));
  const ws = await openWs(t, wsUrl(sc, '/chat?room=1'));
  const m1 = nextMessage(ws);
  ws.send('hello');
  const r1 = await m1;
  t.false(r1.isBinary);
  t.is(r1.data.toString(), 'r:hello:/chat?room=1');
  const bin = Buffer.from([0, 1, 2, 255, 254, 128]);
  const m2 = nextMessage(ws);
  ws.send(bin, { binary: true });
  const r2 = await m2;
  t.true(r2.isBinary);
  t.deepEqual(Buffer.from(r2.data as Buffer), bin);
  // a large message, several frames' worth of TCP segments
  const big = Buffer.alloc(3 * 1024 * 1024, 9);
  const m3 = nextMessage(ws);
  ws.send(big, { binary: true });
  t.true(big.equals(Buffer.from((await m3).data as Buffer)));
  const closed = once(ws, 'close');
  ws.close(1000, 'bye');
  t.is(await closed, 1000);
});

test('header_route picks the role for upgrades too', async (t) => {
  const a = await wsUpstream(t, 'a');
  const b = await wsUpstream(t, 'b');
  const sc = await startSidecar(t, {
    drainTimeout: '2s',
    ...twoRoles(a, b, { filters: [{ type: 'header_route', rules: [{ header: 'x-pin', equals: 'b', role: 'b' }] }, weighted({ a: 1, b: 0 })] }),
  });
  for (let i = 0; i < 3; i++) {
    const wb = await openWs(t, wsUrl(sc, '/x'), { 'x-pin': 'b' });
    const m = nextMessage(wb);
    wb.send('hi');
    t.is((await m).data.toString(), 'b:hi:/x');
    wb.terminate();
    const wa = await openWs(t, wsUrl(sc, '/x'));
    const ma = nextMessage(wa);
    wa.send('hi');
    t.is((await ma).data.toString(), 'a:hi:/x');
    wa.terminate();
  }
  t.is(a.clients.length, 3);
  t.is(b.clients.length, 3);
});

test('x-forwarded-* on an upgrade are set as on plain requests', async (t) => {
  const seen: IncomingMessage[] = [];
  const up = await upgradeUpstream(t, (req, socket) => { seen.push(req); socket.write(ACCEPT_101); });
  const sc = await startSidecar(t, config([up.address]));
  const c = await rawUpgrade(t, sc, '/raw', 'X-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: spoofed\r\n');
  t.regex(c.head, /^HTTP\/1\.1 101/);
  t.is(seen.length, 1);
  const h = seen[0]!.headers;
  t.is(h['x-forwarded-for'], `10.1.2.3, ${c.socket.localAddress}`);
  t.is(h['x-forwarded-proto'], 'http');
  t.is(h['x-forwarded-host'], 'x');
  t.is(h.upgrade, 'websocket');
  const c2 = await rawUpgrade(t, sc);
  t.regex(c2.head, /^HTTP\/1\.1 101/);
  t.is(seen[1]!.headers['x-forwarded-for'], c2.socket.localAddress);
});

test('failover: a dead first endpoint does not fail the upgrade', async (t) => {
  const up = await wsUpstream(t, 'r');
  const sc = await startSidecar(t, config([await deadAddress(), up.address]));
  // round robin: two attempts start on the dead endpoint
  for (let i = 0; i < 4; i++) {
    const ws = await openWs(t, wsUrl(sc, `/f${i}`));
    const m = nextMessage(ws);
    ws.send('x');
    t.is((await m).data.toString(), `r:x:/f${i}`);
    ws.terminate();
  }
});

test('failover: a first endpoint whose name does not resolve does not fail the upgrade', async (t) => {
  const up = await wsUpstream(t, 'r');
  const sc = await startSidecar(t, config(['no-such-host.invalid:80', up.address]));
  for (let i = 0; i < 2; i++) {
    const ws = await openWs(t, wsUrl(sc, `/d${i}`));
    const m = nextMessage(ws);
    ws.send('x');
    t.is((await m).data.toString(), `r:x:/d${i}`);
    ws.terminate();
  }
});

test('all endpoints dead → the upgrade gets 502 naming the role', async (t) => {
  const sc = await startSidecar(t, config([await deadAddress(), await deadAddress()], {}, 'chat-v2'));
  const r = await refusedWs(t, wsUrl(sc));
  t.is(r.status, 502);
  t.true(r.body.includes('chat-v2'), r.body);
});

// ---------------------------------------------------------------- closing (node-http-proxy #559, #1510)

test('client closes its WebSocket → the upstream connection closes', async (t) => {
  const up = await wsUpstream(t, 'r');
  const sc = await startSidecar(t, config([up.address]));
  const ws = await openWs(t, wsUrl(sc));
  await until(() => up.clients.length === 1, 5_000);
  const serverClosed = once(up.clients[0]!, 'close', 5_000);
  ws.close();
  await serverClosed;
  await until(() => up.open() === 0, 5_000, 'upstream connections to close');
  // …and when it just vanishes (terminate: no close frame)
  const ws2 = await openWs(t, wsUrl(sc));
  await until(() => up.clients.length === 2, 5_000);
  const serverClosed2 = once(up.clients[1]!, 'close', 5_000);
  ws2.terminate();
  await serverClosed2;
  await until(() => up.open() === 0, 5_000, 'upstream connections to close');
  t.is(up.open(), 0, 'no upstream connection is left open');
});

/** An upstream that accepts the upgrade and pushes "tick" forever, ignoring a FIN (as many servers do). */
async function pushingUpstream(t: ExecutionContext) {
  const timers: NodeJS.Timeout[] = [];
  t.teardown(() => timers.forEach(clearInterval));
  return upgradeUpstream(t, (_req, socket) => {
    socket.write(ACCEPT_101);
    const timer = setInterval(() => { if (socket.writable) socket.write('tick'); }, 20);
    timers.push(timer);
    socket.on('close', () => clearInterval(timer));
  });
}

test('client vanishes while the upstream keeps pushing → the upstream connection is closed, not left half-open (#559)', async (t) => {
  const up = await pushingUpstream(t);
  const sc = await startSidecar(t, config([up.address]));
  const c = await rawUpgrade(t, sc);
  await until(() => c.received() > 0, 5_000, 'first push');
  const upstreamClosed = once(up.upgrades[0]!, 'close', 5_000);
  c.socket.destroy();
  await upstreamClosed;
  await until(() => up.open() === 0, 5_000, 'upstream connections to close');
  t.is(up.open(), 0, 'no upstream connection is left open');
});

test('client resets its connection (ECONNRESET) → no crash, the upstream connection is closed', async (t) => {
  const up = await pushingUpstream(t);
  const sc = await startSidecar(t, config([up.address]));
  const c = await rawUpgrade(t, sc);
  await until(() => c.received() > 0, 5_000, 'first push');
  const upstreamClosed = once(up.upgrades[0]!, 'close', 5_000);
  c.socket.resetAndDestroy();
  await upstreamClosed;
  // the proxy still serves
  const again = await rawUpgrade(t, sc);
  t.regex(again.head, /^HTTP\/1\.1 101/);
});

test('a client that resets while its upgrade is still pending does not crash the proxy', async (t) => {
  let release!: () => void;
  const pending = new Promise<void>((r) => { release = r; });
  let arrived!: () => void;
  const gotIt = new Promise<void>((r) => { arrived = r; });
  const up = await upgradeUpstream(t, (_req, socket) => {
    arrived();
    socket.on('end', () => socket.end()); // closes when its peer does
    void pending.then(() => { if (socket.writable) socket.write(ACCEPT_101); });
  });
  const sc = await startSidecar(t, config([up.address]));
  const a = sc.addresses().get('web')!;
  const s = connect({ host: a.host, port: a.port });
  s.on('error', () => {});
  await once(s, 'connect');
  s.write('GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
  await gotIt;
  s.resetAndDestroy();
  await until(() => up.open() === 0, 5_000, 'upstream connection to close');
  release();
  const c = await rawUpgrade(t, sc);
  t.regex(c.head, /^HTTP\/1\.1 101/);
});

test('upstream closes → the client connection closes', async (t) => {
  const up = await wsUpstream(t, 'r');
  const sc = await startSidecar(t, config([up.address]));
  const ws = await openWs(t, wsUrl(sc));
  await until(() => up.clients.length === 1, 5_000);
  const closed = once<number>(ws, 'close', 5_000);
  up.clients[0]!.close(4001, 'go away');
  t.is(await closed, 4001);
  const ws2 = await openWs(t, wsUrl(sc));
  await until(() => up.clients.length === 2, 5_000);
  const closed2 = once(ws2, 'close', 5_000);
  up.clients[1]!.terminate();
  await closed2;
});

test('upstream goes away while the client keeps sending → the client connection is closed, not left half-open (#1510)', async (t) => {
  const up = await upgradeUpstream(t, (_req, socket) => {
    socket.write(ACCEPT_101);
    socket.once('data', () => socket.destroy());
  });
  const sc = await startSidecar(t, config([up.address]));
  const c = await rawUpgrade(t, sc);
  const closed = once(c.socket, 'close', 5_000);
  // a client that keeps sending and does not react to a FIN
  const timer = setInterval(() => { if (c.socket.writable) c.socket.write('tock'); }, 20);
  t.teardown(() => clearInterval(timer));
  await closed;
  t.true(c.socket.destroyed, 'the client connection is closed');
});

test('upstream refuses the upgrade → the client gets its status, and the upstream connection is closed (#1510)', async (t) => {
  const up = await upgradeUpstream(t, (_req, socket) => {
    // answers, keeps the connection open (keep-alive), and closes it only when the peer does
    socket.write('HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nforbidden');
    socket.on('end', () => socket.end());
  });
  const sc = await startSidecar(t, config([up.address]));
  const gen = sc.runtime.current!;
  const r = await refusedWs(t, wsUrl(sc));
  t.is(r.status, 403);
  t.is(r.body, 'forbidden');
  await until(() => up.open() === 0, 5_000, 'upstream connection to close');
  await untilMetric(sc, 'switchyard_requests_total', { listener: 'web', code: '403' }, 1, 5_000, 'the 403 in switchyard_requests_total');
  // A client that keeps its side open after the answer: the proxy still closes its side
  // (it cannot go back to HTTP on a socket handed over for an upgrade), so nothing stays
  // half-open holding the generation.
  const c = await rawUpgrade(t, sc);
  t.regex(c.head, /^HTTP\/1\.1 403 /);
  await until(() => up.open() === 0, 5_000, 'upstream connection to close');
  await until(() => gen.inFlight === 0, 5_000, 'the refused upgrade to let the generation go');
  // A ws server's own refusal (400 for a bad handshake) is relayed as well.
  const wsUp = await wsUpstream(t, 'w');
  const sc2 = await startSidecar(t, config([wsUp.address]));
  const a = sc2.addresses().get('web')!;
  const raw = connect({ host: a.host, port: a.port });
  raw.on('error', () => {});
  t.teardown(() => { raw.destroy(); });
  const chunks: Buffer[] = [];
  raw.on('data', (c: Buffer) => chunks.push(c));
  const rawClosed = once(raw, 'close', 5_000);
  raw.write('GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 99\r\n\r\n');
  await rawClosed;
  t.regex(Buffer.concat(chunks).toString('latin1'), /^HTTP\/1\.1 400 /);
  await until(() => wsUp.open() === 0, 5_000, 'upstream connection to close');
});

test('upstream accepts and hangs up without answering (#527) → 502, no crash, the proxy keeps serving', async (t) => {
  const up = await upgradeUpstream(t, (_req, socket) => { socket.destroy(); });
  const ok = await startUpstream(t, 'plain');
  const sc = await startSidecar(t, {
    drainTimeout: '2s',
    ...vsetOf({ r: role(up), p: role(ok) }, {
      filters: [{ type: 'header_route', rules: [{ header: 'x-plain', equals: '1', role: 'p' }] }, weighted({ r: 1, p: 0 })],
    }),
  });
  for (let i = 0; i < 3; i++) {
    const r = await refusedWs(t, wsUrl(sc));
    t.is(r.status, 502);
    t.true(r.body.includes('r'), r.body);
  }
  const plain = await get(listenerUrl(sc, 'web'), { 'x-plain': '1' });
  t.is(plain.status, 200);
});

test.serial('an upgrade the upstream never answers gets 504 after timeouts.upstream', async (t) => {
  const up = await upgradeUpstream(t, (_req, socket) => { socket.on('end', () => socket.end()); /* otherwise silent */ });
  const sc = await startSidecar(t, config([up.address], { timeouts: { upstream: '300ms' } }));
  const t0 = Date.now();
  const r = await refusedWs(t, wsUrl(sc));
  t.is(r.status, 504);
  t.true(Date.now() - t0 < 5_000);
  await until(() => up.open() === 0, 5_000, 'upstream connection to close');
  // counted with the status the client got
  await untilMetric(sc, 'switchyard_requests_total', { listener: 'web', code: '504' }, 1, 5_000, 'the 504 in switchyard_requests_total');
});

test.serial('an established WebSocket is not cut by timeouts.upstream', async (t) => {
  const up = await wsUpstream(t, 'r');
  const sc = await startSidecar(t, config([up.address], { timeouts: { upstream: '500ms' } }));
  const ws = await openWs(t, wsUrl(sc));
  let closed = false;
  ws.on('close', () => { closed = true; });
  // idle for well over the timeout (bounded: the deadline is the assertion), then still usable
  const deadline = Date.now() + 1_500;
  await until(() => closed || Date.now() > deadline, 3_000);
  t.false(closed);
  const m = nextMessage(ws);
  ws.send('still here');
  t.is((await m).data.toString(), 'r:still here:/');
});

test('a tunnel the client half-closes is closed on both sides, even when the upstream ignores the FIN', async (t) => {
  let upstreamEnded = false;
  const up = await upgradeUpstream(t, (_req, socket) => {
    socket.write(ACCEPT_101);
    socket.on('end', () => { upstreamEnded = true; }); // never ends its own side
  });
  const sc = await startSidecar(t, config([up.address]));
  const gen = sc.runtime.current!;
  const c = await rawUpgrade(t, sc);
  t.regex(c.head, /^HTTP\/1\.1 101/);
  const closed = once(c.socket, 'close', 5_000);
  c.socket.end();
  await closed; // the proxy closed the client side after passing the FIN on
  await until(() => upstreamEnded, 5_000, 'the FIN to reach the upstream');
  // nothing left holding the generation (a half-open tunnel would, until drainTimeout)
  await until(() => gen.inFlight === 0, 5_000, 'the tunnel to let the generation go');
  // and a write from the upstream now meets a closed connection
  const s = up.upgrades[0]!;
  const upClosed = once(s, 'close', 5_000);
  const timer = setInterval(() => { if (s.writable) s.write('late'); }, 20);
  t.teardown(() => clearInterval(timer));
  await upClosed;
});

test('a non-WebSocket upgrade (curl --http2 sends Upgrade: h2c) is served as a plain request, not dropped', async (t) => {
  const up = await startUpstream(t, 'r');
  const sc = await startSidecar(t, config([up.address]));
  const a = sc.addresses().get('web')!;
  const exchange = async (text: string): Promise<string> => {
    const s = connect({ host: a.host, port: a.port });
    t.teardown(() => { s.destroy(); });
    s.on('error', () => {});
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    const closed = once(s, 'close', 5_000);
    s.write(text);
    await closed;
    return Buffer.concat(chunks).toString('latin1');
  };
  const text = await exchange('GET /h2c?x=1 HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade, HTTP2-Settings\r\n'
    + 'Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nX-Kept: 1\r\n\r\n');
  t.regex(text, /^HTTP\/1\.1 200 /);
  t.is(up.requests.length, 1);
  const seen = up.requests[0]!;
  t.is(seen.url, '/h2c?x=1');
  t.is(seen.headers['x-kept'], '1');
  t.is(seen.headers.upgrade, undefined);
  t.is(seen.headers['http2-settings'], undefined);
  t.regex(text, /"role":"r"/);
  // with a body: switchyard reads HTTP/1.1 itself, so the body is forwarded like any other
  const post = await exchange('POST / HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\nhi');
  t.regex(post, /^HTTP\/1\.1 200 /);
  t.is(up.requests.length, 2);
  t.is(up.requests[1]!.headers['content-length'], '2');
  t.is(up.requests[1]!.headers.upgrade, undefined);
});

test('bytes the client sends right behind the upgrade request reach the upstream, in order, also after a failover', async (t) => {
  const got: string[] = [];
  const up = await upgradeUpstream(t, (_req, socket, head) => {
    let data = head.toString('latin1');
    got.push(data);
    const i = got.length - 1;
    socket.on('data', (c: Buffer) => { data += c.toString('latin1'); got[i] = data; });
    socket.write(ACCEPT_101);
  });
  const sc = await startSidecar(t, config([await deadAddress(), up.address]));
  const a = sc.addresses().get('web')!;
  for (let n = 0; n < 2; n++) { // round robin: one of the two starts on the dead endpoint
    const s = connect({ host: a.host, port: a.port });
    t.teardown(() => { s.destroy(); });
    s.on('error', () => {});
    await once(s, 'connect');
    let head = '';
    const upgraded = new Promise<void>((resolve) => {
      s.on('data', (c: Buffer) => { head += c.toString('latin1'); if (head.includes('\r\n\r\n')) resolve(); });
    });
    s.write(`GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n`
      + `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\nEARLY-${n}`);
    await upgraded;
    s.write(`|LATE-${n}`);
    await until(() => got[n] === `EARLY-${n}|LATE-${n}`, 5_000, `bytes of connection ${n} (got ${JSON.stringify(got[n])})`);
  }
  t.is(got.length, 2);
});

test('a client that floods before the upstream answered is not read without bound (backpressure)', async (t) => {
  let release!: () => void;
  const answer = new Promise<void>((r) => { release = r; });
  let upstreamGot = 0;
  const up = await upgradeUpstream(t, (_req, socket, head) => {
    upstreamGot += head.length;
    socket.on('data', (c: Buffer) => { upstreamGot += c.length; });
    void answer.then(() => { if (socket.writable) socket.write(ACCEPT_101); });
  });
  const sc = await startSidecar(t, config([up.address]));
  const a = sc.addresses().get('web')!;
  const s = connect({ host: a.host, port: a.port });
  t.teardown(() => { s.destroy(); });
  s.on('error', () => {});
  await once(s, 'connect');
  s.write('GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n'
    + 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
  const total = 128 * 1024 * 1024;
  let written = 0;
  let blockedSince = 0;
  const chunk = Buffer.alloc(1024 * 1024, 1);
  const pump = (): void => {
    while (written < total && !s.destroyed) {
      written += chunk.length;
      if (!s.write(chunk)) {
        blockedSince = Date.now();
        s.once('drain', () => { blockedSince = 0; pump(); });
        return;
      }
    }
  };
  pump();
  await until(() => written >= total || (blockedSince > 0 && Date.now() - blockedSince > 500), 8_000, 'client to stall or finish');
  t.true(written < 64 * 1024 * 1024, `the proxy took ${written} bytes before the upstream answered`);
  // once the upstream answers, everything flows through
  release();
  await until(() => upstreamGot >= written, 8_000, 'the early bytes to reach the upstream');
});

test('backpressure through a tunnel: a client that does not read stalls the upstream', async (t) => {
  let written = 0;
  let finished = false;
  let blockedSince = 0;
  const total = 200 * 1024 * 1024;
  const up = await upgradeUpstream(t, (_req, socket) => {
    socket.write(ACCEPT_101);
    const chunk = Buffer.alloc(1024 * 1024, 2);
    const pump = (): void => {
      while (written < total && !socket.destroyed) {
        written += chunk.length;
        if (!socket.write(chunk)) {
          blockedSince = Date.now();
          socket.once('drain', () => { blockedSince = 0; pump(); });
          return;
        }
      }
      finished = true;
    };
    pump();
  });
  const sc = await startSidecar(t, config([up.address]));
  const c = await rawUpgrade(t, sc);
  c.socket.pause();
  await until(() => finished || (blockedSince > 0 && Date.now() - blockedSince > 500), 8_000, 'upstream to stall or finish');
  t.false(finished, 'the upstream could write all 200 MB: the proxy buffered it');
  t.true(written < 64 * 1024 * 1024, `upstream wrote ${written} bytes before stalling`);
});

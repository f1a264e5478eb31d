import test, { type ExecutionContext } from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { Sidecar } from '../../src/sidecar.js';
import { join } from 'node:path';
import { ROOT, deadAddress, once, oneRole, startSidecar, until, type ConfigSpec, type ListenerSpec } from '../helpers.js';

// Tests that measure a timeout run serially (ava runs them first, before the concurrent
// ones): dozens of sidecars starting at once can block this process's event loop for a
// second, which would blur a 300 ms timeout.

// ---------------------------------------------------------------- local helpers

interface TcpUpstream {
  server: Server;
  address: string;
  sockets: Socket[];
  open: () => number;
}

/** A TCP upstream on 127.0.0.1:0, half-open capable; `onSocket` drives each connection. */
async function tcpUpstream(t: ExecutionContext, onSocket: (s: Socket) => void): Promise<TcpUpstream> {
  const sockets: Socket[] = [];
  const live = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (s) => {
    sockets.push(s);
    live.add(s);
    s.on('close', () => live.delete(s));
    s.on('error', () => {});
    onSocket(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => { for (const s of live) s.destroy(); server.close(() => r()); }));
  return { server, address: `127.0.0.1:${(server.address() as AddressInfo).port}`, sockets, open: () => live.size };
}

/** Echoes everything, and ends its side when the client ends its own. */
const echo = (s: Socket): void => { s.pipe(s); };

/** Role db (channel raw) on `endpoints` behind tcp listener `pipe`, which `listener` adds to; drainTimeout 2s. */
function tcpConfig(endpoints: string[], listener: Partial<ListenerSpec> = {}): ConfigSpec {
  return { drainTimeout: '2s', ...oneRole(endpoints, { protocol: 'tcp', ...listener }, { role: 'db', channel: 'raw', listener: 'pipe' }) };
}

/** A client connection to the sidecar's tcp listener (half-open capable), destroyed at teardown. */
async function dial(t: ExecutionContext, sc: Sidecar, allowHalfOpen = true): Promise<Socket> {
  const a = sc.addresses().get('pipe')!;
  const s = connect({ host: a.host, port: a.port, allowHalfOpen });
  t.teardown(() => { s.destroy(); });
  s.on('error', () => {});
  await once(s, 'connect', 5_000);
  return s;
}

/** Everything a socket receives until its 'end' (or 'close'), with a bound. */
function readAll(s: Socket, ms = 8_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => reject(new Error('no end')), ms);
    s.on('data', (c: Buffer) => chunks.push(c));
    const done = (): void => { clearTimeout(timer); resolve(Buffer.concat(chunks)); };
    s.once('end', done);
    s.once('close', done);
  });
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Writes `data` in 64 KiB chunks with backpressure, then optionally ends. */
async function writeAll(s: Socket, data: Buffer, end = true): Promise<void> {
  for (let i = 0; i < data.length; i += 65536) {
    if (!s.write(data.subarray(i, i + 65536))) await once(s, 'drain', 8_000);
  }
  if (end) s.end();
}

// ---------------------------------------------------------------- tests

test('16 MB each way round trip through an echo upstream (sha256)', async (t) => {
  const up = await tcpUpstream(t, echo);
  const sc = await startSidecar(t, tcpConfig([up.address]));
  const c = await dial(t, sc);
  const data = randomBytes(16 * 1024 * 1024);
  const got = readAll(c);
  await writeAll(c, data);
  const back = await got;
  t.is(back.length, data.length);
  t.is(sha(back), sha(data));
  // the upstream received exactly what was sent
  t.is(up.sockets[0]!.bytesRead, data.length);
});

test('half-close: the client ends its side and still receives the whole reply', async (t) => {
  const reply = randomBytes(4 * 1024 * 1024);
  const up = await tcpUpstream(t, (s) => {
    const h = createHash('sha256');
    s.on('data', (c: Buffer) => h.update(c));
    // answers only after the client's FIN: the request's digest, then a large body, then its own FIN
    s.on('end', () => {
      s.write(h.digest('hex') + '\n');
      s.end(reply);
    });
  });
  const sc = await startSidecar(t, tcpConfig([up.address]));
  const c = await dial(t, sc);
  const request = randomBytes(1024 * 1024);
  const got = readAll(c);
  await writeAll(c, request, true); // write, then FIN
  const back = await got;
  t.is(back.subarray(0, 65).toString(), sha(request) + '\n');
  t.true(back.subarray(65).equals(reply));
  // a FIN with no bytes at all, sent before the proxy has even reached the upstream
  const c2 = await dial(t, sc);
  const got2 = readAll(c2);
  c2.end();
  const back2 = await got2;
  t.is(back2.subarray(0, 65).toString(), sha(Buffer.alloc(0)) + '\n');
  t.true(back2.subarray(65).equals(reply));
});

test('half-close: the upstream ends its side first and the client can still send', async (t) => {
  let received = 0;
  let sawEnd: (() => void) | null = null;
  const upstreamGotAll = new Promise<void>((r) => { sawEnd = r; });
  const up = await tcpUpstream(t, (s) => {
    s.end('greeting, and that is all from me\n'); // FIN right away
    s.on('data', (c: Buffer) => { received += c.length; });
    s.on('end', () => sawEnd!());
  });
  const sc = await startSidecar(t, tcpConfig([up.address]));
  const c = await dial(t, sc);
  const got = readAll(c);
  const greeting = await got; // the client saw the upstream's FIN…
  t.is(greeting.toString(), 'greeting, and that is all from me\n');
  t.false(c.destroyed);
  await writeAll(c, randomBytes(2 * 1024 * 1024), false); // …and still sends 2 MB
  await until(() => received === 2 * 1024 * 1024, 8_000, 'the upstream to receive the 2 MB');
  t.false(c.destroyed);
  c.end();
  await Promise.race([upstreamGotAll, new Promise((_r, reject) => setTimeout(() => reject(new Error('no FIN at the upstream')), 5_000))]);
  t.is(received, 2 * 1024 * 1024);
});

test('failover: a dead first endpoint is skipped', async (t) => {
  const up = await tcpUpstream(t, echo);
  const sc = await startSidecar(t, tcpConfig([await deadAddress(), up.address]));
  // round robin: two of the four start on the dead endpoint
  for (let i = 0; i < 4; i++) {
    const c = await dial(t, sc);
    const got = readAll(c);
    c.end(`hello ${i}`);
    t.is((await got).toString(), `hello ${i}`);
  }
  t.is(up.sockets.length, 4);
});

test('failover: a first endpoint whose name does not resolve is skipped', async (t) => {
  const up = await tcpUpstream(t, echo);
  const sc = await startSidecar(t, tcpConfig(['no-such-host.invalid:5432', up.address]));
  for (let i = 0; i < 2; i++) {
    const c = await dial(t, sc);
    const got = readAll(c);
    c.end(`dns ${i}`);
    t.is((await got).toString(), `dns ${i}`);
  }
});

test('all endpoints dead → the client connection is closed promptly', async (t) => {
  const sc = await startSidecar(t, tcpConfig([await deadAddress(), await deadAddress()]));
  const t0 = Date.now();
  const c = await dial(t, sc, false);
  c.write('anyone?');
  await once(c, 'close', 5_000);
  t.true(Date.now() - t0 < 5_000);
});

test('backpressure: a client that does not read stalls the upstream instead of filling the proxy', async (t) => {
  const total = 200 * 1024 * 1024;
  let written = 0;
  let finished = false;
  let blockedSince = 0;
  const up = await tcpUpstream(t, (s) => {
    const chunk = Buffer.alloc(1024 * 1024, 5);
    const pump = (): void => {
      while (written < total) {
        written += chunk.length;
        if (!s.write(chunk)) {
          blockedSince = Date.now();
          s.once('drain', () => { blockedSince = 0; pump(); });
          return;
        }
      }
      finished = true;
      s.end();
    };
    pump();
  });
  const sc = await startSidecar(t, tcpConfig([up.address]));
  const c = await dial(t, sc);
  c.pause(); // never reads
  await until(() => finished || (blockedSince > 0 && Date.now() - blockedSince > 500), 8_000, 'upstream to stall or finish');
  t.false(finished, 'the upstream could write all 200 MB: the proxy buffered it');
  t.true(written < 64 * 1024 * 1024, `upstream wrote ${written} bytes before stalling`);
  t.is(up.open(), 1);
});

test('backpressure: an upstream that does not read stalls the client', async (t) => {
  const up = await tcpUpstream(t, (s) => { s.pause(); });
  const sc = await startSidecar(t, tcpConfig([up.address]));
  const c = await dial(t, sc);
  const total = 200 * 1024 * 1024;
  let written = 0;
  let blockedSince = 0;
  const chunk = Buffer.alloc(1024 * 1024, 6);
  const pump = (): void => {
    while (written < total && !c.destroyed) {
      written += chunk.length;
      if (!c.write(chunk)) {
        blockedSince = Date.now();
        c.once('drain', () => { blockedSince = 0; pump(); });
        return;
      }
    }
  };
  pump();
  await until(() => written >= total || (blockedSince > 0 && Date.now() - blockedSince > 500), 8_000, 'client to stall or finish');
  t.true(written < 64 * 1024 * 1024, `client wrote ${written} bytes before stalling`);
});

test('the client closing closes the upstream connection, and the upstream closing closes the client', async (t) => {
  const up = await tcpUpstream(t, echo);
  const sc = await startSidecar(t, tcpConfig([up.address]));
  const c1 = await dial(t, sc);
  await until(() => up.open() === 1, 5_000);
  c1.destroy();
  await until(() => up.open() === 0, 5_000, 'upstream connection to close');
  const c2 = await dial(t, sc, false);
  await until(() => up.sockets.length === 2, 5_000);
  const closed = once(c2, 'close', 5_000);
  up.sockets[1]!.resetAndDestroy();
  await closed;
  // a client reset does not crash anything either
  const c3 = await dial(t, sc);
  await until(() => up.sockets.length === 3, 5_000);
  c3.resetAndDestroy();
  await until(() => up.open() === 0, 5_000, 'upstream connection to close');
  const c4 = await dial(t, sc);
  const got = readAll(c4);
  c4.end('still serving');
  t.is((await got).toString(), 'still serving');
});

test.serial('timeouts.idle closes a connection with no traffic either way', async (t) => {
  const up = await tcpUpstream(t, echo);
  const sc = await startSidecar(t, tcpConfig([up.address], { timeouts: { idle: '300ms' } }));
  const c = await dial(t, sc, false);
  const got = readAll(c);
  const closed = once(c, 'close', 5_000); // listening before the first byte: 300 ms is short
  const t0 = Date.now();
  c.write('ping');
  await closed;
  t.true(Date.now() - t0 < 5_000);
  t.is(up.sockets.length, 1);
  t.is((await got).toString(), 'ping');
  await until(() => up.open() === 0, 5_000, 'upstream connection to close');
});

test('what a client sends, and its end, while an async filter still decides reach the upstream whole and in order', async (t) => {
  const up = await tcpUpstream(t, (s) => {
    const h = createHash('sha256');
    let n = 0;
    s.on('data', (c: Buffer) => { h.update(c); n += c.length; });
    s.on('end', () => s.end(`${n} ${h.digest('hex')}`));
  });
  const sc = await startSidecar(t, { plugins: [join(ROOT, 'test/fixtures/tcp-filters-plugin.mjs')], ...tcpConfig([up.address], { filters: [{ type: 'slow_tcp' }] }) });
  // More than the proxy keeps for a client before its upstream is there (64 KiB): reads wait, nothing is lost.
  const request = randomBytes(300 * 1024);
  const c = await dial(t, sc);
  const got = readAll(c);
  await writeAll(c, request, true);
  t.is((await got).toString(), `${request.length} ${sha(request)}`);
});

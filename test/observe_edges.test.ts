import test, { type ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { closeSync, constants, openSync } from 'node:fs';
import { connect, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { WebSocket, WebSocketServer } from 'ws';
import {
  ROOT, configOf, get, listenerUrl, logLines, metric, oneRole, putConfig, role, scrape, startEcho, startSidecar, startUpstream, tempFiles,
  until, untilMetric, type ConfigSpec,
} from './helpers.js';
import { toolPath } from './setup/requirements.js';

/* Edge cases of counting and the access log, each found in review (and failing before its fix). */


/** Resolves to 'timeout' if `p` has not settled within `ms`. */
function within<T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> {
  return Promise.race([p, new Promise<'timeout'>((r) => { const x = setTimeout(() => r('timeout'), ms); x.unref(); })]);
}

/** A raw HTTP exchange on a fresh connection: what the server sent until it closed (or 3 s). */
function raw(url: string, text: string): Promise<string> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const s = connect(Number(u.port), u.hostname);
    let got = '';
    s.on('data', (c) => { got += c.toString('latin1'); });
    s.on('error', () => {});
    s.on('close', () => resolve(got));
    s.setTimeout(3_000, () => s.destroy());
    s.write(text);
  });
}

async function mkfifo(t: ExecutionContext): Promise<string> {
  const { dir } = await tempFiles(t, {});
  const path = join(dir, 'access.fifo');
  execFileSync(toolPath('mkfifo'), [path]);
  return path;
}

function httpConfig(up: string, more: ConfigSpec = {}): ConfigSpec {
  return { drainTimeout: '1s', ...more, ...oneRole(up, { target: 'ok' }, { role: 'ok' }) };
}

// ---------------------------------------------------------------- access log sink

test.serial('an accessLog path that is a FIFO with no reader does not hang PUT /config (and every reload after it)', async (t) => {
  const up = await startUpstream(t, 'ok');
  const sc = await startSidecar(t, httpConfig(up.address));
  const fifo = await mkfifo(t);
  const pending = putConfig(sc, httpConfig(up.address, { accessLog: { path: fifo } }));
  const got = await within(pending, 3_000);
  // Unblock the thread-pool open() so the process can end: a reader that reads nothing.
  const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  t.teardown(() => { try { closeSync(reader); } catch { /* closed */ } });
  await pending;
  t.not(got, 'timeout', 'PUT /config should answer (reject or apply) instead of waiting forever for a FIFO reader');
});

test.serial('a clean stop finishes when the access log sink is stuck (reader that does not read)', async (t) => {
  const up = await startUpstream(t, 'ok');
  const fifo = await mkfifo(t);
  const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK); // never read
  let readerOpen = true;
  const closeReader = (): void => { if (readerOpen) { readerOpen = false; closeSync(reader); } };
  t.teardown(closeReader);
  const sc = await startSidecar(t, httpConfig(up.address, { accessLog: { path: fifo } }));
  const long = '/' + 'x'.repeat(2_000);
  // 160 KB of lines: past 64 KiB a batch goes to fs.write at once, and the pipe (64 KiB) fills.
  for (let i = 0; i < 80; i++) t.is((await get(listenerUrl(sc, 'web') + long)).status, 200);
  const stopped = await within(sc.stop(), 5_000);
  closeReader(); // the blocked write fails with EPIPE; the stop can then finish
  t.not(stopped, 'timeout', 'SIGTERM must end the process even if the log reader stalls (drainTimeout is 1s)');
});

test.serial('a reload that turns a stuck access log off lets the old generation close (generations_draining back to 0)', async (t) => {
  const up = await startUpstream(t, 'ok');
  const fifo = await mkfifo(t);
  const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  let readerOpen = true;
  const closeReader = (): void => { if (readerOpen) { readerOpen = false; closeSync(reader); } };
  t.teardown(closeReader);
  const sc = await startSidecar(t, httpConfig(up.address, { accessLog: { path: fifo } }));
  const long = '/' + 'x'.repeat(2_000);
  for (let i = 0; i < 80; i++) await get(listenerUrl(sc, 'web') + long); // fills the pipe (see above)
  t.is((await putConfig(sc, httpConfig(up.address))).status, 200);
  let draining = -1;
  const ok = await until(async () => (draining = await metric(sc, 'switchyard_generations_draining')) === 0, 4_000)
    .then(() => true, () => false);
  closeReader();
  t.true(ok, `generation 1 has no work left but is still "draining" (gauge ${draining}): its close awaits the stuck sink`);
});

// ---------------------------------------------------------------- requests counted not at all

test('a request Node answers itself (431 head too large) is counted in requests_total and logged', async (t) => {
  const up = await startUpstream(t, 'ok');
  const { dir } = await tempFiles(t, {});
  const file = join(dir, 'access.log');
  const sc = await startSidecar(t, httpConfig(up.address, { accessLog: { path: file } }));
  const answer = await raw(listenerUrl(sc, 'web'), `GET /big HTTP/1.1\r\nHost: x\r\nx-big: ${'a'.repeat(70_000)}\r\n\r\n`);
  t.regex(answer, /^HTTP\/1\.1 431/, 'the client got 431');
  const bad = await raw(listenerUrl(sc, 'web'), 'GARBAGE\r\n\r\n');
  t.regex(bad, /^HTTP\/1\.1 400/, 'the client got 400');
  await until(async () => (await logLines(file)).filter((l) => l.type === 'http').length >= 2, 5_000, 'the log lines');
  const m = await scrape(sc);
  t.is(m.value('switchyard_requests_total', { listener: 'web', code: '431' }), 1, '431 counted');
  t.is(m.value('switchyard_requests_total', { listener: 'web', code: '400' }), 1, '400 counted');
  t.is((await logLines(file)).filter((l) => l.type === 'http').length, 2, 'one access log line each');
});

test('CONNECT (405) is counted in requests_total', async (t) => {
  const up = await startUpstream(t, 'ok');
  const sc = await startSidecar(t, httpConfig(up.address));
  const answer = await raw(listenerUrl(sc, 'web'), 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n');
  t.regex(answer, /^HTTP\/1\.1 405/);
  t.is(await metric(sc, 'switchyard_requests_total', { listener: 'web', code: '405' }), 1);
});

/** slow_tcp (300 ms) and boom_tcp (throws). */
const TCP_PLUGIN = join(ROOT, 'test/fixtures/tcp-filters-plugin.mjs');

test('every TCP connection is counted in tcp_connections_total (client reset during an async filter; a failing filter)', async (t) => {
  const plugin = TCP_PLUGIN;
  const { address: echo } = await startEcho(t);
  const { dir } = await tempFiles(t, {});
  const file = join(dir, 'access.log');
  const sc = await startSidecar(t, configOf({
    accessLog: { path: file },
    plugins: [plugin],
    roles: { db: role(echo, { channel: 'raw' }) },
    listeners: {
      slow: { protocol: 'tcp', target: 'db', filters: [{ type: 'slow_tcp' }] },
      boom: { protocol: 'tcp', target: 'db', filters: [{ type: 'boom_tcp' }] },
    },
  }));
  process.removeAllListeners('warning'); // the filter failure warning
  for (const name of ['slow', 'boom']) {
    const a = sc.addresses().get(name)!;
    await new Promise<void>((resolve) => {
      const s = connect(a.port, a.host, () => { if (name === 'slow') s.resetAndDestroy(); });
      s.on('error', () => {});
      s.on('close', () => resolve());
    });
  }
  await until(async () => (await logLines(file)).filter((l) => l.type === 'tcp').length >= 2, 5_000, 'two tcp lines');
  await untilMetric(sc, 'switchyard_tcp_connections_total', { listener: 'slow' }, (n) => n >= 1, 5_000, 'the slow connection counted');
  const m = await scrape(sc);
  const lines = (await logLines(file)).filter((l) => l.type === 'tcp');
  t.deepEqual(lines.map((l) => [l.listener, l.result]).sort(), [['boom', 'error'], ['slow', 'error']], 'the access log has both');
  t.is(m.value('switchyard_tcp_connections_total', { listener: 'slow' }), 1, 'slow: the connection the access log shows is counted');
  t.is(m.value('switchyard_tcp_connections_total', { listener: 'boom' }), 1, 'boom: the connection the access log shows is counted');
});

// ---------------------------------------------------------------- latency histogram

test('a WebSocket tunnel\'s lifetime does not enter request_duration_seconds (p99 latency by role)', async (t) => {
  const server = (await startUpstream(t, 'ok')).server;
  const wss = new WebSocketServer({ server });
  wss.on('connection', (ws) => ws.on('message', (m) => ws.send(m)));
  t.teardown(() => wss.close());
  const { address, port } = server.address() as AddressInfo;
  const sc = await startSidecar(t, oneRole(`${address}:${port}`, { target: 'ws' }, { role: 'ws' }));
  const ws = new WebSocket(`${listenerUrl(sc, 'web').replace('http', 'ws')}/chat`);
  t.teardown(() => ws.terminate());
  await new Promise((r, j) => { ws.once('open', r); ws.once('error', j); });
  await new Promise((r) => setTimeout(r, 1_200)); // a short-lived tunnel; real ones last minutes
  ws.close();
  await untilMetric(sc, 'switchyard_requests_total', { code: '101' }, 1, 5_000, '101 counted');
  const m = await scrape(sc);
  const total = m.value('switchyard_request_duration_seconds_count', { role: 'ws' });
  const fast = m.value('switchyard_request_duration_seconds_bucket', { role: 'ws', le: '1' });
  t.is(fast, total, `${total - fast} observation(s) over 1 s from a request whose handshake took milliseconds`);
});


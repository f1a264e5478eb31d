import test, { type ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { closeSync, constants, existsSync, openSync } from 'node:fs';
import { rename } from 'node:fs/promises';
import { connect, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { WebSocket, WebSocketServer } from 'ws';
import {
  deadAddress, findMetric, get, listenerUrl, logLines, metric, oneRole, putConfig, role, spawnCli, startEcho, startSidecar, startUpstream,
  tempFiles, uniqueHost, until, untilLogLines, weighted, yaml, type ConfigSpec, type LogLine,
} from '../helpers.js';
import { toolPath } from '../setup/requirements.js';

type AccessLog = ConfigSpec['accessLog'];

/* The access log (accessLog: { path }): one JSON line per HTTP request, TCP connection and config change. */


function config(ok: string, echo: string, dead: string, hosts: string[], accessLog: AccessLog): ConfigSpec {
  return {
    drainTimeout: '2s',
    accessLog,
    roles: { ok: role(ok), dead: role(dead), echo: role(echo, { channel: 'tcp' }) },
    components: { limit: { type: 'ratelimit', metadata: { requestsPerSecond: '0.001', burst: '1', key: 'header:x-user' } } },
    listeners: {
      web: { address: `${hosts[0]}:0`, target: 'ok' },
      limited: { address: `${hosts[1]}:0`, target: 'ok', filters: [weighted({ ok: 1 }), { type: 'ratelimit', component: 'limit' }] },
      broken: { address: `${hosts[2]}:0`, target: 'dead' },
      raw: { address: `${hosts[3]}:0`, protocol: 'tcp', target: 'echo' },
    },
  };
}

async function setup(t: ExecutionContext, accessLog: (dir: string) => AccessLog) {
  const ok = await startUpstream(t, 'ok', (req, res) => {
    let n = 0;
    req.on('data', (c: Buffer) => { n += c.length; });
    req.on('end', () => res.end(`got ${n}`));
  });
  const { address: echo } = await startEcho(t);
  const dead = await deadAddress();
  const { dir } = await tempFiles(t, {});
  const hosts = [uniqueHost(), uniqueHost(), uniqueHost(), uniqueHost()];
  const text = (log?: AccessLog) => config(ok.address, echo, dead, hosts, log);
  // Tests here point the access log at new files by PUT /config.
  const sc = await startSidecar(t, text(accessLog(dir)), { allowPush: ['accessLog'] });
  return { sc, dir, file: join(dir, 'access.log'), text, dead, okAddress: ok.address, echo };
}

test('HTTP requests: one line each, with role, endpoint, status, bytes, generation; a 502 names the upstream error; a filter\'s 429 has role ""', async (t) => {
  const { sc, file, dead, okAddress } = await setup(t, (dir) => ({ path: `${dir}/access.log` }));
  const ok = await get(`${listenerUrl(sc, 'web')}/items?id=7`, {}, { method: 'POST', body: 'x'.repeat(1000) });
  t.is(ok.body, 'got 1000');
  const [line] = await untilLogLines(file, (l) => l.listener === 'web');
  t.like(line, {
    type: 'http', listener: 'web', vset: 'ok', role: 'ok', method: 'POST', path: '/items?id=7', status: 200,
    generation: 1, upstreamError: '', client: '127.0.0.1',
  });
  t.is(line!.endpoint, okAddress);
  t.true(Number(line!.bytesIn) > 1000 && Number(line!.bytesIn) < 1400, `bytesIn: the request on the wire (${line!.bytesIn})`);
  t.true(Number(line!.bytesOut) > 8 && Number(line!.bytesOut) < 400, `bytesOut: the response on the wire (${line!.bytesOut})`);
  t.true(typeof line!.durationMs === 'number' && line!.durationMs >= 0);
  t.true(Math.abs(Date.parse(String(line!.time)) - Date.now()) < 60_000, 'time is an ISO timestamp');

  t.is((await get(listenerUrl(sc, 'broken'))).status, 502);
  const [bad] = await untilLogLines(file, (l) => l.listener === 'broken');
  t.like(bad, { role: 'dead', status: 502, upstreamError: 'SY_ERR_UPSTREAM_CONNECT' });
  t.is(bad!.endpoint, dead, 'the endpoint it tried');

  t.is((await get(listenerUrl(sc, 'limited'), { 'x-user': 'u' })).status, 200);
  t.is((await get(listenerUrl(sc, 'limited'), { 'x-user': 'u' })).status, 429);
  const limited = await untilLogLines(file, (l) => l.listener === 'limited', 2);
  t.like(limited[0], { role: 'ok', status: 200 });
  t.like(limited[1], { role: '', endpoint: '', status: 429, upstreamError: '' });
});

test('a TCP connection: one line when it closes, with the bytes each way', async (t) => {
  const { sc, file, echo } = await setup(t, (dir) => ({ path: `${dir}/access.log` }));
  const a = sc.addresses().get('raw')!;
  const s = connect(a.port, a.host);
  s.write('x'.repeat(300));
  let echoed = 0;
  s.on('data', (c: Buffer) => { echoed += c.length; });
  await until(() => echoed === 300, 5_000, 'the echo');
  s.end();
  const [line] = await untilLogLines(file, (l) => l.type === 'tcp');
  t.like(line, { type: 'tcp', listener: 'raw', vset: 'echo', role: 'echo', result: 'ok', bytesIn: 300, bytesOut: 300, generation: 1, upstreamError: '' });
  t.is(line!.endpoint, echo, 'the echo upstream');
});

test('a WebSocket: one line (status 101) when the tunnel closes, counted once in requests_total', async (t) => {
  const server = (await startUpstream(t, 'ok')).server;
  const wss = new WebSocketServer({ server });
  wss.on('connection', (ws) => ws.on('message', (m) => ws.send(m)));
  t.teardown(() => wss.close());
  const addr = server.address() as AddressInfo;
  const { dir } = await tempFiles(t, {});
  const file = join(dir, 'access.log');
  const sc = await startSidecar(t, { accessLog: { path: file }, ...oneRole(`${addr.address}:${addr.port}`, { target: 'ws' }, { role: 'ws' }) });
  const ws = new WebSocket(`${listenerUrl(sc, 'web').replace('http', 'ws')}/chat`);
  t.teardown(() => ws.terminate());
  await new Promise((r, j) => { ws.once('open', r); ws.once('error', j); });
  ws.send('hello');
  await new Promise((r) => ws.once('message', r));
  const series = { listener: 'web', vset: 'ws', role: 'ws', code: '101' };
  t.is(await findMetric(sc, 'switchyard_requests_total', series), undefined, 'not counted while the tunnel is open');
  ws.close();
  const [line] = await untilLogLines(file, (l) => l.listener === 'web');
  t.like(line, { type: 'http', role: 'ws', method: 'GET', path: '/chat', status: 101, upstreamError: '' });
  t.true(Number(line!.bytesIn) > 100 && Number(line!.bytesOut) > 100, 'the whole tunnel, handshake included');
  t.is(await metric(sc, 'switchyard_requests_total', series), 1);
  t.is((await logLines(file)).filter((l) => l.type === 'http').length, 1, 'one line');
});

test('switched on and off by reloads, with one reload line each; a path that cannot be opened rejects the change whole', async (t) => {
  const { sc, dir, file, text } = await setup(t, () => undefined);
  const web = () => get(listenerUrl(sc, 'web'));
  await web();
  t.false(existsSync(file), 'off: no file');

  const on = await putConfig(sc, text({ path: file }));
  t.is(on.status, 200, on.body);
  const [reload] = await untilLogLines(file, (l) => l.type === 'reload');
  t.like(reload, { type: 'reload', generation: 2, source: 'api', result: 'applied', error: '' });
  t.deepEqual(reload!.changes, { listeners: { added: [], removed: [], changed: [] }, components: {} });
  await web();
  t.like((await untilLogLines(file, (l) => l.type === 'http'))[0], { listener: 'web', generation: 2 });

  // A rejected change is logged in the access log too; nothing else changes.
  const bad = await putConfig(sc, text({ path: `${dir}/no/such/dir/access.log` }));
  t.is(bad.status, 409);
  t.regex(bad.body, /accessLog\.path: cannot open .*no\/such\/dir\/access\.log/);
  t.like((await untilLogLines(file, (l) => l.type === 'reload', 2))[1], { generation: 2, result: 'failed' });
  t.is(sc.runtime.current!.number, 2);
  const invalid = await putConfig(sc, text({ path: '', format: 'json' }));
  t.is(invalid.status, 400);
  t.regex(invalid.body, /accessLog\.format/);
  t.regex(invalid.body, /accessLog\.path/);

  const off = await putConfig(sc, text());
  t.is(off.status, 200);
  await web();
  await web();
  // Generation 2 (the last with the log) closes once drained, and flushes its sink as it goes.
  await until(() => sc.runtime.draining.size === 0, 5_000, 'generation 2 to close');
  const lines = await logLines(file);
  t.is(lines.filter((l) => l.type === 'http').length, 1, 'off again: no lines for generation 3\'s requests');
  t.like(lines.at(-1), { type: 'reload', generation: 3, result: 'applied' }, 'the change that turned it off is its last line');
});

test('a clean stop flushes every line; reopenLogs (SIGUSR1) writes to a new file after a rotation', async (t) => {
  const { sc, file } = await setup(t, (dir) => ({ path: `${dir}/access.log` }));
  const url = listenerUrl(sc, 'web');
  await get(url);
  await untilLogLines(file, (l) => l.type === 'http');
  await rename(file, `${file}.1`);
  await sc.runtime.reopenLogs();
  for (let i = 0; i < 20; i++) await get(`${url}/n${i}`);
  await sc.stop(); // well within the 200 ms batch timer
  const lines = (await logLines(file)).filter((l) => l.type === 'http');
  t.deepEqual(lines.map((l) => l.path), Array.from({ length: 20 }, (_, i) => `/n${i}`));
  t.is((await logLines(`${file}.1`)).filter((l) => l.type === 'http').length, 1, 'the rotated file kept its line');
});

test('the CLI writes the access log to stdout, and then its own lines to stderr (stdout is JSON only)', async (t) => {
  const up = await startUpstream(t, 'ok');
  const host = uniqueHost();
  const { paths } = await tempFiles(t, {
    'c.yaml': yaml({
      admin: { address: '127.0.0.1:0' },
      accessLog: { path: 'stdout' },
      ...oneRole(up, { address: `${host}:0`, target: 'ok' }, { role: 'ok' }),
    }),
  });
  const cli = spawnCli(t, ['run', '--config', paths['c.yaml']!]);
  const out = cli.stdout;
  const err = cli.stderr;
  const [, listener] = await cli.line(/listener web: http:\/\/(\S+) /, { stream: 'stderr', ms: 10_000 });
  await cli.line(/admin API on/, { stream: 'stderr', ms: 10_000 });
  t.is((await get(`http://${listener}/hello`)).status, 200);
  const json = () => out.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as LogLine);
  await until(() => json().some((l) => l.type === 'http'), 5_000, 'the access log line on stdout');
  t.like(json().find((l) => l.type === 'http'), { listener: 'web', role: 'ok', method: 'GET', path: '/hello', status: 200, generation: 1 });
  t.like(json().find((l) => l.type === 'reload'), { generation: 1, source: 'file', result: 'applied' });
  cli.child.kill('SIGTERM');
  t.is(await cli.exit(10_000), 0);
  t.true(err.some((l) => /generation 1 applied from file/.test(l)), err.join('\n'));
  t.deepEqual(out.filter((l) => !l.startsWith('{')), [], 'nothing but JSON lines on stdout');
});

// ---------------------------------------------------------------- a stuck sink

/** Resolves to 'timeout' if `p` has not settled within `ms`. */
function settled<T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> {
  return Promise.race([p, new Promise<'timeout'>((r) => { const x = setTimeout(() => r('timeout'), ms); x.unref(); })]);
}

/** A FIFO in a fresh temp directory: an access log whose reader the test controls. */
async function mkfifo(t: ExecutionContext): Promise<string> {
  const { dir } = await tempFiles(t, {});
  const path = join(dir, 'access.fifo');
  execFileSync(toolPath('mkfifo'), [path]);
  return path;
}

/** Role ok behind listener web, drainTimeout 1s; `more` added. */
function okConfig(up: string, more: ConfigSpec = {}): ConfigSpec {
  return { drainTimeout: '1s', ...more, ...oneRole(up, { target: 'ok' }, { role: 'ok' }) };
}

test.serial('an accessLog path that is a FIFO with no reader does not hang PUT /config (and every reload after it)', async (t) => {
  const up = await startUpstream(t, 'ok');
  const sc = await startSidecar(t, okConfig(up.address));
  const fifo = await mkfifo(t);
  const pending = putConfig(sc, okConfig(up.address, { accessLog: { path: fifo } }));
  const got = await settled(pending, 3_000);
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
  const sc = await startSidecar(t, okConfig(up.address, { accessLog: { path: fifo } }));
  const long = '/' + 'x'.repeat(2_000);
  // 160 KB of lines: past 64 KiB a batch goes to fs.write at once, and the pipe (64 KiB) fills.
  for (let i = 0; i < 80; i++) t.is((await get(listenerUrl(sc, 'web') + long)).status, 200);
  const stopped = await settled(sc.stop(), 5_000);
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
  const sc = await startSidecar(t, okConfig(up.address, { accessLog: { path: fifo } }));
  const long = '/' + 'x'.repeat(2_000);
  for (let i = 0; i < 80; i++) await get(listenerUrl(sc, 'web') + long); // fills the pipe (see above)
  t.is((await putConfig(sc, okConfig(up.address))).status, 200);
  let draining = -1;
  const ok = await until(async () => (draining = await metric(sc, 'switchyard_generations_draining')) === 0, 4_000)
    .then(() => true, () => false);
  closeReader();
  t.true(ok, `generation 1 has no work left but is still "draining" (gauge ${draining}): its close awaits the stuck sink`);
});

import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, rename } from 'node:fs/promises';
import { connect, createServer as createNetServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { request } from 'undici';
import { WebSocket, WebSocketServer } from 'ws';
import { CLI, adminUrl, deadAddress, get, listenerUrl, putConfig, startSidecar, startUpstream, tempFiles, uniqueHost, until } from './helpers.js';

/* The access log (accessLog: { path }): one JSON line per HTTP request, TCP connection and config change. */

type Line = Record<string, unknown>;

async function readLines(file: string): Promise<Line[]> {
  if (!existsSync(file)) return [];
  return (await readFile(file, 'utf8')).split('\n').filter(Boolean).map((l) => JSON.parse(l) as Line);
}

/** Waits until the file holds lines matching `pick` (the sink writes in batches, within 200 ms). */
async function linesOf(file: string, pick: (l: Line) => boolean, count = 1): Promise<Line[]> {
  let got: Line[] = [];
  await until(async () => (got = (await readLines(file)).filter(pick)).length >= count, 5_000, `${count} access log line(s) in ${file}`);
  return got;
}

/** A TCP server that answers each chunk with the same bytes. */
async function echoServer(t: ExecutionContext): Promise<string> {
  const server = createNetServer((s) => s.pipe(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return `127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function config(ok: string, echo: string, dead: string, hosts: string[], accessLog: string): string {
  return `
drainTimeout: 2s
${accessLog}
roles:
  ok: { channels: { http: { endpoints: ["${ok}"] } } }
  dead: { channels: { http: { endpoints: ["${dead}"] } } }
  echo: { channels: { tcp: { endpoints: ["${echo}"] } } }
components:
  limit: { type: ratelimit, metadata: { requestsPerSecond: "0.001", burst: "1", key: "header:x-user" } }
listeners:
  web:
    address: "${hosts[0]}:0"
    target: ok
  limited:
    address: "${hosts[1]}:0"
    target: ok
    filters:
      - { type: weighted, weights: { ok: 1 } }
      - { type: ratelimit, component: limit }
  broken:
    address: "${hosts[2]}:0"
    target: dead
  raw:
    address: "${hosts[3]}:0"
    protocol: tcp
    target: echo
`;
}

async function setup(t: ExecutionContext, accessLog: (dir: string) => string) {
  const ok = await startUpstream(t, 'ok', (req, res) => {
    let n = 0;
    req.on('data', (c: Buffer) => { n += c.length; });
    req.on('end', () => res.end(`got ${n}`));
  });
  const echo = await echoServer(t);
  const dead = await deadAddress();
  const { dir } = await tempFiles({});
  const hosts = [uniqueHost(), uniqueHost(), uniqueHost(), uniqueHost()];
  const text = (log: string) => config(ok.address, echo, dead, hosts, log);
  // Tests here point the access log at new files by PUT /config.
  const sc = await startSidecar(t, text(accessLog(dir)), { allowPush: ['accessLog'] });
  return { sc, dir, file: join(dir, 'access.log'), text, dead, okAddress: ok.address };
}

test('HTTP requests: one line each, with role, endpoint, status, bytes, generation; a 502 names the upstream error; a filter\'s 429 has role ""', async (t) => {
  const { sc, file, dead, okAddress } = await setup(t, (dir) => `accessLog: { path: "${dir}/access.log" }`);
  const ok = await get(`${listenerUrl(sc, 'web')}/items?id=7`, {}, { method: 'POST', body: 'x'.repeat(1000) });
  t.is(ok.body, 'got 1000');
  const [line] = await linesOf(file, (l) => l.listener === 'web');
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
  const [bad] = await linesOf(file, (l) => l.listener === 'broken');
  t.like(bad, { role: 'dead', status: 502, upstreamError: 'SY_ERR_UPSTREAM_CONNECT' });
  t.is(bad!.endpoint, dead, 'the endpoint it tried');

  t.is((await get(listenerUrl(sc, 'limited'), { 'x-user': 'u' })).status, 200);
  t.is((await get(listenerUrl(sc, 'limited'), { 'x-user': 'u' })).status, 429);
  const limited = await linesOf(file, (l) => l.listener === 'limited', 2);
  t.like(limited[0], { role: 'ok', status: 200 });
  t.like(limited[1], { role: '', endpoint: '', status: 429, upstreamError: '' });
});

test('a TCP connection: one line when it closes, with the bytes each way', async (t) => {
  const { sc, file } = await setup(t, (dir) => `accessLog: { path: "${dir}/access.log" }`);
  const a = sc.addresses().get('raw')!;
  const s = connect(a.port, a.host);
  s.write('x'.repeat(300));
  let echoed = 0;
  s.on('data', (c: Buffer) => { echoed += c.length; });
  await until(() => echoed === 300, 5_000, 'the echo');
  s.end();
  const [line] = await linesOf(file, (l) => l.type === 'tcp');
  t.like(line, { type: 'tcp', listener: 'raw', vset: 'echo', role: 'echo', result: 'ok', bytesIn: 300, bytesOut: 300, generation: 1, upstreamError: '' });
  t.regex(String(line!.endpoint), /^127\.0\.0\.1:\d+$/);
});

test('a WebSocket: one line (status 101) when the tunnel closes, counted once in requests_total', async (t) => {
  const server = (await startUpstream(t, 'ok')).server;
  const wss = new WebSocketServer({ server });
  wss.on('connection', (ws) => ws.on('message', (m) => ws.send(m)));
  t.teardown(() => wss.close());
  const addr = server.address() as AddressInfo;
  const { dir } = await tempFiles({});
  const file = join(dir, 'access.log');
  const sc = await startSidecar(t, `
accessLog: { path: "${file}" }
roles:
  ws: { channels: { http: { endpoints: ["${addr.address}:${addr.port}"] } } }
listeners:
  web: { address: "${uniqueHost()}:0", target: ws }
`);
  const ws = new WebSocket(`${listenerUrl(sc, 'web').replace('http', 'ws')}/chat`);
  t.teardown(() => ws.terminate());
  await new Promise((r, j) => { ws.once('open', r); ws.once('error', j); });
  ws.send('hello');
  await new Promise((r) => ws.once('message', r));
  const counted = async () => {
    const text = await (await request(`${adminUrl(sc)}/metrics`)).body.text();
    return Number(/^switchyard_requests_total\{listener="web",vset="ws",role="ws",code="101"\} (\d+)/m.exec(text)?.[1] ?? 0);
  };
  t.is(await counted(), 0, 'not counted while the tunnel is open');
  ws.close();
  const [line] = await linesOf(file, (l) => l.listener === 'web');
  t.like(line, { type: 'http', role: 'ws', method: 'GET', path: '/chat', status: 101, upstreamError: '' });
  t.true(Number(line!.bytesIn) > 100 && Number(line!.bytesOut) > 100, 'the whole tunnel, handshake included');
  t.is(await counted(), 1);
  t.is((await readLines(file)).filter((l) => l.type === 'http').length, 1, 'one line');
});

test('switched on and off by reloads, with one reload line each; a path that cannot be opened rejects the change whole', async (t) => {
  const { sc, dir, file, text } = await setup(t, () => '');
  const web = () => get(listenerUrl(sc, 'web'));
  await web();
  t.false(existsSync(file), 'off: no file');

  const on = await putConfig(sc, text(`accessLog: { path: "${file}" }`));
  t.is(on.status, 200, on.body);
  const [reload] = await linesOf(file, (l) => l.type === 'reload');
  t.like(reload, { type: 'reload', generation: 2, source: 'api', result: 'applied', error: '' });
  t.deepEqual(reload!.changes, { listeners: { added: [], removed: [], changed: [] }, components: {} });
  await web();
  t.like((await linesOf(file, (l) => l.type === 'http'))[0], { listener: 'web', generation: 2 });

  // A rejected change is logged in the access log too; nothing else changes.
  const bad = await putConfig(sc, text(`accessLog: { path: "${dir}/no/such/dir/access.log" }`));
  t.is(bad.status, 409);
  t.regex(bad.body, /accessLog\.path: cannot open .*no\/such\/dir\/access\.log/);
  t.like((await linesOf(file, (l) => l.type === 'reload', 2))[1], { generation: 2, result: 'failed' });
  t.is(sc.runtime.current!.number, 2);
  const invalid = await putConfig(sc, text('accessLog: { path: "", format: json }'));
  t.is(invalid.status, 400);
  t.regex(invalid.body, /accessLog\.format/);
  t.regex(invalid.body, /accessLog\.path/);

  const off = await putConfig(sc, text(''));
  t.is(off.status, 200);
  await web();
  await web();
  // Generation 2 (the last with the log) closes once drained, and flushes its sink as it goes.
  await until(() => sc.runtime.draining.size === 0, 5_000, 'generation 2 to close');
  const lines = await readLines(file);
  t.is(lines.filter((l) => l.type === 'http').length, 1, 'off again: no lines for generation 3\'s requests');
  t.like(lines.at(-1), { type: 'reload', generation: 3, result: 'applied' }, 'the change that turned it off is its last line');
});

test('a clean stop flushes every line; reopenLogs (SIGUSR1) writes to a new file after a rotation', async (t) => {
  const { sc, file } = await setup(t, (dir) => `accessLog: { path: "${dir}/access.log" }`);
  const url = listenerUrl(sc, 'web');
  await get(url);
  await linesOf(file, (l) => l.type === 'http');
  await rename(file, `${file}.1`);
  await sc.runtime.reopenLogs();
  for (let i = 0; i < 20; i++) await get(`${url}/n${i}`);
  await sc.stop(); // well within the 200 ms batch timer
  const lines = (await readLines(file)).filter((l) => l.type === 'http');
  t.deepEqual(lines.map((l) => l.path), Array.from({ length: 20 }, (_, i) => `/n${i}`));
  t.is((await readLines(`${file}.1`)).filter((l) => l.type === 'http').length, 1, 'the rotated file kept its line');
});

test('the CLI writes the access log to stdout, and then its own lines to stderr (stdout is JSON only)', async (t) => {
  const up = await startUpstream(t, 'ok');
  const host = uniqueHost();
  const { paths } = await tempFiles({
    'c.yaml': `admin: { address: "127.0.0.1:0" }
accessLog: { path: stdout }
roles:
  ok: { channels: { http: { endpoints: ["${up.address}"] } } }
listeners:
  web: { address: "${host}:0", target: ok }
`,
  });
  const child = spawn(process.execPath, [CLI, 'run', '--config', paths['c.yaml']!], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL'); });
  const lines = (stream: NodeJS.ReadableStream): string[] => {
    const got: string[] = [];
    let partial = '';
    stream.setEncoding('utf8');
    stream.on('data', (d: string) => {
      const parts = (partial + d).split('\n');
      partial = parts.pop()!;
      got.push(...parts);
    });
    return got;
  };
  const out = lines(child.stdout!);
  const err = lines(child.stderr!);
  const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  await until(() => err.some((l) => l.includes('admin API on')) || child.exitCode !== null, 10_000, 'the CLI to start');
  const listener = /listener web: http:\/\/(\S+) /.exec(err.join('\n'))![1]!;
  t.is((await get(`http://${listener}/hello`)).status, 200);
  const json = () => out.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Line);
  await until(() => json().some((l) => l.type === 'http'), 5_000, 'the access log line on stdout');
  t.like(json().find((l) => l.type === 'http'), { listener: 'web', role: 'ok', method: 'GET', path: '/hello', status: 200, generation: 1 });
  t.like(json().find((l) => l.type === 'reload'), { generation: 1, source: 'file', result: 'applied' });
  child.kill('SIGTERM');
  const code = await Promise.race([exit, new Promise((r) => setTimeout(r, 10_000, 'timeout'))]);
  t.is(code, 0);
  t.true(err.some((l) => /generation 1 applied from file/.test(l)), err.join('\n'));
  t.deepEqual(out.filter((l) => !l.startsWith('{')), [], 'nothing but JSON lines on stdout');
});

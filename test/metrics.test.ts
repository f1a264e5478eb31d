import test from 'ava';
import { writeFile } from 'node:fs/promises';
import { connect, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { WebSocket, WebSocketServer } from 'ws';
import { Metrics, RoleMetrics } from '../src/metrics.js';
import { Sidecar } from '../src/sidecar.js';
import { parseConfigTexts } from '../src/config/load.js';
import {
  ROOT, configOf, findMetric, get, listenerUrl, logLines, metric, once, oneRole, putConfig, role, scrape, startEcho, startSidecar,
  startUpstream, tempFiles, until, untilMetric, vsetOf, weighted, yaml, type ConfigSpec, type ListenerSpec,
} from './helpers.js';

/** Role r and listener web (target: the role's own vset); the listener keeps its address across calls with the same `host`. */
const config = (address: string, listener: Partial<ListenerSpec> = {}, host = '127.0.0.1') =>
  configOf(oneRole(address, { address: `${host}:0`, target: 'r', ...listener }));

test('requests_total counts the status sent; 499 only when the client left before the response started', async (t) => {
  let hold: (() => void) | null = null;
  const up = await startUpstream(t, 'r', (req, res) => {
    if (req.url === '/cut') {
      // headers and some body, then the upstream dies
      res.writeHead(200, { 'content-length': '100' });
      res.write('partial');
      setTimeout(() => res.socket?.destroy(), 20);
    } else if (req.url === '/slow') {
      hold = () => res.end('late');
    } else res.end('ok');
  });
  const sc = await startSidecar(t, config(up.address));
  const url = listenerUrl(sc, 'web');
  t.is((await get(url)).status, 200);

  // the upstream cuts the body after its headers: counted as the 200 it was sent, plus an upstream error
  await t.throwsAsync(get(`${url}/cut`));
  await untilMetric(sc, 'switchyard_upstream_errors_total', { role: 'r' }, 1, 5000, 'the upstream error');

  // the client leaves before any response: 499
  const { hostname, port } = new URL(url);
  const s = connect(Number(port), hostname);
  s.write('GET /slow HTTP/1.1\r\nHost: x\r\n\r\n');
  await until(() => hold !== null, 5000, 'the slow request to arrive');
  s.destroy();
  await untilMetric(sc, 'switchyard_requests_total', { code: '499' }, 1, 5000, 'the 499');
  t.is(await metric(sc, 'switchyard_requests_total', { listener: 'web', vset: 'r', role: 'r', code: '200' }), 2);
});

const lastOk = 'switchyard_config_last_reload_successful';
const lastOkTime = 'switchyard_config_last_reload_success_timestamp_seconds';

test('config_last_reload_successful and its timestamp follow real reloads: PUT /config and the config file', async (t) => {
  const up = await startUpstream(t, 'r');
  const before = Date.now() / 1000;
  const sc = await startSidecar(t, config(up.address), { allowPush: ['accessLog'] });
  t.is(await metric(sc, lastOk), 1, 'the first generation counts as a successful load');
  const started = await metric(sc, lastOkTime);
  t.true(started >= Math.floor(before) && started <= Date.now() / 1000, `set at start: ${started}`);

  // PUT /config: invalid → 0, timestamp kept; valid → 1, timestamp moves on.
  t.is((await putConfig(sc, config(up.address, { target: 'nosuch' }))).status, 400);
  t.is(await metric(sc, lastOk), 0);
  t.is(await metric(sc, lastOkTime), started);
  await new Promise((r) => setTimeout(r, 20)); // the timestamp has ms resolution
  t.is((await putConfig(sc, config(up.address))).status, 200);
  t.is(await metric(sc, lastOk), 1);
  t.true((await metric(sc, lastOkTime)) > started);

  // A build failure (the access log file cannot be opened) is a rejected change too.
  t.is((await putConfig(sc, { ...config(up.address), accessLog: { path: `/nonexistent-dir-${process.pid}/access.log` } })).status, 409);
  t.is(await metric(sc, lastOk), 0);
});

test('config_last_reload_successful through the config file: a bad file → 0, the fixed file → 1', async (t) => {
  const up = await startUpstream(t, 'r');
  const { listeners, ...rest } = config(up.address);
  const good = yaml({ admin: { address: '127.0.0.1:0' }, ...rest, listeners });
  const { paths } = await tempFiles(t, { 'c.yaml': good });
  const sc = await Sidecar.start({ files: [paths['c.yaml']!] });
  t.teardown(() => sc.stop());
  t.is(await metric(sc, lastOk), 1);
  const started = await metric(sc, lastOkTime);
  await writeFile(paths['c.yaml']!, yaml({ admin: { address: '127.0.0.1:0' }, ...rest, listenrs: listeners }));
  t.false((await sc.reload('file')).ok);
  t.is(await metric(sc, lastOk), 0);
  t.is(await metric(sc, lastOkTime), started);
  await writeFile(paths['c.yaml']!, good);
  await new Promise((r) => setTimeout(r, 20));
  t.true((await sc.reload('file')).ok);
  t.is(await metric(sc, lastOk), 1);
  t.true((await metric(sc, lastOkTime)) > started);
});

test('generations_draining counts a replaced generation while a request still holds it', async (t) => {
  let release: (() => void) | null = null;
  const up = await startUpstream(t, 'r', (req, res) => {
    if (req.url === '/hold') release = () => res.end('held');
    else res.end('ok');
  });
  const sc = await startSidecar(t, config(up.address));
  const url = listenerUrl(sc, 'web');
  const draining = 'switchyard_generations_draining';
  t.is(await metric(sc, draining), 0);
  const held = get(`${url}/hold`);
  await until(() => release !== null, 5000, 'the held request');
  t.is((await putConfig(sc, config(up.address, { timeouts: { connect: '2s' } }))).status, 200);
  t.is(await metric(sc, draining), 1, 'generation 1 drains while its request runs');
  t.is((await get(url)).status, 200, 'new requests are served by generation 2');
  release!();
  t.is((await held).body, 'held');
  await untilMetric(sc, draining, {}, 0, 5000, 'the drained generation to close');
});

test('a request a filter answered counts under role "", even when a routing filter had picked a role first', async (t) => {
  const up = await startUpstream(t, 'r');
  const sc = await startSidecar(t, configOf({
    components: { limit: { type: 'ratelimit', metadata: { requestsPerSecond: '0.001', burst: '1' } } },
    ...oneRole(up.address, { target: 'r', filters: [weighted({ r: 1 }), { type: 'ratelimit', component: 'limit' }] }),
  }));
  const url = listenerUrl(sc, 'web');
  t.is((await get(url)).status, 200);
  t.is((await get(url)).status, 429);
  await untilMetric(sc, 'switchyard_requests_total', { listener: 'web', vset: 'r', role: '', code: '429' }, 1, 5000, 'the 429 under role ""');
  t.is(await findMetric(sc, 'switchyard_requests_total', { listener: 'web', vset: 'r', role: 'r', code: '429' }), undefined, 'no 429 under role r');
  t.is(await metric(sc, 'switchyard_requests_total', { listener: 'web', vset: 'r', role: 'r', code: '200' }), 1);
});

test('default process metrics are exported', async (t) => {
  const up = await startUpstream(t, 'r');
  const sc = await startSidecar(t, config(up.address));
  const m = await scrape(sc);
  t.true(m.value('process_cpu_seconds_total') > 0);
  t.true(m.value('nodejs_eventloop_lag_seconds') >= 0);
  t.true(m.value('process_resident_memory_bytes') > 0);
});

test('Metrics({countRequests: false}) counts no requests (the benchmark\'s "metrics off")', async (t) => {
  const up = await startUpstream(t, 'r');
  const metrics = new Metrics({ countRequests: false });
  const sc = await Sidecar.start({ raw: parseConfigTexts([{ name: 't.yaml', text: yaml({ admin: { address: '127.0.0.1:0' }, ...config(up.address) }) }], ROOT), metrics });
  t.teardown(() => sc.stop());
  t.is((await get(listenerUrl(sc, 'web'))).status, 200);
  t.deepEqual((await scrape(sc)).series('switchyard_requests_total'), [], 'requests_total has no series');
  t.is(await metric(sc, 'switchyard_config_generation'), 1, 'the rest is counted');
});

test('config_reloads_total has every source and result at 0 from the start, so a first failure shows as an increase', async (t) => {
  const up = await startUpstream(t, 'r');
  const sc = await startSidecar(t, config(up.address));
  const m = await scrape(sc);
  for (const source of ['file', 'sighup', 'api', 'component', 'rollback']) {
    for (const result of ['success', 'invalid', 'failed']) {
      t.is(m.series('switchyard_config_reloads_total', { source, result }).length, 1, `${source}/${result}`);
    }
  }
  t.is(m.value('switchyard_config_reloads_total', { source: 'api', result: 'invalid' }), 0);
});

test('tcp_bytes_total follows an open connection at each scrape (not only at its close), and connections_active counts it', async (t) => {
  // An echo upstream that also says a fixed greeting first: bytes out are more than bytes in.
  const { createServer } = await import('node:net');
  const echo = createServer((s) => { s.on('error', () => {}); s.write('hello\n'); s.pipe(s); });
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  t.teardown(() => { echo.close(); });
  const port = (echo.address() as { port: number }).port;
  const sc = await startSidecar(t, configOf(oneRole(`127.0.0.1:${port}`, { address: '127.0.0.1:0', protocol: 'tcp', target: 'db' }, { role: 'db', channel: 'raw', listener: 'raw' })));
  const a = sc.addresses().get('raw')!;
  const bytes = (direction: string) => findMetric(sc, 'switchyard_tcp_bytes_total', { listener: 'raw', direction });
  const s = connect(a.port, a.host);
  t.teardown(() => s.destroy());
  let got = '';
  s.on('data', (d: Buffer) => { got += d.toString(); });
  const payload = 'x'.repeat(3000);
  s.write(payload);
  await until(() => got.length === 6 + 3000, 5000, 'the echo');
  // Still open: the scrape shows what went through so far.
  await until(async () => (await bytes('in')) === 3000, 5000, 'bytes in while open');
  t.is(await bytes('out'), 3006);
  t.is(await metric(sc, 'switchyard_connections_active', { listener: 'raw' }), 1);
  s.write('yz');
  await until(() => got.length === 3008, 5000, 'the second echo');
  await until(async () => (await bytes('in')) === 3002, 5000, 'the second write counted while open');
  s.end();
  await once(s, 'close');
  await untilMetric(sc, 'switchyard_connections_active', { listener: 'raw' }, 0, 5000, 'the connection closed');
  t.is(await bytes('in'), 3002, 'nothing counted twice at the close');
  t.is(await bytes('out'), 3008);
});

test('series of listeners and roles that a reload removed are dropped once their generation closed; those that stay keep counting', async (t) => {
  const up = await startUpstream(t, 'u');
  const cfg = (name: string, listener: string) => {
    const { roles, vsets } = vsetOf({ keep: role(up), [name]: role(up) });
    return configOf({
      roles, vsets, listeners: {
        stays: { address: '127.0.0.1:0', target: 'svc', filters: [{ type: 'header_route', rules: [{ header: 'x-r', equals: 'k', role: 'keep' }] }] },
        [listener]: { address: '127.0.0.1:0', target: 'svc', filters: [weighted({ [name]: 1 })] },
      },
    });
  };
  const sc = await startSidecar(t, cfg('v1', 'web1'));
  const text = async () => (await scrape(sc)).text;
  for (let i = 0; i < 3; i++) t.is((await get(listenerUrl(sc, 'stays'), { 'x-r': 'k' })).status, 200);
  t.is((await get(listenerUrl(sc, 'web1'))).status, 200);
  t.regex(await text(), /switchyard_requests_total\{listener="web1",vset="svc",role="v1",code="200"\} 1/);

  for (const [role, listener] of [['v2', 'web2'], ['v3', 'web3']] as const) {
    t.is((await putConfig(sc, cfg(role, listener))).status, 200);
    t.is((await get(listenerUrl(sc, listener))).status, 200);
  }
  await untilMetric(sc, 'switchyard_generations_draining', {}, 0, 5000, 'the old generations to close');
  // A keep-alive connection can outlive its listener's generation; its gauge (back at 0 once it
  // closed) goes with the next prune, so that one series is left out here.
  const left = await until2(async () => {
    const x = (await text()).split('\n').filter((l) => !/^switchyard_connections_active\{listener="web[12]"\} 0$/.test(l)).join('\n');
    return /listener="web[12]"|role="v[12]"/.test(x) ? null : x;
  });
  t.notRegex(left, /listener="web1"|listener="web2"/, 'removed listeners have no series (requests, histogram, connections)');
  t.notRegex(left, /role="v1"|role="v2"/, 'removed roles have no series');
  t.regex(left, /switchyard_requests_total\{listener="web3",vset="svc",role="v3",code="200"\} 1/);
  t.regex(left, /switchyard_request_duration_seconds_count\{listener="web3",vset="svc",role="v3"\} 1/);
  t.regex(left, /switchyard_requests_total\{listener="stays",vset="svc",role="keep",code="200"\} 3/, 'what stays keeps its count');
  t.is((await get(listenerUrl(sc, 'stays'), { 'x-r': 'k' })).status, 200);
  t.regex(await text(), /switchyard_requests_total\{listener="stays",vset="svc",role="keep",code="200"\} 4/, 'and goes on counting');
});

/** Polls `f` until it returns a value (not null), within 5 s. */
async function until2<T>(f: () => Promise<T | null>): Promise<T> {
  let v: T | null = null;
  await until(async () => (v = await f()) !== null, 5000, 'the removed series to go');
  return v!;
}

// ---------------------------------------------------------------- requests counted not at all

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

/** Role ok behind listener web, drainTimeout 1s; `more` added. */
function okConfig(up: string, more: ConfigSpec = {}): ConfigSpec {
  return { drainTimeout: '1s', ...more, ...oneRole(up, { target: 'ok' }, { role: 'ok' }) };
}

test('a request Node answers itself (431 head too large) is counted in requests_total and logged', async (t) => {
  const up = await startUpstream(t, 'ok');
  const { dir } = await tempFiles(t, {});
  const file = join(dir, 'access.log');
  const sc = await startSidecar(t, okConfig(up.address, { accessLog: { path: file } }));
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
  const sc = await startSidecar(t, okConfig(up.address));
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

test('request_duration_seconds is exposed line for line as a Prometheus histogram: cumulative buckets, +Inf, _sum, _count', async (t) => {
  const metrics = new Metrics();
  const a = new RoleMetrics(metrics, 'web', 'svc', 'a');
  new RoleMetrics(metrics, 'web', 'svc', ''); // no request reached it: no series
  // 0.0005 is in its own bucket (le is "less or equal"); 31 s is over the last bound, only in +Inf.
  for (const s of [0.0001, 0.0005, 0.003, 0.2, 0.2, 31]) a.count(200, s);
  a.count(503, 0.75);
  const text = await metrics.registry.metrics();
  const family = (name: string) => text.split('\n').filter((l) => l.startsWith(`# HELP ${name} `) || l.startsWith(`# TYPE ${name} `) || l.startsWith(`${name}{`) || l.startsWith(`${name}_`));
  const labels = 'listener="web",vset="svc",role="a"';
  const le = ['0.0005', '0.001', '0.0025', '0.005', '0.01', '0.025', '0.05', '0.1', '0.25', '0.5', '1', '2.5', '5', '10', '30', '+Inf'];
  const cumulative = [2, 2, 2, 3, 3, 3, 3, 3, 5, 5, 6, 6, 6, 6, 6, 7];
  t.deepEqual(family('switchyard_request_duration_seconds'), [
    '# HELP switchyard_request_duration_seconds Time from the request to the end of the response.',
    '# TYPE switchyard_request_duration_seconds histogram',
    ...le.map((b, i) => `switchyard_request_duration_seconds_bucket{le="${b}",${labels}} ${cumulative[i]}`),
    `switchyard_request_duration_seconds_sum{${labels}} ${0.0001 + 0.0005 + 0.003 + 0.2 + 0.2 + 31 + 0.75}`,
    `switchyard_request_duration_seconds_count{${labels}} 7`,
  ]);
  t.deepEqual(family('switchyard_requests_total').slice(2).sort(), [
    `switchyard_requests_total{${labels},code="200"} 6`,
    `switchyard_requests_total{${labels},code="503"} 1`,
  ]);
  // The JSON form (what admin/status.ts reads from requests_total) has le among the labels, as prom-client's Histogram gives it.
  const json = (await metrics.registry.getMetricsAsJSON()).find((m) => m.name === 'switchyard_request_duration_seconds')!;
  t.is(String(json.type), 'histogram');
  t.deepEqual(json.values.at(-1), { value: 7, metricName: 'switchyard_request_duration_seconds_count', exemplar: undefined, labels: { listener: 'web', vset: 'svc', role: 'a' } });
  t.deepEqual(json.values[0]!.labels, { le: 0.0005, listener: 'web', vset: 'svc', role: 'a' });
});

test('requests_total and request_duration_seconds carry their counts across a reload that keeps the listener and role', async (t) => {
  const up = await startUpstream(t, 'r');
  const sc = await startSidecar(t, config(up.address));
  const labels = { listener: 'web', vset: 'r', role: 'r' };
  const n = 5;
  const m = 3;
  for (let i = 0; i < n; i++) t.is((await get(listenerUrl(sc, 'web'))).status, 200);
  await untilMetric(sc, 'switchyard_requests_total', { ...labels, code: '200' }, n, 5000, 'the first generation\'s requests');
  t.is((await putConfig(sc, config(up.address, { timeouts: { connect: '2s' } }))).status, 200);
  t.is(await metric(sc, 'switchyard_config_generation'), 2);
  // The first generation closes (its label sets are then pruned, the kept ones must stay).
  await untilMetric(sc, 'switchyard_generations_draining', {}, 0, 5000, 'generation 1 to close');
  for (let i = 0; i < m; i++) t.is((await get(listenerUrl(sc, 'web'))).status, 200);
  await untilMetric(sc, 'switchyard_requests_total', { ...labels, code: '200' }, n + m, 5000, 'both generations\' requests');
  const s = await scrape(sc);
  t.is(s.value('switchyard_request_duration_seconds_count', labels), n + m);
  const buckets = s.series('switchyard_request_duration_seconds_bucket', labels);
  t.is(buckets.length, 16, '15 bounds and +Inf');
  t.is(buckets.at(-1)!.labels.le, '+Inf');
  t.is(buckets.at(-1)!.value, n + m);
  for (let i = 1; i < buckets.length; i++) t.true(buckets[i]!.value >= buckets[i - 1]!.value, `bucket le=${buckets[i]!.labels.le} is cumulative`);
  t.true(s.value('switchyard_request_duration_seconds_sum', labels) > 0);
});

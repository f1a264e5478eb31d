import test from 'ava';
import { connect } from 'node:net';
import { request } from 'undici';
import { writeFile } from 'node:fs/promises';
import { Metrics } from '../src/metrics.js';
import { Sidecar } from '../src/sidecar.js';
import { parseConfigTexts } from '../src/config/load.js';
import { ROOT, adminUrl, get, listenerUrl, putConfig, startSidecar, startUpstream, tempFiles, until } from './helpers.js';

async function metric(sc: Parameters<typeof adminUrl>[0], pattern: RegExp): Promise<number> {
  const text = await (await request(`${adminUrl(sc)}/metrics`)).body.text();
  const line = text.split('\n').find((l) => pattern.test(l));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

const oneRole = (address: string) => `
roles:
  r: { channels: { http: { endpoints: ["${address}"] } } }
listeners:
  web: { address: "127.0.0.1:0", target: r }
`;

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
  const sc = await startSidecar(t, oneRole(up.address));
  const url = listenerUrl(sc, 'web');
  t.is((await get(url)).status, 200);

  // the upstream cuts the body after its headers: counted as the 200 it was sent, plus an upstream error
  await t.throwsAsync(get(`${url}/cut`));
  await until(async () => (await metric(sc, /^switchyard_upstream_errors_total\{.*role="r"/)) === 1, 5000, 'the upstream error');

  // the client leaves before any response: 499
  const { hostname, port } = new URL(url);
  const s = connect(Number(port), hostname);
  s.write('GET /slow HTTP/1.1\r\nHost: x\r\n\r\n');
  await until(() => hold !== null, 5000, 'the slow request to arrive');
  s.destroy();
  await until(async () => (await metric(sc, /^switchyard_requests_total\{.*code="499"\}/)) === 1, 5000, 'the 499');
  t.is(await metric(sc, /^switchyard_requests_total\{listener="web",vset="r",role="r",code="200"\}/), 2);
});

const lastOk = /^switchyard_config_last_reload_successful /;
const lastOkTime = /^switchyard_config_last_reload_success_timestamp_seconds /;

test('config_last_reload_successful and its timestamp follow real reloads: PUT /config and the config file', async (t) => {
  const up = await startUpstream(t, 'r');
  const before = Date.now() / 1000;
  const sc = await startSidecar(t, oneRole(up.address));
  t.is(await metric(sc, lastOk), 1, 'the first generation counts as a successful load');
  const started = await metric(sc, lastOkTime);
  t.true(started >= Math.floor(before) && started <= Date.now() / 1000, `set at start: ${started}`);

  // PUT /config: invalid → 0, timestamp kept; valid → 1, timestamp moves on.
  t.is((await putConfig(sc, oneRole(up.address).replace('target: r', 'target: nosuch'))).status, 400);
  t.is(await metric(sc, lastOk), 0);
  t.is(await metric(sc, lastOkTime), started);
  await new Promise((r) => setTimeout(r, 20)); // the timestamp has ms resolution
  t.is((await putConfig(sc, oneRole(up.address))).status, 200);
  t.is(await metric(sc, lastOk), 1);
  t.true((await metric(sc, lastOkTime)) > started);

  // A build failure (the access log file cannot be opened) is a rejected change too.
  t.is((await putConfig(sc, `${oneRole(up.address)}accessLog: { path: /nonexistent-dir-${process.pid}/access.log }\n`)).status, 409);
  t.is(await metric(sc, lastOk), 0);
});

test('config_last_reload_successful through the config file: a bad file → 0, the fixed file → 1', async (t) => {
  const up = await startUpstream(t, 'r');
  const good = `admin: { address: "127.0.0.1:0" }\n${oneRole(up.address)}`;
  const { paths } = await tempFiles({ 'c.yaml': good });
  const sc = await Sidecar.start({ files: [paths['c.yaml']!] });
  t.teardown(() => sc.stop());
  t.is(await metric(sc, lastOk), 1);
  const started = await metric(sc, lastOkTime);
  await writeFile(paths['c.yaml']!, good.replace('listeners:', 'listenrs:'));
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
  const sc = await startSidecar(t, oneRole(up.address));
  const url = listenerUrl(sc, 'web');
  const draining = /^switchyard_generations_draining /;
  t.is(await metric(sc, draining), 0);
  const held = get(`${url}/hold`);
  await until(() => release !== null, 5000, 'the held request');
  t.is((await putConfig(sc, oneRole(up.address).replace('web: {', 'web: { timeouts: { connect: 2s },'))).status, 200);
  t.is(await metric(sc, draining), 1, 'generation 1 drains while its request runs');
  t.is((await get(url)).status, 200, 'new requests are served by generation 2');
  release!();
  t.is((await held).body, 'held');
  await until(async () => (await metric(sc, draining)) === 0, 5000, 'the drained generation to close');
});

test('a request a filter answered counts under role "", even when a routing filter had picked a role first', async (t) => {
  const up = await startUpstream(t, 'r');
  const sc = await startSidecar(t, `
roles:
  r: { channels: { http: { endpoints: ["${up.address}"] } } }
components:
  limit: { type: ratelimit, metadata: { requestsPerSecond: "0.001", burst: "1" } }
listeners:
  web:
    address: "127.0.0.1:0"
    target: r
    filters:
      - { type: weighted, weights: { r: 1 } }
      - { type: ratelimit, component: limit }
`);
  const url = listenerUrl(sc, 'web');
  t.is((await get(url)).status, 200);
  t.is((await get(url)).status, 429);
  await until(async () => (await metric(sc, /^switchyard_requests_total\{listener="web",vset="r",role="",code="429"\}/)) === 1, 5000, 'the 429 under role ""');
  t.is(await metric(sc, /^switchyard_requests_total\{listener="web",vset="r",role="r",code="429"\}/), 0);
  t.is(await metric(sc, /^switchyard_requests_total\{listener="web",vset="r",role="r",code="200"\}/), 1);
});

test('default process metrics are exported', async (t) => {
  const up = await startUpstream(t, 'r');
  const sc = await startSidecar(t, oneRole(up.address));
  t.true((await metric(sc, /^process_cpu_seconds_total /)) > 0);
  t.true((await metric(sc, /^nodejs_eventloop_lag_seconds /)) >= 0);
  t.true((await metric(sc, /^process_resident_memory_bytes /)) > 0);
});

test('Metrics({countRequests: false}) counts no requests (the benchmark\'s "metrics off")', async (t) => {
  const up = await startUpstream(t, 'r');
  const metrics = new Metrics({ countRequests: false });
  const sc = await Sidecar.start({ raw: parseConfigTexts([{ name: 't.yaml', text: `admin: { address: "127.0.0.1:0" }\n${oneRole(up.address)}` }], ROOT), metrics });
  t.teardown(() => sc.stop());
  t.is((await get(listenerUrl(sc, 'web'))).status, 200);
  t.is(await metric(sc, /^switchyard_requests_total\{/), 0);
  t.is(await metric(sc, /^switchyard_config_generation /), 1, 'the rest is counted');
});

test('config_reloads_total has every source and result at 0 from the start, so a first failure shows as an increase', async (t) => {
  const up = await startUpstream(t, 'r');
  const sc = await startSidecar(t, oneRole(up.address));
  const text = await (await request(`${adminUrl(sc)}/metrics`)).body.text();
  for (const source of ['file', 'sighup', 'api', 'component', 'rollback']) {
    for (const result of ['success', 'invalid', 'failed']) {
      t.regex(text, new RegExp(`^switchyard_config_reloads_total\\{source="${source}",result="${result}"\\} \\d+$`, 'm'), `${source}/${result}`);
    }
  }
  t.is(await metric(sc, /^switchyard_config_reloads_total\{source="api",result="invalid"\}/), 0);
});

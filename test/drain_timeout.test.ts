// Issue 11: a request cut by drainTimeout was logged and counted as 499 ("the client
// left"), though switchyard cut it. It now gets its own answer and code.
import test from 'ava';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { client, listenerUrl, putConfig, startSidecar, startUpstream, tempFiles, uniqueHost, until } from './helpers.js';
import { metricSum } from './resilience_support.js';

test('a request cut by drainTimeout counts as 503 with role "" (SY_ERR_DRAIN_TIMEOUT), not 499; one mid-response keeps its status', async (t) => {
  let arrived = 0;
  const up = await startUpstream(t, 'a', (req, res) => {
    arrived++;
    req.resume();
    if (req.url === '/partial') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('half of it'); // and never the rest
    } // /silent: never answers
  });
  const { dir } = await tempFiles({});
  const file = join(dir, 'access.log');
  const host = uniqueHost();
  const yaml = (weight: number) => `
drainTimeout: 300ms
accessLog: { path: "${file}" }
roles:
  a: { channels: { http: { endpoints: ["${up.address}"] } } }
listeners:
  web:
    address: "${host}:0"
    target: a
    filters:
      - { type: weighted, weights: { a: ${weight} } }
`;
  const sc = await startSidecar(t, yaml(1));
  const url = listenerUrl(sc, 'web');
  const silent = request(`${url}/silent`, { dispatcher: client }).then((r) => `answered ${r.statusCode}`, (err: Error) => `cut: ${err.message}`);
  const partial = await request(`${url}/partial`, { dispatcher: client });
  await until(() => arrived === 2, 5000, 'both requests upstream');
  t.is(partial.statusCode, 200);
  const cut = partial.body.text().then(() => 'complete', (err: Error) => `cut: ${err.message}`);

  const r = await putConfig(sc, yaml(2)); // a new generation: the old one drains, for 300 ms
  t.is(r.status, 200, r.body);
  t.regex(await silent, /^cut: /, 'the connection is closed, as drain ends work');
  t.regex(await cut, /^cut: /);

  await until(async () => (await metricSum(sc, /^switchyard_requests_total\{listener="web",vset="a",role="",code="503"\}/)) === 1, 5000, 'the 503 counted');
  await until(async () => (await metricSum(sc, /^switchyard_requests_total\{listener="web",vset="a",role="a",code="200"\}/)) === 1, 5000, 'the cut 200 counted');
  t.is(await metricSum(sc, /^switchyard_requests_total\{.*code="499"\}/), 0, 'no 499: the client did not leave');
  t.is(await metricSum(sc, /^switchyard_upstream_errors_total\{/), 0, 'the drain is not the upstream\'s failure');

  let lines: Record<string, unknown>[] = [];
  await until(async () => {
    if (!existsSync(file)) return false;
    lines = (await readFile(file, 'utf8')).split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.type === 'http');
    return lines.length === 2;
  }, 5000, 'two access log lines');
  const byPath = Object.fromEntries(lines.map((l) => [l.path, l]));
  t.like(byPath['/silent'], { status: 503, role: '', upstreamError: 'SY_ERR_DRAIN_TIMEOUT' });
  t.like(byPath['/partial'], { status: 200, role: 'a', upstreamError: 'SY_ERR_DRAIN_TIMEOUT' });
});

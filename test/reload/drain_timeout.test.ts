// Issue 11: a request cut by drainTimeout was logged and counted as 499 ("the client
// left"), though switchyard cut it. It now gets its own answer and code.
import test from 'ava';
import { join } from 'node:path';
import { request } from 'undici';
import {
  client, findMetric, listenerUrl, oneRole, putConfig, startSidecar, startUpstream, tempFiles, uniqueHost, until, untilLogLines, untilMetric,
  weighted,
} from '../helpers.js';

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
  const { dir } = await tempFiles(t, {});
  const file = join(dir, 'access.log');
  const host = uniqueHost();
  const config = (weight: number) => ({
    drainTimeout: '300ms',
    accessLog: { path: file },
    ...oneRole(up, { address: `${host}:0`, target: 'a', filters: [weighted({ a: weight })] }, { role: 'a' }),
  });
  const sc = await startSidecar(t, config(1));
  const url = listenerUrl(sc, 'web');
  const silent = request(`${url}/silent`, { dispatcher: client }).then((r) => `answered ${r.statusCode}`, (err: Error) => `cut: ${err.message}`);
  const partial = await request(`${url}/partial`, { dispatcher: client });
  await until(() => arrived === 2, 5000, 'both requests upstream');
  t.is(partial.statusCode, 200);
  const cut = partial.body.text().then(() => 'complete', (err: Error) => `cut: ${err.message}`);

  const r = await putConfig(sc, config(2)); // a new generation: the old one drains, for 300 ms
  t.is(r.status, 200, r.body);
  t.regex(await silent, /^cut: /, 'the connection is closed, as drain ends work');
  t.regex(await cut, /^cut: /);

  await untilMetric(sc, 'switchyard_requests_total', { listener: 'web', vset: 'a', role: '', code: '503' }, 1, 5000, 'the 503 counted');
  await untilMetric(sc, 'switchyard_requests_total', { listener: 'web', vset: 'a', role: 'a', code: '200' }, 1, 5000, 'the cut 200 counted');
  t.is(await findMetric(sc, 'switchyard_requests_total', { code: '499' }), undefined, 'no 499: the client did not leave');
  t.is(await findMetric(sc, 'switchyard_upstream_errors_total'), undefined, 'the drain is not the upstream\'s failure');

  const lines = await untilLogLines(file, (l) => l.type === 'http', 2, 5000);
  t.is(lines.length, 2, 'two access log lines');
  const byPath = Object.fromEntries(lines.map((l) => [l.path, l]));
  t.like(byPath['/silent'], { status: 503, role: '', upstreamError: 'SY_ERR_DRAIN_TIMEOUT' });
  t.like(byPath['/partial'], { status: 200, role: 'a', upstreamError: 'SY_ERR_DRAIN_TIMEOUT' });
});

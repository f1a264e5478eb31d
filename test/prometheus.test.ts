import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { get, listenerUrl, startSidecar, startUpstream, tempFiles, twoRoles, until, untilMetric } from './helpers.js';
import { metricsAfterTraffic, PIN, runTool } from './prometheus_support.js';
import { toolPath } from './setup/requirements.js';

/*
 * A real Prometheus (Debian's package; .ci/run installs it) scrapes a test sidecar's
 * admin /metrics on loopback. Prometheus listens on 127.0.0.1 port 0 and the test
 * reads the port from its log, so a Prometheus service on :9090 is never involved.
 */

/** Starts Prometheus scraping `target` (host:port) every second; resolves with its base URL once ready. */
async function startPrometheus(t: ExecutionContext, target: string): Promise<string> {
  const bin = toolPath('prometheus');
  const { dir, paths } = await tempFiles(t, {
    'prometheus.yml': `
global: { scrape_interval: 1s, evaluation_interval: 1s }
scrape_configs:
  - job_name: switchyard
    static_configs: [{ targets: ["${target}"] }]
`,
  });
  const child = spawn(bin, [
    `--config.file=${paths['prometheus.yml']}`,
    `--storage.tsdb.path=${join(dir, 'data')}`,
    '--web.listen-address=127.0.0.1:0',
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
  });
  const port = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`prometheus did not start listening within 20 s:\n${log}`)), 20_000);
    child.once('error', (err) => { clearTimeout(timer); reject(err); });
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`prometheus exited ${code}:\n${log}`)); });
    child.stderr.on('data', (d: Buffer) => {
      log += d.toString();
      // port 0: the actual port is in its log line `msg="Listening on" address=127.0.0.1:NNNNN`
      const m = /msg="Listening on" address=127\.0\.0\.1:(\d+)/.exec(log);
      if (m) { clearTimeout(timer); resolve(m[1]!); }
    });
  });
  const url = `http://127.0.0.1:${port}`;
  await until(async () => (await get(`${url}/-/ready`).catch(() => ({ status: 0 }))).status === 200, 20_000, 'prometheus to be ready');
  return url;
}

interface Sample { metric: Record<string, string>; value: [number, string] }

/** An instant query through Prometheus's HTTP API. */
async function query(prometheus: string, promql: string): Promise<Sample[]> {
  const reply = await get(`${prometheus}/api/v1/query?query=${encodeURIComponent(promql)}`);
  const body = JSON.parse(reply.body) as { status: string; error?: string; data: { resultType: string; result: Sample[] } };
  if (body.status !== 'success') throw new Error(`query ${promql}: ${body.error}`);
  return body.data.result;
}

test('a real Prometheus scrapes the sidecar: sum by (role) of requests_total is exactly the traffic sent', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const sc = await startSidecar(t, twoRoles(a, b, { filters: [PIN] }));
  const admin = sc.adminAddress!;
  const prometheus = await startPrometheus(t, `${admin.host}:${admin.port}`);

  const sent = { a: 7, b: 3 };
  for (const [role, n] of Object.entries(sent)) {
    for (let i = 0; i < n; i++) {
      const reply = await get(listenerUrl(sc, 'web'), { 'x-pin': role });
      t.is(reply.headers['x-role'], role);
    }
  }
  // the sidecar counts a request as its response ends; wait for that, then for a scrape that began after it
  await untilMetric(sc, 'switchyard_requests_total', {}, sent.a + sent.b, 5000, 'the sidecar to count every request');
  const counted = Date.now() / 1000;
  await until(async () => {
    const [up] = await query(prometheus, 'timestamp(up{job="switchyard"})');
    return up !== undefined && Number(up.value[1]) > counted;
  }, 30_000, 'a scrape after the traffic');

  const [up] = await query(prometheus, 'up{job="switchyard"}');
  t.is(up?.value[1], '1', 'the scrape succeeded');
  const byRole = await query(prometheus, 'sum by (role) (switchyard_requests_total{job="switchyard", listener="web", vset="svc"})');
  t.deepEqual(Object.fromEntries(byRole.map((s) => [s.metric['role'], Number(s.value[1])])), sent);
});

/*
 * prom-client's default metrics include three gauges named *_total, which promtool's
 * lint flags ("non-counter metrics should not have _total suffix"). They are
 * prom-client's names, not ours; any other problem fails the test.
 */
const PROM_CLIENT_LINT = new Set(['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']);

test('promtool check metrics finds no problem in our /metrics', async (t) => {
  const text = await metricsAfterTraffic(t);
  t.true(text.includes('switchyard_request_duration_seconds_bucket{'));

  const run = await runTool(toolPath('promtool'), ['check', 'metrics'], { input: text });
  // exit 1: the text did not parse; 3: lint problems, one per line on stderr
  t.not(run.code, 1, run.stderr);
  const problems = run.stderr.split('\n').filter((l) => l.trim() && !PROM_CLIENT_LINT.has(l.split(' ')[0]!));
  t.deepEqual(problems, []);
  t.true(run.code === 0 || run.code === 3, `promtool exited ${run.code}: ${run.stderr}`);
});

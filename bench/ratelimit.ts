/**
 * The global rate limit benchmark (`npm run bench:ratelimit`): real switchyard
 * processes (the CLI) share one `ratelimit` component with `backend: redis` on a
 * real redis-server; this process offers each of them a fixed request rate (open
 * loop: on a timer, whatever the answers) and counts what they admit.
 *
 * Scenarios:
 * - `fleet-200`: 4 sidecars offered 200 rps each (800) against a 200 rps limit
 *   (burst 20): issue 17's accuracy aim, admitted within ±5 % of the limit.
 * - `fleet-1000`: 4 sidecars offered 1,000 rps each against a 2,000 rps limit:
 *   the cost aim, ≤ 1 Redis call per 10 requests at 1,000 rps per sidecar, with
 *   the accuracy aim still held.
 * - `single-1000`: 1 sidecar at 1,000 rps under a 10,000 rps limit (never
 *   saturated): the cost when every request is admitted.
 *
 * Each scenario: a warm-up (unmeasured: the burst is spent, the sidecars'
 * demand estimates settle), Redis's command stats reset, then the measured run.
 * Reported: admitted per second against the limit (the error, in %), Redis
 * calls (EVALSHA + EVAL from INFO commandstats) per request offered and per
 * request admitted, p50/p99 latency of admitted requests (client side), and
 * the sidecars' failed-open/failed-closed decisions (0 unless Redis was slow).
 *
 * Loopback only: Redis and the upstream on 127.0.79.1, sidecars on 127.0.79.10+.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Pool, request } from 'undici';
import { createClient } from 'redis';
import { installCleanup, startProc, stopAll, stopProc, waitListening, type Proc } from './procs.js';
import { freePort } from './targets.js';

const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(BENCH_DIR, '../..');
const CLI = join(ROOT, 'bin/switchyard.js');
const HOST = '127.0.79.1';
const sidecarHost = (i: number): string => `127.0.79.${10 + i}`;

interface Scenario {
  id: string;
  sidecars: number;
  /** Offered to each sidecar. */
  offered: number;
  limit: number;
  burst: number;
}

const SCENARIOS: readonly Scenario[] = [
  { id: 'fleet-200', sidecars: 4, offered: 200, limit: 200, burst: 20 },
  { id: 'fleet-1000', sidecars: 4, offered: 1_000, limit: 2_000, burst: 100 },
  { id: 'single-1000', sidecars: 1, offered: 1_000, limit: 10_000, burst: 1_000 },
];

const USAGE = `usage: npm run bench:ratelimit -- [--duration SECONDS] [--warmup SECONDS] [--only ${SCENARIOS.map((s) => s.id).join(',')}]
  --duration   measured run per scenario (default 10)
  --warmup     unmeasured run before it (default 3)`;

interface Result {
  scenario: string;
  sidecars: number;
  offeredPerSecond: number;
  limit: number;
  seconds: number;
  sent: number;
  admitted: number;
  limited: number;
  other: number;
  admittedPerSecond: number;
  /** (admitted per second − limit) / limit, in %; null when the limit was not reached (nothing limited). */
  errorPercent: number | null;
  redisCalls: number;
  callsPerRequest: number;
  callsPerAdmitted: number;
  p50Ms: number;
  p99Ms: number;
  failedDecisions: number;
}

function sidecarConfig(i: number, port: number, adminPort: number, upstreamPort: number, redisPort: number, s: Scenario): string {
  return [
    `admin: { address: "127.0.0.1:${adminPort}" }`,
    'roles:',
    `  partner-api: { channels: { http: { endpoints: ["${HOST}:${upstreamPort}"] } } }`,
    'components:',
    '  partner-limit:',
    '    type: ratelimit',
    `    metadata: { backend: redis, redisUrl: "redis://${HOST}:${redisPort}", requestsPerSecond: "${s.limit}", burst: "${s.burst}" }`,
    'listeners:',
    `  partner: { address: "${sidecarHost(i)}:${port}", protocol: http, target: partner-api, filters: [{ type: ratelimit, component: partner-limit }] }`,
    '',
  ].join('\n');
}

/** Sends `perSecond` requests a second to each pool for `ms`, on a 1 ms timer; resolves when every answer is in. */
async function offer(pools: Pool[], perSecond: number, ms: number, record: boolean): Promise<{ statuses: number[]; latencies: number[] }> {
  const statuses: number[] = [];
  const latencies: number[] = [];
  const inFlight: Promise<void>[] = [];
  const total = Math.round((perSecond * ms) / 1000);
  const started = performance.now();
  let sent = 0;
  await new Promise<void>((done) => {
    const timer = setInterval(() => {
      const due = Math.min(total, Math.floor(((performance.now() - started) / 1000) * perSecond));
      for (; sent < due; sent++) {
        for (const pool of pools) {
          const t0 = performance.now();
          inFlight.push(pool.request({ path: '/', method: 'GET' }).then(async (r) => {
            await r.body.dump();
            if (!record) return;
            statuses.push(r.statusCode);
            if (r.statusCode === 200) latencies.push(performance.now() - t0);
          }, () => { if (record) statuses.push(0); }));
        }
      }
      if (sent >= total) {
        clearInterval(timer);
        done();
      }
    }, 1);
  });
  await Promise.all(inFlight);
  return { statuses, latencies };
}

const quantile = (sorted: number[], q: number): number => (sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!);

async function failedDecisions(adminPorts: number[]): Promise<number> {
  let sum = 0;
  for (const port of adminPorts) {
    const text = await (await request(`http://127.0.0.1:${port}/metrics`)).body.text();
    for (const m of text.matchAll(/^switchyard_ratelimit_decisions_total\{[^}]*result="failed-[a-z]+"[^}]*\} (\S+)$/gm)) sum += Number(m[1]);
  }
  return sum;
}

async function runScenario(s: Scenario, dir: string, upstreamPort: number, redisPort: number, redis: ReturnType<typeof createClient>,
  durationS: number, warmupS: number): Promise<Result> {
  const procs: Proc[] = [];
  const pools: Pool[] = [];
  const adminPorts: number[] = [];
  try {
    await redis.sendCommand(['FLUSHALL']);
    for (let i = 0; i < s.sidecars; i++) {
      const [port, adminPort] = [await freePort(sidecarHost(i)), await freePort('127.0.0.1')];
      const file = join(dir, `${s.id}-${i}.yaml`);
      writeFileSync(file, sidecarConfig(i, port, adminPort, upstreamPort, redisPort, s));
      const p = startProc(`switchyard-${i}`, process.execPath, [CLI, 'run', '--config', file]);
      procs.push(p);
      await waitListening(p, sidecarHost(i), port);
      adminPorts.push(adminPort);
      pools.push(new Pool(`http://${sidecarHost(i)}:${port}`, { connections: 64, pipelining: 1 }));
    }
    await offer(pools, s.offered, warmupS * 1000, false);
    await redis.sendCommand(['CONFIG', 'RESETSTAT']);
    const failedBefore = await failedDecisions(adminPorts);
    const started = performance.now();
    const { statuses, latencies } = await offer(pools, s.offered, durationS * 1000, true);
    const seconds = (performance.now() - started) / 1000;
    const stats = String(await redis.sendCommand(['INFO', 'commandstats']));
    const calls = ['evalsha', 'eval'].reduce((sum, c) => sum + Number(new RegExp(`cmdstat_${c}:calls=(\\d+)`).exec(stats)?.[1] ?? 0), 0);
    const admitted = statuses.filter((c) => c === 200).length;
    const limited = statuses.filter((c) => c === 429).length;
    latencies.sort((a, b) => a - b);
    // The measured run is `durationS` of sends; answers come in a little later.
    const admittedPerSecond = admitted / durationS;
    return {
      scenario: s.id, sidecars: s.sidecars, offeredPerSecond: s.offered * s.sidecars, limit: s.limit, seconds,
      sent: statuses.length, admitted, limited, other: statuses.length - admitted - limited, admittedPerSecond,
      errorPercent: limited === 0 ? null : ((admittedPerSecond - s.limit) / s.limit) * 100,
      redisCalls: calls, callsPerRequest: calls / statuses.length, callsPerAdmitted: calls / Math.max(1, admitted),
      p50Ms: quantile(latencies, 0.5), p99Ms: quantile(latencies, 0.99),
      failedDecisions: (await failedDecisions(adminPorts)) - failedBefore,
    };
  } finally {
    await Promise.all(pools.map((p) => p.close()));
    await Promise.all(procs.map((p) => stopProc(p, 5_000)));
  }
}

function format(rows: readonly Result[]): string {
  const cols: [string, number, (r: Result) => string][] = [
    ['scenario', 12, (r) => r.scenario],
    ['sidecars', 8, (r) => String(r.sidecars)],
    ['offered/s', 9, (r) => String(r.offeredPerSecond)],
    ['limit/s', 7, (r) => String(r.limit)],
    ['admitted/s', 10, (r) => r.admittedPerSecond.toFixed(1)],
    ['error', 7, (r) => (r.errorPercent === null ? '—' : `${r.errorPercent >= 0 ? '+' : ''}${r.errorPercent.toFixed(1)}%`)],
    ['redis calls', 11, (r) => String(r.redisCalls)],
    ['calls/req', 9, (r) => r.callsPerRequest.toFixed(4)],
    ['calls/admitted', 14, (r) => r.callsPerAdmitted.toFixed(4)],
    ['p50 ms', 7, (r) => r.p50Ms.toFixed(2)],
    ['p99 ms', 7, (r) => r.p99Ms.toFixed(2)],
    ['failed', 6, (r) => String(r.failedDecisions)],
    ['other', 5, (r) => String(r.other)],
  ];
  const line = (cells: string[]) => cells.map((c, i) => c.padStart(cols[i]![1])).join('  ');
  return [line(cols.map((c) => c[0])), line(cols.map((c) => '-'.repeat(c[1]))), ...rows.map((r) => line(cols.map((c) => c[2](r))))].join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { duration: { type: 'string', default: '10' }, warmup: { type: 'string', default: '3' }, only: { type: 'string' }, help: { type: 'boolean' } } });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const durationS = Number(values.duration);
  const warmupS = Number(values.warmup);
  const only = values.only?.split(',');
  const chosen = SCENARIOS.filter((s) => !only || only.includes(s.id));
  if (!(durationS > 0) || !(warmupS >= 0) || chosen.length === 0) {
    console.error(USAGE);
    process.exit(2);
  }
  installCleanup();
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-bench-ratelimit-'));
  const [redisPort, upstreamPort] = [await freePort(HOST), await freePort(HOST)];
  const redisProc = startProc('redis-server', 'redis-server', ['--port', String(redisPort), '--bind', HOST, '--save', '', '--appendonly', 'no']);
  const upstream = startProc('upstream', process.execPath, [join(BENCH_DIR, 'upstream.js'), '--host', HOST, '--port', String(upstreamPort)]);
  let redis: ReturnType<typeof createClient> | null = null;
  const rows: Result[] = [];
  try {
    await waitListening(redisProc, HOST, redisPort);
    await waitListening(upstream, HOST, upstreamPort);
    redis = createClient({ url: `redis://${HOST}:${redisPort}` });
    redis.on('error', () => {});
    await redis.connect();
    for (const s of chosen) {
      console.log(`${s.id}: ${s.sidecars} × ${s.offered} rps offered, limit ${s.limit} rps (burst ${s.burst}), ${warmupS} s warm-up + ${durationS} s…`);
      rows.push(await runScenario(s, dir, upstreamPort, redisPort, redis, durationS, warmupS));
    }
    console.log(`\n${format(rows)}`);
    const outDir = join(ROOT, 'bench/out');
    mkdirSync(outDir, { recursive: true });
    writeFileSync(join(outDir, 'ratelimit-latest.json'), `${JSON.stringify({ at: new Date().toISOString(), durationS, warmupS, rows }, null, 2)}\n`);
  } finally {
    await redis?.close().catch(() => {});
    await stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();

/**
 * The reload benchmark (`npm run bench:reload`, also the last part of `npm run bench`):
 *
 * 1. Apply time: a switchyard with N listeners and N roles (N = 10, 100, 1,000)
 *    gets `PUT /config` with one value changed on every listener (a response header
 *    naming the variant); the time from sending the PUT until a request to the
 *    last listener is answered by the new generation. p50 and p95 over repeats.
 * 2. Reload storm: wrk on one listener for a steady run, then again while the
 *    config is pushed 10 times a second (alternating weights); the ratio of the two
 *    throughputs, and errors (must be 0).
 * 3. Big configs (issue 11, item 7): a switchyard with N roles (N = 10,000 and
 *    40,000) gets `PUT /config` of N roles, valid (one change) and invalid (one bad
 *    endpoint), while requests flow on one listener. Reported: the PUT's answer
 *    time, the longest the event loop was blocked meanwhile (prom-client's
 *    `nodejs_eventloop_lag_max_seconds`, a monitorEventLoopDelay histogram that
 *    each scrape resets: one scrape before the PUT, one after), and the slowest
 *    request that was in flight during it.
 *
 * Loopback only: listeners on 127.2.x.y, the upstream on 127.0.77.1.
 */
import { Agent, request } from 'node:http';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { installCleanup, startProc, stopAll, stopProc, waitListening, type Proc } from './procs.js';
import { freePort, startUpstream } from './targets.js';
import { runWrk } from './wrk.js';

const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(BENCH_DIR, '../..');
const CLI = join(ROOT, 'bin/switchyard.js');
const LISTEN_PORT = 18_080;

interface Upstream { host: string; ports: [number, number] }

/** The i-th listener host: 127.2.0.1 … (distinct hosts, one port: like a sidecar's 127.0.0.x). */
function hostOf(i: number): string {
  return `127.2.${Math.floor(i / 250)}.${(i % 250) + 1}`;
}

/** N roles and N http listeners (listener i → role i), each with a header filter naming `variant`. */
function config(n: number, up: Upstream, adminPort: number, variant: number, weights?: [number, number]): string {
  const lines = [`admin: { address: "127.0.0.1:${adminPort}" }`, 'drainTimeout: 5s', 'roles:'];
  for (let i = 0; i < n; i++) {
    lines.push(`  r${i}: { meta: { version: "${i}" }, channels: { http: { endpoints: ["${up.host}:${up.ports[i % 2]}"] } } }`);
  }
  lines.push('vsets:', '  pair: { channels: [http], roles: { r0: {}, r1: {} } }');
  lines.push('listeners:');
  for (let i = 0; i < n; i++) {
    const target = i === 0 && weights ? 'pair.http' : `r${i}`;
    lines.push(`  l${i}:`, `    address: "${hostOf(i)}:${LISTEN_PORT}"`, `    target: ${target}`, '    filters:');
    lines.push(`      - { type: headers, response: { set: { x-variant: "${variant}" } } }`);
    if (i === 0 && weights) lines.push(`      - { type: weighted, weights: { r0: ${weights[0]}, r1: ${weights[1]} } }`);
  }
  return lines.join('\n') + '\n';
}

/**
 * N roles (r0 … r{N-1}) and one listener on the vset of r0 and r1: a big config
 * that is mostly roles, as a fleet-wide catalogue would be. `bad`: the last
 * role's endpoint is not host:port (one error, at the end).
 */
function bigConfig(n: number, up: Upstream, adminPort: number, variant: number, bad = false): string {
  const lines = [`admin: { address: "127.0.0.1:${adminPort}" }`, 'drainTimeout: 5s', 'roles:'];
  for (let i = 0; i < n; i++) {
    const ep = bad && i === n - 1 ? `${up.host}:port` : `${up.host}:${up.ports[i % 2]}`;
    lines.push(`  r${i}: { meta: { version: "${i}.${variant}" }, channels: { http: { endpoints: ["${ep}"] } } }`);
  }
  lines.push('vsets:', '  pair: { channels: [http], roles: { r0: {}, r1: {} } }');
  lines.push('listeners:', `  l0: { address: "${hostOf(0)}:${LISTEN_PORT}", target: pair.http, filters: [{ type: headers, response: { set: { x-variant: "${variant}" } } }] }`);
  return lines.join('\n') + '\n';
}

interface BigResult { n: number; valid: boolean; status: number; putMs: number; maxLoopDelayMs: number; maxRequestMs: number; requests: number; errors: number }

/** `nodejs_eventloop_lag_max_seconds` of a scrape, in ms (the scrape resets it). */
async function loopDelayMaxMs(adminPort: number): Promise<number> {
  const r = await probe('127.0.0.1', adminPort, 'GET', undefined, '/metrics');
  const m = /^nodejs_eventloop_lag_max_seconds (\S+)$/m.exec(r.body);
  if (!m) throw new Error('no nodejs_eventloop_lag_max_seconds in /metrics');
  return Number(m[1]) * 1000;
}

/**
 * PUT /config of a big config while `loops` keep-alive clients send requests to
 * the listener one after another; the worst event-loop delay and request time
 * during the PUT.
 */
async function bigPut(n: number, valid: boolean, variant: number, up: Upstream, adminPort: number, loops = 4): Promise<BigResult> {
  const body = bigConfig(n, up, adminPort, variant, !valid);
  const agent = new Agent({ keepAlive: true, maxSockets: loops });
  let stop = false;
  let window: { from: number; to: number } | null = null;
  let maxRequestMs = 0;
  let requests = 0;
  let errors = 0;
  const loop = async (): Promise<void> => {
    while (!stop) {
      const t0 = performance.now();
      const ok = await new Promise<boolean>((resolve) => {
        const req = request({ host: hostOf(0), port: LISTEN_PORT, path: '/', agent, timeout: 60_000 }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode === 200));
        });
        req.on('error', () => resolve(false));
        req.end();
      });
      const t1 = performance.now();
      // Counted when the request overlapped the PUT at all.
      if (window && t1 >= window.from && (window.to === 0 || t0 <= window.to)) {
        requests++;
        if (!ok) errors++;
        maxRequestMs = Math.max(maxRequestMs, t1 - t0);
      }
    }
  };
  const clients = Array.from({ length: loops }, loop);
  try {
    await new Promise((r) => setTimeout(r, 300)); // traffic is flowing
    await loopDelayMaxMs(adminPort); // resets the histogram
    window = { from: performance.now(), to: 0 };
    const put = await probe('127.0.0.1', adminPort, 'PUT', body);
    window.to = performance.now();
    const maxLoopDelayMs = await loopDelayMaxMs(adminPort);
    if (put.status !== (valid ? 200 : 400)) throw new Error(`PUT /config (${n} roles, ${valid ? 'valid' : 'invalid'}) answered ${put.status}: ${put.body.slice(0, 300)}`);
    return { n, valid, status: put.status, putMs: window.to - window.from, maxLoopDelayMs, maxRequestMs, requests, errors };
  } finally {
    stop = true;
    await Promise.all(clients);
    agent.destroy();
  }
}

/** The big-config cases for one N: a sidecar started with N roles, then a valid and an invalid PUT, `repeats` times each. */
async function bigConfigs(n: number, up: Upstream, dir: string, repeats: number, cpus: string | undefined): Promise<BigResult[]> {
  const adminPort = await freePort('127.0.0.1');
  const file = join(dir, `big-${n}.yaml`);
  writeFileSync(file, bigConfig(n, up, adminPort, 0));
  const proc = startProc(`switchyard-big-${n}`, process.execPath, [CLI, 'run', '--config', file], { cpus });
  const out: BigResult[] = [];
  try {
    await waitListening(proc, '127.0.0.1', adminPort, 120_000);
    await waitListening(proc, hostOf(0), LISTEN_PORT, 120_000);
    for (let i = 1; i <= repeats; i++) {
      out.push(await bigPut(n, true, i, up, adminPort));
      out.push(await bigPut(n, false, i, up, adminPort));
    }
  } finally {
    await stopProc(proc);
  }
  return out;
}

/** One HTTP request on a fresh connection; resolves with status and the x-variant header. */
function probe(host: string, port: number, method = 'GET', body?: string, path = method === 'PUT' ? '/config' : '/'): Promise<{ status: number; variant: string | undefined; body: string }> {
  return new Promise((ok, fail) => {
    // The admin API takes only typed bodies (415 otherwise): every body here is YAML.
    const headers = body === undefined ? {} : { 'content-type': 'application/yaml' };
    const req = request({ host, port, method, path, headers, agent: false, timeout: 120_000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (text += c));
      res.on('end', () => ok({ status: res.statusCode ?? 0, variant: res.headers['x-variant'] as string | undefined, body: text }));
    });
    req.on('error', fail);
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end(body);
  });
}

async function startSwitchyard(n: number, up: Upstream, dir: string, cpus: string | undefined): Promise<{ proc: Proc; adminPort: number }> {
  const adminPort = await freePort('127.0.0.1');
  const file = join(dir, `reload-${n}.yaml`);
  writeFileSync(file, config(n, up, adminPort, 0));
  const proc = startProc(`switchyard-${n}`, process.execPath, [CLI, 'run', '--config', file], { cpus });
  await waitListening(proc, '127.0.0.1', adminPort, 60_000);
  return { proc, adminPort };
}

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
}

/** Apply time for N listeners: PUT → the last listener answers with the new variant. */
async function applyTime(n: number, up: Upstream, dir: string, repeats: number, cpus: string | undefined): Promise<{ n: number; p50Ms: number; p95Ms: number; putP50Ms: number; failures: number }> {
  const { proc, adminPort } = await startSwitchyard(n, up, dir, cpus);
  const times: number[] = [];
  const putTimes: number[] = [];
  let failures = 0;
  try {
    const last = hostOf(n - 1);
    for (let v = 1; v <= repeats; v++) {
      const body = config(n, up, adminPort, v);
      const t0 = performance.now();
      const put = await probe('127.0.0.1', adminPort, 'PUT', body);
      putTimes.push(performance.now() - t0);
      if (put.status !== 200) throw new Error(`PUT /config answered ${put.status}: ${put.body.slice(0, 300)}`);
      const seen = await probe(last, LISTEN_PORT);
      times.push(performance.now() - t0);
      if (seen.variant !== String(v)) failures++;
    }
  } finally {
    await stopProc(proc);
  }
  return { n, p50Ms: quantile(times, 0.5), p95Ms: quantile(times, 0.95), putP50Ms: quantile(putTimes, 0.5), failures };
}

/** Steady throughput vs throughput during 10 reloads a second. */
async function storm(up: Upstream, dir: string, seconds: number, cpus: { proxy?: string; wrk?: string }): Promise<{ steadyRps: number; stormRps: number; ratio: number; reloads: number; reloadFailures: number; errors: number }> {
  const n = 10;
  const { proc, adminPort } = await startSwitchyard(n, up, dir, cpus.proxy);
  try {
    const url = `http://${hostOf(0)}:${LISTEN_PORT}/`;
    const wrk = { url, connections: 64, threads: cpus.wrk ? 1 : 2, cpus: cpus.wrk };
    await runWrk({ ...wrk, durationS: 3 }); // warm-up (JIT, pools)
    // Steady and storm runs alternate (two each), so drift over time (JIT, a noisy
    // neighbour) does not land on one side of the ratio.
    let reloads = 0;
    let reloadFailures = 0;
    let errors = 0;
    const rps = { steady: 0, storm: 0 };
    const half = Math.max(1, Math.round(seconds / 2)); // wrk takes whole seconds only
    for (let round = 0; round < 2; round++) {
      const steady = await runWrk({ ...wrk, durationS: half });
      rps.steady += steady.rps / 2;
      errors += steady.errors;
      let stop = false;
      const pusher = (async () => {
        const start = performance.now();
        let sent = 0;
        while (!stop) {
          const weights: [number, number] = reloads % 2 === 0 ? [90, 10] : [50, 50];
          const r = await probe('127.0.0.1', adminPort, 'PUT', config(n, up, adminPort, reloads, weights)).catch(() => ({ status: 0 }));
          reloads++;
          sent++;
          if (r.status !== 200) reloadFailures++;
          // 10 a second, on a fixed schedule
          const wait = start + sent * 100 - performance.now();
          if (wait > 0) await new Promise((res) => setTimeout(res, wait));
        }
      })();
      const during = await runWrk({ ...wrk, durationS: half });
      stop = true;
      await pusher;
      rps.storm += during.rps / 2;
      errors += during.errors;
    }
    return { steadyRps: rps.steady, stormRps: rps.storm, ratio: rps.storm / rps.steady, reloads, reloadFailures, errors };
  } finally {
    await stopProc(proc);
  }
}

export async function runReloadBench(opts: { sizes: number[]; repeats: number; stormSeconds: number; pinned: boolean; bigSizes?: number[]; bigRepeats?: number; parts?: string[] }): Promise<unknown> {
  const parts = new Set(opts.parts ?? ['apply', 'storm', 'big']);
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-reload-bench-'));
  const cpus = opts.pinned ? { proxy: '0', wrk: '1' } : {};
  const upstream = await startUpstream(cpus.proxy, 'node', BENCH_DIR);
  const up: Upstream = { host: upstream.host, ports: upstream.ports };
  try {
    console.log(`\nreload benchmark (${opts.pinned ? 'pinned: switchyard and upstream on CPU 0, wrk on CPU 1' : 'unpinned'})`);
    const apply = [];
    if (parts.has('apply')) {
      console.log('apply time: PUT /config with a change on every listener → the last listener answers from the new generation');
      for (const n of opts.sizes) {
        const r = await applyTime(n, up, dir, opts.repeats, cpus.proxy);
        apply.push(r);
        console.log(`  ${String(n).padStart(5)} listeners+roles: p50 ${r.p50Ms.toFixed(1)} ms, p95 ${r.p95Ms.toFixed(1)} ms (PUT answered p50 ${r.putP50Ms.toFixed(1)} ms), ${r.failures} stale answers`);
      }
    }
    let s: Awaited<ReturnType<typeof storm>> | null = null;
    if (parts.has('storm')) {
      s = await storm(up, dir, opts.stormSeconds, cpus);
      console.log(`reload storm: ${s.reloads} reloads in ${opts.stormSeconds} s of load (${s.reloadFailures} failed) — ${s.stormRps.toFixed(0)} req/s vs ${s.steadyRps.toFixed(0)} steady = ${(s.ratio * 100).toFixed(1)} % (dip ${((1 - s.ratio) * 100).toFixed(1)} %), ${s.errors} request errors`);
    }
    const big: BigResult[] = [];
    if (parts.has('big') && (opts.bigSizes ?? []).length) {
      console.log('big configs: PUT /config of N roles while requests flow; worst event-loop delay (nodejs_eventloop_lag_max_seconds) and slowest request during the PUT');
      for (const n of opts.bigSizes ?? []) {
        for (const r of await bigConfigs(n, up, dir, opts.bigRepeats ?? 2, cpus.proxy)) {
          big.push(r);
          console.log(`  ${String(n).padStart(6)} roles, ${r.valid ? 'valid  ' : 'invalid'}: PUT answered ${r.status} in ${r.putMs.toFixed(0)} ms; event loop blocked at most ${r.maxLoopDelayMs.toFixed(1)} ms; slowest request ${r.maxRequestMs.toFixed(1)} ms (${r.requests} requests, ${r.errors} errors)`);
        }
      }
    }
    return { apply, storm: s, big };
  } finally {
    await stopProc(upstream.proc);
    rmSync(dir, { recursive: true, force: true });
  }
}

const isMain = process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  installCleanup();
  const { values } = parseArgs({
    options: {
      sizes: { type: 'string', default: '10,100,1000' },
      repeats: { type: 'string', default: '20' },
      'storm-seconds': { type: 'string', default: '10' },
      placement: { type: 'string', default: 'pinned' },
      'big-sizes': { type: 'string', default: '10000,40000' },
      'big-repeats': { type: 'string', default: '2' },
      parts: { type: 'string', default: 'apply,storm,big' },
    },
  });
  runReloadBench({
    sizes: values.sizes!.split(',').map(Number),
    repeats: Number(values.repeats),
    stormSeconds: Number(values['storm-seconds']),
    pinned: values.placement !== 'unpinned',
    bigSizes: values['big-sizes'] ? values['big-sizes'].split(',').map(Number) : [],
    bigRepeats: Number(values['big-repeats']),
    parts: values.parts!.split(','),
  }).then(
    async () => { await stopAll(); },
    async (err) => { console.error(`reload bench failed: ${(err as Error).stack}`); await stopAll(); process.exitCode = 1; },
  );
}

/**
 * `npm run bench`: switchyard against direct, nginx, haproxy and http-proxy, side
 * by side, with wrk, on loopback only. See `npm run bench -- --help`.
 *
 * For every placement: start the upstream (its own process), then for each target
 * start it, and for each of its scenarios: check one request, warm up, read the
 * proxy's and the upstream's CPU time, run wrk, read them again. Every child is
 * stopped when its part is done, and all of them on errors and Ctrl-C.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, chmodSync } from 'node:fs';
import { get, type IncomingMessage } from 'node:http';
import { get as httpsGet } from 'node:https';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { clockTicksPerSecond, cpuTicks, installCleanup, isStopping, machineBusyTicks, selfAndReapedTicks, runToEnd, stopAll, stopProc, type Proc } from './procs.js';
import { addRatios, formatTable, medianRows, writeJson, type Placement, type Row, type Skip } from './report.js';
import {
  HAPROXY, NGINX, SCENARIOS, TARGETS, directAddr, startUpstream,
  type Addr, type ScenarioId, type StartContext, type Target,
} from './targets.js';
import { WRK, runWrk, type WrkOptions, type WrkResult } from './wrk.js';
import { runReloadBench } from './reload.js';
import { makeBenchCerts, type BenchCerts } from './tls.js';

/** dist/bench: where upstream.js was compiled to. */
const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
/** The repository root (this file runs from dist/bench). */
const ROOT = resolve(BENCH_DIR, '../..');
const OUT_DIR = join(ROOT, 'bench/out');

const USAGE = `usage: npm run bench -- [options]
  --placement pinned|unpinned|both   default both. pinned: proxy and upstream on CPU 0, wrk on CPU 1
  --duration SECONDS                 measured wrk run per scenario (default 10)
  --warmup SECONDS                   unmeasured wrk run before it (default 2)
  --repeat N                         measured runs per scenario (default 1); one is reported, see --pick
  --rounds N                         run every selected scenario N times over (default 1), every other
                                     round in reverse order; the table shows the median round of each
                                     scenario, and the ratio lines the median of each round's ratio
                                     (drift on a shared machine then cancels out of the comparisons)
  --pick quietest|median|best        which run: least CPU used by other processes (default), median or
                                     highest req/s
  --connections N                    wrk connections, keep-alive (default 64)
  --threads N                        wrk threads (default: 1 when wrk is pinned to one CPU, else 2)
  --only LIST                        comma-separated scenarios or targets, e.g. switchyard-http,nginx
                                     scenarios: ${SCENARIOS.map((s) => s.id).join(', ')}
                                     and reload: apply time at 10/100/1,000 listeners, throughput
                                     during 10 reloads a second (bench/reload.ts; also npm run bench:reload)
  --upstream node|raw                upstream server: Node http (default) or a canned-response TCP server
  --cpu-prof                         run switchyard with node --cpu-prof (profiles in bench/out/prof-*)`;

interface Options {
  placements: Placement[];
  durationS: number;
  repeat: number;
  rounds: number;
  pick: 'quietest' | 'median' | 'best';
  warmupS: number;
  connections: number;
  threads: number | null;
  only: Set<ScenarioId>;
  /** Run the reload benchmark (bench/reload.ts) after the proxies: `--only reload`, or no --only. */
  reload: boolean;
  upstream: 'node' | 'raw';
  cpuProf: boolean;
}

function positive(name: string, v: string | undefined, def: number, integer = false): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) throw new Error(`--${name}: expected a positive ${integer ? 'integer' : 'number'}, got "${v}"`);
  return n;
}

/** `--only`: scenario ids, or a target name standing for all its scenarios ("nginx"). */
function parseOnly(list: string | undefined): Set<ScenarioId> {
  const all = SCENARIOS.map((s) => s.id);
  if (list === undefined) return new Set(all);
  if (list.trim() === '') return new Set();
  const out = new Set<ScenarioId>();
  for (const word of list.split(',').map((w) => w.trim()).filter(Boolean)) {
    const hits = all.filter((id) => id === word || id.startsWith(`${word}-`));
    if (hits.length === 0) throw new Error(`--only: unknown scenario "${word}"; known: ${all.join(', ')}`);
    hits.forEach((h) => out.add(h));
  }
  return out;
}

function parseOptions(argv: string[]): Options | null {
  const { values } = parseArgs({
    args: argv,
    options: {
      placement: { type: 'string', default: 'both' },
      duration: { type: 'string' },
      warmup: { type: 'string' },
      repeat: { type: 'string' },
      rounds: { type: 'string' },
      pick: { type: 'string', default: 'quietest' },
      connections: { type: 'string' },
      threads: { type: 'string' },
      only: { type: 'string' },
      upstream: { type: 'string', default: 'node' },
      'cpu-prof': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) return null;
  const placement = values.placement!;
  if (!['pinned', 'unpinned', 'both'].includes(placement)) throw new Error(`--placement: pinned, unpinned or both, got "${placement}"`);
  if (!['quietest', 'median', 'best'].includes(values.pick!)) throw new Error(`--pick: quietest, median or best, got "${values.pick}"`);
  if (values.upstream !== 'node' && values.upstream !== 'raw') throw new Error(`--upstream: node or raw, got "${values.upstream}"`);
  return {
    placements: placement === 'both' ? ['pinned', 'unpinned'] : [placement as Placement],
    durationS: positive('duration', values.duration, 10),
    warmupS: positive('warmup', values.warmup, 2),
    repeat: positive('repeat', values.repeat, 1, true),
    rounds: positive('rounds', values.rounds, 1, true),
    pick: values.pick as Options['pick'],
    connections: positive('connections', values.connections, 64, true),
    threads: values.threads === undefined ? null : positive('threads', values.threads, 1, true),
    only: parseOnly(values.only === undefined ? undefined : values.only.split(',').filter((w) => w.trim() !== 'reload').join(',')),
    reload: values.only === undefined || values.only.split(',').some((w) => w.trim() === 'reload'),
    upstream: values.upstream,
    cpuProf: values['cpu-prof']!,
  };
}

/** Which CPUs the proxy side and wrk get in a placement (undefined = not pinned). */
function placementCpus(p: Placement): { proxy: string | undefined; wrk: string | undefined } {
  if (p === 'unpinned') return { proxy: undefined, wrk: undefined };
  // A one-CPU machine can only pin everything together; say so rather than fail.
  if (cpus().length < 2) {
    console.log('note: only one CPU: pinned placement puts wrk on CPU 0 as well');
    return { proxy: '0', wrk: '0' };
  }
  return { proxy: '0', wrk: '1' };
}

/**
 * One request through the target before measuring: a misconfigured proxy would
 * otherwise be "measured" answering 502s at great speed.
 */
function smokeCheck(a: Addr, tls: BenchCerts | null): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const options = { host: a.host, port: a.port, path: '/', agent: false, timeout: 5_000 };
    const onResponse = (res: IncomingMessage): void => {
      let bytes = 0;
      res.on('data', (c: Buffer) => { bytes += c.length; });
      res.on('end', () => {
        if (res.statusCode === 200 && bytes === 1024) resolvePromise();
        else reject(new Error(`smoke check of ${a.host}:${a.port}: HTTP ${res.statusCode}, ${bytes} bytes`));
      });
    };
    const req = tls === null ? get(options, onResponse) : httpsGet({ ...options, ca: readFileSync(tls.ca), servername: 'bench.test' }, onResponse);
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => reject(new Error(`smoke check of ${a.host}:${a.port}: ${err.message}`)));
  });
}

interface MeasureContext {
  placement: Placement;
  opts: Options;
  wrkCpus: string | undefined;
  upstream: Proc;
  tls: BenchCerts;
}

/** One measured wrk run and the CPU ticks the proxy, the upstream and everything else used during it. */
interface Run { w: WrkResult; proxyTicks: number; upstreamTicks: number; otherTicks: number }

/**
 * One measured wrk run, with CPU times read from /proc right before and after:
 * the proxy's process tree, the upstream's, and the machine's total, from which
 * "other" (processes that are not part of the benchmark) follows.
 */
async function measuredRun(m: MeasureContext, wrk: Omit<WrkOptions, 'durationS'>, kind: string, proxy: Proc): Promise<Run> {
  const machine0 = machineBusyTicks();
  const self0 = selfAndReapedTicks();
  const proxy0 = cpuTicks(proxy.pid);
  const up0 = cpuTicks(m.upstream.pid);
  const w = await runWrk({ ...wrk, durationS: m.opts.durationS });
  const proxy1 = cpuTicks(proxy.pid);
  const up1 = cpuTicks(m.upstream.pid);
  const self1 = selfAndReapedTicks(); // includes wrk, reaped by now
  const machine1 = machineBusyTicks();
  if (proxy.done) throw new Error(`${proxy.name} exited during the run:\n  ${proxy.tail.join('\n  ')}`);
  // direct: the upstream is the measured process too, so count it once.
  const ours = (proxy1 - proxy0) + (kind === 'direct' ? 0 : up1 - up0) + (self1 - self0);
  return { w, proxyTicks: proxy1 - proxy0, upstreamTicks: up1 - up0, otherTicks: Math.max(0, machine1 - machine0 - ours) };
}

/**
 * The run a row reports, of `--repeat` runs. Other processes only ever slow a run
 * down, so on a shared machine the run they disturbed least ("quietest", the
 * default) is the best estimate of the targets' own figures; "median" and "best"
 * (highest req/s) are there for a quiet machine.
 */
function pick(runs: readonly Run[], how: Options['pick']): Run {
  const by = (key: (r: Run) => number): Run[] => [...runs].sort((a, b) => key(a) - key(b));
  if (how === 'median') return by((r) => r.w.rps)[Math.floor(runs.length / 2)]!;
  if (how === 'best') return by((r) => -r.w.rps)[0]!;
  return by((r) => r.otherTicks / r.w.seconds)[0]!;
}

/**
 * One scenario: check one request, warm up (JIT, pools and connection setup all
 * out of the figure), then `--repeat` measured runs, of which one is kept (pick).
 */
async function measure(m: MeasureContext, scenario: ScenarioId, addr: Addr, proxy: Proc): Promise<Row> {
  const kind = SCENARIOS.find((s) => s.id === scenario)!.kind;
  // One wrk thread when wrk has one CPU of its own: a second would only contend with it.
  const threads = m.opts.threads ?? (m.wrkCpus !== undefined && !m.wrkCpus.includes(',') ? 1 : 2);
  const tlsListener = kind === 'https' || kind === 'handshake';
  const wrk = {
    url: `${tlsListener ? 'https' : 'http'}://${addr.host}:${addr.port}/`, connections: m.opts.connections, threads, cpus: m.wrkCpus,
    // A new connection, so a new TLS handshake, per request.
    headers: kind === 'handshake' ? ['Connection: close'] : [],
  };
  if (isStopping()) throw new Error('stopped');
  await smokeCheck(addr, tlsListener ? m.tls : null);
  await runWrk({ ...wrk, durationS: m.opts.warmupS });
  const runs: Run[] = [];
  for (let i = 0; i < m.opts.repeat; i++) runs.push(await measuredRun(m, wrk, kind, proxy));
  const { w, proxyTicks, upstreamTicks, otherTicks } = pick(runs, m.opts.pick);
  const usPerTick = 1e6 / clockTicksPerSecond();
  const perReq = (ticks: number): number => (w.requests > 0 ? (ticks * usPerTick) / w.requests : NaN);
  return {
    placement: m.placement,
    scenario,
    kind,
    rps: w.rps,
    p50Ms: w.p50Ms,
    p99Ms: w.p99Ms,
    requests: w.requests,
    errors: w.errors,
    proxyCpuUsPerReq: kind === 'direct' ? null : perReq(proxyTicks),
    upstreamCpuUsPerReq: perReq(upstreamTicks),
    otherCpus: otherTicks / clockTicksPerSecond() / w.seconds,
    vsDirect: null,
    vsNginx: null,
    cpuVsNginx: null,
    allRps: runs.map((r) => r.w.rps),
    wrk: w,
  };
}

function progress(r: Row): void {
  const cpu = r.proxyCpuUsPerReq === null ? '' : `  proxy ${r.proxyCpuUsPerReq.toFixed(1)} µs/req`;
  console.log(`  ${r.placement.padEnd(8)} ${r.scenario.padEnd(25)} ${Math.round(r.rps).toString().padStart(7)} req/s`
    + `  p50 ${r.p50Ms.toFixed(2)} ms  p99 ${r.p99Ms.toFixed(2)} ms${cpu}  upstream ${r.upstreamCpuUsPerReq.toFixed(1)} µs/req`
    + `  errors ${r.errors}  other ${r.otherCpus.toFixed(2)} CPUs`);
}

/** What one placement's runs share. */
interface PlacementRun extends MeasureContext {
  pins: { proxy: string | undefined; wrk: string | undefined };
  up: { host: string; ports: [number, number]; tlsPort: number };
  tmp: string;
  rows: Row[];
  skip(scenario: ScenarioId, reason: string): void;
}

/** Measures one scenario and records it, or records why it failed; never throws. */
async function record(p: PlacementRun, scenario: ScenarioId, addr: Addr, proxy: Proc): Promise<void> {
  try {
    const r = await measure(p, scenario, addr, proxy);
    p.rows.push(r);
    progress(r);
  } catch (err) {
    p.skip(scenario, `failed: ${(err as Error).message}`);
  }
}

/** One target: skip what cannot run here, start it, measure its selected scenarios, stop it. */
async function runTarget(p: PlacementRun, target: Target): Promise<void> {
  const wanted = target.scenarios.filter((s) => p.opts.only.has(s));
  if (wanted.length === 0) return;
  const why = await target.unavailable();
  if (why) {
    wanted.forEach((s) => p.skip(s, why));
    return;
  }
  const missing = (await target.missing?.()) ?? {};
  const runnable = wanted.filter((s) => {
    const reason = missing[s];
    if (reason !== undefined) p.skip(s, reason);
    return reason === undefined;
  });
  if (runnable.length === 0) return;
  const dir = mkdtempSync(join(p.tmp, `${target.name}-`));
  // nginx's workers run as nobody when started by root: let them into the temp dir.
  chmodSync(dir, 0o755);
  const ctx: StartContext = {
    upstream: p.up,
    tls: p.tls,
    cpus: p.pins.proxy,
    dir,
    root: ROOT,
    cpuProfDir: p.opts.cpuProf ? join(OUT_DIR, `prof-${p.placement}`) : null,
  };
  let running;
  try {
    running = await target.start(ctx, runnable);
  } catch (err) {
    runnable.forEach((s) => p.skip(s, `failed to start: ${(err as Error).message}`));
    return;
  }
  try {
    for (const s of runnable) await record(p, s, running.addrs[s]!, running.proc);
  } finally {
    await stopProc(running.proc);
  }
}

/**
 * Everything for one placement: the upstream, then direct, then each selected
 * target in turn (`reverse`: the targets in reverse order, direct last).
 */
async function runPlacement(placement: Placement, opts: Options, tmp: string, rows: Row[], skips: Skip[], reverse = false): Promise<void> {
  const pins = placementCpus(placement);
  console.log(`\n== placement ${placement}${opts.rounds > 1 ? ` (${reverse ? 'reverse order' : 'in order'})` : ''} ==`);
  const tls = await makeBenchCerts(tmp);
  const up = await startUpstream(pins.proxy, opts.upstream, BENCH_DIR, tls);
  const p: PlacementRun = {
    placement, opts, wrkCpus: pins.wrk, upstream: up.proc, pins, up: { host: up.host, ports: up.ports, tlsPort: up.tlsPort }, tmp, rows, tls,
    skip(scenario, reason) {
      if (!skips.some((k) => k.placement === placement && k.scenario === scenario)) skips.push({ placement, scenario, reason });
      console.log(`  ${placement.padEnd(8)} ${scenario.padEnd(25)} skipped: ${reason}`);
    },
  };
  try {
    if (opts.only.has('direct') && !reverse) await record(p, 'direct', directAddr(up), up.proc);
    for (const target of reverse ? [...TARGETS].reverse() : TARGETS) {
      if (isStopping()) break;
      await runTarget(p, target);
    }
    if (opts.only.has('direct') && reverse) await record(p, 'direct', directAddr(up), up.proc);
  } finally {
    await stopProc(up.proc);
  }
}

/** Versions of the tools, for the JSON record. */
async function toolVersions(): Promise<Record<string, string>> {
  const first = async (cmd: string, args: string[]): Promise<string> => {
    if (!existsSync(cmd)) return 'not installed';
    const { out } = await runToEnd(cmd, cmd, args);
    return out.split('\n').find((l) => l.trim())?.trim() ?? '';
  };
  return {
    node: process.version,
    wrk: await first(WRK, ['-v']),
    nginx: await first(NGINX, ['-v']),
    haproxy: await first(HAPROXY, ['-v']),
  };
}

async function main(): Promise<number> {
  let opts: Options | null;
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (err) {
    console.error(`bench: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (opts === null) {
    console.log(USAGE);
    return 0;
  }
  if (!existsSync(WRK)) {
    console.error(`bench: ${WRK} is required (apt-get install wrk)`);
    return 1;
  }
  installCleanup();
  const tmp = mkdtempSync(join(tmpdir(), 'switchyard-bench-'));
  chmodSync(tmp, 0o755);
  const rounds: Row[][] = [];
  const skips: Skip[] = [];
  const startedAt = new Date().toISOString();
  console.log(`switchyard bench: ${[...opts.only].join(', ')}; ${opts.durationS} s per scenario after ${opts.warmupS} s warm-up, `
    + `${opts.repeat > 1 ? `${opts.pick} of ${opts.repeat} runs, ` : ''}${opts.rounds > 1 ? `${opts.rounds} rounds, ` : ''}${opts.connections} connections, upstream ${opts.upstream}, ${cpus().length} CPUs`);
  try {
    for (let i = 0; i < opts.rounds && opts.only.size; i++) {
      if (opts.rounds > 1) console.log(`\n-- round ${i + 1} of ${opts.rounds} --`);
      const round: Row[] = [];
      rounds.push(round);
      for (const p of opts.placements) if (!isStopping()) await runPlacement(p, opts, tmp, round, skips, i % 2 === 1);
    }
  } finally {
    await stopAll();
    rmSync(tmp, { recursive: true, force: true });
  }
  for (const round of rounds) addRatios(round);
  const rows = medianRows(rounds);
  if (rows.length) console.log(formatTable(rows, skips, opts.placements, rounds));
  const reload = opts.reload && !isStopping()
    ? await runReloadBench({ sizes: [10, 100, 1000], repeats: 20, stormSeconds: opts.durationS, pinned: opts.placements.includes('pinned') })
    : null;
  const file = writeJson(OUT_DIR, {
    startedAt,
    finishedAt: new Date().toISOString(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model ?? '', clockTicks: clockTicksPerSecond() },
    tools: await toolVersions(),
    options: { ...opts, only: [...opts.only] },
    results: rows,
    rounds,
    skipped: skips,
    reload,
  });
  console.log(`\nresults: ${file}`);
  return 0;
}

main().then(
  (code) => { process.exitCode = code; },
  async (err) => {
    console.error(`bench: ${(err as Error)?.stack ?? String(err)}`);
    await stopAll();
    process.exitCode = 1;
  },
);

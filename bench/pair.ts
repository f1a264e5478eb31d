/**
 * `npm run bench:pair -- --base REV`: this build of switchyard against another one
 * (a git revision, built in a temporary worktree), both running at the same time on
 * CPU 0, each driven by its own wrk (or h2load, for the HTTP/2 scenarios) on CPU 1. Whatever else the machine does then
 * falls on both alike, so their ratio holds to a few percent where runs made one after
 * the other swing by twenty: the A/B for deciding whether a change to the hot path
 * bought anything. Prints, per round, each build's req/s and user and system CPU µs
 * per request, and new/base; then the medians of the ratios.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync, chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { H2LOAD, parseH2load } from './h2load.js';
import { installCleanup, processTree, runToEnd, startProc, stopAll, waitListening, type Proc } from './procs.js';
import { freePort, HOSTS, startUpstream, switchyard, type Addr, type ScenarioId } from './targets.js';
import { makeBenchCerts } from './tls.js';
import { runWrk, type WrkResult } from './wrk.js';

const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(BENCH_DIR, '../..');

const USAGE = `usage: npm run bench:pair -- --base REV [options]
  --base REV          the git revision to compare this working tree's build with (built in a temporary worktree)
  --scenario S        http (default: switchyard-http), tcp (switchyard-tcp), h2-h1 or h2-h2 (h2c
                      with prior knowledge, h2load, to the upstream's HTTP/1.1 or h2c port: bench:h2's)
  --rounds N          measured rounds (default 5)
  --duration SECONDS  per round (default 5)
  --connections N     per wrk, one per build (default 32); for h2: h2load connections (default 4, 16 streams each)`;

interface Times { user: number; sys: number }

/** User and system clock ticks of a process and its descendants. */
function times(pid: number): Times {
  let user = 0;
  let sys = 0;
  for (const p of processTree(pid)) {
    try {
      const text = readFileSync(`/proc/${p}/stat`, 'utf8');
      const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
      user += Number(f[11]);
      sys += Number(f[12]);
    } catch {
      // gone meanwhile
    }
  }
  return { user, sys };
}

/** A worktree of `rev` with this checkout's node_modules, compiled; removed by the caller. */
function buildAt(rev: string, dir: string): string {
  const tree = join(dir, 'base');
  execFileSync('git', ['-C', ROOT, 'worktree', 'add', '--detach', tree, rev], { stdio: 'ignore' });
  symlinkSync(join(ROOT, 'node_modules'), join(tree, 'node_modules'));
  execFileSync(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(tree, 'tsconfig.json')], { stdio: 'inherit' });
  return tree;
}

interface Side { name: string; proc: Proc; addr: Addr }

/** What one build's load did in a round. */
interface Load { requests: number; rps: number }
type Driver = (addr: Addr, seconds: number) => Promise<Load>;

interface Measured { load: Load; userUs: number; sysUs: number }

async function measure(sides: readonly Side[], seconds: number, drive: Driver): Promise<Measured[]> {
  const t0 = sides.map((s) => times(s.proc.pid));
  const loads = await Promise.all(sides.map((s) => drive(s.addr, seconds)));
  const t1 = sides.map((s) => times(s.proc.pid));
  // Clock ticks are 10 ms (CLK_TCK 100).
  return loads.map((load, i) => ({
    load,
    userUs: ((t1[i]!.user - t0[i]!.user) * 1e4) / load.requests,
    sysUs: ((t1[i]!.sys - t0[i]!.sys) * 1e4) / load.requests,
  }));
}

function wrkDriver(connections: number): Driver {
  return async (addr, seconds) => {
    const r: WrkResult = await runWrk({ url: `http://${addr.host}:${addr.port}/`, connections, threads: 1, durationS: seconds, cpus: '1' });
    return { requests: r.requests, rps: r.rps };
  };
}

function h2loadDriver(connections: number): Driver {
  return async (addr, seconds) => {
    const { code, out } = await runToEnd('h2load', 'taskset', ['-c', '1', H2LOAD, '-c', String(connections), '-m', '16', '-t', '1', '-D', String(seconds), `http://${addr.host}:${addr.port}/`]);
    if (code !== 0) throw new Error(`h2load exited ${code}:\n${out}`);
    const s = parseH2load(out);
    return { requests: s.done, rps: s.rps };
  };
}

/**
 * The HTTP/2 scenarios' sides: the bench upstream with its h2c port, and each build
 * run by its own CLI with one h2c listener (as bench:h2's, weighted 90/10) to it.
 */
async function h2Sides(scenario: 'h2-h1' | 'h2-h2', trees: readonly (readonly [string, string])[], tmp: string): Promise<Side[]> {
  const up = HOSTS.upstream;
  const [p1, p2, ph2] = [await freePort(up), await freePort(up), await freePort(up)];
  const upstream = startProc('upstream', process.execPath, [join(BENCH_DIR, 'upstream.js'), '--host', up, '--port', String(p1), '--port', String(p2), '--h2-port', String(ph2)], { cpus: '0' });
  for (const p of [p1, p2, ph2]) await waitListening(upstream, up, p);
  const sides: Side[] = [];
  for (const [name, root] of trees) {
    const host = HOSTS.switchyard;
    const [port, admin] = [await freePort(host), await freePort(host)];
    const file = join(tmp, `${name}.yaml`);
    const channel = scenario === 'h2-h1' ? 'http' : 'h2';
    writeFileSync(file, `# generated by bench/pair.ts
version: 1
admin: { address: "${host}:${admin}" }
roles:
  bench-v1: { channels: { http: { endpoints: ["${up}:${p1}"] }, h2: { endpoints: ["${up}:${ph2}"], protocol: http2 } } }
  bench-v2: { channels: { http: { endpoints: ["${up}:${p2}"] }, h2: { endpoints: ["${up}:${ph2}"], protocol: http2 } } }
vsets:
  bench: { channels: [http, h2], roles: { bench-v1: {}, bench-v2: {} } }
listeners:
  web:
    address: ${host}:${port}
    target: bench.${channel}
    http2: { maxConcurrentStreams: 128 }
    filters:
      - type: weighted
        weights: { bench-v1: 90, bench-v2: 10 }
`);
    const proc = startProc(`switchyard-${name}`, process.execPath, [join(root, 'bin/switchyard.js'), 'run', '--config', file], { cpus: '0', cwd: root });
    await waitListening(proc, host, port);
    sides.push({ name, proc, addr: { host, port } });
  }
  return sides;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      base: { type: 'string' }, scenario: { type: 'string', default: 'http' },
      rounds: { type: 'string', default: '5' }, duration: { type: 'string', default: '5' }, connections: { type: 'string', default: '32' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help || values.base === undefined) {
    console.log(USAGE);
    return values.help ? 0 : 2;
  }
  const kind = values.scenario!;
  if (kind !== 'http' && kind !== 'tcp' && kind !== 'h2-h1' && kind !== 'h2-h2') throw new Error(`--scenario: http, tcp, h2-h1 or h2-h2, got "${kind}"`);
  const h2 = kind === 'h2-h1' || kind === 'h2-h2';
  const rounds = Number(values.rounds);
  const seconds = Number(values.duration);
  const connections = h2 && values.connections === '32' ? 4 : Number(values.connections);
  const drive = h2 ? h2loadDriver(connections) : wrkDriver(connections);
  installCleanup();
  const tmp = mkdtempSync(join(tmpdir(), 'switchyard-pair-'));
  chmodSync(tmp, 0o755);
  let tree: string | null = null;
  try {
    tree = buildAt(values.base, tmp);
    const trees = [['base', tree], ['new', ROOT]] as const;
    let sides: Side[] = [];
    let title: string;
    if (h2) {
      sides = await h2Sides(kind, trees, tmp);
      title = `switchyard-${kind} (h2load, 16 streams a connection)`;
    } else {
      const scenario: ScenarioId = kind === 'http' ? 'switchyard-http' : 'switchyard-tcp';
      const tls = await makeBenchCerts(tmp);
      const upstream = await startUpstream('0', 'node', BENCH_DIR, tls);
      const ctx = { upstream, tls, cpus: '0', cpuProfDir: null };
      for (const [name, root] of trees) {
        const dir = mkdtempSync(join(tmp, `${name}-`));
        const running = await switchyard.start({ ...ctx, dir, root }, [scenario]);
        sides.push({ name, proc: running.proc, addr: running.addrs[scenario]! });
      }
      title = scenario;
    }
    console.log(`bench:pair ${title}: base ${values.base} vs this tree, both on CPU 0 at once, ${connections} connections each, ${rounds} × ${seconds} s`);
    await measure(sides, 2, drive);
    const total: number[] = [];
    const user: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const [b, n] = await measure(sides, seconds, drive) as [Measured, Measured];
      total.push((n.userUs + n.sysUs) / (b.userUs + b.sysUs));
      user.push(n.userUs / b.userUs);
      const row = (m: Measured): string => `${m.load.rps.toFixed(0).padStart(6)} req/s user ${m.userUs.toFixed(1).padStart(5)} sys ${m.sysUs.toFixed(1).padStart(5)} µs`;
      console.log(`round ${r + 1}: base ${row(b)} | new ${row(n)} | new/base CPU ${total.at(-1)!.toFixed(3)} user ${user.at(-1)!.toFixed(3)}`);
    }
    console.log(`median new/base: CPU per request ${median(total).toFixed(3)} (${total.map((x) => x.toFixed(3)).join(', ')}), user ${median(user).toFixed(3)}`);
    return 0;
  } finally {
    await stopAll();
    if (tree !== null) execFileSync('git', ['-C', ROOT, 'worktree', 'remove', '--force', tree], { stdio: 'ignore' });
    rmSync(tmp, { recursive: true, force: true });
  }
}

main().then(
  (code) => { process.exitCode = code; },
  async (err) => {
    console.error(`bench:pair: ${(err as Error)?.stack ?? String(err)}`);
    await stopAll();
    process.exitCode = 1;
  },
);

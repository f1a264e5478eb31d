/**
 * `npm run bench:pair -- --base REV`: this build of switchyard against another one
 * (a git revision, built in a temporary worktree), both running at the same time on
 * CPU 0, each driven by its own wrk on CPU 1. Whatever else the machine does then
 * falls on both alike, so their ratio holds to a few percent where runs made one after
 * the other swing by twenty: the A/B for deciding whether a change to the hot path
 * bought anything. Prints, per round, each build's req/s and user and system CPU µs
 * per request, and new/base; then the medians of the ratios.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync, chmodSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { installCleanup, processTree, stopAll, type Proc } from './procs.js';
import { startUpstream, switchyard, type Addr, type ScenarioId } from './targets.js';
import { makeBenchCerts } from './tls.js';
import { runWrk, type WrkResult } from './wrk.js';

const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(BENCH_DIR, '../..');

const USAGE = `usage: npm run bench:pair -- --base REV [options]
  --base REV          the git revision to compare this working tree's build with (built in a temporary worktree)
  --scenario http|tcp switchyard-http (default) or switchyard-tcp
  --rounds N          measured rounds (default 5)
  --duration SECONDS  per round (default 5)
  --connections N     per wrk, one per build (default 32)`;

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

interface Measured { wrk: WrkResult; userUs: number; sysUs: number }

async function measure(sides: readonly Side[], seconds: number, connections: number): Promise<Measured[]> {
  const t0 = sides.map((s) => times(s.proc.pid));
  const wrks = await Promise.all(sides.map((s) => runWrk({ url: `http://${s.addr.host}:${s.addr.port}/`, connections, threads: 1, durationS: seconds, cpus: '1' })));
  const t1 = sides.map((s) => times(s.proc.pid));
  // Clock ticks are 10 ms (CLK_TCK 100).
  return wrks.map((wrk, i) => ({
    wrk,
    userUs: ((t1[i]!.user - t0[i]!.user) * 1e4) / wrk.requests,
    sysUs: ((t1[i]!.sys - t0[i]!.sys) * 1e4) / wrk.requests,
  }));
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
  if (values.scenario !== 'http' && values.scenario !== 'tcp') throw new Error(`--scenario: http or tcp, got "${values.scenario}"`);
  const scenario: ScenarioId = values.scenario === 'http' ? 'switchyard-http' : 'switchyard-tcp';
  const rounds = Number(values.rounds);
  const seconds = Number(values.duration);
  const connections = Number(values.connections);
  installCleanup();
  const tmp = mkdtempSync(join(tmpdir(), 'switchyard-pair-'));
  chmodSync(tmp, 0o755);
  let tree: string | null = null;
  try {
    tree = buildAt(values.base, tmp);
    const tls = await makeBenchCerts(tmp);
    const upstream = await startUpstream('0', 'node', BENCH_DIR, tls);
    const ctx = { upstream, tls, cpus: '0', cpuProfDir: null };
    const sides: Side[] = [];
    for (const [name, root] of [['base', tree], ['new', ROOT]] as const) {
      const dir = mkdtempSync(join(tmp, `${name}-`));
      const running = await switchyard.start({ ...ctx, dir, root }, [scenario]);
      sides.push({ name, proc: running.proc, addr: running.addrs[scenario]! });
    }
    console.log(`bench:pair ${scenario}: base ${values.base} vs this tree, both on CPU 0 at once, ${connections} connections each, ${rounds} × ${seconds} s`);
    await measure(sides, 2, connections);
    const total: number[] = [];
    const user: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const [b, n] = await measure(sides, seconds, connections) as [Measured, Measured];
      total.push((n.userUs + n.sysUs) / (b.userUs + b.sysUs));
      user.push(n.userUs / b.userUs);
      const row = (m: Measured): string => `${m.wrk.rps.toFixed(0).padStart(6)} req/s user ${m.userUs.toFixed(1).padStart(5)} sys ${m.sysUs.toFixed(1).padStart(5)} µs`;
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

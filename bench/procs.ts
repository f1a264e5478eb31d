/**
 * Child processes of the benchmark: start (optionally pinned with taskset), wait
 * until listening, read CPU time from /proc, and stop — every one of them, also on
 * errors and Ctrl-C, so a benchmark run never leaves a proxy behind.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { connect } from 'node:net';

export interface Proc {
  readonly name: string;
  readonly child: ChildProcess;
  readonly pid: number;
  /** Resolves with the exit code (or the signal name) once the process is gone. */
  readonly exited: Promise<number | string>;
  /** True once `exited` has resolved. */
  done: boolean;
  /** The last lines of stdout+stderr, for error messages. */
  readonly tail: string[];
}

/** Every process started and not yet known to be gone: what cleanup kills. */
const live = new Set<Proc>();

const TAIL_LINES = 40;

export interface StartOptions {
  /** `taskset -c <cpus>`: the CPU list to pin to; undefined = not pinned. */
  cpus?: string | undefined;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Echo the child's output (wrk's is parsed instead, so off by default). */
  echo?: boolean;
}

/**
 * Spawns `cmd args`, through `taskset -c` when pinned. taskset execs the command,
 * so the pid we get is the real process (nginx master, node, …), not a wrapper.
 */
export function startProc(name: string, cmd: string, args: readonly string[], opts: StartOptions = {}): Proc {
  const [file, argv] = opts.cpus === undefined ? [cmd, [...args]] : ['taskset', ['-c', opts.cpus, cmd, ...args]];
  const child = spawn(file, argv, {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  if (child.pid === undefined) throw new Error(`${name}: could not start ${cmd}`);
  const tail: string[] = [];
  const collect = (chunk: Buffer): void => {
    if (opts.echo) process.stdout.write(chunk);
    for (const line of chunk.toString('utf8').split('\n')) {
      if (line.trim() === '') continue;
      tail.push(line);
      if (tail.length > TAIL_LINES) tail.shift();
    }
  };
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  let markDone: () => void = () => {};
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => {
      markDone();
      resolve(code ?? signal ?? 'unknown');
    });
    child.once('error', (err) => {
      tail.push(String(err));
      markDone();
      resolve('spawn error');
    });
  });
  const proc: Proc = { name, child, pid: child.pid, exited, done: false, tail };
  markDone = () => {
    proc.done = true;
    live.delete(proc);
  };
  live.add(proc);
  return proc;
}

/** Runs a command to completion and returns its stdout (wrk, getconf, nginx -V). */
export async function runToEnd(name: string, cmd: string, args: readonly string[], opts: StartOptions = {}): Promise<{ code: number | string; out: string }> {
  const p = startProc(name, cmd, args, opts);
  let out = '';
  p.child.stdout!.on('data', (c: Buffer) => { out += c.toString('utf8'); });
  p.child.stderr!.on('data', (c: Buffer) => { out += c.toString('utf8'); });
  const code = await p.exited;
  return { code, out };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** One TCP connect attempt; true when something accepted it. */
function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    const finish = (ok: boolean): void => {
      s.destroy();
      resolve(ok);
    };
    s.once('connect', () => finish(true));
    s.once('error', () => finish(false));
    s.setTimeout(500, () => finish(false));
  });
}

/**
 * Polls a TCP connect until `host:port` accepts, instead of sleeping a guessed
 * time. Fails early, with the child's last output, when the process died.
 */
export async function waitListening(p: Proc, host: string, port: number, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (p.done) throw new Error(`${p.name} exited before listening on ${host}:${port}:\n  ${p.tail.join('\n  ')}`);
    if (await canConnect(host, port)) return;
    if (Date.now() > deadline) throw new Error(`${p.name} not listening on ${host}:${port} after ${timeoutMs} ms:\n  ${p.tail.join('\n  ')}`);
    await sleep(50);
  }
}

/** pid → its children, from every /proc/<pid>/stat (works without CONFIG_PROC_CHILDREN). */
function childrenMap(): Map<number, number[]> {
  const map = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = readStat(Number(entry));
    if (stat === null) continue;
    const list = map.get(stat.ppid);
    if (list) list.push(Number(entry));
    else map.set(stat.ppid, [Number(entry)]);
  }
  return map;
}

/** The pid and all its descendants (nginx master + worker). */
export function processTree(pid: number): number[] {
  const map = childrenMap();
  const out: number[] = [];
  const stack = [pid];
  while (stack.length) {
    const p = stack.pop()!;
    out.push(p);
    stack.push(...(map.get(p) ?? []));
  }
  return out;
}

/**
 * utime+stime (clock ticks) and ppid from /proc/<pid>/stat. For a process (thread
 * group leader) the kernel sums the times of all its threads, so Node's GC and
 * libuv threads are counted. The command name may hold spaces and parentheses,
 * so fields are counted from the last ')'.
 */
function readStat(pid: number): { ppid: number; ticks: number } | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null; // gone meanwhile
  }
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // f[0] is field 3 (state): ppid is field 4, utime field 14, stime field 15.
  return { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) };
}

/** CPU clock ticks used so far by a process and its descendants. */
export function cpuTicks(pid: number): number {
  let sum = 0;
  for (const p of processTree(pid)) sum += readStat(p)?.ticks ?? 0;
  return sum;
}

/**
 * CPU ticks the whole machine was busy so far (/proc/stat, first line: user, nice,
 * system, irq, softirq, steal; not idle and iowait). irq and softirq count because
 * a process's own times include the softirq work (loopback TCP) done while it ran;
 * steal, because time another VM took is noise just like another process.
 */
export function machineBusyTicks(): number {
  const first = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
  const f = first.trim().split(/\s+/).slice(1).map(Number);
  return f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + (f[7] ?? 0);
}

/**
 * CPU ticks of this process plus its reaped children: wrk's time lands in
 * cutime/cstime once the bench has waited for it.
 */
export function selfAndReapedTicks(): number {
  const text = readFileSync('/proc/self/stat', 'utf8');
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // utime, stime, cutime, cstime are fields 14-17.
  return Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
}

let clkTck: number | null = null;
/** Clock ticks per second (`getconf CLK_TCK`, 100 on Linux almost always). */
export function clockTicksPerSecond(): number {
  if (clkTck === null) {
    const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
    const n = Number(r.stdout?.trim());
    clkTck = Number.isFinite(n) && n > 0 ? n : 100;
  }
  return clkTck;
}

function signalAll(pids: readonly number[], signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try { process.kill(pid, signal); } catch { /* already gone */ }
  }
}

/**
 * Stops a process: SIGTERM (switchyard drains and exits, nginx's master stops its
 * workers), then SIGKILL for it and every descendant still there after
 * `graceMs`. The descendants are listed before the TERM, while they are still
 * the process's children (an orphaned nginx worker would be reparented).
 */
export async function stopProc(p: Proc, graceMs = 5_000): Promise<void> {
  if (p.done) return;
  const tree = processTree(p.pid);
  signalAll([p.pid], 'SIGTERM');
  const timedOut = await Promise.race([p.exited.then(() => false), sleep(graceMs).then(() => true)]);
  if (timedOut) signalAll(tree, 'SIGKILL');
  else signalAll(tree.slice(1), 'SIGKILL'); // stragglers only; normally none are left
  await p.exited;
}

/** Stops everything still running, in parallel (cleanup after an error or Ctrl-C). */
export async function stopAll(): Promise<void> {
  await Promise.all([...live].map((p) => stopProc(p, 2_000)));
}

/**
 * Cleanup hooks: SIGINT/SIGTERM stop every child and exit; a last synchronous
 * SIGKILL on 'exit' catches anything an unexpected exit path left behind.
 */
let stopping = false;

/** True once a signal asked the benchmark to stop: no new run should start. */
export function isStopping(): boolean {
  return stopping;
}

export function installCleanup(): void {
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    console.error(`\nbench: ${signal}: stopping child processes…`);
    void stopAll().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('exit', () => {
    for (const p of live) {
      let tree: number[] = [p.pid];
      try { tree = processTree(p.pid); } catch { /* /proc unreadable: the root only */ }
      signalAll(tree, 'SIGKILL');
    }
  });
}

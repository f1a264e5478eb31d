import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/**
 * File descriptors (issue 11, item 5): 10,500 idle client connections used up the
 * process's descriptors, after which the admin API could not accept and every
 * upstream connect failed (502). The sidecar now limits client connections to what
 * its descriptors allow, keeps a reserve for everything else, and raises the soft
 * RLIMIT_NOFILE to the hard one at start.
 */

/** The RLIMIT_NOFILE in force: `Infinity` for "unlimited". */
export interface FdLimit {
  soft: number;
  hard: number;
}

/**
 * Descriptors kept out of the client connections' share: the admin API (at most
 * ADMIN_MAX_CONNECTIONS connections, plus its listening socket), and the rest of
 * the process: stdio, epoll and signal descriptors, worker threads, config file
 * watches, access log files, health check connections, DNS. The listeners' own
 * sockets come on top (defaultMaxConnections).
 */
export const FD_RESERVE = 128;

/** The admin API's own connection limit (within FD_RESERVE), so probes, scrapes and operators cannot use up the reserve either. */
export const ADMIN_MAX_CONNECTIONS = 64;

/**
 * The default of `limits.maxConnections` for a soft limit: what is left after
 * FD_RESERVE and one descriptor per listening socket, halved, since every client
 * connection may need an upstream connection too (a TCP listener's always does, an
 * HTTP request in flight does); haproxy derives its maxconn from `ulimit -n` the
 * same way. At least 1; Infinity for an unlimited soft limit.
 */
export function defaultMaxConnections(soft: number, listeners = 0): number {
  if (!Number.isFinite(soft)) return Infinity;
  return Math.max(1, Math.floor((soft - FD_RESERVE - listeners) / 2));
}

/**
 * The RLIMIT_NOFILE of this process, from `/proc/self/limits` (Linux), or null where
 * it cannot be read (another OS). `text` is the file's content, for tests.
 */
export function readFdLimit(text?: string): FdLimit | null {
  let s = text;
  if (s === undefined) {
    try {
      s = readFileSync('/proc/self/limits', 'utf8');
    } catch {
      return null;
    }
  }
  const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(s);
  if (!m) return null;
  const num = (v: string): number => (v === 'unlimited' ? Infinity : Number(v));
  const soft = num(m[1]!);
  const hard = num(m[2]!);
  return Number.isNaN(soft) || Number.isNaN(hard) ? null : { soft, hard };
}

export type RaiseResult =
  /** The limits could not be read (not Linux): nothing was tried. */
  | { kind: 'unknown' }
  /** The soft limit already was the hard one (Node itself raises it at start, src/node.cc, unless embedded otherwise). */
  | { kind: 'at-hard'; limit: FdLimit }
  /** prlimit raised it. */
  | { kind: 'raised'; before: FdLimit; limit: FdLimit }
  /** prlimit is not installed, or failed: the soft limit stays. */
  | { kind: 'not-raised'; limit: FdLimit; why: string };

/**
 * Raises the soft RLIMIT_NOFILE of this process to its hard limit. Node has no
 * setrlimit, so util-linux's `prlimit --pid <own pid>` does it from outside (the
 * kernel lets a process of the same user raise a soft limit up to the hard one).
 * Optional: without prlimit the result says why, and the caller logs it. Blocks
 * for the one short run of prlimit (at start only). `prlimit` names the program.
 */
export function raiseFdLimit(opts: { prlimit?: string } = {}): RaiseResult {
  const before = readFdLimit();
  if (before === null) return { kind: 'unknown' };
  if (before.soft >= before.hard) return { kind: 'at-hard', limit: before };
  const hard = Number.isFinite(before.hard) ? String(before.hard) : 'unlimited';
  const run = spawnSync(opts.prlimit ?? 'prlimit', ['--pid', String(process.pid), `--nofile=${hard}:${hard}`], { encoding: 'utf8', timeout: 5_000 });
  const after = readFdLimit() ?? before;
  if (after.soft > before.soft) return { kind: 'raised', before, limit: after };
  const why = run.error !== undefined
    ? ((run.error as NodeJS.ErrnoException).code === 'ENOENT' ? 'prlimit (util-linux) is not installed' : `prlimit: ${run.error.message}`)
    : `prlimit exited ${run.status ?? run.signal}: ${(run.stderr ?? '').trim() || 'no message'}`;
  return { kind: 'not-raised', limit: after, why };
}

function n(v: number): string {
  return Number.isFinite(v) ? String(v) : 'unlimited';
}

/** The start log line: both limits, and what was done about them. */
export function describeFdLimit(r: RaiseResult): string {
  switch (r.kind) {
    case 'unknown': return 'file descriptors: limits unknown (no /proc/self/limits), not raised';
    case 'at-hard': return `file descriptors: soft limit ${n(r.limit.soft)}, hard limit ${n(r.limit.hard)}`;
    case 'raised': return `file descriptors: soft limit ${n(r.limit.soft)} (raised from ${n(r.before.soft)} with prlimit), hard limit ${n(r.limit.hard)}`;
    case 'not-raised': return `file descriptors: soft limit ${n(r.limit.soft)}, hard limit ${n(r.limit.hard)}; the soft limit stays below the hard one: ${r.why}`;
  }
}

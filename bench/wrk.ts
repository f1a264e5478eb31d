/**
 * Runs wrk and parses its `--latency` report.
 */
import { runToEnd } from './procs.js';

export const WRK = '/usr/bin/wrk';

export interface WrkOptions {
  url: string;
  connections: number;
  threads: number;
  durationS: number;
  /** taskset CPU list for wrk itself; undefined = not pinned. */
  cpus: string | undefined;
  /** Request headers to add (`Connection: close`: a new connection per request). */
  headers?: readonly string[];
}

export interface WrkResult {
  requests: number;
  /** Seconds wrk actually ran. */
  seconds: number;
  rps: number;
  p50Ms: number;
  p75Ms: number;
  p90Ms: number;
  p99Ms: number;
  non2xx: number;
  socketErrors: { connect: number; read: number; write: number; timeout: number };
  /** non-2xx/3xx responses plus socket errors of every kind. */
  errors: number;
  /** wrk's report as printed, kept in the JSON output for checking. */
  raw: string;
}

/** A wrk duration ("812.34us", "1.02ms", "2.00s", "1.00m") in milliseconds. */
export function toMs(value: string, unit: string): number {
  const v = Number(value);
  switch (unit) {
    case 'us': return v / 1000;
    case 'ms': return v;
    case 's': return v * 1000;
    case 'm': return v * 60_000;
    case 'h': return v * 3_600_000;
    default: throw new Error(`wrk: unknown time unit "${unit}"`);
  }
}

function percentile(out: string, p: number): number {
  const m = new RegExp(`^\\s*${p}(?:\\.0+)?%\\s+([\\d.]+)(us|ms|s|m|h)\\s*$`, 'm').exec(out);
  if (!m) throw new Error(`wrk: no ${p}% latency in the report:\n${out}`);
  return toMs(m[1]!, m[2]!);
}

/** Parses the report of `wrk --latency`; throws with the report when a line is missing. */
export function parseWrk(out: string): WrkResult {
  const total = /(\d+) requests in ([\d.]+)(us|ms|s|m|h)/.exec(out);
  if (!total) throw new Error(`wrk: no "N requests in T" line:\n${out}`);
  const requests = Number(total[1]);
  const seconds = toMs(total[2]!, total[3]!) / 1000;
  const rpsLine = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const socketErrors = sock
    ? { connect: Number(sock[1]), read: Number(sock[2]), write: Number(sock[3]), timeout: Number(sock[4]) }
    : { connect: 0, read: 0, write: 0, timeout: 0 };
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
  return {
    requests,
    seconds,
    rps: rpsLine ? Number(rpsLine[1]) : requests / seconds,
    p50Ms: percentile(out, 50),
    p75Ms: percentile(out, 75),
    p90Ms: percentile(out, 90),
    p99Ms: percentile(out, 99),
    non2xx,
    socketErrors,
    errors: non2xx + socketErrors.connect + socketErrors.read + socketErrors.write + socketErrors.timeout,
    raw: out,
  };
}

/** One wrk run: keep-alive (wrk's default), `--latency` for the percentiles. */
export async function runWrk(o: WrkOptions): Promise<WrkResult> {
  const args = ['-t', String(Math.min(o.threads, o.connections)), '-c', String(o.connections),
    '-d', `${o.durationS}s`, '--timeout', '5s', '--latency', ...(o.headers ?? []).flatMap((h) => ['-H', h]), o.url];
  const { code, out } = await runToEnd('wrk', WRK, args, { cpus: o.cpus });
  if (code !== 0) throw new Error(`wrk exited with ${code}:\n${out}`);
  return parseWrk(out);
}

/**
 * Results: ratios against direct and nginx, the printed table, the JSON file.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BASELINE, type Kind, type ScenarioId } from './targets.js';
import type { WrkResult } from './wrk.js';

export type Placement = 'pinned' | 'unpinned';

export interface Row {
  placement: Placement;
  scenario: ScenarioId;
  kind: Kind;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  requests: number;
  errors: number;
  /** CPU time of the proxy process tree per completed request (null for direct: no proxy). */
  proxyCpuUsPerReq: number | null;
  /** CPU time of the upstream per completed request (shows how much of a shared core it takes). */
  upstreamCpuUsPerReq: number;
  /** CPUs' worth of time used by other processes on the machine during the run: above ~0.2 the figures are noisy. */
  otherCpus: number;
  /** Throughput relative to direct (same placement). */
  vsDirect: number | null;
  /** Throughput relative to nginx-http (http scenarios) or nginx-stream (tcp scenarios). */
  vsNginx: number | null;
  /** Proxy CPU per request relative to nginx's (lower is better). */
  cpuVsNginx: number | null;
  /** req/s of every measured run (--repeat); the row's figures are those of the run --pick chose. */
  allRps: number[];
  wrk: Omit<WrkResult, 'raw'> & { raw: string };
}

export interface Skip {
  placement: Placement;
  scenario: ScenarioId;
  reason: string;
}

/** The row each scenario is compared to: direct for all, nginx by kind. */
export function addRatios(rows: Row[]): void {
  const find = (p: Placement, s: ScenarioId): Row | undefined => rows.find((r) => r.placement === p && r.scenario === s);
  for (const r of rows) {
    const direct = find(r.placement, 'direct');
    const baseline = BASELINE[r.kind];
    const nginx = baseline === undefined ? undefined : find(r.placement, baseline);
    r.vsDirect = direct && r.scenario !== 'direct' ? r.rps / direct.rps : null;
    r.vsNginx = nginx ? r.rps / nginx.rps : null;
    r.cpuVsNginx = nginx && nginx.proxyCpuUsPerReq && r.proxyCpuUsPerReq !== null ? r.proxyCpuUsPerReq / nginx.proxyCpuUsPerReq : null;
  }
}

/**
 * One row per placement and scenario from several rounds: the round with the
 * median req/s (the lower middle one for an even count), its ratios as measured in
 * that round.
 */
export function medianRows(rounds: readonly Row[][]): Row[] {
  const out: Row[] = [];
  const seen = new Set<string>();
  for (const r of rounds.flat()) {
    const k = `${r.placement}/${r.scenario}`;
    if (seen.has(k)) continue;
    seen.add(k);
    const all = rounds.flatMap((round) => round.filter((x) => x.placement === r.placement && x.scenario === r.scenario));
    all.sort((a, b) => a.rps - b.rps);
    out.push(all[Math.floor((all.length - 1) / 2)]!);
  }
  return out;
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const fixed = (v: number | null, digits: number): string => (v === null || !Number.isFinite(v) ? '—' : v.toFixed(digits));
const ratio = (v: number | null): string => (v === null ? '—' : `${v.toFixed(2)}×`);

const COLUMNS: readonly { title: string; width: number; cell(r: Row): string; left?: boolean }[] = [
  { title: 'scenario', width: 25, left: true, cell: (r) => r.scenario },
  { title: 'req/s', width: 9, cell: (r) => Math.round(r.rps).toString() },
  { title: 'p50 ms', width: 7, cell: (r) => fixed(r.p50Ms, 2) },
  { title: 'p99 ms', width: 7, cell: (r) => fixed(r.p99Ms, 2) },
  { title: 'proxy µs/req', width: 12, cell: (r) => fixed(r.proxyCpuUsPerReq, 1) },
  { title: 'upstr µs/req', width: 12, cell: (r) => fixed(r.upstreamCpuUsPerReq, 1) },
  { title: 'errors', width: 6, cell: (r) => String(r.errors) },
  { title: '×direct', width: 7, cell: (r) => ratio(r.vsDirect) },
  { title: '×nginx', width: 6, cell: (r) => ratio(r.vsNginx) },
  { title: 'cpu×nginx', width: 9, cell: (r) => ratio(r.cpuVsNginx) },
  { title: 'other', width: 5, cell: (r) => fixed(r.otherCpus, 2) },
];

function line(cells: string[]): string {
  return cells.map((c, i) => (COLUMNS[i]!.left ? c.padEnd(COLUMNS[i]!.width) : c.padStart(COLUMNS[i]!.width))).join('  ');
}

/** One table per placement, then the figures the aims are about. */
export function formatTable(rows: readonly Row[], skips: readonly Skip[], placements: readonly Placement[], rounds: readonly Row[][] = [rows as Row[]]): string {
  const out: string[] = [];
  for (const p of placements) {
    const mine = rows.filter((r) => r.placement === p);
    out.push('', `placement: ${p}${p === 'pinned' ? ' (proxy + upstream on CPU 0, wrk on CPU 1)' : ' (no taskset)'}`);
    out.push(line(COLUMNS.map((c) => c.title)));
    out.push(line(COLUMNS.map((c) => '-'.repeat(c.width))));
    for (const r of mine) out.push(line(COLUMNS.map((c) => c.cell(r))));
    for (const s of skips.filter((x) => x.placement === p)) out.push(`${s.scenario.padEnd(25)}  skipped: ${s.reason}`);
    out.push(...aims(rounds.map((round) => round.filter((r) => r.placement === p))));
    const busy = mine.filter((r) => r.otherCpus > 0.2).map((r) => r.scenario);
    if (busy.length) out.push(`  note: other processes used > 0.2 CPU during ${busy.join(', ')} (column "other"): those figures are noisy`);
  }
  return out.join('\n');
}

/**
 * A comparison of two scenarios over the rounds that measured both: the median of
 * each round's throughput ratio and CPU figures (each round's pair ran close together,
 * so drift between rounds does not enter the ratio); with several rounds, the
 * per-round ratios too.
 */
function compare(rounds: readonly Row[][], a: ScenarioId, b: ScenarioId): { rps: number; cpuA: number; cpuB: number; each: string } | null {
  const pairs = rounds.flatMap((round) => {
    const x = round.find((r) => r.scenario === a);
    const y = round.find((r) => r.scenario === b);
    return x && y ? [{ x, y }] : [];
  });
  if (pairs.length === 0) return null;
  const cpu = (r: Row): number => r.proxyCpuUsPerReq ?? NaN;
  return {
    rps: median(pairs.map((p) => p.x.rps / p.y.rps)),
    cpuA: median(pairs.map((p) => cpu(p.x))),
    cpuB: median(pairs.map((p) => cpu(p.y))),
    each: pairs.length > 1 ? ` [rounds: ${pairs.map((p) => (p.x.rps / p.y.rps).toFixed(2)).join(', ')}]` : '',
  };
}

/** The aims: HTTP ≥ 0.35× nginx (one worker), TCP ≥ 0.95× nginx stream; and what observability costs. */
function aims(rounds: readonly Row[][]): string[] {
  const out: string[] = [];
  const several = rounds.length > 1 ? 'median ' : '';
  const check = (mine: ScenarioId, theirs: ScenarioId, aim: number): void => {
    const c = compare(rounds, mine, theirs);
    if (!c) return;
    out.push(`  ${mine} / ${theirs}: ${several}${c.rps.toFixed(2)}× throughput (aim ≥ ${aim}: ${c.rps >= aim ? 'met' : 'NOT met'}), `
      + `CPU ${fixed(c.cpuA, 1)} vs ${fixed(c.cpuB, 1)} µs/request (${ratio(c.cpuA / c.cpuB)})${c.each}`);
  };
  // Issue 13's aims; the TLS pairs (issue 15) as measured, against nginx doing the same.
  check('switchyard-http', 'nginx-http', 0.8);
  check('switchyard-tcp', 'nginx-stream', 0.95);
  check('switchyard-https', 'nginx-https', 0.8);
  check('switchyard-https-handshake', 'nginx-https-handshake', 0.8);
  check('switchyard-tls-upstream', 'nginx-tls-upstream', 0.8);
  // What observability costs, measured rather than assumed (issue 6).
  const cost = (label: string, on: ScenarioId, off: ScenarioId): void => {
    const c = compare(rounds, on, off);
    if (!c) return;
    out.push(`  ${label}: ${on} / ${off}: ${several}${c.rps.toFixed(3)}× throughput, `
      + `CPU ${fixed(c.cpuA, 1)} vs ${fixed(c.cpuB, 1)} µs/request${c.each}`);
  };
  cost('request metrics', 'switchyard-http', 'switchyard-http-nometrics');
  cost('access log to a file', 'switchyard-http-accesslog', 'switchyard-http');
  cost('tracing, every request sampled', 'switchyard-http-traced', 'switchyard-http');
  return out;
}

/** Writes the results as JSON to bench/out/bench-<time>.json and bench/out/latest.json. */
export function writeJson(outDir: string, data: unknown): string {
  mkdirSync(outDir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const file = join(outDir, `bench-${stamp}.json`);
  const text = `${JSON.stringify(data, null, 2)}\n`;
  writeFileSync(file, text);
  writeFileSync(join(outDir, 'latest.json'), text);
  return file;
}

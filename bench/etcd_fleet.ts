/**
 * The fleet benchmark (`node dist/bench/etcd_fleet.js [--watchers 200] [--rounds 20]`):
 * N sidecar runtimes, each with its own etcd source (its own connection, watch and
 * status lease), on one etcd; a transaction changes `common` and `apps/<app>`
 * together, and the time from its commit (the transaction's answer) to each
 * runtime serving the generation built from it is taken. Reported: p50 / p99 / max
 * of those times, of the time until all N serve it, and etcd's load during the
 * rounds from its own /metrics (CPU seconds, gRPC calls by method, watchers).
 *
 * All N runtimes share this one Node process, so past a few hundred the figure
 * measures this process's CPU (N validations and builds in a row) more than etcd.
 * Loopback only.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Etcd3 } from 'etcd3';
import { Runtime } from '../src/reload/runtime.js';
import { EtcdSource } from '../src/reload/etcd_source.js';
import type { EtcdSourceConfig } from '../src/config/types.js';
import { installCleanup, startProc, stopAll, type Proc } from './procs.js';
import { freePort } from './targets.js';

const { values } = parseArgs({ options: { watchers: { type: 'string', default: '200' }, rounds: { type: 'string', default: '20' } } });
const N = Number(values.watchers);
const ROUNDS = Number(values.rounds);
const PREFIX = '/bench';
const APP = 'bench-app';

/** Starts etcd on free loopback ports; resolves once /health answers. */
async function startEtcd(dataDir: string): Promise<{ proc: Proc; url: string }> {
  const [client, peer] = [await freePort('127.0.0.1'), await freePort('127.0.0.1')];
  const url = `http://127.0.0.1:${client}`;
  const peerUrl = `http://127.0.0.1:${peer}`;
  const proc = startProc('etcd', 'etcd', ['--name', 'default', '--data-dir', dataDir, '--listen-client-urls', url, '--advertise-client-urls', url,
    '--listen-peer-urls', peerUrl, '--initial-advertise-peer-urls', peerUrl, '--initial-cluster', `default=${peerUrl}`, '--log-level', 'error']);
  const end = Date.now() + 20_000;
  for (;;) {
    const ok = await fetch(`${url}/health`).then((r) => r.ok, () => false);
    if (ok) return { proc, url };
    if (Date.now() > end || proc.done) throw new Error(`etcd did not start:\n${proc.tail.join('\n')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** etcd's own counters: process CPU, gRPC calls by method, watchers. */
async function etcdLoad(url: string): Promise<{ cpu: number; calls: Map<string, number>; watchers: number; rss: number }> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const calls = new Map<string, number>();
  let cpu = 0;
  let watchers = 0;
  let rss = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('process_cpu_seconds_total ')) cpu = Number(line.split(' ')[1]);
    else if (line.startsWith('process_resident_memory_bytes ')) rss = Number(line.split(' ')[1]);
    else if (line.startsWith('etcd_debugging_mvcc_watcher_total ')) watchers = Number(line.split(' ')[1]);
    else if (line.startsWith('grpc_server_handled_total{')) {
      const method = /grpc_method="([^"]+)"/.exec(line)?.[1] ?? '?';
      calls.set(method, (calls.get(method) ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1)));
    } else if (line.startsWith('grpc_server_msg_received_total{') && line.includes('grpc_type="bidi_stream"')) {
      const method = `${/grpc_method="([^"]+)"/.exec(line)?.[1] ?? '?'} (stream messages)`;
      calls.set(method, (calls.get(method) ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1)));
    }
  }
  return { cpu, calls, watchers, rss };
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

async function main(): Promise<void> {
  installCleanup();
  const dataDir = mkdtempSync(join(tmpdir(), 'switchyard-bench-etcd-'));
  const { proc, url } = await startEtcd(dataDir);
  const writer = new Etcd3({ hosts: url });
  const doc = (round: number) => ({
    common: JSON.stringify({ components: { lim: { type: 'ratelimit', metadata: { requestsPerSecond: String(100 + round), burst: '200' } } } }),
    app: JSON.stringify({ components: { lim: { metadata: { requestsPerSecond: String(100 + round), burst: String(200 + round) } } } }),
  });
  const commit = async (round: number): Promise<number> => {
    const d = doc(round);
    const res = await writer.kv.txn({ compare: [], failure: [], success: [
      { request_put: { key: Buffer.from(`${PREFIX}/common`), value: Buffer.from(d.common) } },
      { request_put: { key: Buffer.from(`${PREFIX}/apps/${APP}`), value: Buffer.from(d.app) } },
    ] });
    return Number(res.header.revision);
  };
  await commit(0);

  // The sidecars: one runtime and one etcd source each.
  const applied: Map<number, number>[] = [];
  const sources: EtcdSource[] = [];
  const runtimes: Runtime[] = [];
  const bootstrap = { texts: [{ name: 'bootstrap.yaml', text: 'drainTimeout: 1s\n' }], issues: [], baseDir: process.cwd(), files: [] };
  const started = performance.now();
  for (let i = 0; i < N; i++) {
    const runtime = new Runtime({ fdLimit: null });
    const seen = new Map<number, number>();
    runtime.onApplied = (gen) => { if (gen.raw.revision !== undefined) seen.set(gen.raw.revision, performance.now()); };
    const config: EtcdSourceConfig = { endpoints: [url], prefix: PREFIX, app: APP, instance: `pod-${i}`, timeoutMs: 5_000, checkIntervalMs: 30_000, leaseTtlMs: 15_000 };
    const source = new EtcdSource({ config, runtime, bootstrap, log: (l) => { if (!l.startsWith('generation')) console.error(`pod-${i}: ${l}`); } });
    const first = await source.start();
    if (!first.ok || !first.result.ok) throw new Error(`pod-${i}: did not start: ${first.ok ? JSON.stringify(first.result) : first.error.message}`);
    source.run();
    applied.push(seen);
    sources.push(source);
    runtimes.push(runtime);
  }
  console.log(`${N} sidecars on one etcd (started in ${((performance.now() - started) / 1000).toFixed(1)} s); ${ROUNDS} transactions of 2 keys each`);
  await new Promise((r) => setTimeout(r, 1_000));

  const before = await etcdLoad(url);
  const ownBefore = process.cpuUsage();
  const each: number[] = [];
  const all: number[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const revision = await commit(round);
    const committed = performance.now();
    const end = committed + 30_000;
    while (applied.some((m) => !m.has(revision)) && performance.now() < end) await new Promise((r) => setTimeout(r, 2));
    const times = applied.map((m) => (m.get(revision) ?? Infinity) - committed);
    const missing = times.filter((x) => x === Infinity).length;
    if (missing) throw new Error(`round ${round}: ${missing} of ${N} sidecars did not apply revision ${revision} within 30 s`);
    each.push(...times);
    all.push(Math.max(...times));
    await new Promise((r) => setTimeout(r, 200));
  }
  const after = await etcdLoad(url);
  const own = process.cpuUsage(ownBefore);
  each.sort((a, b) => a - b);
  all.sort((a, b) => a - b);
  const ms = (x: number): string => `${x.toFixed(1)} ms`;
  console.log(`commit → one sidecar serving it: p50 ${ms(pct(each, 50))}, p99 ${ms(pct(each, 99))}, max ${ms(each.at(-1)!)}`);
  console.log(`commit → all ${N} serving it:     p50 ${ms(pct(all, 50))}, p99 ${ms(pct(all, 99))}, max ${ms(all.at(-1)!)}`);
  console.log(`etcd during the rounds: ${((after.cpu - before.cpu) / ROUNDS * 1000).toFixed(0)} ms CPU per transaction, ${after.watchers} watchers, RSS ${(after.rss / 2 ** 20).toFixed(0)} MiB`);
  console.log(`this process (the ${N} runtimes) during the rounds: ${((own.user + own.system) / 1000 / ROUNDS).toFixed(0)} ms CPU per transaction`);
  for (const [method, n] of [...after.calls].sort()) {
    const d = n - (before.calls.get(method) ?? 0);
    if (d > 0) console.log(`  ${method}: ${(d / ROUNDS).toFixed(1)} per transaction`);
  }

  await Promise.all(sources.map((s) => s.close()));
  await Promise.all(runtimes.map((r) => r.shutdown()));
  writer.close();
  await stopAll();
  rmSync(dataDir, { recursive: true, force: true });
  void proc;
}

main().catch(async (err: Error) => {
  console.error(err.stack ?? err.message);
  await stopAll();
  process.exit(1);
});

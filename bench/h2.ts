/**
 * `npm run bench:h2`: HTTP/2 through switchyard against nginx, with h2load, on
 * loopback only. See `npm run bench:h2 -- --help`.
 *
 * Scenarios (every client is h2c with prior knowledge, many streams per connection):
 *   switchyard-h2-h1  switchyard → the HTTP/1.1 upstream (header_route + weighted 90/10)
 *   switchyard-h2-h2  switchyard → the upstream's h2c port (channel protocol: http2)
 *   nginx-h2-h1       nginx `listen … http2` → the HTTP/1.1 upstream (keepalive pool)
 *   switchyard-grpc   gRPC unary calls (h2load with a gRPC body) → a gRPC upstream (protocol: http2)
 *   nginx-grpc        the same calls through nginx `grpc_pass`
 *   switchyard-h2-tls h2 over TLS (ALPN h2, keep-alive) → the HTTP/1.1 upstream
 *   nginx-h2-tls      nginx `listen … ssl http2` → the HTTP/1.1 upstream
 * switchyard-h2-* are compared to nginx-h2-h1, switchyard-grpc to nginx-grpc.
 * Each round runs them in turn (every other round reversed); the table has the
 * median round, and the ratio lines the median of each round's ratio to nginx-h2-h1.
 * After the rounds, the per-request split over ONE connection is checked: 20,000
 * streams on one h2load connection through the 90/10 listener, counted by
 * switchyard's requests_total per role.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { clockTicksPerSecond, cpuTicks, installCleanup, runToEnd, startProc, stopAll, stopProc, waitListening, type Proc } from './procs.js';
import { freePort, HOSTS, NGINX } from './targets.js';
import { makeBenchCerts } from './tls.js';

const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(BENCH_DIR, '../..');
const H2LOAD = '/usr/bin/h2load';

const USAGE = `usage: npm run bench:h2 -- [options]
  --rounds N        rounds of every scenario (default 3)
  --duration S      measured seconds per scenario (default 5), after 1 s of warm-up
  --clients N       h2load connections (default 8)
  --streams N       concurrent streams per connection (default 16)
  --placement pinned|unpinned   pinned (default): proxy and upstream on CPU 0, h2load on CPU 1`;

type Id = 'switchyard-h2-h1' | 'switchyard-h2-h2' | 'nginx-h2-h1' | 'switchyard-grpc' | 'nginx-grpc' | 'switchyard-h2-tls' | 'nginx-h2-tls';
const IDS: readonly Id[] = ['switchyard-h2-h1', 'switchyard-h2-h2', 'nginx-h2-h1', 'switchyard-grpc', 'nginx-grpc', 'switchyard-h2-tls', 'nginx-h2-tls'];
const BASELINE: Record<Id, Id> = {
  'switchyard-h2-h1': 'nginx-h2-h1', 'switchyard-h2-h2': 'nginx-h2-h1', 'nginx-h2-h1': 'nginx-h2-h1', 'switchyard-grpc': 'nginx-grpc', 'nginx-grpc': 'nginx-grpc',
  'switchyard-h2-tls': 'nginx-h2-tls', 'nginx-h2-tls': 'nginx-h2-tls',
};
/** A gRPC request message (16 bytes, length-prefixed), for h2load -d. */
const GRPC_REQUEST = Buffer.concat([Buffer.from([0, 0, 0, 0, 16]), Buffer.alloc(16, 0x62)]);

interface Result { id: Id; rps: number; cpuUsPerRequest: number; meanMs: number; failed: number }

/** h2load's summary: req/s, requests done and failed, mean request time. */
export function parseH2load(out: string): { rps: number; done: number; failed: number; meanMs: number } {
  const fin = /finished in [\d.]+\w+, ([\d.]+) req\/s/.exec(out);
  const req = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(out);
  const time = /time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)/.exec(out);
  if (!fin || !req || !time) throw new Error(`h2load: unexpected report:\n${out}`);
  const ms = (v: string, u: string): number => Number(v) * (u === 'us' ? 0.001 : u === 's' ? 1000 : 1);
  return { rps: Number(fin[1]), done: Number(req[3]), failed: Number(req[5]) + Number(req[6]), meanMs: ms(time[5]!, time[6]!) };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: '3' }, duration: { type: 'string', default: '5' },
      clients: { type: 'string', default: '8' }, streams: { type: 'string', default: '16' },
      placement: { type: 'string', default: 'pinned' }, help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const rounds = Number(values.rounds);
  const duration = Number(values.duration);
  const pinned = values.placement !== 'unpinned';
  const proxyCpus = pinned ? '0' : undefined;
  const loadCpus = pinned ? '1' : undefined;
  installCleanup();
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-bench-h2-'));
  try {
    const up = HOSTS.upstream;
    const [p1, p2, ph2, pg] = [await freePort(up), await freePort(up), await freePort(up), await freePort(up)];
    const upstream = startProc('upstream', process.execPath, [join(BENCH_DIR, 'upstream.js'), '--host', up, '--port', String(p1), '--port', String(p2),
      '--h2-port', String(ph2), '--grpc-port', String(pg)], { cpus: proxyCpus });
    for (const p of [p1, p2, ph2, pg]) await waitListening(upstream, up, p);
    const certs = await makeBenchCerts(dir);
    const grpcBody = join(dir, 'grpc-request.bin');
    await writeFile(grpcBody, GRPC_REQUEST);

    const sy = HOSTS.switchyard;
    const [syH1, syH2, syGrpc, syTls, syAdmin] = [await freePort(sy), await freePort(sy), await freePort(sy), await freePort(sy), await freePort(sy)];
    const syFile = join(dir, 'switchyard.yaml');
    await writeFile(syFile, `# generated by bench/h2.ts
version: 1
admin: { address: "${sy}:${syAdmin}" }
drainTimeout: 1s
roles:
  bench-v1: { meta: { version: "1.0.0" }, channels: { http: { endpoints: ["${up}:${p1}"] }, h2: { endpoints: ["${up}:${ph2}"], protocol: http2 } } }
  bench-v2: { meta: { version: "2.0.0" }, channels: { http: { endpoints: ["${up}:${p2}"] }, h2: { endpoints: ["${up}:${ph2}"], protocol: http2 } } }
  grpc-v1: { channels: { grpc: { endpoints: ["${up}:${pg}"], protocol: http2 } } }
  grpc-v2: { channels: { grpc: { endpoints: ["${up}:${pg}"], protocol: http2 } } }
vsets:
  bench: { channels: [http, h2], roles: { bench-v1: {}, bench-v2: {} } }
  rpc: { channels: [grpc], roles: { grpc-v1: {}, grpc-v2: {} } }
listeners:
  h2-h1:
    address: ${sy}:${syH1}
    target: bench.http
    http2: { maxConcurrentStreams: 128 }
    filters:
      - type: header_route
        rules: [{ header: x-canary, equals: "true", role: bench-v2 }]
      - type: weighted
        weights: { bench-v1: 90, bench-v2: 10 }
  tls:
    address: ${sy}:${syTls}
    target: bench.http
    tls: { cert: "${certs.cert}", key: "${certs.key}" }
    http2: { maxConcurrentStreams: 128 }
    filters:
      - type: weighted
        weights: { bench-v1: 90, bench-v2: 10 }
  grpc:
    address: ${sy}:${syGrpc}
    target: rpc.grpc
    http2: { maxConcurrentStreams: 128 }
    filters:
      - type: weighted
        weights: { grpc-v1: 90, grpc-v2: 10 }
  h2-h2:
    address: ${sy}:${syH2}
    target: bench.h2
    http2: { maxConcurrentStreams: 128 }
    filters:
      - type: weighted
        weights: { bench-v1: 90, bench-v2: 10 }
`);
    const switchyard = startProc('switchyard', process.execPath, [join(ROOT, 'bin/switchyard.js'), 'run', '--config', syFile], { cpus: proxyCpus, cwd: ROOT });
    for (const p of [syH1, syH2, syGrpc, syTls]) await waitListening(switchyard, sy, p);

    const ng = HOSTS.nginx;
    const [ngPort, ngGrpc, ngTls] = [await freePort(ng), await freePort(ng), await freePort(ng)];
    const ngDir = join(dir, 'nginx');
    for (const d of ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(ngDir, d), { recursive: true });
    await writeFile(join(ngDir, 'nginx.conf'), `# generated by bench/h2.ts
worker_processes 1;
pid ${ngDir}/nginx.pid;
error_log ${ngDir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${ngDir}/client_body;
  proxy_temp_path ${ngDir}/proxy;
  fastcgi_temp_path ${ngDir}/fastcgi;
  uwsgi_temp_path ${ngDir}/uwsgi;
  scgi_temp_path ${ngDir}/scgi;
  keepalive_requests 10000000;
  http2_max_concurrent_streams 128;
  upstream bench {
    server ${up}:${p1} weight=9;
    server ${up}:${p2} weight=1;
    keepalive 128;
    keepalive_requests 10000000;
  }
  upstream bench_grpc {
    server ${up}:${pg};
    keepalive 128;
    keepalive_requests 10000000;
  }
  server {
    listen ${ng}:${ngTls} ssl http2 backlog=1024;
    ssl_certificate ${certs.cert};
    ssl_certificate_key ${certs.key};
    location / {
      proxy_pass http://bench;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
  server {
    listen ${ng}:${ngGrpc} http2 backlog=1024;
    location / { grpc_pass grpc://bench_grpc; }
  }
  server {
    listen ${ng}:${ngPort} http2 backlog=1024;
    location / {
      proxy_pass http://bench;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`);
    const nginx = startProc('nginx', NGINX, ['-p', `${ngDir}/`, '-c', join(ngDir, 'nginx.conf'), '-g', 'daemon off;'], { cpus: proxyCpus });
    await waitListening(nginx, ng, ngPort);
    await waitListening(nginx, ng, ngGrpc);
    await waitListening(nginx, ng, ngTls);

    const targets: Record<Id, { proc: Proc; url: string }> = {
      'switchyard-h2-h1': { proc: switchyard, url: `http://${sy}:${syH1}/` },
      'switchyard-h2-h2': { proc: switchyard, url: `http://${sy}:${syH2}/` },
      'nginx-h2-h1': { proc: nginx, url: `http://${ng}:${ngPort}/` },
      'switchyard-grpc': { proc: switchyard, url: `http://${sy}:${syGrpc}/bench.Echo/Unary` },
      'nginx-grpc': { proc: nginx, url: `http://${ng}:${ngGrpc}/bench.Echo/Unary` },
      'switchyard-h2-tls': { proc: switchyard, url: `https://${sy}:${syTls}/` },
      'nginx-h2-tls': { proc: nginx, url: `https://${ng}:${ngTls}/` },
    };
    const grpcArgs = ['-d', grpcBody, '-H', 'content-type: application/grpc', '-H', 'te: trailers'];
    const usPerTick = 1e6 / clockTicksPerSecond();
    const load = async (url: string, args: string[]): Promise<string> => {
      const cmd = loadCpus === undefined ? H2LOAD : 'taskset';
      const argv = loadCpus === undefined ? [...args, url] : ['-c', loadCpus, H2LOAD, ...args, url];
      const { code, out } = await runToEnd('h2load', cmd, argv);
      if (code !== 0) throw new Error(`h2load exited ${code}:\n${out}`);
      return out;
    };
    const h2args = ['-c', String(values.clients), '-m', String(values.streams), '-t', '1'];
    const all: Result[][] = [];
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? IDS : [...IDS].reverse();
      const round: Result[] = [];
      for (const id of order) {
        const t = targets[id];
        const args = id.endsWith('grpc') ? [...h2args, ...grpcArgs] : h2args;
        await load(t.url, [...args, '-D', '1']);
        const before = cpuTicks(t.proc.pid);
        const s = parseH2load(await load(t.url, [...args, '-D', String(duration)]));
        const ticks = cpuTicks(t.proc.pid) - before;
        round.push({ id, rps: s.rps, cpuUsPerRequest: (ticks * usPerTick) / Math.max(1, s.done), meanMs: s.meanMs, failed: s.failed });
      }
      all.push(round);
    }
    printTable(all, pinned);

    // The split over one connection.
    const before = await roleCounts(sy, syAdmin, 'h2-h1');
    await load(targets['switchyard-h2-h1'].url, ['-c', '1', '-m', '100', '-t', '1', '-n', '20000']);
    const after = await roleCounts(sy, syAdmin, 'h2-h1');
    const v2 = (after['bench-v2'] ?? 0) - (before['bench-v2'] ?? 0);
    const v1 = (after['bench-v1'] ?? 0) - (before['bench-v1'] ?? 0);
    console.log(`\nper-request split over one HTTP/2 connection (20,000 streams, weights 90/10): bench-v2 got ${((v2 / (v1 + v2)) * 100).toFixed(2)} % (aim: 10 ± 1)`);
    await stopProc(nginx);
    await stopProc(switchyard);
    await stopProc(upstream);
  } finally {
    await stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function printTable(rounds: Result[][], pinned: boolean): void {
  console.log(`\nHTTP/2 (h2c prior knowledge), ${pinned ? 'pinned: proxy and upstream on CPU 0, h2load on CPU 1' : 'unpinned'}; medians of ${rounds.length} round(s)`);
  console.log('(switchyard-h2-h1 and -h2 against nginx-h2-h1, switchyard-grpc against nginx-grpc, switchyard-h2-tls against nginx-h2-tls)\n');
  console.log('| scenario | req/s | proxy CPU µs/request | mean latency | failed | ×nginx throughput | ×nginx CPU |');
  console.log('|---|---|---|---|---|---|---|');
  const of = (id: Id, r: Result[]): Result => r.find((x) => x.id === id)!;
  for (const id of IDS) {
    const rps = median(rounds.map((r) => of(id, r).rps));
    const cpu = median(rounds.map((r) => of(id, r).cpuUsPerRequest));
    const mean = median(rounds.map((r) => of(id, r).meanMs));
    const failed = rounds.reduce((n, r) => n + of(id, r).failed, 0);
    const base = BASELINE[id];
    const xThroughput = median(rounds.map((r) => of(id, r).rps / of(base, r).rps));
    const xCpu = median(rounds.map((r) => of(id, r).cpuUsPerRequest / of(base, r).cpuUsPerRequest));
    console.log(`| ${id} | ${Math.round(rps)} | ${cpu.toFixed(1)} | ${mean.toFixed(2)} ms | ${failed} | ${xThroughput.toFixed(2)} | ${xCpu.toFixed(2)} |`);
  }
  console.log('aim (issue 14): CPU per request within 2× nginx for h2c');
}

/** switchyard_requests_total by role for one listener, from the admin API. */
function roleCounts(host: string, port: number, listener: string): Promise<Record<string, number>> {
  return new Promise((resolvePromise, reject) => {
    get({ host, port, path: '/metrics' }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { text += c; });
      res.on('end', () => {
        const out: Record<string, number> = {};
        for (const line of text.split('\n')) {
          const m = /^switchyard_requests_total\{([^}]*)\} (\d+)/.exec(line);
          if (!m || !m[1]!.includes(`listener="${listener}"`)) continue;
          const role = /role="([^"]*)"/.exec(m[1]!)?.[1] ?? '';
          out[role] = (out[role] ?? 0) + Number(m[2]);
        }
        resolvePromise(out);
      });
    }).on('error', reject);
  });
}

main().catch(async (err: unknown) => {
  console.error((err as Error).stack ?? String(err));
  await stopAll();
  process.exit(1);
});

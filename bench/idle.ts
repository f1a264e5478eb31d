/**
 * The idle-connection benchmark (`npm run bench:idle`): what an idle client
 * connection costs switchyard in memory. Opens N keep-alive HTTP connections (each
 * sends one request and reads its answer, then stays open) or N TCP connections
 * (each sends one byte through to an upstream that holds it), and reports the
 * proxy's RSS growth per connection over its RSS before them, after the process
 * settled. N = 1,000 and 10,000 for HTTP; for TCP, whose connections each hold an
 * upstream socket too, as many as the file-descriptor limit allows (up to 10,000).
 *
 * Loopback only: switchyard on 127.0.78.1, the upstreams in this process on 127.0.78.2.
 */
import { readFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { installCleanup, startProc, stopAll, waitListening } from './procs.js';
import { freePort } from './targets.js';

const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(BENCH_DIR, '../..');
const CLI = join(ROOT, 'bin/switchyard.js');
const PROXY_HOST = '127.0.78.1';
const UPSTREAM_HOST = '127.0.78.2';
/** Connections opened at once while setting up (the kernel's accept backlog is 511). */
const BATCH = 200;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The resident set of a process, in KiB (/proc/<pid>/status VmRSS). */
function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]);
}

/** The RSS once it stopped moving: the lowest of a few reads, 300 ms apart. */
async function settledRss(pid: number): Promise<number> {
  let low = Infinity;
  for (let i = 0; i < 5; i++) {
    await sleep(300);
    low = Math.min(low, rssKiB(pid));
  }
  return low;
}

/** The soft limit on open files of this process (its clients and held upstream sockets count against it). */
function fdLimit(): number {
  const m = /Max open files\s+(\d+)/.exec(readFileSync('/proc/self/limits', 'utf8'));
  return m ? Number(m[1]) : 1024;
}

async function listen(server: Server, host: string): Promise<number> {
  await new Promise<void>((r) => server.listen({ host, port: 0, backlog: 4096 }, r));
  return (server.address() as { port: number }).port;
}

/** An HTTP upstream that answers every request with a short body, keep-alive. */
function httpUpstream(): Server {
  return createServer((s) => {
    s.on('error', () => s.destroy());
    let buf = '';
    s.on('data', (c: Buffer) => {
      buf += c.toString('latin1');
      let end: number;
      while ((end = buf.indexOf('\r\n\r\n')) >= 0) {
        buf = buf.slice(end + 4);
        s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nkeep-alive: timeout=300\r\n\r\nok');
      }
    });
  });
}

/** A TCP upstream that takes every connection and holds it, reading and answering nothing. */
function holdingUpstream(held: Set<Socket>): Server {
  return createServer((s) => {
    held.add(s);
    s.on('error', () => s.destroy());
    s.on('close', () => held.delete(s));
  });
}

/** Opens one idle client connection: http sends one request and reads its answer; tcp sends one byte. */
function openOne(kind: 'http' | 'tcp', port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: PROXY_HOST, port });
    s.once('error', reject);
    s.once('connect', () => {
      // A reset later (switchyard stopping) must not end the benchmark.
      s.on('error', () => s.destroy());
      if (kind === 'tcp') {
        s.write('x');
        resolve(s);
        return;
      }
      s.write(`GET / HTTP/1.1\r\nHost: idle\r\n\r\n`);
      let got = '';
      s.on('data', function onData(c: Buffer) {
        got += c.toString('latin1');
        if (got.includes('\r\n\r\nok')) {
          s.off('data', onData);
          resolve(s);
        }
      });
    });
  });
}

async function openMany(kind: 'http' | 'tcp', port: number, n: number): Promise<Socket[]> {
  const out: Socket[] = [];
  while (out.length < n) {
    const batch = Math.min(BATCH, n - out.length);
    out.push(...await Promise.all(Array.from({ length: batch }, () => openOne(kind, port))));
  }
  return out;
}

async function closeAll(sockets: Socket[]): Promise<void> {
  await Promise.all(sockets.map((s) => new Promise<void>((r) => { s.once('close', () => r()); s.destroy(); })));
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { counts: { type: 'string', default: '1000,10000' }, help: { type: 'boolean' } } });
  if (values.help) {
    console.log('usage: npm run bench:idle -- [--counts 1000,10000]');
    return;
  }
  installCleanup();
  const counts = values.counts!.split(',').map(Number).filter((n) => n > 0);
  const held = new Set<Socket>();
  const http = httpUpstream();
  const hold = holdingUpstream(held);
  const httpPort = await listen(http, UPSTREAM_HOST);
  const holdPort = await listen(hold, UPSTREAM_HOST);
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-idle-'));
  const ports = { http: await freePort(PROXY_HOST), tcp: await freePort(PROXY_HOST), admin: await freePort('127.0.0.1') };
  const file = join(dir, 'switchyard.yaml');
  writeFileSync(file, [
    `admin: { address: "127.0.0.1:${ports.admin}" }`,
    // Idle HTTP clients hold no upstream socket: the default limit (from the fd limit, two per client) would refuse some.
    'limits: { maxConnections: 100000 }',
    'roles:',
    `  web: { channels: { http: { endpoints: ["${UPSTREAM_HOST}:${httpPort}"] } } }`,
    `  raw: { channels: { tcp: { endpoints: ["${UPSTREAM_HOST}:${holdPort}"] } } }`,
    'listeners:',
    `  web: { address: "${PROXY_HOST}:${ports.http}", target: web, timeouts: { keepAlive: 5m } }`,
    `  raw: { address: "${PROXY_HOST}:${ports.tcp}", target: raw, protocol: tcp, timeouts: { idle: 5m } }`,
    '',
  ].join('\n'));
  const proc = startProc('switchyard', process.execPath, [CLI, 'run', '--config', file], { cwd: ROOT });
  try {
    await waitListening(proc, PROXY_HOST, ports.http);
    await waitListening(proc, PROXY_HOST, ports.tcp);
    // Warm the paths once (first request, first connection) so their one-time costs are not counted per connection.
    await closeAll(await openMany('http', ports.http, 50));
    await closeAll(await openMany('tcp', ports.tcp, 50));
    // Each TCP connection holds a client and an upstream socket here, and in switchyard.
    const fds = fdLimit() - 200;
    console.log(`idle connections: RSS of switchyard (pid ${proc.pid}) per connection, over its RSS before them (settled: lowest of 5 reads)`);
    console.log('kind   connections   RSS before   RSS with them   per connection');
    for (const kind of ['http', 'tcp'] as const) {
      for (const wanted of counts) {
        const n = kind === 'tcp' ? Math.min(wanted, Math.floor(fds / 2)) : Math.min(wanted, fds);
        const before = await settledRss(proc.pid);
        const sockets = await openMany(kind, kind === 'http' ? ports.http : ports.tcp, n);
        const during = await settledRss(proc.pid);
        const per = ((during - before) * 1024) / n;
        const note = n < wanted ? `  (${wanted} wanted: the file-descriptor limit allows ${n})` : '';
        console.log(`${kind.padEnd(6)} ${String(n).padStart(11)}   ${String(before).padStart(7)} KiB   ${String(during).padStart(10)} KiB   ${(per / 1024).toFixed(2).padStart(9)} KiB${note}`);
        await closeAll(sockets);
        for (const s of held) s.destroy();
      }
    }
  } finally {
    await stopAll();
    http.close();
    hold.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();

import { spawn } from 'node:child_process';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import type { ExecutionContext } from 'ava';
import { request as undiciRequest, Agent } from 'undici';
import { parseConfigTexts } from '../src/config/load.js';
import { Sidecar } from '../src/sidecar.js';
import { toolPath } from './setup/requirements.js';
import type { PushField } from '../src/reload/push_policy.js';

/** The repository root (tests run from dist/test). */
export const ROOT = resolve(fileURLToPath(import.meta.url), '../../..');
export const CLI = join(ROOT, 'bin/switchyard.js');

let hostCounter = 0;
/**
 * A 127.x.y.z of this test process's own, so parallel test files never collide
 * (ava runs each file in its own process). Listeners use it with port 0.
 */
export function uniqueHost(): string {
  const n = (process.pid % 50_000) * 64 + (hostCounter++ % 64);
  return `127.${10 + ((n >> 16) & 0x7f)}.${(n >> 8) & 0xff}.${(n & 0xff) || 1}`;
}

export interface Upstream {
  server: Server;
  host: string;
  port: number;
  /** `host:port`, for a config's endpoints. */
  address: string;
  /** Requests received, in order. */
  requests: IncomingMessage[];
  close(): Promise<void>;
}

/**
 * An upstream server on port 0 of this process's own 127.x.y.z. The default handler answers 200 with a JSON
 * body `{role, method, url, headers}` and header `x-role`.
 */
export async function startUpstream(t: ExecutionContext, role: string,
  handler?: (req: IncomingMessage, res: ServerResponse) => void): Promise<Upstream> {
  const requests: IncomingMessage[] = [];
  const server = createServer((req, res) => {
    requests.push(req);
    if (handler) return handler(req, res);
    const body = JSON.stringify({ role, method: req.method, url: req.url, headers: req.headers });
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json', 'x-role': role });
      res.end(body);
    });
  });
  // On this process's own 127.x.y.z: a test that kills an upstream expects its port to
  // refuse, and on 127.0.0.1 another test process could bind it (seen: a killed
  // endpoint "answered" with another test's upstream).
  const host = uniqueHost();
  await new Promise<void>((r) => server.listen(0, host, r));
  const { port } = server.address() as AddressInfo;
  const up: Upstream = {
    server, host, port, address: `${host}:${port}`, requests,
    close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
  t.teardown(() => up.close());
  return up;
}

/** Starts an in-process sidecar from YAML text (admin on 127.0.0.1:0 unless the YAML says otherwise); `readyTimeoutMs`: the components' default readyTimeout. */
export async function startSidecar(t: ExecutionContext, yaml: string,
  opts: { admin?: boolean; log?: string[]; readyTimeoutMs?: number; allowPush?: PushField[] } = {}): Promise<Sidecar> {
  const text = /^admin:/m.test(yaml) ? yaml : `admin: { address: "127.0.0.1:0" }\n${yaml}`;
  const raw = parseConfigTexts([{ name: 'test.yaml', text }], ROOT);
  const lines: string[] = opts.log ?? [];
  const sc = await Sidecar.start({ raw, admin: opts.admin, log: (l) => lines.push(l), readyTimeoutMs: opts.readyTimeoutMs, allowPush: opts.allowPush });
  t.teardown(() => sc.stop());
  return sc;
}

/** `http://host:port` of a sidecar's listener. */
export function listenerUrl(sc: Sidecar, name: string): string {
  const a = sc.addresses().get(name);
  if (!a) throw new Error(`no listener ${name}`);
  return `http://${a.host}:${a.port}`;
}

/** `http://host:port` of a sidecar's admin API. */
export function adminUrl(sc: Sidecar): string {
  return `http://${sc.adminAddress!.host}:${sc.adminAddress!.port}`;
}

/** PUT /config with a YAML body (the admin address of startSidecar prepended); status and body text. */
export async function putConfig(sc: Sidecar, yaml: string): Promise<{ status: number; body: string }> {
  const res = await undiciRequest(`${adminUrl(sc)}/config`, {
    method: 'PUT', body: `admin: { address: "127.0.0.1:0" }\n${yaml}`, headers: { 'content-type': 'application/yaml' },
  });
  return { status: res.statusCode, body: await res.body.text() };
}

/** One shared keep-alive client for tests (undici, so it does not hide proxy bugs behind retries). */
export const client = new Agent({
  keepAliveTimeout: 10_000,
  connections: 64,
  // Bounded, so a proxy that never answers fails the test instead of hanging it to ava's limit.
  headersTimeout: 20_000,
  bodyTimeout: 20_000,
});

export interface Reply { status: number; headers: Record<string, string | string[] | undefined>; body: string }

/** A request through undici; the body read as text. */
export async function get(url: string, headers: Record<string, string> = {}, init: { method?: string; body?: string } = {}): Promise<Reply> {
  const res = await undiciRequest(url, { dispatcher: client, headers, method: (init.method ?? 'GET') as 'GET', body: init.body });
  const body = await res.body.text();
  return { status: res.statusCode, headers: res.headers, body };
}

/** Writes files into a fresh temp directory; returns their paths. */
export async function tempFiles(files: Record<string, string>): Promise<{ dir: string; paths: Record<string, string> }> {
  const dir = await mkdtemp(join(tmpdir(), 'switchyard-test-'));
  const paths: Record<string, string> = {};
  for (const [name, text] of Object.entries(files)) {
    paths[name] = join(dir, name);
    await writeFile(paths[name]!, text);
  }
  return { dir, paths };
}

/** Resolves when `emitter` emits `event`, or rejects after `ms`. */
export function once<T = unknown>(emitter: NodeJS.EventEmitter, event: string, ms = 10_000): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${event}`)), ms);
    emitter.once(event, (v: T) => { clearTimeout(timer); resolve(v); });
  });
}

/** Polls `cond` every 10 ms until true, or rejects after `ms`. For state that has no event. */
export async function until(cond: () => boolean | Promise<boolean>, ms = 10_000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * `host:port` where nothing listens: a port bound and closed on this process's own
 * 127.x.y.z. On 127.0.0.1 another test process could bind the freed port (seen once:
 * a "dead" WebSocket endpoint answered 404), on our own address nobody does.
 */
export async function deadAddress(): Promise<string> {
  const host = uniqueHost();
  const s = createNetServer();
  await new Promise<void>((r) => s.listen(0, host, r));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return `${host}:${port}`;
}

/** A two-role config: roles a and b, a vset `svc` of both, and one http listener `web` with the given filters YAML. */
export function twoRoleConfig(a: { address: string }, b: { address: string }, filters: string, extra = ''): string {
  return `
roles:
  a:
    meta: { version: "1.0.0", track: stable }
    channels: { http: { endpoints: ["${a.address}"] } }
  b:
    meta: { version: "2.0.0", track: canary }
    channels: { http: { endpoints: ["${b.address}"] } }
vsets:
  svc:
    channels: [http]
    roles: { a: {}, b: {} }
listeners:
  web:
    address: "${uniqueHost()}:0"
    target: svc.http
    filters:
${filters.split('\n').filter((l) => l.trim()).map((l) => '      ' + l).join('\n')}
${extra}`;
}

/**
 * A loopback "blackhole": a socket that listens with a full accept queue and never
 * accepts, so the kernel drops further SYNs and a connect just hangs. Node cannot
 * listen without accepting, so python3 holds it.
 */
export async function blackhole(t: { teardown(fn: () => void): void }): Promise<number> {
  const py = spawn(toolPath('python3'), ['-c', `
import socket, sys, time
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(0)
port = s.getsockname()[1]
fill = []
for _ in range(3):
    c = socket.socket(); c.setblocking(False); c.connect_ex(('127.0.0.1', port)); fill.append(c)
time.sleep(0.2)
print(port, flush=True)
time.sleep(60)
`], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => py.kill());
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: py.stdout! }).once('line', resolve);
    py.once('exit', (code) => reject(new Error(`python3 exited ${code}`)));
    py.once('error', (err) => reject(new Error(`python3 is needed for the loopback blackhole: ${err.message}`)));
    setTimeout(() => reject(new Error('python3 did not start the blackhole within 5 s')), 5000);
  });
  return Number(line);
}

/**
 * Sees when this test process did not run at all (a loaded machine): a timer every 5 ms,
 * and the longest gap between its ticks over a span. Timing tests allow it, since the
 * sidecar under test runs in this process and stalls with it.
 */
export class StallProbe {
  readonly #ticks: number[] = [performance.now()];
  readonly #timer = setInterval(() => this.#ticks.push(performance.now()), 5);

  /** The longest stall (beyond the 5 ms period) that overlaps [from, to] (performance.now() times). */
  stall(from: number, to: number = performance.now()): number {
    const ticks = this.#ticks;
    let worst = Math.max(0, to - ticks.at(-1)! - 5);
    for (let i = 1; i < ticks.length; i++) {
      if (ticks[i]! < from || ticks[i - 1]! > to) continue;
      worst = Math.max(worst, ticks[i]! - ticks[i - 1]! - 5);
    }
    return worst;
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}

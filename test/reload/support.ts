/*
 * What only the reload tests (reload/runtime, under_load, file_watch; admin/server) share: the
 * lifecycle-recording plugin's events, sidecars started from an object, admin calls,
 * and peers whose connections a test controls.
 */
import { createServer as createTcpServer, connect, type Server as TcpServer, type Socket } from 'node:net';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { request as undiciRequest } from 'undici';
import { rawFromObject } from '../../src/config/load.js';
import { Sidecar } from '../../src/sidecar.js';
import { ROOT, client, startUpstream, type ConfigSpec, type Upstream } from '../helpers.js';

/** The lifecycle-recording plugin (component types reload-counter, reload-plain; filter reload-use). */
export const PLUGIN = join(ROOT, 'test/fixtures/reload-lifecycle-plugin.mjs');

export interface LifecycleEvent {
  id: number;
  type: string;
  scope: string | undefined;
  event: 'create' | 'init' | 'ready' | 'applyConfig' | 'close' | 'usedAfterClose';
  at: number;
  metadata?: Record<string, string>;
  inUse?: number;
  hits?: number;
  closeCount?: number;
}

const g = globalThis as unknown as { __reloadLifecycle?: LifecycleEvent[]; __reloadGates?: Record<string, () => void> };

/** Every lifecycle event of the component instances a test created (found through their metadata.scope). */
export function eventsOf(scope: string): LifecycleEvent[] {
  const all = g.__reloadLifecycle ?? [];
  const ids = new Set(all.filter((e) => e.event === 'init' && e.scope === scope).map((e) => e.id));
  return all.filter((e) => ids.has(e.id));
}

/** Events of one kind, for one instance id or for all of the scope. */
export function eventsNamed(scope: string, event: LifecycleEvent['event'], id?: number): LifecycleEvent[] {
  return eventsOf(scope).filter((e) => e.event === event && (id === undefined || e.id === id));
}

/** Opens the readiness gate of a component whose metadata says ready: gate. */
export function openGate(scope: string): boolean {
  const open = g.__reloadGates?.[scope];
  if (!open) return false;
  delete g.__reloadGates![scope];
  open();
  return true;
}

let scopeCounter = 0;
/** A scope name no other test of this process uses. */
export function newScope(prefix = 's'): string {
  return `${prefix}-${process.pid}-${++scopeCounter}`;
}

export interface Started {
  sc: Sidecar;
  log: string[];
}

/**
 * Starts an in-process sidecar from a config object (admin on 127.0.0.1:0 unless
 * the object says otherwise); stopped at the test's end.
 */
export async function startFromObject(t: ExecutionContext, config: ConfigSpec,
  opts: { readyTimeoutMs?: number } = {}): Promise<Started> {
  const value = { admin: { address: '127.0.0.1:0' }, ...config };
  const log: string[] = [];
  const sc = await Sidecar.start({ raw: rawFromObject(value, ROOT), log: (l) => log.push(l), readyTimeoutMs: opts.readyTimeoutMs });
  t.teardown(() => sc.stop());
  return { sc, log };
}

export interface Answer { status: number; json: any; text: string; headers: Record<string, string | string[] | undefined> }

/** One admin API call; the body (object → JSON, string as is) and the answer parsed when JSON. */
export async function admin(sc: Sidecar, method: string, path: string, body?: unknown,
  headers: Record<string, string> = {}): Promise<Answer> {
  const url = `http://${sc.adminAddress!.host}:${sc.adminAddress!.port}${path}`;
  const res = await undiciRequest(url, {
    dispatcher: client,
    method: method as 'GET',
    // The admin API takes only typed bodies: JSON for objects, YAML for text.
    headers: { ...(body === undefined ? {} : { 'content-type': typeof body === 'string' ? 'application/yaml' : 'application/json' }), ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.body.text();
  let json: unknown;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.statusCode, json, text, headers: res.headers };
}

/** A TCP echo server that prefixes every answer with its name: "name:<data>". */
export async function startTcpEcho(t: ExecutionContext, name: string): Promise<{ server: TcpServer; address: string; sockets: Set<Socket> }> {
  const sockets = new Set<Socket>();
  const server = createTcpServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
    s.on('data', (d) => s.write(`${name}:${d.toString()}`));
    s.on('end', () => s.end());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  t.teardown(() => new Promise<void>((r) => { for (const s of sockets) s.destroy(); server.close(() => r()); }));
  return { server, address: `127.0.0.1:${port}`, sockets };
}

/** A client TCP connection that collects what it receives. */
export async function tcpClient(host: string, port: number): Promise<{ socket: Socket; received: () => string; closed: Promise<void>; send(s: string): void }> {
  const socket = connect({ host, port });
  let data = '';
  socket.setEncoding('utf8');
  socket.on('data', (d: string) => { data += d; });
  socket.on('error', () => {});
  const closed = new Promise<void>((r) => socket.once('close', () => r()));
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return { socket, received: () => data, closed, send: (s) => socket.write(s) };
}

/** A manual latch: `wait()` resolves after `open()`. */
export function latch(): { wait: Promise<void>; open(): void } {
  let open!: () => void;
  const wait = new Promise<void>((r) => { open = r; });
  return { wait, open };
}

export interface HttpAnswer { status: number; headers: import('node:http').IncomingHttpHeaders; body: string; reusedSocket: boolean }

/**
 * A request with node:http (so a test controls the connection: a keep-alive Agent
 * with maxSockets 1 pins every request to one connection; `agent: false` opens a
 * fresh one per request).
 */
export function httpGet(url: string, opts: { agent?: import('node:http').Agent | false; headers?: Record<string, string>; timeoutMs?: number } = {}): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { agent: opts.agent, headers: opts.headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body, reusedSocket: req.reusedSocket }));
      res.on('error', reject);
    });
    req.setTimeout(opts.timeoutMs ?? 10_000, () => req.destroy(new Error(`request to ${url} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

/**
 * An upstream whose requests with `x-hold: 1` wait until the test releases them;
 * others answer at once. Answers carry x-role.
 */
export async function heldUpstream(t: ExecutionContext, role: string): Promise<Upstream & { held: (() => void)[]; releaseAll(): void }> {
  const held: (() => void)[] = [];
  const up = await startUpstream(t, role, (req, res) => {
    req.resume();
    const answer = () => {
      if (res.destroyed) return;
      res.writeHead(200, { 'content-type': 'application/json', 'x-role': role });
      res.end(JSON.stringify({ role, url: req.url, headers: req.headers }));
    };
    if (req.headers['x-hold'] === '1') held.push(answer);
    else answer();
  });
  return Object.assign(up, { held, releaseAll: () => { for (const h of held.splice(0)) h(); } });
}

/** Resolves true when a TCP connect to host:port is refused, false when it is accepted. */
export function refused(host: string, port: number): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port });
    const timer = setTimeout(() => { s.destroy(); reject(new Error(`connect to ${host}:${port} hung`)); }, 5_000);
    s.once('connect', () => { clearTimeout(timer); s.destroy(); resolve(false); });
    s.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      // A connect that the kernel queued as the listener closed is reset: refused too.
      if (err.code === 'ECONNREFUSED' || err.code === 'ECONNRESET') resolve(true);
      else reject(err);
    });
  });
}

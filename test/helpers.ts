/*
 * What every test file shares: addresses, upstreams and sidecars, the config builder,
 * requests, temp files, waiting, the metrics reader and the CLI spawner.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { appendFileSync, existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import type { ExecutionContext } from 'ava';
import jsyaml from 'js-yaml';
import { request as undiciRequest, Agent } from 'undici';
import { parseConfigTexts } from '../src/config/load.js';
import { Sidecar } from '../src/sidecar.js';
import { toolPath } from './setup/requirements.js';
import type { PushField } from '../src/reload/push_policy.js';

/** What registers clean-ups: a test's `t`. */
type Teardown = Pick<ExecutionContext, 'teardown'>;

/** The repository root (found from this file, wherever under dist/test it is compiled to). */
export const ROOT = resolve(fileURLToPath(import.meta.url), '../../..');
export const CLI = join(ROOT, 'bin/switchyard.js');

// ---------------------------------------------------------------- addresses

let hostCounter = 0;
/**
 * A 127.x.y.z of this test process's own, so parallel test files never collide
 * (ava runs each file in its own process). Listeners use it with port 0.
 */
export function uniqueHost(): string {
  const n = (process.pid % 50_000) * 64 + (hostCounter++ % 64);
  return `127.${10 + ((n >> 16) & 0x7f)}.${(n >> 8) & 0xff}.${(n & 0xff) || 1}`;
}

/** A port that was free on `host` a moment ago (bound, then closed). */
export async function freePort(host: string): Promise<number> {
  const s = createNetServer();
  await new Promise<void>((r) => s.listen(0, host, r));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/**
 * `host:port` where nothing listens: a port bound and closed on this process's own
 * 127.x.y.z. On 127.0.0.1 another test process could bind the freed port (seen once:
 * a "dead" WebSocket endpoint answered 404), on our own address nobody does.
 */
export async function deadAddress(): Promise<string> {
  const host = uniqueHost();
  return `${host}:${await freePort(host)}`;
}

// ---------------------------------------------------------------- upstreams

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
export async function startUpstream(t: Teardown, role: string,
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

/** A TCP echo upstream on port 0 of this process's own 127.x.y.z; `open()` counts its live connections. */
export async function startEcho(t: Teardown): Promise<{ address: string; open: () => number }> {
  const live = new Set<Socket>();
  const server = createNetServer((s) => {
    live.add(s);
    s.on('close', () => live.delete(s));
    s.on('error', () => {});
    s.pipe(s);
  });
  const host = uniqueHost();
  await new Promise<void>((r) => server.listen(0, host, r));
  t.teardown(() => new Promise<void>((r) => { for (const s of live) s.destroy(); server.close(() => r()); }));
  return { address: `${host}:${(server.address() as AddressInfo).port}`, open: () => live.size };
}

// ---------------------------------------------------------------- the config builder

/** A duration as the config writes it: "300ms", "2s", "1m". */
export type Duration = string;

/** Endpoints: `host:port` strings, or anything with an `address` (an Upstream). */
export type Endpoints = string | { address: string } | readonly (string | { address: string })[];

export interface HealthCheckSpec {
  path?: string;
  interval?: Duration;
  timeout?: Duration;
  healthyThreshold?: number;
  unhealthyThreshold?: number;
}

export interface OutlierSpec {
  consecutiveErrors?: number;
  baseEjectionTime?: Duration;
  maxEjectionTime?: Duration;
  maxEjectedPercent?: number;
}

export interface ChannelSpec {
  endpoints: string[];
  healthCheck?: HealthCheckSpec;
  outlierDetection?: OutlierSpec;
  tls?: { serverName?: string; ca?: string; cert?: string; key?: string };
}

export interface RoleSpec {
  meta?: Record<string, string>;
  channels: Record<string, ChannelSpec>;
}

export interface VsetSpec {
  channels: string[];
  roles: Record<string, { map?: Record<string, string>; meta?: Record<string, string> }>;
}

/** A filter entry: its type and that type's own keys. */
export interface FilterSpec {
  type: string;
  [key: string]: unknown;
}

export interface RetriesSpec {
  attempts?: number;
  on?: (string | number)[];
  perTryTimeout?: Duration;
  budgetPercent?: number;
  minRetryConcurrency?: number;
  maxBodyBytes?: number;
  backoff?: { base?: Duration; max?: Duration };
}

export interface ListenerSpec {
  /** `host:port`; configOf gives a listener without one port 0 on a fresh uniqueHost(). */
  address?: string;
  protocol?: 'http' | 'tcp' | 'udp';
  target: string;
  filters?: FilterSpec[];
  timeouts?: Partial<Record<'connect' | 'upstream' | 'total' | 'headers' | 'request' | 'keepAlive' | 'idle', Duration>>;
  retries?: RetriesSpec;
  maxConnections?: number;
  maxHeaderSize?: number;
  bufferBodyBytes?: number;
  minUploadRate?: { bytesPerSecond?: number; grace?: Duration };
  /** Anything else (a test of an unknown or ill-typed key). */
  [key: string]: unknown;
}

export interface ComponentSpec {
  type: string;
  metadata?: Record<string, string>;
  readyTimeout?: Duration;
  [key: string]: unknown;
}

/** A config as a test writes it (the YAML's shape, typed). */
export interface ConfigSpec {
  version?: number;
  admin?: { address: string; token?: string; [key: string]: unknown };
  drainTimeout?: Duration;
  accessLog?: { path: string; format?: string; [key: string]: unknown };
  plugins?: string[];
  limits?: { maxConnections?: number; [key: string]: unknown };
  roles?: Record<string, RoleSpec>;
  vsets?: Record<string, VsetSpec>;
  components?: Record<string, ComponentSpec>;
  listeners?: Record<string, ListenerSpec>;
  /** Anything else (a test of an unknown or ill-typed key). */
  [key: string]: unknown;
}

/** Roles, maybe a vset, and listeners: a config of its own, or spread into a bigger one. */
export type Fragment = {
  roles: Record<string, RoleSpec>;
  vsets?: Record<string, VsetSpec>;
  listeners: Record<string, ListenerSpec>;
};

function addresses(e: Endpoints): string[] {
  const list = typeof e === 'string' || !Array.isArray(e) ? [e as string | { address: string }] : e;
  return list.map((x) => (typeof x === 'string' ? x : x.address));
}

/**
 * The one config builder: the config as given, with every listener that has no
 * address put on port 0 of a fresh uniqueHost(). Build once and reuse the result
 * where a change must keep a listener's address (or give it one).
 */
export function configOf<T extends ConfigSpec>(spec: T): T {
  if (!spec.listeners) return spec;
  const listeners = Object.fromEntries(Object.entries(spec.listeners)
    .map(([name, l]) => [name, l.address === undefined ? { address: `${uniqueHost()}:0`, ...l } : l]));
  return { ...spec, listeners };
}

/** A config's YAML text (js-yaml), for a config file or a PUT /config body. */
export function yaml(config: ConfigSpec): string {
  return jsyaml.dump(config, { lineWidth: -1, noRefs: true });
}

/** A channel of `endpoints`, with health checking as given. */
export function channel(endpoints: Endpoints, health: Omit<ChannelSpec, 'endpoints'> = {}): ChannelSpec {
  return { endpoints: addresses(endpoints), ...health };
}

/** A role with one channel (`http` unless `channel` says): its endpoints, or a whole channel() spec. */
export function role(endpoints: Endpoints | ChannelSpec, o: { meta?: Record<string, string>; channel?: string } = {}): RoleSpec {
  const ch = typeof endpoints === 'object' && 'endpoints' in endpoints ? endpoints : channel(endpoints);
  return { ...(o.meta ? { meta: o.meta } : {}), channels: { [o.channel ?? 'http']: ch } };
}

/** A `weighted` filter entry. */
export function weighted(weights: Record<string, number>, more: { stickyHeader?: string } = {}): FilterSpec {
  return { type: 'weighted', weights, ...more };
}

/** One role (`r`, its channel `http`) and one listener `web` (port 0 of a fresh uniqueHost() unless `listener` says) that targets role.channel. */
export function oneRole(endpoints: Endpoints | ChannelSpec, listener: Partial<ListenerSpec> = {},
  o: { role?: string; channel?: string; listener?: string } = {}): Fragment {
  const name = o.role ?? 'r';
  const ch = o.channel ?? 'http';
  return {
    roles: { [name]: role(endpoints, { channel: ch }) },
    listeners: { [o.listener ?? 'web']: { ...listener, address: listener.address ?? `${uniqueHost()}:0`, target: listener.target ?? `${name}.${ch}` } },
  };
}

/**
 * `roles`, a vset `svc` of them (or of `inVset`) on one channel (`http` unless `channel`
 * says), and one listener `web` (port 0 of a fresh uniqueHost() unless `listener` says)
 * that targets svc.channel.
 */
export function vsetOf(roles: Record<string, RoleSpec>, listener: Partial<ListenerSpec> = {},
  o: { inVset?: string[]; channel?: string; listener?: string } = {}): Fragment {
  const members = o.inVset ?? Object.keys(roles);
  const ch = o.channel ?? 'http';
  return {
    roles,
    vsets: { svc: { channels: [ch], roles: Object.fromEntries(members.map((r) => [r, {}])) } },
    listeners: { [o.listener ?? 'web']: { ...listener, address: listener.address ?? `${uniqueHost()}:0`, target: listener.target ?? `svc.${ch}` } },
  };
}

/** Roles a (meta version 1.0.0, track stable) and b (2.0.0, canary) in vset `svc`, and listener `web` on svc.http. */
export function twoRoles(a: Endpoints | ChannelSpec, b: Endpoints | ChannelSpec, listener: Partial<ListenerSpec> = {}): Fragment {
  return vsetOf({
    a: role(a, { meta: { version: '1.0.0', track: 'stable' } }),
    b: role(b, { meta: { version: '2.0.0', track: 'canary' } }),
  }, listener);
}

// ---------------------------------------------------------------- sidecars

const TEST_ADMIN = { address: '127.0.0.1:0' };

/**
 * With SWITCHYARD_CONFIG_CORPUS set (a file), every config a test starts or pushes is
 * appended to it, one JSON string a line: the corpus the schema agreement test runs
 * (npm run corpus).
 */
export function recorded(text: string): string {
  const file = process.env.SWITCHYARD_CONFIG_CORPUS;
  if (file) appendFileSync(file, JSON.stringify(text) + '\n');
  return text;
}

/** The config's text, with the test admin address unless it has an admin of its own. */
function withAdmin(config: ConfigSpec | string): string {
  return recorded(adminText(config));
}

function adminText(config: ConfigSpec | string): string {
  if (typeof config === 'string') return /^admin:/m.test(config) ? config : `admin: { address: "127.0.0.1:0" }\n${config}`;
  for (const [name, l] of Object.entries(config.listeners ?? {})) {
    // Without an address a listener takes a fixed port of 127.0.0.x, which parallel tests share.
    if (l.address === undefined) throw new Error(`listener ${name} has no address: build the config with configOf()`);
  }
  return yaml(config.admin ? config : { admin: TEST_ADMIN, ...config });
}

/** Starts an in-process sidecar from a config or its YAML text (admin on 127.0.0.1:0 unless it says otherwise); `readyTimeoutMs`: the components' default readyTimeout. */
export async function startSidecar(t: Teardown, config: ConfigSpec | string,
  opts: { admin?: boolean; log?: string[]; readyTimeoutMs?: number; allowPush?: PushField[] } = {}): Promise<Sidecar> {
  const raw = parseConfigTexts([{ name: 'test.yaml', text: withAdmin(config) }], ROOT);
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

/** PUT /config with a config or its YAML text (with startSidecar's admin address); status and body text. */
export async function putConfig(sc: Sidecar, config: ConfigSpec | string): Promise<{ status: number; body: string }> {
  const text = typeof config === 'string' ? recorded(`admin: { address: "127.0.0.1:0" }\n${config}`) : withAdmin(config);
  const res = await undiciRequest(`${adminUrl(sc)}/config`, {
    method: 'PUT', body: text, headers: { 'content-type': 'application/yaml' },
  });
  return { status: res.statusCode, body: await res.body.text() };
}

// ---------------------------------------------------------------- requests

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

// ---------------------------------------------------------------- files

/** Writes files into a fresh temp directory, removed when the test ends; returns their paths. */
export async function tempFiles(t: Teardown, files: Record<string, string>): Promise<{ dir: string; paths: Record<string, string> }> {
  const dir = await mkdtemp(join(tmpdir(), 'switchyard-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true, maxRetries: 3 }));
  const paths: Record<string, string> = {};
  for (const [name, text] of Object.entries(files)) {
    paths[name] = join(dir, name);
    await writeFile(paths[name]!, text);
  }
  return { dir, paths };
}

/** One line of an access log (JSON). */
export type LogLine = Record<string, unknown>;

/** The lines of an access log file so far ([] before the file exists). */
export async function logLines(file: string): Promise<LogLine[]> {
  if (!existsSync(file)) return [];
  return (await readFile(file, 'utf8')).split('\n').filter(Boolean).map((l) => JSON.parse(l) as LogLine);
}

/** Waits until an access log file holds `count` lines matching `pick` (the sink writes in batches, within 200 ms); returns those. */
export async function untilLogLines(file: string, pick: (l: LogLine) => boolean, count = 1, ms = 5_000): Promise<LogLine[]> {
  let got: LogLine[] = [];
  await until(async () => (got = (await logLines(file)).filter(pick)).length >= count, ms, `${count} access log line(s) in ${file}`);
  return got;
}

// ---------------------------------------------------------------- waiting

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

/** Rejects after `ms` unless `p` settles first. For bounding waits on promises. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------- metrics

/** One sample line of a Prometheus text exposition. */
export interface Sample { name: string; labels: Record<string, string>; value: number }

/** Labels a series must have: each value exactly, or matching a pattern. Labels not named may be anything. */
export type LabelMatch = Record<string, string | RegExp>;

const SAMPLE = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})? (\S+)(?: \d+)?$/;
const LABEL = /([A-Za-z_]\w*)="((?:[^"\\]|\\.)*)"/g;

function show(name: string, labels: LabelMatch): string {
  const l = Object.entries(labels).map(([k, v]) => `${k}=${typeof v === 'string' ? JSON.stringify(v) : v}`).join(',');
  return l ? `${name}{${l}}` : name;
}

/**
 * One scrape of /metrics. Every read names a metric the scrape declares (its `# TYPE`
 * line; prom-client writes one even for a counter with no series yet): a renamed or
 * never-exported metric throws instead of reading as 0.
 */
export class Scrape {
  readonly text: string;
  readonly samples: readonly Sample[];
  readonly #families = new Set<string>();

  constructor(text: string) {
    this.text = text;
    const samples: Sample[] = [];
    for (const line of text.split('\n')) {
      const type = /^# TYPE (\S+) /.exec(line);
      if (type) this.#families.add(type[1]!);
      if (line === '' || line.startsWith('#')) continue;
      const m = SAMPLE.exec(line);
      if (!m) throw new Error(`not a sample line: ${JSON.stringify(line)}`);
      const labels: Record<string, string> = {};
      for (const [, k, v] of (m[2] ?? '').matchAll(LABEL)) labels[k!] = v!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
      samples.push({ name: m[1]!, labels, value: Number(m[3]) });
    }
    this.samples = samples;
  }

  /** The series named `name` (a histogram's `_bucket`, `_sum`, `_count` too) that have `labels`; throws for a metric the scrape does not declare. */
  series(name: string, labels: LabelMatch = {}): Sample[] {
    const family = this.#families.has(name) ? name : name.replace(/_(bucket|sum|count)$/, '');
    if (!this.#families.has(family)) throw new Error(`no metric ${name} in /metrics (renamed, or never registered?)`);
    return this.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, want]) => {
      const got = s.labels[k];
      return got !== undefined && (typeof want === 'string' ? got === want : want.test(got));
    }));
  }

  /** The sum of the matching series, or undefined when there is none (a labelled counter before its first count). */
  find(name: string, labels: LabelMatch = {}): number | undefined {
    const hits = this.series(name, labels);
    return hits.length === 0 ? undefined : hits.reduce((sum, s) => sum + s.value, 0);
  }

  /** The sum of the matching series; throws when none matches, so 0 is only ever a series that says 0. */
  value(name: string, labels: LabelMatch = {}): number {
    const v = this.find(name, labels);
    if (v === undefined) {
      const of = this.samples.filter((s) => s.name === name).map((s) => show(s.name, s.labels));
      throw new Error(`no series ${show(name, labels)} in /metrics; its series: ${of.join(' ') || 'none'}`);
    }
    return v;
  }
}

/** GET /metrics of a sidecar (or of an admin API's `http://host:port`). */
export async function scrape(from: Sidecar | string): Promise<Scrape> {
  const base = typeof from === 'string' ? from : adminUrl(from);
  const res = await undiciRequest(`${base}/metrics`, { headersTimeout: 5_000, bodyTimeout: 5_000 });
  const text = await res.body.text();
  if (res.statusCode !== 200) throw new Error(`GET /metrics: ${res.statusCode} ${text}`);
  return new Scrape(text);
}

/** The sum of the series of `name` with `labels`; throws when there is none. */
export async function metric(from: Sidecar | string, name: string, labels: LabelMatch = {}): Promise<number> {
  return (await scrape(from)).value(name, labels);
}

/** The sum of the series of `name` with `labels`, or undefined when there is none: for absence, and for waiting on a series to appear. */
export async function findMetric(from: Sidecar | string, name: string, labels: LabelMatch = {}): Promise<number | undefined> {
  return (await scrape(from)).find(name, labels);
}

/** Waits until the series of `name` with `labels` sum to `want` (within `ms`); the error says what it last read. */
export async function untilMetric(from: Sidecar | string, name: string, labels: LabelMatch, want: number | ((v: number) => boolean),
  ms = 5_000, what = `${show(name, labels)} to be ${typeof want === 'number' ? want : 'as wanted'}`): Promise<void> {
  let last: number | undefined;
  const ok = typeof want === 'number' ? (v: number) => v === want : want;
  await until(async () => { last = await findMetric(from, name, labels); return last !== undefined && ok(last); }, ms, what)
    .catch((err: Error) => { throw new Error(`${err.message} (last read: ${last ?? 'no series'})`); });
}

// ---------------------------------------------------------------- the CLI

/** `node bin/switchyard.js …` as a child process. */
export interface Cli {
  child: ChildProcess;
  /** Every complete line so far (split at \n only; a line split across chunks is joined first). */
  stdout: string[];
  stderr: string[];
  /** The match of the first line of `stream` (stdout by default) from line `from` on that matches `re`; rejects when the CLI exits first, or after `ms`. */
  line(re: RegExp, o?: { from?: number; ms?: number; stream?: 'stdout' | 'stderr' }): Promise<RegExpMatchArray>;
  /** The exit code (null when a signal ended it); rejects when it has not exited within `ms`. */
  exit(ms?: number): Promise<number | null>;
}

/**
 * Spawns the CLI (through `via`, e.g. prlimit, when given), killed when the test ends
 * however it ends. Output is read by line (a partial line waits for the rest of it),
 * and every wait is bounded.
 */
export function spawnCli(t: Teardown, args: string[], opts: { cwd?: string; via?: string[] } = {}): Cli {
  const argv = [process.execPath, CLI, ...args];
  const [file, ...rest] = opts.via ? [...opts.via, ...argv] : argv;
  const child = spawn(file!, rest, { cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const out = { stdout: [] as string[], stderr: [] as string[] };
  const waiters = new Set<() => void>();
  const wake = (): void => { for (const w of [...waiters]) w(); };
  // Split at \n only (readline would split at a lone \r too, hiding it), carrying a partial line to the next chunk.
  const collect = (stream: NodeJS.ReadableStream, lines: string[]): void => {
    let partial = '';
    stream.setEncoding('utf8');
    stream.on('data', (d: string) => {
      const parts = (partial + d).split('\n');
      partial = parts.pop()!;
      if (parts.length) { lines.push(...parts); wake(); }
    });
    stream.on('end', () => { if (partial) { lines.push(partial); partial = ''; wake(); } });
  };
  collect(child.stdout!, out.stdout);
  collect(child.stderr!, out.stderr);
  let code: number | null | undefined;
  const exited = new Promise<number | null>((r) => child.on('close', (c) => { code = c; wake(); r(c); }));
  const dump = (): string => `\n--- stdout:\n${out.stdout.join('\n')}\n--- stderr:\n${out.stderr.join('\n')}`;
  const line = (re: RegExp, { from = 0, ms = 15_000, stream = 'stdout' as 'stdout' | 'stderr' } = {}): Promise<RegExpMatchArray> =>
    new Promise((resolve, reject) => {
      const lines = out[stream];
      const check = (): void => {
        for (let i = from; i < lines.length; i++) {
          const m = re.exec(lines[i]!);
          if (m) { finish(); resolve(m); return; }
        }
        if (code !== undefined) { finish(); reject(new Error(`the CLI exited (${code}) before printing ${re} on ${stream}${dump()}`)); }
      };
      const timer = setTimeout(() => { finish(); reject(new Error(`timed out after ${ms} ms waiting for ${re} on ${stream}${dump()}`)); }, ms);
      const finish = (): void => { clearTimeout(timer); waiters.delete(check); };
      waiters.add(check);
      check();
    });
  const exit = (ms = 15_000): Promise<number | null> => within(exited, ms, `the CLI to exit${dump()}`);
  return { child, ...out, line, exit };
}

/** Runs a CLI command to its end: exit code and output, its lines joined by \n (killed, and the test failed, after `ms`). */
export async function runCli(t: Teardown, args: string[], opts: { cwd?: string; ms?: number } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = spawnCli(t, args, opts);
  const code = await p.exit(opts.ms ?? 20_000).catch((err: Error) => { p.child.kill('SIGKILL'); throw err; });
  return { code, stdout: p.stdout.join('\n'), stderr: p.stderr.join('\n') };
}

// ---------------------------------------------------------------- odd peers and clocks

/**
 * A loopback "blackhole": a socket that listens with a full accept queue and never
 * accepts, so the kernel drops further SYNs and a connect just hangs. Node cannot
 * listen without accepting, so python3 holds it.
 */
export async function blackhole(t: Teardown): Promise<number> {
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
  t.teardown(() => { py.kill(); });
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

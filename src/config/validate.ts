import { isIP } from 'node:net';
import type { ConfigCode, ConfigIssue } from '../errors.js';
import type { Registry } from '../registry.js';
import type { FilterValidateContext } from '../filters/api.js';
import { formatPath, setOwn, type LocateQuery, type Locator, type Path, type SourceOf } from './load.js';
import { Slicer } from './slicer.js';
import { table, tableCopy, tableOf } from './table.js';
import type {
  AccessLogConfig, AdminConfig, ChannelConfig, ComponentConfig, Config, FilterConfig, HostPort, ListenerConfig,
  HealthCheckConfig, LimitsConfig, ListenerTimeouts, MinUploadRate, OutlierConfig, Protocol, RetryConfig, RetryOn, RoleConfig, VsetConfig,
} from './types.js';

export type ValidateResult = { ok: true; config: Config } | { ok: false; issues: ConfigIssue[] };

export const NAME_RE = /^[A-Za-z0-9_-]+$/;
export const DEFAULT_ADMIN: HostPort = { host: '127.0.0.1', port: 9901 };
export const DEFAULT_DRAIN_MS = 30_000;
/** A new component instance's time for init, inherit and ready together, unless `components.<name>.readyTimeout` says otherwise. */
export const DEFAULT_READY_TIMEOUT_MS = 10_000;
export const DEFAULT_TIMEOUTS: Readonly<ListenerTimeouts> = {
  connectMs: 5_000,
  upstreamMs: 30_000,
  headersMs: 10_000,
  requestMs: 300_000,
  keepAliveMs: 5_000,
  idleMs: 3_600_000,
  totalMs: 0,
};
export const DEFAULT_HEALTH_CHECK = { intervalMs: 5_000, timeoutMs: 1_000, healthyThreshold: 2, unhealthyThreshold: 3 } as const;
export const DEFAULT_OUTLIER: Readonly<OutlierConfig> = { consecutiveErrors: 5, baseEjectionMs: 30_000, maxEjectionMs: 300_000, maxEjectedPercent: 50 };
export const DEFAULT_RETRY_ON: readonly RetryOn[] = ['reset', 'timeout', 'gateway-error'];
const RETRY_ON_WORDS = ['reset', 'timeout', 'gateway-error', '5xx'];
export const DEFAULT_MAX_HEADER_SIZE = 16 * 1024;
/**
 * Kestrel's default MinRequestBodyDataRate (240 bytes/s after a 5 s grace): a body
 * trickled slower than that held a connection to the upstream for up to
 * timeouts.request (5 min), so 200 such clients pinned 200 upstream connections (issue 11, item 5).
 */
export const DEFAULT_MIN_UPLOAD_RATE: Readonly<MinUploadRate> = { bytesPerSecond: 240, graceMs: 5_000 };
/** Bodies up to this are read whole before the upstream request opens (nginx buffers every body by default). */
export const DEFAULT_BUFFER_BODY_BYTES = 16 * 1024;
/** The largest connection limit one may write (far beyond any file-descriptor limit). */
const MAX_CONNECTIONS = 10_000_000;

const TOP_KEYS = ['version', 'admin', 'drainTimeout', 'roles', 'vsets', 'components', 'plugins', 'listeners', 'accessLog', 'limits'];
const TIMEOUT_KEYS: Record<string, keyof ListenerTimeouts> = {
  connect: 'connectMs', upstream: 'upstreamMs', headers: 'headersMs', request: 'requestMs', keepAlive: 'keepAliveMs', idle: 'idleMs', total: 'totalMs',
};

/** The timeouts whose 0s means "no limit" (documented); every other one must be more than 0. */
const ZERO_MEANS_NONE = new Set(['idle', 'total']);

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

export interface ValidateOptions {
  /** Where paths are in the text (asked once, with every issue's path, after validation). */
  locate?: Locator;
  /** How numbers and booleans were written where that differs from how they read. */
  sourceOf?: SourceOf;
  env?: NodeJS.ProcessEnv;
  /** Issues found before (plugins that did not load), listed first and located with the rest. */
  before?: readonly { issue: ConfigIssue; path: Path }[];
  /** Yields to the event loop between slices of the work (default: a new Slicer). */
  slicer?: Slicer;
}

/**
 * Validates a whole config and normalizes it. Every issue is collected (not just the
 * first); any issue rejects the config. Plugins must already be registered in `registry`.
 * The work yields to the event loop every few milliseconds (a config of 40,000 roles
 * takes hundreds), and issues are located in one batch at the end.
 */
export async function validateConfig(value: unknown, registry: Registry, opts: ValidateOptions = {}): Promise<ValidateResult> {
  const slicer = opts.slicer ?? new Slicer();
  const v = new Validator(registry, opts.sourceOf ?? (() => undefined), slicer);
  for (const b of opts.before ?? []) v.found.push({ issue: b.issue, query: { path: b.path } });
  const root = await substituteEnv(value ?? {}, opts.env ?? process.env, v, slicer);
  const config = await v.root(root);
  if (v.found.length === 0) return { ok: true, config };
  const locations = opts.locate ? await opts.locate(v.found.map((f) => f.query)) : [];
  return { ok: false, issues: v.found.map((f, i) => ({ ...f.issue, ...(locations[i] ?? {}) })) };
}

/**
 * Expands `${VAR}` and `${VAR:-default}` in one string (`$${` is a literal `${`);
 * `unset` is called for each variable that is unset and has no default.
 */
export function expandEnv(s: string, env: NodeJS.ProcessEnv, unset: (name: string) => void = () => {}): string {
  if (!s.includes('${')) return s;
  return s.replace(/\$?\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g, (m, name: string, def?: string) => {
    if (m.startsWith('$$')) return m.slice(1);
    const got = env[name];
    if (got !== undefined && got !== '') return got;
    if (def !== undefined) return def;
    unset(name);
    return '';
  });
}

/**
 * The config with `${VAR}` and `${VAR:-default}` expanded in string values; `$${`
 * is a literal `${`. Copy on write: a mapping or list is copied only when a
 * string below it changes, so a big config without variables is walked, not
 * copied (a copy of 40,000 roles was hundreds of thousands of new objects).
 * Iterative and sliced. A value that contains itself (an object handed in by
 * embedding code; YAML's recursive aliases are refused when parsed) is reported
 * instead of walked for ever. The result shares what did not change with `value`:
 * nothing in validation changes the config it reads.
 */
async function substituteEnv(value: unknown, env: NodeJS.ProcessEnv, v: Validator, slicer: Slicer): Promise<unknown> {
  const path: (string | number)[] = [];
  /** The mappings and lists being walked, innermost last; `within` has them. */
  const stack: { src: Obj | unknown[]; keys: string[] | null; i: number; changed: Map<string | number, unknown> | null }[] = [];
  const within = new Set<object>();
  /** A scalar's new value, or `value` itself for a container (which is then walked). */
  const visit = (x: unknown): unknown => {
    if (typeof x === 'string') {
      return x.includes('${') ? expandEnv(x, env, (name) => v.report('SY_ERR_CONFIG_ENV', [...path], `environment variable ${name} is not set`)) : x;
    }
    if (typeof x !== 'object' || x === null) return x;
    if (within.has(x)) {
      v.report('SY_ERR_CONFIG_VALUE', [...path], 'contains itself (a cycle)');
      return undefined;
    }
    within.add(x);
    stack.push({ src: x as Obj | unknown[], keys: Array.isArray(x) ? null : Object.keys(x), i: 0, changed: null });
    return x;
  };
  /** The walked container: itself, or a copy with what changed below it. */
  const finish = (f: (typeof stack)[number]): unknown => {
    if (f.changed === null) return f.src;
    if (f.keys === null) {
      const out = (f.src as unknown[]).slice();
      for (const [i, x] of f.changed) out[i as number] = x;
      return out;
    }
    const out: Obj = {};
    for (const k of f.keys) setOwn(out, k, f.changed.has(k) ? f.changed.get(k) : (f.src as Obj)[k]);
    return out;
  };
  let top = visit(value);
  while (stack.length) {
    if (slicer.due) await slicer.yield();
    const f = stack[stack.length - 1]!;
    const n = f.keys ? f.keys.length : (f.src as unknown[]).length;
    if (f.i >= n) {
      stack.pop();
      within.delete(f.src);
      const out = finish(f);
      const parent = stack[stack.length - 1];
      if (parent) {
        const k = path.pop()!; // the key this one sat under
        if (out !== f.src) (parent.changed ??= new Map()).set(k, out);
      } else top = out;
      continue;
    }
    const k = f.keys ? f.keys[f.i]! : f.i;
    f.i++;
    path.push(k);
    const depth = stack.length;
    const x = (f.src as Record<string | number, unknown>)[k];
    const y = visit(x);
    if (stack.length > depth) continue; // a container: its key stays on the path until it is finished
    if (y !== x) (f.changed ??= new Map()).set(k, y);
    path.pop();
  }
  return top;
}

/** The longest duration a Node timer can wait (about 596 h). */
export const MAX_DURATION_MS = 2 ** 31 - 1;

/** Parses `250ms`, `30s`, `5m`, `1h` (also `1.5s`) into milliseconds; undefined when malformed or over MAX_DURATION_MS. */
export function parseDuration(s: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(s.trim());
  if (!m) return undefined;
  const n = Number(m[1]);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
  const ms = Math.round(n * unit);
  // Node timers take at most 2^31-1 ms; a longer one fires after 1 ms instead.
  return ms <= MAX_DURATION_MS ? ms : undefined;
}

/** Parses `host:port`, `[v6]:port`; `defaultPort` allows a bare host; returns undefined when malformed. */
export function parseHostPort(s: string, defaultPort?: number): { host: string; port: number | undefined } | undefined {
  let host: string;
  let portText: string | undefined;
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(s);
  if (v6) {
    host = v6[1]!;
    portText = v6[2];
  } else {
    const i = s.lastIndexOf(':');
    if (i < 0) host = s;
    else {
      host = s.slice(0, i);
      portText = s.slice(i + 1);
    }
  }
  if (portText !== undefined && !/^\d+$/.test(portText)) return undefined;
  const port = portText === undefined ? defaultPort : Number(portText);
  if (port !== undefined && port > 65535) return undefined;
  if (host !== '' && !isIP(host) && !/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(host)) return undefined;
  return { host, port };
}

function isWildcard(host: string): boolean {
  return host === '0.0.0.0' || host === '::';
}

/** An address taken while validating listeners, and who took it. */
interface Bound { host: string; port: number; owner: string }

/**
 * The addresses taken so far, by port: a clash check is one lookup, not a scan of
 * every listener before it (quadratic in a config of many listeners).
 */
class AddressBook {
  readonly #byPort = new Map<number, Bound[]>();

  constructor(first: Bound) {
    this.add(first);
  }

  add(b: Bound): void {
    const list = this.#byPort.get(b.port);
    if (list) list.push(b);
    else this.#byPort.set(b.port, [b]);
  }

  /** The first taken address this one clashes with: the same host and port, or a wildcard host (0.0.0.0, ::) on either side. */
  clash(host: string, port: number): Bound | undefined {
    return this.#byPort.get(port)?.find((b) => b.host === host || isWildcard(b.host) || isWildcard(host));
  }
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
}

class Validator {
  /** Issues in the order found, each with the path to locate it by (at the end, in one batch). */
  readonly found: { issue: ConfigIssue; query: LocateQuery }[] = [];
  readonly #registry: Registry;
  readonly #sourceOf: SourceOf;
  readonly #slicer: Slicer;

  constructor(registry: Registry, sourceOf: SourceOf, slicer: Slicer) {
    this.#registry = registry;
    this.#sourceOf = sourceOf;
    this.#slicer = slicer;
  }

  report(code: ConfigCode, path: Path, message: string, atKey = false): void {
    this.found.push({ issue: { code, path: formatPath(path), message }, query: { path, atKey } });
  }



  /** Returns the value as an object, reporting unknown keys; undefined (reported) when it is not one. */
  obj(value: unknown, path: Path, allowed: readonly string[] | null): Obj | undefined {
    // Only embedding code can hand in an entry without a value (YAML and JSON cannot).
    if (value === undefined) {
      this.report('SY_ERR_CONFIG_REQUIRED', path, 'is required');
      return undefined;
    }
    if (!isObj(value)) {
      this.report('SY_ERR_CONFIG_TYPE', path, `must be a mapping, got ${describe(value)}`);
      return undefined;
    }
    if (allowed) {
      for (const k of Object.keys(value)) {
        if (!allowed.includes(k)) {
          this.report('SY_ERR_CONFIG_UNKNOWN_KEY', [...path, k], unknownKeyMessage(k, allowed), true);
        }
      }
    }
    return value;
  }

  /** An optional mapping of named entries; names must match NAME_RE. */
  named(value: unknown, path: Path): [string, unknown][] {
    if (value === undefined) return [];
    const o = this.obj(value, path, null);
    if (!o) return [];
    const out: [string, unknown][] = [];
    for (const [k, x] of Object.entries(o)) {
      if (!NAME_RE.test(k)) this.report('SY_ERR_CONFIG_NAME', [...path, k], `name "${k}" must match [A-Za-z0-9_-]+`, true);
      // Matches the pattern, but as a key of the plain objects built from the config it
      // would set their prototype instead of adding an entry.
      else if (k === '__proto__') this.report('SY_ERR_CONFIG_NAME', [...path, k], 'the name "__proto__" is reserved', true);
      else out.push([k, x]);
    }
    return out;
  }

  /** A list whose items `item` checks (undefined: reported, left out); [] when it is not a list. */
  list<T>(value: unknown, path: Path, item: (v: unknown, path: Path) => T | undefined): T[] {
    if (!Array.isArray(value)) {
      this.report('SY_ERR_CONFIG_TYPE', path, `must be a list, got ${describe(value)}`);
      return [];
    }
    const out: T[] = [];
    value.forEach((v, i) => {
      const x = item(v, [...path, i]);
      if (x !== undefined) out.push(x);
    });
    return out;
  }

  str(value: unknown, path: Path): string | undefined {
    if (typeof value === 'string') return value;
    this.report(value === undefined ? 'SY_ERR_CONFIG_REQUIRED' : 'SY_ERR_CONFIG_TYPE', path,
      value === undefined ? 'is required' : `must be a string, got ${describe(value)}`);
    return undefined;
  }

  duration(value: unknown, path: Path, dflt: number): number {
    if (value === undefined) return dflt;
    if (typeof value !== 'string') {
      this.report('SY_ERR_CONFIG_TYPE', path, `must be a duration such as 250ms, 30s or 5m, got ${describe(value)}`);
      return dflt;
    }
    const ms = parseDuration(value);
    if (ms === undefined) {
      this.report('SY_ERR_CONFIG_VALUE', path, `"${value}" is not a duration (use 250ms, 30s, 5m, 1h; at most 596h)`);
      return dflt;
    }
    return ms;
  }

  /**
   * A string → string map. Integers and booleans are taken as their text when that
   * text is what the file says; anything else is refused (1.10 would become "1.1").
   */
  stringMap(value: unknown, path: Path): Record<string, string> {
    const out = table<string>();
    if (value === undefined) return out;
    const o = this.obj(value, path, null);
    if (!o) return out;
    for (const [k, x] of Object.entries(o)) {
      if (typeof x === 'string') {
        out[k] = x;
        continue;
      }
      // Fix: `2.0`, `042`, `0x1F` or `True` were integers/booleans to YAML and silently
      // became "2", "42", "31", "true"; and the hint for 1.10 said `quote it: "1.1"`,
      // the mangled value. Compare with the text as written, and quote that.
      const written = this.#sourceOf([...path, k]);
      const text = (typeof x === 'number' && Number.isSafeInteger(x)) || typeof x === 'boolean' ? String(x) : undefined;
      if (text !== undefined && (written === undefined || written === text)) out[k] = text;
      else {
        const hint = typeof x === 'number' || typeof x === 'boolean'
          ? ` (quote it: "${written ?? String(x)}"; unquoted, YAML reads it as ${typeof x === 'number' ? 'the number' : 'the boolean'} ${String(x)})`
          : '';
        this.report('SY_ERR_CONFIG_TYPE', [...path, k], `must be a string, got ${describe(x)}${hint}`);
      }
    }
    return out;
  }

  async root(value: unknown): Promise<Config> {
    const root = this.obj(value, [], TOP_KEYS) ?? {};
    if (root.version !== undefined && root.version !== 1) {
      this.report('SY_ERR_CONFIG_VALUE', ['version'], `unsupported config version ${JSON.stringify(root.version)}; this switchyard reads version 1`);
    }
    const roles = await this.roles(root.roles);
    const vsets = await this.vsets(root.vsets, roles);
    const components = await this.components(root.components);
    const plugins = this.plugins(root.plugins);
    const admin = this.admin(root.admin);
    const listeners = await this.listeners(root.listeners, vsets, components, admin);
    const drainTimeoutMs = this.duration(root.drainTimeout, ['drainTimeout'], DEFAULT_DRAIN_MS);
    const accessLog = this.accessLog(root.accessLog);
    const limits = this.limits(root.limits);
    return { version: 1, admin, drainTimeoutMs, roles, vsets, components, plugins, listeners, ...(accessLog ? { accessLog } : {}), limits };
  }

  /** `limits: { maxConnections }`; absent keys take their defaults where the runtime knows them (the file-descriptor limit). */
  limits(value: unknown): LimitsConfig {
    const out: LimitsConfig = {};
    if (value === undefined) return out;
    const o = this.obj(value, ['limits'], ['maxConnections']);
    if (!o) return out;
    if (o.maxConnections !== undefined) out.maxConnections = this.int(o.maxConnections, ['limits', 'maxConnections'], 1, 1, MAX_CONNECTIONS);
    return out;
  }

  /** `minUploadRate: { bytesPerSecond, grace }` (http). */
  minUploadRate(value: unknown, path: Path): MinUploadRate {
    const d = DEFAULT_MIN_UPLOAD_RATE;
    const o = this.obj(value, path, ['bytesPerSecond', 'grace']);
    if (!o) return { ...d };
    const rate: MinUploadRate = {
      bytesPerSecond: this.int(o.bytesPerSecond, [...path, 'bytesPerSecond'], d.bytesPerSecond, 0, 1 << 30),
      graceMs: this.duration(o.grace, [...path, 'grace'], d.graceMs),
    };
    // A grace of 0 would judge a body by its first few milliseconds.
    if (rate.graceMs < 1) {
      this.report('SY_ERR_CONFIG_VALUE', [...path, 'grace'], 'must be more than 0');
      rate.graceMs = d.graceMs;
    }
    return rate;
  }

  /** `accessLog: { path: stdout | FILE }`; whether FILE can be opened is found when a build opens it. */
  accessLog(value: unknown): AccessLogConfig | undefined {
    if (value === undefined) return undefined;
    const o = this.obj(value, ['accessLog'], ['path']);
    if (!o) return undefined;
    const path = this.str(o.path, ['accessLog', 'path']);
    if (path === undefined) return undefined;
    if (path.trim() === '') {
      this.report('SY_ERR_CONFIG_VALUE', ['accessLog', 'path'], 'must be "stdout" or a file path');
      return undefined;
    }
    return { path };
  }

  admin(value: unknown): AdminConfig {
    const admin: AdminConfig = { address: DEFAULT_ADMIN, public: [], hosts: [] };
    if (value === undefined) return admin;
    const o = this.obj(value, ['admin'], ['address', 'token', 'public', 'hosts']);
    if (!o) return admin;
    if (o.address !== undefined) {
      const s = this.str(o.address, ['admin', 'address']);
      const hp = s === undefined ? undefined : parseHostPort(s);
      if (s !== undefined && (!hp || hp.port === undefined || !isIP(hp.host))) {
        this.report('SY_ERR_CONFIG_VALUE', ['admin', 'address'], `"${s}" is not an ip:port address`);
      } else if (hp) admin.address = { host: hp.host, port: hp.port! };
    }
    if (o.token !== undefined) {
      const t = this.str(o.token, ['admin', 'token']);
      if (t) admin.token = t;
    }
    if (o.public !== undefined) {
      admin.public = this.list(o.public, ['admin', 'public'], (v, path) => {
        const s = this.str(v, path);
        if (s === undefined) return undefined;
        if (s === 'ready' || s === 'metrics') return s;
        this.report('SY_ERR_CONFIG_VALUE', path, `"${s}" is not a route that may be public; use ready or metrics`);
        return undefined;
      });
    }
    if (o.hosts !== undefined) {
      admin.hosts = this.list(o.hosts, ['admin', 'hosts'], (v, path) => {
        const s = this.str(v, path);
        if (s === undefined) return undefined;
        if (/^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(s)) return s.toLowerCase();
        this.report('SY_ERR_CONFIG_VALUE', path, `${describe(s)} is not a host name`);
        return undefined;
      });
    }
    if (!admin.token && !isLoopback(admin.address.host)) {
      this.report('SY_ERR_ADMIN_TOKEN_REQUIRED', ['admin', 'address'], `a non-loopback admin address (${admin.address.host}) needs admin.token`);
    }
    return admin;
  }

  async roles(value: unknown): Promise<Record<string, RoleConfig>> {
    const roles = table<RoleConfig>();
    for (const [name, raw] of this.named(value, ['roles'])) {
      if (this.#slicer.due) await this.#slicer.yield();
      const path = ['roles', name];
      const o = this.obj(raw, path, ['meta', 'channels']);
      if (!o) continue;
      const meta = this.stringMap(o.meta, [...path, 'meta']);
      const channels = table<ChannelConfig>();
      const chans = this.named(o.channels, [...path, 'channels']);
      if (o.channels === undefined || (isObj(o.channels) && Object.keys(o.channels).length === 0)) {
        this.report('SY_ERR_CONFIG_REQUIRED', [...path, 'channels'], 'a role needs at least one channel');
      }
      for (const [ch, chRaw] of chans) {
        const cp = [...path, 'channels', ch];
        const c = this.obj(chRaw, cp, ['endpoints', 'healthCheck', 'outlierDetection']);
        if (!c) continue;
        const channel: ChannelConfig = { endpoints: this.endpoints(c.endpoints, [...cp, 'endpoints']) };
        if (c.healthCheck !== undefined) channel.healthCheck = this.healthCheck(c.healthCheck, [...cp, 'healthCheck']);
        if (c.outlierDetection !== undefined) channel.outlierDetection = this.outlier(c.outlierDetection, [...cp, 'outlierDetection']);
        channels[ch] = channel;
      }
      roles[name] = { meta, channels };
    }
    return roles;
  }

  /** An integer from `min` to `max`, or `dflt` when absent (reported when wrong). */
  int(value: unknown, path: Path, dflt: number, min: number, max: number): number {
    if (value === undefined) return dflt;
    if (typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max) return value;
    this.report(typeof value === 'number' ? 'SY_ERR_CONFIG_VALUE' : 'SY_ERR_CONFIG_TYPE', path, `must be an integer from ${min} to ${max}, got ${describe(value)}`);
    return dflt;
  }

  healthCheck(value: unknown, path: Path): HealthCheckConfig | undefined {
    const o = this.obj(value, path, ['path', 'interval', 'timeout', 'healthyThreshold', 'unhealthyThreshold']);
    if (!o) return undefined;
    const d = DEFAULT_HEALTH_CHECK;
    const hc: HealthCheckConfig = {
      intervalMs: this.duration(o.interval, [...path, 'interval'], d.intervalMs),
      timeoutMs: this.duration(o.timeout, [...path, 'timeout'], d.timeoutMs),
      healthyThreshold: this.int(o.healthyThreshold, [...path, 'healthyThreshold'], d.healthyThreshold, 1, 100),
      unhealthyThreshold: this.int(o.unhealthyThreshold, [...path, 'unhealthyThreshold'], d.unhealthyThreshold, 1, 100),
    };
    if (o.path !== undefined) {
      const p = this.str(o.path, [...path, 'path']);
      // The request line takes the path as written: no spaces or control characters.
      if (p !== undefined && !/^\/[\x21-\x7e]*$/.test(p)) this.report('SY_ERR_CONFIG_VALUE', [...path, 'path'], `"${p}" is not a request path (it starts with / and has no spaces)`);
      else if (p !== undefined) hc.path = p;
    }
    if (hc.intervalMs < 100) this.report('SY_ERR_CONFIG_VALUE', [...path, 'interval'], 'must be at least 100ms');
    if (hc.timeoutMs < 1 || hc.timeoutMs > hc.intervalMs) this.report('SY_ERR_CONFIG_VALUE', [...path, 'timeout'], 'must be more than 0 and at most the interval');
    return hc;
  }

  outlier(value: unknown, path: Path): OutlierConfig | undefined {
    const o = this.obj(value, path, ['consecutiveErrors', 'baseEjectionTime', 'maxEjectionTime', 'maxEjectedPercent']);
    if (!o) return undefined;
    const d = DEFAULT_OUTLIER;
    const oc: OutlierConfig = {
      consecutiveErrors: this.int(o.consecutiveErrors, [...path, 'consecutiveErrors'], d.consecutiveErrors, 1, 1000),
      baseEjectionMs: this.duration(o.baseEjectionTime, [...path, 'baseEjectionTime'], d.baseEjectionMs),
      maxEjectionMs: this.duration(o.maxEjectionTime, [...path, 'maxEjectionTime'], d.maxEjectionMs),
      maxEjectedPercent: this.int(o.maxEjectedPercent, [...path, 'maxEjectedPercent'], d.maxEjectedPercent, 0, 100),
    };
    if (oc.baseEjectionMs < 1) this.report('SY_ERR_CONFIG_VALUE', [...path, 'baseEjectionTime'], 'must be more than 0');
    if (oc.maxEjectionMs < oc.baseEjectionMs) this.report('SY_ERR_CONFIG_VALUE', [...path, 'maxEjectionTime'], 'must not be shorter than baseEjectionTime');
    return oc;
  }

  retries(value: unknown, path: Path, upstreamMs: number): RetryConfig | undefined {
    const o = this.obj(value, path, ['attempts', 'on', 'perTryTimeout', 'budgetPercent', 'minRetryConcurrency', 'maxBodyBytes', 'backoff']);
    if (!o) return undefined;
    const b = o.backoff === undefined ? {} : this.obj(o.backoff, [...path, 'backoff'], ['base', 'max']) ?? {};
    const rc: RetryConfig = {
      attempts: this.int(o.attempts, [...path, 'attempts'], 1, 0, 10),
      on: [...DEFAULT_RETRY_ON],
      perTryTimeoutMs: this.duration(o.perTryTimeout, [...path, 'perTryTimeout'], upstreamMs),
      budgetPercent: this.int(o.budgetPercent, [...path, 'budgetPercent'], 20, 0, 100),
      minRetryConcurrency: this.int(o.minRetryConcurrency, [...path, 'minRetryConcurrency'], 3, 0, 1_000_000),
      maxBodyBytes: this.int(o.maxBodyBytes, [...path, 'maxBodyBytes'], 64 * 1024, 0, 16 * 1024 * 1024),
      backoffBaseMs: 0,
      backoffMaxMs: 0,
    };
    // Envoy's defaults: 25 ms, and ten times the base for the cap.
    // A max below the default base (no base given) means that max for both.
    const maxMs = b.max === undefined ? undefined : this.duration(b.max, [...path, 'backoff', 'max'], 0);
    rc.backoffBaseMs = this.duration(b.base, [...path, 'backoff', 'base'], Math.min(25, maxMs ?? 25));
    rc.backoffMaxMs = maxMs ?? rc.backoffBaseMs * 10;
    if (rc.backoffMaxMs < rc.backoffBaseMs) this.report('SY_ERR_CONFIG_VALUE', [...path, 'backoff', 'max'], 'must not be shorter than backoff.base');
    if (o.on !== undefined) {
      if (!Array.isArray(o.on) || o.on.length === 0) {
        this.report('SY_ERR_CONFIG_TYPE', [...path, 'on'], `must be a non-empty list of ${RETRY_ON_WORDS.join(', ')} or status codes 500-599`);
      } else {
        rc.on = [];
        o.on.forEach((x: unknown, i: number) => {
          if (typeof x === 'string' && RETRY_ON_WORDS.includes(x)) rc.on.push(x as RetryOn);
          else if (typeof x === 'number' && Number.isInteger(x) && x >= 500 && x <= 599) rc.on.push(x);
          else this.report('SY_ERR_CONFIG_VALUE', [...path, 'on', i], `${describe(x)} is not a retry condition; use ${RETRY_ON_WORDS.join(', ')} or a status code from 500 to 599 (a connect failure always moves to the next endpoint)`);
        });
      }
    }
    if (rc.perTryTimeoutMs < 1) this.report('SY_ERR_CONFIG_VALUE', [...path, 'perTryTimeout'], 'must be more than 0');
    return rc;
  }

  endpoints(value: unknown, path: Path): HostPort[] {
    if (!Array.isArray(value) || value.length === 0) {
      this.report(value === undefined ? 'SY_ERR_CONFIG_REQUIRED' : 'SY_ERR_CONFIG_TYPE', path, 'must be a non-empty list of "host:port"');
      return [];
    }
    const out: HostPort[] = [];
    value.forEach((e, i) => {
      const s = this.str(e, [...path, i]);
      if (s === undefined) return;
      const hp = parseHostPort(s);
      if (!hp || !hp.host || hp.port === undefined || hp.port === 0) {
        this.report('SY_ERR_CONFIG_VALUE', [...path, i], `"${s}" is not a host:port endpoint`);
      } else out.push({ host: hp.host, port: hp.port });
    });
    return out;
  }

  async vsets(value: unknown, roles: Record<string, RoleConfig>): Promise<Record<string, VsetConfig>> {
    const vsets = table<VsetConfig>();
    for (const [name, raw] of this.named(value, ['vsets'])) {
      if (this.#slicer.due) await this.#slicer.yield();
      const path = ['vsets', name];
      if (roles[name]) {
        this.report('SY_ERR_VSET_SHADOWS_ROLE', path, `"${name}" is a role, and every role is already a vset of its own name; give the vset another name`, true);
        continue;
      }
      const o = this.obj(raw, path, ['channels', 'roles']);
      if (!o) continue;
      const channels: string[] = [];
      if (!Array.isArray(o.channels) || o.channels.length === 0) {
        this.report(o.channels === undefined ? 'SY_ERR_CONFIG_REQUIRED' : 'SY_ERR_CONFIG_TYPE', [...path, 'channels'], 'must be a non-empty list of channel names');
      } else {
        o.channels.forEach((c, i) => {
          if (typeof c !== 'string' || !NAME_RE.test(c)) this.report('SY_ERR_CONFIG_NAME', [...path, 'channels', i], `channel name ${JSON.stringify(c)} must match [A-Za-z0-9_-]+`);
          else if (c === '__proto__') this.report('SY_ERR_CONFIG_NAME', [...path, 'channels', i], 'the name "__proto__" is reserved');
          else if (channels.includes(c)) this.report('SY_ERR_CONFIG_VALUE', [...path, 'channels', i], `channel "${c}" is listed twice`);
          else channels.push(c);
        });
      }
      const members = table<VsetConfig['roles'][string]>();
      const entries = this.named(o.roles, [...path, 'roles']);
      if (entries.length === 0 && !(o.roles !== undefined && !isObj(o.roles))) {
        this.report('SY_ERR_CONFIG_REQUIRED', [...path, 'roles'], 'a vset needs at least one role');
      }
      for (const [roleName, entryRaw] of entries) {
        const rp = [...path, 'roles', roleName];
        const role = roles[roleName];
        if (!role) {
          this.report('SY_ERR_UNKNOWN_ROLE', rp, `role "${roleName}" is not declared under roles`, true);
          continue;
        }
        const entry = entryRaw === null || entryRaw === undefined ? {} : this.obj(entryRaw, rp, ['map', 'meta']);
        if (!entry) continue;
        const map = table<string>();
        const given = this.stringMap(entry.map, [...rp, 'map']);
        for (const [vc, rc] of Object.entries(given)) {
          if (!channels.includes(vc)) this.report('SY_ERR_UNKNOWN_CHANNEL', [...rp, 'map', vc], `"${vc}" is not a channel of vset ${name} (${channels.join(', ')})`, true);
        }
        for (const vc of channels) {
          const rc = given[vc] ?? vc;
          if (!role.channels[rc]) {
            this.report('SY_ERR_CHANNEL_UNMAPPED', given[vc] ? [...rp, 'map', vc] : rp,
              `vset channel "${vc}" maps to "${rc}", which is not a channel of role ${roleName} (${Object.keys(role.channels).join(', ')})`);
          }
          map[vc] = rc;
        }
        members[roleName] = { map, meta: tableCopy(role.meta, this.stringMap(entry.meta, [...rp, 'meta'])) };
      }
      vsets[name] = { channels, roles: members, implicit: false };
    }
    // Every role is also a vset of its own name (Kumori's default vset).
    for (const [name, role] of Object.entries(roles)) {
      if (this.#slicer.due) await this.#slicer.yield();
      if (vsets[name]) continue;
      const channels = Object.keys(role.channels);
      vsets[name] = { channels, roles: tableOf([[name, { map: tableOf(channels.map((c) => [c, c])), meta: role.meta }]]), implicit: true };
    }
    return vsets;
  }

  async components(value: unknown): Promise<Record<string, ComponentConfig>> {
    const out = table<ComponentConfig>();
    for (const [name, raw] of this.named(value, ['components'])) {
      if (this.#slicer.due) await this.#slicer.yield();
      const path = ['components', name];
      const o = this.obj(raw, path, ['type', 'metadata', 'readyTimeout']);
      if (!o) continue;
      const type = this.str(o.type, [...path, 'type']);
      const metadata = this.stringMap(o.metadata, [...path, 'metadata']);
      let readyTimeoutMs: number | undefined;
      if (o.readyTimeout !== undefined) {
        readyTimeoutMs = this.duration(o.readyTimeout, [...path, 'readyTimeout'], DEFAULT_READY_TIMEOUT_MS);
        if (readyTimeoutMs === 0) this.report('SY_ERR_CONFIG_VALUE', [...path, 'readyTimeout'], 'must be more than 0');
      }
      if (type === undefined) continue;
      const d = this.#registry.component(type);
      if (!d) {
        const known = this.#registry.componentTypes();
        this.report('SY_ERR_UNKNOWN_COMPONENT_TYPE', [...path, 'type'], `unknown component type "${type}"; registered: ${known.length ? known.join(', ') : 'none'}`);
        continue;
      }
      try {
        d.validate(metadata, {
          report: (code, key, message) => this.report(code, key ? [...path, 'metadata', key] : [...path, 'metadata'], message, !!key),
        });
      } catch (err) {
        this.report('SY_ERR_CONFIG_VALUE', [...path, 'metadata'], `component type ${type} failed to validate its metadata: ${(err as Error)?.message ?? String(err)}`);
        continue;
      }
      out[name] = readyTimeoutMs === undefined ? { type, metadata } : { type, metadata, readyTimeoutMs };
    }
    return out;
  }

  plugins(value: unknown): string[] {
    if (value === undefined) return [];
    if (!Array.isArray(value)) {
      this.report('SY_ERR_CONFIG_TYPE', ['plugins'], 'must be a list of module paths');
      return [];
    }
    return value.flatMap((p, i) => {
      const s = this.str(p, ['plugins', i]);
      return s === undefined ? [] : [s];
    });
  }

  async listeners(value: unknown, vsets: Record<string, VsetConfig>, components: Record<string, ComponentConfig>,
    admin: AdminConfig): Promise<Record<string, ListenerConfig>> {
    const out = table<ListenerConfig>();
    const byAddress = new AddressBook({ ...admin.address, owner: 'the admin API' });
    for (const [name, raw] of this.named(value, ['listeners'])) {
      if (this.#slicer.due) await this.#slicer.yield();
      const path = ['listeners', name];
      const o = this.obj(raw, path, ['address', 'protocol', 'target', 'filters', 'timeouts', 'maxHeaderSize', 'retries', 'maxConnections', 'minUploadRate', 'bufferBodyBytes']);
      if (!o) continue;
      let protocol: Protocol = 'http';
      if (o.protocol !== undefined) {
        if (o.protocol === 'http' || o.protocol === 'tcp') protocol = o.protocol;
        else this.report('SY_ERR_CONFIG_VALUE', [...path, 'protocol'], `must be http or tcp, got ${JSON.stringify(o.protocol)}`);
      }
      const address = this.listenerAddress(o.address, [...path, 'address'], protocol, byAddress, name);
      const target = this.target(o.target, [...path, 'target'], vsets);
      const timeouts = { ...DEFAULT_TIMEOUTS };
      if (o.timeouts !== undefined) {
        const t = this.obj(o.timeouts, [...path, 'timeouts'], Object.keys(TIMEOUT_KEYS));
        for (const [k, field] of Object.entries(TIMEOUT_KEYS)) {
          if (t?.[k] === undefined) continue;
          timeouts[field] = this.duration(t[k], [...path, 'timeouts', k], DEFAULT_TIMEOUTS[field]);
          // Node's server timeouts and undici's take 0 for "no limit": `headers: 0s`
          // turned the slowloris limit off, `connect: 0s` let a blackholed endpoint
          // hold a request for ever. Only idle and total say what 0 means.
          if (timeouts[field] === 0 && !ZERO_MEANS_NONE.has(k)) {
            this.report('SY_ERR_CONFIG_VALUE', [...path, 'timeouts', k], `must be more than 0 (0s would turn the ${k} limit off; only timeouts.idle and timeouts.total take 0s for "none")`);
            timeouts[field] = DEFAULT_TIMEOUTS[field];
          }
        }
        if (timeouts.headersMs > timeouts.requestMs) {
          this.report('SY_ERR_CONFIG_VALUE', [...path, 'timeouts', 'headers'], 'must not be longer than timeouts.request');
        }
      }
      let maxHeaderSize = DEFAULT_MAX_HEADER_SIZE;
      if (o.maxHeaderSize !== undefined) {
        if (typeof o.maxHeaderSize === 'number' && Number.isInteger(o.maxHeaderSize) && o.maxHeaderSize >= 1024 && o.maxHeaderSize <= 1 << 20) {
          maxHeaderSize = o.maxHeaderSize;
        } else this.report('SY_ERR_CONFIG_VALUE', [...path, 'maxHeaderSize'], 'must be an integer number of bytes from 1024 to 1048576');
      }
      let retries: RetryConfig | undefined;
      if (o.retries !== undefined) {
        if (protocol === 'tcp') this.report('SY_ERR_CONFIG_VALUE', [...path, 'retries'], 'a tcp listener cannot retry (a connect failure already moves to the next endpoint)');
        else retries = this.retries(o.retries, [...path, 'retries'], timeouts.upstreamMs);
      }
      const maxConnections = o.maxConnections === undefined ? undefined : this.int(o.maxConnections, [...path, 'maxConnections'], 1, 1, MAX_CONNECTIONS);
      let minUploadRate: MinUploadRate = { ...DEFAULT_MIN_UPLOAD_RATE };
      let bufferBodyBytes = DEFAULT_BUFFER_BODY_BYTES;
      for (const k of ['minUploadRate', 'bufferBodyBytes'] as const) {
        if (o[k] !== undefined && protocol === 'tcp') this.report('SY_ERR_CONFIG_VALUE', [...path, k], `${k} is for http listeners (a tcp listener has timeouts.idle)`);
      }
      if (protocol === 'http') {
        if (o.minUploadRate !== undefined) minUploadRate = this.minUploadRate(o.minUploadRate, [...path, 'minUploadRate']);
        bufferBodyBytes = this.int(o.bufferBodyBytes, [...path, 'bufferBodyBytes'], DEFAULT_BUFFER_BODY_BYTES, 0, 16 * 1024 * 1024);
      }
      const filters = target ? this.filters(o.filters, [...path, 'filters'], name, protocol, vsets[target.vset]!, components) : [];
      if (!target) continue;
      out[name] = {
        ...(address ? { address } : {}), protocol, vset: target.vset, channel: target.channel, filters, timeouts, maxHeaderSize,
        ...(retries ? { retries } : {}), ...(maxConnections !== undefined ? { maxConnections } : {}), minUploadRate, bufferBodyBytes,
      };
    }
    return out;
  }

  listenerAddress(value: unknown, path: Path, protocol: Protocol, byAddress: AddressBook, name: string): HostPort | undefined {
    if (value === undefined) {
      if (protocol === 'tcp') this.report('SY_ERR_CONFIG_REQUIRED', path, 'a tcp listener needs a port: "127.0.0.x:port", or ":port" for the next free 127.0.0.x');
      return undefined;
    }
    const s = this.str(value, path);
    if (s === undefined) return undefined;
    const hp = parseHostPort(s, protocol === 'http' ? 80 : undefined);
    if (!hp || (hp.host !== '' && !isIP(hp.host))) {
      this.report('SY_ERR_CONFIG_VALUE', path, `"${s}" is not an address: use ip:port (e.g. 127.0.0.2:80)${protocol === 'tcp' ? '' : ', or an ip for port 80'}`);
      return undefined;
    }
    if (hp.port === undefined) {
      this.report('SY_ERR_CONFIG_REQUIRED', path, `a tcp listener needs a port ("${s}:PORT")`);
      return undefined;
    }
    const addr = { host: hp.host, port: hp.port };
    if (hp.host !== '' && hp.port !== 0) {
      // Fix: a wildcard host (0.0.0.0, ::) holds its port on every address, so it
      // clashes with any listener (or the admin API) on that port; before, only equal
      // host:port pairs were caught and the overlap failed later, at bind time.
      const other = byAddress.clash(hp.host, hp.port);
      const key = `${hp.host.includes(':') ? `[${hp.host}]` : hp.host}:${hp.port}`;
      if (other) this.report('SY_ERR_ADDRESS_IN_USE', path, `${key} is already used by ${other.owner}${other.host === hp.host ? '' : ` (on ${other.host}:${other.port})`}`);
      else byAddress.add({ host: hp.host, port: hp.port, owner: `listener ${name}` });
    }
    return addr;
  }

  target(value: unknown, path: Path, vsets: Record<string, VsetConfig>): { vset: string; channel: string } | undefined {
    const s = this.str(value, path);
    if (s === undefined) return undefined;
    const m = /^([A-Za-z0-9_-]+)(?:\.([A-Za-z0-9_-]+))?$/.exec(s);
    if (!m) {
      this.report('SY_ERR_CONFIG_VALUE', path, `"${s}" is not <vset>.<channel> or <vset>`);
      return undefined;
    }
    const vs = vsets[m[1]!];
    if (!vs) {
      this.report('SY_ERR_UNKNOWN_VSET', path, `no vset or role named "${m[1]}"`);
      return undefined;
    }
    let channel = m[2];
    if (channel === undefined) {
      if (vs.channels.length !== 1) {
        this.report('SY_ERR_UNKNOWN_CHANNEL', path, `vset ${m[1]} has channels ${vs.channels.join(', ')}: name one (${m[1]}.${vs.channels[0]})`);
        return undefined;
      }
      channel = vs.channels[0]!;
    } else if (!vs.channels.includes(channel)) {
      this.report('SY_ERR_UNKNOWN_CHANNEL', path, `vset ${m[1]} has no channel "${channel}" (it has ${vs.channels.join(', ')})`);
      return undefined;
    }
    if (Object.keys(vs.roles).length === 0) return undefined; // already reported on the vset
    return { vset: m[1]!, channel };
  }

  filters(value: unknown, path: Path, listener: string, protocol: Protocol, vset: VsetConfig,
    components: Record<string, ComponentConfig>): FilterConfig[] {
    if (value === undefined) return [];
    if (!Array.isArray(value)) {
      this.report('SY_ERR_CONFIG_TYPE', path, 'must be a list of filters');
      return [];
    }
    const roles = Object.keys(vset.roles);
    const out: FilterConfig[] = [];
    value.forEach((raw, i) => {
      const fp = [...path, i];
      const o = this.obj(raw, fp, null);
      if (!o) return;
      const type = this.str(o.type, [...fp, 'type']);
      if (type === undefined) return;
      const d = this.#registry.filter(type);
      if (!d) {
        this.report('SY_ERR_UNKNOWN_FILTER', [...fp, 'type'], `unknown filter type "${type}"; registered: ${this.#registry.filterTypes().join(', ')}`);
        return;
      }
      if (d.scope !== 'both' && d.scope !== protocol) {
        this.report('SY_ERR_FILTER_SCOPE', [...fp, 'type'], `filter ${type} works on ${d.scope} listeners only; this listener is ${protocol}`);
        return;
      }
      const ctx: FilterValidateContext = {
        path: fp,
        listener,
        protocol,
        roles,
        roleMeta: (r) => vset.roles[r]?.meta,
        report: (code, sub, message) => this.report(code, [...fp, ...sub], message, code === 'SY_ERR_CONFIG_UNKNOWN_KEY'),
        allowKeys: (r, allowed) => { this.obj(r, fp, ['type', ...allowed]); },
        component: (name, sub, types) => {
          if (typeof name !== 'string') {
            this.report(name === undefined ? 'SY_ERR_CONFIG_REQUIRED' : 'SY_ERR_CONFIG_TYPE', [...fp, ...sub], `must name a component (${types.join(' or ')})`);
            return undefined;
          }
          const c = components[name];
          if (!c) {
            this.report('SY_ERR_UNKNOWN_COMPONENT', [...fp, ...sub], `no component named "${name}" under components`);
            return undefined;
          }
          if (!types.includes(c.type)) {
            this.report('SY_ERR_COMPONENT_TYPE_MISMATCH', [...fp, ...sub], `component ${name} is of type ${c.type}; filter ${type} takes ${types.join(' or ')}`);
            return undefined;
          }
          return name;
        },
      };
      const before = this.found.length;
      let config: unknown;
      try {
        config = d.validate(o, ctx);
      } catch (err) {
        this.report('SY_ERR_CONFIG_VALUE', fp, `filter ${type} failed to validate its config: ${(err as Error).message}`);
        return;
      }
      if (this.found.length === before) out.push({ type, config });
    });
    return out;
  }
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${JSON.stringify(v)}`;
}

/** The message for an unknown key, with a "did you mean" hint; filters and plugins use it too. */
export function unknownKeyMessage(key: string, allowed: readonly string[]): string {
  const hint = closest(key, allowed);
  return `unknown key "${key}"${hint ? ` (did you mean "${hint}"?)` : ''}; allowed: ${allowed.join(', ')}`;
}

/** The allowed key nearest to a typo (edit distance ≤ 2), for the hint. */
function closest(k: string, allowed: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = 3;
  for (const a of allowed) {
    const d = editDistance(k.toLowerCase(), a.toLowerCase());
    if (d < bestD) { bestD = d; best = a; }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length]!;
}

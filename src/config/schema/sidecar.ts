/** The sections about the sidecar itself rather than its traffic: `admin`, `accessLog`, `limits`, `plugins`, `source`. */
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { describe, REQUIRED, type Checker } from '../checker.js';
import { DEFAULT_ADMIN, DEFAULT_ETCD } from '../defaults.js';
import { isLoopback, parseHostPort } from '../parse.js';
import type { Path } from '../load.js';
import type { AccessLogConfig, AdminConfig, AutoRollbackConfig, LimitsConfig, SourceConfig, TracingConfig } from '../types.js';

/** The largest connection limit one may write (far beyond any file-descriptor limit). */
export const MAX_CONNECTIONS = 10_000_000;

/** `admin`: address (default 127.0.0.1:9901), token (required off loopback), public routes, host names, the gRPC Lifecycle API's address. */
export function checkAdmin(c: Checker, value: unknown): AdminConfig {
  const admin: AdminConfig = { address: DEFAULT_ADMIN, public: [], hosts: [] };
  const o = c.obj(value, ['admin'], ['address', 'token', 'public', 'hosts', 'grpcAddress']);
  if (!o) return admin;
  const ipPort = (key: 'address' | 'grpcAddress'): { host: string; port: number } | undefined => {
    const s = c.str(o[key], ['admin', key], REQUIRED);
    const hp = s === undefined ? undefined : parseHostPort(s);
    if (s !== undefined && (!hp || hp.port === undefined || !isIP(hp.host))) {
      c.report('SY_ERR_CONFIG_VALUE', ['admin', key], `"${s}" is not an ip:port address`);
      return undefined;
    }
    return hp ? { host: hp.host, port: hp.port! } : undefined;
  };
  if (o.address !== undefined) admin.address = ipPort('address') ?? admin.address;
  if (o.grpcAddress !== undefined) {
    const g = ipPort('grpcAddress');
    if (g && g.port !== 0 && g.port === admin.address.port && (g.host === admin.address.host || isWildcardHost(g.host) || isWildcardHost(admin.address.host))) {
      c.report('SY_ERR_ADDRESS_IN_USE', ['admin', 'grpcAddress'], `${g.host}:${g.port} is also admin.address`);
    } else if (g) admin.grpcAddress = g;
  }
  if (o.token !== undefined) {
    const t = c.str(o.token, ['admin', 'token'], REQUIRED);
    if (t) admin.token = t;
  }
  if (o.public !== undefined) {
    admin.public = items(c, o.public, ['admin', 'public'], (s, path) => {
      if (s === 'ready' || s === 'metrics') return s;
      c.report('SY_ERR_CONFIG_VALUE', path, `"${s}" is not a route that may be public; use ready or metrics`);
      return undefined;
    });
  }
  if (o.hosts !== undefined) {
    admin.hosts = items(c, o.hosts, ['admin', 'hosts'], (s, path) => {
      if (/^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(s)) return s.toLowerCase();
      c.report('SY_ERR_CONFIG_VALUE', path, `${describe(s)} is not a host name`);
      return undefined;
    });
  }
  if (!admin.token && !isLoopback(admin.address.host)) {
    c.report('SY_ERR_ADMIN_TOKEN_REQUIRED', ['admin', 'address'], `a non-loopback admin address (${admin.address.host}) needs admin.token`);
  }
  if (!admin.token && admin.grpcAddress && !isLoopback(admin.grpcAddress.host)) {
    c.report('SY_ERR_ADMIN_TOKEN_REQUIRED', ['admin', 'grpcAddress'], `a non-loopback gRPC admin address (${admin.grpcAddress.host}) needs admin.token`);
  }
  return admin;
}

function isWildcardHost(host: string): boolean {
  return host === '0.0.0.0' || host === '::';
}

/** A list of strings, each mapped by `item` (undefined: reported by it, left out). */
function items<T>(c: Checker, value: unknown, path: Path, item: (s: string, path: Path) => T | undefined): T[] {
  const out: T[] = [];
  (c.list(value, path) ?? []).forEach((v, i) => {
    const s = c.str(v, [...path, i], REQUIRED);
    const x = s === undefined ? undefined : item(s, [...path, i]);
    if (x !== undefined) out.push(x);
  });
  return out;
}

/** `accessLog: { path: stdout | FILE }`; whether FILE can be opened is found when a build opens it. */
export function checkAccessLog(c: Checker, value: unknown): AccessLogConfig | undefined {
  const o = c.obj(value, ['accessLog'], ['path']);
  if (!o) return undefined;
  const path = c.str(o.path, ['accessLog', 'path'], REQUIRED);
  if (path === undefined) return undefined;
  if (path.trim() === '') {
    c.report('SY_ERR_CONFIG_VALUE', ['accessLog', 'path'], 'must be "stdout" or a file path');
    return undefined;
  }
  return { path };
}

/** `tracing: { otlp: { endpoint, timeout }, sampleRate, serviceName }`: spans exported with OTLP/HTTP. */
export function checkTracing(c: Checker, value: unknown): TracingConfig | undefined {
  const o = c.obj(value, ['tracing'], ['otlp', 'sampleRate', 'serviceName']);
  if (!o) return undefined;
  const otlp = c.obj(o.otlp, ['tracing', 'otlp'], ['endpoint', 'timeout'], REQUIRED);
  const endpoint = otlp ? c.str(otlp.endpoint, ['tracing', 'otlp', 'endpoint'], REQUIRED) : undefined;
  if (endpoint !== undefined && !/^https?:\/\/[^\s/]+(\/\S*)?$/.test(endpoint)) {
    c.report('SY_ERR_CONFIG_VALUE', ['tracing', 'otlp', 'endpoint'], `"${endpoint}" is not an http(s) URL, e.g. http://127.0.0.1:4318/v1/traces`);
  }
  const timeoutMs = otlp ? c.duration(otlp.timeout, ['tracing', 'otlp', 'timeout'], { default: 10_000 }) : 10_000;
  let sampleRate = 1;
  if (o.sampleRate !== undefined) {
    if (typeof o.sampleRate === 'number' && o.sampleRate >= 0 && o.sampleRate <= 1) sampleRate = o.sampleRate;
    else c.report('SY_ERR_CONFIG_VALUE', ['tracing', 'sampleRate'], `must be a number from 0 to 1, got ${describe(o.sampleRate)}`);
  }
  const serviceName = o.serviceName === undefined ? 'switchyard' : c.str(o.serviceName, ['tracing', 'serviceName']) ?? 'switchyard';
  if (endpoint === undefined) return undefined;
  return { otlp: { endpoint, timeoutMs }, sampleRate, serviceName };
}

/** `limits: { maxConnections }`; absent keys take their defaults where the runtime knows them (the file-descriptor limit). */
export function checkLimits(c: Checker, value: unknown): LimitsConfig {
  const out: LimitsConfig = {};
  const o = c.obj(value, ['limits'], ['maxConnections']);
  if (!o) return out;
  if (o.maxConnections !== undefined) out.maxConnections = c.int(o.maxConnections, ['limits', 'maxConnections'], { default: 1, min: 1, max: MAX_CONNECTIONS });
  return out;
}

/** `autoRollback: { window, minRequests, maxErrorRatio }`, all required when the key is there. */
export function checkAutoRollback(c: Checker, value: unknown): AutoRollbackConfig | undefined {
  if (value === undefined) return undefined;
  const o = c.obj(value, ['autoRollback'], ['window', 'minRequests', 'maxErrorRatio']);
  if (!o) return undefined;
  const windowMs = c.duration(o.window, ['autoRollback', 'window'], REQUIRED);
  const minRequests = c.int(o.minRequests, ['autoRollback', 'minRequests'], { ...REQUIRED, min: 1, max: Number.MAX_SAFE_INTEGER });
  const maxErrorRatio = c.number(o.maxErrorRatio, ['autoRollback', 'maxErrorRatio'], { ...REQUIRED, min: 0, max: 1 });
  if (windowMs !== undefined && windowMs <= 0) c.report('SY_ERR_CONFIG_VALUE', ['autoRollback', 'window'], 'must be longer than 0');
  if (windowMs === undefined || windowMs <= 0 || minRequests === undefined || maxErrorRatio === undefined) return undefined;
  return { windowMs, minRequests, maxErrorRatio };
}

/** `plugins`: module paths (loaded before validation, by reload/check.ts). */
export function checkPlugins(c: Checker, value: unknown): string[] {
  const list = c.list(value, ['plugins'], { message: 'must be a list of module paths' }) ?? [];
  return list.flatMap((p, i) => {
    const s = c.str(p, ['plugins', i], REQUIRED);
    return s === undefined ? [] : [s];
  });
}

/** An app or instance name: a path segment of an etcd key (host names have dots). */
const KEY_SEGMENT_RE = /^[A-Za-z0-9_.-]+$/;

/**
 * `source`: where the dynamic config lives. Only a bootstrap (`--config`) file may
 * say (`bootstrap`); anywhere else (a pushed config, an etcd document) it is an
 * error, not a key silently ignored: the source is chosen once, at start.
 */
export function checkSource(c: Checker, value: unknown, bootstrap: boolean, env: NodeJS.ProcessEnv): SourceConfig | undefined {
  if (value === undefined) return undefined;
  if (!bootstrap) {
    c.report('SY_ERR_CONFIG_SOURCE_NOT_BOOTSTRAP', ['source'], 'only the bootstrap file (--config) may name a config source; a pushed config or an etcd document may not', true);
    return undefined;
  }
  const o = c.obj(value, ['source'], ['etcd'], REQUIRED);
  const e = o && c.obj(o.etcd, ['source', 'etcd'], ['endpoints', 'prefix', 'app', 'instance', 'timeout', 'checkInterval', 'leaseTtl'], REQUIRED);
  if (!e) return undefined;
  const at = (k: string): Path => ['source', 'etcd', k];
  const endpoints = items(c, c.list(e.endpoints, at('endpoints'), { ...REQUIRED, nonEmpty: true }) ?? [], at('endpoints'), (s, path) => {
    if (/^https?:\/\/[^/\s]+:\d+\/?$/.test(s)) return s.replace(/\/$/, '');
    c.report('SY_ERR_CONFIG_VALUE', path, `${JSON.stringify(s)} is not an etcd client URL (http://host:port)`);
    return undefined;
  });
  let prefix = c.str(e.prefix, at('prefix'), { default: DEFAULT_ETCD.prefix });
  if (!/^\/[^\s]*$/.test(prefix) || prefix.includes('//')) {
    c.report('SY_ERR_CONFIG_VALUE', at('prefix'), `${JSON.stringify(prefix)} is not a key prefix: it starts with /, without spaces or //`);
  }
  prefix = prefix.replace(/\/+$/, '');
  const segment = (k: 'app' | 'instance', fallback: string | undefined): string => {
    const s = e[k] === undefined ? fallback : c.str(e[k], at(k), REQUIRED);
    if (s === undefined) {
      c.report('SY_ERR_CONFIG_REQUIRED', at(k), 'is required (or set SWITCHYARD_APP)');
      return '';
    }
    if (!KEY_SEGMENT_RE.test(s)) c.report('SY_ERR_CONFIG_VALUE', at(k), `${JSON.stringify(s)} must match [A-Za-z0-9_.-]+ (it is part of an etcd key)`);
    return s;
  };
  const app = segment('app', env.SWITCHYARD_APP || undefined);
  const instance = segment('instance', `${hostname()}-${process.pid}`);
  const timeoutMs = c.duration(e.timeout, at('timeout'), { default: DEFAULT_ETCD.timeoutMs });
  const checkIntervalMs = c.duration(e.checkInterval, at('checkInterval'), { default: DEFAULT_ETCD.checkIntervalMs });
  const leaseTtlMs = c.duration(e.leaseTtl, at('leaseTtl'), { default: DEFAULT_ETCD.leaseTtlMs });
  if (leaseTtlMs < 2_000) c.report('SY_ERR_CONFIG_VALUE', at('leaseTtl'), 'must be at least 2s (etcd leases count in seconds)');
  return { etcd: { endpoints, prefix: prefix || '/', app, instance, timeoutMs, checkIntervalMs, leaseTtlMs } };
}

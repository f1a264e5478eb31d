import { isToken } from '../http/token.js';
import { parseDuration } from '../config/parse.js';

/** What a bucket is keyed by: null, one bucket for everything; the client's address; or a request header's first value. */
export type KeyBy = null | { readonly by: 'client' } | { readonly by: 'header'; readonly name: string };

const BY_CLIENT: KeyBy = Object.freeze({ by: 'client' });

/** Whether two keyings put requests in the same buckets. */
export function sameKey(a: KeyBy, b: KeyBy): boolean {
  return a === null || b === null ? a === b : a.by === b.by && (a.by === 'client' || a.name === (b as { name: string }).name);
}

/** Where the fleet's shared limit lives (`backend: redis`). */
export interface RedisSettings {
  /** `redis://host:port[/db]`. */
  url: string;
  /** Sidecars with the same prefix share the limit; default the component's name. */
  keyPrefix: string;
  /** How long a request waits for Redis before failureMode decides. */
  timeoutMs: number;
  failureMode: 'open' | 'closed';
  /** How much of this sidecar's own demand one lease covers. */
  leaseWindowMs: number;
}

export interface LimitSettings {
  ratePerMs: number;
  burst: number;
  key: KeyBy;
  maxKeys: number;
  /** null: the local backend. */
  redis: RedisSettings | null;
}

/**
 * The decisions of one component, by result (switchyard_ratelimit_decisions_total).
 * Plain counters, read at scrape time; a re-created instance shares its
 * predecessor's, so the series never goes back.
 */
export interface Decisions {
  allowed: number;
  limited: number;
  failedOpen: number;
  failedClosed: number;
}

export const newDecisions = (): Decisions => ({ allowed: 0, limited: 0, failedOpen: 0, failedClosed: 0 });

const DEFAULT_MAX_KEYS = 10_000;
/** The most buckets one component may keep (about 100 MB of them). */
export const MAX_KEYS = 1_000_000;
const DEFAULT_TIMEOUT_MS = 20;
const DEFAULT_LEASE_WINDOW_MS = 50;

const LOCAL_KEYS = ['backend', 'requestsPerSecond', 'burst', 'key', 'maxKeys'];
const REDIS_KEYS = [...LOCAL_KEYS, 'redisUrl', 'keyPrefix', 'timeout', 'failureMode', 'leaseWindow'];

/**
 * Parses and checks a ratelimit component's metadata; `report` gets every problem
 * (key '' for the metadata as a whole). `name` is the component's, the default keyPrefix.
 */
export function parseLimitSettings(m: Readonly<Record<string, string>>, report: (key: string, message: string) => void, name = ''): LimitSettings {
  const backend = m.backend ?? 'local';
  if (backend !== 'local' && backend !== 'redis') report('backend', `must be "local" or "redis", got "${m.backend}"`);
  const allowed = backend === 'redis' ? REDIS_KEYS : LOCAL_KEYS;
  for (const k of Object.keys(m)) {
    if (allowed.includes(k)) continue;
    const more = backend !== 'redis' && REDIS_KEYS.includes(k) ? ' (it needs backend: redis)' : '';
    report(k, `unknown key "${k}"${more}; allowed: ${allowed.join(', ')}`);
  }
  const rps = Number(m.requestsPerSecond);
  if (m.requestsPerSecond === undefined) report('requestsPerSecond', 'is required');
  else if (!(rps > 0) || !Number.isFinite(rps)) report('requestsPerSecond', `must be a positive number, got "${m.requestsPerSecond}"`);
  const burst = m.burst === undefined ? Math.max(1, Math.ceil(rps)) : Number(m.burst);
  if (m.burst !== undefined && !(Number.isInteger(burst) && burst >= 1)) report('burst', `must be a whole number ≥ 1, got "${m.burst}"`);
  let key: KeyBy = null;
  if (m.key !== undefined) {
    if (m.key === 'client') key = BY_CLIENT;
    // header:client is a header named "client", not the client's address.
    else if (m.key.startsWith('header:') && isToken(m.key.slice(7))) key = Object.freeze({ by: 'header', name: m.key.slice(7).toLowerCase() });
    else report('key', `must be "client" or "header:<name>", got "${m.key}"`);
  }
  const maxKeys = m.maxKeys === undefined ? DEFAULT_MAX_KEYS : Number(m.maxKeys);
  // Bounded: the buckets are kept in memory, one per client address or header value
  // (clients choose those), so `1e20` meant no bound at all.
  if (m.maxKeys !== undefined && !(Number.isInteger(maxKeys) && maxKeys >= 1 && maxKeys <= MAX_KEYS)) {
    report('maxKeys', `must be a whole number from 1 to ${MAX_KEYS}, got "${m.maxKeys}"`);
  }
  return { ratePerMs: rps / 1000, burst, key, maxKeys, redis: backend === 'redis' ? parseRedis(m, report, name) : null };
}

function parseRedis(m: Readonly<Record<string, string>>, report: (key: string, message: string) => void, name: string): RedisSettings {
  if (m.redisUrl === undefined) report('redisUrl', 'is required with backend: redis');
  else {
    const problem = redisUrlProblem(m.redisUrl);
    if (problem) report('redisUrl', `${problem}, got "${m.redisUrl}"`);
  }
  const keyPrefix = m.keyPrefix ?? name;
  if (m.keyPrefix !== undefined && (m.keyPrefix === '' || m.keyPrefix.length > 200)) report('keyPrefix', 'must be 1 to 200 characters');
  const timeoutMs = m.timeout === undefined ? DEFAULT_TIMEOUT_MS : parseDuration(m.timeout);
  if (timeoutMs === undefined || timeoutMs < 1 || timeoutMs > 10_000) report('timeout', `must be a duration from 1ms to 10s (e.g. 20ms), got "${m.timeout}"`);
  const failureMode = m.failureMode ?? 'open';
  if (failureMode !== 'open' && failureMode !== 'closed') report('failureMode', `must be "open" or "closed", got "${m.failureMode}"`);
  const leaseWindowMs = m.leaseWindow === undefined ? DEFAULT_LEASE_WINDOW_MS : parseDuration(m.leaseWindow);
  if (leaseWindowMs === undefined || leaseWindowMs < 1 || leaseWindowMs > 1000) report('leaseWindow', `must be a duration from 1ms to 1s, got "${m.leaseWindow}"`);
  return {
    url: m.redisUrl ?? '', keyPrefix, timeoutMs: timeoutMs ?? DEFAULT_TIMEOUT_MS,
    failureMode: failureMode === 'closed' ? 'closed' : 'open', leaseWindowMs: leaseWindowMs ?? DEFAULT_LEASE_WINDOW_MS,
  };
}

/** What is wrong with a `redis://host:port[/db]` URL, or null. */
function redisUrlProblem(s: string): string | null {
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    return 'must be a URL redis://host:port[/db]';
  }
  if (u.protocol !== 'redis:') return 'must start with redis://';
  if (u.hostname === '') return 'must name a host (redis://host:port[/db])';
  if (u.search !== '' || u.hash !== '') return 'takes no query or fragment (redis://host:port[/db])';
  if (u.pathname !== '' && u.pathname !== '/' && !/^\/\d{1,5}$/.test(u.pathname)) return 'may end in /<database number> only';
  return null;
}

/** Parses metadata already validated; throws with every problem when it is not valid. */
export function limitSettingsOrThrow(m: Record<string, string>, name: string): LimitSettings {
  const problems: string[] = [];
  const s = parseLimitSettings(m, (k, msg) => problems.push(`${k}: ${msg}`), name);
  if (problems.length) throw new Error(problems.join('; '));
  return s;
}

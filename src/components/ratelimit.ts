import type { Component, ComponentDescriptor } from './api.js';
import { isToken } from '../http/token.js';

interface Settings {
  ratePerMs: number;
  burst: number;
  key: KeyBy;
  maxKeys: number;
}

/** What a bucket is keyed by: null, one bucket for everything; the client's address; or a request header's first value. */
export type KeyBy = null | { readonly by: 'client' } | { readonly by: 'header'; readonly name: string };

const BY_CLIENT: KeyBy = Object.freeze({ by: 'client' });

function sameKey(a: KeyBy, b: KeyBy): boolean {
  return a === null || b === null ? a === b : a.by === b.by && (a.by === 'client' || a.name === (b as { name: string }).name);
}

interface Bucket { tokens: number; at: number }

const DEFAULT_MAX_KEYS = 10_000;
/** The most buckets one component may keep (about 100 MB of them). */
export const MAX_KEYS = 1_000_000;

/** Parses and checks the metadata; `report` gets every problem. */
function parse(m: Readonly<Record<string, string>>, report: (key: string, message: string) => void): Settings {
  for (const k of Object.keys(m)) {
    if (!['requestsPerSecond', 'burst', 'key', 'maxKeys'].includes(k)) report(k, `unknown key "${k}"; allowed: requestsPerSecond, burst, key, maxKeys`);
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
  return { ratePerMs: rps / 1000, burst, key, maxKeys };
}

/**
 * A token bucket (or one per key: the client address or a header value, at most
 * `maxKeys`, least recently used dropped first). `applyConfig` changes rates in
 * place and keeps the buckets; changing `key` needs a new instance.
 */
export class RateLimiter implements Component {
  #s: Settings = { ratePerMs: 1, burst: 1, key: null, maxKeys: DEFAULT_MAX_KEYS };
  /** Insertion order is recency order: a hit re-inserts the key. */
  readonly #buckets = new Map<string, Bucket>();

  async init(metadata: Record<string, string>): Promise<void> {
    this.#s = parseOrThrow(metadata);
  }

  async applyConfig(metadata: Record<string, string>): Promise<{ needReload: boolean }> {
    const next = parseOrThrow(metadata);
    if (!sameKey(next.key, this.#s.key)) return { needReload: true };
    this.#s = next;
    for (const b of this.#buckets.values()) b.tokens = Math.min(b.tokens, next.burst);
    while (this.#buckets.size > next.maxKeys) this.#buckets.delete(this.#buckets.keys().next().value!);
    return { needReload: false };
  }

  /**
   * Re-created because the key changed: buckets carry over when the old keys still
   * mean the same thing (header → header, e.g. x-user renamed x-user-id); client
   * addresses do not become header values, nor the reverse.
   */
  inherit(predecessor: Component): void {
    if (!(predecessor instanceof RateLimiter)) return;
    const kind = (k: KeyBy) => (k === null ? 'one' : k.by);
    if (kind(predecessor.#s.key) !== kind(this.#s.key)) return;
    for (const [k, b] of predecessor.#buckets) {
      if (this.#buckets.size >= this.#s.maxKeys) break;
      this.#buckets.set(k, { tokens: Math.min(b.tokens, this.#s.burst), at: b.at });
    }
  }

  async close(): Promise<void> {
    this.#buckets.clear();
  }

  /** What a bucket is keyed by (the filter computes the key from the request or connection). */
  get keyBy(): KeyBy {
    return this.#s.key;
  }

  /** The settings now in force (tests, the admin API). */
  get settings(): Readonly<Settings> {
    return this.#s;
  }

  // hot path
  /**
   * Takes a token from the bucket of `key` (the caller computes it by `keyBy`): 0
   * when allowed, else the seconds until one is available.
   */
  take(key: string): number {
    const s = this.#s;
    const now = performance.now();
    let b = this.#buckets.get(key);
    if (b === undefined) {
      if (this.#buckets.size >= s.maxKeys) this.#buckets.delete(this.#buckets.keys().next().value!);
      b = { tokens: s.burst, at: now };
      this.#buckets.set(key, b);
    } else {
      // Re-insert to mark it most recently used; with one bucket there is no order to keep.
      if (s.key !== null) {
        this.#buckets.delete(key);
        this.#buckets.set(key, b);
      }
      b.tokens = Math.min(s.burst, b.tokens + (now - b.at) * s.ratePerMs);
      b.at = now;
    }
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - b.tokens) / s.ratePerMs / 1000));
  }
}

function parseOrThrow(m: Record<string, string>): Settings {
  const problems: string[] = [];
  const s = parse(m, (k, msg) => problems.push(`${k}: ${msg}`));
  if (problems.length) throw new Error(problems.join('; '));
  return s;
}

export const ratelimitComponent: ComponentDescriptor = {
  type: 'ratelimit',
  validate(metadata, ctx) {
    parse(metadata, (key, message) => ctx.report(key === '' ? 'SY_ERR_CONFIG_REQUIRED' : 'SY_ERR_CONFIG_VALUE', key, message));
  },
  create: () => new RateLimiter(),
};

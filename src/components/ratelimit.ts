import type { Component, ComponentDescriptor, ComponentInfo } from './api.js';
import type { ComponentSlot } from './lifecycle.js';
import { LocalBuckets } from './ratelimit_local.js';
import { RedisLeases } from './ratelimit_lease.js';
import { limitSettingsOrThrow, newDecisions, parseLimitSettings, sameKey, type Decisions, type KeyBy, type LimitSettings } from './ratelimit_settings.js';

export { MAX_KEYS, type KeyBy } from './ratelimit_settings.js';

/**
 * The `ratelimit` component: a token bucket per key, kept in memory (`backend:
 * local`, ratelimit_local.ts) or shared by the fleet in Redis and taken in leases
 * (`backend: redis`, ratelimit_lease.ts). `applyConfig` changes rates in place
 * and keeps the state; changing the backend, `key`, `redisUrl` or `keyPrefix`
 * needs a new instance (a re-init: for a new Redis, connected and answering PING
 * before it takes over, the seed's disaster-recovery switch).
 */
export class RateLimiter implements Component {
  readonly #name: string;
  #s: LimitSettings = { ratePerMs: 1, burst: 1, key: null, maxKeys: 1, redis: null };
  #decisions: Decisions = newDecisions();
  #local: LocalBuckets | null = null;
  #redis: RedisLeases | null = null;

  constructor(name = '') {
    this.#name = name;
  }

  async init(metadata: Record<string, string>): Promise<void> {
    this.#s = limitSettingsOrThrow(metadata, this.#name);
    if (this.#s.redis === null) {
      this.#local = new LocalBuckets(this.#s, this.#decisions);
      return;
    }
    this.#redis = new RedisLeases(this.#s, this.#decisions, this.#name);
    await this.#redis.connect();
  }

  async ready(): Promise<boolean> {
    return this.#redis === null ? true : this.#redis.ready();
  }

  async applyConfig(metadata: Record<string, string>): Promise<{ needReload: boolean }> {
    const next = limitSettingsOrThrow(metadata, this.#name);
    if (this.#reloads(next)) return { needReload: true };
    this.#s = next;
    this.#local?.update(next);
    this.#redis?.update(next);
    return { needReload: false };
  }

  /** A new backend, key, Redis or prefix: a new instance (a new Redis is connected and PINGed before it takes over). */
  needsReload(metadata: Record<string, string>): boolean {
    return this.#reloads(parseLimitSettings(metadata, () => {}, this.#name));
  }

  #reloads(next: LimitSettings): boolean {
    const [was, now] = [this.#s.redis, next.redis];
    if (!sameKey(next.key, this.#s.key) || (was === null) !== (now === null)) return true;
    return was !== null && now !== null && (was.url !== now.url || was.keyPrefix !== now.keyPrefix);
  }

  /**
   * Re-created: the decision counts carry over (one series per component name).
   * Local buckets carry over when the old keys still mean the same thing (header →
   * header, e.g. x-user renamed x-user-id); client addresses do not become header
   * values, nor the reverse. A new Redis starts from what that Redis holds.
   */
  inherit(predecessor: Component): void {
    if (!(predecessor instanceof RateLimiter)) return;
    this.#decisions = predecessor.#decisions;
    if (this.#local) this.#local.decisions = this.#decisions;
    if (this.#redis) this.#redis.decisions = this.#decisions;
    const kind = (k: KeyBy) => (k === null ? 'one' : k.by);
    if (this.#local && predecessor.#local && kind(predecessor.#s.key) === kind(this.#s.key)) this.#local.copyFrom(predecessor.#local);
  }

  async close(): Promise<void> {
    this.#local?.clear();
    await this.#redis?.close();
  }

  /** What a bucket is keyed by (the filter computes the key from the request or connection). */
  get keyBy(): KeyBy {
    return this.#s.key;
  }

  /** The settings now in force (tests, the admin API). */
  get settings(): Readonly<LimitSettings> {
    return this.#s;
  }

  /** Decisions so far, by result, and whether Redis is reachable (null: the local backend). */
  stats(): { decisions: Readonly<Decisions>; backendUp: boolean | null } {
    return { decisions: this.#decisions, backendUp: this.#redis === null ? null : this.#redis.up };
  }

  // hot path
  /**
   * Takes a token of `key` (the caller computes it by `keyBy`): 0 when allowed,
   * else the seconds until one is available. A promise only when the redis
   * backend waits for a refill (at most `timeout`).
   */
  take(key: string): number | Promise<number> {
    return this.#redis !== null ? this.#redis.take(key) : this.#local!.take(key);
  }
}

/** One line per ratelimit component of the slots (the first slot of a name wins: pass the current generation's first). */
export function* ratelimitStats(slots: Iterable<ComponentSlot>): Generator<{ component: string; backend: 'local' | 'redis'; decisions: Readonly<Decisions>; backendUp: boolean | null }> {
  const seen = new Set<string>();
  for (const slot of slots) {
    if (seen.has(slot.name) || !(slot.instance instanceof RateLimiter)) continue;
    seen.add(slot.name);
    const { decisions, backendUp } = slot.instance.stats();
    yield { component: slot.name, backend: backendUp === null ? 'local' : 'redis', decisions, backendUp };
  }
}

export const ratelimitComponent: ComponentDescriptor = {
  type: 'ratelimit',
  validate(metadata, ctx) {
    parseLimitSettings(metadata, (key, message) => ctx.report(key === '' ? 'SY_ERR_CONFIG_REQUIRED' : 'SY_ERR_CONFIG_VALUE', key, message));
  },
  create: (info?: ComponentInfo) => new RateLimiter(info?.name),
};

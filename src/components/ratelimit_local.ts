import type { Decisions, LimitSettings } from './ratelimit_settings.js';

interface Bucket { tokens: number; at: number }

/**
 * The local backend: a token bucket in memory (or one per key, at most
 * `maxKeys`, least recently used dropped first). Decides every request at once.
 */
export class LocalBuckets {
  #s: LimitSettings;
  /** Where decisions are counted (a re-created instance shares its predecessor's). */
  decisions: Decisions;
  /** Insertion order is recency order: a hit re-inserts the key. */
  readonly #buckets = new Map<string, Bucket>();

  constructor(settings: LimitSettings, decisions: Decisions) {
    this.#s = settings;
    this.decisions = decisions;
  }

  /** New rates and bound in place; the buckets keep their tokens (capped at the new burst). */
  update(next: LimitSettings): void {
    this.#s = next;
    for (const b of this.#buckets.values()) b.tokens = Math.min(b.tokens, next.burst);
    while (this.#buckets.size > next.maxKeys) this.#buckets.delete(this.#buckets.keys().next().value!);
  }

  /** Copies the buckets of `from` (a predecessor whose keys mean the same thing), up to maxKeys. */
  copyFrom(from: LocalBuckets): void {
    for (const [k, b] of from.#buckets) {
      if (this.#buckets.size >= this.#s.maxKeys) break;
      this.#buckets.set(k, { tokens: Math.min(b.tokens, this.#s.burst), at: b.at });
    }
  }

  clear(): void {
    this.#buckets.clear();
  }

  // hot path
  /** 0 when allowed, else the seconds until a token is available. */
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
      this.decisions.allowed++;
      return 0;
    }
    this.decisions.limited++;
    return Math.max(1, Math.ceil((1 - b.tokens) / s.ratePerMs / 1000));
  }
}

import type { Decisions, LimitSettings, RedisSettings } from './ratelimit_settings.js';
import { RedisStore } from './ratelimit_redis.js';

/** A request that found its lease empty, waiting for the refill in flight until `deadline`. */
interface Waiter {
  resolve: (wait: number) => void;
  deadline: number;
}

/** One key's lease: tokens taken from Redis ahead of this sidecar's demand for them. */
interface Lease {
  readonly redisKey: string;
  tokens: number;
  /** The tokens may be used from this time on (a lease reserved ahead; performance.now() ms). */
  readyAt: number;
  /** Tokens left after this are dropped. */
  expiresAt: number;
  /** The lease after this one, taken ahead while this one is being spent (0 tokens: none). */
  nextTokens: number;
  nextReadyAt: number;
  /** Redis said none are free before this: requests until then are limited here. */
  deniedUntil: number;
  refilling: boolean;
  waiters: Waiter[];
  timer: NodeJS.Timeout | null;
  /** Requests seen since `since`, and the smoothed demand from them (requests per ms). */
  seen: number;
  since: number;
  rate: number;
}

/** How many lease windows a lease's tokens are good for. */
const LEASE_LIFE_WINDOWS = 4;
/** Time constant of the demand estimate (ms). */
const DEMAND_TAU_MS = 250;

/** Seconds for retry-after. */
const seconds = (ms: number): number => Math.max(1, Math.ceil(ms / 1000));

/**
 * The redis backend: the fleet's limit lives in Redis (RedisStore's GCRA), and
 * each sidecar takes tokens from it in leases, so that the hot path is
 * synchronous and most requests cost no round trip.
 *
 * - A lease is sized by this sidecar's own demand for the key: the requests it
 *   expects in `leaseWindow` (50 ms), at least 1, at most `burst`. At 1,000 rps
 *   that is 50 tokens a call. The next lease is taken ahead, once half of this
 *   one is spent, so that under steady demand requests rarely find it empty.
 *   Tokens left 4 lease windows after a lease became usable are dropped (unused
 *   tokens must not pile up into a burst the fleet never agreed to).
 * - When the limit is saturated, Redis reserves a lease up to those 4 windows
 *   ahead (usable from then on: requests until then are limited here, with no
 *   call), or answers "ask again at X" when even that is too far: limited here
 *   until X.
 * - A request that finds the lease empty while a refill is in flight waits for it,
 *   up to `timeout`; then failureMode decides (open: allowed, counted failed-open;
 *   closed: 429, failed-closed).
 * - Redis down (disconnected, or a call older than `timeout`): failureMode
 *   decides at once, no waiting; each key sends one probe at a time, so a Redis
 *   that comes back (the client reconnects with back-off) is used again.
 *
 * Accuracy: leases never let the fleet spend more than Redis grants, and a
 * lease is spent only from the time GCRA lets it conform to at most 4 lease
 * windows later; so in any window of d seconds the fleet admits at most
 * burst + rate × (d + 4 × leaseWindow), 0.2 s at the default. Tokens dropped
 * unused, and leases taken by a call abandoned while Redis hung, make it admit
 * less, never more. (failed-open admissions are outside the limit by design.)
 */
export class RedisLeases {
  #s: LimitSettings;
  #r: RedisSettings;
  decisions: Decisions;
  readonly #store: RedisStore;
  /** Insertion order is recency order (keyed limits), as with the local buckets. */
  readonly #leases = new Map<string, Lease>();
  #closed = false;

  constructor(settings: LimitSettings, decisions: Decisions, name: string) {
    this.#s = settings;
    this.#r = settings.redis!;
    this.decisions = decisions;
    this.#store = new RedisStore(this.#r.url, `switchyard-${name}`, Math.max(1_000, 10 * this.#r.timeoutMs));
  }

  connect(): Promise<void> {
    return this.#store.connect();
  }

  ready(): Promise<boolean> {
    return this.#store.ready();
  }

  /** Rates, burst, timeout, failureMode and leaseWindow change in place (the URL, prefix and key do not: a new instance). */
  update(next: LimitSettings): void {
    this.#s = next;
    this.#r = next.redis!;
    for (const l of this.#leases.values()) l.tokens = Math.min(l.tokens, next.burst);
    while (this.#leases.size > next.maxKeys) this.#leases.delete(this.#leases.keys().next().value!);
  }

  /** For switchyard_ratelimit_backend_up. */
  get up(): boolean {
    return this.#store.up(performance.now(), this.#r.timeoutMs);
  }

  // hot path
  /** 0 when allowed, else the seconds for retry-after; a promise of that only when it waits for a refill. */
  take(key: string): number | Promise<number> {
    const now = performance.now();
    const l = this.#lease(key, now);
    l.seen++;
    if ((l.tokens < 1 || now >= l.expiresAt) && l.nextTokens > 0) this.#promote(l);
    if (l.tokens >= 1 && now < l.expiresAt) {
      if (now < l.readyAt) {
        this.decisions.limited++;
        return seconds(l.readyAt - now);
      }
      l.tokens--;
      this.decisions.allowed++;
      // Ahead of need only when the demand fills a lease of 2 or more: a single
      // token fetched ahead at a low rate would mostly expire unused.
      if (!l.refilling && l.nextTokens === 0 && now >= l.deniedUntil) {
        const size = this.#size(l, 0);
        if (size >= 2 && l.tokens < size / 2) this.#refill(l, now);
      }
      return 0;
    }
    if (now < l.deniedUntil) {
      this.decisions.limited++;
      return seconds(l.deniedUntil - now);
    }
    if (!this.#store.up(now, this.#r.timeoutMs)) {
      if (!l.refilling) this.#refill(l, now);
      return this.#failed();
    }
    if (!l.refilling) this.#refill(l, now, 1);
    return new Promise<number>((resolve) => {
      l.waiters.push({ resolve, deadline: now + this.#r.timeoutMs });
      if (l.timer === null) this.#arm(l, now);
    });
  }

  /** The lease taken ahead becomes the one in use. */
  #promote(l: Lease): void {
    l.tokens = l.nextTokens;
    l.readyAt = l.nextReadyAt;
    l.expiresAt = l.nextReadyAt + this.#lifeMs();
    l.nextTokens = 0;
  }

  #lifeMs(): number {
    return LEASE_LIFE_WINDOWS * this.#r.leaseWindowMs;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const l of this.#leases.values()) this.#failAll(l);
    this.#leases.clear();
    await this.#store.close();
  }

  #lease(key: string, now: number): Lease {
    let l = this.#leases.get(key);
    if (l === undefined) {
      if (this.#leases.size >= this.#s.maxKeys) this.#leases.delete(this.#leases.keys().next().value!);
      const redisKey = this.#s.key === null ? this.#r.keyPrefix : `${this.#r.keyPrefix}:${this.#s.key.by}:${key}`;
      l = { redisKey, tokens: 0, readyAt: 0, expiresAt: 0, nextTokens: 0, nextReadyAt: 0, deniedUntil: 0, refilling: false, waiters: [], timer: null, seen: 0, since: now, rate: 0 };
      this.#leases.set(key, l);
    } else if (this.#s.key !== null) {
      this.#leases.delete(key);
      this.#leases.set(key, l);
    }
    return l;
  }

  /** Tokens to ask for: this sidecar's expected demand over one lease window, and at least what `waiting` requests need; 1 to burst. */
  #size(l: Lease, waiting: number): number {
    const expected = Math.round(l.rate * this.#r.leaseWindowMs);
    return Math.max(1, Math.min(this.#s.burst, Math.max(expected, waiting)));
  }

  /** Updates the demand estimate: an exponentially weighted rate, by time, not by sample. */
  #measure(l: Lease, now: number): void {
    const elapsed = now - l.since;
    if (elapsed <= 0) return;
    const w = 1 - Math.exp(-elapsed / DEMAND_TAU_MS);
    l.rate += w * (l.seen / elapsed - l.rate);
    l.seen = 0;
    l.since = now;
  }

  #refill(l: Lease, now: number, need = 0): void {
    this.#measure(l, now);
    const want = this.#size(l, need + l.waiters.length);
    // At least half a lease a call (fewer calls); at least 1, for a request waiting.
    const min = Math.max(1, Math.ceil(want / 2));
    l.refilling = true;
    this.#store.grant({ key: l.redisKey, want, min, maxWaitMs: this.#lifeMs(), perSecond: this.#s.ratePerMs * 1000, burst: this.#s.burst }).then(
      (g) => this.#answered(l, g.taken, g.waitMs),
      () => {
        l.refilling = false;
        this.#failAll(l);
      },
    );
  }

  /** Redis answered: `taken` tokens usable in `waitMs`, or none and ask again in `waitMs`. */
  #answered(l: Lease, taken: number, waitMs: number): void {
    l.refilling = false;
    if (this.#closed) return;
    const now = performance.now();
    if (taken > 0) {
      l.deniedUntil = 0;
      if (l.tokens >= 1 && now < l.expiresAt) {
        l.nextTokens += taken;
        l.nextReadyAt = now + waitMs;
      } else {
        l.tokens = taken;
        l.readyAt = now + waitMs;
        l.expiresAt = l.readyAt + this.#lifeMs();
      }
    } else {
      l.deniedUntil = now + waitMs;
    }
    while (l.waiters.length > 0 && l.tokens >= 1 && now >= l.readyAt) {
      l.tokens--;
      this.decisions.allowed++;
      l.waiters.shift()!.resolve(0);
    }
    if (l.waiters.length === 0) {
      this.#disarm(l);
      return;
    }
    // Still waiting: the lease is reserved for later, Redis said "not before", or it was too small.
    const until = l.tokens >= 1 ? l.readyAt : l.deniedUntil;
    if (until > now) {
      const wait = seconds(until - now);
      this.decisions.limited += l.waiters.length;
      for (const w of l.waiters.splice(0)) w.resolve(wait);
      this.#disarm(l);
    } else {
      this.#refill(l, now);
    }
  }

  /** A timer for the first waiter's deadline (deadlines are in arrival order). */
  #arm(l: Lease, now: number): void {
    l.timer = setTimeout(() => this.#expire(l), Math.max(0, l.waiters[0]!.deadline - now));
  }

  #disarm(l: Lease): void {
    if (l.timer !== null) clearTimeout(l.timer);
    l.timer = null;
  }

  #expire(l: Lease): void {
    l.timer = null;
    const now = performance.now();
    while (l.waiters.length > 0 && l.waiters[0]!.deadline <= now + 0.5) l.waiters.shift()!.resolve(this.#failed());
    if (l.waiters.length > 0) this.#arm(l, now);
  }

  #failAll(l: Lease): void {
    this.#disarm(l);
    for (const w of l.waiters.splice(0)) w.resolve(this.#failed());
  }

  /** Redis did not answer in time: failureMode decides. */
  #failed(): number {
    if (this.#r.failureMode === 'open') {
      this.decisions.failedOpen++;
      return 0;
    }
    this.decisions.failedClosed++;
    return 1;
  }
}

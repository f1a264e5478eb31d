import { createHash } from 'node:crypto';
import type { createClient } from 'redis';
import { redis } from '../lazy_modules.js';

/**
 * GCRA (the generic cell rate algorithm, as in redis-cell and Stripe's limiter)
 * over one key holding the theoretical arrival time (TAT, µs) of the next token,
 * on Redis's own clock (TIME), so sidecars' clocks do not matter. It takes up to
 * `want` tokens at once (a lease), at least `min`, and may reserve them up to
 * `maxWait` ahead (the lease is usable from then on):
 *
 *   T = 1e6 / requestsPerSecond, tau = burst * T
 *   a lease of n conforms at  TAT + n * T - tau
 *   n = min(want, the most that conform by now + maxWait)
 *   n >= min: TAT += n * T, answer {n, when it conforms (0: now)}
 *   else:     take none, answer {0, when a lease of `min` could be reserved}
 *
 * What it guarantees, fleet-wide, per key: Redis hands out tokens no faster than
 * a token bucket of size `burst` refilled at `requestsPerSecond` (GCRA is exactly
 * that; no window edges to game): in any d seconds, at most burst + rate × d.
 * The script runs atomically, so concurrent sidecars never take the same token.
 * Reserving ahead turns contention into a queue: a sidecar that asks gets its
 * turn instead of a "no, ask again", so a saturated limit costs about one call
 * per lease, not one per contender per lease. The key expires when its TAT has
 * passed (an idle limit costs no memory).
 *
 * KEYS[1] the limit; ARGV: T, tau, want, min, maxWait (µs where a time).
 */
const GCRA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local T = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local min = tonumber(ARGV[4])
local maxWait = tonumber(ARGV[5])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local n = math.min(want, math.floor((now + maxWait + tau - tat) / T))
if n < min then
  return {0, math.ceil(tat + min * T - tau - maxWait - now)}
end
tat = tat + n * T
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
return {n, math.max(0, math.ceil(tat - tau - now))}
`;
const GCRA_SHA = createHash('sha1').update(GCRA).digest('hex');

/** A lease asked of Redis: tokens taken and in how long they may be used; or none, and in how long to ask again. */
export interface Grant {
  taken: number;
  waitMs: number;
}

/** What one grant asks: up to `want` tokens, at least `min`, usable within `maxWaitMs`, of a limit of `perSecond` with `burst`. */
export interface GrantRequest {
  key: string;
  want: number;
  min: number;
  maxWaitMs: number;
  perSecond: number;
  burst: number;
}

/** How long a connection attempt may take (a DR Redis that drops SYNs must fail the change, not hang it). */
const CONNECT_TIMEOUT_MS = 5_000;

/**
 * Reconnect back-off once a connection was up: 50 ms doubling to 2 s, with
 * jitter so that a fleet does not reconnect in step.
 */
function backoff(retries: number): number {
  return Math.min(2_000, 50 * 2 ** Math.min(retries, 6)) + Math.floor(Math.random() * 50);
}

/**
 * One connection to the Redis that holds a shared limit, and the GCRA script on
 * it. Commands are never queued while disconnected (they fail at once: the
 * caller's failureMode decides), and the client reconnects by itself.
 */
export class RedisStore {
  readonly #url: string;
  readonly #client: ReturnType<typeof createClient>;
  #everReady = false;
  #healthy = true;
  /** Calls sent and not answered yet, oldest first (Set order). */
  readonly #pending = new Set<{ at: number }>();
  readonly #hardTimeoutMs: number;
  #probe: NodeJS.Timeout | null = null;
  #closed = false;

  /** `name` is the connection's CLIENT SETNAME; `hardTimeoutMs` is when a call is abandoned. */
  constructor(url: string, name: string, hardTimeoutMs: number) {
    this.#url = url;
    this.#hardTimeoutMs = hardTimeoutMs;
    this.#client = redis().createClient({
      url,
      name,
      disableOfflineQueue: true,
      socket: {
        connectTimeout: CONNECT_TIMEOUT_MS,
        // The first connection must succeed (an unreachable Redis fails init, so a
        // change to it is rejected); after that, reconnect for as long as it takes.
        reconnectStrategy: (retries) => (this.#everReady ? backoff(retries) : false),
      },
    });
    // Errors are the state (up/down), seen by the callers; without a listener they would crash the process.
    this.#client.on('error', () => {});
    this.#client.on('ready', () => {
      this.#everReady = true;
      this.#healthy = true;
    });
  }

  /** Connects once; rejects naming the URL when Redis cannot be reached. */
  async connect(): Promise<void> {
    try {
      await this.#client.connect();
    } catch (err) {
      throw new Error(`redis ${this.#url}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Readiness: PING answers PONG, and the script is loaded (so Lua works there). */
  async ready(): Promise<boolean> {
    const pong = await this.#client.ping();
    await this.#client.sendCommand(['SCRIPT', 'LOAD', GCRA]);
    return pong === 'PONG';
  }

  /** Connected, the last call answered, and none waiting longer than `slowMs`. */
  up(now: number, slowMs: number): boolean {
    if (!this.#client.isReady || !this.#healthy) return false;
    const oldest = this.#pending.values().next().value;
    return oldest === undefined || now - oldest.at <= slowMs;
  }

  /** Asks for a lease; rejects when disconnected, on a Redis error, or after the hard timeout. */
  async grant(r: GrantRequest): Promise<Grant> {
    const interval = 1e6 / r.perSecond;
    const args = [String(interval), String(interval * r.burst), String(r.want), String(r.min), String(Math.round(r.maxWaitMs * 1000))];
    const call = { at: performance.now() };
    this.#pending.add(call);
    try {
      let reply: unknown;
      try {
        reply = await this.#client.sendCommand(['EVALSHA', GCRA_SHA, '1', r.key, ...args], { timeout: this.#hardTimeoutMs });
      } catch (err) {
        // A Redis restarted (or a new one) has no scripts: send it once in full.
        if (!(err as Error)?.message?.startsWith('NOSCRIPT')) throw err;
        reply = await this.#client.sendCommand(['EVAL', GCRA, '1', r.key, ...args], { timeout: this.#hardTimeoutMs });
      }
      const [taken, waitUs] = reply as [number, number];
      this.#healthy = true;
      return { taken: Number(taken), waitMs: Number(waitUs) / 1000 };
    } catch (err) {
      this.#unhealthy();
      throw err;
    } finally {
      this.#pending.delete(call);
    }
  }

  /**
   * A call failed while connected (a hard timeout, a Redis error): down until a
   * PING answers, tried every second, so the state recovers without traffic.
   * Disconnected, the client's own reconnect (the 'ready' event) ends it.
   */
  #unhealthy(): void {
    this.#healthy = false;
    if (this.#probe !== null || this.#closed) return;
    this.#probe = setTimeout(() => {
      this.#probe = null;
      if (this.#closed || this.#healthy || !this.#client.isReady) return;
      this.#client.sendCommand(['PING'], { timeout: this.#hardTimeoutMs }).then(
        () => { this.#healthy = true; },
        () => this.#unhealthy(),
      );
    }, 1_000);
    this.#probe.unref();
  }

  /** Closes the connection (idempotent): lets answers in flight arrive for up to 1 s, then cuts. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#probe !== null) clearTimeout(this.#probe);
    if (!this.#client.isOpen) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.#client.close().catch(() => {}),
      new Promise<void>((resolve) => { timer = setTimeout(resolve, 1_000); }),
    ]);
    clearTimeout(timer);
    if (this.#client.isOpen) this.#client.destroy();
  }
}

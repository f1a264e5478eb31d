import { Pool } from 'undici';
import type { HostPort } from '../config/types.js';

/**
 * One upstream endpoint: its address and the undici Pool of keep-alive
 * connections to it. Endpoints are shared by every generation that names them,
 * so pools (and later health state) survive reloads.
 */
export class Endpoint {
  readonly key: string;
  readonly host: string;
  readonly port: number;
  readonly connectTimeoutMs: number;
  readonly pool: Pool;
  /** Generations holding this endpoint; the pool closes when the last lets go. */
  refs = 0;

  constructor(hp: HostPort, connectTimeoutMs: number, key: string) {
    this.key = key;
    this.host = hp.host;
    this.port = hp.port;
    this.connectTimeoutMs = connectTimeoutMs;
    const host = hp.host.includes(':') ? `[${hp.host}]` : hp.host;
    this.pool = new Pool(`http://${host}:${hp.port}`, {
      pipelining: 1,
      // Shorter than Node's default server keepAliveTimeout (5 s), so we close an
      // idle connection before the upstream does and never write into a dying one.
      keepAliveTimeout: 4_000,
      keepAliveTimeoutThreshold: 1_000,
      connect: { timeout: connectTimeoutMs, noDelay: true },
    });
  }

  get address(): string {
    return `${this.host}:${this.port}`;
  }
}

/**
 * The process-wide table of endpoints, keyed by address and connect timeout.
 * `acquire` and `release` count generations; the Pool closes gracefully (in-flight
 * requests finish) when the count drops to zero.
 */
export class EndpointTable {
  readonly #byKey = new Map<string, Endpoint>();

  acquire(hp: HostPort, connectTimeoutMs: number): Endpoint {
    const key = `${hp.host}:${hp.port}/${connectTimeoutMs}`;
    let e = this.#byKey.get(key);
    if (!e) {
      e = new Endpoint(hp, connectTimeoutMs, key);
      this.#byKey.set(key, e);
    }
    e.refs++;
    return e;
  }

  release(e: Endpoint): void {
    if (--e.refs > 0) return;
    this.#byKey.delete(e.key);
    e.pool.close().catch(() => { /* already destroyed */ });
  }

  get size(): number {
    return this.#byKey.size;
  }

  /** Ends every pool now (shutdown after drain). */
  async destroyAll(): Promise<void> {
    const all = [...this.#byKey.values()];
    this.#byKey.clear();
    await Promise.all(all.map((e) => e.pool.destroy().catch(() => {})));
  }
}

/**
 * The endpoints of one role channel, as one generation routes to them: round robin,
 * starting where the previous request left off.
 */
export class EndpointSet {
  readonly role: string;
  readonly endpoints: readonly Endpoint[];
  #next = 0;

  constructor(role: string, endpoints: readonly Endpoint[]) {
    this.role = role;
    this.endpoints = endpoints;
  }

  // hot path
  /** The index of the endpoint to try first. */
  start(): number {
    const i = this.#next;
    this.#next = i + 1 === this.endpoints.length ? 0 : i + 1;
    return i;
  }
}

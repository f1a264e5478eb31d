import { formatHostPort } from '../config/parse.js';
import type { HostPort, OutlierConfig } from '../config/types.js';
import type { UpstreamTls } from '../net/tls_material.js';
import type { UpstreamProtocol } from '../config/types.js';
import { H1Pool, type UpstreamPool } from './h1_pool.js';
import { H2Pool } from './h2_pool.js';
import { EndpointHealth, type HealthLog } from './health.js';

/**
 * One upstream endpoint: its address and the pool of keep-alive connections to
 * it. Endpoints are shared by every generation that names them, so pools and
 * health state survive reloads.
 */
export class Endpoint {
  readonly key: string;
  readonly host: string;
  readonly port: number;
  readonly connectTimeoutMs: number;
  /** TLS to the endpoint (null: plain TCP). */
  readonly tls: UpstreamTls | null;
  /** HTTP/1.1 or HTTP/2, as the channel says (WebSocket upgrades and tcp listeners connect on their own). */
  readonly pool: UpstreamPool;
  /** Shared with every Endpoint of the same address (they differ in connect timeout only). */
  readonly health: EndpointHealth;
  /** Generations holding this endpoint; the pool closes when the last lets go. */
  refs = 0;

  constructor(hp: HostPort, connectTimeoutMs: number, key: string, health: EndpointHealth, tls: UpstreamTls | null, log: HealthLog,
    protocol: UpstreamProtocol = 'http1') {
    this.key = key;
    this.health = health;
    this.host = hp.host;
    this.port = hp.port;
    this.connectTimeoutMs = connectTimeoutMs;
    this.tls = tls;
    const Pool = protocol === 'http2' ? H2Pool : H1Pool;
    this.pool = new Pool(hp.host, hp.port, formatHostPort(hp), connectTimeoutMs, tls, log);
  }

  get address(): string {
    return this.health.address;
  }
}

/**
 * The process-wide table of endpoints, keyed by address and connect timeout.
 * `acquire` and `release` count generations; the Pool closes gracefully (in-flight
 * requests finish) when the count drops to zero.
 */
export class EndpointTable {
  readonly #byKey = new Map<string, Endpoint>();
  /** Health by address, with the number of Endpoints sharing it. */
  readonly #health = new Map<string, { health: EndpointHealth; refs: number }>();
  readonly #log: HealthLog;

  constructor(log: HealthLog = () => {}) {
    this.#log = log;
  }

  /** The endpoint at `hp` reached with these settings: endpoints differ by connect timeout and TLS material (a rotated certificate is a new one). */
  acquire(hp: HostPort, connectTimeoutMs: number, tls: UpstreamTls | null = null, protocol: UpstreamProtocol = 'http1'): Endpoint {
    const key = `${hp.host}:${hp.port}/${connectTimeoutMs}${tls === null ? '' : `/tls:${tls.digest}`}${protocol === 'http1' ? '' : `/${protocol}`}`;
    let e = this.#byKey.get(key);
    if (!e) {
      const hkey = `${hp.host}:${hp.port}`;
      let h = this.#health.get(hkey);
      if (!h) {
        h = { health: new EndpointHealth(hp.host, hp.port, this.#log), refs: 0 };
        this.#health.set(hkey, h);
      }
      h.refs++;
      e = new Endpoint(hp, connectTimeoutMs, key, h.health, tls, this.#log, protocol);
      this.#byKey.set(key, e);
    }
    e.refs++;
    return e;
  }

  release(e: Endpoint): void {
    if (--e.refs > 0) return;
    this.#byKey.delete(e.key);
    e.pool.close().catch(() => { /* already destroyed */ });
    const hkey = `${e.host}:${e.port}`;
    const h = this.#health.get(hkey);
    if (h && --h.refs === 0) {
      this.#health.delete(hkey);
      h.health.close();
    }
  }

  get size(): number {
    return this.#byKey.size;
  }

  /** Ends every pool now (shutdown after drain). */
  async destroyAll(): Promise<void> {
    const all = [...this.#byKey.values()];
    this.#byKey.clear();
    for (const h of this.#health.values()) h.health.close();
    this.#health.clear();
    await Promise.all(all.map((e) => e.pool.destroy().catch(() => {})));
  }
}

/**
 * The endpoints of one role channel, as one listener of one generation routes to
 * them: round robin over the available ones (healthy and not ejected), starting
 * where the previous request left off; and the passive outlier detection of the
 * channel, fed with the outcome of every try.
 */
export class EndpointSet {
  readonly role: string;
  readonly channel: string;
  readonly endpoints: readonly Endpoint[];
  readonly #outlier: OutlierConfig | null;
  #next = 0;

  constructor(role: string, channel: string, endpoints: readonly Endpoint[], outlier: OutlierConfig | null = null) {
    this.role = role;
    this.channel = channel;
    this.endpoints = endpoints;
    this.#outlier = outlier;
  }

  // hot path
  /** Whether some endpoint can take new work. */
  get available(): boolean {
    const eps = this.endpoints;
    for (let i = 0; i < eps.length; i++) if (eps[i]!.health.available) return true;
    return false;
  }

  get healthyCount(): number {
    let n = 0;
    for (const e of this.endpoints) if (e.health.available) n++;
    return n;
  }

  // hot path
  /** The index of the next available endpoint in round-robin order, or -1 when none is. */
  pick(): number {
    const eps = this.endpoints;
    const n = eps.length;
    for (let k = 0; k < n; k++) {
      const i = this.#next;
      this.#next = i + 1 === n ? 0 : i + 1;
      if (eps[i]!.health.available) return i;
    }
    return -1;
  }

  /** The next index in round-robin order, whatever its health (when none is available). */
  start(): number {
    const i = this.#next;
    this.#next = i + 1 === this.endpoints.length ? 0 : i + 1;
    return i;
  }

  // hot path
  succeeded(e: Endpoint): void {
    if (this.#outlier !== null) e.health.succeeded();
  }

  /** A try on `e` failed (connect failure, reset, timeout or a 5xx answer); true when that ejected it. */
  failed(e: Endpoint): boolean {
    const policy = this.#outlier;
    if (policy === null) return false;
    return e.health.failed(policy, () => {
      const n = this.endpoints.length;
      const cap = policy.maxEjectedPercent === 0 ? 0 : Math.max(1, Math.floor((n * policy.maxEjectedPercent) / 100));
      let ejected = 0;
      for (const x of this.endpoints) if (x.health.ejected) ejected++;
      return ejected < cap;
    });
  }
}

import type { Socket } from 'node:net';
import type { Config, HostPort, ListenerConfig } from '../config/types.js';
import type { RawConfig } from '../config/load.js';
import type { Filter, HeaderEdit, RoleView } from '../filters/api.js';
import type { Counter, Gauge } from 'prom-client';
import type { RoleMetrics, TcpTally } from '../metrics.js';
import type { Endpoint, EndpointSet } from '../upstream/endpoints.js';
import type { ListenSocket } from '../listeners/socket_pool.js';
import type { ComponentSlot } from '../components/lifecycle.js';
import type { RoleRoutes } from '../upstream/picker.js';
import type { RetryBudget } from '../upstream/retry.js';
import type { AccessLogSink } from '../observe/access_log.js';

/** Where a config came from (GET /config, the reload log, the reloads metric). */
export type ConfigSource = 'file' | 'sighup' | 'api' | 'component' | 'rollback';

/** How long a drain that timed out waits for the work it destroyed to let go. */
const DESTROY_GRACE_MS = 1_000;

/** Anything a unit of work can be cut short with when the drain times out. */
interface Destroyable { destroy(): unknown }

/**
 * Everything one listener needs per request, resolved when its generation is
 * built: roles by index, their endpoint sets and metric children, the filter
 * functions. Frozen with its generation.
 */
export class ListenerPlan implements RoleRoutes {
  readonly name: string;
  readonly config: ListenerConfig;
  readonly protocol: 'http' | 'tcp';
  readonly generation: Generation;
  readonly address: HostPort;
  readonly roles: readonly RoleView[];
  /** Per role index: the endpoints of the target channel (through the vset's map). */
  readonly routes: readonly EndpointSet[];
  /** Per role index, plus one at `roles.length` for work no role took (a filter answered). */
  readonly metrics: readonly RoleMetrics[];
  readonly filters: readonly Filter[];
  /** Per role index: its share when work falls back from another role (the listener's split). */
  readonly fallbackWeights: readonly number[];
  /** http with a retry policy: the listener's retry budget. */
  readonly retryBudget: RetryBudget | null;
  /** http: the filters' response edits, for every answer on the listener (null: none). */
  readonly responseHeaderEdits: readonly HeaderEdit[] | null;
  readonly connections: Gauge.Internal<'listener'>;
  /** tcp: bytes client → upstream, and back. */
  readonly bytesIn: Counter.Internal;
  readonly bytesOut: Counter.Internal;
  /** tcp: the open connections whose bytes a scrape adds up (Metrics.openTcp). */
  readonly openTcp: Set<TcpTally>;
  /** Connections refused at a limit: this listener's own (maxConnections), and the global one (limits.maxConnections). */
  readonly refusedListener: Counter.Internal;
  readonly refusedGlobal: Counter.Internal;
  /** http: requests cut because their body came slower than minUploadRate. */
  readonly slowUploads: Counter.Internal;
  socket: ListenSocket | null = null;

  constructor(init: {
    name: string; config: ListenerConfig; generation: Generation; address: HostPort; roles: RoleView[];
    routes: EndpointSet[]; metrics: RoleMetrics[]; filters: Filter[]; fallbackWeights: number[];
    retryBudget: RetryBudget | null; responseHeaderEdits?: readonly HeaderEdit[] | null; connections: Gauge.Internal<'listener'>;
    bytesIn: Counter.Internal; bytesOut: Counter.Internal; openTcp: Set<TcpTally>;
    refusedListener: Counter.Internal; refusedGlobal: Counter.Internal; slowUploads: Counter.Internal;
  }) {
    this.name = init.name;
    this.config = init.config;
    this.protocol = init.config.protocol;
    this.generation = init.generation;
    this.address = init.address;
    this.roles = init.roles;
    this.routes = init.routes;
    this.metrics = init.metrics;
    this.filters = init.filters;
    this.fallbackWeights = init.fallbackWeights;
    this.retryBudget = init.retryBudget;
    this.responseHeaderEdits = init.responseHeaderEdits ?? null;
    this.connections = init.connections;
    this.bytesIn = init.bytesIn;
    this.bytesOut = init.bytesOut;
    this.openTcp = init.openTcp;
    this.refusedListener = init.refusedListener;
    this.refusedGlobal = init.refusedGlobal;
    this.slowUploads = init.slowUploads;
  }

  /** Counts an accepted client connection until it closes. */
  connectionOpened(socket: Socket): void {
    const g = this.connections;
    g.inc();
    socket.once('close', () => g.dec());
  }
}

/**
 * One immutable build of the whole config: listener plans, the components they
 * use, the endpoints they route to. Units of work (an HTTP request, a TCP
 * connection) hold the generation they started on until they end; once replaced,
 * the generation drains: when the last holder lets go, or at drainTimeout, it is
 * closed and releases what only it used.
 */
export class Generation {
  readonly number: number;
  readonly source: ConfigSource;
  /** When it was swapped in (set by the runtime at the swap). */
  appliedAt: Date;
  readonly config: Config;
  /** The config as its source gave it (merged, before normalization): GET /config, POST /components. */
  raw: RawConfig | null = null;
  /** What the generation before this one ran: POST /rollback goes back to it. */
  previous: RawConfig | null = null;
  readonly plans = new Map<string, ListenerPlan>();
  readonly components = new Map<string, ComponentSlot>();
  readonly endpoints: Endpoint[] = [];
  /** Ends this generation's active health checks (called when it closes). */
  readonly healthChecks: (() => void)[] = [];
  readonly leases: ListenSocket[] = [];
  /** Where this generation's requests and connections are logged; null when `accessLog` is off. */
  accessLog: AccessLogSink | null = null;
  readonly #work = new Set<Destroyable>();
  #draining: (() => void) | null = null;
  #drain: Promise<'drained' | 'timeout'> | null = null;
  closed = false;

  constructor(number: number, source: ConfigSource, config: Config) {
    this.number = number;
    this.source = source;
    this.config = config;
    this.appliedAt = new Date();
  }

  // hot path
  hold(work: Destroyable): void {
    this.#work.add(work);
  }

  // hot path
  release(work: Destroyable): void {
    if (this.#work.delete(work) && this.#work.size === 0 && this.#draining !== null) this.#draining();
  }

  get inFlight(): number {
    return this.#work.size;
  }

  /**
   * Waits until no unit of work holds this generation, or `timeoutMs` passes; then
   * ends whatever still runs. Resolves with how it ended.
   *
   * One drain per generation: a second caller (shutdown while a reload's drain
   * runs) gets the same promise; before, it replaced the first caller's wake-up,
   * and the first caller then waited for its full timeout.
   * At the timeout, the work still running is destroyed and the drain resolves
   * once each unit has let go (its close handler ran), bounded by
   * DESTROY_GRACE_MS: before, it resolved at once, so the generation's components
   * were closed while the filters' per-connection bookkeeping still ran.
   */
  drain(timeoutMs: number): Promise<'drained' | 'timeout'> {
    this.#drain ??= this.#startDrain(timeoutMs);
    return this.#drain;
  }

  #startDrain(timeoutMs: number): Promise<'drained' | 'timeout'> {
    if (this.#work.size === 0) return Promise.resolve('drained');
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        const grace = setTimeout(() => {
          this.#draining = null;
          this.#work.clear();
          resolve('timeout');
        }, DESTROY_GRACE_MS);
        grace.unref();
        this.#draining = () => {
          clearTimeout(grace);
          this.#draining = null;
          resolve('timeout');
        };
        for (const w of [...this.#work]) w.destroy();
      }, timeoutMs);
      timer.unref();
      this.#draining = () => {
        clearTimeout(timer);
        this.#draining = null;
        resolve('drained');
      };
    });
  }
}

import type { Config } from '../config/types.js';
import type { RawConfig } from '../config/load.js';
import type { Endpoint } from '../upstream/endpoints.js';
import type { ListenSocket } from '../listeners/socket_pool.js';
import type { Destroyable, GenerationPin, ListenerPlan } from '../listeners/plan.js';
import type { ComponentSlot } from '../components/lifecycle.js';
import type { AccessLogSink } from '../observe/access_log.js';

/** Where a config came from (GET /config, the reload log, the reloads metric). */
export type ConfigSource = 'file' | 'sighup' | 'api' | 'component' | 'rollback';

/** How long a drain that timed out waits for the work it destroyed to let go. */
const DESTROY_GRACE_MS = 1_000;

/**
 * One immutable build of the whole config: listener plans, the components they
 * use, the endpoints they route to. Units of work (an HTTP request, a TCP
 * connection) hold the generation they started on until they end; once replaced,
 * the generation drains: when the last holder lets go, or at drainTimeout, it is
 * closed and releases what only it used.
 */
export class Generation implements GenerationPin {
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
  /** The listening socket of each listener, by name. */
  readonly sockets = new Map<string, ListenSocket>();
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

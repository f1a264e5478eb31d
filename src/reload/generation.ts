import type { Tracing } from '../observe/tracing.js';
import type { Config } from '../config/types.js';
import type { RawConfig } from '../config/load.js';
import { ListenSocket, type PooledSocket } from '../listeners/socket_pool.js';
import type { Destroyable, GenerationPin, ListenerPlan } from '../listeners/plan.js';
import { LinkedSet } from '../linked_set.js';
import type { ComponentSlot } from '../components/lifecycle.js';
import type { AccessLogSink } from '../observe/access_log.js';
import type { Registry } from '../registry.js';
import type { Disposer } from './disposer.js';

/** Where a config came from (GET /config, the reload log, the reloads metric). */
export type ConfigSource = 'file' | 'sighup' | 'api' | 'component' | 'rollback' | 'etcd' | 'auto-rollback' | 'rollout';

/** How long a drain that timed out waits for the work it destroyed to let go. */
const DESTROY_GRACE_MS = 1_000;

/** How a generation's work ended: all of it on its own, cut at drainTimeout, or cut by destroy(). */
export type DrainOutcome = 'drained' | 'timeout' | 'destroyed';

/** What a build hands the generation it makes; the fields of Generation say what each is. */
export interface GenerationInit {
  number: number;
  source: ConfigSource;
  config: Config;
  raw: RawConfig;
  previous: RawConfig | null;
  registry: Registry;
  accessLog: AccessLogSink | null;
  tracing: Tracing | null;
  /** Filled by the build, which returns the generation only once every plan is in. */
  plans: ReadonlyMap<string, ListenerPlan>;
  components: ReadonlyMap<string, ComponentSlot>;
  sockets: ReadonlyMap<string, PooledSocket>;
  /** Every release of the generation, in the order the build acquired: disposed once its work ended. */
  resources: Disposer;
  /** The socket leases (a part of `resources`): let go of as soon as the generation stops accepting. */
  listening: Disposer;
  log: (line: string) => void;
}

/**
 * One immutable build of the whole config: listener plans, the components they
 * use, the sockets and endpoints they lease. Units of work (an HTTP request, a TCP
 * connection) hold the generation they started on until they end.
 *
 * Its life: built (buildGeneration) → `serve()` at the swap → `close()` once
 * replaced (or `destroy()`) → closed, its resources released. Nothing outside the
 * build sets any of its fields.
 */
export class Generation implements GenerationPin {
  readonly number: number;
  readonly source: ConfigSource;
  readonly config: Config;
  /** The config as its source gave it (merged, before normalization): GET /config, POST /components. */
  readonly raw: RawConfig;
  /** What the generation before this one ran: POST /rollback goes back to it. */
  readonly previous: RawConfig | null;
  /** The filter and component types it was built with, plugins' included. */
  readonly registry: Registry;
  /** Where this generation's requests and connections are logged; null when `accessLog` is off. */
  readonly accessLog: AccessLogSink | null;
  /** Where this generation's requests are traced; null when `tracing` is off. */
  readonly tracing: Tracing | null;
  readonly plans: ReadonlyMap<string, ListenerPlan>;
  /** The component instances its filters use, by component name (shared with other generations: ComponentSlot). */
  readonly components: ReadonlyMap<string, ComponentSlot>;
  /** The listening socket of each listener, by listener name; `.address` is the address it is bound to. */
  readonly sockets: ReadonlyMap<string, PooledSocket>;
  readonly #resources: Disposer;
  readonly #listening: Disposer;
  readonly #log: (line: string) => void;
  #appliedAt: Date;
  readonly #work = new LinkedSet<Destroyable>();
  /** Resolves the pending whenIdle promise; set while someone waits for the work to end. */
  #wake: (() => void) | null = null;
  #idle: Promise<void> | null = null;
  #drain: Promise<DrainOutcome> | null = null;
  #cut: Promise<void> | null = null;
  #cutBy: 'timeout' | 'destroyed' | null = null;
  #closing: Promise<DrainOutcome> | null = null;
  #destroying: Promise<void> | null = null;
  #released: Promise<void> | null = null;
  #closed = false;

  constructor(init: GenerationInit) {
    this.number = init.number;
    this.source = init.source;
    this.config = init.config;
    this.raw = init.raw;
    this.previous = init.previous;
    this.registry = init.registry;
    this.accessLog = init.accessLog;
    this.tracing = init.tracing;
    this.plans = init.plans;
    this.components = init.components;
    this.sockets = init.sockets;
    this.#resources = init.resources;
    this.#listening = init.listening;
    this.#log = init.log;
    this.#appliedAt = new Date();
  }

  /** When it began to serve (serve()); until then, when it was built. */
  get appliedAt(): Date {
    return this.#appliedAt;
  }

  /** True once its work ended and its resources are being released: no unit of work may start on it. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * The swap: from here on, new connections and new requests (also on keep-alive
   * connections already open) on its sockets see this generation, one assignment
   * per socket. Work already running stays on the generation it started on.
   */
  serve(): void {
    for (const [name, plan] of this.plans) {
      const ls = this.sockets.get(name)!;
      ls.configure(plan);
      ls.plan = plan;
    }
    // GET /config's appliedAt: when it began to serve, not when its build began (a readiness wait can be long).
    this.#appliedAt = new Date();
  }

  // hot path
  hold(work: Destroyable): void {
    this.#work.add(work);
  }

  // hot path
  release(work: Destroyable): void {
    if (this.#work.delete(work) && this.#work.size === 0 && this.#wake !== null) this.#wake();
  }

  get inFlight(): number {
    return this.#work.size;
  }

  /**
   * Graceful end, once replaced: stops accepting on the addresses the next
   * generation does not have (its socket leases go now), waits until no unit of
   * work holds it or drainTimeout passes (then cuts what still runs), and releases
   * everything it holds, in the reverse order the build acquired it.
   * Idempotent: every call gets the same promise, which says how the work ended.
   */
  close(): Promise<DrainOutcome> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  /**
   * Ends it now: stops accepting, cuts every unit of work still running (as a drain
   * timeout does), then releases everything. Idempotent; a close() under way ends
   * with it. `err` says why, for the log.
   */
  destroy(err?: Error): Promise<void> {
    this.#destroying ??= this.#destroy(err);
    return this.#destroying;
  }

  /**
   * Waits until no unit of work holds this generation, or drainTimeout passes; then
   * cuts whatever still runs and waits for each unit to let go (its close handler
   * ran, so the filters' per-connection bookkeeping is done before the components
   * close), at most DESTROY_GRACE_MS. One drain per generation: every caller gets
   * the same promise. It releases nothing; close() does.
   */
  drain(): Promise<DrainOutcome> {
    this.#drain ??= this.#drainWork();
    return this.#drain;
  }

  async #close(): Promise<DrainOutcome> {
    await this.#listening.dispose();
    const how = await this.drain();
    await this.#release();
    return how;
  }

  async #destroy(err: Error | undefined): Promise<void> {
    if (err) this.#log(`generation ${this.number} destroyed: ${err.message}`);
    await this.#listening.dispose();
    await this.#cutWork('destroyed');
    await this.#release();
  }

  async #drainWork(): Promise<DrainOutcome> {
    if (this.#work.size > 0) {
      const timer = setTimeout(() => void this.#cutWork('timeout'), this.config.drainTimeoutMs);
      timer.unref();
      await this.#whenIdle();
      clearTimeout(timer);
    }
    return this.#cutBy ?? 'drained';
  }

  /** Resolves once no unit of work holds the generation. */
  #whenIdle(): Promise<void> {
    if (this.#work.size === 0) return Promise.resolve();
    this.#idle ??= new Promise((resolve) => {
      this.#wake = () => {
        this.#wake = null;
        this.#idle = null;
        resolve();
      };
    });
    return this.#idle;
  }

  #cutWork(by: 'timeout' | 'destroyed'): Promise<void> {
    this.#cut ??= this.#cutAll(by);
    return this.#cut;
  }

  async #cutAll(by: 'timeout' | 'destroyed'): Promise<void> {
    this.#cutBy = by;
    const idle = this.#whenIdle();
    for (const w of this.#work.toArray()) w.destroy();
    let grace: NodeJS.Timeout | undefined;
    const late = await Promise.race([
      idle.then(() => false),
      new Promise<boolean>((resolve) => {
        grace = setTimeout(() => resolve(true), DESTROY_GRACE_MS);
        grace.unref();
      }),
    ]);
    clearTimeout(grace);
    if (late) {
      // Units that did not let go within the grace are let go of here, so the drain ends.
      this.#work.clear();
      this.#wake?.();
    }
  }

  /** Once: marks it closed, then runs its disposer stack (every release the build pushed, last acquired first). */
  #release(): Promise<void> {
    this.#released ??= this.#releaseAll();
    return this.#released;
  }

  #releaseAll(): Promise<void> {
    // A removed listener's keep-alive connections outlive the requests they carried;
    // once drained, close the idle ones (Node's close() only closed those idle when
    // the socket stopped accepting), so they end instead of lingering until
    // keepAliveTimeout and answering 503 to a late request. In the same tick as the
    // generation is marked closed, so no request starts on it while its components close.
    for (const ls of this.sockets.values()) if (ls.retired && ls instanceof ListenSocket) ls.closeIdle();
    this.#closed = true;
    return this.#resources.dispose();
  }
}

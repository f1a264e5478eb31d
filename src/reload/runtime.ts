import { TracingTable } from '../observe/tracing.js';
import { certificateExpiries } from '../net/tls_material.js';
import { ComponentError, formatIssue, oneLine, SwitchyardError, type ConfigIssue } from '../errors.js';
import { pushIssues, type PushField } from './push_policy.js';
import { checkConfig } from './check.js';
import { DEFAULT_READY_TIMEOUT_MS } from '../config/defaults.js';
import { rawFromObject, type RawConfig } from '../config/load.js';
import { planChanges, type ChangePlan } from './changes.js';
import type { HostPort } from '../config/types.js';
import { Metrics } from '../metrics.js';
import { EndpointTable } from '../upstream/endpoints.js';
import { SocketPool } from '../listeners/socket_pool.js';
import { dataPath } from '../listeners/serve.js';
import '../observe/subscribers.js';
import type { ComponentOutcome } from '../components/lifecycle.js';
import { boundAddresses, buildGeneration } from './build.js';
import type { ConfigSource, Generation } from './generation.js';
import { AccessLogs, type AccessLogSink } from '../observe/access_log.js';
import { channels, type ComponentEvent, type ReloadChanges, type ReloadEvent, type ReloadRecord } from '../observe/events.js';
import { defaultMaxConnections, FD_RESERVE, readFdLimit, type FdLimit } from '../fd_limit.js';
import { attachTallies } from './outcomes.js';
import { AutoRollbackWatch, type RollbackVerdict } from './auto_rollback.js';
import { RolloutController, type RolloutNote } from './rollouts.js';

/** Why change safety made a generation (GET /generations: `reason` and its figures). */
export type ChangeNote = { kind: 'auto-rollback'; verdict: RollbackVerdict; from: number } | { kind: 'rollout'; note: RolloutNote };

export type ApplyResult =
  | { ok: true; generation: number; components: Record<string, ComponentOutcome>; durationMs: number }
  | { ok: false; kind: 'invalid'; issues: ConfigIssue[] }
  | { ok: false; kind: 'failed'; error: SwitchyardError };

export interface GenerationRecord {
  generation: number | null;
  source: ConfigSource;
  at: string;
  outcome: 'applied' | 'invalid' | 'failed';
  error?: string;
  /** auto-rollback and rollout generations: why (a metric reason: error-ratio, step, rollout-error-ratio, …). */
  reason?: string;
  /** auto-rollback: the generation reverted, the role, its figures there and in the one before; rollout: the listener, role, step and the figures the last step was judged on. */
  detail?: Record<string, unknown>;
}

export interface RuntimeOptions {
  metrics?: Metrics;
  /** One line per reload and per lifecycle event (control characters escaped: errors.oneLine). */
  log?: (line: string) => void;
  /** A new component instance's time for init, inherit and ready together, unless its `readyTimeout` says otherwise (default 10 s). */
  readyTimeoutMs?: number;
  /** What a config pushed through the admin API may change besides what any config may (push_policy.ts). */
  allowPush?: readonly PushField[];
  /** The RLIMIT_NOFILE in force, which `limits.maxConnections` defaults from (default: read from /proc/self/limits; null: unknown, no default limit). */
  fdLimit?: FdLimit | null;
}

/** The global connection limit in force, and where it came from. */
export interface ConnectionLimit {
  max: number;
  /** `config`: limits.maxConnections; `fd-limit`: derived from the soft RLIMIT_NOFILE; `none`: neither is known. */
  from: 'config' | 'fd-limit' | 'none';
}

/**
 * The control path, from one entry point: `apply(raw, source)` checks a whole
 * config, builds the next generation beside the running one, swaps it in with one
 * assignment per listening socket, and drains the old one in the background.
 * Applies run one at a time, in arrival order.
 */
export class Runtime {
  readonly metrics: Metrics;
  readonly sockets: SocketPool;
  /** The RLIMIT_NOFILE read at construction (null: unknown). */
  readonly fdLimit: FdLimit | null;
  readonly endpoints: EndpointTable;
  /** The open access log sinks, shared by the generations that write to them. */
  readonly accessLogs: AccessLogs;
  readonly tracings: TracingTable;
  current: Generation | null = null;
  /** Called after each swap, with the generation now serving (the Sidecar watches its TLS files). */
  onApplied: ((gen: Generation) => void) | null = null;
  readonly history: GenerationRecord[] = [];
  /** Generations replaced but not yet closed. */
  readonly draining = new Set<Generation>();
  /** Guarded rollouts of the weighted filters (GET /rollouts). */
  readonly rollouts: RolloutController;
  /** Called when autoRollback reverted `bad` (the etcd source reports it in the status key). */
  readonly onAutoRollback = new Set<(bad: Generation, verdict: RollbackVerdict, result: ApplyResult) => void>();
  #watch: AutoRollbackWatch | null = null;
  #next = 1;
  #queue: Promise<unknown> = Promise.resolve();
  #stopping = false;
  readonly #log: (line: string) => void;
  readonly #readyTimeoutMs: number;
  readonly #allowPush: ReadonlySet<PushField>;

  constructor(opts: RuntimeOptions = {}) {
    this.metrics = opts.metrics ?? new Metrics();
    // Every line the runtime, the health checks and the access log sinks write quotes
    // config text or upstream text (names, paths, error messages): one line each, escaped.
    const log = opts.log ?? (() => {});
    this.#log = (line) => log(oneLine(line));
    this.sockets = new SocketPool(dataPath, this.#log);
    this.fdLimit = opts.fdLimit === undefined ? readFdLimit() : opts.fdLimit;
    this.accessLogs = new AccessLogs(this.metrics.accessLogDropped, this.#log);
    this.tracings = new TracingTable(this.metrics.tracingSpansDropped);
    this.#readyTimeoutMs = opts.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS;
    this.#allowPush = new Set(opts.allowPush ?? []);
    this.endpoints = new EndpointTable(this.#log);
    this.metrics.endpointHealth = () => this.#endpointHealth();
    this.metrics.certificates = () => (this.current === null ? [] : certificateExpiries(this.current.config));
    const rt = this;
    this.rollouts = new RolloutController({
      get current() { return rt.current; },
      metrics: this.metrics,
      log: this.#log,
      applyRollout: async (make, note) => {
        const r = await this.#applyDerived(make, 'rollout', { kind: 'rollout', note });
        return r === undefined ? undefined : r.ok ? { ok: true } : { ok: false, error: r.kind === 'invalid' ? r.issues.map(formatIssue).join('; ') : r.error.message };
      },
    });
  }

  /** Each role channel the serving generation routes to, once, with its healthy and total endpoints. */
  *#endpointHealth(): Iterable<{ role: string; channel: string; healthy: number; total: number }> {
    const seen = new Set<string>();
    for (const plan of this.current?.plans.values() ?? []) {
      for (const set of plan.upstream.routes) {
        const key = `${set.role}\0${set.channel}`;
        if (seen.has(key)) continue;
        seen.add(key);
        yield { role: set.role, channel: set.channel, healthy: set.healthyCount, total: set.endpoints.length };
      }
    }
  }

  get stopping(): boolean {
    return this.#stopping;
  }

  /** Validates, builds and swaps in a whole config. Never throws; the result says what happened. */
  apply(raw: RawConfig, source: ConfigSource): Promise<ApplyResult> {
    const run = this.#queue.then(() => this.#applySafely(raw, source));
    this.#queue = run.catch(() => {});
    return run;
  }

  /** `#apply`, with any throw (a plugin's code misbehaving) turned into a failed result (SY_ERR_APPLY_FAILED): callers never see a rejection. */
  async #applySafely(raw: RawConfig, source: ConfigSource, note: ChangeNote | null = null): Promise<ApplyResult> {
    try {
      return await this.#apply(raw, source, note);
    } catch (err) {
      const error = err instanceof SwitchyardError ? err
        : new SwitchyardError('SY_ERR_APPLY_FAILED', err instanceof Error ? err.message : String(err), { cause: err });
      return this.#reject(source, new Date().toISOString(), null, { ok: false, kind: 'failed', error });
    }
  }

  async #apply(raw: RawConfig, source: ConfigSource, note: ChangeNote | null): Promise<ApplyResult> {
    const startedAt = performance.now();
    const at = new Date().toISOString();
    if (this.#stopping) {
      return this.#reject(source, at, startedAt, { ok: false, kind: 'failed', error: new SwitchyardError('SY_ERR_SHUTTING_DOWN', 'shutting down') });
    }
    const forbidden = source === 'api' ? await pushIssues(raw, this.current?.raw ?? null, this.#allowPush) : [];
    if (forbidden.length) return this.#reject(source, at, startedAt, { ok: false, kind: 'invalid', issues: forbidden });
    // A rollout's own step carries its weights; any other change keeps the steps of the rollouts it does not touch.
    if (source !== 'rollout') raw = this.rollouts.overlay(raw);
    const checked = await checkConfig(raw);
    if (!checked.ok) return this.#reject(source, at, startedAt, { ok: false, kind: 'invalid', issues: checked.issues });

    const prev = this.current;
    const number = this.#next;
    const built = await buildGeneration(prev, { number, source, raw, config: checked.config }, {
      registry: checked.registry,
      endpoints: this.endpoints,
      sockets: this.sockets,
      accessLogs: this.accessLogs,
      tracings: this.tracings,
      metrics: this.metrics,
      readyTimeoutMs: this.#readyTimeoutMs,
      log: this.#log,
    });
    if (!built.ok) {
      if (built.error instanceof ComponentError) this.#publishComponent(built.error.component, built.error.mode, 'failed', null);
      return this.#reject(source, at, startedAt, { ok: false, kind: 'failed', error: built.error });
    }
    this.#next++;
    const gen = built.generation;

    // The swap: from here on, new connections and new requests see `gen`.
    const limit = this.#connectionLimit(gen);
    this.sockets.budget.max = limit.max;
    const watched = gen.config.autoRollback !== undefined && prev !== null && source !== 'rollout' && source !== 'auto-rollback';
    if (gen.config.autoRollback !== undefined || this.rollouts.wants(gen.config)) attachTallies(gen);
    gen.serve();
    this.current = gen;
    this.onApplied?.(gen);
    this.#watch?.stop();
    this.#watch = watched ? new AutoRollbackWatch(gen, prev, gen.config.autoRollback!, (v) => void this.#autoRollback(gen, v)) : null;
    this.rollouts.afterSwap(gen, note?.kind === 'rollout' ? note.note : null);

    if (prev) this.#retire(prev);
    const durationMs = performance.now() - startedAt;
    for (const [component, mode] of Object.entries(built.components)) {
      if (mode !== 'unchanged') this.#publishComponent(component, mode, 'success', number);
    }
    this.history.push({ generation: number, source, at, outcome: 'applied', ...noteFields(note) });
    this.#trimHistory();
    // From the swap on, the change is applied whatever happens: describing it must
    // not turn into a rejection (#applySafely would answer 409 "nothing changed"
    // and record a failure while `gen` serves).
    let changes: ReloadChanges;
    try {
      changes = changesOf(prev, gen, built.components);
    } catch (err) {
      this.#log(`generation ${number}: cannot list what changed: ${(err as Error).message}`);
      changes = { listeners: { added: [], removed: [], changed: [] }, components: {} };
    }
    // A change that turns the access log off is the last line of the old one.
    this.#record({ generation: number, source, result: 'applied', durationMs, changes, error: '' },
      gen.accessLog ?? prev?.accessLog ?? null);
    const fd = this.fdLimit;
    const fits = fd === null ? Infinity : defaultMaxConnections(fd.soft, gen.plans.size);
    if (limit.from === 'config' && limit.max > fits && limit.max !== prev?.config.limits.maxConnections) {
      this.#log(`limits.maxConnections ${limit.max} is more than the file descriptors allow (soft limit ${fd!.soft}: about ${fits} client connections, each with an upstream one, after ${FD_RESERVE} in reserve and the listening sockets); near it, accepts and upstream connects may fail`);
    }
    const [was, now] = [prev?.config.admin.address, gen.config.admin.address];
    if (was && (was.host !== now.host || was.port !== now.port)) {
      // Like Envoy's admin (bootstrap only): moving the admin socket under a live
      // operator connection is not worth its failure modes.
      this.#log(`admin.address changed to ${now.host}:${now.port}: it takes effect at the next restart; the admin API stays on ${was.host}:${was.port}`);
    }
    return { ok: true, generation: number, components: built.components, durationMs };
  }

  /** The global connection limit a generation runs with: its `limits.maxConnections`, else the file-descriptor limit's share. */
  #connectionLimit(gen: Generation): ConnectionLimit {
    const set = gen.config.limits.maxConnections;
    if (set !== undefined) return { max: set, from: 'config' };
    if (this.fdLimit !== null && Number.isFinite(this.fdLimit.soft)) return { max: defaultMaxConnections(this.fdLimit.soft, gen.plans.size), from: 'fd-limit' };
    return { max: Infinity, from: 'none' };
  }

  /** The global connection limit in force (for the start log). */
  connectionLimit(): ConnectionLimit {
    return this.current === null ? { max: Infinity, from: 'none' } : this.#connectionLimit(this.current);
  }

  /** Checks a config and says what applying it would change; builds nothing live. */
  async dryRun(raw: RawConfig): Promise<{ ok: true; changes: ChangePlan } | { ok: false; issues: ConfigIssue[] }> {
    const forbidden = await pushIssues(raw, this.current?.raw ?? null, this.#allowPush);
    if (forbidden.length) return { ok: false, issues: forbidden };
    const checked = await checkConfig(raw);
    if (!checked.ok) return checked;
    return { ok: true, changes: planChanges(this.current, checked.config, checked.registry) };
  }

  /**
   * Runs `make` in the apply queue, against the generation current *then*, and
   * applies what it returns; resolves undefined when it returns nothing.
   * Changes derived from the current config (rollback, one component) must be
   * computed in the queue: computed at call time, two concurrent POST
   * /components/<name> would both start from the same config, and the second
   * would silently undo the first.
   */
  #applyDerived(make: () => RawConfig | undefined, source: ConfigSource, note: ChangeNote | null = null): Promise<ApplyResult | undefined> {
    const run = this.#queue.then(() => {
      const raw = make();
      return raw ? this.#applySafely(raw, source, note) : undefined;
    });
    this.#queue = run.catch(() => {});
    return run;
  }

  /** Applies the current config again, as a new generation (its TLS files read anew). Undefined when nothing serves yet. */
  reapply(source: ConfigSource): Promise<ApplyResult | undefined> {
    return this.#applyDerived(() => this.current?.raw, source);
  }

  /** autoRollback's verdict on `bad`: its previous config again, unless another change replaced it first. */
  async #autoRollback(bad: Generation, verdict: RollbackVerdict): Promise<void> {
    const f = verdict.figures;
    this.#log(`generation ${bad.number}: role ${verdict.role} error ratio ${f.errorRatio.toFixed(3)} (${f.errors} of ${f.requests}) over ${verdict.maxErrorRatio} and over ${verdict.previous.errorRatio.toFixed(3)} before; rolling back to the previous config`);
    const result = await this.#applyDerived(() => (this.current === bad ? bad.previous ?? undefined : undefined), 'auto-rollback', { kind: 'auto-rollback', verdict, from: bad.number });
    if (result === undefined) return;
    if (result.ok) this.metrics.rollbacks.inc({ reason: 'error-ratio' });
    else this.#log(`generation ${bad.number}: the automatic rollback was not applied; generation ${this.current?.number} keeps serving`);
    for (const fn of this.onAutoRollback) fn(bad, verdict, result);
  }

  /** Makes the config before the current one current again, as a new generation. Undefined when there is none. */
  rollback(): Promise<ApplyResult | undefined> {
    return this.#applyDerived(() => this.current?.previous ?? undefined, 'rollback');
  }

  /**
   * Layotto's ApplyConfiguration: the current config with one component's metadata
   * (and optionally its type) replaced, applied as a whole new config. Undefined
   * when nothing serves yet, or the component does not exist and no type is given.
   */
  applyComponent(name: string, change: { type?: string; metadata: Record<string, unknown> }): Promise<ApplyResult | undefined> {
    return this.#applyDerived(() => {
      const cur = this.current?.raw;
      if (!cur) return undefined;
      // A new top level and components mapping; the rest is shared with the current
      // config, which nothing changes (a deep copy of a config of 40,000 roles
      // blocked the event loop for 150 ms).
      const value = { ...(cur.value ?? {}) } as { components?: Record<string, { type?: string; metadata?: unknown }> };
      // Own keys only: POST /components/toString must not find Object.prototype.toString.
      const existing = value.components && Object.hasOwn(value.components, name) ? value.components[name] : undefined;
      if (!existing && !change.type) return undefined;
      value.components = { ...value.components, [name]: { ...existing, ...(change.type ? { type: change.type } : {}), metadata: change.metadata } };
      return rawFromObject(value, cur.baseDir);
    }, 'component');
  }

  /** `startedAt`: when the apply began (null: unknown, the duration is logged as 0). */
  #reject(source: ConfigSource, at: string, startedAt: number | null, result: Exclude<ApplyResult, { ok: true }>): ApplyResult {
    const invalid = result.kind === 'invalid';
    const error = invalid ? `${result.issues.length} config error(s)` : result.error.message;
    this.history.push({ generation: null, source, at, outcome: invalid ? 'invalid' : 'failed', error });
    this.#trimHistory();
    const durationMs = startedAt === null ? 0 : performance.now() - startedAt;
    const record: ReloadRecord = { generation: this.current?.number ?? null, source, result: invalid ? 'invalid' : 'failed', durationMs, changes: null, error };
    // Before the first generation the caller reports the failure (the CLI exits on it): counted, not logged.
    if (this.current) {
      this.#record(record, this.current.accessLog);
      if (invalid) for (const i of result.issues) this.#log(`  ${formatIssue(i)}`);
    } else this.#publishReload(record, null);
    return result;
  }

  /**
   * The one line per config change (generation, source, result, duration, what
   * changed), in the log and, when on, in the access log of the generation serving.
   */
  #record(r: ReloadRecord, sink: AccessLogSink | null): void {
    const ms = r.durationMs.toFixed(1);
    if (r.result === 'applied') this.#log(`generation ${r.generation} applied from ${r.source} in ${ms} ms: ${describeChanges(r.changes!)}`);
    else this.#log(`reload from ${r.source} rejected (${r.result}) in ${ms} ms: ${r.error}; generation ${r.generation} keeps serving`);
    this.#publishReload(r, sink);
  }

  /** switchyard:reload: the metrics count it, the access log (`sink`) writes its line. */
  #publishReload(r: ReloadRecord, sink: AccessLogSink | null): void {
    if (!channels.reload.hasSubscribers) return;
    const event: ReloadEvent = { ...r, sinks: { metrics: this.metrics, log: sink } };
    channels.reload.publish(event);
  }

  /** switchyard:component: one component's change, counted in switchyard_component_updates_total. */
  #publishComponent(component: string, mode: string, result: ComponentEvent['result'], generation: number | null): void {
    if (!channels.component.hasSubscribers) return;
    const event: ComponentEvent = { component, mode, result, generation, sinks: { metrics: this.metrics } };
    channels.component.publish(event);
  }

  /** SIGUSR1: access log files are reopened under their paths (logrotate's `postrotate`). */
  async reopenLogs(): Promise<void> {
    for (const e of await this.accessLogs.reopenAll()) this.#log(e);
  }

  #trimHistory(): void {
    if (this.history.length > 50) this.history.splice(0, this.history.length - 50);
  }

  /**
   * The old generation closes in the background (Generation.close: it stops
   * accepting on the addresses the new one dropped, drains, then releases what it
   * holds); once closed, the metric series only it had are forgotten.
   */
  #retire(gen: Generation): void {
    this.draining.add(gen);
    this.metrics.generationsDraining.set(this.draining.size);
    void gen.close().then((how) => {
      this.draining.delete(gen);
      this.metrics.generationsDraining.set(this.draining.size);
      // In the apply queue: no build is under way, whose new series would look unused.
      this.#queue = this.#queue.then(() => this.metrics.forgetAllBut(this.#routed())).catch((err: Error) => this.#log(err.message));
      const ended = how === 'drained' ? 'drained' : how === 'timeout' ? `drain timed out after ${gen.config.drainTimeoutMs} ms` : 'destroyed';
      this.#log(`generation ${gen.number} ${ended} and closed`);
    });
  }

  /** Listener, vset and roles of every plan of the generations still open (the metrics' live series). */
  *#routed(): Iterable<{ listener: string; vset: string; roles: readonly string[] }> {
    for (const g of [this.current, ...this.draining]) {
      if (g === null || g.closed) continue;
      for (const p of g.plans.values()) yield { listener: p.name, vset: p.config.vset, roles: p.roles.map((r) => r.name) };
    }
  }

  /** The bound address of each listener now serving. */
  addresses(): Map<string, HostPort> {
    return this.current ? boundAddresses(this.current) : new Map();
  }

  /**
   * Graceful stop: stop accepting everywhere, let running work finish (up to the
   * drainTimeout), close idle keep-alive connections, close components and pools.
   */
  async shutdown(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    this.#watch?.stop();
    this.rollouts.stop();
    await this.#queue;
    const gens = [...this.draining];
    const cur = this.current;
    if (cur) gens.push(cur);
    const sockets = this.sockets.all();
    for (const ls of sockets) {
      ls.retire(cur?.config.drainTimeoutMs ?? 0);
      ls.closeIdle();
    }
    await Promise.all(gens.map((g) => g.drain()));
    // Drained: what is still connected is idle, or a request not begun; cut it before the components close.
    for (const ls of sockets) ls.closeAll();
    this.sockets.closeUdp();
    await Promise.all(gens.map((g) => g.close()));
    await this.endpoints.destroyAll();
    this.#log('stopped');
  }
}

/** The history fields of a change-safety generation. */
function noteFields(note: ChangeNote | null): Pick<GenerationRecord, 'reason' | 'detail'> {
  if (note === null) return {};
  if (note.kind === 'auto-rollback') {
    const v = note.verdict;
    return { reason: 'error-ratio', detail: { rolledBack: note.from, role: v.role, figures: v.figures, previous: v.previous, maxErrorRatio: v.maxErrorRatio } };
  }
  const n = note.note;
  return { reason: n.reason, detail: { listener: n.listener, role: n.role, step: n.step, state: n.state, ...(n.figures ? { judged: n.figures } : {}) } };
}

/** What a new generation changed against the one before: listeners, and components that did not stay as they were. */
function changesOf(prev: Generation | null, next: Generation, components: Record<string, ComponentOutcome>): ReloadChanges {
  const { added, removed, changed } = planChanges(prev, next.config, next.registry).listeners;
  const moved = Object.fromEntries(Object.entries(components).filter(([, m]) => m !== 'unchanged'));
  return { listeners: { added, removed, changed }, components: moved };
}

function describeChanges(c: ReloadChanges): string {
  const { added, removed, changed } = c.listeners;
  const parts = [];
  if (added.length) parts.push(`listeners added ${added.join(', ')}`);
  if (removed.length) parts.push(`removed ${removed.join(', ')}`);
  if (changed.length) parts.push(`changed ${changed.join(', ')}`);
  const comps = Object.entries(c.components).map(([name, mode]) => `${name}:${mode}`);
  return `${parts.length ? parts.join('; ') : 'no listener changes'}${comps.length ? `; components ${comps.join(', ')}` : ''}`;
}

import { formatHostPort } from '../config/parse.js';
import type { Metrics } from '../metrics.js';
import type { Runtime, GenerationRecord } from '../reload/runtime.js';
import type { Generation } from '../reload/generation.js';
import type { ListenerPlan } from '../listeners/plan.js';
import type { RolloutConfig, WeightedConfig } from '../filters/weighted.js';
import type { FilterConfig, HostPort } from '../config/types.js';
import { listenerSplit } from '../reload/split.js';
import type { RolloutState } from '../reload/rollouts.js';
import type { Figures } from '../reload/outcomes.js';

/**
 * GET /status: what the status page shows, assembled from the running runtime.
 * Traffic is "live": counts over the last few seconds, from the difference
 * between the counters now and a snapshot taken about `windowMs` ago, so a
 * weight change shows in the shares within one window rather than being
 * buried under everything since start.
 */
export interface Status {
  generation: number | null;
  /** Server time of this answer (ISO 8601). */
  at: string;
  /** The span the traffic numbers cover, in seconds (shorter just after start). */
  windowSeconds: number;
  listeners: ListenerStatus[];
  vsets: VsetStatus[];
  generations: { current: number | null; draining: number[]; recent: GenerationRecord[] };
  /** The guarded rollouts of the running config, by listener (GET /rollouts, with the limits they are judged against). */
  rollouts: RolloutStatus[];
  /** Recent changes reverted by change safety, newest first: autoRollback's, and rollouts sent back to 0. */
  rollbacks: RollbackStatus[];
}

export interface RolloutStatus {
  listener: string;
  role: string;
  state: RolloutState;
  /** The percent of the split the role has now. */
  step: number;
  /** Into `steps`; -1 before the first step. */
  stepIndex: number;
  steps: number[];
  /** The role's figures in this step so far; latencyP99Ms null unless the rollout judges p99. */
  figures: Figures;
  /** The figures the last verdict was made on (the step passed, or the one that failed), or null. */
  judged: Figures | null;
  /** Why it is paused or rolled back ('' otherwise). */
  reason: string;
  stepStartedAt: string;
  /** When the step is due to be judged (running only), or null. */
  nextStepAt: string | null;
  limits: { minRequests: number; maxErrorRatio: number; maxLatencyP99Ms: number | null; intervalMs: number; onFailure: 'rollback' | 'pause' };
}

export interface RollbackStatus {
  generation: number | null;
  at: string;
  /** auto-rollback: autoRollback reverted a change; rollout: a rollout's role sent back to 0. */
  source: 'auto-rollback' | 'rollout';
  /** The rollbacks counter's reason: error-ratio, rollout-error-ratio, rollout-latency, rollout-aborted. */
  reason: string;
  listener: string | null;
  role: string | null;
  /** auto-rollback: the generation it reverted. */
  rolledBack: number | null;
  /** The role's figures that decided it (none for an abort before any verdict). */
  figures: Figures | null;
  /** auto-rollback: the same role's figures in the generation before, and the limit. */
  previous: Figures | null;
  maxErrorRatio: number | null;
}

export interface ListenerStatus {
  name: string;
  protocol: 'http' | 'tcp' | 'udp';
  /** host:port it is bound to. */
  address: string;
  vset: string;
  channel: string;
  /** Filter types in order, e.g. ["header_route", "weighted"]. */
  filters: string[];
  /** The listener's split (the first filter whose type has splitWeights; roles left out: 0), or null: the roles split equally. */
  weights: Record<string, number> | null;
  stickyHeader: string | null;
  /** In the window: requests (http) or closed connections (tcp) a role served. */
  served: number;
  /** In the window: those a filter answered before any role was chosen (429, fault abort, refused). */
  unrouted: number;
}

export interface VsetStatus {
  name: string;
  channels: string[];
  /** A role's own vset, made for it (not declared). */
  implicit: boolean;
  /** Listeners targeting this vset. */
  listeners: string[];
  roles: RoleStatus[];
}

/** One role of a vset. */
export interface RoleStatus {
  name: string;
  meta: Record<string, string>;
  /** Per listener targeting the vset, in `listeners` order. */
  traffic: RoleTraffic[];
}

export interface RoleTraffic {
  listener: string;
  /** Configured weight, or null when the listener splits equally. */
  weight: number | null;
  /** The share of traffic the config intends for the role (0–1). */
  intended: number;
  /** In the window: requests or connections the role served, and how many failed (5xx; tcp: upstream error). */
  count: number;
  errors: number;
  /** count / the listener's served (0–1), null without traffic. */
  share: number | null;
  /** errors / count (0–1), null without traffic. */
  errorRatio: number | null;
  /** The role channel this listener reaches, and its endpoints that take new work (healthy, not ejected). */
  health: { channel: string; healthy: number; total: number };
}

/** How many recent generations GET /status lists. */
const RECENT_GENERATIONS = 10;
/** How many recent rollbacks it lists (found in the whole history: a rollout's steps push them out of the recent ten). */
const RECENT_ROLLBACKS = 5;

interface Tally { count: number; errors: number }
type Tallies = Map<string, Tally>;

const key = (listener: string, vset: string, role: string): string => `${listener}\0${vset}\0${role}`;

/**
 * A ring of counter snapshots, one every `everyMs`, covering `windowMs`; the
 * counts over the window are "now minus the oldest snapshot in it". Reading a
 * few counters once a second costs nothing next to the traffic it describes.
 */
export class TrafficWindow {
  readonly #metrics: Metrics;
  readonly #windowMs: number;
  readonly #samples: { at: number; tallies: Tallies }[] = [];
  readonly #timer: NodeJS.Timeout;

  constructor(metrics: Metrics, opts: { windowMs?: number; everyMs?: number } = {}) {
    this.#metrics = metrics;
    this.#windowMs = opts.windowMs ?? 10_000;
    void this.#sample();
    this.#timer = setInterval(() => void this.#sample(), opts.everyMs ?? 1_000);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  /** Counts since the oldest snapshot within the window, and the seconds that covers. */
  async recent(): Promise<{ seconds: number; tallies: Tallies }> {
    const now = Date.now();
    const tallies = await this.#read();
    const base = this.#samples.find((s) => s.at >= now - this.#windowMs);
    if (!base) return { seconds: 0, tallies: new Map() };
    for (const [k, t] of tallies) {
      const b = base.tallies.get(k);
      if (b) tallies.set(k, { count: Math.max(0, t.count - b.count), errors: Math.max(0, t.errors - b.errors) });
    }
    return { seconds: (now - base.at) / 1000, tallies };
  }

  async #sample(): Promise<void> {
    const at = Date.now();
    const tallies = await this.#read();
    this.#samples.push({ at, tallies });
    // Snapshots older than the window are no use (the newest always stays, as the next base).
    while (this.#samples.length > 1 && this.#samples[0]!.at < at - this.#windowMs) this.#samples.shift();
  }

  /** Totals since start per listener, vset and role, from both the http and the tcp counters. */
  async #read(): Promise<Tallies> {
    const out: Tallies = new Map();
    const add = (l: Record<string, string | number | undefined>, value: number, failed: boolean): void => {
      const k = key(String(l.listener), String(l.vset), String(l.role));
      const t = out.get(k) ?? { count: 0, errors: 0 };
      t.count += value;
      if (failed) t.errors += value;
      out.set(k, t);
    };
    for (const v of (await this.#metrics.requests.get()).values) add(v.labels, v.value, String(v.labels.code).startsWith('5'));
    for (const v of (await this.#metrics.tcpConnections.get()).values) add(v.labels, v.value, v.labels.result === 'error');
    return out;
  }
}

/** The answer of GET /status for the generation now serving. */
export async function buildStatus(rt: Runtime, window: TrafficWindow): Promise<Status> {
  const { seconds, tallies } = await window.recent();
  const g = rt.current;
  const generations = {
    current: g?.number ?? null,
    draining: [...rt.draining].map((d) => d.number),
    recent: rt.history.slice(-RECENT_GENERATIONS).reverse(),
  };
  const base = {
    generation: g?.number ?? null, at: new Date().toISOString(), windowSeconds: Math.round(seconds * 10) / 10, generations,
    rollouts: g ? rollouts(rt, g) : [], rollbacks: rollbacks(rt.history),
  };
  if (!g) return { ...base, listeners: [], vsets: [] };

  const addresses = rt.addresses();
  const tally = (l: string, v: string, r: string): Tally => tallies.get(key(l, v, r)) ?? { count: 0, errors: 0 };
  const listeners = [...g.plans.values()].map((p) => listenerStatus(p, g, addresses.get(p.name), tally));
  const vsets = Object.entries(g.config.vsets).map(([name, v]): VsetStatus => {
    const targeting = listeners.filter((l) => l.vset === name);
    return {
      name,
      channels: v.channels,
      implicit: v.implicit,
      listeners: targeting.map((l) => l.name),
      roles: Object.entries(v.roles).map(([role, r]) => ({
        name: role,
        meta: r.meta,
        traffic: targeting.map((l) => roleTraffic(l, role, Object.keys(v.roles).length, tally(l.name, name, role), g.plans.get(l.name)!)),
      })),
    };
  });
  return { ...base, listeners, vsets };
}

function listenerStatus(p: ListenerPlan, g: Generation, bound: HostPort | undefined,
  tally: (l: string, v: string, r: string) => Tally): ListenerStatus {
  const { vset, channel, filters } = p.config;
  const split = listenerSplit(filters, g.registry);
  const weights = split ? Object.fromEntries(p.roles.map((r) => [r.name, Object.hasOwn(split, r.name) ? split[r.name]! : 0])) : null;
  const a = bound ?? p.address;
  return {
    name: p.name,
    protocol: p.protocol,
    address: formatHostPort(a),
    vset,
    channel,
    filters: filters.map((f) => f.type),
    weights,
    stickyHeader: stickyHeader(filters),
    served: p.roles.reduce((n, r) => n + tally(p.name, vset, r.name).count, 0),
    unrouted: tally(p.name, vset, '').count,
  };
}

/**
 * `weighted`'s stickyHeader, of the first weighted filter (the one that picks; a
 * later one sees requests already routed). A knob of that one type: no descriptor
 * hook tells it, so a plugin's split shows without one.
 */
function stickyHeader(filters: readonly FilterConfig[]): string | null {
  const weighted = filters.find((f) => f.type === 'weighted')?.config as WeightedConfig | undefined;
  return weighted?.stickyHeader ?? null;
}

function roleTraffic(l: ListenerStatus, role: string, roles: number, t: Tally, plan: ListenerPlan): RoleTraffic {
  const total = l.weights ? Object.values(l.weights).reduce((a, b) => a + b, 0) : 0;
  const set = plan.upstream.routes[plan.roles.findIndex((r) => r.name === role)]!;
  return {
    listener: l.name,
    weight: l.weights ? l.weights[role] ?? 0 : null,
    intended: l.weights ? (total > 0 ? (l.weights[role] ?? 0) / total : 0) : 1 / roles,
    count: t.count,
    errors: t.errors,
    share: l.served > 0 ? t.count / l.served : null,
    errorRatio: t.count > 0 ? t.errors / t.count : null,
    health: { channel: set.channel, healthy: set.healthyCount, total: set.endpoints.length },
  };
}

/** The controller's rollouts with the limits of the config now serving (each is that config's rollout). */
function rollouts(rt: Runtime, g: Generation): RolloutStatus[] {
  return rt.rollouts.list().flatMap((entry): RolloutStatus[] => {
    const r = entry as unknown as Omit<RolloutStatus, 'figures' | 'limits'> & Figures;
    const spec = g.config.listeners[r.listener]?.filters
      .map((f) => (f.type === 'weighted' ? (f.config as WeightedConfig).rollout : undefined))
      .find((x): x is RolloutConfig => x !== undefined);
    if (!spec) return [];
    const p99 = spec.maxLatencyP99Ms !== undefined;
    const figures = (f: Figures): Figures => ({ requests: f.requests, errors: f.errors, errorRatio: f.errorRatio, latencyP99Ms: p99 ? f.latencyP99Ms : null });
    return [{
      listener: r.listener, role: r.role, state: r.state, step: r.step, stepIndex: r.stepIndex, steps: r.steps,
      figures: figures(r), judged: r.judged ? figures(r.judged) : null, reason: r.reason,
      stepStartedAt: r.stepStartedAt, nextStepAt: r.nextStepAt,
      limits: {
        minRequests: spec.minRequests, maxErrorRatio: spec.maxErrorRatio, maxLatencyP99Ms: spec.maxLatencyP99Ms ?? null,
        intervalMs: spec.intervalMs, onFailure: spec.onFailure,
      },
    }];
  });
}

/** autoRollback's generations and the rollout generations that sent a role back to 0, newest first. */
function rollbacks(history: readonly GenerationRecord[]): RollbackStatus[] {
  const out: RollbackStatus[] = [];
  for (let i = history.length - 1; i >= 0 && out.length < RECENT_ROLLBACKS; i--) {
    const h = history[i]!;
    const d = h.detail ?? {};
    const auto = h.source === 'auto-rollback';
    if (h.outcome !== 'applied' || !(auto || (h.source === 'rollout' && d.state === 'rolled-back'))) continue;
    out.push({
      generation: h.generation, at: h.at, source: auto ? 'auto-rollback' : 'rollout', reason: h.reason ?? '',
      listener: typeof d.listener === 'string' ? d.listener : null,
      role: typeof d.role === 'string' ? d.role : null,
      rolledBack: typeof d.rolledBack === 'number' ? d.rolledBack : null,
      figures: ((auto ? d.figures : d.judged) as Figures | undefined) ?? null,
      previous: (d.previous as Figures | undefined) ?? null,
      maxErrorRatio: typeof d.maxErrorRatio === 'number' ? d.maxErrorRatio : null,
    });
  }
  return out;
}

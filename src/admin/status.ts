import { formatHostPort } from '../config/parse.js';
import type { Metrics } from '../metrics.js';
import type { Runtime, GenerationRecord } from '../reload/runtime.js';
import type { Generation } from '../reload/generation.js';
import type { ListenerPlan } from '../listeners/plan.js';
import type { WeightedConfig } from '../filters/weighted.js';
import type { FilterConfig, HostPort } from '../config/types.js';
import { listenerSplit } from '../reload/split.js';

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
  const base = { generation: g?.number ?? null, at: new Date().toISOString(), windowSeconds: Math.round(seconds * 10) / 10, generations };
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

import type { Config, HostPort, ListenerConfig } from '../config/types.js';
import { RetryBudget } from '../upstream/retry.js';
import type { Registry } from '../registry.js';
import type { Filter, FilterCreateContext, HeaderEdit, RoleView } from '../filters/api.js';
import { Metrics, RoleMetrics } from '../metrics.js';
import { EndpointSet, type EndpointTable } from '../upstream/endpoints.js';
import { SocketPool, type ListenSocket } from '../listeners/socket_pool.js';
import { assignAddresses } from '../listeners/address.js';
import { applyUpdates, discard, planComponents, revertUpdates, type ComponentOutcome } from '../components/lifecycle.js';
import { Generation, ListenerPlan, type ConfigSource } from './generation.js';
import { table, tableCopy } from '../table.js';
import { Slicer } from '../config/slicer.js';

export interface BuildContext {
  registry: Registry;
  endpoints: EndpointTable;
  sockets: SocketPool;
  metrics: Metrics;
  /** Auto-assigned hosts of the previous generation, kept per listener name. */
  previousHosts: ReadonlyMap<string, string>;
  readyTimeoutMs: number;
}

export type BuildResult =
  | { ok: true; generation: Generation; components: Record<string, ComponentOutcome> }
  | { ok: false; error: Error };

/**
 * Builds generation `number` from a validated config, as one transaction: every
 * component, endpoint lease and socket lease it takes is released again if any
 * step fails (init error, readiness timeout, a filter's create throwing, a bind
 * error), and the running generation never notices. Nothing is swapped here.
 */
export async function buildGeneration(prev: Generation | null, config: Config, number: number, source: ConfigSource,
  ctx: BuildContext): Promise<BuildResult> {
  const gen = new Generation(number, source, config);
  const undo: (() => unknown)[] = [];
  let components: Record<string, ComponentOutcome> = table();
  try {
    const cplan = await planComponents(prev?.components ?? new Map(), config.components, ctx.registry, ctx.readyTimeoutMs);
    undo.push(() => discard(cplan));
    components = cplan.outcomes;

    // Bind new addresses first among the steps that touch live state: a bind error
    // is the likeliest failure, and it must come before the in-place updates. Every
    // lease is awaited (allSettled) before failing, so a bind that succeeds after
    // another one failed is still undone, not leaked as a listening socket.
    const addresses = assignAddresses(config.listeners, ctx.previousHosts);
    const sockets = new Map<string, ListenSocket>();
    const leases = await Promise.allSettled(Object.keys(config.listeners).map(async (name) => {
      const address = addresses.get(name)!;
      const ls = await ctx.sockets.lease(SocketPool.key(name, address), address, name);
      undo.push(() => ctx.sockets.release(ls));
      gen.leases.push(ls);
      sockets.set(name, ls);
    }));
    const bindError = leases.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (bindError) throw bindError.reason;

    // In-place updates run before the filters are created: an update answered with
    // needReload replaces the component's slot with a new instance, and the filters
    // of this generation must get that instance, not the old one (which is closed
    // once the previous generation drains). A later failure reverts the updates.
    await applyUpdates(cplan, ctx.registry, ctx.readyTimeoutMs);
    undo.push(() => revertUpdates(cplan));
    components = cplan.outcomes;

    const slicer = new Slicer();
    for (const [name, lc] of Object.entries(config.listeners)) {
      // Thousands of listeners take a while to plan: the running generation keeps serving meanwhile.
      if (slicer.due) await slicer.yield();
      const vset = config.vsets[lc.vset]!;
      const roleNames = Object.keys(vset.roles);
      const routes = roleNames.map((r) => {
        const channel = vset.roles[r]!.map[lc.channel]!;
        const cc = config.roles[r]!.channels[channel]!;
        const eps = cc.endpoints.map((hp) => {
          const e = ctx.endpoints.acquire(hp, lc.timeouts.connectMs);
          undo.push(() => ctx.endpoints.release(e));
          if (cc.healthCheck) {
            const end = e.health.watch(cc.healthCheck);
            undo.push(end);
            gen.healthChecks.push(end);
          }
          return e;
        });
        return new EndpointSet(r, channel, eps, cc.outlierDetection ?? null);
      });
      const roles: RoleView[] = roleNames.map((r, i) => roleView(r, vset.roles[r]!.meta, routes[i]!));
      const address = addresses.get(name)!;
      const fctx: FilterCreateContext = {
        listener: name,
        vset: lc.vset,
        channel: lc.channel,
        protocol: lc.protocol,
        generation: number,
        roles,
        roleIndex: (r) => roleNames.indexOf(r),
        component: <T>(c: string) => {
          const slot = cplan.slots.get(c);
          if (!slot) throw new Error(`no component ${c}`);
          return slot.instance as T;
        },
      };
      const filters: Filter[] = lc.filters.map((f, i) => {
        try {
          return ctx.registry.filter(f.type)!.create(f.config, fctx);
        } catch (err) {
          throw new Error(`listener ${name}: filters[${i}] (${f.type}): create: ${(err as Error).message}`, { cause: err });
        }
      });
      const plan = new ListenerPlan({
        name, config: lc, generation: gen, address, roles, routes, filters,
        fallbackWeights: splitWeights(lc, roleNames, ctx.registry),
        responseHeaderEdits: responseHeaderEdits(lc, ctx.registry),
        retryBudget: lc.retries ? new RetryBudget(lc.retries, ctx.metrics.retryBudgetExhausted.labels(name)) : null,
        metrics: [...roleNames, ''].map((r) => new RoleMetrics(ctx.metrics, name, lc.vset, r)),
        connections: ctx.metrics.connectionsActive.labels(name),
        bytesIn: ctx.metrics.tcpBytes.labels(name, 'in'),
        bytesOut: ctx.metrics.tcpBytes.labels(name, 'out'),
        openTcp: ctx.metrics.openTcp,
        ...limitCounters(ctx.metrics, name, lc.protocol),
      });
      plan.socket = sockets.get(name)!;
      gen.plans.set(name, plan);
    }

    for (const [name, slot] of cplan.slots) {
      slot.use();
      gen.components.set(name, slot);
    }
    gen.endpoints.push(...collectEndpoints(gen));
    return { ok: true, generation: gen, components };
  } catch (err) {
    for (const u of undo.reverse()) {
      try { await u(); } catch { /* keep undoing */ }
    }
    return { ok: false, error: err as Error };
  }
}

/** A role as filters see it; `available` reads the endpoints' health as it is now. */
function roleView(name: string, meta: Record<string, string>, set: EndpointSet): RoleView {
  return Object.freeze({ name, meta: Object.freeze(tableCopy(meta)), get available() { return set.available; } });
}

/** The split work falls back by: the first filter's that has one (a `weighted`), else equal. */
function splitWeights(lc: ListenerConfig, roleNames: string[], registry: Registry): number[] {
  for (const f of lc.filters) {
    const d = registry.filter(f.type);
    if (!d?.splitWeights) continue;
    const w = d.splitWeights(f.config);
    return roleNames.map((r) => (Object.hasOwn(w, r) ? w[r]! : 0));
  }
  return roleNames.map(() => 1);
}

/** Every filter's listener-wide response edits, in filter order; null when there are none. */
function responseHeaderEdits(lc: ListenerConfig, registry: Registry): readonly HeaderEdit[] | null {
  const out: HeaderEdit[] = [];
  for (const f of lc.filters) {
    const d = registry.filter(f.type);
    if (d?.responseHeaderEdits) out.push(...d.responseHeaderEdits(f.config));
  }
  return out.length > 0 ? out : null;
}

/**
 * A listener's refusal and slow-upload counters, each series present from the start
 * at 0, so the first refusal shows as an increase (rate() sees nothing in a series
 * that appears with its first sample).
 */
function limitCounters(metrics: Metrics, listener: string, protocol: ListenerConfig['protocol']) {
  const refusedListener = metrics.connectionsRefused.labels(listener, 'listener');
  const refusedGlobal = metrics.connectionsRefused.labels(listener, 'global');
  const slowUploads = metrics.slowUploads.labels(listener);
  for (const c of [refusedListener, refusedGlobal]) c.inc(0);
  if (protocol === 'http') slowUploads.inc(0); // a tcp listener has no request bodies
  return { refusedListener, refusedGlobal, slowUploads };
}

function collectEndpoints(gen: Generation) {
  return [...gen.plans.values()].flatMap((p) => p.routes.flatMap((s) => s.endpoints));
}

/** The resolved address of each listener of a generation, as bound. */
export function boundAddresses(gen: Generation): Map<string, HostPort> {
  const out = new Map<string, HostPort>();
  for (const [name, p] of gen.plans) out.set(name, p.socket?.address ?? p.address);
  return out;
}

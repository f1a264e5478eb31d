import { resolve } from 'node:path';
import type { Config, HostPort, ListenerConfig } from '../config/types.js';
import type { RawConfig } from '../config/load.js';
import { RetryBudget } from '../upstream/retry.js';
import type { Registry } from '../registry.js';
import type { Filter, FilterCreateContext, HeaderEdit, RoleView } from '../filters/api.js';
import { Metrics, RoleMetrics } from '../metrics.js';
import type { Counter } from 'prom-client';
import { EndpointSet, type EndpointTable } from '../upstream/endpoints.js';
import { SocketPool, type PooledSocket } from '../listeners/socket_pool.js';
import { assignAddresses } from '../listeners/address.js';
import type { AccessLogs, AccessLogSink } from '../observe/access_log.js';
import { applyUpdates, discard, planComponents, revertUpdates, type ComponentOutcome, type ComponentPlan, type ComponentSlot } from '../components/lifecycle.js';
import { SwitchyardError } from '../errors.js';
import { Generation, type ConfigSource } from './generation.js';
import { ListenerPlan } from '../listeners/plan.js';
import { Disposer } from './disposer.js';
import { listenerSplit, weightsByRole } from './split.js';
import { tableCopy } from '../table.js';
import { Slicer } from '../config/slicer.js';
import type { TracingTable } from '../observe/tracing.js';
import { listenerTls, upstreamTls } from '../net/tls_material.js';

/** The process-wide things a build leases from and counts into. */
export interface BuildContext {
  registry: Registry;
  endpoints: EndpointTable;
  sockets: SocketPool;
  accessLogs: AccessLogs;
  tracings: TracingTable;
  metrics: Metrics;
  readyTimeoutMs: number;
  /** Where a release that fails is reported (a filter's or a component's close), now or when the generation closes. */
  log: (line: string) => void;
}

/** What to build: generation `number` of a checked `config`, and the `raw` config it came from. */
export interface BuildInput {
  number: number;
  source: ConfigSource;
  raw: RawConfig;
  config: Config;
}

export type BuildResult =
  | { ok: true; generation: Generation; components: Record<string, ComponentOutcome> }
  | { ok: false; error: SwitchyardError };

/**
 * Builds the next generation beside `prev` (the one serving, or null), as one
 * transaction: each step pushes the release of what it acquires (access log,
 * components, socket leases, endpoint leases and health checks, filters' close)
 * on one disposer stack. If any step fails (an init error, a readiness timeout, a
 * bind error, a filter's create throwing), the stack runs at once, last acquired
 * first, the in-place component updates are taken back, and the running
 * generation never notices; the error says which step failed and why, with its
 * `cause`. On success the generation keeps the stack for its close(). Nothing is
 * swapped here.
 */
export async function buildGeneration(prev: Generation | null, input: BuildInput, ctx: BuildContext): Promise<BuildResult> {
  const { config } = input;
  const resources = new Disposer((err) => ctx.log(err.message));
  try {
    const accessLog = await openAccessLog(input, ctx, resources);
    const tracing = input.config.tracing ? ctx.tracings.lease(input.config.tracing) : null;
    if (tracing !== null) resources.push(() => ctx.tracings.release(tracing));

    const componentPlan = await planComponents(prev?.components ?? new Map(), config.components, ctx.registry, ctx.readyTimeoutMs);
    resources.undoOnFailure(() => discard(componentPlan));

    // Bind new addresses first among the steps that touch live state: a bind error
    // is the likeliest failure, and it must come before the in-place updates.
    const addresses = assignAddresses(config.listeners, autoHosts(prev));
    const listening = new Disposer((err) => ctx.log(err.message));
    resources.push(() => listening.dispose());
    const sockets = await leaseSockets(config, addresses, ctx.sockets, listening);

    // In-place updates run before the filters are created: an update answered with
    // needReload replaces the component's slot with a new instance, and the filters
    // of this generation must get that instance, not the old one (which is closed
    // once the previous generation drains).
    await applyUpdates(componentPlan, ctx.registry, ctx.readyTimeoutMs);
    resources.undoOnFailure(() => revertUpdates(componentPlan));
    const components = useComponents(componentPlan, resources);

    const plans = new Map<string, ListenerPlan>();
    const generation = new Generation({
      number: input.number, source: input.source, config, raw: input.raw, previous: prev?.raw ?? null,
      registry: ctx.registry, accessLog, tracing, plans, components, sockets, resources, listening, log: ctx.log,
    });
    const slicer = new Slicer();
    for (const [name, listener] of Object.entries(config.listeners)) {
      // Thousands of listeners take a while to plan: the running generation keeps serving meanwhile.
      if (slicer.due) await slicer.yield();
      plans.set(name, buildListenerPlan({ name, listener, address: addresses.get(name)!, generation, components, ctx, resources }));
    }

    resources.commit();
    return { ok: true, generation, components: componentPlan.outcomes };
  } catch (err) {
    await resources.dispose();
    return { ok: false, error: buildError(err, input.number) };
  }
}

/**
 * The access log sink the generation writes to (null when `accessLog` is off),
 * leased first: a path that cannot be opened rejects the change before anything
 * else is built. Released last, once every line of the generation's work is queued.
 */
async function openAccessLog(input: BuildInput, ctx: BuildContext, resources: Disposer): Promise<AccessLogSink | null> {
  const settings = input.config.accessLog;
  if (!settings) return null;
  const path = settings.path === 'stdout' ? 'stdout' : resolve(input.raw.baseDir, settings.path);
  let sink: AccessLogSink;
  try {
    sink = await ctx.accessLogs.lease(path);
  } catch (err) {
    throw new SwitchyardError('SY_ERR_ACCESS_LOG_OPEN', `accessLog.path: cannot open ${path} for append: ${(err as Error).message}`, { cause: err });
  }
  resources.push(() => ctx.accessLogs.release(sink));
  return sink;
}

/**
 * One socket lease per listener, each release pushed on `listening` as it is
 * taken. Every lease is awaited (allSettled) before the first bind error is
 * thrown, so a bind that succeeds after another one failed is still released, not
 * leaked as a listening socket.
 */
async function leaseSockets(config: Config, addresses: ReadonlyMap<string, HostPort>, pool: SocketPool,
  listening: Disposer): Promise<Map<string, PooledSocket>> {
  const sockets = new Map<string, PooledSocket>();
  const leases = await Promise.allSettled(Object.keys(config.listeners).map(async (name) => {
    const address = addresses.get(name)!;
    const key = SocketPool.key(name, address);
    const socket = config.listeners[name]!.protocol === 'udp' ? await pool.leaseUdp(key, address, name) : await pool.lease(key, address, name);
    listening.push(() => pool.release(socket, config.drainTimeoutMs));
    sockets.set(name, socket);
  }));
  const bindError = leases.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (bindError) throw bindError.reason;
  return sockets;
}

/**
 * The generation's use of every component slot of the plan (final once the
 * updates ran): counted now, let go of when it closes. The last generation to let
 * go of an instance closes it; a close that fails is reported, the others still close.
 */
function useComponents(plan: ComponentPlan, resources: Disposer): ReadonlyMap<string, ComponentSlot> {
  const slots = new Map(plan.slots);
  for (const slot of slots.values()) slot.use();
  resources.push(async () => {
    // All at once: one slow close() does not hold up the others.
    const results = await Promise.allSettled([...slots.values()].map((slot) => slot.unuse()));
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason as Error);
    if (failed.length) throw new AggregateError(failed);
  });
  return slots;
}

/** What one listener's plan is built from. */
interface ListenerInput {
  name: string;
  listener: ListenerConfig;
  address: HostPort;
  generation: Generation;
  components: ReadonlyMap<string, ComponentSlot>;
  ctx: BuildContext;
  resources: Disposer;
}

/** One listener's plan: its endpoint sets per role, its filter chain, its metric children. */
function buildListenerPlan(input: ListenerInput): ListenerPlan {
  const { name, listener, ctx } = input;
  const config = input.generation.config;
  const vset = config.vsets[listener.vset]!;
  const roleNames = Object.keys(vset.roles);
  const routes = roleNames.map((role) => {
    const channel = vset.roles[role]!.map[listener.channel]!;
    return endpointSet(role, channel, config, listener, ctx, input.resources);
  });
  const roles: RoleView[] = roleNames.map((role, i) => roleView(role, vset.roles[role]!.meta, routes[i]!));
  const filters = createFilters(input, roles, roleNames);
  return new ListenerPlan({
    name, config: listener, generation: input.generation, address: input.address, roles, routes, filters,
    fallbackWeights: weightsByRole(listenerSplit(listener.filters, ctx.registry), roleNames),
    responseHeaderEdits: responseHeaderEdits(listener, ctx.registry),
    retryBudget: listener.retries ? new RetryBudget(listener.retries) : null,
    tls: listener.tls ? listenerTls(listener.tls) : null,
    metrics: [...roleNames, ''].map((role) => new RoleMetrics(ctx.metrics, name, listener.vset, role)),
    counters: {
      connections: ctx.metrics.connectionsActive.labels(name),
      udpFlows: ctx.metrics.udpFlowsActive.labels(name),
      tlsHandshakeErrors: handshakeErrors(ctx.metrics, name, listener.tls !== undefined),
      bytesIn: ctx.metrics.tcpBytes.labels(name, 'in'),
      bytesOut: ctx.metrics.tcpBytes.labels(name, 'out'),
      openTcp: ctx.metrics.openTcp,
      ...limitCounters(ctx.metrics, name, listener.protocol),
    },
  });
}

/** A role channel's endpoints as one listener routes to them: each endpoint leased, and its health check when the channel has one. */
function endpointSet(role: string, channel: string, config: Config, listener: ListenerConfig, ctx: BuildContext,
  resources: Disposer): EndpointSet {
  const channelConfig = config.roles[role]!.channels[channel]!;
  const endpoints = channelConfig.endpoints.map((hostPort) => {
    const endpoint = ctx.endpoints.acquire(hostPort, listener.timeouts.connectMs, channelConfig.tls ? upstreamTls(channelConfig.tls) : null, channelConfig.protocol);
    resources.push(() => ctx.endpoints.release(endpoint));
    if (channelConfig.healthCheck) resources.push(endpoint.health.watch(channelConfig.healthCheck, endpoint.tls));
    return endpoint;
  });
  return new EndpointSet(role, channel, endpoints, channelConfig.outlierDetection ?? null);
}

/**
 * The listener's filter functions, created in chain order. A filter that has a
 * `close` gets it pushed at once: it runs when the generation closes, or now if a
 * later step of the build fails.
 */
function createFilters(input: ListenerInput, roles: readonly RoleView[], roleNames: readonly string[]): Filter[] {
  const { name, listener, ctx } = input;
  const createContext: FilterCreateContext = {
    listener: name,
    vset: listener.vset,
    channel: listener.channel,
    protocol: listener.protocol,
    generation: input.generation.number,
    roles,
    roleIndex: (role) => roleNames.indexOf(role),
    component: <T>(component: string) => {
      const slot = input.components.get(component);
      if (!slot) throw new Error(`no component ${component}`);
      return slot.instance as T;
    },
  };
  return listener.filters.map((entry, i) => {
    const where = `listener ${name}: filters[${i}] (${entry.type})`;
    let filter: Filter;
    try {
      filter = ctx.registry.filter(entry.type)!.create(entry.config, createContext);
    } catch (err) {
      throw new SwitchyardError('SY_ERR_FILTER_CREATE', `${where}: create: ${(err as Error).message}`, { cause: err });
    }
    if (typeof filter?.close === 'function') input.resources.push(() => closeFilter(filter, where));
    return filter;
  });
}

/** Runs a filter's close; a throw or a rejection becomes SY_ERR_FILTER_CLOSE, naming the filter. */
async function closeFilter(filter: Filter, where: string): Promise<void> {
  try {
    await filter.close!();
  } catch (err) {
    throw new SwitchyardError('SY_ERR_FILTER_CLOSE', `${where}: close: ${(err as Error)?.message ?? String(err)}`, { cause: err });
  }
}

/** A role as filters see it; `available` reads the endpoints' health as it is now. */
function roleView(name: string, meta: Record<string, string>, set: EndpointSet): RoleView {
  return Object.freeze({ name, meta: Object.freeze(tableCopy(meta)), get available() { return set.available; } });
}

/** Every filter's listener-wide response edits, in filter order; null when there are none. */
function responseHeaderEdits(listener: ListenerConfig, registry: Registry): readonly HeaderEdit[] | null {
  const out: HeaderEdit[] = [];
  for (const entry of listener.filters) {
    const descriptor = registry.filter(entry.type);
    if (descriptor?.responseHeaderEdits) out.push(...descriptor.responseHeaderEdits(entry.config));
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
  for (const counter of [refusedListener, refusedGlobal]) counter.inc(0);
  if (protocol === 'http') slowUploads.inc(0); // a tcp listener has no request bodies
  return { refusedListener, refusedGlobal };
}

/** A listener's handshake failure counter; at 0 from the start on a TLS listener, so its first failure shows as an increase. */
function handshakeErrors(metrics: Metrics, listener: string, tls: boolean): Counter.Internal {
  const c = metrics.tlsHandshakeErrors.labels(listener);
  if (tls) c.inc(0);
  return c;
}

/** The hosts the previous generation's listeners were given automatically (no host in their address), by listener name. */
function autoHosts(gen: Generation | null): Map<string, string> {
  const out = new Map<string, string>();
  if (!gen) return out;
  for (const [name, plan] of gen.plans) if (!plan.config.address || plan.config.address.host === '') out.set(name, plan.address.host);
  return out;
}

/** A failed build's error as a SwitchyardError: the steps' own errors are; anything else (a plugin hook throwing) is wrapped. */
function buildError(err: unknown, number: number): SwitchyardError {
  if (err instanceof SwitchyardError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new SwitchyardError('SY_ERR_APPLY_FAILED', `generation ${number}: build: ${message}`, { cause: err });
}

/** The resolved address of each listener of a generation, as bound. */
export function boundAddresses(gen: Generation): Map<string, HostPort> {
  const out = new Map<string, HostPort>();
  for (const [name, p] of gen.plans) out.set(name, gen.sockets.get(name)?.address ?? p.address);
  return out;
}

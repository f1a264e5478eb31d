import type { Socket } from 'node:net';
import type { Counter, Gauge } from 'prom-client';
import type { HostPort, ListenerConfig, Protocol } from '../config/types.js';
import type { Filter, HeaderEdit, RoleView } from '../filters/api.js';
import type { HeaderVariables } from '../http/header_edits.js';
import type { RoleMetrics, TcpTally } from '../metrics.js';
import type { ListenerTls } from '../net/tls_material.js';
import type { AccessLogSink } from '../observe/access_log.js';
import type { Tracing } from '../observe/tracing.js';
import type { Linked } from '../linked_set.js';
import type { EventSinks } from '../observe/events.js';
import type { EndpointSet } from '../upstream/endpoints.js';
import type { RetryBudget } from '../upstream/retry.js';
import type { UpstreamRoute } from '../upstream/route.js';

/** Anything a unit of work can be cut short with when its generation's drain times out. */
export interface Destroyable extends Linked<Destroyable> {
  destroy(): unknown;
}

/**
 * What a unit of work needs of the generation it runs on: pin it while it runs,
 * and where its outcome is logged. The control path's Generation implements it.
 */
export interface GenerationPin {
  readonly number: number;
  /** Closed: its components are gone; a request still arriving on it is refused. */
  readonly closed: boolean;
  /** Where its requests and connections are logged; null when `accessLog` is off. */
  readonly accessLog: AccessLogSink | null;
  /** Where its requests are traced; null when `tracing` is off. */
  readonly tracing: Tracing | null;
  hold(work: Destroyable): void;
  release(work: Destroyable): void;
}

/** The metric children of a listener, resolved once per generation. */
export interface ListenerCounters {
  readonly connections: Gauge.Internal<'listener'>;
  /** udp: client flows open. */
  readonly udpFlows: Gauge.Internal<'listener'>;
  /** TLS listeners: connections that ended in their handshake. */
  readonly tlsHandshakeErrors: Counter.Internal;
  /** tcp: bytes client → upstream, and back. */
  readonly bytesIn: Counter.Internal;
  readonly bytesOut: Counter.Internal;
  /** tcp: the open connections whose bytes a scrape adds up (Metrics.openTcp). */
  readonly openTcp: Set<TcpTally>;
  /** Connections refused at a limit: this listener's own (maxConnections), and the global one (limits.maxConnections). */
  readonly refusedListener: Counter.Internal;
  readonly refusedGlobal: Counter.Internal;
}

/**
 * Everything one listener needs per request, resolved when its generation is
 * built (Fastify's route context): roles by index, the upstream route, metric
 * children, the filter functions. Read-only once built.
 */
export class ListenerPlan {
  readonly name: string;
  readonly config: ListenerConfig;
  readonly protocol: Protocol;
  readonly generation: GenerationPin;
  /** The address as configured or assigned (the bound one is the socket's). */
  readonly address: HostPort;
  readonly roles: readonly RoleView[];
  readonly filters: readonly Filter[];
  /** What the forwarders read: endpoints per role, the fallback split, time limits, retries. */
  readonly upstream: UpstreamRoute;
  /** Per role index, plus one at `roles.length` for work no role took: where its outcomes are counted and logged (observe/events.ts). */
  readonly sinks: readonly EventSinks[];
  /** http: the filters' response edits, for every answer on the listener (null: none). */
  readonly responseHeaderEdits: readonly HeaderEdit[] | null;
  readonly counters: ListenerCounters;
  /** TLS terminated on the listener's connections (null: plain). */
  readonly tls: ListenerTls | null;

  constructor(init: {
    name: string; config: ListenerConfig; generation: GenerationPin; address: HostPort; roles: RoleView[];
    routes: EndpointSet[]; metrics: RoleMetrics[]; filters: Filter[]; fallbackWeights: number[];
    retryBudget: RetryBudget | null; responseHeaderEdits?: readonly HeaderEdit[] | null; counters: ListenerCounters;
    tls?: ListenerTls | null;
  }) {
    const config = init.config;
    this.name = init.name;
    this.config = config;
    this.protocol = config.protocol;
    this.generation = init.generation;
    this.address = init.address;
    this.roles = init.roles;
    this.filters = init.filters;
    const log = init.generation.accessLog;
    this.sinks = init.metrics.map((metrics) => Object.freeze({ metrics, log }));
    this.responseHeaderEdits = init.responseHeaderEdits ?? null;
    this.tls = init.tls ?? null;
    this.counters = init.counters;
    const roleNames = init.roles.map((r) => r.name);
    const generation = String(init.generation.number);
    this.upstream = Object.freeze({
      listener: init.name,
      roleNames,
      routes: init.routes,
      fallbackWeights: init.fallbackWeights,
      upstreamMs: config.timeouts.upstreamMs,
      totalMs: config.timeouts.totalMs,
      connectMs: config.timeouts.connectMs,
      idleMs: config.timeouts.idleMs,
      retry: config.retries,
      budget: init.retryBudget,
      bufferBodyBytes: config.bufferBodyBytes,
      variables: [...roleNames, ''].map((role): HeaderVariables => [role, config.vset, init.name, generation]),
      roleMetrics: init.metrics,
    });
  }

  /** Template variables of an answer served by (or routed to) role `i` (-1: none). */
  variables(i: number): HeaderVariables {
    const v = this.upstream.variables;
    return v[i < 0 ? v.length - 1 : i]!;
  }

  /** The role's name, '' for -1. */
  roleName(i: number): string {
    return i < 0 ? '' : this.roles[i]!.name;
  }

  /** Counts an accepted client connection until it closes. */
  connectionOpened(socket: Socket): void {
    const g = this.counters.connections;
    g.inc();
    socket.once('close', () => g.dec());
  }
}

/** What the data path's entry points read of a listening socket (ListenSocket has it). */
export interface ServingSocket {
  /** The plan of the newest generation that has this address. */
  readonly plan: ListenerPlan | null;
  /** No generation serves this address any more. */
  readonly retired: boolean;
}

import diagnostics from 'node:diagnostics_channel';
import type { Metrics, RoleMetrics } from '../metrics.js';
import type { AccessLogSink } from './access_log.js';

/**
 * What the data and control paths publish on `node:diagnostics_channel`, once per
 * event, and only when someone subscribes (undici's pattern: `hasSubscribers` is
 * checked before a message is built). Metrics and the access log are subscribers
 * (observe/subscribers.ts); so may a test or an embedding application be. The
 * message shapes are a supported interface (README, "Observing"); `sinks` is not:
 * it carries the targets of switchyard's own subscribers.
 */
export const channels = {
  /** One HTTP request (or WebSocket upgrade) ended: RequestEvent. */
  request: diagnostics.channel('switchyard:request'),
  /** One TCP connection ended: ConnectionEvent. */
  connection: diagnostics.channel('switchyard:connection'),
  /** One try of an upstream exchange failed, or a retry starts: UpstreamTryEvent. */
  upstream: diagnostics.channel('switchyard:upstream'),
  /** A config change was applied or rejected: ReloadEvent. */
  reload: diagnostics.channel('switchyard:reload'),
  /** A component was added, updated, re-initialised or removed (or failed to be): ComponentEvent. */
  component: diagnostics.channel('switchyard:component'),
} as const;

/** Where switchyard's own subscribers count and log an event (not part of the interface). */
export interface EventSinks {
  readonly metrics: RoleMetrics;
  readonly log: AccessLogSink | null;
}

/** One HTTP request, when it ended (a tunnel: when it closed). */
export interface RequestEvent {
  readonly listener: string;
  readonly vset: string;
  /** The role that served it; '' when none did (a filter answered, switchyard refused it, the client left first). */
  readonly role: string;
  /** `host:port` of the last endpoint tried, or ''. */
  readonly endpoint: string;
  /** '' when Node's parser refused the request before there was one. */
  readonly method: string;
  readonly path: string;
  /** The status sent to the client; 499 when it left before the response started. */
  readonly status: number;
  /** The client connection's bytes since its previous request ended (a tunnel's: all of it). */
  readonly bytesIn: number;
  readonly bytesOut: number;
  /** From the request to its end (a tunnel's whole life). */
  readonly durationMs: number;
  /** From the request to its answer's start: the 101 for a tunnel, else durationMs. */
  readonly answerMs: number;
  readonly generation: number;
  /** A stable SY_ERR_* code when switchyard or the upstream failed it, or ''. */
  readonly error: string;
  /** Upstream tries it took: 1, plus each retry and move to the next endpoint; 0 when it was not forwarded. */
  readonly tries: number;
  /** The client's address. */
  readonly client: string;
  /** The subject of the client certificate a TLS listener with clientCa verified, or ''. */
  readonly clientCert: string;
  /** A WebSocket upgrade. */
  readonly upgrade: boolean;
  /** A gRPC call: its status's canonical name (OK, UNAVAILABLE, …); '' for any other request. */
  readonly grpcStatus: string;
  /** The trace id of the request's span when `tracing` sampled it; '' otherwise. */
  readonly traceId: string;
  readonly sinks: EventSinks;
}

/** One TCP connection, when it closed. */
export interface ConnectionEvent {
  readonly listener: string;
  readonly vset: string;
  readonly role: string;
  readonly endpoint: string;
  /** ok, error (the upstream or switchyard failed it), refused (a filter refused it). */
  readonly result: 'ok' | 'error' | 'refused';
  /** tcp: a connection; udp: a client flow (source ip:port) of a udp listener, ended when idle. */
  readonly protocol: 'tcp' | 'udp';
  /** Client → upstream, and back. */
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly durationMs: number;
  readonly generation: number;
  readonly error: string;
  /** Connects it took: 1, plus each move to the next endpoint; 0 when it was not forwarded. */
  readonly tries: number;
  readonly client: string;
  readonly sinks: EventSinks;
}

/** A try of an upstream exchange failed (`failed`, with its reason), a retry of one starts (`retried`), or the retry budget refused one (`budget-exhausted`). */
export interface UpstreamTryEvent {
  readonly kind: 'failed' | 'retried' | 'budget-exhausted';
  readonly listener: string;
  /** The role of the try that failed. */
  readonly role: string;
  /** failed: connect-failure, reset, timeout, protocol, tls, or ejected (that failure ejected the endpoint); retried: why (a status when the upstream answered). */
  readonly reason: string;
  readonly sinks: Pick<EventSinks, 'metrics'>;
}

/** A config change, as the reload log line and the access log tell it. */
export interface ReloadRecord {
  /** The new generation; for a rejected change, the one that keeps serving (null before the first). */
  generation: number | null;
  source: string;
  result: 'applied' | 'invalid' | 'failed';
  durationMs: number;
  changes: ReloadChanges | null;
  error: string;
}

export interface ReloadChanges {
  listeners: { added: string[]; removed: string[]; changed: string[] };
  /** Components that changed, and how (unchanged ones are left out). */
  components: Record<string, string>;
}

/** Where a control-path event is counted and logged: the runtime's metrics, the serving generation's access log. */
export interface ControlSinks {
  readonly metrics: Metrics;
  readonly log: AccessLogSink | null;
}

/** A config change, applied or rejected (switchyard:reload). */
export interface ReloadEvent extends Readonly<ReloadRecord> {
  readonly sinks: ControlSinks;
}

/** A component change of one config change (switchyard:component). */
export interface ComponentEvent {
  readonly component: string;
  /** added, updated, reinitialized, removed. */
  readonly mode: string;
  readonly result: 'success' | 'failed';
  /** The generation it was applied with; null when the change failed. */
  readonly generation: number | null;
  readonly sinks: Pick<ControlSinks, 'metrics'>;
}

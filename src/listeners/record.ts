import type { Span } from '@opentelemetry/api';
import { endConnectionSpan, endRequestSpan, traceIdOf } from '../observe/tracing.js';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { channels, type ConnectionEvent, type RequestEvent } from '../observe/events.js';
import type { ListenerPlan } from './plan.js';

/**
 * The outcome of a unit of work, published once on diagnostics_channel (events.ts)
 * for metrics, the access log and anyone else subscribed. Nothing is built when no
 * one subscribes.
 */

/** Per client connection: its byte counters when its previous request was recorded. */
const kMark = Symbol('switchyard.bytesMark');
type Marked = Socket & { [kMark]?: { read: number; written: number } };

/** What an HTTP unit knows when it ends. */
export interface HttpRecord {
  /** Role index that served it, -1 for none. */
  role: number;
  /** null when Node's parser refused the request before there was one. */
  req: { readonly method?: string | undefined; readonly url?: string | undefined } | null;
  socket: Socket;
  /** The client's address (read when the work began: a closed socket has forgotten it). */
  client: string;
  status: number;
  durationMs: number;
  answerMs: number;
  endpoint: string;
  error: string;
  tries: number;
  upgrade: boolean;
  /** A gRPC call's status name; '' (or absent) for any other request. */
  grpcStatus?: string;
}

// hot path
/** Publishes one HTTP request's outcome (switchyard:request), and ends its span (when traced) with it. */
export function publishRequest(plan: ListenerPlan, r: HttpRecord, span: Span | null = null): void {
  if (span !== null) {
    endRequestSpan(span, {
      vset: plan.config.vset, role: plan.roleName(r.role), generation: plan.generation.number, endpoint: r.endpoint,
      status: r.status, tries: r.tries, grpcStatus: r.grpcStatus ?? '', error: r.error,
    });
  }
  const ch = channels.request;
  if (!ch.hasSubscribers) return;
  // The connection's bytes since its previous request was recorded: request line, headers and
  // body in; status line, headers and body out (nginx's $request_length and $bytes_sent).
  const socket = r.socket as Marked;
  const read = socket.bytesRead;
  const written = socket.bytesWritten;
  const mark = socket[kMark];
  let bytesIn = read;
  let bytesOut = written;
  if (mark === undefined) socket[kMark] = { read, written };
  else {
    bytesIn -= mark.read;
    bytesOut -= mark.written;
    mark.read = read;
    mark.written = written;
  }
  const event: RequestEvent = {
    listener: plan.name,
    vset: plan.config.vset,
    role: plan.roleName(r.role),
    endpoint: r.endpoint,
    method: r.req?.method ?? '',
    path: r.req?.url ?? '',
    status: r.status,
    bytesIn,
    bytesOut,
    durationMs: r.durationMs,
    answerMs: r.answerMs,
    generation: plan.generation.number,
    error: r.error,
    tries: r.tries,
    client: r.client,
    clientCert: plan.tls?.verifyClients === true ? clientSubject(socket) : '',
    upgrade: r.upgrade,
    grpcStatus: r.grpcStatus ?? '',
    traceId: traceIdOf(span),
    sinks: plan.sinks[r.role < 0 ? plan.roles.length : r.role]!,
  };
  ch.publish(event);
}

/** The subject of the client certificate a TLS listener verified (`CN=…,O=…`), or ''. */
export function clientSubject(socket: Socket): string {
  const peer = (socket as Partial<TLSSocket>).getPeerCertificate?.();
  if (peer === undefined || peer.subject === undefined) return '';
  return Object.entries(peer.subject).map(([k, v]) => `${k}=${Array.isArray(v) ? v.join('+') : String(v)}`).join(',');
}

/** What a TCP unit knows when it ends. */
export interface TcpRecord {
  role: number;
  client: string;
  result: ConnectionEvent['result'];
  durationMs: number;
  endpoint: string;
  error: string;
  tries: number;
  bytesIn: number;
  bytesOut: number;
  /** tcp by default; udp for a flow of a udp listener. */
  protocol?: 'tcp' | 'udp';
}

/** Publishes one TCP connection's (or UDP flow's) outcome (switchyard:connection), and ends its span (when traced) with it. */
export function publishConnection(plan: ListenerPlan, r: TcpRecord, span: Span | null = null): void {
  if (span !== null) {
    endConnectionSpan(span, {
      vset: plan.config.vset, role: plan.roleName(r.role), generation: plan.generation.number, endpoint: r.endpoint,
      result: r.result, tries: r.tries, bytesIn: r.bytesIn, bytesOut: r.bytesOut, error: r.error,
    });
  }
  const ch = channels.connection;
  if (!ch.hasSubscribers) return;
  const event: ConnectionEvent = {
    listener: plan.name,
    vset: plan.config.vset,
    role: plan.roleName(r.role),
    endpoint: r.endpoint,
    result: r.result,
    protocol: r.protocol ?? 'tcp',
    bytesIn: r.bytesIn,
    bytesOut: r.bytesOut,
    durationMs: r.durationMs,
    generation: plan.generation.number,
    error: r.error,
    tries: r.tries,
    client: r.client,
    sinks: plan.sinks[r.role < 0 ? plan.roles.length : r.role]!,
  };
  ch.publish(event);
}

import type { AccessLogSink } from './access_log.js';
import type { ConnectionEvent, ReloadRecord, RequestEvent } from './events.js';

/**
 * The access log's line shapes: one JSON object per line, `type` http, tcp or
 * reload. Fields are the same for every line of a type (empty string or 0 when not
 * applicable), so a log pipeline can rely on them.
 */

/**
 * One line for an HTTP request (a WebSocket tunnel too: status 101, logged when it
 * closes). Bytes are the client connection's, on the wire, since the previous
 * request on it ended (nginx's $request_length and $bytes_sent).
 */
export function logHttp(sink: AccessLogSink, e: RequestEvent): void {
  sink.write(JSON.stringify({
    time: new Date(Date.now() - e.durationMs).toISOString(),
    type: 'http',
    listener: e.listener,
    vset: e.vset,
    role: e.role,
    endpoint: e.endpoint,
    method: e.method,
    path: e.path,
    status: e.status,
    bytesIn: e.bytesIn,
    bytesOut: e.bytesOut,
    durationMs: round(e.durationMs),
    generation: e.generation,
    upstreamError: e.error,
    client: e.client,
    ...(e.clientCert !== '' ? { clientCert: e.clientCert } : {}),
    ...(e.grpcStatus !== '' ? { grpcStatus: e.grpcStatus } : {}),
    ...(e.traceId !== '' ? { traceId: e.traceId } : {}),
  }));
}

/** One line for a TCP connection, when it closes. */
export function logTcp(sink: AccessLogSink, e: ConnectionEvent): void {
  sink.write(JSON.stringify({
    time: new Date(Date.now() - e.durationMs).toISOString(),
    type: e.protocol,
    listener: e.listener,
    vset: e.vset,
    role: e.role,
    endpoint: e.endpoint,
    result: e.result,
    bytesIn: e.bytesIn,
    bytesOut: e.bytesOut,
    durationMs: round(e.durationMs),
    generation: e.generation,
    upstreamError: e.error,
    client: e.client,
  }));
}

/** One line for a config change, applied or rejected. */
export function logReload(sink: AccessLogSink, r: ReloadRecord): void {
  sink.write(JSON.stringify({
    time: new Date().toISOString(),
    type: 'reload',
    generation: r.generation,
    source: r.source,
    result: r.result,
    durationMs: round(r.durationMs),
    changes: r.changes,
    error: r.error,
  }));
}

/** Milliseconds to three decimals: enough, and short. */
function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

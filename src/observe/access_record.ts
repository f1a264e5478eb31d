import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { ListenerPlan } from '../reload/generation.js';
import type { AccessLogSink } from './access_log.js';

/**
 * The access log's line shapes: one JSON object per line, `type` http, tcp or
 * reload. Fields are the same for every line of a type (empty string or 0 when not
 * applicable), so a log pipeline can rely on them.
 */

/** Per client connection: its byte counters when its previous request was logged. */
const kMark = Symbol('switchyard.accessLogMark');
type Marked = Socket & { [kMark]?: { read: number; written: number } };

/** What the HTTP data path knows about a request when it ends. */
export interface HttpOutcome {
  plan: ListenerPlan;
  /** null when Node's parser refused the request before there was one (400, 408, 431). */
  req: Pick<IncomingMessage, 'method' | 'url'> | null;
  /** The client connection (req.socket is null once the response closed). */
  socket: Socket;
  /** The role that served it; '' when none did (a filter answered). */
  role: string;
  status: number;
  durationMs: number;
  /** `host:port` of the last endpoint tried, or ''. */
  endpoint: string;
  /** The upstream error (its code), or ''. */
  error: string;
}

/**
 * One line for an HTTP request (a WebSocket tunnel too: status 101, logged when it
 * closes). Bytes are the client connection's, on the wire, since the previous
 * request on it ended: request line, headers and body in; status line, headers and
 * body out (nginx's $request_length and $bytes_sent). A tunnel's bytes are all of it.
 */
export function logHttp(sink: AccessLogSink, o: HttpOutcome): void {
  const s = o.socket as Marked;
  const mark = s[kMark];
  const read = s.bytesRead;
  const written = s.bytesWritten;
  let bytesIn = read;
  let bytesOut = written;
  if (mark === undefined) s[kMark] = { read, written };
  else {
    bytesIn -= mark.read;
    bytesOut -= mark.written;
    mark.read = read;
    mark.written = written;
  }
  const plan = o.plan;
  sink.write(JSON.stringify({
    time: new Date(Date.now() - o.durationMs).toISOString(),
    type: 'http',
    listener: plan.name,
    vset: plan.config.vset,
    role: o.role,
    endpoint: o.endpoint,
    method: o.req?.method ?? '',
    path: o.req?.url ?? '',
    status: o.status,
    bytesIn,
    bytesOut,
    durationMs: round(o.durationMs),
    generation: plan.generation.number,
    upstreamError: o.error,
    client: s.remoteAddress ?? '',
  }));
}

/** What the TCP data path knows about a connection when it ends. */
export interface TcpOutcome {
  plan: ListenerPlan;
  socket: Socket;
  role: string;
  /** ok, error (the upstream failed), refused (a filter refused it). */
  result: 'ok' | 'error' | 'refused';
  durationMs: number;
  endpoint: string;
  error: string;
  /** Client → upstream, and back. */
  bytesIn: number;
  bytesOut: number;
}

/** One line for a TCP connection, when it closes. */
export function logTcp(sink: AccessLogSink, o: TcpOutcome): void {
  const plan = o.plan;
  sink.write(JSON.stringify({
    time: new Date(Date.now() - o.durationMs).toISOString(),
    type: 'tcp',
    listener: plan.name,
    vset: plan.config.vset,
    role: o.role,
    endpoint: o.endpoint,
    result: o.result,
    bytesIn: o.bytesIn,
    bytesOut: o.bytesOut,
    durationMs: round(o.durationMs),
    generation: plan.generation.number,
    upstreamError: o.error,
    client: o.socket.remoteAddress ?? '',
  }));
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

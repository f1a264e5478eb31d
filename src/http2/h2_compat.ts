import type { IncomingMessage, ServerResponse } from 'node:http';
import { Http2ServerRequest, Http2ServerResponse, type IncomingHttpHeaders, type OutgoingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import { isGrpc } from './grpc.js';

/**
 * An HTTP/2 stream as the HTTP data path reads a request: Node's compatibility
 * objects, shaped where the data path reads HTTP/1 fields. The filters, the access
 * log and the upstream side then treat a stream as one more HTTP request (every
 * stream is one unit of work), without a second code path per protocol.
 *
 * - `rawHeaders` is the HTTP/1 view: `host` (from `:authority`) first, then the
 *   regular fields; the pseudo-headers stay in `headers` only (filters may read
 *   `:path` or `:scheme`), where `host` is set from `:authority` too.
 * - `socket` is the client connection itself (Node's is a view of the stream, which
 *   forgets the connection once the stream closed): its address, its bytes, its
 *   client certificate.
 * - The response's `destroyed` says the client reset the stream (or it was cut)
 *   before the answer ended; `shouldKeepAlive` has no meaning (HTTP/1 paths set it).
 */
export class H2Request extends Http2ServerRequest {
  constructor(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, options: object, rawHeaders: string[]) {
    const authority = headers[':authority'];
    if (authority !== undefined && headers.host === undefined) headers.host = authority;
    super(stream, headers, options as never, h1View(rawHeaders ?? flatten(headers), headers.host));
  }
}

export class H2Response extends Http2ServerResponse {
  shouldKeepAlive = true;

  /** Headers that end the stream (gRPC's trailers-only form): one HEADERS frame with END_STREAM. */
  respondTrailersOnly(status: number, flat: readonly string[]): void {
    const headers: OutgoingHttpHeaders = { ':status': status };
    for (let i = 0; i < flat.length; i += 2) {
      const name = flat[i]!.toLowerCase();
      const had = headers[name];
      headers[name] = had === undefined ? flat[i + 1]! : Array.isArray(had) ? [...had, flat[i + 1]!] : [String(had), flat[i + 1]!];
    }
    const stream = this.stream;
    // The client may have reset the stream in the same turn (its own deadline, say).
    if (stream.destroyed || stream.closed) return;
    this.statusCode = status;
    stream.respond(headers, { endStream: true });
  }

  /**
   * The answer's HEADERS. HTTP/2 has no reason phrase (RFC 9113 §8.3.2): one given is
   * dropped, not warned about on every answer. Node's own writeHead always asks for
   * trailers, which costs every stream a frame and a round of events after its body
   * (about a fifth of a bare Node stream's CPU, measured); here they are asked for only where
   * they may come: a gRPC call, a client that said `TE: trailers`, an answer whose
   * length is not known (an HTTP/1.1 upstream's chunked one). An answer that declared
   * its Content-Length to a client that did not ask for trailers loses any it had (a
   * proxy may drop them, RFC 9110 §6.5.1).
   */
  override writeHead(status: number, reason?: unknown, headers?: unknown): this {
    const given = (typeof reason === 'string' ? headers : reason) as readonly string[] | OutgoingHttpHeaders | undefined;
    const stream = this.stream;
    if (stream.destroyed || stream.closed || stream.headersSent) return super.writeHead(status, given as never);
    this.statusCode = status;
    const out = mergeFields(this.getHeaders(), given);
    out[':status'] = status;
    const req = this.req as H2Request | undefined;
    const trailers = out['content-length'] === undefined || (req !== undefined && (isGrpc(req) || acceptsTrailers(req.headers.te)));
    stream.respond(out, { endStream: this.writableEnded, waitForTrailers: trailers });
    return this;
  }
}

/**
 * The fields setHeader set (`set`, lower case), with writeHead's: a name writeHead
 * gives replaces setHeader's, its repeats kept. Connection is dropped, as Node's
 * compatibility response drops it (HTTP/2 has no connection-specific fields).
 */
function mergeFields(set: OutgoingHttpHeaders, given: readonly string[] | OutgoingHttpHeaders | undefined): OutgoingHttpHeaders {
  if (given === undefined) return set;
  // Only when setHeader set some: which names writeHead has given already.
  let replaced: Set<string> | null = null;
  for (const _ in set) {
    replaced = new Set();
    break;
  }
  const put = (name: string, value: string | number | readonly string[] | undefined): void => {
    if (value === undefined) return;
    const lower = name.toLowerCase();
    if (lower === 'connection') return;
    const had = set[lower];
    if (had === undefined || (replaced !== null && !replaced.has(lower))) {
      set[lower] = value as string | number | string[];
      replaced?.add(lower);
      return;
    }
    const more = Array.isArray(value) ? value as string[] : [String(value)];
    set[lower] = Array.isArray(had) ? [...had, ...more] : [String(had), ...more];
  };
  if (Array.isArray(given)) for (let i = 0; i < given.length; i += 2) put(given[i] as string, given[i + 1] as string);
  else for (const name of Object.keys(given)) put(name, (given as OutgoingHttpHeaders)[name]);
  return set;
}

/** TE lists `trailers` (RFC 9110 §10.1.4): the client will read trailer fields. */
function acceptsTrailers(te: string | string[] | undefined): boolean {
  return typeof te === 'string' && /(?:^|,)\s*trailers\s*(?:[,;]|$)/i.test(te);
}

/** The connection under each session (sessions.ts registers it when the session starts). */
const connections = new WeakMap<object, Socket>();

export function registerConnection(session: ServerHttp2Session, socket: Socket): void {
  connections.set(session, socket);
}

/** The client connection a stream came on; undefined once the stream is gone (the sessions never hand such a one on). */
export function connectionOf(stream: ServerHttp2Stream): Socket | undefined {
  const session = stream.session;
  return session === undefined ? undefined : connections.get(session);
}

Object.defineProperty(H2Request.prototype, 'socket', {
  get(this: H2Request): Socket | undefined {
    return connectionOf(this.stream);
  },
});

// Node's compatibility response has no `destroyed` (its types say it has).
Object.defineProperty(H2Response.prototype, 'destroyed', {
  get(this: H2Response): boolean {
    const stream = this.stream as ServerHttp2Stream | undefined;
    return stream === undefined || ((stream.destroyed || stream.closed) && !this.writableFinished);
  },
});

function flatten(headers: IncomingHttpHeaders): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const one of v) out.push(k, one);
    else out.push(k, v);
  }
  return out;
}

/** Regular fields only, with `host` first: the order an HTTP/1 request has them in. */
function h1View(raw: readonly string[], host: string | string[] | undefined): string[] {
  const out: string[] = typeof host === 'string' ? ['host', host] : [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.charCodeAt(0) === 58 /* : */ || name === 'host') continue;
    out.push(name, raw[i + 1]!);
  }
  return out;
}

/** Whether a request came on an HTTP/2 stream (an HTTP/1 head may say HTTP/2.0; the edge refuses that one). */
export function isH2(req: IncomingMessage): boolean {
  return (req as object) instanceof H2Request;
}

/** The HTTP/2 stream of a request that came on one. */
export function streamOf(req: IncomingMessage): ServerHttp2Stream {
  return (req as unknown as H2Request).stream;
}

/** A stream's request and response as the data path types them (they present the surface it reads). */
export function asHttp1(req: H2Request, res: H2Response): [IncomingMessage, ServerResponse] {
  return [req as unknown as IncomingMessage, res as unknown as ServerResponse];
}

import { connect as netConnect, type Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { H2Connection, type H2Stream, type StreamHandler } from '../http2/h2_client.js';
import type { Readable } from 'node:stream';
import { isTlsError, UpstreamTimeout } from '../errors.js';
import { trailerFields } from '../http/hop_by_hop.js';
import type { UpstreamTls } from '../net/tls_material.js';
import type { ResponseHead } from '../http1/message_head.js';
import { isFieldValue, isToken } from '../http1/message_head.js';
import { ExchangeAborted, PoolClosed, RequestBodyBroken, type ExchangeHandler, type UpstreamPool, type UpstreamRequest } from './h1_pool.js';
import { timeoutAfterIo } from './timeout.js';
import { EndpointTls } from './tls_connect.js';

/**
 * HTTP/2 to one upstream endpoint (a channel with `protocol: http2`): h2c, or ALPN
 * h2 over TLS. A few connections carry many streams each: a request takes the first
 * connection with a stream free under the peer's SETTINGS_MAX_CONCURRENT_STREAMS,
 * else a new connection is opened (never a queue: a request waits at most for one
 * connect). A connection that got GOAWAY takes no new stream; a stream it did not
 * process (REFUSED_STREAM, or above GOAWAY's last stream) is sent again once on a
 * fresh connection when its body can be sent again. An idle connection is kept alive
 * with PING and closed after IDLE_MS with no stream. The connections are
 * switchyard's own HTTP/2 client (http2/h2_client.ts).
 */

/** Streams assumed allowed before the peer's SETTINGS say (RFC 9113 §6.5.2 has no limit by default; we cap it). */
const DEFAULT_MAX_STREAMS = 100;
/** A connection with no stream this long is closed. */
const IDLE_MS = 60_000;
/** An idle connection is PINGed this often, so a dead peer is found before a request is sent on it. */
const PING_MS = 15_000;

/** The HTTP/2 fields an HTTP/1 request may carry that an HTTP/2 one may not (RFC 9113 §8.2.2); `host` becomes :authority. */
const NOT_IN_H2 = new Set(['host', 'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te']);

class H2Conn {
  readonly h2: H2Connection;
  connected = false;
  idleTimer: NodeJS.Timeout | null = null;
  pingTimer: NodeJS.Timeout | null = null;
  /** Streams opened before the connection was up: told once it is. */
  waiting: (() => void)[] = [];

  constructor(h2: H2Connection) {
    this.h2 = h2;
  }

  get active(): number {
    return this.h2.active;
  }

  /** Streams it may take now: under the peer's limit, or before its SETTINGS came, under `assumed`. */
  capacity(assumed: number): number {
    return Math.min(this.h2.maxConcurrentStreams ?? assumed, DEFAULT_MAX_STREAMS * 10) - this.h2.active;
  }

  get usable(): boolean {
    return this.h2.usable;
  }
}

/** A stream the upstream did not process: safe to send again, whatever the method. */
class StreamRefused extends Error {
  readonly code = 'SY_STREAM_REFUSED';
  constructor() {
    super('the upstream refused the stream without processing it (REFUSED_STREAM or GOAWAY)');
    this.name = 'StreamRefused';
  }
}

export class H2Pool implements UpstreamPool {
  readonly protocol = 'http2';
  readonly host: string;
  readonly port: number;
  readonly #authority: string;
  readonly #connectTimeoutMs: number;
  readonly #tls: EndpointTls | null;
  readonly #conns = new Set<H2Conn>();
  /** The endpoint's SETTINGS_MAX_CONCURRENT_STREAMS, as its connections last said (DEFAULT_MAX_STREAMS until one did). */
  #learned = DEFAULT_MAX_STREAMS;
  #closed = false;
  #drained: (() => void) | null = null;
  #closing: Promise<void> | null = null;

  constructor(host: string, port: number, authority: string, connectTimeoutMs: number, tls: UpstreamTls | null = null,
    log: (line: string) => void = () => {}) {
    this.host = host;
    this.port = port;
    this.#authority = authority;
    this.#connectTimeoutMs = connectTimeoutMs;
    this.#tls = tls === null ? null : new EndpointTls(tls, ['h2'], authority, log);
  }

  // hot path
  dispatch(req: UpstreamRequest, ex: ExchangeHandler): void {
    this.#dispatch(req, ex, false);
  }

  #dispatch(req: UpstreamRequest, ex: ExchangeHandler, again: boolean): void {
    if (this.#closed) {
      ex.onError(new PoolClosed());
      return;
    }
    let fields: string[];
    try {
      fields = this.#fields(req);
    } catch (err) {
      ex.onError(err as Error);
      return;
    }
    let conn: H2Conn | null = null;
    for (const c of this.#conns) {
      if (c.usable && c.capacity(this.#learned) > 0) {
        conn = c;
        break;
      }
    }
    conn ??= this.#open();
    this.#start(conn, req, fields, ex, again);
  }

  /**
   * The request's fields as HTTP/2 has them: pseudo-fields first, names in lower case,
   * no connection-specific ones. Throws, as Node's http2 did, for a name that is not a
   * token or a value with CR, LF, NUL or other controls (a plugin's header edit, say).
   */
  #fields(req: UpstreamRequest): string[] {
    let authority = this.#authority;
    const h = req.headers;
    const out = [':method', req.method, ':scheme', this.#tls === null ? 'http' : 'https', ':authority', '', ':path', req.path];
    let grpc = false;
    for (let i = 0; i < h.length; i += 2) {
      const name = h[i]!.toLowerCase();
      const value = h[i + 1]!;
      if (!isToken(name) || !isFieldValue(value)) {
        throw Object.assign(new TypeError(`Invalid HTTP/2 request field ["${name}"]`), { code: 'ERR_INVALID_HTTP_TOKEN' });
      }
      if (name === 'host') authority = value;
      if (NOT_IN_H2.has(name)) continue;
      if (name === 'content-type' && value.startsWith('application/grpc')) grpc = true;
      // Repeated fields stay separate lines (cookie may be split, RFC 9113 §8.2.3).
      out.push(name, value);
    }
    out[5] = authority;
    // gRPC servers need it to know the client reads trailers (the only TE HTTP/2 allows).
    if (grpc) out.push('te', 'trailers');
    return out;
  }

  /** A new connection; its failures reach the streams on it. */
  #open(): H2Conn {
    const tls = this.#tls;
    const socket = this.#socket();
    const h2 = new H2Connection(socket, {
      closed: () => {
        clearTimeout(timer);
        this.#stopTimers(conn);
        this.#conns.delete(conn);
        if (this.#conns.size === 0) this.#drained?.();
      },
      // A new connection is assumed to take what the endpoint's last SETTINGS allowed (a burst to
      // a cold connection is not all refused past its limit); 0 is one connection's pause, not that.
      settings: (max) => { if (max > 0) this.#learned = max; },
    });
    const conn = new H2Conn(h2);
    this.#conns.add(conn);
    const ms = this.#connectTimeoutMs;
    const timer = timeoutAfterIo(() => {
      if (!conn.connected) socket.destroy(new UpstreamTimeout('connect', `connect timeout after ${ms} ms`));
    }, ms);
    socket.once(tls === null ? 'connect' : 'secureConnect', () => {
      clearTimeout(timer);
      if (tls !== null && (socket as TLSSocket).alpnProtocol !== 'h2') {
        socket.destroy(Object.assign(new Error('the upstream did not take h2 by ALPN'), { code: 'ERR_SSL_NO_APPLICATION_PROTOCOL' }));
        return;
      }
      conn.connected = true;
      for (const go of conn.waiting.splice(0)) go();
      this.#idle(conn);
    });
    socket.on('error', (err: Error) => {
      if (isTlsError((err as NodeJS.ErrnoException).code)) this.tlsFailed(err);
    });
    return conn;
  }

  #socket(): Socket {
    const options = { host: this.host, port: this.port, noDelay: true, keepAlive: true, keepAliveInitialDelay: 60_000 };
    return this.#tls === null ? netConnect(options) : this.#tls.connect(options);
  }

  #start(conn: H2Conn, req: UpstreamRequest, fields: string[], ex: ExchangeHandler, again: boolean): void {
    const body = req.body;
    this.#stopTimers(conn);
    let done = false;
    let answered = false;
    let trailers: string[] | null = null;
    let stream: H2Stream;
    const finish = (err: Error | null): void => {
      if (done) return;
      done = true;
      // A streamed body the exchange no longer sends (answered, or failed) is read away, not held paused.
      if (body !== null && !Buffer.isBuffer(body) && !body.readableEnded) body.resume();
      if (err !== null) {
        stream.cancel();
        if (conn.active === 0) this.#idle(conn);
        // Not processed by the upstream: once more, on a connection that is not going away.
        if (err instanceof StreamRefused && !again && !answered && (body === null || Buffer.isBuffer(body))) {
          // A connection that refuses streams takes no more: it closes once its others are done.
          conn.h2.close();
          this.#dispatch(req, ex, true);
          return;
        }
        ex.onError(err);
      } else ex.onComplete(trailers);
    };
    const abort = (err?: Error): void => finish(err ?? new ExchangeAborted());
    let drain: (() => void) | null = null;
    const handler: StreamHandler = {
      onResponse: (status, flat, end) => {
        answered = true;
        const head: ResponseHead = { status, reason: '', headers: flat, trailersOnly: end, ...NO_FRAMING };
        if (!ex.onHeaders(status, flat, () => stream.resume(), '', head)) abort();
      },
      onData: (chunk) => done || ex.onData(chunk),
      onTrailers: (flat) => { trailers = flat; },
      onEnd: () => {
        if (conn.active === 0) this.#idle(conn);
        finish(null);
      },
      onClose: (code, err, refused) => {
        if (conn.active === 0) this.#idle(conn);
        if (done) return;
        // Only a stream the upstream says it did not process goes again (RFC 9113 §8.7).
        if (refused) finish(new StreamRefused());
        else if (err !== null) finish(err);
        else finish(streamError(code, answered, !conn.h2.usable));
      },
      onDrain: () => drain?.(),
    };
    const endStream = body === null || (Buffer.isBuffer(body) && body.length === 0);
    stream = conn.h2.request(fields, endStream, handler);
    const sent = (): void => { if (!done) ex.onRequestSent(); };
    if (conn.connected) ex.onConnect(abort);
    else conn.waiting.push(() => { if (!done) ex.onConnect(abort); });
    if (endStream) sent();
    else if (Buffer.isBuffer(body)) stream.end(body, sent);
    else drain = pump(body!, stream, sent, () => finish(new RequestBodyBroken()));
  }

  /** A connection with no stream: PINGed while it idles, closed after IDLE_MS. */
  #idle(conn: H2Conn): void {
    if (!conn.connected || conn.active > 0 || this.#closed) {
      if (this.#closed && conn.active === 0) conn.h2.close();
      return;
    }
    this.#stopTimers(conn);
    conn.idleTimer = setTimeout(() => conn.h2.close(), IDLE_MS).unref();
    conn.pingTimer = setInterval(() => conn.h2.ping(() => {}), PING_MS).unref();
  }

  #stopTimers(conn: H2Conn): void {
    if (conn.idleTimer !== null) clearTimeout(conn.idleTimer);
    if (conn.pingTimer !== null) clearInterval(conn.pingTimer);
    conn.idleTimer = conn.pingTimer = null;
  }

  tlsFailed(err: Error): void {
    this.#tls?.failed(err);
  }

  /** Takes no more streams; each connection closes (GOAWAY) once its streams ended. */
  close(): Promise<void> {
    this.#closed = true;
    for (const conn of this.#conns) {
      this.#stopTimers(conn);
      conn.h2.close();
    }
    if (this.#conns.size === 0) return Promise.resolve();
    this.#closing ??= new Promise((resolve) => { this.#drained = resolve; });
    return this.#closing;
  }

  destroy(): Promise<void> {
    const closed = this.close();
    for (const conn of this.#conns) conn.h2.destroy();
    return closed;
  }
}

/** HTTP/2 frames its own messages: nothing of HTTP/1's framing applies. */
const NO_FRAMING = { contentLength: -1, chunked: false, close: false, keepAliveMs: -1, connectionOptions: null };

/** A stream that closed before its end: the upstream reset it, or its connection went. */
function streamError(code: number, answered: boolean, connectionGone: boolean): Error {
  const err = new Error(`the upstream ${answered ? 'reset the stream during its answer' : 'reset the stream'} (HTTP/2 error ${code})${connectionGone ? ', its connection closed' : ''}`);
  return Object.assign(err, { code: 'ECONNRESET' });
}

/** Streams a request body onto the HTTP/2 stream with backpressure; `broken` when the client's body broke off. Returns what the stream's drain calls. */
function pump(body: Readable, stream: H2Stream, sent: () => void, broken: () => void): () => void {
  let ended = false;
  body.on('data', (chunk: Buffer) => {
    // A stream that ended (answered before the whole body came) takes no more: the rest is read away, not held.
    if (!stream.write(chunk) && !stream.closed) body.pause();
  });
  body.once('end', () => {
    ended = true;
    // The client's own trailers (a chunked HTTP/1.1 body's, or an HTTP/2 stream's) go on after the body.
    const raw = (body as { rawTrailers?: string[] }).rawTrailers;
    const trailers = raw === undefined || raw.length === 0 ? null : trailerFields(raw);
    if (trailers !== null) for (let i = 0; i < trailers.length; i += 2) trailers[i] = trailers[i]!.toLowerCase();
    stream.end(undefined, sent, trailers);
  });
  body.once('close', () => { if (!ended) broken(); });
  body.resume();
  return () => body.resume();
}

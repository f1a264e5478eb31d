import { connect as h2Connect, constants, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import { connect as netConnect, type Socket } from 'node:net';
import type { Readable } from 'node:stream';
import { isTlsError, UpstreamTimeout } from '../errors.js';
import type { UpstreamTls } from '../net/tls_material.js';
import type { ResponseHead } from '../http1/message_head.js';
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
 * with PING and closed after IDLE_MS with no stream.
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
  readonly session: ClientHttp2Session;
  active = 0;
  connected = false;
  goingAway = false;
  idleTimer: NodeJS.Timeout | null = null;
  pingTimer: NodeJS.Timeout | null = null;
  /** Streams opened before the connection was up: told once it is. */
  waiting: (() => void)[] = [];

  constructor(session: ClientHttp2Session) {
    this.session = session;
  }

  get capacity(): number {
    const max = this.connected ? this.session.remoteSettings.maxConcurrentStreams ?? DEFAULT_MAX_STREAMS : DEFAULT_MAX_STREAMS;
    return Math.min(max, DEFAULT_MAX_STREAMS * 10) - this.active;
  }

  get usable(): boolean {
    return !this.goingAway && !this.session.closed && !this.session.destroyed;
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
    let headers: OutgoingHttpHeaders;
    try {
      headers = this.#headers(req);
    } catch (err) {
      ex.onError(err as Error);
      return;
    }
    let conn: H2Conn | null = null;
    for (const c of this.#conns) {
      if (c.usable && c.capacity > 0) {
        conn = c;
        break;
      }
    }
    conn ??= this.#open(ex);
    if (conn === null) return;
    this.#start(conn, req, headers, ex, again);
  }

  #headers(req: UpstreamRequest): OutgoingHttpHeaders {
    const out: OutgoingHttpHeaders = Object.create(null) as OutgoingHttpHeaders;
    out[':method'] = req.method;
    out[':path'] = req.path;
    out[':scheme'] = this.#tls === null ? 'http' : 'https';
    let authority = this.#authority;
    const h = req.headers;
    let grpc = false;
    for (let i = 0; i < h.length; i += 2) {
      const name = h[i]!.toLowerCase();
      const value = h[i + 1]!;
      if (name === 'host') authority = value;
      if (NOT_IN_H2.has(name)) continue;
      if (name === 'content-type' && value.startsWith('application/grpc')) grpc = true;
      const had = out[name];
      // Repeated fields stay separate lines (set-cookie in a request is rare; cookie may be split, RFC 9113 §8.2.3).
      out[name] = had === undefined ? value : Array.isArray(had) ? [...had, value] : [String(had), value];
    }
    out[':authority'] = authority;
    // gRPC servers need it to know the client reads trailers (the only TE HTTP/2 allows).
    if (grpc) out.te = 'trailers';
    return out;
  }

  /** A new connection (null when it could not even start: the handler has its error). */
  #open(ex: ExchangeHandler): H2Conn | null {
    const tls = this.#tls;
    let session: ClientHttp2Session;
    try {
      session = h2Connect(`${tls === null ? 'http' : 'https'}://${this.#authority}`, {
        createConnection: () => this.#socket(),
        // Node's default queues pings and settings without bound; a few are enough.
        maxOutstandingPings: 2,
        peerMaxConcurrentStreams: DEFAULT_MAX_STREAMS,
      });
    } catch (err) {
      ex.onError(err as Error);
      return null;
    }
    const conn = new H2Conn(session);
    this.#conns.add(conn);
    const ms = this.#connectTimeoutMs;
    const timer = timeoutAfterIo(() => {
      if (!conn.connected) session.destroy(new UpstreamTimeout('connect', `connect timeout after ${ms} ms`));
    }, ms);
    session.once('connect', () => {
      clearTimeout(timer);
      conn.connected = true;
      for (const go of conn.waiting.splice(0)) go();
      this.#idle(conn);
    });
    session.on('goaway', () => { conn.goingAway = true; });
    session.on('error', (err: Error) => {
      if (isTlsError((err as NodeJS.ErrnoException).code)) this.tlsFailed(err);
    });
    session.once('close', () => {
      clearTimeout(timer);
      this.#stopTimers(conn);
      this.#conns.delete(conn);
      if (this.#conns.size === 0) this.#drained?.();
    });
    return conn;
  }

  #socket(): Socket {
    const options = { host: this.host, port: this.port, noDelay: true, keepAlive: true, keepAliveInitialDelay: 60_000 };
    return this.#tls === null ? netConnect(options) : this.#tls.connect(options);
  }

  #start(conn: H2Conn, req: UpstreamRequest, headers: OutgoingHttpHeaders, ex: ExchangeHandler, again: boolean): void {
    const session = conn.session;
    const body = req.body;
    let stream: ClientHttp2Stream;
    try {
      const endStream = body === null || (Buffer.isBuffer(body) && body.length === 0);
      stream = session.request(headers, endStream ? END_STREAM : MORE_TO_COME);
    } catch (err) {
      ex.onError(err as Error);
      return;
    }
    conn.active++;
    this.#stopTimers(conn);
    let done = false;
    let answered = false;
    let trailers: string[] | null = null;
    const finish = (err: Error | null): void => {
      if (done) return;
      done = true;
      if (err !== null) {
        if (!stream.destroyed) stream.close(constants.NGHTTP2_CANCEL);
        // Not processed by the upstream: once more, on a connection that is not going away.
        if (err instanceof StreamRefused && !again && !answered && (body === null || Buffer.isBuffer(body))) {
          conn.goingAway = true;
          this.#dispatch(req, ex, true);
          return;
        }
        ex.onError(err);
      } else ex.onComplete(trailers);
    };
    const abort = (err?: Error): void => finish(err ?? new ExchangeAborted());
    // A connection that failed (a refused connect, a TLS failure) destroys its streams with its error.
    let failure: Error | null = null;
    // A stream still pending when its connection failed is cancelled with the connection's error as the cause.
    stream.on('error', (err: Error) => { failure ??= err.cause instanceof Error ? err.cause : err; });
    // The end of the body is the answer's end only if the stream then closes cleanly (a reset also ends it).
    let ended = false;
    stream.once('close', () => {
      conn.active--;
      if (conn.active === 0) this.#idle(conn);
      if (done) return;
      const code = stream.rstCode;
      if (ended && code === constants.NGHTTP2_NO_ERROR) {
        finish(null);
        return;
      }
      if (code === constants.NGHTTP2_REFUSED_STREAM || (code === constants.NGHTTP2_NO_ERROR && !answered && conn.goingAway)) finish(new StreamRefused());
      else finish(failure !== null && (!conn.connected || (failure as NodeJS.ErrnoException).code !== 'ERR_HTTP2_STREAM_ERROR') ? failure : streamError(code, answered, session));
    });
    stream.on('response', (h: IncomingHttpHeaders, flags: number) => {
      answered = true;
      const status = Number(h[':status']);
      const flat = flatten(h);
      const head: ResponseHead = { status, reason: '', headers: flat, trailersOnly: (flags & constants.NGHTTP2_FLAG_END_STREAM) !== 0, ...NO_FRAMING };
      if (!ex.onHeaders(status, flat, () => stream.resume(), '', head)) abort();
    });
    stream.on('trailers', (h: IncomingHttpHeaders) => { trailers = flatten(h); });
    stream.on('data', (chunk: Buffer) => {
      if (!done && !ex.onData(chunk)) stream.pause();
    });
    stream.once('end', () => { ended = true; });
    const sent = (): void => { if (!done) ex.onRequestSent(); };
    if (conn.connected) ex.onConnect(abort);
    else conn.waiting.push(() => { if (!done) ex.onConnect(abort); });
    if (body === null) sent();
    else if (Buffer.isBuffer(body)) {
      if (body.length === 0) sent();
      else stream.end(body, sent);
    } else pump(body, stream, sent, () => finish(new RequestBodyBroken()));
  }

  /** A connection with no stream: PINGed while it idles, closed after IDLE_MS. */
  #idle(conn: H2Conn): void {
    if (!conn.connected || conn.active > 0 || this.#closed) {
      if (this.#closed && conn.active === 0) conn.session.close();
      return;
    }
    this.#stopTimers(conn);
    conn.idleTimer = setTimeout(() => conn.session.close(), IDLE_MS).unref();
    conn.pingTimer = setInterval(() => {
      if (!conn.session.destroyed) conn.session.ping(() => {});
    }, PING_MS).unref();
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
      conn.session.close();
    }
    if (this.#conns.size === 0) return Promise.resolve();
    this.#closing ??= new Promise((resolve) => { this.#drained = resolve; });
    return this.#closing;
  }

  destroy(): Promise<void> {
    const closed = this.close();
    for (const conn of this.#conns) conn.session.destroy();
    return closed;
  }
}

/**
 * session.request's options with Node's priority defaults given: Node sets each one
 * missing on its copy of the options, and those additions cost a stream more than
 * the rest of the checks together (about 2 % of an h2 → h2 proxy's CPU, profiled).
 */
const PRIORITY = { weight: constants.NGHTTP2_DEFAULT_WEIGHT, parent: 0, exclusive: false, silent: false };
const END_STREAM = { endStream: true, ...PRIORITY };
const MORE_TO_COME = { endStream: false, ...PRIORITY };

/** HTTP/2 frames its own messages: nothing of HTTP/1's framing applies. */
const NO_FRAMING = { contentLength: -1, chunked: false, close: false, keepAliveMs: -1, connectionOptions: null };

/** A stream that closed before its end: the upstream reset it, or its connection went. */
function streamError(code: number, answered: boolean, session: ClientHttp2Session): Error {
  const err = new Error(`the upstream ${answered ? 'reset the stream during its answer' : 'reset the stream'} (HTTP/2 error ${code})${session.destroyed ? ', its connection closed' : ''}`);
  return Object.assign(err, { code: 'ECONNRESET' });
}

function flatten(h: IncomingHttpHeaders): string[] {
  const out: string[] = [];
  for (const name in h) {
    if (name.charCodeAt(0) === 58 /* : */) continue;
    const v = h[name];
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const one of v) out.push(name, one);
    else out.push(name, String(v));
  }
  return out;
}

/** Streams a request body onto the HTTP/2 stream with backpressure; `broken` when the client's body broke off. */
function pump(body: Readable, stream: ClientHttp2Stream, sent: () => void, broken: () => void): void {
  let ended = false;
  body.on('data', (chunk: Buffer) => {
    if (!stream.write(chunk)) body.pause();
  });
  stream.on('drain', () => body.resume());
  body.once('end', () => {
    ended = true;
    stream.end(sent);
  });
  body.once('close', () => { if (!ended) broken(); });
  body.resume();
}

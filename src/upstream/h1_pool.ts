import { connect as netConnect, type NetConnectOpts, type Socket } from 'node:net';
import type { Readable } from 'node:stream';
import { isTlsError, UpstreamTimeout } from '../errors.js';
import { SHARED_READ_BUFFER as READ_BUFFER } from '../net/node_internals.js';
import type { UpstreamTls } from '../net/tls_material.js';
import { ChunkedDecoder, LAST_CHUNK, chunkHead, lastChunk } from '../http1/chunked.js';
import { trailerFields } from '../http/hop_by_hop.js';
import { HEAD_END, MalformedMessage, isFieldValue, isToken, parseResponseHead, type ResponseHead } from '../http1/message_head.js';
import { timeoutAfterIo } from './timeout.js';
import { EndpointTls } from './tls_connect.js';

/**
 * HTTP/1.1 to one upstream endpoint on its own sockets: a pool of keep-alive
 * connections, each carrying one exchange at a time. The request head is written
 * once, as one string; the body goes as bytes (as it came, or chunked when its
 * length is unknown); of the answer only the head and its framing are parsed, and
 * the body is handed on as the slices the socket read.
 *
 * A connection goes back to the pool only when its answer ended exactly where its
 * framing said: a byte beyond it (an upstream that sends more than its
 * Content-Length, a body on a 204), an answer framed by the connection's close, a
 * Connection: close, or a request body still being sent, and the connection is
 * closed instead, so nothing one answer left can become part of the next.
 */

/** What one exchange sends. */
export interface UpstreamRequest {
  readonly method: string;
  /** origin-form target */
  readonly path: string;
  /** name, value, …: written as they are (after a check), with a Host added when none is there. */
  headers: string[];
  /** Buffer: sent whole; a stream: sent as it comes, `length` bytes (-1: unknown, sent chunked). */
  body: Buffer | Readable | null;
  length: number;
}

/** The exchange's callbacks, in the order they come: onConnect, onRequestSent, onHeaders, onData…, onComplete; or onError, once, at any point. */
export interface ExchangeHandler {
  /** A connection carries the request now; `abort` ends the exchange (onError follows with its error). */
  onConnect(abort: (err?: Error) => void): void;
  /** The whole request is written. */
  onRequestSent(): void;
  /** The answer's head; false ends the exchange. `resume` restarts a body paused by onData's false. */
  onHeaders(status: number, headers: string[], resume: () => void, reason: string, head: ResponseHead): boolean;
  /**
   * A piece of the body; false: pause until `resume`. The chunk may be a view of a
   * read buffer the next read reuses: valid during the call only, copied if kept.
   */
  onData(chunk: Buffer): boolean;
  onComplete(trailers: string[] | null): void;
  onError(err: Error): void;
}

/** What the forwarder sends exchanges through: an endpoint's HTTP/1.1 pool, or its HTTP/2 one (h2_pool.ts). */
export interface UpstreamPool {
  readonly protocol: 'http1' | 'http2';
  /** Sends one exchange; every failure reaches `ex.onError`. */
  dispatch(req: UpstreamRequest, ex: ExchangeHandler): void;
  /** Logs a TLS failure with its cause (rate-limited), and forgets the TLS session to resume. */
  tlsFailed(err: Error): void;
  /** Takes no more exchanges; resolves once the running ones ended. */
  close(): Promise<void>;
  /** Ends every connection now. */
  destroy(): Promise<void>;
}

/** The exchange was ended by its own side (abort without a reason). */
export class ExchangeAborted extends Error {
  readonly code = 'SY_EXCHANGE_ABORTED';
  constructor() {
    super('the exchange was aborted');
    this.name = 'ExchangeAborted';
  }
}

/** The client's body broke off (the client left, or sent less than it said). */
export class RequestBodyBroken extends Error {
  readonly code = 'SY_REQUEST_BODY_BROKEN';
  constructor() {
    super('the request body broke off');
    this.name = 'RequestBodyBroken';
  }
}

/** The upstream closed the connection before its answer ended. */
class UpstreamClosed extends Error {
  readonly code = 'ECONNRESET';
  constructor(what: string) {
    super(`the upstream closed the connection ${what}`);
    this.name = 'UpstreamClosed';
  }
}

/** The pool was closed or destroyed: switchyard's doing, never the upstream's. */
export class PoolClosed extends Error {
  readonly code = 'SY_POOL_CLOSED';
  constructor() {
    super('the upstream connection pool is closed');
    this.name = 'PoolClosed';
  }
}

function ignore(): void {}

// Plain upstream sockets read into READ_BUFFER (Node's `onread`): an answer's bytes are
// parsed and handed on in the same call. What is kept past the call (a head cut in two)
// is copied; the handler copies the body (ExchangeHandler.onData).

/** Methods whose request may be sent twice (RFC 9110 §9.2.2). */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/** How a reused connection the upstream had closed fails: its FIN, a reset, or a write into it. */
function isStale(err: Error): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return err instanceof UpstreamClosed || code === 'ECONNRESET' || code === 'EPIPE';
}

/** The longest response head read (Node's default maxHeaderSize). */
const MAX_HEAD = 16 * 1024;
/**
 * An idle connection is closed after this (or a second before the upstream's own
 * Keep-Alive: timeout), shorter than Node's default server keepAliveTimeout (5 s),
 * so we close it before the upstream does and never write into a dying one.
 */
const IDLE_MS = 4_000;

const enum Read { Idle, Head, Length, Chunked, UntilClose }

class H1Connection {
  readonly socket: Socket;
  readonly #pool: H1Pool;
  #ex: ExchangeHandler | null = null;
  /** Bumped per exchange: an abort handed to an earlier one ends nothing. */
  #seq = 0;
  #read = Read.Idle;
  #pending: Buffer | null = null;
  #remaining = 0;
  #decoder: ChunkedDecoder | null = null;
  #headRequest = false;
  /** The request is written whole. */
  #sent = true;
  #body: Readable | null = null;
  #chunkedBody = false;
  /** The request head, until the body's first bytes go with it. */
  #head: string | null = null;
  #reusable = true;
  idleSince = 0;
  idleMs = IDLE_MS;
  /** The exchange's request and head, for a retry on a fresh connection (see #fail). */
  #req: UpstreamRequest | null = null;
  #requestHead = '';
  /** The exchange runs on a connection taken from the idle list. */
  #reused = false;
  /** A byte of the answer came. */
  #answered = false;
  readonly #onChunk = (data: Buffer): void => {
    const ex = this.#ex;
    if (ex !== null && !ex.onData(data)) this.socket.pause();
  };
  readonly #resume = (): void => {
    this.socket.resume();
  };

  /** `onread`: the socket reads into READ_BUFFER and calls `read` (plain TCP); else its 'data' events are read (TLS). */
  constructor(socket: Socket, pool: H1Pool, onread: boolean) {
    this.socket = socket;
    this.#pool = pool;
    if (!onread) socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('end', () => this.#onEnd());
    socket.on('error', (err) => {
      if (isTlsError((err as NodeJS.ErrnoException).code)) pool.tlsFailed(err);
      this.#fail(err);
    });
    socket.on('close', () => {
      this.#fail(new UpstreamClosed('before its answer ended'));
      pool.forget(this);
    });
    socket.on('drain', () => {
      if (this.#body?.isPaused()) this.#body.resume();
    });
  }

  // hot path
  /** Carries one exchange: `head` is the request head, already built and checked. */
  start(req: UpstreamRequest, head: string, ex: ExchangeHandler, reused = false): void {
    this.#ex = ex;
    this.#req = req;
    this.#requestHead = head;
    this.#reused = reused;
    this.#answered = false;
    const seq = ++this.#seq;
    this.#read = Read.Head;
    this.#headRequest = req.method === 'HEAD';
    this.#reusable = true;
    ex.onConnect((err) => {
      if (this.#seq === seq && this.#ex !== null) this.#fail(err ?? new ExchangeAborted());
    });
    if (this.#ex !== ex) return; // aborted at once
    const socket = this.socket;
    const body = req.body;
    if (body === null || Buffer.isBuffer(body)) {
      this.#sent = true;
      if (body === null || body.length === 0) socket.write(head, 'latin1');
      else {
        socket.cork();
        socket.write(head, 'latin1');
        socket.write(body);
        socket.uncork();
      }
      ex.onRequestSent();
      return;
    }
    this.#sent = false;
    this.#chunkedBody = req.length < 0;
    // The head goes with the body's first bytes: a body the client's parser then refuses
    // at its start leaves the upstream nothing of the request.
    this.#head = head;
    this.#stream(body);
  }

  /** Sends a streamed body as it comes, at the pace the upstream takes it. */
  #stream(body: Readable): void {
    this.#body = body;
    // Its errors end in 'close' (handled): this one only keeps an error from being unhandled.
    if (!body.listeners('error').includes(ignore)) body.on('error', ignore);
    body.on('data', this.#bodyData).once('end', this.#bodyEnd).once('close', this.#bodyClose);
  }

  readonly #bodyData = (chunk: Buffer): void => {
    const socket = this.socket;
    let ok: boolean;
    if (chunk.length === 0) return;
    socket.cork();
    this.#writeHead();
    if (this.#chunkedBody) {
      socket.write(chunkHead(chunk.length), 'latin1');
      socket.write(chunk);
      ok = socket.write('\r\n', 'latin1');
    } else ok = socket.write(chunk);
    socket.uncork();
    if (!ok) this.#body!.pause();
  };

  #writeHead(): void {
    const head = this.#head;
    if (head === null) return;
    this.#head = null;
    this.socket.write(head, 'latin1');
  }

  readonly #bodyEnd = (): void => {
    this.#writeHead();
    if (this.#chunkedBody) {
      // The client's own trailers (a chunked HTTP/1.1 body's, or an HTTP/2 stream's) go on after the last chunk.
      const raw = (this.#body as { rawTrailers?: string[] } | null)?.rawTrailers;
      const trailers = raw === undefined || raw.length === 0 ? null : trailerFields(raw);
      this.socket.write(trailers === null || trailers.length === 0 ? LAST_CHUNK : lastChunk(trailers), 'latin1');
    }
    this.#unhookBody();
    this.#sent = true;
    this.#ex?.onRequestSent();
  };

  readonly #bodyClose = (): void => {
    // Closed before its end: the client left, or its body broke off.
    if (!this.#sent) this.#fail(new RequestBodyBroken());
  };

  #unhookBody(): void {
    this.#head = null;
    const body = this.#body;
    if (body === null) return;
    this.#body = null;
    body.off('data', this.#bodyData).off('end', this.#bodyEnd).off('close', this.#bodyClose);
  }

  // hot path
  /** The `onread` callback's bytes (a view of READ_BUFFER). */
  read(n: number): void {
    this.#onData(READ_BUFFER.subarray(0, n));
  }

  // hot path
  #onData(chunk: Buffer): void {
    const ex = this.#ex;
    if (ex === null) {
      // Bytes on an idle connection: nothing they say can be trusted with the next request.
      this.socket.destroy();
      return;
    }
    this.#answered = true;
    try {
      this.#parse(chunk, ex);
    } catch (err) {
      this.#fail(err instanceof MalformedMessage ? err : err as Error);
    }
  }

  // hot path
  #parse(chunk: Buffer, ex: ExchangeHandler): void {
    let buf = chunk;
    let at = 0;
    if (this.#read === Read.Head) {
      if (this.#pending !== null) {
        buf = Buffer.concat([this.#pending, chunk]);
        this.#pending = null;
      }
      for (;;) {
        const end = buf.indexOf(HEAD_END, at);
        if (end === -1) {
          if (buf.length - at > MAX_HEAD) throw new MalformedMessage(`a response head over ${MAX_HEAD} bytes`);
          // A copy: the bytes may be READ_BUFFER's, which the next read overwrites.
          this.#pending = Buffer.from(at === 0 ? buf : buf.subarray(at));
          return;
        }
        if (end - at > MAX_HEAD) throw new MalformedMessage(`a response head over ${MAX_HEAD} bytes`);
        const head = parseResponseHead(buf.toString('latin1', at, end));
        at = end + 4;
        const status = head.status;
        if (status < 200) {
          // 1xx informational (100 Continue, 103 Early Hints): not forwarded; the answer follows.
          if (status === 101) throw new MalformedMessage('101 Switching Protocols to a request that asked for no upgrade');
          continue;
        }
        this.#answer(head, ex);
        if (this.#ex !== ex) return;
        break;
      }
    }
    this.#readBody(buf, at, ex);
  }

  /** Takes an answer's head: its framing, then the handler's verdict. */
  #answer(head: ResponseHead, ex: ExchangeHandler): void {
    if (head.close) this.#reusable = false;
    this.idleMs = IDLE_MS;
    if (head.keepAliveMs >= 0) {
      if (head.keepAliveMs <= 1_000) this.#reusable = false;
      else this.idleMs = Math.min(IDLE_MS, head.keepAliveMs - 1_000);
    }
    const status = head.status;
    if (this.#headRequest || status === 204 || status === 304) {
      this.#read = Read.Length;
      this.#remaining = 0;
    } else if (head.chunked) {
      this.#read = Read.Chunked;
      this.#decoder = new ChunkedDecoder();
    } else if (head.contentLength >= 0) {
      this.#read = Read.Length;
      this.#remaining = head.contentLength;
    } else {
      this.#read = Read.UntilClose;
      this.#reusable = false;
    }
    if (!ex.onHeaders(status, head.headers, this.#resume, head.reason, head) && this.#ex === ex) this.#fail(new ExchangeAborted());
  }

  // hot path
  #readBody(buf: Buffer, at: number, ex: ExchangeHandler): void {
    const n = buf.length;
    switch (this.#read) {
      case Read.Length: {
        const take = Math.min(this.#remaining, n - at);
        if (take > 0) {
          this.#remaining -= take;
          this.#onChunk(at === 0 && take === n ? buf : buf.subarray(at, at + take));
          if (this.#ex !== ex) return;
        }
        if (this.#remaining === 0) this.#complete(ex, at + take < n, null);
        return;
      }
      case Read.Chunked: {
        const decoder = this.#decoder!;
        const end = decoder.feed(buf, at, this.#onChunk);
        if (end >= 0 && this.#ex === ex) this.#complete(ex, end < n, decoder.trailers.length > 0 ? decoder.trailers : null);
        return;
      }
      case Read.UntilClose:
        if (at < n) this.#onChunk(at === 0 ? buf : buf.subarray(at));
        return;
      default:
    }
  }

  /** The answer ended where its framing said (`extra`: bytes came after it). */
  #complete(ex: ExchangeHandler, extra: boolean, trailers: string[] | null): void {
    this.#ex = null;
    this.#read = Read.Idle;
    this.#decoder = null;
    if (!this.#sent) {
      // Answered before the upload ended: the rest of it must not reach the connection's next request.
      this.#unhookBody();
      this.#reusable = false;
    }
    if (this.#reusable && !extra) {
      // Paused by the last chunk's backpressure: the client's drain that would resume it
      // never comes for an answer that ended, and a paused socket reads nothing more
      // (neither the next answer nor the upstream's FIN).
      if (this.socket.isPaused()) this.socket.resume();
      this.#pool.idle(this);
    } else this.socket.destroy();
    ex.onComplete(trailers);
  }

  #onEnd(): void {
    const ex = this.#ex;
    if (ex !== null && this.#read === Read.UntilClose) this.#complete(ex, false, null);
    else if (ex !== null) this.#fail(new UpstreamClosed(this.#read === Read.Head ? 'without answering' : 'in the middle of its answer'));
    this.socket.destroy();
  }

  /**
   * Ends the exchange (if one runs) with `err`, and the connection with it. A kept-alive
   * connection the upstream closed just as it was reused (no byte of an answer came:
   * the race every keep-alive client has) is not the request's failure: an idempotent
   * request whose body is whole is sent again once, on a fresh connection (as nginx and
   * browsers do).
   */
  #fail(err: Error): void {
    const ex = this.#ex;
    this.#ex = null;
    this.#read = Read.Idle;
    this.#unhookBody();
    this.socket.destroy();
    if (ex === null) return;
    const req = this.#req!;
    if (this.#reused && !this.#answered && isStale(err) && IDEMPOTENT.has(req.method) && (req.body === null || Buffer.isBuffer(req.body))) {
      this.#pool.again(req, this.#requestHead, ex);
      return;
    }
    ex.onError(err);
  }
}

/** Who reads a plain socket's bytes: its connection, once made. */
interface Reader { conn: H1Connection | null }

/**
 * A socket's `onread`. Made outside #connect: a closure made there would share the
 * scope of its other closures, and the socket would hold its first exchange (the
 * forwarder, its request and response) for as long as the connection lives.
 */
function onread(reader: Reader): { buffer: Buffer; callback: (n: number) => boolean } {
  return { buffer: READ_BUFFER, callback: (n) => { reader.conn?.read(n); return true; } };
}

/** The keep-alive connections to one endpoint. */
export class H1Pool implements UpstreamPool {
  readonly protocol = 'http1';
  readonly host: string;
  readonly port: number;
  /** For a request that came without one (HTTP/1.0). */
  readonly #hostHeader: string;
  readonly #connectTimeoutMs: number;
  readonly #tls: EndpointTls | null;
  /** Most recently used last: it is taken first (its socket is the warmest, the others may idle out). */
  readonly #idle: H1Connection[] = [];
  readonly #all = new Set<H1Connection>();
  #sweeper: NodeJS.Timeout | null = null;
  #closed = false;
  #drained: (() => void) | null = null;
  #closing: Promise<void> | null = null;

  constructor(host: string, port: number, hostHeader: string, connectTimeoutMs: number, tls: UpstreamTls | null = null,
    log: (line: string) => void = () => {}) {
    this.host = host;
    this.port = port;
    this.#hostHeader = hostHeader;
    this.#connectTimeoutMs = connectTimeoutMs;
    this.#tls = tls === null ? null : new EndpointTls(tls, ['http/1.1'], hostHeader, log);
  }

  // hot path
  /** Sends one exchange on an idle connection, or a new one. Errors reach `ex.onError`. */
  dispatch(req: UpstreamRequest, ex: ExchangeHandler): void {
    if (this.#closed) {
      ex.onError(new PoolClosed());
      return;
    }
    let head: string;
    try {
      head = requestHead(req, this.#hostHeader);
    } catch (err) {
      ex.onError(err as Error);
      return;
    }
    const idle = this.#idle;
    let now = -1;
    while (idle.length > 0) {
      const conn = idle.pop()!;
      if (conn.socket.destroyed) continue;
      // The sweeper runs once a second: one idle for its whole time is not taken (the upstream may be closing it).
      if (now < 0) now = performance.now();
      if (now - conn.idleSince >= conn.idleMs) {
        conn.socket.destroy();
        continue;
      }
      conn.start(req, head, ex, true);
      return;
    }
    this.#connect(req, head, ex);
  }

  /** Sends an exchange again on a fresh connection (its kept-alive one was closed under it). */
  again(req: UpstreamRequest, head: string, ex: ExchangeHandler): void {
    if (this.#closed) ex.onError(new PoolClosed());
    else this.#connect(req, head, ex);
  }

  #connect(req: UpstreamRequest, head: string, ex: ExchangeHandler): void {
    const tls = this.#tls;
    // The connection that reads, once it is made (no byte can come before: the request goes first).
    const reader: Reader = { conn: null };
    // 64 KiB reads, TCP keep-alive probes after 60 s.
    const options = {
      host: this.host, port: this.port, noDelay: true, highWaterMark: 64 * 1024, keepAlive: true, keepAliveInitialDelay: 60_000,
      ...(tls === null ? { onread: onread(reader) } : {}),
    } as NetConnectOpts & { host: string };
    const socket: Socket = tls === null ? netConnect(options) : tls.connect(options);
    const ready = tls === null ? 'connect' : 'secureConnect';
    let done = false;
    const finish = (err: Error | null): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.off(ready, onConnect).off('error', finish);
      if (err !== null) {
        socket.destroy();
        if (isTlsError((err as NodeJS.ErrnoException).code)) this.tlsFailed(err);
        ex.onError(err);
        return;
      }
      if (this.#closed) {
        socket.destroy();
        ex.onError(new PoolClosed());
        return;
      }
      const conn = new H1Connection(socket, this, tls === null);
      reader.conn = conn;
      this.#all.add(conn);
      conn.start(req, head, ex);
    };
    const onConnect = (): void => finish(null);
    // Fires on time, after what already arrived was read (timeoutAfterIo).
    const ms = this.#connectTimeoutMs;
    const timer = timeoutAfterIo(() => finish(new UpstreamTimeout('connect', `connect timeout after ${ms} ms`)), ms);
    socket.once(ready, onConnect).once('error', finish);
  }

  /** A TLS failure is logged with its cause, once per 10 s per endpoint. */
  tlsFailed(err: Error): void {
    this.#tls?.failed(err);
  }

  /** A connection whose exchange ended cleanly: kept for the next one. */
  idle(conn: H1Connection): void {
    if (this.#closed) {
      conn.socket.destroy();
      return;
    }
    conn.idleSince = performance.now();
    this.#idle.push(conn);
    this.#sweeper ??= setInterval(() => this.#sweep(), 1_000).unref();
  }

  /** A connection closed (its socket did). */
  forget(conn: H1Connection): void {
    this.#all.delete(conn);
    const i = this.#idle.indexOf(conn);
    if (i >= 0) this.#idle.splice(i, 1);
    if (this.#all.size === 0) this.#drained?.();
  }

  /** Closes connections idle longer than their keep-alive time. */
  #sweep(): void {
    const now = performance.now();
    for (const conn of [...this.#idle]) if (now - conn.idleSince >= conn.idleMs) conn.socket.destroy();
    if (this.#idle.length === 0 && this.#sweeper !== null) {
      clearInterval(this.#sweeper);
      this.#sweeper = null;
    }
  }

  /** Takes no more exchanges; closes idle connections now and busy ones after their exchange. Resolves when all are closed. */
  close(): Promise<void> {
    this.#closed = true;
    if (this.#sweeper !== null) clearInterval(this.#sweeper);
    for (const conn of this.#idle.splice(0)) conn.socket.destroy();
    if (this.#all.size === 0) return Promise.resolve();
    this.#closing ??= new Promise((resolve) => { this.#drained = resolve; });
    return this.#closing;
  }

  /** Ends every connection now, exchanges under way included. */
  destroy(): Promise<void> {
    const closed = this.close();
    for (const conn of [...this.#all]) conn.socket.destroy();
    return closed;
  }
}

// hot path
/**
 * The request head as one string. Names must be tokens and values field values: a
 * header a filter or plugin set with a CR, LF or NUL (or a char beyond latin1) is
 * refused here, as switchyard's own failure, before any byte is sent.
 */
export function requestHead(req: UpstreamRequest, hostHeader: string): string {
  const method = req.method;
  const path = req.path;
  if (!isToken(method)) throw new TypeError(`the method "${method}" is not a token`);
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c <= 0x20 || c === 0x7f || c > 0xff) throw new TypeError('the request target has a space or a control character');
  }
  let s = `${method} ${path} HTTP/1.1\r\n`;
  const h = req.headers;
  let host = false;
  for (let i = 0; i < h.length; i += 2) {
    const name = h[i]!;
    const value = h[i + 1]!;
    if (!isToken(name)) throw new TypeError(`the header name "${name}" is not a token`);
    if (!isFieldValue(value)) throw new TypeError(`header ${name} has a value with a character HTTP does not allow (CR, LF, NUL, or beyond latin1)`);
    if (name.length === 4 && !host && name.toLowerCase() === 'host') host = true;
    s += `${name}: ${value}\r\n`;
  }
  if (!host) s += `host: ${hostHeader}\r\n`;
  if (req.body !== null && !Buffer.isBuffer(req.body) && req.length < 0) s += 'transfer-encoding: chunked\r\n';
  return `${s}\r\n`;
}

import { EventEmitter } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import { Readable } from 'node:stream';
import { isGrpc } from './grpc.js';
import { endArgs, type EndChunk } from '../http/end_args.js';

/**
 * An HTTP/2 stream as the HTTP data path reads a request and writes its answer: a
 * request and a response with the part of Node's IncomingMessage and ServerResponse
 * the data path and plugins use, made straight on the stream. The filters, the
 * access log and the upstream side then treat a stream as one more HTTP request
 * (every stream is one unit of work), without a second code path per protocol.
 *
 * They are switchyard's own, not Node's compatibility objects (http2's
 * Http2ServerRequest and Http2ServerResponse), which add a dozen listeners to every
 * stream, a second readable stream in front of the stream's own, a Proxy for its
 * socket and a request for trailers on every answer: about a tenth of an h2 → h1
 * request's CPU.
 *
 * - `rawHeaders` is the HTTP/1 view: `host` (from `:authority`) first, then the
 *   regular fields; the pseudo-headers stay in `headers` only (filters may read
 *   `:path` or `:scheme`), where `host` is set from `:authority` too.
 * - `socket` is the client connection itself: its address, its bytes, its client
 *   certificate.
 * - The response's `destroyed` says the client reset the stream (or it was cut)
 *   before the answer ended; `shouldKeepAlive` has no meaning (HTTP/1 paths set it).
 */
export class H2Request extends Readable {
  readonly stream: ServerHttp2Stream;
  readonly socket: Socket;
  readonly headers: IncomingHttpHeaders;
  readonly rawHeaders: string[];
  method: string;
  url: string;
  readonly httpVersion = '2.0';
  readonly httpVersionMajor = 2;
  readonly httpVersionMinor = 0;
  readonly trailers: Record<string, string | string[] | undefined> = {};
  readonly rawTrailers: string[] = [];
  /** The whole request came: its headers ended the stream, or its body did. */
  complete: boolean;
  /** The client reset the stream (or it was cut) before the request's end. */
  aborted = false;
  #reading = false;

  constructor(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, rawHeaders: readonly string[], socket: Socket) {
    super();
    const authority = headers[':authority'];
    if (authority !== undefined && headers.host === undefined) headers.host = authority;
    this.stream = stream;
    this.socket = socket;
    this.headers = headers;
    this.rawHeaders = h1View(rawHeaders, headers.host);
    this.method = headers[':method'] ?? '';
    this.url = headers[':path'] ?? '';
    this.complete = stream.endAfterHeaders;
    if (!this.complete) {
      stream.once('end', () => {
        this.complete = true;
        this.push(null);
      });
      stream.on('trailers', (fields: IncomingHttpHeaders, _flags: number, raw: string[]) => {
        Object.assign(this.trailers, fields);
        for (const x of raw) this.rawTrailers.push(x);
      });
    }
  }

  get connection(): Socket {
    return this.socket;
  }

  // The body is read from the stream only once someone reads the request; a request
  // without one ends when it is first read (most are never read: no tick to say so).
  override _read(): void {
    if (this.complete && !this.#reading) {
      this.#reading = true;
      this.push(null);
      return;
    }
    if (this.#reading) {
      this.stream.resume();
      return;
    }
    this.#reading = true;
    this.stream.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) this.stream.pause();
    });
  }

  // As IncomingMessage: an error is emitted only to a listener for it (a cut body is
  // seen by its 'close' without 'end', and by `errored`).
  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    cb(this.listenerCount('error') > 0 ? err : null);
  }

  /** The stream closed (H2Sessions): a request it cut short is aborted. */
  streamClosed(): void {
    if (this.complete) return;
    this.aborted = true;
    this.emit('aborted');
    this.destroy(Object.assign(new Error('aborted'), { code: 'ECONNRESET' }));
  }
}

/** Fields HTTP/2 has no place for (RFC 9113 §8.2.2): Node refuses an answer that carries one. */
const CONNECTION_SPECIFIC = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings']);

function headersSentError(): Error {
  return Object.assign(new Error('Cannot set headers after they are sent to the client'), { code: 'ERR_HTTP2_HEADERS_SENT' });
}

export class H2Response extends EventEmitter {
  readonly stream: ServerHttp2Stream;
  readonly req: H2Request;
  statusCode = 200;
  /** HTTP/2 has no reason phrase (RFC 9113 §8.3.2). */
  statusMessage = '';
  shouldKeepAlive = true;
  headersSent = false;
  writableEnded = false;
  writableFinished = false;
  /** setHeader's fields, by lower-case name; null until one is set. */
  #fields: OutgoingHttpHeaders | null = null;
  #trailers: OutgoingHttpHeaders | null = null;
  /** The answer has no body: HEAD, 204, 304 (what is written is dropped). */
  #noBody: boolean;
  #onDrain: (() => void) | null = null;
  #finishCb: (() => void) | null = null;

  constructor(stream: ServerHttp2Stream, req: H2Request) {
    super();
    this.stream = stream;
    this.req = req;
    this.#noBody = req.method === 'HEAD';
  }

  get socket(): Socket {
    return this.req.socket;
  }

  get connection(): Socket {
    return this.req.socket;
  }

  get finished(): boolean {
    return this.writableEnded;
  }

  /** The client reset the stream, or it was cut, before the answer ended. */
  get destroyed(): boolean {
    const stream = this.stream;
    return (stream.destroyed || stream.closed) && !this.writableFinished;
  }

  setHeader(name: string, value: string | number | readonly string[]): this {
    if (this.headersSent) throw headersSentError();
    (this.#fields ??= Object.create(null) as OutgoingHttpHeaders)[name.toLowerCase()] = value as string | number | string[];
    return this;
  }

  getHeader(name: string): string | number | string[] | undefined {
    return this.#fields?.[name.toLowerCase()];
  }

  hasHeader(name: string): boolean {
    return this.#fields?.[name.toLowerCase()] !== undefined;
  }

  removeHeader(name: string): void {
    if (this.headersSent) throw headersSentError();
    if (this.#fields !== null) delete this.#fields[name.toLowerCase()];
  }

  getHeaderNames(): string[] {
    return this.#fields === null ? [] : Object.keys(this.#fields);
  }

  getHeaders(): OutgoingHttpHeaders {
    return { ...this.#fields };
  }

  // hot path
  /**
   * The answer's HEADERS, sent now: `headers` as name, value, … (or an object), after
   * the fields setHeader set (a name given here replaces them, its repeats kept). A
   * reason phrase is dropped. Trailers are asked for only where they may come: a gRPC
   * call, a client that said `TE: trailers`, an answer whose length is not known (an
   * HTTP/1.1 upstream's chunked one); asking costs every stream a frame and a round of
   * events after its body (about a fifth of a bare Node stream's CPU, measured). An
   * answer that declared its Content-Length to a client that did not ask for trailers
   * loses any it had (a proxy may drop them, RFC 9110 §6.5.1).
   */
  writeHead(status: number, reason?: unknown, headers?: unknown): this {
    if (this.headersSent) throw headersSentError();
    const given = (typeof reason === 'string' ? headers : reason) as readonly string[] | OutgoingHttpHeaders | undefined;
    if (!Number.isInteger(status) || status < 200 || status > 599) {
      throw Object.assign(new RangeError(`Invalid status code: ${status}`), { code: 'ERR_HTTP2_STATUS_INVALID' });
    }
    this.statusCode = status;
    if (status === 204 || status === 304) this.#noBody = true;
    const stream = this.stream;
    if (stream.destroyed || stream.closed) return this;
    const out = mergeFields(this.#fields, given);
    out[':status'] = status;
    const req = this.req;
    const trailers = !this.#noBody && (out['content-length'] === undefined || isGrpc(req) || acceptsTrailers(req.headers.te));
    this.#respond(out, this.#noBody, trailers);
    return this;
  }

  /** Headers that end the stream (gRPC's trailers-only form): one HEADERS frame with END_STREAM. */
  respondTrailersOnly(status: number, flat: readonly string[]): void {
    this.statusCode = status;
    const stream = this.stream;
    // The client may have reset the stream in the same turn (its own deadline, say).
    if (this.headersSent || stream.destroyed || stream.closed) return;
    const out = mergeFields(null, flat);
    out[':status'] = status;
    this.#respond(out, true, false);
  }

  /** Sends the HEADERS; Node may refuse them (a field it will not send twice, say): then nothing was sent, and another answer can be made. */
  #respond(headers: OutgoingHttpHeaders, endStream: boolean, waitForTrailers: boolean): void {
    const stream = this.stream;
    stream.respond(headers, { endStream, waitForTrailers });
    this.headersSent = true;
    if (endStream) this.writableEnded = true;
    // Both come later than this turn ('finish' after the stream's _final, 'wantTrailers' from nghttp2).
    if (waitForTrailers) stream.once('wantTrailers', () => stream.sendTrailers(this.#trailers ?? {}));
    stream.once('finish', () => this.#finished());
  }

  /** Trailer fields, sent after the body where the answer asked for them (writeHead). */
  addTrailers(trailers: Record<string, string | string[]> | readonly string[]): void {
    const to = (this.#trailers ??= Object.create(null) as OutgoingHttpHeaders);
    if (!Array.isArray(trailers)) {
      for (const name in trailers) to[name.toLowerCase()] = (trailers as Record<string, string | string[]>)[name];
      return;
    }
    const list = trailers as readonly string[];
    for (let i = 0; i < list.length; i += 2) to[list[i]!.toLowerCase()] = list[i + 1]!;
  }

  writeContinue(): void {
    if (!this.headersSent && !this.stream.destroyed) this.stream.additionalHeaders({ ':status': 100 });
  }

  // hot path
  /** A piece of the body; false: the client is behind ('drain' follows). */
  write(chunk: string | Uint8Array, encoding?: BufferEncoding | (() => void), cb?: () => void): boolean {
    if (typeof encoding === 'function') {
      cb = encoding;
      encoding = undefined;
    }
    if (!this.headersSent) this.writeHead(this.statusCode);
    const stream = this.stream;
    if (this.writableEnded || stream.destroyed || stream.closed) return false;
    if (this.#noBody) {
      if (cb !== undefined) process.nextTick(cb);
      return true;
    }
    const ok = typeof chunk === 'string' ? stream.write(chunk, encoding ?? 'utf8', cb) : stream.write(chunk, cb);
    if (!ok) stream.once('drain', (this.#onDrain ??= () => this.emit('drain')));
    return ok;
  }

  /** The end of the body (with its last piece): the answer is finished once the stream took all of it. */
  end(chunkArg?: EndChunk, encodingArg?: BufferEncoding | (() => void), cbArg?: () => void): this {
    const [chunk, encoding, cb] = endArgs(chunkArg, encodingArg, cbArg);
    if (this.writableEnded) return this;
    if (cb !== undefined) this.#finishCb = cb;
    const stream = this.stream;
    const data = chunk === undefined || chunk === null || this.#noBody ? null : chunk;
    if (!this.headersSent) {
      // All of the answer is here: HEADERS alone end the stream when it has no body.
      if (data === null || data.length === 0) {
        if (stream.destroyed || stream.closed) this.writableEnded = true;
        else this.#respond(this.#ending(), true, false);
        return this;
      }
      // Its length is known: no trailers to wait for.
      if (this.#fields?.['content-length'] === undefined) {
        this.setHeader('content-length', typeof data === 'string' ? Buffer.byteLength(data, encoding ?? 'utf8') : data.length);
      }
      this.writeHead(this.statusCode);
    }
    this.writableEnded = true;
    if (stream.destroyed || stream.closed || stream.writableEnded) return this;
    if (data === null) stream.end();
    else if (typeof data === 'string') stream.end(data, encoding ?? 'utf8');
    else stream.end(data);
    return this;
  }

  /** The HEADERS of an answer ended before any of it was sent. */
  #ending(): OutgoingHttpHeaders {
    const out = mergeFields(this.#fields, undefined);
    out[':status'] = this.statusCode;
    return out;
  }

  /** Cuts the answer: the stream is reset. */
  destroy(err?: Error): this {
    if (!this.stream.destroyed) this.stream.destroy(err);
    return this;
  }

  #finished(): void {
    if (this.writableFinished) return;
    this.writableFinished = true;
    this.emit('finish');
    const cb = this.#finishCb;
    this.#finishCb = null;
    cb?.();
  }

  /** The stream closed (H2Sessions): the answer is over, whole or cut. */
  streamClosed(): void {
    this.emit('close');
  }
}

/**
 * setHeader's fields (lower case) with writeHead's: a name writeHead gives replaces
 * setHeader's, its repeats kept. Connection-specific fields are dropped (HTTP/2 has
 * none, and Node refuses an answer with one); TE too, but for `trailers`.
 */
function mergeFields(set: OutgoingHttpHeaders | null, given: readonly string[] | OutgoingHttpHeaders | undefined): OutgoingHttpHeaders {
  const out = Object.create(null) as OutgoingHttpHeaders;
  if (set !== null) for (const name in set) put(out, name, set[name], null);
  if (given === undefined) return out;
  // Names writeHead gave: a second one appends, a first one replaces setHeader's.
  const replaced = set === null ? null : new Set<string>();
  if (Array.isArray(given)) for (let i = 0; i < given.length; i += 2) put(out, given[i] as string, given[i + 1] as string, replaced);
  else for (const name of Object.keys(given)) put(out, name, (given as OutgoingHttpHeaders)[name], replaced);
  return out;
}

function put(out: OutgoingHttpHeaders, name: string, value: string | number | readonly string[] | undefined, replaced: Set<string> | null): void {
  if (value === undefined) return;
  const lower = name.toLowerCase();
  if (CONNECTION_SPECIFIC.has(lower) || (lower === 'te' && value !== 'trailers')) return;
  const had = out[lower];
  if (had === undefined || (replaced !== null && !replaced.has(lower))) {
    out[lower] = value as string | number | string[];
    replaced?.add(lower);
    return;
  }
  const more = Array.isArray(value) ? value as string[] : [String(value)];
  out[lower] = Array.isArray(had) ? [...had, ...more] : [String(had), ...more];
}

/** TE lists `trailers` (RFC 9110 §10.1.4): the client will read trailer fields. */
function acceptsTrailers(te: string | string[] | undefined): boolean {
  return typeof te === 'string' && /(?:^|,)\s*trailers\s*(?:[,;]|$)/i.test(te);
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

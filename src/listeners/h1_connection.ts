import { IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { ChunkedDecoder } from '../http1/chunked.js';
import { HEAD_END, MalformedMessage } from '../http1/message_head.js';
import { parseRequestHead, type RequestHead } from '../http1/request_head.js';
import { H1Response, type ResponseOwner } from '../http1/response.js';
import { DEFAULT_MAX_HEADER_SIZE, DEFAULT_TIMEOUTS } from '../config/defaults.js';
import type { Linked } from '../linked_set.js';
import { moveHandle, SHARED_READ_BUFFER, type OnRead } from '../net/node_internals.js';
import { CLIENT_PREFACE } from './h2_sessions.js';
import type { ServingSocket } from './plan.js';

/**
 * HTTP/1.1 on a client connection, on the socket itself: the request head is parsed
 * once (http1/request_head.ts), the body read by its framing (Content-Length or
 * chunked) into the request as it comes, and the response written by
 * http1/response.ts. Requests are served one at a time, as nginx does: a request
 * pipelined behind another is read once the answer before it is written, so answers
 * leave in order and nothing is forwarded for a request that will not be answered.
 *
 * The connection owns its timeouts: the head must come within timeouts.headers (from
 * the connection's start, or the first byte of a later request), the whole request
 * within timeouts.request, and an idle connection closes after timeouts.keepAlive.
 *
 * A plain connection reads into the shared buffer (Node's `onread`, on a socket its
 * handle moves to): no allocation and no stream machinery per read. What is kept past a
 * read is copied: a head still coming and pipelined bytes (Pending.own), body bytes
 * (#push). Its first bytes may be HTTP/2's preface: then the socket goes to HTTP/2.
 * Once the socket is handed over (an upgrade, CONNECT, HTTP/2), its reads are pushed
 * to whoever reads it as a stream. A TLS connection is read as a stream.
 */

/** Where requests go: the data path's entry points (listeners/serve.ts). */
export interface H1Dispatch {
  request(ls: ServingSocket, req: IncomingMessage, res: ServerResponse): void;
  upgrade(ls: ServingSocket, req: IncomingMessage, socket: Socket, head: Buffer): void;
  connect(ls: ServingSocket, req: IncomingMessage, socket: Socket): void;
  clientError(ls: ServingSocket, err: NodeJS.ErrnoException, socket: Socket): void;
}

const enum Phase {
  /** Waiting for (or reading) a request head. */
  Head,
  /** Reading the body of the request being served. */
  Body,
  /** The request is all read; its answer is being made. Bytes that come are kept for the next request. */
  Answering,
  /** Nothing more is read: closing, closed, or handed over (an upgrade). */
  Done,
}

const enum Deadline { None, Headers, Request, KeepAlive, Linger }

/** How long a connection closed with bytes still coming reads and drops them (nginx's lingering_timeout). */
const LINGER_MS = 5_000;

/** A plan's limits on a connection, read at each request (a reload's apply to the next one). */
interface Limits {
  /** The time a head has: timeouts.headers, within timeouts.request (which covers the head too). */
  readonly headersMs: number;
  readonly requestMs: number;
  readonly keepAliveMs: number;
  readonly maxHeaderSize: number;
}

/** Defaults for a connection whose address no longer has an http plan (it is closed after its request). */
const FALLBACK: Limits = {
  headersMs: Math.min(DEFAULT_TIMEOUTS.headersMs, DEFAULT_TIMEOUTS.requestMs), requestMs: DEFAULT_TIMEOUTS.requestMs,
  keepAliveMs: DEFAULT_TIMEOUTS.keepAliveMs, maxHeaderSize: DEFAULT_MAX_HEADER_SIZE,
};

/** Made once per plan. */
const limitsByPlan = new WeakMap<object, Limits>();

/** Bytes of pipelined requests kept while an answer is made; beyond, the socket stops reading until then. */
const PIPELINE_BYTES = 64 * 1024;

/** IncomingMessage's way of taking a head's fields (what Node's parser calls); its `headers` are made from them on first use. */
type NodeIncoming = IncomingMessage & { _addHeaderLines(headers: string[], n: number): void; _dump(): void; upgrade: boolean };

/**
 * The request, as Node's parser makes it. One without a body ends when it is first
 * read, not at once: most are never read, and an ended stream costs a tick to say so.
 */
class H1Request extends (IncomingMessage as unknown as new (socket: Socket) => NodeIncoming) {
  endWhenRead = false;

  override _read(size: number): void {
    if (this.endWhenRead) {
      this.endWhenRead = false;
      this.push(null);
      return;
    }
    super._read(size);
  }
}

function parseError(code: string, message: string): NodeJS.ErrnoException {
  return Object.assign(new Error(message), { code });
}

function aborted(): NodeJS.ErrnoException {
  return Object.assign(new Error('aborted'), { code: 'ECONNRESET' });
}

/** A CR not followed by LF, or an LF without CR before it, in bytes that are still a head. */
function bareLineEnd(buf: Buffer, from: number): boolean {
  for (let i = buf.indexOf(10, from); i !== -1; i = buf.indexOf(10, i + 1)) if (i === 0 || buf[i - 1] !== 13) return true;
  for (let i = buf.indexOf(13, from); i !== -1 && i < buf.length - 1; i = buf.indexOf(13, i + 1)) if (buf[i + 1] !== 10) return true;
  return false;
}

/**
 * Bytes read and not yet taken: a head still coming, or requests pipelined behind the
 * one being answered. It grows by doubling, so bytes that come one at a time cost
 * linear copying, not quadratic; a chunk that comes alone is kept as it is.
 */
class Pending {
  #buf: Buffer | null = null;
  #len = 0;
  /** #buf was allocated here (its spare room may be written); a socket's chunk or a view is not. */
  #owned = false;
  /** How many of the first bytes were already searched for a head's end. */
  scanned = 0;

  get length(): number {
    return this.#len;
  }

  add(chunk: Buffer): void {
    if (this.#len === 0) {
      this.#buf = chunk;
      this.#len = chunk.length;
      this.#owned = false;
      this.scanned = 0;
      return;
    }
    const need = this.#len + chunk.length;
    if (!this.#owned || this.#buf!.length < need) {
      const next = Buffer.allocUnsafe(Math.max(need, 2 * this.#len, 1024));
      this.#buf!.copy(next, 0, 0, this.#len);
      this.#buf = next;
      this.#owned = true;
    }
    chunk.copy(this.#buf!, this.#len);
    this.#len = need;
  }

  /** The bytes (a view, until the next add). */
  view(): Buffer {
    return this.#len === this.#buf!.length ? this.#buf! : this.#buf!.subarray(0, this.#len);
  }

  /** The bytes are copied when they are a view of a read's buffer (after a read: the next one overwrites it). */
  own(): void {
    if (this.#len === 0 || this.#owned) return;
    this.#buf = Buffer.from(this.view());
    this.#owned = true;
  }

  /** Takes every byte out: a view of them (null when none), the pending bytes empty after. */
  takeAll(): Buffer | null {
    if (this.#len === 0) return null;
    const out = this.view();
    this.clear();
    return out;
  }

  clear(): void {
    this.#buf = null;
    this.#len = 0;
    this.#owned = false;
    this.scanned = 0;
  }
}

export class H1Connection implements ResponseOwner, Linked<H1Connection> {
  readonly socket: Socket;
  /** Its listening socket's connections (a LinkedSet) link through these. */
  linkPrev: H1Connection | null = null;
  linkNext: H1Connection | null = null;
  readonly #ls: ServingSocket;
  readonly #dispatch: H1Dispatch;
  #phase = Phase.Head;
  /** Bytes read and not yet taken: a head still coming, or requests pipelined behind the one being served. */
  readonly #pending = new Pending();
  #req: H1Request | null = null;
  #res: H1Response | null = null;
  /** Body bytes still to come (Content-Length framing). */
  #remaining = 0;
  #decoder: ChunkedDecoder | null = null;
  /** No request under way and no byte of the next one yet (the keep-alive wait). */
  #idle = false;
  /** The socket was paused for pipelined bytes (not by the request body's backpressure). */
  #pausedForPipeline = false;
  /** When the request being read started (performance.now()), for timeouts.request. */
  #requestStart: number;
  #deadline = 0;
  #deadlineKind = Deadline.None;
  #timer: NodeJS.Timeout | null = null;
  /** When #timer fires; it may fire before the deadline (which then re-arms it), never after. */
  #timerAt = 0;
  readonly #onTimer = (): void => this.#timerFired();
  readonly #pushBody = (data: Buffer): void => this.#push(data);
  /** Reads land in SHARED_READ_BUFFER: what is kept of them is copied. False: the socket is read as a stream (TLS). */
  readonly #shared: boolean;
  /** Where the HTTP/2 preface sends the socket, until the first bytes say it is not HTTP/2. */
  #h2: ((socket: Socket) => void) | null;
  /** The socket left HTTP/1.1 (#handOver): reads are pushed to its stream, for whoever took it. */
  #handedOver = false;

  /**
   * `accepted`: a connection just accepted (nothing read yet), or a TLS socket after its
   * handshake; `h2`: where a plain connection that opens with HTTP/2's preface goes.
   */
  constructor(ls: ServingSocket, accepted: Socket, dispatch: H1Dispatch, h2: ((socket: Socket) => void) | null) {
    this.#ls = ls;
    this.#dispatch = dispatch;
    this.#h2 = h2;
    const onread: OnRead = { buffer: SHARED_READ_BUFFER, callback: (n) => this.#read(n) };
    const adopted = moveHandle(accepted, onread);
    const socket = adopted ?? accepted;
    this.socket = socket;
    this.#shared = adopted !== null;
    this.#requestStart = performance.now();
    this.#arm(Deadline.Headers, this.#headersMs());
    if (!this.#shared) socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('end', () => socket.destroy());
    socket.on('error', () => socket.destroy());
    socket.on('close', () => this.#onClose());
  }

  /** No request is under way or coming: the connection may be closed without losing one. */
  get idle(): boolean {
    return this.#phase === Phase.Head && this.#res === null && this.#pending.length === 0;
  }

  #limits(): Limits {
    const plan = this.#ls.plan;
    if (plan === null || plan.protocol !== 'http') return FALLBACK;
    let l = limitsByPlan.get(plan);
    if (l === undefined) {
      const t = plan.config.timeouts;
      l = { headersMs: Math.min(t.headersMs, t.requestMs), requestMs: t.requestMs, keepAliveMs: t.keepAliveMs, maxHeaderSize: plan.config.maxHeaderSize };
      limitsByPlan.set(plan, l);
    }
    return l;
  }

  #headersMs(): number {
    return this.#limits().headersMs;
  }

  // hot path
  /** The `onread` callback: `n` bytes in SHARED_READ_BUFFER. */
  #read(n: number): boolean {
    if (this.#handedOver) return this.socket.push(Buffer.from(SHARED_READ_BUFFER.subarray(0, n)));
    this.#onData(SHARED_READ_BUFFER.subarray(0, n));
    this.#pending.own();
    return true;
  }

  // hot path
  #onData(chunk: Buffer): void {
    switch (this.#phase) {
      case Phase.Head:
        this.#pending.add(chunk);
        if (this.#h2 !== null && this.#sniff()) return;
        if (this.#idle) {
          // The first byte of the next request: its head has the headers timeout from now.
          this.#idle = false;
          this.#requestStart = performance.now();
          this.#arm(Deadline.Headers, this.#headersMs());
        }
        this.#readHead();
        return;
      case Phase.Body:
        this.#feedBody(chunk, 0);
        return;
      case Phase.Answering:
        this.#keep(chunk);
        return;
      default:
    }
  }

  /**
   * The connection's first bytes: HTTP/2's preface (RFC 9113 §3.4) hands the socket to
   * HTTP/2, with the bytes put back for it to read (true); so does the start of one
   * (true: the rest is waited for); anything else is HTTP/1.1 (false).
   */
  #sniff(): boolean {
    const buf = this.#pending.view();
    const n = Math.min(buf.length, CLIENT_PREFACE.length);
    if (buf.compare(CLIENT_PREFACE, 0, n, 0, n) !== 0) {
      this.#h2 = null;
      return false;
    }
    if (n < CLIENT_PREFACE.length) return true;
    const h2 = this.#h2!;
    this.#h2 = null;
    const bytes = Buffer.from(this.#pending.takeAll()!);
    this.#handOver();
    this.socket.unshift(bytes);
    h2(this.socket);
    return true;
  }

  // hot path
  /** Parses the head in the pending bytes when it is all there, and starts its request. */
  #readHead(): void {
    const pending = this.#pending;
    if (pending.length === 0) return;
    let buf = pending.view();
    // Empty lines before a request line are ignored (RFC 9112 §2.2).
    let start = 0;
    while (start + 1 < buf.length && buf[start] === 13 && buf[start + 1] === 10) start += 2;
    if (start === buf.length) {
      pending.clear();
      return;
    }
    if (start > 0) {
      // Dropped once: a head that then comes a byte at a time is not searched past them at every read.
      buf = buf.subarray(start);
      pending.clear();
      pending.add(buf);
    }
    const limits = this.#limits();
    // Bytes searched before are not searched again (a head may come in many reads).
    const from = Math.max(0, pending.scanned - 3);
    const end = buf.indexOf(HEAD_END, from);
    if (end === -1) {
      if (buf.length > limits.maxHeaderSize) this.#headFailed(parseError('HPE_HEADER_OVERFLOW', 'Header overflow'));
      else if (bareLineEnd(buf, Math.max(0, pending.scanned - 1))) this.#headFailed(parseError('HPE_CR_EXPECTED', 'a bare CR or LF in the request head'));
      else pending.scanned = buf.length;
      return;
    }
    if (end > limits.maxHeaderSize) {
      this.#headFailed(parseError('HPE_HEADER_OVERFLOW', 'Header overflow'));
      return;
    }
    let head: RequestHead;
    try {
      head = parseRequestHead(buf.toString('latin1', 0, end));
    } catch (err) {
      this.#headFailed(parseError('HPE_INVALID_HEADER', (err as Error).message));
      return;
    }
    const rest = end + 4 < buf.length ? buf.subarray(end + 4) : null;
    pending.clear();
    this.#start(head, rest, limits.requestMs);
  }

  // hot path
  #start(head: RequestHead, rest: Buffer | null, requestMs: number): void {
    const socket = this.socket;
    const req = new H1Request(socket);
    req.method = head.method;
    req.url = head.target;
    req.httpVersionMajor = head.major;
    req.httpVersionMinor = head.minor;
    req.httpVersion = `${head.major}.${head.minor}`;
    req._addHeaderLines(head.rawHeaders, head.rawHeaders.length);
    const ls = this.#ls;
    // The upgrades switchyard tunnels are WebSocket's; any other Upgrade is served as the
    // plain request it also is (RFC 9110 §7.8), on a connection that closes after it.
    const websocket = head.upgrade === 'websocket' && head.method === 'GET';
    if (head.method === 'CONNECT' || websocket) {
      req.upgrade = true;
      req.complete = true;
      req.push(null);
      this.#handOver();
      if (websocket) this.#dispatch.upgrade(ls, req, socket, rest === null ? Buffer.alloc(0) : this.#shared ? Buffer.from(rest) : rest);
      else this.#dispatch.connect(ls, req, socket);
      return;
    }
    const res = new H1Response(this, req, socket, head.keepAlive && head.upgrade === null, Math.floor(this.#limits().keepAliveMs / 1000));
    this.#req = req;
    this.#res = res;
    if (head.chunked) {
      this.#decoder = new ChunkedDecoder({ whitespaceBeforeExtension: false });
      this.#phase = Phase.Body;
    } else if (head.contentLength > 0) {
      this.#remaining = head.contentLength;
      this.#phase = Phase.Body;
    } else {
      req.complete = true;
      req.endWhenRead = true;
      this.#phase = Phase.Answering;
    }
    if (this.#phase === Phase.Body) this.#arm(Deadline.Request, this.#requestStart + requestMs - performance.now());
    else this.#deadlineKind = Deadline.None;
    // Any other expectation is refused at the edge (417, counted and logged like its other refusals).
    if (head.expect === '100-continue' && head.major === 1 && head.minor === 1 && this.#phase === Phase.Body) {
      socket.write('HTTP/1.1 100 Continue\r\n\r\n', 'latin1');
    }
    this.#dispatch.request(ls, req, res as unknown as ServerResponse);
    if (rest === null) return;
    if (this.#phase === Phase.Body) this.#feedBody(rest, 0);
    else this.#keep(rest);
  }

  // hot path
  /** Body bytes of the request being read, from `from`; what follows its end is the next request's. */
  #feedBody(chunk: Buffer, from: number): void {
    if (this.#decoder === null) {
      const take = Math.min(chunk.length - from, this.#remaining);
      if (take > 0) {
        this.#remaining -= take;
        this.#push(from === 0 && take === chunk.length ? chunk : chunk.subarray(from, from + take));
      }
      if (this.#remaining > 0) return;
      this.#bodyEnded(null);
      if (from + take < chunk.length) this.#keep(chunk.subarray(from + take));
      return;
    }
    let end: number;
    try {
      end = this.#decoder.feed(chunk, from, this.#pushBody);
    } catch (err) {
      this.#bodyFailed(err as MalformedMessage);
      return;
    }
    if (end < 0) return;
    const trailers = this.#decoder.trailers;
    this.#decoder = null;
    this.#bodyEnded(trailers.length > 0 ? trailers : null);
    if (end < chunk.length) this.#keep(chunk.subarray(end));
  }

  #push(data: Buffer): void {
    const req = this.#req!;
    if (req.destroyed) return;
    // The request's reader is behind: reading resumes when it reads (IncomingMessage._read resumes the socket).
    if (!req.push(this.#shared ? Buffer.from(data) : data)) this.socket.pause();
  }

  #bodyEnded(trailers: string[] | null): void {
    const req = this.#req!;
    req.complete = true;
    if (trailers !== null) req._addHeaderLines(trailers, trailers.length);
    req.push(null);
    this.#deadlineKind = Deadline.None;
    // A pause for the body's reader outlives the body: an ended request never reads again
    // (no _read to resume the socket), and what comes now is the next request's.
    if (this.socket.isPaused()) this.socket.resume();
    if (this.#res === null) {
      // Its answer was finished before the body was all read (and the body read away): on to the next request.
      this.#req = null;
      this.#nextRequest();
    } else this.#phase = Phase.Answering;
  }

  /** Bytes after the request being served: the next request's, read once this one is answered. */
  #keep(bytes: Buffer): void {
    if (this.#phase === Phase.Head) {
      this.#onData(bytes);
      return;
    }
    if (this.#phase === Phase.Done) return;
    this.#pending.add(bytes);
    if (this.#pending.length > PIPELINE_BYTES && !this.#pausedForPipeline) {
      this.#pausedForPipeline = true;
      this.socket.pause();
    }
  }

  /** A head that cannot be read: answered (400, 431) at the edge, and the connection closed. */
  #headFailed(err: NodeJS.ErrnoException): void {
    this.#phase = Phase.Done;
    this.#pending.clear();
    this.#deadlineKind = Deadline.None;
    this.#dispatch.clientError(this.#ls, err, this.socket);
  }

  /** A chunked body that cannot be read: the request is refused (http_edge: its unit answers 400 or 413). */
  #bodyFailed(err: MalformedMessage): void {
    this.#phase = Phase.Done;
    this.#pending.clear();
    this.#deadlineKind = Deadline.None;
    const code = err.status === 413 ? 'HPE_CHUNK_EXTENSIONS_OVERFLOW' : 'HPE_INVALID_CHUNK_SIZE';
    this.#dispatch.clientError(this.#ls, parseError(code, err.message), this.socket);
  }

  /** The socket leaves HTTP/1.1 (an upgrade, CONNECT, HTTP/2): whoever takes it reads it from now on. */
  #handOver(): void {
    this.#phase = Phase.Done;
    this.#handedOver = true;
    this.#deadlineKind = Deadline.None;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    this.socket.removeAllListeners('data');
    this.socket.removeAllListeners('end');
  }

  // hot path
  /** ResponseOwner: the answer is written; the connection reads its next request, or closes. */
  responseFinished(res: H1Response): void {
    if (this.#res !== res) return;
    this.#res = null;
    const socket = this.socket;
    if (!res.shouldKeepAlive || this.#phase === Phase.Done || socket.destroyed) {
      const unread = this.#phase === Phase.Body || this.#pending.length > 0;
      this.#phase = Phase.Done;
      this.#pending.clear();
      this.#deadlineKind = Deadline.None;
      if (unread && !socket.destroyed) this.#linger();
      else socket.destroySoon();
      res.emit('close');
      return;
    }
    if (this.#phase === Phase.Body) {
      // Answered before its body was all read: the rest is read away, then the next request.
      this.#req!._dump();
      res.emit('close');
      return;
    }
    this.#req = null;
    res.emit('close');
    this.#nextRequest();
  }

  /**
   * Closes while the client still sends (a body not read, pipelined requests): our side
   * ends after the answer, and what comes meanwhile is read and dropped until the client
   * closes or LINGER_MS pass, as nginx's lingering close does. Closing with bytes unread
   * would reset the connection, and the client could lose the end of its answer.
   */
  #linger(): void {
    const socket = this.socket;
    socket.end();
    if (socket.isPaused()) socket.resume();
    this.#arm(Deadline.Linger, LINGER_MS);
  }

  #nextRequest(): void {
    this.#phase = Phase.Head;
    if (this.#pausedForPipeline) {
      this.#pausedForPipeline = false;
      this.socket.resume();
    }
    if (this.#pending.length === 0) {
      this.#idle = true;
      this.#arm(Deadline.KeepAlive, this.#limits().keepAliveMs);
      return;
    }
    this.#requestStart = performance.now();
    this.#arm(Deadline.Headers, this.#headersMs());
    this.#readHead();
  }

  #onClose(): void {
    this.#phase = Phase.Done;
    this.#pending.clear();
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    const req = this.#req;
    const res = this.#res;
    this.#req = null;
    this.#res = null;
    if (req !== null && !req.complete) req.destroy(aborted());
    res?.connectionClosed();
  }

  /** Sets the deadline; the one timer is moved only when it would fire after it. */
  #arm(kind: Deadline, ms: number): void {
    const now = performance.now();
    this.#deadline = now + ms;
    this.#deadlineKind = kind;
    if (this.#timer !== null && this.#timerAt <= this.#deadline) return;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = setTimeout(this.#onTimer, Math.max(1, ms));
    this.#timer.unref();
    this.#timerAt = this.#deadline;
  }

  #timerFired(): void {
    this.#timer = null;
    if (this.#deadlineKind === Deadline.None || (this.#phase === Phase.Done && this.#deadlineKind !== Deadline.Linger)) return;
    const left = this.#deadline - performance.now();
    if (left > 0.5) {
      this.#timer = setTimeout(this.#onTimer, Math.ceil(left));
      this.#timer.unref();
      this.#timerAt = this.#deadline;
      return;
    }
    const kind = this.#deadlineKind;
    this.#deadlineKind = Deadline.None;
    // A plain connection that has not said which HTTP it speaks is closed without an answer.
    if (kind === Deadline.KeepAlive || kind === Deadline.Linger || this.#h2 !== null) {
      this.socket.destroy();
      return;
    }
    // The head (or the whole request) did not come in time: 408 at the edge, or a cut when an answer started.
    this.#phase = Phase.Done;
    this.#pending.clear();
    this.#dispatch.clientError(this.#ls, parseError('ERR_HTTP_REQUEST_TIMEOUT', 'Request timeout'), this.socket);
  }
}

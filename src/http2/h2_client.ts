import type { Socket } from 'node:net';
import { CompressionError, encodeFields, HpackDecoder } from './hpack.js';

/**
 * The client side of one HTTP/2 connection to an upstream (RFC 9113), on a
 * connected socket (plain, or TLS that chose h2): framing, flow control, SETTINGS,
 * PING, GOAWAY and RST_STREAM, with HPACK (hpack.ts). It does what the upstream
 * pool (upstream/h2_pool.ts) needs and no more: requests with bodies, answers with
 * trailers, no server push (disabled in our SETTINGS), no priorities.
 *
 * Switchyard's own rather than Node's http2 client: Node's makes every stream a
 * Duplex with an async resource and a dozen events, which cost an h2 → h2 request
 * about as much CPU as all the rest of the proxy did. Here a stream is an object
 * and a handler of five calls; the frames one turn makes go out in one write.
 */

const enum Type { Data = 0, Headers = 1, Priority = 2, RstStream = 3, Settings = 4, PushPromise = 5, Ping = 6, GoAway = 7, WindowUpdate = 8, Continuation = 9 }
const END_STREAM = 0x1;
const ACK = 0x1;
const END_HEADERS = 0x4;
const PADDED = 0x8;
const PRIORITY = 0x20;

export const H2_NO_ERROR = 0;
export const H2_PROTOCOL_ERROR = 1;
export const H2_INTERNAL_ERROR = 2;
export const H2_FLOW_CONTROL_ERROR = 3;
export const H2_FRAME_SIZE_ERROR = 6;
export const H2_REFUSED_STREAM = 7;
export const H2_CANCEL = 8;
export const H2_COMPRESSION_ERROR = 9;

/** The preface a client opens an HTTP/2 connection with (RFC 9113 §3.4). */
export const CLIENT_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
/** The frame size we take (the protocol's default, SETTINGS_MAX_FRAME_SIZE not sent) and send at most. */
const MAX_FRAME = 16_384;
/** Each stream's receive window (the default, 65,535): what a stream whose reader stopped may hold. */
const STREAM_WINDOW = 65_535;
/** The connection's receive window, raised at once so that it never limits the streams' own. */
const CONNECTION_WINDOW = 16 * 1024 * 1024;
/** Header list size we take from an upstream (what Node's client allows by default). */
const MAX_HEADER_LIST = 64 * 1024;

/** What a stream tells whoever opened it. */
export interface StreamHandler {
  /** The answer's head (1xx heads are skipped): status, fields (name, value, …); `end`: no body or trailers follow. */
  onResponse(status: number, fields: string[], end: boolean): void;
  /** A piece of the body, valid during the call; false: no more until resume() (flow control holds the upstream). */
  onData(chunk: Buffer): boolean;
  onTrailers(fields: string[]): void;
  /** The answer came whole (its END_STREAM). */
  onEnd(): void;
  /**
   * The stream ended otherwise: reset (by the upstream, with its code; or by us, for
   * an answer that broke the protocol: err), or its connection failed or closed (err).
   * `refused`: the upstream did not process it (REFUSED_STREAM, or above a GOAWAY's
   * last stream), so it may be sent again.
   */
  onClose(code: number, err: Error | null, refused: boolean): void;
  /** The body writes may go on (write returned false before). */
  onDrain(): void;
}

/** One request's stream. */
export class H2Stream {
  readonly id: number;
  readonly #conn: H2Connection;
  readonly handler: StreamHandler;
  /** What the upstream lets us send, and what we let it send (replenished as the handler takes the body). */
  sendWindow: number;
  recvWindow = STREAM_WINDOW;
  #unacked = 0;
  paused = false;
  answered = false;
  /** The upstream ended its side (END_STREAM). */
  remoteEnded = false;
  /** Our side ended (END_STREAM sent, or queued behind the body). */
  localEnded: boolean;
  closed = false;
  /** Body bytes waiting for window, and whether END_STREAM goes after them. */
  queue: Buffer[] = [];
  queued = 0;
  endQueued = false;
  wantsDrain = false;
  /** Called once the END_STREAM of the request is queued (all of its body went). */
  sent: (() => void) | null = null;
  /** The request's trailers, sent after its body (they carry its END_STREAM). */
  trailers: readonly string[] | null = null;
  /** A HEAD request: its answer has no body, whatever its Content-Length says. */
  readonly head: boolean;
  /** The body length the answer declared (-1: none), and what came of it. */
  declared = -1;
  received = 0;

  constructor(conn: H2Connection, id: number, handler: StreamHandler, endStream: boolean, sendWindow: number, head: boolean) {
    this.#conn = conn;
    this.head = head;
    this.id = id;
    this.handler = handler;
    this.localEnded = endStream;
    this.sendWindow = sendWindow;
  }

  /** A piece of the request body; false: the upstream's window or the socket is full (onDrain follows). */
  write(chunk: Buffer): boolean {
    if (this.closed || this.localEnded) return false;
    return this.#conn.sendData(this, chunk, false);
  }

  /** The end of the request body (with its last piece, and trailer fields: lower-case names); `sent` once all of it went out. */
  end(chunk?: Buffer, sent?: () => void, trailers: readonly string[] | null = null): void {
    if (this.closed || this.localEnded) return;
    this.localEnded = true;
    this.sent = sent ?? null;
    this.trailers = trailers !== null && trailers.length > 0 ? trailers : null;
    this.#conn.sendData(this, chunk ?? EMPTY, true);
  }

  /** The handler takes the body again: the window it held back is given to the upstream. */
  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.#conn.replenish(this, 0);
  }

  /** Cuts the stream (RST_STREAM); the handler hears nothing more. */
  cancel(code = H2_CANCEL): void {
    this.#conn.reset(this, code);
  }

  /** Bytes taken by the handler since the last WINDOW_UPDATE; returns what to give back now (0: not yet). */
  consumed(n: number): number {
    this.#unacked += n;
    if (this.paused || this.remoteEnded || this.#unacked < STREAM_WINDOW / 2) return 0;
    const give = this.#unacked;
    this.#unacked = 0;
    this.recvWindow += give;
    return give;
  }
}

const EMPTY = Buffer.alloc(0);

export interface ConnectionEvents {
  /** The connection is gone (err: why, when it failed). */
  closed(err: Error | null): void;
  /** The upstream's SETTINGS came, with the streams it takes at once (Infinity: it set no limit). */
  settings(maxConcurrentStreams: number): void;
}

/** A connection error: the connection ends with GOAWAY carrying `code`. */
class ConnectionError extends Error {
  readonly h2code: number;
  constructor(code: number, message: string) {
    super(`HTTP/2: ${message}`);
    this.h2code = code;
  }
}

function frame(type: Type, flags: number, stream: number, payload: Buffer | null, length = payload?.length ?? 0): Buffer {
  const out = Buffer.allocUnsafe(9 + (payload === null ? 0 : length));
  out[0] = (length >>> 16) & 0xff;
  out[1] = (length >>> 8) & 0xff;
  out[2] = length & 0xff;
  out[3] = type;
  out[4] = flags;
  out.writeUInt32BE(stream & 0x7fffffff, 5);
  if (payload !== null) payload.copy(out, 9, 0, length);
  return out;
}

function u32(v: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(v >>> 0, 0);
  return b;
}

export class H2Connection {
  readonly socket: Socket;
  readonly #events: ConnectionEvents;
  readonly #streams = new Map<number, H2Stream>();
  readonly #decoder = new HpackDecoder();
  #nextId = 1;
  /** The peer's SETTINGS: streams it takes at once (null until they say: RFC 9113 sets no default), each stream's initial send window, its frame size. */
  maxConcurrentStreams: number | null = null;
  #initialWindow = 65_535;
  #maxFrame = MAX_FRAME;
  #sendWindow = 65_535;
  /** What the upstream may still send on the connection, and what it sent since our last WINDOW_UPDATE. */
  #recvWindow = CONNECTION_WINDOW;
  #received = 0;
  /** Streams waiting for connection window. */
  readonly #blocked = new Set<H2Stream>();
  #goingAway = false;
  #closed = false;
  /** Frames made this turn, written together. */
  #out: Buffer[] = [];
  #flushing = false;
  #pending: Buffer | null = null;
  /** A header block being continued: its stream, flags and fragments. */
  #continuing: { stream: number; flags: number; parts: Buffer[]; size: number } | null = null;
  readonly #pings: (() => void)[] = [];

  constructor(socket: Socket, events: ConnectionEvents) {
    this.socket = socket;
    this.#events = events;
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', (err: Error) => this.#fail(err));
    socket.on('close', () => this.#fail(Object.assign(new Error('the upstream closed the HTTP/2 connection'), { code: 'ECONNRESET' })));
    socket.on('drain', () => this.#drained());
    // SETTINGS_ENABLE_PUSH = 0, SETTINGS_MAX_HEADER_LIST_SIZE; then the connection window, raised.
    const settings = Buffer.from([0, 2, 0, 0, 0, 0, 0, 6, ...u32(MAX_HEADER_LIST)]);
    this.#queue(Buffer.concat([CLIENT_PREFACE, frame(Type.Settings, 0, 0, settings), frame(Type.WindowUpdate, 0, 0, u32(CONNECTION_WINDOW - 65_535))]));
  }

  /** Streams open now. */
  get active(): number {
    return this.#streams.size;
  }

  get usable(): boolean {
    return !this.#goingAway && !this.#closed && this.#nextId < 0x7fffffff;
  }

  /** Opens a stream with the request's fields (name, value, …; pseudo-fields first, names in lower case). */
  request(fields: readonly string[], endStream: boolean, handler: StreamHandler): H2Stream {
    const id = this.#nextId;
    this.#nextId += 2;
    const stream = new H2Stream(this, id, handler, endStream, this.#initialWindow, fields[1] === 'HEAD');
    this.#streams.set(id, stream);
    this.#fieldBlock(id, fields, endStream);
    return stream;
  }

  /** A HEADERS frame (with CONTINUATION frames when the block is bigger than a frame): a request's head, or its trailers. */
  #fieldBlock(id: number, fields: readonly string[], endStream: boolean): void {
    const block = encodeFields(fields);
    const flags = endStream ? END_STREAM : 0;
    if (block.length <= this.#maxFrame) {
      this.#queue(frame(Type.Headers, flags | END_HEADERS, id, block));
      return;
    }
    for (let at = 0; at < block.length; at += this.#maxFrame) {
      const part = block.subarray(at, Math.min(block.length, at + this.#maxFrame));
      const last = at + this.#maxFrame >= block.length;
      this.#queue(frame(at === 0 ? Type.Headers : Type.Continuation, (at === 0 ? flags : 0) | (last ? END_HEADERS : 0), id, part));
    }
  }

  /** PING; `acked` when the upstream answers it. */
  ping(acked: () => void): void {
    if (this.#closed) return;
    this.#pings.push(acked);
    this.#queue(frame(Type.Ping, 0, 0, Buffer.alloc(8)));
  }

  /** GOAWAY: no new stream; the connection closes once its streams are done. */
  close(): void {
    if (this.#closed) return;
    if (!this.#goingAway) {
      this.#goingAway = true;
      this.#queue(frame(Type.GoAway, 0, 0, Buffer.concat([u32(0), u32(H2_NO_ERROR)])));
    }
    if (this.#streams.size === 0) this.#end();
  }

  destroy(err?: Error): void {
    if (this.#closed) return;
    this.socket.destroy();
    this.#fail(err ?? Object.assign(new Error('the HTTP/2 connection was closed'), { code: 'ECONNRESET' }));
  }

  // ---------------------------------------------------------------- sending

  #queue(b: Buffer): void {
    if (this.#closed) return;
    this.#out.push(b);
    if (!this.#flushing) {
      this.#flushing = true;
      process.nextTick(() => this.#flush());
    }
  }

  #flush(): void {
    this.#flushing = false;
    const out = this.#out;
    if (out.length === 0 || this.#closed || this.socket.destroyed) return;
    this.#out = [];
    this.socket.write(out.length === 1 ? out[0]! : Buffer.concat(out));
  }

  /** DATA for a stream, within the windows; what does not fit waits for WINDOW_UPDATE. */
  sendData(stream: H2Stream, chunk: Buffer, end: boolean): boolean {
    if (chunk.length > 0) {
      stream.queue.push(chunk);
      stream.queued += chunk.length;
    }
    if (end) stream.endQueued = true;
    this.#pump(stream);
    const ok = stream.queued === 0 && this.socket.writableLength < 64 * 1024;
    if (!ok) stream.wantsDrain = true;
    return ok;
  }

  #pump(stream: H2Stream): void {
    while (stream.queued > 0) {
      const room = Math.min(stream.sendWindow, this.#sendWindow, this.#maxFrame);
      if (room <= 0) {
        if (this.#sendWindow <= 0) this.#blocked.add(stream);
        return;
      }
      const head = stream.queue[0]!;
      const n = Math.min(room, head.length);
      const piece = n === head.length ? head : head.subarray(0, n);
      if (n === head.length) stream.queue.shift();
      else stream.queue[0] = head.subarray(n);
      stream.queued -= n;
      stream.sendWindow -= n;
      this.#sendWindow -= n;
      const last = stream.queued === 0 && stream.endQueued && stream.trailers === null;
      this.#queue(frame(Type.Data, last ? END_STREAM : 0, stream.id, piece));
      if (last) this.#endSent(stream);
    }
    if (stream.endQueued) {
      if (stream.trailers !== null) this.#fieldBlock(stream.id, stream.trailers, true);
      else this.#queue(frame(Type.Data, END_STREAM, stream.id, null));
      this.#endSent(stream);
    }
    if (stream.remoteEnded) this.#maybeDone(stream);
  }

  #endSent(stream: H2Stream): void {
    stream.endQueued = false;
    const sent = stream.sent;
    stream.sent = null;
    sent?.();
  }

  #drained(): void {
    for (const s of [...this.#streams.values()]) {
      if (s.wantsDrain && s.queued === 0) {
        s.wantsDrain = false;
        this.#safely(s, () => s.handler.onDrain());
      }
    }
  }

  /** A handler's call where a throw must not reach the connection: it ends that stream only. */
  #safely(stream: H2Stream, call: () => void): void {
    try {
      call();
    } catch (err) {
      this.#handlerFailed(stream.id, err as Error);
    }
  }

  /** Gives the upstream back the window a stream's handler took (plus `n` more taken now). */
  replenish(stream: H2Stream, n: number): void {
    const give = stream.consumed(n);
    if (give > 0 && !stream.closed) this.#queue(frame(Type.WindowUpdate, 0, stream.id, u32(give)));
  }

  reset(stream: H2Stream, code: number): void {
    if (stream.closed) return;
    this.#queue(frame(Type.RstStream, 0, stream.id, u32(code)));
    this.#forget(stream);
  }

  #forget(stream: H2Stream): void {
    stream.closed = true;
    this.#streams.delete(stream.id);
    this.#blocked.delete(stream);
    if (this.#goingAway && this.#streams.size === 0) this.#end();
  }

  /** Our last frames go, then the socket (a peer that never closes its side does not keep it). */
  #end(): void {
    this.#flush();
    this.socket.destroySoon();
  }

  // ---------------------------------------------------------------- receiving

  #onData(chunk: Buffer): void {
    let buf = this.#pending === null ? chunk : Buffer.concat([this.#pending, chunk]);
    this.#pending = null;
    let at = 0;
    try {
      while (buf.length - at >= 9) {
        const length = (buf[at]! << 16) | (buf[at + 1]! << 8) | buf[at + 2]!;
        if (length > MAX_FRAME) throw new ConnectionError(H2_FRAME_SIZE_ERROR, `a frame of ${length} bytes, above ${MAX_FRAME}`);
        if (buf.length - at < 9 + length) break;
        const type = buf[at + 3]!;
        const flags = buf[at + 4]!;
        const id = buf.readUInt32BE(at + 5) & 0x7fffffff;
        try {
          this.#frame(type, flags, id, buf.subarray(at + 9, at + 9 + length));
        } catch (err) {
          if (err instanceof ConnectionError) throw err;
          // A handler's failure (the data path threw): that stream ends, the others go on.
          this.#handlerFailed(id, err as Error);
        }
        if (this.#closed) return;
        at += 9 + length;
      }
    } catch (err) {
      this.#connectionError(err as Error);
      return;
    }
    // What is left is a frame still coming: copied, since `chunk` may be reused.
    if (at < buf.length) this.#pending = Buffer.from(buf.subarray(at));
    buf = EMPTY;
  }

  #frame(type: number, flags: number, id: number, payload: Buffer): void {
    if (this.#continuing !== null && type !== Type.Continuation) throw new ConnectionError(H2_PROTOCOL_ERROR, 'a header block was not continued');
    switch (type) {
      case Type.Data: return this.#data(flags, id, payload);
      case Type.Headers: return this.#headers(flags, id, payload);
      case Type.Continuation: return this.#continuation(flags, id, payload);
      case Type.RstStream: return this.#rstStream(id, payload);
      case Type.Settings: return this.#settings(flags, id, payload);
      case Type.Ping: return this.#ping(flags, id, payload);
      case Type.GoAway: return this.#goAway(id, payload);
      case Type.WindowUpdate: return this.#windowUpdate(id, payload);
      case Type.PushPromise: throw new ConnectionError(H2_PROTOCOL_ERROR, 'PUSH_PROMISE, though push is disabled');
      case Type.Priority: return;
      default: return; // unknown frame types are ignored (RFC 9113 §4.1)
    }
  }

  /** The payload less its padding (PADDED): the first byte says how much follows the content. */
  #unpad(flags: number, payload: Buffer, skip = 0): Buffer {
    if ((flags & PADDED) === 0) return skip === 0 ? payload : payload.subarray(skip);
    if (payload.length < 1) throw new ConnectionError(H2_FRAME_SIZE_ERROR, 'a padded frame without its pad length');
    const pad = payload[0]!;
    if (pad + 1 + skip > payload.length) throw new ConnectionError(H2_PROTOCOL_ERROR, 'padding longer than the frame');
    return payload.subarray(1 + skip, payload.length - pad);
  }

  #data(flags: number, id: number, payload: Buffer): void {
    this.#known(id, 'DATA');
    // Every DATA byte, padding included, counts against the windows.
    this.#recvWindow -= payload.length;
    if (this.#recvWindow < 0) throw new ConnectionError(H2_FLOW_CONTROL_ERROR, 'DATA beyond the connection\'s window');
    this.#received += payload.length;
    if (this.#received >= CONNECTION_WINDOW / 2) {
      this.#queue(frame(Type.WindowUpdate, 0, 0, u32(this.#received)));
      this.#recvWindow += this.#received;
      this.#received = 0;
    }
    const stream = this.#streams.get(id);
    if (stream === undefined) return; // a stream we reset: what was in flight is dropped
    stream.recvWindow -= payload.length;
    if (stream.recvWindow < 0) return this.#streamError(stream, H2_FLOW_CONTROL_ERROR, 'DATA beyond the stream\'s window');
    if (!stream.answered || stream.remoteEnded) return this.#streamError(stream, H2_PROTOCOL_ERROR, 'DATA before the answer\'s head, or after its end');
    const body = this.#unpad(flags, payload);
    stream.received += body.length;
    if (stream.declared >= 0 && stream.received > stream.declared) {
      return this.#streamError(stream, H2_PROTOCOL_ERROR, `more body than the ${stream.declared} bytes its Content-Length said`);
    }
    // Padding is given back at once; the body when the handler took it.
    const padding = payload.length - body.length;
    if (flags & END_STREAM) stream.remoteEnded = true;
    if (body.length > 0 && !stream.handler.onData(body)) stream.paused = true;
    if (stream.closed) return;
    this.replenish(stream, body.length + padding);
    if (stream.remoteEnded) this.#remoteEnd(stream);
  }

  #headers(flags: number, id: number, payload: Buffer): void {
    this.#known(id, 'HEADERS');
    const fragment = this.#unpad(flags, payload, flags & PRIORITY ? 5 : 0);
    if (flags & END_HEADERS) this.#block(id, flags, fragment);
    else this.#continuing = { stream: id, flags, parts: [Buffer.from(fragment)], size: fragment.length };
  }

  #continuation(flags: number, id: number, payload: Buffer): void {
    const c = this.#continuing;
    if (c === null || c.stream !== id) throw new ConnectionError(H2_PROTOCOL_ERROR, 'CONTINUATION without its HEADERS');
    c.parts.push(Buffer.from(payload));
    c.size += payload.length;
    // Beyond what could decode to a list we take: the connection, not the stream (it would be held whole).
    if (c.size > 4 * MAX_HEADER_LIST) throw new ConnectionError(H2_PROTOCOL_ERROR, 'a header block above 256 KiB');
    if ((flags & END_HEADERS) === 0) return;
    this.#continuing = null;
    this.#block(id, c.flags, Buffer.concat(c.parts));
  }

  /** A whole header block: decoded always (the table must follow every block), then the answer's head or its trailers. */
  #block(id: number, flags: number, block: Buffer): void {
    let fields: string[] | null;
    try {
      fields = this.#decoder.decode(block, MAX_HEADER_LIST);
    } catch (err) {
      throw err instanceof CompressionError ? new ConnectionError(H2_COMPRESSION_ERROR, err.message) : err;
    }
    const stream = this.#streams.get(id);
    if (stream === undefined) return;
    if (fields === null) return this.#streamError(stream, H2_PROTOCOL_ERROR, `a header list above ${MAX_HEADER_LIST} bytes`);
    const bad = malformed(fields);
    if (bad !== null) return this.#streamProtocolError(stream, bad);
    const end = (flags & END_STREAM) !== 0;
    if (stream.answered) {
      // Trailers: they end the stream, and carry no pseudo-field.
      if (!end || fields.some((f, i) => i % 2 === 0 && f.charCodeAt(0) === 58)) return this.#streamProtocolError(stream, 'trailers that do not end the stream, or carry a pseudo-field');
      stream.remoteEnded = true;
      stream.handler.onTrailers(fields);
      if (!stream.closed) this.#remoteEnd(stream);
      return;
    }
    let status = -1;
    const regular: string[] = [];
    for (let i = 0; i < fields.length; i += 2) {
      const name = fields[i]!;
      if (name.charCodeAt(0) === 58 /* : */) {
        if (name !== ':status' || status !== -1 || regular.length > 0) return this.#streamProtocolError(stream, `a pseudo-field ${name} out of place`);
        const v = fields[i + 1]!;
        status = /^[0-9]{3}$/.test(v) ? Number(v) : NaN;
      } else regular.push(name, fields[i + 1]!);
    }
    if (!Number.isInteger(status) || status < 100 || status > 999) return this.#streamProtocolError(stream, 'an answer without a valid :status');
    if (status < 200) {
      if (end || status === 101) return this.#streamProtocolError(stream, 'an informational answer that ends the stream');
      return; // 100, 103: the final answer follows
    }
    const length = declaredLength(regular);
    if (length === -2) return this.#streamProtocolError(stream, 'a Content-Length that is not one length');
    // An answer to HEAD, a 204 or a 304 has no body (RFC 9110 §6.4.1), whatever it declares.
    stream.declared = stream.head || status === 204 || status === 304 ? 0 : length;
    stream.answered = true;
    if (end) stream.remoteEnded = true;
    stream.handler.onResponse(status, regular, end);
    if (end && !stream.closed) this.#remoteEnd(stream);
  }

  #streamProtocolError(stream: H2Stream, what: string): void {
    this.#streamError(stream, H2_PROTOCOL_ERROR, what);
  }

  /** An answer that broke the protocol ends its stream (RST_STREAM with `code`), not the connection. */
  #streamError(stream: H2Stream, code: number, what: string): void {
    this.reset(stream, code);
    stream.handler.onClose(code, protocolError(what), false);
  }

  /** A frame for a stream: never one we did not open (even ids are the server's, which push would need). */
  #known(id: number, what: string): void {
    if (id === 0 || (id & 1) === 0 || id >= this.#nextId) throw new ConnectionError(H2_PROTOCOL_ERROR, `${what} on stream ${id}, which we never opened`);
  }

  #handlerFailed(id: number, err: Error): void {
    if (id === 0) throw new ConnectionError(H2_INTERNAL_ERROR, err.message);
    const stream = this.#streams.get(id);
    // Its exchange had ended as it threw: nothing else is hurt.
    if (stream === undefined) return;
    this.reset(stream, H2_INTERNAL_ERROR);
    try {
      stream.handler.onClose(H2_INTERNAL_ERROR, err, false);
    } catch {
      // Its handler failed twice: the stream is gone either way.
    }
  }

  /** The upstream ended its side: the stream is done once ours is (a body still being sent is not needed any more). */
  #remoteEnd(stream: H2Stream): void {
    if (stream.declared >= 0 && stream.received !== stream.declared) {
      return this.#streamError(stream, H2_PROTOCOL_ERROR, `a body of ${stream.received} bytes, not the ${stream.declared} its Content-Length said`);
    }
    if (stream.localEnded && stream.queued === 0 && !stream.endQueued) this.#done(stream);
    else if (!stream.localEnded || stream.queued > 0) {
      // Answered before the whole request was sent: the rest is not wanted (RFC 9113 §8.1).
      this.reset(stream, H2_NO_ERROR);
      stream.handler.onEnd();
    }
  }

  #maybeDone(stream: H2Stream): void {
    if (!stream.closed && stream.localEnded && stream.queued === 0 && !stream.endQueued) this.#done(stream);
  }

  #done(stream: H2Stream): void {
    this.#forget(stream);
    stream.handler.onEnd();
  }

  #rstStream(id: number, payload: Buffer): void {
    if (payload.length !== 4) throw new ConnectionError(H2_FRAME_SIZE_ERROR, 'RST_STREAM of the wrong size');
    this.#known(id, 'RST_STREAM');
    const stream = this.#streams.get(id);
    if (stream === undefined) return;
    const code = payload.readUInt32BE(0);
    this.#forget(stream);
    stream.handler.onClose(code, null, code === H2_REFUSED_STREAM);
  }

  #settings(flags: number, id: number, payload: Buffer): void {
    if (id !== 0) throw new ConnectionError(H2_PROTOCOL_ERROR, 'SETTINGS on a stream');
    if (flags & ACK) {
      if (payload.length !== 0) throw new ConnectionError(H2_FRAME_SIZE_ERROR, 'a SETTINGS ACK with a payload');
      return;
    }
    if (payload.length % 6 !== 0) throw new ConnectionError(H2_FRAME_SIZE_ERROR, 'SETTINGS of the wrong size');
    // A first SETTINGS without the limit says there is none.
    this.maxConcurrentStreams ??= Infinity;
    for (let at = 0; at < payload.length; at += 6) {
      const key = payload.readUInt16BE(at);
      const value = payload.readUInt32BE(at + 2);
      if (key === 0x3) this.maxConcurrentStreams = value;
      else if (key === 0x4) {
        if (value > 0x7fffffff) throw new ConnectionError(H2_FLOW_CONTROL_ERROR, 'SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1');
        const delta = value - this.#initialWindow;
        this.#initialWindow = value;
        for (const s of this.#streams.values()) {
          s.sendWindow += delta;
          if (s.sendWindow > 0x7fffffff) throw new ConnectionError(H2_FLOW_CONTROL_ERROR, 'a stream window above 2^31-1');
        }
      } else if (key === 0x5) {
        if (value < 16_384 || value > 16_777_215) throw new ConnectionError(H2_PROTOCOL_ERROR, 'SETTINGS_MAX_FRAME_SIZE out of range');
        this.#maxFrame = Math.min(value, MAX_FRAME);
      } else if (key === 0x2 && value !== 0) throw new ConnectionError(H2_PROTOCOL_ERROR, 'SETTINGS_ENABLE_PUSH from a server');
      // HEADER_TABLE_SIZE: our encoder keeps no table. MAX_HEADER_LIST_SIZE: advisory.
    }
    this.#queue(frame(Type.Settings, ACK, 0, null));
    this.#events.settings(this.maxConcurrentStreams);
    if (this.#initialWindow > 0) for (const s of [...this.#streams.values()]) this.#pumped(s);
  }

  #ping(flags: number, id: number, payload: Buffer): void {
    if (id !== 0) throw new ConnectionError(H2_PROTOCOL_ERROR, 'PING on a stream');
    if (payload.length !== 8) throw new ConnectionError(H2_FRAME_SIZE_ERROR, 'PING of the wrong size');
    if (flags & ACK) this.#pings.shift()?.();
    else this.#queue(frame(Type.Ping, ACK, 0, payload));
  }

  #goAway(id: number, payload: Buffer): void {
    if (id !== 0) throw new ConnectionError(H2_PROTOCOL_ERROR, 'GOAWAY on a stream');
    if (payload.length < 8) throw new ConnectionError(H2_FRAME_SIZE_ERROR, 'GOAWAY too short');
    const last = payload.readUInt32BE(0) & 0x7fffffff;
    this.#goingAway = true;
    // Streams above the last one were not processed: they may be sent again elsewhere.
    for (const s of [...this.#streams.values()]) {
      if (s.id <= last) continue;
      this.#forget(s);
      this.#safely(s, () => s.handler.onClose(H2_REFUSED_STREAM, null, true));
    }
    if (this.#streams.size === 0) this.#end();
  }

  #windowUpdate(id: number, payload: Buffer): void {
    if (payload.length !== 4) throw new ConnectionError(H2_FRAME_SIZE_ERROR, 'WINDOW_UPDATE of the wrong size');
    const n = payload.readUInt32BE(0) & 0x7fffffff;
    if (id === 0) {
      if (n === 0) throw new ConnectionError(H2_PROTOCOL_ERROR, 'a WINDOW_UPDATE of 0');
      this.#sendWindow += n;
      if (this.#sendWindow > 0x7fffffff) throw new ConnectionError(H2_FLOW_CONTROL_ERROR, 'the connection window above 2^31-1');
      const blocked = [...this.#blocked];
      this.#blocked.clear();
      for (const s of blocked) this.#pumped(s);
      return;
    }
    this.#known(id, 'WINDOW_UPDATE');
    const stream = this.#streams.get(id);
    if (stream === undefined) return;
    if (n === 0) return this.#streamProtocolError(stream, 'a WINDOW_UPDATE of 0');
    stream.sendWindow += n;
    if (stream.sendWindow > 0x7fffffff) return this.#streamError(stream, H2_FLOW_CONTROL_ERROR, 'a stream window above 2^31-1');
    this.#pumped(stream);
  }

  /** Sends what a stream had waiting, and tells its handler when all of it went. */
  #pumped(stream: H2Stream): void {
    this.#pump(stream);
    if (stream.wantsDrain && stream.queued === 0 && !stream.closed && this.socket.writableLength < 64 * 1024) {
      stream.wantsDrain = false;
      this.#safely(stream, () => stream.handler.onDrain());
    }
  }

  #connectionError(err: Error): void {
    const code = err instanceof ConnectionError ? err.h2code : H2_INTERNAL_ERROR;
    this.#out.push(frame(Type.GoAway, 0, 0, Buffer.concat([u32(0), u32(code)])));
    this.#flush();
    this.socket.destroySoon();
    this.#fail(Object.assign(err, { code: 'ERR_HTTP2_ERROR' }));
  }

  /** The connection is gone: every stream still open hears it. */
  #fail(err: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#goingAway = true;
    const open = [...this.#streams.values()];
    this.#streams.clear();
    try {
      for (const s of open) {
        s.closed = true;
        try {
          s.handler.onClose(H2_INTERNAL_ERROR, err, false);
        } catch {
          // That exchange is over either way; the others still hear of it.
        }
      }
    } finally {
      this.#events.closed(err);
    }
  }
}

/** Characters a field name may have in HTTP/2: a token's, lower case (RFC 9113 §8.2.1). */
const NAME_CHARS = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz") NAME_CHARS[c.charCodeAt(0)] = 1;
/** Fields HTTP/2 forbids (RFC 9113 §8.2.2); TE only in requests. */
const CONNECTION_SPECIFIC = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te']);

/** What makes an answer's fields malformed (RFC 9113 §8.2), or null; white space around values is trimmed. */
function malformed(fields: string[]): string | null {
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i]!;
    const value = fields[i + 1]!;
    const from = name.charCodeAt(0) === 58 /* : */ ? 1 : 0;
    if (name.length === from) return 'an empty field name';
    for (let j = from; j < name.length; j++) {
      const c = name.charCodeAt(j);
      if (c >= 128 || NAME_CHARS[c] === 0) return `a field name that is not a lower-case token (${JSON.stringify(name)})`;
    }
    if (from === 0 && CONNECTION_SPECIFIC.has(name)) return `a connection-specific field (${name})`;
    for (let j = 0; j < value.length; j++) {
      const c = value.charCodeAt(j);
      if (c === 0 || c === 10 || c === 13) return `NUL, CR or LF in the value of ${name}`;
    }
    // White space around a value is not part of it (RFC 9110 §5.5): dropped, as an HTTP/1.1 parser does.
    const first = value.charCodeAt(0);
    const last = value.charCodeAt(value.length - 1);
    if (first === 32 || first === 9 || last === 32 || last === 9) fields[i + 1] = value.replace(/^[ \t]+|[ \t]+$/g, '');
  }
  return null;
}

/** The answer's Content-Length: -1 for none, -2 for values that are not one length (RFC 9110 §8.6). */
function declaredLength(fields: readonly string[]): number {
  let length = -1;
  for (let i = 0; i < fields.length; i += 2) {
    if (fields[i] !== 'content-length') continue;
    for (const v of fields[i + 1]!.split(',')) {
      const t = v.trim();
      if (!/^[0-9]{1,15}$/.test(t)) return -2;
      const n = Number(t);
      if (length >= 0 && n !== length) return -2;
      length = n;
    }
  }
  return length;
}

function protocolError(what: string): Error {
  return Object.assign(new Error(`the upstream broke HTTP/2: ${what}`), { code: 'ERR_HTTP2_ERROR' });
}

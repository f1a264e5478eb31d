import { EventEmitter } from 'node:events';
import { STATUS_CODES, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { isFieldValue, isToken } from './message_head.js';
import { endArgs, type EndChunk } from '../http/end_args.js';

/**
 * A response to one HTTP/1.1 request, written straight to the client connection:
 * the head goes out with the first piece of body in one write, the body framed by
 * its Content-Length, chunked (HTTP/1.1) or by the connection's close (HTTP/1.0).
 * It has the part of Node's ServerResponse that the data path and plugins use
 * (writeHead, setHeader, write, end, addTrailers, destroy, headersSent,
 * shouldKeepAlive, the 'drain', 'finish' and 'close' events), and Node's answers'
 * shape: Date, Connection, Keep-Alive. The connection (listeners/h1_connection.ts)
 * owns the order: a response is made only once the one before it finished.
 */

/** What the response tells the connection it belongs to. */
export interface ResponseOwner {
  /** The response was written whole (to the kernel): the connection moves on or closes. */
  responseFinished(res: H1Response): void;
}

const EMPTY = Buffer.alloc(0);

function httpError(code: string, message: string): Error {
  return Object.assign(new TypeError(message), { code });
}

/** Date's value, made once a second. */
let dateSecond = -1;
let dateValue = '';
function httpDate(): string {
  const now = Date.now();
  const s = Math.floor(now / 1000);
  if (s !== dateSecond) {
    dateSecond = s;
    dateValue = new Date(now).toUTCString();
  }
  return dateValue;
}

/**
 * A body chunk up to this size is copied next to its framing into one write; above it,
 * it goes out as it is (corked with the framing). The upstream pool's reads (64 KiB,
 * into a buffer the next read reuses) must always be copied: see h1_pool's READ_BUFFER.
 */
const COPY_LIMIT = 64 * 1024;

export class H1Response extends EventEmitter {
  readonly req: IncomingMessage;
  readonly socket: Socket;
  statusCode = 200;
  statusMessage = '';
  /** The connection stays open after this response; set false to close it once written. */
  shouldKeepAlive: boolean;
  headersSent = false;
  writableEnded = false;
  writableFinished = false;
  destroyed = false;
  readonly #owner: ResponseOwner;
  /** Keep-Alive: timeout=N, in seconds (0: none is sent). */
  readonly #keepAliveS: number;
  /** The head, made by writeHead, until it goes out with the first write. */
  #head: string | null = null;
  #chunked = false;
  #hasBody: boolean;
  /** setHeader's fields by lower-case name; null until one is set. */
  #fields: Map<string, [string, string | readonly string[]]> | null = null;
  #trailers = '';
  /** end()'s length, for the Content-Length of an answer made in one call. */
  #implicitLength = -1;
  #onDrain: (() => void) | null = null;
  /** 'close' was emitted for a cut answer. */
  #closed = false;

  constructor(owner: ResponseOwner, req: IncomingMessage, socket: Socket, keepAlive: boolean, keepAliveS: number) {
    super();
    this.#owner = owner;
    this.req = req;
    this.socket = socket;
    this.shouldKeepAlive = keepAlive;
    this.#keepAliveS = keepAliveS;
    this.#hasBody = req.method !== 'HEAD';
  }

  get finished(): boolean {
    return this.writableEnded;
  }

  get connection(): Socket {
    return this.socket;
  }

  setHeader(name: string, value: string | number | readonly string[]): this {
    if (this.headersSent) throw httpError('ERR_HTTP_HEADERS_SENT', 'Cannot set headers after they are sent to the client');
    const v = typeof value === 'number' ? String(value) : value;
    checkField(name, v);
    (this.#fields ??= new Map()).set(name.toLowerCase(), [name, v]);
    return this;
  }

  getHeader(name: string): string | readonly string[] | undefined {
    return this.#fields?.get(name.toLowerCase())?.[1];
  }

  hasHeader(name: string): boolean {
    return this.#fields?.has(name.toLowerCase()) ?? false;
  }

  removeHeader(name: string): void {
    if (this.headersSent) throw httpError('ERR_HTTP_HEADERS_SENT', 'Cannot remove headers after they are sent to the client');
    this.#fields?.delete(name.toLowerCase());
  }

  getHeaderNames(): string[] {
    return this.#fields === null ? [] : [...this.#fields.keys()];
  }

  // hot path
  /**
   * Makes the head: `headers` as name, value, … (or an object), after the fields
   * setHeader set (a name given here replaces them, as in Node). Throws, as Node
   * does, for a status outside 100–999 or a field that is not a token and a value.
   */
  writeHead(status: number, reason?: string | readonly string[] | Record<string, string | number | readonly string[]>,
    headers?: readonly string[] | Record<string, string | number | readonly string[]>): this {
    if (this.headersSent) throw httpError('ERR_HTTP_HEADERS_SENT', 'Cannot write headers after they are sent to the client');
    if (typeof reason !== 'string') {
      headers = reason;
      reason = undefined;
    }
    if (!Number.isInteger(status) || status < 100 || status > 999) throw Object.assign(new RangeError(`Invalid status code: ${status}`), { code: 'ERR_HTTP_INVALID_STATUS_CODE' });
    const message = reason ?? STATUS_CODES[status] ?? 'unknown';
    if (!isFieldValue(message)) throw httpError('ERR_INVALID_CHAR', 'Invalid character in statusMessage');
    const list = flatFields(headers, this.#fields);
    let lines = '';
    let length = false;
    let te = false;
    let connection = false;
    let date = false;
    for (let i = 0; i < list.length; i += 2) {
      const name = list[i]!;
      const value = list[i + 1]!;
      checkField(name, value);
      lines += `${name}: ${value}\r\n`;
      const n = name.length;
      if (n === 14 || n === 17 || n === 10 || n === 4) {
        const lower = name.toLowerCase();
        if (lower === 'content-length') length = true;
        else if (lower === 'transfer-encoding') {
          te = true;
          this.#chunked = /(?:^|,)\s*chunked\s*$/i.test(value);
        } else if (lower === 'connection') {
          connection = true;
          if (/(?:^|,)\s*close\s*(?:,|$)/i.test(value)) this.shouldKeepAlive = false;
        } else if (lower === 'date') date = true;
      }
    }
    if (status === 204 || status === 304 || status < 200) this.#hasBody = false;
    const req = this.req;
    if (!length && !te && this.#hasBody) {
      if (this.#implicitLength >= 0) lines += `content-length: ${this.#implicitLength}\r\n`;
      else if (req.httpVersionMajor === 1 && req.httpVersionMinor === 1) {
        lines += 'transfer-encoding: chunked\r\n';
        this.#chunked = true;
      } else this.shouldKeepAlive = false; // HTTP/1.0: the body ends with the connection
    }
    if (!connection) {
      if (!this.shouldKeepAlive) lines += 'connection: close\r\n';
      else lines += this.#keepAliveS > 0 ? `connection: keep-alive\r\nkeep-alive: timeout=${this.#keepAliveS}\r\n` : 'connection: keep-alive\r\n';
    }
    if (!date) lines += `date: ${httpDate()}\r\n`;
    this.statusCode = status;
    this.statusMessage = message;
    this.#head = `HTTP/1.1 ${status} ${message}\r\n${lines}\r\n`;
    this.headersSent = true;
    return this;
  }

  /** Trailer fields, sent after a chunked body's last chunk (a body framed otherwise has none). */
  addTrailers(trailers: Record<string, string> | readonly string[]): void {
    const list = Array.isArray(trailers) ? trailers as readonly string[] : Object.entries(trailers).flat();
    let lines = '';
    for (let i = 0; i < list.length; i += 2) {
      checkField(list[i]!, list[i + 1]!);
      lines += `${list[i]!}: ${list[i + 1]!}\r\n`;
    }
    this.#trailers += lines;
  }

  // hot path
  /** A piece of the body; false: the client is behind ('drain' follows). */
  write(chunk: string | Uint8Array, encoding?: BufferEncoding | (() => void), cb?: () => void): boolean {
    if (typeof encoding === 'function') {
      cb = encoding;
      encoding = undefined;
    }
    if (this.writableEnded || this.destroyed || this.socket.destroyed) return false;
    if (!this.headersSent) this.writeHead(this.statusCode);
    const data = typeof chunk === 'string' ? Buffer.from(chunk, encoding ?? 'utf8') : chunk;
    if (!this.#hasBody || data.length === 0) {
      if (this.#head !== null) return this.#send(EMPTY, '', cb);
      if (cb !== undefined) process.nextTick(cb);
      return true;
    }
    return this.#send(data, '', cb);
  }

  /** The end of the body (with its last piece): the answer is finished once written. */
  end(chunkArg?: EndChunk, encodingArg?: BufferEncoding | (() => void), cbArg?: () => void): this {
    const [chunk, encoding, cb] = endArgs(chunkArg, encodingArg, cbArg);
    if (this.writableEnded || this.destroyed) return this;
    let data = chunk === undefined || chunk === null ? EMPTY : typeof chunk === 'string' ? Buffer.from(chunk, encoding ?? 'utf8') : chunk;
    if (!this.headersSent) {
      this.#implicitLength = data.length;
      this.writeHead(this.statusCode);
    }
    if (!this.#hasBody) data = EMPTY;
    this.writableEnded = true;
    const tail = this.#chunked && this.#hasBody ? `0\r\n${this.#trailers}\r\n` : '';
    // A write that fails (the connection went first) ends the answer as a cut one.
    const done = (err?: Error | null): void => {
      if (err) this.connectionClosed();
      else this.#finished(cb);
    };
    if (data.length > 0 || tail !== '' || this.#head !== null) this.#send(data, tail, done);
    else if (this.socket.writableLength === 0) process.nextTick(done);
    else this.socket.write(EMPTY, done);
    return this;
  }

  /** Ends the answer by closing the connection (an answer cut short). */
  destroy(err?: Error): this {
    if (this.destroyed) return this;
    this.destroyed = true;
    this.socket.destroy(err);
    return this;
  }

  /** The connection closed before the answer was finished (the client left, or destroy). */
  connectionClosed(): void {
    if (this.writableFinished || this.#closed) return;
    this.#closed = true;
    this.destroyed = true;
    this.emit('close');
  }

  #finished(cb: (() => void) | undefined): void {
    if (this.destroyed) return;
    this.writableFinished = true;
    this.emit('finish');
    cb?.();
    this.#owner.responseFinished(this);
  }

  // hot path
  /** Writes what is pending (the head), `data` in the body's framing, then `tail`, as one write when it is small. */
  #send(data: Uint8Array, tail: string, cb: ((err?: Error | null) => void) | undefined): boolean {
    const head = this.#head ?? '';
    this.#head = null;
    const frame = this.#chunked && data.length > 0 ? `${data.length.toString(16)}\r\n` : '';
    const after = this.#chunked && data.length > 0 ? `\r\n${tail}` : tail;
    const socket = this.socket;
    let ok: boolean;
    if (data.length > COPY_LIMIT) {
      socket.cork();
      if (head.length + frame.length > 0) socket.write(head + frame, 'latin1');
      ok = socket.write(data, after === '' ? cb : undefined);
      if (after !== '') ok = socket.write(after, 'latin1', cb);
      socket.uncork();
    } else {
      const before = head.length + frame.length;
      const out = Buffer.allocUnsafe(before + data.length + after.length);
      if (head.length > 0) out.write(head, 0, 'latin1');
      if (frame.length > 0) out.write(frame, head.length, 'latin1');
      out.set(data, before);
      if (after.length > 0) out.write(after, before + data.length, 'latin1');
      ok = socket.write(out, cb);
    }
    if (!ok) socket.once('drain', (this.#onDrain ??= () => this.emit('drain')));
    return ok;
  }
}

/** A field as Node checks it: a token name, a value without CR, LF, NUL or other controls. */
function checkField(name: string, value: string | readonly string[]): void {
  if (!isToken(name)) throw httpError('ERR_INVALID_HTTP_TOKEN', `Header name must be a valid HTTP token ["${name}"]`);
  const values = typeof value === 'string' ? [value] : value;
  for (const v of values) if (!isFieldValue(v)) throw httpError('ERR_INVALID_CHAR', `Invalid character in header content ["${name}"]`);
}

/** setHeader's fields and writeHead's, as name, value, …: a name writeHead gives replaces setHeader's. */
function flatFields(headers: readonly string[] | Record<string, string | number | readonly string[]> | undefined,
  set: Map<string, [string, string | readonly string[]]> | null): readonly string[] {
  let given: readonly string[];
  if (headers === undefined) given = [];
  else if (Array.isArray(headers)) given = headers as readonly string[];
  else {
    const out: string[] = [];
    const obj = headers as Record<string, string | number | readonly string[]>;
    for (const name in obj) {
      const v = obj[name]!;
      if (Array.isArray(v)) for (const x of v as readonly string[]) out.push(name, String(x));
      else out.push(name, String(v));
    }
    given = out;
  }
  if (set === null || set.size === 0) return given;
  const replaced = new Set<string>();
  for (let i = 0; i < given.length; i += 2) replaced.add(given[i]!.toLowerCase());
  const out: string[] = [];
  for (const [lower, [name, value]] of set) {
    if (replaced.has(lower)) continue;
    if (typeof value === 'string') out.push(name, value);
    else for (const v of value) out.push(name, v);
  }
  for (const x of given) out.push(x);
  return out;
}

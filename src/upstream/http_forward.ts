import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Dispatcher } from 'undici';
import type { RuntimeCode } from '../errors.js';
import type { EndpointSet } from './endpoints.js';
import type { HeaderEdit } from '../filters/api.js';
import { applyHeaderEdits, type HeaderVariables } from '../filters/headers.js';

/** Hop-by-hop request headers (RFC 9110 §7.6.1), plus the ones we set ourselves. */
const DROP_REQUEST = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade',
  // Node's server already answered any 100-continue; undici must not wait for another.
  'expect',
  'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host',
]);
const DROP_RESPONSE = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade']);

/** Codes of errors raised before the request reached a socket: safe to try the next endpoint. */
const CONNECT_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ENOTFOUND', 'EAI_AGAIN',
  'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_SOCKET',
]);

export interface ForwardOptions {
  /** For the x-forwarded-for header. */
  remoteAddress: string;
  /** Time for response headers, and between body chunks. */
  timeoutMs: number;
  /** Called once, when the exchange with the upstream ends (`code` set when it failed). */
  done(endpoint: string | undefined, code: RuntimeCode | undefined): void;
  /** Header edits (the `headers` filter), with the values their templates read. */
  readonly requestHeaderEdits: readonly HeaderEdit[] | null;
  readonly responseHeaderEdits: readonly HeaderEdit[] | null;
  headerVariables(): HeaderVariables;
  /** Answers with a short text of the proxy's own (a 502 or 504), response header edits included. */
  reply(status: number, text: string): void;
}

/**
 * Forwards one HTTP request to a role's endpoints through undici's Pool. It is the
 * dispatch handler itself (undici's native callbacks, so no wrapping per request).
 * A connect failure, before any byte of the request was sent, moves on to the next
 * endpoint of the role, once per endpoint; the last failure answers 502 naming the
 * role. A missing answer within the timeout answers 504.
 */
export class HttpForward implements Dispatcher.DispatchHandler {
  readonly #req: IncomingMessage;
  readonly #res: ServerResponse;
  readonly #set: EndpointSet;
  readonly #opts: ForwardOptions;
  readonly #request: Dispatcher.DispatchOptions;
  #index: number;
  #tries = 0;
  #sent = false;
  #abort: ((err?: Error) => void) | null = null;
  #resume: (() => void) | null = null;
  #finished = false;

  constructor(req: IncomingMessage, res: ServerResponse, set: EndpointSet, opts: ForwardOptions) {
    this.#req = req;
    this.#res = res;
    this.#set = set;
    this.#opts = opts;
    this.#index = set.start();
    const hasBody = req.headers['transfer-encoding'] !== undefined
      || (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0');
    this.#request = {
      origin: undefined,
      method: req.method as Dispatcher.HttpMethod,
      path: requestPath(req.url!),
      headers: opts.requestHeaderEdits === null
        ? upstreamHeaders(req, opts.remoteAddress)
        : applyHeaderEdits(upstreamHeaders(req, opts.remoteAddress), opts.requestHeaderEdits, opts.headerVariables()),
      body: hasBody ? req : null,
      headersTimeout: opts.timeoutMs,
      bodyTimeout: opts.timeoutMs,
    };
  }

  /** Starts the first attempt. */
  start(): void {
    this.#dispatch();
  }

  /** The client went away: abort the upstream request (undici frees or destroys the socket). */
  clientGone(): void {
    if (this.#finished) return;
    if (this.#abort) this.#abort();
    else this.#finish(undefined);
  }

  #dispatch(): void {
    this.#tries++;
    const e = this.#set.endpoints[this.#index]!;
    e.pool.dispatch(this.#request, this);
  }

  #finish(code: RuntimeCode | undefined): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#opts.done(this.#set.endpoints[this.#index]?.address, code);
  }

  onConnect(abort: (err?: Error) => void): void {
    this.#sent = true;
    if (this.#res.destroyed) abort();
    else this.#abort = abort;
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText: string): boolean {
    if (statusCode < 200) return true; // 1xx informational: not forwarded
    const res = this.#res;
    if (res.destroyed) return false;
    const edits = this.#opts.responseHeaderEdits;
    const headers = responseHeaders(rawHeaders);
    res.writeHead(statusCode, statusText, edits === null ? headers : applyHeaderEdits(headers, edits, this.#opts.headerVariables()));
    this.#resume = resume;
    return true;
  }

  onData(chunk: Buffer): boolean {
    // Backpressure: undici pauses when onData returns false; the client's drain resumes it.
    const ok = this.#res.write(chunk);
    if (!ok) this.#res.once('drain', this.#resume!);
    return ok;
  }

  onComplete(): void {
    this.#res.end();
    this.#finish(undefined);
  }

  onError(err: Error): void {
    const res = this.#res;
    const code = (err as { code?: string }).code ?? '';
    if (code === 'UND_ERR_ABORTED' || res.destroyed) {
      this.#finish(undefined);
      return;
    }
    if (!this.#sent && CONNECT_CODES.has(code) && !this.#req.readableDidRead) {
      if (this.#tries < this.#set.endpoints.length) {
        this.#index = this.#index + 1 === this.#set.endpoints.length ? 0 : this.#index + 1;
        this.#dispatch();
        return;
      }
      this.#fail(502, 'SY_ERR_UPSTREAM_CONNECT', `no endpoint of role ${this.#set.role} accepted a connection`);
      return;
    }
    if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
      this.#fail(504, 'SY_ERR_UPSTREAM_TIMEOUT', `role ${this.#set.role} did not answer in time`);
    } else if (code.startsWith('HPE_') || code === 'UND_ERR_INFO' || err.name === 'HTTPParserError') {
      this.#fail(502, 'SY_ERR_UPSTREAM_PROTOCOL', `role ${this.#set.role} sent a malformed response`);
    } else if (code === 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH' || this.#req.errored) {
      // The client's body was broken or cut short: nothing sensible to answer.
      res.destroy();
      this.#finish(undefined);
    } else {
      this.#fail(502, 'SY_ERR_UPSTREAM_RESET', `role ${this.#set.role} closed the connection`);
    }
  }

  #fail(status: number, code: RuntimeCode, text: string): void {
    const res = this.#res;
    if (res.headersSent) res.destroy(); // mid-body: the only honest signal left is a cut connection
    else this.#opts.reply(status, `switchyard: ${text}\n`);
    this.#finish(code);
  }
}

/**
 * A short plain-text answer generated by the proxy itself. `headers` come after
 * (and so may override) the content type; edits apply last.
 */
export function sendText(res: ServerResponse, status: number, text: string, headers?: Record<string, string>,
  edits?: { list: readonly HeaderEdit[]; vars: HeaderVariables }): void {
  if (res.headersSent || res.destroyed) return;
  const own: Record<string, string> = { 'content-type': 'text/plain; charset=utf-8', ...headers };
  let flat: string[] = Object.entries(own).flat();
  if (edits) flat = applyHeaderEdits(flat, edits.list, edits.vars);
  flat.push('content-length', String(Buffer.byteLength(text)));
  res.writeHead(status, flat);
  res.end(text);
}

/** The origin-form path; an absolute-form target (`GET http://h/p`) keeps only path and query. */
function requestPath(url: string): string {
  if (url.charCodeAt(0) === 47 /* / */) return url;
  try {
    const u = new URL(url);
    return u.pathname + u.search;
  } catch {
    return '/';
  }
}

// hot path
/** The client's headers in their own case and order, minus hop-by-hop ones, plus x-forwarded-*. */
function upstreamHeaders(req: IncomingMessage, remoteAddress: string): string[] {
  const raw = req.rawHeaders;
  const out: string[] = [];
  const conn = req.headers.connection;
  const listed = conn && conn !== 'keep-alive' && conn !== 'close' ? connectionTokens(conn) : null;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const lower = name.toLowerCase();
    if (DROP_REQUEST.has(lower) || (listed !== null && listed.includes(lower))) continue;
    out.push(name, raw[i + 1]!);
  }
  const xff = req.headers['x-forwarded-for'];
  out.push(
    'x-forwarded-for', xff ? `${xff}, ${remoteAddress}` : remoteAddress,
    'x-forwarded-proto', 'http',
  );
  const host = req.headers.host;
  if (host !== undefined) out.push('x-forwarded-host', host);
  return out;
}

// hot path
/** Upstream response headers as a flat [name, value, …] list for writeHead (keeps repeats and case). */
function responseHeaders(raw: Buffer[]): string[] {
  const out: string[] = [];
  let listed: string[] | null = null;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toString('latin1');
    const lower = name.toLowerCase();
    if (DROP_RESPONSE.has(lower)) {
      if (lower === 'connection') {
        // Nearly every upstream sends "keep-alive" or "close": no other header is named.
        const v = raw[i + 1]!.toString('latin1');
        if (v !== 'keep-alive' && v !== 'close') listed = connectionTokens(v);
      }
      continue;
    }
    out.push(name, raw[i + 1]!.toString('latin1'));
  }
  if (listed === null || listed.length === 0) return out;
  const kept: string[] = [];
  for (let i = 0; i < out.length; i += 2) {
    if (!listed.includes(out[i]!.toLowerCase())) kept.push(out[i]!, out[i + 1]!);
  }
  return kept;
}

function connectionTokens(v: string): string[] {
  return v.toLowerCase().split(',').map((s) => s.trim()).filter((s) => s && s !== 'keep-alive' && s !== 'close');
}

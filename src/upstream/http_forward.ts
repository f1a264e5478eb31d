import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Dispatcher } from 'undici';
import type { RuntimeCode } from '../errors.js';
import type { RetryConfig } from '../config/types.js';
import { EndpointPicker, type RoleRoutes } from './picker.js';
import { isIdempotent, retriable, type RetryBudget } from './retry.js';
import type { HeaderEdit } from '../filters/api.js';
import { applyHeaderEdits, type HeaderVariables } from '../filters/headers.js';
import { timeoutAfterIo } from './timeout.js';

/** Hop-by-hop request headers (RFC 9110 §7.6.1), plus the ones we set ourselves. */
const DROP_REQUEST = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade',
  // Node's server already answered any 100-continue; undici must not wait for another.
  'expect',
  'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host',
]);
const DROP_RESPONSE = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade',
  // Ours to set: an upstream's would say a fallback happened where none did.
  'x-switchyard-fallback']);

/** Codes of errors raised before the request reached a socket: safe to try the next endpoint. */
const CONNECT_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ENOTFOUND', 'EAI_AGAIN',
  'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_SOCKET',
]);

/**
 * Codes of errors that no upstream caused: the forwarding library (undici) or Node's
 * HTTP code refused the request, or the answer, as switchyard made it (a header a
 * plugin set, a pool switchyard already closed). Such a failure is switchyard's own
 * (issue 11): it answers 500 and is never counted against the upstream, never feeds
 * outlier detection, never retried.
 */
const REFUSED_CODES = new Set([
  'UND_ERR_INVALID_ARG', 'UND_ERR_NOT_SUPPORTED', 'UND_ERR_INVALID_RETURN_VALUE', 'UND_ERR_DESTROYED', 'UND_ERR_CLOSED',
  'UND_ERR_BPL_MISSING_UPSTREAM', 'UND_ERR_MAX_ORIGINS_REACHED',
  'ERR_INVALID_CHAR', 'ERR_INVALID_HTTP_TOKEN', 'ERR_HTTP_INVALID_HEADER_VALUE', 'ERR_HTTP_INVALID_STATUS_CODE',
  'ERR_HTTP_HEADERS_SENT', 'ERR_UNESCAPED_CHARACTERS', 'ERR_INVALID_ARG_TYPE', 'ERR_INVALID_ARG_VALUE',
]);

/**
 * Whether an error means switchyard could not send what it made (REFUSED_CODES), or its
 * own code failed (a TypeError or RangeError thrown in a callback the library ran),
 * rather than that the upstream or the wire failed.
 */
export function refusedBySwitchyard(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return (typeof code === 'string' && REFUSED_CODES.has(code))
    || err instanceof TypeError || err instanceof RangeError || err instanceof SyntaxError || err instanceof ReferenceError;
}

/**
 * Whether an error means this process (EMFILE) or the whole system (ENFILE) had no
 * file descriptor left for a new upstream socket: switchyard's own overload, never
 * the endpoint's failure (issue 11, item 5: with descriptors used up, every request
 * answered 502 and counted against healthy endpoints).
 */
export function outOfDescriptors(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'EMFILE' || code === 'ENFILE';
}

/** Why a try failed, as `switchyard_upstream_errors_total{reason}` says it ("ejected": the failure ejected the endpoint). */
export type UpstreamReason = 'connect-failure' | 'reset' | 'timeout' | 'protocol' | 'ejected';

export interface ForwardOptions {
  /** The role index serving the request: the forwarder moves it when the request falls back to another role. */
  role: number;
  /** The request may go to another role when its own cannot take it (Exchange.fallback). */
  readonly fallback: boolean;
  /** A role the client asked for that could not take the request (-1: none). */
  readonly fallbackFrom: number;
  /** For the x-forwarded-for header. */
  readonly remoteAddress: string;
  /** Time between body chunks, and for response headers when there is no retry policy. */
  readonly timeoutMs: number;
  /** The whole upstream exchange until response headers, every try included (0: no limit). */
  readonly totalMs: number;
  readonly retry: RetryConfig | undefined;
  readonly budget: RetryBudget | null;
  /** Bodies with a Content-Length up to this are read whole before the upstream request opens (0: none). */
  readonly bufferBodyBytes: number;
  readonly routes: RoleRoutes;
  roleName(role: number): string;
  /** One try failed (called once per failed try, and once more with "ejected" when that ejected its endpoint). */
  tryFailed(role: number, reason: UpstreamReason): void;
  /** A retry starts, after a try that failed for `reason` (a status code when the upstream answered). */
  retried(role: number, reason: string): void;
  /**
   * Called once, when the exchange with the upstream ends (`code` set when it failed).
   * `SY_ERR_REQUEST_REFUSED`: switchyard answered 500 itself, no role served the request;
   * `SY_ERR_NO_FILE_DESCRIPTORS`: 503, likewise.
   */
  done(endpoint: string | undefined, code: RuntimeCode | undefined): void;
  /** Header edits (the `headers` filter), with the values their templates read. */
  readonly requestHeaderEdits: readonly HeaderEdit[] | null;
  readonly responseHeaderEdits: readonly HeaderEdit[] | null;
  headerVariables(): HeaderVariables;
  /** Answers with a short text of the proxy's own (a 502 or 504), response header edits included. */
  reply(status: number, text: string, headers?: Record<string, string>): void;
}

/** Marks the abort of a try that ran out of the total time. */
const TOTAL_TIMEOUT = Object.assign(new Error('the total upstream timeout passed'), { code: 'SY_TOTAL_TIMEOUT' });
/**
 * Marks the abort of a try whose headers did not come within perTryTimeout (or the
 * upstream timeout). Our own timer: undici's runs on a 0.5 s clock for 1 s and more,
 * so `upstream: 1s` answered at 1.5 s.
 */
const TRY_TIMEOUT = Object.assign(new Error('the upstream did not answer in time'), { code: 'UND_ERR_HEADERS_TIMEOUT' });
/** Marks the abort of a response whose next body chunk did not come within the upstream timeout. */
const BODY_TIMEOUT = Object.assign(new Error('the upstream stopped sending its response'), { code: 'UND_ERR_BODY_TIMEOUT' });

/**
 * Forwards one HTTP request to a role's endpoints through undici's Pool. It is the
 * dispatch handler itself (undici's native callbacks, so no wrapping per request).
 *
 * A connect failure, before any byte of the request was sent, moves on to the next
 * endpoint (EndpointPicker: the role's next one, then another role when the
 * request may fall back); the last failure answers 502 naming the role. With a
 * retry policy, a reset, a timeout or a retriable 5xx answer is tried again on the
 * next endpoint, for idempotent methods whose body is small enough to have been
 * buffered, while attempts and the listener's retry budget last. A missing answer
 * within the timeout answers 504. Every try's outcome feeds outlier detection.
 */
export class HttpForward implements Dispatcher.DispatchHandler {
  readonly #req: IncomingMessage;
  readonly #res: ServerResponse;
  readonly #opts: ForwardOptions;
  readonly #request: Dispatcher.DispatchOptions;
  readonly #picker: EndpointPicker;
  /** The role whose name the request headers were made with. */
  #headersRole: number;
  /** The body can be sent again (none, or buffered whole): a failed try may be retried. */
  #replayable: boolean;
  #retries = 0;
  #budgetTaken = false;
  /** The budget refused a retry on this role: the retry leaves it for another role of the split. */
  #leaveRole = false;
  #sent = false;
  /** A retriable answer is being read and thrown away; the retry starts when it ends. */
  #discarding: number | null = null;
  #abort: ((err?: Error) => void) | null = null;
  #resume: (() => void) | null = null;
  #totalTimer: NodeJS.Timeout | null = null;
  #backoffTimer: NodeJS.Timeout | null = null;
  #tryTimer: NodeJS.Timeout | null = null;
  /** Runs between response body chunks; paused while the client does not read. */
  #bodyTimer: NodeJS.Timeout | null = null;
  /** Response body chunks so far (the body timer's view of progress). */
  #chunks = 0;
  #finished = false;

  constructor(req: IncomingMessage, res: ServerResponse, opts: ForwardOptions) {
    this.#req = req;
    this.#res = res;
    this.#opts = opts;
    this.#picker = new EndpointPicker(opts.routes, opts.role, opts.fallback);
    opts.role = this.#picker.role;
    this.#headersRole = opts.role;
    const hasBody = req.headers['transfer-encoding'] !== undefined
      || (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0');
    const retry = opts.retry;
    this.#replayable = retry !== undefined && retry.attempts > 0 && !hasBody && isIdempotent(req.method!);
    this.#request = {
      origin: undefined,
      method: req.method as Dispatcher.HttpMethod,
      path: requestPath(req.url!),
      headers: this.#headers(),
      body: hasBody ? req : null,
      // Ours (#tryTimer, #bodyTimer): undici runs timeouts of 1 s and more on a 0.5 s clock.
      headersTimeout: 0,
      bodyTimeout: 0,
    };
  }

  /**
   * Starts the first try, once a body that is read whole first is in: one that a
   * retry may send again (retries.maxBodyBytes), or a small one (bufferBodyBytes), so
   * that a client trickling a small body holds no upstream connection meanwhile
   * (issue 11, item 5; nginx buffers every body by default).
   */
  start(): void {
    const opts = this.#opts;
    opts.budget?.requestStarted();
    const req = this.#req;
    if (this.#request.body !== null && req.headers['transfer-encoding'] === undefined) {
      const length = Number(req.headers['content-length']);
      const retry = opts.retry;
      const replayable = retry !== undefined && retry.attempts > 0 && isIdempotent(req.method!) && length <= retry.maxBodyBytes;
      if (replayable || length <= opts.bufferBodyBytes) {
        this.#bufferBody(replayable);
        return;
      }
    }
    this.#dispatch();
  }

  /** The client went away: abort the upstream request (undici frees or destroys the socket). */
  clientGone(): void {
    if (this.#finished) return;
    if (this.#abort) this.#abort();
    else this.#finish(undefined);
  }

  /**
   * Switchyard ends the exchange for the client's fault (a body below minUploadRate):
   * the upstream request is aborted, and nothing more of it reaches the response,
   * which the caller answers or cuts itself. Like a client that left, it is never
   * the upstream's failure: not counted, not fed to outlier detection, not retried.
   */
  cut(): void {
    if (this.#finished) return;
    const abort = this.#abort;
    this.#finish(undefined);
    abort?.();
  }

  #headers(): string[] {
    const opts = this.#opts;
    const req = this.#req;
    return opts.requestHeaderEdits === null
      ? upstreamHeaders(req, opts.remoteAddress)
      : applyHeaderEdits(upstreamHeaders(req, opts.remoteAddress), opts.requestHeaderEdits, opts.headerVariables());
  }

  /** Reads the whole body, then dispatches it as one buffer (`replayable`: a retry may send it again). */
  #bufferBody(replayable: boolean): void {
    const req = this.#req;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.once('end', () => {
      if (this.#finished) return;
      this.#request.body = Buffer.concat(chunks);
      this.#replayable = replayable;
      this.#dispatch();
    });
  }

  #dispatch(): void {
    if (this.#finished) return;
    // Whole request in hand (no body, or buffered): the total time runs from here,
    // connecting included, as Envoy's route timeout runs from the downstream end of stream.
    if (this.#request.body === null || Buffer.isBuffer(this.#request.body)) this.#startTotalTimer();
    this.#sent = false;
    this.#abort = null;
    const opts = this.#opts;
    if (opts.role !== this.#picker.role) {
      opts.role = this.#picker.role;
      // Templates such as %role% name the role that serves the request.
      if (opts.requestHeaderEdits !== null && this.#headersRole !== opts.role) {
        this.#request.headers = this.#headers();
        this.#headersRole = opts.role;
      }
    }
    this.#picker.endpoint.pool.dispatch(this.#request, this);
  }

  #startTotalTimer(): void {
    const opts = this.#opts;
    if (opts.totalMs > 0 && this.#totalTimer === null && !this.#finished) {
      this.#totalTimer = timeoutAfterIo(() => this.#totalTimeout(), opts.totalMs);
    }
  }

  /**
   * The whole request (body included) is on the wire: the time for an answer starts
   * now, as with undici's own headersTimeout, so a slow upload is never cut short
   * for a slow answer. A streamed body's total time starts here too.
   */
  onRequestSent(): void {
    this.#startTotalTimer();
    const opts = this.#opts;
    if (this.#tryTimer === null && this.#abort !== null) {
      const timer = timeoutAfterIo(() => {
        // Headers that were waiting cleared (or replaced) it in the meantime.
        if (this.#tryTimer !== timer) return;
        this.#tryTimer = null;
        if (this.#abort !== null) this.#abort(TRY_TIMEOUT);
      }, opts.retry?.perTryTimeoutMs ?? opts.timeoutMs);
      this.#tryTimer = timer;
    }
  }

  #clearTryTimer(): void {
    if (this.#tryTimer !== null) {
      clearTimeout(this.#tryTimer);
      this.#tryTimer = null;
    }
    this.#clearBodyTimer();
  }

  #startBodyTimer(): void {
    if (this.#bodyTimer !== null) {
      this.#bodyTimer.refresh();
      return;
    }
    // As timeoutAfterIo, but a chunk read in between has already re-armed this timer (refresh).
    const timer = setTimeout(() => {
      const chunks = this.#chunks;
      setImmediate(() => {
        if (this.#bodyTimer !== timer || this.#chunks !== chunks) return;
        this.#bodyTimer = null;
        if (this.#abort !== null) this.#abort(BODY_TIMEOUT);
      });
    }, this.#opts.timeoutMs);
    timer.unref();
    this.#bodyTimer = timer;
  }

  #clearBodyTimer(): void {
    if (this.#bodyTimer !== null) {
      clearTimeout(this.#bodyTimer);
      this.#bodyTimer = null;
    }
  }

  /**
   * The client read what was waiting: the upstream's time for its next chunk starts again.
   * Made on the first backpressure only: most responses never need it.
   */
  #drained: (() => void) | null = null;

  #onDrained(): () => void {
    return (this.#drained ??= (): void => {
      if (!this.#finished) this.#startBodyTimer();
      this.#resume!();
    });
  }

  #finish(code: RuntimeCode | undefined): void {
    if (this.#finished) return;
    this.#finished = true;
    if (this.#totalTimer) clearTimeout(this.#totalTimer);
    if (this.#backoffTimer) clearTimeout(this.#backoffTimer);
    this.#clearTryTimer();
    this.#opts.budget?.requestEnded(this.#budgetTaken);
    this.#opts.done(this.#picker.endpoint.address, code);
  }

  /** Counts a failed try against its endpoint (outlier detection) and in the metrics. */
  #tryFailed(reason: UpstreamReason): void {
    const p = this.#picker;
    this.#opts.tryFailed(p.role, reason);
    if (p.set.failed(p.endpoint)) this.#opts.tryFailed(p.role, 'ejected');
  }

  /** Whether a try that failed after the request was sent may be retried now (and takes the budget if so). */
  #mayRetry(reason: 'reset' | 'timeout' | number): boolean {
    const retry = this.#opts.retry;
    if (retry === undefined || !this.#replayable || this.#retries >= retry.attempts || this.#res.destroyed) return false;
    if (!retriable(retry.on, reason)) return false;
    // The budget keeps retries from piling onto a role that is failing: a retry that
    // moves the request to another role (the split's fallback) does not need it, and
    // one the budget refuses on this role still may move.
    if (!this.#budgetTaken && this.#picker.nextStaysOnRole) {
      if (this.#opts.budget === null || this.#opts.budget.take()) this.#budgetTaken = true;
      else if (this.#picker.canLeaveRole) this.#leaveRole = true;
      else return false;
    }
    return true;
  }

  #retry(reason: string): void {
    const retry = this.#opts.retry!;
    this.#retries++;
    // The failed try is over: a client leaving, or the total timeout, during the back-off just finishes.
    this.#abort = null;
    const failedRole = this.#picker.role;
    const go = (): void => {
      this.#backoffTimer = null;
      if (this.#finished) return;
      this.#opts.retried(failedRole, reason);
      // Another endpoint when there is one; else the same one again.
      this.#picker.next(this.#leaveRole);
      this.#leaveRole = false;
      this.#dispatch();
    };
    const delay = backoffMs(this.#retries, retry.backoffBaseMs, retry.backoffMaxMs);
    if (delay < 1) go();
    else this.#backoffTimer = setTimeout(go, delay);
  }

  #totalTimeout(): void {
    if (this.#finished || this.#res.headersSent) return;
    // A try on the wire timed out like any other: it counts, and feeds outlier detection. One
    // still waiting for a connection counts, but is not held against its endpoint (our pool may
    // be what is full); during a back-off no try runs, so nothing counts.
    if (this.#backoffTimer === null) {
      if (this.#sent) this.#tryFailed('timeout');
      else this.#opts.tryFailed(this.#picker.role, 'timeout');
    }
    const role = this.#opts.roleName(this.#picker.role);
    this.#fail(504, 'SY_ERR_UPSTREAM_TIMEOUT', `role ${role} did not answer within the total timeout`);
    this.#abort?.(TOTAL_TIMEOUT);
  }

  onConnect(abort: (err?: Error) => void): void {
    this.#sent = true;
    if (this.#res.destroyed || this.#finished) abort();
    else this.#abort = abort;
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText: string): boolean {
    if (statusCode < 200) return true; // 1xx informational: not forwarded
    this.#clearTryTimer();
    const res = this.#res;
    if (res.destroyed || this.#finished) return false;
    this.#startBodyTimer();
    const p = this.#picker;
    if (statusCode >= 500) {
      // Not a transport error (no upstream_errors count), but a failure for outlier detection.
      if (p.set.failed(p.endpoint)) this.#opts.tryFailed(p.role, 'ejected');
      if (this.#mayRetry(statusCode)) {
        this.#discarding = statusCode;
        return true;
      }
    } else p.set.succeeded(p.endpoint);
    const edits = this.#opts.responseHeaderEdits;
    const headers = responseHeaders(rawHeaders);
    const from = fallenBackFrom(this.#opts, p);
    if (from >= 0) headers.push('x-switchyard-fallback', this.#opts.roleName(from));
    try {
      res.writeHead(statusCode, statusText, edits === null ? headers : applyHeaderEdits(headers, edits, this.#opts.headerVariables()));
    } catch (err) {
      // Node refused the answer as switchyard made it (response edits a plugin set): the
      // upstream answered, so it is not to blame (Node's parser on undici's side already
      // checked the upstream's own headers).
      this.#refused(err);
      this.#abort?.();
      return false;
    }
    this.#resume = resume;
    return true;
  }

  onData(chunk: Buffer): boolean {
    this.#chunks++;
    this.#bodyTimer?.refresh();
    if (this.#discarding !== null) return true;
    // Backpressure: undici pauses when onData returns false; the client's drain resumes it.
    // The upstream waits for us meanwhile: its body timeout does not run.
    const ok = this.#res.write(chunk);
    if (!ok) {
      this.#clearBodyTimer();
      this.#res.once('drain', this.#onDrained());
    }
    return ok;
  }

  onComplete(): void {
    this.#clearBodyTimer();
    const status = this.#discarding;
    if (status !== null) {
      this.#discarding = null;
      this.#retry(String(status));
      return;
    }
    this.#res.end();
    this.#finish(undefined);
  }

  onError(err: Error): void {
    this.#clearTryTimer();
    const res = this.#res;
    const code = (err as { code?: string }).code ?? '';
    if (code === 'UND_ERR_ABORTED' || err === TOTAL_TIMEOUT || res.destroyed || this.#finished) {
      this.#finish(undefined);
      return;
    }
    if (refusedBySwitchyard(err)) {
      // undici refused the request as switchyard built it, before it reached a socket (it
      // validates synchronously in dispatch), or switchyard's own callback threw.
      this.#refused(err);
      return;
    }
    if (!this.#sent && outOfDescriptors(err)) {
      // No socket could be made: the next endpoint would fare no better, and no endpoint is to blame.
      this.#discarding = null;
      if (res.headersSent) res.destroy();
      else this.#opts.reply(503, 'switchyard: out of file descriptors; try again later\n', { 'retry-after': '1' });
      this.#finish('SY_ERR_NO_FILE_DESCRIPTORS');
      return;
    }
    const role = this.#opts.roleName(this.#picker.role);
    if (this.#discarding !== null) {
      // The retriable answer broke off while it was thrown away: retry all the same.
      this.#discarding = null;
      this.#tryFailed('reset');
      this.#retry('reset');
      return;
    }
    // Nothing was sent: the next endpoint may have the request, if its body is still whole
    // (none, or read into a buffer: any method) or not yet touched.
    if (!this.#sent && CONNECT_CODES.has(code) && (this.#replayable || Buffer.isBuffer(this.#request.body) || !this.#req.readableDidRead)) {
      this.#tryFailed('connect-failure');
      const failedRole = this.#picker.role;
      if (this.#picker.next()) {
        // Always made (a request that never reached a socket is safe to move), so outside
        // attempts and the budget, but counted with the others.
        this.#opts.retried(failedRole, 'connect-failure');
        this.#dispatch();
        return;
      }
      this.#fail(502, 'SY_ERR_UPSTREAM_CONNECT', `no endpoint of role ${role} accepted a connection`);
      return;
    }
    if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
      this.#tryFailed('timeout');
      if (!res.headersSent && this.#mayRetry('timeout')) this.#retry('timeout');
      else this.#fail(504, 'SY_ERR_UPSTREAM_TIMEOUT', `role ${role} did not answer in time`);
    } else if (code.startsWith('HPE_') || code === 'UND_ERR_INFO' || err.name === 'HTTPParserError') {
      this.#tryFailed('protocol');
      this.#fail(502, 'SY_ERR_UPSTREAM_PROTOCOL', `role ${role} sent a malformed response`);
    } else if (code === 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH' || this.#req.errored) {
      // The client's body was broken or cut short: nothing sensible to answer.
      res.destroy();
      this.#finish(undefined);
    } else {
      this.#tryFailed('reset');
      if (!res.headersSent && this.#mayRetry('reset')) this.#retry('reset');
      else this.#fail(502, 'SY_ERR_UPSTREAM_RESET', `role ${role} closed the connection`);
    }
  }

  /** Switchyard's own failure (refusedBySwitchyard): 500, no upstream blamed, no retry. */
  #refused(err: unknown): void {
    const res = this.#res;
    this.#discarding = null;
    if (res.headersSent) res.destroy();
    else this.#opts.reply(500, `switchyard: this request could not be forwarded as switchyard made it: ${(err as Error)?.message ?? String(err)}\n`);
    this.#finish('SY_ERR_REQUEST_REFUSED');
  }

  #fail(status: number, code: RuntimeCode, text: string): void {
    const res = this.#res;
    if (res.headersSent) res.destroy(); // mid-body: the only honest signal left is a cut connection
    else {
      const from = fallenBackFrom(this.#opts, this.#picker);
      this.#opts.reply(status, `switchyard: ${text}\n`, from >= 0 ? { 'x-switchyard-fallback': this.#opts.roleName(from) } : undefined);
    }
    this.#finish(code);
  }
}

/**
 * Envoy's fully jittered exponential back-off: before retry n, a random time up
 * to min(base × (2ⁿ − 1), max), so retries of many requests spread out instead of
 * hitting a struggling role together.
 */
export function backoffMs(n: number, baseMs: number, maxMs: number): number {
  return Math.random() * Math.min(baseMs * (2 ** n - 1), maxMs);
}

/**
 * The role a request was asked for (by a pin with fallback) or first given (by a
 * split) when another role serves it; -1 when the role it got serves it.
 */
export function fallenBackFrom(opts: { readonly fallbackFrom: number }, p: EndpointPicker): number {
  const from = opts.fallbackFrom >= 0 ? opts.fallbackFrom : p.firstRole;
  return from === p.role ? -1 : from;
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

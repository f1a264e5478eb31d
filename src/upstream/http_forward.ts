import type { IncomingMessage, ServerResponse } from 'node:http';
import { classifyTransportError, UPSTREAM_FAILURES, UpstreamTimeout, type UpstreamFailure } from '../errors.js';
import type { HeaderEdit } from '../filters/api.js';
import { applyHeaderEdits } from '../http/header_edits.js';
import { hasBody, requestPath, responseHeaders, trailerFields, upstreamHeaders } from '../http/hop_by_hop.js';
import { sendText, type EditsFor } from '../http/local_reply.js';
import type { ResponseHead } from '../http1/message_head.js';
import { H1Response } from '../http1/response.js';
import { ExchangeAborted, RequestBodyBroken, type ExchangeHandler, type UpstreamRequest } from './h1_pool.js';
import { EndpointPicker } from './picker.js';
import { isIdempotent, retriable } from './retry.js';
import { answeredFailure, budgetExhausted, fallenBackFrom, outcomeOf, retried, tryFailed, type OutcomeSink, type RoleChoice, type UpstreamRoute } from './route.js';
import { TryTimers, type TimerTarget } from './try_timers.js';
import { GRPC_RETRY_ON, isGrpc, markGrpcStatus, parseGrpcStatus, parseGrpcTimeout } from '../http2/grpc.js';
import type { RetryOn } from '../config/types.js';

/** What the forwarder reads of the request it forwards (the http Exchange has it). */
export interface ForwardedRequest {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  /** For x-forwarded-for. */
  readonly remoteAddress: string;
  /** The filters' edits (the `headers` filter), applied with the serving role's variables. */
  readonly requestHeaderEdits: readonly HeaderEdit[] | null;
  readonly responseHeaderEdits: readonly HeaderEdit[] | null;
  /** traceparent (and tracestate) for the upstream request when the request is traced; null when not. */
  readonly traceHeaders: Record<string, string> | null;
}

/**
 * Forwards one HTTP request to a role's endpoints through their connection pools
 * (h1_pool.ts). It is the exchange handler itself, so nothing wraps it per request.
 *
 * A connect failure, before any byte of the request was sent, moves on to the next
 * endpoint (EndpointPicker: the role's next one, then another role when the
 * request may fall back); the last failure answers 502 naming the role. With a
 * retry policy, a reset, a timeout or a retriable 5xx answer is tried again on the
 * next endpoint, for idempotent methods whose body is small enough to have been
 * buffered, while attempts and the listener's retry budget last. A missing answer
 * within the timeout answers 504. Every try's outcome feeds outlier detection, and
 * the exchange's outcome is reported once, to the sink.
 */
export class HttpForward implements ExchangeHandler, TimerTarget {
  readonly #route: UpstreamRoute;
  readonly #ex: ForwardedRequest;
  readonly #choice: RoleChoice;
  readonly #sink: OutcomeSink;
  readonly #request: UpstreamRequest;
  /** The only owner of the role that serves the request. */
  readonly #picker: EndpointPicker;
  /** The role whose name the request headers were made with. */
  #headersRole: number;
  /** The body can be sent again (none, or buffered whole): a failed try may be retried. */
  #replayable: boolean;
  #tries = 1;
  #retries = 0;
  #budgetTaken = false;
  /** The budget refused a retry on this role: the retry leaves it for another role of the split. */
  #leaveRole = false;
  #sent = false;
  /** A retriable answer is being read and thrown away; the retry starts when it ends. */
  #discarding: string | null = null;
  /**
   * A gRPC call's body as it streams, kept (up to retries.maxBodyBytes) so that a
   * retriable status can send the call again once its body ended: a gRPC body has no
   * Content-Length to be buffered by. Null: not kept, or too long.
   */
  #copy: Buffer[] | null = null;
  #copied = 0;
  #abort: ((err?: Error) => void) | null = null;
  #resume: (() => void) | null = null;
  readonly #timers = new TryTimers(this);
  #finished = false;
  /** A gRPC call: its status is tracked, and no timeout meant for plain requests cuts its stream. */
  readonly #grpc: boolean;
  /** The whole exchange's limit: timeouts.total, or the call's grpc-timeout when sooner (0: none). */
  readonly #totalMs: number;
  /** The answer's start, and each gap in its body (timeouts.upstream); 0 for gRPC, whose messages come when they come. */
  readonly #upstreamMs: number;
  /** A trailers-only answer's gRPC status fields: sent as trailers, after the headers (see onHeaders). */
  #statusTrailers: string[] | null = null;

  constructor(route: UpstreamRoute, ex: ForwardedRequest, choice: RoleChoice, sink: OutcomeSink) {
    this.#route = route;
    this.#ex = ex;
    this.#choice = choice;
    this.#sink = sink;
    this.#picker = new EndpointPicker(route, choice.role, choice.fallback);
    this.#headersRole = this.#picker.role;
    const req = ex.req;
    const body = hasBody(req);
    const retry = route.retry;
    this.#grpc = isGrpc(req);
    const deadline = this.#grpc ? parseGrpcTimeout(req.headers['grpc-timeout'] as string | undefined) : null;
    this.#totalMs = deadline === null ? route.totalMs : route.totalMs > 0 ? Math.min(route.totalMs, deadline) : deadline;
    this.#upstreamMs = this.#grpc ? 0 : route.upstreamMs;
    if (this.#grpc && body && retry !== undefined && retry.attempts > 0 && retry.on.some((r) => typeof r === 'string' && r in GRPC_RETRY_ON)) this.#keepCopy(req, retry.maxBodyBytes);
    this.#replayable = retry !== undefined && retry.attempts > 0 && !body && isIdempotent(req.method!);
    // Chunked, or an HTTP/2 body without a Content-Length: its length is known at its end.
    const cl = req.headers['transfer-encoding'] === undefined ? req.headers['content-length'] : undefined;
    this.#request = {
      method: req.method!,
      path: requestPath(req.url!),
      headers: this.#headers(),
      body: body ? req : null,
      length: !body ? 0 : cl === undefined ? -1 : Number(cl),
    };
  }

  /** The role now serving the request (or tried last). */
  get role(): number {
    return this.#picker.role;
  }

  /**
   * Starts the first try, once a body that is read whole first is in: one that a
   * retry may send again (retries.maxBodyBytes), or a small one (bufferBodyBytes), so
   * that a client trickling a small body holds no upstream connection meanwhile
   * (nginx buffers every body by default).
   */
  start(): void {
    const route = this.#route;
    route.budget?.requestStarted();
    const req = this.#ex.req;
    const length = this.#request.length;
    if (this.#request.body !== null && length >= 0) {
      const retry = route.retry;
      const replayable = retry !== undefined && retry.attempts > 0 && isIdempotent(req.method!) && length <= retry.maxBodyBytes;
      if (replayable || length <= route.bufferBodyBytes) {
        this.#bufferBody(replayable);
        return;
      }
    }
    this.#dispatch();
  }

  /** The client went away: abort the upstream request (its connection is closed). */
  clientGone(): void {
    if (this.#finished) return;
    if (this.#abort) this.#abort();
    else this.#finish(null);
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
    this.#finish(null);
    abort?.();
  }

  #headers(): string[] {
    const ex = this.#ex;
    const trace = ex.traceHeaders;
    const headers = trace === null ? upstreamHeaders(ex.req, ex.remoteAddress) : withTraceContext(upstreamHeaders(ex.req, ex.remoteAddress), trace);
    return ex.requestHeaderEdits === null ? headers : applyHeaderEdits(headers, ex.requestHeaderEdits, this.#route.variables[this.#picker.role]!);
  }

  /** Reads the whole body, then dispatches it as one buffer (`replayable`: a retry may send it again). */
  #bufferBody(replayable: boolean): void {
    const req = this.#ex.req;
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
    if (this.#request.body === null || Buffer.isBuffer(this.#request.body)) this.#timers.startTotal(this.#totalMs);
    this.#sent = false;
    this.#abort = null;
    // Templates such as %role% name the role that serves the request.
    if (this.#headersRole !== this.#picker.role && this.#ex.requestHeaderEdits !== null) this.#request.headers = this.#headers();
    this.#headersRole = this.#picker.role;
    const pool = this.#picker.endpoint.pool;
    if (this.#grpc && pool.protocol !== 'http2') {
      this.#cannotCarry();
      return;
    }
    pool.dispatch(this.#request, this);
  }

  /**
   * The whole request (body included) is on the wire: the time for an answer starts
   * now, so a slow upload is never cut short
   * for a slow answer. A streamed body's total time starts here too.
   */
  onRequestSent(): void {
    this.#timers.startTotal(this.#totalMs);
    if (this.#abort !== null) this.#timers.startTry(this.#grpc ? 0 : this.#route.retry?.perTryTimeoutMs ?? this.#route.upstreamMs);
  }

  /** TimerTarget: the try's answer did not start in time. */
  tryTimedOut(): void {
    this.#abort?.(new UpstreamTimeout('headers', 'the upstream did not answer in time'));
  }

  /** TimerTarget: the answer's next chunk did not come in time. */
  bodyTimedOut(): void {
    this.#abort?.(new UpstreamTimeout('body', 'the upstream stopped sending its response'));
  }

  /**
   * The client read what was waiting: the upstream's time for its next chunk starts again.
   * Made on the first backpressure only: most responses never need it.
   */
  #drained: (() => void) | null = null;

  #onDrained(): () => void {
    return (this.#drained ??= (): void => {
      if (!this.#finished) this.#timers.startBody(this.#upstreamMs);
      this.#resume!();
    });
  }

  #finish(failure: UpstreamFailure | null): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#timers.clearAll();
    this.#route.budget?.requestEnded(this.#budgetTaken);
    const res = this.#ex.res;
    this.#sink.upstreamEnded(outcomeOf(this.#picker, failure, this.#tries, res.headersSent ? res.statusCode : 0));
  }

  #keepCopy(req: IncomingMessage, max: number): void {
    this.#copy = [];
    req.on('data', (c: Buffer) => {
      if (this.#copy === null) return;
      this.#copied += c.length;
      if (this.#copied > max) this.#copy = null;
      else this.#copy.push(c);
    });
  }

  /** A gRPC call whose body ended and was kept whole: from now on it is sent as that buffer. */
  #replayCopy(): boolean {
    if (this.#copy === null || !this.#ex.req.readableEnded) return false;
    this.#request.body = Buffer.concat(this.#copy);
    this.#request.length = this.#copied;
    this.#copy = null;
    this.#replayable = true;
    return true;
  }

  /** Whether a try that failed after the request was sent may be retried now (and takes the budget if so). */
  #mayRetry(reason: RetryOn): boolean {
    const retry = this.#route.retry;
    if (retry === undefined || this.#retries >= retry.attempts || this.#ex.res.destroyed) return false;
    // A kept gRPC body is sent again only after an answered status: the server said what became of the call.
    if (!this.#replayable && !(typeof reason === 'string' && reason in GRPC_RETRY_ON && retriable(retry.on, reason) && this.#replayCopy())) return false;
    if (!retriable(retry.on, reason)) return false;
    // The budget keeps retries from piling onto a role that is failing: a retry that
    // moves the request to another role (the split's fallback) does not need it, and
    // one the budget refuses on this role still may move.
    if (!this.#budgetTaken && this.#picker.nextStaysOnRole) {
      const budget = this.#route.budget;
      if (budget === null || budget.take()) this.#budgetTaken = true;
      else {
        budgetExhausted(this.#route, this.#picker.role);
        if (this.#picker.canLeaveRole) this.#leaveRole = true;
        else return false;
      }
    }
    return true;
  }

  #retry(reason: string): void {
    const retry = this.#route.retry!;
    this.#retries++;
    // The failed try is over: a client leaving, or the total timeout, during the back-off just finishes.
    this.#abort = null;
    const failedRole = this.#picker.role;
    const go = (): void => {
      if (this.#finished) return;
      retried(this.#route, failedRole, reason);
      // Another endpoint when there is one; else the same one again.
      this.#picker.next(this.#leaveRole);
      this.#leaveRole = false;
      this.#tries++;
      this.#dispatch();
    };
    this.#timers.backoff(backoffMs(this.#retries, retry.backoffBaseMs, retry.backoffMaxMs), go);
  }

  /** TimerTarget: the whole exchange took longer than the total timeout. */
  totalTimedOut(): void {
    if (this.#finished || this.#ex.res.headersSent) return;
    // A try on the wire timed out like any other: it counts, and feeds outlier detection. One
    // still waiting for a connection counts, but is not held against its endpoint (our pool may
    // be what is full); during a back-off no try runs, so nothing counts.
    if (!this.#timers.backingOff) tryFailed(this.#route, this.#picker, 'timeout', this.#sent);
    const abort = this.#abort;
    this.#fail('timeout', `role ${this.#roleName()} did not answer within the total timeout`);
    abort?.(new UpstreamTimeout('total', 'the total upstream timeout passed'));
  }

  #roleName(): string {
    return this.#route.roleNames[this.#picker.role]!;
  }

  onConnect(abort: (err?: Error) => void): void {
    this.#sent = true;
    if (this.#ex.res.destroyed || this.#finished) abort();
    else this.#abort = abort;
  }

  onHeaders(statusCode: number, rawHeaders: string[], resume: () => void, statusText: string, head: ResponseHead): boolean {
    this.#timers.clearTry();
    const res = this.#ex.res;
    if (res.destroyed || this.#finished) return false;
    this.#timers.startBody(this.#upstreamMs);
    const p = this.#picker;
    if (statusCode >= 500) {
      answeredFailure(this.#route, p);
      if (this.#mayRetry(statusCode)) {
        this.#discarding = String(statusCode);
        return true;
      }
    } else {
      p.set.succeeded(p.endpoint);
      // A gRPC status in the headers (trailers-only) that retries.on names: the call is tried again.
      const condition = this.#grpc && head.trailersOnly === true ? grpcRetryCondition(rawHeaders) : null;
      if (condition !== null && this.#mayRetry(condition)) {
        this.#discarding = condition;
        return true;
      }
    }
    const edits = this.#ex.responseHeaderEdits;
    const headers = responseHeaders(rawHeaders, head.connectionOptions);
    // A gRPC answer in trailers-only form goes on as headers and trailers (the same to a
    // gRPC client): the status must come after the headers in whatever the client speaks.
    if (head.trailersOnly === true) this.#statusTrailers = takeGrpcStatus(headers);
    if (this.#grpc) this.#noteGrpcStatus(this.#statusTrailers);
    const from = fallenBackFrom(this.#choice, p);
    if (from >= 0) headers.push('x-switchyard-fallback', this.#route.roleNames[from]!);
    this.#bodyLeftUnread();
    try {
      res.writeHead(statusCode, statusText, edits === null ? headers : applyHeaderEdits(headers, edits, this.#route.variables[p.role]!));
    } catch (err) {
      // Node refused the answer as switchyard made it (response edits a plugin set): the
      // upstream answered, so it is not to blame (the pool's parser already
      // checked the upstream's own headers).
      this.#refused(err);
      this.#abort?.();
      return false;
    }
    this.#resume = resume;
    return true;
  }

  onData(chunk: Buffer): boolean {
    this.#timers.chunk();
    if (this.#discarding !== null) return true;
    // Backpressure: the pool pauses the upstream socket when onData returns false; the client's drain resumes it.
    // The upstream waits for us meanwhile: its body timeout does not run.
    const res = this.#ex.res;
    // The chunk is valid during this call only (ExchangeHandler.onData): an HTTP/1.1 answer
    // copies it into its own write; an HTTP/2 stream may keep it queued, so it gets a copy.
    const ok = res instanceof H1Response ? res.write(chunk) : res.write(Buffer.from(chunk));
    if (!ok) {
      this.#timers.clearBody();
      res.once('drain', this.#onDrained());
    }
    return ok;
  }

  onComplete(trailers: string[] | null): void {
    this.#timers.clearBody();
    const reason = this.#discarding;
    if (reason !== null) {
      this.#discarding = null;
      this.#retry(reason);
      return;
    }
    const res = this.#ex.res;
    if (this.#grpc && trailers !== null) this.#noteGrpcStatus(trailers);
    const all = this.#statusTrailers === null ? trailers : [...(trailers ?? []), ...this.#statusTrailers];
    if (all !== null && all.length > 0) res.addTrailers(trailerObject(all));
    res.end();
    this.#finish(null);
  }

  onError(err: Error): void {
    this.#timers.clearTry();
    const res = this.#ex.res;
    if (err instanceof ExchangeAborted || (err instanceof UpstreamTimeout && err.phase === 'total') || res.destroyed || this.#finished) {
      this.#finish(null);
      return;
    }
    const req = this.#ex.req;
    if (this.#sent && (err instanceof RequestBodyBroken || req.errored)) {
      // The client's body was broken or cut short: nothing sensible to answer.
      res.destroy();
      this.#finish(null);
      return;
    }
    const failure = classifyTransportError(err, { sent: this.#sent });
    if (failure === 'refused') {
      // The pool refused the request as switchyard built it, before it reached a socket (it
      // checks the head synchronously in dispatch), or switchyard's own callback threw.
      this.#refused(err);
      return;
    }
    if (failure === 'descriptors') {
      // No socket could be made: the next endpoint would fare no better, and no endpoint is to blame.
      this.#discarding = null;
      if (res.headersSent) res.destroy();
      else sendText(res, 503, 'switchyard: out of file descriptors; try again later\n', { 'retry-after': '1' }, this.#ownEdits(this.#picker.role));
      this.#finish('descriptors');
      return;
    }
    if (this.#discarding !== null) {
      // The retriable answer broke off while it was thrown away: retry all the same.
      this.#discarding = null;
      tryFailed(this.#route, this.#picker, 'reset');
      this.#retry('reset');
      return;
    }
    const reason = UPSTREAM_FAILURES[failure].reason;
    tryFailed(this.#route, this.#picker, reason);
    const role = this.#roleName();
    if (failure === 'connect' || (failure === 'tls' && !res.headersSent)) {
      // Nothing was sent: the next endpoint may have the request, if its body is still whole
      // (none, or read into a buffer: any method) or not yet touched. Always made (a request
      // that never reached a socket is safe to move), so outside attempts and the budget,
      // but counted with the retries.
      const failedRole = this.#picker.role;
      if ((this.#replayable || Buffer.isBuffer(this.#request.body) || !req.readableDidRead) && this.#picker.next()) {
        retried(this.#route, failedRole, reason);
        this.#tries++;
        this.#dispatch();
        return;
      }
      if (failure === 'tls') this.#fail('tls', `no endpoint of role ${role} completed a TLS handshake (${err.message})`);
      else this.#fail('connect', `no endpoint of role ${role} accepted a connection`);
    } else if (failure === 'timeout') {
      if (!res.headersSent && this.#mayRetry('timeout')) this.#retry('timeout');
      else this.#fail('timeout', `role ${role} did not answer in time`);
    } else if (failure === 'protocol') {
      this.#fail('protocol', `role ${role} sent a malformed response`);
    } else {
      if (!res.headersSent && this.#mayRetry('reset')) this.#retry('reset');
      else this.#fail('reset', `role ${role} closed the connection`);
    }
  }

  /** Notes the call's status from the answer's fields that carry it (trailers, or a trailers-only head). */
  #noteGrpcStatus(fields: readonly string[] | null): void {
    if (fields === null) return;
    for (let i = 0; i < fields.length; i += 2) {
      if (fields[i]!.toLowerCase() !== 'grpc-status') continue;
      const code = parseGrpcStatus(fields[i + 1]);
      if (code >= 0) markGrpcStatus(this.#ex.res, code);
      return;
    }
  }

  /** Response edits for an answer of switchyard's own, with the variables of `role` (-1: none). */
  #ownEdits(role: number): EditsFor {
    return { list: this.#ex.responseHeaderEdits, vars: this.#route.variables[role]! };
  }

  /**
   * A gRPC call routed to a channel that speaks HTTP/1.1: gRPC needs HTTP/2 (its
   * trailers), so the call is refused with a gRPC error that names the fix, and no
   * endpoint is blamed.
   */
  #cannotCarry(): void {
    const res = this.#ex.res;
    const role = this.#roleName();
    sendText(res, 500, `switchyard: role ${role} is reached over HTTP/1.1; a gRPC call needs its channel's protocol: http2`, undefined, this.#ownEdits(this.#picker.role));
    this.#finish('refused');
  }

  /** Switchyard's own failure (refused): 500, no upstream blamed, no retry. */
  #refused(err: unknown): void {
    const res = this.#ex.res;
    this.#discarding = null;
    if (res.headersSent) res.destroy();
    else sendText(res, 500, `switchyard: this request could not be forwarded as switchyard made it: ${(err as Error)?.message ?? String(err)}\n`, undefined, this.#ownEdits(this.#picker.role));
    this.#finish('refused');
  }

  /**
   * An answer before the client's body was all read (an upstream that refused the
   * upload, or failed during it): the rest of the body goes nowhere, so it is read
   * away, and the client connection closes after the answer instead of waiting for
   * the body's end (or stalling on a paused stream) to read a next request.
   */
  #bodyLeftUnread(): void {
    const req = this.#ex.req;
    if (this.#request.body !== req || req.readableEnded) return;
    this.#ex.res.shouldKeepAlive = false;
    req.resume();
  }

  #fail(failure: UpstreamFailure, text: string): void {
    const res = this.#ex.res;
    this.#bodyLeftUnread();
    if (res.headersSent) res.destroy(); // mid-body: the only honest signal left is a cut connection
    else {
      const from = fallenBackFrom(this.#choice, this.#picker);
      sendText(res, UPSTREAM_FAILURES[failure].status, `switchyard: ${text}\n`,
        from >= 0 ? { 'x-switchyard-fallback': this.#route.roleNames[from]! } : undefined, this.#ownEdits(this.#picker.role));
    }
    this.#finish(failure);
  }
}

/**
 * An answer's trailer fields for the client (HTTP/2 trailers, or chunked HTTP/1.1
 * ones; a response with a Content-Length has nowhere to put them), less the fields a
 * trailer may not carry (RFC 9110 §6.5.1: framing, routing, hop-by-hop).
 */
function trailerObject(raw: readonly string[]): Record<string, string> {
  const out: Record<string, string> = Object.create(null) as Record<string, string>;
  const kept = trailerFields(raw);
  for (let i = 0; i < kept.length; i += 2) {
    const name = kept[i]!.toLowerCase();
    out[name] = out[name] === undefined ? kept[i + 1]! : `${out[name]}, ${kept[i + 1]!}`;
  }
  return out;
}

/** The request's headers with the client's trace context replaced by switchyard's span's. */
function withTraceContext(headers: string[], trace: Record<string, string>): string[] {
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2) {
    const lower = headers[i]!.toLowerCase();
    if (lower !== 'traceparent' && lower !== 'tracestate') out.push(headers[i]!, headers[i + 1]!);
  }
  for (const name in trace) out.push(name, trace[name]!);
  return out;
}

/** The retries.on word of a trailers-only answer's gRPC status (unavailable, …), or null. */
function grpcRetryCondition(headers: readonly string[]): Extract<RetryOn, string> | null {
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i]!.toLowerCase() !== 'grpc-status') continue;
    const code = parseGrpcStatus(headers[i + 1]);
    for (const [word, c] of Object.entries(GRPC_RETRY_ON)) if (c === code) return word as Extract<RetryOn, string>;
    return null;
  }
  return null;
}

/** Removes gRPC's status fields from an answer's headers; returns them (null when none). */
function takeGrpcStatus(headers: string[]): string[] | null {
  let out: string[] | null = null;
  for (let i = 0; i < headers.length;) {
    const name = headers[i]!.toLowerCase();
    if (name === 'grpc-status' || name === 'grpc-message' || name === 'grpc-status-details-bin') {
      (out ??= []).push(name, headers[i + 1]!);
      headers.splice(i, 2);
    } else i += 2;
  }
  return out;
}


/**
 * Envoy's fully jittered exponential back-off: before retry n, a random time up
 * to min(base × (2ⁿ − 1), max), so retries of many requests spread out instead of
 * hitting a struggling role together.
 */
export function backoffMs(n: number, baseMs: number, maxMs: number): number {
  return Math.random() * Math.min(baseMs * (2 ** n - 1), maxMs);
}

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { RuntimeCode } from '../errors.js';
import type { HeaderEdit, HttpExchange } from '../filters/api.js';
import { hasBody } from '../http/hop_by_hop.js';
import { sendText } from '../http/local_reply.js';
import { HttpForward } from '../upstream/http_forward.js';
import { answerAtEdge, badRequest, requestArrived, requestEnded, useTargetAuthority } from './http_edge.js';
import type { ServingSocket } from './plan.js';
import type { ListenerPlan } from './plan.js';
import { publishRequest } from './record.js';
import { Unit } from './unit.js';
import { UploadRate } from './upload_rate.js';
import { isH2 } from '../http2/h2_compat.js';
import type { Span } from '@opentelemetry/api';
import { GRPC_UNKNOWN, grpcCodeName, grpcStatusOf, grpcStatusSent, isGrpc } from '../http2/grpc.js';

const kUnit = Symbol('switchyard.unit');
type TrackedResponse = ServerResponse & { [kUnit]?: HttpUnit };

/**
 * One HTTP request through a listener, from its head to its response's close. The
 * next request on the same keep-alive connection is a new unit, on whatever
 * generation is current then.
 */
export class HttpUnit extends Unit implements HttpExchange {
  readonly protocol = 'http' as const;
  readonly upgrade = false;
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  /** The client's address, read once (a socket forgets it once closed). */
  readonly remoteAddress: string;
  requestHeaderEdits: readonly HeaderEdit[] | null = null;
  /** The listener's (every `headers` filter's), so they reach every answer, whatever the filter order. */
  responseHeaderEdits: readonly HeaderEdit[] | null;
  /** The client connection: req.socket is null once the response closed. */
  readonly #socket: Socket;
  #forward: HttpForward | null = null;
  /** Why switchyard ended the request itself (a bad request, a drain cut, a slow body), for the log. */
  #error: RuntimeCode | '' = '';
  /** The drain timeout cut the request before its response started (counted as 503, not 499). */
  #cutUnanswered = false;
  /** The body came slower than minUploadRate before the response started: switchyard answered 408, no role served it. */
  #tooSlow = false;
  /** Switchyard refused the request before any answer to it started (refuse): no role served it, whether or not it went upstream. */
  #refused = false;
  /** Watches the body's rate while it comes (null: no body, or no minimum). */
  #upload: UploadRate | null = null;
  /** The request's span, when the generation traces (observe/tracing.ts). */
  readonly #span: Span | null;

  constructor(plan: ListenerPlan, req: IncomingMessage, res: ServerResponse) {
    super(plan);
    this.req = req;
    this.res = res;
    this.#socket = req.socket;
    this.remoteAddress = req.socket.remoteAddress ?? '';
    const tracing = plan.generation.tracing;
    this.#span = tracing === null ? null : tracing.startRequest(req.method ?? '', req.url ?? '', req.headers, plan.name);
    this.responseHeaderEdits = plan.responseHeaderEdits;
    (res as TrackedResponse)[kUnit] = this;
    res.on('close', onResponseClose);
  }


  protected get answered(): boolean {
    return this.res.headersSent || this.res.destroyed;
  }

  protected get gone(): boolean {
    // Refused (refuse) while an async filter still ran: nothing goes upstream after the refusal.
    return this.res.destroyed || this.#refused;
  }

  reply(status: number, body = '', headers?: Record<string, string>): void {
    // %role% names the role now serving (the forwarder's, once it took the request).
    sendText(this.res, status, body, headers, { list: this.responseHeaderEdits, vars: this.plan.variables(this.#forward?.role ?? this.role) });
  }

  /**
   * Switchyard will not forward the request as it came (badRequest), or no more of
   * it (its body broke off in a parse error): the client's error, answered by the
   * proxy, not by a role. A try already under way is cut without blame (never an
   * upstream error, an outlier or a retry), the answer waits for the ones before it
   * on the connection, and the connection closes after it: the bytes after a request
   * that was refused cannot be trusted to start another. When the role's answer had
   * started, the connection is cut instead, and it counts with the status it was sent.
   */
  refuse(status: number, code: RuntimeCode | '', text: string): void {
    this.#error = code;
    this.#forward?.cut();
    const res = this.res;
    if (res.headersSent) {
      res.destroy();
      return;
    }
    this.#refused = true;
    res.shouldKeepAlive = false;
    this.reply(status, text);
  }

  /**
   * Cut short by the drain timeout: the response is destroyed (its upstream try aborted),
   * as drain's destroy ends work now. It was switchyard's doing, not the client's, so it
   * is no client-left 499: a request whose response had not started counts as 503 with
   * role "" (switchyard made the request unavailable; the role did not fail, and its
   * error ratio must not say so), one mid-response with the status it was sent. Both
   * log SY_ERR_DRAIN_TIMEOUT.
   */
  destroy(): void {
    this.#error ||= 'SY_ERR_DRAIN_TIMEOUT';
    if (!this.res.headersSent) this.#cutUnanswered = true;
    this.res.destroy();
  }

  /** Starts watching the body's rate (a request with a body, on a listener with a minUploadRate). */
  watchUpload(): void {
    const rate = this.plan.config.minUploadRate;
    if (rate.bytesPerSecond > 0) this.#upload = new UploadRate(this.req, rate, () => this.#uploadTooSlow());
  }

  /**
   * The body came slower than minUploadRate (UploadRate): the client's fault, so the
   * upstream request is cut without blame (never an upstream error, an outlier or a
   * retry), and the client gets 408 on a connection that then closes (the rest of its
   * body is never read), counted with role "" (no role served it); or, when the
   * response already started, a cut connection, counted with the status it was sent.
   * Either way in switchyard_slow_uploads_total, and logged with SY_ERR_UPLOAD_TOO_SLOW.
   */
  #uploadTooSlow(): void {
    const res = this.res;
    if (res.writableFinished || res.destroyed) return;
    // Counted in switchyard_slow_uploads_total from the request's outcome (its error code).
    this.#error = 'SY_ERR_UPLOAD_TOO_SLOW';
    this.#forward?.cut();
    if (res.headersSent) {
      // The role's answer had started: it counts with the status it was sent, as a drain-cut one does.
      res.destroy();
      return;
    }
    this.#tooSlow = true;
    res.shouldKeepAlive = false;
    this.reply(408, `switchyard: the request body came slower than ${this.plan.config.minUploadRate.bytesPerSecond} bytes/s (listeners.${this.plan.name}.minUploadRate)\n`);
  }

  // hot path
  protected forward(): void {
    this.#forward = new HttpForward(this.plan.upstream, this, this, this);
    this.#forward.start();
  }

  protected failed(): void {
    this.reply(500, 'switchyard: a filter failed on this request\n');
  }

  /** ForwardedRequest: the W3C headers that make the request's span the upstream request's parent (null: not traced). */
  get traceHeaders(): Record<string, string> | null {
    return this.#span === null ? null : this.plan.generation.tracing!.contextHeaders(this.#span);
  }

  /** The response is done, or the client went away. */
  responseClosed(): void {
    const res = this.res;
    const finished = res.writableFinished;
    this.#upload?.stop();
    requestEnded(this.#socket, this);
    if (!finished) this.#forward?.clientGone();
    this.closed();
  }

  // hot path
  protected record(): void {
    const res = this.res;
    // The role that served it: none when the request never went upstream (a filter
    // answered, e.g. a 429 after `weighted` had picked a role, or the client left first),
    // switchyard failed it itself, or cut it (a body too slow, a drain timeout before the response).
    const served = this.#cutUnanswered || this.#tooSlow || this.#refused ? -1 : this.servedRole;
    // The status the client was sent, even if the body was then cut (by either side);
    // 499 when the client left before the response started (nginx's convention); 503 when
    // the drain timeout cut it then (see destroy).
    const status = res.headersSent ? res.statusCode : this.#cutUnanswered ? 503 : 499;
    const ms = performance.now() - this.start;
    const outcome = this.outcome;
    publishRequest(this.plan, {
      role: served, req: this.req, socket: this.#socket, client: this.remoteAddress, status, durationMs: ms, answerMs: ms,
      endpoint: outcome?.endpoint ?? '', error: outcome?.code || this.#error, tries: outcome?.tries ?? 0, upgrade: false,
      grpcStatus: isGrpc(this.req) ? grpcCodeName(callStatus(res, status)) : '',
    }, this.#span);
  }
}

/**
 * A gRPC call's status: the one its answer carried (the upstream's, or switchyard's
 * own error), else what the client saw: CANCELLED when it left first, the mapped
 * status of an HTTP error, UNKNOWN for an answer cut before its status.
 */
function callStatus(res: ServerResponse, status: number): number {
  const sent = grpcStatusSent(res);
  if (sent >= 0) return sent;
  return status === 200 ? GRPC_UNKNOWN : grpcStatusOf(status);
}

function onResponseClose(this: TrackedResponse): void {
  this[kUnit]!.responseClosed();
}

/** The entry of the HTTP data path: one request on a listening socket. */
// hot path
export function handleRequest(ls: ServingSocket, req: IncomingMessage, res: ServerResponse): void {
  const plan = ls.plan!;
  if (plan.protocol !== 'http') {
    // A keep-alive connection opened before the address turned tcp. Its request goes
    // where its bytes would go on a new connection (the tcp plan's role), so nothing
    // is refused during the switch; then the connection closes, and the client's next
    // one is served by the new protocol.
    res.shouldKeepAlive = false;
  }
  if (ls.retired) {
    // The listener was removed: serve what was already on the wire, then close.
    res.shouldKeepAlive = false;
    if (plan.generation.closed) {
      sendText(res, 503, 'switchyard: this listener was removed\n', undefined, { list: plan.responseHeaderEdits, vars: plan.variables(-1) });
      answerAtEdge(plan, 503, req, req.socket);
      return;
    }
  }
  const unit = new HttpUnit(plan, req, res);
  // HTTP/1 only: a malformed body later on the connection refuses this unit (http_edge.ts).
  if (!isH2(req)) requestArrived(req.socket, unit);
  const bad = badRequest(req, plan.config);
  if (bad !== null) {
    unit.refuse(bad.status, 'SY_ERR_BAD_REQUEST', bad.text);
    return;
  }
  useTargetAuthority(req);
  // A gRPC stream's messages come when the application has them: no upload rate applies.
  if (!req.complete && hasBody(req) && !isGrpc(req)) unit.watchUpload();
  unit.run();
}

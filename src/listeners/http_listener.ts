import { STATUS_CODES, ServerResponse, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { RuntimeCode } from '../errors.js';
import type { Exchange, HeaderEdit } from '../filters/api.js';
import { applyHeaderEdits, type HeaderVariables } from '../filters/headers.js';
import { reportFilterFailure, runChain } from '../filters/chain.js';
import type { ListenerPlan } from '../reload/generation.js';
import type { RetryConfig } from '../config/types.js';
import { HttpForward, sendText, type ForwardOptions, type UpstreamReason } from '../upstream/http_forward.js';
import { defaultRole, EndpointPicker, type RoleRoutes } from '../upstream/picker.js';
import type { RetryBudget } from '../upstream/retry.js';
import { upgrades } from '../upstream/upgrade_forward.js';
import { logHttp } from '../observe/access_record.js';
import type { ListenSocket } from './socket_pool.js';
import { UploadRate } from './upload_rate.js';

const kExchange = Symbol('switchyard.exchange');
type TrackedResponse = ServerResponse & { [kExchange]?: HttpExchange };

/**
 * One HTTP request through a listener: the filters' view of it (Exchange), the
 * forwarder's options (ForwardOptions), and what the generation holds while it runs.
 * The plan is read once, when the request arrives: a request started on a
 * generation finishes on it, and the next request on the same keep-alive
 * connection sees whatever generation is current then.
 */
class HttpExchange implements Exchange, ForwardOptions {
  role = -1;
  fallback = false;
  fallbackFrom = -1;
  requestHeaderEdits: readonly HeaderEdit[] | null = null;
  /** The listener's (every `headers` filter's), so they reach every answer, whatever the filter order. */
  responseHeaderEdits: readonly HeaderEdit[] | null;
  readonly protocol = 'http' as const;
  readonly socket = null;
  readonly plan: ListenerPlan;
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  /** The client connection: req.socket is null once the response closed. */
  readonly #socket: Socket;
  readonly #start = performance.now();
  #forward: HttpForward | null = null;
  /** From ForwardOptions.done, for the access log. */
  #endpoint = '';
  #error = '';
  /** The forwarder could not send the request as switchyard made it: no role served it. */
  #refused = false;
  /** The drain timeout cut the request before its response started (counted as 503, not 499). */
  #cutUnanswered = false;
  /** The body came slower than minUploadRate before the response started: switchyard answered 408, no role served it. */
  #tooSlow = false;
  /** Watches the body's rate while it comes (null: no body, or no minimum). */
  #upload: UploadRate | null = null;

  constructor(plan: ListenerPlan, req: IncomingMessage, res: ServerResponse) {
    this.plan = plan;
    this.req = req;
    this.res = res;
    this.#socket = req.socket;
    this.responseHeaderEdits = plan.responseHeaderEdits;
  }

  get listener(): string { return this.plan.name; }
  get remoteAddress(): string { return this.req.socket.remoteAddress ?? ''; }
  get timeoutMs(): number { return this.plan.config.timeouts.upstreamMs; }
  get totalMs(): number { return this.plan.config.timeouts.totalMs; }
  get retry(): RetryConfig | undefined { return this.plan.config.retries; }
  get budget(): RetryBudget | null { return this.plan.retryBudget; }
  get bufferBodyBytes(): number { return this.plan.config.bufferBodyBytes; }
  get routes(): RoleRoutes { return this.plan; }
  roleName(role: number): string { return this.plan.roles[role]!.name; }

  reply(status: number, body = '', headers?: Record<string, string>): void {
    const edits = this.responseHeaderEdits;
    try {
      sendText(this.res, status, body, headers, edits === null ? undefined : { list: edits, vars: this.headerVariables() });
    } catch (err) {
      if (this.res.headersSent) throw err;
      // Node refused a header (one a plugin's filter or edit made): the answer still goes, without them.
      sendText(this.res, status, body);
    }
  }

  /** Switchyard will not forward the request as it came (`badRequest`): the client's error, answered by the proxy, not by a role. */
  refuse(status: number, code: RuntimeCode, text: string): void {
    this.#error = code;
    // Two Host lines are the stuff of request smuggling: do not read another request after it.
    this.res.shouldKeepAlive = false;
    this.reply(status, text);
  }

  /** For header templates: the role that serves the request ('' while none is chosen). */
  headerVariables(): HeaderVariables {
    const p = this.plan;
    return [this.role < 0 ? '' : p.roles[this.role]!.name, p.config.vset, p.name, String(p.generation.number)];
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
    this.#error = 'SY_ERR_DRAIN_TIMEOUT';
    if (!this.res.headersSent) this.#cutUnanswered = true;
    this.res.destroy();
  }

  /** Starts watching the body's rate (a request with a body, on a listener with a minUploadRate). */
  watchUpload(): void {
    const rate = this.plan.config.minUploadRate;
    if (rate.bytesPerSecond > 0) this.#upload = new UploadRate(this.req, rate, () => this.uploadTooSlow());
  }

  /**
   * The body came slower than minUploadRate (UploadRate): the client's fault, so the
   * upstream request is cut without blame (never an upstream error, an outlier or a
   * retry), and the client gets 408 on a connection that then closes (the rest of its
   * body is never read), counted with role "" (no role served it); or, when the
   * response already started, a cut connection, counted with the status it was sent.
   * Either way in switchyard_slow_uploads_total, and logged with SY_ERR_UPLOAD_TOO_SLOW.
   */
  uploadTooSlow(): void {
    const res = this.res;
    if (res.writableFinished || res.destroyed) return;
    this.#error = 'SY_ERR_UPLOAD_TOO_SLOW';
    this.plan.slowUploads.inc();
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
  forward(): void {
    if (this.role < 0) {
      // No filter picked: the equal split, which may move on like any split.
      this.role = defaultRole(this.plan);
      this.fallback = true;
    }
    this.#forward = new HttpForward(this.req, this.res, this);
    this.#forward.start();
  }

  tryFailed(role: number, reason: UpstreamReason): void {
    this.plan.metrics[role]!.upstreamError(reason);
  }

  retried(role: number, reason: string): void {
    this.plan.metrics[role]!.retried(reason);
  }

  /** ForwardOptions.done: the upstream exchange ended (errors were counted per try); for the access log. */
  done(endpoint: string | undefined, code: RuntimeCode | undefined): void {
    this.#endpoint = endpoint ?? '';
    if (code !== undefined) this.#error = code;
    // Switchyard's own failure: the 500 (or 503 without descriptors) is switchyard's answer, not the role's (issue 11).
    if (code === 'SY_ERR_REQUEST_REFUSED' || code === 'SY_ERR_NO_FILE_DESCRIPTORS') this.#refused = true;
  }

  failFilter(err: unknown): void {
    this.role = -1; // no role served it (and a broken filter may have left an index out of range)
    reportFilterFailure(this.plan.name, err);
    this.reply(500, 'switchyard: a filter failed on this request\n');
  }

  /** The response is done, or the client went away: count it and let the generation go. */
  closed(): void {
    const res = this.res;
    const finished = res.writableFinished;
    this.#upload?.stop();
    if (!finished) this.#forward?.clientGone();
    const plan = this.plan;
    // Node has just armed the idle keep-alive timer at keepAliveTimeout + 1 s (its grace for
    // clients that read the Keep-Alive header); the README promises the value itself.
    const socket = this.#socket;
    const keepAliveMs = plan.config.timeouts.keepAliveMs;
    if (finished && !socket.destroyed && (socket.timeout ?? 0) > keepAliveMs) socket.setTimeout(keepAliveMs);
    // The role that served it: none when the request never went upstream (a filter
    // answered, e.g. a 429 after `weighted` had picked a role, or the client left first),
    // or switchyard cut it (a body too slow, a drain timeout before the response).
    const served = this.#forward === null || this.#refused || this.#cutUnanswered || this.#tooSlow ? -1 : this.role;
    // The status the client was sent, even if the body was then cut (by either side);
    // 499 when the client left before the response started (nginx's convention); 503 when
    // the drain timeout cut it then (switchyard's doing, see destroy).
    const status = res.headersSent ? res.statusCode : this.#cutUnanswered ? 503 : 499;
    const ms = performance.now() - this.#start;
    plan.metrics[served < 0 ? plan.roles.length : served]!.count(status, ms / 1000);
    const log = plan.generation.accessLog;
    if (log !== null) {
      logHttp(log, { plan, req: this.req, socket: this.#socket, role: served < 0 ? '' : plan.roles[served]!.name, status, durationMs: ms, endpoint: this.#endpoint, error: this.#error });
    }
    plan.generation.release(this);
  }
}

function onResponseClose(this: TrackedResponse): void {
  this[kExchange]!.closed();
}

/** The entry of the HTTP data path: one request on a listening socket. */
// hot path
export function handleRequest(ls: ListenSocket, req: IncomingMessage, res: ServerResponse): void {
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
      sendText(res, 503, 'switchyard: this listener was removed\n', undefined, ownEdits(plan));
      ownAnswer(plan, 503, req, req.socket);
      return;
    }
  }
  const ex = new HttpExchange(plan, req, res);
  plan.generation.hold(ex);
  (res as TrackedResponse)[kExchange] = ex;
  res.on('close', onResponseClose);
  const bad = badRequest(req);
  if (bad !== null) {
    ex.refuse(400, 'SY_ERR_BAD_REQUEST', `switchyard: ${bad}\n`);
    return;
  }
  if (!req.complete && hasBody(req)) ex.watchUpload();
  const filters = plan.filters;
  if (filters.length === 0) {
    ex.forward();
    return;
  }
  let verdict: boolean | Promise<boolean>;
  try {
    verdict = runChain(filters, ex, plan.roles.length);
  } catch (err) {
    ex.failFilter(err);
    return;
  }
  if (verdict === true) ex.forward();
  else if (verdict !== false) verdict.then((go) => { if (go && !res.destroyed) ex.forward(); }).catch((err) => ex.failFilter(err));
}

/**
 * An upgrade (WebSocket) request: the same filters pick the role, then the two
 * sockets are tunnelled. The tunnel holds its generation until it closes.
 */
export function handleUpgrade(ls: ListenSocket, req: IncomingMessage, socket: Socket, head: Buffer): void {
  const plan = ls.plan!;
  if (plan.protocol !== 'http' || (ls.retired && plan.generation.closed)) {
    socket.destroy();
    return;
  }
  if (!isWebSocket(req)) {
    upgradeAsPlainRequest(ls, req, socket);
    return;
  }
  const gen = plan.generation;
  const start = performance.now();
  /** When the client got its answer (the 101, a refusal, or ours): the request's duration ends there. */
  let answeredAt = 0;
  let status = 101;
  let answered = false;
  /** Handed to the upstream: a role served it (else a filter answered, or it failed first). */
  let forwarded = false;
  let endpoint = '';
  let error = '';
  const ex: Exchange = {
    role: -1,
    fallback: false,
    fallbackFrom: -1,
    listener: plan.name,
    protocol: 'http',
    remoteAddress: socket.remoteAddress ?? '',
    req,
    res: null,
    socket: null,
    requestHeaderEdits: null,
    responseHeaderEdits: plan.responseHeaderEdits,
    reply(code, body = '', headers) {
      answered = true;
      answeredAt = performance.now();
      status = code;
      const list = Object.entries(headers ?? {}).flat();
      const role = ex.role >= 0 && ex.role < plan.roles.length ? plan.roles[ex.role]!.name : '';
      socket.end(rawAnswer(code, body, ex.responseHeaderEdits === null ? list : applyHeaderEdits(list, ex.responseHeaderEdits, variables(plan, role))));
    },
  };
  /** What the generation holds: at drainTimeout the socket is cut; one not yet answered counts as 503 with role "" (as for requests). */
  const work = {
    destroy(): void {
      error = 'SY_ERR_DRAIN_TIMEOUT';
      if (!answered && answeredAt === 0) {
        status = 503;
        forwarded = false;
      }
      socket.destroy();
    },
  };
  gen.hold(work);
  socket.once('close', () => {
    const served = forwarded ? ex.role : -1;
    const now = performance.now();
    // The histogram takes the handshake, as for any request (a tunnel open for an hour
    // would swamp the role's latency); the log line gives the tunnel's whole life.
    plan.metrics[served < 0 ? plan.roles.length : served]!.count(status, ((answeredAt || now) - start) / 1000);
    const log = gen.accessLog;
    if (log !== null) logHttp(log, { plan, req, socket, role: served < 0 ? '' : plan.roles[served]!.name, status, durationMs: now - start, endpoint, error });
    gen.release(work);
  });
  const go = (): void => {
    if (ex.role < 0) {
      ex.role = defaultRole(plan);
      ex.fallback = true;
    }
    forwarded = true;
    const picker = new EndpointPicker(plan, ex.role, ex.fallback);
    const opts = {
      timeoutMs: plan.config.timeouts.upstreamMs,
      connectMs: plan.config.timeouts.connectMs,
      tryFailed: (role: number, reason: UpstreamReason) => plan.metrics[role]!.upstreamError(reason),
      retried: (role: number) => plan.metrics[role]!.retried('connect-failure'),
      fallbackFrom: ex.fallbackFrom,
      roleName: (role: number) => plan.roles[role]!.name,
      ownHeaders: (role: number): string => editLines(ex.responseHeaderEdits, variables(plan, role < 0 ? '' : plan.roles[role]!.name)),
    };
    upgrades.forward(req, socket, head, picker, opts, (e, code, answered) => {
      answeredAt = performance.now();
      ex.role = picker.role; // the role that served it (or failed last)
      endpoint = e ?? '';
      if (code !== undefined) {
        error = code;
        // the status the client got (a timeout answers 504; switchyard's own failure 500, served by no role)
        status = code === 'SY_ERR_UPSTREAM_TIMEOUT' ? 504 : code === 'SY_ERR_REQUEST_REFUSED' ? 500 : code === 'SY_ERR_NO_FILE_DESCRIPTORS' ? 503 : 502;
        if (code === 'SY_ERR_REQUEST_REFUSED' || code === 'SY_ERR_NO_FILE_DESCRIPTORS') forwarded = false;
      } else if (answered !== undefined) status = answered; // the upstream refused: its status was relayed
    });
  };
  const fail = (err: unknown): void => {
    status = 500;
    forwarded = false;
    ex.role = -1; // no role served it (and a broken filter may have left an index out of range)
    reportFilterFailure(plan.name, err);
    ex.reply(500, 'switchyard: a filter failed on this request\n');
  };
  socket.on('error', () => socket.destroy());
  const bad = badRequest(req);
  if (bad !== null) {
    error = 'SY_ERR_BAD_REQUEST';
    ex.reply(400, `switchyard: ${bad}\n`);
    return;
  }
  // The chain cannot see that an upgrade was answered (there is no response object): check here.
  const stop = (): void => {
    if (!answered) fail(new Error('a filter returned false without answering'));
  };
  try {
    const v = runChain(plan.filters, ex, plan.roles.length);
    if (v === true) go();
    else if (v === false) stop();
    else v.then((ok) => (ok ? go() : stop())).catch(fail);
  } catch (err) {
    fail(err);
  }
}

/**
 * Host = uri-host [ ":" port ] (RFC 9110 §7.2, RFC 3986 §3.2.2): an IP literal in
 * brackets or a reg-name (which may be empty), then digits for the port.
 */
const HOST_RE = /^(?:\[[0-9A-Za-z._~!$&'()*+,;=:-]+\]|(?:[0-9A-Za-z._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})*)(?::[0-9]*)?$/;

// hot path
/**
 * Why switchyard will not forward a request as the client sent it, or null. RFC 9112
 * §3.2: a server MUST answer 400 to an HTTP/1.1 request without Host, and to any
 * request with more than one Host line or an invalid Host value. Node's parser
 * lets two Host lines through (req.headers keeps the first); undici then refuses
 * to send them, and that refusal used to be counted as the upstream's reset,
 * retried and held against the endpoint: a client could eject a healthy canary.
 * The check is made here, at the edge, before any filter or upstream sees the request.
 */
export function badRequest(req: IncomingMessage): string | null {
  const raw = req.rawHeaders;
  let hosts = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 4 && (name === 'Host' || name === 'host' || name.toLowerCase() === 'host')) hosts++;
  }
  if (hosts > 1) return 'a request may have only one Host header (RFC 9112 §3.2)';
  if (hosts === 0) {
    // HTTP/1.0 may leave it out. (Node's own check is off: it answers without a count or a log line.)
    return req.httpVersionMajor === 1 && req.httpVersionMinor === 0 ? null : 'an HTTP/1.1 request needs a Host header (RFC 9112 §3.2)';
  }
  if (!HOST_RE.test(req.headers.host!)) return 'the Host header is not a valid host[:port] (RFC 9112 §3.2)';
  return null;
}

// hot path
/** Whether a request has a body to read (Content-Length above 0, or chunked). */
function hasBody(req: IncomingMessage): boolean {
  const h = req.headers;
  return h['transfer-encoding'] !== undefined || (h['content-length'] !== undefined && h['content-length'] !== '0');
}

/** The upgrades that are tunnelled (http-proxy's ws pass destroys any other without a word). */
function isWebSocket(req: IncomingMessage): boolean {
  return req.method === 'GET' && req.headers.upgrade?.toLowerCase() === 'websocket';
}

/**
 * Node hands every request with `Connection: upgrade` to the 'upgrade' listener (one
 * listener decides for all), so any other Upgrade — e.g. `Upgrade: h2c`, which
 * `curl --http2` sends on plain http — used to be dropped without an answer. A server
 * may ignore Upgrade (RFC 9110 §7.8), so it is served as the plain HTTP/1.1 request it
 * also is (Upgrade and the headers Connection names are hop-by-hop, so they are not
 * forwarded), on a response that closes the connection: the socket left Node's parser.
 * Its body, if any, would still be unparsed on the socket: such a request gets 501.
 */
function upgradeAsPlainRequest(ls: ListenSocket, req: IncomingMessage, socket: Socket): void {
  socket.on('error', () => socket.destroy());
  const res = new ServerResponse(req);
  res.shouldKeepAlive = false;
  res.assignSocket(socket);
  res.once('finish', () => socket.destroySoon());
  const cl = req.headers['content-length'];
  if (req.headers['transfer-encoding'] !== undefined || (cl !== undefined && cl !== '0')) {
    sendText(res, 501, `switchyard: only WebSocket upgrades are supported; send this request without "Upgrade: ${req.headers.upgrade}"\n`, undefined, ownEdits(ls.plan!));
    ownAnswer(ls.plan!, 501, req, socket);
    return;
  }
  handleRequest(ls, req, res);
}

/** CONNECT is for forward proxies; this is a reverse proxy. */
export function handleConnect(ls: ListenSocket, req: IncomingMessage, socket: Socket): void {
  socket.on('error', () => socket.destroy());
  const plan = ls.plan?.protocol === 'http' ? ls.plan : null;
  const own = plan === null ? '' : editLines(plan.responseHeaderEdits, variables(plan, ''));
  socket.end(`HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\nconnection: close\r\n${own}\r\n`, 'latin1');
  if (ls.plan?.protocol === 'http') ownAnswer(ls.plan, 405, req, socket);
}

/** Node's answers to requests its parser refuses, as Node words them (the head, less its final CRLF). */
const PARSER_ANSWERS: Record<number, string> = {
  400: 'HTTP/1.1 400 Bad Request\r\nConnection: close\r\n',
  408: 'HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n',
  413: 'HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\n',
  431: 'HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n',
};

/**
 * Node's parser refused a request (malformed, a head over maxHeaderSize, or too
 * slow: the headers and request timeouts). Answered as Node's default handler does
 * (only when nothing was written on the connection yet), and counted and logged
 * like any request answered without a role; Node's own handler does neither.
 */
export function handleClientError(ls: ListenSocket, err: NodeJS.ErrnoException, socket: Socket): void {
  if (socket.writable && socket.bytesWritten === 0) {
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'HPE_CHUNK_EXTENSIONS_OVERFLOW' ? 413
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    const plan = ls.plan?.protocol === 'http' ? ls.plan : null;
    const own = plan === null ? '' : editLines(plan.responseHeaderEdits, variables(plan, ''));
    socket.write(`${PARSER_ANSWERS[status]!}${own}\r\n`, 'latin1');
    if (plan !== null) ownAnswer(plan, status, null, socket);
  }
  socket.destroy(err);
}

/** Template variables for an answer on `plan` served (or routed) to `role` ('' for none). */
function variables(plan: ListenerPlan, role: string): HeaderVariables {
  return [role, plan.config.vset, plan.name, String(plan.generation.number)];
}

/** The listener's response edits for sendText, for an answer no role was chosen for. */
function ownEdits(plan: ListenerPlan): { list: readonly HeaderEdit[]; vars: HeaderVariables } | undefined {
  return plan.responseHeaderEdits === null ? undefined : { list: plan.responseHeaderEdits, vars: variables(plan, '') };
}

/** Response edits as header lines of an answer written raw on the socket ('' when none); write them as latin1. */
function editLines(edits: readonly HeaderEdit[] | null, vars: HeaderVariables): string {
  if (edits === null) return '';
  const list = applyHeaderEdits([], edits, vars);
  let out = '';
  for (let i = 0; i < list.length; i += 2) out += `${list[i]}: ${list[i + 1]}\r\n`;
  return out;
}

/** An answer of switchyard's own written raw (an upgrade's socket has no response object): head in latin1, as Node writes heads. */
function rawAnswer(code: number, body: string, headers: readonly string[]): Buffer {
  let head = `HTTP/1.1 ${code} ${STATUS_CODES[code] ?? 'Error'}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n`;
  for (let i = 0; i < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
  return Buffer.concat([Buffer.from(`${head}\r\n`, 'latin1'), Buffer.from(body)]);
}

/** Counts (and logs) an answer of the proxy's own that no role and no filter gave. */
function ownAnswer(plan: ListenerPlan, status: number, req: Pick<IncomingMessage, 'method' | 'url'> | null, socket: Socket): void {
  plan.metrics[plan.roles.length]!.count(status, 0);
  const log = plan.generation.accessLog;
  if (log !== null) logHttp(log, { plan, req, socket, role: '', status, durationMs: 0, endpoint: '', error: '' });
}

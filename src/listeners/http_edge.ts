import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { RuntimeCode } from '../errors.js';
import { editLines } from '../http/local_reply.js';
import { isToken } from '../http/token.js';
import { isH2 } from '../http2/h2_compat.js';
import type { ListenerPlan, ServingSocket } from './plan.js';
import { publishRequest } from './record.js';

/**
 * The edge of an http listener: the check of what switchyard will not forward as
 * it came (badRequest, which the units answer), the absolute-form target's Host, and
 * the answers made where there is no unit of work: CONNECT, requests the HTTP/1.1
 * connection could not read, a removed listener's late request. These run no filter and reach no role; they are
 * counted and logged like any request answered without one.
 */

/**
 * Host = uri-host [ ":" port ] (RFC 9110 §7.2, RFC 3986 §3.2.2): an IP literal in
 * brackets or a reg-name (which may be empty), then digits for the port.
 */
const HOST_RE = /^(?:\[[0-9A-Za-z._~!$&'()*+,;=:-]+\]|(?:[0-9A-Za-z._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})*)(?::[0-9]*)?$/;

/** Why switchyard will not forward a request, and the status that says so. */
export interface Refusal {
  /** 400 (malformed or ambiguous), 405 (CONNECT on HTTP/2), 417 (an expectation other than 100-continue), 431 (too many header lines), 501 (a transfer coding other than chunked, a target the upstream client does not send), 505 (not HTTP/1.x or 2). */
  readonly status: 400 | 405 | 417 | 431 | 501 | 505;
  readonly text: string;
}

/** The limits a listener sets on a request head (its ListenerConfig has them). */
export interface HeadLimits {
  readonly maxHeadersCount: number;
}

/** Methods whose HTTP/1.0 requests carry content, so need a Content-Length (RFC 1945 §8.3, §D.1.1; PATCH alike). */
const CONTENT_METHODS = new Set(['POST', 'PUT', 'PATCH']);
/** A Content-Length of at most this many digits is below 2^53 (MAX_SAFE_INTEGER has 16): only a longer one needs checking. */
const SAFE_LENGTH_DIGITS = 15;

function refusal(status: Refusal['status'], text: string): Refusal {
  return { status, text: `switchyard: ${text}\n` };
}

// hot path
/**
 * Why switchyard will not forward a request as the client sent it, or null. The
 * connection's parser (http1/request_head.ts, as strict as Node's) has already refused
 * what it cannot read (the clientError path); these are the requests it reads that a proxy must not (issue 13, "no request
 * smuggling"), each of which either loses or changes something on its way upstream:
 *
 * - Host (RFC 9112 §3.2): an HTTP/1.1 request without one, more than one Host line,
 *   or an invalid value is 400. Node keeps the first of two Host lines, and undici
 *   would refuse to send them, which would look like the upstream's failure: a
 *   client could eject a healthy canary.
 * - The version: only HTTP/1.0 and 1.1 (Node also takes 0.9 and 2.0 in an HTTP/1
 *   head): 505 (RFC 9110 §15.6.6).
 * - More header lines than `maxHeadersCount`: 431 (Envoy's max_headers_count).
 * - The request target (RFC 9112 §3.2): origin-form without a fragment, or
 *   absolute-form http(s) with a valid authority and no userinfo (RFC 9110 §4.2.1,
 *   §4.2.4); `OPTIONS *` is not sent upstream (501: the upstream client sends origin-form targets only), any other `*` is 400.
 * - Framing (RFC 9112 §6): a Transfer-Encoding other than `chunked` alone is 501
 *   when it names other codings (§6.1: Node would de-chunk `gzip, chunked` and the
 *   upstream get it as identity), 400 when chunked has parameters or comes twice;
 *   any Transfer-Encoding in HTTP/1.0 is 400 (§6.1: its framing is faulty); a
 *   Content-Length above 2^53 - 1 is 400 (undici reads it as a Number, which rounds it);
 *   an HTTP/1.0 POST, PUT or PATCH without Content-Length is 400 (RFC 1945 §8.3:
 *   its body would be read as the next request); a header named `content_length`
 *   or `transfer_encoding` is 400 (CGI-style gateways read it as the real one).
 */
export function badRequest(req: IncomingMessage, limits: HeadLimits): Refusal | null {
  if (isH2(req)) return badH2Request(req, limits);
  if (req.httpVersionMajor !== 1) return refusal(505, `HTTP/${req.httpVersion} is not supported: switchyard speaks HTTP/1.0 and HTTP/1.1 (RFC 9110 §15.6.6)`);
  const raw = req.rawHeaders;
  if (raw.length > limits.maxHeadersCount * 2) {
    return refusal(431, `more than ${limits.maxHeadersCount} header lines (the listener's maxHeadersCount)`);
  }
  let hosts = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const n = name.length;
    if (n === 4) {
      if (name === 'Host' || name === 'host' || name.toLowerCase() === 'host') hosts++;
    } else if ((n === 14 || n === 17) && name.includes('_')) {
      const lower = name.toLowerCase();
      if (lower === 'content_length' || lower === 'transfer_encoding') return refusal(400, `a header named ${name} could be read as ${lower.replace('_', '-')} upstream`);
    }
  }
  const h = req.headers;
  const http10 = req.httpVersionMinor === 0;
  if (hosts > 1) return refusal(400, 'a request may have only one Host header (RFC 9112 §3.2)');
  if (hosts === 0) {
    // HTTP/1.0 may leave it out.
    if (!http10) return refusal(400, 'an HTTP/1.1 request needs a Host header (RFC 9112 §3.2)');
  } else if (!HOST_RE.test(h.host!)) return refusal(400, 'the Host header is not a valid host[:port] (RFC 9112 §3.2)');
  const url = req.url!;
  if (url.charCodeAt(0) === 47 /* / */) {
    if (url.includes('#')) return refusal(400, 'a request target has no fragment (RFC 9112 §3.2)');
  } else {
    const bad = badTarget(url, req.method!);
    if (bad !== null) return bad;
  }
  const te = h['transfer-encoding'];
  if (te !== undefined) {
    if (http10) return refusal(400, 'an HTTP/1.0 request cannot have a Transfer-Encoding (RFC 9112 §6.1)');
    if (te !== 'chunked') {
      const bad = badTransferEncoding(te);
      if (bad !== null) return bad;
    }
  }
  const cl = h['content-length'];
  if (cl !== undefined) {
    // The parser let only digits through (and at most one line): the length is all that can be wrong.
    if (cl.length > SAFE_LENGTH_DIGITS && !Number.isSafeInteger(Number(cl))) return refusal(400, 'the Content-Length is larger than switchyard can forward exactly (2^53 - 1)');
  } else if (http10 && te === undefined && CONTENT_METHODS.has(req.method!)) {
    return refusal(400, `an HTTP/1.0 ${req.method} needs a Content-Length (RFC 1945 §8.3)`);
  }
  // 100-continue the connection answers itself (h1_connection.ts); an HTTP/1.0 client's Expect is ignored (RFC 9110 §10.1.1).
  const expect = h.expect;
  if (expect !== undefined && !http10 && expect.split(',').some((e) => e.trim().toLowerCase() !== '100-continue')) {
    return refusal(417, `the only expectation met is 100-continue, not Expect: ${expect} (RFC 9110 §10.1.1)`);
  }
  return null;
}

/**
 * Why switchyard will not forward an HTTP/2 stream's request, or null. nghttp2 has
 * refused what breaks HTTP/2's own rules (connection-specific fields, a TE other
 * than trailers, upper-case names, a missing pseudo-header, a Content-Length the
 * DATA frames do not add up to); what is left is what an HTTP/1 upstream would read
 * otherwise than the client meant: a header named like a framing one, more lines than
 * the listener allows, a host that is not one, a target that is not a path.
 */
function badH2Request(req: IncomingMessage, limits: HeadLimits): Refusal | null {
  if (req.method === 'CONNECT') return refusal(405, 'CONNECT is for forward proxies; switchyard is a reverse proxy');
  const raw = req.rawHeaders;
  if (raw.length > limits.maxHeadersCount * 2) return refusal(431, `more than ${limits.maxHeadersCount} header lines (the listener's maxHeadersCount)`);
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if ((name === 'content_length' || name === 'transfer_encoding')) return refusal(400, `a header named ${name} could be read as ${name.replace('_', '-')} upstream`);
  }
  const host = req.headers.host;
  if (host === undefined) return refusal(400, 'an HTTP/2 request needs :authority or a Host header (RFC 9113 §8.3.1)');
  if (!HOST_RE.test(host)) return refusal(400, 'the :authority is not a valid host[:port] (RFC 9113 §8.3.1)');
  const url = req.url!;
  if (url.charCodeAt(0) !== 47 /* / */) {
    return url === '*' && req.method === 'OPTIONS' ? refusal(501, 'switchyard cannot forward an asterisk-form target (OPTIONS *)') : refusal(400, 'the :path is not a path (RFC 9113 §8.3.1)');
  }
  if (url.includes('#')) return refusal(400, 'a request target has no fragment (RFC 9112 §3.2)');
  const cl = req.headers['content-length'];
  if (cl !== undefined && !(/^[0-9]+$/.test(cl) && Number.isSafeInteger(Number(cl)))) return refusal(400, 'the Content-Length is not a length switchyard can forward exactly');
  return null;
}

/** The Transfer-Encoding codings, when they are not `chunked` alone (the parser checked that chunked is last). */
function badTransferEncoding(te: string): Refusal | null {
  let chunked = 0;
  let other: string | null = null;
  // Several lines are joined with ", " (IncomingMessage.headers). Empty list elements are ignored (RFC 9110 §5.6.1).
  for (const element of te.split(',')) {
    const e = element.replace(/^[ \t]+|[ \t]+$/g, '');
    if (e === '') continue;
    const semi = e.indexOf(';');
    const name = (semi < 0 ? e : e.slice(0, semi)).replace(/[ \t]+$/, '');
    if (!isToken(name)) return refusal(400, 'the Transfer-Encoding is not a list of transfer codings (RFC 9112 §6.1)');
    if (name.toLowerCase() === 'chunked') {
      if (semi >= 0) return refusal(400, 'the chunked transfer coding has no parameters (RFC 9112 §7.1)');
      chunked++;
    } else other ??= name;
  }
  if (chunked !== 1) return refusal(400, 'chunked must be applied once, and last (RFC 9112 §6.1, §6.3)');
  if (other !== null) return refusal(501, `switchyard does not implement the ${other} transfer coding: only chunked (RFC 9112 §6.1)`);
  return null;
}

/**
 * A target that is not origin-form: absolute-form `http://authority/path` is
 * forwarded (its authority replacing Host: useTargetAuthority), anything else is refused.
 */
function badTarget(url: string, method: string): Refusal | null {
  if (url === '*') {
    return method === 'OPTIONS' ? refusal(501, 'switchyard cannot forward an asterisk-form target (OPTIONS *)') : refusal(400, `only OPTIONS may have the target * (RFC 9112 §3.2.4)`);
  }
  const authority = targetAuthority(url);
  if (authority === null) return refusal(400, 'the request target is neither a path nor an http(s) URI (RFC 9112 §3.2)');
  if (authority.includes('@')) return refusal(400, 'an http(s) request target may not carry userinfo (RFC 9110 §4.2.4)');
  if (authority === '' || authority.charCodeAt(0) === 58 /* : */ || !HOST_RE.test(authority)) return refusal(400, 'the request target has no valid host (RFC 9110 §4.2.1)');
  if (url.includes('#')) return refusal(400, 'a request target has no fragment (RFC 9112 §3.2)');
  return null;
}

/** The authority of an absolute-form http(s) target, as written (userinfo included), or null for any other target. */
function targetAuthority(url: string): string | null {
  const m = /^https?:\/\//i.exec(url);
  if (m === null) return null;
  const from = m[0].length;
  let to = from;
  while (to < url.length) {
    const c = url.charCodeAt(to);
    if (c === 47 /* / */ || c === 63 /* ? */ || c === 35 /* # */) break;
    to++;
  }
  return url.slice(from, to);
}

/**
 * For an absolute-form target (`GET http://other/x`), makes its authority the
 * request's Host, in the parsed headers and the raw ones (added when there was none),
 * so that filters, x-forwarded-host and the upstream all see it: a proxy MUST
 * ignore the received Host and use the target's (RFC 9112 §3.2.2). Call it on a
 * request that badRequest let through.
 */
export function useTargetAuthority(req: IncomingMessage): void {
  const url = req.url!;
  if (url.charCodeAt(0) === 47 /* / */) return;
  const authority = targetAuthority(url);
  if (authority === null) return;
  const raw = req.rawHeaders;
  let found = false;
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.length === 4 && raw[i]!.toLowerCase() === 'host') {
      raw[i + 1] = authority;
      found = true;
    }
  }
  if (!found) raw.push('Host', authority);
  req.headers.host = authority;
}

/** Counts (and logs) an answer of the proxy's own that no role and no filter gave. */
export function answerAtEdge(plan: ListenerPlan, status: number, req: Pick<IncomingMessage, 'method' | 'url'> | null, socket: Socket): void {
  publishRequest(plan, { role: -1, req, socket, client: socket.remoteAddress ?? '', status, durationMs: 0, answerMs: 0, endpoint: '', error: '', tries: 0, upgrade: false });
}

/** The listener's response edits as raw header lines, for an answer no role was chosen for ('' on a tcp plan). */
function ownLines(plan: ListenerPlan | null): string {
  return plan === null ? '' : editLines({ list: plan.responseHeaderEdits, vars: plan.variables(-1) });
}

/** CONNECT is for forward proxies; this is a reverse proxy. */
export function handleConnect(ls: ServingSocket, req: IncomingMessage, socket: Socket): void {
  socket.on('error', () => socket.destroy());
  const plan = ls.plan?.protocol === 'http' ? ls.plan : null;
  socket.end(`HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\nconnection: close\r\n${ownLines(plan)}\r\n`, 'latin1');
  if (plan !== null) answerAtEdge(plan, 405, req, socket);
}

/** The answers to requests that cannot be read, worded as Node words them (the head, less its final CRLF). */
const PARSER_ANSWERS: Record<number, string> = {
  400: 'HTTP/1.1 400 Bad Request\r\nConnection: close\r\n',
  408: 'HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n',
  413: 'HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\n',
  431: 'HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n',
};

/** What the edge knows of the newest request on a client connection (its unit): a malformed body refuses it. */
export interface EdgeRequest {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  /** Refuses the request (HttpUnit.refuse): its upstream try cut, a 4xx, the connection closed after. */
  refuse(status: number, code: RuntimeCode | '', text: string): void;
}

const kNewest = Symbol('switchyard.newestRequest');
type Tracked = Socket & { [kNewest]?: EdgeRequest };

// hot path
/** A request arrived on `socket` (the connection serves one at a time, in order: listeners/h1_connection.ts). */
export function requestArrived(socket: Socket, request: EdgeRequest): void {
  (socket as Tracked)[kNewest] = request;
}

// hot path
/** The request's response closed: the connection no longer holds it (and all it refers to) until its next request. */
export function requestEnded(socket: Socket, request: EdgeRequest): void {
  if ((socket as Tracked)[kNewest] === request) (socket as Tracked)[kNewest] = undefined;
}

/** The status for an error the HTTP/1.1 connection reports (Node's parser's codes, and its timeout's). */
function parserStatus(err: NodeJS.ErrnoException): number {
  return err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'HPE_CHUNK_EXTENSIONS_OVERFLOW' ? 413
    : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
}

/**
 * A request that cannot be read (malformed, a head over maxHeaderSize, or too slow:
 * the headers and request timeouts), reported by the connection, which reads no more
 * of it. Counted and logged like any request answered without a role:
 *
 * - a malformed body of the request being served refuses it (HttpUnit.refuse: its
 *   upstream try cut, its 4xx, the connection closed after), and so does a
 *   timeouts.request that comes while its body is read (its 408: the unit's record,
 *   not a second one at the edge);
 * - a malformed head (the connection reads a head only once every answer before it
 *   was written) is answered, and the connection closed;
 * - a timeout is answered with 408 only on a connection that was never answered;
 *   one that comes mid-answer cuts the connection.
 */
export function handleClientError(ls: ServingSocket, err: NodeJS.ErrnoException, socket: Socket): void {
  const status = parserStatus(err);
  const newest = (socket as Tracked)[kNewest];
  const parse = err.code?.startsWith('HPE_') === true;
  if (newest !== undefined && !newest.res.destroyed && !newest.req.complete && !newest.res.writableFinished) {
    if (parse) newest.refuse(status, 'SY_ERR_BAD_REQUEST', `switchyard: the request is malformed (${err.message})\n`);
    else newest.refuse(status, '', 'switchyard: the request did not come whole within timeouts.request\n');
    return;
  }
  if (socket.writable && (parse || socket.bytesWritten === 0)) {
    socket.write(parserAnswer(ls, status), 'latin1');
    const plan = ls.plan?.protocol === 'http' ? ls.plan : null;
    if (plan !== null) answerAtEdge(plan, status, null, socket);
  }
  socket.destroy(err);
}

/** Node's answer to a parse error, with the listener's response edits. */
function parserAnswer(ls: ServingSocket, status: number): string {
  const plan = ls.plan?.protocol === 'http' ? ls.plan : null;
  return `${PARSER_ANSWERS[status]!}${ownLines(plan)}\r\n`;
}


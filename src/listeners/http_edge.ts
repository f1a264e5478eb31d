import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { editLines } from '../http/local_reply.js';
import type { ListenerPlan, ServingSocket } from './plan.js';
import { publishRequest } from './record.js';

/**
 * The edge of an http listener: the check of what switchyard will not forward as
 * it came (badRequest, which the units answer), and the answers made where there is
 * no unit of work: CONNECT, requests Node's parser refused, a removed listener's
 * late request. These run no filter and reach no role; they are counted and logged
 * like any request answered without one.
 */

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
 * lets two Host lines through (req.headers keeps the first), and undici would
 * refuse to send them, which would look like the upstream's failure: a client could
 * eject a healthy canary. So the check is made here, before any filter or upstream.
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
export function handleClientError(ls: ServingSocket, err: NodeJS.ErrnoException, socket: Socket): void {
  if (socket.writable && socket.bytesWritten === 0) {
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'HPE_CHUNK_EXTENSIONS_OVERFLOW' ? 413
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    const plan = ls.plan?.protocol === 'http' ? ls.plan : null;
    socket.write(`${PARSER_ANSWERS[status]!}${ownLines(plan)}\r\n`, 'latin1');
    if (plan !== null) answerAtEdge(plan, status, null, socket);
  }
  socket.destroy(err);
}

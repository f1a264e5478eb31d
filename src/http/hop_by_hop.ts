import type { IncomingMessage } from 'node:http';
import { isH2, streamOf } from '../http2/h2_compat.js';

/**
 * Header hygiene between client and upstream: hop-by-hop headers (RFC 9110 §7.6.1)
 * are dropped both ways, with the ones a Connection header names; x-forwarded-*
 * are switchyard's to set. One place for plain requests and upgrades alike.
 */

/**
 * Lower-case header names, and the lengths they come in: a name of any other length is
 * not one of them, whatever its case, so most names are looked up without being
 * lower-cased (a new string, hashed to be looked up).
 */
class NameSet {
  readonly #names: ReadonlySet<string>;
  readonly #lengths = new Uint8Array(64);

  constructor(names: readonly string[]) {
    this.#names = new Set(names);
    for (const n of names) this.#lengths[n.length] = 1;
  }

  /** Whether `name`, in any case, is one of them. */
  has(name: string): boolean {
    const n = name.length;
    return n < 64 && this.#lengths[n] === 1 && this.#names.has(name.toLowerCase());
  }
}

/** Hop-by-hop request headers, plus the ones we set ourselves. */
const DROP_REQUEST = new NameSet([
  'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade',
  // Node's server already answered any 100-continue; the upstream must not wait for our body on another.
  'expect',
  'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host',
]);
const DROP_RESPONSE = new NameSet(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade',
  // Ours to set: an upstream's would say a fallback happened where none did.
  'x-switchyard-fallback']);
/** Headers that frame a message: a Connection option list never removes them. */
const FRAMING = new Set(['content-length', 'transfer-encoding', 'host']);

/** x-forwarded-for: the client appended, after a comma and a space. (-proto is http; -host is the Host, when there is one.) */
function forwardedFor(req: IncomingMessage, remoteAddress: string): string {
  const xff = req.headers['x-forwarded-for'];
  return xff ? `${xff}, ${remoteAddress}` : remoteAddress;
}

// hot path
/** The client's headers in their own case and order, minus hop-by-hop ones, plus x-forwarded-*. */
export function upstreamHeaders(req: IncomingMessage, remoteAddress: string): string[] {
  const raw = req.rawHeaders;
  const out: string[] = [];
  const conn = req.headers.connection;
  const listed = conn && conn !== 'keep-alive' && conn !== 'close' ? requestConnectionTokens(conn) : null;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (DROP_REQUEST.has(name) || (listed !== null && listed.includes(name.toLowerCase()))) continue;
    out.push(name, raw[i + 1]!);
  }
  out.push('x-forwarded-for', forwardedFor(req, remoteAddress), 'x-forwarded-proto', 'http');
  const host = req.headers.host;
  if (host !== undefined) out.push('x-forwarded-host', host);
  return out;
}

/**
 * Sets x-forwarded-* on an upgrade request's parsed headers, which http-proxy
 * forwards as they are (its own xfwd would append without the space, say proto
 * "ws", and set no x-forwarded-host).
 */
export function setForwardedHeaders(req: IncomingMessage): void {
  const h = req.headers;
  h['x-forwarded-for'] = forwardedFor(req, req.socket.remoteAddress ?? '');
  h['x-forwarded-proto'] = 'http';
  if (h.host !== undefined) h['x-forwarded-host'] = h.host;
  else delete h['x-forwarded-host'];
}

// hot path
/**
 * Upstream response headers (as parsed: name, value, …) for writeHead, keeping
 * repeats and case, less hop-by-hop ones and those the Connection header lists
 * (`listed`, lower case; framing headers are never dropped for being listed).
 */
export function responseHeaders(raw: readonly string[], listed: readonly string[] | null): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (DROP_RESPONSE.has(name)) continue;
    if (listed !== null) {
      const lower = name.toLowerCase();
      if (listed.includes(lower) && !FRAMING.has(lower)) continue;
    }
    out.push(name, raw[i + 1]!);
  }
  return out;
}

/**
 * What a client's Connection header may not remove: Host (`Connection: host` left the
 * upstream to a Host of the endpoint's address) and the framing headers
 * (content-length; transfer-encoding is dropped and redone by the upstream client anyway). RFC 9110
 * §7.6.1 lets a sender name hop-by-hop fields, not take the message's routing or framing.
 */
const NEVER_HOP_BY_HOP = new Set(['host', 'content-length', 'transfer-encoding']);

/** The header names a request's Connection header lists, less the ones it may not remove. */
function requestConnectionTokens(v: string): string[] {
  return connectionTokens(v).filter((name) => !NEVER_HOP_BY_HOP.has(name));
}

function connectionTokens(v: string): string[] {
  return v.toLowerCase().split(',').map((s) => s.trim()).filter((s) => s && s !== 'keep-alive' && s !== 'close');
}

/**
 * The origin-form target: an absolute-form one (`GET http://h/p?q`) keeps its path and
 * query as written, not as the URL parser would normalize them (dot segments,
 * percent-encoding), so the upstream sees what it would have in origin form; an empty
 * path is `/` (RFC 9112 §3.2.1). The listener refused every other target form.
 */
export function requestPath(url: string): string {
  if (url.charCodeAt(0) === 47 /* / */) return url;
  const m = /^https?:\/\/[^/?#]*/i.exec(url);
  if (m === null) return '/';
  const rest = url.slice(m[0].length);
  return rest.charCodeAt(0) === 47 /* / */ ? rest : `/${rest}`;
}

/** Whether a request has a body to read (a Content-Length above 0, or chunked; on HTTP/2, no END_STREAM on its headers). */
export function hasBody(req: IncomingMessage): boolean {
  if (isH2(req)) return !streamOf(req).endAfterHeaders;
  const h = req.headers;
  return h['transfer-encoding'] !== undefined || (h['content-length'] !== undefined && h['content-length'] !== '0');
}

/** Fields a trailer may not carry (RFC 9110 §6.5.1): framing, routing, authentication, content metadata. */
const NOT_IN_TRAILERS = new Set(['content-length', 'content-type', 'host', 'content-encoding', 'content-range', 'authorization', 'set-cookie']);

/**
 * Trailer fields to pass on (name, value, …, as they came), less hop-by-hop ones and
 * those a trailer may not carry: a request's trailers for the upstream, or an answer's
 * for the client.
 */
export function trailerFields(raw: readonly string[]): string[] {
  const kept = responseHeaders(raw, null);
  const out: string[] = [];
  for (let i = 0; i < kept.length; i += 2) if (!NOT_IN_TRAILERS.has(kept[i]!.toLowerCase())) out.push(kept[i]!, kept[i + 1]!);
  return out;
}

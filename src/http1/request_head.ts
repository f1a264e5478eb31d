import { METHODS } from 'node:http';
import { MalformedMessage, listTokens, parseContentLength, readField, trimOws } from './message_head.js';

/**
 * A request head (RFC 9112 §3, §5), parsed once and strictly: what Node's own
 * parser (llhttp, strict) refuses is refused here too, so that switchyard and any
 * Node upstream behind it agree on every request's end. What a parser can read but
 * a proxy must not forward as it came (two Hosts, codings other than chunked, an
 * absolute-form target…) is left to the edge (listeners/http_edge.ts), which answers
 * it as a request: counted and logged with its reason.
 */
export interface RequestHead {
  readonly method: string;
  readonly target: string;
  /** 0.9 (a request line without a version), 1.0, 1.1 or 2.0: the edge answers 505 to those that are not 1.x. */
  readonly major: number;
  readonly minor: number;
  /** name, value, …: names in their case, in order, repeats kept; values without surrounding whitespace. */
  readonly rawHeaders: string[];
  /** Content-Length, or -1 when none was sent. */
  readonly contentLength: number;
  /** Transfer-Encoding ends in chunked (the edge refuses any other coding before it). */
  readonly chunked: boolean;
  /** The client keeps the connection open after this request (HTTP/1.1 without close, HTTP/1.0 with keep-alive). */
  readonly keepAlive: boolean;
  /** Connection names upgrade and an Upgrade field is present (the value, lower case), else null. */
  readonly upgrade: string | null;
  /** The Expect field, lower case, or null. */
  readonly expect: string | null;
}

/** The methods Node's parser knows; any other is refused, as Node refuses it. */
const KNOWN_METHODS = new Set(METHODS.filter((m) => m !== 'PRI'));

const ALL_DIGITS = /^[0-9]+$/;

/** scheme "://" (RFC 3986 §3.1): the start of an absolute-form target. */
const SCHEME_URI = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//;


/** Whether every char of the target is visible ASCII or obs-text (no space, control or DEL). */
function isTarget(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c <= 0x20 || c === 0x7f || c > 0xff) return false;
  }
  return true;
}

// hot path
/**
 * Parses a request head: the request line and the field lines, CRLF between them,
 * without the final blank line. Throws MalformedMessage for: a bare CR or LF, obs-fold,
 * a space before a colon, a name that is not a token, a control character in a value,
 * an unknown method, a version other than 0.9, 1.0, 1.1 or 2.0, Content-Length twice
 * or not a plain number, Content-Length with Transfer-Encoding, and a Transfer-Encoding
 * whose last coding is not chunked.
 */
export function parseRequestHead(head: string): RequestHead {
  let eol = head.indexOf('\r\n');
  if (eol === -1) eol = head.length;
  const sp = head.indexOf(' ');
  if (sp <= 0 || sp > eol) throw new MalformedMessage('the request line is not "METHOD target HTTP/1.x"');
  const method = head.slice(0, sp);
  if (!KNOWN_METHODS.has(method)) throw new MalformedMessage(`unknown method ${JSON.stringify(method.slice(0, 32))}`);
  let from = sp + 1;
  while (head.charCodeAt(from) === 32) from++;
  let to = head.indexOf(' ', from);
  if (to === -1 || to > eol) to = eol;
  const target = head.slice(from, to);
  if (!isTarget(target)) throw new MalformedMessage('the request target has a space, a control character or nothing in it');
  // Node's parser reads a target as a path, `*`, or a URI with a scheme (CONNECT: an authority).
  const c0 = target.charCodeAt(0);
  if (c0 !== 47 /* / */ && c0 !== 42 /* * */ && method !== 'CONNECT' && !SCHEME_URI.test(target)) {
    throw new MalformedMessage('the request target is neither a path nor a URI');
  }
  let major = 0;
  let minor = 9;
  if (to < eol) {
    // " HTTP/d.d" and the line's end
    if (eol - to !== 9 || !head.startsWith(' HTTP/', to) || head.charCodeAt(to + 7) !== 46) throw new MalformedMessage('the request line does not end in HTTP/x.y');
    major = head.charCodeAt(to + 6) - 48;
    minor = head.charCodeAt(to + 8) - 48;
    const known = (major === 1 && (minor === 0 || minor === 1)) || (major === 2 && minor === 0) || (major === 0 && minor === 9);
    if (!known) throw new MalformedMessage('the HTTP version is not one of 0.9, 1.0, 1.1, 2.0');
  }

  const rawHeaders: string[] = [];
  let contentLength = -1;
  let te: string | null = null;
  let connection: string | null = null;
  let upgrade: string | null = null;
  let expect: string | null = null;
  let pos = eol + 2;
  while (pos < head.length) {
    const at = rawHeaders.length;
    pos = readField(head, pos, rawHeaders);
    const name = rawHeaders[at]!;
    const value = rawHeaders[at + 1]!;
    // Only these names decide framing and the connection; checked by length first so most need no lower-casing.
    const n = name.length;
    if (n === 14 || n === 17 || n === 10 || n === 7 || n === 6) {
      const lower = name.toLowerCase();
      if (lower === 'content-length') {
        if (contentLength !== -1) throw new MalformedMessage('Content-Length more than once');
        contentLength = parseContentLength(value);
        if (contentLength === -1) {
          if (!ALL_DIGITS.test(value)) throw new MalformedMessage('Content-Length is not a plain number');
          // Digits beyond 2^53: readable, but not forwardable exactly; the edge refuses it with its reason.
          contentLength = Number.MAX_SAFE_INTEGER;
        }
      } else if (lower === 'transfer-encoding') {
        // Node's parser refuses a tab after the coding (stricter than OWS, and safe): the line ends before pos's CRLF.
        if (head.charCodeAt(pos - 3) === 9) throw new MalformedMessage('Transfer-Encoding ends in a tab');
        if (value !== '') te = te === null ? value : `${te}, ${value}`;
      } else if (lower === 'connection') {
        connection = connection === null ? value : `${connection}, ${value}`;
      } else if (lower === 'upgrade') upgrade = value.toLowerCase();
      else if (lower === 'expect') expect = value.toLowerCase();
    }
  }

  let chunked = false;
  if (te !== null) {
    if (contentLength !== -1) throw new MalformedMessage('both Content-Length and Transfer-Encoding');
    // chunked must be the very last element (`chunked,` is refused, as Node refuses it).
    const last = te.slice(te.lastIndexOf(',') + 1);
    if (trimOws(last).toLowerCase() !== 'chunked') throw new MalformedMessage(`Transfer-Encoding "${te}" does not end in chunked`);
    chunked = true;
  }
  let close = false;
  let keepAliveToken = false;
  let upgradeToken = false;
  if (connection !== null) {
    if (connection === 'keep-alive' || connection === 'Keep-Alive') keepAliveToken = true;
    else if (connection === 'close') close = true;
    else {
      for (const t of listTokens(connection)) {
        if (t === 'close') close = true;
        else if (t === 'keep-alive') keepAliveToken = true;
        else if (t === 'upgrade') upgradeToken = true;
      }
    }
  }
  const keepAlive = !close && (major === 1 && minor === 1 ? true : major === 1 && keepAliveToken);
  return {
    method, target, major, minor, rawHeaders, contentLength, chunked, keepAlive,
    upgrade: upgradeToken && upgrade !== null ? upgrade : null, expect,
  };
}

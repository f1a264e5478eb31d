/**
 * HTTP/1.1 message heads (RFC 9112), parsed strictly: what two parsers could read
 * differently is refused rather than guessed at, so the proxy and the peer beyond it
 * always agree on where a message ends. A head is parsed once, from the bytes up to
 * and without its blank line, as a latin1 string (one byte, one char).
 */

/** A head switchyard will not read: the peer's fault. `reason` says which rule it broke. */
export class MalformedMessage extends Error {
  readonly code = 'SY_MALFORMED_MESSAGE';
  /** The answer a request gets for it: 400, or 413 for a chunk extension too long to read (as Node answers). */
  readonly status: 400 | 413;
  constructor(reason: string, status: 400 | 413 = 400) {
    super(reason);
    this.status = status;
    this.name = 'MalformedMessage';
  }
}

/** How a message's body is framed (RFC 9112 §6.3). */
export interface Framing {
  /** Content-Length, or -1 when none was sent. */
  readonly contentLength: number;
  /** Transfer-Encoding: chunked (the only transfer coding switchyard reads). */
  readonly chunked: boolean;
  /** The peer will close the connection after this message (Connection: close, or HTTP/1.0 without keep-alive). */
  readonly close: boolean;
  /** Keep-Alive: timeout=N, in ms (-1: not said). */
  readonly keepAliveMs: number;
  /** Connection options other than close and keep-alive, lower case (headers to drop hop by hop); null when none. */
  readonly connectionOptions: readonly string[] | null;
}

export interface ResponseHead extends Framing {
  readonly status: number;
  readonly reason: string;
  /** name, value, name, value…: names in their case, in order, repeats kept; values without surrounding whitespace. */
  readonly headers: string[];
  /** HTTP/2: the answer ended with its headers (gRPC's trailers-only form). */
  readonly trailersOnly?: boolean;
}

/** The end of a head: the blank line. */
export const HEAD_END = Buffer.from('\r\n\r\n', 'latin1');

// tchar (RFC 9110 §5.6.2): ! # $ % & ' * + - . ^ _ ` | ~ DIGIT ALPHA
const TCHAR = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~") TCHAR[c.charCodeAt(0)] = 1;
for (let c = 48; c <= 57; c++) TCHAR[c] = 1;
for (let c = 65; c <= 90; c++) TCHAR[c] = TCHAR[c + 32] = 1;

/** Whether `s` is a token (a field name, a method, a transfer coding). */
export function isToken(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 127 || TCHAR[c] === 0) return false;
  }
  return true;
}

// hot path
/** Whether `s` may be a field value: HTAB, SP, VCHAR, obs-text (no CR, LF, NUL or other controls). */
export function isFieldValue(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if ((c < 0x20 && c !== 9) || c === 0x7f || c > 0xff) return false;
  }
  return true;
}

/** A Content-Length value: digits only (leading zeros too, as Node reads them), and exact in a double (2^53). */
export function parseContentLength(v: string): number {
  let i = 0;
  while (i < v.length - 1 && v.charCodeAt(i) === 48) i++;
  if (v.length === 0 || v.length - i > 16) return -1;
  for (let j = i; j < v.length; j++) {
    const c = v.charCodeAt(j);
    if (c < 48 || c > 57) return -1;
  }
  const n = Number(v);
  return n <= Number.MAX_SAFE_INTEGER ? n : -1;
}

/** `s` from `from` to `to`, without the optional whitespace (SP, HTAB) around it: one cut. */
export function trimOws(s: string, from = 0, to = s.length): string {
  let a = from;
  let b = to;
  while (a < b && (s.charCodeAt(a) === 32 || s.charCodeAt(a) === 9)) a++;
  while (b > a && (s.charCodeAt(b - 1) === 32 || s.charCodeAt(b - 1) === 9)) b--;
  return s.slice(a, b);
}

/** Tokens of a comma-separated list, lower case, empty elements left out (RFC 9110 §5.6.1). */
export function listTokens(v: string): string[] {
  const out: string[] = [];
  for (const part of v.split(',')) {
    const t = part.trim().toLowerCase();
    if (t !== '') out.push(t);
  }
  return out;
}

// hot path
/**
 * Reads the field line at `pos` of a head (name ":" OWS value OWS, up to CRLF or the
 * head's end) into `out` as name, value; returns where the next line starts. Throws
 * MalformedMessage for obs-fold, a bare CR or LF, a space before the colon, a name
 * that is not a token, a control character in the value.
 */
export function readField(head: string, pos: number, out: string[]): number {
  let end = head.indexOf('\r\n', pos);
  if (end === -1) end = head.length;
  const colon = head.indexOf(':', pos);
  if (colon === -1 || colon > end) throw new MalformedMessage(pos === end ? 'an empty header line' : 'a header line without a colon (obs-fold, or a bare CR or LF?)');
  const name = head.slice(pos, colon);
  if (!isToken(name)) {
    const c = name.charCodeAt(0);
    throw new MalformedMessage(c === 32 || c === 9 ? 'a folded header line (obs-fold)' : 'a header name that is not a token (a space before the colon?)');
  }
  const value = trimOws(head, colon + 1, end);
  if (!isFieldValue(value)) throw new MalformedMessage(`header ${name} has a control character in its value (a bare CR or LF, or NUL?)`);
  out.push(name, value);
  return end + 2;
}

// hot path
/**
 * Parses a response head (status line and header lines, CRLF between them, no final
 * blank line). Throws MalformedMessage for anything RFC 9112 does not allow or two
 * parsers could disagree on: a bare CR or LF, obs-fold, a space before the colon, a
 * control character in a value, Content-Length twice or not a plain number, both
 * Content-Length and Transfer-Encoding, a transfer coding other than exactly chunked.
 */
export function parseResponseHead(head: string): ResponseHead {
  let eol = head.indexOf('\r\n');
  if (eol === -1) eol = head.length;
  // HTTP/1.x SP 3DIGIT [SP reason]
  if (eol < 12 || !head.startsWith('HTTP/1.') || head.charCodeAt(8) !== 32) throw new MalformedMessage('the status line is not "HTTP/1.x NNN reason"');
  const minor = head.charCodeAt(7) - 48;
  if (minor !== 0 && minor !== 1) throw new MalformedMessage('the status line is not "HTTP/1.x NNN reason"');
  const d0 = head.charCodeAt(9) - 48;
  const d1 = head.charCodeAt(10) - 48;
  const d2 = head.charCodeAt(11) - 48;
  if (d0 < 1 || d0 > 5 || d1 < 0 || d1 > 9 || d2 < 0 || d2 > 9) throw new MalformedMessage('the status code is not 100 to 599');
  const status = d0 * 100 + d1 * 10 + d2;
  let reason = '';
  if (eol > 12) {
    if (head.charCodeAt(12) !== 32) throw new MalformedMessage('the status code is not followed by a space');
    reason = head.slice(13, eol);
    if (!isFieldValue(reason)) throw new MalformedMessage('the reason phrase has a control character (a bare CR or LF?)');
  }

  const headers: string[] = [];
  let contentLength = -1;
  let te: string | null = null;
  let connection: string | null = null;
  let keepAlive: string | null = null;
  let pos = eol + 2;
  while (pos < head.length) {
    const at = headers.length;
    pos = readField(head, pos, headers);
    const name = headers[at]!;
    const value = headers[at + 1]!;
    // Only these names decide framing; checked by length first so most need no lower-casing.
    const n = name.length;
    if (n === 14 || n === 17 || n === 10) {
      const lower = name.toLowerCase();
      if (lower === 'content-length') {
        if (contentLength !== -1) throw new MalformedMessage('Content-Length more than once');
        contentLength = parseContentLength(value);
        if (contentLength === -1) throw new MalformedMessage('Content-Length is not a plain number below 2^53');
      } else if (lower === 'transfer-encoding') {
        if (te !== null) throw new MalformedMessage('Transfer-Encoding more than once');
        te = value;
      } else if (lower === 'connection') {
        connection = connection === null ? value : `${connection}, ${value}`;
      } else if (lower === 'keep-alive') keepAlive = value;
    }
  }

  let chunked = false;
  if (te !== null) {
    if (contentLength !== -1) throw new MalformedMessage('both Content-Length and Transfer-Encoding');
    if (te.toLowerCase() !== 'chunked') throw new MalformedMessage(`Transfer-Encoding "${te}": switchyard reads chunked only`);
    chunked = true;
  }
  let close = minor === 0;
  let options: string[] | null = null;
  // Nearly every upstream says just one of these.
  if (connection === 'keep-alive' || connection === 'Keep-Alive') close = false;
  else if (connection === 'close') close = true;
  else if (connection !== null) {
    for (const t of listTokens(connection)) {
      if (t === 'close') close = true;
      else if (t === 'keep-alive') close = false;
      else (options ??= []).push(t);
    }
    if (minor === 0 && !/(?:^|,)\s*keep-alive\s*(?:,|$)/i.test(connection)) close = true;
  }
  return { status, reason, headers, contentLength, chunked, close, keepAliveMs: keepAliveTimeout(keepAlive), connectionOptions: options };
}

/** The last Keep-Alive value read, and its timeout: an upstream sends the same one on every answer. */
let lastKeepAlive = '';
let lastKeepAliveMs = -1;

/** Keep-Alive: timeout=N (seconds), in ms; -1 when absent or unreadable. */
function keepAliveTimeout(v: string | null): number {
  if (v === null) return -1;
  if (v === lastKeepAlive) return lastKeepAliveMs;
  const m = /(?:^|[,;\s])timeout\s*=\s*(\d{1,6})/i.exec(v);
  lastKeepAlive = v;
  lastKeepAliveMs = m === null ? -1 : Number(m[1]) * 1000;
  return lastKeepAliveMs;
}

/*
 * The request-smuggling corpus (issue 13): raw HTTP/1.x requests as a client sends
 * them, and what a proxy must make of each, said in bytes (what reaches the
 * upstream, what the client is answered), never in terms of a parser's internals,
 * so the same corpus runs against Node's parser today and switchyard's own later.
 *
 * Every case's request targets carry its id (`/c12/…`, or a `c12.` host for a
 * target without a path), so the upstream's requests can be told apart while many
 * cases run at once; a request without an id at the upstream came from nowhere.
 * The vectors are RFC 9112's (framing, the head's syntax, request targets), each
 * in its permutations: header-name case, whitespace, position, repeats, and
 * combinations with a pipelined request after it.
 */

/** What the upstream must receive of one request the client sent. */
export interface Seen {
  method: string;
  /** The target in origin form, byte for byte. */
  target: string;
  /** The body as the client framed it. */
  body: string;
  /** The Host the upstream must see; unchecked when absent. */
  host?: string;
}

/**
 * How a case ends once the forwarded requests are answered: `keep`, the connection
 * stays in step (the test sends one more request on it, which must be answered and
 * seen as sent); `close`, the proxy closes it with nothing more (HTTP/1.0, or
 * `Connection: close`: RFC 9112 §9.6 says what follows is not processed); a status,
 * the proxy refuses what follows with that answer, then closes.
 */
export type End = 'keep' | 'close' | 400 | 413 | 431 | 501 | 505;

export interface Case {
  /** `family/what`; the family names the test that runs it. */
  name: string;
  /** The bytes the client sends, one character per byte (latin1), in one write. */
  bytes: string;
  /** The requests that must reach the upstream, in order; each is answered 200 to the client, in order. */
  forward: Seen[];
  end: End;
  /**
   * The refusal is found inside a chunked body, which is streamed: the upstream may
   * have seen the start of that request (its head, some chunks), never all of it.
   */
  partial?: true;
}

const CRLF = '\r\n';

/** The cases, in order; `id` numbers them (the `c<id>` in every target). */
const cases: Case[] = [];

/**
 * Adds a case. `make` gets the case's path prefix (`/c12`) and its host label
 * (`c12.example`) and returns the bytes, the requests the upstream must see, and the end.
 */
function add(name: string, make: (p: string, host: string) => Omit<Case, 'name'>): void {
  const id = cases.length;
  cases.push({ name, ...make(`/c${id}`, `c${id}.example`) });
}

/** A request head: request line and header lines (each given whole, without its CRLF), then the empty line. */
function head(line: string, ...fields: string[]): string {
  return line + CRLF + fields.map((f) => f + CRLF).join('') + CRLF;
}

/** A chunked body of these chunks, then the last chunk and no trailers. */
function chunked(...parts: string[]): string {
  return parts.map((p) => `${p.length.toString(16)}${CRLF}${p}${CRLF}`).join('') + `0${CRLF}${CRLF}`;
}

const get = (target: string, host = 'h.example'): Seen => ({ method: 'GET', target, body: '', host });
const post = (target: string, body: string): Seen => ({ method: 'POST', target, body });

/** The spellings of a header name a parser must treat alike (field names are case-insensitive, RFC 9110 §5.1). */
function spellings(name: string): string[] {
  return [name, name.toLowerCase(), name.toUpperCase()];
}

// ---------------------------------------------------------------- Content-Length and Transfer-Encoding together

// RFC 9112 §6.3: a request with both is the classic desync (CL.TE, TE.CL); a server
// MAY reject it, a proxy must not forward it as is. Rejected with 400.
for (const te of ['chunked', 'Chunked', 'gzip, chunked']) {
  for (const cl of ['0', '3', '41']) {
    for (const clName of ['Content-Length', 'content-length']) {
      for (const order of ['cl-first', 'te-first'] as const) {
        add(`cl+te/${clName}: ${cl} and Transfer-Encoding: ${te}, ${order}`, (p) => {
          const fields = [`${clName}: ${cl}`, `Transfer-Encoding: ${te}`];
          if (order === 'te-first') fields.reverse();
          return { bytes: head(`POST ${p}/a HTTP/1.1`, 'Host: h.example', ...fields) + chunked('abc'), forward: [], end: 400 };
        });
      }
    }
  }
}
// The classic probes: a smuggled request hidden behind one framing or the other.
add('cl+te/CL.TE: the body under Content-Length ends a chunked body and starts a request', (p) => {
  const smuggled = `GET ${p}/smuggled HTTP/1.1${CRLF}Host: h.example${CRLF}${CRLF}`;
  const body = `0${CRLF}${CRLF}${smuggled}`;
  return { bytes: head(`POST ${p}/a HTTP/1.1`, 'Host: h.example', `Content-Length: ${body.length}`, 'Transfer-Encoding: chunked') + body, forward: [], end: 400 };
});
add('cl+te/TE.CL: a short Content-Length leaves a chunk that reads as a request', (p) => {
  const smuggled = `GET ${p}/smuggled HTTP/1.1${CRLF}Host: h.example${CRLF}${CRLF}`;
  const body = `${smuggled.length.toString(16)}${CRLF}${smuggled}${CRLF}0${CRLF}${CRLF}`;
  return { bytes: head(`POST ${p}/a HTTP/1.1`, 'Host: h.example', 'Content-Length: 4', 'Transfer-Encoding: chunked') + body, forward: [], end: 400 };
});
add('cl+te/Transfer-Encoding on a line of its own after an obs-fold of Content-Length', (p) => ({
  bytes: head(`POST ${p}/a HTTP/1.1`, 'Host: h.example', 'Content-Length: 3', ' Transfer-Encoding: chunked') + 'abc', forward: [], end: 400,
}));

// ---------------------------------------------------------------- Content-Length values

// Repeated lines, the same value or not: Node refuses a second line whatever it says (RFC 9110 §8.6 allows that).
for (const [a, b] of [['3', '3'], ['0', '0'], ['3', '5'], ['5', '3'], ['0', '3']] as const) {
  for (const names of [['Content-Length', 'Content-Length'], ['Content-Length', 'content-length']] as const) {
    for (const apart of [false, true]) {
      add(`content-length/two lines ${names[0]}: ${a}, ${names[1]}: ${b}${apart ? ', apart' : ''}`, (p) => ({
        bytes: head(`POST ${p}/a HTTP/1.1`, 'Host: h.example', `${names[0]}: ${a}`, ...(apart ? ['X-Between: 1'] : []), `${names[1]}: ${b}`) + 'abcde',
        forward: [], end: 400,
      }));
    }
  }
}
// One value that is not 1*DIGIT (RFC 9110 §8.6): lists, signs, spaces inside, other characters, nothing.
for (const v of ['3, 3', '3,3', '3 ,3', '3, 5', '+3', '-3', '-0', '+0', '3 3', '1 2', '3\t3', '3a', 'a3', '0x3', '3.0', '3e0', 'three',
  '\xb3', '', ' ', '\t', '18446744073709551616', '99999999999999999999']) {
  add(`content-length/invalid value ${JSON.stringify(v)}`, (p) => ({
    bytes: head(`POST ${p}/a HTTP/1.1`, 'Host: h.example', `Content-Length: ${v}`) + 'abc', forward: [], end: 400,
  }));
}
// Values a Number cannot hold exactly: undici would send a rounded length (2^53 + 1 went out as 2^53).
for (const v of ['9007199254740993', '9007199254740992', '18446744073709551615', '10000000000000000']) {
  add(`content-length/beyond 2^53 - 1: ${v}`, (p) => ({
    bytes: head(`POST ${p}/a HTTP/1.1`, 'Host: h.example', `Content-Length: ${v}`) + 'abc', forward: [], end: 400,
  }));
}
// Whitespace around the value is the field's (OWS), leading zeros are digits: the body is 3 bytes.
for (const v of [' 3', '3 ', '   3   ', '003', '0000000000000000000003']) {
  add(`content-length/valid value ${JSON.stringify(v)}`, (p) => ({
    bytes: head(`POST ${p}/a HTTP/1.1`, 'Host: h.example', `Content-Length:${v.startsWith(' ') ? '' : ' '}${v}`) + 'abc',
    forward: [post(`${p}/a`, 'abc')], end: 'keep',
  }));
}
for (const name of [...spellings('Content-Length'), 'Content-length']) {
  add(`content-length/name spelled ${name}`, (p) => ({
    bytes: head(`POST ${p}/a HTTP/1.1`, 'Host: h.example', `${name}: 5`) + 'hello', forward: [post(`${p}/a`, 'hello')], end: 'keep',
  }));
}
add('content-length/a GET with a body', (p) => ({
  bytes: head(`GET ${p}/a HTTP/1.1`, 'Host: h.example', 'Content-Length: 3') + 'abc', forward: [{ method: 'GET', target: `${p}/a`, body: 'abc' }], end: 'keep',
}));
add('content-length/0, then a pipelined request', (p) => ({
  bytes: head(`POST ${p}/a HTTP/1.1`, 'Host: h.example', 'Content-Length: 0') + head(`GET ${p}/b HTTP/1.1`, 'Host: h.example'),
  forward: [post(`${p}/a`, ''), get(`${p}/b`)], end: 'keep',
}));
add('content-length/a body that holds a request is one body', (p) => {
  const inner = head(`GET ${p}/smuggled HTTP/1.1`, 'Host: h.example');
  return { bytes: head(`POST ${p}/a HTTP/1.1`, 'Host: h.example', `Content-Length: ${inner.length}`) + inner, forward: [post(`${p}/a`, inner)], end: 'keep' };
});
add('content-length/a body shorter than it says, then a request: the request is body', (p) => {
  const inner = head(`GET ${p}/smuggled HTTP/1.1`, 'Host: h.example');
  const body = `ab${inner}`;
  return { bytes: head(`POST ${p}/a HTTP/1.1`, 'Host: h.example', `Content-Length: ${body.length}`) + body, forward: [post(`${p}/a`, body)], end: 'keep' };
});
add('content-length/a body longer than it says: the rest is not a request', (p) => ({
  bytes: head(`POST ${p}/a HTTP/1.1`, 'Host: h.example', 'Content-Length: 3') + 'abcGARBAGE\r\n\r\n', forward: [post(`${p}/a`, 'abc')], end: 400,
}));

// ---------------------------------------------------------------- Transfer-Encoding values

// chunked, in the spellings a token allows (case-insensitive, RFC 9112 §7) and with the field's OWS.
for (const v of ['chunked', 'Chunked', 'CHUNKED', 'cHuNkEd', ' chunked', 'chunked ', '  chunked  ', '\tchunked', ', chunked']) {
  for (const name of ['Transfer-Encoding', 'transfer-encoding']) {
    add(`transfer-encoding/${name}: ${JSON.stringify(v)} is chunked`, (p) => ({
      bytes: head(`POST ${p}/a HTTP/1.1`, 'Host: h.example', `${name}:${v.startsWith(' ') ? '' : ' '}${v}`) + chunked('abc', 'de'),
      forward: [post(`${p}/a`, 'abcde')], end: 'keep',
    }));
  }
}
// Codings switchyard does not implement, before chunked (RFC 9112 §6.1: 501). Node de-chunked
// `gzip, chunked` and the upstream got the gzip bytes as if they were the content.
for (const v of ['gzip, chunked', 'deflate, chunked', 'compress, chunked', 'identity, chunked', 'x-custom, chunked', 'gzip,chunked',
  'GZIP, Chunked', 'gzip;q=1, chunked', 'br, chunked', 'gzip, gzip, chunked', 'gzip ,chunked']) {
  for (const name of ['Transfer-Encoding', 'TRANSFER-ENCODING']) {
    add(`transfer-encoding/${name}: ${v} is not implemented`, (p) => ({
      bytes: head(`POST ${p}/a HTTP/1.1`, 'Host: h.example', `${name}: ${v}`) + chunked('abc'), forward: [], end: 501,
    }));
  }
}
for (const [first, second] of [['gzip', 'chunked'], ['identity', 'chunked'], ['deflate', 'Chunked']] as const) {
  add(`transfer-encoding/two lines ${first} then ${second} is not implemented`, (p) => ({
    bytes: head(`POST ${p}/a HTTP/1.1`, 'Host: h.example', `Transfer-Encoding: ${first}`, 'X-Between: 1', `Transfer-Encoding: ${second}`) + chunked('abc'),
    forward: [], end: 501,
  }));
}
// Not chunked last, chunked twice or with parameters, not a coding at all: 400 (RFC 9112 §6.1, §6.3, §7).
// (A trailing HTAB is OWS, but Node's parser refuses it after chunked: stricter, and safe.)
for (const v of ['xchunked', 'chunkedx', 'chunk', 'chunked, identity', 'chunked, gzip', 'chunked;x=1', 'chunked; x=1', 'chunked , ', 'chunked,',
  'chunked, chunked', 'identity', 'gzip', 'chunked\t', '"chunked"', 'x chunked', 'chunked x', '"gzip", chunked', 'gzip, chunked;x=1',
  'chunked, , chunked', 'chunked\x00', 'chu nked']) {
  for (const name of ['Transfer-Encoding', 'transfer-encoding']) {
    add(`transfer-encoding/${name}: ${JSON.stringify(v)} is refused`, (p) => ({
      bytes: head(`POST ${p}/a HTTP/1.1`, 'Host: h.example', `${name}: ${v}`) + chunked('abc'), forward: [], end: 400,
    }));
  }
}
for (const [first, second] of [['chunked', 'chunked'], ['chunked', 'gzip'], ['chunked', 'identity'], ['Chunked', 'CHUNKED']] as const) {
  add(`transfer-encoding/two lines ${first} then ${second} is refused`, (p) => ({
    bytes: head(`POST ${p}/a HTTP/1.1`, 'Host: h.example', `Transfer-Encoding: ${first}`, `Transfer-Encoding: ${second}`) + chunked('abc'),
    forward: [], end: 400,
  }));
}
add('transfer-encoding/an empty line before chunked is ignored (an empty list element, RFC 9110 §5.6.1)', (p) => ({
  bytes: head(`POST ${p}/a HTTP/1.1`, 'Host: h.example', 'Transfer-Encoding:', 'Transfer-Encoding: chunked') + chunked('abc'),
  forward: [post(`${p}/a`, 'abc')], end: 'keep',
}));
add('transfer-encoding/chunked over HTTP/1.0 is faulty framing (RFC 9112 §6.1)', (p) => ({
  bytes: head(`POST ${p}/a HTTP/1.0`, 'Host: h.example', 'Transfer-Encoding: chunked') + chunked('abc'), forward: [], end: 400,
}));
add('transfer-encoding/gzip, chunked over HTTP/1.0', (p) => ({
  bytes: head(`POST ${p}/a HTTP/1.0`, 'Host: h.example', 'Transfer-Encoding: gzip, chunked') + chunked('abc'), forward: [], end: 400,
}));
add('transfer-encoding/a refused coding followed by a request in its body: neither is forwarded', (p) => ({
  bytes: head(`POST ${p}/a HTTP/1.1`, 'Host: h.example', 'Transfer-Encoding: gzip, chunked') + chunked(head(`GET ${p}/smuggled HTTP/1.1`, 'Host: h.example')),
  forward: [], end: 501,
}));

// ---------------------------------------------------------------- the head: obs-fold, bare CR and LF, control characters

// obs-fold (RFC 9112 §5.2): a server MUST reject it or replace it with SP; a proxy
// that passed it would let the next hop read the folded line as a field of its own.
for (const ws of [' ', '\t', '   ']) {
  for (const [field, fold] of [['X-Folded: a', 'b'], ['Host: h.example', 'x.example'], ['Content-Length: 3', '4'], ['Transfer-Encoding: gzip', 'chunked'],
    ['Transfer-Encoding:', 'chunked']] as const) {
    add(`obs-fold/${JSON.stringify(field)} folded with ${JSON.stringify(ws)}`, (p) => {
      const host = field.startsWith('Host') ? [] : ['Host: h.example'];
      const length = field.startsWith('Content-Length') || field.startsWith('Transfer') ? [] : ['Content-Length: 3'];
      return { bytes: head(`POST ${p}/a HTTP/1.1`, ...host, field, ws + fold, ...length) + 'abc', forward: [], end: 400 };
    });
  }
}
for (const ws of [' ', '\t']) {
  add(`obs-fold/the first field line starts with ${JSON.stringify(ws)}`, (p) => ({
    bytes: head(`GET ${p}/a HTTP/1.1`, `${ws}Host: h.example`), forward: [], end: 400,
  }));
  add(`obs-fold/a field line starting with ${JSON.stringify(ws)} names Content-Length`, (p) => ({
    bytes: head(`POST ${p}/a HTTP/1.1`, 'Host: h.example', `${ws}Content-Length: 3`) + 'abc', forward: [], end: 400,
  }));
}

// Bare LF and bare CR as line ends or inside lines (RFC 9112 §2.2: a bare CR MUST be refused;
// a bare LF MAY be taken as a line end, but a proxy that does and a next hop that does not disagree).
const bareEnds: [string, (p: string) => string][] = [
  ['LF after the request line', (p) => `GET ${p}/a HTTP/1.1\nHost: h.example\r\n\r\n`],
  ['LF after a field line', (p) => `GET ${p}/a HTTP/1.1\r\nHost: h.example\n\r\n`],
  ['LF as the empty line', (p) => `GET ${p}/a HTTP/1.1\r\nHost: h.example\r\n\n`],
  ['LF everywhere', (p) => `GET ${p}/a HTTP/1.1\nHost: h.example\n\n`],
  ['LF before Content-Length', (p) => `POST ${p}/a HTTP/1.1\r\nHost: h.example\nContent-Length: 3\r\n\r\nabc`],
  ['LF before Transfer-Encoding', (p) => `POST ${p}/a HTTP/1.1\r\nHost: h.example\r\nX: y\nTransfer-Encoding: chunked\r\n\r\n${chunked('abc')}`],
  ['LF inside a value', (p) => `GET ${p}/a HTTP/1.1\r\nHost: h.example\r\nX: a\nb\r\n\r\n`],
  ['CR after the request line', (p) => `GET ${p}/a HTTP/1.1\rHost: h.example\r\n\r\n`],
  ['CR after a field line', (p) => `GET ${p}/a HTTP/1.1\r\nHost: h.example\rX: y\r\n\r\n`],
  ['CR as the empty line', (p) => `GET ${p}/a HTTP/1.1\r\nHost: h.example\r\n\r\r\n`],
  ['CR before Content-Length', (p) => `POST ${p}/a HTTP/1.1\r\nHost: h.example\rContent-Length: 3\r\n\r\nabc`],
  ['CR inside a value', (p) => `GET ${p}/a HTTP/1.1\r\nHost: h.example\r\nX: a\rb\r\n\r\n`],
  ['CR before the colon', (p) => `GET ${p}/a HTTP/1.1\r\nHost: h.example\r\nX\r: y\r\n\r\n`],
  ['CR CR LF after a field line', (p) => `GET ${p}/a HTTP/1.1\r\nHost: h.example\r\r\n\r\n`],
  ['LF CR after a field line', (p) => `GET ${p}/a HTTP/1.1\r\nHost: h.example\n\r\r\n`],
  ['CR inside the request line', (p) => `GET ${p}/a\r HTTP/1.1\r\nHost: h.example\r\n\r\n`],
];
for (const [what, bytes] of bareEnds) add(`bare-cr-lf/${what}`, (p) => ({ bytes: bytes(p), forward: [], end: 400 }));

// NUL and other control characters in a value or a name (RFC 9110 §5.5: CR, LF and NUL MUST be refused; other CTLs are not field-vchar).
for (const [label, c] of [['NUL', '\x00'], ['DEL', '\x7f'], ['SOH', '\x01'], ['ESC', '\x1b'], ['VT', '\x0b'], ['FF', '\x0c']] as const) {
  for (const at of ['start', 'middle', 'end'] as const) {
    const value = at === 'start' ? `${c}ab` : at === 'middle' ? `a${c}b` : `ab${c}`;
    add(`control-chars/${label} at the ${at} of a value`, (p) => ({
      bytes: head(`GET ${p}/a HTTP/1.1`, 'Host: h.example', `X-Value: ${value}`), forward: [], end: 400,
    }));
  }
}
for (const field of ['Host: h.exa\x00mple', 'Content-Length: 3\x00', 'Transfer-Encoding: chunked\x00', 'X-Na\x00me: v', 'X-Name\x00: v']) {
  add(`control-chars/NUL in ${JSON.stringify(field)}`, (p) => ({
    bytes: head(`POST ${p}/a HTTP/1.1`, ...(field.startsWith('Host') ? [] : ['Host: h.example']), field, ...(field.startsWith('Content') || field.startsWith('Transfer') ? [] : ['Content-Length: 3'])) + 'abc',
    forward: [], end: 400,
  }));
}
// obs-text (bytes 0x80-0xFF) is allowed in a value (RFC 9110 §5.5).
for (const value of ['caf\xe9', '\xff\xfe']) {
  add(`control-chars/obs-text ${JSON.stringify(value)} in a value is allowed`, (p) => ({
    bytes: head(`GET ${p}/a HTTP/1.1`, 'Host: h.example', `X-Value: ${value}`), forward: [get(`${p}/a`)], end: 'keep',
  }));
}

// ---------------------------------------------------------------- field names

// Whitespace between a field name and the colon MUST be refused (RFC 9112 §5.1): a proxy that
// strips it and one that does not see different headers (`Transfer-Encoding : chunked`).
for (const ws of [' ', '\t', '  ']) {
  for (const [name, value, body] of [['Host', 'h.example', ''], ['Content-Length', '3', 'abc'], ['Transfer-Encoding', 'chunked', chunked('abc')], ['X-Name', 'v', '']] as const) {
    add(`field-names/${JSON.stringify(name + ws)} before the colon`, (p) => ({
      bytes: head(`POST ${p}/a HTTP/1.1`, ...(name === 'Host' ? [] : ['Host: h.example']), `${name}${ws}: ${value}`) + body, forward: [], end: 400,
    }));
  }
}
for (const field of ['X Name: v', ': v', 'X(Name): v', 'X@Name: v', 'X[Name]: v', 'X"Name": v', 'X/Name: v', 'X=Name: v', 'X{Name}: v', 'X\xe9: v']) {
  add(`field-names/not a token: ${JSON.stringify(field)}`, (p) => ({ bytes: head(`GET ${p}/a HTTP/1.1`, 'Host: h.example', field), forward: [], end: 400 }));
}
// Framing names spelt with an underscore: CGI and WSGI gateways turn `-` and `_` into one, so the next hop may read them as the real ones.
for (const field of ['Content_Length: 3', 'content_length: 3', 'Transfer_Encoding: chunked', 'TRANSFER_ENCODING: chunked']) {
  add(`field-names/${field.split(':')[0]} is refused`, (p) => ({
    bytes: head(`POST ${p}/a HTTP/1.1`, 'Host: h.example', field) + 'abc', forward: [], end: 400,
  }));
}
add('field-names/other names with an underscore are fine', (p) => ({
  bytes: head(`GET ${p}/a HTTP/1.1`, 'Host: h.example', 'X_Custom: 1', 'Content_Type: x'), forward: [get(`${p}/a`)], end: 'keep',
}));
add('field-names/no space after the colon', (p) => ({
  bytes: head(`POST ${p}/a HTTP/1.1`, 'Host:h.example', 'Content-Length:3') + 'abc', forward: [{ ...post(`${p}/a`, 'abc'), host: 'h.example' }], end: 'keep',
}));

// ---------------------------------------------------------------- chunked bodies

/** A chunked POST with this body text after its head (the body's syntax is the vector). */
function chunkedPost(p: string, body: string): string {
  return head(`POST ${p}/a HTTP/1.1`, 'Host: h.example', 'Transfer-Encoding: chunked') + body;
}
// Well-formed: hex in either case, leading zeros, extensions (RFC 9112 §7.1.1, ignored), trailers (§7.1.2).
const goodChunks: [string, string, string][] = [
  ['one chunk', chunked('abc'), 'abc'],
  ['three chunks', chunked('ab', 'cde', 'f'), 'abcdef'],
  ['no chunk at all', `0${CRLF}${CRLF}`, ''],
  ['hex in upper case', `A${CRLF}0123456789${CRLF}0${CRLF}${CRLF}`, '0123456789'],
  ['hex in lower case', `a${CRLF}0123456789${CRLF}0${CRLF}${CRLF}`, '0123456789'],
  ['a size with leading zeros', `003${CRLF}abc${CRLF}0${CRLF}${CRLF}`, 'abc'],
  ['a size with many leading zeros', `0000000000000000000003${CRLF}abc${CRLF}0${CRLF}${CRLF}`, 'abc'],
  ['an extension', `3;a=b${CRLF}abc${CRLF}0${CRLF}${CRLF}`, 'abc'],
  ['an extension with a quoted value', `3;a="b c"${CRLF}abc${CRLF}0${CRLF}${CRLF}`, 'abc'],
  ['an extension without a value', `3;a${CRLF}abc${CRLF}0${CRLF}${CRLF}`, 'abc'],
  ['two extensions', `3;a=b;c=d${CRLF}abc${CRLF}0${CRLF}${CRLF}`, 'abc'],
  ['an extension on the last chunk', `3${CRLF}abc${CRLF}0;last${CRLF}${CRLF}`, 'abc'],
  ['the last chunk as 00', `3${CRLF}abc${CRLF}00${CRLF}${CRLF}`, 'abc'],
  ['the last chunk as 000', `3${CRLF}abc${CRLF}000${CRLF}${CRLF}`, 'abc'],
  ['a trailer', `3${CRLF}abc${CRLF}0${CRLF}X-Trailer: 1${CRLF}${CRLF}`, 'abc'],
  ['two trailers', `3${CRLF}abc${CRLF}0${CRLF}X-A: 1${CRLF}X-B: 2${CRLF}${CRLF}`, 'abc'],
  ['chunk data that looks like a last chunk', chunked(`0${CRLF}${CRLF}`), `0${CRLF}${CRLF}`],
  ['chunk data with bare CR and LF', chunked('a\rb\nc'), 'a\rb\nc'],
];
for (const [what, body, content] of goodChunks) {
  add(`chunked/${what}`, (p) => ({ bytes: chunkedPost(p, body), forward: [post(`${p}/a`, content)], end: 'keep' }));
}
add('chunked/a body that holds a request is one body', (p) => {
  const inner = head(`GET ${p}/smuggled HTTP/1.1`, 'Host: h.example');
  return { bytes: chunkedPost(p, chunked(inner)), forward: [post(`${p}/a`, inner)], end: 'keep' };
});
// Malformed: the upstream must never get a whole request from them, nor one from their leftovers.
const badChunks: [string, string, End][] = [
  ['a size overflowing 64 bits', `ffffffffffffffffff${CRLF}abc${CRLF}0${CRLF}${CRLF}`, 400],
  ['a size of 2^64', `10000000000000000${CRLF}abc${CRLF}0${CRLF}${CRLF}`, 400],
  ['a negative size', `-3${CRLF}abc${CRLF}0${CRLF}${CRLF}`, 400],
  ['a size with a plus sign', `+3${CRLF}abc${CRLF}0${CRLF}${CRLF}`, 400],
  ['a size with 0x', `0x3${CRLF}abc${CRLF}0${CRLF}${CRLF}`, 400],
  ['a space before the size', ` 3${CRLF}abc${CRLF}0${CRLF}${CRLF}`, 400],
  ['a space after the size', `3 ${CRLF}abc${CRLF}0${CRLF}${CRLF}`, 400],
  ['a tab after the size', `3\t${CRLF}abc${CRLF}0${CRLF}${CRLF}`, 400],
  ['a space before an extension', `3 ;a=b${CRLF}abc${CRLF}0${CRLF}${CRLF}`, 400],
  ['a size that is not hex', `g${CRLF}abc${CRLF}0${CRLF}${CRLF}`, 400],
  ['an empty size line', `${CRLF}abc${CRLF}0${CRLF}${CRLF}`, 400],
  ['more data than the size', `3${CRLF}abcd${CRLF}0${CRLF}${CRLF}`, 400],
  ['less data than the size', `5${CRLF}abc${CRLF}0${CRLF}${CRLF}`, 400],
  ['no CRLF after the data', `3${CRLF}abc0${CRLF}${CRLF}`, 400],
  ['a bare LF after the size', `3\nabc${CRLF}0${CRLF}${CRLF}`, 400],
  ['a bare LF after the data', `3${CRLF}abc\n0${CRLF}${CRLF}`, 400],
  ['a bare CR after the data', `3${CRLF}abc\r0${CRLF}${CRLF}`, 400],
  ['a bare LF after the last chunk', `3${CRLF}abc${CRLF}0\n${CRLF}`, 400],
  ['a bare LF as the final line', `3${CRLF}abc${CRLF}0${CRLF}\n`, 400],
  ['a bare LF after a trailer', `3${CRLF}abc${CRLF}0${CRLF}X-T: 1\n${CRLF}`, 400],
  ['a bare CR in an extension', `3;a\rb${CRLF}abc${CRLF}0${CRLF}${CRLF}`, 400],
  ['a bare LF in an extension', `3;a\nb${CRLF}abc${CRLF}0${CRLF}${CRLF}`, 400],
  ['CRLF inside a quoted extension value', `3;a="b${CRLF}c"${CRLF}abc${CRLF}0${CRLF}${CRLF}`, 400],
  ['a quoted extension that hides a chunk', `3;a="${CRLF}0${CRLF}${CRLF}"${CRLF}abc${CRLF}0${CRLF}${CRLF}`, 400],
  ['an extension of 20,000 bytes', `3;${'a'.repeat(20_000)}${CRLF}abc${CRLF}0${CRLF}${CRLF}`, 413],
  ['a folded trailer', `3${CRLF}abc${CRLF}0${CRLF}X-T: 1${CRLF} 2${CRLF}${CRLF}`, 400],
  ['a trailer name with a space before the colon', `3${CRLF}abc${CRLF}0${CRLF}X-T : 1${CRLF}${CRLF}`, 400],
];
for (const [what, body, end] of badChunks) {
  add(`chunked/${what}`, (p) => ({ bytes: chunkedPost(p, body), forward: [], end, partial: true }));
}
add('chunked/a bad chunk size that hides a request', (p) => ({
  bytes: chunkedPost(p, `3${CRLF}abc${CRLF}-0${CRLF}${CRLF}${head(`GET ${p}/smuggled HTTP/1.1`, 'Host: h.example')}`), forward: [], end: 400, partial: true,
}));

// ---------------------------------------------------------------- request targets

// Absolute-form (RFC 9112 §3.2.2): a proxy MUST ignore the received Host and send the target's authority instead.
const absolute: [string, (p: string, host: string) => [string, Seen]][] = [
  ['another host', (p) => [`http://other.example${p}/x`, { ...get(`${p}/x`), host: 'other.example' }]],
  ['another host and a port', (p) => [`http://other.example:8080${p}/x`, { ...get(`${p}/x`), host: 'other.example:8080' }]],
  ['the default port, kept as written', (p) => [`http://other.example:80${p}/x`, { ...get(`${p}/x`), host: 'other.example:80' }]],
  ['the scheme and host in capitals', (p) => [`HTTP://OTHER.Example${p}/x`, { ...get(`${p}/x`), host: 'OTHER.Example' }]],
  ['https', (p) => [`https://other.example${p}/x`, { ...get(`${p}/x`), host: 'other.example' }]],
  ['a query', (p) => [`http://other.example${p}/x?a=1&b=%2F`, { ...get(`${p}/x?a=1&b=%2F`), host: 'other.example' }]],
  ['dot segments, kept as written', (p) => [`http://other.example${p}/a/../b/./c`, { ...get(`${p}/a/../b/./c`), host: 'other.example' }]],
  ['an IPv4 literal', (p) => [`http://127.0.0.9:81${p}/x`, { ...get(`${p}/x`), host: '127.0.0.9:81' }]],
  ['an IPv6 literal', (p) => [`http://[::1]:8080${p}/x`, { ...get(`${p}/x`), host: '[::1]:8080' }]],
  ['no path', (_p, host) => [`http://${host}`, { ...get('/'), host }]],
  ['a query and no path', (_p, host) => [`http://${host}?q=1`, { ...get('/?q=1'), host }]],
  ['the same host as Host', (p) => [`http://h.example${p}/x`, { ...get(`${p}/x`), host: 'h.example' }]],
];
for (const [what, make] of absolute) {
  add(`targets/absolute-form with ${what}: its authority is the Host`, (p, host) => {
    const [target, seen] = make(p, host);
    return { bytes: head(`GET ${target} HTTP/1.1`, 'Host: h.example'), forward: [seen], end: 'keep' };
  });
}
add('targets/absolute-form over HTTP/1.0 without Host', (p) => ({
  bytes: head(`GET http://other.example${p}/x HTTP/1.0`), forward: [{ ...get(`${p}/x`), host: 'other.example' }], end: 'close',
}));
add('targets/absolute-form POST with a body', (p) => ({
  bytes: head(`POST http://other.example${p}/x HTTP/1.1`, 'Host: h.example', 'Content-Length: 3') + 'abc',
  forward: [{ ...post(`${p}/x`, 'abc'), host: 'other.example' }], end: 'keep',
}));
for (const [what, target] of [['userinfo', 'http://user@other.example/x'], ['userinfo and a password', 'http://user:pw@other.example/x'],
  ['a scheme other than http(s)', 'ftp://other.example/x'], ['no host', 'http:///x'], ['only a port', 'http://:80/x'],
  ['a fragment', 'http://other.example/x#frag'], ['a host that is not one', 'http://oth%zzer/x'], ['no scheme', 'other.example/x'],
  ['a URN', 'urn:example:x'], ['mailto', 'mailto:a@b.example']] as const) {
  add(`targets/absolute-form with ${what} is refused`, () => ({ bytes: head(`GET ${target} HTTP/1.1`, 'Host: h.example'), forward: [], end: 400 }));
}
add('targets/absolute-form with two Host lines is refused', (p) => ({
  bytes: head(`GET http://other.example${p}/x HTTP/1.1`, 'Host: a.example', 'Host: b.example'), forward: [], end: 400,
}));
add('targets/absolute-form over HTTP/1.1 without Host is refused', (p) => ({
  bytes: head(`GET http://other.example${p}/x HTTP/1.1`), forward: [], end: 400,
}));
// Other target forms and characters.
add('targets/a fragment in origin-form is refused', (p) => ({ bytes: head(`GET ${p}/x#frag HTTP/1.1`, 'Host: h.example'), forward: [], end: 400 }));
add('targets/asterisk-form with GET is refused', () => ({ bytes: head('GET * HTTP/1.1', 'Host: h.example'), forward: [], end: 400 }));
add('targets/asterisk-form OPTIONS cannot be forwarded', () => ({ bytes: head('OPTIONS * HTTP/1.1', 'Host: h.example'), forward: [], end: 501 }));
add('targets/a path with an empty first segment', (p) => ({ bytes: head(`GET /${p}/x HTTP/1.1`, 'Host: h.example'), forward: [get(`/${p}/x`)], end: 'keep' }));
for (const [what, target] of [['a space', '/a b'], ['a tab', '/a\tb'], ['NUL', '/a\x00b'], ['no slash', 'x'], ['a DEL', '/a\x7fb']] as const) {
  add(`targets/${what} in the target is refused`, () => ({ bytes: head(`GET ${target} HTTP/1.1`, 'Host: h.example'), forward: [], end: 400 }));
}

// ---------------------------------------------------------------- the request line

for (const [what, line, end] of [
  ['HTTP/1.2', 'GET {p}/a HTTP/1.2', 400], ['HTTP/2.0', 'GET {p}/a HTTP/2.0', 505], ['HTTP/0.9', 'GET {p}/a HTTP/0.9', 505],
  ['an HTTP/0.9 simple request', 'GET {p}/a', 505], ['HTTP/3.0', 'GET {p}/a HTTP/3.0', 400], ['a lower-case version', 'GET {p}/a http/1.1', 400],
  ['a space after the version', 'GET {p}/a HTTP/1.1 ', 400], ['HTTP/1.10', 'GET {p}/a HTTP/1.10', 400], ['HTTP/01.1', 'GET {p}/a HTTP/01.1', 400],
  ['a lower-case method', 'get {p}/a HTTP/1.1', 400], ['a tab after the method', 'GET\t{p}/a HTTP/1.1', 400],
  ['an unknown method', 'FOO {p}/a HTTP/1.1', 400], ['a method with a space in it', 'G ET {p}/a HTTP/1.1', 400],
  ['no target', 'GET HTTP/1.1', 400], ['the HTTP/2 preface', 'PRI * HTTP/2.0', 400],
] as const) {
  add(`request-line/${what}`, (p) => ({
    bytes: head(line.replace('{p}', p), 'Host: h.example') + (what === 'the HTTP/2 preface' ? `SM${CRLF}${CRLF}` : ''), forward: [], end,
  }));
}
add('request-line/two spaces after the method are one delimiter', (p) => ({ bytes: head(`GET  ${p}/a HTTP/1.1`, 'Host: h.example'), forward: [get(`${p}/a`)], end: 'keep' }));
add('request-line/an empty line before the request line is ignored (RFC 9112 §2.2)', (p) => ({
  bytes: CRLF + head(`GET ${p}/a HTTP/1.1`, 'Host: h.example'), forward: [get(`${p}/a`)], end: 'keep',
}));
for (const method of ['DELETE', 'PUT', 'PATCH', 'OPTIONS']) {
  add(`request-line/${method} with a body`, (p) => ({
    bytes: head(`${method} ${p}/a HTTP/1.1`, 'Host: h.example', 'Content-Length: 3') + 'abc', forward: [{ method, target: `${p}/a`, body: 'abc' }], end: 'keep',
  }));
}

// ---------------------------------------------------------------- HTTP/1.0

add('http-1.0/GET without Host', (p) => ({ bytes: head(`GET ${p}/a HTTP/1.0`), forward: [{ method: 'GET', target: `${p}/a`, body: '' }], end: 'close' }));
add('http-1.0/GET with Host', (p) => ({ bytes: head(`GET ${p}/a HTTP/1.0`, 'Host: h.example'), forward: [get(`${p}/a`)], end: 'close' }));
add('http-1.0/Connection: close', (p) => ({ bytes: head(`GET ${p}/a HTTP/1.0`, 'Host: h.example', 'Connection: close'), forward: [get(`${p}/a`)], end: 'close' }));
add('http-1.0/two pipelined requests: only the first is read (the connection closes after it)', (p) => ({
  bytes: head(`GET ${p}/a HTTP/1.0`) + head(`GET ${p}/b HTTP/1.0`), forward: [{ method: 'GET', target: `${p}/a`, body: '' }], end: 'close',
}));
add('http-1.0/three pipelined requests', (p) => ({
  bytes: head(`GET ${p}/a HTTP/1.0`, 'Host: h.example') + head(`POST ${p}/b HTTP/1.0`, 'Content-Length: 1') + 'x' + head(`GET ${p}/c HTTP/1.0`),
  forward: [get(`${p}/a`)], end: 'close',
}));
add('http-1.0/a request followed by garbage', (p) => ({ bytes: head(`GET ${p}/a HTTP/1.0`, 'Host: h.example') + 'GARBAGE\r\n\r\n', forward: [get(`${p}/a`)], end: 'close' }));
add('http-1.0/keep-alive: both pipelined requests are answered', (p) => ({
  bytes: head(`GET ${p}/a HTTP/1.0`, 'Host: h.example', 'Connection: keep-alive') + head(`GET ${p}/b HTTP/1.0`, 'Host: h.example', 'Connection: keep-alive'),
  forward: [get(`${p}/a`), get(`${p}/b`)], end: 'keep',
}));
add('http-1.0/POST with Content-Length', (p) => ({
  bytes: head(`POST ${p}/a HTTP/1.0`, 'Host: h.example', 'Content-Length: 5') + 'hello', forward: [post(`${p}/a`, 'hello')], end: 'close',
}));
for (const method of ['POST', 'PUT', 'PATCH']) {
  add(`http-1.0/${method} without Content-Length, with a body, is refused (RFC 1945 §8.3)`, (p) => ({
    bytes: head(`${method} ${p}/a HTTP/1.0`, 'Host: h.example') + 'hello', forward: [], end: 400,
  }));
  add(`http-1.0/${method} without Content-Length or body is refused`, (p) => ({ bytes: head(`${method} ${p}/a HTTP/1.0`, 'Host: h.example'), forward: [], end: 400 }));
}
add('http-1.0/POST without Content-Length whose body is a request', (p) => ({
  bytes: head(`POST ${p}/a HTTP/1.0`, 'Host: h.example') + head(`GET ${p}/smuggled HTTP/1.0`), forward: [], end: 400,
}));
add('http-1.0/DELETE without Content-Length is fine (no content)', (p) => ({
  bytes: head(`DELETE ${p}/a HTTP/1.0`, 'Host: h.example'), forward: [{ method: 'DELETE', target: `${p}/a`, body: '' }], end: 'close',
}));

// ---------------------------------------------------------------- pipelines

add('pipeline/two requests', (p) => ({
  bytes: head(`GET ${p}/a HTTP/1.1`, 'Host: h.example') + head(`GET ${p}/b HTTP/1.1`, 'Host: h.example'), forward: [get(`${p}/a`), get(`${p}/b`)], end: 'keep',
}));
add('pipeline/three requests with bodies', (p) => ({
  bytes: head(`POST ${p}/a HTTP/1.1`, 'Host: h.example', 'Content-Length: 1') + 'x' + chunkedPost(`${p}/b`, chunked('yy'))
    + head(`POST ${p}/c HTTP/1.1`, 'Host: h.example', 'Content-Length: 3') + 'zzz',
  forward: [post(`${p}/a`, 'x'), post(`${p}/b/a`, 'yy'), post(`${p}/c`, 'zzz')], end: 'keep',
}));
add('pipeline/Connection: close, then a request: only the first is read', (p) => ({
  bytes: head(`GET ${p}/a HTTP/1.1`, 'Host: h.example', 'Connection: close') + head(`GET ${p}/b HTTP/1.1`, 'Host: h.example'),
  forward: [get(`${p}/a`)], end: 'close',
}));
add('pipeline/a request, then garbage', (p) => ({ bytes: head(`GET ${p}/a HTTP/1.1`, 'Host: h.example') + 'GARBAGE\r\n\r\n', forward: [get(`${p}/a`)], end: 400 }));
add('pipeline/a request, then one with two Host lines', (p) => ({
  bytes: head(`GET ${p}/a HTTP/1.1`, 'Host: h.example') + head(`GET ${p}/b HTTP/1.1`, 'Host: a.example', 'Host: b.example'), forward: [get(`${p}/a`)], end: 400,
}));
add('pipeline/a request, then one with a coding that is not implemented', (p) => ({
  bytes: head(`GET ${p}/a HTTP/1.1`, 'Host: h.example') + head(`POST ${p}/b HTTP/1.1`, 'Host: h.example', 'Transfer-Encoding: gzip, chunked') + chunked('abc'),
  forward: [get(`${p}/a`)], end: 501,
}));
add('pipeline/a request, then one with a bad chunk', (p) => ({
  bytes: head(`GET ${p}/a HTTP/1.1`, 'Host: h.example') + chunkedPost(`${p}/b`, `3${CRLF}abc${CRLF}zz${CRLF}${CRLF}`), forward: [get(`${p}/a`)], end: 400, partial: true,
}));
add('pipeline/a request, then one with obs-fold', (p) => ({
  bytes: head(`GET ${p}/a HTTP/1.1`, 'Host: h.example') + head(`GET ${p}/b HTTP/1.1`, 'Host: h.example', 'X: a', ' b'), forward: [get(`${p}/a`)], end: 400,
}));
add('pipeline/a refused request, then a valid one: nothing is forwarded', (p) => ({
  bytes: head(`GET ${p}/a HTTP/1.1`, 'Host: a.example', 'Host: b.example') + head(`GET ${p}/b HTTP/1.1`, 'Host: h.example'), forward: [], end: 400,
}));
add('pipeline/a 501, then a valid one: nothing is forwarded', (p) => ({
  bytes: head(`POST ${p}/a HTTP/1.1`, 'Host: h.example', 'Transfer-Encoding: gzip, chunked') + chunked('abc') + head(`GET ${p}/b HTTP/1.1`, 'Host: h.example'),
  forward: [], end: 501,
}));
add('pipeline/three requests, then a head with too many fields', (p) => ({
  bytes: head(`GET ${p}/a HTTP/1.1`, 'Host: h.example') + head(`GET ${p}/b HTTP/1.1`, 'Host: h.example') + head(`GET ${p}/c HTTP/1.1`, 'Host: h.example')
    + head(`GET ${p}/d HTTP/1.1`, 'Host: h.example', ...Array.from({ length: 150 }, (_, i) => `X-${i}: v`)),
  forward: [get(`${p}/a`), get(`${p}/b`), get(`${p}/c`)], end: 431,
}));
add('pipeline/Expect: 100-continue with the body sent at once', (p) => ({
  bytes: head(`POST ${p}/a HTTP/1.1`, 'Host: h.example', 'Expect: 100-continue', 'Content-Length: 3') + 'abc', forward: [post(`${p}/a`, 'abc')], end: 'keep',
}));

// ---------------------------------------------------------------- header counts and sizes

// Envoy's max_headers_count (100, the listener default): more gets 431. Node dropped the lines past 1,000 without a word.
for (const n of [99, 100]) {
  add(`header-count/${n} field lines are fine`, (p) => ({
    bytes: head(`GET ${p}/a HTTP/1.1`, 'Host: h.example', ...Array.from({ length: n - 1 }, (_, i) => `X-${i}: v`)), forward: [get(`${p}/a`)], end: 'keep',
  }));
}
for (const n of [101, 150, 1000, 1001, 2000, 3000]) {
  add(`header-count/${n} field lines get 431`, (p) => ({
    bytes: head(`GET ${p}/a HTTP/1.1`, 'Host: h.example', ...Array.from({ length: n - 1 }, () => 'X:1')), forward: [], end: 431,
  }));
}
add('header-count/101 lines of one repeated field get 431', (p) => ({
  bytes: head(`GET ${p}/a HTTP/1.1`, 'Host: h.example', ...Array.from({ length: 100 }, () => 'X-Same: v')), forward: [], end: 431,
}));
add('header-count/a head over maxHeaderSize gets 431', (p) => ({
  bytes: head(`GET ${p}/a HTTP/1.1`, 'Host: h.example', `X-Big: ${'v'.repeat(17 * 1024)}`), forward: [], end: 431,
}));
add('header-count/a 4,000-line head (over maxHeaderSize too) gets 431', (p) => ({
  bytes: head(`GET ${p}/a HTTP/1.1`, 'Host: h.example', ...Array.from({ length: 4000 }, () => 'X:1')), forward: [], end: 431,
}));

// ---------------------------------------------------------------- Connection options

// A Connection option names hop-by-hop fields (RFC 9110 §7.6.1); Host and the framing fields are never that.
for (const option of ['host', 'Host', 'keep-alive, host', 'host, content-length, transfer-encoding']) {
  add(`connection/Connection: ${option} keeps Host`, (p) => ({
    bytes: head(`POST ${p}/a HTTP/1.1`, 'Host: h.example', `Connection: ${option}`, 'Content-Length: 3') + 'abc',
    forward: [{ ...post(`${p}/a`, 'abc'), host: 'h.example' }], end: 'keep',
  }));
}
add('connection/Connection: content-length keeps the body', (p) => ({
  bytes: head(`POST ${p}/a HTTP/1.1`, 'Host: h.example', 'Connection: content-length', 'Content-Length: 3') + 'abc', forward: [post(`${p}/a`, 'abc')], end: 'keep',
}));
add('connection/Connection: transfer-encoding keeps the body', (p) => ({
  bytes: head(`POST ${p}/a HTTP/1.1`, 'Host: h.example', 'Connection: transfer-encoding', 'Transfer-Encoding: chunked') + chunked('abc'),
  forward: [post(`${p}/a`, 'abc')], end: 'keep',
}));
add('connection/two Connection lines naming host and content-length', (p) => ({
  bytes: head(`POST ${p}/a HTTP/1.1`, 'Host: h.example', 'Connection: host', 'Connection: content-length', 'Content-Length: 3') + 'abc',
  forward: [{ ...post(`${p}/a`, 'abc'), host: 'h.example' }], end: 'keep',
}));
add('connection/Connection: close, host', (p) => ({
  bytes: head(`GET ${p}/a HTTP/1.1`, 'Host: h.example', 'Connection: close, host'), forward: [get(`${p}/a`)], end: 'close',
}));

// ---------------------------------------------------------------- Host

for (const [a, b] of [['Host', 'Host'], ['Host', 'host'], ['host', 'HOST']] as const) {
  for (const same of [true, false]) {
    add(`host/two lines ${a} and ${b}${same ? ', the same value' : ''}`, (p) => ({
      bytes: head(`GET ${p}/a HTTP/1.1`, `${a}: a.example`, `${b}: ${same ? 'a' : 'b'}.example`), forward: [], end: 400,
    }));
  }
}
for (const value of ['a b.example', 'a/b', 'a@b', 'a.example:80:80', 'a.example:x']) {
  add(`host/invalid value ${JSON.stringify(value)}`, (p) => ({ bytes: head(`GET ${p}/a HTTP/1.1`, `Host: ${value}`), forward: [], end: 400 }));
}
add('host/HTTP/1.1 without Host', (p) => ({ bytes: head(`GET ${p}/a HTTP/1.1`, 'X: y'), forward: [], end: 400 }));
for (const value of ['h.example:8080', '127.0.0.1', '[::1]:80', 'H.Example']) {
  add(`host/valid value ${value}`, (p) => ({ bytes: head(`GET ${p}/a HTTP/1.1`, `Host: ${value}`), forward: [get(`${p}/a`, value)], end: 'keep' }));
}

/** The corpus, in order of ids. */
export const CORPUS: readonly Case[] = cases;

/** The case a request target or Host came from (`/c12/…`, `c12.example`), or -1. */
export function caseOf(target: string, host: string | undefined): number {
  const m = /^\/{0,2}c(\d+)(?:[/?]|$)/.exec(target) ?? /^c(\d+)\./.exec(host ?? '');
  return m ? Number(m[1]) : -1;
}

/** The request the test sends on a connection that a case left in step (its end is `keep`). */
export function sentinel(id: number): { bytes: string; seen: Seen } {
  return {
    bytes: head(`GET /c${id}/sentinel HTTP/1.1`, 'Host: sentinel.example', 'Connection: close'),
    seen: { method: 'GET', target: `/c${id}/sentinel`, body: '', host: 'sentinel.example' },
  };
}

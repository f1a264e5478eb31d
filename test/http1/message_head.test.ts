import test from 'ava';
import { ChunkedDecoder } from '../../src/http1/chunked.js';
import { MalformedMessage, parseContentLength, parseResponseHead } from '../../src/http1/message_head.js';

/*
 * The wire pieces alone (src/http1/): response heads and the chunked coding, read
 * strictly. Through the proxy: test/upstream/h1_answers.test.ts.
 */

test('a response head: status, reason, headers in their case and order with repeats, framing', (t) => {
  const h = parseResponseHead('HTTP/1.1 200 OK\r\nX-A: 1\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nContent-Length:  12 \r\nKeep-Alive: timeout=5, max=100\r\nConnection: keep-alive, X-Hop');
  t.is(h.status, 200);
  t.is(h.reason, 'OK');
  t.deepEqual(h.headers, ['X-A', '1', 'Set-Cookie', 'a=1', 'set-cookie', 'b=2', 'Content-Length', '12', 'Keep-Alive', 'timeout=5, max=100', 'Connection', 'keep-alive, X-Hop']);
  t.is(h.contentLength, 12);
  t.false(h.chunked);
  t.false(h.close);
  t.is(h.keepAliveMs, 5_000);
  t.deepEqual(h.connectionOptions, ['x-hop']);
});

test('a status line without a reason; HTTP/1.0 closes unless keep-alive is said', (t) => {
  t.is(parseResponseHead('HTTP/1.1 204').reason, '');
  t.true(parseResponseHead('HTTP/1.0 200 OK\r\nContent-Length: 0').close);
  t.false(parseResponseHead('HTTP/1.0 200 OK\r\nConnection: Keep-Alive').close);
  t.true(parseResponseHead('HTTP/1.1 200 OK\r\nConnection: close').close);
  t.true(parseResponseHead('HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked').chunked, 'codings are case-insensitive');
});

const BAD_HEADS: [string, string][] = [
  ['HTTP/2 200 OK', 'not HTTP/1.x'],
  ['HTTP/1.1 99 Low', 'a two-digit status'],
  ['HTTP/1.1 600 High', 'a status beyond 599'],
  ['HTTP/1.1 200OK', 'no space after the status'],
  ['HTTP/1.1 200 O\rK', 'a bare CR in the reason'],
  ['HTTP/1.1 200 OK\r\nX: a\nY: b', 'a bare LF between lines'],
  ['HTTP/1.1 200 OK\r\nX: a\r\n b', 'obs-fold'],
  ['HTTP/1.1 200 OK\r\nX : a', 'a space before the colon'],
  ['HTTP/1.1 200 OK\r\nNoColon', 'no colon'],
  ['HTTP/1.1 200 OK\r\nX: a\u0000b', 'NUL in a value'],
  ['HTTP/1.1 200 OK\r\nX: a\u0001b', 'a control in a value'],
  ['HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1', 'CL twice, even equal'],
  ['HTTP/1.1 200 OK\r\nContent-Length: 1, 1', 'a CL list'],
  ['HTTP/1.1 200 OK\r\nContent-Length: -1', 'a negative CL'],
  ['HTTP/1.1 200 OK\r\nContent-Length: 0x10', 'a hex CL'],
  ['HTTP/1.1 200 OK\r\nContent-Length: 1 2', 'a space inside CL'],
  ['HTTP/1.1 200 OK\r\nContent-Length: ', 'an empty CL'],
  ['HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999', 'CL beyond 2^53'],
  ['HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked', 'CL and TE'],
  ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked', 'TE twice'],
  ['HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked', 'a coding before chunked'],
  ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity', 'chunked not last'],
  ['HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked', 'xchunked'],
  ['HTTP/1.1 200 OK\r\nTransfer-Encoding: identity', 'identity'],
];

for (const [head, what] of BAD_HEADS) {
  test(`a response head with ${what} is refused`, (t) => {
    t.throws(() => parseResponseHead(head), { instanceOf: MalformedMessage });
  });
}

test('Content-Length: digits only, exact in a double', (t) => {
  t.is(parseContentLength('0'), 0);
  t.is(parseContentLength('9007199254740991'), Number.MAX_SAFE_INTEGER);
  for (const v of ['', '+1', '-1', '1.0', '1e3', ' 1', '9007199254740992', '12345678901234567']) t.is(parseContentLength(v), -1, v);
});

/** Decodes `wire` fed in pieces of `step` bytes; the data, the trailers, and where the message ended in the last piece. */
function decode(wire: string, step = wire.length): { data: string; trailers: string[]; rest: string } {
  const d = new ChunkedDecoder();
  let data = '';
  const buf = Buffer.from(wire, 'latin1');
  for (let i = 0; i < buf.length; i += step) {
    const piece = buf.subarray(i, Math.min(i + step, buf.length));
    const end = d.feed(piece, 0, (c) => { data += c.toString('latin1'); });
    if (end >= 0) return { data, trailers: d.trailers, rest: piece.subarray(end).toString('latin1') + buf.subarray(i + step).toString('latin1') };
  }
  throw new Error('the message did not end');
}

test('chunked: sizes in either case, extensions, trailers, and bytes after the message are left', (t) => {
  const wire = '3\r\nabc\r\na;name=val;q="x;\\"y"\r\n0123456789\r\nF \t;e\r\n0123456789abcde\r\n0\r\nX-Sum: 7\r\nX-B:  2 \r\n\r\nNEXT';
  for (const step of [1, 2, 7, wire.length]) {
    const r = decode(wire, step);
    t.is(r.data, 'abc01234567890123456789abcde', `step ${step}`);
    t.deepEqual(r.trailers, ['X-Sum', '7', 'X-B', '2']);
    t.is(r.rest, 'NEXT');
  }
});

const BAD_CHUNKS: [string, string][] = [
  ['-3\r\nabc\r\n0\r\n\r\n', 'a sign'],
  ['+3\r\nabc\r\n0\r\n\r\n', 'a plus sign'],
  ['0x3\r\nabc\r\n0\r\n\r\n', 'a 0x prefix'],
  [' 3\r\nabc\r\n0\r\n\r\n', 'a leading space'],
  ['\r\nabc\r\n0\r\n\r\n', 'no size'],
  ['10000000000000000\r\n', 'seventeen hex digits'],
  ['3\nabc\r\n0\r\n\r\n', 'a bare LF after the size'],
  ['3\rabc\r\n0\r\n\r\n', 'a bare CR after the size'],
  ['3\r\nabcd\r\n0\r\n\r\n', 'data longer than its size'],
  ['3\r\nabc\n0\r\n\r\n', 'a bare LF after the data'],
  ['3;\r\nabc\r\n0\r\n\r\n', 'an empty extension'],
  ['3;a=\r\nabc\r\n0\r\n\r\n', 'an extension without a value'],
  ['3;a="x\r\nabc\r\n0\r\n\r\n', 'an unclosed quoted extension'],
  ['3;a\u0000\r\nabc\r\n0\r\n\r\n', 'NUL in an extension'],
  ['3;a="\\\u0000"\r\nabc\r\n0\r\n\r\n', 'a NUL escaped in a quoted extension'],
  ['3;a="\\\n"\r\nabc\r\n0\r\n\r\n', 'a LF escaped in a quoted extension'],
  ['3;a\nb\r\nabc\r\n0\r\n\r\n', 'a bare LF in an extension'],
  ['3 \r\nabc\r\n0\r\n\r\n', 'a space after the size and no extension'],
  [`3;${'a'.repeat(17_000)}\r\nabc\r\n0\r\n\r\n`, 'extensions over 16 KiB'],
  ['0\r\nX: a\nY: b\r\n\r\n', 'a bare LF in the trailers'],
  ['0\r\n folded\r\n\r\n', 'obs-fold in the trailers'],
  ['0\r\nX: a\u0000\r\n\r\n', 'NUL in a trailer'],
  ['0\r\n\rX', 'a bare CR ending the trailers'],
];

for (const [wire, what] of BAD_CHUNKS) {
  test(`chunked with ${what} is refused`, (t) => {
    for (const step of [1, wire.length]) t.throws(() => decode(wire, step), { instanceOf: MalformedMessage }, `step ${step}`);
  });
}

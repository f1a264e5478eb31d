import test from 'ava';
import { classifyTransportError, RuntimeCodes, UPSTREAM_FAILURES, UpstreamTimeout } from '../../src/errors.js';

/* One failure vocabulary (src/errors.ts): one table, one classifier for HTTP, upgrades and TCP. */

test('every upstream failure kind has a documented code, a status, and a reason label exactly when a role is to blame', (t) => {
  for (const [kind, f] of Object.entries(UPSTREAM_FAILURES)) {
    t.true(Object.hasOwn(RuntimeCodes, f.code), `${kind}: ${f.code} is a runtime code`);
    t.true(f.status >= 500 && f.status < 600, `${kind}: answered with a 5xx`);
    t.is(f.reason === null, !f.upstream, `${kind}: counted in upstream_errors_total only when the upstream failed`);
  }
  t.like(UPSTREAM_FAILURES, {
    connect: { status: 502, reason: 'connect-failure' }, timeout: { status: 504, reason: 'timeout' },
    refused: { status: 500, upstream: false }, descriptors: { status: 503, upstream: false },
  });
});

const err = (code: string): Error => Object.assign(new Error(code), { code });

test('before the request reached a connected socket, any transport error is a connect failure (the next endpoint may take it)', (t) => {
  for (const code of ['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_SOCKET', 'EPIPE']) {
    t.is(classifyTransportError(err(code), { sent: false }), 'connect', code);
  }
  t.is(classifyTransportError(new UpstreamTimeout('connect', 'connect timeout'), { sent: false }), 'connect');
});

test('after it, a timeout, a malformed answer or a reset', (t) => {
  t.is(classifyTransportError(err('ECONNRESET'), { sent: true }), 'reset');
  t.is(classifyTransportError(err('UND_ERR_SOCKET'), { sent: true }), 'reset');
  t.is(classifyTransportError(err('ETIMEDOUT'), { sent: true }), 'reset', 'the kernel giving up on a dead peer: a reset, as before');
  t.is(classifyTransportError(new UpstreamTimeout('headers', 'late'), { sent: true }), 'timeout');
  t.is(classifyTransportError(new UpstreamTimeout('upgrade', 'late'), { sent: true }), 'timeout');
  t.is(classifyTransportError(err('HPE_INVALID_CONSTANT'), { sent: true }), 'protocol');
  t.is(classifyTransportError(Object.assign(new Error('bad'), { name: 'HTTPParserError' }), { sent: true }), 'protocol');
});

test('switchyard\'s own failures are never the upstream\'s, sent or not', (t) => {
  for (const sent of [false, true]) {
    t.is(classifyTransportError(err('UND_ERR_INVALID_ARG'), { sent }), 'refused');
    t.is(classifyTransportError(err('ERR_INVALID_CHAR'), { sent }), 'refused');
    t.is(classifyTransportError(new TypeError('a bug of ours'), { sent }), 'refused');
    t.is(classifyTransportError(err('EMFILE'), { sent }), 'descriptors');
    t.is(classifyTransportError(err('ENFILE'), { sent }), 'descriptors');
  }
});

// Issue 11, item 3: a client must never be able to eject a healthy endpoint or move
// traffic between roles, and a request switchyard cannot send is never the upstream's fault.
import test from 'ava';
import { connect } from 'node:net';
import { join } from 'node:path';
import { ROOT, channel, findMetric, get, listenerUrl, metric, startSidecar, twoRoles, untilMetric, weighted } from '../helpers.js';
import { controlled } from './support.js';
import type { Sidecar } from '../../src/sidecar.js';

const REFUSAL_PLUGIN = join(ROOT, 'test/fixtures/refusal-plugin.mjs');
const OUTLIER = { outlierDetection: { consecutiveErrors: 2, baseEjectionTime: '30s' } };

/** Sends raw bytes to a listener; resolves with the whole answer once the proxy closes the connection. */
function raw(sc: Sidecar, name: string, text: string): Promise<string> {
  const a = sc.addresses().get(name)!;
  return new Promise((resolve, reject) => {
    const s = connect(a.port, a.host, () => s.write(text));
    let got = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => { got += d; });
    s.on('end', () => { s.destroy(); resolve(got); });
    s.on('error', reject);
    s.setTimeout(10_000, () => { s.destroy(); reject(new Error(`no answer to ${JSON.stringify(text)}; got ${JSON.stringify(got)}`)); });
  });
}

/** What the sidecar holds against the upstreams: every failed try, retry and ejection (undefined: the counter has no series). */
async function blame(sc: Sidecar): Promise<{ errors?: number; retries?: number; healthyA: number; healthyB: number; role5xx?: number }> {
  return {
    errors: await findMetric(sc, 'switchyard_upstream_errors_total'),
    retries: await findMetric(sc, 'switchyard_retries_total'),
    healthyA: await metric(sc, 'switchyard_endpoints_healthy', { role: 'a' }),
    healthyB: await metric(sc, 'switchyard_endpoints_healthy', { role: 'b' }),
    role5xx: await findMetric(sc, 'switchyard_requests_total', { listener: 'web', vset: 'svc', role: /^[ab]$/, code: /^5\d\d$/ }),
  };
}

/** Never an upstream error, a retry or a 5xx under a role (no series at all), and both endpoints healthy. */
const CLEAN = { errors: undefined, retries: undefined, healthyA: 1, healthyB: 1, role5xx: undefined };

test('two Host headers get 400 and cannot eject a canary or move traffic between roles', async (t) => {
  const a = await controlled(t, 'a');
  const b = await controlled(t, 'b');
  const sc = await startSidecar(t, twoRoles(channel([a], OUTLIER), channel([b], OUTLIER), { retries: { attempts: 2 }, filters: [weighted({ a: 50, b: 50 })] }));
  for (let i = 0; i < 6; i++) {
    const answer = await raw(sc, 'web', 'GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n');
    t.regex(answer, /^HTTP\/1\.1 400 /, answer);
    t.regex(answer, /only one Host header/);
  }
  // Also one Host line with an invalid value, and an HTTP/1.1 request without one.
  t.regex(await raw(sc, 'web', 'GET / HTTP/1.1\r\nHost: a b\r\n\r\n'), /^HTTP\/1\.1 400 .*\r\n[^]*not a valid host/);
  t.regex(await raw(sc, 'web', 'GET / HTTP/1.1\r\nHost: x/y\r\n\r\n'), /^HTTP\/1\.1 400 /);
  t.regex(await raw(sc, 'web', 'GET / HTTP/1.1\r\n\r\n'), /^HTTP\/1\.1 400 .*\r\n[^]*needs a Host header/);
  t.is(a.hits + b.hits, 0, 'no refused request reached an upstream');
  await untilMetric(sc, 'switchyard_requests_total', { listener: 'web', vset: 'svc', role: '', code: '400' }, 9, 5000, 'the 400s counted');
  t.deepEqual(await blame(sc), CLEAN, 'nothing held against the upstreams');

  for (let i = 0; i < 60; i++) t.is((await get(listenerUrl(sc, 'web'))).status, 200);
  t.true(a.hits > 10 && b.hits > 10, `the split is untouched (a ${a.hits}, b ${b.hits} of 60)`);
});

test('an HTTP/1.0 request without Host is still forwarded', async (t) => {
  const a = await controlled(t, 'a');
  const b = await controlled(t, 'b');
  const sc = await startSidecar(t, twoRoles(channel([a]), channel([b]), { filters: [weighted({ a: 1 })] }));
  const answer = await raw(sc, 'web', 'GET / HTTP/1.0\r\n\r\n');
  t.regex(answer, /^HTTP\/1\.1 200 /);
  t.true(answer.endsWith('a'));
});

test('a header switchyard refuses to send (config-caused, not latin1) answers 500 and is not blamed on the upstream', async (t) => {
  const a = await controlled(t, 'a');
  const b = await controlled(t, 'b');
  const sc = await startSidecar(t, { plugins: [REFUSAL_PLUGIN], ...twoRoles(channel([a], OUTLIER), channel([b], OUTLIER), { retries: { attempts: 2 }, filters: [weighted({ a: 50, b: 50 }), { type: 'bad_header' }] }) });
  for (let i = 0; i < 6; i++) {
    const r = await get(listenerUrl(sc, 'web'));
    t.is(r.status, 500, r.body);
    t.regex(r.body, /could not be forwarded as switchyard made it: header x-bad has a value with a character HTTP does not allow/);
  }
  t.is(a.hits + b.hits, 0);
  await untilMetric(sc, 'switchyard_requests_total', { listener: 'web', vset: 'svc', role: '', code: '500' }, 6, 5000, 'the 500s counted as switchyard\'s own');
  t.deepEqual(await blame(sc), CLEAN);
});

test('a response header Node refuses to send answers 500, and the upstream that answered is not blamed', async (t) => {
  const a = await controlled(t, 'a');
  const b = await controlled(t, 'b');
  const sc = await startSidecar(t, { plugins: [REFUSAL_PLUGIN], ...twoRoles(channel([a], OUTLIER), channel([b], OUTLIER), { filters: [weighted({ a: 1 }), { type: 'bad_header', side: 'response' }] }) });
  for (let i = 0; i < 4; i++) {
    const r = await get(listenerUrl(sc, 'web'));
    t.is(r.status, 500, r.body);
    t.is(r.headers['x-bad'], undefined);
  }
  t.is(a.hits, 4, 'the upstream answered each');
  await untilMetric(sc, 'switchyard_requests_total', { listener: 'web', vset: 'svc', role: '', code: '500' }, 4, 5000, '500s counted');
  t.deepEqual(await blame(sc), CLEAN);
});

test('a WebSocket upgrade Node refuses to pass on (config-caused) answers 500 and is not blamed on the upstream', async (t) => {
  const a = await controlled(t, 'a');
  const b = await controlled(t, 'b');
  const sc = await startSidecar(t, { plugins: [REFUSAL_PLUGIN], ...twoRoles(channel([a], OUTLIER), channel([b], OUTLIER), { filters: [weighted({ a: 1 }), { type: 'bad_header' }] }) });
  const upgrade = 'GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n';
  for (let i = 0; i < 3; i++) t.regex(await raw(sc, 'web', upgrade), /^HTTP\/1\.1 500 [^]*could not be forwarded/);
  // Two Host lines on an upgrade: 400 too.
  t.regex(await raw(sc, 'web', upgrade.replace('Host: x\r\n', 'Host: x\r\nHost: y\r\n')), /^HTTP\/1\.1 400 /);
  await untilMetric(sc, 'switchyard_requests_total', { listener: 'web', vset: 'svc', role: '', code: '500' }, 3, 5000, '500s counted');
  t.is(await metric(sc, 'switchyard_requests_total', { listener: 'web', vset: 'svc', role: '', code: '400' }), 1);
  t.deepEqual(await blame(sc), CLEAN);
});

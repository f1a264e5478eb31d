import test from 'ava';
import {
  adminUrl, channel, findMetric, get, listenerUrl, metric, putConfig, startSidecar, twoRoles, uniqueHost, until, untilMetric, weighted, yaml,
  type HealthCheckSpec,
} from '../helpers.js';
import { controlled } from './support.js';

// 300 ms and two failures in a row: on a loaded machine a healthy endpoint's 100 ms check
// timed out now and then, and with one failure enough it went out (with traffic) mid-test.
const FAST_CHECK = { healthCheck: { path: '/healthz', interval: '300ms', timeout: '300ms', healthyThreshold: 1, unhealthyThreshold: 2 } };
const ONLY_A = { filters: [weighted({ a: 1 })] };

test('an endpoint failing its HTTP health check gets no new traffic, and gets it back once it passes', async (t) => {
  const a1 = await controlled(t, 'a1');
  const a2 = await controlled(t, 'a2');
  const b = await controlled(t, 'b');
  a2.health = 500;
  const sc = await startSidecar(t, twoRoles(channel([a1, a2], FAST_CHECK), channel([b]), ONLY_A));
  const url = listenerUrl(sc, 'web');
  await untilMetric(sc, 'switchyard_endpoints_healthy', { role: 'a', channel: 'http' }, 1, 5000, 'a2 unhealthy');
  t.is(await metric(sc, 'switchyard_endpoints', { role: 'a', channel: 'http' }), 2);
  a2.hits = 0;
  for (let i = 0; i < 20; i++) t.is((await get(url)).body, 'a1');
  t.is(a2.hits, 0, 'no request reached the unhealthy endpoint');

  a2.health = 200;
  await untilMetric(sc, 'switchyard_endpoints_healthy', { role: 'a', channel: 'http' }, 2, 5000, 'a2 healthy again');
  for (let i = 0; i < 20; i++) await get(url);
  t.true(a2.hits >= 9, `round robin includes a2 again (${a2.hits} of 20)`);
});

test('a TCP connect check marks an endpoint that refuses connections unhealthy', async (t) => {
  const a1 = await controlled(t, 'a1');
  const dead = await controlled(t, 'dead');
  await dead.kill();
  const b = await controlled(t, 'b');
  const sc = await startSidecar(t, twoRoles(
    channel([a1, dead], { healthCheck: { interval: '100ms', timeout: '100ms', unhealthyThreshold: 1 } }), channel([b]), ONLY_A));
  await untilMetric(sc, 'switchyard_endpoints_healthy', { role: 'a' }, 1, 5000, 'dead endpoint unhealthy');
  const before = await findMetric(sc, 'switchyard_upstream_errors_total', { reason: 'connect-failure' });
  for (let i = 0; i < 10; i++) t.is((await get(listenerUrl(sc, 'web'))).status, 200);
  t.is(await findMetric(sc, 'switchyard_upstream_errors_total', { reason: 'connect-failure' }), before, 'no request tried the dead endpoint');
});

test('weighted spreads the share of a role with no healthy endpoint over the others, and gives it back on recovery', async (t) => {
  const a = await controlled(t, 'a');
  const b = await controlled(t, 'b');
  const sc = await startSidecar(t, twoRoles(channel([a], FAST_CHECK), channel([b], FAST_CHECK), { filters: [weighted({ a: 50, b: 50 })] }));
  const url = listenerUrl(sc, 'web');
  b.health = 503;
  await untilMetric(sc, 'switchyard_endpoints_healthy', { role: 'b' }, 0, 5000, 'b unhealthy');
  b.hits = 0;
  for (let i = 0; i < 100; i++) t.is((await get(url)).status, 200);
  t.is(b.hits, 0, 'b got none of its share while unhealthy');
  b.health = 200;
  await untilMetric(sc, 'switchyard_endpoints_healthy', { role: 'b' }, 1, 5000, 'b healthy');
  for (let i = 0; i < 100; i++) await get(url);
  t.true(b.hits > 25 && b.hits < 75, `b has its share back (${b.hits} of 100)`);
});

test('health state survives a reload for endpoints that stay', async (t) => {
  const a = await controlled(t, 'a');
  const b = await controlled(t, 'b');
  // A long interval and two failures to go unhealthy: a fresh health state would need a
  // second before it kept b out, so the requests right after the reload show what was carried over.
  const slow = { healthCheck: { path: '/healthz', interval: '1s', timeout: '500ms', healthyThreshold: 1, unhealthyThreshold: 2 } };
  const cfg = (wb: number) => twoRoles(channel([a], slow), channel([b], slow), { filters: [weighted({ a: 50, b: wb })] });
  b.health = 500;
  const sc = await startSidecar(t, cfg(50));
  await untilMetric(sc, 'switchyard_endpoints_healthy', { role: 'b' }, 0, 5000, 'b unhealthy');
  const r = await get(`${adminUrl(sc)}/config`, { 'content-type': 'application/yaml' }, { method: 'PUT', body: yaml(cfg(60)) });
  t.is(r.status, 200, r.body);
  b.hits = 0;
  for (let i = 0; i < 50; i++) t.is((await get(listenerUrl(sc, 'web'))).body, 'a');
  t.is(b.hits, 0, 'the new generation knew b was unhealthy');
  t.is(await metric(sc, 'switchyard_endpoints_healthy', { role: 'b' }), 0);
});

test('outlier detection ejects an endpoint that answers 500s, readmits it after the ejection time, and ejects longer the next time', async (t) => {
  const good = await controlled(t, 'good');
  const bad = await controlled(t, 'bad');
  const b = await controlled(t, 'b');
  bad.mode = '500';
  const log: string[] = [];
  const sc = await startSidecar(t, twoRoles(
    channel([good, bad], { outlierDetection: { consecutiveErrors: 3, baseEjectionTime: '1500ms', maxEjectionTime: '10s' } }), channel([b]), ONLY_A), { log });
  const url = listenerUrl(sc, 'web');
  // Round robin: every other request reaches `bad` until its third 500 ejects it.
  let fivexx = 0;
  for (let i = 0; i < 6; i++) if ((await get(url)).status === 500) fivexx++;
  t.is(fivexx, 3);
  t.is(await metric(sc, 'switchyard_upstream_errors_total', { role: 'a', reason: 'ejected' }), 1);
  t.is(await metric(sc, 'switchyard_endpoints_healthy', { role: 'a' }), 1);
  // 1.5 s of ejection: long enough for these ten requests on a loaded CI machine.
  bad.hits = 0;
  for (let i = 0; i < 10; i++) t.is((await get(url)).status, 200);
  t.is(bad.hits, 0, 'the ejected endpoint got no traffic');

  await until(() => log.some((l) => l.includes(`${bad.address} readmitted`)), 5000, 'readmission');
  t.is(await metric(sc, 'switchyard_endpoints_healthy', { role: 'a' }), 2);
  for (let i = 0; i < 6; i++) await get(url);
  t.true(bad.hits >= 3, 'the readmitted endpoint gets traffic again');
  await untilMetric(sc, 'switchyard_upstream_errors_total', { role: 'a', reason: 'ejected' }, 2, 5000, 'second ejection');
  t.true(log.some((l) => l.includes(`${bad.address} ejected for 3000 ms`) && l.includes('ejection 2')), log.join('\n'));
});

test('an ejection survives a reload for an endpoint that stays', async (t) => {
  const good = await controlled(t, 'good');
  const bad = await controlled(t, 'bad');
  const b = await controlled(t, 'b');
  bad.mode = '500';
  const cfg = (wb: number) => twoRoles(
    channel([good, bad], { outlierDetection: { consecutiveErrors: 2, baseEjectionTime: '30s' } }), channel([b]), { filters: [weighted({ a: 1, b: wb })] });
  const sc = await startSidecar(t, cfg(0));
  const url = listenerUrl(sc, 'web');
  for (let i = 0; i < 4; i++) await get(url);
  t.is(await metric(sc, 'switchyard_upstream_errors_total', { role: 'a', reason: 'ejected' }), 1);
  t.is((await putConfig(sc, cfg(1))).status, 200);
  bad.hits = 0;
  for (let i = 0; i < 20; i++) await get(listenerUrl(sc, 'web'));
  t.is(bad.hits, 0, 'the new generation kept the ejected endpoint out');
  t.is(await metric(sc, 'switchyard_endpoints_healthy', { role: 'a' }), 1);
});

test('outlier detection never ejects more than maxEjectedPercent of a channel (at least one)', async (t) => {
  const e1 = await controlled(t, 'e1');
  const e2 = await controlled(t, 'e2');
  const b = await controlled(t, 'b');
  e1.mode = e2.mode = '500';
  const sc = await startSidecar(t, twoRoles(
    channel([e1, e2], { outlierDetection: { consecutiveErrors: 1, baseEjectionTime: '30s', maxEjectedPercent: 50 } }), channel([b]), ONLY_A));
  for (let i = 0; i < 10; i++) t.is((await get(listenerUrl(sc, 'web'))).status, 500);
  t.is(await metric(sc, 'switchyard_upstream_errors_total', { reason: 'ejected' }), 1);
  t.is(await metric(sc, 'switchyard_endpoints_healthy', { role: 'a' }), 1);
});

// Serial: it blocks this process's event loop for 1.5 s.
test.serial('a check answered in time is not failed by its timeout when the event loop was blocked (timers run before sockets are read)', async (t) => {
  const a1 = await controlled(t, 'a1');
  const b = await controlled(t, 'b');
  let blocked = 0;
  // After its 3rd answer, the check's upstream (in this process, as the sidecar is) holds
  // the loop for 3 timeouts: the answer waits in the socket while the check's timer expires.
  a1.up.server.prependListener('request', (req) => {
    if (req.url !== '/healthz' || a1.checks !== 2 || blocked) return;
    // After the handler below has written the answer.
    process.nextTick(() => {
      const end = Date.now() + 1_500;
      while (Date.now() < end) { /* a loaded machine */ }
      blocked = Date.now();
    });
  });
  const log: string[] = [];
  // A timeout a loaded machine does not miss by itself (100 ms once did), blocked for 3 of them.
  const check = { healthCheck: { path: '/healthz', interval: '500ms', timeout: '500ms', healthyThreshold: 1, unhealthyThreshold: 1 } };
  const sc = await startSidecar(t, twoRoles(channel([a1], check), channel([b]), ONLY_A), { log });
  await until(() => blocked > 0 && a1.checks >= 4, 8000, 'the blocking check and one more');
  t.deepEqual(log.filter((l) => /unhealthy/.test(l)), []);
  t.is(await metric(sc, 'switchyard_endpoints_healthy', { role: 'a' }), 1);
});

test.serial('a reload that shortens healthCheck.interval takes over at once (README: "a changed healthCheck takes over at once")', async (t) => {
  const a = await controlled(t, 'a');
  const b = await controlled(t, 'b');
  const host = uniqueHost();
  const check = (interval: string): HealthCheckSpec => ({ path: '/healthz', interval, timeout: '100ms', unhealthyThreshold: 1 });
  const config = (interval: string) => twoRoles(channel([a]), channel([b], { healthCheck: check(interval) }), { ...ONLY_A, address: `${host}:0` });
  const sc = await startSidecar(t, config('60s'));
  await until(() => b.checks >= 1, 5000, 'the first check (at once)');
  const put = await putConfig(sc, config('100ms'));
  t.is(put.status, 200, put.body);
  b.health = 503;
  const start = Date.now();
  await t.notThrowsAsync(untilMetric(sc, 'switchyard_endpoints_healthy', { role: 'b' }, 0, 3000, 'b unhealthy'),
    'with a 100ms interval, b is found unhealthy within 3 s (the old 60 s timer still runs)');
  t.log(`waited ${Date.now() - start} ms`);
});

/**
 * backend: redis, on real redis-server processes: one limit shared by several
 * sidecars, and what a request gets when Redis is down, slow, or back.
 */
import test from 'ava';
import { request } from 'undici';
import { adminUrl, configOf, get, listenerUrl, metric, oneRole, role, startSidecar, startUpstream, untilMetric, type ConfigSpec } from '../helpers.js';
import { RedisServer } from '../redis_support.js';
import { tcpRoundTrip } from './ratelimit_support.js';

/**
 * Listener `web` on `up`, limited by component `limit` of this metadata. With
 * backend redis, `timeout` is 5s unless it says: a loaded test machine must not
 * turn a slow answer into failed-open where the test is not about that.
 */
const limited = (up: { address: string }, metadata: Record<string, string>): ConfigSpec => ({
  components: { limit: { type: 'ratelimit', metadata: metadata.backend === 'redis' ? { timeout: '5s', ...metadata } : metadata } },
  ...oneRole(up, { filters: [{ type: 'ratelimit', component: 'limit' }] }),
});

const decisions = (sc: Parameters<typeof metric>[0], result: string) =>
  metric(sc, 'switchyard_ratelimit_decisions_total', { component: 'limit', result });

test('two sidecars with the same keyPrefix share one burst: what one spends, the other cannot', async (t) => {
  const redis = await RedisServer.start(t);
  const up = await startUpstream(t, 'a');
  // 0.05 rps: no token comes back during the test, so exactly `burst` pass, whoever asks.
  const meta = { backend: 'redis', redisUrl: redis.url, keyPrefix: 'partner-api', requestsPerSecond: '0.05', burst: '5' };
  const [one, two] = [await startSidecar(t, limited(up, meta)), await startSidecar(t, limited(up, meta))];
  const codes: number[] = [];
  for (let i = 0; i < 6; i++) {
    for (const sc of [one, two]) codes.push((await get(listenerUrl(sc, 'web'))).status);
  }
  t.is(codes.filter((c) => c === 200).length, 5, codes.join(' '));
  t.is(up.requests.length, 5, 'limited requests never reach the role');
  const last = await get(listenerUrl(two, 'web'));
  t.is(last.status, 429);
  t.true(Number(last.headers['retry-after']) >= 1, `retry-after ${String(last.headers['retry-after'])}`);
  t.truthy(await redis.command('GET', 'partner-api'), 'the limit lives in Redis under the keyPrefix');
  const allowed = (await decisions(one, 'allowed')) + (await decisions(two, 'allowed'));
  const limitedCount = (await decisions(one, 'limited')) + (await decisions(two, 'limited'));
  t.is(allowed, 5);
  t.is(limitedCount, 8);
  t.is(await metric(one, 'switchyard_ratelimit_backend_up', { component: 'limit' }), 1);
  t.is(await decisions(one, 'failed-open'), 0);
});

test('keyPrefix defaults to the component name; key header:x-user keeps one shared limit per user', async (t) => {
  const redis = await RedisServer.start(t);
  const up = await startUpstream(t, 'a');
  const meta = { backend: 'redis', redisUrl: redis.url, requestsPerSecond: '0.05', burst: '1', key: 'header:x-user' };
  const [one, two] = [await startSidecar(t, limited(up, meta)), await startSidecar(t, limited(up, meta))];
  t.is((await get(listenerUrl(one, 'web'), { 'x-user': 'alice' })).status, 200);
  t.is((await get(listenerUrl(two, 'web'), { 'x-user': 'alice' })).status, 429, "alice's one token was spent on the other sidecar");
  t.is((await get(listenerUrl(two, 'web'), { 'x-user': 'bob' })).status, 200);
  t.truthy(await redis.command('GET', 'limit:header:alice'));
});

test('a tcp listener with a shared limit refuses connections over it, on every sidecar', async (t) => {
  const redis = await RedisServer.start(t);
  const up = await startUpstream(t, 'a');
  const config = configOf({
    roles: { a: role(up) },
    components: { limit: { type: 'ratelimit', metadata: { backend: 'redis', redisUrl: redis.url, requestsPerSecond: '0.05', burst: '2', timeout: '5s' } } },
    listeners: { raw: { protocol: 'tcp', target: 'a', filters: [{ type: 'ratelimit', component: 'limit' }] } },
  });
  const [one, two] = [await startSidecar(t, config), await startSidecar(t, config)];
  const roundTrip = (sc: typeof one) => tcpRoundTrip(sc, 'raw');
  t.regex(await roundTrip(one), /^HTTP\/1.1 200/);
  t.regex(await roundTrip(two), /^HTTP\/1.1 200/);
  t.is(await roundTrip(one), '', 'the fleet spent its burst of 2: refused without a byte');
  t.is(await roundTrip(two), '');
});

test('the local backend counts its decisions too (allowed, limited), and has no backend_up series', async (t) => {
  const up = await startUpstream(t, 'a');
  const sc = await startSidecar(t, limited(up, { requestsPerSecond: '0.05', burst: '2' }));
  for (let i = 0; i < 3; i++) await get(listenerUrl(sc, 'web'));
  t.is(await decisions(sc, 'allowed'), 2);
  t.is(await decisions(sc, 'limited'), 1);
  const text = await (await request(`${adminUrl(sc)}/metrics`)).body.text();
  t.false(/switchyard_ratelimit_backend_up\{/.test(text));
  t.false(/result="failed-open"/.test(text));
});

test('Redis down: failureMode open admits (failed-open), backend_up 0; Redis back on its port: used again without a reload', async (t) => {
  const redis = await RedisServer.start(t);
  const up = await startUpstream(t, 'a');
  const sc = await startSidecar(t, limited(up, { backend: 'redis', redisUrl: redis.url, requestsPerSecond: '0.05', burst: '2' }));
  const url = listenerUrl(sc, 'web');
  t.is((await get(url)).status, 200);
  await redis.stop();
  await untilMetric(sc, 'switchyard_ratelimit_backend_up', { component: 'limit' }, 0);
  for (let i = 0; i < 5; i++) {
    const started = performance.now();
    t.is((await get(url)).status, 200, 'open: admitted while Redis is down');
    // Far less than the 5 s timeout, even on a starved machine: no waiting for a Redis known to be down.
    t.true(performance.now() - started < 2_500, 'no request waited for a Redis that is down');
  }
  t.true((await decisions(sc, 'failed-open')) >= 5);
  const generation = sc.runtime.current!.number;

  await redis.restart();
  await untilMetric(sc, 'switchyard_ratelimit_backend_up', { component: 'limit' }, 1, 10_000);
  // The restarted Redis is empty: a fresh burst of 2, then limited.
  const codes: number[] = [];
  for (let i = 0; i < 4; i++) codes.push((await get(url)).status);
  t.deepEqual(codes, [200, 200, 429, 429]);
  t.truthy(await redis.command('GET', 'limit'), 'the limit is kept in the Redis that came back');
  t.is(sc.runtime.current!.number, generation, 'no reload');
});

test('Redis down with failureMode closed: 429 at once, counted failed-closed', async (t) => {
  const redis = await RedisServer.start(t);
  const up = await startUpstream(t, 'a');
  const sc = await startSidecar(t, limited(up, { backend: 'redis', redisUrl: redis.url, requestsPerSecond: '100', failureMode: 'closed' }));
  const url = listenerUrl(sc, 'web');
  t.is((await get(url)).status, 200);
  await redis.stop();
  await untilMetric(sc, 'switchyard_ratelimit_backend_up', { component: 'limit' }, 0);
  const r = await get(url);
  t.is(r.status, 429);
  t.is(r.headers['retry-after'], '1');
  t.true((await decisions(sc, 'failed-closed')) >= 1);
});

test('Redis slower than timeout (paused): requests wait at most timeout, then failureMode; it answers again after', async (t) => {
  const redis = await RedisServer.start(t);
  const up = await startUpstream(t, 'a');
  const sc = await startSidecar(t, limited(up, { backend: 'redis', redisUrl: redis.url, requestsPerSecond: '0.05', burst: '1', timeout: '1s' }));
  const url = listenerUrl(sc, 'web');
  t.is((await get(url)).status, 200);
  t.is((await get(url)).status, 429, 'the one token is spent');
  // Limited until Redis's "retry at" passes: a new key's lease is empty and has no denial yet.
  const rekeyed = await request(`${adminUrl(sc)}/components/limit`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ metadata: { backend: 'redis', redisUrl: redis.url, requestsPerSecond: '0.05', burst: '1', timeout: '1s', key: 'header:x-user' } }) });
  t.is(rekeyed.statusCode, 200, await rekeyed.body.text());
  redis.pause();
  t.teardown(() => redis.resume());
  const times: number[] = [];
  for (let i = 0; i < 4; i++) {
    const started = performance.now();
    t.is((await get(url, { 'x-user': `u${i}` })).status, 200, 'open: admitted');
    times.push(performance.now() - started);
  }
  // The first waits the 1 s timeout, the next ones not at all (Redis is known to be slow);
  // without the timeout they would wait for the call to be abandoned (10 s).
  t.true(Math.max(...times) < 3_000, `each request waited about the timeout at most: ${times.map((x) => x.toFixed(0)).join(' ')} ms`);
  t.true((await decisions(sc, 'failed-open')) >= 4);
  t.is(await metric(sc, 'switchyard_ratelimit_backend_up', { component: 'limit' }), 0, 'a call older than timeout: down');
  redis.resume();
  await untilMetric(sc, 'switchyard_ratelimit_backend_up', { component: 'limit' }, 1, 10_000);
  t.is((await get(url, { 'x-user': 'fresh' })).status, 200);
  t.is((await get(url, { 'x-user': 'fresh' })).status, 429, 'limited by Redis again');
});

test('an unreachable Redis fails the start, naming the URL', async (t) => {
  const up = await startUpstream(t, 'a');
  const redis = await RedisServer.start(t);
  await redis.stop();
  const err = await t.throwsAsync(startSidecar(t, limited(up, { backend: 'redis', redisUrl: redis.url, requestsPerSecond: '1' })));
  t.regex(err!.message, new RegExp(`component limit: init: redis ${redis.url.replace(/[./]/g, '\\$&')}: .*ECONNREFUSED`));
});

test('redis metadata is checked: redisUrl required and well formed, durations, failureMode; redis keys need backend redis', async (t) => {
  const up = await startUpstream(t, 'a');
  const sc = await startSidecar(t, limited(up, { requestsPerSecond: '1' }));
  const post = async (metadata: Record<string, string>) => {
    const res = await request(`${adminUrl(sc)}/components/limit`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ metadata }) });
    t.is(res.statusCode, 400);
    return ((await res.body.json()) as { errors: { path: string; message: string }[] }).errors;
  };
  const e1 = await post({ backend: 'redis', requestsPerSecond: '1', timeout: 'soon', failureMode: 'maybe' });
  t.deepEqual(e1.map((e) => e.path).sort(), ['components.limit.metadata.failureMode', 'components.limit.metadata.redisUrl', 'components.limit.metadata.timeout']);
  const e2 = await post({ backend: 'redis', requestsPerSecond: '1', redisUrl: 'http://127.0.0.1:6379' });
  t.regex(e2[0]!.message, /redis:\/\//);
  const e3 = await post({ requestsPerSecond: '1', redisUrl: 'redis://127.0.0.1:6379' });
  t.is(e3[0]!.path, 'components.limit.metadata.redisUrl');
  t.regex(e3[0]!.message, /backend: redis/);
  const e4 = await post({ backend: 'memcached', requestsPerSecond: '1' });
  t.is(e4[0]!.path, 'components.limit.metadata.backend');
});

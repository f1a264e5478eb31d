/**
 * Four sidecars share one limit on a real Redis, each offered as much as the
 * whole limit: together they admit the limit, not four times it. The long
 * measurement (10 s, ±5 %, and Redis calls per request at 1,000 rps) is
 * `npm run bench:ratelimit`; this one is short enough for the suite.
 */
import test from 'ava';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { get, listenerUrl, metric, oneRole, startSidecar, startUpstream } from '../helpers.js';
import { RedisServer } from '../redis_support.js';

test('4 sidecars offered 4× a shared limit admit about the limit (burst + rate × time), and each decides most requests without Redis', async (t) => {
  const redis = await RedisServer.start(t);
  const up = await startUpstream(t, 'a');
  const rate = 100;
  const burst = 10;
  const config = {
    components: { limit: { type: 'ratelimit', metadata: { backend: 'redis', redisUrl: redis.url, requestsPerSecond: String(rate), burst: String(burst), timeout: '2s' } } },
    ...oneRole(up, { filters: [{ type: 'ratelimit', component: 'limit' }] }),
  };
  const sidecars = await Promise.all([0, 1, 2, 3].map(() => startSidecar(t, config)));
  await redis.command('CONFIG', 'RESETSTAT');

  // Open loop: each sidecar gets `rate` requests a second, on a timer, whatever the answers.
  const durationMs = 2_000;
  const pending: Promise<number>[] = [];
  // The sidecars run in this process: a late event loop spends leases late, and
  // a lease not spent within its life is dropped (admitting less, never more).
  const lag = monitorEventLoopDelay({ resolution: 5 });
  lag.enable();
  const started = performance.now();
  let offeredS = 0;
  await new Promise<void>((done) => {
    let sent = 0;
    const timer = setInterval(() => {
      const due = Math.min(Math.floor(((performance.now() - started) / 1000) * rate), (durationMs / 1000) * rate);
      for (; sent < due; sent++) for (const sc of sidecars) pending.push(get(listenerUrl(sc, 'web')).then((r) => r.status));
      if (sent >= (durationMs / 1000) * rate) {
        offeredS = (performance.now() - started) / 1000;
        clearInterval(timer);
        done();
      }
    }, 5);
  });
  const codes = await Promise.all(pending);
  lag.disable();
  const lagP99Ms = lag.percentile(99) / 1e6;
  const elapsedS = (performance.now() - started) / 1000;
  const admitted = codes.filter((c) => c === 200).length;
  const expected = burst + rate * elapsedS;
  const offeredExpected = burst + rate * offeredS;
  t.is(codes.filter((c) => c !== 200 && c !== 429).length, 0, 'only 200 and 429');
  t.is(up.requests.length, admitted);
  // Never more than the limit (+15 % here, on a shared test machine; the benchmark
  // holds ±5 % over 10 s): 4 unshared limits would admit 4×. At least 70 % of
  // what the limit allows while the load was offered, when this process kept up
  // (event-loop lag p99 within half a lease window); unchecked when it did not.
  const keptUp = offeredS <= (durationMs / 1000) * 1.25 && lagP99Ms <= 25;
  const what = `admitted ${admitted} of ${codes.length} in ${elapsedS.toFixed(2)} s (offered over ${offeredS.toFixed(2)} s, event-loop lag p99 ${lagP99Ms.toFixed(1)} ms); expected about ${offeredExpected.toFixed(0)}`;
  t.true(admitted <= expected * 1.15, what);
  if (keptUp) t.true(admitted >= offeredExpected * 0.7, what);
  else t.log(`the machine was too busy for the sidecars to spend their leases in time: lower bound not checked; ${what}`);

  let failed = 0;
  for (const sc of sidecars) {
    failed += await metric(sc, 'switchyard_ratelimit_decisions_total', { component: 'limit', result: /^failed-/ });
  }
  if (keptUp) t.is(failed, 0, 'Redis answered in time');
  const calls = Number(/cmdstat_evalsha:calls=(\d+)/.exec(String(await redis.command('INFO', 'commandstats')))?.[1] ?? 0);
  t.log(`admitted ${admitted} of ${codes.length} (expected ${expected.toFixed(0)}); ${calls} Redis calls`);
  t.true(calls > 0 && calls < codes.length / 4, `${calls} Redis calls for ${codes.length} requests`);
});

/**
 * The GCRA script of the redis backend (RedisStore.grant), on a real Redis: what
 * one call takes, reserves, refuses, and how long the key lives.
 */
import test, { type ExecutionContext } from 'ava';
import { RedisStore } from '../../src/components/ratelimit_redis.js';
import { RedisServer } from '../redis_support.js';

async function store(t: ExecutionContext): Promise<{ redis: RedisServer; s: RedisStore }> {
  const redis = await RedisServer.start(t);
  const s = new RedisStore(redis.url, 'switchyard-gcra-test', 5_000);
  t.teardown(() => s.close());
  await s.connect();
  t.true(await s.ready());
  return { redis, s };
}

// 10 rps: a token every 100 ms; burst 10. Lower bounds allow for time passing
// between calls on a loaded machine; upper bounds are exact.
const ask = (want: number, min: number, maxWaitMs: number, perSecond = 10) => ({ key: 'k', want, min, maxWaitMs, perSecond, burst: 10 });

test('a full bucket gives leases up to the burst at once, then none: the refusal says when `min` will fit', async (t) => {
  const { s } = await store(t);
  // 1 rps: no token comes back between these calls.
  t.deepEqual(await s.grant(ask(6, 3, 0, 1)), { taken: 6, waitMs: 0 });
  const second = await s.grant(ask(6, 3, 0, 1));
  t.is(second.taken, 4, 'partial: what is left of the burst (at least min)');
  const refused = await s.grant(ask(6, 3, 0, 1));
  t.is(refused.taken, 0);
  t.true(refused.waitMs > 2_000 && refused.waitMs <= 3_000, `3 tokens at 1 s each: ${refused.waitMs} ms`);
});

test('with maxWait a saturated limit reserves the lease ahead and says when it conforms', async (t) => {
  const { s } = await store(t);
  // 1 rps, so the time between calls (long on a loaded machine) stays small beside a token;
  // each wait is exact minus the time since the burst, which the test measures.
  const since = (start: number) => performance.now() - start;
  const start = performance.now();
  t.is((await s.grant(ask(10, 1, 0, 1))).taken, 10, 'the burst');
  const reserved = await s.grant(ask(5, 3, 10_000, 1));
  const afterReserved = since(start);
  t.is(reserved.taken, 5);
  t.true(reserved.waitMs >= 5_000 - afterReserved && reserved.waitMs <= 5_000, `usable once 5 tokens conform: ${reserved.waitMs} ms`);
  const next = await s.grant(ask(5, 3, 10_000, 1));
  const afterNext = since(start);
  t.is(next.taken, 5, 'the next one queues behind it');
  t.true(next.waitMs >= 10_000 - afterNext && next.waitMs <= 10_000, `5 tokens (5 s) after it: ${next.waitMs} ms`);
  const tooFar = await s.grant(ask(5, 3, 10_000, 1));
  const afterTooFar = since(start);
  t.true(afterTooFar < 3_000, 'the calls took less than 3 tokens');
  t.is(tooFar.taken, 0, 'beyond maxWait: refused');
  t.true(tooFar.waitMs >= 3_000 - afterTooFar && tooFar.waitMs <= 3_000, `ask again when 3 more fit in the window: ${tooFar.waitMs} ms`);
});

test('the key lives until its TAT has passed; a Redis without the script (restarted) is sent it in full', async (t) => {
  const { redis, s } = await store(t);
  await s.grant(ask(10, 1, 0));
  const pttl = Number(await redis.command('PTTL', 'k'));
  t.true(pttl > 0 && pttl <= 1001, `10 tokens: about 1 s, got ${pttl}`);
  await redis.command('SCRIPT', 'FLUSH');
  await new Promise((r) => setTimeout(r, pttl + 50));
  t.is(await redis.command('GET', 'k'), null, 'gone once the bucket is full again');
  t.deepEqual(await s.grant(ask(3, 1, 0)), { taken: 3, waitMs: 0 }, 'NOSCRIPT → EVAL');
});

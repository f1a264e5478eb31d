import test from 'ava';
import { get, listenerUrl, startSidecar } from './helpers.js';
import { channel, controlled, metricSum, resilienceConfig } from './resilience_support.js';

const ONLY_A = `filters:
  - { type: weighted, weights: { a: 1 } }`;

test('a hung endpoint gives 504 after the timeout without retries, and a retry on another endpoint succeeds with them', async (t) => {
  const hung = await controlled(t, 'hung');
  const ok = await controlled(t, 'ok');
  const b = await controlled(t, 'b');
  hung.mode = 'hang';
  const noRetry = await startSidecar(t, resilienceConfig(channel([hung]), channel([b]), `${ONLY_A}
timeouts: { upstream: 300ms }`));
  const r0 = await get(listenerUrl(noRetry, 'web'));
  t.is(r0.status, 504);
  t.regex(r0.body, /role a did not answer in time/);

  const sc = await startSidecar(t, resilienceConfig(channel([hung, ok]), channel([b]), `${ONLY_A}
retries: { attempts: 1, perTryTimeout: 300ms }`));
  for (let i = 0; i < 4; i++) {
    const r = await get(listenerUrl(sc, 'web'));
    t.is(r.status, 200);
    t.is(r.body, 'ok');
  }
  t.is(hung.hits, 1 + 2, 'half of the requests tried the hung endpoint first'); // 1 from the sidecar without retries
  t.is(await metricSum(sc, /^switchyard_retries_total\{.*role="a",reason="timeout"/), 2);
  t.is(await metricSum(sc, /^switchyard_upstream_errors_total\{.*role="a",reason="timeout"/), 2);
});

test('503 and reset answers are retried for idempotent methods only; POST gets the failure', async (t) => {
  const flaky = await controlled(t, 'flaky');
  const ok = await controlled(t, 'ok');
  const b = await controlled(t, 'b');
  const sc = await startSidecar(t, resilienceConfig(channel([flaky, ok]), channel([b]), `${ONLY_A}
retries: { attempts: 2 }`));
  const url = listenerUrl(sc, 'web');
  for (const mode of ['503', 'reset'] as const) {
    flaky.mode = mode;
    const results = [];
    for (let i = 0; i < 4; i++) results.push((await get(url)).status);
    t.deepEqual(results, [200, 200, 200, 200], `GET with ${mode}`);
    const posts = [];
    for (let i = 0; i < 2; i++) posts.push((await get(url, {}, { method: 'POST', body: 'x' })).status);
    t.deepEqual(posts.sort(), [200, mode === '503' ? 503 : 502], `POST with ${mode}: one reached flaky and was not retried`);
  }
  t.is(await metricSum(sc, /^switchyard_retries_total\{.*reason="503"/), 2);
  t.is(await metricSum(sc, /^switchyard_retries_total\{.*reason="reset"/), 2);
});

test('a PUT body within maxBodyBytes is buffered and sent again whole; a larger one is not retried', async (t) => {
  const flaky = await controlled(t, 'flaky');
  const ok = await controlled(t, 'ok');
  const b = await controlled(t, 'b');
  flaky.mode = 'reset';
  const sc = await startSidecar(t, resilienceConfig(channel([flaky, ok]), channel([b]), `${ONLY_A}
retries: { attempts: 1, maxBodyBytes: 1024 }`));
  const url = listenerUrl(sc, 'web');
  const small = 'payload-'.repeat(100); // 800 bytes
  for (let i = 0; i < 2; i++) t.is((await get(url, {}, { method: 'PUT', body: small })).status, 200);
  t.deepEqual(ok.bodies, [small, small], 'the retried body arrived whole');
  t.deepEqual(flaky.bodies, [small]);
  const big = 'x'.repeat(4096);
  const statuses = [];
  for (let i = 0; i < 2; i++) statuses.push((await get(url, {}, { method: 'PUT', body: big })).status);
  t.deepEqual(statuses.sort(), [200, 502], 'the large body was not replayed');
});

test('a spent retry budget stops retries and counts them', async (t) => {
  const flaky = await controlled(t, 'flaky');
  const ok = await controlled(t, 'ok');
  const b = await controlled(t, 'b');
  flaky.mode = '503';
  const sc = await startSidecar(t, resilienceConfig(channel([flaky, ok]), channel([b]), `${ONLY_A}
retries: { attempts: 2, budgetPercent: 0, minRetryConcurrency: 0 }`));
  const statuses = [];
  for (let i = 0; i < 4; i++) statuses.push((await get(listenerUrl(sc, 'web'))).status);
  t.deepEqual(statuses.sort(), [200, 200, 503, 503]);
  t.is(await metricSum(sc, /^switchyard_retries_total/), 0);
  t.is(await metricSum(sc, /^switchyard_retry_budget_exhausted_total\{listener="web"\}/), 2);
});

test('timeouts.total bounds every try together: 504 once it passes, however many attempts are left', async (t) => {
  const h1 = await controlled(t, 'h1');
  const h2 = await controlled(t, 'h2');
  const b = await controlled(t, 'b');
  h1.mode = h2.mode = 'hang';
  const sc = await startSidecar(t, resilienceConfig(channel([h1, h2]), channel([b]), `${ONLY_A}
timeouts: { total: 700ms }
retries: { attempts: 10, perTryTimeout: 300ms }`));
  const start = Date.now();
  const r = await get(listenerUrl(sc, 'web'));
  const took = Date.now() - start;
  t.is(r.status, 504);
  t.regex(r.body, /total timeout/);
  t.true(took >= 650 && took < 5000, `answered after ${took} ms`);
  t.is(h1.hits + h2.hits, 3, 'tries at 0, 300 and 600 ms; none after the total passed');
});


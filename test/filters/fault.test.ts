import test from 'ava';
import { get, listenerUrl, startSidecar, startUpstream, twoRoles } from '../helpers.js';

test('fault aborts every request at 100 % with the status, and none reach a role', async (t) => {
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const sc = await startSidecar(t, twoRoles(a, b, { filters: [{ type: 'fault', abort: { percent: 100, status: 503 } }] }));
  for (let i = 0; i < 5; i++) t.is((await get(listenerUrl(sc, 'web'))).status, 503);
  t.is(a.requests.length + b.requests.length, 0);
});

test('fault limited to one role aborts only requests routed there', async (t) => {
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const sc = await startSidecar(t, twoRoles(a, b, {
    filters: [
      { type: 'header_route', rules: [{ header: 'x-to', equals: 'b', role: 'b' }, { header: 'x-to', equals: 'a', role: 'a' }] },
      { type: 'fault', role: 'b', abort: { percent: 100, status: 500 } },
    ],
  }));
  const url = listenerUrl(sc, 'web');
  t.is((await get(url, { 'x-to': 'b' })).status, 500);
  t.is((await get(url, { 'x-to': 'a' })).status, 200);
});

test('fault delays requests by the duration', async (t) => {
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const sc = await startSidecar(t, twoRoles(a, b, { filters: [{ type: 'fault', delay: { percent: 100, duration: '300ms' } }] }));
  const t0 = performance.now();
  t.is((await get(listenerUrl(sc, 'web'))).status, 200);
  t.true(performance.now() - t0 >= 290);
});

test('fault at a partial percentage aborts about that share', async (t) => {
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const sc = await startSidecar(t, twoRoles(a, b, { filters: [{ type: 'fault', abort: { percent: 25, status: 503 } }] }));
  const url = listenerUrl(sc, 'web');
  let aborted = 0;
  const n = 800;
  await Promise.all(Array.from({ length: 16 }, async (_, w) => {
    for (let i = w; i < n; i += 16) if ((await get(url)).status === 503) aborted++;
  }));
  // Binomial(800, 0.25): mean 200, sd ≈ 12.2; ±60 is ~5 sd.
  t.true(aborted > 140 && aborted < 260, `aborted ${aborted} of ${n}`);
});

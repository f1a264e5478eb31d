import test, { type ExecutionContext } from 'ava';
import { request as undiciRequest } from 'undici';
import {
  client, get, listenerUrl, putConfig, role, startSidecar, startUpstream, uniqueHost, vsetOf, weighted, type ConfigSpec, type FilterSpec,
  type Upstream,
} from '../helpers.js';

/*
 * The `weighted` filter end to end: a real sidecar in front of real upstreams,
 * each of which answers with its role name (x-role), so every count below is what
 * actually arrived at a role.
 *
 * Statistics. Random splits are binomial: over n requests, a role of probability p
 * gets n·p ± sqrt(n·p·(1-p)) (one standard deviation, sd). Each tolerance below is
 * stated in sd; beyond 6 sd a false failure has probability < 2e-9 per assertion,
 * and every broken split we guard against (weights ignored → equal split, weights
 * inverted, a role starved or favoured) misses by dozens of sd. Sticky splits are
 * hashes of fixed user ids, so they are deterministic: the same ids give the same
 * figures on every run; their tolerances are about what any sound hash must meet.
 */

/** One upstream per role (meta version 1.0.0, 2.0.0, …), a vset `svc` of `inVset` (default: all), and listener `web` running `filters`. */
function rolesConfig(ups: Record<string, Upstream>, filters: FilterSpec[], inVset = Object.keys(ups), address?: string): ConfigSpec {
  const roles = Object.fromEntries(Object.entries(ups).map(([name, u], i) => [name, role(u, { meta: { version: `${i + 1}.0.0` } })]));
  return vsetOf(roles, { address, filters }, { inVset });
}

async function upstreams(t: ExecutionContext, ...names: string[]): Promise<Record<string, Upstream>> {
  const out: Record<string, Upstream> = {};
  for (const n of names) out[n] = await startUpstream(t, n);
  return out;
}

/** Sends `n` requests, `concurrency` in flight, and returns which role answered request i. */
async function send(url: string, n: number, headers: (i: number) => Record<string, string> = () => ({}), concurrency = 32): Promise<string[]> {
  const out: string[] = new Array(n);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < n) {
      const i = next++;
      const r = await get(url, headers(i));
      if (r.status !== 200) throw new Error(`request ${i}: status ${r.status}: ${r.body}`);
      out[i] = String(r.headers['x-role']);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  return out;
}

function tally(roles: readonly string[]): Record<string, number> {
  const c: Record<string, number> = {};
  for (const r of roles) c[r] = (Object.hasOwn(c, r) ? c[r]! : 0) + 1;
  return c;
}

/** Asserts `count/n` is within `tol` of `p`, with a message that shows the figures. */
function share(t: ExecutionContext, count: number | undefined, n: number, p: number, tol: number, what: string): void {
  const s = (count ?? 0) / n;
  t.true(Math.abs(s - p) <= tol, `${what}: share ${(s * 100).toFixed(2)} %, expected ${(p * 100).toFixed(1)} ± ${(tol * 100).toFixed(1)} %`);
}

test('weighted 80/20 over 4,000 requests lands within ±3 points', async (t) => {
  const ups = await upstreams(t, 'a', 'b');
  const sc = await startSidecar(t, rolesConfig(ups, [weighted({ a: 80, b: 20 })]));
  // n = 4000, p = 0.2: sd = 0.63 pts, so ±3 pts is 4.7 sd (two-sided false failure
  // ≈ 2.6e-6); an equal split (50 %) or inverted weights (80 %) miss by ≥ 47 sd.
  const n = 4000;
  const c = tally(await send(listenerUrl(sc, 'web'), n));
  t.is((c.a ?? 0) + (c.b ?? 0), n);
  share(t, c.b, n, 0.2, 0.03, 'b (weight 20)');
});

test('weighted 1/999 sends a small but non-zero share to the 1-weight role', async (t) => {
  const ups = await upstreams(t, 'big', 'tiny');
  const sc = await startSidecar(t, rolesConfig(ups, [weighted({ big: 999, tiny: 1 })]));
  // n = 20,000 at p = 1/1000: the count on `tiny` is ~Poisson(20). P(0) = e^-20 ≈ 2e-9,
  // P(≥ 60) < 1e-11. A filter that drops the small weight (0) or rounds it up to
  // a visible share (≥ 60 ≈ 0.3 %) fails; the role order in the vset puts `tiny`
  // last, so "the last role is the fallback" bugs show too.
  const n = 20_000;
  const c = tally(await send(listenerUrl(sc, 'web'), n));
  t.is((c.big ?? 0) + (c.tiny ?? 0), n);
  t.true((c.tiny ?? 0) > 0, 'the 1-weight role got nothing');
  t.true((c.tiny ?? 0) < 60, `the 1-weight role got ${c.tiny} of ${n}, expected ~20`);
  t.log(`tiny: ${c.tiny} of ${n}`);
});

test('a role left out of weights, or weighted 0, gets nothing', async (t) => {
  const ups = await upstreams(t, 'a', 'b', 'c', 'd');
  const sc = await startSidecar(t, rolesConfig(ups, [weighted({ a: 1, c: 1, d: 0 })]));
  // b (left out) and d (0) must get exactly 0 of 2,000; a and c share the rest
  // (p = 0.5, sd = 1.1 pts, ±8 pts is 7 sd).
  const n = 2000;
  const c = tally(await send(listenerUrl(sc, 'web'), n));
  t.false('b' in c, `b got ${c.b}`);
  t.false('d' in c, `d got ${c.d}`);
  t.is((c.a ?? 0) + (c.c ?? 0), n);
  share(t, c.a, n, 0.5, 0.08, 'a');
});

test('no filter splits equally over the vset roles, and only those', async (t) => {
  // `outside` is a role of the config but not of the listener's vset.
  const ups = await upstreams(t, 'r1', 'r2', 'r3', 'outside');
  const sc = await startSidecar(t, rolesConfig(ups, [], ['r1', 'r2', 'r3']));
  // n = 6000, p = 1/3: sd = 0.61 pts; ±4 pts is 6.6 sd (< 1e-10 per role).
  const n = 6000;
  const c = tally(await send(listenerUrl(sc, 'web'), n));
  t.false('outside' in c, `outside got ${c.outside}`);
  t.is((c.r1 ?? 0) + (c.r2 ?? 0) + (c.r3 ?? 0), n);
  for (const r of ['r1', 'r2', 'r3']) share(t, c[r], n, 1 / 3, 0.04, r);
});

// ---- stickyHeader ----

const USERS = 5000;
const userId = (i: number): string => `user-${i}`;

/** For each of USERS user ids, the role it lands on. */
async function rolesOfUsers(url: string, header = 'x-user-id'): Promise<string[]> {
  return send(url, USERS, (i) => ({ [header]: userId(i) }));
}

test('stickyHeader: the same value always lands on the same role', async (t) => {
  const ups = await upstreams(t, 'a', 'b');
  const filters = [weighted({ a: 50, b: 50 }, { stickyHeader: 'X-User-Id' })];
  const sc = await startSidecar(t, rolesConfig(ups, filters));
  const url = listenerUrl(sc, 'web');
  // 300 users, each asked 5 times (interleaved, concurrently): at 50/50 a random
  // pick would split a user's 5 requests with probability 15/16 per user.
  const users = 300;
  const got = await send(url, users * 5, (i) => ({ 'x-user-id': userId(i % users) }));
  const first = got.slice(0, users);
  for (let i = 0; i < got.length; i++) t.is(got[i], first[i % users], `user ${i % users}, request ${Math.floor(i / users)}`);
  // Both roles get users (a constant role is not "sticky").
  const c = tally(first);
  t.true((c.a ?? 0) > 100 && (c.b ?? 0) > 100, JSON.stringify(c));
  // The header name is case-insensitive (config says X-User-Id, requests send x-user-id),
  // and a second sidecar with the same config agrees on every user: the hash has no
  // per-process seed, so replicas of a client keep a user on one role.
  const sc2 = await startSidecar(t, rolesConfig(ups, filters));
  const again = await send(listenerUrl(sc2, 'web'), users, (i) => ({ 'X-USER-ID': userId(i) }));
  t.deepEqual(again, first);
});

test('stickyHeader: over 5,000 users the canary share matches the weight; a ramp 90/10 → 80/20 keeps every canary user and moves only 10 % of users', async (t) => {
  const ups = await upstreams(t, 'stable', 'canary');
  // One listener address for both: the ramp changes nothing else.
  const host = uniqueHost();
  const config = (s: number, c: number): ConfigSpec => rolesConfig(ups, [weighted({ stable: s, canary: c }, { stickyHeader: 'x-user-id' })], undefined, `${host}:0`);
  const first = config(90, 10);
  const sc = await startSidecar(t, first);
  const url = listenerUrl(sc, 'web');
  const before = await rolesOfUsers(url);
  // Deterministic (fixed ids, fixed hash). For a sound hash the share is binomial:
  // sd = 0.42 pts at 10 %, so ±3 pts is 7 sd; a hash that ignores the weights misses by 40 pts.
  share(t, before.filter((r) => r === 'canary').length, USERS, 0.1, 0.03, 'canary at 90/10');

  // Apply the ramp through the admin API, as an operator would. The listener keeps
  // its address (the same config apart from the weights, the same host).
  const second = config(80, 20);
  t.notDeepEqual(second, first);
  const res = await putConfig(sc, second);
  t.is(res.status, 200, res.body);
  t.is(JSON.parse(res.body).generation, 2);
  t.is(listenerUrl(sc, 'web'), url);
  const after = await rolesOfUsers(url);

  let lost = 0; // on the canary before, not after
  let gained = 0; // on stable before, canary after
  for (let i = 0; i < USERS; i++) {
    if (before[i] === 'canary' && after[i] !== 'canary') lost++;
    if (before[i] === 'stable' && after[i] === 'canary') gained++;
  }
  const moved = (lost + gained) / USERS;
  const cb = before.filter((r) => r === 'canary').length / USERS;
  const ca = after.filter((r) => r === 'canary').length / USERS;
  t.log(`canary ${(cb * 100).toFixed(2)} % → ${(ca * 100).toFixed(2)} %; moved ${(moved * 100).toFixed(2)} % of ${USERS} users (${gained} onto the canary, ${lost} off it)`);
  t.is(lost, 0, 'users on the canary at 10 % must stay on it at 20 %');
  // The moved share is the weight change: 10 pts. A pick that is not consistent
  // across weight changes (say, a hash seeded with the weights) re-picks every user
  // and moves ~26 pts (0.9·0.2 + 0.1·0.8), far outside ±2. (Range hashing over
  // cumulative weights passes this two-role ramp; the three-role test below catches it.)
  share(t, gained, USERS, 0.1, 0.02, 'users moved');
  share(t, after.filter((r) => r === 'canary').length, USERS, 0.2, 0.03, 'canary at 80/20');
});

test('stickyHeader: removing one of three roles does not move users between the two that stay', async (t) => {
  const ups = await upstreams(t, 'a', 'b', 'c');
  const three = await startSidecar(t, rolesConfig(ups, [weighted({ a: 1, b: 1, c: 1 }, { stickyHeader: 'x-user-id' })]));
  // The same weights for a and b, c gone from the weights (and so from the split).
  const two = await startSidecar(t, rolesConfig(ups, [weighted({ a: 1, b: 1 }, { stickyHeader: 'x-user-id' })]));
  const before = await rolesOfUsers(listenerUrl(three, 'web'));
  const after = await rolesOfUsers(listenerUrl(two, 'web'));
  let stayed = 0;
  let crossed = 0;
  for (let i = 0; i < USERS; i++) {
    t.not(after[i], 'c');
    if (before[i] === 'c') continue;
    stayed++;
    if (after[i] !== before[i]) crossed++;
  }
  t.is(crossed, 0, `${crossed} users moved between a and b`);
  share(t, USERS - stayed, USERS, 1 / 3, 0.03, 'users on c before');
  // c's users spread over a and b, not all onto one of them.
  const cUsers = after.filter((_, i) => before[i] === 'c');
  share(t, cUsers.filter((r) => r === 'a').length, cUsers.length, 0.5, 0.05, "c's users that went to a");
});

test('stickyHeader: a request without the header still gets a weighted random role', async (t) => {
  const ups = await upstreams(t, 'stable', 'canary');
  const sc = await startSidecar(t, rolesConfig(ups, [weighted({ stable: 90, canary: 10 }, { stickyHeader: 'x-user-id' })]));
  // n = 3000 at p = 0.1: sd = 0.55 pts, ±4 pts is 7 sd. Hashing "no header" as one
  // key would send all 3000 to one role.
  const n = 3000;
  const c = tally(await send(listenerUrl(sc, 'web'), n));
  share(t, c.canary, n, 0.1, 0.04, 'canary without a sticky header');
});

test('a role named like an Object.prototype member (constructor) and left out of weights gets nothing', async (t) => {
  // Regression: weights were looked up with `weights[name] ?? 0`, so a role named
  // `constructor` (a valid name) found Object's constructor function there, and the
  // NaN it made of the cumulative weights sent every request to that role.
  const ups = await upstreams(t, 'a', 'constructor');
  const sc = await startSidecar(t, rolesConfig(ups, [weighted({ a: 1 })]));
  const c = tally(await send(listenerUrl(sc, 'web'), 200));
  t.deepEqual(c, { a: 200 });
});

test('stickyHeader: a repeated sticky header sticks by its first occurrence', async (t) => {
  const ups = await upstreams(t, 'a', 'b');
  const sc = await startSidecar(t, rolesConfig(ups, [weighted({ a: 1, b: 1 }, { stickyHeader: 'x-user-id' })]));
  const url = listenerUrl(sc, 'web');
  // Find two users on different roles, then send both, in either order.
  const users = await send(url, 50, (i) => ({ 'x-user-id': userId(i) }));
  const ia = users.indexOf('a');
  const ib = users.indexOf('b');
  t.true(ia >= 0 && ib >= 0);
  const both = async (first: number, second: number): Promise<unknown> => {
    const r = await undiciRequest(url, { dispatcher: client, headers: { 'x-user-id': [userId(first), userId(second)] } });
    await r.body.text();
    return r.headers['x-role'];
  };
  for (let i = 0; i < 10; i++) {
    t.is(await both(ia, ib), 'a');
    t.is(await both(ib, ia), 'b');
  }
});

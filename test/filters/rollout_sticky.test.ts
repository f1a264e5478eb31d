import test from 'ava';
import { configOf, get, listenerUrl, role, startSidecar, startUpstream, until, vsetOf } from '../helpers.js';
import { admin } from '../reload/support.js';

/*
 * Sticky users through a whole guarded rollout: the sidecar ramps b from 10 % to
 * 100 % by itself while the same users come back again and again. HRW moves a
 * user only onto a role whose weight grew, so a user seen on b is never seen on
 * a afterwards, at any step.
 */

test('sticky users only ever move onto the canary as a rollout ramps it, through every step', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const sc = await startSidecar(t, configOf(vsetOf({ a: role(a), b: role(b) }, {
    filters: [{
      type: 'weighted', weights: { a: 100, b: 0 }, stickyHeader: 'x-user',
      rollout: { role: 'b', steps: [10, 25, 50, 75, 100], interval: '500ms', minRequests: 1, maxErrorRatio: 0.01 },
    }],
  })));
  const url = listenerUrl(sc, 'web');
  const users = Array.from({ length: 1000 }, (_, i) => `user-${i}`);
  const onB = new Set<string>();
  const backToA: string[] = [];
  /** Per round: the rollout's step before and after it, and the share of users on b. */
  const rounds: Array<{ step: number; after: number; share: number }> = [];
  const stepNow = async (): Promise<number> => (await admin(sc, 'GET', '/rollouts')).json.rollouts[0].step as number;
  const round = async (): Promise<void> => {
    const step = await stepNow();
    let next = 0;
    let seenB = 0;
    const worker = async (): Promise<void> => {
      while (next < users.length) {
        const u = users[next++]!;
        const r = await get(url, { 'x-user': u });
        if (r.status !== 200) throw new Error(`${u}: ${r.status}`);
        if (r.headers['x-role'] === 'b') {
          onB.add(u);
          seenB++;
        } else if (onB.has(u)) backToA.push(u);
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
    rounds.push({ step, after: await stepNow(), share: seenB / users.length });
  };
  let state = '';
  await until(async () => {
    await round();
    state = (await admin(sc, 'GET', '/rollouts')).json.rollouts[0].state;
    return state === 'done';
  }, 30_000, 'the rollout to finish');
  await round();
  t.deepEqual(backToA, []);
  t.is(rounds.at(-1)!.share, 1);
  // The users came back at several steps between 0 and 100 %, and b's share grew with them.
  const steps = new Set(rounds.map((r) => r.step));
  t.true(steps.size >= 3, `rounds saw steps ${[...steps].join(', ')}`);
  for (let i = 1; i < rounds.length; i++) t.true(rounds[i]!.share >= rounds[i - 1]!.share);
  // A round wholly within one step gives about that step's share (a sound hash over 1000 users: ± 6 points).
  const within = rounds.filter((r) => r.step === r.after && r.step > 0 && r.step < 100);
  t.true(within.length >= 2);
  for (const r of within) t.true(Math.abs(r.share * 100 - r.step) <= 6, `share ${r.share} at step ${r.step}`);
});

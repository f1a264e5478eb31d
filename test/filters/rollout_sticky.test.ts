import test from 'ava';
import { configOf, get, listenerUrl, role, startSidecar, startUpstream, until, vsetOf } from '../helpers.js';
import { admin } from '../reload/support.js';
import { traffic } from '../reload/safety_support.js';

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
  /** Per round (all users once, while the rollout is paused at one step): the step and the share of users on b. */
  const rounds: Array<{ step: number; share: number }> = [];
  const round = async (step: number): Promise<void> => {
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
    await Promise.all(Array.from({ length: 8 }, worker));
    rounds.push({ step, share: seenB / users.length });
  };
  // Other users keep each step fed with requests, so it passes.
  const load = traffic(url, 2, () => ({ 'x-user': `other-${Math.random()}` }), 5);
  t.teardown(() => load.stop());
  let last = 0;
  for (;;) {
    const now = await untilRollout(sc, (r) => r.step > last && r.stepIndex >= 0 && (r.state === 'running' || r.state === 'done'));
    if (now.state === 'done') {
      await round(now.step);
      break;
    }
    // Held at this step while every user comes back once (a step being applied answers 409: try again).
    let paused: any;
    await until(async () => { paused = await admin(sc, 'POST', '/rollouts/web/pause'); return paused.status === 200 || paused.json.error === 'the rollout is done'; }, 5_000, 'pause');
    const step = paused.status === 200 ? paused.json.rollout.step as number : 100;
    await round(step);
    last = step;
    if (paused.status !== 200 || step === 100) break;
    t.is((await admin(sc, 'POST', '/rollouts/web/resume')).status, 200);
  }
  await load.stop();
  t.deepEqual(backToA, []);
  t.deepEqual(rounds.map((r) => r.step), [10, 25, 50, 75, 100]);
  // Each step gives about its share of the users (a sound hash over 1000 users: ± 6 points), growing with the steps.
  for (const r of rounds) t.true(Math.abs(r.share * 100 - r.step) <= 6, `share ${r.share} at step ${r.step}`);
  t.is(rounds.at(-1)!.share, 1);
});

async function untilRollout(sc: Parameters<typeof admin>[0], want: (r: any) => boolean): Promise<any> {
  let last: any;
  await until(async () => { last = (await admin(sc, 'GET', '/rollouts')).json.rollouts[0]; return last !== undefined && want(last); }, 10_000, 'the rollout')
    .catch((err: Error) => { throw new Error(`${err.message}; last: ${JSON.stringify(last)}`); });
  return last;
}

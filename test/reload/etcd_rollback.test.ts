import test from 'ava';
import { twoRoles, uniqueHost, until, weighted, yaml, listenerUrl } from '../helpers.js';
import { Etcd, startFromBootstrap } from '../etcd_support.js';
import { admin } from './support.js';
import { switchable, traffic } from './safety_support.js';

/*
 * autoRollback of a change that came from etcd: a real etcd, a sidecar started
 * from a bootstrap that names source.etcd and autoRollback, and an app document
 * that sends half the traffic to a role answering 500s.
 */

const APP = 'cart-client';

test('a change from etcd that autoRollback reverted is reported rolled-back in the status key and not applied again until the key changes', async (t) => {
  const etcd = await Etcd.start(t);
  const a = await switchable(t, 'a');
  const b = await switchable(t, 'b');
  b.failing = true;
  const prefix = '/syrb';
  const { sc, log } = await startFromBootstrap(t, yaml({
    admin: { address: '127.0.0.1:0' },
    autoRollback: { window: '4s', minRequests: 20, maxErrorRatio: 0.1 },
    ...twoRoles(a, b, { address: `${uniqueHost()}:0`, target: 'svc', filters: [weighted({ a: 100, b: 0 })] }),
    source: { etcd: { endpoints: [etcd.url], prefix, app: APP, instance: 'pod-1', timeout: '2s', checkInterval: '300ms', leaseTtl: '5s' } },
  } as never));
  const load = traffic(listenerUrl(sc, 'web'));
  t.teardown(() => load.stop());
  const doc = (w: Record<string, number>) => JSON.stringify({ listeners: { web: { filters: [{ type: 'weighted', weights: w }] } } });
  const statusKey = `${prefix}/status/${APP}/pod-1`;
  const status = async (): Promise<any> => JSON.parse((await etcd.get(statusKey)) ?? 'null');

  const rev = await etcd.put(`${prefix}/apps/${APP}`, doc({ a: 50, b: 50 }));
  await until(async () => (await status())?.result === 'rolled-back', 8_000, 'the rolled-back status');
  const s = await status();
  t.like(s, { revision: rev, result: 'rolled-back', source: 'auto-rollback', generation: sc.runtime.current!.number });
  t.regex(s.errors[0], /role b error ratio/);
  t.is(sc.runtime.current!.source, 'auto-rollback');
  const reverted = sc.runtime.current!.number;
  // Several of the source's checks later (300 ms each), the reverted revision is still not applied again.
  await new Promise((r) => setTimeout(r, 1_000));
  t.is(sc.runtime.current!.number, reverted);
  t.true(log.some((l) => /revision \d+ rolled back by autoRollback/.test(l)));

  // The key changes (b is healthy now): applied.
  b.failing = false;
  const rev2 = await etcd.put(`${prefix}/apps/${APP}`, doc({ a: 50, b: 51 }));
  await until(async () => (await status())?.revision === rev2, 8_000, 'the new revision');
  t.like(await status(), { result: 'applied', revision: rev2 });
  t.deepEqual((await admin(sc, 'GET', '/config')).json.config.listeners.web.filters[0].weights, { a: 50, b: 51 });
  await load.stop();
});

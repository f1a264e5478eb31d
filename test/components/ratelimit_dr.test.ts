/**
 * The seed's disaster-recovery story on real Redis servers: the operator points
 * the rate limit at the DR Redis (POST /components, PUT /config, the config
 * file). The new instance connects and answers PING before it takes over, the
 * old one serves until then and closes its connection once its generation
 * drained; a DR Redis that cannot be reached rejects the change.
 */
import test from 'ava';
import { writeFile } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import { request } from 'undici';
import { Sidecar } from '../../src/sidecar.js';
import { adminUrl, deadAddress, get, listenerUrl, metric, oneRole, startSidecar, startUpstream, tempFiles, until, yaml, type ConfigSpec } from '../helpers.js';
import { RedisServer } from '../redis_support.js';

// A big burst: nothing is limited during the test.
const metaFor = (redisUrl: string) => ({ backend: 'redis', redisUrl, requestsPerSecond: '1', burst: '20000', timeout: '5s' });

const config = (up: { address: string }, listenerAddress: string, redisUrl: string): ConfigSpec => ({
  drainTimeout: '20s',
  components: { limit: { type: 'ratelimit', metadata: metaFor(redisUrl) } },
  ...oneRole(up, { address: listenerAddress, filters: [{ type: 'ratelimit', component: 'limit' }] }),
});

/** An upstream that holds GET /hold until release() (a request pinning the generation it started on). */
async function holdingUpstream(t: Parameters<typeof startUpstream>[0]) {
  const held: ServerResponse[] = [];
  const up = await startUpstream(t, 'a', (req, res) => {
    req.resume();
    if (req.url === '/hold') held.push(res);
    else res.end('ok');
  });
  return { up, held: () => held.length, release: () => { for (const r of held.splice(0)) r.end('released'); } };
}

const postLimit = async (sc: Sidecar, redisUrl: string) => {
  const res = await request(`${adminUrl(sc)}/components/limit`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ metadata: metaFor(redisUrl) }) });
  return { status: res.statusCode, body: (await res.body.json()) as { components?: Record<string, string>; errors?: { message: string }[] } };
};

test('POST /components moves the limit to the DR Redis: connected before it takes over, the old serves its drain then closes once; an unreachable DR is refused', async (t) => {
  const [primary, dr] = [await RedisServer.start(t), await RedisServer.start(t)];
  const { up, held, release } = await holdingUpstream(t);
  const sc = await startSidecar(t, config(up, `${(await deadAddress()).split(':')[0]}:0`, primary.url));
  const url = listenerUrl(sc, 'web');
  t.is((await get(url)).status, 200);
  t.true((await primary.scriptCalls()) >= 1, 'the limit is taken from the primary');
  t.is(await primary.clients('switchyard-limit'), 1);
  t.is(await dr.clients('switchyard-limit'), 0);

  // A request that holds the old generation (and so the old instance) until released.
  const pinned = get(`${url}/hold`);
  await until(() => held() === 1, 5_000, 'the held request to reach the upstream');

  // Traffic keeps flowing during the change: none of it may be refused.
  let stop = false;
  const codes: number[] = [];
  const traffic = (async () => { while (!stop) codes.push((await get(url)).status); })();
  await until(() => codes.length >= 5, 5_000, 'traffic before the change');

  const moved = await postLimit(sc, dr.url);
  t.is(moved.status, 200, JSON.stringify(moved.body));
  t.deepEqual(moved.body.components, { limit: 'reinitialized' });
  t.is(await dr.clients('switchyard-limit'), 1, 'the new instance was connected when it took over');
  const drStats = String(await dr.command('INFO', 'commandstats'));
  t.regex(drStats, /cmdstat_ping:calls=1,/, 'and had answered PING (its readiness)');
  t.regex(drStats, /cmdstat_script\|load:calls=1,/, 'and loaded the script');
  t.is(await primary.clients('switchyard-limit'), 1, 'the old instance keeps its connection while its generation drains');

  const seen = codes.length;
  await until(() => codes.length >= seen + 5, 5_000, 'traffic after the change');
  t.true((await dr.scriptCalls()) >= 1, 'new requests take their tokens from the DR Redis');
  const primaryCalls = await primary.scriptCalls();
  const seenMore = codes.length;
  await until(() => codes.length >= seenMore + 20, 5_000, 'more traffic after the change');
  t.is(await primary.scriptCalls(), primaryCalls, 'and none from the primary');

  // A DR Redis nobody answers at: the change fails whole, and the DR one keeps serving.
  const drInstance = sc.runtime.current!.components.get('limit')!.instance;
  const dead = await postLimit(sc, `redis://${await deadAddress()}`);
  t.is(dead.status, 409, JSON.stringify(dead.body));
  t.regex(dead.body.errors![0]!.message, /component limit: init: redis redis:\/\/.*ECONNREFUSED/);
  t.is(sc.runtime.current!.components.get('limit')!.instance, drInstance, 'the DR instance still serves');
  const seen2 = codes.length;
  await until(() => codes.length >= seen2 + 5, 5_000, 'traffic after the refused change');
  t.is(await dr.clients('switchyard-limit'), 1);
  stop = true;
  await traffic;
  t.deepEqual([...new Set(codes)], [200], 'no request was refused or failed during the changes');

  const connectionsBefore = /total_connections_received:(\d+)/.exec(String(await primary.command('INFO', 'stats')))![1];
  release();
  t.is((await pinned).status, 200, 'the held request finished on the old generation');
  await until(async () => (await primary.clients('switchyard-limit')) === 0, 5_000, 'the old instance to close its connection after the drain');
  await new Promise((r) => setTimeout(r, 200));
  t.is(/total_connections_received:(\d+)/.exec(String(await primary.command('INFO', 'stats')))![1], connectionsBefore, 'closed for good: no reconnect');
  t.is(await primary.clients('switchyard-limit'), 0);
  t.is(await dr.clients('switchyard-limit'), 1);
  t.true((await metric(sc, 'switchyard_ratelimit_decisions_total', { component: 'limit', result: 'allowed' })) >= codes.length,
    'the decision count carried over to the new instance');
});

test('PUT /config and the config file move the limit between Redis servers too', async (t) => {
  const [primary, dr] = [await RedisServer.start(t), await RedisServer.start(t)];
  const up = await startUpstream(t, 'a');
  const listenerAddress = `${(await deadAddress()).split(':')[0]}:0`;
  const text = (redisUrl: string) => yaml({ admin: { address: '127.0.0.1:0' }, ...config(up, listenerAddress, redisUrl) });
  const { paths } = await tempFiles(t, { 'sy.yaml': text(primary.url) });
  const sc = await Sidecar.start({ files: [paths['sy.yaml']!], watch: true, log: () => {} });
  t.teardown(() => sc.stop());
  const url = listenerUrl(sc, 'web');
  t.is((await get(url)).status, 200);
  t.is(await primary.clients('switchyard-limit'), 1);

  // The file: the watcher applies it.
  const before = sc.runtime.current!.number;
  await writeFile(paths['sy.yaml']!, text(dr.url));
  await until(() => sc.runtime.current!.number > before, 10_000, 'the file change to be applied');
  t.is(await dr.clients('switchyard-limit'), 1);
  t.is((await get(url)).status, 200);
  t.true((await dr.scriptCalls()) >= 1);
  await until(async () => (await primary.clients('switchyard-limit')) === 0, 5_000, 'the old instance to close');

  // PUT /config: back to the primary; a dry run says so first, and changes nothing.
  const dry = await request(`${adminUrl(sc)}/config?dryRun=1`, { method: 'PUT', headers: { 'content-type': 'application/yaml' }, body: text(primary.url) });
  t.like(await dry.body.json(), { dryRun: true, components: { limit: 'reinitialized' } });
  t.is(await primary.clients('switchyard-limit'), 0, 'a dry run connects nowhere');
  const res = await request(`${adminUrl(sc)}/config`, { method: 'PUT', headers: { 'content-type': 'application/yaml' }, body: text(primary.url) });
  const body = (await res.body.json()) as { components: Record<string, string> };
  t.is(res.statusCode, 200, JSON.stringify(body));
  t.deepEqual(body.components, { limit: 'reinitialized' });
  const before2 = await primary.scriptCalls();
  t.is((await get(url)).status, 200);
  t.true((await primary.scriptCalls()) > before2, 'the new instance takes its lease from the primary');
  await until(async () => (await dr.clients('switchyard-limit')) === 0, 5_000, 'the DR instance to close');
});

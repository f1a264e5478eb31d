import test from 'ava';
import { adminUrl, configOf, get, listenerUrl, role, startSidecar, startUpstream, twoRoles, type ConfigSpec } from '../helpers.js';
import { request } from 'undici';
import { tcpRoundTrip } from './ratelimit_support.js';

/** Roles a and b behind listener web, whose ratelimit filter uses component `limit` of this metadata. */
const limited = (a: { address: string }, b: { address: string }, metadata: Record<string, string>): ConfigSpec => ({
  components: { limit: { type: 'ratelimit', metadata } },
  ...twoRoles(a, b, { filters: [{ type: 'ratelimit', component: 'limit' }] }),
});

test('ratelimit answers 429 with retry-after once the burst is spent', async (t) => {
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  // One token per 100 s: none comes back while a loaded machine runs the test.
  const sc = await startSidecar(t, limited(a, b, { requestsPerSecond: '0.01', burst: '3' }));
  const url = listenerUrl(sc, 'web');
  const codes = [];
  for (let i = 0; i < 4; i++) codes.push((await get(url)).status);
  t.deepEqual(codes, [200, 200, 200, 429]);
  const r = await get(url);
  t.is(r.status, 429);
  t.is(r.headers['retry-after'], '100', 'seconds until the next token');
  t.is(a.requests.length + b.requests.length, 3, 'limited requests never reach a role');
});

test('ratelimit with key header:x-user keeps one bucket per user', async (t) => {
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const sc = await startSidecar(t, limited(a, b, { requestsPerSecond: '0.01', burst: '1', key: 'header:x-user' }));
  const url = listenerUrl(sc, 'web');
  t.is((await get(url, { 'x-user': 'alice' })).status, 200);
  t.is((await get(url, { 'x-user': 'alice' })).status, 429);
  t.is((await get(url, { 'x-user': 'bob' })).status, 200);
});

test('POST /components changes the rate in place and keeps the buckets', async (t) => {
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const sc = await startSidecar(t, limited(a, b, { requestsPerSecond: '0.01', burst: '2' }));
  const url = listenerUrl(sc, 'web');
  t.is((await get(url)).status, 200);
  t.is((await get(url)).status, 200);
  t.is((await get(url)).status, 429);
  const res = await request(`${adminUrl(sc)}/components/limit`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ metadata: { requestsPerSecond: '0.01', burst: '10' } }) });
  t.is(res.statusCode, 200);
  const body = (await res.body.json()) as { generation: number; components: Record<string, string> };
  t.deepEqual(body.components, { limit: 'updated' });
  // The bucket was empty before the update and stays (nearly) empty: a fresh bucket would allow 10.
  t.is((await get(url)).status, 429);
  const cfg = (await (await request(`${adminUrl(sc)}/config`)).body.json()) as { source: string; config: { components: { limit: { metadata: Record<string, string> } } } };
  t.is(cfg.source, 'component');
  t.is(cfg.config.components.limit.metadata.burst, '10');
});

test('changing the bucket key re-creates the component (Layotto body shape)', async (t) => {
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const sc = await startSidecar(t, limited(a, b, { requestsPerSecond: '1', burst: '1' }));
  const res = await request(`${adminUrl(sc)}/components/limit`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ kind: 'ratelimit', name: 'limit', metadata: { requestsPerSecond: '1', burst: '1', key: 'client' } }) });
  t.is(res.statusCode, 200);
  t.deepEqual(((await res.body.json()) as { components: unknown }).components, { limit: 'reinitialized' });
});

test('invalid ratelimit metadata is rejected with the metadata path', async (t) => {
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const sc = await startSidecar(t, limited(a, b, { requestsPerSecond: '1' }));
  const res = await request(`${adminUrl(sc)}/components/limit`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ metadata: { requestsPerSecond: 'fast', burst: '0', colour: 'red' } }) });
  t.is(res.statusCode, 400);
  const paths = ((await res.body.json()) as { errors: { path: string }[] }).errors.map((e) => e.path).sort();
  t.deepEqual(paths, ['components.limit.metadata.burst', 'components.limit.metadata.colour', 'components.limit.metadata.requestsPerSecond']);
});

test('ratelimit on a tcp listener refuses connections over the rate', async (t) => {
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const sc = await startSidecar(t, configOf({
    roles: { a: role(a) },
    components: { limit: { type: 'ratelimit', metadata: { requestsPerSecond: '0.01', burst: '2' } } },
    listeners: { raw: { protocol: 'tcp', target: 'a', filters: [{ type: 'ratelimit', component: 'limit' }] } },
  }));
  const roundTrip = () => tcpRoundTrip(sc, 'raw');
  t.regex(await roundTrip(), /^HTTP\/1.1 200/);
  t.regex(await roundTrip(), /^HTTP\/1.1 200/);
  t.is(await roundTrip(), '', 'the third connection is refused without a byte');
});

test('a re-created ratelimit inherits its buckets when the key is renamed (header → header)', async (t) => {
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const sc = await startSidecar(t, limited(a, b, { requestsPerSecond: '0.01', burst: '1', key: 'header:x-user' }));
  const url = listenerUrl(sc, 'web');
  t.is((await get(url, { 'x-user': 'alice' })).status, 200);
  t.is((await get(url, { 'x-user': 'alice' })).status, 429);
  const res = await request(`${adminUrl(sc)}/components/limit`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ metadata: { requestsPerSecond: '0.01', burst: '1', key: 'header:x-user-id' } }) });
  t.deepEqual(((await res.body.json()) as { components: unknown }).components, { limit: 'reinitialized' });
  t.is((await get(url, { 'x-user-id': 'alice' })).status, 429, "alice's empty bucket carried over");
  t.is((await get(url, { 'x-user-id': 'bob' })).status, 200);
  // client-address buckets do not become header buckets
  const res2 = await request(`${adminUrl(sc)}/components/limit`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ metadata: { requestsPerSecond: '0.01', burst: '1', key: 'client' } }) });
  t.is(res2.statusCode, 200);
  t.is((await get(url)).status, 200);
});

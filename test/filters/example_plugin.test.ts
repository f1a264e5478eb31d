import test from 'ava';
import { join } from 'node:path';
import { request } from 'undici';
import { ROOT, adminUrl, get, listenerUrl, startSidecar, startUpstream, twoRoles, weighted, type ConfigSpec, type FilterSpec } from '../helpers.js';

const PLUGIN = join(ROOT, 'examples/plugins/cookie-pin.mjs');

/** Roles a and b behind listener web: the cookie_pin filter (`pin`) with its table `table`, then all to a. */
const config = (a: { address: string }, b: { address: string }, table: Record<string, string>,
  pin: FilterSpec = { type: 'cookie_pin', cookie: 'user', component: 'pins' }): ConfigSpec => ({
  plugins: [PLUGIN],
  components: { pins: { type: 'cookie_table', metadata: table } },
  ...twoRoles(a, b, { filters: [pin, weighted({ a: 100, b: 0 })] }),
});

test('the example plugin pins by cookie and falls through to weighted', async (t) => {
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const sc = await startSidecar(t, config(a, b, { alice: 'b' }));
  const url = listenerUrl(sc, 'web');
  t.is(JSON.parse((await get(url, { cookie: 'theme=dark; user=alice' })).body).role, 'b');
  t.is(JSON.parse((await get(url, { cookie: 'user=carol' })).body).role, 'a');
  t.is(JSON.parse((await get(url)).body).role, 'a');
});

test('the example plugin table is updated in place through POST /components', async (t) => {
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const sc = await startSidecar(t, config(a, b, { alice: 'b' }));
  const url = listenerUrl(sc, 'web');
  const res = await request(`${adminUrl(sc)}/components/pins`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ metadata: { alice: 'a', carol: 'b' } }) });
  t.is(res.statusCode, 200);
  t.deepEqual(((await res.body.json()) as { components: unknown }).components, { pins: 'updated' });
  t.is(JSON.parse((await get(url, { cookie: 'user=alice' })).body).role, 'a');
  t.is(JSON.parse((await get(url, { cookie: 'user=carol' })).body).role, 'b');
});

test('the example plugin validates its config through the registry', async (t) => {
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const err = await t.throwsAsync(startSidecar(t, config(a, b, { alice: 'not a role!' }, { type: 'cookie_pin', component: 'pins' })));
  t.regex(err!.message, /listeners\.web\.filters\[0\]\.cookie: must be a cookie name/);
  t.regex(err!.message, /components\.pins\.metadata\.alice: "not a role!" is not a role name/);
});

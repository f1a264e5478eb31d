import test from 'ava';
import { get, listenerUrl, startSidecar, startUpstream, twoRoles } from '../helpers.js';

test('a request through an http listener reaches a role and comes back', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const sc = await startSidecar(t, twoRoles(a, b, { filters: [{ type: 'header_route', rules: [{ header: 'x-pin', equals: 'b', role: 'b' }] }] }));
  const r = await get(`${listenerUrl(sc, 'web')}/path?q=1`, { 'x-pin': 'b' });
  t.is(r.status, 200);
  t.is(JSON.parse(r.body).role, 'b');
  t.is(JSON.parse(r.body).url, '/path?q=1');
});

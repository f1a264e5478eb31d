import test from 'ava';
import { get, listenerUrl, oneRole, startSidecar, startUpstream } from '../helpers.js';

test('ratelimit key "header:client" keys by a header named client, not by the client\'s address', async (t) => {
  const up = await startUpstream(t, 'a');
  const sc = await startSidecar(t, {
    ...oneRole(up, { filters: [{ type: 'ratelimit', component: 'limit' }] }),
    components: { limit: { type: 'ratelimit', metadata: { requestsPerSecond: '0.001', burst: '1', key: 'header:client' } } },
  });
  const url = listenerUrl(sc, 'web');
  t.is((await get(url, { client: 'x' })).status, 200);
  t.is((await get(url, { client: 'y' })).status, 200, 'another header value, another bucket (same address)');
  t.is((await get(url, { client: 'x' })).status, 429, 'x spent its one token');
});

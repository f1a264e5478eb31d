import test from 'ava';
import { request, Agent } from 'undici';
import { listenerUrl, putConfig, role, startSidecar, startUpstream, uniqueHost, type ConfigSpec } from '../helpers.js';

test('after an http → tcp switch, a request on an old keep-alive connection is served, then that connection closes', async (t) => {
  const web = await startUpstream(t, 'web');
  const db = await startUpstream(t, 'db'); // the tcp role (speaks HTTP here, so the test can see where bytes go)
  const host = uniqueHost();
  const config = (protocol: 'http' | 'tcp', port: number): ConfigSpec => ({
    roles: { web: role(web), db: role(db, { channel: 'tcp' }) },
    listeners: { l: { address: `${host}:${port}`, protocol, target: protocol === 'http' ? 'web' : 'db' } },
  });
  const sc = await startSidecar(t, config('http', 0));
  const url = listenerUrl(sc, 'l');
  const port = Number(new URL(url).port);
  const one = new Agent({ connections: 1, keepAliveTimeout: 30_000 });
  t.teardown(() => one.close());
  const first = await request(url, { dispatcher: one });
  t.is(first.headers['x-role'], 'web');
  await first.body.text();

  const put = await putConfig(sc, config('tcp', port));
  t.is(put.status, 200, put.body);

  // Same agent, one connection: this request rides the keep-alive connection opened before the switch.
  const second = await request(url, { dispatcher: one, signal: AbortSignal.timeout(5000) });
  t.is(second.statusCode, 200, 'nothing is refused during the switch');
  t.is(second.headers['x-role'], 'db', 'it goes where a new connection would: the tcp role');
  t.is(second.headers.connection, 'close', 'and the old HTTP connection is handed over to the new protocol');
  await second.body.text();
  const third = await request(url, { dispatcher: one, signal: AbortSignal.timeout(5000) });
  t.is(third.headers['x-role'], 'db');
  await third.body.text();
  t.is(db.requests.at(-1)!.headers['x-forwarded-for'], undefined, 'the third request came through the byte pipe (no x-forwarded-for added)');
});

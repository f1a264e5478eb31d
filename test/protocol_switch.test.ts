import test from 'ava';
import { createServer, type Socket } from 'node:net';
import { request } from 'undici';
import { Agent } from 'undici';
import { adminUrl, listenerUrl, startSidecar, startUpstream, uniqueHost } from './helpers.js';

test('after an http → tcp switch, a request on an old keep-alive connection is refused, not forwarded to the tcp role', async (t) => {
  const web = await startUpstream(t, 'web');
  // The tcp role: records whatever bytes reach it (it must get none from the old connection).
  const got: Buffer[] = [];
  const sockets: Socket[] = [];
  const raw = createServer((s) => { sockets.push(s); s.on('data', (c) => got.push(c)); s.on('error', () => {}); });
  await new Promise<void>((r) => raw.listen(0, '127.0.0.1', r));
  t.teardown(() => { sockets.forEach((s) => s.destroy()); raw.close(); });
  const rawAddr = `127.0.0.1:${(raw.address() as { port: number }).port}`;
  const host = uniqueHost();
  const config = (protocol: string, port: number) => `
roles:
  web: { channels: { http: { endpoints: ["${web.address}"] } } }
  db: { channels: { tcp: { endpoints: ["${rawAddr}"] } } }
listeners:
  l: { address: "${host}:${port}", protocol: ${protocol}, target: ${protocol === 'http' ? 'web' : 'db'} }
`;
  const sc = await startSidecar(t, config('http', 0));
  const url = listenerUrl(sc, 'l');
  const port = Number(new URL(url).port);
  const one = new Agent({ connections: 1, keepAliveTimeout: 30_000 });
  t.teardown(() => one.close());
  const first = await request(url, { dispatcher: one });
  t.is(first.statusCode, 200);
  await first.body.text();

  const put = await request(`${adminUrl(sc)}/config`, { method: 'PUT', body: `admin: { address: "127.0.0.1:0" }\n${config('tcp', port)}` });
  t.is(put.statusCode, 200, await put.body.text());

  // Same agent, one connection: the request goes on the keep-alive connection opened before the switch.
  const second = await request(url, { dispatcher: one, signal: AbortSignal.timeout(5000) });
  t.is(second.statusCode, 503);
  t.is(second.headers.connection, 'close');
  await second.body.text();
  t.is(Buffer.concat(got).length, 0, 'no HTTP bytes reached the tcp role');
});

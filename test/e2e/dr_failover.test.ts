/**
 * Layotto's user story, end to end: an operator moves a Redis-like TCP role to
 * its disaster-recovery endpoints while clients are connected. New connections go
 * to the DR endpoints, connections already open keep working on the primary until
 * they close, and no connection is refused at any time.
 */
import test from 'ava';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { request } from 'undici';
import { adminUrl, oneRole, startSidecar, uniqueHost, until, yaml, type ConfigSpec } from '../helpers.js';

/** A tiny line server: answers "PING" with "+PONG <name>". */
async function redisLike(t: { teardown(fn: () => void): void }, name: string): Promise<{ server: Server; address: string }> {
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    createInterface({ input: s }).on('line', (l) => { if (l.trim() === 'PING') s.write(`+PONG ${name}\r\n`); });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => { for (const s of sockets) s.destroy(); server.close(); });
  const { port } = server.address() as { port: number };
  return { server, address: `127.0.0.1:${port}` };
}

/** A client connection through the proxy that can PING and read the answer. */
async function client(host: string, port: number): Promise<{ ping(): Promise<string>; close(): void }> {
  const s = connect(port, host);
  await new Promise<void>((ok, fail) => { s.once('connect', ok); s.once('error', fail); });
  const lines = createInterface({ input: s });
  const waiting: ((l: string) => void)[] = [];
  lines.on('line', (l) => waiting.shift()?.(l));
  return {
    ping: () => new Promise<string>((ok, fail) => {
      const timer = setTimeout(() => fail(new Error('no answer')), 5000);
      waiting.push((l) => { clearTimeout(timer); ok(l); });
      s.write('PING\r\n');
    }),
    close: () => s.end(),
  };
}

const config = (endpoint: string, address: string): ConfigSpec =>
  ({ drainTimeout: '20s', ...oneRole(endpoint, { address, protocol: 'tcp', target: 'cache' }, { role: 'cache', channel: 'redis', listener: 'cache' }) });

test('moving a TCP role to its DR endpoints: new connections go to DR, open ones drain, nothing is refused', async (t) => {
  const primary = await redisLike(t, 'primary');
  const dr = await redisLike(t, 'dr');
  const host = uniqueHost();
  const sc = await startSidecar(t, config(primary.address, `${host}:0`));
  const { port } = sc.addresses().get('cache')!;

  const before = await client(host, port);
  t.is(await before.ping(), '+PONG primary');

  // Clients keep connecting during the change: every one must get an answer.
  let stop = false;
  let refused = 0;
  let answered = 0;
  const churn = (async () => {
    while (!stop) {
      try {
        const c = await client(host, port);
        if ((await c.ping()).startsWith('+PONG')) answered++;
        c.close();
      } catch {
        refused++;
      }
    }
  })();
  await until(() => answered >= 5, 5000, 'traffic before the change');

  const res = await request(`${adminUrl(sc)}/config`, { method: 'PUT', headers: { 'content-type': 'application/yaml' }, body: yaml(config(dr.address, `${host}:0`)) }); // port 0 keeps the same socket for the listener name
  t.is(res.statusCode, 200, await res.body.text());

  const after = await client(host, port);
  t.is(await after.ping(), '+PONG dr', 'a new connection goes to the DR endpoint');
  t.is(await before.ping(), '+PONG primary', 'the connection opened before the change keeps its primary');
  t.deepEqual(sc.runtime.draining.size, 1, 'the old generation drains while its connection is open');

  const seen = answered;
  await until(() => answered >= seen + 5, 5000, 'traffic after the change');
  stop = true;
  await churn;
  t.is(refused, 0, 'no connection was refused or left unanswered');

  before.close();
  after.close();
  await until(() => sc.runtime.draining.size === 0, 5000, 'the old generation to drain once its last connection closed');
});

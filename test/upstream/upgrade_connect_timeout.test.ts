import test from 'ava';
import { createServer } from 'node:http';
import WebSocket, { WebSocketServer } from 'ws';
import { blackhole, oneRole, startSidecar } from '../helpers.js';

test('a WebSocket upgrade to a blackholed endpoint fails over after timeouts.connect', async (t) => {
  const dead = await blackhole(t);
  const good = createServer();
  new WebSocketServer({ server: good }).on('connection', (ws) => ws.on('message', (m) => ws.send(m)));
  await new Promise<void>((r) => good.listen(0, '127.0.0.1', r));
  t.teardown(() => { good.closeAllConnections(); good.close(); });
  const sc = await startSidecar(t, oneRole([`127.0.0.1:${dead}`, `127.0.0.1:${(good.address() as { port: number }).port}`],
    { target: 'r', timeouts: { connect: '400ms' } }, { listener: 'l' }));
  const a = sc.addresses().get('l')!;
  const t0 = performance.now();
  // The first upgrade goes to the first endpoint (round robin starts there): the blackhole.
  const ws = new WebSocket(`ws://${a.host}:${a.port}/`);
  t.teardown(() => ws.terminate());
  await new Promise<void>((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
    setTimeout(() => reject(new Error('no open within 5 s: the connect was not bounded')), 5000);
  });
  const took = performance.now() - t0;
  t.true(took >= 350, `opened after ${took.toFixed(0)} ms: it did not go through the blackhole first`);
  ws.send('ping');
  t.is(String(await new Promise((r) => ws.once('message', r))), 'ping');
});

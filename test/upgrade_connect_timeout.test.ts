import test from 'ava';
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { createInterface } from 'node:readline';
import WebSocket, { WebSocketServer } from 'ws';
import { startSidecar, uniqueHost } from './helpers.js';

/**
 * A loopback "blackhole": a socket that listens with a full accept queue and never
 * accepts, so the kernel drops further SYNs and a connect just hangs. Node cannot
 * listen without accepting, so python3 (on the machine image) holds it.
 */
async function blackhole(t: { teardown(fn: () => void): void }): Promise<number> {
  const py = spawn('python3', ['-c', `
import socket, sys, time
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(0)
port = s.getsockname()[1]
fill = []
for _ in range(3):
    c = socket.socket(); c.setblocking(False); c.connect_ex(('127.0.0.1', port)); fill.append(c)
time.sleep(0.2)
print(port, flush=True)
time.sleep(60)
`], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => py.kill());
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: py.stdout! }).once('line', resolve);
    py.once('exit', (code) => reject(new Error(`python3 exited ${code}`)));
    py.once('error', (err) => reject(new Error(`python3 is needed for the loopback blackhole: ${err.message}`)));
    setTimeout(() => reject(new Error('python3 did not start the blackhole within 5 s')), 5000);
  });
  return Number(line);
}

test('a WebSocket upgrade to a blackholed endpoint fails over after timeouts.connect', async (t) => {
  const dead = await blackhole(t);
  const good = createServer();
  new WebSocketServer({ server: good }).on('connection', (ws) => ws.on('message', (m) => ws.send(m)));
  await new Promise<void>((r) => good.listen(0, '127.0.0.1', r));
  t.teardown(() => { good.closeAllConnections(); good.close(); });
  const sc = await startSidecar(t, `
roles:
  r: { channels: { http: { endpoints: ["127.0.0.1:${dead}", "127.0.0.1:${(good.address() as { port: number }).port}"] } } }
listeners:
  l: { address: "${uniqueHost()}:0", target: r, timeouts: { connect: 400ms } }
`);
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

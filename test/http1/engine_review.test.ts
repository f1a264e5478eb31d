// Issue 13, the client-side HTTP/1.1 engine under an adversarial review: what the
// smuggling corpus does not reach (flow control across requests, close paths, timers).
import test from 'ava';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import type { Sidecar } from '../../src/sidecar.js';
import { oneRole, startSidecar, startUpstream, until, within } from '../helpers.js';

/** A client connection to the listener, and everything it has received so far. */
async function client(sc: Sidecar): Promise<{ s: Socket; got: () => string; closed: Promise<void> }> {
  const a = sc.addresses().get('web')!;
  const s = connect(a.port, a.host);
  await new Promise<void>((r) => s.once('connect', () => r()));
  let text = '';
  s.setEncoding('latin1');
  s.on('data', (d: string) => { text += d; });
  s.on('error', () => {});
  const closed = new Promise<void>((r) => s.once('close', () => r()));
  return { s, got: () => text, closed };
}

const statuses = (text: string): number[] => [...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));

function echoLength(req: IncomingMessage, res: ServerResponse): void {
  let n = 0;
  req.on('data', (d: Buffer) => { n += d.length; });
  req.on('end', () => res.end(`len ${n}`));
}

for (const bufferBodyBytes of [0, 1024 * 1024]) {
  test(`a body larger than the request's buffer, come whole with its head: the next request on the connection is read (bufferBodyBytes ${bufferBodyBytes})`, async (t) => {
    const up = await startUpstream(t, 'r', echoLength);
    const sc = await startSidecar(t, oneRole(up.address, { bufferBodyBytes }));
    const c = await client(sc);
    const body = 'x'.repeat(40_000);
    c.s.write(`POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    await until(() => c.got().includes('len 40000'), 5_000, 'the first answer');
    c.s.write('GET /next HTTP/1.1\r\nHost: h\r\n\r\n');
    await until(() => statuses(c.got()).length === 2, 3_000, 'the second answer');
    t.deepEqual(statuses(c.got()), [200, 200]);
    c.s.destroy();
  });
}

test('a body larger than the request\'s buffer, answered without being read: the next request is read', async (t) => {
  const up = await startUpstream(t, 'r');
  const sc = await startSidecar(t, oneRole(up.address, { filters: [{ type: 'fault', abort: { status: 503, percent: 100 } }] }));
  const c = await client(sc);
  const body = 'x'.repeat(40_000);
  c.s.write(`POST /early HTTP/1.1\r\nHost: h\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  await until(() => statuses(c.got()).length === 1, 5_000, 'the first answer');
  c.s.write('GET /next HTTP/1.1\r\nHost: h\r\n\r\n');
  await until(() => statuses(c.got()).length === 2, 3_000, 'the second answer');
  t.deepEqual(statuses(c.got()), [503, 503]);
  c.s.destroy();
});

test('a burst of pipelined requests far past the pipeline limit: every one is answered, in order', async (t) => {
  const up = await startUpstream(t, 'r', (req, res) => { req.resume(); res.end(`u${req.url}`); });
  const sc = await startSidecar(t, oneRole(up.address));
  const c = await client(sc);
  const n = 3000;
  let burst = '';
  for (let i = 0; i < n; i++) burst += `GET /${i} HTTP/1.1\r\nHost: h\r\nX-Pad: ${'p'.repeat(40)}\r\n\r\n`;
  c.s.write(burst);
  await until(() => c.got().includes(`u/${n - 1}`), 20_000, 'the last answer');
  const order = [...c.got().matchAll(/u\/(\d+)/g)].map((m) => Number(m[1]));
  t.deepEqual(order, [...Array(n).keys()]);
  c.s.destroy();
});

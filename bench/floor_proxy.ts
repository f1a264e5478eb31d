/**
 * The benchmark's "node-floor" scenario: the least an HTTP/1.1 proxy in Node can do
 * per request on raw sockets, to show what the design's floor is on this machine. It
 * reads a request head (bodiless requests only, which is all the benchmark sends),
 * writes it on a pooled keep-alive upstream connection with X-Forwarded-For, and
 * relays the Content-Length answer: two reads and two writes per request, as
 * switchyard and nginx make. No strictness, no filters, metrics or timers: not a
 * proxy anyone should run, a ruler for the one that is.
 *
 *   node dist/bench/floor_proxy.js LISTEN_HOST LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT
 */
import { connect, createServer, type Socket } from 'node:net';

const [host, port, upHost, upPort] = process.argv.slice(2);
if (!host || !port || !upHost || !upPort) {
  console.error('usage: floor_proxy.js LISTEN_HOST LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT');
  process.exit(2);
}
const HEAD_END = Buffer.from('\r\n\r\n');

interface Client extends Socket { waiting: Buffer | null; busy: boolean }
interface Upstream extends Socket { client: Client | null; head: Buffer | null; left: number }

const idle: Upstream[] = [];

function upstream(): Upstream {
  const s = connect({ host: upHost!, port: Number(upPort), noDelay: true }) as Upstream;
  s.client = null;
  s.head = null;
  s.left = -1;
  s.on('data', (d: Buffer) => answer(s, d));
  s.on('error', () => s.client?.destroy());
  return s;
}

/** Bytes of an answer: its head is looked at once for the Content-Length, then everything goes to the client. */
function answer(s: Upstream, d: Buffer): void {
  const client = s.client;
  if (client === null) return;
  if (s.left < 0) {
    const buf = s.head === null ? d : Buffer.concat([s.head, d]);
    const end = buf.indexOf(HEAD_END);
    if (end < 0) {
      s.head = buf;
      return;
    }
    const head = buf.toString('latin1', 0, end).toLowerCase();
    const at = head.indexOf('\r\ncontent-length:');
    const length = at < 0 ? 0 : parseInt(head.slice(at + 17, head.indexOf('\r', at + 2) >>> 0), 10);
    s.head = null;
    s.left = end + 4 + length;
    d = buf;
  }
  s.left -= d.length;
  client.write(d);
  if (s.left <= 0) {
    s.left = -1;
    s.client = null;
    idle.push(s);
    client.busy = false;
    next(client);
  }
}

/** The client's next request, once the one before it is answered. */
function next(c: Client): void {
  if (c.busy || c.waiting === null) return;
  const end = c.waiting.indexOf(HEAD_END);
  if (end < 0) return;
  const lines = c.waiting.toString('latin1', 0, end).split('\r\n');
  c.waiting = end + 4 === c.waiting.length ? null : c.waiting.subarray(end + 4);
  let out = `${lines[0]}\r\n`;
  for (let i = 1; i < lines.length; i++) if (!/^connection:/i.test(lines[i]!)) out += `${lines[i]}\r\n`;
  out += `x-forwarded-for: ${c.remoteAddress}\r\n\r\n`;
  c.busy = true;
  const s = idle.pop() ?? upstream();
  s.client = c;
  s.write(out, 'latin1');
}

createServer({ noDelay: true }, (socket) => {
  const c = socket as unknown as Client;
  c.waiting = null;
  c.busy = false;
  c.on('data', (d: Buffer) => {
    c.waiting = c.waiting === null ? d : Buffer.concat([c.waiting, d]);
    next(c);
  });
  c.on('error', () => c.destroy());
}).listen(Number(port), host, () => console.log(`floor proxy on ${host}:${port}`));

// The upstream pool reads every plain connection into one buffer that the next read
// reuses (h1_pool.ts, READ_BUFFER): an answer's bytes must be copied by whoever keeps
// them. These send big random bodies through, to clients that read slowly (so writes
// queue) over HTTP/1.1 and HTTP/2, several at once (so reads of different
// connections interleave), and compare digests.
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { oneRole, startSidecar, startUpstream, within } from '../helpers.js';
import { h2Connect } from '../http2/support.js';

const SIZE = 3 * 1024 * 1024;
const BODIES = [randomBytes(SIZE), randomBytes(SIZE), randomBytes(SIZE)];
const digest = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

async function setup(t: Parameters<typeof startUpstream>[0], chunked: boolean) {
  const up = await startUpstream(t, 'r', (req, res) => {
    req.resume();
    const body = BODIES[Number(req.url!.slice(1))]!;
    res.writeHead(200, chunked ? {} : { 'content-length': body.length });
    // In pieces of odd sizes, so answers arrive in reads of every size.
    for (let at = 0; at < body.length; at += 70_001) res.write(body.subarray(at, at + 70_001));
    res.end();
  });
  return startSidecar(t, oneRole(up.address));
}

/** GET over a raw HTTP/1.1 connection, read with pauses; the body (de-chunked when chunked). */
function slowGet(sc: Awaited<ReturnType<typeof startSidecar>>, path: string): Promise<Buffer> {
  const a = sc.addresses().get('web')!;
  return within(new Promise<Buffer>((resolve, reject) => {
    const s = connect(a.port, a.host, () => s.write(`GET ${path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n`));
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => {
      chunks.push(c);
      s.pause();
      setTimeout(() => s.resume(), 1);
    });
    s.on('error', reject);
    s.on('end', () => {
      const all = Buffer.concat(chunks);
      const headEnd = all.indexOf('\r\n\r\n');
      const head = all.subarray(0, headEnd).toString('latin1');
      let body = all.subarray(headEnd + 4);
      if (/transfer-encoding: chunked/i.test(head)) {
        const out: Buffer[] = [];
        let at = 0;
        for (;;) {
          const eol = body.indexOf('\r\n', at);
          const n = parseInt(body.subarray(at, eol).toString('latin1'), 16);
          if (n === 0) break;
          out.push(body.subarray(eol + 2, eol + 2 + n));
          at = eol + 2 + n + 2;
        }
        body = Buffer.concat(out);
      }
      resolve(body);
    });
  }), 30_000, `GET ${path}`);
}

for (const chunked of [false, true]) {
  test(`big answers (${chunked ? 'chunked' : 'Content-Length'}) reach slow HTTP/1.1 clients intact, three at once`, async (t) => {
    const sc = await setup(t, chunked);
    const got = await Promise.all([0, 1, 2].map((i) => slowGet(sc, `/${i}`)));
    t.deepEqual(got.map(digest), BODIES.map(digest));
  });

  test(`big answers (${chunked ? 'chunked' : 'Content-Length'}) from an HTTP/1.1 upstream reach HTTP/2 streams intact, three at once`, async (t) => {
    const sc = await setup(t, chunked);
    const session = h2Connect(t, sc);
    const one = (i: number): Promise<Buffer> => within(new Promise<Buffer>((resolve, reject) => {
      const stream = session.request({ ':path': `/${i}` });
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => {
        chunks.push(c);
        stream.pause();
        setTimeout(() => stream.resume(), 1);
      });
      stream.on('end', () => resolve(Buffer.concat(chunks)));
      stream.on('error', reject);
    }), 30_000, `h2 /${i}`);
    const got = await Promise.all([0, 1, 2].map(one));
    t.deepEqual(got.map(digest), BODIES.map(digest));
  });
}

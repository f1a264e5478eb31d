import test from 'ava';
import { connect } from 'node:net';
import { request } from 'undici';
import { adminUrl, get, listenerUrl, startSidecar, startUpstream, until } from './helpers.js';

async function metric(sc: Parameters<typeof adminUrl>[0], pattern: RegExp): Promise<number> {
  const text = await (await request(`${adminUrl(sc)}/metrics`)).body.text();
  const line = text.split('\n').find((l) => pattern.test(l));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

const oneRole = (address: string) => `
roles:
  r: { channels: { http: { endpoints: ["${address}"] } } }
listeners:
  web: { address: "127.0.0.1:0", target: r }
`;

test('requests_total counts the status sent; 499 only when the client left before the response started', async (t) => {
  let hold: (() => void) | null = null;
  const up = await startUpstream(t, 'r', (req, res) => {
    if (req.url === '/cut') {
      // headers and some body, then the upstream dies
      res.writeHead(200, { 'content-length': '100' });
      res.write('partial');
      setTimeout(() => res.socket?.destroy(), 20);
    } else if (req.url === '/slow') {
      hold = () => res.end('late');
    } else res.end('ok');
  });
  const sc = await startSidecar(t, oneRole(up.address));
  const url = listenerUrl(sc, 'web');
  t.is((await get(url)).status, 200);

  // the upstream cuts the body after its headers: counted as the 200 it was sent, plus an upstream error
  await t.throwsAsync(get(`${url}/cut`));
  await until(async () => (await metric(sc, /^switchyard_upstream_errors_total\{.*role="r"/)) === 1, 5000, 'the upstream error');

  // the client leaves before any response: 499
  const { hostname, port } = new URL(url);
  const s = connect(Number(port), hostname);
  s.write('GET /slow HTTP/1.1\r\nHost: x\r\n\r\n');
  await until(() => hold !== null, 5000, 'the slow request to arrive');
  s.destroy();
  await until(async () => (await metric(sc, /^switchyard_requests_total\{.*code="499"\}/)) === 1, 5000, 'the 499');
  t.is(await metric(sc, /^switchyard_requests_total\{listener="web",vset="r",role="r",code="200"\}/), 2);
});

import test from 'ava';
import { connect } from 'node:net';
import { request } from 'undici';
import { ConfigError } from '../../src/errors.js';
import { client, get, listenerUrl, putConfig, startSidecar, startUpstream, twoRoles, weighted, type FilterSpec } from '../helpers.js';

/** `x-to: b` pins role b. */
const PIN: FilterSpec = { type: 'header_route', rules: [{ header: 'x-to', equals: 'b', role: 'b' }] };

test('headers: request set, add and remove reach the upstream', async (t) => {
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const sc = await startSidecar(t, twoRoles(a, b, {
    filters: [
      PIN,
      {
        type: 'headers',
        request: { set: { 'X-Env': 'prod', 'x-served-role': '%role%' }, add: { 'x-tag': 'added' }, remove: ['x-secret'] },
      },
    ],
  }));
  const res = await request(listenerUrl(sc, 'web'), { dispatcher: client, headers: ['x-to', 'b', 'x-env', 'dev', 'x-tag', 'client', 'X-Secret', 's3cr3t'] });
  t.is(res.statusCode, 200);
  await res.body.text();
  const req = b.requests[0]!;
  t.is(req.headers['x-env'], 'prod', 'set replaces the client value');
  t.is(req.headers['x-served-role'], 'b', '%role% is the role chosen by the routing filters');
  t.is(req.headers['x-secret'], undefined);
  const raw = req.rawHeaders;
  const tags = raw.filter((_, i) => i % 2 === 1 && raw[i - 1]!.toLowerCase() === 'x-tag');
  t.deepEqual(tags, ['client', 'added'], 'add appends one more occurrence');
  t.true(raw.includes('X-Env'), "a set header keeps the config's name case");
});

test('headers: a response header naming the role and generation is one line of config', async (t) => {
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const config = (weights: Record<string, number>, address?: string) => twoRoles(a, b, {
    address,
    filters: [
      PIN,
      {
        type: 'headers',
        response: { set: { 'x-served-by': '%role%@%vset%/%listener% gen %generation% 100%%' }, remove: ['x-role'] },
      },
      weighted(weights),
    ],
  });
  const sc = await startSidecar(t, config({ a: 1, b: 0 }));
  const url = listenerUrl(sc, 'web');
  let r = await get(url, { 'x-to': 'b' });
  t.is(r.headers['x-served-by'], 'b@svc/web gen 1 100%');
  t.is(r.headers['x-role'], undefined, 'the upstream header was removed');
  r = await get(url);
  t.is(r.headers['x-served-by'], 'a@svc/web gen 1 100%', 'the role picked by weighted after the headers filter ran');
  const put = await putConfig(sc, config({ a: 0, b: 1 }, new URL(url).host));
  t.is(put.status, 200, put.body);
  r = await get(url);
  t.is(r.headers['x-served-by'], 'b@svc/web gen 2 100%');
});

test("headers: response edits apply to switchyard's own answers too", async (t) => {
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  await b.close(); // b is dead: its requests get the proxy's 502
  const sc = await startSidecar(t, twoRoles(a, b, {
    filters: [
      PIN,
      { type: 'headers', response: { set: { 'x-env': 'prod', 'x-served-by': '[%role%]' } } },
      weighted({ a: 1, b: 0 }),
      { type: 'fault', abort: { percent: 100, status: 503 }, role: 'a' },
    ],
  }));
  const url = listenerUrl(sc, 'web');
  const aborted = await get(url);
  t.is(aborted.status, 503);
  t.is(aborted.headers['x-env'], 'prod');
  t.is(aborted.headers['x-served-by'], '[a]', 'the role the request was routed to');
  const dead = await get(url, { 'x-to': 'b' });
  t.is(dead.status, 502);
  t.is(dead.headers['x-env'], 'prod');
  t.is(dead.headers['x-served-by'], '[b]');
});

test('headers: bad edits are rejected with their paths', async (t) => {
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const err = await t.throwsAsync(startSidecar(t, twoRoles(a, b, {
    filters: [{
      type: 'headers',
      request: { set: { 'content-length': '1', 'x-ok': '%rolee%' }, remove: ['bad header'], sett: {} },
      response: { add: { 'x-crlf': 'a\r\nb' } },
    }],
  })), { instanceOf: ConfigError });
  const got = (err as ConfigError).issues.map((i) => `${i.path}: ${i.code}`).sort();
  t.deepEqual(got, [
    'listeners.web.filters[0].request.remove[0]: SY_ERR_CONFIG_VALUE',
    'listeners.web.filters[0].request.set.content-length: SY_ERR_CONFIG_VALUE',
    'listeners.web.filters[0].request.set.x-ok: SY_ERR_CONFIG_VALUE',
    'listeners.web.filters[0].request.sett: SY_ERR_CONFIG_UNKNOWN_KEY',
    'listeners.web.filters[0].response.add.x-crlf: SY_ERR_CONFIG_VALUE',
  ]);
});

test('headers: values Node or undici would refuse to send are rejected at validation with their paths (issue 11)', async (t) => {
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const err = await t.throwsAsync(startSidecar(t, twoRoles(a, b, {
    filters: [{
      type: 'headers',
      request: {
        set: { 'x-check': 'naïve ✓', 'x-ctl': 'a\u0001b', expect: '100-continue' },
        add: { 'x-emoji': 'hi 👋', 'x-del': 'a\u007fb' },
      },
      response: { set: { 'x-nul': 'a\u0000b', 'x-ok': 'café\tau lait' } },
    }],
  })), { instanceOf: ConfigError });
  const issues = (err as ConfigError).issues;
  t.deepEqual(issues.map((i) => `${i.path}: ${i.code}`).sort(), [
    'listeners.web.filters[0].request.add.x-del: SY_ERR_CONFIG_VALUE',
    'listeners.web.filters[0].request.add.x-emoji: SY_ERR_CONFIG_VALUE',
    'listeners.web.filters[0].request.set.expect: SY_ERR_CONFIG_VALUE',
    'listeners.web.filters[0].request.set.x-check: SY_ERR_CONFIG_VALUE',
    'listeners.web.filters[0].request.set.x-ctl: SY_ERR_CONFIG_VALUE',
    'listeners.web.filters[0].response.set.x-nul: SY_ERR_CONFIG_VALUE',
  ], 'Latin-1 text and a tab are fine');
  t.regex(issues.find((i) => i.path.endsWith('x-check'))!.message, /only hold Latin-1 text: U\+2713/);
  t.regex(issues.find((i) => i.path.endsWith('x-emoji'))!.message, /U\+1F44B/);
  t.regex(issues.find((i) => i.path.endsWith('x-ctl'))!.message, /control character U\+0001/);
});

test('headers: a Latin-1 value reaches the upstream and the client as its Latin-1 bytes', async (t) => {
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const sc = await startSidecar(t, twoRoles(a, b, { filters: [{ type: 'headers', request: { set: { 'x-drink': 'café' } }, response: { set: { 'x-drink': 'crème' } } }] }));
  const r = await get(listenerUrl(sc, 'web'));
  t.is(r.status, 200);
  t.is(r.headers['x-drink'], 'crème');
  t.is((a.requests[0] ?? b.requests[0])!.headers['x-drink'], 'café');
});

test('headers: response edits reach every answer switchyard makes on the listener, whatever the filter order (issue 11)', async (t) => {
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  // The fault answers before the headers filter runs: its 503 used to go without the edits.
  const sc = await startSidecar(t, twoRoles(a, b, {
    filters: [
      PIN,
      { type: 'fault', abort: { percent: 100, status: 503 }, role: 'b' },
      { type: 'headers', response: { set: { 'x-env': 'prod', 'x-served-by': '[%role%]' } } },
      weighted({ a: 1 }),
    ],
  }));
  const url = listenerUrl(sc, 'web');
  const ok = await get(url);
  t.is(ok.status, 200);
  t.like(ok.headers, { 'x-env': 'prod', 'x-served-by': '[a]' });
  const aborted = await get(url, { 'x-to': 'b' });
  t.is(aborted.status, 503);
  t.like(aborted.headers, { 'x-env': 'prod', 'x-served-by': '[b]', 'x-switchyard-fault': 'abort' });

  // Answers written raw on the socket: the parser's 400, the Host 400, CONNECT's 405, an upgrade's fault.
  const { host, port } = new URL(url);
  const raw = (text: string): Promise<string> => new Promise((resolve, reject) => {
    const s = connect(Number(port), new URL(url).hostname, () => s.write(text));
    let got = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => { got += d; });
    s.on('end', () => { s.destroy(); resolve(got); });
    s.on('error', reject);
  });
  const head = (answer: string): string => answer.slice(0, answer.indexOf('\r\n\r\n') + 2);
  for (const [what, text, status, role] of [
    ['a malformed request (the parser)', `GET / HTTP/1.1\r\nHost: ${host}\r\nBad Header: x\r\n\r\n`, 400, ''],
    ['two Host lines', `GET / HTTP/1.1\r\nHost: ${host}\r\nHost: other\r\n\r\n`, 400, ''],
    ['CONNECT', `CONNECT ${host} HTTP/1.1\r\nHost: ${host}\r\n\r\n`, 405, ''],
    ['an upgrade the fault answers', `GET /ws HTTP/1.1\r\nHost: ${host}\r\nx-to: b\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`, 503, 'b'],
  ] as const) {
    const h = head(await raw(text));
    t.regex(h, new RegExp(`^HTTP/1\\.1 ${status} `), what);
    t.regex(h, /\r\nx-env: prod\r\n/, what);
    t.regex(h, new RegExp(`\\r\\nx-served-by: \\[${role}\\]\\r\\n`), what);
  }
});

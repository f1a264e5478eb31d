// Issue 13, the request side of "no request smuggling": what the corpus
// (smuggling.test.ts) found on Node's parser and undici, each as a named test of
// what it regresses. Every refusal is switchyard's answer, counted with role "" and
// logged like the badRequest refusals before it, on a connection that then closes.
import test, { type ExecutionContext } from 'ava';
import { connect } from 'node:net';
import { join } from 'node:path';
import type { IncomingMessage } from 'node:http';
import { checkConfig } from '../../src/reload/check.js';
import { parseConfigTexts } from '../../src/config/load.js';
import { DEFAULT_MAX_HEADERS_COUNT } from '../../src/config/defaults.js';
import type { Sidecar } from '../../src/sidecar.js';
import {
  ROOT, findMetric, get, listenerUrl, metric, oneRole, startSidecar, startUpstream, tempFiles, untilLogLines, untilMetric, within,
  type ListenerSpec, type Upstream,
} from '../helpers.js';

/** Sends raw bytes (in pieces, each once the previous got an answer when `stepwise`); everything received once the proxy closes. */
function raw(sc: Sidecar, bytes: string | string[], ms = 5_000): Promise<string> {
  const a = sc.addresses().get('web')!;
  const parts = typeof bytes === 'string' ? [bytes] : bytes;
  return within(new Promise((resolve) => {
    let got = '';
    const s = connect(a.port, a.host, () => s.write(parts.shift()!, 'latin1'));
    s.setEncoding('latin1');
    s.on('data', (d: string) => {
      got += d;
      // The next piece goes once the answer to the previous one is in (so the request before it was forwarded).
      if (parts.length > 0 && /\r\n\r\n[^]*$/.test(got)) s.write(parts.shift()!, 'latin1');
    });
    s.on('close', () => resolve(got));
    // A write after the proxy closed (the rest of a refused request): what matters is what came back.
    s.on('error', () => {});
  }), ms, `the proxy to close the connection for ${JSON.stringify(parts)}`);
}

/** The statuses in a connection's answers, in order. */
function statuses(text: string): number[] {
  return [...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
}

async function setup(t: ExecutionContext, listener: Partial<ListenerSpec> = {}): Promise<{ up: Upstream; sc: Sidecar; log: string }> {
  const up = await startUpstream(t, 'r');
  up.server.maxHeadersCount = 0; // its own Node server would drop the lines past its default, as switchyard's did
  const { dir } = await tempFiles(t, {});
  const log = join(dir, 'access.log');
  const sc = await startSidecar(t, { accessLog: { path: log }, ...oneRole(up.address, listener) });
  // A warm upstream connection: undici writes a request at once on an idle one, so a
  // request forwarded by mistake reaches the upstream before the client's answer is decided.
  t.is((await get(`${listenerUrl(sc, 'web')}/warm`)).status, 200);
  return { up, sc, log };
}

/** The upstream's requests besides the warm-up. */
const seen = (up: Upstream): IncomingMessage[] => up.requests.filter((r) => r.url !== '/warm');

/** A refusal is counted under no role and logged with its status and SY_ERR_BAD_REQUEST. */
async function refusalRecorded(t: ExecutionContext, sc: Sidecar, log: string, status: number, path: string): Promise<void> {
  await untilMetric(sc, 'switchyard_requests_total', { listener: 'web', role: '', code: String(status) }, 1, 5_000, `the ${status} counted with role ""`);
  const [line] = await untilLogLines(log, (l) => l.path === path);
  t.like(line, { role: '', status, upstreamError: 'SY_ERR_BAD_REQUEST' });
  t.is(await findMetric(sc, 'switchyard_requests_total', { listener: 'web', role: 'r', code: /^(4\d\d|499)$/ }), undefined, 'nothing counted against the role');
}

// ---------------------------------------------------------------- HTTP/1.0, and what follows a request on its connection

test('HTTP/1.0: of two pipelined requests the first is answered, and the second is never forwarded', async (t) => {
  const { up, sc } = await setup(t);
  // Before: the first was forwarded, and the client got only Node's 400 for the second.
  const answer = await raw(sc, 'GET /first HTTP/1.0\r\n\r\nGET /second HTTP/1.0\r\n\r\n');
  t.deepEqual(statuses(answer), [200], answer);
  t.regex(answer, /"url":"\/first"/);
  t.deepEqual(seen(up).map((r) => r.url), ['/first']);
});

test('HTTP/1.0: a POST without Content-Length is refused with 400, never forwarded (RFC 1945 §8.3)', async (t) => {
  const { up, sc, log } = await setup(t);
  // Before: forwarded as an empty POST (its side effects happened), and the body was taken for a request: Node's 400.
  const answer = await raw(sc, 'POST /no-length HTTP/1.0\r\nHost: h\r\n\r\nhello');
  t.deepEqual(statuses(answer), [400], answer);
  t.regex(answer, /needs a Content-Length/);
  t.deepEqual(seen(up), []);
  await refusalRecorded(t, sc, log, 400, '/no-length');
});

test('a keep-alive request followed by garbage gets its answer, then the 400', async (t) => {
  const { up, sc } = await setup(t);
  // Before: the request was forwarded, and the client got only the 400.
  const answer = await raw(sc, 'GET /ok HTTP/1.1\r\nHost: h\r\n\r\nGARBAGE\r\n\r\n');
  t.deepEqual(statuses(answer), [200, 400], answer);
  t.deepEqual(seen(up).map((r) => r.url), ['/ok']);
  await untilMetric(sc, 'switchyard_requests_total', { listener: 'web', role: '', code: '400' }, 1);
});

test('a request pipelined after a refused one is not forwarded (its answer would never come)', async (t) => {
  const { up, sc } = await setup(t);
  const answer = await raw(sc, 'GET /bad HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\nGET /after HTTP/1.1\r\nHost: h\r\n\r\n');
  t.deepEqual(statuses(answer), [400], answer);
  t.deepEqual(seen(up), []);
});

test('a bad chunk in a pipelined request: the request before it is answered, the bad one refused once, with role ""', async (t) => {
  const { up, sc, log } = await setup(t);
  const answer = await raw(sc, 'GET /ok HTTP/1.1\r\nHost: h\r\n\r\nPOST /chunks HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n\r\n');
  t.deepEqual(statuses(answer), [200, 400], answer);
  t.true(seen(up).every((r) => r.url !== '/chunks' || !r.complete), 'the bad request never reached the upstream whole');
  // Before: a raw 400 on a destroyed connection, the first answer lost, and the bad request counted again as the role's 499.
  await refusalRecorded(t, sc, log, 400, '/chunks');
});

// ---------------------------------------------------------------- header count

test(`more than maxHeadersCount (default ${DEFAULT_MAX_HEADERS_COUNT}) header lines get 431, not a request with some dropped`, async (t) => {
  const { up, sc, log } = await setup(t);
  const lines = (n: number): string => Array.from({ length: n }, (_, i) => `h${i}:v\r\n`).join('');
  // Before: Node kept the first 1,000 (2,000 pairs) and dropped the rest without a word.
  const answer = await raw(sc, `GET /many HTTP/1.1\r\nHost: h\r\n${lines(1500)}\r\n`);
  t.deepEqual(statuses(answer), [431], answer);
  t.deepEqual(seen(up), []);
  await refusalRecorded(t, sc, log, 431, '/many');
  t.deepEqual(statuses(await raw(sc, `GET /101 HTTP/1.1\r\nHost: h\r\n${lines(100)}\r\n`)), [431]);
  const fine = await raw(sc, `GET /100 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n${lines(98)}\r\n`);
  t.deepEqual(statuses(fine), [200]);
  t.is(seen(up).at(-1)!.rawHeaders.filter((name, i) => i % 2 === 0 && /^h\d+$/.test(name)).length, 98, 'every header line reached the upstream');
});

test('maxHeadersCount is the listener\'s to raise', async (t) => {
  const { up, sc } = await setup(t, { maxHeadersCount: 2_000 });
  const lines = Array.from({ length: 1500 }, (_, i) => `h${i}:v\r\n`).join('');
  t.deepEqual(statuses(await raw(sc, `GET /many HTTP/1.1\r\nHost: h\r\nConnection: close\r\n${lines}\r\n`)), [200]);
  t.is(seen(up)[0]!.rawHeaders.filter((name, i) => i % 2 === 0 && /^h\d+$/.test(name)).length, 1500, 'all 1,500 reached the upstream');
});

test('maxHeadersCount is validated: an integer from 1 to 10000, on http listeners', async (t) => {
  const base = 'roles: { r: { channels: { http: { endpoints: ["127.0.0.1:1"] } } } }\nlisteners:\n  web:\n';
  const issues = async (extra: string): Promise<string[]> => {
    const r = await checkConfig(parseConfigTexts([{ name: 'test.yaml', text: base + extra }], ROOT), {});
    return r.ok ? [] : r.issues.map((i) => `${i.code} ${i.path}`);
  };
  for (const bad of ['0', '10001', '1.5', '"100"', '-1']) {
    t.deepEqual(await issues(`    address: 127.0.0.9:0\n    target: r\n    maxHeadersCount: ${bad}\n`), ['SY_ERR_CONFIG_VALUE listeners.web.maxHeadersCount'], bad);
  }
  t.deepEqual(await issues('    address: 127.0.0.9:0\n    target: r\n    maxHeadersCount: 1\n'), []);
  t.deepEqual(await issues('    address: 127.0.0.9:0\n    target: r\n    maxHeadersCount: 10000\n'), []);
  t.deepEqual(await issues('    address: 127.0.0.9:7000\n    protocol: tcp\n    target: r\n    maxHeadersCount: 50\n'),
    ['SY_ERR_CONFIG_VALUE listeners.web.maxHeadersCount']);
});

// ---------------------------------------------------------------- framing

test('Transfer-Encoding: gzip, chunked gets 501: the gzip coding is never lost on the way (RFC 9112 §6.1)', async (t) => {
  const { up, sc, log } = await setup(t);
  // Before: de-chunked and forwarded as identity, the gzip bytes taken for the content.
  const answer = await raw(sc, 'POST /gz HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n');
  t.deepEqual(statuses(answer), [501], answer);
  t.regex(answer, /gzip transfer coding/);
  t.deepEqual(seen(up), []);
  await refusalRecorded(t, sc, log, 501, '/gz');
  t.deepEqual(statuses(await raw(sc, 'POST /gz2 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n')), [501]);
  t.deepEqual(statuses(await raw(sc, 'POST /twice HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked, chunked\r\n\r\n0\r\n\r\n')), [400]);
});

test('a Content-Length above 2^53 - 1 gets 400: undici would send a rounded length', async (t) => {
  const { up, sc, log } = await setup(t);
  // Before: 9007199254740993 went upstream as 9007199254740992.
  const answer = await raw(sc, 'POST /huge HTTP/1.1\r\nHost: h\r\nContent-Length: 9007199254740993\r\n\r\nabc');
  t.deepEqual(statuses(answer), [400], answer);
  t.deepEqual(seen(up), []);
  await refusalRecorded(t, sc, log, 400, '/huge');
  t.deepEqual(statuses(await raw(sc, 'POST /leading-zeros HTTP/1.1\r\nHost: h\r\nConnection: close\r\nContent-Length: 0000000000000000000003\r\n\r\nabc')), [200]);
});

test('Transfer-Encoding on an HTTP/1.0 request gets 400 (RFC 9112 §6.1)', async (t) => {
  const { up, sc } = await setup(t);
  t.deepEqual(statuses(await raw(sc, 'POST /te10 HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n')), [400]);
  t.deepEqual(seen(up), []);
});

test('HTTP/2.0 and HTTP/0.9 request lines get 505', async (t) => {
  const { up, sc } = await setup(t);
  t.deepEqual(statuses(await raw(sc, 'GET /v2 HTTP/2.0\r\nHost: h\r\n\r\n')), [505]);
  t.deepEqual(statuses(await raw(sc, 'GET /v09\r\n\r\n')), [505]);
  t.deepEqual(seen(up), []);
});

// ---------------------------------------------------------------- Host

test('Connection: host does not strip Host, nor Connection: content-length the body', async (t) => {
  const { up, sc } = await setup(t);
  // Before: Host was dropped, and undici sent the endpoint's address instead.
  const answer = await raw(sc, 'POST /conn HTTP/1.1\r\nHost: svc.example\r\nConnection: host, content-length, close\r\nContent-Length: 3\r\n\r\nabc');
  t.deepEqual(statuses(answer), [200], answer);
  const req = seen(up)[0]!;
  t.is(req.headers.host, 'svc.example');
  t.is(req.headers['content-length'], '3');
});

test('an absolute-form target\'s authority replaces Host (RFC 9112 §3.2.2), and its path goes as written', async (t) => {
  const { up, sc } = await setup(t);
  // Before: the upstream got Host: client.example, and a path normalized by the URL parser.
  const answer = await raw(sc, 'GET http://other.example:8080/a/../b?q=%2F HTTP/1.1\r\nHost: client.example\r\nConnection: close\r\n\r\n');
  t.deepEqual(statuses(answer), [200], answer);
  const req = seen(up)[0]!;
  t.is(req.url, '/a/../b?q=%2F');
  t.is(req.headers.host, 'other.example:8080');
  t.is(req.headers['x-forwarded-host'], 'other.example:8080');
  t.deepEqual(statuses(await raw(sc, 'GET http://user@other.example/ HTTP/1.1\r\nHost: h\r\n\r\n')), [400], 'userinfo is refused');
  t.deepEqual(statuses(await raw(sc, 'GET ftp://other.example/ HTTP/1.1\r\nHost: h\r\n\r\n')), [400], 'a scheme other than http(s) is refused');
  t.is(await metric(sc, 'switchyard_requests_total', { listener: 'web', role: 'r', code: '200' }), 2);
});

import test from 'ava';
import { constants, createSecureServer, createServer, type Http2Server, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { configOf, get, listenerUrl, metric, scrape, startSidecar, tempFiles, uniqueHost, until, weighted, type ConfigSpec } from '../helpers.js';
import { makePki } from '../tls_support.js';

/*
 * The HTTP/2 pool to an upstream (a channel with protocol: http2): streams share
 * connections up to the peer's limit, a full connection opens another, GOAWAY and
 * REFUSED_STREAM are handled without losing the request.
 */

interface H2Upstream { address: string; server: Http2Server; sessions: Set<ServerHttp2Session>; opened: () => number }

async function startH2(t: Parameters<typeof startSidecar>[0], settings: { maxConcurrentStreams?: number },
  onStream: (stream: ServerHttp2Stream, session: ServerHttp2Session, nth: number) => void): Promise<H2Upstream> {
  const server = createServer({ settings });
  const sessions = new Set<ServerHttp2Session>();
  let opened = 0;
  let streams = 0;
  server.on('session', (s) => {
    opened++;
    sessions.add(s);
    s.on('close', () => sessions.delete(s));
  });
  server.on('stream', (stream, _headers) => {
    stream.on('error', () => {});
    onStream(stream, stream.session as ServerHttp2Session, ++streams);
  });
  const host = uniqueHost();
  await new Promise<void>((r) => server.listen(0, host, r));
  t.teardown(() => new Promise<void>((r) => { for (const s of sessions) s.destroy(); server.close(() => r()); }));
  return { address: `${host}:${(server.address() as AddressInfo).port}`, server, sessions, opened: () => opened };
}

function viaSidecar(up: H2Upstream, more: Partial<ConfigSpec> = {}): ConfigSpec {
  return configOf({
    roles: { a: { channels: { http: { endpoints: [up.address], protocol: 'http2' } } } },
    listeners: { web: { address: `${uniqueHost()}:0`, target: 'a.http', filters: [weighted({ a: 1 })] } },
    ...more,
  } as ConfigSpec);
}

test('streams share one connection up to the upstream\'s SETTINGS_MAX_CONCURRENT_STREAMS; more open another connection, none waits in a queue', async (t) => {
  const held: ServerHttp2Stream[] = [];
  const up = await startH2(t, { maxConcurrentStreams: 2 }, (stream) => {
    stream.respond({ ':status': 200 });
    held.push(stream);
  });
  const sc = await startSidecar(t, viaSidecar(up));
  // The first request lets the pool learn the upstream's limit before the burst.
  const first = get(`${listenerUrl(sc, 'web')}/warm`);
  await until(() => held.length === 1, 5_000, 'the first stream');
  held.shift()!.end('warm');
  t.is((await first).body, 'warm');
  const replies = Array.from({ length: 5 }, (_, i) => get(`${listenerUrl(sc, 'web')}/r${i}`));
  await until(() => held.length === 5, 5_000, 'five streams upstream at once');
  t.true(up.opened() >= 3, `${up.opened()} connections for 5 streams at 2 per connection`);
  for (const s of held.splice(0)) s.end('ok');
  t.deepEqual((await Promise.all(replies)).map((r) => r.body), ['ok', 'ok', 'ok', 'ok', 'ok']);
});

test('a stream the upstream refused unprocessed (REFUSED_STREAM) is sent again on a new connection, a POST too: the client never sees it', async (t) => {
  const up = await startH2(t, {}, (stream, _session, nth) => {
    if (nth === 1) {
      stream.close(constants.NGHTTP2_REFUSED_STREAM);
      return;
    }
    stream.respond({ ':status': 200 });
    stream.end(`served on stream ${nth}`);
  });
  const sc = await startSidecar(t, viaSidecar(up));
  const r = await get(`${listenerUrl(sc, 'web')}/once`, {}, { method: 'POST', body: 'not idempotent, never processed' });
  t.is(r.status, 200);
  t.is(r.body, 'served on stream 2');
  t.is(up.opened(), 2, 'on a second connection');
  t.deepEqual((await scrape(sc)).series('switchyard_upstream_errors_total'), [], 'not an upstream failure');
});

test('a connection the upstream sent GOAWAY on takes no new stream: the next request opens another, and the first one closes once idle', async (t) => {
  const up = await startH2(t, {}, (stream, session, nth) => {
    stream.respond({ ':status': 200 });
    stream.end(`stream ${nth}`);
    if (nth === 1) session.close();
  });
  const sc = await startSidecar(t, viaSidecar(up));
  t.is((await get(`${listenerUrl(sc, 'web')}/1`)).body, 'stream 1');
  await until(() => up.sessions.size === 0, 5_000, 'the first connection closed');
  t.is((await get(`${listenerUrl(sc, 'web')}/2`)).body, 'stream 2');
  t.is(up.opened(), 2);
  t.deepEqual((await scrape(sc)).series('switchyard_upstream_errors_total'), []);
});

test('a reset stream during the answer is a reset, and the pool keeps serving on the connection', async (t) => {
  const up = await startH2(t, {}, (stream, _s, nth) => {
    stream.respond({ ':status': 200 });
    if (nth === 1) {
      stream.write('partial');
      // destroy resets at once (close would first end the body, then reset a finished stream).
      setTimeout(() => stream.destroy(new Error('reset mid-answer')), 20);
    } else stream.end('whole');
  });
  const sc = await startSidecar(t, viaSidecar(up));
  await t.throwsAsync(get(`${listenerUrl(sc, 'web')}/cut`));
  t.is((await get(`${listenerUrl(sc, 'web')}/next`)).body, 'whole');
  t.is(up.opened(), 1, 'the same connection');
  t.is(await metric(sc, 'switchyard_upstream_errors_total', { listener: 'web', role: 'a', reason: 'reset' }), 1);
});

test('a dead http2 endpoint is a connect failure: 502, and the next endpoint serves', async (t) => {
  const up = await startH2(t, {}, (stream) => {
    stream.respond({ ':status': 200 });
    stream.end('alive');
  });
  const { deadAddress } = await import('../helpers.js');
  const dead = await deadAddress();
  const config = viaSidecar(up);
  (config.roles!.a!.channels.http as unknown as { endpoints: string[] }).endpoints = [dead, up.address];
  const sc = await startSidecar(t, config);
  for (let i = 0; i < 4; i++) t.is((await get(`${listenerUrl(sc, 'web')}/x`)).body, 'alive');
  const only = viaSidecar(up);
  (only.roles!.a!.channels.http as unknown as { endpoints: string[] }).endpoints = [dead];
  const sc2 = await startSidecar(t, only);
  const r = await get(`${listenerUrl(sc2, 'web')}/x`);
  t.is(r.status, 502);
});

test('protocol http2 with tls reaches the endpoint over TLS with ALPN h2, its certificate checked', async (t) => {
  const ca = await makePki('h2 upstream CA');
  t.teardown(() => ca.close());
  const leaf = await ca.leaf('upstream', ['pay.internal']);
  const server = createSecureServer({ cert: leaf.cert, key: leaf.key, allowHTTP1: false });
  const alpn: string[] = [];
  server.on('secureConnection', (s) => alpn.push(String(s.alpnProtocol)));
  server.on('stream', (stream) => {
    stream.respond({ ':status': 200 });
    stream.end('over h2 and tls');
  });
  const host = uniqueHost();
  await new Promise<void>((r) => server.listen(0, host, r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const { paths } = await tempFiles(t, { 'ca.pem': ca.ca.cert });
  const config = configOf({
    roles: { a: { channels: { http: { endpoints: [`${host}:${(server.address() as AddressInfo).port}`], protocol: 'http2', tls: { ca: paths['ca.pem'], serverName: 'pay.internal' } } } } },
    listeners: { web: { address: `${uniqueHost()}:0`, target: 'a.http', filters: [weighted({ a: 1 })] } },
  } as ConfigSpec);
  const sc = await startSidecar(t, config);
  const r = await get(`${listenerUrl(sc, 'web')}/x`);
  t.is(r.body, 'over h2 and tls');
  t.deepEqual(alpn, ['h2']);
  // Another name than the certificate's: a TLS failure, 502.
  (config.roles!.a!.channels.http as unknown as { tls: { serverName: string } }).tls.serverName = 'other.internal';
  const sc2 = await startSidecar(t, config);
  t.is((await get(`${listenerUrl(sc2, 'web')}/x`)).status, 502);
  t.is(await metric(sc2, 'switchyard_upstream_errors_total', { listener: 'web', role: 'a', reason: 'tls' }), 1);
});

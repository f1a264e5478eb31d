import test, { type ExecutionContext } from 'ava';
import { writeFile } from 'node:fs/promises';
import { createServer as createHttpsServer, type ServerOptions } from 'node:https';
import type { AddressInfo } from 'node:net';
import { connect } from 'node:net';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { WebSocket, WebSocketServer } from 'ws';
import type { Sidecar } from '../../src/sidecar.js';
import {
  adminUrl, channel, findMetric, get, listenerUrl, oneRole, putConfig, startSidecar, tempFiles, until, within, yaml, type ChannelSpec, type ConfigSpec,
} from '../helpers.js';
import { makePki, type Pem, type Pki } from '../tls_support.js';

/*
 * TLS to upstream endpoints (roles.<r>.channels.<c>.tls): the server's certificate
 * verified against `ca`, its name against `serverName` (or the endpoint's host), a
 * client certificate for mTLS; a handshake failure is a connect failure (the next
 * endpoint, then 502, reason "tls") with its cause in the log. Certificates are made
 * by openssl for this file: `ca` signs the upstreams', `other` is a CA nobody trusts.
 */

let ca: Pki;
let other: Pki;
let server: Pem;
let expired: Pem;
let client: Pem;
let untrusted: Pem;

test.before(async () => {
  [ca, other] = await Promise.all([makePki('switchyard test CA'), makePki('an unknown CA')]);
  [server, expired, client, untrusted] = await Promise.all([
    ca.leaf('server', ['up.test', '127.0.0.1']),
    ca.leaf('expired', ['up.test', '127.0.0.1'], { days: 0 }),
    ca.leaf('client', ['sidecar.test'], { client: true }),
    other.leaf('untrusted', ['up.test', '127.0.0.1']),
  ]);
});
test.after.always(async () => { await Promise.all([ca?.close(), other?.close()]); });

interface TlsUpstream {
  address: string;
  /** Per request: whether its connection resumed a TLS session, and the client certificate's CN. */
  seen: { resumed: boolean; clientCn: string | null }[];
}

/** An HTTPS upstream with `pem`; `mtls`: client certificates signed by `ca` are required. `close`: each answer closes its connection. */
async function httpsUpstream(t: ExecutionContext, pem: Pem, o: { mtls?: boolean; close?: boolean; name?: string } = {}): Promise<TlsUpstream> {
  const seen: TlsUpstream['seen'] = [];
  const options: ServerOptions = { cert: pem.cert, key: pem.key, ...(o.mtls ? { requestCert: true, rejectUnauthorized: true, ca: ca.ca.cert } : {}) };
  const srv = createHttpsServer(options, (req, res) => {
    const socket = req.socket as TLSSocket;
    const peer = socket.getPeerCertificate();
    seen.push({ resumed: socket.isSessionReused(), clientCn: peer && peer.subject ? String(peer.subject.CN) : null });
    if (req.url === '/health') {
      res.end('ok');
      return;
    }
    res.writeHead(200, { 'x-role': o.name ?? 'tls', ...(o.close ? { connection: 'close' } : {}) });
    res.end(`tls ${o.name ?? ''}`);
  });
  srv.on('tlsClientError', () => {});
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => { srv.closeAllConnections(); srv.close(() => r()); }));
  return { address: `127.0.0.1:${(srv.address() as AddressInfo).port}`, seen };
}

function tlsChannel(endpoints: string[], tls: ChannelSpec['tls'], more: Omit<ChannelSpec, 'endpoints' | 'tls'> = {}): ChannelSpec {
  return { ...channel(endpoints), ...more, tls };
}

async function start(t: ExecutionContext, ch: ChannelSpec, log: string[] = []): Promise<Sidecar> {
  return startSidecar(t, { drainTimeout: '2s', ...oneRole(ch) }, { log });
}

async function tlsErrors(sc: Sidecar): Promise<number> {
  return (await findMetric(sc, 'switchyard_upstream_errors_total', { reason: 'tls' })) ?? 0;
}

test('an HTTPS endpoint verified against `ca` serves; later connections resume the TLS session', async (t) => {
  const up = await httpsUpstream(t, server, { close: true });
  const sc = await start(t, tlsChannel([up.address], { ca: ca.ca.certFile }));
  for (let i = 0; i < 3; i++) {
    const r = await get(listenerUrl(sc, 'web'));
    t.is(r.status, 200, r.body);
    t.is(r.body, 'tls ');
  }
  t.is(up.seen.length, 3);
  t.false(up.seen[0]!.resumed);
  t.true(up.seen.slice(1).every((s) => s.resumed), JSON.stringify(up.seen));
  t.is(await tlsErrors(sc), 0);
});

test('serverName is sent as SNI and checked: a name the certificate has serves, another is a 502 (reason tls) with the cause logged', async (t) => {
  const up = await httpsUpstream(t, server);
  const good = await start(t, tlsChannel([up.address], { ca: ca.ca.certFile, serverName: 'up.test' }));
  t.is((await get(listenerUrl(good, 'web'))).status, 200);
  const log: string[] = [];
  const bad = await start(t, tlsChannel([up.address], { ca: ca.ca.certFile, serverName: 'other.test' }), log);
  const r = await get(listenerUrl(bad, 'web'));
  t.is(r.status, 502);
  t.regex(r.body, /TLS handshake/);
  t.is(await tlsErrors(bad), 1);
  t.true(log.some((l) => /TLS failed: .*other\.test.*ERR_TLS_CERT_ALTNAME_INVALID/.test(l)), log.join('\n'));
});

test('a certificate from an unknown CA, and an expired one, are each a 502 with reason tls and the cause in the log', async (t) => {
  for (const [pem, cause] of [[untrusted, /UNABLE_TO_VERIFY_LEAF_SIGNATURE|unable to verify/], [expired, /CERT_HAS_EXPIRED|expired/]] as const) {
    const up = await httpsUpstream(t, pem);
    const log: string[] = [];
    const sc = await start(t, tlsChannel([up.address], { ca: ca.ca.certFile }), log);
    const r = await get(listenerUrl(sc, 'web'));
    t.is(r.status, 502, r.body);
    t.is(await tlsErrors(sc), 1);
    t.true(log.some((l) => /TLS failed/.test(l) && cause.test(l)), log.join('\n'));
    t.is(up.seen.length, 0, 'no request reached it');
  }
});

test('without `ca` the system store decides: a private CA is not trusted', async (t) => {
  const up = await httpsUpstream(t, server);
  const sc = await start(t, tlsChannel([up.address], {}));
  t.is((await get(listenerUrl(sc, 'web'))).status, 502);
  t.is(await tlsErrors(sc), 1);
});

test('mTLS: an upstream that requires a client certificate refuses the sidecar without one (502, tls) and serves it with cert + key', async (t) => {
  const up = await httpsUpstream(t, server, { mtls: true });
  const without = await start(t, tlsChannel([up.address], { ca: ca.ca.certFile }));
  t.is((await get(listenerUrl(without, 'web'))).status, 502);
  t.is(await tlsErrors(without), 1);
  const withCert = await start(t, tlsChannel([up.address], { ca: ca.ca.certFile, cert: client.certFile, key: client.keyFile }));
  const r = await get(listenerUrl(withCert, 'web'));
  t.is(r.status, 200, r.body);
  t.is(up.seen.at(-1)!.clientCn, 'sidecar.test');
});

test('a handshake failure moves on to the next endpoint, as a refused connect does', async (t) => {
  const bad = await httpsUpstream(t, untrusted, { name: 'bad' });
  const good = await httpsUpstream(t, server, { name: 'good' });
  const sc = await start(t, tlsChannel([bad.address, good.address], { ca: ca.ca.certFile }));
  for (let i = 0; i < 4; i++) {
    const r = await get(listenerUrl(sc, 'web'));
    t.is(r.status, 200, r.body);
    t.is(r.headers['x-role'], 'good');
  }
  t.true(await tlsErrors(sc) >= 1);
});

test('health checks use the channel\'s TLS: an HTTPS endpoint with a path check stays healthy and serves', async (t) => {
  const up = await httpsUpstream(t, server);
  const sc = await start(t, tlsChannel([up.address], { ca: ca.ca.certFile }, { healthCheck: { path: '/health', interval: '100ms', timeout: '100ms', unhealthyThreshold: 1 } }));
  await until(() => up.seen.length >= 2, 5_000, 'two health checks');
  t.is((await get(listenerUrl(sc, 'web'))).status, 200);
  t.true(up.seen.length >= 3);
});

test('TLS files are read on every reload: a ca file fixed in place is taken by the next reload', async (t) => {
  const up = await httpsUpstream(t, server);
  const { paths } = await tempFiles(t, { 'ca.pem': other.ca.cert });
  const config: ConfigSpec = { drainTimeout: '2s', ...oneRole(tlsChannel([up.address], { ca: paths['ca.pem']! })) };
  const sc = await startSidecar(t, config);
  t.is((await get(listenerUrl(sc, 'web'))).status, 502);
  await writeFile(paths['ca.pem']!, ca.ca.cert);
  const push = await putConfig(sc, config);
  t.is(push.status, 200, push.body);
  t.is((await get(listenerUrl(sc, 'web'))).status, 200);
});

test('bad TLS files reject the config, naming the key: unreadable, not PEM, a key that is not the certificate\'s, cert without key', async (t) => {
  const { paths } = await tempFiles(t, { 'junk.pem': 'not a certificate\n' });
  const sc = await startSidecar(t, oneRole(['127.0.0.1:9']));
  const cases: [ChannelSpec['tls'], string, RegExp][] = [
    [{ ca: '/nonexistent/ca.pem' }, 'roles.r.channels.http.tls.ca', /cannot read .*ENOENT/],
    [{ ca: paths['junk.pem']! }, 'roles.r.channels.http.tls.ca', /not a PEM certificate/],
    [{ cert: client.certFile, key: server.keyFile }, 'roles.r.channels.http.tls.key', /does not belong to the certificate/],
    [{ cert: client.certFile }, 'roles.r.channels.http.tls.key', /both cert and key/],
  ];
  for (const [tls, path, message] of cases) {
    const r = await putConfig(sc, yaml({ ...oneRole(tlsChannel(['127.0.0.1:9'], tls)) }));
    t.is(r.status, 400, r.body);
    const errors = (JSON.parse(r.body) as { errors: { path: string; message: string }[] }).errors;
    t.true(errors.some((e) => e.path === path && message.test(e.message)), r.body);
  }
  t.is(sc.runtime.current!.number, 1, 'the running generation stays');
});

test('a tcp listener can originate TLS to a TLS-only upstream', async (t) => {
  const srv = createTlsServer({ cert: server.cert, key: server.key }, (s) => { s.on('error', () => {}); s.pipe(s); });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => srv.close(() => r())));
  const address = `127.0.0.1:${(srv.address() as AddressInfo).port}`;
  const sc = await startSidecar(t, { drainTimeout: '2s', ...oneRole(tlsChannel([address], { ca: ca.ca.certFile }), { protocol: 'tcp' }) });
  const a = sc.addresses().get('web')!;
  const s = connect(a.port, a.host);
  t.teardown(() => s.destroy());
  s.write('hello through TLS');
  const echoed = await within(new Promise<string>((resolve) => {
    let got = '';
    s.on('data', (d) => { got += d.toString(); if (got.length >= 17) resolve(got); });
  }), 5_000, 'the echo');
  t.is(echoed, 'hello through TLS');
});

test('a WebSocket upgrade reaches a wss upstream over the channel\'s TLS', async (t) => {
  const srv = createHttpsServer({ cert: server.cert, key: server.key });
  const wss = new WebSocketServer({ server: srv });
  wss.on('connection', (ws) => ws.on('message', (m) => ws.send(`echo ${String(m)}`)));
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => { wss.close(); srv.closeAllConnections(); srv.close(() => r()); }));
  const address = `127.0.0.1:${(srv.address() as AddressInfo).port}`;
  const sc = await start(t, tlsChannel([address], { ca: ca.ca.certFile }));
  // A Host naming something else: the certificate is checked against the endpoint (127.0.0.1), never the client's name.
  const ws = new WebSocket(listenerUrl(sc, 'web').replace('http:', 'ws:'), { headers: { host: 'other.test' } });
  t.teardown(() => ws.terminate());
  await within(new Promise((r, j) => { ws.once('open', r); ws.once('error', j); }), 5_000, 'the upgrade');
  ws.send('hi');
  const m = await within(new Promise<string>((r) => ws.once('message', (d) => r(String(d)))), 5_000, 'the echo');
  t.is(m, 'echo hi');
});

test('GET /config shows a channel\'s TLS file paths, never the key material', async (t) => {
  const sc = await start(t, tlsChannel(['127.0.0.1:9'], { ca: ca.ca.certFile, cert: client.certFile, key: client.keyFile }));
  const body = await (await fetch(`${adminUrl(sc)}/config`)).text();
  t.false(body.includes('PRIVATE KEY'));
  t.false(body.includes('BEGIN CERTIFICATE'));
  t.true(body.includes(client.keyFile), 'the key file is named');
});

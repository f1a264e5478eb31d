import test, { type ExecutionContext } from 'ava';
import { X509Certificate } from 'node:crypto';
import { mkdir, rename, symlink, writeFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import type { AddressInfo } from 'node:net';
import { createServer as createNetServer } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { join } from 'node:path';
import { Sidecar } from '../../src/sidecar.js';
import { metric, oneRole, putConfig, startSidecar, startUpstream, tempFiles, until, untilLogLines, within, yaml, type ConfigSpec } from '../helpers.js';
import { makePki, type Pem, type Pki } from '../tls_support.js';

/*
 * TLS terminated on listeners (listeners.<l>.tls): http and tcp listeners, client
 * certificates asked for and verified with clientCa, and a certificate rotated by a
 * reload while new connections keep coming, none of them refused.
 */

let ca: Pki;
let listenerA: Pem;
let listenerB: Pem;
let client: Pem;
let stranger: Pem;

test.before(async () => {
  ca = await makePki('switchyard listener CA');
  const other = await makePki('a CA the listener does not trust');
  [listenerA, listenerB, client, stranger] = await Promise.all([
    ca.leaf('listener-a', ['proxy.test', '127.0.0.1']),
    ca.leaf('listener-b', ['proxy.test', '127.0.0.1']),
    ca.leaf('client', ['app.test'], { client: true }),
    other.leaf('stranger', ['app.test'], { client: true }),
  ]);
});
test.after.always(async () => { await ca?.close(); });

/** A TLS handshake with the listener, then one GET; what came back, and the certificate the listener showed. */
function httpsGet(sc: Sidecar, o: ConnectionOptions = {}): Promise<{ status: number; body: string; serial: string; alpn: string | false | null }> {
  const a = sc.addresses().get('web')!;
  return within(new Promise((resolve, reject) => {
    const req = httpsRequest({ host: a.host, port: a.port, path: '/', agent: false, ca: ca.ca.cert, servername: 'proxy.test', ALPNProtocols: ['http/1.1'], ...o } as never, (res) => {
      const socket = res.socket as TLSSocket;
      const serial = socket.getPeerCertificate().serialNumber;
      const alpn = socket.alpnProtocol;
      let body = '';
      res.on('data', (c) => { body += String(c); });
      res.on('end', () => resolve({ status: res.statusCode!, body, serial, alpn }));
    });
    req.on('error', reject);
    req.end();
  }), 5_000, 'an HTTPS request');
}

async function listenerConfig(t: ExecutionContext, up: string, pem: Pem, more: Record<string, unknown> = {}): Promise<{ config: ConfigSpec; paths: Record<string, string> }> {
  const { paths } = await tempFiles(t, { 'cert.pem': pem.cert, 'key.pem': pem.key, 'client-ca.pem': ca.ca.cert });
  const tls = { cert: paths['cert.pem']!, key: paths['key.pem']!, ...more };
  return { config: { drainTimeout: '2s', ...oneRole([up], { tls }) }, paths };
}

test('an http listener terminates TLS (ALPN http/1.1) and forwards the request', async (t) => {
  const up = await startUpstream(t, 'a');
  const { config } = await listenerConfig(t, up.address, listenerA);
  const sc = await startSidecar(t, config);
  const r = await httpsGet(sc);
  t.is(r.status, 200);
  t.is(r.alpn, 'http/1.1');
  t.is(up.requests.length, 1);
});

test('clientCa: a client without a certificate, or with one of another CA, is refused; one with a good certificate is served and logged by subject', async (t) => {
  const up = await startUpstream(t, 'a');
  const { config, paths } = await listenerConfig(t, up.address, listenerA, {});
  const log = join(paths['cert.pem']!, '..', 'access.log');
  const withCa: ConfigSpec = { ...config, accessLog: { path: log } };
  (withCa.listeners!['web'] as unknown as { tls: Record<string, string> }).tls.clientCa = paths['client-ca.pem']!;
  const sc = await startSidecar(t, withCa);
  t.is(await metric(sc, 'switchyard_tls_handshake_errors_total', { listener: 'web' }), 0);
  await t.throwsAsync(httpsGet(sc));
  await t.throwsAsync(httpsGet(sc, { cert: stranger.cert, key: stranger.key }));
  t.is(up.requests.length, 0);
  t.is(await metric(sc, 'switchyard_tls_handshake_errors_total', { listener: 'web' }), 2, 'both refusals counted');
  const r = await httpsGet(sc, { cert: client.cert, key: client.key });
  t.is(r.status, 200);
  const [line] = await untilLogLines(log, (l) => l.type === 'http');
  t.is(line!.clientCert, 'CN=app.test');
});

test('a certificate rotated in place is taken by the next reload; no handshake fails meanwhile', async (t) => {
  const up = await startUpstream(t, 'a');
  const { config, paths } = await listenerConfig(t, up.address, listenerA);
  const sc = await startSidecar(t, config);
  const serialA = (await httpsGet(sc)).serial;
  let failed = 0;
  let done = 0;
  let stop = false;
  // New connections, back to back, all through the rotation.
  const load = (async () => {
    while (!stop) {
      await httpsGet(sc).then((r) => { if (r.status === 200) done++; else failed++; }, () => { failed++; });
    }
  })();
  await writeFile(paths['cert.pem']!, listenerB.cert);
  await writeFile(paths['key.pem']!, listenerB.key);
  const push = await putConfig(sc, config);
  t.is(push.status, 200, push.body);
  const serialB = (await httpsGet(sc)).serial;
  stop = true;
  await load;
  t.not(serialB, serialA, 'new connections get the new certificate');
  t.is(failed, 0);
  t.true(done > 0);
});

test('a bad listener certificate rejects the config and the running one keeps serving', async (t) => {
  const up = await startUpstream(t, 'a');
  const { config, paths } = await listenerConfig(t, up.address, listenerA);
  const sc = await startSidecar(t, config);
  await writeFile(paths['key.pem']!, listenerB.key);
  const r = await putConfig(sc, config);
  t.is(r.status, 400);
  t.regex(r.body, /listeners\.web\.tls\.key/);
  t.regex(r.body, /SY_ERR_TLS_FILE/);
  t.is((await httpsGet(sc)).status, 200, 'the old certificate still serves');
});

test('a tcp listener terminates TLS and pipes the plain bytes', async (t) => {
  const echo = createNetServer((s) => { s.on('error', () => {}); s.pipe(s); });
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => echo.close(() => r())));
  const { paths } = await tempFiles(t, { 'cert.pem': listenerA.cert, 'key.pem': listenerA.key });
  const sc = await startSidecar(t, { drainTimeout: '2s', ...oneRole([`127.0.0.1:${(echo.address() as AddressInfo).port}`], { protocol: 'tcp', address: '127.0.0.1:0', tls: { cert: paths['cert.pem']!, key: paths['key.pem']! } }) });
  const a = sc.addresses().get('web')!;
  const s = tlsConnect({ host: a.host, port: a.port, ca: ca.ca.cert, servername: 'proxy.test' });
  t.teardown(() => s.destroy());
  await within(new Promise((r, j) => { s.once('secureConnect', r); s.once('error', j); }), 5_000, 'the handshake');
  s.write('over TLS');
  const got = await within(new Promise<string>((r) => s.once('data', (d) => r(String(d)))), 5_000, 'the echo');
  t.is(got, 'over TLS');
});

test('with watching on, a certificate swapped in a Kubernetes Secret volume (..data symlink) is applied without a reload call; its expiry is exported', async (t) => {
  const up = await startUpstream(t, 'a');
  // The kubelet's layout: tls.crt → ..data/tls.crt, ..data → ..<timestamp>/.
  const { dir } = await tempFiles(t, {});
  const v1 = join(dir, '..2026_01_01.1');
  await mkdir(v1);
  await writeFile(join(v1, 'tls.crt'), listenerA.cert);
  await writeFile(join(v1, 'tls.key'), listenerA.key);
  await symlink('..2026_01_01.1', join(dir, '..data'));
  await symlink('..data/tls.crt', join(dir, 'tls.crt'));
  await symlink('..data/tls.key', join(dir, 'tls.key'));
  const configFile = join(dir, 'config.yaml');
  await writeFile(configFile, yaml({ admin: { address: '127.0.0.1:0' }, drainTimeout: '2s', ...oneRole([up.address], { tls: { cert: join(dir, 'tls.crt'), key: join(dir, 'tls.key') } }) }));
  const sc = await Sidecar.start({ files: [configFile], watch: true, log: () => {} });
  t.teardown(() => sc.stop());
  const first = await httpsGet(sc);
  t.is(first.status, 200);
  const notAfter = (file: Pem) => Date.parse(new X509Certificate(file.cert).validTo) / 1000;
  t.is(await metric(sc, 'switchyard_tls_certificate_expiry_seconds', { listener: 'web' }), notAfter(listenerA));

  const v2 = join(dir, '..2026_01_02.2');
  await mkdir(v2);
  await writeFile(join(v2, 'tls.crt'), listenerB.cert);
  await writeFile(join(v2, 'tls.key'), listenerB.key);
  await symlink('..2026_01_02.2', join(dir, '..data_tmp'));
  await rename(join(dir, '..data_tmp'), join(dir, '..data'));
  await until(async () => (await httpsGet(sc)).serial !== first.serial, 10_000, 'the new certificate to be served');
  t.is(sc.runtime.current!.number, 2, 'one reload for the swap');
  t.is(await metric(sc, 'switchyard_tls_certificate_expiry_seconds', { listener: 'web' }), notAfter(listenerB));
});

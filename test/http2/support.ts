import { connect, constants, type ClientHttp2Session, type IncomingHttpHeaders, type OutgoingHttpHeaders, type SecureClientSessionOptions } from 'node:http2';
import { connect as netConnect } from 'node:net';
import type { Sidecar } from '../../src/sidecar.js';
import { within } from '../helpers.js';

/** One HTTP/2 connection (h2c prior knowledge, or h2 over TLS) to a sidecar's listener, closed at teardown. */
export function h2Connect(t: { teardown(fn: () => unknown): void }, sc: Sidecar, listener = 'web', tls?: SecureClientSessionOptions): ClientHttp2Session {
  const a = sc.addresses().get(listener)!;
  const session = tls ? connect(`https://${a.host}:${a.port}`, tls) : connect(`http://${a.host}:${a.port}`);
  session.on('error', () => {});
  t.teardown(() => session.destroy());
  return session;
}

export interface H2Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
  trailers: IncomingHttpHeaders;
}

/** One request on a session: `body` sent without a Content-Length unless the headers give one. */
export function h2Request(session: ClientHttp2Session, path: string, headers: OutgoingHttpHeaders = {}, body?: string | Buffer, ms = 10_000): Promise<H2Reply> {
  return within(new Promise<H2Reply>((resolve, reject) => {
    const stream = session.request({ ':method': body === undefined ? 'GET' : 'POST', ':path': path, ...headers }, { endStream: body === undefined });
    let response: IncomingHttpHeaders = {};
    let trailers: IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    stream.on('response', (h) => { response = h; });
    stream.on('trailers', (h) => { trailers = h; });
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => resolve({ status: Number(response[':status']), headers: response, body: Buffer.concat(chunks).toString(), trailers }));
    stream.on('error', reject);
    stream.on('close', () => {
      if (stream.rstCode !== constants.NGHTTP2_NO_ERROR) reject(new Error(`stream reset with code ${stream.rstCode}`));
    });
    if (body !== undefined) stream.end(body);
  }), ms, `HTTP/2 request ${path}`);
}

/** Resolves with the error code of the next GOAWAY the session receives. */
export function nextGoaway(session: ClientHttp2Session, ms = 10_000): Promise<number> {
  return within(new Promise<number>((resolve) => session.once('goaway', (code: number) => resolve(code))), ms, 'a GOAWAY');
}

/**
 * Two uploads with trailers to a sidecar's listener, one after the other: an HTTP/1.1
 * chunked body "hello" with `X-Sum: 42` and an `authorization` trailer, then an HTTP/2
 * stream "world" with `x-sum: 7` and a `host` trailer (fields a trailer may not carry).
 */
export async function uploadsWithTrailers(t: { teardown(fn: () => unknown): void }, sc: Sidecar): Promise<void> {
  const { host, port } = sc.addresses().get('web')!;
  const answer = await within(new Promise<string>((resolve, reject) => {
    const s = netConnect({ host, port }, () => s.write('POST /t HTTP/1.1\r\nHost: svc\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 42\r\nauthorization: Bearer smuggled\r\n\r\n'));
    let got = '';
    s.setEncoding('latin1');
    s.on('data', (c: string) => { got += c; });
    s.on('end', () => resolve(got));
    s.on('error', reject);
  }), 10_000, 'the HTTP/1.1 answer');
  if (!answer.startsWith('HTTP/1.1 200')) throw new Error(`the HTTP/1.1 upload was answered: ${answer.slice(0, 80)}`);
  const session = h2Connect(t, sc);
  const stream = session.request({ ':method': 'POST', ':path': '/t2' }, { waitForTrailers: true });
  stream.on('wantTrailers', () => stream.sendTrailers({ 'x-sum': '7', host: 'elsewhere' }));
  stream.end('world');
  stream.resume();
  await within(new Promise((resolve) => stream.once('close', resolve)), 10_000, 'the HTTP/2 answer');
}

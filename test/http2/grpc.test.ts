import test from 'ava';
import { createServer as createH2Server, type Http2Server } from 'node:http2';
import type { AddressInfo } from 'node:net';
import {
  configOf, deadAddress, get, listenerUrl, metric, startSidecar, startUpstream, tempFiles, uniqueHost, untilLogLines, untilMetric, weighted,
  type ConfigSpec, type FilterSpec,
} from '../helpers.js';
import { echoClient, grpc, startEchoServer, unary, type EchoReply, type EchoServer } from './grpc_support.js';
import { h2Connect, h2Request } from './support.js';

/*
 * gRPC through switchyard: grpc-js clients and servers, one client channel (one HTTP/2
 * connection) through an http listener to role channels with `protocol: http2`.
 */

/** Roles a and b (channel grpc, http2) in vset svc, and listener web on svc.grpc with `filters`. */
function grpcConfig(servers: Record<string, { address: string }>, filters: FilterSpec[], more: Partial<ConfigSpec> = {}): ConfigSpec {
  return configOf({
    roles: Object.fromEntries(Object.entries(servers).map(([name, s]) => [name, { channels: { grpc: { endpoints: [s.address], protocol: 'http2' } } }])),
    vsets: { svc: { channels: ['grpc'], roles: Object.fromEntries(Object.keys(servers).map((r) => [r, {}])) } },
    listeners: { web: { address: `${uniqueHost()}:0`, target: 'svc.grpc', filters } },
    ...more,
  } as ConfigSpec);
}

function address(sc: { addresses(): Map<string, { host: string; port: number }> }): string {
  const a = sc.addresses().get('web')!;
  return `${a.host}:${a.port}`;
}

test('unary, server-streaming, client-streaming and bidi calls go through, with their metadata, on one channel', async (t) => {
  const a = await startEchoServer(t, 'a');
  const sc = await startSidecar(t, grpcConfig({ a }, [weighted({ a: 1 })]));
  const client = echoClient(t, address(sc));
  const md = new grpc.Metadata();
  md.set('x-tenant', 'acme');
  const reply = await unary(client, { text: 'hello' }, md);
  t.is(reply.text, 'hello');
  t.is(reply.role, 'a');
  t.true(reply.metadata.includes('x-tenant=acme'), reply.metadata.join(' '));

  const streamed = await new Promise<string[]>((resolve, reject) => {
    const out: string[] = [];
    const call = client.ServerStream({ text: 'tick', count: 5 }) as grpc.ClientReadableStream<EchoReply>;
    call.on('data', (r: EchoReply) => out.push(r.text));
    call.on('end', () => resolve(out));
    call.on('error', reject);
  });
  t.deepEqual(streamed, ['tick 0', 'tick 1', 'tick 2', 'tick 3', 'tick 4']);

  const gathered = await new Promise<EchoReply>((resolve, reject) => {
    const call = client.ClientStream((err: grpc.ServiceError | null, r: EchoReply) => (err ? reject(err) : resolve(r))) as grpc.ClientWritableStream<unknown>;
    for (const text of ['x', 'y', 'z']) call.write({ text });
    call.end();
  });
  t.is(gathered.text, 'x,y,z');

  const echoed = await new Promise<string[]>((resolve, reject) => {
    const out: string[] = [];
    const call = client.Bidi() as grpc.ClientDuplexStream<unknown, EchoReply>;
    call.on('data', (r: EchoReply) => {
      out.push(r.text);
      if (out.length < 3) call.write({ text: `m${out.length}` });
      else call.end();
    });
    call.on('end', () => resolve(out));
    call.on('error', reject);
    call.write({ text: 'm0' });
  });
  t.deepEqual(echoed, ['a:m0', 'a:m1', 'a:m2']);
});

test('a gRPC client with one channel gets the split per call: 80/20 within ±3 points over 4,000 calls, and metadata pins its calls', async (t) => {
  const a = await startEchoServer(t, 'a');
  const b = await startEchoServer(t, 'b');
  const sc = await startSidecar(t, grpcConfig({ a, b }, [{ type: 'header_route', rules: [{ header: 'x-canary', equals: 'yes', role: 'b' }] }, weighted({ a: 80, b: 20 })]));
  const client = echoClient(t, address(sc));
  const count: Record<string, number> = {};
  let sent = 0;
  await Promise.all(Array.from({ length: 50 }, async () => {
    while (sent < 4000) {
      sent++;
      const r = await unary(client, { text: 'x' });
      count[r.role] = (count[r.role] ?? 0) + 1;
    }
  }));
  const share = ((count.b ?? 0) / 4000) * 100;
  t.log(`b answered ${share.toFixed(2)} % of 4,000 calls on one channel`);
  t.true(Math.abs(share - 20) <= 3, `b: ${share} %`);
  const md = new grpc.Metadata();
  md.set('x-canary', 'yes');
  for (let i = 0; i < 20; i++) t.is((await unary(client, { text: 'p' }, md)).role, 'b');
});

test('a status the server sends in its trailers reaches the client as it was sent', async (t) => {
  const a = await startEchoServer(t, 'a');
  const sc = await startSidecar(t, grpcConfig({ a }, [weighted({ a: 1 })]));
  const client = echoClient(t, address(sc));
  const err = await t.throwsAsync(unary(client, { text: 'x', failWith: grpc.status.NOT_FOUND })) as grpc.ServiceError;
  t.is(err.code, grpc.status.NOT_FOUND, err.details);
  t.is(err.details, 'a fails on purpose');
});

test('HTTP/1.1 and HTTP/2 clients both reach an http2 channel; its answer, trailers included, comes back in the client\'s protocol', async (t) => {
  const server: Http2Server = createH2Server();
  const seen: string[] = [];
  server.on('stream', (stream, headers) => {
    seen.push(`${String(headers[':method'])} ${String(headers[':path'])} ${String(headers[':authority'])} ${String(headers['x-app'])}`);
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'content-type': 'text/plain', 'x-served': 'h2' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'x-digest': 'd1' }));
      stream.end(`got ${Buffer.concat(chunks).length} bytes`);
    });
  });
  const host = uniqueHost();
  await new Promise<void>((r) => server.listen(0, host, r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const up = { address: `${host}:${(server.address() as AddressInfo).port}` };
  const sc = await startSidecar(t, grpcConfig({ a: up }, [weighted({ a: 1 })]));
  const h1 = await get(`${listenerUrl(sc, 'web')}/one`, { 'x-app': 'cart' }, { method: 'POST', body: 'abc' });
  t.is(h1.status, 200);
  t.is(h1.body, 'got 3 bytes');
  t.is(h1.headers['x-served'], 'h2');
  const h2 = await h2Request(h2Connect(t, sc), '/two', { 'x-app': 'cart' }, 'hello');
  t.is(h2.body, 'got 5 bytes');
  t.is(h2.trailers['x-digest'], 'd1');
  const { host: lh, port: lp } = sc.addresses().get('web')!;
  t.deepEqual(seen, [`POST /one ${lh}:${lp} cart`, `POST /two ${lh}:${lp} cart`]);
});

test('role channels take protocol http1 or http2 only', async (t) => {
  const a: EchoServer = await startEchoServer(t, 'a');
  const config = grpcConfig({ a }, [weighted({ a: 1 })]);
  (config.roles!.a!.channels.grpc as unknown as Record<string, unknown>).protocol = 'grpc';
  const err = await t.throwsAsync(startSidecar(t, config));
  t.regex(err!.message, /roles\.a\.channels\.grpc\.protocol/);
});

test('switchyard\'s own answers to a gRPC call are gRPC errors: a dead role is UNAVAILABLE, the deadline DEADLINE_EXCEEDED, a rate limit RESOURCE_EXHAUSTED, an HTTP/1.1 channel INTERNAL', async (t) => {
  const slow = await startEchoServer(t, 'slow');
  const dead = { address: await deadAddress() };
  const h1 = await startUpstream(t, 'h1');
  const config = configOf({
    roles: {
      slow: { channels: { grpc: { endpoints: [slow.address], protocol: 'http2' } } },
      dead: { channels: { grpc: { endpoints: [dead.address], protocol: 'http2' } } },
      old: { channels: { grpc: { endpoints: [h1.address] } } },
    },
    vsets: { svc: { channels: ['grpc'], roles: { slow: {}, dead: {}, old: {} } } },
    components: { limit: { type: 'ratelimit', metadata: { requestsPerSecond: '0.001', burst: '1', key: 'header:x-user' } } },
    listeners: {
      web: {
        address: `${uniqueHost()}:0`, target: 'svc.grpc',
        filters: [
          { type: 'header_route', rules: [{ header: 'x-to', equals: 'dead', role: 'dead' }, { header: 'x-to', equals: 'old', role: 'old' }] },
          { type: 'ratelimit', component: 'limit' },
          weighted({ slow: 1, dead: 0, old: 0 }),
        ],
      },
    },
  } as ConfigSpec);
  const sc = await startSidecar(t, config);
  const client = echoClient(t, address(sc));
  const md = (pairs: Record<string, string>): grpc.Metadata => {
    const m = new grpc.Metadata();
    for (const [k, v] of Object.entries(pairs)) m.set(k, v);
    return m;
  };
  const fail = async (req: Parameters<typeof unary>[1], m: grpc.Metadata, options: grpc.CallOptions = {}): Promise<grpc.ServiceError> =>
    (await t.throwsAsync(unary(client, req, m, options))) as grpc.ServiceError;

  const unavailable = await fail({ text: 'x' }, md({ 'x-to': 'dead', 'x-user': 'u1' }));
  t.is(unavailable.code, grpc.status.UNAVAILABLE);
  t.regex(unavailable.details, /role dead/);
  const late = await fail({ text: 'x', delayMs: 2_000 }, md({ 'x-user': 'u2' }), { deadline: Date.now() + 300 });
  t.is(late.code, grpc.status.DEADLINE_EXCEEDED);
  // A client that does not cancel at its deadline: switchyard ends the call at grpc-timeout, in trailers-only form.
  // EchoRequest { text: "x", delay_ms: 2000 }, as one length-prefixed message.
  const message = Buffer.from([0, 0, 0, 0, 6, 0x0a, 0x01, 0x78, 0x18, 0xd0, 0x0f]);
  const started = performance.now();
  const raw = await h2Request(h2Connect(t, sc), '/switchyard.test.Echo/Unary', {
    'content-type': 'application/grpc', te: 'trailers', 'grpc-timeout': '200m', 'x-user': 'u5',
  }, message);
  const took = performance.now() - started;
  t.is(raw.status, 200);
  t.is(raw.headers['grpc-status'], '4', 'DEADLINE_EXCEEDED in the headers: trailers-only');
  t.is(raw.body, '');
  // Not the server's answer (it would have come after 2 s, with status OK): switchyard's, at the deadline.
  t.true(took >= 190, `answered after ${Math.round(took)} ms`);
  t.is((await unary(client, { text: 'ok' }, md({ 'x-user': 'u3' }))).role, 'slow');
  const limited = await fail({ text: 'x' }, md({ 'x-user': 'u3' }));
  t.is(limited.code, grpc.status.RESOURCE_EXHAUSTED);
  const wrong = await fail({ text: 'x' }, md({ 'x-to': 'old', 'x-user': 'u4' }));
  t.is(wrong.code, grpc.status.INTERNAL);
  t.regex(wrong.details, /protocol: http2/);
  t.is(h1.requests.length, 0, 'nothing reached the HTTP/1.1 upstream');
  await untilMetric(sc, 'switchyard_grpc_requests_total', { listener: 'web', role: 'slow', grpc_code: 'OK' }, 1);
  t.is(await metric(sc, 'switchyard_grpc_requests_total', { listener: 'web', role: 'dead', grpc_code: 'UNAVAILABLE' }), 1);
  t.is(await metric(sc, 'switchyard_grpc_requests_total', { listener: 'web', role: '', grpc_code: 'RESOURCE_EXHAUSTED' }), 1);
});

test('a call\'s status is counted once, from the trailers or a trailers-only answer, and logged; a quiet server stream outlives timeouts.upstream', async (t) => {
  const a = await startEchoServer(t, 'a');
  const { paths } = await tempFiles(t, { 'access.log': '' });
  const config = grpcConfig({ a }, [weighted({ a: 1 })], { accessLog: { path: paths['access.log']! } });
  config.listeners!.web!.timeouts = { upstream: '300ms' };
  const sc = await startSidecar(t, config);
  const client = echoClient(t, address(sc));
  await unary(client, { text: 'fine' });
  await t.throwsAsync(unary(client, { text: 'x', failWith: grpc.status.NOT_FOUND }));
  // Three messages 500 ms apart: each gap is longer than timeouts.upstream.
  const ticks = await new Promise<string[]>((resolve, reject) => {
    const out: string[] = [];
    const call = client.ServerStream({ text: 'tick', count: 3, delayMs: 500 }) as grpc.ClientReadableStream<EchoReply>;
    call.on('data', (r: EchoReply) => out.push(r.text));
    call.on('end', () => resolve(out));
    call.on('error', reject);
  });
  t.deepEqual(ticks, ['tick 0', 'tick 1', 'tick 2']);
  await untilMetric(sc, 'switchyard_grpc_requests_total', { listener: 'web', role: 'a', grpc_code: 'OK' }, 2);
  t.is(await metric(sc, 'switchyard_grpc_requests_total', { listener: 'web', role: 'a', grpc_code: 'NOT_FOUND' }), 1);
  const lines = await untilLogLines(paths['access.log']!, (l) => typeof l.grpcStatus === 'string', 3);
  t.deepEqual(lines.map((l) => `${String(l.path)} ${String(l.grpcStatus)}`).sort(), [
    '/switchyard.test.Echo/ServerStream OK', '/switchyard.test.Echo/Unary NOT_FOUND', '/switchyard.test.Echo/Unary OK',
  ]);
});

test('retries.on unavailable sends a call the server answered UNAVAILABLE to the next endpoint, its body kept as it streamed; a code not listed is not retried', async (t) => {
  const down = await startEchoServer(t, 'down', { failUnary: grpc.status.UNAVAILABLE });
  const up = await startEchoServer(t, 'up');
  const config = configOf({
    roles: { a: { channels: { grpc: { endpoints: [down.address, up.address], protocol: 'http2' } } } },
    listeners: { web: { address: `${uniqueHost()}:0`, target: 'a.grpc', filters: [weighted({ a: 1 })], retries: { attempts: 2, on: ['unavailable'] } } },
  } as ConfigSpec);
  const sc = await startSidecar(t, config);
  const client = echoClient(t, address(sc));
  for (let i = 0; i < 6; i++) {
    const r = await unary(client, { text: `call ${i}` });
    t.is(r.role, 'up');
    t.is(r.text, `call ${i}`, 'the body sent again is the one the client sent');
  }
  t.true(down.calls >= 1, 'the failing endpoint was tried');
  t.true(await metric(sc, 'switchyard_retries_total', { listener: 'web', role: 'a', reason: 'unavailable' }) >= 1);
  // NOT_FOUND is not in retries.on: the client gets it.
  const nf = await startEchoServer(t, 'nf', { failUnary: grpc.status.NOT_FOUND });
  const other = configOf({
    roles: { a: { channels: { grpc: { endpoints: [nf.address, up.address], protocol: 'http2' } } } },
    listeners: { web: { address: `${uniqueHost()}:0`, target: 'a.grpc', filters: [weighted({ a: 1 })], retries: { attempts: 2, on: ['unavailable'] } } },
  } as ConfigSpec);
  const sc2 = await startSidecar(t, other);
  const client2 = echoClient(t, address(sc2));
  let notFound = 0;
  for (let i = 0; i < 6; i++) await unary(client2, { text: 'x' }).catch((e: grpc.ServiceError) => { if (e.code === grpc.status.NOT_FOUND) notFound++; });
  t.true(notFound >= 1, 'NOT_FOUND reached the client');
});

test('healthCheck grpc checks grpc.health.v1.Health/Check: a NOT_SERVING endpoint gets no calls until it serves again', async (t) => {
  const serving = { a1: true, a2: true };
  // SERVING (1) or NOT_SERVING (2) as `serving` says; SERVICE_UNKNOWN (3) for another service.
  const health = (name: 'a1' | 'a2') => (service: string): number => (service === '' || service === 'switchyard.test.Echo' ? (serving[name] ? 1 : 2) : 3);
  const a1 = await startEchoServer(t, 'a1', { health: health('a1') });
  const a2 = await startEchoServer(t, 'a2', { health: health('a2') });
  const config = configOf({
    roles: {
      a: {
        channels: {
          grpc: {
            endpoints: [a1.address, a2.address], protocol: 'http2',
            healthCheck: { grpc: 'switchyard.test.Echo', interval: '300ms', timeout: '300ms', healthyThreshold: 1, unhealthyThreshold: 2 },
          },
        },
      },
    },
    listeners: { web: { address: `${uniqueHost()}:0`, target: 'a.grpc', filters: [weighted({ a: 1 })] } },
  } as ConfigSpec);
  const sc = await startSidecar(t, config);
  const client = echoClient(t, address(sc));
  await untilMetric(sc, 'switchyard_endpoints_healthy', { role: 'a', channel: 'grpc' }, 2);
  serving.a1 = false;
  await untilMetric(sc, 'switchyard_endpoints_healthy', { role: 'a', channel: 'grpc' }, 1);
  const roles = new Set<string>();
  for (let i = 0; i < 20; i++) roles.add((await unary(client, { text: 'x' })).role);
  t.deepEqual([...roles], ['a2']);
  serving.a1 = true;
  await untilMetric(sc, 'switchyard_endpoints_healthy', { role: 'a', channel: 'grpc' }, 2);
  const validate = async (hc: Record<string, unknown>): Promise<string> => {
    const bad = configOf({ roles: { a: { channels: { grpc: { endpoints: [a1.address], protocol: 'http2', healthCheck: hc } } } }, listeners: { web: { address: `${uniqueHost()}:0`, target: 'a.grpc' } } } as ConfigSpec);
    return (await t.throwsAsync(startSidecar(t, bad)))!.message;
  };
  t.regex(await validate({ grpc: 'x y' }), /healthCheck\.grpc/);
  t.regex(await validate({ grpc: true, path: '/h' }), /either an HTTP GET of path or a gRPC health check/);
});

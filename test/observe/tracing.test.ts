import test, { type ExecutionContext } from 'ava';
import { createServer } from 'node:http';
import { connect as netConnect, type AddressInfo } from 'node:net';
import { WebSocket, WebSocketServer } from 'ws';
import {
  configOf, deadAddress, get, listenerUrl, metric, oneRole, startEcho, startSidecar, startUpstream, tempFiles, uniqueHost, until, untilLogLines, untilMetric,
  type ConfigSpec,
} from '../helpers.js';
import { h2Connect, h2Request } from '../http2/support.js';

/*
 * Tracing (`tracing:`): a span per request, exported with OTLP/HTTP (JSON) to a
 * receiver the test runs; W3C trace context followed from the client and passed on
 * to the upstream, with switchyard's span as the upstream request's parent.
 */

interface OtlpSpan { traceId: string; spanId: string; parentSpanId?: string; name: string; attributes: { key: string; value: Record<string, unknown> }[] }

/** An OTLP/HTTP receiver on this process's own address: the spans it got. */
async function receiver(t: ExecutionContext): Promise<{ url: string; spans: OtlpSpan[]; service: string[] }> {
  const spans: OtlpSpan[] = [];
  const service: string[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => { body += c; });
    req.on('end', () => {
      const doc = JSON.parse(body) as { resourceSpans: { resource: { attributes: OtlpSpan['attributes'] }; scopeSpans: { spans: OtlpSpan[] }[] }[] };
      for (const rs of doc.resourceSpans) {
        const name = rs.resource.attributes.find((a) => a.key === 'service.name')?.value.stringValue;
        for (const ss of rs.scopeSpans) for (const s of ss.spans) {
          spans.push(s);
          service.push(String(name));
        }
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });
  const host = uniqueHost();
  await new Promise<void>((r) => server.listen(0, host, r));
  t.teardown(() => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }));
  return { url: `http://${host}:${(server.address() as AddressInfo).port}/v1/traces`, spans, service };
}

function attr(s: OtlpSpan, key: string): unknown {
  const v = s.attributes.find((a) => a.key === key)?.value;
  return v === undefined ? undefined : v.stringValue ?? v.intValue ?? v.boolValue ?? v.doubleValue;
}

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT = '00f067aa0ba902b7';

test('a traced request: the span is the child of the client\'s context and the parent of the upstream request, with the routing in its attributes, and its trace id in the access log', async (t) => {
  const otlp = await receiver(t);
  const seen: (string | undefined)[] = [];
  const up = await startUpstream(t, 'a', (req, res) => {
    seen.push(req.headers.traceparent as string | undefined);
    seen.push(req.headers.tracestate as string | undefined);
    req.resume();
    res.end('ok');
  });
  const { paths } = await tempFiles(t, { 'access.log': '' });
  const config = configOf({ ...oneRole(up.address), tracing: { otlp: { endpoint: otlp.url }, sampleRate: 1, serviceName: 'cart-sidecar' }, accessLog: { path: paths['access.log']! } } as ConfigSpec);
  const sc = await startSidecar(t, config);
  const r = await get(`${listenerUrl(sc, 'web')}/checkout?x=1`, { traceparent: `00-${TRACE}-${PARENT}-01`, tracestate: 'vendor=abc' });
  t.is(r.status, 200);
  await until(() => otlp.spans.length >= 1, 10_000, 'the span exported');
  const span = otlp.spans[0]!;
  t.is(span.traceId, TRACE);
  t.is(span.parentSpanId, PARENT);
  t.is(otlp.service[0], 'cart-sidecar');
  t.is(attr(span, 'switchyard.listener'), 'web');
  t.is(attr(span, 'switchyard.role'), 'r');
  t.is(attr(span, 'switchyard.vset'), 'r');
  t.is(Number(attr(span, 'switchyard.generation')), 1);
  t.is(Number(attr(span, 'http.response.status_code')), 200);
  t.is(attr(span, 'server.address'), up.address);
  t.is(attr(span, 'url.path'), '/checkout?x=1');
  // The upstream's parent is switchyard's span, in the client's trace, with its tracestate.
  t.is(seen[0], `00-${TRACE}-${span.spanId}-01`);
  t.is(seen[1], 'vendor=abc');
  const [line] = await untilLogLines(paths['access.log']!, (l) => l.path === '/checkout?x=1');
  t.is(line!.traceId, TRACE);
});

test('a request without trace context starts a trace when sampled; sampleRate 0 exports nothing it starts, yet follows a client that sampled; an HTTP/2 stream is a span too', async (t) => {
  const otlp = await receiver(t);
  const parents: string[] = [];
  const up = await startUpstream(t, 'a', (req, res) => {
    parents.push(String(req.headers.traceparent));
    req.resume();
    res.end('ok');
  });
  const sampled = await startSidecar(t, configOf({ ...oneRole(up.address), tracing: { otlp: { endpoint: otlp.url } } } as ConfigSpec));
  await get(`${listenerUrl(sampled, 'web')}/new`);
  await until(() => otlp.spans.length === 1, 10_000, 'the new trace exported');
  t.regex(parents[0]!, new RegExp(`^00-${otlp.spans[0]!.traceId}-${otlp.spans[0]!.spanId}-01$`));
  t.is(otlp.spans[0]!.parentSpanId ?? '', '');
  // An HTTP/2 stream is a request like any other.
  await h2Request(h2Connect(t, sampled), '/over-h2');
  await until(() => otlp.spans.length === 2, 10_000, 'the stream\'s span');
  t.is(attr(otlp.spans[1]!, 'url.path'), '/over-h2');

  const never = await startSidecar(t, configOf({ ...oneRole(up.address), tracing: { otlp: { endpoint: otlp.url }, sampleRate: 0 } } as ConfigSpec));
  await get(`${listenerUrl(never, 'web')}/unsampled`);
  t.regex(parents.at(-1)!, /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/, 'the decision not to sample is passed on');
  await get(`${listenerUrl(never, 'web')}/client-sampled`, { traceparent: `00-${TRACE}-${PARENT}-01` });
  await until(() => otlp.spans.some((s) => attr(s, 'url.path') === '/client-sampled'), 10_000, 'the client-sampled span');
  t.false(otlp.spans.some((s) => attr(s, 'url.path') === '/unsampled'));
});

test('a collector that is down costs dropped spans, counted, and never holds a request', async (t) => {
  const up = await startUpstream(t, 'a');
  const dead = await deadAddress();
  const sc = await startSidecar(t, configOf({ ...oneRole(up.address), tracing: { otlp: { endpoint: `http://${dead}/v1/traces`, timeout: '200ms' } } } as ConfigSpec));
  const started = performance.now();
  for (let i = 0; i < 20; i++) t.is((await get(`${listenerUrl(sc, 'web')}/x${i}`)).status, 200);
  t.true(performance.now() - started < 5_000, 'requests were not held for the collector');
  await untilMetric(sc, 'switchyard_tracing_spans_dropped_total', {}, (v) => v >= 20, 20_000);
  t.true(await metric(sc, 'switchyard_tracing_spans_dropped_total') >= 20);
});

test('tracing is checked: an otlp endpoint URL is required, sampleRate is from 0 to 1', async (t) => {
  const up = await startUpstream(t, 'a');
  const bad = async (tracing: unknown): Promise<string> => (await t.throwsAsync(startSidecar(t, configOf({ ...oneRole(up.address), tracing } as ConfigSpec))))!.message;
  t.regex(await bad({ sampleRate: 1 }), /tracing\.otlp/);
  t.regex(await bad({ otlp: { endpoint: 'collector:4318' } }), /tracing\.otlp\.endpoint.*not an http\(s\) URL/);
  t.regex(await bad({ otlp: { endpoint: 'http://127.0.0.1:4318/v1/traces' }, sampleRate: 2 }), /tracing\.sampleRate/);
  t.regex(await bad({ otlp: { endpoint: 'http://127.0.0.1:4318/v1/traces' }, sample: 1 }), /tracing\.sample/);
});

test('a WebSocket upgrade is a span whose child is the upstream\'s handshake, and a TCP connection is a span of its own', async (t) => {
  const otlp = await receiver(t);
  const handshake: (string | undefined)[] = [];
  const wsServer = new WebSocketServer({ host: uniqueHost(), port: 0 });
  wsServer.on('headers', (_h, req) => handshake.push(req.headers.traceparent as string | undefined));
  wsServer.on('connection', (ws) => ws.on('message', (m) => ws.send(String(m))));
  await new Promise<void>((r) => wsServer.once('listening', () => r()));
  t.teardown(() => new Promise<void>((r) => wsServer.close(() => r())));
  const wsAddr = wsServer.address() as AddressInfo;
  const echo = await startEcho(t);
  const raw = uniqueHost();
  const config = configOf({
    ...oneRole(`${wsAddr.address}:${wsAddr.port}`),
    roles: { r: { channels: { http: { endpoints: [`${wsAddr.address}:${wsAddr.port}`] } } }, db: { channels: { raw: { endpoints: [echo.address] } } } },
    listeners: {
      web: { address: `${uniqueHost()}:0`, target: 'r.http' },
      raw: { address: `${raw}:0`, protocol: 'tcp', target: 'db.raw' },
    },
    tracing: { otlp: { endpoint: otlp.url } },
  } as ConfigSpec);
  const sc = await startSidecar(t, config);
  const ws = new WebSocket(`${listenerUrl(sc, 'web').replace('http', 'ws')}/chat`, { headers: { traceparent: `00-${TRACE}-${PARENT}-01` } });
  await new Promise<void>((resolve, reject) => { ws.once('open', () => resolve()); ws.once('error', reject); });
  ws.send('hi');
  await new Promise((r) => ws.once('message', r));
  ws.close();
  await new Promise<void>((resolve, reject) => {
    const a = sc.addresses().get('raw')!;
    const s = netConnect({ host: a.host, port: a.port }, () => s.end('ping'));
    s.on('data', () => {});
    s.on('close', () => resolve());
    s.on('error', reject);
  });
  await until(() => otlp.spans.length >= 2, 10_000, 'two spans');
  const wsSpan = otlp.spans.find((s) => attr(s, 'url.path') === '/chat')!;
  t.is(wsSpan.traceId, TRACE);
  t.is(wsSpan.parentSpanId, PARENT);
  t.is(handshake[0], `00-${TRACE}-${wsSpan.spanId}-01`);
  const tcpSpan = otlp.spans.find((s) => attr(s, 'network.transport') === 'tcp')!;
  t.is(attr(tcpSpan, 'switchyard.listener'), 'raw');
  t.is(attr(tcpSpan, 'switchyard.role'), 'db');
  t.is(attr(tcpSpan, 'switchyard.result'), 'ok');
  t.is(attr(tcpSpan, 'server.address'), echo.address);
});

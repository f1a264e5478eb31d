/**
 * The benchmark's upstream, run as its own process (`node dist/bench/upstream.js`)
 * so its CPU is not the proxy's. It listens on one or more ports of one host and
 * answers every request with 200 and a 1 KiB body.
 *
 *   --host 127.0.77.1 --port 4001 [--port 4002] [--mode node|raw] [--size 1024]
 *
 * mode `node` (default): Node's http server, what a Node service looks like.
 * mode `raw`: a canned response per request head on a plain TCP socket. It costs
 * a fraction of the CPU, so on a shared core more of it is left to the proxy; it
 * assumes requests without bodies (GET), which is all the benchmark sends.
 */
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type RequestListener } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createH2Server } from 'node:http2';
import { createServer as createTcpServer, type Socket } from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', multiple: true },
    mode: { type: 'string', default: 'node' },
    size: { type: 'string', default: '1024' },
    // An HTTPS port too (the TLS-to-upstream scenarios), with this certificate.
    'tls-port': { type: 'string' },
    // An h2c port too (prior knowledge: the HTTP/2 upstream scenarios of bench/h2.ts).
    'h2-port': { type: 'string' },
    // A gRPC unary responder (h2c): one small message, then grpc-status 0 in trailers.
    'grpc-port': { type: 'string' },
    cert: { type: 'string' },
    key: { type: 'string' },
  },
});

const host = values.host!;
const ports = (values.port ?? []).map(Number);
const size = Number(values.size);
if (ports.length === 0 || ports.some((p) => !Number.isInteger(p) || p <= 0)) {
  console.error('upstream: --port PORT is required (one or more)');
  process.exit(2);
}
const BODY = Buffer.alloc(size, 'x');

/**
 * Node's http server. The keep-alive timeout is longer than any proxy's idle pool
 * timeout and than the pause between warm-up and measurement, so the upstream
 * never closes a pooled connection under a proxy (which would show as errors).
 */
const answer: RequestListener = (req, res) => {
  req.resume(); // no body expected; drain it anyway so keep-alive continues
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': size });
  res.end(BODY);
};

function serveNode(port: number): void {
  const server = createHttpServer(answer);
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  server.listen({ host, port, backlog: 1024 });
}

/** The whole response, built once. */
const CANNED = Buffer.concat([
  Buffer.from(`HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: ${size}\r\n\r\n`, 'latin1'),
  BODY,
]);

/**
 * Counts request heads ("\r\n\r\n") in the byte stream — across chunk boundaries,
 * hence the matcher state — and writes one canned response per head, batched.
 */
function onRawConnection(socket: Socket): void {
  socket.setNoDelay(true);
  let matched = 0; // how much of "\r\n\r\n" the stream ends with
  socket.on('data', (chunk: Buffer) => {
    let heads = 0;
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i]!;
      const want = matched % 2 === 0 ? 13 : 10; // \r at 0 and 2, \n at 1 and 3
      if (b === want) {
        if (++matched === 4) { heads++; matched = 0; }
      } else matched = b === 13 ? 1 : 0;
    }
    if (heads === 1) socket.write(CANNED);
    else if (heads > 1) socket.write(Buffer.concat(Array<Buffer>(heads).fill(CANNED)));
  });
  socket.on('error', () => socket.destroy());
}

function serveRaw(port: number): void {
  createTcpServer({ noDelay: true }, onRawConnection).listen({ host, port, backlog: 1024 });
}

for (const port of ports) {
  if (values.mode === 'raw') serveRaw(port);
  else serveNode(port);
}
if (values['tls-port'] !== undefined) {
  const server = createHttpsServer({ cert: readFileSync(values.cert!), key: readFileSync(values.key!) }, answer);
  server.keepAliveTimeout = 65_000;
  server.listen({ host, port: Number(values['tls-port']), backlog: 1024 });
}
if (values['h2-port'] !== undefined) {
  const server = createH2Server({ settings: { maxConcurrentStreams: 1000 } });
  server.on('stream', (stream) => {
    stream.on('error', () => {});
    stream.resume();
    stream.respond({ ':status': 200, 'content-type': 'text/plain', 'content-length': size });
    stream.end(BODY);
  });
  server.listen({ host, port: Number(values['h2-port']), backlog: 1024 });
}
if (values['grpc-port'] !== undefined) {
  // A 16-byte message, length-prefixed (gRPC's framing): what a small unary reply looks like.
  const message = Buffer.concat([Buffer.from([0, 0, 0, 0, 16]), Buffer.alloc(16, 0x61)]);
  const server = createH2Server({ settings: { maxConcurrentStreams: 1000 } });
  server.on('stream', (stream) => {
    stream.on('error', () => {});
    stream.resume();
    stream.on('end', () => {
      // A call the proxy reset after its request ended (the load's end) has no answer to get:
      // respond() on it would throw and take every scenario after it down with this process.
      if (stream.destroyed || stream.closed) return;
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(message);
    });
  });
  server.listen({ host, port: Number(values['grpc-port']), backlog: 1024 });
}
process.on('SIGTERM', () => process.exit(0));

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { join } from 'node:path';
import { ROOT, uniqueHost } from '../helpers.js';

/** The test Echo service (test/fixtures/echo.proto), its server and a client through a sidecar. */

export interface EchoRequest { text?: string; count?: number; delayMs?: number; failWith?: number }
export interface EchoReply { text: string; role: string; metadata: string[] }

const definition = protoLoader.loadSync(join(ROOT, 'test/fixtures/echo.proto'), { keepCase: false, defaults: true });
const pkg = grpc.loadPackageDefinition(definition) as unknown as { switchyard: { test: { Echo: grpc.ServiceClientConstructor } } };
export const Echo = pkg.switchyard.test.Echo;

function metadataOf(call: { metadata: grpc.Metadata }): string[] {
  return Object.entries(call.metadata.getMap()).map(([k, v]) => `${k}=${String(v)}`);
}

function failure(code: number, role: string): Partial<grpc.StatusObject> {
  return { code, details: `${role} fails on purpose` };
}

export interface EchoServer { address: string; role: string; calls: number; close(): Promise<void> }

/** An Echo server for `role` on port 0 of this process's own 127.x.y.z (h2c). */
/** grpc.health.v1.Health/Check with raw messages: HealthCheckRequest{service = 1} in, HealthCheckResponse{status = 1} out. */
const HEALTH = {
  Check: {
    path: '/grpc.health.v1.Health/Check', requestStream: false, responseStream: false,
    requestSerialize: (b: Buffer) => b, requestDeserialize: (b: Buffer) => b, responseSerialize: (b: Buffer) => b, responseDeserialize: (b: Buffer) => b,
  },
} as unknown as grpc.ServiceDefinition;

/** The service name a HealthCheckRequest asks about ('' = the server). */
function healthService(msg: Buffer): string {
  return msg.length > 2 && msg[0] === 0x0a ? msg.subarray(2, 2 + msg[1]!).toString() : '';
}

export async function startEchoServer(t: { teardown(fn: () => unknown): void }, role: string,
  o: { failUnary?: number; health?: (service: string) => number } = {}): Promise<EchoServer> {
  const server = new grpc.Server();
  if (o.health !== undefined) {
    const status = o.health;
    server.addService(HEALTH, {
      Check(call: grpc.ServerUnaryCall<Buffer, Buffer>, done: grpc.sendUnaryData<Buffer>) {
        done(null, Buffer.from([0x08, status(healthService(call.request))]));
      },
    });
  }
  const state: EchoServer = { address: '', role, calls: 0, close: async () => {} };
  const later = (ms: number, fn: () => void): void => { if (ms > 0) setTimeout(fn, ms); else fn(); };
  server.addService(Echo.service, {
    Unary(call: grpc.ServerUnaryCall<EchoRequest, EchoReply>, done: grpc.sendUnaryData<EchoReply>) {
      state.calls++;
      const r = call.request;
      later(r.delayMs ?? 0, () => {
        const code = o.failUnary ?? r.failWith;
        if (code) done(failure(code, role) as grpc.ServiceError);
        else done(null, { text: r.text ?? '', role, metadata: metadataOf(call) });
      });
    },
    ServerStream(call: grpc.ServerWritableStream<EchoRequest, EchoReply>) {
      state.calls++;
      const r = call.request;
      let i = 0;
      const next = (): void => {
        if (i >= (r.count ?? 0)) {
          call.end();
          return;
        }
        call.write({ text: `${r.text} ${i++}`, role, metadata: [] });
        later(r.delayMs ?? 0, next);
      };
      next();
    },
    ClientStream(call: grpc.ServerReadableStream<EchoRequest, EchoReply>, done: grpc.sendUnaryData<EchoReply>) {
      state.calls++;
      const texts: string[] = [];
      call.on('data', (r: EchoRequest) => texts.push(r.text ?? ''));
      call.on('end', () => done(null, { text: texts.join(','), role, metadata: metadataOf(call) }));
    },
    Bidi(call: grpc.ServerDuplexStream<EchoRequest, EchoReply>) {
      state.calls++;
      call.on('data', (r: EchoRequest) => call.write({ text: `${role}:${r.text}`, role, metadata: [] }));
      call.on('end', () => call.end());
    },
  });
  const host = uniqueHost();
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${host}:0`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)));
  });
  state.address = `${host}:${port}`;
  state.close = () => new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
  t.teardown(() => { server.forceShutdown(); });
  return state;
}

/** A client of the Echo service at `address` (a sidecar's listener), one channel (one HTTP/2 connection). */
export function echoClient(t: { teardown(fn: () => unknown): void }, address: string): grpc.Client & Record<string, (...args: unknown[]) => unknown> {
  const client = new Echo(address, grpc.credentials.createInsecure(), { 'grpc.max_reconnect_backoff_ms': 200 });
  t.teardown(() => client.close());
  return client as unknown as grpc.Client & Record<string, (...args: unknown[]) => unknown>;
}

/** One unary call; resolves with the reply or rejects with the gRPC error. */
export function unary(client: grpc.Client & Record<string, (...args: unknown[]) => unknown>, req: EchoRequest, metadata = new grpc.Metadata(),
  options: grpc.CallOptions = {}): Promise<EchoReply> {
  return new Promise((resolve, reject) => {
    client.Unary(req, metadata, { deadline: Date.now() + 10_000, ...options }, (err: grpc.ServiceError | null, reply: EchoReply) => (err ? reject(err) : resolve(reply)));
  });
}

export { grpc };

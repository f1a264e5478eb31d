/**
 * Layotto's Lifecycle API over gRPC (`spec.proto.runtime.v1.Lifecycle`, its proto
 * unchanged in proto/): ApplyConfiguration changes one component's metadata, as
 * `POST /components/<name>` does, with Layotto's error codes.
 */
import { timingSafeEqual } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { formatIssue } from '../errors.js';
import type { HostPort } from '../config/types.js';
import type { Runtime } from '../reload/runtime.js';

/** Where the proto lives: the repository's proto/ (this file runs from dist/src/admin/). */
export const LIFECYCLE_PROTO = fileURLToPath(new URL('../../../proto/spec/proto/runtime/v1/lifecycle.proto', import.meta.url));

/** ComponentConfig as proto-loader hands it over (keepCase: Layotto's field names). */
interface ComponentConfig { kind?: string; name?: string; metadata?: Record<string, string> }
interface DynamicConfiguration { component_config?: ComponentConfig | null }

export interface LifecycleGrpcOptions {
  runtime: Runtime;
  address: HostPort;
}

/** Outcome of one call: a status code and message (OK: {}). */
type Outcome = { code: grpc.status; message: string };

/**
 * The gRPC server on `admin.grpcAddress`. The bearer token is the serving
 * config's `admin.token` (a reload that rotates it takes effect at once), required
 * as `authorization: Bearer <token>` metadata.
 */
export class LifecycleGrpcServer {
  readonly #server = new grpc.Server();
  readonly #opts: LifecycleGrpcOptions;

  constructor(opts: LifecycleGrpcOptions) {
    this.#opts = opts;
    const def = protoLoader.loadSync(LIFECYCLE_PROTO, { keepCase: true, defaults: false });
    const pkg = grpc.loadPackageDefinition(def) as unknown as { spec: { proto: { runtime: { v1: { Lifecycle: grpc.ServiceClientConstructor } } } } };
    this.#server.addService(pkg.spec.proto.runtime.v1.Lifecycle.service, {
      ApplyConfiguration: (call: grpc.ServerUnaryCall<DynamicConfiguration, object>, done: grpc.sendUnaryData<object>) => {
        this.#apply(call).then(
          (out) => (out.code === grpc.status.OK ? done(null, {}) : done({ code: out.code, details: out.message })),
          (err: Error) => done({ code: grpc.status.INTERNAL, details: err.message }),
        );
      },
    });
  }

  async #apply(call: grpc.ServerUnaryCall<DynamicConfiguration, object>): Promise<Outcome> {
    const rt = this.#opts.runtime;
    const token = rt.current?.config.admin.token;
    if (token) {
      const got = Buffer.from(String(call.metadata.get('authorization')[0] ?? ''));
      const want = Buffer.from(`Bearer ${token}`);
      if (got.length !== want.length || !timingSafeEqual(got, want)) return { code: grpc.status.UNAUTHENTICATED, message: 'a valid bearer token is required (authorization: Bearer <token>)' };
    }
    const cc = call.request.component_config;
    if (!cc) return { code: grpc.status.INVALID_ARGUMENT, message: 'component_config is required' };
    if (!cc.name) return { code: grpc.status.INVALID_ARGUMENT, message: 'component_config.name is required' };
    const name = cc.name;
    const existing = rt.current?.config.components[name];
    // Layotto changes a component it has: one of that name (and kind, when given).
    if (!existing || !Object.hasOwn(rt.current!.config.components, name) || (cc.kind && cc.kind !== existing.type)) {
      return { code: grpc.status.NOT_FOUND, message: `no component named "${name}"${cc.kind ? ` of kind "${cc.kind}"` : ''} in the running config` };
    }
    const r = await rt.applyComponent(name, { metadata: { ...(cc.metadata ?? {}) } });
    if (r === undefined) return { code: grpc.status.NOT_FOUND, message: `no component named "${name}" in the running config` };
    if (r.ok) return { code: grpc.status.OK, message: '' };
    if (r.kind === 'invalid') return { code: grpc.status.INVALID_ARGUMENT, message: `invalid config: ${r.issues.map(formatIssue).join('; ')}` };
    return { code: grpc.status.FAILED_PRECONDITION, message: r.error.message };
  }

  /** Binds `address` (port 0: any free port); resolves with the address bound. */
  listen(): Promise<HostPort> {
    const { host, port } = this.#opts.address;
    const target = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
    return new Promise((resolve, reject) => {
      this.#server.bindAsync(target, grpc.ServerCredentials.createInsecure(), (err, bound) => (err ? reject(err) : resolve({ host, port: bound })));
    });
  }

  /** Lets running calls finish for a moment, then ends the rest. */
  close(): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#server.forceShutdown();
        resolve();
      }, 1_000);
      this.#server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}

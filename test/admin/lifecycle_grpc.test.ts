// Layotto's Lifecycle API over gRPC on admin.grpcAddress: a client built from the proto file with @grpc/grpc-js, as a Layotto agent would.
import test from 'ava';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { LIFECYCLE_PROTO } from '../../src/admin/lifecycle_grpc.js';
import { adminUrl, get, startUpstream, twoRoles, uniqueHost, weighted } from '../helpers.js';
import { PLUGIN, newScope, startFromObject } from '../reload/support.js';
import type { Sidecar } from '../../src/sidecar.js';

type Lifecycle = grpc.Client & {
  ApplyConfiguration(req: unknown, md: grpc.Metadata, cb: (err: grpc.ServiceError | null, res?: unknown) => void): void;
};

/** A client of `spec.proto.runtime.v1.Lifecycle` from the proto file, with proto-loader's default options. */
function client(t: { teardown(fn: () => void): void }, sc: Sidecar): Lifecycle {
  const pkg = grpc.loadPackageDefinition(protoLoader.loadSync(LIFECYCLE_PROTO)) as unknown as { spec: { proto: { runtime: { v1: { Lifecycle: grpc.ServiceClientConstructor } } } } };
  const c = new pkg.spec.proto.runtime.v1.Lifecycle(`127.0.0.1:${sc.grpcAddress!.port}`, grpc.credentials.createInsecure()) as unknown as Lifecycle;
  t.teardown(() => c.close());
  return c;
}

function apply(c: Lifecycle, req: unknown, token?: string): Promise<{ code: grpc.status; details: string }> {
  const md = new grpc.Metadata();
  if (token) md.set('authorization', `Bearer ${token}`);
  return new Promise((resolve) => c.ApplyConfiguration(req, md, (err) => resolve(err ? { code: err.code, details: err.details } : { code: grpc.status.OK, details: '' })));
}

test('ApplyConfiguration changes one component as POST /components does, with Layotto\'s error codes and the admin token', async (t) => {
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const scope = newScope('grpc');
  const { sc } = await startFromObject(t, {
    admin: { address: '127.0.0.1:0', grpcAddress: '127.0.0.1:0', token: 's3cret' },
    plugins: [PLUGIN],
    components: {
      lim: { type: 'ratelimit', metadata: { requestsPerSecond: '100', burst: '100' } },
      plain: { type: 'reload-plain', metadata: { scope } },
    },
    ...twoRoles(a, b, { address: `${uniqueHost()}:0`, target: 'svc', filters: [{ type: 'ratelimit', component: 'lim' }, weighted({ a: 1, b: 1 })] }),
  } as never);
  const c = client(t, sc);
  const gen = sc.runtime.current!.number;
  const lim = (metadata: Record<string, string>, kind = 'ratelimit') => ({ componentConfig: { kind, name: 'lim', metadata } });

  t.is((await apply(c, lim({ requestsPerSecond: '5', burst: '5' }))).code, grpc.status.UNAUTHENTICATED);
  t.is((await apply(c, lim({ requestsPerSecond: '5', burst: '5' }), 'wrong')).code, grpc.status.UNAUTHENTICATED);
  t.is(sc.runtime.current!.number, gen, 'nothing applied without the token');

  const ok = await apply(c, lim({ requestsPerSecond: '5', burst: '7' }), 's3cret');
  t.is(ok.code, grpc.status.OK, ok.details);
  t.is(sc.runtime.current!.number, gen + 1);
  const cfg = JSON.parse((await get(`${adminUrl(sc)}/config`, { authorization: 'Bearer s3cret' })).body) as { source: string; config: { components: Record<string, { metadata: Record<string, string> }> } };
  t.is(cfg.source, 'component');
  t.deepEqual(cfg.config.components.lim!.metadata, { requestsPerSecond: '5', burst: '7' });

  const missing = await apply(c, {}, 's3cret');
  t.is(missing.code, grpc.status.INVALID_ARGUMENT);
  t.regex(missing.details, /component_config is required/);
  t.is((await apply(c, { componentConfig: { kind: 'ratelimit', metadata: {} } }, 's3cret')).code, grpc.status.INVALID_ARGUMENT);

  const invalid = await apply(c, lim({ requestsPerSecond: 'fast' }), 's3cret');
  t.is(invalid.code, grpc.status.INVALID_ARGUMENT);
  t.regex(invalid.details, /components\.lim\.metadata\.requestsPerSecond/);

  t.is((await apply(c, { componentConfig: { kind: 'ratelimit', name: 'nope', metadata: {} } }, 's3cret')).code, grpc.status.NOT_FOUND);
  t.is((await apply(c, lim({ requestsPerSecond: '5' }, 'lock'), 's3cret')).code, grpc.status.NOT_FOUND, 'a name of another kind');

  // reload-plain has no applyConfig: a new instance is made, and its init fails.
  const failed = await apply(c, { componentConfig: { kind: 'reload-plain', name: 'plain', metadata: { scope, failInit: 'true' } } }, 's3cret');
  t.is(failed.code, grpc.status.FAILED_PRECONDITION);
  t.regex(failed.details, /plain.*init failed on purpose/);
  t.is(sc.runtime.current!.number, gen + 1, 'the failures changed nothing');
});

import { createRequire } from 'node:module';

/**
 * The client libraries of optional features, loaded the first time a config uses
 * them: with gRPC's (admin/lifecycle_grpc.ts, imported when admin.grpcAddress is
 * set) they cost about half a second of CPU per process start (etcd3 loads its
 * protobufs), which every `switchyard validate`, `hosts` and every sidecar without
 * etcd, Redis or the gRPC admin API would pay for nothing.
 */
const require = createRequire(import.meta.url);

export function etcd3(): typeof import('etcd3') {
  return require('etcd3') as typeof import('etcd3');
}

export function redis(): typeof import('redis') {
  return require('redis') as typeof import('redis');
}

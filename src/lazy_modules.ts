import { createRequire } from 'node:module';

/**
 * The client libraries of optional features, loaded the first time a config uses
 * them: with gRPC's (admin/lifecycle_grpc.ts, imported when admin.grpcAddress is
 * set) they cost about half a second of CPU per process start (etcd3 loads its
 * protobufs), which every `switchyard validate`, `hosts` and every sidecar without
 * etcd, Redis, tracing or the gRPC admin API would pay for nothing.
 */
const require = createRequire(import.meta.url);

export function etcd3(): typeof import('etcd3') {
  return require('etcd3') as typeof import('etcd3');
}

export function redis(): typeof import('redis') {
  return require('redis') as typeof import('redis');
}

/** The OpenTelemetry packages tracing uses (observe/tracing.ts), loaded once a config has `tracing`. */
export interface Otel {
  api: typeof import('@opentelemetry/api');
  core: typeof import('@opentelemetry/core');
  exporter: typeof import('@opentelemetry/exporter-trace-otlp-http');
  resources: typeof import('@opentelemetry/resources');
  sdk: typeof import('@opentelemetry/sdk-trace-base');
}

let loadedOtel: Otel | null = null;

export function otel(): Otel {
  return (loadedOtel ??= {
    api: require('@opentelemetry/api') as Otel['api'],
    core: require('@opentelemetry/core') as Otel['core'],
    exporter: require('@opentelemetry/exporter-trace-otlp-http') as Otel['exporter'],
    resources: require('@opentelemetry/resources') as Otel['resources'],
    sdk: require('@opentelemetry/sdk-trace-base') as Otel['sdk'],
  });
}

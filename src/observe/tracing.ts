import type { IncomingHttpHeaders } from 'node:http';
import type { Span, TextMapGetter, TextMapPropagator, Tracer } from '@opentelemetry/api';
import type { BasicTracerProvider, ReadableSpan, SpanExporter, SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { otel } from '../lazy_modules.js';
import type { Counter } from 'prom-client';
import type { TracingConfig } from '../config/types.js';

/**
 * Traces (`tracing:`): one span per request (an HTTP request, an HTTP/2 stream, a
 * gRPC call), the child of the client's W3C trace context when it sent one, and
 * the parent of the upstream request (its traceparent is the span's). Spans are
 * exported with OTLP/HTTP in batches from a bounded queue: a collector that is slow
 * or down costs dropped spans (counted), never a held request.
 */

/** Spans waiting for export at most; more are dropped (and counted). */
const MAX_QUEUE = 2048;
/** Spans per export request, and how long a partial batch waits. */
const BATCH = 512;
const BATCH_DELAY_MS = 1_000;

const headerGetter: TextMapGetter<IncomingHttpHeaders> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => carrier[key],
};

/**
 * Batches ended spans to the exporter, one export at a time, from a queue of at
 * most MAX_QUEUE: the OpenTelemetry processor's own bound, but with the drops
 * counted where the metrics can see them.
 */
class BoundedBatch implements SpanProcessor {
  readonly #exporter: SpanExporter;
  readonly #dropped: Counter.Internal;
  #queue: ReadableSpan[] = [];
  #exporting: Promise<void> | null = null;
  #timer: NodeJS.Timeout | null = null;

  constructor(exporter: SpanExporter, dropped: Counter.Internal) {
    this.#exporter = exporter;
    this.#dropped = dropped;
  }

  onStart(): void {}

  onEnd(span: ReadableSpan): void {
    if (!span.spanContext().traceFlags) return;
    if (this.#queue.length >= MAX_QUEUE) {
      this.#dropped.inc();
      return;
    }
    this.#queue.push(span);
    if (this.#queue.length >= BATCH) void this.#flush();
    else this.#timer ??= setTimeout(() => void this.#flush(), BATCH_DELAY_MS).unref();
  }

  #flush(): Promise<void> {
    if (this.#timer !== null) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
    if (this.#exporting !== null || this.#queue.length === 0) return this.#exporting ?? Promise.resolve();
    const batch = this.#queue.splice(0, BATCH);
    this.#exporting = new Promise<void>((resolve) => {
      this.#exporter.export(batch, (result) => {
        if (result.code !== otel().core.ExportResultCode.SUCCESS) this.#dropped.inc(batch.length);
        this.#exporting = null;
        resolve();
        if (this.#queue.length > 0) this.#timer ??= setTimeout(() => void this.#flush(), this.#queue.length >= BATCH ? 0 : BATCH_DELAY_MS).unref();
      });
    });
    return this.#exporting;
  }

  async forceFlush(): Promise<void> {
    while (this.#queue.length > 0 || this.#exporting !== null) await this.#flush();
  }

  async shutdown(): Promise<void> {
    await this.forceFlush();
    await this.#exporter.shutdown();
  }
}

/** One tracing setup (a `tracing:` config): the tracer the data path starts spans with. */
export class Tracing {
  readonly #provider: BasicTracerProvider;
  readonly #tracer: Tracer;
  readonly #propagator: TextMapPropagator;

  constructor(config: TracingConfig, dropped: Counter.Internal) {
    const { api, core, exporter: otlp, resources, sdk } = otel();
    this.#propagator = new core.W3CTraceContextPropagator();
    // The W3C propagator for anyone using the global API (plugins).
    api.propagation.setGlobalPropagator(this.#propagator);
    const exporter = new otlp.OTLPTraceExporter({ url: config.otlp.endpoint, timeoutMillis: config.otlp.timeoutMs });
    this.#provider = new sdk.BasicTracerProvider({
      resource: resources.resourceFromAttributes({ 'service.name': config.serviceName }),
      sampler: new sdk.ParentBasedSampler({ root: new sdk.TraceIdRatioBasedSampler(config.sampleRate) }),
      spanProcessors: [new BoundedBatch(exporter, dropped)],
    });
    this.#tracer = this.#provider.getTracer('switchyard');
  }

  // hot path
  /** A request's span: the child of the client's trace context, if it sent one. */
  startRequest(method: string, path: string, headers: IncomingHttpHeaders, listener: string): Span {
    const { ROOT_CONTEXT, SpanKind } = otel().api;
    const parent = headers.traceparent === undefined ? ROOT_CONTEXT : this.#propagator.extract(ROOT_CONTEXT, headers, headerGetter);
    return this.#tracer.startSpan(method, {
      kind: SpanKind.SERVER,
      attributes: { 'http.request.method': method, 'url.path': path, 'switchyard.listener': listener },
    }, parent);
  }

  /** A TCP connection's span (no trace context comes with bytes: always a new trace). */
  startConnection(listener: string, client: string): Span {
    return this.#tracer.startSpan('tcp', {
      kind: otel().api.SpanKind.SERVER,
      attributes: { 'switchyard.listener': listener, 'network.transport': 'tcp', 'client.address': client },
    });
  }

  /** The W3C headers that make `span` the parent of the upstream request: traceparent, and the client's tracestate. */
  contextHeaders(span: Span): Record<string, string> {
    const out: Record<string, string> = {};
    const { api } = otel();
    this.#propagator.inject(api.trace.setSpan(api.ROOT_CONTEXT, span), out, { set: (c, k, v) => { c[k] = v; } });
    return out;
  }

  /** Exports what is queued, then stops (the generation that used it has drained). */
  shutdown(): Promise<void> {
    return this.#provider.shutdown();
  }
}

/** What the data path records on a request's span when it ends. */
export interface SpanOutcome {
  vset: string;
  role: string;
  generation: number;
  endpoint: string;
  status: number;
  tries: number;
  grpcStatus: string;
  error: string;
}

// hot path
export function endRequestSpan(span: Span, o: SpanOutcome): void {
  span.setAttributes({
    'switchyard.vset': o.vset, 'switchyard.role': o.role, 'switchyard.generation': o.generation,
    'http.response.status_code': o.status, 'switchyard.tries': o.tries,
  });
  if (o.endpoint !== '') span.setAttribute('server.address', o.endpoint);
  if (o.grpcStatus !== '') span.setAttribute('rpc.grpc.status_code', o.grpcStatus);
  if (o.status >= 500 || o.error !== '') span.setStatus({ code: otel().api.SpanStatusCode.ERROR, message: o.error || `HTTP ${o.status}` });
  span.end();
}

/** What a TCP connection's span records when it ends. */
export interface ConnectionOutcome {
  vset: string;
  role: string;
  generation: number;
  endpoint: string;
  result: 'ok' | 'error' | 'refused';
  tries: number;
  bytesIn: number;
  bytesOut: number;
  error: string;
}

export function endConnectionSpan(span: Span, o: ConnectionOutcome): void {
  span.setAttributes({
    'switchyard.vset': o.vset, 'switchyard.role': o.role, 'switchyard.generation': o.generation, 'switchyard.result': o.result,
    'switchyard.tries': o.tries, 'switchyard.bytes_in': o.bytesIn, 'switchyard.bytes_out': o.bytesOut,
  });
  if (o.endpoint !== '') span.setAttribute('server.address', o.endpoint);
  if (o.result === 'error') span.setStatus({ code: otel().api.SpanStatusCode.ERROR, message: o.error || 'the connection failed' });
  span.end();
}

/** The trace id of a sampled span, for the access log ('' when not sampled). */
export function traceIdOf(span: Span | null): string {
  if (span === null) return '';
  const c = span.spanContext();
  return c.traceFlags & 1 ? c.traceId : '';
}

/** Tracing setups by config, shared by the generations that name the same one (as access log sinks are). */
export class TracingTable {
  readonly #byKey = new Map<string, { tracing: Tracing; refs: number }>();
  readonly #dropped: Counter.Internal;

  constructor(dropped: Counter.Internal) {
    this.#dropped = dropped;
  }

  lease(config: TracingConfig): Tracing {
    const key = JSON.stringify(config);
    let e = this.#byKey.get(key);
    if (e === undefined) {
      e = { tracing: new Tracing(config, this.#dropped), refs: 0 };
      this.#byKey.set(key, e);
    }
    e.refs++;
    return e.tracing;
  }

  async release(tracing: Tracing): Promise<void> {
    for (const [key, e] of this.#byKey) {
      if (e.tracing !== tracing || --e.refs > 0) continue;
      this.#byKey.delete(key);
      await tracing.shutdown();
    }
  }
}

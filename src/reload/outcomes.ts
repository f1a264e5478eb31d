import type { OutcomeSink } from '../metrics.js';
import type { Generation } from './generation.js';

/**
 * gRPC statuses that count as the server failing (those gRPC's HTTP mapping
 * answers with a 5xx: grpc-gateway's runtime.HTTPStatusFromCode).
 */
const GRPC_FAILURES = new Set(['UNKNOWN', 'DEADLINE_EXCEEDED', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS']);

/** Latencies kept per tally for p99; beyond, a uniform sample of them (reservoir). */
const MAX_SAMPLES = 20_000;

/** What a judgement read: requests, errors, their ratio, the p99 latency (null: no request, or not asked for). */
export interface Figures {
  requests: number;
  errors: number;
  errorRatio: number;
  latencyP99Ms: number | null;
}

/**
 * One role's outcomes in one generation: requests, failures (a 5xx sent for the
 * role, switchyard's own 502/503/504 included, or a gRPC failure status) and
 * latencies. Fed by the switchyard:request subscriber through RoleMetrics.tally.
 */
export class OutcomeTally implements OutcomeSink {
  requests = 0;
  errors = 0;
  readonly samples: number[] = [];

  // hot path
  add(status: number, grpcStatus: string, durationMs: number): void {
    this.requests++;
    if ((status >= 500 && status <= 599) || (grpcStatus !== '' && GRPC_FAILURES.has(grpcStatus))) this.errors++;
    if (this.samples.length < MAX_SAMPLES) this.samples.push(durationMs);
    else {
      const i = Math.floor(Math.random() * this.requests);
      if (i < MAX_SAMPLES) this.samples[i] = durationMs;
    }
  }
}

/** The figures of several tallies together (one role over listeners, or one step over generations); `latency` false: no p99 (no sort). */
export function figuresOf(tallies: Iterable<OutcomeTally>, latency = true): Figures {
  let requests = 0;
  let errors = 0;
  const samples: number[] = [];
  for (const t of tallies) {
    requests += t.requests;
    errors += t.errors;
    if (latency) for (const s of t.samples) samples.push(s);
  }
  samples.sort((a, b) => a - b);
  const latencyP99Ms = samples.length ? samples[Math.min(samples.length - 1, Math.ceil(samples.length * 0.99) - 1)]! : null;
  return { requests, errors, errorRatio: requests ? errors / requests : 0, latencyP99Ms };
}

/** Gives each role sink of each plan of `gen` a tally (before it serves). */
export function attachTallies(gen: Generation): void {
  for (const plan of gen.plans.values()) {
    for (let i = 0; i < plan.roles.length; i++) plan.sinks[i]!.metrics.tally = new OutcomeTally();
  }
}

/** The tallies of `gen` for `role`, on one listener or (listener null) all of them. */
export function talliesOf(gen: Generation, role: string, listener: string | null = null): OutcomeTally[] {
  const out: OutcomeTally[] = [];
  for (const plan of gen.plans.values()) {
    if (listener !== null && plan.name !== listener) continue;
    plan.roles.forEach((r, i) => {
      const t = plan.sinks[i]!.metrics.tally;
      if (r.name === role && t instanceof OutcomeTally) out.push(t);
    });
  }
  return out;
}

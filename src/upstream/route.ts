import type { RuntimeCode, UpstreamFailure, UpstreamReason } from '../errors.js';
import { UPSTREAM_FAILURES } from '../errors.js';
import type { RetryConfig } from '../config/types.js';
import type { HeaderVariables } from '../http/header_edits.js';
import type { RoleMetrics } from '../metrics.js';
import { channels, type UpstreamTryEvent } from '../observe/events.js';
import type { EndpointPicker, RoleRoutes } from './picker.js';
import type { RetryBudget } from './retry.js';

/**
 * What the upstream side needs of one listener, per generation: the endpoints of
 * each role, the split for fallbacks, time limits, the retry policy and budget.
 * Built once with the listener's plan; forwarders read nothing else of it.
 */
export interface UpstreamRoute extends RoleRoutes {
  readonly listener: string;
  /** Per role index. */
  readonly roleNames: readonly string[];
  /** Time between body chunks, and for response headers when there is no retry policy (0: none). */
  readonly upstreamMs: number;
  /** The whole upstream exchange until response headers, every try included (0: no limit). */
  readonly totalMs: number;
  /** To connect to one endpoint before the next is tried (0: the OS's). */
  readonly connectMs: number;
  /** tcp: a connection with no byte either way for this long is closed (0: never). */
  readonly idleMs: number;
  readonly retry: RetryConfig | undefined;
  readonly budget: RetryBudget | null;
  /** Bodies with a Content-Length up to this are read whole before the upstream request opens (0: none). */
  readonly bufferBodyBytes: number;
  /** Per role index, plus one at the end for no role: the values header templates read. */
  readonly variables: readonly HeaderVariables[];
  /** Per role index: where its failed tries and retries are counted. */
  readonly roleMetrics: readonly RoleMetrics[];
}

/** The role the filters chose, and whether the work may move to another (Exchange's fields). */
export interface RoleChoice {
  readonly role: number;
  readonly fallback: boolean;
  /** A role asked for that could not take the work (-1: none). */
  readonly fallbackFrom: number;
}

/** How an upstream exchange ended, reported once by a forwarder. */
export interface UpstreamOutcome {
  /** The role that served the work, or failed it last; -1 when switchyard's own failure is none's to blame. */
  readonly role: number;
  /** `host:port` of the last endpoint tried. */
  readonly endpoint: string;
  /** Why it failed, or null. */
  readonly failure: UpstreamFailure | null;
  /** The failure's stable code, or ''. */
  readonly code: RuntimeCode | '';
  /** Tries made (1 + retries and moves to the next endpoint). */
  readonly tries: number;
  /** The status the client got from this exchange: the upstream's or switchyard's (0: none was sent). */
  readonly status: number;
}

/** The outcome of work on `picker` that ended with `failure` (null: it did not fail, or the client ended it). */
export function outcomeOf(picker: EndpointPicker, failure: UpstreamFailure | null, tries: number, status: number): UpstreamOutcome {
  const own = failure !== null && !UPSTREAM_FAILURES[failure].upstream;
  return {
    role: own ? -1 : picker.role,
    endpoint: picker.endpoint.address,
    failure,
    code: failure === null ? '' : UPSTREAM_FAILURES[failure].code,
    tries,
    status,
  };
}

/** A forwarder's one way to report how its exchange ended. */
export interface OutcomeSink {
  upstreamEnded(outcome: UpstreamOutcome): void;
}

/** One try failed: counted under its role and reason (switchyard:upstream), once more as "ejected" when it ejected its endpoint. */
export function tryFailed(route: UpstreamRoute, picker: EndpointPicker, reason: UpstreamReason, blame = true): void {
  publishTry(route, picker.role, 'failed', reason);
  if (blame && picker.set.failed(picker.endpoint)) publishTry(route, picker.role, 'failed', 'ejected');
}

/** An answer of 5xx: no transport error, but a failure for outlier detection ("ejected" when it ejected its endpoint). */
export function answeredFailure(route: UpstreamRoute, picker: EndpointPicker): void {
  if (picker.set.failed(picker.endpoint)) publishTry(route, picker.role, 'failed', 'ejected');
}

/** A retry (or a move to the next endpoint) starts after a try of `role` failed for `reason`. */
export function retried(route: UpstreamRoute, role: number, reason: string): void {
  publishTry(route, role, 'retried', reason);
}

/** The listener's retry budget refused a retry of a try of `role` (switchyard_retry_budget_exhausted_total). */
export function budgetExhausted(route: UpstreamRoute, role: number): void {
  publishTry(route, role, 'budget-exhausted', '');
}

function publishTry(route: UpstreamRoute, role: number, kind: UpstreamTryEvent['kind'], reason: string): void {
  const ch = channels.upstream;
  if (!ch.hasSubscribers) return;
  const event: UpstreamTryEvent = { kind, listener: route.listener, role: route.roleNames[role]!, reason, sinks: { metrics: route.roleMetrics[role]! } };
  ch.publish(event);
}

/**
 * The role a request was asked for (by a pin with fallback) or first given (by a
 * split) when another role serves it; -1 when the role it got serves it.
 */
export function fallenBackFrom(choice: RoleChoice, picker: EndpointPicker): number {
  const from = choice.fallbackFrom >= 0 ? choice.fallbackFrom : picker.firstRole;
  return from === picker.role ? -1 : from;
}

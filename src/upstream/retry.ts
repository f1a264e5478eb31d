import type { RetryConfig, RetryOn } from '../config/types.js';

/** Methods whose repetition does no harm (RFC 9110 §9.2.2); only these are retried after bytes were sent. */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

export function isIdempotent(method: string): boolean {
  return IDEMPOTENT.has(method);
}

/** Whether a failed try with this reason (or upstream status) is worth another one under `on`. */
export function retriable(on: readonly RetryOn[], reason: RetryOn): boolean {
  if (typeof reason === 'string') return on.includes(reason);
  if (on.includes(reason)) return true;
  if (reason >= 500 && reason <= 599 && on.includes('5xx')) return true;
  return (reason === 502 || reason === 503 || reason === 504) && on.includes('gateway-error');
}

/**
 * Envoy's retry budget for one listener: the requests that are retrying at one
 * time may be at most `budgetPercent` of the requests in flight, or
 * `minRetryConcurrency`, whichever is more. It keeps retries from multiplying the
 * load on a role that is already failing.
 */
export class RetryBudget {
  readonly #percent: number;
  readonly #min: number;
  #requests = 0;
  #retrying = 0;

  constructor(config: RetryConfig) {
    this.#percent = config.budgetPercent;
    this.#min = config.minRetryConcurrency;
  }

  requestStarted(): void {
    this.#requests++;
  }

  /** `retrying`: the request had taken a share of the budget. */
  requestEnded(retrying: boolean): void {
    this.#requests--;
    if (retrying) this.#retrying--;
  }

  /** Takes a share for a request that starts retrying; false when the budget is spent. */
  take(): boolean {
    const cap = Math.max(this.#min, Math.floor((this.#requests * this.#percent) / 100));
    if (this.#retrying >= cap) return false;
    this.#retrying++;
    return true;
  }
}

import type { Exchange, Filter } from './api.js';

/**
 * Runs a listener's filters in order from `i`. Sync filters keep it sync (the fast
 * path); the first promise makes the rest of the chain async. Resolves to `true`
 * when the chain ran through (forward the request), `false` when a filter answered.
 * A throw or rejection propagates to the caller, which answers 500. So does a
 * broken verdict (see `stopped` and `badVerdict`), rather than a hung request.
 */
// hot path
export function runChain(filters: readonly Filter[], ex: Exchange, roles: number, i = 0): boolean | Promise<boolean> {
  for (; i < filters.length; i++) {
    const r = filters[i]!(ex);
    if (r === true) continue;
    if (r === false) return stopped(ex);
    // Only a promise may be left: anything else (a filter that forgot `return true`)
    // used to fail with "cannot read properties of undefined (reading 'then')".
    if (typeof (r as { then?: unknown } | null)?.then !== 'function') badVerdict(r);
    const next = i + 1;
    return r.then((go) => (go === true ? runChain(filters, ex, roles, next) : go === false ? stopped(ex) : badVerdict(go)));
  }
  // A role index out of range would reach the forwarder as `undefined` and throw
  // outside any handler (an uncaught exception): make it this request's failure.
  const role = ex.role;
  if (role !== -1 && !(Number.isInteger(role) && role >= 0 && role < roles)) {
    throw new RangeError(`a filter set role ${String(role)}; a role is an index from 0 to ${roles - 1}, or -1 for none`);
  }
  return true;
}

/**
 * A filter that stops the chain must have answered (the contract: return `false`
 * once it answered). One that did not would leave the request hanging with no one
 * to answer it, holding its generation from draining; make that a filter failure
 * (500 for http, the connection closed for tcp) instead.
 */
function stopped(ex: Exchange): false {
  const res = ex.res;
  if (res !== null && !res.headersSent && !res.destroyed) throw new Error('a filter returned false without answering');
  const socket = ex.socket;
  if (socket !== null && !socket.destroyed) throw new Error('a filter returned false without refusing the connection');
  return false;
}

function badVerdict(v: unknown): never {
  throw new TypeError(`a filter returned ${v === undefined ? 'undefined' : JSON.stringify(v) ?? String(v)}; return true to continue, false after answering, or a promise of either`);
}

/** Logs a filter failure once, with its stable code; the caller answers 500 or closes the connection. */
export function reportFilterFailure(listener: string, err: unknown): void {
  process.emitWarning(`listener ${listener}: filter failed: ${(err as Error)?.stack ?? String(err)}`, { code: 'SY_ERR_FILTER_FAILED' });
}

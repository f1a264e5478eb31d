import type { Exchange, Filter } from './api.js';

/**
 * Runs a listener's filters in order from `i`. Sync filters keep it sync (the fast
 * path); the first promise makes the rest of the chain async. Resolves to `true`
 * when the chain ran through (forward the request), `false` when a filter answered.
 * A throw or rejection propagates to the caller, which answers 500.
 */
// hot path
export function runChain(filters: readonly Filter[], ex: Exchange, i = 0): boolean | Promise<boolean> {
  for (; i < filters.length; i++) {
    const r = filters[i]!(ex);
    if (r === true) continue;
    if (r === false) return false;
    const next = i + 1;
    return r.then((go) => (go ? runChain(filters, ex, next) : false));
  }
  return true;
}

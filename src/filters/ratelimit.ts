import type { KeyBy, RateLimiter } from '../components/ratelimit.js';
import type { Exchange, FilterDescriptor } from './api.js';

/**
 * `ratelimit`: takes a token from a `ratelimit` component per request (http: 429
 * with retry-after when empty) or per new connection (tcp: refused). The buckets
 * live in the component, so they survive reloads and rate changes. Sync unless
 * the component waits for Redis (a refill in flight, at most its `timeout`).
 */
export const ratelimit: FilterDescriptor<{ component: string }> = {
  type: 'ratelimit',
  scope: 'both',
  validate(raw, ctx) {
    ctx.allowKeys(raw, ['component']);
    return { component: ctx.component(raw.component, ['component'], ['ratelimit']) ?? '' };
  },
  create(config, ctx) {
    const limiter = ctx.component<RateLimiter>(config.component);
    // hot path
    return function ratelimit(ex: Exchange): boolean | Promise<boolean> {
      const wait = limiter.take(limitKey(limiter.keyBy, ex));
      if (wait === 0) return true;
      if (typeof wait === 'number') return refuse(ex, wait);
      return wait.then((w) => w === 0 || refuse(ex, w));
    };
  },
};

function refuse(ex: Exchange, wait: number): false {
  ex.reply(429, 'switchyard: rate limit exceeded\n', { 'retry-after': String(wait) });
  return false;
}

// hot path
/** The bucket a request or connection takes from: the client's address, a request header's first value, or the one bucket (''). */
function limitKey(by: KeyBy, ex: Exchange): string {
  if (by === null) return '';
  if (by.by === 'client') return ex.remoteAddress;
  if (ex.protocol !== 'http') return '';
  const v = ex.req.headers[by.name];
  return v === undefined ? '' : typeof v === 'string' ? v : v[0] ?? '';
}

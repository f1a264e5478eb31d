/**
 * How traffic is treated on its way to the endpoints: listener timeouts, retries,
 * the upload-rate floor, and the endpoints' health checks and outlier detection.
 */
import { describe, REQUIRED, type Checker } from '../checker.js';
import { DEFAULT_HEALTH_CHECK, DEFAULT_MIN_UPLOAD_RATE, DEFAULT_OUTLIER, DEFAULT_RETRY, DEFAULT_RETRY_ON, DEFAULT_TIMEOUTS } from '../defaults.js';
import type { Path } from '../load.js';
import type { HealthCheckConfig, ListenerTimeouts, MinUploadRate, OutlierConfig, RetryConfig, RetryOn } from '../types.js';

const TIMEOUT_KEYS: Record<string, keyof ListenerTimeouts> = {
  connect: 'connectMs', upstream: 'upstreamMs', headers: 'headersMs', request: 'requestMs', keepAlive: 'keepAliveMs', idle: 'idleMs', total: 'totalMs',
};

/** The timeouts whose 0s means "no limit" (documented); every other one must be more than 0. */
const ZERO_MEANS_NONE = new Set(['idle', 'total']);

/** The words `retries.on` takes: failures of any request, and gRPC statuses in an answer's headers (DESIGN.md). */
const RETRY_ON_WORDS = ['reset', 'timeout', 'gateway-error', '5xx', 'cancelled', 'deadline-exceeded', 'internal', 'resource-exhausted', 'unavailable'];

/** `listeners.<name>.timeouts`, each key defaulted. */
export function checkTimeouts(c: Checker, value: unknown, path: Path): ListenerTimeouts {
  const timeouts = { ...DEFAULT_TIMEOUTS };
  if (value === undefined) return timeouts;
  const t = c.obj(value, path, Object.keys(TIMEOUT_KEYS));
  for (const [k, field] of Object.entries(TIMEOUT_KEYS)) {
    if (t?.[k] === undefined) continue;
    timeouts[field] = c.duration(t[k], [...path, k], { default: DEFAULT_TIMEOUTS[field] });
    // Node's server timeouts take 0 for "no limit": `headers: 0s`
    // would turn the slowloris limit off, `connect: 0s` let a blackholed endpoint
    // hold a request for ever. Only idle and total say what 0 means.
    if (timeouts[field] === 0 && !ZERO_MEANS_NONE.has(k)) {
      c.report('SY_ERR_CONFIG_VALUE', [...path, k], `must be more than 0 (0s would turn the ${k} limit off; only timeouts.idle and timeouts.total take 0s for "none")`);
      timeouts[field] = DEFAULT_TIMEOUTS[field];
    }
  }
  if (timeouts.headersMs > timeouts.requestMs) {
    c.report('SY_ERR_CONFIG_VALUE', [...path, 'headers'], 'must not be longer than timeouts.request');
  }
  return timeouts;
}

/** `listeners.<name>.retries` (http); `perTryTimeout` defaults to the listener's upstream timeout. */
export function checkRetries(c: Checker, value: unknown, path: Path, upstreamMs: number): RetryConfig | undefined {
  const o = c.obj(value, path, ['attempts', 'on', 'perTryTimeout', 'budgetPercent', 'minRetryConcurrency', 'maxBodyBytes', 'backoff']);
  if (!o) return undefined;
  const b = c.obj(o.backoff, [...path, 'backoff'], ['base', 'max']) ?? {};
  const d = DEFAULT_RETRY;
  const rc: RetryConfig = {
    attempts: c.int(o.attempts, [...path, 'attempts'], { default: d.attempts, min: 0, max: 10 }),
    on: [...DEFAULT_RETRY_ON],
    perTryTimeoutMs: c.duration(o.perTryTimeout, [...path, 'perTryTimeout'], { default: upstreamMs }),
    budgetPercent: c.int(o.budgetPercent, [...path, 'budgetPercent'], { default: d.budgetPercent, min: 0, max: 100 }),
    minRetryConcurrency: c.int(o.minRetryConcurrency, [...path, 'minRetryConcurrency'], { default: d.minRetryConcurrency, min: 0, max: 1_000_000 }),
    maxBodyBytes: c.int(o.maxBodyBytes, [...path, 'maxBodyBytes'], { default: d.maxBodyBytes, min: 0, max: 16 * 1024 * 1024 }),
    backoffBaseMs: 0,
    backoffMaxMs: 0,
  };
  // A max below the default base (no base given) means that max for both.
  const maxMs = b.max === undefined ? undefined : c.duration(b.max, [...path, 'backoff', 'max'], { default: 0 });
  rc.backoffBaseMs = c.duration(b.base, [...path, 'backoff', 'base'], { default: Math.min(d.backoffBaseMs, maxMs ?? d.backoffBaseMs) });
  rc.backoffMaxMs = maxMs ?? rc.backoffBaseMs * 10;
  if (rc.backoffMaxMs < rc.backoffBaseMs) c.report('SY_ERR_CONFIG_VALUE', [...path, 'backoff', 'max'], 'must not be shorter than backoff.base');
  const on = c.list(o.on, [...path, 'on'], { nonEmpty: true, message: `must be a non-empty list of ${RETRY_ON_WORDS.join(', ')} or status codes 500-599` });
  if (on) {
    rc.on = [];
    on.forEach((x, i) => {
      if (typeof x === 'string' && RETRY_ON_WORDS.includes(x)) rc.on.push(x as RetryOn);
      else if (typeof x === 'number' && Number.isInteger(x) && x >= 500 && x <= 599) rc.on.push(x);
      else c.report('SY_ERR_CONFIG_VALUE', [...path, 'on', i], `${describe(x)} is not a retry condition; use ${RETRY_ON_WORDS.join(', ')} or a status code from 500 to 599 (a connect failure always moves to the next endpoint)`);
    });
  }
  if (rc.perTryTimeoutMs < 1) c.report('SY_ERR_CONFIG_VALUE', [...path, 'perTryTimeout'], 'must be more than 0');
  return rc;
}

/** `listeners.<name>.minUploadRate: { bytesPerSecond, grace }` (http). */
export function checkMinUploadRate(c: Checker, value: unknown, path: Path): MinUploadRate {
  const d = DEFAULT_MIN_UPLOAD_RATE;
  const o = c.obj(value, path, ['bytesPerSecond', 'grace']);
  if (!o) return { ...d };
  const rate: MinUploadRate = {
    bytesPerSecond: c.int(o.bytesPerSecond, [...path, 'bytesPerSecond'], { default: d.bytesPerSecond, min: 0, max: 1 << 30 }),
    graceMs: c.duration(o.grace, [...path, 'grace'], { default: d.graceMs }),
  };
  // A grace of 0 would judge a body by its first few milliseconds.
  if (rate.graceMs < 1) {
    c.report('SY_ERR_CONFIG_VALUE', [...path, 'grace'], 'must be more than 0');
    rate.graceMs = d.graceMs;
  }
  return rate;
}

/** `roles.<name>.channels.<name>.healthCheck`: active checks of each endpoint. */
export function checkHealthCheck(c: Checker, value: unknown, path: Path): HealthCheckConfig | undefined {
  const o = c.obj(value, path, ['path', 'grpc', 'interval', 'timeout', 'healthyThreshold', 'unhealthyThreshold']);
  if (!o) return undefined;
  const d = DEFAULT_HEALTH_CHECK;
  const hc: HealthCheckConfig = {
    intervalMs: c.duration(o.interval, [...path, 'interval'], { default: d.intervalMs }),
    timeoutMs: c.duration(o.timeout, [...path, 'timeout'], { default: d.timeoutMs }),
    healthyThreshold: c.int(o.healthyThreshold, [...path, 'healthyThreshold'], { default: d.healthyThreshold, min: 1, max: 100 }),
    unhealthyThreshold: c.int(o.unhealthyThreshold, [...path, 'unhealthyThreshold'], { default: d.unhealthyThreshold, min: 1, max: 100 }),
  };
  if (o.path !== undefined) {
    const p = c.str(o.path, [...path, 'path'], REQUIRED);
    // The request line takes the path as written: no spaces or control characters.
    if (p !== undefined && !/^\/[\x21-\x7e]*$/.test(p)) c.report('SY_ERR_CONFIG_VALUE', [...path, 'path'], `"${p}" is not a request path (it starts with / and has no spaces)`);
    else if (p !== undefined) hc.path = p;
  }
  if (o.grpc !== undefined) {
    if (o.path !== undefined) c.report('SY_ERR_CONFIG_VALUE', [...path, 'grpc'], 'a check is either an HTTP GET of path or a gRPC health check, not both');
    else if (o.grpc === true) hc.grpc = '';
    else if (typeof o.grpc === 'string' && /^[A-Za-z_][A-Za-z0-9_.]*$/.test(o.grpc)) hc.grpc = o.grpc;
    else c.report('SY_ERR_CONFIG_VALUE', [...path, 'grpc'], 'must be true (the server as a whole) or a service name such as "pay.v1.Payments"');
  }
  if (hc.intervalMs < 100) c.report('SY_ERR_CONFIG_VALUE', [...path, 'interval'], 'must be at least 100ms');
  if (hc.timeoutMs < 1 || hc.timeoutMs > hc.intervalMs) c.report('SY_ERR_CONFIG_VALUE', [...path, 'timeout'], 'must be more than 0 and at most the interval');
  return hc;
}

/** `roles.<name>.channels.<name>.outlierDetection`: ejection of endpoints that keep failing. */
export function checkOutlier(c: Checker, value: unknown, path: Path): OutlierConfig | undefined {
  const o = c.obj(value, path, ['consecutiveErrors', 'baseEjectionTime', 'maxEjectionTime', 'maxEjectedPercent']);
  if (!o) return undefined;
  const d = DEFAULT_OUTLIER;
  const oc: OutlierConfig = {
    consecutiveErrors: c.int(o.consecutiveErrors, [...path, 'consecutiveErrors'], { default: d.consecutiveErrors, min: 1, max: 1000 }),
    baseEjectionMs: c.duration(o.baseEjectionTime, [...path, 'baseEjectionTime'], { default: d.baseEjectionMs }),
    maxEjectionMs: c.duration(o.maxEjectionTime, [...path, 'maxEjectionTime'], { default: d.maxEjectionMs }),
    maxEjectedPercent: c.int(o.maxEjectedPercent, [...path, 'maxEjectedPercent'], { default: d.maxEjectedPercent, min: 0, max: 100 }),
  };
  if (oc.baseEjectionMs < 1) c.report('SY_ERR_CONFIG_VALUE', [...path, 'baseEjectionTime'], 'must be more than 0');
  if (oc.maxEjectionMs < oc.baseEjectionMs) c.report('SY_ERR_CONFIG_VALUE', [...path, 'maxEjectionTime'], 'must not be shorter than baseEjectionTime');
  return oc;
}

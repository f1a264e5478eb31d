/**
 * The value of every config key that may be left out. The validator fills them
 * in, so the normalized config (`Config`) has no optional timing or limit left
 * undecided; the README's config reference states the same numbers.
 */
import type { HostPort, ListenerTimeouts, MinUploadRate, OutlierConfig, RetryOn } from './types.js';

/** `admin.address`. */
export const DEFAULT_ADMIN: Readonly<HostPort> = { host: '127.0.0.1', port: 9901 };
/** `drainTimeout`. */
export const DEFAULT_DRAIN_MS = 30_000;
/** A new component instance's time for init, inherit and ready together, unless `components.<name>.readyTimeout` says otherwise. */
export const DEFAULT_READY_TIMEOUT_MS = 10_000;
/** `listeners.<name>.timeouts`; `totalMs: 0` means no total limit. */
/** udp: a flow with no datagram either way for this long ends (DESIGN.md). */
export const DEFAULT_UDP_IDLE_MS = 60_000;
/** udp: client flows open at once per listener when maxConnections does not say (each holds an upstream socket). */
export const DEFAULT_UDP_FLOWS = 10_000;

export const DEFAULT_TIMEOUTS: Readonly<ListenerTimeouts> = {
  connectMs: 5_000,
  upstreamMs: 30_000,
  headersMs: 10_000,
  requestMs: 300_000,
  keepAliveMs: 5_000,
  idleMs: 3_600_000,
  totalMs: 0,
};
/** `roles.<name>.channels.<name>.healthCheck` (no `path`: a TCP connect check). */
export const DEFAULT_HEALTH_CHECK = { intervalMs: 5_000, timeoutMs: 1_000, healthyThreshold: 2, unhealthyThreshold: 3 } as const;
/** `roles.<name>.channels.<name>.outlierDetection`. */
export const DEFAULT_OUTLIER: Readonly<OutlierConfig> = { consecutiveErrors: 5, baseEjectionMs: 30_000, maxEjectionMs: 300_000, maxEjectedPercent: 50 };
/** `listeners.<name>.retries.on`. */
export const DEFAULT_RETRY_ON: readonly RetryOn[] = ['reset', 'timeout', 'gateway-error'];
/**
 * The rest of `listeners.<name>.retries` (its perTryTimeout defaults to timeouts.upstream).
 * The back-off base is Envoy's 25 ms; its cap, when not given, is ten times the base.
 */
export const DEFAULT_RETRY = { attempts: 1, budgetPercent: 20, minRetryConcurrency: 3, maxBodyBytes: 64 * 1024, backoffBaseMs: 25 } as const;
/** `listeners.<name>.maxHeaderSize`. */
export const DEFAULT_MAX_HEADER_SIZE = 16 * 1024;
/**
 * `listeners.<name>.maxHeadersCount`: Envoy's default max_headers_count. Node's own
 * limit (maxHeadersCount, 2000 pairs) dropped the headers past it without a word, so
 * a request reached the upstream with fewer headers than the client sent.
 */
export const DEFAULT_MAX_HEADERS_COUNT = 100;
/** The highest `maxHeadersCount` a config may set (Node's parser keeps one more, so any excess is seen). */
export const MAX_HEADERS_COUNT = 10_000;
/**
 * `listeners.<name>.minUploadRate`: Kestrel's default MinRequestBodyDataRate (240
 * bytes/s after a 5 s grace). A body trickled slower than that held a connection
 * to the upstream for up to timeouts.request (5 min), so 200 such clients pinned
 * 200 upstream connections (issue 11, item 5).
 */
export const DEFAULT_MIN_UPLOAD_RATE: Readonly<MinUploadRate> = { bytesPerSecond: 240, graceMs: 5_000 };
/** `listeners.<name>.http2.maxConcurrentStreams`: streams a client may have open on one connection (nginx's default is 128, Go's 250). */
export const DEFAULT_MAX_CONCURRENT_STREAMS = 100;
/** `listeners.<name>.bufferBodyBytes`: bodies up to this are read whole before the upstream request opens (nginx buffers every body by default). */
export const DEFAULT_BUFFER_BODY_BYTES = 16 * 1024;
/** `source.etcd`: key prefix, request deadline (and how long a start waits), watch check interval, status lease TTL. */
export const DEFAULT_ETCD = { prefix: '/switchyard', timeoutMs: 5_000, checkIntervalMs: 30_000, leaseTtlMs: 15_000 } as const;

/** The validated, normalized config (v1). Durations are in milliseconds. */
export interface Config {
  version: 1;
  admin: AdminConfig;
  drainTimeoutMs: number;
  roles: Record<string, RoleConfig>;
  /** Declared vsets plus every role's default vset (`implicit: true`). */
  vsets: Record<string, VsetConfig>;
  components: Record<string, ComponentConfig>;
  plugins: string[];
  listeners: Record<string, ListenerConfig>;
  /** Absent: no access log. */
  accessLog?: AccessLogConfig;
  /** Process-wide limits (`limits`). */
  limits: LimitsConfig;
  /** Where the dynamic config lives (`source`): set only when the config was checked as a bootstrap file. */
  source?: SourceConfig;
  /** Absent: no traces. */
  tracing?: TracingConfig;
  /** Absent: a new generation is not watched (`autoRollback`). */
  autoRollback?: AutoRollbackConfig;
}

/** `tracing`: one span per request, exported with OTLP/HTTP (observe/tracing.ts). */
export interface TracingConfig {
  otlp: { endpoint: string; timeoutMs: number };
  /** The share of traces started here that are sampled (a client's sampled flag is followed: parent-based). */
  sampleRate: number;
  serviceName: string;
}

/** `autoRollback`: after a swap, revert to the previous config when a role's error ratio in the new generation is over the bar and worse than before. */
export interface AutoRollbackConfig {
  windowMs: number;
  /** Requests of a role in the new generation before it is judged. */
  minRequests: number;
  /** 0 to 1. */
  maxErrorRatio: number;
}

/** `source`: bootstrap only (the --config files); a pushed config or an etcd document may not name one. */
export interface SourceConfig {
  etcd: EtcdSourceConfig;
}

/** `source.etcd`: the fleet's config on etcd (README "Fleet config on etcd"). */
export interface EtcdSourceConfig {
  /** `http://host:port` client URLs. */
  endpoints: string[];
  /** Key prefix, without a trailing slash (default /switchyard). */
  prefix: string;
  /** This sidecar's app: it reads `<prefix>/apps/<app>`. */
  app: string;
  /** This sidecar's name in `<prefix>/status/<app>/<instance>` (default hostname-pid). */
  instance: string;
  /** Deadline of each etcd request, and how long a start waits for etcd (default 5s). */
  timeoutMs: number;
  /** How often the watch is checked against a read (a watch that silently stalls; default 30s). */
  checkIntervalMs: number;
  /** TTL of the status key's lease (default 15s). */
  leaseTtlMs: number;
}

/** `limits`: what the whole sidecar takes at once, across listeners (issue 11, item 5). */
export interface LimitsConfig {
  /**
   * Open client connections across every listener; absent = derived from the soft
   * RLIMIT_NOFILE in force (`fd_limit.ts`, defaultMaxConnections), or none when it cannot be read.
   */
  maxConnections?: number;
}

/** A request body must come at least this fast (Kestrel's MinRequestBodyDataRate). */
export interface MinUploadRate {
  /** 0: no minimum. */
  bytesPerSecond: number;
  /** Time from the first body byte before the rate is enforced. */
  graceMs: number;
}

export interface AccessLogConfig {
  /** `stdout`, or a file path as written (relative paths resolve from the config's directory when opened). */
  path: string;
}

/** An address; written `host:port`, `[v6]:port` (config/parse.ts: parseHostPort, formatHostPort). */
export interface HostPort { host: string; port: number }

export interface AdminConfig {
  address: HostPort;
  token?: string;
  /** Routes served without the token: probes and scrapes (`ready`, `metrics`). */
  public: AdminPublicRoute[];
  /** Host names (besides IP literals and localhost) that requests may name the admin API by. */
  hosts: string[];
  /** Where Layotto's Lifecycle API is served over gRPC (absent: not served). */
  grpcAddress?: HostPort;
}

export type AdminPublicRoute = 'ready' | 'metrics';

export interface RoleConfig {
  meta: Record<string, string>;
  channels: Record<string, ChannelConfig>;
}

/** How a channel's endpoints are spoken to: HTTP/1.1, or HTTP/2 (h2c, or ALPN h2 with tls). */
export type UpstreamProtocol = 'http1' | 'http2';

export interface ChannelConfig {
  endpoints: HostPort[];
  /** The wire to the endpoints (http listeners; tcp listeners pipe bytes whatever it says). */
  protocol: UpstreamProtocol;
  /** Active checks of each endpoint; absent = every endpoint counts as healthy. */
  healthCheck?: HealthCheckConfig;
  /** Passive ejection of endpoints that keep failing; absent = off. */
  outlierDetection?: OutlierConfig;
  /** TLS to the endpoints; absent = plain TCP. */
  tls?: UpstreamTlsConfig;
}

/**
 * `roles.<r>.channels.<c>.tls`. File paths as written (relative ones against the
 * first config file's directory); the files are read, and checked, on every reload
 * (net/tls_material.ts), which sets `digest`.
 */
export interface UpstreamTlsConfig {
  /** The name sent as SNI and checked against the certificate (default: the endpoint's host). */
  serverName?: string;
  /** CA bundle the server's certificate must chain to (default: the system store). */
  ca?: string;
  /** Client certificate and key, for mTLS (both or neither). */
  cert?: string;
  key?: string;
  /** sha256 of what the files held when read: a rotated file is a changed config. Set by tls_material. */
  digest?: string;
}

export interface HealthCheckConfig {
  /** HTTP GET of this path (2xx/3xx = pass); absent (and no grpc) = a TCP connect check. */
  path?: string;
  /** grpc.health.v1.Health/Check of this service ('' = the server as a whole) over HTTP/2: SERVING = pass. */
  grpc?: string;
  intervalMs: number;
  timeoutMs: number;
  /** Passes in a row that make an unhealthy endpoint healthy again. */
  healthyThreshold: number;
  /** Failures in a row that make a healthy endpoint unhealthy. */
  unhealthyThreshold: number;
}

export interface OutlierConfig {
  /** Connect failures, resets, timeouts or 5xx answers in a row that eject an endpoint. */
  consecutiveErrors: number;
  /** First ejection's length; the n-th ejection in a row lasts n times as long. */
  baseEjectionMs: number;
  maxEjectionMs: number;
  /** At most this share of a role channel's endpoints is ejected at once (at least one). */
  maxEjectedPercent: number;
}

/** What makes a failed try worth another one (a connect failure always moves on). */
export type RetryOn = 'reset' | 'timeout' | 'gateway-error' | '5xx' | number
  // gRPC statuses in a trailers-only answer (Envoy's and Linkerd's retry conditions).
  | 'cancelled' | 'deadline-exceeded' | 'internal' | 'resource-exhausted' | 'unavailable';

export interface RetryConfig {
  /** Retries after the first try. */
  attempts: number;
  on: RetryOn[];
  /** Time for response headers, per try. */
  perTryTimeoutMs: number;
  /** Retries in flight may be this share of requests in flight (Envoy's retry budget)… */
  budgetPercent: number;
  /** …but at least this many. */
  minRetryConcurrency: number;
  /** Request bodies up to this size are buffered, so they can be sent again; larger ones are never retried. */
  maxBodyBytes: number;
  /** Back-off before the n-th retry: a random time up to min(base × (2ⁿ − 1), max) (Envoy's jittered exponential). */
  backoffBaseMs: number;
  backoffMaxMs: number;
}

export interface VsetConfig {
  channels: string[];
  /** role name → vset channel → role channel, and the meta exposed for the role in this vset. */
  roles: Record<string, { map: Record<string, string>; meta: Record<string, string> }>;
  implicit: boolean;
}

export interface ComponentConfig {
  type: string;
  metadata: Record<string, string>;
  /** `readyTimeout`: how long a new instance has for init, inherit and ready together; absent = the runtime's default (10 s). */
  readyTimeoutMs?: number;
}

export type Protocol = 'http' | 'tcp' | 'udp';

export interface ListenerTimeouts {
  /** Upstream connect. */
  connectMs: number;
  /** http: time for the upstream to send response headers, and between body chunks. tcp: unused. */
  upstreamMs: number;
  /** http: time a client has to send the request headers (slowloris). */
  headersMs: number;
  /** http: time a client has to send the whole request. */
  requestMs: number;
  /** http: idle keep-alive connection to the client. */
  keepAliveMs: number;
  /** tcp: close a connection idle this long in both directions (0 = never). */
  idleMs: number;
  /** http: the whole upstream exchange until response headers, every try included (0 = no limit). */
  totalMs: number;
}

export interface ListenerConfig {
  /** Explicit address, or undefined for the lowest free 127.0.0.x (x ≥ 2). */
  address?: HostPort;
  protocol: Protocol;
  vset: string;
  channel: string;
  filters: FilterConfig[];
  timeouts: ListenerTimeouts;
  /** http: the largest request head accepted (bytes); more gets 431. */
  maxHeaderSize: number;
  /** http: the most header lines a request may have; more gets 431 (Envoy's max_headers_count). */
  maxHeadersCount: number;
  /** http: retries of failed tries; absent = none (a connect failure still moves to the next endpoint). */
  retries?: RetryConfig;
  /** Open client connections on this listener's socket; absent = no limit of its own (the global one still counts). */
  maxConnections?: number;
  /** http: the slowest a request body may come while it is read (averaged since it started, after the grace). */
  minUploadRate: MinUploadRate;
  /** http: request bodies with a Content-Length up to this are read whole before the upstream request opens (0: stream all). */
  bufferBodyBytes: number;
  /** TLS terminated on the listener; absent = plain. */
  tls?: ListenerTlsConfig;
  /** http: limits on HTTP/2 client connections. */
  http2: { maxConcurrentStreams: number };
}

/** `listeners.<l>.tls`: read and checked on every reload (net/tls_material.ts), which sets `digest`. */
export interface ListenerTlsConfig {
  cert: string;
  key: string;
  /** Client certificates are asked for and must chain to this CA. */
  clientCa?: string;
  digest?: string;
}

/** A filter entry after its type validated it; `config` is what the type's validate returned. */
export interface FilterConfig {
  type: string;
  config: unknown;
}

import type { Socket } from 'node:net';
import { Counter, Gauge, Histogram, Registry as PromRegistry, collectDefaultMetrics, type Metric } from 'prom-client';

export interface MetricsOptions {
  /**
   * Count each HTTP request (requests_total, request_duration_seconds); default true.
   * For embedding and for the benchmark, which measures what counting costs: not a
   * config key, since every user of the sidecar wants these two.
   */
  countRequests?: boolean;
}

/**
 * The metrics contract (DESIGN.md): prefix `switchyard_`, base units, `_total` for
 * counters. Label values come only from the config (listener, vset, role names) and
 * from fixed sets (status codes, error codes), so cardinality stays bounded.
 * One instance per runtime, so tests can run several sidecars in one process.
 */
export class Metrics {
  readonly registry = new PromRegistry();
  readonly requests: Counter<'listener' | 'vset' | 'role' | 'code'>;
  readonly duration: DurationHistogram;
  /**
   * requests_total and request_duration_seconds as plain numbers, one tally per label set
   * (listener, vset, role), shared by the RoleMetrics of every generation that serves it:
   * a reload carries the counts over. The two metrics read them at each scrape.
   */
  readonly #tallies = new Map<string, RequestTally>();
  readonly upstreamErrors: Counter<'listener' | 'role' | 'reason'>;
  readonly connectionsActive: Gauge<'listener'>;
  readonly connectionsRefused: Counter<'listener' | 'reason'>;
  readonly slowUploads: Counter<'listener'>;
  readonly tcpBytes: Counter<'listener' | 'direction'>;
  readonly tcpConnections: Counter<'listener' | 'vset' | 'role' | 'result'>;
  readonly udpDatagrams: Counter<'listener' | 'role' | 'direction'>;
  readonly udpFlowsActive: Gauge<'listener'>;
  readonly tlsHandshakeErrors: Counter<'listener'>;
  readonly generation: Gauge;
  readonly reloads: Counter<'source' | 'result'>;
  readonly reloadDuration: Histogram;
  readonly componentUpdates: Counter<'component' | 'mode' | 'result'>;
  readonly retries: Counter<'listener' | 'role' | 'reason'>;
  readonly retryBudgetExhausted: Counter<'listener'>;
  /** Open TCP connections: their bytes so far are added to tcp_bytes_total at each scrape. */
  readonly openTcp = new Set<TcpTally>();
  /** Role channels now routed to, with their endpoints (set by the runtime; read at scrape time). */
  endpointHealth: () => Iterable<{ role: string; channel: string; healthy: number; total: number }> = () => [];
  /** The certificates the serving config presents, and when each expires (Unix seconds): set by the runtime. */
  certificates: () => Iterable<{ listener: string; role: string; channel: string; notAfter: number }> = () => [];
  /** The ratelimit components of the generations still open, the current one's first (set by the sidecar; read at scrape time). */
  ratelimits: () => Iterable<RatelimitStat> = () => [];
  readonly lastReloadSuccessful: Gauge;
  readonly lastReloadSuccessTime: Gauge;
  readonly generationsDraining: Gauge;
  readonly accessLogDropped: Counter;
  /** 1 while a config source (etcd) answers, 0 while it does not (the sidecar keeps serving what it has). */
  readonly configSourceUp: Gauge<'source'>;
  /** The source's revision the serving config includes (etcd's revision). */
  readonly configSourceRevision: Gauge<'source'>;
  readonly rollbacks: Counter<'reason'>;
  readonly rolloutStep: Gauge<'listener' | 'role'>;
  /** False: requests_total and request_duration_seconds are not counted (see MetricsOptions). */
  readonly countRequests: boolean;
  readonly grpcRequests: Counter<'listener' | 'vset' | 'role' | 'grpc_code'>;
  /** Spans not exported: the queue was full (a slow or down collector), or the export failed. */
  readonly tracingSpansDropped: Counter.Internal;

  constructor(opts: MetricsOptions = {}) {
    this.countRequests = opts.countRequests ?? true;
    const registers = [this.registry];
    this.tracingSpansDropped = new Counter({ name: 'switchyard_tracing_spans_dropped_total', help: 'Spans not exported: the export queue was full (a slow or unreachable collector) or the export failed. Requests never wait for the collector.', registers }).labels();
    this.grpcRequests = new Counter({ name: 'switchyard_grpc_requests_total', help: 'gRPC calls by the role that served them and their status (from the answer\'s headers or trailers, or switchyard\'s own answer), counted once the status is known.', labelNames: ['listener', 'vset', 'role', 'grpc_code'], registers });
    const tallies = this.#tallies;
    this.requests = new Counter({
      name: 'switchyard_requests_total', help: 'HTTP requests by the role that served them and the status sent to the client (499: the client left before the response started).', labelNames: ['listener', 'vset', 'role', 'code'], registers,
      // Rebuilt from the tallies: the hot path adds 1 to a number, the label hashing happens here.
      collect(this: Counter<'listener' | 'vset' | 'role' | 'code'>) {
        this.reset();
        for (const t of tallies.values()) {
          for (const [code, c] of t.codes) this.inc({ ...t.labels, code: String(code) }, c.n);
        }
      },
    });
    this.duration = new DurationHistogram('switchyard_request_duration_seconds', 'Time from the request to the end of the response.', tallies);
    this.registry.registerMetric(this.duration as unknown as Metric);
    this.upstreamErrors = new Counter({ name: 'switchyard_upstream_errors_total', help: 'Failed upstream tries by reason: connect-failure, reset, timeout, protocol, tls; and ejected, when a failure ejected its endpoint.', labelNames: ['listener', 'role', 'reason'], registers });
    this.connectionsActive = new Gauge({ name: 'switchyard_connections_active', help: 'Open client connections per listener.', labelNames: ['listener'], registers });
    this.connectionsRefused = new Counter({ name: 'switchyard_connections_refused_total', help: 'Client connections closed as soon as accepted because a connection limit was reached: reason "listener" (listeners.<name>.maxConnections) or "global" (limits.maxConnections).', labelNames: ['listener', 'reason'], registers });
    this.slowUploads = new Counter({ name: 'switchyard_slow_uploads_total', help: 'HTTP requests cut (408) because their body came slower than the listener\'s minUploadRate.', labelNames: ['listener'], registers });
    const openTcp = this.openTcp;
    this.tcpBytes = new Counter({
      name: 'switchyard_tcp_bytes_total', help: 'Bytes through TCP listeners; direction "in" is client to upstream.', labelNames: ['listener', 'direction'], registers,
      // A long-lived connection shows its traffic as it flows, not in one step when it closes.
      collect() {
        for (const t of openTcp) t.flush();
      },
    });
    this.udpDatagrams = new Counter({ name: 'switchyard_udp_datagrams_total', help: 'UDP datagrams by the role of their flow and direction: in (client to upstream), out (upstream to client), dropped (no flow could take it: the flow cap, a refused flow, a full queue).', labelNames: ['listener', 'role', 'direction'], registers });
    this.udpFlowsActive = new Gauge({ name: 'switchyard_udp_flows_active', help: 'UDP client flows (source ip:port) open per listener.', labelNames: ['listener'], registers });
    this.tlsHandshakeErrors = new Counter({ name: 'switchyard_tls_handshake_errors_total', help: 'Client connections of a TLS listener that ended in their handshake: no shared protocol or cipher, a client certificate missing or not from clientCa, a client that left, or the headers timeout.', labelNames: ['listener'], registers });
    this.tcpConnections = new Counter({ name: 'switchyard_tcp_connections_total', help: 'TCP connections by the role that served them and how they ended (ok, error, refused).', labelNames: ['listener', 'vset', 'role', 'result'], registers });
    this.generation = new Gauge({ name: 'switchyard_config_generation', help: 'The generation number now serving.', registers });
    this.reloads = new Counter({ name: 'switchyard_config_reloads_total', help: 'Config changes by source and result (success, invalid, failed).', labelNames: ['source', 'result'], registers });
    // Every series at 0 from the start: a first failure then shows as an increase (rate() and
    // increase() see nothing in a series that appears with its first sample).
    for (const source of ['file', 'sighup', 'api', 'component', 'rollback', 'etcd']) {
      for (const result of ['success', 'invalid', 'failed']) this.reloads.inc({ source, result }, 0);
    }
    this.reloadDuration = new Histogram({ name: 'switchyard_config_reload_duration_seconds', help: 'Time to validate, build and swap a generation.', registers, buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] });
    this.componentUpdates = new Counter({ name: 'switchyard_component_updates_total', help: 'Component changes by mode (added, updated, reinitialized, removed) and result.', labelNames: ['component', 'mode', 'result'], registers });
    this.retries = new Counter({ name: 'switchyard_retries_total', help: 'Retries of HTTP requests, by the role of the try that failed and why (reset, timeout, or the status it answered).', labelNames: ['listener', 'role', 'reason'], registers });
    this.retryBudgetExhausted = new Counter({ name: 'switchyard_retry_budget_exhausted_total', help: 'Retries not made because the listener\'s retry budget was spent.', labelNames: ['listener'], registers });
    const health = (pick: 'healthy' | 'total') => function collect(this: Gauge<'role' | 'channel'>) {
      this.reset();
      for (const h of metrics.endpointHealth()) this.set({ role: h.role, channel: h.channel }, h[pick]);
    };
    const metrics = this;
    new Gauge({ name: 'switchyard_endpoints_healthy', help: 'Endpoints of a role channel that take new work: healthy by the active check and not ejected.', labelNames: ['role', 'channel'], registers, collect: health('healthy') });
    new Gauge({ name: 'switchyard_endpoints', help: 'Endpoints of a role channel that the serving config routes to.', labelNames: ['role', 'channel'], registers, collect: health('total') });
    new Gauge({
      name: 'switchyard_tls_certificate_expiry_seconds',
      help: 'When a certificate the serving config presents expires (Unix time): a listener\'s (listener set), or a role channel\'s client certificate for mTLS (role and channel set). Alert on it minus time().',
      labelNames: ['listener', 'role', 'channel'], registers,
      collect(this: Gauge<'listener' | 'role' | 'channel'>) {
        this.reset();
        for (const c of metrics.certificates()) this.set({ listener: c.listener, role: c.role, channel: c.channel }, c.notAfter);
      },
    });
    new Counter({
      name: 'switchyard_ratelimit_decisions_total',
      help: 'Decisions of ratelimit components: allowed, limited (429, or a refused connection), and for backend redis failed-open / failed-closed (Redis did not answer within the component\'s timeout, or is down: failureMode decided).',
      labelNames: ['component', 'result'], registers,
      // The counts live in the components (a re-created one carries them over): read, not pushed, so the hot path only adds 1 to a field.
      collect(this: Counter<'component' | 'result'>) {
        this.reset();
        for (const r of metrics.ratelimits()) {
          const d = r.decisions;
          this.inc({ component: r.component, result: 'allowed' }, d.allowed);
          this.inc({ component: r.component, result: 'limited' }, d.limited);
          if (r.backend === 'redis') {
            this.inc({ component: r.component, result: 'failed-open' }, d.failedOpen);
            this.inc({ component: r.component, result: 'failed-closed' }, d.failedClosed);
          }
        }
      },
    });
    new Gauge({
      name: 'switchyard_ratelimit_backend_up',
      help: 'Whether a ratelimit component with backend redis reaches its Redis (1: connected, and no call waiting longer than its timeout; 0: down, failureMode decides).',
      labelNames: ['component'], registers,
      collect(this: Gauge<'component'>) {
        this.reset();
        for (const r of metrics.ratelimits()) if (r.backendUp !== null) this.set({ component: r.component }, r.backendUp ? 1 : 0);
      },
    });
    // Prometheus's own pair (prometheus_config_last_reload_*): alert on `== 0`, and on a timestamp too old.
    this.lastReloadSuccessful = new Gauge({ name: 'switchyard_config_last_reload_successful', help: 'Whether the last config change was applied (1) or rejected (0).', registers });
    this.lastReloadSuccessTime = new Gauge({ name: 'switchyard_config_last_reload_success_timestamp_seconds', help: 'Unix time of the last config change that was applied (the start counts).', registers });
    this.generationsDraining = new Gauge({ name: 'switchyard_generations_draining', help: 'Generations replaced but not yet closed (work still running on them).', registers });
    this.configSourceUp = new Gauge({ name: 'switchyard_config_source_up', help: 'Whether a config source (etcd) answers: 1, or 0 while it does not (the sidecar keeps serving the config it has, and retries).', labelNames: ['source'], registers });
    this.configSourceRevision = new Gauge({ name: 'switchyard_config_source_revision', help: 'The revision of the config source (etcd) that the last config read from it was read at.', labelNames: ['source'], registers });
    this.rollbacks = new Counter({ name: 'switchyard_config_rollbacks_total', help: 'Changes reverted by change safety: error-ratio (autoRollback), rollout-error-ratio and rollout-latency (a failed rollout step), rollout-aborted (POST /rollouts/<listener>/abort).', labelNames: ['reason'], registers });
    this.rolloutStep = new Gauge({ name: 'switchyard_rollout_step', help: 'The percent of its listener\'s split a rollout gives its role now.', labelNames: ['listener', 'role'], registers });
    this.accessLogDropped = new Counter({ name: 'switchyard_access_log_dropped_lines_total', help: 'Access log lines dropped because the sink did not keep up.', registers });
    collectDefaultMetrics({ register: this.registry, prefix: '' });
  }

  /**
   * Drops the series of listeners, vsets and roles that no generation still open
   * routes to (called once a replaced generation closed), so names that come and
   * go across deploys do not pile up series for the life of the process. A name
   * that comes back starts again at 0, which rate() reads as a counter reset.
   */
  async forgetAllBut(live: Iterable<{ listener: string; vset: string; roles: readonly string[] }>): Promise<void> {
    const keep = new Set<string>();
    for (const l of live) {
      keep.add(l.listener);
      for (const role of [...l.roles, '']) {
        keep.add(`${l.listener}\0${role}`);
        keep.add(`${l.listener}\0${l.vset}\0${role}`);
      }
    }
    // requests_total and request_duration_seconds show what the tallies hold.
    for (const [key, t] of this.#tallies) {
      if (keep.has(key)) continue;
      this.#tallies.delete(key);
      t.forgotten = true;
    }
    const key = (labels: Record<string, string | number | undefined>): string =>
      [labels.listener, ...('vset' in labels ? [labels.vset] : []), ...('role' in labels ? [labels.role] : [])].join('\0');
    const byListener = [this.upstreamErrors, this.connectionsActive, this.tcpBytes,
      this.tcpConnections, this.udpDatagrams, this.udpFlowsActive, this.tlsHandshakeErrors, this.retries, this.retryBudgetExhausted, this.connectionsRefused, this.slowUploads] as const;
    for (const metric of byListener) {
      const seen = new Map<string, Record<string, string | number>>();
      for (const v of (await metric.get()).values) {
        const labels: Record<string, string | number> = {};
        // A histogram lists each bucket (le) and _sum/_count: one series set per label set.
        for (const [k, x] of Object.entries(v.labels)) if (k !== 'le' && x !== undefined) labels[k] = x;
        // A keep-alive connection can outlive its listener's last generation: its gauge stays until it closes.
        if (metric === this.connectionsActive && v.value !== 0) continue;
        if (!keep.has(key(labels))) seen.set(JSON.stringify(labels), labels);
      }
      for (const labels of seen.values()) (metric as Counter<string>).remove(labels);
    }
  }

  /** The request tally of a label set, made at its first use. */
  requestTally(listener: string, vset: string, role: string): RequestTally {
    const key = `${listener}\0${vset}\0${role}`;
    let t = this.#tallies.get(key);
    if (t === undefined) {
      t = new RequestTally(listener, vset, role);
      this.#tallies.set(key, t);
    }
    return t;
  }
}

/** request_duration_seconds's upper bounds (le); one more slot counts what is over the last. */
const DURATION_BUCKETS: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** One label set's HTTP requests: a count per status, and the duration histogram's buckets (not cumulative), sum and count. */
export class RequestTally {
  /** Shared by every series of the label set (prom-client caches their text by this object). */
  readonly labels: Readonly<{ listener: string; vset: string; role: string }>;
  readonly codes = new Map<number, { n: number }>();
  readonly buckets: number[] = new Array<number>(DURATION_BUCKETS.length + 1).fill(0);
  sum = 0;
  count = 0;
  /** Dropped by Metrics.forgetAllBut: a RoleMetrics still holding it takes a new one. */
  forgotten = false;

  constructor(listener: string, vset: string, role: string) {
    this.labels = { listener, vset, role };
  }
}

/**
 * switchyard_request_duration_seconds, read from the request tallies at each scrape.
 * A prom-client Histogram hashes the label set at every observation; this gives the
 * registry what Histogram.get() and getForPromString() give (the same exposition:
 * cumulative _bucket series with le up to "+Inf", then _sum and _count), and the hot
 * path only adds to numbers.
 */
export class DurationHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly name: string;
  readonly help: string;
  readonly #tallies: ReadonlyMap<string, RequestTally>;

  constructor(name: string, help: string, tallies: ReadonlyMap<string, RequestTally>) {
    this.name = name;
    this.help = help;
    this.#tallies = tallies;
  }

  /** As prom-client's Histogram: le in labels, the label set in sharedLabels (the text format joins them). */
  async getForPromString(): Promise<{ name: string; help: string; type: 'histogram'; aggregator: 'sum'; values: HistogramValue[] }> {
    const values: HistogramValue[] = [];
    const bucket = `${this.name}_bucket`;
    for (const t of this.#tallies.values()) {
      // A label set no request reached has no series, as with a Histogram child never observed.
      if (t.count === 0) continue;
      let acc = 0;
      for (let i = 0; i < DURATION_BUCKETS.length; i++) {
        acc += t.buckets[i]!;
        values.push({ labels: { le: DURATION_BUCKETS[i]! }, sharedLabels: t.labels, value: acc, metricName: bucket, exemplar: null });
      }
      values.push({ labels: { le: '+Inf' }, sharedLabels: t.labels, value: t.count, metricName: bucket, exemplar: null });
      values.push({ labels: {}, sharedLabels: t.labels, value: t.sum, metricName: `${this.name}_sum`, exemplar: undefined });
      values.push({ labels: {}, sharedLabels: t.labels, value: t.count, metricName: `${this.name}_count`, exemplar: undefined });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  /** As prom-client's Histogram: each value's labels hold le and the label set. */
  async get(): Promise<{ name: string; help: string; type: 'histogram'; aggregator: 'sum'; values: Array<Omit<HistogramValue, 'sharedLabels'>> }> {
    const data = await this.getForPromString();
    return { ...data, values: data.values.map(({ sharedLabels, labels, ...v }) => ({ ...v, labels: { ...labels, ...sharedLabels } })) };
  }

  /** Registry.resetMetrics(): the histogram starts again at 0 (requests_total keeps its counts). */
  reset(): void {
    for (const t of this.#tallies.values()) {
      t.buckets.fill(0);
      t.sum = 0;
      t.count = 0;
    }
  }
}

interface HistogramValue {
  labels: Record<string, string | number>;
  sharedLabels: Readonly<Record<string, string>>;
  value: number;
  metricName: string;
  exemplar: null | undefined;
}

/** Takes one request's outcome (reload/outcomes.ts OutcomeTally). */
export interface OutcomeSink {
  add(status: number, grpcStatus: string, durationMs: number): void;
}

/** One ratelimit component as the two ratelimit metrics read it. */
export interface RatelimitStat {
  component: string;
  backend: 'local' | 'redis';
  decisions: Readonly<{ allowed: number; limited: number; failedOpen: number; failedClosed: number }>;
  /** null for the local backend. */
  backendUp: boolean | null;
}

/**
 * Per listener and role: the request tally (shared with the other generations'
 * RoleMetrics of the same label set), resolved once per generation so the hot
 * path does no label hashing.
 */
export class RoleMetrics {
  readonly #metrics: Metrics;
  readonly #labels: { listener: string; vset: string; role: string };
  #requests: RequestTally;
  readonly #on: boolean;
  /**
   * Where the role's outcomes in this generation are also tallied for change
   * safety (reload/outcomes.ts); null when no autoRollback or rollout watches it,
   * so the hot path pays one read.
   */
  tally: OutcomeSink | null = null;

  constructor(metrics: Metrics, listener: string, vset: string, role: string) {
    this.#metrics = metrics;
    this.#on = metrics.countRequests;
    this.#labels = { listener, vset, role };
    this.#requests = metrics.requestTally(listener, vset, role);
  }

  // hot path
  count(code: number, seconds: number): void {
    if (!this.#on) return;
    let t = this.#requests;
    if (t.forgotten) {
      // A request that outlived its label set's last generation counts again from 0, as a new series.
      const l = this.#labels;
      t = this.#requests = this.#metrics.requestTally(l.listener, l.vset, l.role);
    }
    const c = t.codes.get(code);
    if (c === undefined) t.codes.set(code, { n: 1 });
    else c.n++;
    // What Histogram.observe refuses: a NaN would spoil the sum for good.
    if (!Number.isFinite(seconds)) return;
    let i = 0;
    while (i < DURATION_BUCKETS.length && seconds > DURATION_BUCKETS[i]!) i++;
    t.buckets[i]!++;
    t.sum += seconds;
    t.count++;
  }

  /** A gRPC call ended with this status (its canonical name). */
  grpc(code: string): void {
    if (!this.#on) return;
    const l = this.#labels;
    this.#metrics.grpcRequests.labels(l.listener, l.vset, l.role, code).inc();
  }

  tcpConnection(result: 'ok' | 'error' | 'refused'): void {
    const l = this.#labels;
    this.#metrics.tcpConnections.inc({ listener: l.listener, vset: l.vset, role: l.role, result });
  }

  /** The counter of this role's UDP datagrams in one direction (resolved once per flow). */
  udpDatagrams(direction: 'in' | 'out' | 'dropped'): Counter.Internal {
    return this.#metrics.udpDatagrams.labels(this.#labels.listener, this.#labels.role, direction);
  }

  upstreamError(reason: string): void {
    this.#metrics.upstreamErrors.inc({ listener: this.#labels.listener, role: this.#labels.role, reason });
  }

  retried(reason: string): void {
    this.#metrics.retries.inc({ listener: this.#labels.listener, role: this.#labels.role, reason });
  }

  /** A retry the listener's budget refused. */
  budgetExhausted(): void {
    this.#metrics.retryBudgetExhausted.inc({ listener: this.#labels.listener });
  }

  /** A request cut because its body came slower than the listener's minUploadRate. */
  slowUpload(): void {
    this.#metrics.slowUploads.inc({ listener: this.#labels.listener });
  }
}

/**
 * The bytes of one TCP client connection not yet in tcp_bytes_total: added at each
 * scrape while it is open (Metrics.openTcp), and the rest when it closes. Nothing
 * is counted per chunk, so the byte pipe pays nothing for it.
 */
export class TcpTally {
  readonly #socket: Socket;
  readonly #in: Counter.Internal;
  readonly #out: Counter.Internal;
  #countedIn = 0;
  #countedOut = 0;

  constructor(socket: Socket, bytesIn: Counter.Internal, bytesOut: Counter.Internal) {
    this.#socket = socket;
    this.#in = bytesIn;
    this.#out = bytesOut;
  }

  flush(): void {
    const read = this.#socket.bytesRead;
    // bytesWritten includes what is still queued in the socket: only what left counts.
    const written = this.#socket.bytesWritten - this.#socket.writableLength;
    if (read > this.#countedIn) {
      this.#in.inc(read - this.#countedIn);
      this.#countedIn = read;
    }
    if (written > this.#countedOut) {
      this.#out.inc(written - this.#countedOut);
      this.#countedOut = written;
    }
  }
}

import { formatHostPort } from '../config/parse.js';
import { request } from 'node:http';
import { connect as h2Connect, type IncomingHttpHeaders } from 'node:http2';
import { request as httpsRequest } from 'node:https';
import { connect, isIP } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { UpstreamTls } from '../net/tls_material.js';
import type { HealthCheckConfig, OutlierConfig } from '../config/types.js';
import { timeoutAfterIo } from './timeout.js';

export type HealthLog = (line: string) => void;

/**
 * What is known of one upstream address's health, shared by every listener and
 * generation that routes to it (so it survives reloads while the address stays):
 * the verdict of its active check, and its outlier-ejection state.
 */
export class EndpointHealth {
  readonly address: string;
  /** The active check failed `unhealthyThreshold` times in a row (and has not passed enough since). */
  checkFailed = false;
  /** Ejected by outlier detection, until its timer lets it back. */
  ejected = false;
  /** Failed tries in a row (reset by a success). */
  consecutiveErrors = 0;
  /** Ejections in a row: the next one lasts (ejections + 1) × the base time. */
  ejections = 0;
  #readmittedAt = 0;
  #ejectTimer: NodeJS.Timeout | null = null;
  readonly #checker: HealthChecker;
  readonly #log: HealthLog;

  constructor(host: string, port: number, log: HealthLog) {
    this.address = formatHostPort({ host, port });
    this.#log = log;
    this.#checker = new HealthChecker(this, host, port, log);
  }

  // hot path
  get available(): boolean {
    return !this.checkFailed && !this.ejected;
  }

  /**
   * Outlier detection, passive: counts a failed try. Ejects when the count reaches
   * the threshold and `mayEject` (the role channel's cap on ejected endpoints)
   * allows it; returns true when this call ejected the endpoint.
   */
  failed(policy: OutlierConfig, mayEject: () => boolean): boolean {
    if (this.ejected || ++this.consecutiveErrors < policy.consecutiveErrors || !mayEject()) return false;
    // An endpoint that stayed in for a whole maximum ejection time starts over at the base.
    if (this.#readmittedAt > 0 && Date.now() - this.#readmittedAt > policy.maxEjectionMs) this.ejections = 0;
    const ms = Math.min(policy.baseEjectionMs * ++this.ejections, policy.maxEjectionMs);
    this.ejected = true;
    this.#log(`endpoint ${this.address} ejected for ${ms} ms after ${this.consecutiveErrors} failures in a row (ejection ${this.ejections})`);
    this.#ejectTimer = setTimeout(() => {
      this.#ejectTimer = null;
      this.ejected = false;
      this.consecutiveErrors = 0;
      this.#readmittedAt = Date.now();
      this.#log(`endpoint ${this.address} readmitted after its ejection`);
    }, ms);
    this.#ejectTimer.unref();
    return true;
  }

  // hot path
  succeeded(): void {
    if (this.consecutiveErrors !== 0) this.consecutiveErrors = 0;
  }

  /** A generation's active check of this address; the returned function ends it. */
  watch(config: HealthCheckConfig, tls: UpstreamTls | null = null): () => void {
    return this.#checker.lease(config, tls);
  }

  close(): void {
    if (this.#ejectTimer) clearTimeout(this.#ejectTimer);
    this.#checker.close();
  }
}

/**
 * The active check of one address. Each generation whose role channel has a
 * healthCheck holds a lease with its config; the newest lease's config is the
 * one used (a reload that changes the check takes over at once, and a failed
 * build's lease falls away again). The count of passes or failures in a row, and
 * so the verdict, carries over from one config to the next.
 */
class HealthChecker {
  readonly #health: EndpointHealth;
  readonly #host: string;
  readonly #port: number;
  readonly #log: HealthLog;
  readonly #leases: (HealthCheckConfig & { tls: UpstreamTls | null })[] = [];
  #timer: NodeJS.Timeout | null = null;
  /** When the scheduled check runs (Date.now() time). */
  #dueAt = 0;
  #running = false;
  #closed = false;
  #passes = 0;
  #failures = 0;

  constructor(health: EndpointHealth, host: string, port: number, log: HealthLog) {
    this.#health = health;
    this.#host = host;
    this.#port = port;
    this.#log = log;
  }

  lease(config: HealthCheckConfig, tls: UpstreamTls | null): () => void {
    const entry = { ...config, tls };
    this.#leases.push(entry);
    // First lease: check now, so a dead endpoint is known within one timeout.
    if (this.#leases.length === 1 && !this.#running) this.#schedule(0);
    // A shorter interval takes over at once, not after the old, longer wait.
    else if (this.#timer !== null && this.#dueAt - Date.now() > config.intervalMs) {
      this.stop();
      this.#schedule(config.intervalMs);
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#leases.splice(this.#leases.indexOf(entry), 1);
      if (this.#leases.length === 0) {
        this.stop();
        // Nobody checks it any more: it must not stay out on an old verdict.
        this.#health.checkFailed = false;
        this.#passes = this.#failures = 0;
      }
    };
  }

  stop(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }

  /** The address is no longer used: no check runs again, whatever leases remain. */
  close(): void {
    this.#closed = true;
    this.stop();
  }

  #schedule(ms: number): void {
    if (this.#closed) return;
    this.#dueAt = Date.now() + ms;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      void this.#run();
    }, ms);
    this.#timer.unref();
  }

  async #run(): Promise<void> {
    const config = this.#leases.at(-1);
    if (!config) return;
    this.#running = true;
    const problem = await (config.grpc !== undefined
      ? grpcCheck(this.#host, this.#port, config.grpc, config.timeoutMs, config.tls)
      : config.path === undefined
        ? tcpCheck(this.#host, this.#port, config.timeoutMs, config.tls)
        : httpCheck(this.#host, this.#port, config.path, config.timeoutMs, config.tls));
    this.#running = false;
    const now = this.#leases.at(-1);
    if (!now) return; // released while the check ran
    this.#record(problem, now);
    if (this.#timer === null) this.#schedule(now.intervalMs);
  }

  #record(problem: string | null, config: HealthCheckConfig): void {
    const h = this.#health;
    if (problem === null) {
      this.#failures = 0;
      if (++this.#passes >= config.healthyThreshold && h.checkFailed) {
        h.checkFailed = false;
        this.#log(`endpoint ${h.address} is healthy again (${this.#passes} checks passed in a row)`);
      }
    } else {
      this.#passes = 0;
      if (++this.#failures >= config.unhealthyThreshold && !h.checkFailed) {
        h.checkFailed = true;
        this.#log(`endpoint ${h.address} is unhealthy: ${this.#failures} checks failed in a row (last: ${problem})`);
      }
    }
  }
}

/** The TLS options of a check: the channel's own, so a check passes only where traffic would. */
function tlsOptions(host: string, tls: UpstreamTls): { secureContext: UpstreamTls['context']; servername: string | undefined } {
  return { secureContext: tls.context, servername: tls.serverName ?? (isIP(host) === 0 ? host : undefined) };
}

/** Resolves with null when a connection (with `tls`: a TLS handshake) completes within the timeout, else with what went wrong. */
function tcpCheck(host: string, port: number, timeoutMs: number, tls: UpstreamTls | null): Promise<string | null> {
  return new Promise((resolve) => {
    const s = tls === null ? connect({ host, port }) : tlsConnect({ host, port, ...tlsOptions(host, tls) });
    let settled = false;
    const settle = (problem: string | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      s.destroy();
      resolve(problem);
    };
    const timer = timeoutAfterIo(() => settle(`no connection within ${timeoutMs} ms`), timeoutMs);
    s.once(tls === null ? 'connect' : 'secureConnect', () => settle(null));
    s.once('error', (err: NodeJS.ErrnoException) => settle(err.code ?? err.message));
  });
}

/** GET `path`: null for a 2xx or 3xx answer within the timeout, else what went wrong. */
function httpCheck(host: string, port: number, path: string, timeoutMs: number, tls: UpstreamTls | null): Promise<string | null> {
  return new Promise((resolve) => {
    let settled = false;
    const settle = (problem: string | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.destroy();
      resolve(problem);
    };
    const req = (tls === null ? request : httpsRequest)({
      host, port, path, method: 'GET', agent: false, ...(tls === null ? {} : tlsOptions(host, tls)),
      headers: { 'user-agent': 'switchyard-health-check', connection: 'close' },
    }, (res) => {
      const code = res.statusCode ?? 0;
      res.resume();
      settle(code >= 200 && code < 400 ? null : `HTTP ${code}`);
    });
    const timer = timeoutAfterIo(() => settle(`no answer within ${timeoutMs} ms`), timeoutMs);
    req.once('error', (err: NodeJS.ErrnoException) => settle(err.code ?? err.message));
    req.end();
  });
}

/**
 * grpc.health.v1.Health/Check of `service` on a connection of its own (HTTP/2, with
 * the channel's TLS and ALPN h2): null when the answer is SERVING with status OK
 * within the timeout, else what it was. The messages are small enough to write and
 * read by hand: HealthCheckRequest{service = 1}, HealthCheckResponse{status = 1}.
 */
function grpcCheck(host: string, port: number, service: string, timeoutMs: number, tls: UpstreamTls | null): Promise<string | null> {
  return new Promise((resolve) => {
    const session = h2Connect(`${tls === null ? 'http' : 'https'}://${isIP(host) === 6 ? `[${host}]` : host}:${port}`, {
      createConnection: () => (tls === null ? connect({ host, port }) : tlsConnect({ host, port, ...tlsOptions(host, tls), ALPNProtocols: ['h2'] })),
    });
    let settled = false;
    const settle = (problem: string | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      session.destroy();
      resolve(problem);
    };
    const timer = timeoutAfterIo(() => settle(`no answer within ${timeoutMs} ms`), timeoutMs);
    session.on('error', (err: NodeJS.ErrnoException) => settle(err.code ?? err.message));
    const stream = session.request({
      ':method': 'POST', ':path': '/grpc.health.v1.Health/Check', 'content-type': 'application/grpc', te: 'trailers',
      'user-agent': 'switchyard-health-check', 'grpc-timeout': `${timeoutMs}m`,
    });
    const chunks: Buffer[] = [];
    let status = '';
    const take = (h: IncomingHttpHeaders): void => { if (h['grpc-status'] !== undefined) status = String(h['grpc-status']); };
    stream.on('response', take);
    stream.on('trailers', take);
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('error', (err: NodeJS.ErrnoException) => settle(err.code ?? err.message));
    stream.on('end', () => {
      if (status !== '0') {
        settle(`gRPC status ${status || 'missing'}`);
        return;
      }
      const serving = healthStatus(Buffer.concat(chunks));
      settle(serving === 1 ? null : `health status ${HEALTH_STATUS[serving] ?? serving}`);
    });
    stream.end(grpcFrame(service === '' ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x0a]), varint(Buffer.byteLength(service)), Buffer.from(service)])));
  });
}

const HEALTH_STATUS: Record<number, string> = { 0: 'UNKNOWN', 1: 'SERVING', 2: 'NOT_SERVING', 3: 'SERVICE_UNKNOWN' };

/** A gRPC message on the wire: not compressed, its length, its bytes. */
function grpcFrame(message: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(message.length, 1);
  return Buffer.concat([head, message]);
}

function varint(n: number): Buffer {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return Buffer.from(out);
}

/** HealthCheckResponse's status (field 1, a varint) from its framed message; 0 (UNKNOWN) when absent. */
function healthStatus(framed: Buffer): number {
  if (framed.length < 5) return 0;
  const msg = framed.subarray(5, 5 + framed.readUInt32BE(1));
  for (let i = 0; i < msg.length;) {
    const key = msg[i++]!;
    let value = 0;
    let shift = 0;
    while (i < msg.length) {
      const b = msg[i++]!;
      value |= (b & 0x7f) << shift;
      shift += 7;
      if ((b & 0x80) === 0) break;
    }
    if (key === 0x08) return value;
    if ((key & 7) === 2) i += value; // a length-delimited field we do not know
  }
  return 0;
}

import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from 'node:tls';
import type { ListenerTls } from '../net/tls_material.js';
import { UdpListenSocket } from './udp_socket.js';
import { asHttp1 } from '../http2/h2_compat.js';
import { goAwaySpreadMs, H2Sessions, RESETS_PER_SECOND } from './h2_sessions.js';
import { SwitchyardError } from '../errors.js';
import { H1Connection } from './h1_connection.js';
import { LinkedSet } from '../linked_set.js';
import type { HostPort } from '../config/types.js';
import type { ListenerPlan, ServingSocket } from './plan.js';

/**
 * Where a listening socket hands its traffic: the data path's entry points
 * (listeners/serve.ts), given to the pool by whoever builds it, so the pool knows
 * no protocol.
 */
export interface Dispatch {
  /** A tcp connection; returns the socket that carries it from now on. */
  tcp(plan: ListenerPlan, socket: Socket): Socket;
  request(ls: ServingSocket, req: IncomingMessage, res: ServerResponse): void;
  upgrade(ls: ServingSocket, req: IncomingMessage, socket: Socket, head: Buffer): void;
  connect(ls: ServingSocket, req: IncomingMessage, socket: Socket): void;
  clientError(ls: ServingSocket, err: NodeJS.ErrnoException, socket: Socket): void;
}


function noop(): void {}

/** A listening socket of the pool: a stream one (http, tcp), or a datagram one (udp). */
export type PooledSocket = ListenSocket | UdpListenSocket;

/** How often, at most, a limit that keeps refusing connections is logged (the counter has every one). */
const REFUSAL_LOG_INTERVAL_MS = 10_000;

/**
 * The client connections open across every listening socket, and how many may be
 * (`limits.maxConnections`, or its default from the file-descriptor limit): a
 * connection beyond it is closed as soon as it is accepted (issue 11, item 5).
 */
export class ConnectionBudget {
  open = 0;
  /** Set by the runtime at each swap; Infinity: no global limit. */
  max = Infinity;
  /** When the global limit was last logged as refusing. */
  loggedAt = -Infinity;
  readonly #log: (line: string) => void;

  constructor(log: (line: string) => void) {
    this.#log = log;
  }

  /** Logs a limit that refuses connections, once per REFUSAL_LOG_INTERVAL_MS per limit. */
  refusing(what: { loggedAt: number }, line: () => string): void {
    const now = performance.now();
    if (now - what.loggedAt < REFUSAL_LOG_INTERVAL_MS) return;
    what.loggedAt = now;
    this.#log(line());
  }
}

/**
 * One listening socket, owned by the pool and leased by generations. Every accepted
 * connection is dispatched on the *current* plan's protocol: http to an HTTP/1.1
 * connection (h1_connection.ts) or HTTP/2 sessions, tcp to the byte pipe. So a listener can change protocol, filters or target on the
 * same address without rebinding, and a reload never refuses a connection.
 */
export class ListenSocket implements ServingSocket {
  readonly key: string;
  readonly requested: HostPort;
  readonly server: Server;
  /** The connections that speak HTTP/2 (prior knowledge, or ALPN h2): each stream is one request. */
  readonly h2: H2Sessions;
  /** The plan of the newest generation that has this address; swapped in one assignment per reload. */
  plan: ListenerPlan | null = null;
  leases = 0;
  /** No generation serves this address any more: connections still open are closed after their request. */
  retired = false;
  /** Client connections open on this socket, whichever generation and protocol took them. */
  open = 0;
  /** When this socket's limit was last logged as refusing (ConnectionBudget.refusing). */
  loggedAt = -Infinity;
  readonly #budget: ConnectionBudget;
  /** The HTTP/1.1 client connections (h1_connection.ts). */
  readonly #h1 = new LinkedSet<H1Connection>();
  readonly #closed = (): void => {
    this.open--;
    this.#budget.open--;
  };

  constructor(key: string, requested: HostPort, budget: ConnectionBudget, dispatch: Dispatch) {
    this.key = key;
    this.requested = requested;
    this.#budget = budget;
    // Half-open: a tcp plan's byte pipe passes a client's FIN on (an HTTP/1.1 connection closes on it).
    const server = createServer({ allowHalfOpen: true, noDelay: true });
    this.server = server;
    const h2 = new H2Sessions((req, res) => dispatch.request(this, ...asHttp1(req, res)));
    h2.onAbuse((plan) => budget.refusing(h2, () => `listener ${plan?.name ?? key}: a client reset streams faster than ${RESETS_PER_SECOND}/s: its connection was closed (GOAWAY ENHANCE_YOUR_CALM)`));
    this.h2 = h2;
    /** `counted`: the connection's close is counted already (TLS: on the raw socket). */
    const serve = (plan: ListenerPlan, accepted: Socket, counted = false): void => {
      const closed = counted ? noop : this.#closed;
      if (plan.protocol !== 'http') {
        dispatch.tcp(plan, accepted).on('close', closed);
        return;
      }
      let socket = accepted;
      if (plan.tls !== null && (accepted as TLSSocket).alpnProtocol === 'h2') h2.serve(accepted);
      else {
        // A plain connection is HTTP/1.1 unless it opens with HTTP/2's preface (h1_connection.ts tells).
        const toH2 = plan.tls !== null ? null : (s: Socket): void => {
          this.#h1.delete(conn);
          h2.serve(s);
        };
        const conn: H1Connection = new H1Connection(this, accepted, dispatch, toH2);
        this.#h1.add(conn);
        // The connection's socket: a plain one's handle moved to a new Socket (Node's onread).
        socket = conn.socket;
        socket.once('close', () => this.#h1.delete(conn));
      }
      socket.on('close', closed);
      plan.connectionOpened(socket);
    };
    server.on('connection', (socket: Socket) => {
      const plan = this.plan;
      if (plan === null || this.retired) socket.destroy();
      else if (!this.#admit(plan, socket)) return;
      else if (plan.tls === null) serve(plan, socket);
      else terminateTls(plan, plan.tls, socket, serve, this.#closed);
    });
  }

  // hot path
  /**
   * Counts a new connection against this socket's limit (the newest plan's
   * `maxConnections`) and the global one, or refuses it: closed at once, without a
   * byte, and counted, as Envoy closes a connection over a listener's limit
   * (downstream_cx_overflow). An HTTP client gets no 503: that would be a write to a
   * connection the sidecar cannot afford, and a client that opens more connections
   * than the limit is rarely one that reads answers.
   */
  #admit(plan: ListenerPlan, socket: Socket): boolean {
    const budget = this.#budget;
    const max = plan.config.maxConnections;
    if (max !== undefined && this.open >= max) {
      socket.destroy();
      plan.counters.refusedListener.inc();
      budget.refusing(this, () => `listener ${plan.name}: ${this.open} connections open, its limit (listeners.${plan.name}.maxConnections): new connections are closed at once (switchyard_connections_refused_total{reason="listener"})`);
      return false;
    }
    if (budget.open >= budget.max) {
      socket.destroy();
      plan.counters.refusedGlobal.inc();
      budget.refusing(budget, () => `${budget.open} client connections open, the global limit (limits.maxConnections ${budget.max}): new connections on every listener are closed at once (switchyard_connections_refused_total{reason="global"})`);
      return false;
    }
    // Counted until the connection's socket closes (the caller listens: a tcp connection moves to another Socket).
    this.open++;
    budget.open++;
    return true;
  }

  /** The address actually bound (the port differs from the requested one when that was 0). */
  get address(): HostPort {
    const a = this.server.address();
    if (a && typeof a === 'object') return { host: a.address, port: a.port };
    return this.requested;
  }

  /**
   * Stops accepting (no generation serves the address any more): HTTP/1 connections
   * close after their request, HTTP/2 ones get GOAWAY, spread over part of `drainMs`.
   */
  retire(drainMs: number): void {
    this.retired = true;
    this.server.close();
    this.#closeIdleH1();
    this.h2.goAway(goAwaySpreadMs(drainMs));
  }

  /** Closes the client connections with no request open (after retire, once drained). */
  closeIdle(): void {
    this.#closeIdleH1();
    this.h2.closeIdle();
  }

  #closeIdleH1(): void {
    for (const c of this.#h1.toArray()) if (c.idle) c.socket.destroy();
  }

  /** Closes every client connection (shutdown, after the drain). */
  closeAll(): void {
    for (const c of this.#h1.toArray()) c.socket.destroy();
    this.h2.destroyAll();
  }

  /** Applies a plan's HTTP/2 settings; HTTP/1.1 connections read their limits from the current plan at each request. */
  configure(plan: ListenerPlan): void {
    if (plan.protocol === 'http') this.h2.configure(plan);
  }
}

/**
 * TLS engines by plan: a tls.Server that never listens, handed each accepted
 * connection (as https and http2 do), so that client certificates are verified
 * the way Node verifies them. One per plan: a rotated certificate is used from the
 * reload that read it, without a rebind.
 */
const tlsEngines = new WeakMap<ListenerPlan, TlsServer>();

/**
 * TLS on an accepted connection, with the plan's certificate; it is served on that
 * plan once the handshake is done (a client certificate that does not chain to
 * clientCa ends it there). The handshake gets the listener's headers timeout.
 * `closed` runs once, when the connection is gone, whichever side of TLS closes first.
 */
function terminateTls(plan: ListenerPlan, tls: ListenerTls, raw: Socket, serve: (plan: ListenerPlan, socket: Socket, counted: boolean) => void,
  closed: () => void): void {
  let engine = tlsEngines.get(plan);
  if (engine === undefined) {
    engine = createTlsServer({
      ...tls.pem,
      requestCert: tls.verifyClients,
      rejectUnauthorized: tls.verifyClients,
      ALPNProtocols: plan.protocol === 'http' ? ['h2', 'http/1.1'] : undefined,
      handshakeTimeout: plan.config.timeouts.headersMs,
    });
    engine.on('secureConnection', (secure: TLSSocket) => serve(plan, secure, true));
    engine.on('tlsClientError', (_err, secure: TLSSocket) => {
      plan.counters.tlsHandshakeErrors.inc();
      secure.destroy();
    });
    tlsEngines.set(plan, engine);
  }
  let done = false;
  const once = (): void => {
    if (done) return;
    done = true;
    closed();
  };
  raw.once('close', once);
  engine.emit('connection', raw);
}

/**
 * Listening sockets by address, outside any generation (Caddy's listener pool).
 * A generation leases the addresses it serves; an address leased by the next
 * generation too is never rebound, and the last release stops it listening.
 */
export class SocketPool {
  readonly #sockets = new Map<string, ListenSocket>();
  readonly #udp = new Map<string, UdpListenSocket>();
  /** Client connections across every socket of the pool, and the global limit. */
  readonly budget: ConnectionBudget;
  readonly #dispatch: Dispatch;

  constructor(dispatch: Dispatch, log: (line: string) => void = () => {}) {
    this.#dispatch = dispatch;
    this.budget = new ConnectionBudget(log);
  }

  /** The pool key: the address, or for port 0 (any free port) the listener name too. */
  static key(name: string, hp: HostPort): string {
    return hp.port === 0 ? `${hp.host}:0/${name}` : `${hp.host}:${hp.port}`;
  }

  get(key: string): ListenSocket | undefined {
    return this.#sockets.get(key);
  }

  /** Leases the socket for `key`, binding it first when it is new. Rejects with SY_ERR_BIND. */
  async lease(key: string, hp: HostPort, name: string): Promise<ListenSocket> {
    // A listener that moves from port 0 to the port it was given keeps its socket
    // (the same listener only: another one naming that port must not share it).
    let ls = this.#sockets.get(key) ?? (hp.port === 0 ? undefined : this.#boundTo(hp, name));
    if (ls) {
      ls.leases++;
      this.#sockets.set(key, ls);
      return ls;
    }
    ls = new ListenSocket(key, hp, this.budget, this.#dispatch);
    ls.leases++;
    this.#sockets.set(key, ls);
    const server = ls.server;
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host: hp.host, port: hp.port, backlog: 511 }, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      this.#sockets.delete(key);
      throw new SwitchyardError('SY_ERR_BIND', `cannot listen on ${hp.host}:${hp.port}: ${(err as Error).message}`, { cause: err });
    }
    server.on('error', () => { /* accept errors (EMFILE) must not kill the process */ });
    return ls;
  }

  #boundTo(hp: HostPort, name: string): ListenSocket | undefined {
    const ls = this.#sockets.get(SocketPool.key(name, { host: hp.host, port: 0 }));
    if (ls && !ls.retired && ls.server.listening && ls.address.port === hp.port && ls.address.host === hp.host) return ls;
    return undefined;
  }

  /** Leases the udp socket for `key` (a udp port is an address of its own), binding it first when it is new. */
  async leaseUdp(key: string, hp: HostPort, name: string): Promise<UdpListenSocket> {
    // As for stream sockets: a listener that moves from port 0 to the port it was given keeps its socket.
    let us = this.#udp.get(key);
    if (!us && hp.port !== 0) {
      const was = this.#udp.get(SocketPool.key(name, { host: hp.host, port: 0 }));
      if (was && !was.retired && was.address.port === hp.port && was.address.host === hp.host) us = was;
    }
    if (us) {
      us.leases++;
      this.#udp.set(key, us);
      return us;
    }
    us = new UdpListenSocket(key, hp);
    us.leases++;
    this.#udp.set(key, us);
    try {
      await us.bind();
    } catch (err) {
      this.#udp.delete(key);
      throw err;
    }
    return us;
  }

  /**
   * Drops one lease; the last one stops accepting (open connections finish on their
   * own, HTTP/2 ones told by GOAWAY within part of `drainMs`; a udp socket's flows end).
   */
  release(ls: PooledSocket, drainMs: number): void {
    if (--ls.leases > 0) return;
    if (ls instanceof UdpListenSocket) {
      for (const [k, v] of this.#udp) if (v === ls) this.#udp.delete(k);
      ls.close();
      return;
    }
    for (const [k, v] of this.#sockets) if (v === ls) this.#sockets.delete(k);
    ls.retire(drainMs);
  }

  /** Every stream socket, for shutdown. */
  all(): ListenSocket[] {
    return [...new Set(this.#sockets.values())];
  }

  /** Closes every udp socket (shutdown): their flows end. */
  closeUdp(): void {
    for (const us of new Set(this.#udp.values())) us.close();
    this.#udp.clear();
  }
}

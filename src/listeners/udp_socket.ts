import { createSocket, type RemoteInfo, type Socket as DgramSocket } from 'node:dgram';
import { isIPv6 } from 'node:net';
import type { Counter } from 'prom-client';
import { DEFAULT_UDP_FLOWS } from '../config/defaults.js';
import type { HostPort } from '../config/types.js';
import { SwitchyardError } from '../errors.js';
import type { UdpExchange } from '../filters/api.js';
import type { Endpoint } from '../upstream/endpoints.js';
import { EndpointPicker } from '../upstream/picker.js';
import { outcomeOf, tryFailed } from '../upstream/route.js';
import type { ListenerPlan, ServingSocket } from './plan.js';
import { publishConnection } from './record.js';
import { Unit } from './unit.js';

/**
 * A udp listener: one bound datagram socket, and the client flows on it, each a
 * source ip:port. A flow's first datagram runs the filter chain (a UdpUnit), which
 * picks its role; the flow then has an upstream socket of its own, connected to one
 * endpoint of that role, whose answers go back to the client from the listener's
 * address. A flow ends after `timeouts.idle` without a datagram either way.
 *
 * Flows belong to the socket, not to a generation: a reload re-homes every flow
 * whose role and endpoint the new plan still has (its datagrams keep their path),
 * and ends the others (their next datagram starts a new flow). Flows are capped
 * (`maxConnections`, default DEFAULT_UDP_FLOWS): a datagram that would open one
 * more is dropped and counted, so a flood of spoofed source ports costs neither
 * memory nor file descriptors beyond the cap.
 */
export class UdpListenSocket implements ServingSocket {
  readonly key: string;
  readonly requested: HostPort;
  plan: ListenerPlan | null = null;
  leases = 0;
  retired = false;
  readonly #socket: DgramSocket;
  readonly flows = new Map<string, UdpFlow>();
  #sweeper: NodeJS.Timeout | null = null;

  constructor(key: string, requested: HostPort) {
    this.key = key;
    this.requested = requested;
    this.#socket = createSocket({ type: isIPv6(requested.host) ? 'udp6' : 'udp4' });
    this.#socket.on('message', (msg, rinfo) => this.#datagram(msg, rinfo));
    this.#socket.on('error', () => { /* an ICMP error for one client must not end the listener */ });
  }

  bind(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const s = this.#socket;
      s.once('error', reject);
      s.bind(this.requested.port, this.requested.host, () => {
        s.off('error', reject);
        resolve();
      });
    }).catch((err: Error) => {
      throw new SwitchyardError('SY_ERR_BIND', `cannot listen on udp ${this.requested.host}:${this.requested.port}: ${err.message}`, { cause: err });
    });
  }

  get address(): HostPort {
    const a = this.#socket.address();
    return { host: a.address, port: a.port };
  }

  /** Sends an upstream's answer to the client, from the listener's address. */
  sendTo(msg: Buffer, client: RemoteInfo): void {
    this.#socket.send(msg, client.port, client.address);
  }

  /**
   * A new plan serves this address: flows whose role (by name) and endpoint it
   * still has go on under it; the others end now.
   */
  configure(plan: ListenerPlan): void {
    for (const flow of [...this.flows.values()]) flow.rehome(plan);
    const idleMs = plan.upstream.idleMs;
    if (this.#sweeper !== null) clearInterval(this.#sweeper);
    this.#sweeper = null;
    // Idle flows are looked for a few times per idle period (at most every second).
    if (idleMs > 0) this.#sweeper = setInterval(() => this.#sweep(idleMs), Math.min(1_000, Math.max(50, idleMs / 4))).unref();
  }

  // hot path
  #datagram(msg: Buffer, rinfo: RemoteInfo): void {
    const plan = this.plan;
    if (plan === null || this.retired) return;
    const key = `${rinfo.address}|${rinfo.port}`;
    const flow = this.flows.get(key);
    if (flow !== undefined) {
      flow.fromClient(msg);
      return;
    }
    const cap = plan.config.maxConnections ?? DEFAULT_UDP_FLOWS;
    if (this.flows.size >= cap) {
      plan.counters.refusedListener.inc();
      plan.sinks[plan.roles.length]!.metrics.udpDatagrams('dropped').inc();
      return;
    }
    const fresh = new UdpFlow(this, plan, rinfo, key);
    this.flows.set(key, fresh);
    plan.counters.udpFlows.inc();
    fresh.open(msg);
  }

  #sweep(idleMs: number): void {
    const now = performance.now();
    for (const flow of [...this.flows.values()]) if (now - flow.lastSeen >= idleMs) flow.end('ok');
  }

  /** No generation serves this address any more: every flow ends, and the socket closes. */
  close(): void {
    this.retired = true;
    if (this.#sweeper !== null) clearInterval(this.#sweeper);
    for (const flow of [...this.flows.values()]) flow.end('ok');
    this.#socket.close();
  }
}

/** Datagrams a flow keeps while its upstream socket connects; beyond them, they are dropped. */
const QUEUE_MAX = 64;

/** One client flow: its role, its upstream socket, its counts. */
class UdpFlow {
  readonly #listen: UdpListenSocket;
  plan: ListenerPlan;
  readonly client: RemoteInfo;
  readonly key: string;
  readonly #start = performance.now();
  lastSeen = performance.now();
  /** Role index in `plan` (-1 while the chain runs, or when it refused the flow). */
  role = -1;
  #endpoint: Endpoint | null = null;
  #upstream: DgramSocket | null = null;
  #connected = false;
  #queue: Buffer[] = [];
  #ended = false;
  #bytesIn = 0;
  #bytesOut = 0;
  #in: Counter.Internal | null = null;
  #out: Counter.Internal | null = null;

  constructor(listen: UdpListenSocket, plan: ListenerPlan, client: RemoteInfo, key: string) {
    this.#listen = listen;
    this.plan = plan;
    this.client = client;
    this.key = key;
  }

  /** The first datagram: the chain decides the flow's role; the datagram waits for its upstream. */
  open(first: Buffer): void {
    this.#queue.push(first);
    this.#bytesIn += first.length;
    new UdpUnit(this.plan, this).run();
  }

  // hot path
  fromClient(msg: Buffer): void {
    this.lastSeen = performance.now();
    this.#bytesIn += msg.length;
    if (this.#connected) {
      this.#upstream!.send(msg);
      this.#in!.inc();
    } else if (this.#queue.length < QUEUE_MAX && !this.#ended) this.#queue.push(msg);
    else this.plan.sinks[this.role < 0 ? this.plan.roles.length : this.role]!.metrics.udpDatagrams('dropped').inc();
  }

  /** The chain chose `role`: connect to the next endpoint of it (or of the split, when it may fall back). */
  connect(role: number, fallback: boolean, unit: UdpUnit): void {
    const plan = this.plan;
    if (this.#ended) {
      // Ended while its chain ran (a reload, the listener gone): nothing to connect.
      unit.upstreamEnded(outcomeOf(new EndpointPicker(plan.upstream, role, fallback), null, 0, 0));
      return;
    }
    const picker = new EndpointPicker(plan.upstream, role, fallback);
    this.role = picker.role;
    const e = picker.endpoint;
    this.#endpoint = e;
    const metrics = plan.sinks[this.role]!.metrics;
    this.#in = metrics.udpDatagrams('in');
    this.#out = metrics.udpDatagrams('out');
    const up = createSocket({ type: isIPv6(e.host) ? 'udp6' : 'udp4' });
    this.#upstream = up;
    up.on('message', (msg) => {
      if (this.#ended) return;
      this.lastSeen = performance.now();
      this.#bytesOut += msg.length;
      this.#out!.inc();
      this.#listen.sendTo(msg, this.client);
    });
    up.on('error', (err: NodeJS.ErrnoException) => {
      // A connected UDP socket hears the endpoint's ICMP port unreachable as ECONNREFUSED.
      tryFailed(plan.upstream, picker, err.code === 'ECONNREFUSED' ? 'connect-failure' : 'reset');
      this.end('error', err.code === 'ECONNREFUSED' ? 'SY_ERR_UPSTREAM_CONNECT' : 'SY_ERR_UPSTREAM_RESET');
    });
    up.connect(e.port, e.host, (err?: Error) => {
      if (err) {
        // The name did not resolve (a connect callback gets the error, no 'error' event comes).
        tryFailed(plan.upstream, picker, 'connect-failure');
        this.end('error', 'SY_ERR_UPSTREAM_CONNECT');
        return;
      }
      if (this.#ended) {
        up.close();
        return;
      }
      this.#connected = true;
      picker.set.succeeded(e);
      for (const msg of this.#queue) {
        up.send(msg);
        this.#in!.inc();
      }
      this.#queue = [];
    });
    unit.upstreamEnded(outcomeOf(picker, null, 1, 0));
  }

  /** A new plan on the socket: the flow stays when it has the flow's role and endpoint, else it ends. */
  rehome(plan: ListenerPlan): void {
    if (plan === this.plan) return;
    if (this.role < 0) {
      // Its chain still runs on the old plan: it ends; the client's next datagram starts over on the new one.
      this.end('ok');
      return;
    }
    const name = this.plan.roles[this.role]!.name;
    const role = plan.roles.findIndex((r) => r.name === name);
    const e = this.#endpoint;
    if (role < 0 || e === null || !plan.upstream.routes[role]!.endpoints.some((x) => x.host === e.host && x.port === e.port)) {
      this.end('ok');
      return;
    }
    this.plan.counters.udpFlows.dec();
    plan.counters.udpFlows.inc();
    this.plan = plan;
    this.role = role;
    const metrics = plan.sinks[role]!.metrics;
    this.#in = metrics.udpDatagrams('in');
    this.#out = metrics.udpDatagrams('out');
  }

  /** The flow is over (idle, refused, failed, or its listener went): its socket closes, and it is logged once. */
  end(result: 'ok' | 'error' | 'refused', error = ''): void {
    if (this.#ended) return;
    this.#ended = true;
    const dropped = this.#queue.length;
    this.#queue = [];
    if (dropped > 0) this.plan.sinks[this.role < 0 ? this.plan.roles.length : this.role]!.metrics.udpDatagrams('dropped').inc(dropped);
    try {
      this.#upstream?.close();
    } catch { /* closed already */ }
    this.#listen.flows.delete(this.key);
    this.plan.counters.udpFlows.dec();
    const e = this.#endpoint;
    publishConnection(this.plan, {
      role: result === 'refused' ? -1 : this.role, client: this.client.address, result, durationMs: performance.now() - this.#start,
      endpoint: e === null ? '' : e.address, error, tries: e === null ? 0 : 1, bytesIn: this.#bytesIn, bytesOut: this.#bytesOut, protocol: 'udp',
    });
  }
}

/**
 * The unit of work of a new flow: the chain runs on its first datagram and picks
 * the role; the flow then lives on its own (UdpFlow), outside any generation, so
 * its generation is let go of as soon as the role is chosen.
 */
class UdpUnit extends Unit implements UdpExchange {
  readonly protocol = 'udp' as const;
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly #flow: UdpFlow;
  #refused = false;

  constructor(plan: ListenerPlan, flow: UdpFlow) {
    super(plan);
    this.#flow = flow;
    this.remoteAddress = flow.client.address;
    this.remotePort = flow.client.port;
  }

  protected get answered(): boolean {
    return this.#refused;
  }

  protected get gone(): boolean {
    return false;
  }

  /** A filter's answer to a flow: it is refused (its datagrams are dropped; the next one starts a new flow). */
  reply(): void {
    this.#refused = true;
    this.#flow.end('refused');
    this.closed();
  }

  destroy(): void {
    this.#flow.end('ok');
    this.closed();
  }

  protected forward(): void {
    this.#flow.connect(this.role, this.fallback, this);
    this.closed();
  }

  protected failed(): void {
    this.#flow.end('error', 'SY_ERR_FILTER_FAILED');
    this.closed();
  }

  /** The flow records itself when it ends (UdpFlow.end). */
  protected record(): void {}
}

import type { Socket } from 'node:net';
import type { TcpExchange } from '../filters/api.js';
import { TcpTally } from '../metrics.js';
import { acceptTcp, type TcpClient } from '../net/byte_pipe.js';
import { forwardTcp } from '../upstream/tcp_forward.js';
import type { ListenerPlan } from './plan.js';
import { publishConnection, type TcpRecord } from './record.js';
import type { Span } from '@opentelemetry/api';
import { Unit } from './unit.js';

/**
 * One client connection of a tcp listener. The filters run once, for the
 * connection; the chosen role's endpoints get the byte pipe. The unit lasts until
 * the connection closes (or drainTimeout ends it).
 */
export class TcpUnit extends Unit implements TcpExchange {
  readonly protocol = 'tcp' as const;
  readonly socket: Socket;
  /** The client's address, read once (a socket forgets it once closed). */
  readonly remoteAddress: string;
  readonly #client: TcpClient;
  /** Bytes between client and upstream: counted once the connection is forwarded. */
  #tally: TcpTally | null = null;
  /** A filter refused the connection. */
  #refused = false;
  /** The connection's span, when the generation traces. */
  readonly #span: Span | null;

  constructor(plan: ListenerPlan, client: TcpClient) {
    super(plan);
    this.#client = client;
    const socket = (this.socket = client.socket);
    this.remoteAddress = socket.remoteAddress ?? '';
    this.#span = plan.generation.tracing?.startConnection(plan.name, this.remoteAddress) ?? null;
    plan.connectionOpened(socket);
    socket.on('error', () => socket.destroy());
    socket.once('close', () => {
      const tally = this.#tally;
      if (tally !== null) {
        plan.counters.openTcp.delete(tally);
        tally.flush();
      }
      this.closed();
    });
  }


  protected get answered(): boolean {
    return this.socket.destroyed;
  }

  protected get gone(): boolean {
    return this.socket.destroyed;
  }

  /** A filter's answer to a connection: it is refused (closed); a connection has no status or body to send. */
  reply(): void {
    this.#refused = true;
    this.socket.destroy();
  }

  destroy(): void {
    this.socket.destroy();
  }

  protected forward(): void {
    const counters = this.plan.counters;
    this.#tally = new TcpTally(this.socket, counters.bytesIn, counters.bytesOut);
    counters.openTcp.add(this.#tally);
    forwardTcp(this.plan.upstream, this.#client, this, this);
  }

  protected failed(): void {
    this.socket.destroy();
  }

  protected record(): void {
    const socket = this.socket;
    const outcome = this.outcome;
    const durationMs = performance.now() - this.start;
    // Never reached an upstream (refused by a filter, a filter failed, or the client left first): no role.
    // outcome.role is -1 for switchyard's own failure (no descriptor left): counted under no role too.
    const record: TcpRecord = !this.forwarded || outcome === null
      ? { role: -1, client: this.remoteAddress, result: this.#refused ? 'refused' : 'error', durationMs, endpoint: '', error: '', tries: 0,
        bytesIn: socket.bytesRead, bytesOut: socket.bytesWritten }
      : { role: outcome.role, client: this.remoteAddress, result: outcome.failure === null ? 'ok' : 'error', durationMs,
        endpoint: outcome.endpoint, error: outcome.code, tries: outcome.tries, bytesIn: socket.bytesRead, bytesOut: socket.bytesWritten };
    publishConnection(this.plan, record, this.#span);
  }
}

/**
 * The entry of the TCP data path: one accepted client connection. Returns the
 * socket that carries it from now on (acceptTcp may move the handle to a new one),
 * whose 'close' ends it.
 */
export function handleTcp(plan: ListenerPlan, accepted: Socket): Socket {
  const unit = new TcpUnit(plan, acceptTcp(accepted));
  unit.run();
  return unit.socket;
}

import type { Span } from '@opentelemetry/api';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { RuntimeCode } from '../errors.js';
import type { HeaderEdit, HttpExchange } from '../filters/api.js';
import { rawAnswer } from '../http/local_reply.js';
import { upgrades } from '../upstream/upgrade_forward.js';
import type { UpstreamOutcome } from '../upstream/route.js';
import { badRequest } from './http_edge.js';
import type { ListenerPlan, ServingSocket } from './plan.js';
import { publishRequest } from './record.js';
import { Unit } from './unit.js';

/**
 * A WebSocket upgrade: the same filters pick the role, then the two sockets are
 * tunnelled. The unit lasts until the tunnel closes; its duration in the metrics
 * is the handshake's (a tunnel open for an hour would swamp the role's latency),
 * the log line gives the tunnel's whole life.
 */
export class UpgradeUnit extends Unit implements HttpExchange {
  readonly protocol = 'http' as const;
  readonly upgrade = true;
  readonly req: IncomingMessage;
  readonly res = null;
  readonly socket: Socket;
  readonly head: Buffer;
  /** The client's address, read once (a socket forgets it once closed). */
  readonly remoteAddress: string;
  requestHeaderEdits: readonly HeaderEdit[] | null = null;
  responseHeaderEdits: readonly HeaderEdit[] | null;
  /** When the client got its answer (the 101, a refusal, or ours): the request's duration ends there. */
  #answeredAt = 0;
  #status = 101;
  /** Switchyard (or a filter) answered the client itself. */
  #replied = false;
  #error: RuntimeCode | '' = '';
  /** The upgrade's span (its handshake and tunnel), when the generation traces. */
  readonly #span: Span | null;

  constructor(plan: ListenerPlan, req: IncomingMessage, socket: Socket, head: Buffer) {
    super(plan);
    this.req = req;
    this.socket = socket;
    this.head = head;
    this.remoteAddress = socket.remoteAddress ?? '';
    this.responseHeaderEdits = plan.responseHeaderEdits;
    const tracing = plan.generation.tracing;
    this.#span = tracing === null ? null : tracing.startRequest(req.method ?? '', req.url ?? '', req.headers, plan.name);
    socket.once('close', () => this.closed());
    socket.on('error', () => socket.destroy());
  }


  protected get answered(): boolean {
    return this.#replied;
  }

  // A client gone while the chain ran is noticed by the forwarder, which opens nothing then.
  protected get gone(): boolean {
    return false;
  }

  reply(status: number, body = '', headers?: Record<string, string>): void {
    this.#replied = true;
    this.#answeredAt = performance.now();
    this.#status = status;
    const role = this.role >= 0 && this.role < this.plan.roles.length ? this.role : -1;
    this.socket.end(rawAnswer(status, body, headers, { list: this.responseHeaderEdits, vars: this.plan.variables(role) }));
    // The answer is the connection's last word: close once it is written, whether or not the client sends its FIN.
    this.socket.destroySoon?.();
  }

  /** Switchyard will not forward the upgrade as it came (badRequest). */
  refuse(status: number, code: RuntimeCode | '', text: string): void {
    this.#error = code;
    this.reply(status, text);
  }

  /** At drainTimeout the socket is cut; one not yet answered counts as 503 with role "" (as for requests). */
  destroy(): void {
    this.#error ||= 'SY_ERR_DRAIN_TIMEOUT';
    if (!this.#replied && this.#answeredAt === 0) {
      this.#status = 503;
      this.forwarded = false;
    }
    this.socket.destroy();
  }

  protected forward(): void {
    // The upstream's handshake is the span's child: http-proxy sends the parsed headers as they are.
    if (this.#span !== null) Object.assign(this.req.headers, this.plan.generation.tracing!.contextHeaders(this.#span));
    upgrades.forward(this.plan.upstream, this, this, this);
  }

  override upstreamEnded(outcome: UpstreamOutcome): void {
    this.#answeredAt = performance.now();
    // The status the client got: 101, the upstream's refusal relayed, or switchyard's own
    // (502, 504, …); 499 when it left before any answer (nginx's convention, as for requests).
    if (outcome.status > 0) this.#status = outcome.status;
    else if (!this.#replied && this.#error === '') this.#status = 499;
    super.upstreamEnded(outcome);
  }

  protected failed(): void {
    this.#status = 500;
    this.reply(500, 'switchyard: a filter failed on this request\n');
  }

  protected record(): void {
    const now = performance.now();
    const served = this.servedRole;
    const outcome = this.outcome;
    publishRequest(this.plan, {
      role: served, req: this.req, socket: this.socket, client: this.remoteAddress, status: this.#status,
      durationMs: now - this.start, answerMs: (this.#answeredAt || now) - this.start,
      endpoint: outcome?.endpoint ?? '', error: outcome?.code || this.#error, tries: outcome?.tries ?? 0, upgrade: true,
    }, this.#span);
  }
}

/**
 * The entry of a WebSocket upgrade (the HTTP/1.1 connection hands over only those:
 * any other Upgrade is served there as the plain request it also is).
 */
export function handleUpgrade(ls: ServingSocket, req: IncomingMessage, socket: Socket, head: Buffer): void {
  const plan = ls.plan!;
  if (plan.protocol !== 'http' || (ls.retired && plan.generation.closed)) {
    socket.destroy();
    return;
  }
  const unit = new UpgradeUnit(plan, req, socket, head);
  const bad = badRequest(req, plan.config);
  if (bad !== null) {
    unit.refuse(bad.status, 'SY_ERR_BAD_REQUEST', bad.text);
    return;
  }
  unit.run();
}

import { SwitchyardError } from '../errors.js';
import type { Exchange, Filter } from '../filters/api.js';
import { defaultRole } from '../upstream/picker.js';
import type { OutcomeSink, UpstreamOutcome } from '../upstream/route.js';
import type { Destroyable, ListenerPlan } from './plan.js';

/**
 * One unit of work on a listener: an HTTP request, a WebSocket upgrade, a TCP
 * connection (next: an HTTP/2 stream, a UDP flow). The one lifecycle they share:
 *
 *   pin the generation → run the filter chain → forward, or answer locally
 *   → record one outcome → release the generation
 *
 * The plan is read once, when the work arrives: work started on a generation
 * finishes on it. Each protocol supplies its `forward()` (hand the work to the
 * upstream side, which reports one outcome: `upstreamEnded`), its local `reply()`
 * (a filter's answer), and `record()` (publish its outcome, once, at its end).
 * The unit is also the filters' view of the work (Exchange): one object per unit,
 * everything else is per generation.
 */
export abstract class Unit implements OutcomeSink {
  /** Index of the chosen role in the listener's roles, -1 while none is chosen. */
  role = -1;
  /** Whether the work may go to another role when its own cannot take it (Exchange.fallback). */
  fallback = false;
  /** A role asked for that could not take the work (-1: none); see Exchange.fallbackFrom. */
  fallbackFrom = -1;
  readonly plan: ListenerPlan;
  readonly start = performance.now();
  /** How the upstream exchange ended; null until it did (or when the work never went upstream). */
  protected outcome: UpstreamOutcome | null = null;
  /** Handed to the upstream side. */
  protected forwarded = false;
  #ended = false;
  /** The client side is over (response closed, socket closed); the end waits for the upstream's outcome. */
  #closed = false;
  /** Its generation's work in flight (a LinkedSet) links through these. */
  linkPrev: Destroyable | null = null;
  linkNext: Destroyable | null = null;

  constructor(plan: ListenerPlan) {
    this.plan = plan;
    plan.generation.hold(this);
  }

  get listener(): string {
    return this.plan.name;
  }

  /** A filter's (or switchyard's) local answer: http answers, tcp refuses the connection. */
  abstract reply(status: number, body?: string, headers?: Record<string, string>): void;
  /** Whether the work was answered locally (or cut): a filter that stops the chain must have answered. */
  protected abstract get answered(): boolean;
  /** The client is gone: nothing is forwarded any more. */
  protected abstract get gone(): boolean;
  /** Hands the work, with its role chosen, to the upstream side. */
  protected abstract forward(): void;
  /** A filter threw or broke the contract: answer 500 (or close the connection). */
  protected abstract failed(): void;
  /** Publishes the one outcome of the work (called once, when it ended). */
  protected abstract record(): void;
  /** The drain timed out with this work still running: cut it now. */
  abstract destroy(): void;

  // hot path
  /** Runs the listener's filters, then forwards unless a filter answered. Sync filters keep it sync. */
  run(): void {
    const filters = this.plan.filters;
    if (filters.length === 0) {
      this.#go();
      return;
    }
    let verdict: boolean | Promise<boolean>;
    try {
      verdict = this.#chain(filters, 0);
    } catch (err) {
      this.#failFilter(err);
      return;
    }
    if (verdict === true) this.#go();
    else if (verdict !== false) verdict.then((go) => { if (go) this.#go(); }).catch((err: unknown) => this.#failFilter(err));
  }

  /** OutcomeSink: the upstream side's one report of how its exchange ended. */
  upstreamEnded(outcome: UpstreamOutcome): void {
    this.outcome = outcome;
    if (this.#closed) this.#end();
  }

  /**
   * The client side is over (the response closed, the connection closed). The work
   * ends now, or, when it was forwarded and the upstream side has not reported yet
   * (its own close handler runs after this one), as soon as it does.
   */
  protected closed(): void {
    this.#closed = true;
    if (!this.forwarded || this.outcome !== null) this.#end();
  }

  /** Records the one outcome, once, then lets the generation go. */
  #end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.record();
    this.plan.generation.release(this);
  }

  /** The role that served the work: the upstream's last (or failing) role once forwarded, else none. */
  protected get servedRole(): number {
    return this.forwarded ? this.outcome?.role ?? this.role : -1;
  }

  // hot path
  #go(): void {
    if (this.gone) return;
    if (this.role < 0) {
      // No filter picked: the equal split, which may move on like any split.
      this.role = defaultRole(this.plan.upstream);
      this.fallback = true;
    }
    this.forwarded = true;
    try {
      this.forward();
    } catch (err) {
      // What a filter left behind broke the forwarding (e.g. a malformed header edit): its failure, answered 500.
      this.#failFilter(err);
    }
  }

  // hot path
  /**
   * The filters from `i`: sync ones keep the chain sync (the fast path); the first
   * promise makes the rest async. True: forward; false: a filter answered. A throw
   * or rejection is a filter failure; so is a broken verdict (see #stopped and
   * #badVerdict), rather than hung work.
   */
  #chain(filters: readonly Filter[], i: number): boolean | Promise<boolean> {
    for (; i < filters.length; i++) {
      // Each protocol's unit is its Exchange (HttpUnit, UpgradeUnit, TcpUnit).
      const r = filters[i]!(this as unknown as Exchange);
      if (r === true) continue;
      if (r === false) return this.#stopped();
      // Only a promise may be left: anything else (a filter that forgot `return true`) is a broken verdict.
      if (typeof (r as { then?: unknown } | null)?.then !== 'function') badVerdict(r);
      const next = i + 1;
      return r.then((go) => (go === true ? this.#chain(filters, next) : go === false ? this.#stopped() : badVerdict(go)));
    }
    // A role index out of range would reach the forwarder as `undefined` and throw
    // outside any handler: make it this work's failure.
    const role = this.role;
    const roles = this.plan.roles.length;
    if (role !== -1 && !(Number.isInteger(role) && role >= 0 && role < roles)) {
      throw new SwitchyardError('SY_ERR_FILTER_FAILED', `a filter set role ${String(role)}; a role is an index from 0 to ${roles - 1}, or -1 for none`);
    }
    return true;
  }

  /**
   * A filter that stops the chain must have answered (the contract: return `false`
   * once it answered). One that did not would leave the work hanging with no one to
   * answer it, holding its generation from draining: a filter failure instead.
   */
  #stopped(): false {
    if (!this.answered) throw new SwitchyardError('SY_ERR_FILTER_FAILED', `a filter returned false without ${this.plan.protocol === 'tcp' ? 'refusing the connection' : 'answering'}`);
    return false;
  }

  #failFilter(err: unknown): void {
    this.role = -1; // no role served it (and a broken filter may have left an index out of range)
    this.forwarded = false;
    reportFilterFailure(this.plan.name, err);
    this.failed();
  }
}

function badVerdict(v: unknown): never {
  throw new SwitchyardError('SY_ERR_FILTER_FAILED', `a filter returned ${v === undefined ? 'undefined' : JSON.stringify(v) ?? String(v)}; return true to continue, false after answering, or a promise of either`);
}

/** Logs a filter failure once, with its stable code; the unit answers 500 or closes the connection. */
export function reportFilterFailure(listener: string, err: unknown): void {
  process.emitWarning(`listener ${listener}: filter failed: ${(err as Error)?.stack ?? String(err)}`, { code: 'SY_ERR_FILTER_FAILED' });
}

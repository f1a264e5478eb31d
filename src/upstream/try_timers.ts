import { timeoutAfterIo } from './timeout.js';

/** What a forwarded request's timers call when they run out. */
export interface TimerTarget {
  /** The whole exchange (every try) took longer than the total timeout. */
  totalTimedOut(): void;
  /** A try's answer did not start within perTryTimeout (or the upstream timeout). */
  tryTimedOut(): void;
  /** An answer's next body chunk did not come within the upstream timeout. */
  bodyTimedOut(): void;
}

/** What the try's timer times now: nothing, the try's answer, or the gap before the next body chunk. */
const IDLE = 0;
const TRY = 1;
const BODY = 2;
type Phase = typeof IDLE | typeof TRY | typeof BODY;

const totalTimedOut = (target: TimerTarget): void => target.totalTimedOut();

/**
 * The time limits of one forwarded HTTP request, apart from the forwarder's
 * protocol work: the total time (all tries), the time for each try's answer, the
 * gap between body chunks, and the back-off before a retry. Each one reads the I/O
 * already waiting before it fires (as timeoutAfterIo), so an answer that came in time
 * never loses to its timeout after the event loop was blocked.
 *
 * Every forwarded request has one, so the common path is kept cheap: the try's answer
 * and its body gaps share one Timeout whose meaning is `#phase`, re-armed with refresh()
 * while its duration stays the same (perTryTimeout unset: both are the upstream
 * timeout). Stopping it only sets the phase (a firing then does nothing): the next
 * phase re-arms it, and only clearAll clears it. Its callbacks are static, given the
 * instance as their argument, so no closure is made per request.
 */
export class TryTimers {
  readonly #target: TimerTarget;
  #total: NodeJS.Timeout | null = null;
  #backoff: NodeJS.Timeout | null = null;
  /** The try's timer, armed for `#ms`; it may run on in IDLE (see the class comment). */
  #timer: NodeJS.Timeout | null = null;
  #ms = 0;
  #phase: Phase = IDLE;
  /** This try's answer started: startTry is then ignored (an upstream may answer before the whole request was sent). */
  #answered = false;
  /** Bumped by every chunk and every change of the phase: a firing that waits for the I/O first gives up if it moved. */
  #epoch = 0;
  /** `#epoch` when the timer last ran out. */
  #firedAt = 0;

  constructor(target: TimerTarget) {
    this.#target = target;
  }

  /** Starts the total time once (0: no limit). */
  startTotal(ms: number): void {
    if (ms > 0 && this.#total === null) this.#total = timeoutAfterIo(totalTimedOut, ms, this.#target);
  }

  /** Starts the time for this try's answer, unless it runs already or the answer has started. */
  startTry(ms: number): void {
    if (this.#phase === TRY || this.#answered || ms <= 0) return;
    this.#arm(TRY, ms);
  }

  /** The try's answer started (or the try ended): its time stops, and so does the body gap's. */
  clearTry(): void {
    this.#stop();
  }

  /** The answer started (or the client read again): starts (or restarts) the time for the next body chunk. */
  startBody(ms: number): void {
    this.#answered = true;
    if (ms > 0) this.#arm(BODY, ms);
  }

  // hot path
  /** A body chunk came: the gap starts again. */
  chunk(): void {
    this.#epoch++;
    if (this.#phase === BODY) this.#timer!.refresh();
  }

  /** The client stopped reading (backpressure): the upstream waits for us, so its body gap does not run. */
  clearBody(): void {
    if (this.#phase === BODY) this.#stop();
  }

  /** Runs `go` after `ms` (at once below 1 ms): the next try, whose answer has not started. */
  backoff(ms: number, go: () => void): void {
    this.#answered = false;
    if (ms < 1) {
      go();
      return;
    }
    this.#backoff = setTimeout(() => {
      this.#backoff = null;
      go();
    }, ms);
  }

  /** A back-off runs: no try is on the wire. */
  get backingOff(): boolean {
    return this.#backoff !== null;
  }

  /** The exchange is over: every timer stops. */
  clearAll(): void {
    if (this.#total !== null) clearTimeout(this.#total);
    if (this.#backoff !== null) clearTimeout(this.#backoff);
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#total = this.#backoff = this.#timer = null;
    this.#stop();
  }

  #arm(phase: Phase, ms: number): void {
    this.#phase = phase;
    this.#epoch++;
    const timer = this.#timer;
    if (timer !== null && this.#ms === ms) {
      timer.refresh();
      return;
    }
    if (timer !== null) clearTimeout(timer);
    this.#timer = setTimeout(TryTimers.#fired, ms, this);
    this.#timer.unref();
    this.#ms = ms;
  }

  #stop(): void {
    this.#phase = IDLE;
    this.#epoch++;
  }

  /** The timer ran out: what it timed times out after the I/O already waiting is read, unless that moved it. */
  static #fired(t: TryTimers): void {
    if (t.#phase === IDLE) return;
    t.#firedAt = t.#epoch;
    setImmediate(TryTimers.#timedOut, t);
  }

  static #timedOut(t: TryTimers): void {
    if (t.#epoch !== t.#firedAt) return;
    const phase = t.#phase;
    t.#stop();
    if (phase === TRY) t.#target.tryTimedOut();
    else if (phase === BODY) t.#target.bodyTimedOut();
  }
}

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

/**
 * The time limits of one forwarded HTTP request, apart from the forwarder's
 * protocol work: the total time (all tries), the time for each try's answer, the
 * gap between body chunks, and the back-off before a retry. Each one reads the I/O
 * already waiting before it fires (timeoutAfterIo), so an answer that came in time
 * never loses to its timeout after the event loop was blocked.
 */
export class TryTimers {
  readonly #target: TimerTarget;
  #total: NodeJS.Timeout | null = null;
  #try: NodeJS.Timeout | null = null;
  #body: NodeJS.Timeout | null = null;
  #backoff: NodeJS.Timeout | null = null;
  /** Body chunks so far: the body timer's view of progress. */
  #chunks = 0;

  constructor(target: TimerTarget) {
    this.#target = target;
  }

  /** Starts the total time once (0: no limit). */
  startTotal(ms: number): void {
    if (ms > 0 && this.#total === null) this.#total = timeoutAfterIo(() => this.#target.totalTimedOut(), ms);
  }

  /** Starts the time for this try's answer, unless it runs already. */
  startTry(ms: number): void {
    if (this.#try !== null || ms <= 0) return;
    const timer = timeoutAfterIo(() => {
      // An answer that was waiting cleared (or replaced) it in the meantime.
      if (this.#try !== timer) return;
      this.#try = null;
      this.#target.tryTimedOut();
    }, ms);
    this.#try = timer;
  }

  /** The try's answer started (or the try ended): its time stops, and so does the body gap's. */
  clearTry(): void {
    if (this.#try !== null) {
      clearTimeout(this.#try);
      this.#try = null;
    }
    this.clearBody();
  }

  /** Starts (or restarts) the time for the next body chunk. */
  startBody(ms: number): void {
    if (ms <= 0) return;
    if (this.#body !== null) {
      this.#body.refresh();
      return;
    }
    // As timeoutAfterIo, but a chunk read in between has already re-armed this timer (refresh).
    const timer = setTimeout(() => {
      const chunks = this.#chunks;
      setImmediate(() => {
        if (this.#body !== timer || this.#chunks !== chunks) return;
        this.#body = null;
        this.#target.bodyTimedOut();
      });
    }, ms);
    timer.unref();
    this.#body = timer;
  }

  // hot path
  /** A body chunk came: the gap starts again. */
  chunk(): void {
    this.#chunks++;
    this.#body?.refresh();
  }

  /** The client stopped reading (backpressure): the upstream waits for us, so its body gap does not run. */
  clearBody(): void {
    if (this.#body !== null) {
      clearTimeout(this.#body);
      this.#body = null;
    }
  }

  /** Runs `go` after `ms` (at once below 1 ms). */
  backoff(ms: number, go: () => void): void {
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
    this.#total = this.#backoff = null;
    this.clearTry();
  }
}

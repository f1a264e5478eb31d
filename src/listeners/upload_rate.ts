import type { IncomingMessage } from 'node:http';
import type { MinUploadRate } from '../config/types.js';

/** The longest time between two checks of a body's rate. */
const MAX_TICK_MS = 1_000;

/**
 * Enforces a listener's `minUploadRate` on one request body, as Kestrel's
 * MinRequestBodyDataRate does: once `grace` has passed, the body received so far
 * must average at least `bytesPerSecond`; a body below it is cut (`onSlow`). 200
 * clients uploading at 1 byte/s held 201 upstream connections for the 5 minutes of
 * timeouts.request (issue 11, item 5).
 *
 * Only time during which switchyard was ready to read counts: while the request
 * stream is paused (the upstream is not taking the body: backpressure) or its
 * buffer is full (switchyard has not started reading it yet, e.g. while it
 * connects), the client is not the one holding the body back. Bytes are the
 * client connection's (`socket.bytesRead`), so reading the body is left entirely
 * to whoever forwards it: no 'data' listener here, which would start the stream
 * flowing before the forwarder reads it. Checked every `grace` (at most every
 * second) by one timer per body, which ends with the body.
 */
export class UploadRate {
  readonly #req: IncomingMessage;
  readonly #rate: MinUploadRate;
  readonly #onSlow: () => void;
  readonly #tickMs: number;
  readonly #startBytes: number;
  /** One timer per body, re-armed (refresh) after each check. */
  readonly #timer: NodeJS.Timeout;
  #stopped = false;
  #last = performance.now();
  /** Time switchyard was ready to read, in ms. */
  #credited = 0;

  constructor(req: IncomingMessage, rate: MinUploadRate, onSlow: () => void) {
    this.#req = req;
    this.#rate = rate;
    this.#onSlow = onSlow;
    this.#tickMs = Math.min(rate.graceMs, MAX_TICK_MS);
    this.#startBytes = req.socket.bytesRead;
    this.#timer = setTimeout(() => this.#tick(), this.#tickMs);
    this.#timer.unref();
  }

  /** The body ended, or the request did: no more checks. Idempotent. */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
  }

  #tick(): void {
    if (this.#stopped) return;
    const req = this.#req;
    const socket = req.socket;
    if (req.complete || req.destroyed || socket === null || socket.destroyed) return;
    const now = performance.now();
    // Was switchyard reading? Not while the stream is paused (the forwarder waits for
    // the upstream), nor while its buffer is full (nobody reads it yet).
    if (!req.isPaused() && req.readableLength < req.readableHighWaterMark) this.#credited += now - this.#last;
    this.#last = now;
    const rate = this.#rate;
    if (this.#credited >= rate.graceMs) {
      const bytes = socket.bytesRead - this.#startBytes;
      if (bytes * 1000 < rate.bytesPerSecond * this.#credited) {
        this.#stopped = true;
        this.#onSlow();
        return;
      }
    }
    this.#timer.refresh();
  }
}

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
 * Only time during which switchyard was taking bytes counts. Not while the request
 * stream is paused (the upstream is not taking the body: backpressure): those spans
 * are timed from each 'pause' to its 'resume'. Nor while its buffer is full (nobody
 * reads it yet, e.g. while it connects or an async filter runs), seen at each check.
 * (Sampling the paused state too credited a whole interval to a stream that was
 * flowing just then: a 32 MB upload to an upstream that held it 1.5 s got 408 in a
 * loaded suite run.) Bytes are the
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
  /** Time switchyard was taking bytes, in ms, up to the last check. */
  #credited = 0;
  #last = performance.now();
  /** Paused time since the last check, over the spans that ended. */
  #pausedMs = 0;
  /** When the pause now under way began (null: not paused). */
  #pausedSince: number | null;
  readonly #onPause = (): void => {
    if (this.#pausedSince === null) this.#pausedSince = performance.now();
  };
  readonly #onResume = (): void => {
    if (this.#pausedSince !== null) this.#pausedMs += performance.now() - this.#pausedSince;
    this.#pausedSince = null;
  };

  constructor(req: IncomingMessage, rate: MinUploadRate, onSlow: () => void) {
    this.#req = req;
    this.#rate = rate;
    this.#onSlow = onSlow;
    this.#tickMs = Math.min(rate.graceMs, MAX_TICK_MS);
    this.#startBytes = req.socket.bytesRead;
    this.#pausedSince = req.isPaused() ? performance.now() : null;
    req.on('resume', this.#onResume).on('pause', this.#onPause);
    this.#timer = setTimeout(() => this.#tick(), this.#tickMs);
    this.#timer.unref();
  }

  /** The body ended, or the request did: no more checks. Idempotent. */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#req.off('resume', this.#onResume).off('pause', this.#onPause);
  }

  #tick(): void {
    if (this.#stopped) return;
    const req = this.#req;
    const socket = req.socket;
    if (req.complete || req.destroyed || socket === null || socket.destroyed) return;
    const now = performance.now();
    let paused = this.#pausedMs;
    if (this.#pausedSince !== null) {
      paused += now - this.#pausedSince;
      this.#pausedSince = now;
    }
    this.#pausedMs = 0;
    // A full buffer: nobody reads it, so Node takes no more from the client.
    if (req.readableLength < req.readableHighWaterMark) this.#credited += Math.max(0, now - this.#last - paused);
    this.#last = now;
    const credited = this.#credited;
    const rate = this.#rate;
    if (credited >= rate.graceMs) {
      const bytes = socket.bytesRead - this.#startBytes;
      if (bytes * 1000 < rate.bytesPerSecond * credited) {
        this.stop();
        this.#onSlow();
        return;
      }
    }
    this.#timer.refresh();
  }
}

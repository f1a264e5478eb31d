import type { Socket } from 'node:net';
import { constants, createServer, type IncomingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream, type Settings } from 'node:http2';
import { CLIENT_PREFACE } from '../http2/h2_client.js';
import { H2Request, H2Response } from '../http2/h2_compat.js';
import type { ListenerPlan } from './plan.js';

/**
 * The HTTP/2 side of one http listening socket: the client connections that spoke
 * HTTP/2 (prior knowledge, or ALPN h2 on TLS), as sessions of one Node http2 server
 * that never listens. Every stream is one request, handed to the same entry as an
 * HTTP/1 request, on the plan current when the stream opens: a reload never touches
 * a session, and its next stream runs on the new generation.
 *
 * A session ends by GOAWAY, then its streams finish: when it was idle for the
 * listener's keepAlive timeout (never while a stream is open, however long the
 * stream lasts), when the listener is removed or switchyard stops (at a random
 * moment of a spread, so clients do not all reconnect in one wave), or when a client
 * resets streams faster than any honest one does (CVE-2023-44487, "rapid reset").
 */

function ignore(): void {}

/** What an HTTP/2 client with prior knowledge opens with: the listener sniffs it. */
export { CLIENT_PREFACE };

/** Streams a client may reset (or have refused) per second, as a budget of this many, before its session is closed. */
export const RESET_BUDGET = 200;
/** The budget refills at this rate per second: well above what cancelling clients do, far below a rapid-reset flood. */
export const RESETS_PER_SECOND = 100;

/** GOAWAYs to a removed listener's (or a stopping switchyard's) sessions are spread over this part of the drain. */
export function goAwaySpreadMs(drainMs: number): number {
  return Math.min(drainMs / 4, 5_000);
}

interface SessionState {
  /** Streams open now. */
  open: number;
  /** Reset budget left (RESET_BUDGET at most), and when it was last refilled. */
  resets: number;
  refilledAt: number;
  goingAway: boolean;
}

export class H2Sessions {
  readonly #server: { emit(event: 'connection', socket: Socket): boolean; updateSettings(settings: Settings): void };
  readonly #sessions = new Map<ServerHttp2Session, SessionState>();
  #idleMs = 5_000;
  /** Counts a session closed for resetting too many streams (the plan's counter when serving started). */
  #onAbuse: ((plan: ListenerPlan | null) => void) | null = null;
  #plan: ListenerPlan | null = null;
  /** The connection whose session is being made (Node makes it in the 'connection' event, synchronously). */
  #connecting: Socket | null = null;
  /** When a closed session was last logged (ConnectionBudget.refusing). */
  loggedAt = -Infinity;

  readonly #request: (req: H2Request, res: H2Response) => void;

  /** `request` gets every stream, CONNECT included (the edge refuses it). */
  constructor(request: (req: H2Request, res: H2Response) => void) {
    const server = createServer({
      // Streams refused for being over maxConcurrentStreams, and invalid frames, before Node ends the session.
      maxSessionRejectedStreams: 100,
      maxSessionInvalidFrames: 100,
    });
    server.on('session', (session: ServerHttp2Session) => this.#track(session));
    // A session's errors end that session (Node destroys it); nothing else is affected.
    server.on('sessionError', () => {});
    this.#server = server;
    this.#request = request;
  }

  /** The limits of the newest plan on this address: they apply to sessions opened from now on. */
  configure(plan: ListenerPlan): void {
    this.#plan = plan;
    this.#idleMs = plan.config.timeouts.keepAliveMs;
    this.#server.updateSettings({
      maxConcurrentStreams: plan.config.http2.maxConcurrentStreams,
      maxHeaderListSize: plan.config.maxHeaderSize,
    });
  }

  onAbuse(count: (plan: ListenerPlan | null) => void): void {
    this.#onAbuse = count;
  }

  /** Serves an accepted connection (its first bytes may already be read and put back) as HTTP/2. */
  serve(socket: Socket): void {
    this.#connecting = socket;
    try {
      this.#server.emit('connection', socket);
    } finally {
      this.#connecting = null;
    }
  }

  /** Sessions open now (tests, the status page). */
  get size(): number {
    return this.#sessions.size;
  }

  #track(session: ServerHttp2Session): void {
    const state: SessionState = { open: 0, resets: RESET_BUDGET, refilledAt: performance.now(), goingAway: false };
    this.#sessions.set(session, state);
    // The connection itself (a session's own `socket` is a view that forgets it once closed).
    const socket = this.#connecting ?? (session.socket as Socket);
    session.once('close', () => this.#sessions.delete(session));
    session.on('error', () => {});
    session.setTimeout(this.#idleMs, () => {
      // Activity restarts the timer; a long stream that is merely quiet is not idleness.
      if (state.open === 0) this.#goAway(session, state);
    });
    session.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, _flags: number, rawHeaders: string[]) => {
      if (stream.closed || stream.destroyed) {
        // Reset in the same read as its HEADERS: gone before it was handed on.
        if (stream.rstCode !== constants.NGHTTP2_NO_ERROR) this.#reset(session, state);
        return;
      }
      state.open++;
      const req = new H2Request(stream, headers, rawHeaders, socket);
      const res = new H2Response(stream, req);
      // A stream reset by either side is destroyed with an error; its close says the rest.
      stream.on('error', ignore);
      stream.once('close', () => {
        state.open--;
        // A stream that ended without an answer was reset (by the client, or refused as over the limit).
        if (stream.rstCode !== constants.NGHTTP2_NO_ERROR && !stream.headersSent) this.#reset(session, state);
        req.streamClosed();
        res.streamClosed();
      });
      const expect = headers.expect;
      if (expect !== undefined) {
        // As an HTTP/1.1 server does: 100 Continue at once, and 417 for an expectation it does not know.
        if (expect.toLowerCase() !== '100-continue') {
          res.statusCode = 417;
          res.end();
          return;
        }
        res.writeContinue();
      }
      this.#request(req, res);
    });
  }

  /** Takes one reset from the session's budget; an empty budget ends the session (ENHANCE_YOUR_CALM). */
  #reset(session: ServerHttp2Session, state: SessionState): void {
    const now = performance.now();
    state.resets = Math.min(RESET_BUDGET, state.resets + ((now - state.refilledAt) / 1000) * RESETS_PER_SECOND);
    state.refilledAt = now;
    state.resets -= 1;
    if (state.resets >= 0 || session.destroyed) return;
    this.#onAbuse?.(this.#plan);
    // One GOAWAY, with this code: a goaway() before destroy() is followed by destroy's own, NO_ERROR,
    // which a client may read first (and destroy(undefined, code) sends NO_ERROR too).
    session.destroy(new Error('the client resets streams faster than the budget allows'), constants.NGHTTP2_ENHANCE_YOUR_CALM);
  }

  #goAway(session: ServerHttp2Session, state: SessionState): void {
    if (state.goingAway || session.closed || session.destroyed) return;
    state.goingAway = true;
    // GOAWAY now; the session ends once its open streams have.
    session.close();
  }

  /**
   * GOAWAY to every session, each at a random moment within `spreadMs` (the listener
   * was removed, or switchyard stops): clients move over gradually, and the streams
   * they already opened finish.
   */
  goAway(spreadMs: number): void {
    for (const [session, state] of this.#sessions) {
      if (spreadMs <= 0) this.#goAway(session, state);
      else setTimeout(() => this.#goAway(session, state), Math.random() * spreadMs).unref();
    }
  }

  /** GOAWAY to the sessions with no stream open. */
  closeIdle(): void {
    for (const [session, state] of this.#sessions) if (state.open === 0) this.#goAway(session, state);
  }

  /** Ends every session now (after the drain). */
  destroyAll(): void {
    for (const session of this.#sessions.keys()) session.destroy();
  }
}

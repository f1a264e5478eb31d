import type { ClientRequest, IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import httpProxy from 'http-proxy';
import type { RuntimeCode } from '../errors.js';
import type { EndpointPicker } from './picker.js';
import { fallenBackFrom, outOfDescriptors, refusedBySwitchyard, type UpstreamReason } from './http_forward.js';

/** Per client socket: the state of its upgrade, so errors and closes are handled once. */
interface UpgradeState {
  /** The endpoints to try, role by role. */
  picker: EndpointPicker;
  tryFailed: (role: number, reason: UpstreamReason) => void;
  retried: (role: number) => void;
  /** For x-switchyard-fallback (see UpgradeOptions). */
  fallbackFrom: number;
  roleName: (role: number) => string;
  /** Header lines (each ending in CRLF, latin1) for switchyard's own answers: the listener's response edits. */
  ownHeaders: (role: number) => string;
  /** The upstream answered (101 or a refusal): nothing more to write from us. */
  answered: boolean;
  done: (endpoint: string | undefined, code: RuntimeCode | undefined, status?: number) => void;
  finished: boolean;
  /** Time for the upstream to answer the upgrade (0 = none). */
  timeoutMs: number;
  /** Time to connect to an endpoint before trying the next (0 = the OS's). */
  connectMs: number;
  /** The attempt in flight, so a client that goes away can abort it. */
  proxyReq: ClientRequest | null;
  /** Hands the client socket to the tunnel: stops watching it and puts back what was read early. */
  release: (() => void) | null;
}

/** Options of one upgrade. */
export interface UpgradeOptions {
  /** Time for the upstream to answer the upgrade (101 or a refusal); 0 = none. Not applied to the tunnel. */
  timeoutMs: number;
  /** Time to connect to an endpoint before trying the next; 0 = the OS's. */
  connectMs: number;
  /** One try failed (once more with "ejected" when that ejected its endpoint). */
  tryFailed(role: number, reason: UpstreamReason): void;
  /** The upgrade moves on to another endpoint after a connect failure of `role`'s. */
  retried(role: number): void;
  /** A role asked for that could not take the upgrade (-1: none), as Exchange.fallbackFrom. */
  fallbackFrom: number;
  roleName(role: number): string;
  /** Header lines (CRLF after each, written as latin1) for switchyard's own answers: the listener's response edits. */
  ownHeaders(role: number): string;
}

const kState = Symbol('switchyard.upgrade');
type Tracked = Duplex & { [kState]?: UpgradeState };

// Connect failures (nothing was sent): the next endpoint may work. Name resolution failures
// too, as on the HTTP path (ENOTFOUND/EAI_AGAIN were missing: a role whose first endpoint
// is a stale DNS name answered 502 without trying the others).
const RETRY_CODES = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN']);
const TIMEOUT_CODE = 'SY_UPGRADE_TIMEOUT';
/** The most bytes read from a client before the upstream answered its upgrade. */
const EARLY_LIMIT = 64 * 1024;

/**
 * WebSocket upgrades go through http-proxy's `ws` support (other Upgrade requests are
 * served as plain requests by the listener), with its known defects closed here:
 * - the two sockets are tied: when either closes, the other is destroyed, and a FIN
 *   from either side closes both (http-proxy only ends the upstream on a client
 *   *error*, and only half-closes: node-http-proxy#559, #1510);
 * - an upstream that refuses the upgrade gets its answer relayed, then both
 *   sockets are closed instead of lingering (#1510);
 * - every error has a listener: an upstream "socket hang up" answers 502 and never
 *   reaches the process as an unhandled 'error' (#527); the client socket, which
 *   Node hands over without an error listener after 'upgrade', gets one too;
 * - a connect failure tries the role's next endpoint (http-proxy would end the
 *   client socket under the retry), an unanswered upgrade gets 504 after the
 *   listener's upstream timeout, and a client that leaves (or floods) before the
 *   upstream answered is noticed (or throttled) rather than ignored.
 */
export class UpgradeForwarder {
  readonly #proxy: httpProxy;

  constructor() {
    // xfwd off: forward() sets x-forwarded-* itself, the same way as the HTTP path (http-proxy's
    // would append "a,b" without the space, say proto "ws", and set no x-forwarded-host).
    this.#proxy = httpProxy.createProxyServer({ ws: true, xfwd: false });
    // Errors are handled per call; this listener only keeps a stray one from killing the process (#527).
    this.#proxy.on('error', () => {});
    this.#proxy.on('proxyReqWs', (proxyReq: ClientRequest, _req: IncomingMessage, socket: Tracked) => {
      const state = socket[kState];
      if (state) {
        state.proxyReq = proxyReq;
        // The client left while this attempt was being set up: abort it now.
        if (socket.destroyed) proxyReq.destroy();
        // Without a timeout, an upstream that never answers the upgrade holds the client forever.
        // ClientRequest's timeout starts once connected, and http-proxy's setupSocket clears it on
        // the upgraded socket, so it bounds the handshake only, never the tunnel.
        if (state.timeoutMs > 0) {
          proxyReq.setTimeout(state.timeoutMs, () => {
            proxyReq.destroy(Object.assign(new Error('the upstream did not answer the upgrade in time'), { code: TIMEOUT_CODE }));
          });
        }
      }
      // Tie only once connected: a refused connect must not take the client down before the retry.
      proxyReq.on('socket', (upstream: Duplex & { connecting?: boolean; setTimeout?(ms: number, cb?: () => void): unknown }) => {
        if (!upstream.connecting) {
          // Destroyed already: the connect failed at once (EMFILE makes no socket at all), and
          // the request's error answers the client (#failed). Tied, it took the client down unanswered.
          if (!upstream.destroyed) tie(socket, upstream);
          return;
        }
        // http-proxy connects with no timeout, and ClientRequest's starts only once connected:
        // bound the connect itself, so a blackholed endpoint fails over (ETIMEDOUT is retried).
        const connectMs = state?.connectMs ?? 0;
        const timer = connectMs > 0
          ? setTimeout(() => upstream.destroy(Object.assign(new Error('connect timeout'), { code: 'ETIMEDOUT' })), connectMs)
          : null;
        upstream.once('close', () => { if (timer) clearTimeout(timer); });
        upstream.once('connect', () => {
          if (timer) clearTimeout(timer);
          tie(socket, upstream);
        });
      });
      // Registered before http-proxy's own 'upgrade' listener (this event fires first), so the
      // early bytes are back on the client socket before http-proxy pipes it.
      proxyReq.on('upgrade', (res: IncomingMessage, upstream: Duplex) => {
        if (state) {
          sayFallback(state, res);
          state.picker.set.succeeded(state.picker.endpoint);
          state.release?.();
          state.answered = true;
          finish(state, undefined);
        }
        closeOnEnd(socket, upstream);
      });
      proxyReq.on('response', (res: IncomingMessage) => {
        // Refused upgrade: http-proxy pipes the answer to the client; close both once it is through.
        if (state) {
          sayFallback(state, res);
          const p = state.picker;
          if ((res.statusCode ?? 0) >= 500) {
            if (p.set.failed(p.endpoint)) state.tryFailed(p.role, 'ejected');
          } else p.set.succeeded(p.endpoint);
          state.answered = true;
          finish(state, undefined, res.statusCode);
        }
        res.on('end', () => { socket.end(); proxyReq.destroy(); });
      });
    });
  }

  /** Forwards an upgrade request to the picker's endpoint (connect failures try the next ones). */
  forward(req: IncomingMessage, socket: Duplex, head: Buffer, picker: EndpointPicker, opts: UpgradeOptions,
    done: (endpoint: string | undefined, code: RuntimeCode | undefined, status?: number) => void): void {
    const tracked = socket as Tracked;
    const state: UpgradeState = {
      picker, tryFailed: opts.tryFailed, retried: opts.retried, fallbackFrom: opts.fallbackFrom, roleName: opts.roleName,
      ownHeaders: opts.ownHeaders, answered: false, done, finished: false,
      timeoutMs: opts.timeoutMs, connectMs: opts.connectMs, proxyReq: null, release: null,
    };
    tracked[kState] = state;
    socket.on('error', () => socket.destroy());
    // A client gone before the upstream answered aborts the attempt (after the answer, tie() does it).
    socket.on('close', () => { state.proxyReq?.destroy(); finish(state, undefined); });
    if (socket.destroyed) {
      // Gone already (e.g. while an async filter ran): 'close' has fired, never open an upstream connection.
      finish(state, undefined);
      return;
    }
    setForwardedHeaders(req);
    watchClient(socket, state);
    this.#attempt(req, tracked, head, state);
  }

  #attempt(req: IncomingMessage, socket: Tracked, head: Buffer, state: UpgradeState): void {
    const e = state.picker.endpoint;
    const target = `http://${e.host.includes(':') ? `[${e.host}]` : e.host}:${e.port}`;
    try {
      this.#proxy.ws(req, socket, head, { target }, (err: Error & { code?: string }) => this.#failed(req, socket, state, err));
    } catch (err) {
      // Node's http.request refused the request as switchyard passed it on (a header a
      // plugin set): it throws before any connection, so no upstream is to blame.
      refuse(socket, state, err);
    }
  }

  #failed(req: IncomingMessage, socket: Tracked, state: UpgradeState, err: Error & { code?: string }): void {
    if (state.answered || socket.destroyed) {
      socket.destroy();
      return;
    }
    state.proxyReq = null;
    if (refusedBySwitchyard(err)) {
      refuse(socket, state, err);
      return;
    }
    if (outOfDescriptors(err)) {
      // No socket for the upstream: switchyard's overload, no endpoint blamed, none tried next.
      state.answered = true;
      socket.end(ownAnswer('503 Service Unavailable', 'switchyard: out of file descriptors; try again later\n', state.ownHeaders(state.picker.role)));
      socket.destroySoon?.();
      finish(state, 'SY_ERR_NO_FILE_DESCRIPTORS');
      return;
    }
    const connect = RETRY_CODES.has(err.code ?? '');
    const timedOut = err.code === TIMEOUT_CODE;
    const p = state.picker;
    const role = p.set.role;
    state.tryFailed(p.role, connect ? 'connect-failure' : timedOut ? 'timeout' : 'reset');
    if (p.set.failed(p.endpoint)) state.tryFailed(p.role, 'ejected');
    const failedRole = p.role;
    if (connect && p.next()) {
      state.retried(failedRole);
      // http-proxy's onOutgoingError calls socket.end() on the client right after this
      // callback returns: that would end the client's connection under the retry (a
      // failover then answered nothing at all). Swallow exactly that one call.
      swallowNextEnd(socket);
      // The head was already put back on the socket by the first attempt.
      this.#attempt(req, socket, Buffer.alloc(0), state);
      return;
    }
    const text = connect
      ? `switchyard: no endpoint of role ${role} accepted a connection\n`
      : timedOut
        ? `switchyard: role ${role} did not answer the upgrade in time\n`
        : `switchyard: upgrade to role ${role} failed: ${err.message}\n`;
    const status = timedOut ? '504 Gateway Timeout' : '502 Bad Gateway';
    state.answered = true;
    socket.end(ownAnswer(status, text, state.ownHeaders(p.role)));
    socket.destroySoon?.();
    finish(state, connect ? 'SY_ERR_UPSTREAM_CONNECT' : timedOut ? 'SY_ERR_UPSTREAM_TIMEOUT' : 'SY_ERR_UPSTREAM_UPGRADE');
  }

  close(): void {
    this.#proxy.close();
  }
}

/** One forwarder per process: it holds no per-generation state. */
export const upgrades = new UpgradeForwarder();

/** Switchyard's own failure (refusedBySwitchyard): 500, no try counted, no endpoint blamed, no retry. */
function refuse(socket: Duplex, state: UpgradeState, err: unknown): void {
  state.proxyReq?.destroy();
  state.proxyReq = null;
  state.answered = true;
  const text = `switchyard: this upgrade could not be forwarded as switchyard made it: ${(err as Error)?.message ?? String(err)}\n`;
  socket.end(ownAnswer('500 Internal Server Error', text, state.ownHeaders(state.picker.role)));
  socket.destroySoon?.();
  finish(state, 'SY_ERR_REQUEST_REFUSED');
}

/** An answer of switchyard's own on the client socket: the head in latin1 (as Node writes heads), the text in UTF-8. */
function ownAnswer(status: string, text: string, extra: string): Buffer {
  const head = `HTTP/1.1 ${status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n${extra}\r\n`;
  return Buffer.concat([Buffer.from(head, 'latin1'), Buffer.from(text)]);
}

/** Reports the outcome once; `status` is the upstream's answer when it refused the upgrade. */
function finish(state: UpgradeState, code: RuntimeCode | undefined, status?: number): void {
  if (state.finished) return;
  state.finished = true;
  state.done(state.picker.endpoint.address, code, status);
}

/**
 * Sets x-switchyard-fallback on the upstream's answer before http-proxy writes it
 * to the client (it writes `res.headers`; this listener runs first), as on the
 * HTTP path; an upstream's own is dropped.
 */
function sayFallback(state: UpgradeState, res: IncomingMessage): void {
  const from = fallenBackFrom(state, state.picker);
  if (from >= 0) res.headers['x-switchyard-fallback'] = state.roleName(from);
  else delete res.headers['x-switchyard-fallback'];
}

/** When either socket closes, the other goes too: no half-dead tunnels. */
function tie(a: Duplex, b: Duplex): void {
  // Either may be gone already (the client left while the upstream connected): its 'close'
  // has fired, so a listener added now would never run.
  if (a.destroyed || b.destroyed) {
    a.destroy();
    b.destroy();
    return;
  }
  a.once('close', () => b.destroy());
  b.once('close', () => a.destroy());
  b.on('error', () => b.destroy());
}

/**
 * A tunnel has no use for TCP half-close (WebSocket closes with frames, then FINs): once
 * either side has sent its FIN, each side gets the rest of what was read for it, its own
 * FIN, and is then closed. http-proxy's pipes only pass the FIN on, and the client socket
 * is half-open capable (http.Server's allowHalfOpen), so a peer that does not answer a FIN
 * kept both connections (and the generation) open for good. Envoy closes both, too.
 */
function closeOnEnd(a: Duplex, b: Duplex): void {
  const shut = (): void => {
    for (const s of [a, b]) {
      if (s.destroyed) continue;
      if (s.writableFinished) s.destroy();
      else {
        s.once('finish', () => s.destroy());
        s.end();
      }
    }
  };
  a.once('end', shut);
  b.once('end', shut);
}

/**
 * Node hands the upgraded socket over paused, and an unread socket never reports a reset
 * or a FIN: a client that went away while the upstream was still answering would keep the
 * upstream connection open until the upstream answered (or forever). So read it meanwhile,
 * keep the bytes, and put them back when the tunnel starts. A FIN before the answer (the
 * client gave up; a WebSocket client sends nothing before 101) closes the socket.
 */
function watchClient(socket: Duplex, state: UpgradeState): void {
  const early: Buffer[] = [];
  let size = 0;
  const onData = (c: Buffer): void => {
    early.push(c);
    size += c.length;
    // Bounded: a client that sends a lot before the answer is simply not read further
    // (backpressure), at the price of noticing its reset only once the tunnel starts.
    if (size >= EARLY_LIMIT) socket.pause();
  };
  const onEnd = (): void => { socket.destroy(); };
  socket.on('data', onData);
  socket.once('end', onEnd);
  state.release = () => {
    state.release = null;
    socket.off('data', onData);
    socket.off('end', onEnd);
    if (socket.destroyed) return;
    socket.pause();
    for (let i = early.length - 1; i >= 0; i--) socket.unshift(early[i]!);
  };
}

/** One call of socket.end() becomes a no-op (see the retry in #attempt). */
function swallowNextEnd(socket: Duplex): void {
  socket.end = function swallowed(this: Duplex) {
    Reflect.deleteProperty(socket, 'end');
    return this;
  } as Duplex['end'];
  // Should http-proxy ever stop calling it, do not leave the no-op behind.
  process.nextTick(() => Reflect.deleteProperty(socket, 'end'));
}

/** x-forwarded-for (appended), -proto and -host, as the HTTP path sets them. */
function setForwardedHeaders(req: IncomingMessage): void {
  const h = req.headers;
  const remote = req.socket.remoteAddress ?? '';
  const xff = h['x-forwarded-for'];
  h['x-forwarded-for'] = xff ? `${xff}, ${remote}` : remote;
  h['x-forwarded-proto'] = 'http';
  if (h.host !== undefined) h['x-forwarded-host'] = h.host;
  else delete h['x-forwarded-host'];
}

declare module 'node:stream' {
  interface Duplex { destroySoon?(): void }
}

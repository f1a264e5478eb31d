import { formatHostPort } from '../config/parse.js';
import type { ClientRequest, IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { Agent as HttpsAgent } from 'node:https';
import { isIP } from 'node:net';
import type { UpstreamTls } from '../net/tls_material.js';
import type { Endpoint } from './endpoints.js';
import httpProxy from 'http-proxy';
import { classifyTransportError, UPSTREAM_FAILURES, UpstreamTimeout, type UpstreamFailure } from '../errors.js';
import type { HeaderEdit } from '../filters/api.js';
import { setForwardedHeaders } from '../http/hop_by_hop.js';
import { rawAnswer } from '../http/local_reply.js';
import { EndpointPicker } from './picker.js';
import { answeredFailure, fallenBackFrom, outcomeOf, retried, tryFailed, type OutcomeSink, type RoleChoice, type UpstreamRoute } from './route.js';

/** What the forwarder reads of the upgrade it forwards (the http Exchange of an upgrade has it). */
export interface UpgradeRequest {
  readonly req: IncomingMessage;
  /** The client connection, out of Node's parser. */
  readonly socket: Duplex;
  /** What the client sent after the request head. */
  readonly head: Buffer;
  /** The listener's (and the filters') response edits, for switchyard's own answers. */
  readonly responseHeaderEdits: readonly HeaderEdit[] | null;
}

/** Per client socket: the state of its upgrade, so errors and closes are handled once. */
interface UpgradeState {
  readonly route: UpstreamRoute;
  readonly ex: UpgradeRequest;
  readonly choice: RoleChoice;
  readonly sink: OutcomeSink;
  /** The endpoints to try, role by role: the only owner of the role that serves the upgrade. */
  readonly picker: EndpointPicker;
  tries: number;
  /** The upstream answered (101 or a refusal): nothing more to write from us. */
  answered: boolean;
  /** The try in flight reached a connected socket. */
  connected: boolean;
  finished: boolean;
  /** The attempt in flight, so a client that goes away can abort it. */
  proxyReq: ClientRequest | null;
  /** Hands the client socket to the tunnel: stops watching it and puts back what was read early. */
  release: (() => void) | null;
}

const kState = Symbol('switchyard.upgrade');
type Tracked = Duplex & { [kState]?: UpgradeState };

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
    // xfwd off: forward() sets x-forwarded-* itself, as the HTTP path does (http/hop_by_hop.ts).
    this.#proxy = httpProxy.createProxyServer({ ws: true, xfwd: false });
    // Errors are handled per call; this listener only keeps a stray one from killing the process (#527).
    this.#proxy.on('error', () => {});
    this.#proxy.on('proxyReqWs', (proxyReq: ClientRequest, _req: IncomingMessage, socket: Tracked) => {
      const state = socket[kState];
      if (state) {
        state.proxyReq = proxyReq;
        state.connected = false;
        // The client left while this attempt was being set up: abort it now.
        if (socket.destroyed) proxyReq.destroy();
        // Without a timeout, an upstream that never answers the upgrade holds the client forever.
        // ClientRequest's timeout starts once connected, and http-proxy's setupSocket clears it on
        // the upgraded socket, so it bounds the handshake only, never the tunnel.
        const timeoutMs = state.route.upstreamMs;
        if (timeoutMs > 0) {
          proxyReq.setTimeout(timeoutMs, () => {
            proxyReq.destroy(new UpstreamTimeout('upgrade', 'the upstream did not answer the upgrade in time'));
          });
        }
      }
      // Tie only once connected: a refused connect must not take the client down before the retry.
      proxyReq.on('socket', (upstream: Duplex & { connecting?: boolean }) => {
        if (!upstream.connecting) {
          // Destroyed already: the connect failed at once (EMFILE makes no socket at all), and
          // the request's error answers the client (#failed). Tied, it took the client down unanswered.
          if (!upstream.destroyed) {
            if (state) state.connected = true;
            tie(socket, upstream);
          }
          return;
        }
        // http-proxy connects with no timeout, and ClientRequest's starts only once connected:
        // bound the connect itself, so a blackholed endpoint fails over.
        const connectMs = state?.route.connectMs ?? 0;
        const timer = connectMs > 0
          ? setTimeout(() => upstream.destroy(new UpstreamTimeout('connect', 'connect timeout')), connectMs)
          : null;
        upstream.once('close', () => { if (timer) clearTimeout(timer); });
        upstream.once('connect', () => {
          if (timer) clearTimeout(timer);
          if (state) state.connected = true;
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
          finish(state, null, 101);
        }
        closeOnEnd(socket, upstream);
      });
      proxyReq.on('response', (res: IncomingMessage) => {
        // Refused upgrade: http-proxy pipes the answer to the client; close both once it is through.
        if (state) {
          sayFallback(state, res);
          const p = state.picker;
          if ((res.statusCode ?? 0) >= 500) answeredFailure(state.route, p);
          else p.set.succeeded(p.endpoint);
          state.answered = true;
          finish(state, null, res.statusCode ?? 0);
        }
        res.on('end', () => { socket.end(); proxyReq.destroy(); });
      });
    });
  }

  /**
   * Forwards an upgrade request to the role's endpoints (connect failures try the
   * next ones); reports its outcome once to `sink`, with the status the client got.
   */
  forward(route: UpstreamRoute, ex: UpgradeRequest, choice: RoleChoice, sink: OutcomeSink): void {
    const socket = ex.socket as Tracked;
    const state: UpgradeState = {
      route, ex, choice, sink, picker: new EndpointPicker(route, choice.role, choice.fallback),
      tries: 1, answered: false, connected: false, finished: false, proxyReq: null, release: null,
    };
    socket[kState] = state;
    // The client socket's errors are its unit's (UpgradeUnit destroys it).
    // A client gone before the upstream answered aborts the attempt (after the answer, tie() does it).
    socket.on('close', () => { state.proxyReq?.destroy(); finish(state, null, 0); });
    if (socket.destroyed) {
      // Gone already (e.g. while an async filter ran): 'close' has fired, never open an upstream connection.
      finish(state, null, 0);
      return;
    }
    setForwardedHeaders(ex.req);
    watchClient(socket, state);
    this.#attempt(socket, ex.head, state);
  }

  #attempt(socket: Tracked, head: Buffer, state: UpgradeState): void {
    const e = state.picker.endpoint;
    const options = e.tls === null ? { target: `http://${formatHostPort(e)}` }
      : { target: `https://${formatHostPort(e)}`, secure: true, agent: tlsAgent(e, e.tls) };
    try {
      this.#proxy.ws(state.ex.req, socket, head, options, (err: Error) => this.#failed(socket, state, err));
    } catch (err) {
      // Node's http.request refused the request as switchyard passed it on (a header a
      // plugin set): it throws before any connection, so no upstream is to blame.
      answerOwn(socket, state, 'refused', `switchyard: this upgrade could not be forwarded as switchyard made it: ${(err as Error)?.message ?? String(err)}\n`);
    }
  }

  #failed(socket: Tracked, state: UpgradeState, err: Error): void {
    if (state.answered || socket.destroyed) {
      socket.destroy();
      return;
    }
    state.proxyReq = null;
    const failure = classifyTransportError(err, { sent: state.connected });
    if (failure === 'refused') {
      answerOwn(socket, state, 'refused', `switchyard: this upgrade could not be forwarded as switchyard made it: ${err.message}\n`);
      return;
    }
    if (failure === 'descriptors') {
      // No socket for the upstream: switchyard's overload, no endpoint blamed, none tried next.
      answerOwn(socket, state, 'descriptors', 'switchyard: out of file descriptors; try again later\n');
      return;
    }
    const p = state.picker;
    const role = p.set.role;
    const kind: UpstreamFailure = failure === 'connect' || failure === 'timeout' || failure === 'tls' ? failure : 'upgrade';
    tryFailed(state.route, p, UPSTREAM_FAILURES[kind].reason);
    if (kind === 'tls') p.endpoint.pool.tlsFailed(err);
    const failedRole = p.role;
    if ((kind === 'connect' || kind === 'tls') && p.next()) {
      retried(state.route, failedRole, UPSTREAM_FAILURES[kind].reason!);
      state.tries++;
      // http-proxy's onOutgoingError calls socket.end() on the client right after this
      // callback returns: that would end the client's connection under the retry (a
      // failover then answered nothing at all). Swallow exactly that one call.
      swallowNextEnd(socket);
      // The head was already put back on the socket by the first attempt.
      this.#attempt(socket, Buffer.alloc(0), state);
      return;
    }
    const text = kind === 'connect'
      ? `switchyard: no endpoint of role ${role} accepted a connection\n`
      : kind === 'tls' ? `switchyard: no endpoint of role ${role} completed a TLS handshake (${err.message})\n`
      : kind === 'timeout'
        ? `switchyard: role ${role} did not answer the upgrade in time\n`
        : `switchyard: upgrade to role ${role} failed: ${err.message}\n`;
    answerOwn(socket, state, kind, text);
  }

  close(): void {
    this.#proxy.close();
  }
}

/** The agent an upgrade to a TLS endpoint connects with: the channel's context and server name, no pooling (the connection becomes a tunnel). */
const tlsAgents = new WeakMap<Endpoint, HttpsAgent>();
function tlsAgent(e: Endpoint, tls: UpstreamTls): HttpsAgent {
  let agent = tlsAgents.get(e);
  if (agent === undefined) {
    // '' (no SNI) for an address: undefined would let Node take the name from the client's Host header.
    agent = new HttpsAgent({ keepAlive: false, secureContext: tls.context, servername: tls.serverName ?? (isIP(e.host) === 0 ? e.host : '') });
    tlsAgents.set(e, agent);
  }
  return agent;
}

/** One forwarder per process: it holds no per-generation state. */
export const upgrades = new UpgradeForwarder();

/** Switchyard's answer to an upgrade it could not forward: the failure's status, then the connection closes. */
function answerOwn(socket: Duplex, state: UpgradeState, failure: UpstreamFailure, text: string): void {
  state.proxyReq?.destroy();
  state.proxyReq = null;
  state.answered = true;
  const status = UPSTREAM_FAILURES[failure].status;
  socket.end(rawAnswer(status, text, undefined, { list: state.ex.responseHeaderEdits, vars: state.route.variables[state.picker.role]! }));
  socket.destroySoon?.();
  finish(state, failure, status);
}

/** Reports the outcome once, with the status the client got (0: none). */
function finish(state: UpgradeState, failure: UpstreamFailure | null, status: number): void {
  if (state.finished) return;
  state.finished = true;
  state.sink.upstreamEnded(outcomeOf(state.picker, failure, state.tries, status));
}

/**
 * Sets x-switchyard-fallback on the upstream's answer before http-proxy writes it
 * to the client (it writes `res.headers`; this listener runs first), as on the
 * HTTP path; an upstream's own is dropped.
 */
function sayFallback(state: UpgradeState, res: IncomingMessage): void {
  const from = fallenBackFrom(state.choice, state.picker);
  if (from >= 0) res.headers['x-switchyard-fallback'] = state.route.roleNames[from]!;
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

declare module 'node:stream' {
  interface Duplex { destroySoon?(): void }
}

import type { ClientRequest, IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import httpProxy from 'http-proxy';
import type { RuntimeCode } from '../errors.js';
import type { EndpointSet } from './endpoints.js';

/** Per client socket: the state of its upgrade, so errors and closes are handled once. */
interface UpgradeState {
  set: EndpointSet;
  index: number;
  tries: number;
  /** The upstream answered (101 or a refusal): nothing more to write from us. */
  answered: boolean;
  done: (endpoint: string | undefined, code: RuntimeCode | undefined) => void;
  finished: boolean;
}

const kState = Symbol('switchyard.upgrade');
type Tracked = Duplex & { [kState]?: UpgradeState };

const RETRY_CODES = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ETIMEDOUT']);

/**
 * WebSocket and other `Upgrade` requests go through http-proxy's `ws` support,
 * with its known defects closed here:
 * - the two sockets are tied: when either closes, the other is destroyed
 *   (http-proxy only ends the upstream on a client *error*: node-http-proxy#559, #1510);
 * - an upstream that refuses the upgrade gets its answer relayed, then both
 *   sockets are closed instead of lingering (#1510);
 * - every error has a listener: an upstream "socket hang up" answers 502 and never
 *   reaches the process as an unhandled 'error' (#527); the client socket, which
 *   Node hands over without an error listener after 'upgrade', gets one too.
 */
export class UpgradeForwarder {
  readonly #proxy: httpProxy;

  constructor() {
    this.#proxy = httpProxy.createProxyServer({ ws: true, xfwd: true });
    // Errors are handled per call; this listener only keeps a stray one from killing the process (#527).
    this.#proxy.on('error', () => {});
    this.#proxy.on('proxyReqWs', (proxyReq: ClientRequest, _req: IncomingMessage, socket: Tracked) => {
      const state = socket[kState];
      // Tie only once connected: a refused connect must not take the client down before the retry.
      proxyReq.on('socket', (upstream: Duplex & { connecting?: boolean }) => {
        if (upstream.connecting) upstream.once('connect', () => tie(socket, upstream));
        else tie(socket, upstream);
      });
      proxyReq.on('upgrade', () => {
        if (state) { state.answered = true; finish(state, undefined); }
      });
      proxyReq.on('response', (res: IncomingMessage) => {
        // Refused upgrade: http-proxy pipes the answer to the client; close both once it is through.
        if (state) { state.answered = true; finish(state, undefined); }
        res.on('end', () => { socket.end(); proxyReq.destroy(); });
      });
    });
  }

  /** Forwards an upgrade request to the role's next endpoint (connect failures try the others). */
  forward(req: IncomingMessage, socket: Duplex, head: Buffer, set: EndpointSet,
    done: (endpoint: string | undefined, code: RuntimeCode | undefined) => void): void {
    const tracked = socket as Tracked;
    const state: UpgradeState = { set, index: set.start(), tries: 0, answered: false, done, finished: false };
    tracked[kState] = state;
    socket.on('error', () => socket.destroy());
    socket.on('close', () => finish(state, undefined));
    this.#attempt(req, tracked, head, state);
  }

  #attempt(req: IncomingMessage, socket: Tracked, head: Buffer, state: UpgradeState): void {
    state.tries++;
    const e = state.set.endpoints[state.index]!;
    const target = `http://${e.host.includes(':') ? `[${e.host}]` : e.host}:${e.port}`;
    this.#proxy.ws(req, socket, head, { target }, (err: Error & { code?: string }) => {
      if (state.answered || socket.destroyed) {
        socket.destroy();
        return;
      }
      if (RETRY_CODES.has(err.code ?? '') && state.tries < state.set.endpoints.length) {
        state.index = (state.index + 1) % state.set.endpoints.length;
        // The head was already put back on the socket by the first attempt.
        this.#attempt(req, socket, Buffer.alloc(0), state);
        return;
      }
      const connect = RETRY_CODES.has(err.code ?? '');
      const text = connect
        ? `switchyard: no endpoint of role ${state.set.role} accepted a connection\n`
        : `switchyard: upgrade to role ${state.set.role} failed: ${err.message}\n`;
      state.answered = true;
      socket.end(`HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`);
      socket.destroySoon?.();
      finish(state, connect ? 'SY_ERR_UPSTREAM_CONNECT' : 'SY_ERR_UPSTREAM_UPGRADE');
    });
  }

  close(): void {
    this.#proxy.close();
  }
}

/** One forwarder per process: it holds no per-generation state. */
export const upgrades = new UpgradeForwarder();

function finish(state: UpgradeState, code: RuntimeCode | undefined): void {
  if (state.finished) return;
  state.finished = true;
  state.done(state.set.endpoints[state.index]?.address, code);
}

/** When either socket closes, the other goes too: no half-dead tunnels. */
function tie(a: Duplex, b: Duplex): void {
  a.once('close', () => b.destroy());
  b.once('close', () => a.destroy());
  b.on('error', () => b.destroy());
}

declare module 'node:stream' {
  interface Duplex { destroySoon?(): void }
}

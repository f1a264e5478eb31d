import type { Server } from 'node:http';
import { Socket } from 'node:net';
import { SwitchyardError } from '../errors.js';

/**
 * The Node internals switchyard relies on, in one place. Each is checked where it
 * is used: the HTTP server's own connection listener when a listening socket is
 * made (takeHttpConnectionListener: without it nothing works, so a Node that
 * changed it fails the first build, naming this file), the socket handle when a
 * connection is adopted (moveHandle: it falls back to plain streams).
 */

/** Node's `onread` option of net.Socket: reads land in a buffer of the caller's. */
export interface OnRead {
  buffer(): Buffer;
  callback(n: number, buf: Buffer): boolean;
}

type ConnectionListener = (this: Server, socket: Socket) => void;

/**
 * Takes the http.Server's own 'connection' listener (which hands a socket to
 * Node's HTTP parser), so the caller decides per connection whether it goes there
 * or to the byte pipe: one listening socket serves either protocol, and a listener
 * changes protocol without a rebind.
 */
export function takeHttpConnectionListener(server: Server): ConnectionListener {
  const own = server.listeners('connection');
  if (own.length !== 1 || typeof own[0] !== 'function') {
    throw new SwitchyardError('SY_ERR_BIND', `node_internals: an http.Server has ${own.length} 'connection' listeners, not the one switchyard takes over (Node ${process.version})`);
  }
  server.removeAllListeners('connection');
  return own[0] as ConnectionListener;
}

/** Node's accepted socket and its handle, as far as moving the handle needs them. */
type Accepted = Socket & { _handle?: { useUserBuffer?: unknown; reading?: boolean } | null; server?: unknown; _server?: unknown };

/**
 * Moves an accepted socket's handle to a new Socket made with `onread`, in the same
 * tick as the accept (nothing was read yet); the server's connection count follows.
 * Null, with the socket left as it was, where the handle is not as expected.
 */
export function moveHandle(accepted: Socket, onread: OnRead): Socket | null {
  const old = accepted as Accepted;
  // A TLS socket's reads are its own (decrypted): it is read as a stream.
  if ((accepted as { encrypted?: boolean }).encrypted === true) return null;
  const handle = old._handle;
  if (!handle || typeof handle.useUserBuffer !== 'function' || handle.reading !== true || old.destroyed) return null;
  old._handle = null;
  const socket = new Socket({ handle, allowHalfOpen: true, onread } as ConstructorParameters<typeof Socket>[0]) as Accepted;
  socket.server = old.server;
  socket._server = old._server;
  old.server = null;
  old._server = null;
  return socket;
}

import { Socket } from 'node:net';

/**
 * The Node internals switchyard relies on, in one place, each checked where it is
 * used: the socket handle when a connection is adopted (moveHandle: it falls back
 * to plain streams).
 */

/**
 * Node's `onread` option of net.Socket: reads land in a buffer of the caller's (a
 * function: asked again after each read), and the callback's false stops reading
 * until the socket is resumed.
 */
export interface OnRead {
  buffer: Buffer | (() => Buffer);
  callback(n: number, buf: Buffer): boolean;
}

/**
 * The buffer every plain HTTP/1.1 socket reads into, client and upstream: each read is
 * parsed, and what is kept past its callback (a head cut in two, body bytes, pipelined
 * requests) copied, before the callback returns, so one buffer serves them all and a
 * read costs no allocation and no stream machinery. Reads come one callback at a time.
 */
export const SHARED_READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

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

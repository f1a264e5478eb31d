import type { Socket } from 'node:net';
import { moveHandle, type OnRead } from './node_internals.js';

/** Read size of each direction of a pair while data streams (nginx's stream proxy_buffer_size). */
const READ_BYTES = 16 * 1024;
/**
 * Read size while reads are small (requests and answers of a few hundred bytes, an
 * idle connection): carved from Node's shared pool, so an idle connection holds
 * 2 KiB per direction, not a touched page of a 16 KiB buffer.
 */
const SMALL_READ_BYTES = 2 * 1024;
/** What a client may send before its upstream connected; past it, reads wait. */
const EARLY_BYTES = 64 * 1024;

/**
 * One direction of the byte pipe. Its socket reads straight into a buffer of its
 * own (Node's `onread`), and each read is written on at once: no stream machinery
 * and no allocation per chunk, which halves the instructions a request/response
 * exchange costs (callgrind, through switchyard: 29k → 13k per exchange). A write that
 * could not finish at once still points into the buffer, so the next read gets a
 * fresh one. A read that filled its buffer gets a big one next, a small read a
 * small one. A write that fills the other side's queue pauses the reads until it
 * drains (backpressure); an end is passed on as an end (half-close). Reads before
 * the other side exists are kept (copied), up to EARLY_BYTES: the client keeps
 * being read meanwhile, so a client that resets or leaves is noticed at once.
 */
export class Flow {
  #buf = Buffer.allocUnsafe(SMALL_READ_BYTES);
  #src: Socket | null = null;
  #dst: Socket | null = null;
  #early: Buffer[] = [];
  #earlyBytes = 0;
  #ended = false;
  readonly onread: OnRead = {
    buffer: (): Buffer => this.#buf,
    callback: (n: number, buf: Buffer): boolean => this.#data(buf, n),
  };

  /** The socket made with `onread` (right after it was made, before it can read). */
  from(src: Socket): void {
    this.#src = src;
    src.once('end', () => {
      this.#ended = true;
      this.#dst?.end();
    });
  }

  /** Passes what was read so far, and from now on every read and the end, to `dst`. */
  to(dst: Socket): void {
    this.#dst = dst;
    let ok = true;
    for (const chunk of this.#early) ok = dst.write(chunk);
    this.#early = [];
    if (this.#ended) dst.end();
    else if (this.#src!.isPaused()) {
      // Paused at EARLY_BYTES: reads go on once the early bytes are on their way.
      const src = this.#src!;
      if (ok) src.resume();
      else dst.once('drain', () => src.resume());
    }
  }

  /** Always true: a full queue pauses through `pause()`, so that `resume()` undoes it. */
  #data(buf: Buffer, n: number): boolean {
    const dst = this.#dst;
    if (dst === null) {
      this.#early.push(Buffer.from(buf.subarray(0, n)));
      this.#earlyBytes += n;
      if (this.#earlyBytes >= EARLY_BYTES) this.#src!.pause();
      return true;
    }
    const ok = dst.write(buf.subarray(0, n));
    const size = n === buf.length ? READ_BYTES : n < SMALL_READ_BYTES ? SMALL_READ_BYTES : buf.length;
    if (dst.writableLength > 0 || size !== buf.length) this.#buf = Buffer.allocUnsafe(size);
    if (!ok) {
      const src = this.#src!;
      src.pause();
      dst.once('drain', () => src.resume());
    }
    return true;
  }
}

/** A client connection of a tcp listener, with the flow its reads go through. */
export interface TcpClient {
  readonly socket: Socket;
  /** Client → upstream reads; null when the socket could not be adopted (then it is read as a stream). */
  readonly flow: Flow | null;
}

/**
 * Takes over an accepted connection for the byte pipe: its reads go through a Flow
 * of their own (Node's `onread`), which a server socket cannot be given, so its
 * handle moves to a new Socket that has one (node_internals.ts). Where that cannot
 * be done, the socket is kept as it is and read as a stream, which works the same,
 * only dearer.
 */
export function acceptTcp(accepted: Socket): TcpClient {
  const flow = new Flow();
  const socket = moveHandle(accepted, flow.onread);
  if (socket === null) return { socket: accepted, flow: null };
  flow.from(socket);
  return { socket, flow };
}

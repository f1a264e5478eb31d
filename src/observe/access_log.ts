import { constants, write as fsWrite } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import type { Counter } from 'prom-client';

/** Lines are written in batches of about this size… */
const BATCH_BYTES = 64 * 1024;
/** …or this long after the first line of a batch, whichever comes first. */
const FLUSH_MS = 200;
/** Lines waiting or being written, at most; beyond it new lines are dropped and counted. */
const MAX_BUFFERED_BYTES = 8 * 1024 * 1024;
/** A full non-blocking pipe (EAGAIN) is retried after this long. */
const RETRY_MS = 20;
/** How long closing waits for queued lines to be written before it drops them. */
const CLOSE_WAIT_MS = 2_000;

/**
 * Opens for append without blocking: a FIFO with no reader fails at once (ENXIO)
 * instead of holding the open, and with it the reload queue, until one comes.
 */
function openForAppend(path: string): Promise<FileHandle> {
  return open(path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NONBLOCK, 0o644);
}

/**
 * Where access log lines go: `stdout` or a file (opened for append). The data path
 * only ever appends a string to an array: the lines are written in batches, off the
 * event loop (fs.write runs on libuv's thread pool, so a slow disk or a stuck log
 * reader never blocks a request). While a write is stuck, lines pile up to
 * MAX_BUFFERED_BYTES; after that they are dropped and counted
 * (`switchyard_access_log_dropped_lines_total`), never waited for.
 */
export class AccessLogSink {
  /** `stdout`, or the absolute path of the file. */
  readonly path: string;
  #handle: FileHandle | null;
  #pending: string[] = [];
  #pendingBytes = 0;
  /** Bytes handed to a write that has not completed. */
  #writingBytes = 0;
  #timer: NodeJS.Timeout | null = null;
  /** Writes, reopens and closes run one after another, in order. */
  #chain: Promise<void> = Promise.resolve();
  #closed = false;
  /** Closed without its writes finishing: a retry loop still waiting gives up. */
  #abandoned = false;
  readonly #dropped: Counter;
  readonly #onError: (message: string) => void;
  #lastError = '';

  private constructor(path: string, handle: FileHandle | null, dropped: Counter, onError: (message: string) => void) {
    this.path = path;
    this.#handle = handle;
    this.#dropped = dropped;
    this.#onError = onError;
  }

  /** Opens the sink; rejects (with the OS's reason) when the file cannot be opened for append. */
  static async open(path: string, dropped: Counter, onError: (message: string) => void): Promise<AccessLogSink> {
    const handle = path === 'stdout' ? null : await openForAppend(path);
    return new AccessLogSink(path, handle, dropped, onError);
  }

  // hot path
  /** Queues one line (without its newline). Never blocks, never throws. */
  write(line: string): void {
    const n = line.length + 1;
    if (this.#closed || this.#pendingBytes + this.#writingBytes + n > MAX_BUFFERED_BYTES) {
      this.#dropped.inc();
      return;
    }
    this.#pending.push(line);
    this.#pendingBytes += n;
    if (this.#pendingBytes >= BATCH_BYTES) void this.flush();
    else if (this.#timer === null) {
      this.#timer = setTimeout(() => void this.flush(), FLUSH_MS);
      this.#timer.unref(); // a clean stop flushes; the timer must not hold the process
    }
  }

  /** Writes everything queued so far; resolves once it is written (or failed). */
  flush(): Promise<void> {
    if (this.#timer !== null) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
    if (this.#pending.length === 0) return this.#chain;
    const buf = Buffer.from(`${this.#pending.join('\n')}\n`);
    const lines = this.#pending.length;
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#writingBytes += buf.length;
    this.#chain = this.#chain.then(() => this.#writeOut(buf, lines));
    return this.#chain;
  }

  /**
   * Reopens the file under its path (after logrotate moved it away): lines
   * already queued go to the old file, later ones to the new. A no-op for stdout.
   * Rejects, keeping the old file, when the path cannot be opened.
   */
  async reopen(): Promise<void> {
    if (this.#handle === null || this.#closed) return;
    const next = await openForAppend(this.path);
    void this.flush();
    // In the chain: batches queued before go to the old file, none is written to a closed one.
    this.#chain = this.#chain.then(async () => {
      const old = this.#handle!;
      this.#handle = next;
      if (this.#closed) await next.close().catch(() => {});
      await old.close().catch(() => {});
    });
    await this.#chain;
  }

  /**
   * Writes what is queued, then closes the file. Lines written after this are dropped.
   * Waits CLOSE_WAIT_MS at most: a sink whose reader stopped reading must not hold up
   * a generation's close or the process's stop; what is still unwritten then is
   * dropped (counted), and the file is left to the process's exit.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    void this.flush();
    const done = this.#chain.then(async () => { await this.#handle?.close().catch(() => {}); });
    this.#chain = done;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(true), CLOSE_WAIT_MS); });
    const timedOut = await Promise.race([done.then(() => false), late]);
    clearTimeout(timer);
    if (timedOut) {
      this.#abandoned = true;
      this.#onError(`access log ${this.path}: could not write for ${CLOSE_WAIT_MS} ms at close; its unwritten lines are dropped`);
    }
  }

  async #writeOut(buf: Buffer, lines: number): Promise<void> {
    const fd = this.#handle === null ? 1 : this.#handle.fd;
    let off = 0;
    try {
      while (off < buf.length) off += await writeSome(fd, buf, off, () => this.#abandoned);
      this.#lastError = '';
    } catch (err) {
      // The batch is lost (a full disk, a closed stdout): count it, say so once per cause.
      this.#dropped.inc(lines);
      const message = `access log ${this.path}: ${(err as Error).message}; lines are being dropped`;
      if (message !== this.#lastError) this.#onError(message);
      this.#lastError = message;
    } finally {
      this.#writingBytes -= buf.length;
    }
  }
}

/**
 * One fs.write, with a full non-blocking pipe (EAGAIN) waited out, until `abandoned`
 * says to stop; resolves to the bytes written.
 */
function writeSome(fd: number, buf: Buffer, off: number, abandoned: () => boolean): Promise<number> {
  return new Promise((resolve, reject) => {
    const attempt = (): void => {
      fsWrite(fd, buf, off, buf.length - off, null, (err, n) => {
        if (err?.code === 'EAGAIN' && abandoned()) reject(new Error('closed before the reader took the lines'));
        else if (err?.code === 'EAGAIN') setTimeout(attempt, RETRY_MS);
        else if (err) reject(err);
        else resolve(n);
      });
    };
    attempt();
  });
}

/**
 * The open sinks, one per path, shared by the generations that log to it (an
 * unchanged `accessLog` is not reopened on reload); the last generation to let
 * go of a path flushes and closes it.
 */
export class AccessLogs {
  readonly #sinks = new Map<string, { sink: AccessLogSink; leases: number }>();
  readonly #dropped: Counter;
  readonly #onError: (message: string) => void;

  constructor(dropped: Counter, onError: (message: string) => void) {
    this.#dropped = dropped;
    this.#onError = onError;
  }

  /** The sink for `path` (`stdout` or absolute), opened if no generation uses it yet. */
  async lease(path: string): Promise<AccessLogSink> {
    const have = this.#sinks.get(path);
    if (have) {
      have.leases++;
      return have.sink;
    }
    const sink = await AccessLogSink.open(path, this.#dropped, this.#onError);
    // Another lease of the same path may have opened it meanwhile: keep one.
    const raced = this.#sinks.get(path);
    if (raced) {
      raced.leases++;
      await sink.close();
      return raced.sink;
    }
    this.#sinks.set(path, { sink, leases: 1 });
    return sink;
  }

  async release(sink: AccessLogSink): Promise<void> {
    const have = this.#sinks.get(sink.path);
    if (!have || have.sink !== sink) return;
    if (--have.leases > 0) return;
    this.#sinks.delete(sink.path);
    await sink.close();
  }

  /** Whether access log lines go to stdout now (the CLI then logs its own lines to stderr). */
  get onStdout(): boolean {
    return this.#sinks.has('stdout');
  }

  /** SIGUSR1: every file sink reopens its path. Resolves to the errors, one message per sink that failed. */
  async reopenAll(): Promise<string[]> {
    const errors: string[] = [];
    await Promise.all([...this.#sinks.values()].map(({ sink }) => sink.reopen().catch((err: Error) => {
      errors.push(`access log ${sink.path}: reopen: ${err.message}`);
    })));
    return errors;
  }
}

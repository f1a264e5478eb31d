/** Lets go of one resource; may be async. */
export type Release = () => unknown;

interface Entry {
  run: Release;
  /** Only a failed build runs it (see undoOnFailure); commit() drops it. */
  undo: boolean;
}

/**
 * A stack of releases, Caddy's context: whoever acquires a resource pushes its
 * release at once, so a half-built generation lets go of exactly what it took.
 * A build owns the stack; if it fails the stack is disposed at once, else the
 * generation keeps it and disposes it when it closes.
 *
 * `dispose()` runs the releases last-pushed first, each awaited before the next,
 * once: later calls get the same promise. A release that throws or rejects does not
 * stop the others: its error goes to `onError` (an AggregateError counts as its
 * errors), never to the caller.
 */
export class Disposer {
  readonly #entries: Entry[] = [];
  readonly #onError: (err: Error) => void;
  #disposed: Promise<void> | null = null;

  constructor(onError: (err: Error) => void) {
    this.#onError = onError;
  }

  /**
   * Registers the release of what was just acquired. On a stack already disposed
   * (nobody is left to release it later) it runs at once.
   */
  push(release: Release): void {
    if (this.#disposed) void this.#run(release);
    else this.#entries.push({ run: release, undo: false });
  }

  /**
   * Registers how to take back a change to state the running generation shares
   * (an in-place component update), which only a failed build does: commit()
   * drops it, so a generation that closes later does not run it.
   */
  undoOnFailure(undo: Release): void {
    if (!this.#disposed) this.#entries.push({ run: undo, undo: true });
  }

  /** The build succeeded: the undo entries go, the releases stay for the owner's dispose(). */
  commit(): void {
    for (let i = this.#entries.length - 1; i >= 0; i--) if (this.#entries[i]!.undo) this.#entries.splice(i, 1);
  }

  get disposed(): boolean {
    return this.#disposed !== null;
  }

  dispose(): Promise<void> {
    this.#disposed ??= this.#disposeAll();
    return this.#disposed;
  }

  async #disposeAll(): Promise<void> {
    const entries = this.#entries.splice(0);
    for (let i = entries.length - 1; i >= 0; i--) {
      const pending = this.#run(entries[i]!.run);
      if (pending) await pending;
    }
  }

  /** Runs one release; a sync one (most: a lease count) is not turned into a promise. */
  #run(release: Release): Promise<void> | void {
    try {
      const r = release();
      if (isThenable(r)) return Promise.resolve(r).then(() => {}, (err: unknown) => this.#report(err));
    } catch (err) {
      this.#report(err);
    }
  }

  #report(err: unknown): void {
    if (err instanceof AggregateError) for (const e of err.errors) this.#report(e);
    else this.#onError(err instanceof Error ? err : new Error(String(err)));
  }
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function';
}

/**
 * Long control-path work (validating or building a config of 40,000 roles) runs
 * in slices: after about `budgetMs` of work it yields to the event loop, so
 * requests and connections are served meanwhile (issue 11, item 7: a big config
 * must not stop traffic). Checking costs one clock read.
 */
export class Slicer {
  readonly budgetMs: number;
  #since = performance.now();
  #calls = 0;

  constructor(budgetMs = 8) {
    this.budgetMs = budgetMs;
  }

  /**
   * True once this slice has used its budget: then `await yield()`. The clock is
   * read every 32nd call (a read costs more than most steps it is asked between).
   */
  get due(): boolean {
    if ((++this.#calls & 31) !== 0) return false;
    return performance.now() - this.#since >= this.budgetMs;
  }

  /** Lets the event loop run (timers, sockets: setImmediate comes after I/O), then starts a new slice. */
  async yield(): Promise<void> {
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.#since = performance.now();
  }
}

import type { AutoRollbackConfig } from '../config/types.js';
import type { Generation } from './generation.js';
import { figuresOf, talliesOf, type Figures } from './outcomes.js';

/** Why a generation was judged bad: the role, its figures in it and in the one before. */
export interface RollbackVerdict {
  role: string;
  figures: Figures;
  previous: Figures;
  maxErrorRatio: number;
}

/**
 * Watches one new generation for `window` after its swap: a role with at least
 * `minRequests` in it, whose error ratio is over `maxErrorRatio` and over the same
 * role's ratio in the generation before (0 when that one was not tallied, or
 * had no request of the role), is a verdict, handed to `onBad` once. The figures
 * are read every twentieth of the window, so a bad change goes as soon as it
 * shows rather than at the window's end.
 */
export class AutoRollbackWatch {
  readonly generation: Generation;
  readonly #prev: Generation;
  readonly #cfg: AutoRollbackConfig;
  readonly #onBad: (v: RollbackVerdict) => void;
  readonly #roles: string[];
  readonly #until: number;
  #timer: NodeJS.Timeout | null;

  constructor(gen: Generation, prev: Generation, cfg: AutoRollbackConfig, onBad: (v: RollbackVerdict) => void) {
    this.generation = gen;
    this.#prev = prev;
    this.#cfg = cfg;
    this.#onBad = onBad;
    this.#roles = [...new Set([...gen.plans.values()].flatMap((p) => p.roles.map((r) => r.name)))];
    this.#until = performance.now() + cfg.windowMs;
    this.#timer = setInterval(() => this.#check(), Math.max(20, Math.min(1000, cfg.windowMs / 20)));
    this.#timer.unref();
  }

  #check(): void {
    const last = performance.now() >= this.#until;
    for (const role of this.#roles) {
      const figures = figuresOf(talliesOf(this.generation, role), false);
      if (figures.requests < this.#cfg.minRequests || figures.errorRatio <= this.#cfg.maxErrorRatio) continue;
      const previous = figuresOf(talliesOf(this.#prev, role), false);
      if (figures.errorRatio <= previous.errorRatio) continue;
      this.stop();
      this.#onBad({ role, figures, previous, maxErrorRatio: this.#cfg.maxErrorRatio });
      return;
    }
    if (last) this.stop();
  }

  /** True while the window runs. */
  get watching(): boolean {
    return this.#timer !== null;
  }

  stop(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }
}

import type { Destroyable } from '../listeners/plan.js';

/**
 * A generation's units of work in flight, linked through the units themselves.
 * Adding and removing allocate nothing, and a removed unit is referenced by nothing
 * here. A Set did worse under load: the tables its growing and shrinking left behind
 * still pointed at finished requests, which the young-generation GC then had to keep
 * and promote (each scavenge under 8 or more concurrent requests promoted about
 * 2.5 MB of finished requests, a few KB each; with this list, next to none).
 */
export class WorkList {
  #head: Destroyable | null = null;
  #size = 0;

  get size(): number {
    return this.#size;
  }

  // hot path
  add(work: Destroyable): void {
    const head = this.#head;
    work.workPrev = null;
    work.workNext = head;
    if (head !== null) head.workPrev = work;
    this.#head = work;
    this.#size++;
  }

  // hot path
  /** Removes `work`; false when it was not in the list. */
  delete(work: Destroyable): boolean {
    const prev = work.workPrev;
    const next = work.workNext;
    if (prev === null && this.#head !== work) return false;
    if (prev === null) this.#head = next;
    else prev.workNext = next;
    if (next !== null) next.workPrev = prev;
    work.workPrev = work.workNext = null;
    this.#size--;
    return true;
  }

  /** The units, as an array (destroying one removes it from the list). */
  toArray(): Destroyable[] {
    const out: Destroyable[] = [];
    for (let w = this.#head; w !== null; w = w.workNext) out.push(w);
    return out;
  }

  clear(): void {
    for (const w of this.toArray()) w.workPrev = w.workNext = null;
    this.#head = null;
    this.#size = 0;
  }
}

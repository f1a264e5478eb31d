import { isDeepStrictEqual } from 'node:util';
import type { ComponentConfig } from '../config/types.js';
import type { Registry } from '../registry.js';
import type { Component } from './api.js';
import { table } from '../table.js';

/**
 * The component lifecycle, in one place:
 *
 *   created ─init()─▶ initialised ─ready()─▶ serving ──(no generation uses it)──▶ close() ─▶ closed
 *                                              │  ▲
 *                      config changed, and it has applyConfig → {needReload: false}: updated in place
 *                      otherwise: a new instance goes created → serving, then takes over at the swap
 *
 * A slot is one live instance, shared by every generation that uses it (counted),
 * so unchanged components keep their state across reloads, and an instance is
 * closed exactly once, after the last generation that used it drained.
 */
export class ComponentSlot {
  readonly name: string;
  readonly type: string;
  metadata: Record<string, string>;
  readonly instance: Component;
  #users = 0;
  #closed: Promise<void> | null = null;

  constructor(name: string, config: ComponentConfig, instance: Component) {
    this.name = name;
    this.type = config.type;
    this.metadata = config.metadata;
    this.instance = instance;
  }

  use(): void {
    this.#users++;
  }

  /** A generation that used it is closed; the last one closes the instance. */
  async unuse(): Promise<void> {
    if (--this.#users <= 0) await this.close();
  }

  /** Idempotent: close() runs once, whatever calls it. */
  close(): Promise<void> {
    this.#closed ??= Promise.resolve().then(() => this.instance.close()).catch((err) => {
      throw new Error(`component ${this.name}: close: ${(err as Error).message}`, { cause: err });
    });
    return this.#closed;
  }
}

export type ComponentOutcome = 'unchanged' | 'updated' | 'reinitialized' | 'added' | 'removed';

export interface ComponentPlan {
  slots: Map<string, ComponentSlot>;
  outcomes: Record<string, ComponentOutcome>;
  /** In-place updates, run last, once everything else of the build succeeded (`config`: the component's new config). */
  updates: { slot: ComponentSlot; config: ComponentConfig }[];
  /** New instances made by this build, closed if the build fails. */
  created: ComponentSlot[];
  /** In-place updates already applied, with the metadata before: reverted if a later build step fails. */
  applied: { slot: ComponentSlot; before: Record<string, string> }[];
}

/**
 * Decides for each component whether to reuse, update in place, or re-create it,
 * and brings up the new instances (init, inherit, then ready, all within the
 * component's `readyTimeout`, or `readyTimeoutMs` when it has none).
 * Throws (with every new instance closed) when one fails.
 */
export async function planComponents(prev: ReadonlyMap<string, ComponentSlot>, configs: Readonly<Record<string, ComponentConfig>>,
  registry: Registry, readyTimeoutMs: number): Promise<ComponentPlan> {
  const plan: ComponentPlan = { slots: new Map(), outcomes: table(), updates: [], created: [], applied: [] };
  const fresh: [string, ComponentConfig, boolean][] = [];
  for (const [name, cfg] of Object.entries(configs)) {
    const old = prev.get(name);
    if (old && old.type === cfg.type && isDeepStrictEqual(old.metadata, cfg.metadata)) {
      plan.slots.set(name, old);
      plan.outcomes[name] = 'unchanged';
    } else if (old && old.type === cfg.type && old.instance.applyConfig) {
      // Ask later (updates run last); a needReload answer is not known yet, so this
      // is decided in applyUpdates and may fall back to re-creation there.
      plan.slots.set(name, old);
      plan.outcomes[name] = 'updated';
      plan.updates.push({ slot: old, config: cfg });
    } else fresh.push([name, cfg, !!old]);
  }
  for (const name of prev.keys()) if (!Object.hasOwn(configs, name)) plan.outcomes[name] = 'removed';
  // allSettled, not all: with all, the first failure discarded the plan while
  // other new instances were still in init/ready, and those were never closed.
  const results = await Promise.allSettled(fresh.map(async ([name, cfg, existed]) => {
    const mode = existed ? 'reinitialized' : 'added';
    try {
      const predecessor = prev.get(name);
      plan.slots.set(name, await bringUp(name, cfg, registry, readyTimeoutMs, plan, predecessor?.type === cfg.type ? predecessor : undefined));
    } catch (err) {
      throw new ComponentError(name, mode, (err as Error).message, { cause: err });
    }
    plan.outcomes[name] = mode;
  }));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    await discard(plan);
    throw failed.reason;
  }
  return plan;
}

/** A component failed to come up or to update; says which, and how it was being changed (for the metrics). */
export class ComponentError extends Error {
  constructor(readonly component: string, readonly mode: ComponentOutcome, message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/**
 * Runs the in-place updates. A component that answers `needReload` is re-created
 * (make before break); a failing update rolls back the ones already applied.
 */
export async function applyUpdates(plan: ComponentPlan, registry: Registry, readyTimeoutMs: number): Promise<void> {
  const applied = plan.applied;
  for (const { slot, config } of plan.updates) {
    const { metadata } = config;
    let mode: ComponentOutcome = 'updated';
    try {
      const { needReload } = await slot.instance.applyConfig!(metadata);
      if (needReload) {
        mode = 'reinitialized';
        plan.slots.set(slot.name, await bringUp(slot.name, config, registry, readyTimeoutMs, plan, slot));
        plan.outcomes[slot.name] = 'reinitialized';
      } else {
        applied.push({ slot, before: slot.metadata });
        slot.metadata = metadata;
      }
    } catch (err) {
      await revertUpdates(plan);
      await discard(plan);
      // bringUp's messages already name the component and the step.
      const message = mode === 'updated' ? `component ${slot.name}: applyConfig: ${(err as Error).message}` : (err as Error).message;
      throw new ComponentError(slot.name, mode, message, { cause: err });
    }
  }
}

/**
 * Puts the in-place updates already applied back to their previous metadata (best
 * effort: a component may refuse), for a build that fails after applyUpdates.
 */
export async function revertUpdates(plan: ComponentPlan): Promise<void> {
  for (const a of plan.applied.splice(0).reverse()) {
    await a.slot.instance.applyConfig!(a.before).catch(() => {});
    a.slot.metadata = a.before;
  }
}

/**
 * create → init → (inherit from the instance it replaces) → ready, the three
 * within one deadline: the component's `readyTimeout`, else `defaultTimeoutMs`.
 * The predecessor keeps serving meanwhile; it is closed only after its
 * generation drained.
 */
async function bringUp(name: string, cfg: ComponentConfig, registry: Registry, defaultTimeoutMs: number, plan: ComponentPlan,
  predecessor?: ComponentSlot): Promise<ComponentSlot> {
  const d = registry.component(cfg.type);
  if (!d) throw new Error(`component ${name}: unknown type ${cfg.type}`);
  const slot = new ComponentSlot(name, cfg, d.create());
  plan.created.push(slot);
  const budgetMs = cfg.readyTimeoutMs ?? defaultTimeoutMs;
  const deadline = performance.now() + budgetMs;
  const step = <T>(p: Promise<T>, what: string): Promise<T> =>
    withTimeout(p, Math.max(0, deadline - performance.now()), `component ${name}: ${what}`, budgetMs);
  await step(Promise.resolve().then(() => slot.instance.init(cfg.metadata)), 'init');
  if (predecessor && slot.instance.inherit) {
    await step(Promise.resolve().then(() => slot.instance.inherit!(predecessor.instance)), 'inherit');
  }
  if (slot.instance.ready) {
    const ok = await step(Promise.resolve().then(() => slot.instance.ready!()), 'ready');
    if (!ok) throw new Error(`component ${name}: ready: the component reported not ready`);
  }
  return slot;
}

/** Closes what a failed build created. */
export async function discard(plan: ComponentPlan): Promise<void> {
  await Promise.all(plan.created.splice(0).map((s) => s.close().catch(() => {})));
}

/** `p`, or a rejection after `ms` saying that `what` ran out of the `budgetMs` it had with the steps before it. */
function withTimeout<T>(p: Promise<T>, ms: number, what: string, budgetMs: number): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    Promise.resolve(p).catch((err: unknown) => {
      throw new Error(`${what}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
    }),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: timed out after ${budgetMs} ms (readyTimeout)`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

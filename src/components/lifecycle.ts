import { isDeepStrictEqual } from 'node:util';
import type { ComponentConfig } from '../config/types.js';
import type { Registry } from '../registry.js';
import type { Component } from './api.js';
import { table } from '../table.js';
import { ComponentError, SwitchyardError } from '../errors.js';

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

  /** Idempotent: close() runs once, whatever calls it. Rejects with SY_ERR_COMPONENT_CLOSE. */
  close(): Promise<void> {
    this.#closed ??= Promise.resolve().then(() => this.instance.close()).catch((err) => {
      throw new SwitchyardError('SY_ERR_COMPONENT_CLOSE', `component ${this.name}: close: ${(err as Error).message}`, { cause: err });
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
 * What a build does with one component, given the slot the running generation has
 * under its name (if any) and its config now: reuse the instance as it is
 * (`unchanged`), update it in place (`updated`: same type, new metadata, and it has
 * applyConfig, unless its needsReload says it would not take it; applyConfig's
 * answer may still turn this into a re-creation), or create a new
 * instance (`reinitialized` when it replaces one, `added` when none was there).
 * The build (planComponents) and the dry run (reload/changes.ts) both decide with it.
 */
export function decideComponent(old: ComponentSlot | undefined, cfg: ComponentConfig): Exclude<ComponentOutcome, 'removed'> {
  if (!old) return 'added';
  if (old.type !== cfg.type) return 'reinitialized';
  if (isDeepStrictEqual(old.metadata, cfg.metadata)) return 'unchanged';
  if (!old.instance.applyConfig) return 'reinitialized';
  return saysReload(old, cfg) ? 'reinitialized' : 'updated';
}

/** The instance's own needsReload answer; false when it has none or it throws (applyConfig then decides). */
function saysReload(slot: ComponentSlot, cfg: ComponentConfig): boolean {
  try {
    return slot.instance.needsReload?.(cfg.metadata) === true;
  } catch {
    return false;
  }
}

/** decideComponent for every component of `configs`, and `removed` for each one of `prev` that is gone. */
export function decideComponents(prev: ReadonlyMap<string, ComponentSlot>, configs: Readonly<Record<string, ComponentConfig>>):
  Record<string, ComponentOutcome> {
  const out: Record<string, ComponentOutcome> = table();
  for (const [name, cfg] of Object.entries(configs)) out[name] = decideComponent(prev.get(name), cfg);
  for (const name of prev.keys()) if (!Object.hasOwn(configs, name)) out[name] = 'removed';
  return out;
}

/**
 * Decides for each component whether to reuse, update in place, or re-create it
 * (decideComponents), and brings up the new instances (init, inherit, then ready,
 * all within the component's `readyTimeout`, or `readyTimeoutMs` when it has none).
 * Throws a ComponentError (with every new instance closed) when one fails.
 */
export async function planComponents(prev: ReadonlyMap<string, ComponentSlot>, configs: Readonly<Record<string, ComponentConfig>>,
  registry: Registry, readyTimeoutMs: number): Promise<ComponentPlan> {
  const plan: ComponentPlan = { slots: new Map(), outcomes: decideComponents(prev, configs), updates: [], created: [], applied: [] };
  const fresh: [string, ComponentConfig, 'reinitialized' | 'added'][] = [];
  for (const [name, cfg] of Object.entries(configs)) {
    const old = prev.get(name);
    const decision = plan.outcomes[name]!;
    if (decision === 'unchanged') plan.slots.set(name, old!);
    else if (decision === 'updated') {
      // Asked later (updates run last); a needReload answer is not known yet, so
      // applyUpdates may still turn this into a re-creation.
      plan.slots.set(name, old!);
      plan.updates.push({ slot: old!, config: cfg });
    } else fresh.push([name, cfg, decision === 'reinitialized' ? 'reinitialized' : 'added']);
  }
  // allSettled, not all: every new instance must have settled before the plan is
  // discarded, or one still in init/ready would never be closed.
  const results = await Promise.allSettled(fresh.map(async ([name, cfg, mode]) => {
    try {
      const predecessor = prev.get(name);
      plan.slots.set(name, await bringUp(name, cfg, registry, readyTimeoutMs, plan, predecessor?.type === cfg.type ? predecessor : undefined));
    } catch (err) {
      throw new ComponentError(name, mode, (err as Error).message, { cause: err });
    }
  }));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    await discard(plan);
    throw failed.reason;
  }
  return plan;
}

/**
 * Runs the in-place updates. A component that answers `needReload` is re-created
 * (make before break); a failing update rolls back the ones already applied and
 * throws a ComponentError.
 */
export async function applyUpdates(plan: ComponentPlan, registry: Registry, readyTimeoutMs: number): Promise<void> {
  const applied = plan.applied;
  for (const { slot, config } of plan.updates) {
    const { metadata } = config;
    let mode: 'updated' | 'reinitialized' = 'updated';
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
  if (!d) throw new SwitchyardError('SY_ERR_COMPONENT_INIT', `component ${name}: unknown type ${cfg.type}`);
  const slot = new ComponentSlot(name, cfg, d.create({ name }));
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
    if (!ok) throw new SwitchyardError('SY_ERR_COMPONENT_INIT', `component ${name}: ready: the component reported not ready`);
  }
  return slot;
}

/** Closes what a failed build created. */
export async function discard(plan: ComponentPlan): Promise<void> {
  await Promise.all(plan.created.splice(0).map((s) => s.close().catch(() => {})));
}

/** `p`, or a rejection after `ms` saying that `what` ran out of the `budgetMs` it had with the steps before it (a new instance's bring-up). */
function withTimeout<T>(p: Promise<T>, ms: number, what: string, budgetMs: number): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    Promise.resolve(p).catch((err: unknown) => {
      throw new SwitchyardError('SY_ERR_COMPONENT_INIT', `${what}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
    }),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new SwitchyardError('SY_ERR_COMPONENT_INIT', `${what}: timed out after ${budgetMs} ms (readyTimeout)`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

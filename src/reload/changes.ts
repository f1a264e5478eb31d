import { isDeepStrictEqual } from 'node:util';
import type { Config } from '../config/types.js';
import { decideComponents, type ComponentOutcome } from '../components/lifecycle.js';
import type { Registry } from '../registry.js';
import type { Generation } from './generation.js';
import { listenerSplit } from './split.js';
import { table } from '../table.js';

/** What a config would change against the running generation (the dry-run answer). */
export interface ChangePlan {
  listeners: { added: string[]; removed: string[]; changed: string[]; unchanged: string[] };
  /** Predicted; an in-place update may still turn into a re-init if the component answers needReload. */
  components: Record<string, ComponentOutcome>;
  /** Per listener whose split changes (split.ts: the first filter with splitWeights): before → after (null: none, the roles split equally). */
  weights: Record<string, { before: Record<string, number> | null; after: Record<string, number> | null }>;
}

/**
 * Compares a checked config (and the registry it was checked with) with the
 * running generation, without touching anything. Components are decided by the
 * function the build uses (decideComponent); weights are read through the
 * descriptors' splitWeights hook.
 */
export function planChanges(prev: Generation | null, next: Config, registry: Registry): ChangePlan {
  const before = prev?.config;
  const plan: ChangePlan = { listeners: { added: [], removed: [], changed: [], unchanged: [] }, components: table(), weights: table() };
  for (const [name, l] of Object.entries(next.listeners)) {
    const old = before?.listeners[name];
    if (!old) plan.listeners.added.push(name);
    else if (isDeepStrictEqual(old, l) && sameTarget(before!, next, l.vset)) plan.listeners.unchanged.push(name);
    else plan.listeners.changed.push(name);
    const splitBefore = old ? listenerSplit(old.filters, prev!.registry) : null;
    const splitAfter = listenerSplit(l.filters, registry);
    if (!isDeepStrictEqual(splitBefore, splitAfter)) plan.weights[name] = { before: splitBefore, after: splitAfter };
  }
  for (const name of Object.keys(before?.listeners ?? {})) {
    if (!next.listeners[name]) {
      plan.listeners.removed.push(name);
      const splitBefore = listenerSplit(before!.listeners[name]!.filters, prev!.registry);
      if (splitBefore) plan.weights[name] = { before: splitBefore, after: null };
    }
  }
  plan.components = decideComponents(prev?.components ?? new Map(), next.components);
  return plan;
}

/** A listener whose own config is equal still changes when its vset's roles or endpoints do. */
function sameTarget(a: Config, b: Config, vset: string): boolean {
  const va = a.vsets[vset];
  const vb = b.vsets[vset];
  if (!isDeepStrictEqual(va, vb) || !vb) return false;
  return Object.keys(vb.roles).every((r) => isDeepStrictEqual(a.roles[r], b.roles[r]));
}

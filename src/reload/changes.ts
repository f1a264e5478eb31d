import { isDeepStrictEqual } from 'node:util';
import type { Config } from '../config/types.js';
import type { ComponentOutcome } from '../components/lifecycle.js';
import type { Generation } from './generation.js';
import { table, tableCopy } from '../table.js';

/** What a config would change against the running generation (the dry-run answer). */
export interface ChangePlan {
  listeners: { added: string[]; removed: string[]; changed: string[]; unchanged: string[] };
  /** Predicted; an in-place update may still turn into a re-init if the component answers needReload. */
  components: Record<string, ComponentOutcome>;
  /** Per listener whose `weighted` weights change: before → after (null: no weighted filter). */
  weights: Record<string, { before: Record<string, number> | null; after: Record<string, number> | null }>;
}

/** Compares a checked config with the running generation, without touching anything. */
export function planChanges(prev: Generation | null, next: Config): ChangePlan {
  const before = prev?.config;
  const plan: ChangePlan = { listeners: { added: [], removed: [], changed: [], unchanged: [] }, components: table(), weights: table() };
  for (const [name, l] of Object.entries(next.listeners)) {
    const old = before?.listeners[name];
    if (!old) plan.listeners.added.push(name);
    else if (isDeepStrictEqual(old, l) && sameTarget(before!, next, l.vset)) plan.listeners.unchanged.push(name);
    else plan.listeners.changed.push(name);
    const wb = old ? weightsOf(old.filters) : null;
    const wa = weightsOf(l.filters);
    if (!isDeepStrictEqual(wb, wa)) plan.weights[name] = { before: wb, after: wa };
  }
  for (const name of Object.keys(before?.listeners ?? {})) {
    if (!next.listeners[name]) {
      plan.listeners.removed.push(name);
      const wb = weightsOf(before!.listeners[name]!.filters);
      if (wb) plan.weights[name] = { before: wb, after: null };
    }
  }
  for (const [name, c] of Object.entries(next.components)) {
    const slot = prev?.components.get(name);
    if (!slot) plan.components[name] = 'added';
    else if (slot.type === c.type && isDeepStrictEqual(slot.metadata, c.metadata)) plan.components[name] = 'unchanged';
    else if (slot.type === c.type && slot.instance.applyConfig) plan.components[name] = 'updated';
    else plan.components[name] = 'reinitialized';
  }
  for (const name of prev?.components.keys() ?? []) if (!next.components[name]) plan.components[name] = 'removed';
  return plan;
}

/** A listener whose own config is equal still changes when its vset's roles or endpoints do. */
function sameTarget(a: Config, b: Config, vset: string): boolean {
  const va = a.vsets[vset];
  const vb = b.vsets[vset];
  if (!isDeepStrictEqual(va, vb) || !vb) return false;
  return Object.keys(vb.roles).every((r) => isDeepStrictEqual(a.roles[r], b.roles[r]));
}

function weightsOf(filters: Config['listeners'][string]['filters']): Record<string, number> | null {
  const w = filters.find((f) => f.type === 'weighted');
  return w ? tableCopy((w.config as { weights: Record<string, number> }).weights) : null;
}

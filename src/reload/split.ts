import type { FilterConfig } from '../config/types.js';
import type { Registry } from '../registry.js';
import { tableCopy } from '../table.js';

/**
 * How a listener splits its traffic between roles, read only through the
 * descriptors' `splitWeights` hook (so a plugin that splits shows like `weighted`):
 * the weights (role → weight, roles left out: 0) of the first filter whose type has
 * the hook, or null when none has. The build's fallback split, the dry run and
 * GET /status all read it here.
 */
export function listenerSplit(filters: readonly FilterConfig[], registry: Registry): Record<string, number> | null {
  for (const entry of filters) {
    const descriptor = registry.filter(entry.type);
    if (descriptor?.splitWeights) return tableCopy(descriptor.splitWeights(entry.config));
  }
  return null;
}

/** Per role, in `roleNames` order: its weight in `split`, 0 when left out; equal without a split. */
export function weightsByRole(split: Readonly<Record<string, number>> | null, roleNames: readonly string[]): number[] {
  if (split === null) return roleNames.map(() => 1);
  return roleNames.map((r) => (Object.hasOwn(split, r) ? split[r]! : 0));
}

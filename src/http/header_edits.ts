import type { HeaderEdit } from '../filters/api.js';

/**
 * The header-edit engine: the `headers` filter compiles edits once per
 * generation; the forwarders and local answers apply them per request.
 */

/** The variables a template reads, by index: role, vset, listener, generation. */
export type HeaderVariables = readonly [role: string, vset: string, listener: string, generation: string];

// hot path
/**
 * Applies edits to a flat [name, value, …] header list: a `remove` drops every
 * occurrence, a `set` replaces them with one, an `add` appends one more.
 */
export function applyHeaderEdits(list: string[], edits: readonly HeaderEdit[], vars: HeaderVariables): string[] {
  let out = list;
  for (const e of edits) {
    if (e.op !== 'add') out = without(out, e.lower);
    if (e.op !== 'remove') out.push(e.name, render(e.value, vars));
  }
  return out;
}

function without(list: string[], lower: string): string[] {
  let found = false;
  for (let i = 0; i < list.length && !found; i += 2) found = list[i]!.length === lower.length && list[i]!.toLowerCase() === lower;
  if (!found) return list;
  const out: string[] = [];
  for (let i = 0; i < list.length; i += 2) {
    if (list[i]!.toLowerCase() !== lower) out.push(list[i]!, list[i + 1]!);
  }
  return out;
}

function render(parts: readonly (string | number)[], vars: HeaderVariables): string {
  if (parts.length === 1 && typeof parts[0] === 'string') return parts[0];
  let s = '';
  for (const p of parts) s += typeof p === 'string' ? p : vars[p];
  return s;
}

import { Registry } from './registry.js';
import type { FilterDescriptor } from './filters/api.js';
import type { ComponentDescriptor } from './components/api.js';
import { headerRoute } from './filters/header_route.js';
import { weighted } from './filters/weighted.js';
import { ratelimit } from './filters/ratelimit.js';
import { fault } from './filters/fault.js';
import { headers } from './filters/headers.js';
import { ratelimitComponent } from './components/ratelimit.js';

/** The standard filter and component types: a plain list, registered like any plugin's. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const builtinFilters: FilterDescriptor<any, any>[] = [headerRoute, weighted, ratelimit, fault, headers];
export const builtinComponents: ComponentDescriptor[] = [ratelimitComponent];

/** A registry holding the built-in types; plugins add theirs to it. */
export function builtinRegistry(): Registry {
  const r = new Registry();
  for (const f of builtinFilters) r.registerFilter(f);
  for (const c of builtinComponents) r.registerComponent(c);
  return r;
}

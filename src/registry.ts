import type { Exchange, FilterDescriptor } from './filters/api.js';
import type { ComponentDescriptor } from './components/api.js';
import { DuplicateTypeError, SwitchyardError } from './errors.js';

/** Where plugin loading (filters/plugins.ts) imports it from. */
export { DuplicateTypeError };

/**
 * The one registry of filter and component types. Built-ins and plugins register
 * through the same two calls (Caddy's RegisterModule); a duplicate type is an error.
 * Registration throws a SwitchyardError: SY_ERR_DUPLICATE_TYPE (DuplicateTypeError)
 * for a type registered twice, SY_ERR_PLUGIN_LOAD for a malformed descriptor.
 */
export class Registry {
  readonly #filters = new Map<string, FilterDescriptor<any, any>>();
  readonly #components = new Map<string, ComponentDescriptor>();

  registerFilter<C, E extends Exchange>(d: FilterDescriptor<C, E>): void {
    // Plugins are plain JS: check the shape here, so a malformed descriptor fails
    // at plugins[i] when it loads, not later as a scope error or a TypeError in a build.
    const problems = descriptorProblems(d, { scope: SCOPES, validate: 'function', create: 'function' });
    if (problems.length) throw new SwitchyardError('SY_ERR_PLUGIN_LOAD', `filter type ${JSON.stringify(d?.type)}: ${problems.join('; ')}`);
    if (this.#filters.has(d.type)) throw new DuplicateTypeError('filter', d.type);
    this.#filters.set(d.type, d);
  }

  registerComponent(d: ComponentDescriptor): void {
    const problems = descriptorProblems(d, { validate: 'function', create: 'function' });
    if (problems.length) throw new SwitchyardError('SY_ERR_PLUGIN_LOAD', `component type ${JSON.stringify(d?.type)}: ${problems.join('; ')}`);
    if (this.#components.has(d.type)) throw new DuplicateTypeError('component', d.type);
    this.#components.set(d.type, d);
  }

  // An http-scoped filter's function takes an HttpExchange: the scope check (validation) keeps it off tcp listeners.
  filter(type: string): FilterDescriptor<unknown, any> | undefined {
    return this.#filters.get(type);
  }

  component(type: string): ComponentDescriptor | undefined {
    return this.#components.get(type);
  }

  filterTypes(): string[] {
    return [...this.#filters.keys()];
  }

  componentTypes(): string[] {
    return [...this.#components.keys()];
  }
}

const SCOPES = ['http', 'tcp', 'both'] as const;

/** What is wrong with a descriptor: `type` a non-empty string, each key a function or one of its allowed values. */
function descriptorProblems(d: unknown, want: Record<string, 'function' | readonly string[]>): string[] {
  if (typeof d !== 'object' || d === null) return ['the descriptor must be an object'];
  const o = d as Record<string, unknown>;
  const out: string[] = [];
  if (typeof o.type !== 'string' || o.type === '') out.push('type must be a non-empty string');
  for (const [k, w] of Object.entries(want)) {
    if (w === 'function') {
      if (typeof o[k] !== 'function') out.push(`${k} must be a function`);
    } else if (!w.includes(o[k] as string)) out.push(`${k} must be one of ${w.join(', ')}, got ${JSON.stringify(o[k])}`);
  }
  return out;
}

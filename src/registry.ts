import type { FilterDescriptor } from './filters/api.js';
import type { ComponentDescriptor } from './components/api.js';

/**
 * The one registry of filter and component types. Built-ins and plugins register
 * through the same two calls (Caddy's RegisterModule); a duplicate type is an error.
 */
export class Registry {
  readonly #filters = new Map<string, FilterDescriptor<any>>();
  readonly #components = new Map<string, ComponentDescriptor>();

  registerFilter<C>(d: FilterDescriptor<C>): void {
    if (this.#filters.has(d.type)) throw new Error(`filter type "${d.type}" is already registered`);
    this.#filters.set(d.type, d);
  }

  registerComponent(d: ComponentDescriptor): void {
    if (this.#components.has(d.type)) throw new Error(`component type "${d.type}" is already registered`);
    this.#components.set(d.type, d);
  }

  filter(type: string): FilterDescriptor<unknown> | undefined {
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

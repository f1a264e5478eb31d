/**
 * The half of the plugin API that config validation owns: what a filter or
 * component type's `validate` is given. It lives here, below filters/ and
 * components/, so the validator builds these contexts without importing the
 * layers above it; filters/api.ts and components/api.ts re-export the types, so a
 * plugin author's imports stay where they were.
 */
import type { ConfigCode } from '../errors.js';
import type { Path } from './path.js';
import type { Protocol } from './types.js';

/**
 * How a check treats a missing value and words a wrong one. Missing means
 * `undefined` (a key that is not there); `null` is a value, and a wrong one.
 */
export interface CheckOptions<T> {
  /** A missing value is an error (SY_ERR_CONFIG_REQUIRED, "is required") instead of giving `default`. */
  required?: boolean;
  /** What a missing value gives, and a wrong one once it is reported; undefined unless set. */
  default?: T;
  /**
   * The message for every failure of this value (missing when required, wrong type,
   * out of range), in place of the built-in wording. Unknown keys of a mapping keep theirs.
   */
  message?: string;
  /**
   * The code for every failure of this value, in place of the one by kind
   * (SY_ERR_CONFIG_REQUIRED, _TYPE or _VALUE). Unknown keys of a mapping keep theirs.
   */
  code?: ConfigCode;
}

/** A number check: `min` and `max` are inclusive, and the default message names them. */
export interface RangeOptions<T> extends CheckOptions<T> {
  min: number;
  max: number;
}

/** A list check: `nonEmpty` refuses `[]` too (SY_ERR_CONFIG_TYPE). */
export interface ListOptions extends CheckOptions<unknown[]> {
  nonEmpty?: boolean;
}

/**
 * What a filter type's `validate(raw, ctx)` is given: where the entry is, what the
 * listener routes to, and ways to report. Paths (`sub`) are below the entry's,
 * e.g. `['rules', 0, 'header']` under `listeners.cart.filters[1]`.
 */
export interface FilterValidateContext {
  /** Path of this filter entry, e.g. `listeners.cart.filters[1]`. */
  readonly path: Path;
  readonly listener: string;
  readonly protocol: Protocol;
  /** Roles of the listener's target vset, in declaration order. */
  readonly roles: readonly string[];
  /** The meta a role exposes in the target vset. */
  roleMeta(role: string): Readonly<Record<string, string>> | undefined;
  /** Reports an issue at `path + sub` (an unknown key is located at the key, any other issue at the value). */
  report(code: ConfigCode, sub: Path, message: string): void;
  /** Reports every key of `raw` not in `allowed` (`type` is always allowed). */
  allowKeys(raw: Record<string, unknown>, allowed: readonly string[]): void;
  /** Checks that `name` names a declared component of one of `types`; returns the name when it does. */
  component(name: unknown, sub: Path, types: readonly string[]): string | undefined;
}

/** What a component type's `validate(metadata, ctx)` is given. */
export interface ComponentValidateContext {
  /** Reports an issue at `components.<name>.metadata.<key>` (or the metadata itself with key ''). */
  report(code: ConfigCode, key: string, message: string): void;
}

/**
 * What validation needs of the registry of types: the filter and component types
 * by name, with the parts of their descriptors it calls. `Registry` is one; the
 * validator names only this, so config/ does not import the registry's layer.
 */
export interface TypeLookup {
  filter(type: string): { readonly scope: Protocol | 'both'; validate(raw: Record<string, unknown>, ctx: FilterValidateContext): unknown } | undefined;
  filterTypes(): readonly string[];
  component(type: string): { validate(metadata: Readonly<Record<string, string>>, ctx: ComponentValidateContext): void } | undefined;
  componentTypes(): readonly string[];
}

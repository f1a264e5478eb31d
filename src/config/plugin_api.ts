/**
 * The half of the plugin API that config validation owns: what a filter or
 * component type's `validate` is given. It lives here, below filters/ and
 * components/, so the validator builds these contexts without importing the
 * layers above it; filters/api.ts and components/api.ts re-export the types, so a
 * plugin author's imports stay where they were.
 *
 * Built-ins get no private shortcut (DESIGN): the checks here are the ones the
 * validator runs on the core config (checker.ts), so a plugin's errors read, and
 * are located, exactly like switchyard's own.
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
 * The typed checks, each at a path below the filter entry (the core config's
 * schemas run the same ones from the root). Each reports what is wrong with the value (code, path, line:column,
 * message) and returns the checked value; a missing value gives `default`
 * without a report unless `required`; a wrong one is reported and gives `default`.
 * Default wording, as the core config reads: "is required", "must be a string,
 * got number 5", "must be an integer from 1 to 10, got string "x"".
 */
export interface ValueChecks {
  /** A string. Wrong type: SY_ERR_CONFIG_TYPE. */
  str(value: unknown, sub: Path, opts: CheckOptions<string> & { default: string }): string;
  str(value: unknown, sub: Path, opts?: CheckOptions<string>): string | undefined;
  /** An integer from `min` to `max`. Not a number: SY_ERR_CONFIG_TYPE; out of range or not whole: SY_ERR_CONFIG_VALUE. */
  int(value: unknown, sub: Path, opts: RangeOptions<number> & { default: number }): number;
  int(value: unknown, sub: Path, opts: RangeOptions<number>): number | undefined;
  /** A finite number from `min` to `max` (12.5 passes). Codes as for `int`. */
  number(value: unknown, sub: Path, opts: RangeOptions<number> & { default: number }): number;
  number(value: unknown, sub: Path, opts: RangeOptions<number>): number | undefined;
  /** `true` or `false`. Anything else: SY_ERR_CONFIG_TYPE. */
  bool(value: unknown, sub: Path, opts: CheckOptions<boolean> & { default: boolean }): boolean;
  bool(value: unknown, sub: Path, opts?: CheckOptions<boolean>): boolean | undefined;
  /**
   * A duration (`250ms`, `30s`, `5m`, `1h`, `1.5s`; at most 596 h, the longest a Node
   * timer waits) in milliseconds. Not a string: SY_ERR_CONFIG_TYPE; malformed: SY_ERR_CONFIG_VALUE.
   */
  duration(value: unknown, sub: Path, opts: CheckOptions<number> & { default: number }): number;
  duration(value: unknown, sub: Path, opts?: CheckOptions<number>): number | undefined;
  /**
   * An HTTP field name (an RFC 9110 §5.1 token), returned as written; compare it
   * lower-cased. Anything else, a non-string too: SY_ERR_CONFIG_VALUE.
   */
  headerName(value: unknown, sub: Path, opts?: CheckOptions<string>): string | undefined;
  /** One of `choices` ("must be a, b or c, got …"). Anything else: SY_ERR_CONFIG_VALUE. */
  oneOf<T extends string>(value: unknown, sub: Path, choices: readonly T[], opts: CheckOptions<T> & { default: T }): T;
  oneOf<T extends string>(value: unknown, sub: Path, choices: readonly T[], opts?: CheckOptions<T>): T | undefined;
  /**
   * A mapping; each key not in `allowed` is reported (SY_ERR_CONFIG_UNKNOWN_KEY, at the
   * key, with a "did you mean" hint); `allowed: null` takes any key. Not a mapping:
   * SY_ERR_CONFIG_TYPE. Returns the mapping itself, its values unchecked.
   */
  obj(value: unknown, sub: Path, allowed: readonly string[] | null, opts?: CheckOptions<Record<string, unknown>>): Record<string, unknown> | undefined;
  /** A list (its items unchecked: check each at `[...sub, i]`). Not a list: SY_ERR_CONFIG_TYPE. */
  list(value: unknown, sub: Path, opts?: ListOptions): unknown[] | undefined;
}

/**
 * What a filter type's `validate(raw, ctx)` is given: where the entry is, what the
 * listener routes to, the typed checks, and ways to report. Paths (`sub`) are
 * below the entry's, e.g. `['rules', 0, 'header']` under `listeners.cart.filters[1]`.
 */
export interface FilterValidateContext extends ValueChecks {
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

/**
 * The typed checks every part of validation is written with: the core config's
 * schemas (schema/) and, through their validate context, filter types, built-in
 * or plugin. One implementation, so the same mistake reads and is located the
 * same way wherever it is made.
 */
import type { ConfigCode, ConfigIssue } from '../errors.js';
import { formatPath, type LocateQuery, type Path, type SourceOf } from './load.js';
import { isToken } from '../http/token.js';
import { NAME_RE, parseDuration } from './parse.js';
import type { CheckOptions, ListOptions, RangeOptions, ValueChecks } from './plugin_api.js';
import { table } from '../table.js';

type Obj = Record<string, unknown>;
/** A mapping: an object that is not a list (nor null). */
export const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The options of a check whose value must be there: missing, it is SY_ERR_CONFIG_REQUIRED "is required". */
export const REQUIRED = { required: true } as const;

/** The issues of one validation, in the order found, each with the path to locate it by (at the end, in one batch). */
export class Issues {
  readonly found: { issue: ConfigIssue; query: LocateQuery }[] = [];

  /** Reports an issue at `path`; `atKey` locates it at the key rather than at its value. */
  report(code: ConfigCode, path: Path, message: string, atKey = false): void {
    this.found.push({ issue: { code, path: formatPath(path), message }, query: { path, atKey } });
  }
}

/**
 * The typed checks (ValueChecks), at the paths below `prefix`: the root for the
 * core config, a filter entry for a filter's context. Each reports what is wrong
 * with the value and returns the checked value; a missing value (undefined) gives
 * `default` unless `required`; a wrong one is reported and gives `default`.
 */
export class Checks implements ValueChecks {
  protected readonly issues: Issues;
  readonly #prefix: Path;

  constructor(issues: Issues, prefix: Path = []) {
    this.issues = issues;
    this.#prefix = prefix;
  }

  /** The full path of `sub`: built only to report, so a value that passes costs no array. */
  #path(sub: Path): Path {
    return this.#prefix.length === 0 ? sub : [...this.#prefix, ...sub];
  }

  #missing<T>(sub: Path, opts: CheckOptions<T> | undefined): T | undefined {
    if (opts?.required) this.issues.report(opts.code ?? 'SY_ERR_CONFIG_REQUIRED', this.#path(sub), opts.message ?? 'is required');
    return opts?.default;
  }

  #wrong<T>(sub: Path, opts: CheckOptions<T> | undefined, code: ConfigCode, message: string): T | undefined {
    this.issues.report(opts?.code ?? code, this.#path(sub), opts?.message ?? message);
    return opts?.default;
  }

  /** A string. */
  str(value: unknown, sub: Path, opts: CheckOptions<string> & { default: string }): string;
  str(value: unknown, sub: Path, opts?: CheckOptions<string>): string | undefined;
  str(value: unknown, sub: Path, opts?: CheckOptions<string>): string | undefined {
    if (typeof value === 'string') return value;
    if (value === undefined) return this.#missing(sub, opts);
    return this.#wrong(sub, opts, 'SY_ERR_CONFIG_TYPE', `must be a string, got ${describe(value)}`);
  }

  /** An integer from `min` to `max`. */
  int(value: unknown, sub: Path, opts: RangeOptions<number> & { default: number }): number;
  int(value: unknown, sub: Path, opts: RangeOptions<number>): number | undefined;
  int(value: unknown, sub: Path, opts: RangeOptions<number>): number | undefined {
    if (typeof value === 'number' && Number.isInteger(value) && value >= opts.min && value <= opts.max) return value;
    if (value === undefined) return this.#missing(sub, opts);
    return this.#wrong(sub, opts, typeof value === 'number' ? 'SY_ERR_CONFIG_VALUE' : 'SY_ERR_CONFIG_TYPE',
      `must be an integer from ${opts.min} to ${opts.max}, got ${describe(value)}`);
  }

  /** A finite number from `min` to `max`. */
  number(value: unknown, sub: Path, opts: RangeOptions<number> & { default: number }): number;
  number(value: unknown, sub: Path, opts: RangeOptions<number>): number | undefined;
  number(value: unknown, sub: Path, opts: RangeOptions<number>): number | undefined {
    if (typeof value === 'number' && Number.isFinite(value) && value >= opts.min && value <= opts.max) return value;
    if (value === undefined) return this.#missing(sub, opts);
    return this.#wrong(sub, opts, typeof value === 'number' ? 'SY_ERR_CONFIG_VALUE' : 'SY_ERR_CONFIG_TYPE',
      `must be a number from ${opts.min} to ${opts.max}, got ${describe(value)}`);
  }

  /** `true` or `false`. */
  bool(value: unknown, sub: Path, opts: CheckOptions<boolean> & { default: boolean }): boolean;
  bool(value: unknown, sub: Path, opts?: CheckOptions<boolean>): boolean | undefined;
  bool(value: unknown, sub: Path, opts?: CheckOptions<boolean>): boolean | undefined {
    if (typeof value === 'boolean') return value;
    if (value === undefined) return this.#missing(sub, opts);
    return this.#wrong(sub, opts, 'SY_ERR_CONFIG_TYPE', `must be true or false, got ${describe(value)}`);
  }

  /** A duration string, in milliseconds. */
  duration(value: unknown, sub: Path, opts: CheckOptions<number> & { default: number }): number;
  duration(value: unknown, sub: Path, opts?: CheckOptions<number>): number | undefined;
  duration(value: unknown, sub: Path, opts?: CheckOptions<number>): number | undefined {
    if (value === undefined) return this.#missing(sub, opts);
    if (typeof value !== 'string') {
      return this.#wrong(sub, opts, 'SY_ERR_CONFIG_TYPE', `must be a duration such as 250ms, 30s or 5m, got ${describe(value)}`);
    }
    const ms = parseDuration(value);
    if (ms === undefined) return this.#wrong(sub, opts, 'SY_ERR_CONFIG_VALUE', `"${value}" is not a duration (use 250ms, 30s, 5m, 1h; at most 596h)`);
    return ms;
  }

  /** An HTTP field name (an RFC 9110 token), as written. A wrong one is a value error whatever its type: it names a header. */
  headerName(value: unknown, sub: Path, opts?: CheckOptions<string>): string | undefined {
    if (typeof value === 'string' && isToken(value)) return value;
    if (value === undefined) return this.#missing(sub, opts);
    return this.#wrong(sub, opts, 'SY_ERR_CONFIG_VALUE', `must be a header name (an RFC 9110 token), got ${describe(value)}`);
  }

  /** One of `choices`. */
  oneOf<T extends string>(value: unknown, sub: Path, choices: readonly T[], opts: CheckOptions<T> & { default: T }): T;
  oneOf<T extends string>(value: unknown, sub: Path, choices: readonly T[], opts?: CheckOptions<T>): T | undefined;
  oneOf<T extends string>(value: unknown, sub: Path, choices: readonly T[], opts?: CheckOptions<T>): T | undefined {
    if (choices.includes(value as T)) return value as T;
    if (value === undefined) return this.#missing(sub, opts);
    const list = choices.length > 1 ? `${choices.slice(0, -1).join(', ')} or ${choices[choices.length - 1]}` : String(choices[0]);
    return this.#wrong(sub, opts, 'SY_ERR_CONFIG_VALUE', `must be ${list}, got ${JSON.stringify(value)}`);
  }

  /** A mapping; keys not in `allowed` are reported at the key (`null`: any key). */
  obj(value: unknown, sub: Path, allowed: readonly string[] | null, opts?: CheckOptions<Obj>): Obj | undefined {
    if (value === undefined) return this.#missing(sub, opts);
    if (!isObj(value)) return this.#wrong(sub, opts, 'SY_ERR_CONFIG_TYPE', `must be a mapping, got ${describe(value)}`);
    if (allowed) {
      for (const k of Object.keys(value)) {
        if (!allowed.includes(k)) {
          this.issues.report('SY_ERR_CONFIG_UNKNOWN_KEY', [...this.#path(sub), k], unknownKeyMessage(k, allowed), true);
        }
      }
    }
    return value;
  }

  /** A list, its items unchecked; `nonEmpty` refuses `[]`. */
  list(value: unknown, sub: Path, opts?: ListOptions): unknown[] | undefined {
    if (value === undefined) return this.#missing(sub, opts);
    if (!Array.isArray(value) || (opts?.nonEmpty && value.length === 0)) {
      return this.#wrong(sub, opts, 'SY_ERR_CONFIG_TYPE',
        `must be a ${opts?.nonEmpty ? 'non-empty ' : ''}list, got ${Array.isArray(value) ? 'an empty list' : describe(value)}`);
    }
    return value;
  }
}

/** The checks the core schemas use: the typed checks at the root, plus the shapes only the core config has. */
export class Checker extends Checks {
  /** Public here (the validator's own), protected in Checks (a filter's context is one). */
  declare readonly issues: Issues;
  readonly #sourceOf: SourceOf;

  constructor(sourceOf: SourceOf) {
    super(new Issues());
    this.#sourceOf = sourceOf;
  }

  report(code: ConfigCode, path: Path, message: string, atKey = false): void {
    this.issues.report(code, path, message, atKey);
  }

  /** An optional mapping of named entries; names must match NAME_RE. */
  named(value: unknown, path: Path): [string, unknown][] {
    const o = this.obj(value, path, null);
    if (!o) return [];
    const out: [string, unknown][] = [];
    for (const [k, x] of Object.entries(o)) {
      if (!NAME_RE.test(k)) this.report('SY_ERR_CONFIG_NAME', [...path, k], `name "${k}" must match [A-Za-z0-9_-]+`, true);
      // Matches the pattern, but as a key of the plain objects built from the config it
      // would set their prototype instead of adding an entry.
      else if (k === '__proto__') this.report('SY_ERR_CONFIG_NAME', [...path, k], 'the name "__proto__" is reserved', true);
      else out.push([k, x]);
    }
    return out;
  }

  /**
   * A string → string map. Integers and booleans are taken as their text when that
   * text is what the file says; anything else is refused: YAML reads `2.0`, `042`,
   * `0x1F` or `True` as a number or boolean whose text ("2", "42", "31", "true") is
   * not what was written, so the hint quotes the text as written.
   */
  stringMap(value: unknown, path: Path): Record<string, string> {
    const out = table<string>();
    const o = this.obj(value, path, null);
    if (!o) return out;
    for (const [k, x] of Object.entries(o)) {
      if (typeof x === 'string') {
        out[k] = x;
        continue;
      }
      const written = this.#sourceOf([...path, k]);
      const text = (typeof x === 'number' && Number.isSafeInteger(x)) || typeof x === 'boolean' ? String(x) : undefined;
      if (text !== undefined && (written === undefined || written === text)) out[k] = text;
      else {
        const hint = typeof x === 'number' || typeof x === 'boolean'
          ? ` (quote it: "${written ?? String(x)}"; unquoted, YAML reads it as ${typeof x === 'number' ? 'the number' : 'the boolean'} ${String(x)})`
          : '';
        this.report('SY_ERR_CONFIG_TYPE', [...path, k], `must be a string, got ${describe(x)}${hint}`);
      }
    }
    return out;
  }
}

/** A value as messages name it: `a list`, `a mapping`, `null`, `string "x"`, `number 5`. */
export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${JSON.stringify(v)}`;
}

/** The message for an unknown key, with a "did you mean" hint when one allowed key is close. */
export function unknownKeyMessage(key: string, allowed: readonly string[]): string {
  const hint = closest(key, allowed);
  return `unknown key "${key}"${hint ? ` (did you mean "${hint}"?)` : ''}; allowed: ${allowed.join(', ')}`;
}

/** The allowed key nearest to a typo (edit distance ≤ 2), for the hint. */
function closest(k: string, allowed: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = 3;
  for (const a of allowed) {
    const d = editDistance(k.toLowerCase(), a.toLowerCase());
    if (d < bestD) { bestD = d; best = a; }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length]!;
}

/** `${VAR}` expansion: in one string, and in every string of a config. */
import type { ConfigCode } from '../errors.js';
import { setOwn, type Path } from './load.js';
import type { Slicer } from './slicer.js';

/**
 * Expands `${VAR}` and `${VAR:-default}` in one string (`$${` is a literal `${`);
 * `unset` is called for each variable that is unset and has no default.
 */
export function expandEnv(s: string, env: NodeJS.ProcessEnv, unset: (name: string) => void = () => {}): string {
  if (!s.includes('${')) return s;
  return s.replace(/\$?\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g, (m, name: string, def?: string) => {
    if (m.startsWith('$$')) return m.slice(1);
    const got = env[name];
    if (got !== undefined && got !== '') return got;
    if (def !== undefined) return def;
    unset(name);
    return '';
  });
}

type Obj = Record<string, unknown>;

/**
 * The config with `${VAR}` and `${VAR:-default}` expanded in string values; `$${`
 * is a literal `${`. An unset variable is reported (SY_ERR_CONFIG_ENV) at the
 * string's path. Copy on write: a mapping or list is copied only when a string
 * below it changes, so a big config without variables is walked, not copied (a
 * copy of 40,000 roles was hundreds of thousands of new objects). Iterative and
 * sliced. A value that contains itself (an object handed in by embedding code;
 * YAML's recursive aliases are refused when parsed) is reported and left out
 * instead of walked for ever. The result shares what did not change with
 * `value`: nothing in validation changes the config it reads.
 */
export async function substituteEnv(value: unknown, env: NodeJS.ProcessEnv,
  report: (code: ConfigCode, path: Path, message: string) => void, slicer: Slicer): Promise<unknown> {
  const path: (string | number)[] = [];
  /** The mappings and lists being walked, innermost last; `within` has them. */
  const stack: { src: Obj | unknown[]; keys: string[] | null; i: number; changed: Map<string | number, unknown> | null }[] = [];
  const within = new Set<object>();
  /** A scalar's new value, or `value` itself for a container (which is then walked). */
  const visit = (x: unknown): unknown => {
    if (typeof x === 'string') {
      return x.includes('${') ? expandEnv(x, env, (name) => report('SY_ERR_CONFIG_ENV', [...path], `environment variable ${name} is not set`)) : x;
    }
    if (typeof x !== 'object' || x === null) return x;
    if (within.has(x)) {
      report('SY_ERR_CONFIG_VALUE', [...path], 'contains itself (a cycle)');
      return undefined;
    }
    within.add(x);
    stack.push({ src: x as Obj | unknown[], keys: Array.isArray(x) ? null : Object.keys(x), i: 0, changed: null });
    return x;
  };
  /** The walked container: itself, or a copy with what changed below it. */
  const finish = (f: (typeof stack)[number]): unknown => {
    if (f.changed === null) return f.src;
    if (f.keys === null) {
      const out = (f.src as unknown[]).slice();
      for (const [i, x] of f.changed) out[i as number] = x;
      return out;
    }
    const out: Obj = {};
    for (const k of f.keys) setOwn(out, k, f.changed.has(k) ? f.changed.get(k) : (f.src as Obj)[k]);
    return out;
  };
  let top = visit(value);
  while (stack.length) {
    if (slicer.due) await slicer.yield();
    const f = stack[stack.length - 1]!;
    const n = f.keys ? f.keys.length : (f.src as unknown[]).length;
    if (f.i >= n) {
      stack.pop();
      within.delete(f.src);
      const out = finish(f);
      const parent = stack[stack.length - 1];
      if (parent) {
        const k = path.pop()!; // the key this one sat under
        if (out !== f.src) (parent.changed ??= new Map()).set(k, out);
      } else top = out;
      continue;
    }
    const k = f.keys ? f.keys[f.i]! : f.i;
    f.i++;
    path.push(k);
    const depth = stack.length;
    const x = (f.src as Record<string | number, unknown>)[k];
    const y = visit(x);
    if (stack.length > depth) continue; // a container: its key stays on the path until it is finished
    if (y !== x) (f.changed ??= new Map()).set(k, y);
    path.pop();
  }
  return top;
}

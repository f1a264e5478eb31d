/**
 * `listeners.<name>.filters`: each entry's type is looked up in the registry and
 * checked against the listener's protocol, then the type validates the rest of
 * the entry itself through its FilterValidateContext: the same typed checks as
 * the core config's, reporting into the same issues at paths below the entry.
 */
import type { ConfigCode } from '../../errors.js';
import { Checks, REQUIRED, type Checker, type Issues } from '../checker.js';
import type { Path } from '../load.js';
import type { FilterValidateContext, TypeLookup } from '../plugin_api.js';
import type { ComponentConfig, FilterConfig, Protocol, VsetConfig } from '../types.js';

/** The listener a filter list belongs to, and what its filters may name. */
export interface FilterScope {
  listener: string;
  protocol: Protocol;
  vset: VsetConfig;
  components: Record<string, ComponentConfig>;
  types: TypeLookup;
}

/** A listener's filter list: the normalized config of each entry that validated without an issue. */
export function checkFilters(c: Checker, value: unknown, path: Path, scope: FilterScope): FilterConfig[] {
  const list = c.list(value, path, { message: 'must be a list of filters' });
  if (!list) return [];
  const roles = Object.keys(scope.vset.roles);
  const out: FilterConfig[] = [];
  // reload/rollouts.ts ramps one role per listener: a second rollout would be ignored.
  let rollout: number | null = null;
  list.forEach((raw, i) => {
    const fp = [...path, i];
    const o = c.obj(raw, fp, null, REQUIRED);
    if (!o) return;
    const type = c.str(o.type, [...fp, 'type'], REQUIRED);
    if (type === undefined) return;
    if (type === 'weighted' && o.rollout !== undefined) {
      if (rollout !== null) c.report('SY_ERR_CONFIG_VALUE', [...fp, 'rollout'], `a listener has one rollout; filters[${rollout}] has it already`);
      else rollout = i;
    }
    const d = scope.types.filter(type);
    if (!d) {
      c.report('SY_ERR_UNKNOWN_FILTER', [...fp, 'type'], `unknown filter type "${type}"; registered: ${scope.types.filterTypes().join(', ')}`);
      return;
    }
    if (d.scope !== 'both' && d.scope !== scope.protocol) {
      c.report('SY_ERR_FILTER_SCOPE', [...fp, 'type'], `filter ${type} works on ${d.scope} listeners only; this listener is ${scope.protocol}`);
      return;
    }
    const before = c.issues.found.length;
    let config: unknown;
    try {
      config = d.validate(o, new FilterContext(c.issues, fp, type, roles, scope));
    } catch (err) {
      c.report('SY_ERR_CONFIG_VALUE', fp, `filter ${type} failed to validate its config: ${(err as Error).message}`);
      return;
    }
    if (c.issues.found.length === before) out.push({ type, config });
  });
  return out;
}

/**
 * A filter entry's validate context: the typed checks at the entry's path, and
 * what the entry may refer to. One per entry, reporting into the config's issues.
 */
class FilterContext extends Checks implements FilterValidateContext {
  readonly path: Path;
  readonly listener: string;
  readonly protocol: Protocol;
  readonly roles: readonly string[];
  readonly #type: string;
  readonly #scope: FilterScope;

  constructor(issues: Issues, path: Path, type: string, roles: readonly string[], scope: FilterScope) {
    super(issues, path);
    this.path = path;
    this.listener = scope.listener;
    this.protocol = scope.protocol;
    this.roles = roles;
    this.#type = type;
    this.#scope = scope;
  }

  roleMeta(role: string): Readonly<Record<string, string>> | undefined {
    return this.#scope.vset.roles[role]?.meta;
  }

  report(code: ConfigCode, sub: Path, message: string): void {
    this.issues.report(code, [...this.path, ...sub], message, code === 'SY_ERR_CONFIG_UNKNOWN_KEY');
  }

  allowKeys(raw: Record<string, unknown>, allowed: readonly string[]): void {
    this.obj(raw, [], ['type', ...allowed]);
  }

  component(name: unknown, sub: Path, types: readonly string[]): string | undefined {
    if (typeof name !== 'string') {
      this.report(name === undefined ? 'SY_ERR_CONFIG_REQUIRED' : 'SY_ERR_CONFIG_TYPE', sub, `must name a component (${types.join(' or ')})`);
      return undefined;
    }
    const comp = this.#scope.components[name];
    if (!comp) {
      this.report('SY_ERR_UNKNOWN_COMPONENT', sub, `no component named "${name}" under components`);
      return undefined;
    }
    if (!types.includes(comp.type)) {
      this.report('SY_ERR_COMPONENT_TYPE_MISMATCH', sub, `component ${name} is of type ${comp.type}; filter ${this.#type} takes ${types.join(' or ')}`);
      return undefined;
    }
    return name;
  }
}

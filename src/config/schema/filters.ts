/**
 * `listeners.<name>.filters`: each entry's type is looked up in the registry and
 * checked against the listener's protocol, then the type validates the rest of
 * the entry itself through its FilterValidateContext, which reports into the same
 * issue list at paths below the entry.
 */
import { REQUIRED, type Checker } from '../checker.js';
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

/** The normalized config of each entry that validated without an issue. */
export function checkFilters(c: Checker, value: unknown, path: Path, scope: FilterScope): FilterConfig[] {
  const list = c.list(value, path, { message: 'must be a list of filters' });
  if (!list) return [];
  const roles = Object.keys(scope.vset.roles);
  const out: FilterConfig[] = [];
  list.forEach((raw, i) => {
    const fp = [...path, i];
    const o = c.obj(raw, fp, null, REQUIRED);
    if (!o) return;
    const type = c.str(o.type, [...fp, 'type'], REQUIRED);
    if (type === undefined) return;
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
      config = d.validate(o, filterContext(c, fp, type, roles, scope));
    } catch (err) {
      c.report('SY_ERR_CONFIG_VALUE', fp, `filter ${type} failed to validate its config: ${(err as Error).message}`);
      return;
    }
    if (c.issues.found.length === before) out.push({ type, config });
  });
  return out;
}

function filterContext(c: Checker, fp: Path, type: string, roles: readonly string[], scope: FilterScope): FilterValidateContext {
  const { vset, components } = scope;
  return {
    path: fp,
    listener: scope.listener,
    protocol: scope.protocol,
    roles,
    roleMeta: (r) => vset.roles[r]?.meta,
    report: (code, sub, message) => c.report(code, [...fp, ...sub], message, code === 'SY_ERR_CONFIG_UNKNOWN_KEY'),
    allowKeys: (r, allowed) => { c.obj(r, fp, ['type', ...allowed]); },
    component: (name, sub, types) => {
      if (typeof name !== 'string') {
        c.report(name === undefined ? 'SY_ERR_CONFIG_REQUIRED' : 'SY_ERR_CONFIG_TYPE', [...fp, ...sub], `must name a component (${types.join(' or ')})`);
        return undefined;
      }
      const comp = components[name];
      if (!comp) {
        c.report('SY_ERR_UNKNOWN_COMPONENT', [...fp, ...sub], `no component named "${name}" under components`);
        return undefined;
      }
      if (!types.includes(comp.type)) {
        c.report('SY_ERR_COMPONENT_TYPE_MISMATCH', [...fp, ...sub], `component ${name} is of type ${comp.type}; filter ${type} takes ${types.join(' or ')}`);
        return undefined;
      }
      return name;
    },
  };
}

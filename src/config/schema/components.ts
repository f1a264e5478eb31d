/** `components.<name>`: a type, its string metadata (checked by the type's own validate), and readyTimeout. */
import { REQUIRED, type Checker } from '../checker.js';
import { DEFAULT_READY_TIMEOUT_MS } from '../defaults.js';
import type { TypeLookup } from '../plugin_api.js';
import type { Slicer } from '../slicer.js';
import { table } from '../../table.js';
import type { ComponentConfig } from '../types.js';

/** Every component, each checked by its type's validate (looked up in `types`); unknown types are reported. */
export async function checkComponents(c: Checker, value: unknown, types: TypeLookup, slicer: Slicer): Promise<Record<string, ComponentConfig>> {
  const out = table<ComponentConfig>();
  for (const [name, raw] of c.named(value, ['components'])) {
    if (slicer.due) await slicer.yield();
    const path = ['components', name];
    const o = c.obj(raw, path, ['type', 'metadata', 'readyTimeout'], REQUIRED);
    if (!o) continue;
    const type = c.str(o.type, [...path, 'type'], REQUIRED);
    const metadata = c.stringMap(o.metadata, [...path, 'metadata']);
    let readyTimeoutMs: number | undefined;
    if (o.readyTimeout !== undefined) {
      readyTimeoutMs = c.duration(o.readyTimeout, [...path, 'readyTimeout'], { default: DEFAULT_READY_TIMEOUT_MS });
      if (readyTimeoutMs === 0) c.report('SY_ERR_CONFIG_VALUE', [...path, 'readyTimeout'], 'must be more than 0');
    }
    if (type === undefined) continue;
    const d = types.component(type);
    if (!d) {
      const known = types.componentTypes();
      c.report('SY_ERR_UNKNOWN_COMPONENT_TYPE', [...path, 'type'], `unknown component type "${type}"; registered: ${known.length ? known.join(', ') : 'none'}`);
      continue;
    }
    try {
      d.validate(metadata, {
        report: (code, key, message) => c.report(code, key ? [...path, 'metadata', key] : [...path, 'metadata'], message, !!key),
      });
    } catch (err) {
      c.report('SY_ERR_CONFIG_VALUE', [...path, 'metadata'], `component type ${type} failed to validate its metadata: ${(err as Error)?.message ?? String(err)}`);
      continue;
    }
    out[name] = readyTimeoutMs === undefined ? { type, metadata } : { type, metadata, readyTimeoutMs };
  }
  return out;
}

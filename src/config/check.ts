import type { ConfigIssue } from '../errors.js';
import { builtinRegistry } from '../builtins.js';
import { loadPlugins } from '../filters/plugins.js';
import type { Registry } from '../registry.js';
import type { RawConfig } from './load.js';
import type { Config } from './types.js';
import { expandEnv, validateConfig } from './validate.js';

export type CheckResult = { ok: true; config: Config; registry: Registry } | { ok: false; issues: ConfigIssue[] };

/**
 * Source → checked config: YAML errors first, then plugins loaded into a fresh
 * registry of the built-ins, then the whole validation. Every issue at once.
 */
export async function checkConfig(raw: RawConfig, env: NodeJS.ProcessEnv = process.env): Promise<CheckResult> {
  if (raw.issues.length) return { ok: false, issues: raw.issues };
  const registry = builtinRegistry();
  const plugins = (raw.value as { plugins?: unknown } | undefined)?.plugins;
  // Fix: plugin paths are loaded before validation, and so were loaded without the
  // ${VAR} expansion every other string gets (an unset VAR is reported by validation).
  // A path with an unset VAR is not loaded (null is skipped by loadPlugins).
  const pluginPaths = Array.isArray(plugins) ? plugins.map((p) => {
    if (typeof p !== 'string') return p;
    let unset = false;
    const s = expandEnv(p, env, () => { unset = true; });
    return unset ? null : s;
  }) : [];
  const pluginIssues = pluginPaths.length ? await loadPlugins(pluginPaths, raw.baseDir, registry) : [];
  for (const i of pluginIssues) Object.assign(i, raw.locate(['plugins', Number(/\d+/.exec(i.path)![0])]) ?? {});
  const v = validateConfig(raw.value, registry, raw.locate, env, raw.sourceOf);
  if (!v.ok || pluginIssues.length) return { ok: false, issues: [...pluginIssues, ...(v.ok ? [] : v.issues)] };
  return { ok: true, config: v.config, registry };
}

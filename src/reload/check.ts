import type { ConfigIssue } from '../errors.js';
import { builtinRegistry } from '../builtins.js';
import { loadPlugins } from '../filters/plugins.js';
import type { Registry } from '../registry.js';
import type { RawConfig } from '../config/load.js';
import type { Config } from '../config/types.js';
import { expandEnv } from '../config/env.js';
import { validateConfig } from '../config/validate.js';
import { formatPath } from '../config/load.js';
import { loadTlsMaterial } from '../net/tls_material.js';

export type CheckResult = { ok: true; config: Config; registry: Registry } | { ok: false; issues: ConfigIssue[] };

/**
 * Source → checked config: YAML errors first, then plugins loaded into a fresh
 * registry of the built-ins, then the whole validation, then the TLS files it
 * names, read and checked. Every issue at once.
 */
export async function checkConfig(raw: RawConfig, env: NodeJS.ProcessEnv = process.env, opts: { bootstrap?: boolean } = {}): Promise<CheckResult> {
  if (raw.issues.length) return { ok: false, issues: raw.issues };
  const registry = builtinRegistry();
  const plugins = (raw.value as { plugins?: unknown } | undefined)?.plugins;
  // Plugin paths are loaded before validation, so they are expanded here, as every
  // other string is there (which reports an unset VAR). A path with an unset VAR is
  // not loaded (null is skipped by loadPlugins).
  const pluginPaths = Array.isArray(plugins) ? plugins.map((p) => {
    if (typeof p !== 'string') return p;
    let unset = false;
    const s = expandEnv(p, env, () => { unset = true; });
    return unset ? null : s;
  }) : [];
  const pluginIssues = pluginPaths.length ? await loadPlugins(pluginPaths, raw.baseDir, registry) : [];
  const v = await validateConfig(raw.value, registry, {
    locate: raw.locate, sourceOf: raw.sourceOf, env, bootstrap: opts.bootstrap,
    before: pluginIssues.map((issue) => ({ issue, path: ['plugins', Number(/\d+/.exec(issue.path)![0])] })),
  });
  if (!v.ok) return { ok: false, issues: v.issues };
  const tls = await loadTlsMaterial(v.config, raw.baseDir);
  if (tls.length > 0) {
    const at = await raw.locate(tls.map((i) => ({ path: i.path })));
    return { ok: false, issues: tls.map((i, n) => ({ code: 'SY_ERR_TLS_FILE' as const, path: formatPath(i.path), message: i.message, ...(at[n] ?? {}) })) };
  }
  return { ok: true, config: v.config, registry };
}

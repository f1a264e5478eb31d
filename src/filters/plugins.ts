import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { ConfigIssue } from '../errors.js';
import { DuplicateTypeError, type Registry } from '../registry.js';

/**
 * What a plugin module exports: `register(registry)` (named or default), which
 * calls `registry.registerFilter(...)` / `registry.registerComponent(...)` exactly
 * as the built-ins do.
 */
export interface PluginModule {
  register?: (registry: Registry) => void | Promise<void>;
  default?: ((registry: Registry) => void | Promise<void>) | { register?: (registry: Registry) => void | Promise<void> };
}

/** Loads each plugin (relative paths from `baseDir`) into `registry`; every failure is an issue at `plugins[i]`. */
export async function loadPlugins(paths: readonly unknown[], baseDir: string, registry: Registry): Promise<ConfigIssue[]> {
  const issues: ConfigIssue[] = [];
  for (let i = 0; i < paths.length; i++) {
    const p = paths[i];
    if (typeof p !== 'string') continue; // the validator reports the type
    const spec = p.startsWith('.') || isAbsolute(p) ? pathToFileURL(resolve(baseDir, p)).href : p;
    try {
      const mod = (await import(spec)) as PluginModule;
      const register = mod.register ?? (typeof mod.default === 'function' ? mod.default : mod.default?.register);
      if (typeof register !== 'function') throw new Error('the module exports no register(registry) function');
      // Awaited: an async register() registers after its first await, and its
      // rejection must become this issue, not an unhandled rejection.
      await register(registry);
    } catch (err) {
      const code = err instanceof DuplicateTypeError ? err.code : 'SY_ERR_PLUGIN_LOAD';
      issues.push({ code, path: `plugins[${i}]`, message: `plugin ${p}: ${(err as Error).message}` });
    }
  }
  return issues;
}

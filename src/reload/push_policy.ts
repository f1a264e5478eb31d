import { isAbsolute, resolve } from 'node:path';
import { formatPath, type Path, type RawConfig } from '../config/load.js';
import { expandEnv } from '../config/env.js';
import type { ConfigIssue } from '../errors.js';

/**
 * What a config pushed through the admin API may change that a config file may not
 * need to: loading a plugin module runs its code, and an access log path appends to
 * any file the process can write. Both come from the `--config` files unless the
 * operator starts switchyard with `--allow-push plugins,accessLog`.
 */
export type PushField = 'plugins' | 'accessLog';
export const PUSH_FIELDS: readonly PushField[] = ['plugins', 'accessLog'];

/**
 * The issues of a pushed config (`raw`) against the config now serving: a plugin
 * module the running config does not load, or an access log file other than the
 * running one. Checked before anything of `raw` is loaded (a plugin runs on import).
 */
export async function pushIssues(raw: RawConfig, running: RawConfig | null, allowed: ReadonlySet<PushField>): Promise<ConfigIssue[]> {
  const found: { path: Path; message: string }[] = [];
  const report = (path: Path, message: string): void => {
    found.push({ path, message });
  };
  if (!allowed.has('plugins')) {
    const loaded = new Set(running ? pluginFiles(running).map((p) => p.file) : []);
    for (const { index, file } of pluginFiles(raw)) {
      if (!loaded.has(file)) {
        report(['plugins', index], `a pushed config may not load a plugin module the running config does not (${file}): plugins come from the --config files, unless switchyard runs with --allow-push plugins`);
      }
    }
  }
  if (!allowed.has('accessLog')) {
    const path = accessLogFile(raw);
    if (path !== undefined && path !== 'stdout' && path !== (running ? accessLogFile(running) : undefined)) {
      report(['accessLog', 'path'], `a pushed config may not point the access log at a new file (${path}): the path comes from the --config files, unless switchyard runs with --allow-push accessLog`);
    }
  }
  if (found.length === 0) return [];
  const where = await raw.locate(found.map((f) => ({ path: f.path })));
  return found.map((f, i) => ({ code: 'SY_ERR_CONFIG_PUSH_FORBIDDEN', path: formatPath(f.path), message: f.message, ...(where[i] ?? {}) }));
}

/** The plugin modules a config names, resolved as the loader resolves them (package names as given). */
function pluginFiles(raw: RawConfig): { index: number; file: string }[] {
  const list = (raw.value as { plugins?: unknown } | undefined)?.plugins;
  if (!Array.isArray(list)) return [];
  const out: { index: number; file: string }[] = [];
  list.forEach((p, index) => {
    if (typeof p !== 'string') return;
    const s = expandEnv(p, process.env, () => {});
    out.push({ index, file: s.startsWith('.') || isAbsolute(s) ? resolve(raw.baseDir, s) : s });
  });
  return out;
}

function accessLogFile(raw: RawConfig): string | undefined {
  const path = (raw.value as { accessLog?: { path?: unknown } } | undefined)?.accessLog?.path;
  if (typeof path !== 'string') return undefined;
  const s = expandEnv(path, process.env, () => {});
  return s === 'stdout' ? s : resolve(raw.baseDir, s);
}

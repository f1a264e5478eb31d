/**
 * The entry point of config validation: `${VAR}` expansion, then every section's
 * schema (schema/), written with the checks of checker.ts, each defaulted from
 * defaults.ts. Sections come in dependency order: roles before the vsets made of
 * them, both (and components, and the admin address) before the listeners that
 * name them.
 */
import type { ConfigIssue } from '../errors.js';
import { Checker } from './checker.js';
import { DEFAULT_DRAIN_MS } from './defaults.js';
import { substituteEnv } from './env.js';
import type { Locator, Path, SourceOf } from './load.js';
import type { TypeLookup } from './plugin_api.js';
import { checkComponents } from './schema/components.js';
import { checkListeners } from './schema/listeners.js';
import { checkRoles, checkVsets } from './schema/roles_vsets.js';
import { checkAccessLog, checkAdmin, checkAutoRollback, checkLimits, checkPlugins, checkSource, checkTracing } from './schema/sidecar.js';
import { Slicer } from './slicer.js';
import type { Config } from './types.js';

/** The normalized config, or every issue found (located when `locate` was given). */
export type ValidateResult = { ok: true; config: Config } | { ok: false; issues: ConfigIssue[] };

/** Where the config came from and how to pace the work; all optional. */
export interface ValidateOptions {
  /** Where paths are in the text (asked once, with every issue's path, after validation). */
  locate?: Locator;
  /** How numbers and booleans were written where that differs from how they read. */
  sourceOf?: SourceOf;
  env?: NodeJS.ProcessEnv;
  /** Issues found before (plugins that did not load), listed first and located with the rest. */
  before?: readonly { issue: ConfigIssue; path: Path }[];
  /** Yields to the event loop between slices of the work (default: a new Slicer). */
  slicer?: Slicer;
  /** The config is a bootstrap (the --config files at start, `switchyard validate`): it may name a `source`. */
  bootstrap?: boolean;
}

const TOP_KEYS = ['version', 'admin', 'drainTimeout', 'roles', 'vsets', 'components', 'plugins', 'listeners', 'accessLog', 'limits', 'source', 'tracing', 'autoRollback'];

/**
 * Validates a whole config and normalizes it. Every issue is collected (not just the
 * first); any issue rejects the config. Filter and component types (plugins too) must
 * already be in `types` (a Registry). The work yields to the event loop every few
 * milliseconds (a config of 40,000 roles takes hundreds), and issues are located in
 * one batch at the end.
 */
export async function validateConfig(value: unknown, types: TypeLookup, opts: ValidateOptions = {}): Promise<ValidateResult> {
  const slicer = opts.slicer ?? new Slicer();
  const c = new Checker(opts.sourceOf ?? (() => undefined));
  const found = c.issues.found;
  for (const b of opts.before ?? []) found.push({ issue: b.issue, query: { path: b.path } });
  const root = await substituteEnv(value ?? {}, opts.env ?? process.env, (code, path, message) => c.report(code, path, message), slicer);
  const config = await checkRoot(c, root, types, slicer, opts.bootstrap === true, opts.env ?? process.env);
  if (found.length === 0) return { ok: true, config };
  const locations = opts.locate ? await opts.locate(found.map((f) => f.query)) : [];
  return { ok: false, issues: found.map((f, i) => ({ ...f.issue, ...(locations[i] ?? {}) })) };
}

async function checkRoot(c: Checker, value: unknown, types: TypeLookup, slicer: Slicer, bootstrap: boolean, env: NodeJS.ProcessEnv): Promise<Config> {
  const root = c.obj(value, [], TOP_KEYS) ?? {};
  if (root.version !== undefined && root.version !== 1) {
    c.report('SY_ERR_CONFIG_VALUE', ['version'], `unsupported config version ${JSON.stringify(root.version)}; this switchyard reads version 1`);
  }
  const roles = await checkRoles(c, root.roles, slicer);
  const vsets = await checkVsets(c, root.vsets, roles, slicer);
  const components = await checkComponents(c, root.components, types, slicer);
  const plugins = checkPlugins(c, root.plugins);
  const admin = checkAdmin(c, root.admin);
  const listeners = await checkListeners(c, root.listeners, { vsets, components, admin, types }, slicer);
  const drainTimeoutMs = c.duration(root.drainTimeout, ['drainTimeout'], { default: DEFAULT_DRAIN_MS });
  const accessLog = checkAccessLog(c, root.accessLog);
  const limits = checkLimits(c, root.limits);
  const source = checkSource(c, root.source, bootstrap, env);
  const tracing = checkTracing(c, root.tracing);
  const autoRollback = checkAutoRollback(c, root.autoRollback);
  return {
    version: 1, admin, drainTimeoutMs, roles, vsets, components, plugins, listeners, ...(accessLog ? { accessLog } : {}), limits, ...(source ? { source } : {}),
    ...(tracing ? { tracing } : {}), ...(autoRollback ? { autoRollback } : {}),
  };
}

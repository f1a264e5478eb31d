import { resolve } from 'node:path';
import { loadConfigFiles, type RawConfig } from './config/load.js';
import { FileWatcher } from './reload/file_watch.js';
import type { Config, HostPort } from './config/types.js';
import { tlsFiles } from './net/tls_material.js';
import { ConfigError, SwitchyardError } from './errors.js';
import { AdminServer } from './admin/server.js';
import { Runtime, type ApplyResult } from './reload/runtime.js';
import type { ConfigSource } from './reload/generation.js';
import type { Metrics } from './metrics.js';
import type { PushField } from './reload/push_policy.js';
import { ratelimitStats } from './components/ratelimit.js';

export interface SidecarOptions {
  /** `--config` files, merged in order. */
  files?: string[];
  /** Or a config already loaded (tests, embedding). */
  raw?: RawConfig;
  log?: (line: string) => void;
  /** Start the admin API on `admin.address` (default true). */
  admin?: boolean;
  /** Reload when the config files change (default false; `switchyard run` turns it on). */
  watch?: boolean;
  /** A new component instance's time for init, inherit and ready together, unless its `readyTimeout` says otherwise (default 10 s); tests shorten it. */
  readyTimeoutMs?: number;
  /** The metrics to count into (default: a new set); the benchmark passes one with request counting off. */
  metrics?: Metrics;
  /** What a config pushed through the admin API may change besides what any config may (default: neither). */
  allowPush?: readonly PushField[];
  /** Called with the runtime before the first config is applied (the CLI's log asks it where the access log goes). */
  onRuntime?: (runtime: Runtime) => void;
}

/**
 * A running switchyard: the runtime (data and control path) and its admin API.
 * `switchyard run` is this plus signals; tests and the demo start it in-process.
 */
export class Sidecar {
  readonly runtime: Runtime;
  readonly files: string[];
  admin: AdminServer | null = null;
  adminAddress: HostPort | null = null;
  #watcher: FileWatcher | null = null;
  /** Watches the TLS files the current config names: a rotated certificate is applied as a reload. */
  #tlsWatcher: FileWatcher | null = null;
  #tlsWatched = '';
  #ready = false;

  private constructor(runtime: Runtime, files: string[]) {
    this.runtime = runtime;
    this.files = files;
  }

  /** Applies the first config and starts the admin API; throws ConfigError or the build error. */
  static async start(opts: SidecarOptions): Promise<Sidecar> {
    const runtime = new Runtime({ log: opts.log, readyTimeoutMs: opts.readyTimeoutMs, metrics: opts.metrics, allowPush: opts.allowPush });
    opts.onRuntime?.(runtime);
    runtime.metrics.ratelimits = () => ratelimitStats(liveSlots(runtime));
    const files = opts.files ?? [];
    const sc = new Sidecar(runtime, files);
    const watched = files.map((f) => resolve(f));
    // Taken before the files are read, so a change made during the start is not missed.
    const baseline = opts.watch && files.length ? await FileWatcher.hash(watched) : undefined;
    const raw = opts.raw ?? (await loadConfigFiles(files));
    const r = await runtime.apply(raw, 'file');
    if (!r.ok) {
      await runtime.shutdown();
      if (r.kind === 'invalid') throw new ConfigError(r.issues);
      throw r.error;
    }
    if (opts.admin !== false) {
      const config = runtime.current!.config;
      sc.admin = new AdminServer({ runtime, config: config.admin, baseDir: raw.baseDir, ready: () => sc.#ready });
      try {
        sc.adminAddress = await sc.admin.listen();
      } catch (err) {
        await runtime.shutdown();
        throw new SwitchyardError('SY_ERR_BIND', `admin API: cannot listen on ${config.admin.address.host}:${config.admin.address.port}: ${(err as Error).message}`, { cause: err });
      }
    }
    if (opts.watch && files.length) {
      sc.#watcher = new FileWatcher(watched, () => void sc.reload('file'));
      await sc.#watcher.start(baseline);
    }
    if (opts.watch) {
      runtime.onApplied = (gen) => void sc.#watchTls(gen.config, gen.raw.baseDir);
      await sc.#watchTls(runtime.current!.config, raw.baseDir);
    }
    sc.#ready = true;
    return sc;
  }

  /**
   * Watches the TLS files `config` names (directories, as the config files are: a
   * Kubernetes Secret swaps a ..data symlink); a change re-applies the current
   * config, which reads them again. The list follows each applied config.
   */
  async #watchTls(config: Config, baseDir: string): Promise<void> {
    const files = tlsFiles(config, baseDir);
    const key = files.join('\0');
    if (key === this.#tlsWatched) return;
    this.#tlsWatched = key;
    this.#tlsWatcher?.close();
    this.#tlsWatcher = null;
    if (files.length === 0) return;
    const watcher = new FileWatcher(files, () => void this.runtime.reapply('file'));
    this.#tlsWatcher = watcher;
    await watcher.start();
  }

  /** The bound address of each listener. */
  addresses(): Map<string, HostPort> {
    return this.runtime.addresses();
  }

  /** Re-reads the config files and applies them. */
  async reload(source: ConfigSource): Promise<ApplyResult> {
    return this.runtime.apply(await loadConfigFiles(this.files), source);
  }

  /** Graceful stop: /ready turns 503, listeners stop accepting, work drains, then everything closes. */
  async stop(): Promise<void> {
    this.#ready = false;
    this.#watcher?.close();
    this.#tlsWatcher?.close();
    this.runtime.onApplied = null;
    await this.runtime.shutdown();
    await this.admin?.close();
  }
}

/** The component slots of the generations still open, the current one's first. */
function* liveSlots(runtime: Runtime) {
  for (const gen of [runtime.current, ...runtime.draining]) if (gen !== null) yield* gen.components.values();
}

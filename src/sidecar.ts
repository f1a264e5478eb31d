import { resolve } from 'node:path';
import { loadConfigFiles, mergeConfigFiles, readConfigFiles, type RawConfig } from './config/load.js';
import { isObj } from './config/checker.js';
import { validateConfig } from './config/validate.js';
import { builtinRegistry } from './builtins.js';
import { EtcdSource, type Backoff } from './reload/etcd_source.js';
import { FileWatcher } from './reload/file_watch.js';
import type { Config, HostPort, SourceConfig } from './config/types.js';
import { tlsFiles } from './net/tls_material.js';
import { ConfigError, SwitchyardError } from './errors.js';
import { AdminServer } from './admin/server.js';
import type { LifecycleGrpcServer } from './admin/lifecycle_grpc.js';
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
  /** The etcd source's reconnect back-off (default 0.5 s doubling to 30 s); tests shorten it. */
  etcdBackoff?: Backoff;
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
  /** Layotto's Lifecycle API over gRPC, on `admin.grpcAddress` (null when not configured). */
  grpc: LifecycleGrpcServer | null = null;
  grpcAddress: HostPort | null = null;
  #watcher: FileWatcher | null = null;
  /** Watches the TLS files the current config names: a rotated certificate is applied as a reload. */
  #tlsWatcher: FileWatcher | null = null;
  #tlsWatched = '';
  #ready = false;
  /** The fleet config source, when the bootstrap names `source.etcd`. */
  #etcd: EtcdSource | null = null;
  /** The bootstrap's `source` as started with (a reload that changes it takes effect at the next start). */
  #source: SourceConfig | undefined;
  readonly #log: (line: string) => void;

  private constructor(runtime: Runtime, files: string[], log: (line: string) => void) {
    this.runtime = runtime;
    this.files = files;
    this.#log = log;
  }

  /** The etcd source (null without `source.etcd`). */
  get etcd(): EtcdSource | null {
    return this.#etcd;
  }

  /** Applies the first config and starts the admin API; throws ConfigError or the build error. */
  static async start(opts: SidecarOptions): Promise<Sidecar> {
    const runtime = new Runtime({ log: opts.log, readyTimeoutMs: opts.readyTimeoutMs, metrics: opts.metrics, allowPush: opts.allowPush });
    opts.onRuntime?.(runtime);
    runtime.metrics.ratelimits = () => ratelimitStats(liveSlots(runtime));
    const files = opts.files ?? [];
    const log = opts.log ?? (() => {});
    const sc = new Sidecar(runtime, files, log);
    const watched = files.map((f) => resolve(f));
    // Taken before the files are read, so a change made during the start is not missed.
    const baseline = opts.watch && files.length ? await FileWatcher.hash(watched) : undefined;
    const read = opts.raw ? null : await readConfigFiles(files);
    const raw = opts.raw ?? (await mergeConfigFiles(read!));
    let source: SourceConfig | undefined;
    try {
      source = await sourceOf(raw);
    } catch (err) {
      await runtime.shutdown();
      throw err;
    }
    sc.#source = source;
    let r: ApplyResult;
    if (source?.etcd && read) {
      const etcd = new EtcdSource({ config: source.etcd, runtime, bootstrap: read, log, backoff: opts.etcdBackoff });
      sc.#etcd = etcd;
      const first = await etcd.start();
      r = first.ok ? first.result : { ok: false, kind: 'failed', error: new SwitchyardError('SY_ERR_CONFIG_SOURCE_DOWN', `etcd (${source.etcd.endpoints.join(', ')}) did not answer: ${first.error.message}`) };
      if (!r.ok) {
        // etcd down, or its documents rejected, at start: the bootstrap alone serves
        // if it has listeners of its own (the source keeps retrying); else no start.
        const why = r.kind === 'invalid' ? `${r.issues.length} config error(s) in the etcd documents` : r.error.message;
        if (!hasListeners(raw)) {
          await etcd.close();
          await runtime.shutdown();
          if (r.kind === 'invalid') throw new ConfigError(r.issues);
          throw new SwitchyardError('SY_ERR_CONFIG_SOURCE_DOWN', `${why}, and the bootstrap has no listeners of its own: not started`, { cause: r.error });
        }
        log(`${why}: serving the bootstrap files alone until etcd gives a config that applies`);
        r = await runtime.apply(await mergeConfigFiles(read, []), 'file');
      }
    } else if (source?.etcd) {
      await runtime.shutdown();
      throw new SwitchyardError('SY_ERR_CONFIG_SOURCE_DOWN', 'source.etcd needs the bootstrap as --config files');
    } else {
      r = await runtime.apply(raw, 'file');
    }
    if (!r.ok) {
      await sc.#etcd?.close();
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
        await sc.#etcd?.close();
        await runtime.shutdown();
        throw new SwitchyardError('SY_ERR_BIND', `admin API: cannot listen on ${config.admin.address.host}:${config.admin.address.port}: ${(err as Error).message}`, { cause: err });
      }
      // Read at start only, as admin.address is.
      const grpcAt = config.admin.grpcAddress;
      if (grpcAt) {
        // Loaded only when asked for: gRPC's libraries are costly to start.
        const { LifecycleGrpcServer } = await import('./admin/lifecycle_grpc.js');
        sc.grpc = new LifecycleGrpcServer({ runtime, address: grpcAt });
        try {
          sc.grpcAddress = await sc.grpc.listen();
        } catch (err) {
          await sc.#etcd?.close();
          await sc.admin.close();
          await sc.grpc.close();
          await runtime.shutdown();
          throw new SwitchyardError('SY_ERR_BIND', `admin gRPC API: cannot listen on ${grpcAt.host}:${grpcAt.port}: ${(err as Error).message}`, { cause: err });
        }
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
    sc.#etcd?.run();
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

  /** Re-reads the config files and applies them (under the etcd documents of the config serving, with `source.etcd`). */
  async reload(source: ConfigSource): Promise<ApplyResult> {
    if (this.#etcd === null) return this.runtime.apply(await loadConfigFiles(this.files), source);
    const read = await readConfigFiles(this.files);
    const now = await sourceOf(await mergeConfigFiles(read)).catch(() => undefined);
    if (JSON.stringify(now) !== JSON.stringify(this.#source)) this.#log('source changed in the config files: it takes effect at the next restart');
    return this.#etcd.setBootstrap(read, source);
  }

  /** Graceful stop: /ready turns 503, listeners stop accepting, work drains, then everything closes. */
  async stop(): Promise<void> {
    this.#ready = false;
    await this.#etcd?.close();
    this.#watcher?.close();
    this.#tlsWatcher?.close();
    this.runtime.onApplied = null;
    await this.runtime.shutdown();
    await this.admin?.close();
    await this.grpc?.close();
  }
}

/** The bootstrap's `source`, checked (a ConfigError when it is wrong); undefined when it names none. */
async function sourceOf(raw: RawConfig): Promise<SourceConfig | undefined> {
  if (!isObj(raw.value) || raw.value.source === undefined || raw.issues.length) return undefined;
  // Checked on its own: the bootstrap need not be a whole config without the documents.
  const v = await validateConfig({ source: raw.value.source }, builtinRegistry(), { bootstrap: true, locate: raw.locate });
  if (!v.ok) throw new ConfigError(v.issues);
  return v.config.source;
}

function hasListeners(raw: RawConfig): boolean {
  return isObj(raw.value) && isObj(raw.value.listeners) && Object.keys(raw.value.listeners).length > 0;
}

/** The component slots of the generations still open, the current one's first. */
function* liveSlots(runtime: Runtime) {
  for (const gen of [runtime.current, ...runtime.draining]) if (gen !== null) yield* gen.components.values();
}

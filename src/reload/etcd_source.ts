import type { Etcd3, IKeyValue, Watcher } from 'etcd3';
import { formatIssue, oneLine } from '../errors.js';
import { mergeConfigFiles, type ConfigFiles, type ConfigText, type RawConfig } from '../config/load.js';
import type { EtcdSourceConfig } from '../config/types.js';
import type { ApplyResult, Runtime } from './runtime.js';
import type { ConfigSource, Generation } from './generation.js';
import type { RollbackVerdict } from './auto_rollback.js';
import { appKey, commonKey, etcdClient, readAtOneRevision, statusKey, type Snapshot } from './etcd_read.js';
import { StatusWriter } from './status_writer.js';

/** Reconnect back-off: doubling from `minMs` to `maxMs`, each wait drawn at random in its upper half. */
export interface Backoff {
  minMs: number;
  maxMs: number;
}

export const DEFAULT_BACKOFF: Backoff = { minMs: 500, maxMs: 30_000 };

export interface EtcdSourceOptions {
  config: EtcdSourceConfig;
  runtime: Runtime;
  /** The --config files as read: merged under the etcd documents. */
  bootstrap: ConfigFiles;
  log: (line: string) => void;
  backoff?: Backoff;
}

/** Why the loop runs again: an event (a watch event, a reconnect, the start) reads in full; the timer first reads mod revisions only. */
type Wake = 'event' | 'check';

/**
 * The fleet config source: `<prefix>/common` and `<prefix>/apps/<app>`, read in
 * one transaction (one revision), merged over the bootstrap files by the
 * `--config` merge rule and applied as one generation; then watched.
 *
 * A watch event only says "something changed after the revision read": the keys
 * are read again, both at one revision, so a transaction that changed both is one
 * generation, and no generation is built from keys of different revisions. After a
 * reconnect the watch resumes from the last revision read (a compacted revision:
 * the keys are re-listed at one new revision and watched from there). Every
 * `checkInterval` the mod revisions are read: a change the watch did not deliver
 * (a stalled watch) is applied and the watch is made anew; a read that does not
 * answer in `timeout` counts as etcd down (a new connection is made).
 */
export class EtcdSource {
  readonly #cfg: EtcdSourceConfig;
  readonly #runtime: Runtime;
  readonly #log: (line: string) => void;
  readonly #backoff: Backoff;
  readonly #keys: string[];
  readonly #status: StatusWriter;
  #bootstrap: ConfigFiles;
  #client: Etcd3 | null = null;
  #watcher: Watcher | null = null;
  /** Resolves once the watcher's stream answered (connected, or failed): a client must not close under a stream being opened. */
  #opening: Promise<unknown> = Promise.resolve();
  /** The last keys read (applied or rejected): a read with the same mod revisions changes nothing. */
  #seen: Snapshot | null = null;
  /** The keys of the config serving (merged again when the bootstrap files change). */
  #good: Snapshot | null = null;
  /** The keys #good replaced: serving again when autoRollback reverts #good. */
  #goodBefore: Snapshot | null = null;
  readonly #onAutoRollback: (bad: Generation, verdict: RollbackVerdict, result: ApplyResult) => void;
  /** After a compacted watch: read first, then watch from the new revision. */
  #watchAfterRead = false;
  /** The watch etcd cancelled, to say why once the keys are re-listed. */
  #cancelled: { key: string; from: number; why: string } | null = null;
  /** The newest revision a watch event asked to be read (a kick for it is pending or done). */
  #wanted = 0;
  /** The revision of the last deletion of a document the watch saw. */
  #deleted = 0;
  #up = false;
  /** Kicked (a watch event, a disconnect) while the loop was busy: it runs again at once. */
  #kicked = false;
  #wake: (() => void) | null = null;
  #loop: Promise<void> | null = null;
  #applying: Promise<unknown> = Promise.resolve();
  #closed = false;

  constructor(opts: EtcdSourceOptions) {
    this.#cfg = opts.config;
    this.#runtime = opts.runtime;
    this.#log = (line) => opts.log(oneLine(line));
    this.#backoff = opts.backoff ?? DEFAULT_BACKOFF;
    this.#bootstrap = opts.bootstrap;
    this.#keys = [commonKey(opts.config.prefix), appKey(opts.config.prefix, opts.config.app)];
    this.#status = new StatusWriter(statusKey(opts.config.prefix, opts.config.app, opts.config.instance), opts.config.leaseTtlMs, this.#log);
    this.#runtime.metrics.configSourceUp.set({ source: 'etcd' }, 0);
    this.#onAutoRollback = (bad, verdict, result) => void this.#rolledBack(bad, verdict, result);
    this.#runtime.onAutoRollback.add(this.#onAutoRollback);
  }

  /**
   * autoRollback reverted a generation built from the documents at #good: the
   * status key says `rolled-back`, the documents before serve again (also under
   * a bootstrap change), and the reverted revision is not applied again: only a
   * change of a key (new mod revisions) is read and applied.
   */
  #rolledBack(bad: Generation, verdict: RollbackVerdict, result: ApplyResult): Promise<void> {
    return this.#serially(async () => {
      const good = this.#good;
      if (!result.ok || bad.source !== 'etcd' || good === null || bad.raw.revision !== this.#configRevision(good)) return;
      const revision = this.#configRevision(good);
      this.#good = this.#goodBefore;
      this.#goodBefore = null;
      const f = verdict.figures;
      const why = `rolled back by autoRollback: role ${verdict.role} error ratio ${f.errorRatio.toFixed(3)} (${f.errors} of ${f.requests}) over ${verdict.maxErrorRatio} and over ${verdict.previous.errorRatio.toFixed(3)} before`;
      this.#log(`etcd: revision ${revision} ${why}; not applied again until a document changes`);
      if (this.#good) this.#runtime.metrics.configSourceRevision.set({ source: 'etcd' }, this.#configRevision(this.#good));
      await this.#status.write({
        generation: this.#runtime.current?.number ?? null, revision, result: 'rolled-back', errors: [why],
        appliedAt: new Date().toISOString(), source: 'auto-rollback',
      });
    });
  }

  /** What the source reads, for the start log. */
  describe(): string {
    const c = this.#cfg;
    return `etcd ${c.endpoints.join(', ')}: ${this.#keys[1]} over ${this.#keys[0]}, status as ${statusKey(c.prefix, c.app, c.instance)}`;
  }

  /** The revision of the etcd documents in the serving config (null: none yet). */
  get revision(): number | null {
    return this.#good ? this.#configRevision(this.#good) : null;
  }

  /**
   * The first read, at start: resolves with the apply of bootstrap + documents, or
   * with the error when etcd did not answer within `timeout` (the caller decides
   * whether to serve the bootstrap alone). The watch begins with `run()`.
   */
  async start(): Promise<{ ok: true; result: ApplyResult } | { ok: false; error: Error }> {
    try {
      const snap = await readAtOneRevision(this.#connect(), this.#keys);
      this.#setUp(true);
      return { ok: true, result: await this.#apply(snap) };
    } catch (err) {
      await this.#reset();
      return { ok: false, error: err as Error };
    }
  }

  /** Watches (and, when etcd did not answer at start, retries) until close(). */
  run(): void {
    if (this.#loop !== null || this.#closed) return;
    if (this.#seen === null || this.#client === null) this.#kicked = true;
    else this.#watch(this.#client);
    this.#loop = this.#run();
  }

  /** The bootstrap files changed: applies them under the documents of the config serving. */
  setBootstrap(files: ConfigFiles, source: ConfigSource): Promise<ApplyResult> {
    return this.#serially(async () => {
      this.#bootstrap = files;
      const result = await this.#runtime.apply(await this.#merge(this.#good), source);
      if (this.#good) await this.#report(result, this.#configRevision(this.#good), source);
      return result;
    });
  }

  /**
   * Runs merges-and-applies one at a time: a file reload merged with the documents
   * of an etcd apply still under way would otherwise undo that apply.
   */
  #serially<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#applying.then(fn);
    this.#applying = run.catch(() => {});
    return run;
  }

  /** Stops watching, revokes the status lease (the status key goes), closes the client. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#runtime.onAutoRollback.delete(this.#onAutoRollback);
    this.#wake?.();
    await this.#loop;
    await this.#status.close();
    await this.#reset();
  }

  async #run(): Promise<void> {
    let failures = 0;
    while (!this.#closed) {
      const wake = await this.#sleep(failures === 0 ? this.#cfg.checkIntervalMs : backoffMs(this.#backoff, failures));
      if (this.#closed) return;
      try {
        await this.#sync(failures > 0 ? 'event' : wake);
        failures = 0;
      } catch (err) {
        if (this.#closed) return;
        if (failures === 0) {
          const serving = this.#runtime.current?.number;
          this.#log(`etcd: unreachable (${(err as Error).message}); ${serving === undefined ? 'nothing serves yet' : `generation ${serving} keeps serving`}; retrying with back-off`);
        }
        this.#setUp(false);
        await this.#reset();
        failures++;
      }
    }
  }

  /** Waits for a kick or `ms`; says why it woke (a timer wake is a check). */
  #sleep(ms: number): Promise<Wake> {
    if (this.#kicked) {
      this.#kicked = false;
      return Promise.resolve('event');
    }
    return new Promise<Wake>((resolve) => {
      const timer = setTimeout(() => {
        this.#wake = null;
        resolve('check');
      }, ms);
      this.#wake = () => {
        clearTimeout(timer);
        this.#wake = null;
        this.#kicked = false;
        resolve('event');
      };
    });
  }

  #kick(): void {
    this.#kicked = true;
    this.#wake?.();
  }

  async #sync(wake: Wake): Promise<void> {
    const client = this.#connect();
    if (!this.#watchAfterRead) this.#watch(client);
    if (this.#cancelled) await this.#explainCancel(client, this.#cancelled);
    let snap = await readAtOneRevision(client, this.#keys, { keysOnly: wake === 'check' });
    if (!this.#up) this.#log(`etcd: reachable at revision ${snap.revision}`);
    this.#setUp(true);
    if (this.#seen !== null && sameMods(snap, this.#seen)) {
      this.#seen = snap;
      if (this.#watchAfterRead) this.#rewatch(client);
      await this.#status.flush();
      return;
    }
    if (wake === 'check') {
      const missed = Math.max(...snap.keys.map((k) => k.modRevision));
      this.#log(`etcd: the watch did not deliver revision ${missed} (found by the ${this.#cfg.checkIntervalMs} ms check); watching again`);
      this.#watchAfterRead = true;
      snap = await readAtOneRevision(client, this.#keys);
    }
    await this.#apply(snap);
    if (this.#watchAfterRead) this.#rewatch(client);
  }

  /** Logs why etcd cancelled a watch: a read at its start revision says whether that revision was compacted. */
  async #explainCancel(client: Etcd3, c: { key: string; from: number; why: string }): Promise<void> {
    let why = c.why;
    try {
      await client.kv.range({ key: Buffer.from(c.key), revision: c.from, keys_only: true, limit: 1 });
    } catch (err) {
      if (/compacted/.test((err as Error).message)) why = `revision ${c.from} is compacted`;
      else throw err;
    }
    this.#cancelled = null;
    this.#log(`etcd: watch of ${c.key} from revision ${c.from} cancelled (${why}); re-listing at one new revision`);
  }

  /** The watch made anew from the revision just read (after compaction, or a stall). */
  #rewatch(client: Etcd3): void {
    this.#watchAfterRead = false;
    void this.#unwatch();
    this.#watch(client);
  }

  /**
   * The revision a config from `snap` is known by: its newest document change (a
   * mod revision, or a deletion the watch saw), the same on every sidecar that
   * read those documents. The revision a read was made at would also count writes
   * to other keys, the status keys among them.
   */
  #configRevision(snap: Snapshot): number {
    return Math.max(0, ...snap.keys.map((k) => k.modRevision), this.#deleted <= snap.revision ? this.#deleted : 0);
  }

  /** Merges `snap` over the bootstrap, applies it as one generation, writes the status key. */
  #apply(snap: Snapshot): Promise<ApplyResult> {
    this.#seen = snap;
    return this.#serially(async () => {
      const result = await this.#runtime.apply(await this.#merge(snap), 'etcd');
      if (result.ok) {
        if (this.#good !== null && !sameMods(this.#good, snap)) this.#goodBefore = this.#good;
        this.#good = snap;
        this.#runtime.metrics.configSourceRevision.set({ source: 'etcd' }, this.#configRevision(snap));
      }
      await this.#report(result, this.#configRevision(snap), 'etcd');
      return result;
    });
  }

  async #report(result: ApplyResult, revision: number, source: ConfigSource): Promise<void> {
    const errors = result.ok ? [] : result.kind === 'invalid' ? result.issues.map(formatIssue) : [result.error.message];
    if (!result.ok) this.#log(`etcd: revision ${revision} rejected: ${errors.join('; ')}`);
    const cur = this.#runtime.current;
    await this.#status.write({
      generation: cur?.number ?? null, revision, result: result.ok ? 'applied' : 'rejected', errors,
      appliedAt: new Date().toISOString(), source: result.ok ? source : (cur?.source ?? source),
    });
  }

  /** Bootstrap files, then common, then this app's document: app over common over bootstrap. */
  async #merge(snap: Snapshot | null): Promise<RawConfig> {
    const layers: ConfigText[] = (snap?.keys ?? []).filter((k) => k.text !== null).map((k) => ({ name: `etcd:${k.key}`, text: k.text! }));
    const raw = await mergeConfigFiles(this.#bootstrap, layers);
    if (snap) raw.revision = this.#configRevision(snap);
    return raw;
  }

  #connect(): Etcd3 {
    if (this.#client === null) {
      this.#client = etcdClient(this.#cfg.endpoints, this.#cfg.timeoutMs);
      this.#status.use(this.#client);
    }
    return this.#client;
  }

  /**
   * One watcher over the key range from `apps/<app>` to `common` (they sort in that
   * order), from the revision after the last one read; events of other keys in
   * the range (apps named after this one) are ignored. One watcher, not one per
   * key: etcd cancels every watch of a compacted revision, and etcd3 throws, in
   * its stream handler, at the cancel of a second watcher it has just cancelled
   * itself.
   */
  #watch(client: Etcd3): void {
    if (this.#watcher) return;
    const from = String((this.#seen?.revision ?? 0) + 1);
    const [common, app] = this.#keys as [string, string];
    const w = client.watch().inRange({ start: app, end: `${common}\0` }).startRevision(from).watcher();
    this.#watcher = w;
    const changed = (kv: IKeyValue, deleted: boolean): void => {
      const key = kv.key.toString('utf8');
      if (this.#watcher !== w || (key !== app && key !== common)) return;
      const rev = Number(kv.mod_revision);
      if (deleted) this.#deleted = Math.max(this.#deleted, rev);
      // The events of one transaction come together: one read covers them all.
      if (rev > (this.#seen?.revision ?? 0) && rev > this.#wanted) {
        this.#wanted = rev;
        this.#kick();
      }
    };
    this.#opening = new Promise((r) => { w.once('connected', r); w.once('disconnected', r); w.once('error', r); });
    w.on('put', (kv) => changed(kv, false));
    w.on('delete', (kv) => changed(kv, true));
    w.on('disconnected', () => {
      if (this.#watcher !== w) return;
      this.#setUp(false);
      this.#kick();
    });
    w.on('error', (err) => {
      if (this.#watcher !== w) return;
      // etcd cancels a watch from a compacted revision (its answer says no more than
      // "canceled"); etcd3 has dropped the watcher already: nothing to cancel.
      this.#watcher = null;
      this.#watchAfterRead = true;
      this.#cancelled = { key: app, from: Number(from), why: err.message };
      this.#kick();
    });
  }

  /** Cancels the watcher; resolves once etcd confirmed (or `timeout` passed: a dead connection confirms nothing). */
  async #unwatch(): Promise<void> {
    const w = this.#watcher;
    this.#watcher = null;
    if (w === null) return;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((r) => { timer = setTimeout(r, this.#cfg.timeoutMs); });
    // etcd3 opens the stream asynchronously; cancelled before it answers, the stream is
    // closed under etcd3's feet (an uncaught CANCELLED): wait for it first.
    await Promise.race([this.#opening, late]);
    await Promise.race([w.cancel().catch(() => {}), late]);
    clearTimeout(timer);
  }

  /**
   * Drops the connection and its watcher: the next sync connects anew. The
   * watcher goes first: a client closed under a live watcher would keep trying to
   * re-open its stream.
   */
  async #reset(): Promise<void> {
    const client = this.#client;
    this.#client = null;
    this.#status.use(null);
    await this.#unwatch();
    client?.close();
  }

  #setUp(up: boolean): void {
    this.#up = up;
    this.#runtime.metrics.configSourceUp.set({ source: 'etcd' }, up ? 1 : 0);
  }
}

function sameMods(a: Snapshot, b: Snapshot): boolean {
  return a.keys.every((k, i) => k.modRevision === b.keys[i]?.modRevision);
}

/** The wait before retry number `n` (1, 2, …). */
function backoffMs(b: Backoff, n: number): number {
  const cap = Math.min(b.maxMs, b.minMs * 2 ** Math.min(n - 1, 30));
  return cap / 2 + Math.random() * (cap / 2);
}

import type { Etcd3, Lease } from 'etcd3';

/** What `<prefix>/status/<app>/<instance>` holds (JSON): the xDS ACK/NACK, readable with etcdctl. */
export interface StatusRecord {
  /** The generation serving after this result (for a rejection: the one that keeps serving; null before any). */
  generation: number | null;
  /** The etcd revision of the documents this result is about. */
  revision: number;
  /** rolled-back: applied, then reverted by autoRollback (the generation serving is the revert); not applied again until a document changes. */
  result: 'applied' | 'rejected' | 'rolled-back';
  /** Why it was rejected or rolled back, one line per error (`file:line:column: path: message (CODE)`); [] when applied. */
  errors: string[];
  /** When the result was reached (ISO 8601). */
  appliedAt: string;
  /** What made the generation serving: etcd, or another source (file, api, …) merged with the same etcd documents or not. */
  source: string;
}

/**
 * Writes this instance's status key on a lease of its own, kept alive here: the
 * key vanishes a TTL after the sidecar stops answering, at once when it stops
 * cleanly (close revokes the lease). The last record is kept, so a write that
 * failed (etcd down) or a lost lease is made good at the next `flush`.
 *
 * Keep-alives are one-shot (Lease.keepaliveOnce, every TTL/3) rather than etcd3's
 * automatic loop: that loop, released before its stream opened, leaves the stream
 * without an error listener, and closing the client then throws an uncaught
 * CANCELLED.
 */
export class StatusWriter {
  readonly #key: string;
  readonly #ttlSeconds: number;
  readonly #log: (line: string) => void;
  #client: Etcd3 | null = null;
  #lease: Lease | null = null;
  #last: StatusRecord | null = null;
  #written = true;
  #writing: Promise<void> = Promise.resolve();
  #closed = false;
  readonly #timer: NodeJS.Timeout;
  #keepingAlive = false;

  constructor(key: string, ttlMs: number, log: (line: string) => void) {
    this.#key = key;
    this.#ttlSeconds = Math.max(2, Math.round(ttlMs / 1000));
    this.#log = log;
    this.#timer = setInterval(() => void this.#keepAlive(), (this.#ttlSeconds * 1000) / 3);
    this.#timer.unref();
  }

  async #keepAlive(): Promise<void> {
    const lease = this.#lease;
    // One at a time: on a dead connection a keep-alive never answers (the source makes a new one).
    if (lease === null || this.#keepingAlive) return;
    this.#keepingAlive = true;
    try {
      await lease.keepaliveOnce();
    } catch (err) {
      // Expired (etcd let it go: the key went with it), or etcd unreachable: a new lease at the next flush.
      if (this.#lease === lease) {
        this.#lease = null;
        this.#written = false;
      }
      if ((err as Error).name === 'EtcdLeaseInvalidError') void this.flush();
    } finally {
      this.#keepingAlive = false;
    }
  }

  /** The client to write with (a new one after a reconnect: the old lease goes with the old client). */
  use(client: Etcd3 | null): void {
    if (client === this.#client) return;
    this.#lease?.release();
    this.#lease = null;
    this.#client = client;
    this.#written = false;
  }

  /** Records `rec` and writes it; never throws (a failed write is retried at the next flush). */
  write(rec: StatusRecord): Promise<void> {
    this.#last = rec;
    this.#written = false;
    return this.flush();
  }

  /** Writes the last record if it is not written yet (under the current client and lease). */
  flush(): Promise<void> {
    this.#writing = this.#writing.then(() => this.#flush());
    return this.#writing;
  }

  async #flush(): Promise<void> {
    const client = this.#client;
    const rec = this.#last;
    if (this.#closed || this.#written || client === null || rec === null) return;
    try {
      this.#lease ??= client.lease(this.#ttlSeconds, { autoKeepAlive: false });
      await this.#lease.put(this.#key).value(JSON.stringify(rec));
      if (this.#last === rec && this.#client === client) this.#written = true;
    } catch (err) {
      this.#lease?.release();
      this.#lease = null;
      this.#log(`etcd: cannot write ${this.#key}: ${(err as Error).message} (written again once etcd answers)`);
    }
  }

  /** Revokes the lease, so the key goes now rather than a TTL later. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    await this.#writing;
    const lease = this.#lease;
    this.#lease = null;
    if (lease) await lease.revoke().catch(() => lease.release());
  }
}

/**
 * Reading a fleet's config keys from etcd: several keys in one transaction, so at
 * one revision (a change made of several keys is never half-read), and the writes
 * `switchyard fleet push` makes, each guarded by a compare on the key's mod
 * revision. Shared by the etcd source (src/reload/etcd_source.ts) and the CLI.
 */
import type { Etcd3, IOptions } from 'etcd3';
import { etcd3 } from '../lazy_modules.js';

/** The key of the config every app reads. */
export function commonKey(prefix: string): string {
  return `${prefix}/common`;
}

/** The key of one app's config. */
export function appKey(prefix: string, app: string): string {
  return `${prefix}/apps/${app}`;
}

/** Where an instance reports what it applied: `<prefix>/status/<app>/<instance>`. */
export function statusKey(prefix: string, app: string, instance: string): string {
  return `${prefix}/status/${app}/${instance}`;
}

/** One key as read: its text and mod revision, or absent (null text, mod revision 0). */
export interface KeyRead {
  key: string;
  text: string | null;
  modRevision: number;
}

/** Keys read at one revision. */
export interface Snapshot {
  revision: number;
  keys: KeyRead[];
}

/**
 * No retries inside the client: every caller has its own back-off (the source) or
 * none (the CLI). etcd3's default retries and per-host circuit breaker would keep
 * calls failing for seconds after etcd came back.
 */
const NO_RETRY = {
  // async: etcd3 runs a throwing function through it to mark a host failed, and expects a rejection, not a throw.
  execute: async <T>(fn: (ctx: { signal: AbortSignal; attempt: number }) => T) => fn({ signal: new AbortController().signal, attempt: 0 }),
  onSuccess: () => ({ dispose() {} }),
  onFailure: () => ({ dispose() {} }),
} as unknown as NonNullable<NonNullable<IOptions['faultHandling']>['global']>;

/** An etcd client on `endpoints` whose unary calls each end within `timeoutMs`. */
export function etcdClient(endpoints: readonly string[], timeoutMs: number): Etcd3 {
  return new (etcd3().Etcd3)({
    hosts: [...endpoints],
    dialTimeout: timeoutMs,
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeoutMs }),
    faultHandling: { global: NO_RETRY, host: () => NO_RETRY },
  });
}

/** Reads `keys` in one transaction: every value at the one revision the answer names. */
export async function readAtOneRevision(client: Etcd3, keys: readonly string[], opts: { keysOnly?: boolean } = {}): Promise<Snapshot> {
  const res = await client.kv.txn({
    compare: [],
    success: keys.map((k) => ({ request_range: { key: Buffer.from(k), keys_only: opts.keysOnly === true } })),
    failure: [],
  });
  return {
    revision: Number(res.header.revision),
    keys: keys.map((key, i) => {
      const kv = res.responses[i]?.response_range?.kvs?.[0];
      return kv ? { key, text: opts.keysOnly ? '' : kv.value.toString('utf8'), modRevision: Number(kv.mod_revision) } : { key, text: null, modRevision: 0 };
    }),
  };
}

/** The range end of a prefix: its last byte plus one (etcd's clientv3.GetPrefixRangeEnd). */
function prefixEnd(prefix: string): Buffer {
  const end = Buffer.from(prefix);
  end[end.length - 1]!++;
  return end;
}

/** Reads one key and every key under `dir/` in one transaction: the key and the keys under `dir`, at one revision. */
export async function readKeyAndDir(client: Etcd3, key: string, dir: string): Promise<{ revision: number; key: KeyRead; dir: KeyRead[] }> {
  const res = await client.kv.txn({
    compare: [],
    success: [
      { request_range: { key: Buffer.from(key) } },
      { request_range: { key: Buffer.from(`${dir}/`), range_end: prefixEnd(`${dir}/`) } },
    ],
    failure: [],
  });
  const kv = res.responses[0]?.response_range?.kvs?.[0];
  return {
    revision: Number(res.header.revision),
    key: kv ? { key, text: kv.value.toString('utf8'), modRevision: Number(kv.mod_revision) } : { key, text: null, modRevision: 0 },
    dir: (res.responses[1]?.response_range?.kvs ?? []).map((k) => ({ key: k.key.toString('utf8'), text: k.value.toString('utf8'), modRevision: Number(k.mod_revision) })),
  };
}

/** Reads every key under `dir/` (sorted by key), at one revision. */
export async function readDir(client: Etcd3, dir: string): Promise<Snapshot> {
  const res = await client.kv.range({ key: Buffer.from(`${dir}/`), range_end: prefixEnd(`${dir}/`) });
  return {
    revision: Number(res.header.revision),
    keys: (res.kvs ?? []).map((kv) => ({ key: kv.key.toString('utf8'), text: kv.value.toString('utf8'), modRevision: Number(kv.mod_revision) })),
  };
}

/** What a guarded write did: written at `revision`, or refused because `key` is no longer at the mod revision expected. */
export type GuardedWrite =
  | { ok: true; revision: number }
  | { ok: false; key: string; expected: number; actual: number };

/**
 * Writes `text` at `key` only if every key of `expect` still has the mod revision
 * given (0: the key must not exist): one transaction, so nothing changed between
 * the read that validated the text and the write.
 */
export async function writeGuarded(client: Etcd3, key: string, text: string, expect: ReadonlyMap<string, number>): Promise<GuardedWrite> {
  const compare = [...expect].map(([k, rev]) => ({ key: Buffer.from(k), target: 'Mod' as const, result: 'Equal' as const, mod_revision: rev }));
  const res = await client.kv.txn({
    compare,
    success: [{ request_put: { key: Buffer.from(key), value: Buffer.from(text) } }],
    failure: [...expect.keys()].map((k) => ({ request_range: { key: Buffer.from(k), keys_only: true } })),
  });
  if (res.succeeded) return { ok: true, revision: Number(res.header.revision) };
  const keys = [...expect];
  for (let i = 0; i < keys.length; i++) {
    const kv = res.responses[i]?.response_range?.kvs?.[0];
    const actual = kv ? Number(kv.mod_revision) : 0;
    if (actual !== keys[i]![1]) return { ok: false, key: keys[i]![0], expected: keys[i]![1], actual };
  }
  return { ok: false, key, expected: expect.get(key) ?? 0, actual: -1 };
}

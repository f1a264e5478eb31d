/**
 * `switchyard fleet push` and `switchyard fleet status`: the operator's side of
 * the etcd config source (README "Fleet config on etcd").
 */
import { parseArgs } from 'node:util';
import { readFile } from 'node:fs/promises';
import type { Etcd3 } from 'etcd3';
import { checkConfig } from './reload/check.js';
import { mergeConfigFiles, parseConfigTextsAsync, readConfigFiles, type ConfigFiles, type ConfigText, type RawConfig } from './config/load.js';
import { DEFAULT_ETCD } from './config/defaults.js';
import { formatIssue, oneLine } from './errors.js';
import { appKey, commonKey, etcdClient, readDir, readKeyAndDir, writeGuarded, type KeyRead } from './reload/etcd_read.js';
import type { StatusRecord } from './reload/status_writer.js';

export const FLEET_USAGE = `  switchyard fleet push --etcd URL [--prefix P] (--common | --app NAME) [--config BOOTSTRAP …] [--if-revision N] FILE
                                                    validate FILE (as switchyard validate does: merged over the
                                                    BOOTSTRAP files if given, and over common or each app's document)
                                                    and write it to <prefix>/common or <prefix>/apps/NAME, refusing
                                                    if a key read for it changed since (or, with --if-revision, if the
                                                    key's mod revision is not N; 0: the key must not exist)
  switchyard fleet status --etcd URL [--prefix P] [--app NAME]
                                                    the fleet's instances: app, instance, generation, revision, result, age`;

const TIMEOUT_MS = 5_000;

/** Runs `fleet push|status`; resolves to the exit code (2: usage). */
export async function fleet(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      options: {
        etcd: { type: 'string', multiple: true },
        prefix: { type: 'string' },
        common: { type: 'boolean' },
        app: { type: 'string' },
        config: { type: 'string', multiple: true, short: 'c' },
        'if-revision': { type: 'string' },
      },
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    return usage((err as Error).message);
  }
  const { values: o, positionals } = parsed;
  if (sub !== 'push' && sub !== 'status') return usage(sub ? `unknown fleet command "${sub}"` : 'fleet push or fleet status?');
  if (!o.etcd?.length) return usage(`fleet ${sub}: --etcd URL is required`);
  const prefix = (o.prefix ?? DEFAULT_ETCD.prefix).replace(/\/+$/, '');
  if (!prefix.startsWith('/')) return usage(`--prefix must start with /, got "${o.prefix}"`);
  const client = etcdClient(o.etcd, TIMEOUT_MS);
  try {
    if (sub === 'status') {
      if (positionals.length) return usage(`fleet status takes no FILE (got ${positionals.join(' ')})`);
      return await status(client, prefix, o.app);
    }
    if (positionals.length !== 1) return usage('fleet push takes one FILE');
    if ((o.common === true) === (o.app !== undefined)) return usage('fleet push takes --common or --app NAME (one of them)');
    if (o.app !== undefined && !/^[A-Za-z0-9_.-]+$/.test(o.app)) return usage(`--app "${o.app}" must match [A-Za-z0-9_.-]+`);
    let ifRevision: number | undefined;
    if (o['if-revision'] !== undefined) {
      ifRevision = Number(o['if-revision']);
      if (!Number.isInteger(ifRevision) || ifRevision < 0) return usage(`--if-revision takes a mod revision (an integer ≥ 0), got "${o['if-revision']}"`);
    }
    return await push(client, { prefix, app: o.app, file: positionals[0]!, bootstrap: o.config ?? [], ifRevision });
  } catch (err) {
    console.error(oneLine(`switchyard fleet ${sub}: etcd (${o.etcd.join(', ')}): ${(err as Error).message}`));
    return 1;
  } finally {
    client.close();
  }
}

function usage(message: string): number {
  console.error(`switchyard: ${message}\nusage:\n${FLEET_USAGE}`);
  return 2;
}

interface PushOptions {
  prefix: string;
  /** Undefined: push common. */
  app: string | undefined;
  file: string;
  bootstrap: string[];
  ifRevision: number | undefined;
}

/**
 * Validates the document as the sidecars will merge it (bootstrap files if given,
 * then common, then the app's document; for common, over each app there is) and
 * writes it in a transaction that compares the mod revision of every key read for
 * the validation: a change in between refuses the write, nothing is written.
 */
async function push(client: Etcd3, o: PushOptions): Promise<number> {
  let text: string;
  try {
    text = await readFile(o.file, 'utf8');
  } catch (err) {
    console.error(oneLine(`switchyard fleet push: cannot read ${o.file}: ${(err as Error).message}`));
    return 1;
  }
  const target = o.app === undefined ? commonKey(o.prefix) : appKey(o.prefix, o.app);
  const read = await readKeyAndDir(client, commonKey(o.prefix), `${o.prefix}/apps`);
  const current = o.app === undefined ? read.key : read.dir.find((k) => k.key === target) ?? { key: target, text: null, modRevision: 0 };
  if (o.ifRevision !== undefined && current.modRevision !== o.ifRevision) return refuse(target, o.ifRevision, current.modRevision);

  const bootstrap = await readConfigFiles(o.bootstrap);
  const doc: ConfigText = { name: o.file, text };
  const asLayer = (k: KeyRead): ConfigText[] => (k.text === null ? [] : [{ name: `etcd:${k.key}`, text: k.text }]);
  // What each sidecar concerned will merge: for an app, common then the file; for common, the file then each app's document.
  const merges: ConfigText[][] = o.app === undefined ? [[doc], ...read.dir.map((app) => [doc, ...asLayer(app)])] : [[...asLayer(read.key), doc]];
  const issues = new Map<string, string>();
  for (const layers of merges) {
    const checked = await checkConfig(await merged(bootstrap, layers));
    if (!checked.ok) for (const i of checked.issues) issues.set(formatIssue(i), layers.at(-1)!.name);
  }
  if (issues.size) {
    for (const [line] of issues) console.error(line);
    console.error(`switchyard fleet push: ${issues.size} error(s); nothing written to ${target}`);
    return 1;
  }
  // Every key the validation read must still be as read (the target included).
  const expect = new Map<string, number>([[target, current.modRevision]]);
  if (o.app !== undefined) expect.set(read.key.key, read.key.modRevision);
  else for (const app of read.dir) expect.set(app.key, app.modRevision);
  const w = await writeGuarded(client, target, text, expect);
  if (!w.ok) return refuse(w.key, w.expected, w.actual);
  console.log(`pushed ${target} at revision ${w.revision} (was ${current.modRevision === 0 ? 'absent' : `mod revision ${current.modRevision}`})`);
  return 0;
}

/** The bootstrap files (if any) with `layers` over them, as a sidecar merges them; without files, the layers alone. */
function merged(bootstrap: ConfigFiles, layers: ConfigText[]): Promise<RawConfig> {
  return bootstrap.files.length ? mergeConfigFiles(bootstrap, layers) : parseConfigTextsAsync(layers, bootstrap.baseDir);
}

function refuse(key: string, expected: number, actual: number): number {
  const was = (rev: number): string => (rev === 0 ? 'absent' : `at mod revision ${rev}`);
  console.error(`switchyard fleet push: ${key} changed since it was read: expected ${was(expected)}, now ${was(actual)}; nothing written. `
    + `Read it again (etcdctl get ${key} -w json), merge your change, and push with --if-revision ${actual}`);
  return 1;
}

/** Prints `<prefix>/status/…` as a table, oldest app first; a rejection's errors follow the table. */
async function status(client: Etcd3, prefix: string, app: string | undefined): Promise<number> {
  const dir = app === undefined ? `${prefix}/status` : `${prefix}/status/${app}`;
  const snap = await readDir(client, dir);
  const now = Date.now();
  const rows: string[][] = [['APP', 'INSTANCE', 'GENERATION', 'REVISION', 'RESULT', 'AGE']];
  const notes: string[] = [];
  for (const k of snap.keys) {
    const [appName = '?', ...instance] = k.key.slice(`${prefix}/status/`.length).split('/');
    let rec: Partial<StatusRecord>;
    try {
      rec = JSON.parse(k.text ?? '') as Partial<StatusRecord>;
    } catch {
      rows.push([appName, instance.join('/'), '?', '?', 'unreadable', '?']);
      continue;
    }
    const at = Date.parse(String(rec.appliedAt));
    rows.push([appName, instance.join('/'), String(rec.generation ?? '-'), String(rec.revision ?? '-'), String(rec.result ?? '?'), Number.isNaN(at) ? '?' : age(now - at)]);
    if (rec.result === 'rejected') for (const e of rec.errors ?? []) notes.push(oneLine(`${appName}/${instance.join('/')}: ${e}`));
  }
  if (rows.length === 1) {
    console.log(`no instances under ${dir}/ (at revision ${snap.revision})`);
    return 0;
  }
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  for (const r of rows) console.log(oneLine(r.map((cell, c) => cell.padEnd(widths[c]!)).join('  ').trimEnd()));
  if (notes.length) {
    console.log('');
    for (const n of notes) console.log(n);
  }
  return 0;
}

/** 42s, 5m, 3h, 2d. */
function age(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7_200) return `${Math.round(s / 60)}m`;
  if (s < 172_800) return `${Math.round(s / 3_600)}h`;
  return `${Math.round(s / 86_400)}d`;
}

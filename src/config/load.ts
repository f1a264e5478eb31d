import { readFile } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';
import { Worker } from 'node:worker_threads';
import { Document, LineCounter, parseDocument } from 'yaml';
import jsyaml from 'js-yaml';
import { aliasProblems, duplicateKeys, nodeAt, oddScalarsOfDoc, pathAt, type NodeAt } from './yaml_doc.js';
import type { ConfigIssue } from '../errors.js';

export { formatPath, type Path } from './path.js';
import { formatPath, type Path } from './path.js';

export interface Location { file: string; line: number; column: number }

/** A path to locate: its value, or with `atKey` the key it sits under. */
export interface LocateQuery { path: Path; atKey?: boolean }

/**
 * Maps config paths to the file, line and column that set them (the last file that
 * has a path wins; a path no file has is located at its nearest ancestor that one
 * has). Asked once per validation, with every issue's path: for a big text the
 * answer is worked out off the main thread.
 */
export type Locator = (queries: readonly LocateQuery[]) => Promise<(Location | undefined)[]>;

/**
 * How a number or boolean at a path was written, when that is not how its value
 * reads (`1.10` for the number 1.1, `042`, `True`); undefined otherwise (written
 * as it reads, not a number or boolean, or not from YAML). Known when parsed, so
 * answered at once.
 */
export type SourceOf = (path: Path) => string | undefined;

/** Raw config text from files or a push, merged and located, before validation. */
export interface RawConfig {
  /** The merged plain value (`undefined` when nothing parsed). */
  value: unknown;
  locate: Locator;
  /** How numbers and booleans were written, so the validator can tell `1.10` from `1.1`. */
  sourceOf?: SourceOf;
  /** YAML syntax errors and unreadable files; any of them rejects the config. */
  issues: ConfigIssue[];
  /** Directory that relative plugin paths resolve against (the first file's). */
  baseDir: string;
  /** Files that made it, for the watcher and for messages. */
  files: string[];
  /** The etcd revision its etcd documents were read at (absent: none were merged in). */
  revision?: number;
}

/** A config text and the name its errors give (a file, or `PUT /config`). */
export interface ConfigText { name: string; text: string }

/**
 * Texts up to this size are parsed on the main thread by js-yaml (about 10 MB/s
 * here: 25 ms); bigger ones, and every text of a config that has one, in a worker.
 */
export const INLINE_PARSE_MAX = 256 * 1024;
/**
 * A `yaml` Document (error messages, positions, aliases) is built on the main
 * thread only for texts up to this size (about 1 MB/s here: 30 ms); else in a worker.
 */
export const INLINE_DOC_MAX = 32 * 1024;

/** One parsed text. The `yaml` Document (node positions) is made only when asked for. */
interface Source {
  name: string;
  text: string;
  parsed: { doc: Document; lines: LineCounter } | null;
  /** The plain value this text gave (for which-file-set-it questions without a Document). */
  value: unknown;
  /** Numbers and booleans not written as their value reads: formatted path → text. */
  odd: Map<string, string>;
}

/** The Document of a source, parsed on first use: only error reports, aliases and locations need it. */
function docOf(src: Source): { doc: Document; lines: LineCounter } {
  if (src.parsed === null) {
    const lines = new LineCounter();
    // yaml's own duplicate-key check (uniqueKeys) compares each key with every
    // other key of its mapping: quadratic in a mapping of 40,000 roles. Duplicates
    // are found by duplicateKeys (one pass) where they matter.
    src.parsed = { doc: parseDocument(src.text, { lineCounter: lines, uniqueKeys: false, prettyErrors: false }), lines };
  }
  return src.parsed;
}

/** An alias (`*name`) outside quotes: the text goes through `yaml`, which bounds alias expansion. */
const ALIAS_RE = /(?:^|[\s,[{:-])\*[^\s,\]}]/m;

/** Thrown by parseText when a text needs a Document bigger than the caller allows here: parse it in a worker. */
class NeedsWorker extends Error {}

/** A number or boolean as js-yaml read it, boxed with its text as written (see BOXED). */
type Boxed = (Number | Boolean) & { src: string };

/**
 * js-yaml's core schema with numbers and booleans constructed boxed, with the
 * text they were written as: one pass after the parse unboxes them and keeps the
 * texts that differ from how the value reads, so `1.10` is told from `1.1`
 * without a `yaml` Document. Resolution is js-yaml's own (the same types).
 */
const BOXED = (() => {
  const { types } = jsyaml as unknown as { types: Record<'null' | 'bool' | 'int' | 'float', jsyaml.Type & { options: object; tag: string }> };
  const boxed = (t: jsyaml.Type & { options: object; tag: string }) => new jsyaml.Type(t.tag, {
    ...(t.options as jsyaml.TypeConstructorOptions),
    construct: (data: string) => {
      const v: unknown = t.construct(data);
      const b = (typeof v === 'boolean' ? new Boolean(v) : new Number(v as number)) as Boxed;
      b.src = data;
      return b;
    },
  });
  return jsyaml.FAILSAFE_SCHEMA.extend({ implicit: [types.null, boxed(types.bool), boxed(types.int), boxed(types.float)] });
})();

/**
 * Replaces the boxed numbers and booleans by their values, in place; returns the
 * value and the texts that differ from how their value reads, by path. Recursive:
 * js-yaml's maxDepth bounds the depth.
 */
function unbox(value: unknown): { value: unknown; odd: Map<string, string> } {
  const odd = new Map<string, string>();
  const path: (string | number)[] = [];
  const walk = (x: unknown): unknown => {
    if (x instanceof Number || x instanceof Boolean) {
      const v = x.valueOf();
      const src = (x as Boxed).src;
      if (src !== String(v)) odd.set(pathKey(path), src);
      return v;
    }
    if (Array.isArray(x)) {
      for (let i = 0; i < x.length; i++) {
        path.push(i);
        const y = x[i];
        const v = walk(y);
        if (v !== y) x[i] = v;
        path.pop();
      }
    } else if (typeof x === 'object' && x !== null) {
      const o = x as Record<string, unknown>;
      for (const k of Object.keys(o)) {
        path.push(k);
        const y = o[k];
        const v = walk(y);
        if (v !== y) o[k] = v;
        path.pop();
      }
    }
    return x;
  };
  return { value: walk(value), odd };
}

/** A path as a map key. */
function pathKey(path: Path): string {
  return JSON.stringify(path);
}

/**
 * Parses one text to a plain value. js-yaml (core schema, the same YAML 1.2 types as
 * `yaml`'s default) is about 20 times faster than building `yaml`'s Document, which
 * kept a 1,000-listener reload over 150 ms; `yaml` still reports syntax errors (its
 * messages and positions) and handles texts with aliases (its maxAliasCount stops
 * "billion laughs" expansion). `docMax`: the largest text whose Document may be
 * built here (NeedsWorker beyond it).
 */
function parseText(src: Source, docMax: number): { value: unknown } | { errors: ConfigIssue[] } {
  if (!ALIAS_RE.test(src.text)) {
    try {
      const { value, odd } = unbox(jsyaml.load(src.text, { schema: BOXED, filename: src.name }));
      src.odd = odd;
      return { value };
    } catch (err) {
      if (!(err instanceof jsyaml.YAMLException)) throw err;
      // fall through: `yaml` says where and why, in the same words as for every other error
    }
  }
  if (src.text.length > docMax) throw new NeedsWorker();
  const { doc, lines } = docOf(src);
  // Each error names the nearest key it is under, not just "(root)".
  const issue = (offset: number, message: string): ConfigIssue => {
    const pos = lines.linePos(offset);
    // An error at the indentation of a line is about what the line starts with.
    let at = offset;
    while (src.text[at] === ' ') at++;
    return { code: 'SY_ERR_CONFIG_YAML', path: formatPath(pathAt(doc, at)), file: src.name, line: pos.line, column: pos.col, message };
  };
  const syntax = [...doc.errors.map((e) => ({ offset: e.pos[0], message: firstLine(e.message) })), ...duplicateKeys(doc)]
    .sort((a, b) => a.offset - b.offset);
  if (syntax.length) return { errors: syntax.map((e) => issue(e.offset, e.message)) };
  const aliases = aliasProblems(doc);
  if (aliases.length) return { errors: aliases.map((a) => issue(a.offset, a.message)) };
  try {
    const value = doc.toJS({ maxAliasCount: 100 });
    src.odd = new Map(oddScalarsOfDoc(doc).map(([p, t]) => [pathKey(p), t]));
    return { value };
  } catch (err) {
    return { errors: [{ code: 'SY_ERR_CONFIG_YAML', path: '', file: src.name, line: 1, column: 1, message: firstLine((err as Error).message) }] };
  }
}

/** The texts of some `--config` files, as read (a file that cannot be read is an issue). */
export interface ConfigFiles {
  texts: ConfigText[];
  issues: ConfigIssue[];
  /** The first file's directory (relative plugin paths resolve from it). */
  baseDir: string;
  /** The files, absolute. */
  files: string[];
}

/** Reads `--config` files, without parsing them. */
export async function readConfigFiles(files: readonly string[], cwd = process.cwd()): Promise<ConfigFiles> {
  const texts: ConfigText[] = [];
  const issues: ConfigIssue[] = [];
  for (const f of files) {
    const abs = isAbsolute(f) ? f : resolve(cwd, f);
    try {
      texts.push({ name: f, text: await readFile(abs, 'utf8') });
    } catch (err) {
      issues.push({ code: 'SY_ERR_CONFIG_FILE', path: '', file: f, message: `cannot read: ${(err as Error).message}` });
    }
  }
  const baseDir = files[0] ? resolve(cwd, files[0], '..') : cwd;
  return { texts, issues, baseDir, files: files.map((f) => (isAbsolute(f) ? f : resolve(cwd, f))) };
}

/**
 * Files read by readConfigFiles, then `layers` (texts from a config source, e.g.
 * etcd documents), merged in that order by the one merge rule (mergeConfig). With
 * layers, the files' `source` is not merged: it says where the layers come from and
 * is no part of the config they make (a layer that names a `source` is left for the
 * validator to reject).
 */
export async function mergeConfigFiles(read: ConfigFiles, layers?: readonly ConfigText[]): Promise<RawConfig> {
  const texts = layers ? [...read.texts, SOURCE_DROPPED, ...layers] : read.texts;
  const raw = await parseConfigTextsAsync(texts, read.baseDir);
  raw.issues.unshift(...read.issues);
  raw.files = read.files;
  return raw;
}

/** A text merged between the bootstrap files and a source's layers: `key: null` removes the key (mergeConfig). */
const SOURCE_DROPPED: ConfigText = { name: '(the bootstrap\'s source, not merged)', text: 'source: null\n' };

/** Reads and merges `--config` files: later files override earlier ones key by key. Big files are parsed off the main thread. */
export async function loadConfigFiles(files: readonly string[], cwd = process.cwd()): Promise<RawConfig> {
  return mergeConfigFiles(await readConfigFiles(files, cwd));
}

/**
 * Parses YAML (or JSON, which is YAML) texts and merges them in order, on the
 * main thread whatever their size (tests, small inputs; a config source uses
 * parseConfigTextsAsync). Locating issues of a big text still runs in a worker.
 */
export function parseConfigTexts(texts: readonly ConfigText[], baseDir: string): RawConfig {
  return rawOf(parseInline(texts, Infinity), texts, baseDir);
}

/**
 * parseConfigTexts without blocking the event loop for more than a few tens of
 * milliseconds: small texts are parsed here, big ones (and texts whose error
 * report or aliases need a big Document) in a worker thread, whose value arrives
 * in slices (one message each), so requests keep being served meanwhile.
 */
export async function parseConfigTextsAsync(texts: readonly ConfigText[], baseDir: string): Promise<RawConfig> {
  if (texts.every((t) => t.text.length <= INLINE_PARSE_MAX)) {
    try {
      return rawOf(parseInline(texts, INLINE_DOC_MAX), texts, baseDir);
    } catch (err) {
      if (!(err instanceof NeedsWorker)) throw err;
    }
  }
  let got: Awaited<ReturnType<typeof parseInWorker>>;
  try {
    got = await parseInWorker(texts);
  } catch {
    // No worker (it could not start, or died): parsed here after all, slow but right.
    return parseConfigTexts(texts, baseDir);
  }
  const odd = new Map(got.odd.map(([p, t]) => [pathKey(p), t]));
  return {
    value: got.value, issues: got.issues, baseDir, files: [],
    // Without a worker, the issues go without line and column rather than not at all.
    locate: async (queries) => (queries.length ? locateInWorker(texts, queries).catch(() => queries.map(() => undefined)) : []),
    sourceOf: (path) => odd.get(pathKey(path)),
  };
}

/** What one parse of some texts knows: the merged value, its issues, and sync answers about paths. */
export interface Parsed {
  value: unknown;
  issues: ConfigIssue[];
  sources: Source[];
  /** Every path whose number or boolean (in the merged value) was not written as it reads, with its text. */
  odd(): [Path, string][];
  locateHere(queries: readonly LocateQuery[]): (Location | undefined)[];
  /** Whether locateHere needs no Document bigger than `docMax` that is not built yet. */
  cheapToLocate(docMax: number): boolean;
}

/**
 * Parses and merges on this thread. `docMax`: the largest text whose `yaml`
 * Document may be built (NeedsWorker is thrown for a bigger one).
 */
export function parseInline(texts: readonly ConfigText[], docMax: number): Parsed {
  const issues: ConfigIssue[] = [];
  const sources: Source[] = [];
  let merged: unknown = undefined;
  for (const { name, text } of texts) {
    const src: Source = { name, text, parsed: null, value: undefined, odd: new Map() };
    const parsed = parseText(src, docMax);
    if ('errors' in parsed) {
      issues.push(...parsed.errors);
      continue;
    }
    const value = parsed.value;
    // An empty document (only comments, e.g. an override file with everything
    // commented out) parses to null; merged as a value it would replace the whole
    // config with null, so it contributes nothing.
    if (value === null || value === undefined) continue;
    src.value = value;
    sources.push(src);
    merged = mergeConfig(merged, value);
  }
  // A config with no content at all (every file empty or only comments) is an
  // error, not a valid config with nothing in it: a truncated or emptied file, e.g.
  // seen by the file watcher halfway through a save, would remove every listener.
  // An explicit `{}` still means "nothing".
  if (merged === undefined && texts.length > 0 && issues.length === 0) {
    const last = texts[texts.length - 1]!.name;
    issues.push({ code: 'SY_ERR_CONFIG_REQUIRED', path: '', file: last, line: 1, column: 1,
      message: texts.length === 1 ? 'the config is empty' : 'the config is empty (every file is empty or only comments)' });
  }
  // The file that set a path is the last one that has it *unless a later file
  // replaced an ancestor* (a list or scalar replaces, null removes): then earlier
  // files no longer count, so an error under a replaced list is not located in an
  // earlier file that happens to have the path. And a path that no file has (a
  // required key that is missing) is located at its nearest ancestor that a file has,
  // so every issue of a YAML config carries a line and column.
  const find = (path: Path): { src: Source; at: NodeAt } | undefined => {
    for (let i = sources.length - 1; i >= 0; i--) {
      const src = sources[i]!;
      const r = nodeAt(docOf(src).doc, path);
      if (r === 'absent') continue;
      return r === 'replaced' ? undefined : { src, at: r };
    }
    return undefined;
  };
  const locateOne = ({ path, atKey }: LocateQuery): Location | undefined => {
    for (let n = path.length; n >= 0; n--) {
      const f = find(path.slice(0, n));
      const target = f && (((n < path.length || atKey) && f.at.key) || f.at.node || f.at.key);
      const offset = target?.range?.[0];
      if (f && offset !== undefined) {
        const pos = docOf(f.src).lines.linePos(offset);
        return { file: f.src.name, line: pos.line, column: pos.col };
      }
    }
    return undefined;
  };
  // A number or boolean counts for the merged value when its source is the one that
  // set the path there: no later source has the path or replaced an ancestor.
  const odd = (): [Path, string][] => {
    const out: [Path, string][] = [];
    sources.forEach((src, i) => {
      for (const [k, text] of src.odd) {
        const path = JSON.parse(k) as Path;
        if (sources.slice(i + 1).every((later) => valueAt(later.value, path) === 'absent')) out.push([path, text]);
      }
    });
    return out;
  };
  return {
    value: merged, issues, sources, odd,
    locateHere: (queries) => queries.map(locateOne),
    cheapToLocate: (docMax) => sources.every((s) => s.parsed !== null || s.text.length <= docMax),
  };
}

/** The RawConfig of an inline parse: sourceOf from the odd texts, locate here or in a worker. */
function rawOf(p: Parsed, texts: readonly ConfigText[], baseDir: string): RawConfig {
  const odd = new Map(p.odd().map(([path, t]) => [pathKey(path), t]));
  return {
    value: p.value, issues: p.issues, baseDir, files: [],
    // Locating builds the Document of each text that has a path asked for: here for
    // small texts, in a worker for big ones (a 4 MB Document takes seconds).
    locate: async (queries) => {
      if (queries.length === 0) return [];
      return p.cheapToLocate(INLINE_DOC_MAX) ? p.locateHere(queries) : locateInWorker(texts, queries).catch(() => p.locateHere(queries));
    },
    sourceOf: (path) => odd.get(pathKey(path)),
  };
}

/**
 * The same question as nodeAt (yaml_doc.ts), on a plain value: 'absent' when a mapping on the
 * way lacks the key, 'replaced' when a list, scalar or null is on the way (or a
 * list item lacks the key), else 'found'.
 */
function valueAt(value: unknown, path: Path): 'found' | 'absent' | 'replaced' {
  let node = value;
  let inList = false;
  for (const seg of path) {
    if (isPlainObject(node)) {
      if (!Object.hasOwn(node, seg)) return inList ? 'replaced' : 'absent';
      node = node[seg as string];
    } else if (Array.isArray(node)) {
      inList = true;
      node = node[seg as number];
      if (node === undefined) return 'replaced';
    } else return 'replaced';
  }
  return 'found';
}

function firstLine(s: string): string {
  const i = s.indexOf('\n');
  return i < 0 ? s : s.slice(0, i);
}

// ---------------------------------------------------------------- worker threads

/** The worker's module (compiled next to this one). */
const WORKER_URL = new URL('./parse_worker.js', import.meta.url);

/** One op of a value sent in slices: [parent id, key, 0 (a whole value) | 1 (a new mapping) | 2 (a new list), value or new id]. */
export type ValueOp = [number, string | number, 0 | 1 | 2, unknown];

/** Messages from the worker. */
export type WorkerMessage =
  | { ops: ValueOp[] }
  | { done: { issues: ConfigIssue[]; odd: [Path, string][] } }
  | { located: (Location | undefined)[] }
  | { failed: string };

/**
 * Runs the worker on one job; `onMessage` sees each message, resolves with what it
 * returns that is not undefined. A slice of the value is acknowledged after a turn
 * of the event loop, and only then does the worker send the next one.
 */
function runWorker<T>(data: unknown, onMessage: (m: WorkerMessage) => T | undefined): Promise<T> {
  return new Promise<T>((resolvePromise, reject) => {
    const w = new Worker(WORKER_URL, { workerData: data });
    let settled = false;
    const settle = (f: () => void): void => {
      if (settled) return;
      settled = true;
      f();
      void w.terminate();
    };
    w.on('message', (m: WorkerMessage) => {
      if (settled) return;
      if ('failed' in m) return settle(() => reject(new Error(m.failed)));
      let out: T | undefined;
      try {
        out = onMessage(m);
      } catch (err) {
        return settle(() => reject(err));
      }
      if (out !== undefined) settle(() => resolvePromise(out!));
      else if ('ops' in m) setImmediate(() => { if (!settled) w.postMessage('next'); });
    });
    w.on('error', (err) => settle(() => reject(err)));
    w.on('exit', (code) => settle(() => reject(new Error(`the config parser worker exited (${code}) before it answered`))));
  });
}

/** Parses in a worker; the value is put together here from its slices (each one message, one event-loop turn). */
function parseInWorker(texts: readonly ConfigText[]): Promise<{ value: unknown; issues: ConfigIssue[]; odd: [Path, string][] }> {
  const nodes: unknown[] = [{}];
  return runWorker({ op: 'parse', texts }, (m) => {
    if ('ops' in m) {
      for (const [parent, key, kind, v] of m.ops) {
        let val = v;
        if (kind !== 0) nodes[v as number] = val = kind === 1 ? {} : [];
        const p = nodes[parent] as Record<string, unknown> | unknown[];
        if (Array.isArray(p)) p[key as number] = val;
        else setOwn(p, key as string, val);
      }
      return undefined;
    }
    if ('done' in m) return { value: (nodes[0] as { v?: unknown }).v, issues: m.done.issues, odd: m.done.odd };
    return undefined;
  });
}

/** Locates paths in a worker (which parses the texts again and builds the Documents it needs). */
function locateInWorker(texts: readonly ConfigText[], queries: readonly LocateQuery[]): Promise<(Location | undefined)[]> {
  return runWorker({ op: 'locate', texts, queries }, (m) => ('located' in m ? m.located : undefined));
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Key-by-key merge: mappings merge recursively, anything else (scalars, sequences)
 * is replaced by the later value, and a later `null` removes the key.
 */
export function mergeConfig(a: unknown, b: unknown): unknown {
  if (!isPlainObject(a) || !isPlainObject(b)) return b === undefined ? a : b;
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    if (v === null) delete out[k];
    else setOwn(out, k, Object.hasOwn(out, k) ? mergeConfig(out[k], v) : v);
  }
  return out;
}

/** A config that arrives as an object (JSON from the admin API) has no lines to point at. */
export function rawFromObject(value: unknown, baseDir: string): RawConfig {
  return { value, locate: async (queries) => queries.map(() => undefined), issues: [], baseDir, files: [] };
}

/**
 * `obj[key] = value` that also works for the key "__proto__" (an assignment would
 * set the prototype and drop the entry, hiding it from the validator).
 */
export function defineOwn(obj: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

/** defineOwn, with a plain assignment for every other key (many times faster, for big configs). */
export function setOwn(obj: Record<string, unknown>, key: string, value: unknown): void {
  if (key === '__proto__') defineOwn(obj, key, value);
  else obj[key] = value;
}

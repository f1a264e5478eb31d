import { readFile } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';
import { Document, isAlias, isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, type Node as YamlNode, type YAMLMap, type YAMLSeq } from 'yaml';
import jsyaml from 'js-yaml';
import type { ConfigIssue } from '../errors.js';

/** A path into the config: keys and sequence indexes. */
export type Path = readonly (string | number)[];

/** Formats a path the way errors show it: `listeners.cart.filters[2].weights.cart-v3`. */
export function formatPath(path: Path): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else out += out ? `.${seg}` : seg;
  }
  return out;
}

export interface Location { file: string; line: number; column: number }

/** Maps a config path to the file, line and column that set it (the last file that has it wins). */
export type Locator = (path: Path, atKey?: boolean) => Location | undefined;

/**
 * The text a scalar at a path was written as (`1.10` for the number 1.1), from the
 * file that set it; undefined when unknown (not YAML, or not a scalar).
 */
export type SourceOf = (path: Path) => string | undefined;

/** Raw config text from files or a push, merged and located, before validation. */
export interface RawConfig {
  /** The merged plain value (`undefined` when nothing parsed). */
  value: unknown;
  locate: Locator;
  /** How scalars were written, so the validator can tell `1.10` from `1.1`. */
  sourceOf?: SourceOf;
  /** YAML syntax errors and unreadable files; any of them rejects the config. */
  issues: ConfigIssue[];
  /** Directory that relative plugin paths resolve against (the first file's). */
  baseDir: string;
  /** Files that made it, for the watcher and for messages. */
  files: string[];
}

/** One parsed text. The `yaml` Document (node positions) is made only when asked for. */
interface Source { name: string; text: string; parsed: { doc: Document; lines: LineCounter } | null }

/** The Document of a source, parsed on first use: only error reports and odd scalars need it. */
function docOf(src: Source): { doc: Document; lines: LineCounter } {
  if (src.parsed === null) {
    const lines = new LineCounter();
    src.parsed = { doc: parseDocument(src.text, { lineCounter: lines, uniqueKeys: true, prettyErrors: false }), lines };
  }
  return src.parsed;
}

/** An alias (`*name`) outside quotes: the text goes through `yaml`, which bounds alias expansion. */
const ALIAS_RE = /(?:^|[\s,[{:-])\*[^\s,\]}]/m;

/**
 * Parses one text to a plain value. js-yaml (core schema, the same YAML 1.2 types as
 * `yaml`'s default) is about 20 times faster than building `yaml`'s Document, which
 * kept a 1,000-listener reload over 150 ms; `yaml` still reports syntax errors (its
 * messages and positions) and handles texts with aliases (its maxAliasCount stops
 * "billion laughs" expansion).
 */
function parseText(src: Source): { value: unknown } | { errors: ConfigIssue[] } {
  if (!ALIAS_RE.test(src.text)) {
    try {
      return { value: jsyaml.load(src.text, { schema: jsyaml.CORE_SCHEMA, filename: src.name }) };
    } catch (err) {
      if (!(err instanceof jsyaml.YAMLException)) throw err;
      // fall through: `yaml` says where and why, in the same words as for every other error
    }
  }
  const { doc, lines } = docOf(src);
  // Each error names the nearest key it is under (before, every one said "(root)").
  const issue = (offset: number, message: string): ConfigIssue => {
    const pos = lines.linePos(offset);
    // An error at the indentation of a line is about what the line starts with.
    let at = offset;
    while (src.text[at] === ' ') at++;
    return { code: 'SY_ERR_CONFIG_YAML', path: formatPath(pathAt(doc, at)), file: src.name, line: pos.line, column: pos.col, message };
  };
  if (doc.errors.length) return { errors: doc.errors.map((e) => issue(e.pos[0], firstLine(e.message))) };
  const aliases = aliasProblems(doc);
  if (aliases.length) return { errors: aliases.map((a) => issue(a.offset, a.message)) };
  try {
    return { value: doc.toJS({ maxAliasCount: 100 }) };
  } catch (err) {
    return { errors: [{ code: 'SY_ERR_CONFIG_YAML', path: '', file: src.name, line: 1, column: 1, message: firstLine((err as Error).message) }] };
  }
}

type Collection = YAMLMap | YAMLSeq;

function isCollection(n: unknown): n is Collection {
  return isMap(n) || isSeq(n);
}

/** Whether `offset` falls within a node's text (its value and the comments or space it owns). */
function within(n: YamlNode, offset: number): boolean {
  const r = n.range;
  return !!r && r[0] <= offset && offset <= r[2];
}

/** The text a mapping key stands for in a path. */
function keyText(key: unknown): string {
  return isScalar(key) ? String(key.value) : String(key);
}

/**
 * The path of the nearest key at or before `offset`: down through the collections
 * whose text holds it, to the last entry that starts at or before it. An offset on
 * a key itself (a duplicate key) gives the mapping the key is in.
 */
export function pathAt(doc: Document, offset: number): Path {
  const path: (string | number)[] = [];
  let node: unknown = doc.contents;
  while (isCollection(node)) {
    let i = -1;
    const items = node.items as unknown[];
    for (let j = 0; j < items.length; j++) {
      const it = items[j];
      const start = isPair(it) ? ((it.key as YamlNode | null)?.range?.[0] ?? (it.value as YamlNode | null)?.range?.[0]) : (it as YamlNode | null)?.range?.[0];
      if (start === undefined) continue;
      if (start > offset) break;
      i = j;
    }
    if (i < 0) break;
    const it = items[i];
    let next: unknown;
    if (isPair(it)) {
      const key = it.key as YamlNode | null;
      if (key?.range && offset <= key.range[1]) break;
      path.push(keyText(key));
      next = it.value;
    } else {
      path.push(i);
      next = it;
    }
    if (!isCollection(next) || !within(next, offset)) break;
    node = next;
  }
  return path;
}

/**
 * Aliases that cannot be expanded: one whose anchor is not set before it, and one
 * inside the node it names (a cycle: expanding it never ends, and a config with
 * one used to fail with a bare RangeError). Every cycle has such an alias, since
 * an alias can only name an anchor set before it.
 */
function aliasProblems(doc: Document): { offset: number; message: string }[] {
  const out: { offset: number; message: string }[] = [];
  const walk = (n: unknown): void => {
    if (isAlias(n)) {
      const target = n.resolve(doc);
      const at = n.range?.[0] ?? 0;
      if (!target) out.push({ offset: at, message: `alias *${n.source} names no anchor set before it` });
      else if (target.range && target.range[0] <= at && at < target.range[2]) {
        out.push({ offset: at, message: `alias *${n.source} is inside the node it names (&${n.source}): it would repeat itself forever` });
      }
    } else if (isMap(n)) {
      for (const p of n.items) { walk(p.key); walk(p.value); }
    } else if (isSeq(n)) {
      for (const x of n.items) walk(x);
    }
  };
  walk(doc.contents);
  return out;
}

/** Reads and merges `--config` files: later files override earlier ones key by key. */
export async function loadConfigFiles(files: readonly string[], cwd = process.cwd()): Promise<RawConfig> {
  const texts: { name: string; text: string }[] = [];
  const issues: ConfigIssue[] = [];
  for (const f of files) {
    const abs = isAbsolute(f) ? f : resolve(cwd, f);
    try {
      texts.push({ name: f, text: await readFile(abs, 'utf8') });
    } catch (err) {
      issues.push({ code: 'SY_ERR_CONFIG_FILE', path: '', file: f, message: `cannot read: ${(err as Error).message}` });
    }
  }
  const first = files[0] ? resolve(cwd, files[0], '..') : cwd;
  const raw = parseConfigTexts(texts, first);
  raw.issues.unshift(...issues);
  raw.files = files.map((f) => (isAbsolute(f) ? f : resolve(cwd, f)));
  return raw;
}

/** Parses YAML (or JSON, which is YAML) texts and merges them in order. */
export function parseConfigTexts(texts: readonly { name: string; text: string }[], baseDir: string): RawConfig {
  const issues: ConfigIssue[] = [];
  const sources: Source[] = [];
  let merged: unknown = undefined;
  for (const { name, text } of texts) {
    const src: Source = { name, text, parsed: null };
    const parsed = parseText(src);
    if ('errors' in parsed) {
      issues.push(...parsed.errors);
      continue;
    }
    const value = parsed.value;
    // Fix: an empty document (only comments, e.g. an override file with everything
    // commented out) parses to null; merged as a value it replaced the whole config
    // with null. It contributes nothing instead.
    if (value === null || value === undefined) continue;
    sources.push(src);
    merged = mergeConfig(merged, value);
  }
  // Fix: a config with no content at all (every file empty or only comments) was a
  // valid config with nothing in it, so a truncated or emptied file, e.g. seen by the
  // file watcher halfway through a save, removed every listener. It is an error;
  // an explicit `{}` still means "nothing".
  if (merged === undefined && texts.length > 0 && issues.length === 0) {
    const last = texts[texts.length - 1]!.name;
    issues.push({ code: 'SY_ERR_CONFIG_REQUIRED', path: '', file: last, line: 1, column: 1,
      message: texts.length === 1 ? 'the config is empty' : 'the config is empty (every file is empty or only comments)' });
  }
  // Fix: the file that set a path is the last one that has it *unless a later file
  // replaced an ancestor* (a list or scalar replaces, null removes): then earlier
  // files no longer count (before, an error under a replaced list was located in an
  // earlier file that happened to have the path). And a path that no file has (a
  // required key that is missing) is located at its nearest ancestor that a file has,
  // so every issue of a YAML config carries a line and column.
  const find = (path: Path): Found | undefined => {
    for (let i = sources.length - 1; i >= 0; i--) {
      const r = findIn(sources[i]!, path);
      if (r === 'absent') continue;
      return r === 'replaced' ? undefined : r;
    }
    return undefined;
  };
  const locate: Locator = (path, atKey) => {
    for (let n = path.length; n >= 0; n--) {
      const f = find(path.slice(0, n));
      const target = f && (((n < path.length || atKey) && f.key) || f.node || f.key);
      const offset = target?.range?.[0];
      if (f && offset !== undefined) {
        const pos = docOf(f.src).lines.linePos(offset);
        return { file: f.src.name, line: pos.line, column: pos.col };
      }
    }
    return undefined;
  };
  const sourceOf: SourceOf = (path) => {
    const node = find(path)?.node;
    return isScalar(node) && typeof node.source === 'string' ? node.source : undefined;
  };
  return { value: merged, locate, sourceOf, issues, baseDir, files: [] };
}

function firstLine(s: string): string {
  const i = s.indexOf('\n');
  return i < 0 ? s : s.slice(0, i);
}

interface Found { src: Source; node: YamlNode | undefined; key: YamlNode | undefined }

/**
 * The node at `path` in one source (and the key it sits under); 'absent' when a
 * mapping on the way lacks the key (an earlier file may still set it: mappings
 * merge); 'replaced' when this source put a list, a scalar or null on the way, or
 * lacks the key below a list item (lists replace: earlier files do not count).
 */
function findIn(src: Source, path: Path): Found | 'absent' | 'replaced' {
  const { doc } = docOf(src);
  let node: unknown = doc.contents;
  let key: YamlNode | undefined;
  let inList = false;
  for (const seg of path) {
    if (isAlias(node)) node = node.resolve(doc);
    if (isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(seg));
      if (!pair) return inList ? 'replaced' : 'absent';
      key = pair.key as YamlNode;
      node = pair.value;
    } else if (isSeq(node)) {
      inList = true;
      node = node.items[seg as number];
      key = undefined;
      if (node === undefined) return 'replaced';
    } else {
      return 'replaced';
    }
  }
  return { src, node: (node ?? undefined) as YamlNode | undefined, key };
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
    else defineOwn(out, k, Object.hasOwn(out, k) ? mergeConfig(out[k], v) : v);
  }
  return out;
}

/** A config that arrives as an object (JSON from the admin API) has no lines to point at. */
export function rawFromObject(value: unknown, baseDir: string): RawConfig {
  return { value, locate: () => undefined, issues: [], baseDir, files: [] };
}

/**
 * `obj[key] = value` that also works for the key "__proto__" (an assignment would
 * set the prototype and drop the entry, hiding it from the validator).
 */
export function defineOwn(obj: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

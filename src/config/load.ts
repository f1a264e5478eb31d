import { readFile } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';
import { Document, isMap, isPair, isScalar, LineCounter, parseDocument, type Node as YamlNode } from 'yaml';
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

/** Raw config text from files or a push, merged and located, before validation. */
export interface RawConfig {
  /** The merged plain value (`undefined` when nothing parsed). */
  value: unknown;
  locate: Locator;
  /** YAML syntax errors and unreadable files; any of them rejects the config. */
  issues: ConfigIssue[];
  /** Directory that relative plugin paths resolve against (the first file's). */
  baseDir: string;
  /** Files that made it, for the watcher and for messages. */
  files: string[];
}

interface Source { name: string; doc: Document; lines: LineCounter }

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
    const lines = new LineCounter();
    const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: false });
    if (doc.errors.length) {
      for (const e of doc.errors) {
        const pos = lines.linePos(e.pos[0]);
        issues.push({ code: 'SY_ERR_CONFIG_YAML', path: '', file: name, line: pos.line, column: pos.col, message: firstLine(e.message) });
      }
      continue;
    }
    sources.push({ name, doc, lines });
    merged = mergeConfig(merged, doc.toJS({ maxAliasCount: 100 }));
  }
  const locate: Locator = (path, atKey) => {
    for (let i = sources.length - 1; i >= 0; i--) {
      const loc = locateIn(sources[i]!, path, atKey);
      if (loc) return loc;
    }
    return undefined;
  };
  return { value: merged, locate, issues, baseDir, files: [] };
}

function firstLine(s: string): string {
  const i = s.indexOf('\n');
  return i < 0 ? s : s.slice(0, i);
}

function locateIn(src: Source, path: Path, atKey?: boolean): Location | undefined {
  let node: unknown = src.doc.contents;
  let keyNode: YamlNode | undefined;
  for (const seg of path) {
    if (isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(seg));
      if (!pair) return undefined;
      keyNode = pair.key as YamlNode;
      node = pair.value;
    } else if (node && typeof node === 'object' && 'items' in node && Array.isArray((node as { items: unknown[] }).items)) {
      node = (node as { items: unknown[] }).items[seg as number];
      keyNode = undefined;
      if (node === undefined) return undefined;
    } else {
      return undefined;
    }
  }
  const target = (atKey && keyNode) || (node as YamlNode | null) || keyNode;
  const offset = target?.range?.[0];
  if (offset === undefined) return undefined;
  const pos = src.lines.linePos(offset);
  return { file: src.name, line: pos.line, column: pos.col };
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
    else out[k] = k in out ? mergeConfig(out[k], v) : v;
  }
  return out;
}

/** A config that arrives as an object (JSON from the admin API) has no lines to point at. */
export function rawFromObject(value: unknown, baseDir: string): RawConfig {
  return { value, locate: () => undefined, issues: [], baseDir, files: [] };
}

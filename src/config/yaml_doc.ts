/**
 * What the `yaml` Document of a config text is used for: where a path is (error
 * locations), which key an error offset is under, aliases that cannot be
 * expanded, duplicate keys, and how numbers and booleans were written. Each of
 * these is one pass over the Document, or one lookup per path segment, not yaml's
 * own duplicate-key check, which compares every key of a mapping with every other
 * (quadratic: 16 s with the event loop blocked for a config of 40,000 roles with
 * one error; issue 11, item 7).
 */
import { Document, isAlias, isMap, isPair, isScalar, isSeq, type Node as YamlNode, type Pair, type YAMLMap, type YAMLSeq } from 'yaml';
import type { Path } from './path.js';

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

/** Where an item of a collection starts (a pair: its key, or its value when it has no key). */
function startOf(it: unknown): number | undefined {
  if (isPair(it)) return (it.key as YamlNode | null)?.range?.[0] ?? (it.value as YamlNode | null)?.range?.[0];
  return (it as YamlNode | null)?.range?.[0];
}

/** Per collection: its items' indexes and start offsets, in order, for a binary search (made once). */
const starts = new WeakMap<Collection, { at: number[]; index: number[] }>();

function startsOf(c: Collection): { at: number[]; index: number[] } {
  let s = starts.get(c);
  if (!s) {
    s = { at: [], index: [] };
    const items = c.items as unknown[];
    for (let j = 0; j < items.length; j++) {
      const at = startOf(items[j]);
      // Items are in text order; one that starts before the last kept one is not (cannot happen, but keep the search sound).
      if (at === undefined || (s.at.length && at < s.at[s.at.length - 1]!)) continue;
      s.at.push(at);
      s.index.push(j);
    }
    starts.set(c, s);
  }
  return s;
}

/** The index of the last item that starts at or before `offset`, or -1. */
function lastItemAtOrBefore(c: Collection, offset: number): number {
  const { at, index } = startsOf(c);
  let lo = 0;
  let hi = at.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (at[mid]! <= offset) { found = mid; lo = mid + 1; } else hi = mid - 1;
  }
  return found < 0 ? -1 : index[found]!;
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
    const i = lastItemAtOrBefore(node, offset);
    if (i < 0) break;
    const it = (node.items as unknown[])[i];
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

/** A problem at an offset of the text. */
export interface TextProblem { offset: number; message: string }

/**
 * Aliases that cannot be expanded: one whose anchor is not set before it, and one
 * inside the node it names (a cycle: expanding it never ends, and would fail with
 * a bare RangeError). Every cycle has such an alias, since
 * an alias can only name an anchor set before it.
 */
export function aliasProblems(doc: Document): TextProblem[] {
  const out: TextProblem[] = [];
  const stack: unknown[] = [doc.contents];
  while (stack.length) {
    const n = stack.pop();
    if (isAlias(n)) {
      const target = n.resolve(doc);
      const at = n.range?.[0] ?? 0;
      if (!target) out.push({ offset: at, message: `alias *${n.source} names no anchor set before it` });
      else if (target.range && target.range[0] <= at && at < target.range[2]) {
        out.push({ offset: at, message: `alias *${n.source} is inside the node it names (&${n.source}): it would repeat itself forever` });
      }
    } else if (isMap(n)) {
      for (let i = n.items.length - 1; i >= 0; i--) stack.push(n.items[i]!.value, n.items[i]!.key);
    } else if (isSeq(n)) {
      for (let i = n.items.length - 1; i >= 0; i--) stack.push(n.items[i]);
    }
  }
  return out.sort((a, b) => a.offset - b.offset);
}

/**
 * Keys that a mapping has twice, at the second one, in yaml's words ("Map keys
 * must be unique"), with yaml's notion of equal (scalars of the same type and
 * value). One pass with a set per mapping.
 */
export function duplicateKeys(doc: Document): TextProblem[] {
  const out: TextProblem[] = [];
  const stack: unknown[] = [doc.contents];
  while (stack.length) {
    const n = stack.pop();
    if (isMap(n)) {
      const seen = new Set<string>();
      for (const p of n.items) {
        const k = p.key;
        if (isScalar(k)) {
          const id = `${typeof k.value}:${String(k.value)}`;
          if (seen.has(id)) out.push({ offset: k.range?.[0] ?? 0, message: 'Map keys must be unique' });
          else seen.add(id);
        }
        stack.push(p.key, p.value);
      }
    } else if (isSeq(n)) {
      for (const x of n.items) stack.push(x);
    }
  }
  return out.sort((a, b) => a.offset - b.offset);
}

/** Per mapping: its pairs by key text (the last one wins, as in the value), made on first lookup. */
const pairIndex = new WeakMap<YAMLMap, Map<string, Pair>>();

function pairOf(m: YAMLMap, key: string): Pair | undefined {
  let idx = pairIndex.get(m);
  if (!idx) {
    idx = new Map();
    for (const p of m.items) if (isPair(p) && isScalar(p.key)) idx.set(String(p.key.value), p as Pair);
    pairIndex.set(m, idx);
  }
  return idx.get(key);
}

/** A node at a path, and the key it sits under. */
export interface NodeAt { node: YamlNode | undefined; key: YamlNode | undefined }

/**
 * The node at `path` in one Document (and the key it sits under); 'absent' when a
 * mapping on the way lacks the key (an earlier file may still set it: mappings
 * merge); 'replaced' when this text put a list, a scalar or null on the way, or
 * lacks the key below a list item (lists replace: earlier files do not count).
 * Aliases on the way are followed. One indexed lookup per segment.
 */
export function nodeAt(doc: Document, path: Path): NodeAt | 'absent' | 'replaced' {
  let node: unknown = doc.contents;
  let key: YamlNode | undefined;
  let inList = false;
  for (const seg of path) {
    if (isAlias(node)) node = node.resolve(doc);
    if (isMap(node)) {
      const pair = pairOf(node, String(seg));
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
  return { node: (node ?? undefined) as YamlNode | undefined, key };
}

/**
 * Every number or boolean whose text as written is not how its value reads
 * (`1.10`, `042`, `0x1F`, `True`), with its path; aliases are followed, so a path
 * through one is found too (the Document's value was built, so this is bounded).
 */
export function oddScalarsOfDoc(doc: Document): [Path, string][] {
  const out: [Path, string][] = [];
  const walk = (n: unknown, path: (string | number)[], depth: number): void => {
    if (depth > 1000) return;
    if (isAlias(n)) return walk(n.resolve(doc), path, depth + 1);
    if (isScalar(n)) {
      const v = n.value;
      if ((typeof v === 'number' || typeof v === 'boolean') && typeof n.source === 'string' && n.source !== String(v)) out.push([[...path], n.source]);
    } else if (isMap(n)) {
      for (const p of n.items) {
        if (!isScalar(p.key)) continue;
        path.push(String(p.key.value));
        walk(p.value, path, depth + 1);
        path.pop();
      }
    } else if (isSeq(n)) {
      n.items.forEach((x, i) => {
        path.push(i);
        walk(x, path, depth + 1);
        path.pop();
      });
    }
  };
  walk(doc.contents, [], 0);
  return out;
}

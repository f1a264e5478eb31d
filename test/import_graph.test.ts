import test from 'ava';
import { readdir, readFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { ROOT } from './helpers.js';

/* The layout's promise (README, "Architecture"): src/ modules import one way, with no circle. */

/** Every .ts file under `dir`. */
async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...await sources(p));
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

// Static imports and re-exports, type-only ones included (a type import is a tie in the design too), and import('…').
const IMPORT = /(?:^|\n)\s*(?:import|export)\b[^'"`;]*?\bfrom\s*['"](\.{1,2}\/[^'"]+)['"]|\bimport\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)|(?:^|\n)\s*import\s*['"](\.{1,2}\/[^'"]+)['"]/g;

/** src/ as a graph: file (relative to src/) → the src/ files it imports. */
async function importGraph(): Promise<Map<string, string[]>> {
  const src = join(ROOT, 'src');
  const files = await sources(src);
  const known = new Set(files.map((f) => relative(src, f)));
  const graph = new Map<string, string[]>();
  for (const file of files) {
    const text = await readFile(file, 'utf8');
    const to: string[] = [];
    for (const m of text.matchAll(IMPORT)) {
      const spec = (m[1] ?? m[2] ?? m[3])!;
      const target = relative(src, resolve(dirname(file), spec.replace(/\.js$/, '.ts')));
      if (!known.has(target)) throw new Error(`${relative(ROOT, file)} imports ${spec}, which is no file of src/`);
      to.push(target);
    }
    graph.set(relative(src, file), to);
  }
  return graph;
}

/** Every import circle, each as the files along it (Tarjan's strongly connected components of more than one file, or a file importing itself). */
function circles(graph: Map<string, string[]>): string[][] {
  let index = 0;
  const at = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string): void => {
    at.set(v, index);
    low.set(v, index++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!at.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, at.get(w)!));
    }
    if (low.get(v) === at.get(v)) {
      const part: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        part.push(w);
      } while (w !== v);
      if (part.length > 1 || graph.get(v)!.includes(v)) found.push(part.sort());
    }
  };
  for (const v of graph.keys()) if (!at.has(v)) visit(v);
  return found;
}

test('no import circle among src/ modules (type-only imports count)', async (t) => {
  const graph = await importGraph();
  const edges = [...graph.values()].reduce((n, to) => n + to.length, 0);
  // The reader must see the house: a parse that found nothing would find no circle either.
  t.true(graph.size > 40 && edges > 100, `read ${graph.size} files and ${edges} imports`);
  t.deepEqual(circles(graph), [], 'each list is one circle: files that import each other round a loop');
});

test('the circle finder finds a circle, and a self-import', (t) => {
  t.deepEqual(circles(new Map([['a.ts', ['b.ts']], ['b.ts', ['c.ts']], ['c.ts', ['a.ts']], ['d.ts', ['a.ts']]])), [['a.ts', 'b.ts', 'c.ts']]);
  t.deepEqual(circles(new Map([['a.ts', ['a.ts']]])), [['a.ts']]);
  t.deepEqual(circles(new Map([['a.ts', ['b.ts']], ['b.ts', []]])), []);
});

test('the data path sits under the control path: nothing in listeners/, upstream/, http/, net/ imports reload/', async (t) => {
  const graph = await importGraph();
  const up = [...graph].flatMap(([from, to]) => /^(listeners|upstream|http|net)\//.test(from) ? to.filter((x) => x.startsWith('reload/')).map((x) => `${from} → ${x}`) : []);
  t.deepEqual(up, []);
});

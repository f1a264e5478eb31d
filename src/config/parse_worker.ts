/**
 * The config parser's worker thread (issue 11, item 7): parses and merges config
 * texts exactly as the main thread does (parseInline), so a big text never blocks
 * the event loop that serves requests. Jobs (workerData):
 *
 * - `parse`: sends the merged value in slices (ValueOp messages of about SLICE
 *   nodes each: the main thread puts one slice together per event-loop turn),
 *   then `done` with the issues and the numbers/booleans written otherwise than
 *   they read.
 * - `locate`: answers where each path is (building the `yaml` Documents needed).
 *
 * Then it waits to be terminated (so every message is delivered first).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { parseInline, type ConfigText, type LocateQuery, type ValueOp, type WorkerMessage } from './load.js';

/** About this many nodes per message: a few milliseconds to deserialize on the main thread. */
const SLICE = 4000;

const port = parentPort!;
const post = (m: WorkerMessage): void => port.postMessage(m);
/**
 * The main thread answers each slice once it has put it together and let its
 * event loop run: Node delivers every message already queued on a port in one
 * go, so slices sent all at once were one long block again.
 */
let acked: (() => void) | null = null;
port.on('message', () => { acked?.(); }); // (also keeps the worker alive until it is terminated)
const ack = (): Promise<void> => new Promise((resolve) => { acked = resolve; });

/** Nodes in `v` (1 for a scalar), counting up to `cap` only. */
function size(v: unknown, cap: number): number {
  let n = 0;
  const stack: unknown[] = [v];
  while (stack.length && n < cap) {
    const x = stack.pop();
    n++;
    if (Array.isArray(x)) for (const y of x) stack.push(y);
    else if (typeof x === 'object' && x !== null) for (const y of Object.values(x)) stack.push(y);
  }
  return n;
}

/** The value as slices of ops: subtrees under SLICE nodes whole, bigger mappings and lists as containers and then their entries. */
function* slices(value: unknown): Generator<ValueOp[]> {
  let ops: ValueOp[] = [];
  let cost = 0;
  let next = 1;
  const stack: [number, string | number, unknown][] = value === undefined ? [] : [[0, 'v', value]];
  while (stack.length) {
    const [parent, key, v] = stack.pop()!;
    const n = typeof v === 'object' && v !== null ? size(v, SLICE) : 1;
    if (n >= SLICE) {
      const id = next++;
      ops.push([parent, key, Array.isArray(v) ? 2 : 1, id]);
      cost++;
      // Pushed in reverse, so entries are sent (and keys put back) in order.
      const entries: [string | number, unknown][] = Array.isArray(v) ? v.map((x, i) => [i, x]) : Object.entries(v as object);
      for (let i = entries.length - 1; i >= 0; i--) stack.push([id, entries[i]![0], entries[i]![1]]);
      continue;
    }
    ops.push([parent, key, 0, v]);
    cost += n;
    if (cost >= SLICE) {
      yield ops;
      ops = [];
      cost = 0;
    }
  }
  if (ops.length) yield ops;
}

const job = workerData as { op: 'parse'; texts: ConfigText[] } | { op: 'locate'; texts: ConfigText[]; queries: LocateQuery[] };
try {
  const parsed = parseInline(job.texts, Infinity);
  if (job.op === 'parse') {
    for (const ops of slices(parsed.value)) {
      post({ ops });
      await ack();
    }
    post({ done: { issues: parsed.issues, odd: parsed.odd() } });
  } else {
    post({ located: parsed.locateHere(job.queries) });
  }
} catch (err) {
  post({ failed: (err as Error)?.stack ?? String(err) });
}

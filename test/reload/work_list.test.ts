/**
 * A generation's list of work in flight: the units link through themselves, and a
 * unit that leaves is referenced by nothing in the list (what keeps finished
 * requests from being kept alive by it, see work_list.ts).
 */
import test from 'ava';
import type { Destroyable } from '../../src/listeners/plan.js';
import { WorkList } from '../../src/reload/work_list.js';

function work(name: string): Destroyable & { name: string } {
  return { name, workPrev: null, workNext: null, destroy() {} };
}

const names = (list: WorkList) => list.toArray().map((w) => (w as ReturnType<typeof work>).name);

test('units are added and removed in any order; the size follows', (t) => {
  const list = new WorkList();
  const [a, b, c, d] = ['a', 'b', 'c', 'd'].map(work);
  for (const w of [a!, b!, c!, d!]) list.add(w);
  t.is(list.size, 4);
  t.deepEqual(names(list), ['d', 'c', 'b', 'a']);
  t.true(list.delete(b!), 'from the middle');
  t.true(list.delete(d!), 'the head');
  t.true(list.delete(a!), 'the tail');
  t.deepEqual(names(list), ['c']);
  t.is(list.size, 1);
  t.true(list.delete(c!));
  t.is(list.size, 0);
  t.deepEqual(names(list), []);
});

test('a removed unit keeps no link to the others, and they none to it', (t) => {
  const list = new WorkList();
  const [a, b, c] = ['a', 'b', 'c'].map(work);
  list.add(a!);
  list.add(b!);
  list.add(c!);
  list.delete(b!);
  t.is(b!.workPrev, null);
  t.is(b!.workNext, null);
  t.is(c!.workNext, a!, 'its neighbours are linked to each other');
  t.is(a!.workPrev, c!);
});

test('removing a unit that is not in the list (twice, or after clear) changes nothing', (t) => {
  const list = new WorkList();
  const [a, b] = ['a', 'b'].map(work);
  list.add(a!);
  t.false(list.delete(b!), 'never added');
  t.true(list.delete(a!));
  t.false(list.delete(a!), 'a second time');
  t.is(list.size, 0);
  list.add(a!);
  list.add(b!);
  list.clear();
  t.is(list.size, 0);
  t.is(b!.workNext, null, 'clear unlinks every unit');
  t.false(list.delete(a!), 'after clear');
  t.is(list.size, 0);
});

test('a unit destroyed while the list is walked leaves it without breaking the walk (drain cuts each unit)', (t) => {
  const list = new WorkList();
  const units = ['a', 'b', 'c'].map(work);
  for (const u of units) {
    u.destroy = () => list.delete(u);
    list.add(u);
  }
  for (const w of list.toArray()) w.destroy();
  t.is(list.size, 0);
});

/**
 * LinkedSet: members link through themselves, and a member that leaves is
 * referenced by nothing in the set (what keeps finished requests and closed
 * connections from being kept alive by it, see src/linked_set.ts).
 */
import test from 'ava';
import { LinkedSet, type Linked } from '../src/linked_set.js';

interface Member extends Linked<Member> { name: string; destroy(): void }

function member(name: string): Member {
  return { name, linkPrev: null, linkNext: null, destroy() {} };
}

const names = (set: LinkedSet<Member>) => set.toArray().map((m) => m.name);

test('members are added and removed in any order; the size follows', (t) => {
  const set = new LinkedSet<Member>();
  const [a, b, c, d] = ['a', 'b', 'c', 'd'].map(member);
  for (const m of [a!, b!, c!, d!]) set.add(m);
  t.is(set.size, 4);
  t.deepEqual(names(set), ['d', 'c', 'b', 'a']);
  t.true(set.delete(b!), 'from the middle');
  t.true(set.delete(d!), 'the head');
  t.true(set.delete(a!), 'the tail');
  t.deepEqual(names(set), ['c']);
  t.is(set.size, 1);
  t.true(set.delete(c!));
  t.is(set.size, 0);
  t.deepEqual(names(set), []);
});

test('a removed member keeps no link to the others, and they none to it', (t) => {
  const set = new LinkedSet<Member>();
  const [a, b, c] = ['a', 'b', 'c'].map(member);
  set.add(a!);
  set.add(b!);
  set.add(c!);
  set.delete(b!);
  t.is(b!.linkPrev, null);
  t.is(b!.linkNext, null);
  t.is(c!.linkNext, a!, 'its neighbours are linked to each other');
  t.is(a!.linkPrev, c!);
});

test('removing a member that is not in the set (twice, or after clear) changes nothing', (t) => {
  const set = new LinkedSet<Member>();
  const [a, b] = ['a', 'b'].map(member);
  set.add(a!);
  t.false(set.delete(b!), 'never added');
  t.true(set.delete(a!));
  t.false(set.delete(a!), 'a second time');
  t.is(set.size, 0);
  set.add(a!);
  set.add(b!);
  set.clear();
  t.is(set.size, 0);
  t.is(b!.linkNext, null, 'clear unlinks every member');
  t.false(set.delete(a!), 'after clear');
  t.is(set.size, 0);
});

test('a member removed while the set is walked does not break the walk (a drain cuts each unit)', (t) => {
  const set = new LinkedSet<Member>();
  const members = ['a', 'b', 'c'].map(member);
  for (const m of members) {
    m.destroy = () => set.delete(m);
    set.add(m);
  }
  for (const m of set.toArray()) m.destroy();
  t.is(set.size, 0);
});

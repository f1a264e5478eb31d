/**
 * Name-keyed tables (roles, vsets, channels, listeners, components, meta and
 * metadata keys, weights, outcomes) are objects without a prototype: looking up a
 * name that is not there finds nothing, also for names that Object.prototype has
 * (`toString`, `constructor`, `hasOwnProperty`, valid names all), and a key
 * `__proto__` is an entry like any other instead of the prototype. In a plain
 * object, a listener named `toString` would find Object.prototype.toString in the
 * previous config's listeners, and the apply that had just swapped in a generation
 * would throw and answer 409 "nothing changed" (issue 11, item 8).
 */
export type Table<T> = Record<string, T>;

/** An empty table (an object with a null prototype). */
export function table<T>(): Table<T> {
  return Object.create(null) as Table<T>;
}

/** A table of these entries, in order; a later entry with the same key wins. */
export function tableOf<T>(entries: Iterable<readonly [string, T]>): Table<T> {
  const out = table<T>();
  for (const [k, v] of entries) out[k] = v;
  return out;
}

/** A copy of `from` as a table (own enumerable keys, in order). */
export function tableCopy<T>(...from: readonly Readonly<Record<string, T>>[]): Table<T> {
  return Object.assign(table<T>(), ...from) as Table<T>;
}

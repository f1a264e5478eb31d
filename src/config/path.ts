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

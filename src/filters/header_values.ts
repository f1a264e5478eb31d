import type { IncomingMessage } from 'node:http';

/**
 * The values of a request header, one per occurrence. Node joins most repeated
 * headers with ", " in `req.headers`; only when the joined value has a comma do we
 * look at `rawHeaders` to split the occurrences back out (a single value may
 * contain a comma too). Headers that Node keeps once (Host, User-Agent,
 * Authorization, …) yield their first occurrence. `name` must be lower case.
 */
// hot path
export function headerValues(req: IncomingMessage, name: string): string | string[] | undefined {
  const v = req.headers[name];
  if (v === undefined || typeof v !== 'string' || v.indexOf(',') === -1) return v;
  const raw = req.rawHeaders;
  let first: string | undefined;
  let all: string[] | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i]!;
    if (k.length !== name.length || k.toLowerCase() !== name) continue;
    if (first === undefined) first = raw[i + 1]!;
    else (all ??= [first]).push(raw[i + 1]!);
  }
  // Node keeps only the first occurrence of some headers (User-Agent, Host, …): then
  // `v` is that occurrence itself, and the later raw ones must not count, even when
  // the first has a comma (a real User-Agent does: "(KHTML, like Gecko)").
  if (all === undefined || v === first) return v;
  return all;
}

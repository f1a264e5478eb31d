import type { FilterDescriptor, FilterValidateContext, HeaderEdit, HttpExchange } from './api.js';

const VARIABLES = ['role', 'vset', 'listener', 'generation'] as const;
/**
 * Headers the proxy owns; editing them would break framing or the hop-by-hop rules
 * (and undici refuses to send `expect`: the proxy answers 100-continue itself).
 */
const RESERVED = new Set(['connection', 'content-length', 'transfer-encoding', 'keep-alive', 'upgrade', 'te', 'trailer', 'host', 'expect']);
/**
 * What a field value may not hold (RFC 9110 §5.5: field-vchar, SP, HTAB, obs-text),
 * exactly what Node and undici refuse to send: a value they refuse, if it passed
 * validation, would break every request on the listener (issue 11).
 */
const BAD_VALUE_CHAR = /[^\t\x20-\x7e\x80-\xff]/u;

export interface HeadersConfig { request: HeaderEdit[]; response: HeaderEdit[] }

/**
 * `headers` (http): set, add and remove request headers (before forwarding) and
 * response headers (upstream answers and every answer switchyard makes on the
 * listener, wherever the filter stands in the chain). Values may use
 * `%role%`, `%vset%`, `%listener%`, `%generation%`, filled in when the request is
 * forwarded, so the role is the one that actually serves it. The edits are
 * compiled once per generation; per request the filter only attaches them.
 */
export const headers: FilterDescriptor<HeadersConfig, HttpExchange> = {
  type: 'headers',
  scope: 'http',
  validate(raw, ctx) {
    ctx.allowKeys(raw, ['request', 'response']);
    if (raw.request === undefined && raw.response === undefined) ctx.report('SY_ERR_CONFIG_REQUIRED', [], 'a headers filter needs request, response, or both');
    return { request: compile(raw.request, 'request', ctx), response: compile(raw.response, 'response', ctx) };
  },
  // Response edits are the listener's, not this filter's place in the chain: they
  // reach every answer, also one a filter before this one made (issue 11).
  responseHeaderEdits(config) {
    return config.response;
  },
  create(config) {
    const request = config.request.length ? config.request : null;
    // hot path
    return function headers(ex: HttpExchange): boolean {
      if (request !== null) ex.requestHeaderEdits = ex.requestHeaderEdits === null ? request : ex.requestHeaderEdits.concat(request);
      return true;
    };
  },
};

function compile(raw: unknown, side: 'request' | 'response', ctx: FilterValidateContext): HeaderEdit[] {
  const o = ctx.obj(raw, [side], ['set', 'add', 'remove'], { message: 'must be a mapping with set, add and/or remove' });
  if (!o) return [];
  const out: HeaderEdit[] = [];
  const name = (n: unknown, at: (string | number)[]): string | undefined => {
    // Anything that is not a header name, a missing one too, is a value error here.
    const ok = ctx.headerName(n, at, { required: true, code: 'SY_ERR_CONFIG_VALUE', message: `${JSON.stringify(n)} is not a header name` });
    if (ok !== undefined && RESERVED.has(ok.toLowerCase())) {
      ctx.report('SY_ERR_CONFIG_VALUE', at, `${ok} is managed by the proxy and cannot be edited`);
      return undefined;
    }
    return ok;
  };
  ctx.list(o.remove, [side, 'remove'], { message: 'must be a list of header names' })?.forEach((n, i) => {
    const ok = name(n, [side, 'remove', i]);
    if (ok) out.push({ op: 'remove', name: ok, lower: ok.toLowerCase(), value: [] });
  });
  for (const op of ['set', 'add'] as const) {
    const m = ctx.obj(o[op], [side, op], null, { message: 'must map header names to values' });
    if (!m) continue;
    for (const [n, v] of Object.entries(m)) {
      const ok = name(n, [side, op, n]);
      if (!ok) continue;
      if (typeof v !== 'string' && typeof v !== 'number') {
        ctx.report('SY_ERR_CONFIG_TYPE', [side, op, n], 'must be a string');
        continue;
      }
      const value = template(String(v), (bad) => ctx.report('SY_ERR_CONFIG_VALUE', [side, op, n], `unknown variable %${bad}%; use ${VARIABLES.map((x) => `%${x}%`).join(', ')}`));
      const bad = BAD_VALUE_CHAR.exec(String(v));
      if (bad !== null) ctx.report('SY_ERR_CONFIG_VALUE', [side, op, n], badValueMessage(bad[0]));
      else out.push({ op, name: ok, lower: ok.toLowerCase(), value });
    }
  }
  return out;
}

function badValueMessage(c: string): string {
  const u = `U+${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`;
  if (c === '\r' || c === '\n' || c === '\0') return `a header value cannot contain CR, LF or NUL (found ${u})`;
  if (c.charCodeAt(0) > 0xff) return `a header value can only hold Latin-1 text: ${u} is not (percent-encode it, or use ASCII)`;
  return `a header value cannot contain the control character ${u} (only tab, space and visible characters)`;
}

/** Splits `a %role% b` into ['a ', 0, ' b'] (numbers index VARIABLES). `%%` is a literal %. */
function template(s: string, unknown: (name: string) => void): (string | number)[] {
  const parts: (string | number)[] = [];
  let last = 0;
  for (const m of s.matchAll(/%([a-z]*)%/g)) {
    if (m.index! > last) parts.push(s.slice(last, m.index));
    if (m[1] === '') parts.push('%');
    else {
      const i = VARIABLES.indexOf(m[1] as (typeof VARIABLES)[number]);
      if (i < 0) unknown(m[1]!);
      parts.push(i);
    }
    last = m.index! + m[0].length;
  }
  if (last < s.length) parts.push(s.slice(last));
  return parts;
}

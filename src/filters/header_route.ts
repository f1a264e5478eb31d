import type { FilterDescriptor, HttpExchange } from './api.js';
import { headerValues } from './header_values.js';
import { BlockList, isIP } from 'node:net';
import { RE2JS } from 're2js';

type Match =
  | { kind: 'equals'; value: string }
  | { kind: 'prefix'; value: string }
  /** The pattern as written (checked by compileRegex; compiled per generation, so configs compare by text). */
  | { kind: 'regex'; value: string }
  | { kind: 'present' };

/** A rule pins one role when its header matches, or picks the role whose meta[key] equals the header. */
type Rule =
  | { header: string; match: Match; invert: boolean; role: string; fallback: boolean }
  | { header: string; meta: string; fallback: boolean };

export interface HeaderRouteConfig {
  rules: Rule[];
  /** Client addresses that may pin a role (addresses and CIDR blocks); absent = any client. */
  allowFrom?: string[];
}

const MATCH_KINDS = ['equals', 'prefix', 'regex', 'present'] as const;
const RULE_KEYS: readonly string[] = ['header', ...MATCH_KINDS, 'invert', 'role', 'meta', 'fallback'];

/**
 * `header_route`: the first rule that matches picks the role, unless an earlier
 * filter already picked one. Repeated headers: a match rule matches when any
 * occurrence matches (`invert`: when none does); a meta rule picks only when every
 * occurrence names the same value, since a client cannot ask for two versions.
 *
 * A pinned role with no endpoint that can take work fails the request (`fallback:
 * strict`, the default), or (`fallback: weighted`) leaves the choice to the
 * listener's split and says so in the response's `x-switchyard-fallback`.
 * `allowFrom` limits pinning to some client addresses: any client can send a
 * header, so a header alone should not reach an unreleased version.
 */
export const headerRoute: FilterDescriptor<HeaderRouteConfig, HttpExchange> = {
  type: 'header_route',
  scope: 'http',

  validate(raw, ctx) {
    ctx.allowKeys(raw, ['rules', 'allowFrom']);
    const rules: Rule[] = [];
    let allowFrom: string[] | undefined;
    const from = ctx.list(raw.allowFrom, ['allowFrom'], {
      nonEmpty: true, message: 'must be a non-empty list of client addresses or CIDR blocks (127.0.0.1, 10.0.0.0/8, ::1)',
    });
    if (from) {
      allowFrom = [];
      from.forEach((a, i) => {
        if (typeof a === 'string' && parseCidr(a)) allowFrom!.push(a);
        else ctx.report('SY_ERR_CONFIG_VALUE', ['allowFrom', i], `${JSON.stringify(a)} is not an IP address or CIDR block`);
      });
    }
    const list = ctx.list(raw.rules, ['rules'], { required: true, nonEmpty: true, message: 'must be a non-empty list of rules' });
    if (!list) return { rules };
    list.forEach((r, i) => {
      const p = ['rules', i];
      // Anything but a mapping, a missing item too, is a wrong rule.
      const o = ctx.obj(r, p, RULE_KEYS, { required: true, code: 'SY_ERR_CONFIG_TYPE', message: 'a rule must be a mapping' });
      if (!o) return;
      const name = ctx.headerName(o.header, [...p, 'header'], { required: true, message: 'must be a header name' });
      if (name === undefined) return;
      const header = name.toLowerCase();
      const mode = ctx.oneOf(o.fallback, [...p, 'fallback'], ['weighted', 'strict']);
      if (o.fallback !== undefined && mode === undefined) return;
      const fallback = mode === 'weighted';
      if ((o.role === undefined) === (o.meta === undefined)) {
        ctx.report('SY_ERR_CONFIG_REQUIRED', p, 'a rule needs exactly one of role (pin a role) or meta (pick the role whose meta matches)');
        return;
      }
      const kinds = MATCH_KINDS.filter((k) => o[k] !== undefined);
      if (o.meta !== undefined) {
        if (kinds.length || o.invert !== undefined) {
          ctx.report('SY_ERR_CONFIG_VALUE', p, 'a meta rule takes the header value itself; it has no equals, prefix, regex, present or invert');
          return;
        }
        if (typeof o.meta !== 'string' || !o.meta) {
          ctx.report('SY_ERR_CONFIG_TYPE', [...p, 'meta'], 'must be a meta key');
          return;
        }
        const key = o.meta;
        // Own keys only: `meta: constructor` must not find Object.prototype's.
        if (!ctx.roles.some((role) => { const m = ctx.roleMeta(role); return m !== undefined && Object.hasOwn(m, key); })) {
          ctx.report('SY_ERR_CONFIG_VALUE', [...p, 'meta'], `no role of this listener's vset has meta "${key}"`);
          return;
        }
        rules.push({ header, meta: key, fallback });
        return;
      }
      const role = ctx.str(o.role, [...p, 'role'], { message: 'must be a role name' });
      if (role === undefined) return;
      if (!ctx.roles.includes(role)) {
        ctx.report('SY_ERR_ROLE_NOT_IN_VSET', [...p, 'role'], `role "${role}" is not in the listener's target vset (${ctx.roles.join(', ')})`);
        return;
      }
      if (kinds.length !== 1) {
        ctx.report('SY_ERR_CONFIG_REQUIRED', p, `a role rule needs exactly one of ${MATCH_KINDS.join(', ')}`);
        return;
      }
      const invert = ctx.bool(o.invert, [...p, 'invert'], { message: 'must be true or false' });
      if (o.invert !== undefined && invert === undefined) return;
      const kind = kinds[0]!;
      const value = o[kind];
      let match: Match;
      if (kind === 'present') {
        if (value !== true) {
          ctx.report('SY_ERR_CONFIG_VALUE', [...p, 'present'], 'must be true (use invert: true for "absent")');
          return;
        }
        match = { kind };
      } else {
        const text = ctx.str(value, [...p, kind], { message: 'must be a string' });
        if (text === undefined) return;
        const re = kind === 'regex' ? compileRegex(text) : null;
        if (typeof re === 'string') {
          ctx.report('SY_ERR_CONFIG_VALUE', [...p, kind], re);
          return;
        }
        match = { kind, value: text };
      }
      rules.push({ header, match, invert: invert === true, role, fallback });
    });
    return allowFrom ? { rules, allowFrom } : { rules };
  },

  create(config, ctx) {
    // Everything resolved once per generation: role indexes, meta tables.
    const compiled = config.rules.map((r) => {
      if ('meta' in r) {
        const byValue = new Map<string, number[]>();
        ctx.roles.forEach((role, i) => {
          if (!Object.hasOwn(role.meta, r.meta)) return; // as in validate: own keys only
          const v = role.meta[r.meta]!;
          byValue.set(v, [...(byValue.get(v) ?? []), i]);
        });
        return { header: r.header, test: null, invert: false, role: -1, byValue, fallback: r.fallback };
      }
      return { header: r.header, test: matcher(r.match), invert: r.invert, role: ctx.roleIndex(r.role), byValue: null, fallback: r.fallback };
    });
    const n = compiled.length;
    const roles = ctx.roles;
    const allowed = config.allowFrom ? allowList(config.allowFrom) : null;

    /** Pins `role`, unless it cannot take work and the rule lets the split decide instead. */
    function pin(ex: HttpExchange, role: number, fallback: boolean): true {
      if (!fallback) ex.role = role;
      else if (roles[role]!.available || !roles.some((r) => r.available)) {
        // Available, or no role is: then the pinned one is as good a guess as any.
        ex.role = role;
        ex.fallback = true;
      } else ex.fallbackFrom = role;
      return true;
    }

    /** One of several roles a meta value names: an available one when there is one. */
    function oneOf(matched: number[]): number {
      if (matched.length === 1) return matched[0]!;
      const up = matched.filter((i) => roles[i]!.available);
      const from = up.length > 0 ? up : matched;
      return from[Math.floor(Math.random() * from.length)]!;
    }

    // hot path
    return function headerRoute(ex: HttpExchange): boolean {
      if (ex.role >= 0) return true;
      if (allowed !== null && !allowed(ex.remoteAddress)) return true;
      const req = ex.req;
      for (let i = 0; i < n; i++) {
        const rule = compiled[i]!;
        const v = headerValues(req, rule.header);
        if (rule.byValue !== null) {
          const key = v === undefined || typeof v === 'string' ? v : agreed(v);
          const matched = key === undefined ? undefined : rule.byValue.get(key);
          if (matched !== undefined) {
            return pin(ex, oneOf(matched), rule.fallback);
          }
          continue;
        }
        let hit = false;
        if (v !== undefined) {
          if (typeof v === 'string') hit = rule.test!(v);
          else for (let j = 0; j < v.length && !hit; j++) hit = rule.test!(v[j]!);
        }
        if (hit !== rule.invert) return pin(ex, rule.role, rule.fallback);
      }
      return true;
    };
  },
};

function matcher(m: Match): (v: string) => boolean {
  switch (m.kind) {
    case 'equals': { const s = m.value; return (v) => v === s; }
    case 'prefix': { const s = m.value; return (v) => v.startsWith(s); }
    case 'regex': {
      const re = compileRegex(m.value);
      if (typeof re === 'string') throw new Error(re); // validate refused it already
      return (v) => re.test(v);
    }
    case 'present': return () => true;
  }
}

/**
 * A `regex` rule's pattern, compiled for RE2 (re2js, a pure-JS port): matching takes
 * time linear in the header's length whatever the pattern. On JavaScript's engine
 * (backtracking) `^(a+)+$` took 3.6 s for a 30-character header, doubling with each
 * character, and froze every listener of the process meanwhile (issue 11). The
 * pattern is written in JavaScript syntax, as before (it must parse as a RegExp, no
 * flags, unanchored), and translated; what RE2 cannot run in linear time
 * (backreferences, lookahead, lookbehind) is refused here, with the reason.
 * Returns the compiled pattern, or the message for a pattern that cannot be used.
 */
export function compileRegex(pattern: string): RE2JS | string {
  try {
    new RegExp(pattern);
  } catch (err) {
    return `not a valid regular expression: ${(err as Error).message}`;
  }
  const unsupported = nonRegular(pattern);
  if (unsupported !== null) {
    return `${unsupported} cannot be matched in linear time: header_route runs regexes on RE2, which has no backreferences, lookahead or lookbehind`;
  }
  try {
    return RE2JS.compile(RE2JS.translateRegExp(pattern));
  } catch (err) {
    return `RE2 cannot compile this regular expression (header_route runs regexes on RE2): ${(err as Error).message}`;
  }
}

/**
 * The first backreference or lookaround in a JavaScript pattern (outside character
 * classes), or null. Checked before the translation, which would turn `\k<name>`
 * into the literal text `k<name>` instead of refusing it.
 */
function nonRegular(p: string): string | null {
  let inClass = false;
  for (let i = 0; i < p.length; i++) {
    const c = p[i]!;
    if (c === '\\') {
      const n = p[i + 1] ?? '';
      if (!inClass && n >= '1' && n <= '9') return `the backreference \\${n}`;
      if (!inClass && n === 'k' && p[i + 2] === '<') return 'the named backreference \\k<…>';
      i++;
      continue;
    }
    if (inClass) {
      if (c === ']') inClass = false;
      continue;
    }
    if (c === '[') inClass = true;
    else if (c === '(' && p[i + 1] === '?') {
      const a = p[i + 2];
      if (a === '=' || a === '!') return `the lookahead (?${a}`;
      if (a === '<' && (p[i + 3] === '=' || p[i + 3] === '!')) return `the lookbehind (?<${p[i + 3]}`;
    }
  }
  return null;
}

/** The one value all occurrences agree on, or undefined when they disagree. */
function agreed(vs: string[]): string | undefined {
  for (let i = 1; i < vs.length; i++) if (vs[i] !== vs[0]) return undefined;
  return vs[0];
}

/** `a.b.c.d`, `a.b.c.d/n`, `v6`, `v6/n` → its parts; undefined when malformed. */
function parseCidr(s: string): { ip: string; prefix: number; family: 'ipv4' | 'ipv6' } | undefined {
  const [ip = '', bits, extra] = s.split('/');
  const v = isIP(ip);
  if (v === 0 || extra !== undefined) return undefined;
  const max = v === 4 ? 32 : 128;
  const prefix = bits === undefined ? max : /^\d{1,3}$/.test(bits) ? Number(bits) : NaN;
  if (!(prefix >= 0 && prefix <= max)) return undefined;
  return { ip, prefix, family: v === 4 ? 'ipv4' : 'ipv6' };
}

/** A test of client addresses against a list of addresses and CIDR blocks (IPv4-mapped IPv6 counts as IPv4). */
function allowList(entries: readonly string[]): (address: string) => boolean {
  const list = new BlockList();
  for (const e of entries) {
    const c = parseCidr(e)!;
    list.addSubnet(c.ip, c.prefix, c.family);
  }
  return (address) => {
    const a = address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
    const v = isIP(a);
    return v !== 0 && list.check(a, v === 4 ? 'ipv4' : 'ipv6');
  };
}

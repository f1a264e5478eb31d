// The typed checks a filter's validate context offers (FilterValidateContext:
// str, int, number, bool, duration, headerName, oneOf, obj, list): a plugin filter
// that uses one gets the very error the core config or a built-in filter gets for
// the same mistake (code and message), at its own path and line:column.
import test, { type ExecutionContext } from 'ava';
import { join } from 'node:path';
import { checkConfig } from '../../src/reload/check.js';
import { parseConfigTexts } from '../../src/config/load.js';
import { formatIssue, type ConfigCode, type ConfigIssue } from '../../src/errors.js';
import { ROOT } from '../helpers.js';

const PLUGIN = join(ROOT, 'test/fixtures/checks-plugin.mjs');

/** Roles, a vset and a listener `web` whose first filter is `checks` with `entry`; `top`, `listener` and `filters` add to it. */
function config(p: { entry: string; top?: string; listener?: string; filters?: string }): string {
  return `plugins: ["${PLUGIN}"]
${p.top ?? ''}
roles:
  a: { channels: { http: { endpoints: ["127.0.0.1:7001"] } } }
  b: { channels: { http: { endpoints: ["127.0.0.1:7002"] } } }
vsets:
  svc: { channels: [http], roles: { a: {}, b: {} } }
listeners:
  web:
    address: 127.0.0.2:80
    target: svc.http
${p.listener ?? ''}
    filters:
      - type: checks
        name: n
        share: 50
${p.entry}
${p.filters ?? ''}
`;
}

async function issuesOf(text: string): Promise<ConfigIssue[]> {
  const r = await checkConfig(parseConfigTexts([{ name: 'test.yaml', text }], ROOT), {});
  return r.ok ? [] : r.issues;
}

/** 1-based line and column of the first `needle` after `after` in `text`. */
function at(text: string, needle: string, after = ''): { line: number; column: number } {
  const i = text.indexOf(needle, after ? text.indexOf(after) : 0);
  if (i < 0) throw new Error(`"${needle}" is not in the text`);
  const before = text.slice(0, i);
  return { line: before.split('\n').length, column: i - before.lastIndexOf('\n') };
}

function one(t: ExecutionContext, issues: readonly ConfigIssue[], path: string): ConfigIssue {
  const hits = issues.filter((i) => i.path === path);
  if (hits.length !== 1) throw new Error(`expected one issue at ${path}, got:\n${issues.map(formatIssue).join('\n')}`);
  t.pass();
  return hits[0]!;
}

interface Pair {
  /** What is compared with what. */
  what: string;
  code: ConfigCode;
  /** The YAML text: the reference (a core key or a built-in's) and the plugin's key, both wrong the same way. */
  text: string;
  ref: { path: string; needle: string; after?: string };
  plugin: { path: string; needle: string; after?: string };
}

/** The plugin's issue has the reference's code and message, and each is located at its own value. */
async function same(t: ExecutionContext, p: Pair): Promise<void> {
  const issues = await issuesOf(p.text);
  const ref = one(t, issues, p.ref.path);
  const got = one(t, issues, p.plugin.path);
  t.is(ref.code, p.code, `${p.what}: the reference's code`);
  t.is(got.code, ref.code, `${p.what}: code`);
  t.is(got.message, ref.message, `${p.what}: message`);
  t.deepEqual({ file: ref.file, line: ref.line, column: ref.column }, { file: 'test.yaml', ...at(p.text, p.ref.needle, p.ref.after) }, `${p.what}: where the reference is`);
  t.deepEqual({ file: got.file, line: got.line, column: got.column }, { file: 'test.yaml', ...at(p.text, p.plugin.needle, p.plugin.after) }, `${p.what}: where the plugin's is`);
}

const F = 'listeners.web.filters[0]';

test('ctx.str: a missing or non-string value reads as the core config\'s (accessLog.path)', async (t) => {
  await same(t, {
    what: 'wrong type',
    code: 'SY_ERR_CONFIG_TYPE',
    text: config({ entry: '', top: 'accessLog: { path: 5 }' }).replace('name: n', 'name: 5'),
    ref: { path: 'accessLog.path', needle: '5' },
    plugin: { path: `${F}.name`, needle: '5', after: 'name:' },
  });
  // Missing: each is located at what the file has nearest (the accessLog key, the filter entry).
  await same(t, {
    what: 'missing',
    code: 'SY_ERR_CONFIG_REQUIRED',
    text: config({ entry: '', top: 'accessLog: {}' }).replace('        name: n\n', ''),
    ref: { path: 'accessLog.path', needle: 'accessLog' },
    plugin: { path: `${F}.name`, needle: 'type: checks' },
  });
});

test('ctx.int: out of range and wrong type read as the core config\'s (listeners.<name>.maxConnections)', async (t) => {
  for (const [bad, code] of [['0', 'SY_ERR_CONFIG_VALUE'], ['1.5', 'SY_ERR_CONFIG_VALUE'], ['many', 'SY_ERR_CONFIG_TYPE']] as const) {
    await same(t, {
      what: `count ${bad}`,
      code,
      text: config({ entry: `        count: ${bad}`, listener: `    maxConnections: ${bad}` }),
      ref: { path: 'listeners.web.maxConnections', needle: bad, after: 'maxConnections:' },
      plugin: { path: `${F}.count`, needle: bad, after: 'count:' },
    });
  }
});

test('ctx.duration: malformed and wrong type read as the core config\'s (drainTimeout)', async (t) => {
  for (const [bad, code] of [['5 minutes', 'SY_ERR_CONFIG_VALUE'], ['2', 'SY_ERR_CONFIG_TYPE'], ['[1s]', 'SY_ERR_CONFIG_TYPE']] as const) {
    await same(t, {
      what: `wait ${bad}`,
      code,
      text: config({ entry: `        wait: ${bad}`, top: `drainTimeout: ${bad}` }),
      ref: { path: 'drainTimeout', needle: bad, after: 'drainTimeout:' },
      plugin: { path: `${F}.wait`, needle: bad, after: 'wait:' },
    });
  }
});

test('ctx.oneOf reads as the core config\'s choice (listeners.<name>.protocol)', async (t) => {
  await same(t, {
    what: 'mode sctp',
    code: 'SY_ERR_CONFIG_VALUE',
    text: config({ entry: '        mode: sctp', listener: '    protocol: sctp' }),
    ref: { path: 'listeners.web.protocol', needle: 'sctp', after: 'protocol:' },
    plugin: { path: `${F}.mode`, needle: 'sctp', after: 'mode:' },
  });
});

test('ctx.obj: an unknown key (located at the key, with its hint) and a non-mapping read as the core config\'s (limits)', async (t) => {
  await same(t, {
    what: 'unknown key',
    code: 'SY_ERR_CONFIG_UNKNOWN_KEY',
    text: config({ entry: '        limits: { maxConection: 5 }', top: 'limits: { maxConection: 5 }' }),
    ref: { path: 'limits.maxConection', needle: 'maxConection' },
    plugin: { path: `${F}.limits.maxConection`, needle: 'maxConection', after: '- type: checks' },
  });
  await same(t, {
    what: 'not a mapping',
    code: 'SY_ERR_CONFIG_TYPE',
    text: config({ entry: '        limits: [1]', top: 'limits: [1]' }),
    ref: { path: 'limits', needle: '[1]' },
    plugin: { path: `${F}.limits`, needle: '[1]', after: '- type: checks' },
  });
});

test('ctx.list: a non-list reads as the core config\'s (admin.public)', async (t) => {
  await same(t, {
    what: 'not a list',
    code: 'SY_ERR_CONFIG_TYPE',
    text: config({ entry: '        items: ready', top: 'admin: { public: ready }' }),
    ref: { path: 'admin.public', needle: 'ready' },
    plugin: { path: `${F}.items`, needle: 'ready', after: 'items:' },
  });
});

test('ctx.headerName reads as the weighted filter\'s stickyHeader', async (t) => {
  await same(t, {
    what: 'not a token',
    code: 'SY_ERR_CONFIG_VALUE',
    text: config({ entry: '        header: "x user"', filters: '      - { type: weighted, weights: { a: 1 }, stickyHeader: "x user" }' }),
    ref: { path: 'listeners.web.filters[1].stickyHeader', needle: '"x user"', after: 'stickyHeader:' },
    plugin: { path: `${F}.header`, needle: '"x user"', after: 'header:' },
  });
});

test('ctx.bool reads as the header_route filter\'s invert', async (t) => {
  await same(t, {
    what: 'not a boolean',
    code: 'SY_ERR_CONFIG_TYPE',
    text: config({ entry: '        invert: "yes"', filters: '      - { type: header_route, rules: [{ header: x-a, present: true, role: a, invert: "yes" }] }' }),
    ref: { path: 'listeners.web.filters[1].rules[0].invert', needle: '"yes"', after: 'header_route' },
    plugin: { path: `${F}.invert`, needle: '"yes"', after: 'invert:' },
  });
});

test('ctx.number with a built-in\'s options reads as the fault filter\'s percent', async (t) => {
  await same(t, {
    what: 'out of range',
    code: 'SY_ERR_CONFIG_VALUE',
    text: config({ entry: '', filters: '      - { type: fault, abort: { percent: 101, status: 503 } }' }).replace('share: 50', 'share: 101'),
    ref: { path: 'listeners.web.filters[1].abort.percent', needle: '101', after: 'type: fault' },
    plugin: { path: `${F}.share`, needle: '101', after: 'share:' },
  });
});

test('the checks\' own wording, and what a value that passes gives', async (t) => {
  const issues = await issuesOf(config({ entry: `        plainHeader: "a b"
        plainBool: "yes"
        plainNumber: 2
        nonEmpty: []` }));
  t.deepEqual(issues.map((i) => [i.path, i.code, i.message]), [
    [`${F}.plainHeader`, 'SY_ERR_CONFIG_VALUE', 'must be a header name (an RFC 9110 token), got string "a b"'],
    [`${F}.plainBool`, 'SY_ERR_CONFIG_TYPE', 'must be true or false, got string "yes"'],
    [`${F}.plainNumber`, 'SY_ERR_CONFIG_VALUE', 'must be a number from 0 to 1, got number 2'],
    [`${F}.nonEmpty`, 'SY_ERR_CONFIG_TYPE', 'must be a non-empty list, got an empty list'],
  ]);
  const r = await checkConfig(parseConfigTexts([{ name: 'test.yaml', text: config({ entry: `        count: 3
        wait: 1.5s
        mode: tcp
        limits: { maxConnections: 2 }
        items: [x]
        header: X-User
        invert: true
        plainNumber: 0.5` }) }], ROOT), {});
  if (!r.ok) return t.fail(r.issues.map(formatIssue).join('\n'));
  t.deepEqual(r.config.listeners.web!.filters[0]!.config, {
    name: 'n', count: 3, wait: 1500, mode: 'tcp', limits: { maxConnections: 2 }, items: ['x'], header: 'X-User', invert: true, share: 50,
    plainHeader: undefined, plainBool: undefined, plainNumber: 0.5, nonEmpty: undefined,
  });
});

// Issue 11, item 9: values that would break requests are refused with their path
// (a 0s timeout that meant "never", maxKeys without bound), a recursive YAML alias
// is a located config error (it was a bare RangeError), and a YAML syntax error
// names the nearest key (every one said "(root)").
import test from 'ava';
import { checkConfig } from '../../src/reload/check.js';
import { parseConfigTexts, rawFromObject } from '../../src/config/load.js';
import { formatIssue, type ConfigIssue } from '../../src/errors.js';
import { ROOT, putConfig, runCli, startSidecar, startUpstream, tempFiles, uniqueHost } from '../helpers.js';

async function issuesOf(text: string): Promise<ConfigIssue[]> {
  const r = await checkConfig(parseConfigTexts([{ name: 'test.yaml', text }], ROOT), {});
  return r.ok ? [] : r.issues;
}

function show(issues: readonly ConfigIssue[]): string {
  return issues.map(formatIssue).join('\n') || '(none)';
}

/** 1-based line and column of the first `needle` in `text`. */
function at(text: string, needle: string): { line: number; column: number } {
  const i = text.indexOf(needle);
  if (i < 0) throw new Error(`"${needle}" is not in the text`);
  const before = text.slice(0, i);
  return { line: before.split('\n').length, column: i - before.lastIndexOf('\n') };
}

const ROLE = `roles:
  a: { channels: { http: { endpoints: ["127.0.0.1:7001"] } } }
`;

for (const key of ['connect', 'upstream', 'headers', 'request', 'keepAlive']) {
  test(`timeouts.${key}: 0s is refused with its path (it meant "never")`, async (t) => {
    const text = `${ROLE}listeners:\n  web:\n    target: a\n    timeouts: { ${key}: 0s }\n`;
    const issues = await issuesOf(text);
    t.deepEqual(issues.map((i) => `${i.code} ${i.path}`), [`SY_ERR_CONFIG_VALUE listeners.web.timeouts.${key}`], show(issues));
    t.like(issues[0], { file: 'test.yaml', ...at(text, '0s') });
    t.regex(issues[0]!.message, /more than 0/);
  });
}

test('timeouts.idle and timeouts.total still take 0s for "none"', async (t) => {
  const r = await checkConfig(parseConfigTexts([{ name: 'test.yaml', text: `${ROLE}listeners:
  web: { target: a, timeouts: { total: 0s } }
  pipe: { target: a, protocol: tcp, address: "127.0.0.2:7000", timeouts: { idle: 0s } }
` }], ROOT), {});
  if (!r.ok) return t.fail(show(r.issues));
  t.is(r.config.listeners.web!.timeouts.totalMs, 0);
  t.is(r.config.listeners.pipe!.timeouts.idleMs, 0);
});

test('ratelimit maxKeys: 1e20 is refused (the buckets are in memory), 1000000 is the most', async (t) => {
  const comp = (maxKeys: string) => `components:\n  lim: { type: ratelimit, metadata: { requestsPerSecond: "10", maxKeys: "${maxKeys}" } }\n`;
  for (const bad of ['1e20', '1000001', '0', '2.5']) {
    const issues = await issuesOf(comp(bad));
    t.deepEqual(issues.map((i) => `${i.code} ${i.path}`), ['SY_ERR_CONFIG_VALUE components.lim.metadata.maxKeys'], `${bad}: ${show(issues)}`);
    t.regex(issues[0]?.message ?? '', /from 1 to 1000000/);
  }
  t.deepEqual(await issuesOf(comp('1000000')), []);
});

const RECURSIVE = `roles:
  a: &role
    channels:
      http: { endpoints: ["127.0.0.1:7001"] }
    meta: *role
`;

test('a recursive YAML alias is a config error at the alias, with its path', async (t) => {
  const issues = await issuesOf(RECURSIVE);
  t.deepEqual(issues.map((i) => `${i.code} ${i.path}`), ['SY_ERR_CONFIG_YAML roles.a.meta'], show(issues));
  t.like(issues[0], { file: 'test.yaml', ...at(RECURSIVE, '*role') });
  t.regex(issues[0]!.message, /inside the node it names/);
  // Two anchors that name each other are a cycle too.
  const two = 'roles:\n  a: &x\n    b: &y\n      c: [*x]\n';
  const issues2 = await issuesOf(two);
  t.deepEqual(issues2.map((i) => `${i.code} ${i.path}`), ['SY_ERR_CONFIG_YAML roles.a.b.c[0]'], show(issues2));
});

test('an alias to an anchor not set (yet) is located at the alias', async (t) => {
  const text = `${ROLE}listeners:\n  web: { target: *later }\nx: &later a\n`;
  const issues = await issuesOf(text);
  t.deepEqual(issues.map((i) => `${i.code} ${i.path}`), ['SY_ERR_CONFIG_YAML listeners.web.target'], show(issues));
  t.like(issues[0], at(text, '*later'));
});

test('a config object that contains itself (embedding code) is refused with the path, not a RangeError', async (t) => {
  const role: Record<string, unknown> = { channels: { http: { endpoints: ['127.0.0.1:7001'] } } };
  role.meta = role;
  const r = await checkConfig(rawFromObject({ roles: { a: role } }, ROOT), {});
  t.false(r.ok);
  if (!r.ok) t.true(r.issues.some((i) => i.path === 'roles.a.meta' && /contains itself/.test(i.message)), show(r.issues));
});

test('switchyard validate: a recursive alias exits 1 with file:line:col and path, no stack trace', async (t) => {
  const { dir } = await tempFiles(t, { 'loop.yaml': RECURSIVE });
  const r = await runCli(t, ['validate', '--config', 'loop.yaml'], { cwd: dir });
  const out = `${r.stdout}\n${r.stderr}`;
  t.is(r.code, 1, out);
  const { line, column } = at(RECURSIVE, '*role');
  t.true(out.includes(`loop.yaml:${line}:${column}: roles.a.meta: alias *role is inside the node it names`), out);
  t.notRegex(out, /RangeError|Maximum call stack|\n\s+at /);
});

test('PUT /config with a recursive alias answers 400 with the path, and nothing changes', async (t) => {
  const up = await startUpstream(t, 'A');
  const host = uniqueHost();
  const sc = await startSidecar(t, `roles:\n  a: { channels: { http: { endpoints: ["${up.address}"] } } }\nlisteners:\n  web: { address: "${host}:0", target: a }\n`);
  const r = await putConfig(sc, `${RECURSIVE}listeners:\n  web: { address: "${host}:0", target: a }\n`);
  t.is(r.status, 400, r.body);
  const errors = JSON.parse(r.body).errors as ConfigIssue[];
  t.deepEqual(errors.map((e) => [e.code, e.path]), [['SY_ERR_CONFIG_YAML', 'roles.a.meta']]);
  t.is(sc.runtime.current!.number, 1);
});

// Each broken text, the path its first YAML error names, and where (the needle's position).
const SYNTAX: [string, string, string, string][] = [
  ['an unclosed flow sequence', 'listeners:\n  web:\n    target: a\n    filters: [ { type: weighted\n', 'listeners.web.filters[0].type', ''],
  ['a bad escape in a double-quoted string', 'listeners:\n  web:\n    target: "a\\q"\n', 'listeners.web.target', '\\q'],
  ['a reserved character', 'listeners:\n  web:\n    target: @a\n', 'listeners.web.target', '@a'],
  ['a key without a colon', 'listeners:\n  web:\n    target a\n    address: b\n', 'listeners.web', 'target a'],
  ['an unclosed quote', "listeners:\n  web:\n    target: 'a\n", 'listeners.web.target', ''],
  ['a mis-indented sequence item', 'listeners:\n  web:\n    filters:\n    - type: x\n     rules: []\n', 'listeners.web.filters[1]', ''],
  ['a mis-indented key', 'roles:\n  a:\n    meta: { x: "1" }\n   channels: {}\n', 'roles', ''],
  ['a tab as indentation', 'listeners:\n  web:\n    target: a\n\taddress: x\n', 'listeners.web.target', '\taddress'],
  ['a duplicate key', 'listeners:\n  web:\n    target: a\n    target: b\n', 'listeners.web', 'target: b'],
  ['a duplicate key in a flow mapping', 'roles:\n  a:\n    meta: { v: "1", v: "2" }\n', 'roles.a.meta', 'v: "2"'],
  ['a scalar after a value', 'listeners:\n  web:\n    address: "x" y\n', 'listeners.web.address', 'y\n'],
];

for (const [what, text, path, needle] of SYNTAX) {
  test(`a YAML syntax error names the nearest key: ${what}`, async (t) => {
    const issues = await issuesOf(text);
    t.true(issues.length >= 1 && issues.every((i) => i.code === 'SY_ERR_CONFIG_YAML'), show(issues));
    t.is(issues[0]!.path, path, show(issues));
    t.true(typeof issues[0]!.line === 'number' && typeof issues[0]!.column === 'number', show(issues));
    if (needle) t.like(issues[0], at(text, needle), show(issues));
  });
}

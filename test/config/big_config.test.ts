// Issue 11, item 7: a big config must not stop traffic. A 40,000-role config with
// one error froze the event loop for 16 s: locating the error rebuilt the YAML
// Document with yaml's duplicate-key check, quadratic in a mapping's keys. Now big
// texts are parsed (and errors located) in a worker, the value comes back in
// slices, and validation yields between slices of its work. Serial: each test
// blocks the event loop itself (sync parses to compare with), which would skew
// the measurement of another.
import test from 'ava';
import { checkConfig } from '../../src/reload/check.js';
import { INLINE_PARSE_MAX, parseConfigTexts, parseConfigTextsAsync } from '../../src/config/load.js';
import { formatIssue, type ConfigIssue } from '../../src/errors.js';
import { get, listenerUrl, putConfig, ROOT, startSidecar, startUpstream, uniqueHost } from '../helpers.js';

/** `n` roles r0…; `line(i)` may replace role i's line. */
function roles(n: number, endpoint: string, line: (i: number) => string | undefined = () => undefined): string {
  const out = ['roles:'];
  for (let i = 0; i < n; i++) out.push(line(i) ?? `  r${i}: { meta: { version: "${i}" }, channels: { http: { endpoints: ["${endpoint}"] } } }`);
  return out.join('\n') + '\n';
}

/** 1-based line and column of the first `needle` in `text`. */
function at(text: string, needle: string): { line: number; column: number } {
  const i = text.indexOf(needle);
  if (i < 0) throw new Error(`"${needle}" is not in the text`);
  const before = text.slice(0, i);
  return { line: before.split('\n').length, column: i - before.lastIndexOf('\n') };
}

/** Runs `work` while measuring the longest gap between turns of this process's event loop. */
async function longestBlock<T>(work: () => Promise<T>): Promise<{ result: T; maxMs: number; turns: number }> {
  let last = performance.now();
  let maxMs = 0;
  let turns = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    maxMs = Math.max(maxMs, now - last);
    last = now;
    turns++;
  }, 2);
  try {
    const result = await work();
    maxMs = Math.max(maxMs, performance.now() - last);
    return { result, maxMs, turns };
  } finally {
    clearInterval(timer);
  }
}

function show(issues: readonly ConfigIssue[]): string {
  return issues.map(formatIssue).join('\n') || '(none)';
}

test.serial('PUT /config of 20,000 roles with one error answers 400 with its place, and the event loop keeps turning', async (t) => {
  const up = await startUpstream(t, 'a');
  const host = uniqueHost();
  const small = `roles:\n  a: { channels: { http: { endpoints: ["${up.address}"] } } }\nlisteners:\n  web: { address: "${host}:0", target: a }\n`;
  const sc = await startSidecar(t, small);
  const n = 20_000;
  const bad = `  r${n - 1}: { channels: { http: { endpoints: ["127.0.0.1:port"] } } }`;
  const body = `${roles(n, up.address, (i) => (i === n - 1 ? bad : undefined))}listeners:\n  web: { address: "${host}:0", target: a }\n`.replace('roles:\n', `roles:\n  a: { channels: { http: { endpoints: ["${up.address}"] } } }\n`);
  // Requests keep being answered meanwhile.
  let served = 0;
  let stop = false;
  const traffic = (async () => {
    while (!stop) {
      const r = await get(listenerUrl(sc, 'web'));
      if (r.status === 200) served++;
    }
  })();
  const { result: r, maxMs } = await longestBlock(() => putConfig(sc, body));
  stop = true;
  await traffic;
  t.is(r.status, 400, r.body.slice(0, 500));
  const errors = JSON.parse(r.body).errors as ConfigIssue[];
  const sent = `admin: { address: "127.0.0.1:0" }\n${body}`; // as putConfig sends it
  t.deepEqual(errors.map((e) => [e.code, e.path, e.file, e.line, e.column]),
    [['SY_ERR_CONFIG_VALUE', `roles.r${n - 1}.channels.http.endpoints[0]`, 'PUT /config', at(sent, '"127.0.0.1:port"').line, at(sent, '"127.0.0.1:port"').column]]);
  t.true(served > 0, 'requests were served during the PUT');
  t.log(`longest event-loop block during the PUT: ${maxMs.toFixed(0)} ms; ${served} requests served meanwhile`);
  // Before: 10,000 roles blocked it for 1.3-1.7 s, 40,000 for 16 s (quadratic, so 20,000
  // about 6 s); now a few tens of milliseconds alone. In loaded suite runs the wall-clock gaps
  // reached 920 ms (10,000 roles) and 1,609 ms (20,000): not yet explained (GC of a large heap
  // is the suspect), hence the 3 s bound, still far below what the quadratic path takes.
  t.true(maxMs < 3_000, `the event loop was blocked for ${maxMs.toFixed(0)} ms`);
  t.is(sc.runtime.current!.number, 1);
});

test.serial('a big text is parsed off the main thread to the same value, issues and odd scalars as on it, in slices', async (t) => {
  const n = 8_000;
  const text = roles(n, '127.0.0.1:7001', (i) => {
    if (i === 5) return '  r5: { meta: { __proto__: p, toString: t }, channels: { http: { endpoints: ["127.0.0.1:7001"] } } }';
    if (i === n - 1) return `  r${i}: { meta: { version: 1.10, build: 042, ok: true }, channels: { http: { endpoints: ["127.0.0.1:7001"] } } }`;
    return undefined;
  });
  t.true(text.length > INLINE_PARSE_MAX, 'big enough for the worker');
  let turns = 0;
  let ticking = true;
  const tick = (): void => { if (ticking) { turns++; setImmediate(tick); } };
  setImmediate(tick);
  const off = await parseConfigTextsAsync([{ name: 'big.yaml', text }], ROOT);
  ticking = false;
  const here = parseConfigTexts([{ name: 'big.yaml', text }], ROOT);
  t.deepEqual(off.value, here.value);
  t.deepEqual(off.issues, here.issues);
  t.true(turns >= 10, `the event loop turned ${turns} times while the value came in`);
  const meta = (off.value as { roles: Record<string, { meta: Record<string, unknown> }> }).roles;
  t.deepEqual(Object.keys(meta.r5!.meta), ['__proto__', 'toString'], 'a key __proto__ stays an entry');
  const last = ['roles', `r${n - 1}`, 'meta'];
  t.is(off.sourceOf?.([...last, 'version']), '1.10');
  t.is(off.sourceOf?.([...last, 'build']), '042');
  t.is(off.sourceOf?.([...last, 'ok']), undefined, 'true is written as it reads');
  t.is(here.sourceOf?.([...last, 'version']), '1.10');

  // And the validator says the same about it either way, with the text as written.
  const issues = await checkConfig(off, {});
  t.false(issues.ok);
  if (!issues.ok) {
    t.deepEqual(issues.issues.map((i) => i.path), [`roles.r${n - 1}.meta.version`, `roles.r${n - 1}.meta.build`], show(issues.issues));
    t.regex(issues.issues[0]!.message, /quote it: "1\.10"/);
    t.like(issues.issues[0], { file: 'big.yaml', ...at(text, '1.10') });
  }
});

test.serial('validating a big config yields to the event loop', async (t) => {
  const raw = parseConfigTexts([{ name: 'big.yaml', text: roles(20_000, '127.0.0.1:7001') }], ROOT);
  let turns = 0;
  let ticking = true;
  const tick = (): void => { if (ticking) { turns++; setImmediate(tick); } };
  setImmediate(tick);
  const r = await checkConfig(raw, {});
  ticking = false;
  t.true(r.ok);
  t.true(turns >= 3, `the event loop turned ${turns} times during validation`);
});

test.serial('in a big text, a duplicate key and a recursive alias are found and located (off the main thread)', async (t) => {
  const n = 4_000;
  const dup = `${roles(n, '127.0.0.1:7001')}  r7: { channels: { http: { endpoints: ["127.0.0.1:7002"] } } }\n`;
  const d = await parseConfigTextsAsync([{ name: 'dup.yaml', text: dup }], ROOT);
  t.deepEqual(d.issues.map((i) => [i.code, i.path, i.message, i.line]), [['SY_ERR_CONFIG_YAML', 'roles', 'Map keys must be unique', n + 2]]);

  // An alias sends the text through yaml (bounded alias expansion): bigger than the inline limit, so in the worker.
  const loop = roles(n, '127.0.0.1:7001', (i) => (i === n - 1 ? `  r${i}: &last { channels: { http: { endpoints: ["127.0.0.1:7001"] } }, meta: *last }` : undefined));
  const l = await parseConfigTextsAsync([{ name: 'loop.yaml', text: loop }], ROOT);
  t.deepEqual(l.issues.map((i) => [i.code, i.path, i.line, i.column]), [['SY_ERR_CONFIG_YAML', `roles.r${n - 1}.meta`, at(loop, '*last').line, at(loop, '*last').column]], show(l.issues));
});

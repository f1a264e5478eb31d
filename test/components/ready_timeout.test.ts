// Issue 11, item 11: `components.<name>.readyTimeout` (default 10 s) is the time a
// new instance has for init, inherit and ready together; it was a fixed 10 s.
// A slow-to-ready plugin component (test/fixtures/slow-ready-plugin.mjs) is
// accepted within its readyTimeout and rejected (409, nothing changed) beyond it.
import test from 'ava';
import { join } from 'node:path';
import { request } from 'undici';
import { checkConfig } from '../../src/reload/check.js';
import { parseConfigTexts } from '../../src/config/load.js';
import { formatIssue } from '../../src/errors.js';
import {
  ROOT, adminUrl, oneRole, putConfig, startSidecar, startUpstream, uniqueHost, type ComponentSpec, type ConfigSpec, type Upstream,
} from '../helpers.js';

const PLUGIN = join(ROOT, 'test/fixtures/slow-ready-plugin.mjs');

/** The components' default readyTimeout in these sidecars: shorter than every ready below. */
const DEFAULT_MS = 100;

function config(up: Upstream, host: string, components?: Record<string, ComponentSpec>): ConfigSpec {
  return { plugins: [PLUGIN], components, ...oneRole(up, { address: `${host}:0`, target: 'a' }, { role: 'a' }) };
}

/** A slow_ready component: ready after `readyAfterMs`, with `readyTimeout` when given. */
const slowReady = (readyAfterMs: number, readyTimeout?: string): ComponentSpec =>
  ({ type: 'slow_ready', ...(readyTimeout ? { readyTimeout } : {}), metadata: { readyAfterMs: String(readyAfterMs) } });

async function generations(sc: Parameters<typeof adminUrl>[0]): Promise<{ current: number; history: { generation: number | null; outcome: string; error?: string }[] }> {
  const res = await request(`${adminUrl(sc)}/generations`);
  return (await res.body.json()) as never;
}

test('a component that gets ready within its readyTimeout is accepted, beyond it the change is rejected and nothing changes', async (t) => {
  const up = await startUpstream(t, 'a');
  const host = uniqueHost();
  const sc = await startSidecar(t, config(up, host), { readyTimeoutMs: DEFAULT_MS });

  // Ready after 400 ms, with 2 s to get there: accepted (the default 100 ms would not have done).
  const slow = { slow: slowReady(400, '2s') };
  const t0 = performance.now();
  const ok = await putConfig(sc, config(up, host, slow));
  t.is(ok.status, 200, ok.body);
  t.deepEqual(JSON.parse(ok.body), { generation: 2, components: { slow: 'added' } });
  t.true(performance.now() - t0 >= 390, 'the PUT waited for ready');

  // Ready after 3 s, with 150 ms: rejected, generation 2 keeps serving.
  const late = { ...slow, late: slowReady(3000, '150ms') };
  const t1 = performance.now();
  const no = await putConfig(sc, config(up, host, late));
  t.is(no.status, 409, no.body);
  t.regex(JSON.parse(no.body).errors[0].message, /^component late: ready: timed out after 150 ms/);
  t.true(performance.now() - t1 < 2500, 'rejected at its readyTimeout, not when ready would have answered');
  const g = await generations(sc);
  t.is(g.current, 2);
  t.is(sc.runtime.current!.number, 2);
  t.like(g.history.at(-1), { generation: null, outcome: 'failed' });
  t.deepEqual([...sc.runtime.current!.components.keys()], ['slow']);

  // Without readyTimeout, the default applies.
  const plain = { ...slow, plain: slowReady(400) };
  const dflt = await putConfig(sc, config(up, host, plain));
  t.is(dflt.status, 409, dflt.body);
  t.regex(JSON.parse(dflt.body).errors[0].message, new RegExp(`^component plain: ready: timed out after ${DEFAULT_MS} ms`));

  // A new readyTimeout alone does not re-create a ready instance.
  const longer = { slow: slowReady(400, '3s') };
  const same = await putConfig(sc, config(up, host, longer));
  t.is(same.status, 200, same.body);
  t.deepEqual(JSON.parse(same.body).components, { slow: 'unchanged' });

  // POST /components/<name> keeps the component's readyTimeout for the re-created instance.
  const post = await request(`${adminUrl(sc)}/components/slow`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ metadata: { readyAfterMs: '300', label: 'two' } }) });
  const postBody = await post.body.text();
  t.is(post.statusCode, 200, postBody);
  t.deepEqual(JSON.parse(postBody).components, { slow: 'reinitialized' });
});

test('readyTimeout is a duration, more than 0, checked with its path', async (t) => {
  const text = (v: string) => `
plugins: ["${PLUGIN}"]
components:
  c: { type: slow_ready, readyTimeout: ${v}, metadata: { readyAfterMs: "1" } }
`;
  for (const bad of ['0s', 'soon', '5']) {
    const r = await checkConfig(parseConfigTexts([{ name: 'test.yaml', text: text(bad) }], ROOT), {});
    t.false(r.ok, bad);
    if (!r.ok) t.deepEqual(r.issues.map((i) => [i.code, i.path]), [[bad === '5' ? 'SY_ERR_CONFIG_TYPE' : 'SY_ERR_CONFIG_VALUE', 'components.c.readyTimeout']], r.issues.map(formatIssue).join('\n'));
  }
  const r = await checkConfig(parseConfigTexts([{ name: 'test.yaml', text: text('30s') }], ROOT), {});
  if (!r.ok) return t.fail(r.issues.map(formatIssue).join('\n'));
  t.is(r.config.components.c!.readyTimeoutMs, 30_000);
});

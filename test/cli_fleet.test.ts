// `switchyard fleet push` and `fleet status` through the real CLI (`node bin/switchyard.js`), against a real etcd and a running `switchyard run`.
import test from 'ava';
import { get, runCli, spawnCli, startUpstream, tempFiles, twoRoles, uniqueHost, until, weighted, yaml } from './helpers.js';
import { Etcd } from './etcd_support.js';

const weights = (a: number, b: number): string => yaml({ listeners: { web: { filters: [{ type: 'weighted', weights: { a, b } }] } } } as never);

test('fleet push validates over the bootstrap, writes guarded by mod revision, refuses a stale one; fleet status shows the fleet', async (t) => {
  const etcd = await Etcd.start(t);
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const prefix = '/fleet';
  const { paths } = await tempFiles(t, {
    'boot.yaml': yaml({
      admin: { address: '127.0.0.1:0' },
      ...twoRoles(a, b, { address: `${uniqueHost()}:0`, target: 'svc', filters: [weighted({ a: 100, b: 0 })] }),
      source: { etcd: { endpoints: [etcd.url], prefix, app: 'web', instance: 'pod-a', timeout: '2s' } },
    } as never),
    'to-b.yaml': weights(0, 100),
    'to-a.yaml': weights(100, 0),
    'bad.yaml': 'listeners:\n  web:\n    timeoutz: 5s\n    filters:\n      - type: weighted\n        weights: { a: 1, c: 1 }\n',
    'source.yaml': 'source:\n  etcd: { endpoints: ["http://127.0.0.1:1"], app: x }\n',
  });
  const run = spawnCli(t, ['run', '--config', paths['boot.yaml']!]);
  const [, web] = await run.line(/listener web: (http:\/\/[\d.]+:\d+)/);
  const [, admin] = await run.line(/admin API on (http:\/\/[\d.]+:\d+)/);
  await run.line(/config source: etcd .*\/fleet\/apps\/web over \/fleet\/common, status as \/fleet\/status\/web\/pod-a; revision \d+/);
  const served = async (): Promise<number | undefined> => (JSON.parse((await get(`${admin}/config`)).body) as { revision?: number }).revision;
  const fleet = (...args: string[]) => runCli(t, ['fleet', ...args]);
  const base = ['--etcd', etcd.url, '--prefix', prefix];

  // Invalid: every error, located in the file; nothing written.
  const bad = await fleet('push', ...base, '--app', 'web', '--config', paths['boot.yaml']!, paths['bad.yaml']!);
  t.is(bad.code, 1, bad.stderr);
  t.regex(bad.stderr, new RegExp(`${paths['bad.yaml']}:3:5: listeners\\.web\\.timeoutz: .*SY_ERR_CONFIG_UNKNOWN_KEY`));
  t.regex(bad.stderr, /listeners\.web\.filters\[0\]\.weights\.c/);
  t.regex(bad.stderr, /nothing written to \/fleet\/apps\/web/);
  t.is(await etcd.get(`${prefix}/apps/web`), null);
  // A document may not name a source.
  const src = await fleet('push', ...base, '--common', paths['source.yaml']!);
  t.is(src.code, 1);
  t.regex(src.stderr, /source: only the bootstrap file .*SY_ERR_CONFIG_SOURCE_NOT_BOOTSTRAP/);
  // Without the bootstrap, an app document that only tweaks the bootstrap's listener is not a whole config.
  const alone = await fleet('push', ...base, '--app', 'web', paths['to-b.yaml']!);
  t.is(alone.code, 1);
  t.regex(alone.stderr, /listeners\.web\.target: is required/);

  // Valid: written, and the running sidecar applies it.
  const ok = await fleet('push', ...base, '--app', 'web', '--config', paths['boot.yaml']!, paths['to-b.yaml']!);
  t.is(ok.code, 0, ok.stderr);
  const [, rev] = /^pushed \/fleet\/apps\/web at revision (\d+) \(was absent\)$/.exec(ok.stdout)!;
  await until(async () => (await served()) === Number(rev), 10_000, 'the pushed document');
  t.is((await get(web!)).headers['x-role'], 'b');

  // Someone else writes the key; a push that read it before (--if-revision) is refused.
  const theirs = await etcd.put(`${prefix}/apps/web`, weights(50, 50));
  const stale = await fleet('push', ...base, '--app', 'web', '--config', paths['boot.yaml']!, '--if-revision', rev!, paths['to-a.yaml']!);
  t.is(stale.code, 1);
  t.regex(stale.stderr, new RegExp(`/fleet/apps/web changed since it was read: expected at mod revision ${rev}, now at mod revision ${theirs}; nothing written`));
  t.is(await etcd.get(`${prefix}/apps/web`), weights(50, 50));
  const fresh = await fleet('push', ...base, '--app', 'web', '--config', paths['boot.yaml']!, '--if-revision', String(theirs), paths['to-a.yaml']!);
  t.is(fresh.code, 0, fresh.stderr);
  t.regex(fresh.stdout, new RegExp(`\\(was mod revision ${theirs}\\)`));

  // fleet status: the running instance and a second, rejected one (written as a sidecar would).
  const pushed = Number(/at revision (\d+)/.exec(fresh.stdout)![1]);
  await until(async () => (await served()) === pushed, 10_000, 'the second push');
  await until(async () => (JSON.parse((await etcd.get(`${prefix}/status/web/pod-a`)) ?? '{}') as { revision?: number }).revision === pushed, 10_000, 'the status key');
  await etcd.put(`${prefix}/status/api/pod-9`, JSON.stringify({ generation: 3, revision: 41, result: 'rejected', errors: ['etcd:/fleet/apps/api:2:3: listeners.x: bad (SY_ERR_CONFIG_VALUE)'], appliedAt: new Date(Date.now() - 300_000).toISOString(), source: 'etcd' }));
  const st = await fleet('status', ...base);
  t.is(st.code, 0, st.stderr);
  const lines = st.stdout.split('\n');
  t.regex(lines[0]!, /^APP\s+INSTANCE\s+GENERATION\s+REVISION\s+RESULT\s+AGE$/);
  t.regex(lines[1]!, /^api\s+pod-9\s+3\s+41\s+rejected\s+5m$/);
  t.regex(lines[2]!, new RegExp(`^web\\s+pod-a\\s+\\d+\\s+${pushed}\\s+applied\\s+\\d+s$`));
  t.true(lines.includes('api/pod-9: etcd:/fleet/apps/api:2:3: listeners.x: bad (SY_ERR_CONFIG_VALUE)'), st.stdout);
  const one = await fleet('status', ...base, '--app', 'web');
  t.is(one.stdout.split('\n').length, 2, one.stdout);

  // The sidecar stops: its status key goes with its lease.
  run.child.kill('SIGTERM');
  t.is(await run.exit(), 0);
  t.is((await fleet('status', ...base, '--app', 'web')).stdout, `no instances under /fleet/status/web/ (at revision ${await etcd.revision()})`);
});

test('fleet usage errors exit 2', async (t) => {
  const r = await runCli(t, ['fleet', 'push', '--etcd', 'http://127.0.0.1:1', 'x.yaml']);
  t.is(r.code, 2);
  t.regex(r.stderr, /--common or --app NAME/);
  t.is((await runCli(t, ['fleet', 'status'])).code, 2);
  t.is((await runCli(t, ['fleet', 'frob', '--etcd', 'http://127.0.0.1:1'])).code, 2);
});

test('switchyard validate takes a bootstrap with source.etcd, and lists what is wrong in it', async (t) => {
  const { paths } = await tempFiles(t, {
    'ok.yaml': 'source:\n  etcd:\n    endpoints: ["http://127.0.0.1:2379"]\n    app: cart\n',
    'bad.yaml': 'source:\n  etcd:\n    endpoints: ["127.0.0.1:2379"]\n    prefix: nope\n    instance: "a b"\n    leaseTtl: 1s\n    watch: true\n',
  });
  const ok = await runCli(t, ['validate', '--config', paths['ok.yaml']!]);
  t.is(ok.code, 0, ok.stderr);
  const bad = await runCli(t, ['validate', '--config', paths['bad.yaml']!]);
  t.is(bad.code, 1);
  for (const want of [
    /bad\.yaml:3:17: source\.etcd\.endpoints\[0\]: "127\.0\.0\.1:2379" is not an etcd client URL/,
    /bad\.yaml:4:13: source\.etcd\.prefix: "nope" is not a key prefix/,
    /source\.etcd\.app: is required \(or set SWITCHYARD_APP\)/,
    /bad\.yaml:5:15: source\.etcd\.instance: "a b" must match/,
    /bad\.yaml:6:15: source\.etcd\.leaseTtl: must be at least 2s/,
    /bad\.yaml:7:5: source\.etcd\.watch: .*SY_ERR_CONFIG_UNKNOWN_KEY/,
  ]) t.regex(bad.stderr, want);
});

import test, { type ExecutionContext } from 'ava';
import { mkdir, readFile, rename, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Sidecar } from '../../src/sidecar.js';
import { FileWatcher } from '../../src/reload/file_watch.js';
import {
  metric, spawnCli, startUpstream, tempFiles, twoRoles, uniqueHost, until, untilMetric, weighted, within, yaml, type ConfigSpec,
  type ListenerSpec, type Upstream,
} from '../helpers.js';
import { PLUGIN, eventsNamed, heldUpstream, httpGet, newScope, openGate, refused } from './support.js';

/*
 * Config files as a reload source (DESIGN.md "Data flow" 1): the watcher sees an
 * editor's in-place write, an atomic rename, and a Kubernetes ConfigMap `..data`
 * symlink swap; a bad file is rejected while the running generation serves. Then
 * the real CLI: SIGHUP, `switchyard apply`, and SIGTERM.
 */

/** A whole config file: the admin API on port 0, roles a and b, listener `web` on `host` splitting `w`; `more` and `listener` added. */
function fileConfig(a: Upstream, b: Upstream, host: string, w: [number, number],
  more: ConfigSpec = {}, listener: Partial<ListenerSpec> = {}): string {
  return yaml({
    admin: { address: '127.0.0.1:0' },
    drainTimeout: '5s',
    ...twoRoles(a, b, { address: `${host}:0`, target: 'svc', filters: [weighted({ a: w[0], b: w[1] })], ...listener }),
    ...more,
  });
}

async function startWatching(t: ExecutionContext, files: string[]): Promise<{ sc: Sidecar; log: string[] }> {
  const log: string[] = [];
  const sc = await Sidecar.start({ files, watch: true, log: (l) => log.push(l) });
  t.teardown(() => sc.stop());
  return { sc, log };
}

async function roleOf(sc: Sidecar): Promise<string> {
  const a = sc.addresses().get('web')!;
  return String((await httpGet(`http://${a.host}:${a.port}/`, { agent: false })).headers['x-role']);
}

async function waitForGeneration(sc: Sidecar, n: number): Promise<void> {
  await until(() => (sc.runtime.current?.number ?? 0) >= n, 10_000, `generation ${n}`);
}

test('an editor\'s in-place write of a --config file is picked up', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const host = uniqueHost();
  const { paths } = await tempFiles(t, { 'config.yaml': fileConfig(a, b, host, [1, 0]) });
  const { sc } = await startWatching(t, [paths['config.yaml']!]);
  t.is(await roleOf(sc), 'a');
  await writeFile(paths['config.yaml']!, fileConfig(a, b, host, [0, 1]));
  await waitForGeneration(sc, 2);
  t.is(sc.runtime.current!.source, 'file');
  t.is(await roleOf(sc), 'b');
  t.is(await metric(sc, 'switchyard_config_reloads_total', { source: 'file', result: 'success' }), 2, 'the start and the change');
});

test('one change under a stream of touches is one reload, not one per overlapping check', async (t) => {
  // Touches a debounce period apart make checks overlap: one reads while the next is
  // scheduled. Many large files make each read long enough for that to happen.
  const { paths } = await tempFiles(t, Object.fromEntries(
    Array.from({ length: 300 }, (_, i) => [`f${i}.yaml`, `# ${i}\n`.padEnd(20_000, '#')])));
  const files = Object.values(paths);
  const seen: string[] = [];
  const watcher = new FileWatcher(files, () => { void readFile(files[0]!, 'utf8').then((s) => seen.push(s.slice(0, 1))); }, 20);
  t.teardown(() => watcher.close());
  await watcher.start();
  const content = (c: string) => c.padEnd(20_000, c);
  await writeFile(files[0]!, content('B'));
  // Touches that leave the content whole (a rewrite would show a truncated file in between).
  for (let i = 0; i < 100; i++) {
    await new Promise((r) => setTimeout(r, 20 + Math.random() * 4));
    const now = new Date();
    await utimes(files[0]!, now, now);
  }
  // A last, different change: every check of B is over when C is taken.
  await writeFile(files[0]!, content('C'));
  await until(() => seen.includes('C'), 10_000, 'the change to C');
  t.deepEqual(seen, ['B', 'C']);
});

test('an atomic rename over a --config file is picked up, and so is a change of a later (override) file', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const host = uniqueHost();
  const { dir, paths } = await tempFiles(t, {
    'base.yaml': fileConfig(a, b, host, [1, 0]),
    'override.yaml': 'drainTimeout: 4s\n',
  });
  const { sc } = await startWatching(t, [paths['base.yaml']!, paths['override.yaml']!]);
  t.is(sc.runtime.current!.config.drainTimeoutMs, 4_000);

  // Write elsewhere, then rename over the file (what most editors and config tools do).
  const tmp = join(dir, '.base.yaml.swp');
  await writeFile(tmp, fileConfig(a, b, host, [0, 1]));
  await rename(tmp, paths['base.yaml']!);
  await waitForGeneration(sc, 2);
  t.is(await roleOf(sc), 'b');

  const tmp2 = join(dir, 'override.yaml.new');
  await writeFile(tmp2, 'drainTimeout: 3s\n');
  await rename(tmp2, paths['override.yaml']!);
  await until(() => sc.runtime.current!.config.drainTimeoutMs === 3_000, 10_000, 'the override to apply');
  t.is(sc.runtime.current!.number, 3, 'one generation per change');
  t.is(await roleOf(sc), 'b');
});

test('a Kubernetes ConfigMap update (..data symlink swap) is picked up', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const host = uniqueHost();
  // The kubelet's layout: config.yaml → ..data/config.yaml, ..data → ..<timestamp>/.
  const { dir } = await tempFiles(t, {});
  await mkdir(join(dir, '..2026_01_01_00_00_00.1'));
  await writeFile(join(dir, '..2026_01_01_00_00_00.1', 'config.yaml'), fileConfig(a, b, host, [1, 0]));
  await symlink('..2026_01_01_00_00_00.1', join(dir, '..data'));
  await symlink('..data/config.yaml', join(dir, 'config.yaml'));
  const { sc } = await startWatching(t, [join(dir, 'config.yaml')]);
  t.is(await roleOf(sc), 'a');

  // An update: a new timestamped directory, a new ..data_tmp link renamed over ..data, the old directory removed.
  await mkdir(join(dir, '..2026_01_01_00_05_00.2'));
  await writeFile(join(dir, '..2026_01_01_00_05_00.2', 'config.yaml'), fileConfig(a, b, host, [0, 1]));
  await symlink('..2026_01_01_00_05_00.2', join(dir, '..data_tmp'));
  await rename(join(dir, '..data_tmp'), join(dir, '..data'));
  await rm(join(dir, '..2026_01_01_00_00_00.1'), { recursive: true });
  await waitForGeneration(sc, 2);
  t.is(sc.runtime.current!.source, 'file');
  t.is(await roleOf(sc), 'b');
});

test('a bad config file is rejected while the old config serves; fixing it applies it', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const host = uniqueHost();
  const { paths } = await tempFiles(t, { 'config.yaml': fileConfig(a, b, host, [1, 0]) });
  const { sc, log } = await startWatching(t, [paths['config.yaml']!]);

  await writeFile(paths['config.yaml']!, fileConfig(a, b, host, [0, 1], {}, { filters: [{ type: 'weighted', wieghts: { a: 0, b: 1 } }] }));
  await untilMetric(sc, 'switchyard_config_reloads_total', { source: 'file', result: 'invalid' }, 1, 10_000, 'the rejection');
  t.is(sc.runtime.current!.number, 1);
  t.is(await roleOf(sc), 'a', 'the old config keeps serving');
  t.true(log.some((l) => /reload from file rejected \(invalid\).*generation 1 keeps serving/.test(l)), log.join('\n'));
  t.true(log.some((l) => l.includes('wieghts')), 'the log names the error');

  await writeFile(paths['config.yaml']!, fileConfig(a, b, host, [0, 1]));
  await waitForGeneration(sc, 2);
  t.is(await roleOf(sc), 'b');
  t.is(await metric(sc, 'switchyard_config_reloads_total', { source: 'file', result: 'success' }), 2);
});

async function adminJson(base: string, path: string): Promise<{ status: number; json: any; text: string }> {
  const res = await httpGet(`${base}${path}`, { agent: false });
  let json: unknown;
  try { json = JSON.parse(res.body); } catch { json = undefined; }
  return { status: res.status, json, text: res.body };
}

test('the CLI: SIGHUP reloads, a bad file is rejected, `switchyard apply` pushes, SIGTERM drains and exits 0', async (t) => {
  const a = await heldUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const host = uniqueHost();
  const { paths } = await tempFiles(t, {
    'config.yaml': fileConfig(a, b, host, [1, 0]),
    'push.yaml': fileConfig(a, b, host, [0, 1]),
    'bad.yaml': fileConfig(a, b, host, [0, 0]),
  });
  const run = spawnCli(t, ['run', '--config', paths['config.yaml']!]);
  const [, listener] = await run.line(/listener web: http:\/\/(\S+) /, { ms: 10_000 });
  const [, adminBase] = await run.line(/admin API on (http:\/\/\S+)/, { ms: 10_000 });
  const role = async () => String((await httpGet(`http://${listener}/`, { agent: false })).headers['x-role']);
  t.is(await role(), 'a');
  t.like((await adminJson(adminBase, '/config')).json, { generation: 1, source: 'file' });

  // SIGHUP: re-read the files, a new generation from source sighup.
  run.child.kill('SIGHUP');
  await until(async () => (await adminJson(adminBase, '/config')).json.generation === 2, 10_000, 'the SIGHUP reload');
  t.is((await adminJson(adminBase, '/config')).json.source, 'sighup');
  t.true(run.stdout.some((l) => /generation 2 applied from sighup/.test(l)), 'one log line per reload');

  // A bad file: the watcher rejects it, and so does SIGHUP; generation 2 serves on.
  await writeFile(paths['config.yaml']!, fileConfig(a, b, host, [0, 1], {}, { target: 'nosuch' }));
  await untilMetric(adminBase!, 'switchyard_config_reloads_total', { source: 'file', result: 'invalid' }, 1, 10_000, 'the file rejection');
  run.child.kill('SIGHUP');
  await untilMetric(adminBase!, 'switchyard_config_reloads_total', { source: 'sighup', result: 'invalid' }, 1, 10_000, 'the SIGHUP rejection');
  t.is((await adminJson(adminBase, '/config')).json.generation, 2);
  t.is(await role(), 'a');
  t.true(run.stdout.some((l) => /reload from sighup rejected/.test(l)));

  // switchyard apply: a bad config is refused with its errors (exit 1), a good one applied (exit 0).
  const bad = spawnCli(t, ['apply', '--config', paths['bad.yaml']!, '--admin', adminBase!]);
  t.is(await bad.exit(10_000), 1);
  t.true(bad.stderr.some((l) => l.includes('listeners.web.filters[0].weights')), bad.stderr.join('\n'));
  t.true(bad.stderr.some((l) => /rejected \(HTTP 400\)/.test(l)));
  const good = spawnCli(t, ['apply', '--config', paths['push.yaml']!, '--admin', adminBase!]);
  t.is(await good.exit(10_000), 0, good.stderr.join('\n'));
  t.true(good.stdout.some((l) => /applied: generation 3/.test(l)), good.stdout.join('\n'));
  t.is(await role(), 'b');
  t.like((await adminJson(adminBase, '/config')).json, { generation: 3, source: 'api' });

  // SIGTERM with a request in flight: /ready turns 503, the request finishes, exit 0.
  await writeFile(paths['config.yaml']!, fileConfig(a, b, host, [1, 0]));
  await until(async () => (await adminJson(adminBase, '/config')).json.generation === 4, 10_000, 'the fixed file to apply');
  const held = httpGet(`http://${listener}/`, { agent: false, headers: { 'x-hold': '1' } });
  held.catch(() => {});
  await until(() => a.held.length === 1, 10_000, 'the held request to arrive');
  run.child.kill('SIGTERM');
  await until(async () => (await adminJson(adminBase, '/ready')).status === 503, 10_000, '/ready to answer 503');
  a.releaseAll();
  const r = await within(held, 10_000, 'the held request');
  t.is(r.status, 200, 'the request in flight finished');
  t.is(await run.exit(10_000), 0);
});

test('the CLI on SIGINT: stops accepting, drains up to drainTimeout, cuts what is left, exits 0', async (t) => {
  const a = await heldUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const host = uniqueHost();
  const { paths } = await tempFiles(t, { 'config.yaml': fileConfig(a, b, host, [1, 0], { drainTimeout: '800ms' }) });
  const run = spawnCli(t, ['run', '--config', paths['config.yaml']!]);
  const [, listener] = await run.line(/listener web: http:\/\/(\S+) /, { ms: 10_000 });
  await run.line(/admin API on http:\/\//, { ms: 10_000 });
  const [lhost, lport] = [listener.slice(0, listener.lastIndexOf(':')), Number(listener.slice(listener.lastIndexOf(':') + 1))];
  // A request that never gets its answer.
  const held = httpGet(`http://${listener}/`, { agent: false, headers: { 'x-hold': '1' } });
  held.catch(() => {});
  await until(() => a.held.length === 1, 10_000, 'the held request to arrive');

  const t0 = performance.now();
  run.child.kill('SIGINT');
  await until(async () => refused(lhost, lport), 10_000, 'the listener to stop accepting');
  t.is(await run.exit(10_000), 0);
  const took = performance.now() - t0;
  t.true(took >= 700, `exited after ${took.toFixed(0)} ms: it waited for the drain`);
  await t.throwsAsync(within(held, 10_000, 'the held request'), undefined, 'the request still running at drainTimeout was cut');
  t.true(run.stdout.some((l) => /SIGINT: draining/.test(l)));
});

test('a change written while the sidecar is still starting is applied once it runs', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const host = uniqueHost();
  const scope = newScope('startwatch');
  // The first generation waits at a component's readiness gate, so the start takes as long as the test wants.
  const component: ConfigSpec = { plugins: [PLUGIN], components: { c: { type: 'reload-plain', metadata: { scope, ready: 'gate' } } } };
  const { paths } = await tempFiles(t, { 'config.yaml': fileConfig(a, b, host, [1, 0], component) });
  const log: string[] = [];
  const starting = Sidecar.start({ files: [paths['config.yaml']!], watch: true, log: (l) => log.push(l) });
  t.teardown(async () => (await starting).stop());
  await until(() => eventsNamed(scope, 'ready').length === 1, 10_000, 'the start to wait for readiness');
  await writeFile(paths['config.yaml']!, fileConfig(a, b, host, [0, 1], component));
  t.true(openGate(scope));
  const sc = await within(starting, 10_000, 'the start');
  await waitForGeneration(sc, 2);
  t.is(sc.runtime.current!.source, 'file');
  t.is(await roleOf(sc), 'b', 'the change written during the start serves');
});

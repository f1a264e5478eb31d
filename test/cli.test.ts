// CLI (contract): `node bin/switchyard.js …` run as a user runs it, on real temp files.
import test, { type ExecutionContext } from 'ava';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  deadAddress, get, runCli, spawnCli, startUpstream, tempFiles, twoRoles, uniqueHost, yaml, type FilterSpec, type Upstream,
} from './helpers.js';

// ---------------------------------------------------------------- helpers (this file's own)

/** 1-based `line:column` of the first occurrence of `needle` in `text` (plus `skip` characters). */
function lc(text: string, needle: string, skip = 0): string {
  const at = text.indexOf(needle);
  const i = at + skip;
  if (at < 0) throw new Error(`"${needle}" is not in the text`);
  const before = text.slice(0, i);
  return `${before.split('\n').length}:${i - before.lastIndexOf('\n')}`;
}

/** A whole config file: roles a and b, listener web on `host` (x-pin: b pins b, else `weights`), admin on port 0. */
function runConfig(a: Upstream, b: Upstream, host: string, weights: Record<string, number>): string {
  const pin: FilterSpec = { type: 'header_route', rules: [{ header: 'x-pin', equals: 'b', role: 'b' }] };
  return yaml({
    version: 1,
    admin: { address: '127.0.0.1:0' },
    drainTimeout: '2s',
    ...twoRoles(a, b, { address: `${host}:0`, filters: [pin, { type: 'weighted', weights }] }),
  });
}

/**
 * A config reached through a symlink in another directory: writing the real file
 * does not wake `run`'s file watcher (it watches the link's directory), so only
 * SIGHUP reloads it.
 */
async function configBehindSymlink(t: ExecutionContext, text: string): Promise<{ real: string; link: string }> {
  const { dir } = await tempFiles(t, {});
  await mkdir(join(dir, 'real'));
  await mkdir(join(dir, 'etc'));
  const real = join(dir, 'real', 'switchyard.yaml');
  const link = join(dir, 'etc', 'switchyard.yaml');
  await writeFile(real, text);
  await symlink(real, link);
  return { real, link };
}

/** Starts `switchyard run`, waits for its listener and admin lines; SIGTERM at teardown. */
async function startRun(t: ExecutionContext, files: string[], cwd?: string) {
  const p = spawnCli(t, ['run', ...files.flatMap((f) => ['--config', f])], { cwd });
  const [, listener] = await p.line(/listener web: (http:\/\/[\d.]+:\d+) → svc\.http/);
  const [, admin] = await p.line(/admin API on (http:\/\/[\d.]+:\d+)/);
  return { p, web: listener!, admin: admin! };
}

async function roleOf(url: string, headers: Record<string, string> = {}): Promise<string> {
  const r = await get(url, headers);
  if (r.status !== 200) throw new Error(`${url}: HTTP ${r.status} ${r.body}`);
  return String(r.headers['x-role']);
}

const GOOD = `roles:
  cart-v1:
    meta: { version: "1.4.2" }
    channels: { http: { endpoints: ["127.0.0.1:7001"] } }
  cart-v2:
    channels: { api: { endpoints: ["127.0.0.1:7101"] } }
vsets:
  cart:
    channels: [http]
    roles: { cart-v1: {}, cart-v2: { map: { http: api } } }
listeners:
  cart:
    target: cart.http
    filters:
      - type: weighted
        weights: { cart-v1: 90, cart-v2: 10 }
`;

// ---------------------------------------------------------------- validate

test('validate: a good file exits 0 with a summary', async (t) => {
  const { dir } = await tempFiles(t, { 'good.yaml': GOOD });
  const r = await runCli(t, ['validate', '--config', 'good.yaml'], { cwd: dir });
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /^ok: 1 listener\(s\), 2 role\(s\), 1 vset\(s\), 0 component\(s\)$/m);
  t.is(r.stderr, '');
});

test('validate: a bad file exits 1 listing every error with file:line:col', async (t) => {
  const bad = GOOD
    .replace('version: "1.4.2"', 'version: 1.10')
    .replace('cart-v2: 10', 'cart-v3: 10')
    .replace('    target: cart.http\n', '    target: cart.http\n    adress: 127.0.0.2:80\n');
  const { dir } = await tempFiles(t, { 'bad.yaml': bad });
  const r = await runCli(t, ['validate', '--config', 'bad.yaml'], { cwd: dir });
  t.is(r.code, 1);
  t.is(r.stdout, '');
  const lines = r.stderr.split('\n');
  for (const want of [
    `bad.yaml:${lc(bad, '1.10')}: roles.cart-v1.meta.version: `,
    `bad.yaml:${lc(bad, 'adress')}: listeners.cart.adress: `,
    `bad.yaml:${lc(bad, 'cart-v3: 10', 'cart-v3: '.length)}: listeners.cart.filters[0].weights.cart-v3: `,
  ]) t.true(lines.some((l) => l.startsWith(want)), `no line starting with "${want}" in:\n${r.stderr}`);
  t.regex(r.stderr, /\(SY_ERR_CONFIG_TYPE\)/);
  t.regex(r.stderr, /\(SY_ERR_CONFIG_UNKNOWN_KEY\)/);
  t.regex(r.stderr, /\(SY_ERR_ROLE_NOT_IN_VSET\)/);
  t.regex(r.stderr, /^3 error\(s\)$/m);
});

test('validate: a YAML syntax error exits 1 with file:line:col', async (t) => {
  const text = 'roles:\n  a: { channels: [ }\n';
  const { dir } = await tempFiles(t, { 'broken.yaml': text });
  const r = await runCli(t, ['validate', '--config', 'broken.yaml'], { cwd: dir });
  t.is(r.code, 1);
  // Issue 11, item 9: the error names the nearest key (it said "(root)").
  t.regex(r.stderr, /^broken\.yaml:2:\d+: roles\.a\.channels: .*\(SY_ERR_CONFIG_YAML\)$/m);
});

test('validate: a missing file exits 1 with SY_ERR_CONFIG_FILE', async (t) => {
  const { dir } = await tempFiles(t, {});
  const r = await runCli(t, ['validate', '--config', 'nope.yaml'], { cwd: dir });
  t.is(r.code, 1);
  t.regex(r.stderr, /^nope\.yaml: .*cannot read.*\(SY_ERR_CONFIG_FILE\)$/m);
});

test('validate: several --config files merge, and an error names the file that set the bad value', async (t) => {
  const over = 'listeners:\n  cart:\n    target: cart.grpc\n';
  const { dir } = await tempFiles(t, { 'base.yaml': GOOD, 'over.yaml': over, 'ok.yaml': 'listeners:\n  cart:\n    address: 127.0.0.9:8080\n' });
  const bad = await runCli(t, ['validate', '--config', 'base.yaml', '--config', 'over.yaml'], { cwd: dir });
  t.is(bad.code, 1);
  t.regex(bad.stderr, new RegExp(`^over\\.yaml:${lc(over, 'cart.grpc')}: listeners\\.cart\\.target: .*\\(SY_ERR_UNKNOWN_CHANNEL\\)$`, 'm'));
  const good = await runCli(t, ['validate', '-c', 'base.yaml', '-c', 'ok.yaml'], { cwd: dir });
  t.is(good.code, 0, good.stderr);
});

// ---------------------------------------------------------------- hosts

test('hosts: prints 127.0.0.x<TAB>name, the lowest free x ≥ 2 for listeners without an address', async (t) => {
  const text = `${GOOD.replace(/listeners:[\s\S]*$/, '')}listeners:
  first: { target: cart }
  fixed: { target: cart, address: "127.0.0.2:8080" }
  second: { target: cart }
  fixed4: { target: cart, address: 127.0.0.4 }
  db: { target: cart-v2, protocol: tcp, address: ":5432" }
  third: { target: cart-v1 }
`;
  const { dir } = await tempFiles(t, { 'hosts.yaml': text });
  const r = await runCli(t, ['hosts', '--config', 'hosts.yaml'], { cwd: dir });
  t.is(r.code, 0, r.stderr);
  t.deepEqual(r.stdout.split('\n').sort(), [
    '127.0.0.2\tfixed',
    '127.0.0.3\tfirst',
    '127.0.0.4\tfixed4',
    '127.0.0.5\tsecond',
    '127.0.0.6\tdb',
    '127.0.0.7\tthird',
  ]);
});

test('hosts: with no explicit addresses the first listener gets 127.0.0.2', async (t) => {
  const { dir } = await tempFiles(t, { 'hosts.yaml': `${GOOD.replace(/listeners:[\s\S]*$/, '')}listeners:\n  one: { target: cart }\n  two: { target: cart-v1 }\n` });
  const r = await runCli(t, ['hosts', '--config', 'hosts.yaml'], { cwd: dir });
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, '127.0.0.2\tone\n127.0.0.3\ttwo');
});

test('hosts: an invalid config exits 1 with its errors', async (t) => {
  const { dir } = await tempFiles(t, { 'bad.yaml': 'listeners:\n  x: { target: nowhere }\n' });
  const r = await runCli(t, ['hosts', '--config', 'bad.yaml'], { cwd: dir });
  t.is(r.code, 1);
  t.is(r.stdout, '');
  t.regex(r.stderr, /^bad\.yaml:2:\d+: listeners\.x\.target: .*\(SY_ERR_UNKNOWN_VSET\)$/m);
});

// ---------------------------------------------------------------- usage

test('an unknown command exits 2 with usage', async (t) => {
  const r = await runCli(t, ['frobnicate', '--config', 'x.yaml']);
  t.is(r.code, 2);
  t.regex(r.stderr, /unknown command "frobnicate"/);
  t.regex(r.stderr, /usage:/);
  const bare = await runCli(t, ['frobnicate']);
  t.is(bare.code, 2);
  t.regex(bare.stderr, /unknown command "frobnicate"/, 'an unknown command is called so, not "--config is required"');
});

test('a missing --config exits 2 with usage, for every command', async (t) => {
  for (const cmd of ['run', 'validate', 'hosts', 'apply']) {
    const r = await runCli(t, [cmd]);
    t.is(r.code, 2, cmd);
    t.regex(r.stderr, /--config FILE is required/, cmd);
    t.regex(r.stderr, /usage:/, cmd);
  }
});

test('no command, or an unknown option, exits 2 with usage', async (t) => {
  const none = await runCli(t, []);
  t.is(none.code, 2);
  t.regex(none.stdout + none.stderr, /usage:/);
  const opt = await runCli(t, ['validate', '--config', 'x.yaml', '--frob']);
  t.is(opt.code, 2);
  t.regex(opt.stderr, /usage:/);
});

// ---------------------------------------------------------------- run

test('run: serves, reloads on SIGHUP, exits 0 on SIGTERM', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const host = uniqueHost();
  const { real, link } = await configBehindSymlink(t, runConfig(a, b, host, { a: 1, b: 0 }));
  const { p, web } = await startRun(t, [link]);
  t.true(web.startsWith(`http://${host}:`));
  t.is(await roleOf(web), 'a');
  t.is(await roleOf(web, { 'x-pin': 'b' }), 'b');

  await writeFile(real, runConfig(a, b, host, { a: 0, b: 1 }));
  const from = p.stdout.length;
  p.child.kill('SIGHUP');
  // generation 2, or 3 when the file watcher applied the write first
  await p.line(/generation \d+ applied from sighup/, { from });
  t.is(await roleOf(web), 'b');
  t.is(await roleOf(web), 'b');

  p.child.kill('SIGTERM');
  t.is(await p.exit(), 0);
  t.true(p.stdout.some((l) => /SIGTERM: draining/.test(l)));
});

test('run: a SIGHUP with an invalid file keeps the running generation', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const host = uniqueHost();
  const { real, link } = await configBehindSymlink(t, runConfig(a, b, host, { a: 1, b: 0 }));
  const { p, web } = await startRun(t, [link]);
  await writeFile(real, runConfig(a, b, host, { a: 0, c: 1 }));
  p.child.kill('SIGHUP');
  await p.line(/reload from sighup rejected \(invalid\).*generation 1 keeps serving/);
  await p.line(/switchyard\.yaml:\d+:\d+: listeners\.web\.filters\[1\]\.weights\.c: .*SY_ERR_ROLE_NOT_IN_VSET/);
  t.is(await roleOf(web), 'a');
  // And a later good SIGHUP applies. The file watcher runs too and may see the write
  // first (then it applies generation 2 and the SIGHUP a generation 3 with no change).
  await writeFile(real, runConfig(a, b, host, { a: 0, b: 1 }));
  p.child.kill('SIGHUP');
  await p.line(/generation \d+ applied from sighup/);
  t.is(await roleOf(web), 'b');
});

test('run: reloads when its config file changes', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const host = uniqueHost();
  const { paths } = await tempFiles(t, { 'sy.yaml': runConfig(a, b, host, { a: 1, b: 0 }) });
  const { p, web } = await startRun(t, [paths['sy.yaml']!]);
  t.is(await roleOf(web), 'a');
  await writeFile(paths['sy.yaml']!, runConfig(a, b, host, { a: 0, b: 1 }));
  await p.line(/generation 2 applied from file/);
  t.is(await roleOf(web), 'b');
});

test('run: a later --config file overrides the first', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const { dir } = await tempFiles(t, {
    'base.yaml': runConfig(a, b, uniqueHost(), { a: 1, b: 0 }),
    'over.yaml': 'listeners:\n  web:\n    filters:\n      - type: weighted\n        weights: { b: 1 }\n',
  });
  const { web } = await startRun(t, ['base.yaml', 'over.yaml'], dir);
  t.is(await roleOf(web), 'b');
  t.is(await roleOf(web, { 'x-pin': 'b' }), 'b', 'the filter list was replaced: no header_route');
});

test('run: a bad config exits 1 listing every error', async (t) => {
  const bad = GOOD.replace('cart-v2: 10', 'cart-v3: 10').replace('target: cart.http', 'target: cart.http\n    protocol: sctp');
  const { dir } = await tempFiles(t, { 'bad.yaml': bad });
  const r = await runCli(t, ['run', '--config', 'bad.yaml'], { cwd: dir });
  t.is(r.code, 1);
  t.regex(r.stderr, new RegExp(`^bad\\.yaml:${lc(bad, 'sctp')}: listeners\\.cart\\.protocol: .*\\(SY_ERR_CONFIG_VALUE\\)$`, 'm'));
  t.regex(r.stderr, /^bad\.yaml:\d+:\d+: listeners\.cart\.filters\[0\]\.weights\.cart-v3: .*\(SY_ERR_ROLE_NOT_IN_VSET\)$/m);
  t.regex(r.stderr, /2 config error\(s\); not started/);
});

// ---------------------------------------------------------------- apply

test('apply: pushes a config to a running sidecar (exit 0, the change takes effect)', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const host = uniqueHost();
  const { dir } = await tempFiles(t, {
    'run.yaml': runConfig(a, b, host, { a: 1, b: 0 }),
    'new.yaml': runConfig(a, b, host, { a: 0, b: 1 }),
  });
  const { web, admin } = await startRun(t, ['run.yaml'], dir);
  t.is(await roleOf(web), 'a');
  const r = await runCli(t, ['apply', '--config', 'new.yaml', '--admin', admin], { cwd: dir });
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /applied: generation 2/);
  t.is(await roleOf(web), 'b');
  const cfg = (await (await fetch(`${admin}/config`)).json()) as { generation: number; source: string };
  t.like(cfg, { generation: 2, source: 'api' });
});

test('apply: an invalid config exits 1 with its errors and leaves the running config unchanged', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const host = uniqueHost();
  const bad = runConfig(a, b, host, { a: 0, b: 1, c: 1 }).replace('drainTimeout: 2s', 'drainTimeout: 2');
  t.not(bad, runConfig(a, b, host, { a: 0, b: 1, c: 1 }));
  const { dir } = await tempFiles(t, { 'run.yaml': runConfig(a, b, host, { a: 1, b: 0 }), 'bad.yaml': bad });
  const { web, admin } = await startRun(t, ['run.yaml'], dir);
  const r = await runCli(t, ['apply', '--config', 'bad.yaml', '--admin', admin], { cwd: dir });
  t.is(r.code, 1);
  t.regex(r.stderr, new RegExp(`^bad\\.yaml:${lc(bad, 'drainTimeout: 2\n', 'drainTimeout: '.length)}: drainTimeout: .*\\(SY_ERR_CONFIG_TYPE\\)$`, 'm'));
  t.regex(r.stderr, /^bad\.yaml:\d+:\d+: listeners\.web\.filters\[1\]\.weights\.c: .*\(SY_ERR_ROLE_NOT_IN_VSET\)$/m);
  t.regex(r.stderr, /rejected \(HTTP 400\); the running config is unchanged/);
  t.is(await roleOf(web), 'a');
  const cfg = (await (await fetch(`${admin}/config`)).json()) as { generation: number; source: string };
  t.like(cfg, { generation: 1, source: 'file' });
});

test('apply: an unreachable admin API exits 1', async (t) => {
  const { dir } = await tempFiles(t, { 'good.yaml': GOOD });
  // A port nothing listens on.
  const url = `http://${await deadAddress()}`;
  const r = await runCli(t, ['apply', '--config', 'good.yaml', '--admin', url], { cwd: dir });
  t.is(r.code, 1);
  t.regex(r.stderr, /cannot reach/);
});

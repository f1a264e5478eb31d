import test from 'ava';
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ROOT } from '../helpers.js';
import { REQUIREMENTS, aptCommand, packagesOf, setupPlan, toolPath } from './requirements.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ALL_PACKAGES = packagesOf(REQUIREMENTS.map((r) => r.tool));

test('set-up plan: nothing missing runs the suite; root on Debian installs with one apt-get line', (t) => {
  t.deepEqual(setupPlan({ missing: [], root: false, debian: false }), { kind: 'ready' });
  t.deepEqual(setupPlan({ missing: ['promtool', 'chromium', 'prometheus'], root: true, debian: true }), {
    kind: 'install',
    command: 'apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus chromium',
  });
});

test('set-up plan: not root, or not Debian, stops with one message naming every missing tool and the command', (t) => {
  const user = setupPlan({ missing: ['chromium', 'python3'], root: false, debian: true });
  t.is(user.kind, 'stop');
  const msg = user.kind === 'stop' ? user.message : '';
  t.regex(msg, /chromium \(Debian package chromium\), python3 \(Debian package python3\)/);
  t.true(msg.includes(`sudo sh -c '${aptCommand(['chromium', 'python3'])}'`));
  const other = setupPlan({ missing: ['prometheus'], root: true, debian: false });
  t.is(other.kind, 'stop');
  t.regex(other.kind === 'stop' ? other.message : '', /prometheus \(Debian package prometheus\).*\n.*package manager/);
});

test('the real set-up, run by a user without root on a machine without the tools, stops at once with that message', async (t) => {
  // A copy other users can read (the checkout may sit under a private home).
  const dir = mkdtempSync(join(tmpdir(), 'sy-setup-'));
  for (const f of ['install.js', 'requirements.js']) copyFileSync(join(HERE, f), join(dir, f));
  copyFileSync(join(ROOT, 'package.json'), join(dir, 'package.json'));
  chmodSync(dir, 0o755);
  const empty = mkdtempSync(join(tmpdir(), 'sy-empty-path-'));
  const asUser = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};
  const child = spawn(process.execPath, [join(dir, 'install.js')], { env: { PATH: empty }, stdio: ['ignore', 'pipe', 'pipe'], ...asUser });
  let err = '';
  child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
  t.is(code, 1);
  for (const r of REQUIREMENTS) t.true(err.includes(`${r.tool} (Debian package ${r.package})`), r.tool);
  t.true(err.includes(aptCommand(ALL_PACKAGES)));
  t.is(err.trim().split('\n').length, 3, 'one message');
});

test('the real set-up on this machine (npm test ran it before ava) finds everything and says nothing', (t) => {
  const run = spawnSync(process.execPath, [join(HERE, 'install.js')], { encoding: 'utf8' });
  t.is(run.status, 0, run.stderr);
  t.is(run.stderr + run.stdout, '');
});

test('spawn guard: a test that runs a program the list does not name fails, whichever child_process function it uses', (t) => {
  for (const run of [() => spawn('true'), () => spawnSync('/bin/true'), () => execFileSync('true')]) {
    t.throws(run, { message: /a test runs .*true, which test\/setup\/requirements.ts does not list/ });
  }
  // Listed tools and Node itself run.
  t.is(spawnSync(toolPath('mkfifo'), ['--version']).status, 0);
  t.is(spawnSync(process.execPath, ['-e', '']).status, 0);
});

test('the README lists every required tool with its package, and the one install command', (t) => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const section = /\n### Running the tests\n([\s\S]*?)\n##/.exec(readme)?.[1];
  if (section === undefined) return t.fail('README has no "### Running the tests" section');
  for (const r of REQUIREMENTS) t.regex(section, new RegExp(`\\| \`${r.tool}\` \\| \`${r.package}\` \\|`), r.tool);
  t.true(section.includes(aptCommand(ALL_PACKAGES)), 'the install command for all of them');
});

test('.ci/run is npm ci and the README\'s test command, nothing else, and names the packages npm test installs', (t) => {
  const ci = readFileSync(join(ROOT, '.ci/run'), 'utf8');
  const commands = ci.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  t.deepEqual(commands, ['set -euo pipefail', 'cd "$(dirname "$0")/.."', 'npm ci --no-audit --no-fund', 'npm test']);
  for (const p of ALL_PACKAGES) t.regex(ci, new RegExp(`^#.*\\b${p}\\b`, 'm'), p);
});

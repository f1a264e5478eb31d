// The package installs: `npm pack` gives a tarball of what runs, and installed into an
// empty directory it validates and serves, with --version and --help for every command.
import test from 'ava';
import { execFile, spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { ROOT, uniqueHost } from './helpers.js';

const run = promisify(execFile);
// npm and npx as node scripts: the programs a test may start are node and the listed tools.
const NPM_BIN = join(dirname(process.execPath), '../lib/node_modules/npm/bin');
const npm = (args: string[], cwd: string) => run(process.execPath, [join(NPM_BIN, 'npm-cli.js'), ...args], { cwd, timeout: 120_000, maxBuffer: 16 << 20 });
const npx = (args: string[], cwd: string) => run(process.execPath, [join(NPM_BIN, 'npx-cli.js'), '--no-install', 'switchyard', ...args], { cwd, timeout: 30_000 });

const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string; files: string[]; scripts: Record<string, string> };

/** The packed tarball, installed (with its dependencies, from the npm cache or the registry) into an empty directory. */
let installed: Promise<{ dir: string; files: string[] }> | undefined;
function install(): Promise<{ dir: string; files: string[] }> {
  installed ??= (async () => {
    const dir = await mkdtemp(join(tmpdir(), 'switchyard-pkg-'));
    // The suite runs from dist/ as built: prepack's clean rebuild would pull it from under the other test files.
    const packed = await npm(['pack', '--ignore-scripts', '--json', '--pack-destination', dir], ROOT);
    const [info] = JSON.parse(packed.stdout) as [{ filename: string; files: { path: string }[] }];
    const app = join(dir, 'app');
    await mkdir(app);
    await writeFile(join(app, 'package.json'), JSON.stringify({ name: 'an-app', version: '1.0.0', private: true }));
    await npm(['install', '--prefer-offline', '--no-audit', '--no-fund', '--ignore-scripts', join(dir, info.filename)], app);
    return { dir: app, files: info.files.map((f) => f.path) };
  })();
  return installed;
}

test.after.always(async () => {
  if (installed) await rm(dirname((await installed).dir), { recursive: true, force: true });
});

test('the tarball holds what runs (dist/src, bin, schema, config, deploy, examples, proto) and nothing else', async (t) => {
  t.timeout(180_000);
  const { files } = await install();
  const roots = new Set(files.map((f) => f.split('/')[0] === 'dist' ? 'dist/src' : f.split('/')[0]));
  t.deepEqual([...roots].sort(), ['README.md', 'bin', 'config', 'deploy', 'dist/src', 'examples', 'package.json', 'proto', 'schema']);
  t.true(files.every((f) => !f.startsWith('dist/') || f.startsWith('dist/src/')), 'no dist/test, dist/bench, dist/demo');
  for (const f of ['bin/switchyard.js', 'dist/src/cli.js', 'dist/src/config/parse_worker.js', 'schema/switchyard.schema.json', 'config/default.yaml', 'deploy/kubernetes/deployment.yaml']) {
    t.true(files.includes(f), f);
  }
  t.false(files.some((f) => f.endsWith('.ts') || f.startsWith('test/') || f.startsWith('src/')));
  // The build is the package's own: prepack builds from clean, prepare on an install from git.
  t.is(pkg.scripts.prepack, 'npm run build');
  t.regex(pkg.scripts.prepare!, /tsc/);
});

test('installed from the tarball: --version, --help of every command, validate and schema', async (t) => {
  t.timeout(180_000);
  const { dir } = await install();
  t.is((await npx(['--version'], dir)).stdout.trim(), pkg.version);
  for (const cmd of ['run', 'validate', 'hosts', 'apply', 'schema', 'fleet']) {
    const help = await npx([cmd, '--help'], dir);
    t.regex(help.stdout, new RegExp(`switchyard ${cmd}\\b`), cmd);
  }
  t.regex((await npx(['--help'], dir)).stdout, /switchyard run[\s\S]*switchyard fleet status[\s\S]*--version/);
  const ok = await npx(['validate', '--config', 'node_modules/switchyard/config/default.yaml'], dir);
  t.regex(ok.stdout, /^ok: 2 listener/);
  const example = await npx(['validate', '--config', 'node_modules/switchyard/examples/complete.yaml'], dir);
  t.regex(example.stdout, /^ok: 2 listener\(s\), 2 role\(s\), 1 vset\(s\), 2 component\(s\)/);
  const schema = JSON.parse((await npx(['schema'], dir)).stdout) as { $schema: string };
  t.is(schema.$schema, 'https://json-schema.org/draft/2020-12/schema');
  const bad = await npx(['validate', '--config', 'nope.yaml'], dir).then(() => 0, (e: { code: number }) => e.code);
  t.is(bad, 1);
});

test('installed from the tarball: run serves a listener and the admin API, and stops on SIGTERM', async (t) => {
  t.timeout(180_000);
  const { dir } = await install();
  const host = uniqueHost();
  const upstream = await new Promise<import('node:http').Server>((resolve) => {
    void import('node:http').then(({ createServer }) => {
      const s = createServer((_req, res) => res.end('from the upstream\n'));
      s.listen(0, '127.0.0.1', () => resolve(s));
    });
  });
  t.teardown(() => upstream.close());
  const port = (upstream.address() as { port: number }).port;
  await writeFile(join(dir, 'c.yaml'), `# yaml-language-server: $schema=node_modules/switchyard/schema/switchyard.schema.json
admin: { address: "${host}:0" }
roles: { app: { channels: { http: { endpoints: ["127.0.0.1:${port}"] } } } }
listeners: { web: { address: "${host}:0", target: app.http } }
`);
  // The installed bin itself, as npx resolves it: npx would not pass SIGTERM on to it.
  const child = spawn(process.execPath, [join(dir, 'node_modules/.bin/switchyard'), 'run', '--config', 'c.yaml'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => { child.kill('SIGKILL'); });
  const seen = await new Promise<{ web: string; admin: string }>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (b: Buffer) => {
      out += b;
      const web = /listener web: (http:\/\/\S+)/.exec(out);
      const admin = /admin API on (http:\/\/\S+)/.exec(out);
      if (web && admin) resolve({ web: web[1]!, admin: admin[1]! });
    });
    child.once('exit', (code) => reject(new Error(`exited ${code}: ${out}`)));
  });
  t.is(await (await fetch(seen.web)).text(), 'from the upstream\n');
  t.is((await fetch(`${seen.admin}/ready`)).status, 200);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGTERM');
  t.is(await exited, 0);
});

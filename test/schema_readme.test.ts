// The README's complete example is examples/complete.yaml, and it runs as printed: it
// validates with no environment set (the plugin it loads exists, ADMIN_TOKEN may be
// unset), and serves (with only its addresses moved to free ones, for parallel tests).
import test from 'ava';
import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CLI, ROOT, tempFiles, uniqueHost } from './helpers.js';

const run = promisify(execFile);
const EXAMPLE = join(ROOT, 'examples/complete.yaml');
const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'ADMIN_TOKEN'));

test('the README\'s complete example is examples/complete.yaml, as it is', (t) => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const at = readme.indexOf('A complete example: [`examples/complete.yaml`]');
  t.true(at > 0);
  const block = /```yaml\n([\s\S]*?)```/.exec(readme.slice(at))![1];
  t.is(block, readFileSync(EXAMPLE, 'utf8'));
});

test('the complete example validates with ADMIN_TOKEN unset', async (t) => {
  const r = await run(process.execPath, [CLI, 'validate', '--config', EXAMPLE], { cwd: ROOT, env, timeout: 20_000 });
  t.regex(r.stdout, /^ok: 2 listener\(s\), 2 role\(s\), 1 vset\(s\), 2 component\(s\)/);
});

test('the complete example serves: /ready, and a request through its filter chain (the plugin\'s filter included)', async (t) => {
  const host = uniqueHost();
  const { paths } = await tempFiles(t, {
    'addresses.yaml': `admin: { address: "${host}:0" }\nlisteners: { cart: { address: "${host}:0" }, cart-cache: { address: "${host}:0" } }\n`,
  });
  const child = spawn(process.execPath, [CLI, 'run', '--config', EXAMPLE, '--config', paths['addresses.yaml']!], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => { child.kill('SIGKILL'); });
  const seen = await new Promise<{ cart: string; admin: string }>((resolve, reject) => {
    let out = '';
    const take = (b: Buffer): void => {
      out += b;
      const cart = /listener cart: (http:\/\/\S+)/.exec(out);
      const admin = /admin API on (http:\/\/\S+)/.exec(out);
      if (cart && admin) resolve({ cart: cart[1]!, admin: admin[1]! });
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    child.once('exit', (code) => reject(new Error(`exited ${code}: ${out}`)));
  });
  t.is((await fetch(`${seen.admin}/ready`)).status, 200);
  // Its upstreams are the demo's, not running here: the chain runs and the proxy answers 502.
  const res = await fetch(seen.cart, { headers: { cookie: 'user=alice' } });
  t.is(res.status, 502);
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  t.is(await exited, 0);
});

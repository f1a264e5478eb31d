/**
 * `npm run demo`: starts two versions of a demo "cart" service, runs switchyard
 * (the real CLI) on config/default.yaml, sends traffic through it and prints what
 * happened: the 90/10 split, a request pinned by header, a request routed by role
 * meta, then a live reload to 50/50 through the admin API, and the split after it.
 * It keeps running for you to try things with curl until Ctrl-C.
 *
 * Its addresses can be moved where the defaults are taken (DEMO_LISTENER, DEMO_TCP,
 * DEMO_ADMIN, DEMO_UPSTREAM_PORTS): they go into a second --config file that overrides
 * config/default.yaml key by key.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { parse, stringify } from 'yaml';
import { Agent, request } from 'undici';

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..');
const CONFIG = join(ROOT, 'config/default.yaml');
const env = process.env;
const ADDRESSES = {
  listener: env.DEMO_LISTENER ?? '127.0.0.2:8080',
  tcp: env.DEMO_TCP ?? '127.0.0.3:7000',
  admin: env.DEMO_ADMIN ?? '127.0.0.1:9901',
  upstreams: (env.DEMO_UPSTREAM_PORTS ?? '7001,7002,7101').split(',').map(Number),
};
if (ADDRESSES.upstreams.length !== 3 || !ADDRESSES.upstreams.every((p) => Number.isInteger(p) && p > 0 && p < 65536)) {
  console.error('DEMO_UPSTREAM_PORTS takes three ports: cart-v1, cart-v1, cart-v2 (e.g. 7001,7002,7101)');
  process.exit(2);
}
const [V1A, V1B, V2] = ADDRESSES.upstreams as [number, number, number];
const LISTENER = `http://${ADDRESSES.listener}`;
const ADMIN = `http://${ADDRESSES.admin}`;
/** What DEMO_* moves: merged over config/default.yaml (lists and scalars replace, mappings merge). */
const OVERRIDE = {
  admin: { address: ADDRESSES.admin },
  roles: {
    'cart-v1': { channels: { http: { endpoints: [`127.0.0.1:${V1A}`, `127.0.0.1:${V1B}`] } } },
    'cart-v2': { channels: { api: { endpoints: [`127.0.0.1:${V2}`] } } },
  },
  listeners: { cart: { address: ADDRESSES.listener }, 'cart-tcp': { address: ADDRESSES.tcp } },
};
let overrideFile = '';
const client = new Agent({ connections: 32 });

/** A demo upstream: answers which role and version served the request. */
function startRole(role: string, version: string, port: number): Promise<Server> {
  const server = createServer((req, res) => {
    req.resume();
    const body = JSON.stringify({ role, version, port, path: req.url }) + '\n';
    res.writeHead(200, { 'content-type': 'application/json', 'x-served-by': role });
    res.end(body);
  });
  return new Promise((ok, fail) => {
    server.once('error', (err) => fail(new Error(`demo upstream ${role} cannot listen on 127.0.0.1:${port}: ${err.message}`)));
    server.listen(port, '127.0.0.1', () => ok(server));
  });
}

/** Starts `switchyard run`, echoes its log, resolves once the admin API is up. */
function startSwitchyard(): Promise<ChildProcess> {
  const child = spawn(process.execPath, [join(ROOT, 'bin/switchyard.js'), 'run', '--config', CONFIG, '--config', overrideFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((ok, fail) => {
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (l) => {
      console.log(`  [switchyard] ${l}`);
      if (l.includes('admin API on')) ok(child);
    });
    createInterface({ input: child.stderr! }).on('line', (l) => console.error(`  [switchyard] ${l}`));
    child.once('exit', (code) => fail(new Error(`switchyard exited with code ${code} before it was ready`)));
  });
}

async function send(headers: Record<string, string> = {}): Promise<{ role: string; version: string }> {
  const res = await request(LISTENER, { dispatcher: client, headers });
  if (res.statusCode !== 200) {
    await res.body.dump();
    return { role: `failed (${res.statusCode})`, version: '' };
  }
  return (await res.body.json()) as { role: string; version: string };
}

/** Sends `n` requests, 32 at a time, and counts the roles that served them. */
async function split(n: number): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  let sent = 0;
  await Promise.all(Array.from({ length: 32 }, async () => {
    while (sent < n) {
      sent++;
      const { role } = await send();
      counts.set(role, (counts.get(role) ?? 0) + 1);
    }
  }));
  return counts;
}

function printSplit(counts: Map<string, number>): void {
  const total = [...counts.values()].reduce((a, b) => a + b, 0);
  for (const [role, n] of [...counts].sort()) {
    const pct = (100 * n) / total;
    console.log(`    ${role.padEnd(8)} ${String(n).padStart(5)}  ${pct.toFixed(1).padStart(5)} %  ${'█'.repeat(Math.round(pct / 2))}`);
  }
}

/** Waits until the admin API's metrics say every endpoint of `role` is healthy again. */
async function untilHealthy(role: string): Promise<void> {
  const end = Date.now() + 15_000;
  const re = new RegExp(`^switchyard_endpoints_healthy\\{role="${role}",[^}]*\\} (\\d+)`, 'm');
  while (Date.now() < end) {
    const res = await request(`${ADMIN}/metrics`);
    const m = re.exec(await res.body.text());
    if (m && Number(m[1]) > 0) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${role} did not become healthy within 15 s`);
}

async function main(): Promise<void> {
  console.log('switchyard demo: one service, "cart", in two versions (roles cart-v1 and cart-v2)\n');
  overrideFile = join(await mkdtemp(join(tmpdir(), 'switchyard-demo-')), 'addresses.yaml');
  await writeFile(overrideFile, stringify(OVERRIDE));
  const servers = await Promise.all([
    startRole('cart-v1', '1.4.2', V1A),
    startRole('cart-v1', '1.4.2', V1B),
    startRole('cart-v2', '2.0.0', V2),
  ]);
  console.log(`  upstreams: cart-v1 on 127.0.0.1:${V1A} and :${V1B}, cart-v2 on 127.0.0.1:${V2}\n`);
  const child = await startSwitchyard();
  let stopping = false;
  const stop = async (code: number): Promise<void> => {
    if (stopping) return;
    stopping = true;
    console.log('\nstopping: switchyard drains and exits…');
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
    for (const s of servers) s.close();
    await client.close();
    process.exit(code);
  };
  process.on('SIGINT', () => void stop(0));
  process.on('SIGTERM', () => void stop(0));
  child.once('exit', (code) => { if (!stopping) { console.error(`switchyard exited (${code})`); process.exit(1); } });

  try {
    console.log('\n1. 1,000 requests to the cart listener (weighted: cart-v1 90, cart-v2 10):');
    printSplit(await split(1000));

    const pinned = await send({ 'x-canary': 'true' });
    console.log(`\n2. a request with "x-canary: true" (header_route pins cart-v2): served by ${pinned.role} (${pinned.version})`);
    const byMeta = await send({ 'x-cart-version': '1.4.2' });
    console.log(`3. a request with "x-cart-version: 1.4.2" (header_route picks the role whose meta.version matches): served by ${byMeta.role} (${byMeta.version})`);

    console.log('\n4. live reload: PUT /config on the admin API with the weights moved to 50/50');
    const config = merge(parse(await readFile(CONFIG, 'utf8')), OVERRIDE) as { listeners: Record<string, unknown> };
    for (const l of Object.values(config.listeners as Record<string, { filters?: { type: string; weights?: Record<string, number> }[] }>)) {
      for (const f of l.filters ?? []) if (f.type === 'weighted') f.weights = { 'cart-v1': 50, 'cart-v2': 50 };
    }
    const res = await request(`${ADMIN}/config`, { method: 'PUT', body: stringify(config), headers: { 'content-type': 'application/yaml' } });
    console.log(`   admin answered ${res.statusCode}: ${JSON.stringify(await res.body.json())}`);
    console.log('   1,000 requests after the reload:');
    printSplit(await split(1000));

    console.log('\n5. cart-v2 dies (its server closes every connection) while 1,000 requests run:');
    const load = split(1000);
    await new Promise((r) => setTimeout(r, 20));
    servers[2]!.closeAllConnections();
    servers[2]!.close();
    printSplit(await load);
    console.log('   (retries and fallback move its requests to cart-v1; the health check takes it out of the split)');
    servers[2] = await startRole('cart-v2', '2.0.0', V2);
    console.log('   cart-v2 is back; once its health check passes twice, it gets its share again:');
    await untilHealthy('cart-v2');
    printSplit(await split(1000));
  } catch (err) {
    console.error(`demo failed: ${(err as Error).message}`);
    await stop(1);
    return;
  }

  console.log(`
Try it yourself while this runs (Ctrl-C stops everything):
  curl -s ${LISTENER}/                                   # weighted split (now 50/50)
  curl -s -H 'x-canary: true' ${LISTENER}/               # pinned to cart-v2
  curl -s -H 'x-cart-version: 1.4.2' ${LISTENER}/        # routed by role meta
  curl -s http://${ADDRESSES.tcp}/                        # the tcp listener: bytes piped to a role (L4)
  curl -s ${ADMIN}/config | head -20                  # the effective config and its generation
  curl -s ${ADMIN}/vsets                              # vsets, roles, meta, listener addresses
  curl -s ${ADMIN}/metrics | grep switchyard_requests_total
  npx switchyard apply --admin ${ADMIN} --config config/default.yaml --config ${overrideFile}   # the files again (90/10)
`);
}

/** `over` merged into `base` as several --config files are: mappings recursively, anything else replaced. */
function merge(base: unknown, over: unknown): unknown {
  if (!isMap(base) || !isMap(over)) return over;
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = merge(base[k], v);
  return out;
}

function isMap(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

main().catch((err) => {
  console.error(`demo failed: ${(err as Error).message}`);
  process.exit(1);
});

// Connection limits (issue 11, item 5): 10,500 idle connections used up the sidecar's
// file descriptors; the admin API became unreachable and HTTP answered 502.
import test, { type ExecutionContext } from 'ava';
import { connect, type Socket } from 'node:net';
import { readFile, writeFile } from 'node:fs/promises';
import { request } from 'undici';
import type { Sidecar } from '../../src/sidecar.js';
import {
  adminUrl, oneRole, putConfig, role, scrape, spawnCli, startEcho, startSidecar, startUpstream, tempFiles, uniqueHost, until, yaml,
} from '../helpers.js';
import { toolPath } from '../setup/requirements.js';

// ---------------------------------------------------------------- local helpers

/** A raw client connection, destroyed at teardown. */
function dial(t: ExecutionContext, host: string, port: number): Socket {
  const s = connect({ host, port });
  s.on('error', () => {});
  t.teardown(() => { s.destroy(); });
  return s;
}

function dialListener(t: ExecutionContext, sc: Sidecar, name: string): Socket {
  const a = sc.addresses().get(name)!;
  return dial(t, a.host, a.port);
}

/** What the socket reads until `until` holds for it (rejects when it closes first, or after 5 s). */
function read(s: Socket, until: (got: string) => boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const timer = setTimeout(() => done(new Error(`no answer within 5 s (got ${JSON.stringify(got)})`)), 5_000);
    const onData = (d: Buffer): void => {
      got += d.toString('latin1');
      if (until(got)) done(null);
    };
    const onClose = (): void => done(new Error(`closed after ${JSON.stringify(got)}`));
    const done = (err: Error | null): void => {
      clearTimeout(timer);
      s.off('data', onData);
      s.off('close', onClose);
      if (err) reject(err);
      else resolve(got);
    };
    s.on('data', onData);
    s.once('close', onClose);
  });
}

/** One byte through a TCP listener and back from the echo upstream: the connection is admitted and works. */
async function echoes(s: Socket): Promise<boolean> {
  const back = read(s, (g) => g === 'x');
  s.write('x');
  return (await back) === 'x';
}

/** One keep-alive GET on a raw connection; resolves with the status once the whole answer is in. */
async function getOn(s: Socket, path = '/', host = 'limits.test'): Promise<number> {
  const answer = read(s, (g) => {
    const end = g.indexOf('\r\n\r\n');
    if (end < 0) return false;
    const length = /content-length: (\d+)/i.exec(g.slice(0, end));
    return length === null ? g.endsWith('\r\n0\r\n\r\n') : g.length - end - 4 >= Number(length[1]);
  });
  s.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
  return Number(/^HTTP\/1\.1 (\d+)/.exec(await answer)![1]);
}

/** Resolves with the bytes a connection got before the sidecar closed it (within 5 s). */
function closedBySidecar(s: Socket): Promise<number> {
  return new Promise((resolve, reject) => {
    let bytes = 0;
    s.on('data', (d: Buffer) => { bytes += d.length; });
    const timer = setTimeout(() => reject(new Error('the sidecar did not close the connection within 5 s')), 5_000);
    s.once('close', () => { clearTimeout(timer); resolve(bytes); });
  });
}

/** A tcp connection that the sidecar closes ('closed'), or that echoes a byte ('open', then destroyed here). */
function closedOrEchoing(s: Socket): Promise<'closed' | 'open'> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('neither closed nor echoing within 5 s')), 5_000);
    s.once('data', () => { clearTimeout(timer); s.destroy(); resolve('open'); });
    s.once('close', () => { clearTimeout(timer); resolve('closed'); });
    s.write('x');
  });
}

async function ready(admin: string): Promise<number> {
  const res = await request(`${admin}/ready`, { headersTimeout: 5_000, bodyTimeout: 5_000 });
  await res.body.text();
  return res.statusCode;
}

// ---------------------------------------------------------------- per listener

test('a tcp listener closes connections beyond its maxConnections at once, counted; those within keep working, and a freed place is taken again', async (t) => {
  const up = await startEcho(t);
  const sc = await startSidecar(t, `
roles:
  db: { channels: { raw: { endpoints: ["${up.address}"] } } }
listeners:
  pipe: { address: "${uniqueHost()}:0", protocol: tcp, target: db.raw, maxConnections: 5 }
`);
  const admitted = Array.from({ length: 5 }, () => dialListener(t, sc, 'pipe'));
  for (const s of admitted) t.true(await echoes(s));
  const over = Array.from({ length: 3 }, () => dialListener(t, sc, 'pipe'));
  t.deepEqual(await Promise.all(over.map(closedBySidecar)), [0, 0, 0], 'closed without a byte');
  const m = await scrape(sc);
  t.is(m.value('switchyard_connections_refused_total', { listener: 'pipe', reason: 'listener' }), 3);
  t.is(m.value('switchyard_connections_refused_total', { listener: 'pipe', reason: 'global' }), 0);
  t.is(m.value('switchyard_connections_active', { listener: 'pipe' }), 5);
  // The admin API answers while the listener is at its limit.
  t.is(await ready(adminUrl(sc)), 200);
  for (const s of admitted) t.true(await echoes(s), 'the connections within the limit still work');
  // A connection that closes frees its place.
  admitted[0]!.destroy();
  await until(() => sc.runtime.sockets.budget.open === 4, 5_000, 'the sidecar saw the close');
  t.true(await echoes(dialListener(t, sc, 'pipe')));
  t.is(up.open(), 5);
});

test('an http listener at its maxConnections closes new connections without an answer; its keep-alive connections keep serving', async (t) => {
  const up = await startUpstream(t, 'a');
  const sc = await startSidecar(t, `
roles:
  a: { channels: { http: { endpoints: ["${up.address}"] } } }
listeners:
  web: { address: "${uniqueHost()}:0", target: a, maxConnections: 3 }
`);
  const admitted = Array.from({ length: 3 }, () => dialListener(t, sc, 'web'));
  for (const s of admitted) t.is(await getOn(s), 200);
  // Idle keep-alive connections count: a fourth is closed at once, with no 503 written.
  t.is(await closedBySidecar(dialListener(t, sc, 'web')), 0);
  t.is(await ready(adminUrl(sc)), 200);
  for (const s of admitted) t.is(await getOn(s), 200, 'a second request on each admitted connection');
  const m = await scrape(sc);
  t.is(m.value('switchyard_connections_refused_total', { listener: 'web', reason: 'listener' }), 1);
  t.is(m.value('switchyard_requests_total', { listener: 'web', vset: 'a', role: 'a', code: '200' }), 6);
});

// ---------------------------------------------------------------- global

test('limits.maxConnections counts connections across listeners: beyond it any listener refuses (reason "global"), and the admin API still answers', async (t) => {
  const tcpUp = await startEcho(t);
  const httpUp = await startUpstream(t, 'a');
  const sc = await startSidecar(t, `
limits: { maxConnections: 4 }
roles:
  db: { channels: { raw: { endpoints: ["${tcpUp.address}"] } } }
  a: { channels: { http: { endpoints: ["${httpUp.address}"] } } }
listeners:
  pipe: { address: "${uniqueHost()}:0", protocol: tcp, target: db.raw }
  web: { address: "${uniqueHost()}:0", target: a, maxConnections: 10 }
`);
  t.is(sc.runtime.connectionLimit().max, 4);
  const pipes = [dialListener(t, sc, 'pipe'), dialListener(t, sc, 'pipe')];
  for (const s of pipes) t.true(await echoes(s));
  const webs = [dialListener(t, sc, 'web'), dialListener(t, sc, 'web')];
  for (const s of webs) t.is(await getOn(s), 200);
  t.is(await closedBySidecar(dialListener(t, sc, 'pipe')), 0);
  t.is(await closedBySidecar(dialListener(t, sc, 'web')), 0);
  t.is(await closedBySidecar(dialListener(t, sc, 'web')), 0);
  t.is(await ready(adminUrl(sc)), 200);
  const m = await scrape(sc);
  t.is(m.value('switchyard_connections_refused_total', { listener: 'pipe', reason: 'global' }), 1);
  t.is(m.value('switchyard_connections_refused_total', { listener: 'web', reason: 'global' }), 2);
  t.is(m.value('switchyard_connections_refused_total', { listener: 'web', reason: 'listener' }), 0);
  for (const s of pipes) t.true(await echoes(s));
  for (const s of webs) t.is(await getOn(s), 200);
  // A place freed on one listener is taken on another.
  pipes[0]!.destroy();
  await until(() => sc.runtime.sockets.budget.open === 3, 5_000, 'the sidecar saw the close');
  t.is(await getOn(dialListener(t, sc, 'web')), 200);
});

test('the default global limit derives from the soft file-descriptor limit: (soft - 128 - listening sockets) / 2; limits.maxConnections overrides it', async (t) => {
  const up = await startUpstream(t, 'a');
  const yaml = `
roles:
  a: { channels: { http: { endpoints: ["${up.address}"] } } }
listeners:
  web: { address: "${uniqueHost()}:0", target: a }
`;
  const sc = await startSidecar(t, yaml);
  const soft = sc.runtime.fdLimit!.soft;
  t.deepEqual(sc.runtime.connectionLimit(), { max: Math.floor((soft - 128 - 1) / 2), from: 'fd-limit' });
  t.is(sc.runtime.sockets.budget.max, Math.floor((soft - 128 - 1) / 2));
  const res = await putConfig(sc, `limits: { maxConnections: 7 }\n${yaml}`);
  t.is(res.status, 200, res.body);
  t.deepEqual(sc.runtime.connectionLimit(), { max: 7, from: 'config' });
  t.is(sc.runtime.sockets.budget.max, 7);
});

test('limits and maxConnections are checked: integers of at least 1, known keys only', async (t) => {
  const up = await startUpstream(t, 'a');
  const base = `
roles:
  a: { channels: { http: { endpoints: ["${up.address}"] } } }
`;
  const sc = await startSidecar(t, `${base}listeners:\n  web: { address: "${uniqueHost()}:0", target: a }\n`);
  const res = await request(`${adminUrl(sc)}/config`, {
    method: 'PUT', headers: { 'content-type': 'application/yaml' },
    body: `admin: { address: "127.0.0.1:0" }\nlimits: { maxConnections: 0, maxConns: 5 }\n${base}listeners:\n  web: { target: a, maxConnections: "9" }\n  w2: { target: a, maxConnections: 2.5 }\n`,
  });
  t.is(res.statusCode, 400);
  const { errors } = await res.body.json() as { errors: { code: string; path: string }[] };
  t.deepEqual(errors.map((e) => `${e.path} ${e.code}`).sort(), [
    'limits.maxConnections SY_ERR_CONFIG_VALUE',
    'limits.maxConns SY_ERR_CONFIG_UNKNOWN_KEY',
    'listeners.w2.maxConnections SY_ERR_CONFIG_VALUE',
    'listeners.web.maxConnections SY_ERR_CONFIG_TYPE',
  ]);
});

// ---------------------------------------------------------------- file descriptors, for real

test.serial('a sidecar with 256 file descriptors takes 300 idle connections: it keeps 63 (the default limit), refuses the rest, and its admin API answers', async (t) => {
  const up = await startEcho(t);
  const host = uniqueHost();
  const { paths } = await tempFiles(t, {
    'fd.yaml': yaml({ admin: { address: '127.0.0.1:0' }, ...oneRole(up, { address: `${host}:0`, protocol: 'tcp' }, { role: 'db', channel: 'raw', listener: 'raw' }) }),
  });
  // 256 soft and hard: Node cannot raise it, nor can switchyard run.
  const cli = spawnCli(t, ['run', '--config', paths['fd.yaml']!], { via: [toolPath('prlimit'), '--nofile=256:256'] });
  const lines = (): string[] => [...cli.stdout, ...cli.stderr];
  const [, port] = await cli.line(/listener raw: tcp:\/\/[\d.]+:(\d+)/);
  const [, admin] = await cli.line(/admin API on (http:\/\/[\d.]+:\d+)/);
  await cli.line(/file descriptors: soft limit 256, hard limit 256$/);
  await cli.line(/client connections: at most 63 at once across listeners \(limits\.maxConnections default: \(soft limit 256 - 128 in reserve - 1 listening\) \/ 2\)/);

  let closed = 0;
  const sockets = Array.from({ length: 300 }, () => {
    const s = dial(t, host, Number(port));
    s.once('close', () => { closed++; });
    return s;
  });
  // Without limits the sidecar ran out of descriptors here: it kept about 117, dropped
  // the rest as it could, and its admin API no longer accepted.
  await until(() => closed === 300 - 63 && up.open() === 63, 15_000, '237 refused and 63 forwarded')
    .catch((err: Error) => { throw new Error(`${err.message}: closed ${closed}, upstream ${up.open()}\n${lines().join('\n')}`); });
  t.is(await ready(admin!), 200);
  const m = await scrape(admin!);
  t.is(m.value('switchyard_connections_refused_total', { listener: 'raw', reason: 'global' }), 237);
  t.is(m.value('switchyard_connections_active', { listener: 'raw' }), 63);
  const open = sockets.filter((s) => !s.destroyed);
  t.is(open.length, 63);
  for (const s of open.slice(0, 5)) t.true(await echoes(s), 'the connections within the limit work');
  t.true(lines().some((l) => /the global limit \(limits\.maxConnections 63\): new connections on every listener are closed at once/.test(l)), lines().join('\n'));
});

test('the admin API takes at most 64 connections at once, beyond which it closes them as accepted; they do not count against limits.maxConnections', async (t) => {
  const up = await startUpstream(t, 'a');
  const sc = await startSidecar(t, `
limits: { maxConnections: 2 }
roles:
  a: { channels: { http: { endpoints: ["${up.address}"] } } }
listeners:
  web: { address: "${uniqueHost()}:0", target: a }
`);
  const a = sc.adminAddress!;
  const held = Array.from({ length: 64 }, () => dial(t, a.host, a.port));
  for (const s of held) t.is(await getOn(s, '/ready', '127.0.0.1'), 200);
  t.is(await closedBySidecar(dial(t, a.host, a.port)), 0, 'the 65th');
  // The listeners' budget is untouched: both places are free.
  t.is(sc.runtime.sockets.budget.open, 0);
  const webs = [dialListener(t, sc, 'web'), dialListener(t, sc, 'web')];
  for (const s of webs) t.is(await getOn(s), 200);
  held[0]!.destroy();
  await until(async () => (await ready(adminUrl(sc)).catch(() => 0)) === 200, 5_000, 'a freed admin place');
});

test.serial('out of file descriptors (limits.maxConnections set above what they allow), a request or WebSocket upgrade gets 503, never blamed on the upstream; a tcp connection likewise', async (t) => {
  // Each answer closes its upstream connection, so every request needs a new one.
  const up = await startUpstream(t, 'a', (req, res) => { req.resume(); res.setHeader('connection', 'close'); res.end('ok'); });
  const echo = await startEcho(t);
  const web = uniqueHost();
  const raw = uniqueHost();
  const { paths } = await tempFiles(t, {
    'fd.yaml': yaml({
      admin: { address: '127.0.0.1:0' },
      limits: { maxConnections: 1000 },
      roles: {
        a: { channels: { http: { endpoints: [up.address], outlierDetection: { consecutiveErrors: 1 } } } },
        db: role(echo, { channel: 'raw' }),
      },
      listeners: {
        web: { address: `${web}:0`, target: 'a', retries: { attempts: 2 } },
        raw: { address: `${raw}:0`, protocol: 'tcp', target: 'db.raw' },
      },
    }),
  });
  const cli = spawnCli(t, ['run', '--config', paths['fd.yaml']!], { via: [toolPath('prlimit'), '--nofile=200:200'] });
  const lines = (): string[] => [...cli.stdout, ...cli.stderr];
  const find = (re: RegExp): RegExpMatchArray | null => { for (const l of lines()) { const m = re.exec(l); if (m) return m; } return null; };
  await cli.line(/client connections: at most/);
  const webPort = Number((await cli.line(/listener web: http:\/\/[\d.]+:(\d+)/))[1]);
  const rawPort = Number((await cli.line(/listener raw: tcp:\/\/[\d.]+:(\d+)/))[1]);
  const admin = (await cli.line(/admin API on (http:\/\/[\d.]+:\d+)/))[1]!;
  t.truthy(find(/limits\.maxConnections 1000 is more than the file descriptors allow \(soft limit 200: about 35 client connections/), lines().join('\n'));
  // The file watcher reads the config once after the start; a read while descriptors run
  // out can take the one libuv keeps to shed connections with. Let it finish first: a
  // change it reloads is logged, and then it reads nothing more.
  await writeFile(paths['fd.yaml']!, `# touched\n${await readFile(paths['fd.yaml']!, 'utf8')}`);
  await cli.line(/generation 2 applied from file/, { ms: 10_000 });

  const client = dial(t, web, webPort);
  t.is(await getOn(client), 200);
  const upgrading = dial(t, web, webPort);
  t.is(await getOn(upgrading), 200);
  // The upstream closes each connection after answering: once it saw the sidecar close
  // its side too, that descriptor is free again.
  const upstreamConnections = (): Promise<number> => new Promise((resolve, reject) => up.server.getConnections((e, n) => (e ? reject(e) : resolve(n))));
  // Idle connections take every descriptor the sidecar has left; one more, made after
  // them, is closed by libuv (EMFILE on accept): then the earlier ones were all taken.
  // Should a descriptor held for a moment meanwhile be free again afterwards, the request
  // is served (its upstream connection made), and more idle connections fill up again.
  const fillers: Socket[] = [];
  let status = 0;
  for (let round = 0; round < 10 && status !== 503; round++) {
    await until(async () => (await upstreamConnections()) === 0, 5_000, 'the upstream connections closed');
    for (let i = 0; i < (round === 0 ? 250 : 5); i++) fillers.push(dial(t, web, webPort));
    await closedBySidecar(dial(t, web, webPort));
    status = await getOn(client);
    if (status !== 503) t.log(`round ${round}: ${status}`);
  }
  t.is(status, 503, 'no descriptor for the upstream connection');
  const answer = read(upgrading, (g) => g.includes('\r\n\r\n'));
  upgrading.write('GET /ws HTTP/1.1\r\nHost: limits.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
  const upgradeClosed = new Promise((resolve) => upgrading.once('close', resolve));
  t.regex(await answer, /^HTTP\/1\.1 503 /, 'a WebSocket upgrade likewise');
  // The upgrade's connection closed after its answer: one descriptor is free, so a tcp
  // connection is accepted, and its upstream connect fails (each frees it again).
  await upgradeClosed;
  for (let i = 0; i < 20; i++) await closedOrEchoing(dial(t, raw, rawPort));
  for (const s of fillers) s.destroy();
  await until(async () => (await ready(admin).catch(() => 0)) === 200, 10_000, 'the admin API answers again');
  t.is(await getOn(client), 200, 'the endpoint serves again');
  const m = await scrape(admin);
  t.is(m.value('switchyard_requests_total', { listener: 'web', vset: 'a', role: '', code: '503' }), 2);
  t.deepEqual(m.series('switchyard_upstream_errors_total'), [], 'never an upstream error');
  t.deepEqual(m.series('switchyard_retries_total'), [], 'never retried');
  t.is(m.value('switchyard_endpoints_healthy', { role: 'a', channel: 'http' }), 1, 'not ejected');
  t.true(m.value('switchyard_tcp_connections_total', { listener: 'raw', vset: 'db', role: '', result: 'error' }) >= 1, m.text);
  t.is(m.find('switchyard_tcp_connections_total', { listener: 'raw', vset: 'db', role: 'db', result: 'error' }), undefined);
});

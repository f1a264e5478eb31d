/*
 * A real etcd for the fleet-source tests: started on free loopback ports with a
 * temporary data dir, stopped (or killed and restarted on the same dir and port)
 * by the test; etcdctl for writes and compaction behind the sidecar's back; and a
 * TCP relay between a sidecar and etcd that a test can cut or stall (a network
 * partition, and a connection that silently stops carrying bytes).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { Sidecar } from '../src/sidecar.js';
import { freePort, tempFiles, until } from './helpers.js';
import { toolPath } from './setup/requirements.js';

type Teardown = Pick<ExecutionContext, 'teardown'>;

/**
 * Starts an in-process sidecar from a bootstrap file with `text` (which names
 * source.etcd), with a short reconnect back-off; stopped at teardown. Its log lines
 * are printed at teardown with SY_DEBUG set.
 */
export async function startFromBootstrap(t: Teardown, text: string): Promise<{ sc: Sidecar; log: string[] }> {
  const { paths } = await tempFiles(t, { 'boot.yaml': text });
  const log: string[] = [];
  const sc = await Sidecar.start({ files: [paths['boot.yaml']!], log: (l) => log.push(l), etcdBackoff: { minMs: 50, maxMs: 250 } });
  t.teardown(() => sc.stop());
  t.teardown(() => { if (process.env.SY_DEBUG) console.log(log.join('\n')); });
  return { sc, log };
}

export class Etcd {
  readonly url: string;
  readonly dataDir: string;
  readonly #args: string[];
  #child: ChildProcess | null = null;
  #log: string[] = [];

  private constructor(url: string, dataDir: string, args: string[]) {
    this.url = url;
    this.dataDir = dataDir;
    this.#args = args;
  }

  /** Starts etcd on free ports of 127.0.0.1 and waits until it answers; stopped and its data dir removed at teardown. */
  static async start(t: Teardown): Promise<Etcd> {
    const dataDir = await mkdtemp(join(tmpdir(), 'switchyard-etcd-'));
    const client = await freePort('127.0.0.1');
    let peer = await freePort('127.0.0.1');
    while (peer === client) peer = await freePort('127.0.0.1');
    const url = `http://127.0.0.1:${client}`;
    const peerUrl = `http://127.0.0.1:${peer}`;
    const etcd = new Etcd(url, dataDir, [
      '--name', 'default', '--data-dir', dataDir,
      '--listen-client-urls', url, '--advertise-client-urls', url,
      '--listen-peer-urls', peerUrl, '--initial-advertise-peer-urls', peerUrl,
      '--initial-cluster', `default=${peerUrl}`,
      '--log-level', 'error',
    ]);
    t.teardown(async () => {
      await etcd.stop();
      await rm(dataDir, { recursive: true, force: true, maxRetries: 3 });
    });
    await etcd.restart();
    return etcd;
  }

  /** (Re)starts etcd on the same data dir and ports; resolves once it answers. */
  async restart(): Promise<void> {
    const child = spawn(toolPath('etcd'), this.#args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.#child = child;
    // A test process that dies before its teardown (an uncaught exception) takes etcd with it.
    const orphan = (): void => void child.kill('SIGKILL');
    process.once('exit', orphan);
    child.once('exit', () => process.off('exit', orphan));
    const keep = (d: Buffer): void => {
      this.#log.push(d.toString());
      if (this.#log.length > 50) this.#log.shift();
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    await until(async () => {
      if (child.exitCode !== null) throw new Error(`etcd exited (${child.exitCode}):\n${this.#log.join('')}`);
      return (await this.ctl('endpoint', 'health').then(() => true, () => false));
    }, 20_000, 'etcd to answer');
  }

  /** Kills etcd (SIGKILL, no goodbye on its connections) and waits for it to exit. */
  async kill(): Promise<void> {
    await this.#end('SIGKILL');
  }

  async stop(): Promise<void> {
    await this.#end('SIGTERM');
  }

  async #end(signal: NodeJS.Signals): Promise<void> {
    const child = this.#child;
    this.#child = null;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill(signal);
    await exited;
  }

  /** Runs etcdctl (API v3) against this etcd; resolves with its stdout. */
  ctl(...args: string[]): Promise<string> {
    return new Promise((resolve, reject) => {
      execFile(toolPath('etcdctl'), ['--endpoints', this.url, '--command-timeout=5s', ...args], { env: { ...process.env, ETCDCTL_API: '3' }, timeout: 10_000 },
        (err, stdout, stderr) => (err ? reject(new Error(`etcdctl ${args.join(' ')}: ${stderr || err.message}`)) : resolve(stdout)));
    });
  }

  /** `etcdctl put KEY VALUE` (the value passed as an argument, newlines and all); resolves with the revision it made. */
  async put(key: string, value: string): Promise<number> {
    return revisionOf(await this.ctl('put', '-w', 'json', key, '--', value));
  }

  /**
   * Puts every key in one transaction (`etcdctl txn`): one revision for all of
   * them. Values are JSON (one line each, as etcdctl's txn syntax needs).
   */
  async putAll(kvs: Record<string, unknown>): Promise<number> {
    const puts = Object.entries(kvs).map(([k, v]) => `put ${k} ${JSON.stringify(JSON.stringify(v))}`).join('\n');
    return new Promise<number>((resolve, reject) => {
      const p = execFile(toolPath('etcdctl'), ['--endpoints', this.url, 'txn', '-w', 'json'], { env: { ...process.env, ETCDCTL_API: '3' }, timeout: 10_000 },
        (err, stdout, stderr) => (err || !/"succeeded":true/.test(stdout) ? reject(new Error(`etcdctl txn: ${stderr || stdout || err?.message}`)) : resolve(revisionOf(stdout))));
      // No compares, then the success requests, then no failure requests.
      p.stdin!.end(`\n${puts}\n\n\n`);
    });
  }

  /** `etcdctl del KEY`; resolves with the revision it made. */
  async del(key: string): Promise<number> {
    return revisionOf(await this.ctl('del', '-w', 'json', key));
  }

  async get(key: string): Promise<string | null> {
    const out = await this.ctl('get', key, '--print-value-only');
    return out === '' ? null : out.replace(/\n$/, '');
  }

  /** The store's current revision. */
  async revision(): Promise<number> {
    const out = JSON.parse(await this.ctl('get', '/', '--prefix', '--keys-only', '--limit=1', '-w', 'json')) as { header: { revision: number } };
    return Number(out.header.revision);
  }

  /** Compacts history up to the current revision: a watch from an older revision is refused. */
  async compact(): Promise<number> {
    const rev = await this.revision();
    await this.ctl('compaction', String(rev), '--physical');
    return rev;
  }
}

function revisionOf(json: string): number {
  return Number((JSON.parse(json) as { header: { revision: number } }).header.revision);
}

/**
 * A TCP relay to `target` (host:port) on a port of its own: `cut()` drops every
 * connection and refuses new ones (the far side sees resets), `stall()` stops
 * carrying bytes on the connections open now without closing them (new ones flow),
 * `restore()` undoes a cut.
 */
export class Relay {
  readonly url: string;
  readonly #port: number;
  readonly #target: { host: string; port: number };
  #server: Server | null = null;
  readonly #pairs = new Set<[Socket, Socket]>();
  readonly #stalled = new Set<[Socket, Socket]>();

  private constructor(port: number, target: { host: string; port: number }) {
    this.#port = port;
    this.url = `http://127.0.0.1:${port}`;
    this.#target = target;
  }

  static async start(t: Teardown, targetUrl: string): Promise<Relay> {
    const u = new URL(targetUrl);
    const relay = new Relay(await freePort('127.0.0.1'), { host: u.hostname, port: Number(u.port) });
    t.teardown(() => relay.cut());
    await relay.restore();
    return relay;
  }

  async restore(): Promise<void> {
    if (this.#server) return;
    const server = createServer((a) => {
      const b = connect(this.#target.port, this.#target.host);
      const pair: [Socket, Socket] = [a, b];
      this.#pairs.add(pair);
      a.pipe(b);
      b.pipe(a);
      const end = (): void => {
        this.#pairs.delete(pair);
        a.destroy();
        b.destroy();
      };
      a.on('error', end).on('close', end);
      b.on('error', end).on('close', end);
    });
    this.#server = server;
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(this.#port, '127.0.0.1', () => resolve()));
  }

  async cut(): Promise<void> {
    const server = this.#server;
    this.#server = null;
    for (const [a, b] of this.#pairs) {
      a.resetAndDestroy();
      b.destroy();
    }
    this.#pairs.clear();
    for (const [a, b] of this.#stalled) {
      a.destroy();
      b.destroy();
    }
    this.#stalled.clear();
    if (server) await new Promise<void>((r) => server.close(() => r()));
  }

  /** Open connections stop carrying bytes either way (still open, nothing said). */
  stall(): void {
    for (const [a, b] of this.#pairs) {
      a.unpipe(b);
      b.unpipe(a);
      a.pause();
      b.pause();
      this.#stalled.add([a, b]);
    }
    this.#pairs.clear();
  }
}

import { spawn, type ChildProcess } from 'node:child_process';
import { createClient } from 'redis';
import { freePort, uniqueHost } from './helpers.js';

interface Teardown { teardown(fn: () => void | Promise<void>): void }

/**
 * A real redis-server on a free port of this test process's own 127.x.y.z, with
 * no persistence (a restart starts empty). It can be killed and started again on
 * the same port (Redis down, then back), or paused with SIGSTOP (Redis that holds
 * the connection and answers nothing: "slow").
 */
export class RedisServer {
  readonly host: string;
  readonly port: number;
  #proc: ChildProcess | null = null;
  #inspect: ReturnType<typeof createClient> | null = null;

  private constructor(host: string, port: number) {
    this.host = host;
    this.port = port;
  }

  /** Started and accepting connections; stopped at the test's end. */
  static async start(t: Teardown): Promise<RedisServer> {
    const host = uniqueHost();
    const r = new RedisServer(host, await freePort(host));
    t.teardown(() => r.stop());
    await r.restart();
    return r;
  }

  get url(): string {
    return `redis://${this.host}:${this.port}`;
  }

  /** Starts it (again) on its port; resolves once it accepts connections. */
  async restart(): Promise<void> {
    if (this.#proc) throw new Error('redis-server is running');
    const proc = spawn('redis-server', ['--port', String(this.port), '--bind', this.host, '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.#proc = proc;
    let out = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`redis-server did not start: ${out}`)), 10_000);
      proc.stdout!.on('data', (c: Buffer) => {
        out += c;
        if (/Ready to accept connections/.test(out)) {
          clearTimeout(timer);
          resolve();
        }
      });
      proc.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`redis-server exited with ${code}: ${out}`));
      });
    });
    proc.stdout!.resume();
  }

  /** Kills it (SIGKILL: connections reset, nothing said); resolves once it exited. */
  async stop(): Promise<void> {
    const proc = this.#proc;
    this.#proc = null;
    await this.#inspect?.close().catch(() => {});
    this.#inspect = null;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGCONT');
    proc.kill('SIGKILL');
    await exited;
  }

  /** Freezes it: connections stay open, nothing is answered. */
  pause(): void {
    this.#proc!.kill('SIGSTOP');
  }

  resume(): void {
    this.#proc!.kill('SIGCONT');
  }

  /** Runs a command on a connection of the test's own (not while paused). */
  async command(...args: string[]): Promise<unknown> {
    if (!this.#inspect) {
      this.#inspect = createClient({ url: this.url, socket: { reconnectStrategy: false } });
      this.#inspect.on('error', () => {});
      await this.#inspect.connect();
    }
    return this.#inspect.sendCommand(args);
  }

  /** Lease calls it answered so far (EVALSHA + EVAL, from INFO commandstats): counts that never expire, unlike the limit's key. */
  async scriptCalls(): Promise<number> {
    const stats = String(await this.command('INFO', 'commandstats'));
    return ['evalsha', 'eval'].reduce((sum, c) => sum + Number(new RegExp(`cmdstat_${c}:calls=(\\d+)`).exec(stats)?.[1] ?? 0), 0);
  }

  /** How many connections have this CLIENT SETNAME name (a ratelimit component's: `switchyard-<component>`). */
  async clients(name: string): Promise<number> {
    const list = String(await this.command('CLIENT', 'LIST'));
    return list.split('\n').filter((l) => new RegExp(`(^| )name=${name}( |$)`).test(l)).length;
  }
}

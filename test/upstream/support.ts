import type { ExecutionContext } from 'ava';
import { startUpstream, type Upstream } from '../helpers.js';

/** How a test upstream answers requests other than its health check. */
/** `flap`: 503 and 200 in turn, starting with 503. */
export type Mode = 'ok' | '500' | '503' | 'hang' | 'reset' | 'flap';

/** An upstream whose answers the test switches: `mode` for requests, `health` for GET /healthz. */
export interface Controlled {
  up: Upstream;
  address: string;
  name: string;
  mode: Mode;
  health: number;
  /** Requests served (health checks not counted). */
  hits: number;
  /** When each of those requests arrived (performance.now()). */
  times: number[];
  /** Health checks answered. */
  checks: number;
  /** Bodies of the requests received, in order. */
  bodies: string[];
  /** Stops accepting and cuts every open connection (the endpoint dies). */
  kill(): Promise<void>;
}

export async function controlled(t: ExecutionContext, name: string): Promise<Controlled> {
  const c = { mode: 'ok', health: 200, hits: 0, times: [] as number[], checks: 0, bodies: [] as string[], name } as Controlled;
  c.up = await startUpstream(t, name, (req, res) => {
    if (req.url === '/healthz') {
      c.checks++;
      req.resume();
      res.writeHead(c.health, { 'content-length': '0' });
      res.end();
      return;
    }
    c.hits++;
    c.times.push(performance.now());
    const flapFails = c.mode === 'flap' && c.hits % 2 === 1;
    const chunks: Buffer[] = [];
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', () => {
      c.bodies.push(Buffer.concat(chunks).toString());
      if (c.mode === 'hang') return; // never answers
      if (c.mode === 'reset') {
        req.socket.destroy();
        return;
      }
      const failWith = c.mode === '500' ? 500 : c.mode === '503' || flapFails ? 503 : 0;
      if (failWith !== 0) {
        res.writeHead(failWith, { 'content-type': 'text/plain', 'x-served-by': name });
        res.end(`${name} failed\n`);
        return;
      }
      res.writeHead(200, { 'content-type': 'text/plain', 'x-served-by': name });
      res.end(name);
    });
  });
  c.address = c.up.address;
  c.kill = () => c.up.close();
  return c;
}

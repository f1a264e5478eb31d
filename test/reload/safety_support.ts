import type { ExecutionContext } from 'ava';
import { get, startUpstream, type Upstream } from '../helpers.js';

/** An upstream answering 200 with x-role, or 500 while `failing` is set. */
export async function switchable(t: ExecutionContext, role: string): Promise<Upstream & { failing: boolean }> {
  const up = Object.assign(await startUpstream(t, role, (req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(up.failing ? 500 : 200, { 'x-role': role });
      res.end(role);
    });
  }), { failing: false });
  return up;
}

/** Answers seen by a traffic loop: per role (x-role), statuses. */
export interface Traffic {
  byRole: Map<string, number[]>;
  /** Requests that failed without an answer (a transport error). */
  errors: string[];
  stop(): Promise<void>;
}

/** `concurrency` loops sending GET `url` until stopped, `gapMs` apart (so a suite on two CPUs is not starved); each answer's status by the role that sent it. */
export function traffic(url: string, concurrency = 2, headers: () => Record<string, string> = () => ({}), gapMs = 5): Traffic {
  let on = true;
  const byRole = new Map<string, number[]>();
  const errors: string[] = [];
  const loop = async (): Promise<void> => {
    while (on) {
      try {
        const r = await get(url, headers());
        const role = String(r.headers['x-role'] ?? '');
        if (!byRole.has(role)) byRole.set(role, []);
        byRole.get(role)!.push(r.status);
      } catch (err) {
        errors.push((err as Error).message);
      }
      if (gapMs > 0) await new Promise((r) => setTimeout(r, gapMs));
    }
  };
  const loops = Array.from({ length: concurrency }, loop);
  return { byRole, errors, stop: async () => { on = false; await Promise.all(loops); } };
}

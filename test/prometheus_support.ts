import type { ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { adminUrl, get, listenerUrl, startSidecar, startUpstream, twoRoleConfig, until } from './helpers.js';

export interface ToolRun { code: number | null; stdout: string; stderr: string }

/** Runs a tool to completion (bounded: killed after `timeoutMs`), with `input` on its stdin. */
export function runTool(path: string, args: string[], opts: { input?: string; cwd?: string; timeoutMs?: number } = {}): Promise<ToolRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(path, args, { cwd: opts.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 20_000);
    child.on('error', (err) => { clearTimeout(timer); reject(err); });
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
    child.stdin.end(opts.input ?? '');
  });
}

/** header_route filters: `x-pin: a` → role a, `x-pin: b` → role b. */
export const PIN = `
- type: header_route
  rules:
    - { header: x-pin, equals: "a", role: a }
    - { header: x-pin, equals: "b", role: b }`;

/**
 * A running sidecar's /metrics once traffic has created its per-request series:
 * requests served by role a (whose first endpoint answers 503, so one is retried),
 * one to role b, whose endpoint refuses connections (an upstream error).
 */
export async function metricsAfterTraffic(t: ExecutionContext): Promise<string> {
  const a = await startUpstream(t, 'a');
  const busy = await startUpstream(t, 'busy', (req, res) => { req.resume(); res.writeHead(503, { 'content-length': '0' }); res.end(); });
  // port 1 on loopback: nothing listens there, so the connection is refused
  const yaml = twoRoleConfig({ address: `${busy.address}", "${a.address}` }, { address: '127.0.0.1:1' }, PIN)
    .replace(/^( +)target: svc\.http$/m, '$1target: svc.http\n$1retries: { attempts: 1 }');
  const sc = await startSidecar(t, yaml);
  for (let i = 0; i < 2; i++) t.is((await get(listenerUrl(sc, 'web'), { 'x-pin': 'a' })).status, 200);
  t.is((await get(listenerUrl(sc, 'web'), { 'x-pin': 'b' })).status, 502);
  let text = '';
  await until(async () => {
    text = (await get(`${adminUrl(sc)}/metrics`)).body;
    return text.includes('switchyard_upstream_errors_total{') && text.includes('switchyard_retries_total{');
  }, 5000, 'the upstream error in /metrics');
  return text;
}

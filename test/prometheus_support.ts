import type { ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { get, listenerUrl, scrape, startSidecar, startUpstream, twoRoles, uniqueHost, until, type FilterSpec } from './helpers.js';
import { makePki } from './tls_support.js';

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

/** A header_route filter: `x-pin: a` → role a, `x-pin: b` → role b. */
export const PIN: FilterSpec = {
  type: 'header_route',
  rules: [{ header: 'x-pin', equals: 'a', role: 'a' }, { header: 'x-pin', equals: 'b', role: 'b' }],
};

/**
 * A running sidecar's /metrics once traffic has created its per-request series:
 * requests served by role a (whose first endpoint answers 503, so one is retried),
 * one to role b, whose endpoint refuses connections (an upstream error).
 */
export async function metricsAfterTraffic(t: ExecutionContext): Promise<string> {
  const a = await startUpstream(t, 'a');
  const busy = await startUpstream(t, 'busy', (req, res) => { req.resume(); res.writeHead(503, { 'content-length': '0' }); res.end(); });
  // port 1 on loopback: nothing listens there, so the connection is refused
  const config = twoRoles([busy, a], '127.0.0.1:1', { retries: { attempts: 1 }, filters: [PIN] });
  // A TLS listener too, so that its certificate's expiry is exported.
  const pki = await makePki('metrics test CA');
  t.teardown(() => pki.close());
  const cert = await pki.leaf('listener', ['127.0.0.1']);
  config.listeners!['secure'] = { ...config.listeners!['web']!, address: `${uniqueHost()}:0`, tls: { cert: cert.certFile, key: cert.keyFile } };
  const sc = await startSidecar(t, config);
  for (let i = 0; i < 2; i++) t.is((await get(listenerUrl(sc, 'web'), { 'x-pin': 'a' })).status, 200);
  t.is((await get(listenerUrl(sc, 'web'), { 'x-pin': 'b' })).status, 502);
  let text = '';
  await until(async () => {
    const m = await scrape(sc);
    text = m.text;
    return m.series('switchyard_upstream_errors_total').length > 0 && m.series('switchyard_retries_total').length > 0
      && m.series('switchyard_tls_certificate_expiry_seconds').length > 0;
  }, 5000, 'the upstream error in /metrics');
  return text;
}

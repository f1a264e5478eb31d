import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

/**
 * The path of `prometheus` or `promtool` (Debian's `prometheus` package, which
 * `.ci/run` installs). Throws, so the calling test fails rather than skips: a CI
 * without them would otherwise pass without checking anything.
 */
export function promTool(name: 'prometheus' | 'promtool'): string {
  for (const dir of (process.env['PATH'] ?? '').split(delimiter)) {
    const path = join(dir, name);
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch { /* not in this directory */ }
  }
  throw new Error(`${name} is not installed: install Debian's prometheus package (apt-get install prometheus), as .ci/run does`);
}

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

import { createRequire, syncBuiltinESMExports } from 'node:module';
import { basename } from 'node:path';
import { promisify } from 'node:util';
import { isRequiredTool } from './requirements.js';

/*
 * Loaded by ava into every test process before the test file (package.json "ava.require"):
 * a test that starts a program test/setup/requirements.ts does not list fails at once,
 * so the list, and so the set-up that installs it, covers every program the suite runs.
 * Node itself (process.execPath, the CLI under test) needs no listing.
 */

const childProcess = createRequire(import.meta.url)('node:child_process') as Record<string, unknown>;

/** Throws for a program the list does not name. */
export function checkSpawn(file: unknown): void {
  if (typeof file !== 'string' || file === process.execPath) return;
  const name = basename(file);
  if (name === 'node' || isRequiredTool(name)) return;
  throw new Error(`a test runs ${file}, which test/setup/requirements.ts does not list: add it there (with its Debian package) so npm test installs it`);
}

const SPAWNERS = ['spawn', 'spawnSync', 'execFile', 'execFileSync', 'exec', 'execSync'] as const;
for (const name of SPAWNERS) {
  const original = childProcess[name] as (file: unknown, ...rest: unknown[]) => unknown;
  const shell = name === 'exec' || name === 'execSync';
  const program = (file: unknown): unknown => (shell && typeof file === 'string' ? file.trim().split(/\s+/)[0] : file);
  const guarded = function guarded(this: unknown, file: unknown, ...rest: unknown[]): unknown {
    // exec's first word is the program (a shell line).
    checkSpawn(program(file));
    return original.call(this, file, ...rest);
  } as ((file: unknown, ...rest: unknown[]) => unknown) & { [promisify.custom]?: unknown };
  // promisify(execFile) resolves with { stdout, stderr } through Node's own custom form: keep it, guarded.
  const custom = (original as { [promisify.custom]?: (file: unknown, ...rest: unknown[]) => unknown })[promisify.custom];
  if (custom !== undefined) {
    guarded[promisify.custom] = (file: unknown, ...rest: unknown[]): unknown => {
      checkSpawn(program(file));
      return custom(file, ...rest);
    };
  }
  childProcess[name] = guarded;
}
// ES module imports of node:child_process see the guarded functions too.
syncBuiltinESMExports();

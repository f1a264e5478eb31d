import { spawnSync } from 'node:child_process';
import { REQUIREMENTS, findTool, isDebian, setupPlan } from './requirements.js';

/*
 * `npm test` runs this before ava: every program the suite runs must be there. On
 * Debian or Ubuntu as root it installs what is missing (one apt-get line); elsewhere
 * it stops at once with one message that says what to install and how, instead of
 * tests failing one by one.
 */

function missing(): string[] {
  return REQUIREMENTS.filter((r) => findTool(r.tool) === undefined).map((r) => r.tool);
}

const plan = setupPlan({ missing: missing(), root: process.getuid?.() === 0, debian: isDebian() });
if (plan.kind === 'stop') {
  process.stderr.write(`${plan.message}\n`);
  process.exit(1);
}
if (plan.kind === 'install') {
  process.stderr.write(`npm test: installing what the suite runs: ${plan.command}\n`);
  const run = spawnSync('sh', ['-c', plan.command], { stdio: 'inherit' });
  const still = missing();
  if (run.status !== 0 || still.length > 0) {
    process.stderr.write(`npm test: the install failed (exit ${run.status}); still missing: ${still.join(', ') || 'nothing'}\n`);
    process.exit(1);
  }
}

// The soft RLIMIT_NOFILE is raised to the hard one at start (issue 11, item 5). These
// tests change this test process's own limit, so they run one at a time.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { defaultMaxConnections, describeFdLimit, raiseFdLimit, readFdLimit } from '../src/fd_limit.js';
import { toolPath } from './setup/requirements.js';

/** Sets this process's soft limit (the hard one stays), from outside, as an operator's ulimit would have. */
function lowerSoftLimit(soft: number): void {
  const hard = readFdLimit()!.hard;
  const run = spawnSync(toolPath('prlimit'), ['--pid', String(process.pid), `--nofile=${soft}:${Number.isFinite(hard) ? hard : 'unlimited'}`], { encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`prlimit: ${run.stderr}`);
}

test('readFdLimit reads "Max open files" from /proc/self/limits, "unlimited" as Infinity', (t) => {
  const text = `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            1024                 524288               files
Max locked memory         8388608              8388608              bytes
`;
  t.deepEqual(readFdLimit(text), { soft: 1024, hard: 524288 });
  t.deepEqual(readFdLimit('Max open files            unlimited            unlimited            files\n'), { soft: Infinity, hard: Infinity });
  t.is(readFdLimit('nothing here'), null);
  const own = readFdLimit();
  t.truthy(own, 'this machine has /proc/self/limits');
  t.true(own!.soft <= own!.hard);
});

test('the default connection limit is (soft - 128 - listening sockets) / 2, at least 1, none for an unlimited soft limit', (t) => {
  t.is(defaultMaxConnections(1024), 448);
  t.is(defaultMaxConnections(1024, 2), 447);
  t.is(defaultMaxConnections(256, 1), 63);
  t.is(defaultMaxConnections(65_536, 100), 32_654);
  t.is(defaultMaxConnections(100), 1);
  t.is(defaultMaxConnections(Infinity, 3), Infinity);
});

test.serial('raiseFdLimit raises a soft limit below the hard one to the hard one, with prlimit, and says so', (t) => {
  const hard = readFdLimit()!.hard;
  lowerSoftLimit(512);
  t.teardown(() => { if (readFdLimit()!.soft < hard) lowerSoftLimit(Number.isFinite(hard) ? hard : 1 << 20); });
  t.is(readFdLimit()!.soft, 512);
  const r = raiseFdLimit();
  t.like(r, { kind: 'raised', before: { soft: 512, hard }, limit: { soft: hard, hard } });
  t.is(readFdLimit()!.soft, hard, 'in force');
  t.is(describeFdLimit(r), `file descriptors: soft limit ${hard} (raised from 512 with prlimit), hard limit ${hard}`);
  // At the hard limit already: nothing to do.
  const again = raiseFdLimit();
  t.like(again, { kind: 'at-hard', limit: { soft: hard, hard } });
  t.is(describeFdLimit(again), `file descriptors: soft limit ${hard}, hard limit ${hard}`);
});

test.serial('without prlimit the soft limit stays, and the log line says why', (t) => {
  const hard = readFdLimit()!.hard;
  lowerSoftLimit(600);
  t.teardown(() => lowerSoftLimit(Number.isFinite(hard) ? hard : 1 << 20));
  const r = raiseFdLimit({ prlimit: '/nonexistent/prlimit' });
  t.like(r, { kind: 'not-raised', limit: { soft: 600, hard } });
  t.is(readFdLimit()!.soft, 600);
  t.is(describeFdLimit(r), `file descriptors: soft limit 600, hard limit ${hard}; the soft limit stays below the hard one: prlimit (util-linux) is not installed`);
});

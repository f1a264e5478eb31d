import { accessSync, constants, existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';

/**
 * Every program the test suite runs besides Node itself, and the Debian package that
 * has it: the one list that the suite's set-up (test/setup/install.ts), its spawn guard
 * (test/setup/spawn_guard.ts), the README's requirements and .ci/run are checked against.
 */
export const REQUIREMENTS = [
  { tool: 'prometheus', package: 'prometheus', for: 'a real Prometheus scrapes /metrics (prometheus.test)' },
  { tool: 'promtool', package: 'prometheus', for: 'checks the exposition and the alert rules (prometheus, deploy)' },
  { tool: 'chromium', package: 'chromium', for: 'the status page, and web-page attacks on the admin API, in a real browser' },
  { tool: 'python3', package: 'python3', for: 'a loopback blackhole: a socket that never accepts' },
  { tool: 'mkfifo', package: 'coreutils', for: 'an access log on a FIFO' },
  { tool: 'openssl', package: 'openssl', for: 'certificates for the TLS tests: CAs, server and client certificates, an expired one' },
  { tool: 'etcd', package: 'etcd-server', for: 'a real etcd for the fleet config source (watches, transactions, leases)' },
  { tool: 'etcdctl', package: 'etcd-client', for: 'writes and compacts keys behind the sidecar\'s back in the etcd tests' },
  { tool: 'redis-server', package: 'redis-server', for: 'real Redis servers for the global rate limit and its disaster-recovery switch' },
  { tool: 'h2load', package: 'nghttp2-client', for: 'HTTP/2 load in the bench, and many streams on one connection in the tests' },
  { tool: 'nghttp', package: 'nghttp2-client', for: 'a plain HTTP/2 client (h2c prior knowledge, trailers)' },
  { tool: 'curl', package: 'curl', for: 'a plain HTTP/2 client with prior knowledge (curl --http2-prior-knowledge)' },
  { tool: 'prlimit', package: 'util-linux', for: 'a sidecar started with few file descriptors; switchyard run raises its own soft limit with it' },
] as const;

export type Tool = (typeof REQUIREMENTS)[number]['tool'];

const TOOLS: ReadonlySet<string> = new Set(REQUIREMENTS.map((r) => r.tool));

export function isRequiredTool(name: string): name is Tool {
  return TOOLS.has(name);
}

/** The Debian packages of `tools` (each once, in list order). */
export function packagesOf(tools: readonly string[]): string[] {
  return [...new Set(REQUIREMENTS.filter((r) => tools.includes(r.tool)).map((r) => r.package))];
}

/** The one command that installs `packages` on Debian or Ubuntu, as root. */
export function aptCommand(packages: readonly string[]): string {
  return `apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${packages.join(' ')}`;
}

/** Where `tool` is on PATH, or undefined. */
export function findTool(tool: string, path = process.env['PATH'] ?? ''): string | undefined {
  for (const dir of path.split(delimiter)) {
    if (dir === '') continue;
    const file = join(dir, tool);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch { /* not here */ }
  }
  return undefined;
}

/**
 * The path of a listed tool, for a test to run. Throws, so the test fails rather than
 * skips, with the command that installs it (npm test installs it on Debian as root).
 */
export function toolPath(tool: Tool): string {
  const found = findTool(tool);
  if (found === undefined) throw new Error(`${tool} is not installed: ${aptCommand(packagesOf([tool]))} (npm test does this on Debian as root)`);
  return found;
}

/** What the set-up does on this machine, decided from plain facts (so a test can check each case). */
export type SetupPlan =
  | { kind: 'ready' }
  | { kind: 'install'; command: string }
  | { kind: 'stop'; message: string };

export function setupPlan(facts: { missing: readonly string[]; root: boolean; debian: boolean }): SetupPlan {
  const { missing } = facts;
  if (missing.length === 0) return { kind: 'ready' };
  const packages = packagesOf(missing);
  if (facts.root && facts.debian) return { kind: 'install', command: aptCommand(packages) };
  const list = missing.map((t) => `${t} (Debian package ${packagesOf([t])[0]})`).join(', ');
  const how = facts.debian
    ? `Run as root: sudo sh -c '${aptCommand(packages)}'`
    : `Install them with your system's package manager; on Debian or Ubuntu, as root: ${aptCommand(packages)}`;
  return { kind: 'stop', message: `npm test: the suite runs programs this machine lacks: ${list}.\n${how}\nthen run npm test again.` };
}

export function isDebian(): boolean {
  return existsSync('/etc/debian_version') && findTool('apt-get') !== undefined;
}

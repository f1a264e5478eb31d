import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { checkConfig } from './reload/check.js';
import { loadConfigFiles } from './config/load.js';
import { ConfigError, formatIssue, oneLine, type ConfigIssue } from './errors.js';
import { assignAddresses } from './listeners/address.js';
import { Sidecar } from './sidecar.js';
import type { Runtime } from './reload/runtime.js';
import { PUSH_FIELDS, type PushField } from './reload/push_policy.js';
import { describeFdLimit, FD_RESERVE, raiseFdLimit } from './fd_limit.js';
import { fleet, FLEET_USAGE } from './cli_fleet.js';

/** Each command's usage, as `switchyard <command> --help` prints it. */
const COMMAND_USAGE: Record<string, string> = {
  run: `  switchyard run --config FILE [--config FILE2 …] [--allow-push plugins,accessLog]
                                                    serve; later files override earlier ones key by key;
                                                    --allow-push lets a config pushed through the admin
                                                    API load plugin modules / name access log files`,
  validate: `  switchyard validate --config FILE [--config …]    exit 0, or 1 with every error listed`,
  hosts: `  switchyard hosts --config FILE [--config …]       hosts-file lines: 127.0.0.x  <listener name>`,
  apply: `  switchyard apply --config FILE [--admin URL] [--token T]
                                                    push a full config to a running sidecar
                                                    (default admin URL: http://127.0.0.1:9901,
                                                    token also from SWITCHYARD_ADMIN_TOKEN)`,
  schema: `  switchyard schema                                 print the config's JSON Schema (draft 2020-12), for
                                                    editors: # yaml-language-server: $schema=FILE`,
  fleet: FLEET_USAGE,
};

const USAGE = `usage:
${Object.values(COMMAND_USAGE).join('\n')}
  switchyard --version                              print the version`;

/** The package's root: dist/src/cli.js is two levels below it. */
const PACKAGE_ROOT = new URL('../../', import.meta.url);

function version(): string {
  return (JSON.parse(readFileSync(new URL('package.json', PACKAGE_ROOT), 'utf8')) as { version: string }).version;
}

const COMMANDS = ['run', 'validate', 'hosts', 'apply', 'schema'];

/** Runs one CLI command; resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === '--version' || cmd === '-V' || cmd === 'version') {
    console.log(version());
    return 0;
  }
  // fleet has subcommands and options of its own.
  if (cmd === 'fleet') {
    if (!rest.includes('--help') && !rest.includes('-h')) return fleet(rest);
    console.log(`usage:\n${FLEET_USAGE}`);
    return 0;
  }
  let args;
  try {
    args = parseArgs({
      args: rest,
      options: {
        config: { type: 'string', multiple: true, short: 'c' },
        admin: { type: 'string' },
        token: { type: 'string' },
        'allow-push': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }).values;
  } catch (err) {
    console.error(`switchyard: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (!cmd || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    console.log(USAGE);
    return cmd ? 0 : 2;
  }
  if (args.help) {
    console.log(COMMAND_USAGE[cmd] ? `usage:\n${COMMAND_USAGE[cmd]}` : USAGE);
    return COMMAND_USAGE[cmd] ? 0 : 2;
  }
  // Before the --config check: an unknown command is the mistake to name.
  if (!COMMANDS.includes(cmd)) {
    console.error(`switchyard: unknown command "${cmd}"\n${USAGE}`);
    return 2;
  }
  if (cmd === 'schema') {
    process.stdout.write(readFileSync(new URL('schema/switchyard.schema.json', PACKAGE_ROOT), 'utf8'));
    return 0;
  }
  const files = args.config ?? [];
  if (files.length === 0) {
    console.error(`switchyard ${cmd}: --config FILE is required\n${USAGE}`);
    return 2;
  }
  const allowPush = (args['allow-push'] ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '');
  const unknown = allowPush.filter((f) => !(PUSH_FIELDS as readonly string[]).includes(f));
  if (unknown.length) {
    console.error(`switchyard: --allow-push takes ${PUSH_FIELDS.join(', ')} (comma-separated), not ${unknown.join(', ')}`);
    return 2;
  }
  switch (cmd) {
    case 'run': return run(files, allowPush as PushField[]);
    case 'validate': return validate(files);
    case 'hosts': return hosts(files);
    case 'apply': return apply(files, args.admin ?? 'http://127.0.0.1:9901', args.token ?? process.env.SWITCHYARD_ADMIN_TOKEN);
    default:
      console.error(`switchyard: unknown command "${cmd}"\n${USAGE}`);
      return 2;
  }
}

async function run(files: string[], allowPush: PushField[]): Promise<number> {
  let sc: Sidecar;
  let runtime: Runtime | undefined;
  // stdout carries the JSON access log when the config says so: our own lines must not mix into it.
  const log = (line: string): void => {
    // One line each, whatever config text it quotes (log injection, issue 11).
    const text = `${new Date().toISOString()} ${oneLine(line)}`;
    if (runtime !== undefined && (runtime.accessLogs.onStdout || runtime.current?.config.accessLog?.path === 'stdout')) console.error(text);
    else console.log(text);
  };
  // Before the runtime reads the limit that its default connection limit derives from.
  const fd = raiseFdLimit();
  try {
    sc = await Sidecar.start({ files, log, watch: true, allowPush, onRuntime: (rt) => { runtime = rt; } });
  } catch (err) {
    if (err instanceof ConfigError) {
      for (const i of err.issues) console.error(formatIssue(i));
      console.error(`switchyard: ${err.issues.length} config error(s); not started`);
    } else console.error(`switchyard: ${oneLine((err as Error).message)}`);
    return 1;
  }
  // Signals are taken before the first line is printed: whoever waits on that line may signal at
  // once, and a SIGHUP that comes before its handler kills the process (its default action).
  const reload = (): void => {
    void sc.reload('sighup'); // the runtime logs the outcome, errors included
  };
  process.on('SIGHUP', reload);
  // logrotate's postrotate (or `kill -USR1`): access log files are reopened under their paths.
  const reopen = (): void => {
    void sc.runtime.reopenLogs();
  };
  process.on('SIGUSR1', reopen);
  const stopped = new Promise<number>((resolve) => {
    const stop = (signal: string): void => {
      log(`${signal}: draining`);
      process.off('SIGHUP', reload);
      process.off('SIGUSR1', reopen);
      void sc.stop().then(() => resolve(0), (err) => { console.error(err); resolve(1); });
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  for (const [name, a] of sc.addresses()) {
    const plan = sc.runtime.current!.plans.get(name)!;
    log(`listener ${name}: ${plan.protocol}://${a.host}:${a.port} → ${plan.config.vset}.${plan.config.channel}`);
  }
  if (sc.adminAddress) log(`admin API on http://${sc.adminAddress.host}:${sc.adminAddress.port}`);
  if (sc.grpcAddress) log(`Lifecycle gRPC API on ${sc.grpcAddress.host}:${sc.grpcAddress.port}`);
  if (sc.etcd) log(`config source: ${sc.etcd.describe()}; ${sc.etcd.revision === null ? 'not read yet (serving the bootstrap files)' : `revision ${sc.etcd.revision}`}`);
  // After the first config, so that with `accessLog: stdout` these lines go to stderr too.
  log(describeFdLimit(fd));
  const limit = sc.runtime.connectionLimit();
  const soft = sc.runtime.fdLimit?.soft;
  log(limit.from === 'none' ? 'client connections: no global limit (limits.maxConnections is not set, and the file-descriptor limit is unknown)'
    : `client connections: at most ${limit.max} at once across listeners (${limit.from === 'config' ? 'limits.maxConnections'
      : `limits.maxConnections default: (soft limit ${soft} - ${FD_RESERVE} in reserve - ${sc.runtime.current!.plans.size} listening) / 2`})`);

  return stopped;
}

async function validate(files: string[]): Promise<number> {
  // The --config files are a bootstrap: they may name a `source`.
  const checked = await checkConfig(await loadConfigFiles(files), process.env, { bootstrap: true });
  if (!checked.ok) {
    for (const i of checked.issues) console.error(formatIssue(i));
    console.error(`${checked.issues.length} error(s)`);
    return 1;
  }
  const c = checked.config;
  console.log(`ok: ${Object.keys(c.listeners).length} listener(s), ${Object.keys(c.roles).length} role(s), ${Object.values(c.vsets).filter((v) => !v.implicit).length} vset(s), ${Object.keys(c.components).length} component(s)`);
  return 0;
}

async function hosts(files: string[]): Promise<number> {
  const checked = await checkConfig(await loadConfigFiles(files), process.env, { bootstrap: true });
  if (!checked.ok) {
    for (const i of checked.issues) console.error(formatIssue(i));
    return 1;
  }
  for (const [name, a] of assignAddresses(checked.config.listeners)) console.log(`${a.host}\t${name}`);
  return 0;
}

async function apply(files: string[], admin: string, token: string | undefined): Promise<number> {
  const raw = await loadConfigFiles(files);
  if (raw.issues.length) {
    for (const i of raw.issues) console.error(formatIssue(i));
    return 1;
  }
  // One file goes as written (the sidecar reports its line numbers); several go merged, as JSON.
  const body = files.length === 1 ? await readFile(files[0]!, 'utf8') : JSON.stringify(raw.value);
  let res: Response;
  try {
    res = await fetch(new URL('/config', admin), {
      method: 'PUT',
      headers: { 'content-type': files.length === 1 ? 'application/yaml' : 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body,
    });
  } catch (err) {
    console.error(oneLine(`switchyard apply: cannot reach ${admin}: ${(err as Error).cause ?? (err as Error).message}`));
    return 1;
  }
  const out = (await res.json().catch(() => ({}))) as { generation?: number; components?: Record<string, string>; errors?: (Partial<ConfigIssue> & { text?: string })[]; error?: string };
  if (res.ok) {
    console.log(`applied: generation ${out.generation}`);
    for (const [c, m] of Object.entries(out.components ?? {})) console.log(`  component ${c}: ${m}`);
    return 0;
  }
  for (const e of out.errors ?? [{ message: out.error }]) {
    // The sidecar names a pushed text "PUT /config"; one file goes as written, so
    // its lines are the file's own: name the file, as `validate` does.
    if (files.length === 1 && e.code && e.file === 'PUT /config') console.error(formatIssue({ ...(e as ConfigIssue), file: files[0] }));
    else console.error(oneLine(String(e.text ?? e.message)));
  }
  console.error(`switchyard apply: rejected (HTTP ${res.status}); the running config is unchanged`);
  return 1;
}

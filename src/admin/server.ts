import { formatHostPort } from '../config/parse.js';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import { parseConfigTextsAsync, type RawConfig } from '../config/load.js';
import type { AdminConfig, AdminPublicRoute, HostPort } from '../config/types.js';
import { refusal } from './guard.js';
import { ApiError, formatIssue, SwitchyardError, type ConfigIssue } from '../errors.js';
import type { Runtime, ApplyResult } from '../reload/runtime.js';
import { buildStatus, TrafficWindow } from './status.js';
import { statusPage } from './status_page.js';
import { ADMIN_MAX_CONNECTIONS } from '../fd_limit.js';

const MAX_BODY = 8 * 1024 * 1024;

type Handler = (req: IncomingMessage, url: URL) => Promise<{ status?: number; body: unknown; type?: string; headers?: Record<string, string> }>;

/** Routes served without the token: the status page's HTML carries no data (its script sends the token to /status). */
const PUBLIC = new Set(['GET /']);
/** Routes an operator may make public (admin.public): probes and scrapes carry no secret. */
const MAY_BE_PUBLIC: Record<AdminPublicRoute, string> = { ready: 'GET /ready', metrics: 'GET /metrics' };
/** Routes that read a request body: it must be typed JSON or YAML (guard.ts). */
const READS_BODY = new Set(['PUT /config', 'POST /components/']);

export interface AdminOptions {
  runtime: Runtime;
  config: AdminConfig;
  /** Where relative plugin paths in a pushed config resolve. */
  baseDir: string;
  /** True once the first generation serves, false while shutting down. */
  ready(): boolean;
}

/**
 * The admin API: small handlers behind one router, one error shape, JSON
 * everywhere but /metrics. A bearer token is checked when configured.
 */
export class AdminServer {
  readonly #server: Server;
  readonly #opts: AdminOptions;
  readonly #routes: Record<string, Handler>;
  readonly #traffic: TrafficWindow;
  #token: string | undefined;

  constructor(opts: AdminOptions) {
    this.#opts = opts;
    this.#token = opts.config.token;
    const rt = opts.runtime;
    this.#traffic = new TrafficWindow(rt.metrics);
    this.#routes = {
      'GET /': async () => ({ body: statusPage.html, type: 'text/html; charset=utf-8', headers: statusPage.headers }),
      'GET /status': async () => ({ body: await buildStatus(rt, this.#traffic) }),
      'GET /ready': async () => {
        if (!opts.ready()) throw new ApiError(503, 'SY_ERR_NOT_READY', 'not ready');
        return { body: { ready: true, generation: rt.current?.number } };
      },
      'GET /metrics': async () => ({ body: await rt.metrics.registry.metrics(), type: rt.metrics.registry.contentType }),
      'GET /config': async () => {
        const g = rt.current;
        if (!g) throw new ApiError(503, 'SY_ERR_NOT_READY', 'no generation serves yet');
        // revision: the etcd revision of the documents merged into this config.
        const revision = g.raw?.revision;
        return { body: { generation: g.number, source: g.source, ...(revision !== undefined ? { revision } : {}), appliedAt: g.appliedAt.toISOString(), config: publicConfig(g.raw?.value) } };
      },
      'PUT /config': async (req, url) => {
        const text = await readBody(req);
        // An empty body parses as an empty config, which would remove every
        // listener: far likelier a broken pipe or a missing file than intent.
        if (text.trim() === '') throw badRequest('empty body: PUT /config takes a whole config (YAML or JSON)', true);
        const raw = await parseConfigTextsAsync([{ name: 'PUT /config', text }], opts.baseDir);
        if (isTrue(url.searchParams.get('dryRun'))) {
          const plan = await rt.dryRun(raw);
          if (!plan.ok) throw invalid(plan.issues);
          return { body: { dryRun: true, ...plan.changes } };
        }
        return answer(await rt.apply(raw, 'api'));
      },
      'POST /components/': async (req, url) => {
        let name: string;
        try {
          name = decodeURIComponent(url.pathname.slice('/components/'.length));
        } catch {
          throw badRequest(`${url.pathname} is not a valid percent-encoded component name`);
        }
        const body = parseJson(await readBody(req)) as { kind?: unknown; name?: unknown; metadata?: unknown };
        if (typeof body !== 'object' || body === null || typeof body.metadata !== 'object' || body.metadata === null || Array.isArray(body.metadata)) {
          throw badRequest('body must be {"metadata": {...}} or Layotto\'s {"kind", "name", "metadata"}');
        }
        if (body.name !== undefined && body.name !== name) throw badRequest(`body names component "${String(body.name)}" but the path names "${name}"`);
        if (body.kind !== undefined && typeof body.kind !== 'string') throw badRequest('kind must be a component type name');
        const applied = await rt.applyComponent(name, { type: body.kind as string | undefined, metadata: body.metadata as Record<string, unknown> });
        if (!applied) throw new ApiError(404, 'SY_ERR_API_NO_COMPONENT', `no component named "${name}" in the running config (give "kind" to add one)`);
        return answer(applied);
      },
      'POST /rollback': async () => {
        const applied = await rt.rollback();
        if (!applied) throw new ApiError(409, 'SY_ERR_NO_ROLLBACK', 'there is no previous config to roll back to');
        return answer(applied);
      },
      'GET /rollouts': async () => ({ body: { rollouts: rt.rollouts.list() } }),
      'POST /rollouts/': async (_req, url) => {
        const parts = url.pathname.slice('/rollouts/'.length).split('/');
        const action = parts[1];
        let listener: string;
        try {
          listener = decodeURIComponent(parts[0] ?? '');
        } catch {
          throw badRequest(`${url.pathname} is not a valid percent-encoded listener name`);
        }
        if (parts.length !== 2 || !(action === 'pause' || action === 'resume' || action === 'promote' || action === 'abort')) {
          throw badRequest('POST /rollouts/<listener>/<action>, action: pause, resume, promote or abort');
        }
        const done = await rt.rollouts.act(listener, action);
        if (!done.ok) throw new ApiError(done.status, done.status === 404 ? 'SY_ERR_API_NO_ROLLOUT' : 'SY_ERR_API_ROLLOUT_STATE', done.error);
        return { body: { rollout: rt.rollouts.list().find((r) => r.listener === listener) } };
      },
      'GET /generations': async () => ({ body: { current: rt.current?.number ?? null, draining: [...rt.draining].map((g) => g.number), history: rt.history } }),
      'GET /vsets': async () => {
        const g = rt.current;
        if (!g) throw new ApiError(503, 'SY_ERR_NOT_READY', 'no generation serves yet');
        const addresses = rt.addresses();
        const vsets = Object.fromEntries(Object.entries(g.config.vsets).map(([name, v]) => [name, {
          channels: v.channels,
          implicit: v.implicit,
          roles: Object.fromEntries(Object.entries(v.roles).map(([r, e]) => [r, { meta: e.meta }])),
        }]));
        const listeners = Object.fromEntries([...g.plans].map(([name, p]) => [name, {
          address: formatHostPort(addresses.get(name)!), protocol: p.protocol, target: `${p.config.vset}.${p.config.channel}`,
        }]));
        return { body: { generation: g.number, vsets, listeners } };
      },
    };
    this.#server = createServer((req, res) => void this.#handle(req, res));
    // Its share of the descriptors kept in reserve (fd_limit.ts): connections beyond it are
    // closed at once, so the admin API's own callers cannot use up what keeps it reachable.
    this.#server.maxConnections = ADMIN_MAX_CONNECTIONS;
  }

  async listen(): Promise<HostPort> {
    const { host, port } = this.#opts.config.address;
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(port, host, () => { this.#server.off('error', reject); resolve(); });
    });
    this.#server.on('error', () => { /* accept errors (EMFILE) must not kill the process */ });
    const a = this.#server.address() as { address: string; port: number };
    return { host: a.address, port: a.port };
  }

  #boundToLoopback(): boolean {
    const a = this.#server.address();
    const host = a && typeof a === 'object' ? a.address : this.#opts.config.address.host;
    return host === '::1' || host.startsWith('127.') || host === '::ffff:127.0.0.1';
  }

  async close(): Promise<void> {
    this.#traffic.stop();
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const url = new URL(req.url ?? '/', 'http://admin');
      const path = url.pathname.startsWith('/components/') ? '/components/' : url.pathname.startsWith('/rollouts/') ? '/rollouts/' : url.pathname;
      const key = `${req.method} ${path}`;
      const admin = this.#opts.runtime.current?.config.admin ?? this.#opts.config;
      const refused = refusal(req, new Set(admin.hosts), READS_BODY.has(key));
      if (refused) throw new ApiError(refused.status, refused.code, refused.message);
      if (!PUBLIC.has(key) && !admin.public.some((r) => MAY_BE_PUBLIC[r] === key)) this.#authorize(req);
      const route = this.#routes[key];
      if (!route) {
        const known = Object.keys(this.#routes).some((k) => k.endsWith(` ${path}`));
        if (known) throw new ApiError(405, 'SY_ERR_API_METHOD', `method ${req.method} not allowed on ${url.pathname}`);
        throw new ApiError(404, 'SY_ERR_API_NOT_FOUND', `no such endpoint: ${url.pathname}`);
      }
      const out = await route(req, url);
      send(res, out.status ?? 200, out.body, out.type, out.headers);
    } catch (err) {
      if (err instanceof ApiError) send(res, err.status, { code: err.code, ...(err.body ?? { error: err.message }) });
      else send(res, 500, { code: 'SY_ERR_INTERNAL', error: (err as Error).message });
    }
  }

  #authorize(req: IncomingMessage): void {
    // The token of the config now serving: a reload that sets or rotates
    // admin.token takes effect at once. The admin socket itself is not rebound on
    // reload, so a config that drops the token is only obeyed while the socket is
    // on loopback; on another address the last token stays required.
    const current = this.#opts.runtime.current?.config.admin.token;
    if (current) this.#token = current;
    else if (this.#opts.runtime.current && this.#boundToLoopback()) this.#token = undefined;
    const token = this.#token;
    if (!token) return;
    const got = Buffer.from(req.headers.authorization ?? '');
    const want = Buffer.from(`Bearer ${token}`);
    if (got.length !== want.length || !timingSafeEqual(got, want)) throw new ApiError(401, 'SY_ERR_API_UNAUTHORIZED', 'a valid bearer token is required');
  }
}

/**
 * The HTTP answer to an apply: 200 with what changed; 400 with every issue; 409
 * when the change failed (nothing changed), its error's code and message (which
 * tells the story down to the cause) in `errors`.
 */
export function answer(r: ApplyResult): { status: number; body: unknown } {
  if (r.ok) return { status: 200, body: { generation: r.generation, components: r.components } };
  if (r.kind === 'invalid') throw invalid(r.issues);
  const code = r.error instanceof SwitchyardError ? r.error.code : 'SY_ERR_APPLY_FAILED';
  throw new ApiError(409, code, r.error.message, { body: { errors: [{ code, message: r.error.message }] }, cause: r.error });
}

function invalid(issues: ConfigIssue[]): ApiError {
  return new ApiError(400, 'SY_ERR_CONFIG_INVALID', 'invalid config', { body: { errors: issues.map((i) => ({ ...i, text: formatIssue(i) })) } });
}

/** A 400 for a request the API cannot use; `listed`: the message is also the one entry of `errors`, as an invalid config's are. */
function badRequest(message: string, listed = false): ApiError {
  return new ApiError(400, 'SY_ERR_API_BAD_REQUEST', message, listed ? { body: { errors: [{ message }] } } : {});
}

function isTrue(v: string | null): boolean {
  return v === '1' || v === 'true';
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw badRequest(`body is not JSON: ${(err as Error).message}`);
  }
}

/** The config as GET /config shows it: as given, with the admin token masked. */
function publicConfig(input: unknown): unknown {
  const c = (input ?? {}) as { admin?: { token?: unknown } };
  return c.admin?.token === undefined ? c : { ...c, admin: { ...c.admin, token: '***' } };
}


async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > MAX_BODY) throw new ApiError(413, 'SY_ERR_API_BODY_TOO_LARGE', `config body over ${MAX_BODY} bytes`);
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function send(res: ServerResponse, status: number, body: unknown, type = 'application/json', headers: Record<string, string> = {}): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body, null, 2) + '\n';
  res.writeHead(status, { ...headers, 'content-type': type, 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

export type { RawConfig };

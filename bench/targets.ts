/**
 * The servers the benchmark measures: the upstream itself, switchyard (real CLI),
 * nginx, haproxy and an http-proxy one-liner. Each writes its own config, starts
 * as a child process (pinned or not), and names the address of each scenario it
 * serves. Every address is on loopback: 127.0.77.x, one per server, so nothing
 * collides with the tests' or the demo's 127.x addresses.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { runToEnd, startProc, stopProc, waitListening, type Proc } from './procs.js';
import type { BenchCerts } from './tls.js';

export const HOSTS = {
  upstream: '127.0.77.1',
  switchyard: '127.0.77.2',
  switchyardBare: '127.0.77.6',
  switchyardLogged: '127.0.77.7',
  switchyardTraced: '127.0.77.8',
  nginx: '127.0.77.3',
  haproxy: '127.0.77.4',
  httpProxy: '127.0.77.5',
  nodeFloor: '127.0.77.9',
} as const;

export const NGINX = '/usr/sbin/nginx';
export const HAPROXY = '/usr/sbin/haproxy';

export type ScenarioId =
  | 'direct' | 'switchyard-http' | 'switchyard-tcp' | 'switchyard-http-nometrics' | 'switchyard-http-accesslog' | 'switchyard-http-traced'
  | 'nginx-http' | 'nginx-stream'
  | 'haproxy-http' | 'haproxy-tcp' | 'http-proxy' | 'node-floor'
  | 'switchyard-https' | 'switchyard-https-handshake' | 'switchyard-tls-upstream'
  | 'nginx-https' | 'nginx-https-handshake' | 'nginx-tls-upstream';

/**
 * How a scenario is driven and what it is compared to: http and tcp to nginx-http
 * and nginx-stream; https (TLS on the listener, keep-alive) to nginx-https;
 * handshake (TLS on the listener, a new connection per request: handshakes per
 * second) to nginx-https-handshake; tls-upstream (plain listener, TLS to the
 * upstream, pooled) to nginx-tls-upstream.
 */
export type Kind = 'direct' | 'http' | 'tcp' | 'https' | 'handshake' | 'tls-upstream';

/** The nginx scenario each kind is compared to. */
export const BASELINE: Partial<Record<Kind, ScenarioId>> = {
  http: 'nginx-http', tcp: 'nginx-stream', https: 'nginx-https', handshake: 'nginx-https-handshake', 'tls-upstream': 'nginx-tls-upstream',
};

/** http scenarios compare to nginx-http, tcp ones to nginx-stream. */
export const SCENARIOS: readonly { id: ScenarioId; kind: Kind }[] = [
  { id: 'direct', kind: 'direct' },
  { id: 'switchyard-http', kind: 'http' },
  { id: 'switchyard-tcp', kind: 'tcp' },
  { id: 'switchyard-http-nometrics', kind: 'http' },
  { id: 'switchyard-http-accesslog', kind: 'http' },
  { id: 'switchyard-http-traced', kind: 'http' },
  { id: 'nginx-http', kind: 'http' },
  { id: 'nginx-stream', kind: 'tcp' },
  { id: 'haproxy-http', kind: 'http' },
  { id: 'haproxy-tcp', kind: 'tcp' },
  { id: 'http-proxy', kind: 'http' },
  { id: 'node-floor', kind: 'http' },
  { id: 'switchyard-https', kind: 'https' },
  { id: 'switchyard-https-handshake', kind: 'handshake' },
  { id: 'switchyard-tls-upstream', kind: 'tls-upstream' },
  { id: 'nginx-https', kind: 'https' },
  { id: 'nginx-https-handshake', kind: 'handshake' },
  { id: 'nginx-tls-upstream', kind: 'tls-upstream' },
];

export interface Addr { host: string; port: number }

export interface StartContext {
  /** The upstream's two ports (role v1 → ports[0], role v2 → ports[1]), and its HTTPS port. */
  upstream: { host: string; ports: [number, number]; tlsPort: number };
  /** The run's certificates (bench/tls.ts): every server presents `cert`, every client trusts `ca`. */
  tls: BenchCerts;
  /** taskset CPU list for the proxy; undefined = not pinned. */
  cpus: string | undefined;
  /** A fresh directory for this server's config, pid and logs. */
  dir: string;
  root: string;
  /** Directory for `node --cpu-prof` output of switchyard, or null. */
  cpuProfDir: string | null;
}

export interface Running {
  /** The process whose CPU is the proxy's (nginx: the master; its worker is a descendant). */
  proc: Proc;
  addrs: Partial<Record<ScenarioId, Addr>>;
}

export interface Target {
  name: string;
  scenarios: readonly ScenarioId[];
  /** Why it cannot run here, or null. Checked once per run. */
  unavailable(): Promise<string | null>;
  /** Scenarios of this target that cannot run here (nginx without its stream module), with the reason. */
  missing?(): Promise<Partial<Record<ScenarioId, string>>>;
  start(ctx: StartContext, wanted: readonly ScenarioId[]): Promise<Running>;
}

/**
 * A port free on `host` now: bind port 0, read it, close. The child binds it a
 * moment later; if something took it meanwhile, the child fails to listen and
 * waitListening reports that child's output.
 */
export function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen({ host, port: 0, exclusive: true }, () => {
      const a = s.address();
      const port = a && typeof a === 'object' ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/** Waits until the process listens on every address; stops it when it does not, then rethrows. */
async function waitAll(p: Proc, addrs: Partial<Record<ScenarioId, Addr>> | Addr[]): Promise<void> {
  try {
    for (const a of Object.values(addrs) as Addr[]) await waitListening(p, a.host, a.port);
  } catch (err) {
    await stopProc(p, 2_000);
    throw err;
  }
}

/** The upstream child (bench/upstream.ts), on two ports: one per switchyard role. */
export async function startUpstream(cpus: string | undefined, mode: string, benchDir: string, tls?: BenchCerts): Promise<{ proc: Proc; host: string; ports: [number, number]; tlsPort: number }> {
  const host = HOSTS.upstream;
  const ports: [number, number] = [await freePort(host), await freePort(host)];
  const tlsPort = tls === undefined ? 0 : await freePort(host);
  const proc = startProc('upstream', process.execPath,
    [join(benchDir, 'upstream.js'), '--host', host, '--port', String(ports[0]), '--port', String(ports[1]), '--mode', mode,
      ...(tls === undefined ? [] : ['--tls-port', String(tlsPort), '--cert', tls.cert, '--key', tls.key])],
    { cpus });
  await waitAll(proc, [...ports, ...(tls === undefined ? [] : [tlsPort])].map((port) => ({ host, port })));
  return { proc, host, ports, tlsPort };
}

/** "Direct": wrk straight at the upstream; the upstream is also the measured process. */
export function directAddr(up: { host: string; ports: [number, number] }): Addr {
  return { host: up.host, port: up.ports[0] };
}

/**
 * switchyard through its real CLI. The http listener runs the filter chain the
 * issue asks about (header_route, then weighted 90/10 across two roles, each role
 * on its own upstream port, so two undici pools); the tcp listener picks a role
 * per connection with the same weights. drainTimeout is short so stopping is quick.
 */
/** The filter chain of the http listeners (plain and TLS): the one the issue asks about. */
const HTTP_CHAIN = `    filters:
      - type: header_route
        rules:
          - { header: x-canary, equals: "true", role: bench-v2 }
          - { header: x-bench-version, meta: version }
      - type: weighted
        weights: { bench-v1: 90, bench-v2: 10 }
`;

/** The switchyard config the benchmark runs; `extra` is appended at the top level. */
function switchyardYaml(ctx: StartContext, host: string, http: Addr, tcp: Addr, extra = '', tls: { https: Addr; toTls: Addr } | null = null): string {
  const up = ctx.upstream;
  return `# generated by bench/run.ts
version: 1
admin: { address: "${host}:0" }
drainTimeout: 1s
${extra}
roles:
  bench-v1:
    meta: { version: "1.0.0" }
    channels:
      http: { endpoints: ["${up.host}:${up.ports[0]}"] }
  bench-v2:
    meta: { version: "2.0.0" }
    channels:
      http: { endpoints: ["${up.host}:${up.ports[1]}"] }
  bench-tls:
    channels:
      http:
        endpoints: ["${up.host}:${up.tlsPort}"]
        tls: { ca: "${ctx.tls.ca}", serverName: bench.test }
vsets:
  bench:
    channels: [http]
    roles: { bench-v1: {}, bench-v2: {} }
listeners:
  web:
    address: ${http.host}:${http.port}
    protocol: http
    target: bench.http
${HTTP_CHAIN}  raw:
    address: ${tcp.host}:${tcp.port}
    protocol: tcp
    target: bench.http
    filters:
      - type: weighted
        weights: { bench-v1: 90, bench-v2: 10 }
${tls === null ? '' : `  secure:
    address: ${tls.https.host}:${tls.https.port}
    target: bench.http
    tls: { cert: "${ctx.tls.cert}", key: "${ctx.tls.key}" }
${HTTP_CHAIN}  to-tls:
    address: ${tls.toTls.host}:${tls.toTls.port}
    target: bench-tls.http
`}`;
}

/**
 * Starts one switchyard process: `script` is bin/switchyard.js (the real CLI) or
 * the bare launcher; `extra` goes into the config. Its http listener serves `scenario`.
 */
async function startSwitchyard(ctx: StartContext, host: string, scenarios: { http: ScenarioId; tcp?: ScenarioId; tls?: boolean },
  script: { path: string; args: string[] }, extra = ''): Promise<Running> {
  const http: Addr = { host, port: await freePort(host) };
  const tcp: Addr = { host, port: await freePort(host) };
  const tls = scenarios.tls ? { https: { host, port: await freePort(host) }, toTls: { host, port: await freePort(host) } } : null;
  const file = join(ctx.dir, 'switchyard.yaml');
  await writeFile(file, switchyardYaml(ctx, host, http, tcp, extra, tls));
  const nodeFlags = ctx.cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', ctx.cpuProfDir] : [];
  const proc = startProc('switchyard', process.execPath, [...nodeFlags, script.path, ...script.args, file], { cpus: ctx.cpus, cwd: ctx.root });
  const addrs: Partial<Record<ScenarioId, Addr>> = { [scenarios.http]: http };
  if (scenarios.tcp) addrs[scenarios.tcp] = tcp;
  if (tls !== null) {
    addrs['switchyard-https'] = tls.https;
    addrs['switchyard-https-handshake'] = tls.https;
    addrs['switchyard-tls-upstream'] = tls.toTls;
  }
  await waitAll(proc, addrs);
  return { proc, addrs };
}

/**
 * switchyard through its real CLI. The http listener runs the filter chain the
 * issue asks about (header_route, then weighted 90/10 across two roles, each role
 * on its own upstream port, so two undici pools); the tcp listener picks a role
 * per connection with the same weights. drainTimeout is short so stopping is quick.
 */
export const switchyard: Target = {
  name: 'switchyard',
  scenarios: ['switchyard-http', 'switchyard-tcp', 'switchyard-https', 'switchyard-https-handshake', 'switchyard-tls-upstream'],
  async unavailable() { return null; },
  start: (ctx) => startSwitchyard(ctx, HOSTS.switchyard, { http: 'switchyard-http', tcp: 'switchyard-tcp', tls: true },
    { path: join(ctx.root, 'bin/switchyard.js'), args: ['run', '--config'] }),
};

/**
 * The same config and process, with request counting off (bench/serve_bare.ts):
 * against switchyard-http, what counting requests_total and the duration histogram costs.
 */
export const switchyardNoMetrics: Target = {
  name: 'switchyard-nometrics',
  scenarios: ['switchyard-http-nometrics'],
  async unavailable() { return null; },
  start: (ctx) => startSwitchyard(ctx, HOSTS.switchyardBare, { http: 'switchyard-http-nometrics' },
    { path: join(ctx.root, 'dist/bench/serve_bare.js'), args: [] }),
};

/** The real CLI with `accessLog` to a file: against switchyard-http, what the access log costs. */
export const switchyardAccessLog: Target = {
  name: 'switchyard-accesslog',
  scenarios: ['switchyard-http-accesslog'],
  async unavailable() { return null; },
  start: (ctx) => startSwitchyard(ctx, HOSTS.switchyardLogged, { http: 'switchyard-http-accesslog' },
    { path: join(ctx.root, 'bin/switchyard.js'), args: ['run', '--config'] }, `accessLog: { path: "${join(ctx.dir, 'access.log')}" }`),
};

/**
 * The real CLI with `tracing` on, every request sampled, the spans exported with
 * OTLP/HTTP to the bench upstream (which answers any POST with 200, as a collector
 * does): against switchyard-http, what a span per request costs.
 */
export const switchyardTraced: Target = {
  name: 'switchyard-traced',
  scenarios: ['switchyard-http-traced'],
  async unavailable() { return null; },
  start: (ctx) => startSwitchyard(ctx, HOSTS.switchyardTraced, { http: 'switchyard-http-traced' },
    { path: join(ctx.root, 'bin/switchyard.js'), args: ['run', '--config'] },
    `tracing: { otlp: { endpoint: "http://${ctx.upstream.host}:${ctx.upstream.ports[0]}/v1/traces" }, sampleRate: 1 }`),
};

let nginxInfo: Promise<{ version: string; streamModule: string | null; streamStatic: boolean }> | null = null;
/** nginx -V, once: where dynamic modules live and whether stream is built in. */
function nginxBuild(): Promise<{ version: string; streamModule: string | null; streamStatic: boolean }> {
  nginxInfo ??= runToEnd('nginx -V', NGINX, ['-V']).then(({ out }) => {
    const modules = /--modules-path=(\S+)/.exec(out)?.[1] ?? '/usr/lib/nginx/modules';
    const so = [join(modules, 'ngx_stream_module.so'), '/usr/lib/nginx/modules/ngx_stream_module.so', '/usr/lib64/nginx/modules/ngx_stream_module.so']
      .find((p) => existsSync(p)) ?? null;
    return {
      version: /nginx version: (\S+)/.exec(out)?.[1] ?? 'nginx',
      streamModule: so,
      streamStatic: /--with-stream(\s|$)/.test(out),
    };
  });
  return nginxInfo;
}

/**
 * nginx with one worker: http proxy with an upstream keepalive pool, and the
 * stream module for TCP. keepalive_requests is raised on both sides: nginx's
 * default (1000) would otherwise close wrk's and the upstream's connections every
 * thousand requests, a cost no other target pays.
 */
export const nginx: Target = {
  name: 'nginx',
  scenarios: ['nginx-http', 'nginx-stream', 'nginx-https', 'nginx-https-handshake', 'nginx-tls-upstream'],
  async unavailable() {
    return existsSync(NGINX) ? null : `${NGINX} not installed`;
  },
  async missing() {
    const b = await nginxBuild();
    return b.streamModule || b.streamStatic ? {} : { 'nginx-stream': 'nginx has no stream module (Debian: apt-get install libnginx-mod-stream)' };
  },
  async start(ctx, wanted) {
    const host = HOSTS.nginx;
    const b = await nginxBuild();
    const stream = wanted.includes('nginx-stream') && (b.streamModule !== null || b.streamStatic);
    const http: Addr = { host, port: await freePort(host) };
    const tcp: Addr = { host, port: await freePort(host) };
    const https: Addr = { host, port: await freePort(host) };
    const toTls: Addr = { host, port: await freePort(host) };
    const up = ctx.upstream;
    for (const d of ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(ctx.dir, d), { recursive: true });
    const conf = `# generated by bench/run.ts
${stream && b.streamModule ? `load_module ${b.streamModule};` : ''}
worker_processes 1;
pid ${ctx.dir}/nginx.pid;
error_log ${ctx.dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${ctx.dir}/client_body;
  proxy_temp_path ${ctx.dir}/proxy;
  fastcgi_temp_path ${ctx.dir}/fastcgi;
  uwsgi_temp_path ${ctx.dir}/uwsgi;
  scgi_temp_path ${ctx.dir}/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 65s;
  upstream bench {
    server ${up.host}:${up.ports[0]} weight=9;
    server ${up.host}:${up.ports[1]} weight=1;
    keepalive 128;
    keepalive_requests 10000000;
  }
  server {
    listen ${http.host}:${http.port} backlog=1024;
    location / {
      proxy_pass http://bench;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
  server {
    listen ${https.host}:${https.port} ssl backlog=1024;
    ssl_certificate ${ctx.tls.cert};
    ssl_certificate_key ${ctx.tls.key};
    ssl_session_cache shared:SSL:10m;
    location / {
      proxy_pass http://bench;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
  upstream bench_tls {
    server ${up.host}:${up.tlsPort};
    keepalive 128;
    keepalive_requests 10000000;
  }
  server {
    listen ${toTls.host}:${toTls.port} backlog=1024;
    location / {
      proxy_pass https://bench_tls;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_ssl_trusted_certificate ${ctx.tls.ca};
      proxy_ssl_verify on;
      proxy_ssl_name bench.test;
      proxy_ssl_server_name on;
      proxy_ssl_session_reuse on;
    }
  }
}
${stream ? `stream {
  upstream bench_tcp {
    server ${up.host}:${up.ports[0]} weight=9;
    server ${up.host}:${up.ports[1]} weight=1;
  }
  server {
    listen ${tcp.host}:${tcp.port} backlog=1024;
    proxy_pass bench_tcp;
  }
}` : ''}
`;
    const file = join(ctx.dir, 'nginx.conf');
    await writeFile(file, conf);
    const proc = startProc('nginx', NGINX, ['-p', `${ctx.dir}/`, '-c', file, '-g', 'daemon off;'], { cpus: ctx.cpus });
    const addrs: Partial<Record<ScenarioId, Addr>> = { 'nginx-http': http, 'nginx-https': https, 'nginx-https-handshake': https, 'nginx-tls-upstream': toTls };
    if (stream) addrs['nginx-stream'] = tcp;
    await waitAll(proc, addrs);
    return { proc, addrs };
  },
};

/**
 * haproxy with one thread, an http frontend (server connections reused across
 * client connections: `http-reuse always`) and a tcp frontend, the same 90/10
 * weights over the upstream's two ports.
 */
export const haproxy: Target = {
  name: 'haproxy',
  scenarios: ['haproxy-http', 'haproxy-tcp'],
  async unavailable() {
    return existsSync(HAPROXY) ? null : `${HAPROXY} not installed`;
  },
  async start(ctx) {
    const host = HOSTS.haproxy;
    const http: Addr = { host, port: await freePort(host) };
    const tcp: Addr = { host, port: await freePort(host) };
    const up = ctx.upstream;
    const conf = `# generated by bench/run.ts
global
  nbthread 1
  maxconn 4000

defaults
  timeout connect 5s
  timeout client 60s
  timeout server 60s

frontend fe_http
  mode http
  bind ${http.host}:${http.port}
  default_backend be_http

backend be_http
  mode http
  http-reuse always
  server v1 ${up.host}:${up.ports[0]} weight 90
  server v2 ${up.host}:${up.ports[1]} weight 10

frontend fe_tcp
  mode tcp
  bind ${tcp.host}:${tcp.port}
  default_backend be_tcp

backend be_tcp
  mode tcp
  server v1 ${up.host}:${up.ports[0]} weight 90
  server v2 ${up.host}:${up.ports[1]} weight 10
`;
    const file = join(ctx.dir, 'haproxy.cfg');
    await writeFile(file, conf);
    // -db: foreground, no daemon; the pid we hold is the one process doing the work.
    const proc = startProc('haproxy', HAPROXY, ['-db', '-f', file], { cpus: ctx.cpus });
    const addrs = { 'haproxy-http': http, 'haproxy-tcp': tcp };
    await waitAll(proc, addrs);
    return { proc, addrs };
  },
};

/**
 * The "plain Node proxy" baseline: http-proxy's createProxyServer({target}) one-liner.
 * It gets a keep-alive agent: without one http-proxy sends `connection: close` and
 * opens a new upstream connection per request, which would measure connection
 * setup rather than proxying. It targets role v1's port only, as a one-liner would.
 */
export const httpProxy: Target = {
  name: 'http-proxy',
  scenarios: ['http-proxy'],
  async unavailable() { return null; },
  async start(ctx) {
    const host = HOSTS.httpProxy;
    const addr: Addr = { host, port: await freePort(host) };
    const target = `http://${ctx.upstream.host}:${ctx.upstream.ports[0]}`;
    const oneLiner = `const a=new (require('http').Agent)({keepAlive:true,maxSockets:256});`
      + `require('http-proxy').createProxyServer({target:'${target}',agent:a})`
      + `.on('error',(e,q,s)=>{try{s.writeHead(502);s.end()}catch{}})`
      + `.listen(${addr.port},'${addr.host}')`;
    // CommonJS -e script, resolved from the repository root (its node_modules).
    const proc = startProc('http-proxy', process.execPath, ['-e', oneLiner], { cpus: ctx.cpus, cwd: ctx.root });
    const addrs = { 'http-proxy': addr };
    await waitAll(proc, addrs);
    return { proc, addrs };
  },
};

/**
 * The floor of an HTTP/1.1 proxy in Node on this machine (bench/floor_proxy.ts): raw
 * sockets, the head read once, a pooled upstream, nothing else. What switchyard costs
 * beyond it is its own work.
 */
export const nodeFloor: Target = {
  name: 'node-floor',
  scenarios: ['node-floor'],
  async unavailable() { return null; },
  async start(ctx) {
    const host = HOSTS.nodeFloor;
    const addr: Addr = { host, port: await freePort(host) };
    const proc = startProc('node-floor', process.execPath, [join(ctx.root, 'dist/bench/floor_proxy.js'), host, String(addr.port), ctx.upstream.host, String(ctx.upstream.ports[0])],
      { cpus: ctx.cpus, cwd: ctx.root });
    const addrs = { 'node-floor': addr };
    await waitAll(proc, addrs);
    return { proc, addrs };
  },
};

export const TARGETS: readonly Target[] = [switchyard, switchyardNoMetrics, switchyardAccessLog, switchyardTraced, nginx, haproxy, httpProxy, nodeFloor];

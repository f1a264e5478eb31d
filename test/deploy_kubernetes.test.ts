// deploy/kubernetes: every manifest is valid against the Kubernetes API schemas
// (kubernetes-models, prometheus-operator's for the ServiceMonitor), and what the
// manifests name (ports, paths, file names, the drain) is what switchyard has.
import test from 'ava';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname, join } from 'node:path';
import { once } from 'node:events';
import jsyaml from 'js-yaml';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Service } from 'kubernetes-models/v1/Service';
import { ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor';
import { checkConfig } from '../src/reload/check.js';
import { parseConfigTexts } from '../src/config/load.js';
import type { Config } from '../src/config/types.js';
import { CLI, ROOT, tempFiles, uniqueHost } from './helpers.js';

const DIR = join(ROOT, 'deploy/kubernetes');
type Manifest = { apiVersion: string; kind: string; metadata: { name: string }; [k: string]: unknown };

/** The API objects of each YAML file under deploy/kubernetes (kustomizations and switchyard configs aside). */
function manifests(dir = DIR): { file: string; doc: Manifest }[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return manifests(p);
    if (!/\.ya?ml$/.test(e.name) || e.name.endsWith('-patch.yaml')) return [];
    return (jsyaml.loadAll(readFileSync(p, 'utf8')) as Manifest[])
      .filter((d) => d && typeof d === 'object' && 'kind' in d && d.kind !== 'Kustomization')
      .map((doc) => ({ file: p.slice(ROOT.length + 1), doc }));
  });
}

const MODELS: Record<string, new (d: never) => { validate(): void }> = {
  'apps/v1 Deployment': Deployment, 'v1 ConfigMap': ConfigMap, 'v1 Service': Service, 'monitoring.coreos.com/v1 ServiceMonitor': ServiceMonitor,
};

function load<T = Manifest>(file: string): T {
  return jsyaml.load(readFileSync(join(DIR, file), 'utf8')) as T;
}

/**
 * The Deployment of a variant: for etcd/, with its patch merged as kustomize's strategic
 * merge does (init containers by name, their env by name).
 */
function deploymentOf(variant: string): { spec: { template: Pod } } {
  const base = structuredClone(load<{ spec: { template: Pod } }>('deployment.yaml'));
  if (!variant) return base;
  const patch = load<{ spec: { template: Pod } }>('etcd/deployment-patch.yaml');
  for (const pc of patch.spec.template.spec.initContainers) {
    const c = base.spec.template.spec.initContainers.find((x) => x.name === pc.name)!;
    const { env, ...rest } = pc;
    Object.assign(c, rest);
    c.env = [...(c.env ?? []).filter((e) => !env?.some((x) => x.name === e.name)), ...(env ?? [])];
  }
  return base;
}

async function switchyardConfig(text: string, env: Record<string, string>): Promise<Config> {
  const r = await checkConfig(parseConfigTexts([{ name: 'switchyard.yaml', text }], ROOT), env, { bootstrap: true });
  if (!r.ok) throw new Error(r.issues.map((i) => `${i.path}: ${i.message}`).join('\n'));
  return r.config;
}

test('every manifest validates against the Kubernetes API schemas', (t) => {
  const all = manifests();
  t.true(all.length >= 5, all.map((m) => m.file).join(', '));
  for (const { file, doc } of all) {
    const Model = MODELS[`${doc.apiVersion} ${doc.kind}`];
    if (!Model) {
      t.fail(`${file}: no schema for ${doc.apiVersion} ${doc.kind}`);
      continue;
    }
    // A kustomize patch is a partial object: its fields still have the types of the whole.
    t.notThrows(() => new Model(doc as never).validate(), file);
  }
  t.notThrows(() => new Deployment(deploymentOf('etcd/') as never).validate(), 'the etcd variant\'s Deployment');
  // And a wrong one does not pass.
  const bad = structuredClone(load('deployment.yaml')) as { spec: { template: { spec: { initContainers: { ports: { containerPort: unknown }[] }[] } } } };
  bad.spec.template.spec.initContainers[0]!.ports[0]!.containerPort = 'admin';
  t.throws(() => new Deployment(bad as never).validate());
});

test('every file a kustomization names exists', (t) => {
  for (const k of ['kustomization.yaml', 'etcd/kustomization.yaml']) {
    const doc = load<{ resources?: string[]; patches?: { path: string }[] }>(k);
    for (const f of [...(doc.resources ?? []), ...(doc.patches ?? []).map((p) => p.path)]) {
      t.true(existsSync(join(DIR, dirname(k), f)), `${k}: ${f}`);
    }
  }
});

interface Container {
  name: string; args?: string[]; restartPolicy?: string;
  ports?: { name: string; containerPort: number }[];
  startupProbe?: { httpGet?: { path: string; port: string | number } };
  readinessProbe?: { httpGet?: { path: string; port: string | number } };
  livenessProbe?: { tcpSocket?: { port: string | number } };
  env?: { name: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }[];
  volumeMounts?: { name: string; mountPath: string; subPath?: string }[];
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
}
interface Pod {
  metadata: { annotations: Record<string, string> };
  spec: { terminationGracePeriodSeconds: number; initContainers: Container[]; containers: Container[]; volumes: { name: string; configMap?: { name: string } }[] };
}

for (const variant of ['', 'etcd/']) {
  test(`${variant || 'the file'} variant: the sidecar's ports, paths, file names and drain are switchyard's`, async (t) => {
    const pod = deploymentOf(variant).spec.template;
    const sc = pod.spec.initContainers.find((c) => c.name === 'switchyard')!;
    t.is(sc.restartPolicy, 'Always', 'a native sidecar');
    t.is(pod.spec.initContainers.length, 1);
    // The config file the CLI is given is a key of the mounted ConfigMap, mounted as a directory (a subPath never sees the ..data swap).
    const configPath = sc.args![sc.args!.indexOf('--config') + 1]!;
    t.deepEqual(sc.args!.slice(0, 1), ['run']);
    const mount = sc.volumeMounts!.find((m) => configPath.startsWith(m.mountPath + '/'))!;
    t.truthy(mount);
    t.is(mount.subPath, undefined);
    const volume = pod.spec.volumes.find((v) => v.name === mount.name)!;
    const cm = load<{ metadata: { name: string }; data: Record<string, string> }>(`${variant}configmap.yaml`);
    t.is(volume.configMap?.name, cm.metadata.name);
    const text = cm.data[configPath.slice(mount.mountPath.length + 1)]!;
    t.truthy(text, `${configPath} is a key of ${variant}configmap.yaml`);
    // The ConfigMap holds the shipped config file as it is (so the editor schema header and the validator see the same text).
    t.is(text, readFileSync(join(DIR, variant === '' ? 'switchyard.yaml' : 'etcd/bootstrap.yaml'), 'utf8'));
    // ${ADMIN_TOKEN} comes from the Secret; the etcd variant's app and pod name from the downward API.
    const tokenEnv = sc.env!.find((e) => e.name === 'ADMIN_TOKEN')!;
    t.deepEqual(tokenEnv.valueFrom?.secretKeyRef, { name: 'switchyard-admin', key: 'token' });
    if (variant) {
      t.deepEqual(sc.env!.map((e) => e.name).sort(), ['ADMIN_TOKEN', 'POD_NAME', 'SWITCHYARD_APP']);
      t.true(/\$\{SWITCHYARD_APP\}/.test(text) && /\$\{POD_NAME\}/.test(text));
    }
    const config = await switchyardConfig(text, { ADMIN_TOKEN: 'secret', SWITCHYARD_APP: 'cart-client', POD_NAME: 'cart-client-1' });
    if (variant) t.is(config.source?.etcd.app, 'cart-client');
    // Probes and scrapes reach the admin API's port, on a route served without the token.
    const admin = sc.ports!.find((p) => p.name === 'admin')!;
    t.is(admin.containerPort, config.admin.address.port);
    t.is(config.admin.address.host, '0.0.0.0');
    t.deepEqual([...config.admin.public].sort(), ['metrics', 'ready']);
    t.deepEqual(sc.startupProbe?.httpGet, { path: '/ready', port: 'admin' });
    t.deepEqual(sc.readinessProbe?.httpGet, { path: '/ready', port: 'admin' });
    t.is(sc.livenessProbe?.tcpSocket?.port, 'admin');
    t.is(pod.metadata.annotations['prometheus.io/port'], String(config.admin.address.port));
    t.is(pod.metadata.annotations['prometheus.io/path'], '/metrics');
    const service = load<{ spec: { selector: Record<string, string>; ports: { name: string; targetPort: string }[] }; metadata: { labels: Record<string, string> } }>('service.yaml');
    const monitor = load<{ spec: { selector: { matchLabels: Record<string, string> }; endpoints: { port: string; path: string }[] } }>('servicemonitor.yaml');
    t.is(service.spec.ports[0]!.targetPort, 'admin');
    t.is(monitor.spec.endpoints[0]!.port, service.spec.ports[0]!.name);
    t.is(monitor.spec.endpoints[0]!.path, '/metrics');
    for (const [k, v] of Object.entries(monitor.spec.selector.matchLabels)) t.is(service.metadata.labels[k], v);
    // The grace period covers the app's shutdown and then switchyard's drain, with room to spare.
    t.true(pod.spec.terminationGracePeriodSeconds * 1000 >= 2 * config.drainTimeoutMs + 5000,
      `terminationGracePeriodSeconds ${pod.spec.terminationGracePeriodSeconds} for drainTimeout ${config.drainTimeoutMs} ms`);
    // The app reaches its dependencies on loopback addresses of the pod.
    for (const l of Object.values(config.listeners)) t.true(l.address?.host.startsWith('127.'), JSON.stringify(l.address));
    t.truthy(sc.resources?.requests?.cpu && sc.resources.requests.memory && sc.resources.limits?.memory);
  });
}

test('the admin API serves /ready and /metrics without the token when admin.public says so (what the probes use)', async (t) => {
  const host = uniqueHost();
  const { paths } = await tempFiles(t, {
    'c.yaml': `admin: { address: "${host}:0", token: secret, public: [ready, metrics] }
roles: { r: { channels: { http: { endpoints: ["127.0.0.1:1"] } } } }
listeners: { web: { address: "${host}:0", target: r.http } }
`,
  });
  const child = spawn(process.execPath, [CLI, 'run', '--config', paths['c.yaml']!], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => { child.kill('SIGKILL'); });
  const adminUrl = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (b: Buffer) => {
      out += b;
      const m = /admin API on (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (code) => reject(new Error(`exited ${code}: ${out}`)));
  });
  t.is((await fetch(`${adminUrl}/ready`)).status, 200);
  t.is((await fetch(`${adminUrl}/metrics`)).status, 200);
  t.is((await fetch(`${adminUrl}/config`)).status, 401);
});

test('SIGTERM after the app has gone: switchyard exits at once, not after drainTimeout (a native sidecar stops last)', async (t) => {
  const host = uniqueHost();
  const { paths } = await tempFiles(t, {
    'c.yaml': `admin: { address: "127.0.0.1:0" }
drainTimeout: 30s
roles: { r: { channels: { http: { endpoints: ["127.0.0.1:1"] } } } }
listeners:
  web: { address: "${host}:0", target: r.http }
  raw: { address: "${host}:0", protocol: tcp, target: r.http }
`,
  });
  const child = spawn(process.execPath, [CLI, 'run', '--config', paths['c.yaml']!], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => { child.kill('SIGKILL'); });
  const web = await new Promise<{ host: string; port: number }>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (b: Buffer) => {
      out += b;
      const m = /listener web: http:\/\/([\d.]+):(\d+)/.exec(out);
      if (m && /admin API on/.test(out)) resolve({ host: m[1]!, port: Number(m[2]) });
    });
    child.once('exit', (code) => reject(new Error(`exited ${code}: ${out}`)));
  });
  // An idle keep-alive connection the app left open: idle, it holds no work.
  const idle = connect(web.port, web.host);
  await once(idle, 'connect');
  idle.write(`GET / HTTP/1.1\r\nhost: x\r\n\r\n`);
  await once(idle, 'data');
  t.teardown(() => idle.destroy());
  const started = Date.now();
  child.kill('SIGTERM');
  const [code] = await once(child, 'exit') as [number];
  const took = Date.now() - started;
  t.is(code, 0);
  t.log(`exited ${took} ms after SIGTERM (drainTimeout 30 s)`);
  t.true(took < 3_000, `${took} ms`);
});

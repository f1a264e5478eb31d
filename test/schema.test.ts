// The JSON Schema (schema/switchyard.schema.json) and the validator agree: every config
// the suite uses (captured into test/fixtures/config-corpus.jsonl by `npm run corpus`),
// every shipped config, and mutations of them (unknown keys, wrong types, bad durations)
// are accepted by both or rejected by both, except for the rules a schema cannot state
// (EXCEPTIONS below).
import test from 'ava';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { builtinRegistry } from '../src/builtins.js';
import { parseConfigTexts } from '../src/config/load.js';
import { validateConfig } from '../src/config/validate.js';
import type { ConfigIssue } from '../src/errors.js';
import { CLI, ROOT } from './helpers.js';

const SCHEMA_FILE = join(ROOT, 'schema/switchyard.schema.json');
const schema = JSON.parse(readFileSync(SCHEMA_FILE, 'utf8')) as Record<string, unknown>;
const ajv = new Ajv2020({ allErrors: true, strict: false, allowUnionTypes: true });
const schemaAccepts = ajv.compile(schema);

/**
 * What the validator rejects and the schema cannot say: references between sections,
 * clashes between listeners, relations between two values, what only a parser knows.
 * Each names the rule; a config the validator rejects counts as agreeing when every
 * issue it has is one of these.
 */
const EXCEPTIONS: { rule: string; matches: (i: ConfigIssue) => boolean }[] = [
  { rule: 'names refer to declared roles, vsets, channels and components', matches: (i) => /^SY_ERR_(UNKNOWN_(VSET|CHANNEL|ROLE|COMPONENT)|ROLE_NOT_IN_VSET|COMPONENT_TYPE_MISMATCH|CHANNEL_UNMAPPED|VSET_SHADOWS_ROLE)$/.test(i.code) },
  { rule: 'filter and component types come from the registry (plugins add theirs)', matches: (i) => i.code === 'SY_ERR_UNKNOWN_FILTER' || i.code === 'SY_ERR_UNKNOWN_COMPONENT_TYPE' },
  { rule: 'two listeners (or a listener and the admin API) may not share an address', matches: (i) => i.code === 'SY_ERR_ADDRESS_IN_USE' },
  { rule: 'a header_route meta rule names a meta key some role of the vset has', matches: (i) => /has meta "/.test(i.message) },
  { rule: 'weights have a positive sum', matches: (i) => /positive sum/.test(i.message) },
  { rule: 'durations: minimums, "more than 0", at most 596h, and relations between two (headers ≤ request, timeout ≤ interval, max ≥ base)', matches: (i) => /must be more than 0|at least|must not be (longer|shorter) than|at most the interval|at most 596h|from 1ms to/.test(i.message) },
  { rule: 'an IP address, a CIDR block or a URL is what node:net / new URL() parse (a pattern only approximates them)', matches: (i) => /is not an (address|ip:port address|IP address or CIDR block)|is not an etcd client URL|must be a URL redis|redis:\/\//.test(i.message) },
  { rule: 'a regex compiles (RE2), a header value has no control characters or unknown %variables%, proxy-managed headers are not edited', matches: (i) => /regular expression|RE2|unknown variable %|managed by the proxy|header value|control character/.test(i.message) },
  { rule: 'how YAML wrote a number in a string map (2.0, 042, 0x1F read as numbers whose text differs)', matches: (i) => /quote it/.test(i.message) },
  { rule: 'an etcd prefix without //, a metadata number that Number() reads', matches: (i) => /is not a key prefix|must be a positive number|whole number/.test(i.message) },
];

const isException = (i: ConfigIssue): boolean => EXCEPTIONS.some((e) => e.matches(i));

interface Case { name: string; value: unknown; env?: Record<string, string> }

interface Verdict { schema: boolean; errors: string[]; validator: boolean; issues: ConfigIssue[] }

async function judge(value: unknown, env: Record<string, string> = {}): Promise<Verdict> {
  const schema = schemaAccepts(value);
  const errors = (schemaAccepts.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? ''}`);
  const r = await validateConfig(value, builtinRegistry(), { env, bootstrap: true });
  return { schema, errors, validator: r.ok, issues: r.ok ? [] : r.issues };
}

/** Where the two disagree (undefined: they agree, maybe by a listed exception). */
function disagreement(v: Verdict): string | undefined {
  if (v.schema && !v.validator && !v.issues.every(isException)) {
    return `schema accepts, validator rejects: ${v.issues.filter((i) => !isException(i)).map((i) => `${i.path}: ${i.message} (${i.code})`).join('; ')}`;
  }
  if (!v.schema && v.validator) return `validator accepts, schema rejects: ${v.errors.slice(0, 4).join('; ')}`;
  return undefined;
}

// ---------------------------------------------------------------- the corpus

/** YAML texts whose value is a config (no ${VAR}: expansion happens before validation, with the environment). */
function parsed(name: string, text: string): Case | undefined {
  if (text.includes('${')) return undefined;
  const raw = parseConfigTexts([{ name, text }], ROOT);
  if (raw.issues.length || typeof raw.value !== 'object' || raw.value === null) return undefined;
  // Plugins register their own types, from files of the test that wrote them.
  if ((raw.value as { plugins?: unknown[] }).plugins?.length) return undefined;
  return { name, value: raw.value };
}

function captured(): Case[] {
  const lines = readFileSync(join(ROOT, 'test/fixtures/config-corpus.jsonl'), 'utf8').split('\n').filter((l) => l !== '');
  const texts = [...new Set(lines.map((l) => JSON.parse(l) as string))];
  return texts.flatMap((t, n) => parsed(`corpus #${n}`, t) ?? []);
}

function yamlFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    if (statSync(p).isDirectory()) return yamlFiles(p);
    return /\.ya?ml$/.test(f) ? [p] : [];
  });
}

/** The environment the shipped configs name (the Kubernetes ones take it from a Secret and the downward API). */
const SHIPPED_ENV = { ADMIN_TOKEN: 'a-token', SWITCHYARD_APP: 'cart-client', POD_NAME: 'cart-client-1' };

/** The shipped switchyard configs: config/, examples/ and deploy/ (a file with a `listeners`, `roles` or `source` key). */
function shipped(): Case[] {
  return ['config', 'examples', 'deploy'].flatMap((d) => yamlFiles(join(ROOT, d)))
    .filter((f) => /^(listeners|source|roles):/m.test(readFileSync(f, 'utf8')))
    .map((f) => ({ name: f.slice(ROOT.length + 1), value: parseConfigTexts([{ name: f, text: readFileSync(f, 'utf8') }], ROOT).value, env: SHIPPED_ENV }));
}

// ---------------------------------------------------------------- mutations

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
const DURATION = /^\s*\d+(\.\d+)?(ms|s|m|h)\s*$/;

/** Every path to a value inside `v`. */
function paths(v: Json, at: (string | number)[] = []): (string | number)[][] {
  const out: (string | number)[][] = [at];
  if (Array.isArray(v)) v.forEach((x, i) => out.push(...paths(x, [...at, i])));
  else if (v !== null && typeof v === 'object') for (const [k, x] of Object.entries(v)) out.push(...paths(x, [...at, k]));
  return out;
}

function get(v: Json, path: (string | number)[]): Json {
  return path.reduce<Json>((x, k) => (x as Record<string | number, Json>)[k]!, v);
}

function withValue(v: Json, path: (string | number)[], value: Json | undefined): Json {
  const copy = structuredClone(v);
  if (path.length === 0) return value as Json;
  const parent = get(copy, path.slice(0, -1)) as Record<string | number, Json>;
  if (value === undefined) delete parent[path[path.length - 1]!];
  else parent[path[path.length - 1]!] = value;
  return copy;
}

/** Unknown keys in every mapping, each key left out, every scalar given another type, every duration mangled. */
function mutations(base: Case): Case[] {
  const v = base.value as Json;
  const out: Case[] = [];
  for (const p of paths(v)) {
    const x = get(v, p);
    const at = `${base.name} @ ${p.join('.') || '(root)'}`;
    if (x !== null && typeof x === 'object' && !Array.isArray(x)) {
      // A key of a name-keyed map (roles, weights, metadata) is a name, not a typo: "tyop_key" is a valid name there.
      out.push({ name: `${at}: unknown key`, value: withValue(v, [...p, 'tyop key!'], 1) });
      for (const k of Object.keys(x)) out.push({ name: `${at}: without ${k}`, value: withValue(v, [...p, k], undefined) });
    }
    if (typeof x === 'string') {
      out.push({ name: `${at}: a number for a string`, value: withValue(v, p, 1.5) });
      out.push({ name: `${at}: a list for a string`, value: withValue(v, p, [x]) });
      if (DURATION.test(x)) {
        for (const bad of ['5 minutes', '10', '-1s', '1d', '1.s', 30]) out.push({ name: `${at}: duration ${JSON.stringify(bad)}`, value: withValue(v, p, bad) });
      }
    }
    if (typeof x === 'number') {
      out.push({ name: `${at}: a string for a number`, value: withValue(v, p, `${x}x`) });
      out.push({ name: `${at}: a mapping for a number`, value: withValue(v, p, { n: x }) });
    }
    if (typeof x === 'boolean') out.push({ name: `${at}: a string for a boolean`, value: withValue(v, p, 'yes') });
    if (Array.isArray(x)) out.push({ name: `${at}: a mapping for a list`, value: withValue(v, p, { a: 1 }) });
  }
  return out;
}

// ---------------------------------------------------------------- the tests

test('the schema is valid draft 2020-12 and names itself', (t) => {
  t.is(schema.$schema, 'https://json-schema.org/draft/2020-12/schema');
  t.true(ajv.validateSchema(schema) as boolean, JSON.stringify(ajv.errors));
});

test('the schema and the validator agree on every config the suite uses, the shipped ones, and their mutations', async (t) => {
  const corpus = [...captured(), ...shipped()];
  t.true(shipped().length >= 4, 'config/, examples/ and deploy/kubernetes/ configs');
  t.true(corpus.length > 150, `corpus of ${corpus.length}: run npm run corpus`);
  const valid: Case[] = [];
  const problems: string[] = [];
  let rejected = 0;
  for (const c of corpus) {
    const v = await judge(c.value, c.env);
    if (v.validator) valid.push(c);
    else rejected++;
    const d = disagreement(v);
    if (d) problems.push(`${c.name}: ${d}`);
  }
  // Mutations of every shipped config and a spread of the captured ones (every 4th: they repeat shapes).
  let mutated = 0;
  for (const base of valid.filter((c, i) => i % 4 === 0 || c.env !== undefined)) {
    for (const m of mutations(base)) {
      mutated++;
      const d = disagreement(await judge(m.value, base.env));
      if (d) problems.push(`${m.name}: ${d}`);
    }
  }
  t.log(`${corpus.length} configs (${valid.length} valid, ${rejected} rejected), ${mutated} mutations`);
  t.true(mutated > 1000);
  t.deepEqual(problems.slice(0, 30), [], `${problems.length} disagreements`);
});

test('keys added since the corpus was recorded (autoRollback, a weighted filter\'s rollout, tracing, healthCheck grpc, gRPC retry words): schema and validator agree', async (t) => {
  const config = {
    tracing: { otlp: { endpoint: 'http://127.0.0.1:4318/v1/traces', timeout: '2s' }, sampleRate: 0.5, serviceName: 'cart' },
    autoRollback: { window: '30s', minRequests: 50, maxErrorRatio: 0.05 },
    roles: {
      'cart-v1': { channels: { http: { endpoints: ['127.0.0.1:7001'], protocol: 'http2', healthCheck: { grpc: 'cart.v1.Cart' } } } },
      'cart-v2': { channels: { http: { endpoints: ['127.0.0.1:7101'], protocol: 'http2', healthCheck: { grpc: true } } } },
    },
    vsets: { cart: { channels: ['http'], roles: { 'cart-v1': {}, 'cart-v2': {} } } },
    listeners: {
      cart: {
        address: '127.0.0.2:8080', target: 'cart.http', retries: { on: ['unavailable', 'reset'] },
        filters: [{
          type: 'weighted', weights: { 'cart-v1': 100, 'cart-v2': 0 },
          rollout: { role: 'cart-v2', steps: [1, 5, 25, 50, 100], interval: '30s', minRequests: 100, maxErrorRatio: 0.01, maxLatencyP99: '500ms', onFailure: 'rollback' },
        }],
      },
    },
  };
  const v = await judge(config);
  t.true(v.schema, v.errors.join('; '));
  t.true(v.validator, v.issues.map((i) => `${i.path}: ${i.message}`).join(', '));
  const mutations: ((c: typeof config) => void)[] = [
    (c) => { (c.autoRollback as Record<string, unknown>).maxErrorRatio = 2; },
    (c) => { delete (c.autoRollback as Partial<typeof c.autoRollback>).window; },
    (c) => { (c.listeners.cart.filters[0]!.rollout as Record<string, unknown>).onFailure = 'retry'; },
    (c) => { (c.listeners.cart.filters[0]!.rollout as Record<string, unknown>).steps = [0.5]; },
    (c) => { (c.tracing as Record<string, unknown>).sampleRate = 1.5; },
    (c) => { (c.tracing.otlp as Record<string, unknown>).endpoint = 'collector:4318'; },
    (c) => { (c.roles['cart-v1'].channels.http.healthCheck as Record<string, unknown>).path = '/h'; },
    (c) => { (c.listeners.cart.retries.on as unknown[]).push('not-found'); },
  ];
  for (const [i, mutate] of mutations.entries()) {
    const bad = structuredClone(config);
    mutate(bad);
    const w = await judge(bad);
    t.false(w.schema, `mutation ${i}: the schema accepts it`);
    t.false(w.validator, `mutation ${i}: the validator accepts it`);
  }
});

test('`switchyard schema` prints the schema file', (t) => {
  const r = spawnSync(process.execPath, [CLI, 'schema'], { encoding: 'utf8', timeout: 20_000 });
  t.is(r.status, 0, r.stderr);
  t.deepEqual(JSON.parse(r.stdout), schema);
});

test('every shipped config names the schema for editors', (t) => {
  const files = ['config', 'examples', 'deploy'].flatMap((d) => yamlFiles(join(ROOT, d)))
    .filter((f) => /^(version|listeners|source|roles):/m.test(readFileSync(f, 'utf8')));
  t.true(files.length >= 3);
  for (const f of files) {
    t.regex(readFileSync(f, 'utf8').split('\n')[0]!, /^# yaml-language-server: \$schema=\S*switchyard\.schema\.json$/, f);
  }
});

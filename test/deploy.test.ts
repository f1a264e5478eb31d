import test, { type ExecutionContext } from 'ava';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { ROOT, adminUrl, get, role, scrape, startSidecar, startUpstream, tempFiles, until, vsetOf } from './helpers.js';
import { metricsAfterTraffic, runTool } from './prometheus_support.js';
import { toolPath } from './setup/requirements.js';

/*
 * The ops files in deploy/ are checked as Prometheus and Grafana would take them:
 * promtool loads the rules and runs their unit tests, the dashboard is schema-checked
 * and its PromQL parsed, and every metric name they use must be one a running
 * sidecar exports, with the labels they select on.
 */

const DEPLOY = join(ROOT, 'deploy');

/*
 * Metric names the ops files use that other branches are adding (issue 6 part 1;
 * the resilience work). The lead removes each once merged: the last test fails
 * when a name listed here is exported, to say so.
 */
const PENDING = new Set<string>([]);

/** Labels that Prometheus attaches to every scraped series (the target's). */
const TARGET_LABELS = ['job', 'instance'];

interface Target { refId: string; expr: string }
interface Panel { id: number; title: string; gridPos: { x: number; w: number }; targets: Target[] }
interface Variable { name: string; type: string; query?: string | { query: string } }
interface Dashboard { panels: Panel[]; templating: { list: Variable[] } }
interface RuleFile { groups: { name: string; rules: { alert?: string; record?: string; expr: string }[] }[] }

/** A PromQL expression and where it comes from, for messages. */
interface Expr { where: string; expr: string }

async function dashboard(): Promise<Dashboard> {
  return JSON.parse(await readFile(join(DEPLOY, 'grafana-dashboard.json'), 'utf8')) as Dashboard;
}

async function alertRules(): Promise<RuleFile> {
  return parseYaml(await readFile(join(DEPLOY, 'alerts.yml'), 'utf8')) as RuleFile;
}

/** Panel targets, and each `label_values(selector, label)` variable. */
function dashboardExprs(d: Dashboard): Expr[] {
  const exprs = d.panels.flatMap((p) => p.targets.map((t) => ({ where: `panel "${p.title}" ${t.refId}`, expr: t.expr })));
  for (const v of d.templating.list.filter((v) => v.type === 'query')) {
    const q = typeof v.query === 'string' ? v.query : v.query!.query;
    const m = /^label_values\((.+),\s*(\w+)\)$/.exec(q);
    if (!m) throw new Error(`variable ${v.name}: expected label_values(selector, label), got ${q}`);
    // as PromQL that uses the same series and label, so the checks below cover it
    exprs.push({ where: `variable ${v.name}`, expr: `count by (${m[2]}) (${m[1]})` });
  }
  return exprs;
}

function ruleExprs(r: RuleFile): Expr[] {
  return r.groups.flatMap((g) => g.rules.map((rule) => ({ where: `rule ${rule.alert ?? rule.record}`, expr: rule.expr })));
}

/** Grafana's variables replaced by literals, so that promtool can parse the expression. */
function withLiterals(expr: string): string {
  return expr.replace(/\$\{?__(rate_)?interval\}?/g, '1m').replace(/\$\{?(\w+)\}?/g, 'x');
}

/** `promtool check rules` on the expressions, each written as a recording rule. */
async function checkParses(t: ExecutionContext, exprs: Expr[]): Promise<{ ok: boolean; output: string }> {
  const rules = exprs.map((e, i) => ({ record: `dashboard:expr_${i}`, expr: withLiterals(e.expr) }));
  const { paths } = await tempFiles(t, { 'rules.yml': toYaml({ groups: [{ name: 'dashboard', rules }] }) });
  const run = await runTool(toolPath('promtool'), ['check', 'rules', paths['rules.yml']!]);
  const output = run.stdout + run.stderr;
  return { ok: run.code === 0 && output.includes(`SUCCESS: ${rules.length} rules found`), output };
}

test('deploy/alerts.yml loads in promtool', async (t) => {
  const run = await runTool(toolPath('promtool'), ['check', 'rules', join(DEPLOY, 'alerts.yml')]);
  t.is(run.code, 0, run.stdout + run.stderr);
});

test('each alert fires where it should and nowhere else (promtool test rules deploy/alerts.test.yml)', async (t) => {
  const run = await runTool(toolPath('promtool'), ['test', 'rules', 'alerts.test.yml'], { cwd: DEPLOY });
  t.is(run.code, 0, run.stdout + run.stderr);
  t.regex(run.stdout, /SUCCESS/);
});

test('the dashboard has what Grafana needs on import (our schema in test/fixtures, not Grafana\'s full model), a sound grid, its variables', async (t) => {
  const schema = JSON.parse(await readFile(join(ROOT, 'test/fixtures/grafana-dashboard.schema.json'), 'utf8')) as object;
  const validate = new Ajv({ allErrors: true }).compile(schema);
  const d = await dashboard();
  t.true(validate(d), JSON.stringify(validate.errors, null, 2));

  const ids = d.panels.map((p) => p.id);
  t.is(new Set(ids).size, ids.length, 'panel ids are unique');
  for (const p of d.panels) {
    t.true(p.gridPos.x + p.gridPos.w <= 24, `panel "${p.title}" fits the 24-column grid`);
    const refIds = p.targets.map((x) => x.refId);
    t.is(new Set(refIds).size, refIds.length, `panel "${p.title}" has unique refIds`);
  }

  // every $variable a query uses is one the dashboard defines (or one of Grafana's $__ built-ins)
  const defined = new Set(d.templating.list.map((v) => v.name));
  const json = JSON.stringify(d);
  for (const [, name] of json.matchAll(/\$\{?(\w+)\}?/g)) {
    if (!name!.startsWith('__')) t.true(defined.has(name!), `$${name} is a templating variable`);
  }
  for (const name of ['datasource', 'listener', 'vset']) t.true(defined.has(name), `variable ${name}`);
});

test('every PromQL expression of the dashboard parses', async (t) => {
  const exprs = dashboardExprs(await dashboard());
  t.true(exprs.length >= 10);
  const { ok, output } = await checkParses(t, exprs);
  t.true(ok, output);
  // the same check rejects a broken expression, so it does check something
  t.false((await checkParses(t, [{ where: 'broken', expr: 'sum by (role) (rate(x[$__rate_interval])' }])).ok);
});

/** Sample name → the label names it is exported with, from a Prometheus text exposition. */
function exported(text: string): Map<string, Set<string>> {
  const names = new Map<string, Set<string>>();
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})? /.exec(line);
    if (!m) continue;
    const labels = names.get(m[1]!) ?? new Set<string>();
    for (const [, label] of (m[2] ?? '').matchAll(/(\w+)="/g)) labels.add(label!);
    names.set(m[1]!, labels);
  }
  return names;
}

/**
 * /metrics of a sidecar whose rollout was aborted: the rollout step gauge and the
 * rollbacks counter have series only once a rollout runs and a change was reverted.
 */
async function metricsAfterRollback(t: ExecutionContext): Promise<string> {
  const [a, b] = [await startUpstream(t, 'a'), await startUpstream(t, 'b')];
  const rollout = { role: 'b', steps: [50, 100], interval: '30s', minRequests: 1, maxErrorRatio: 0.5 };
  const sc = await startSidecar(t, vsetOf({ a: role(a), b: role(b) }, { filters: [{ type: 'weighted', weights: { a: 1, b: 0 }, rollout }] }));
  // 409 while its first step is being applied.
  await until(async () => (await get(`${adminUrl(sc)}/rollouts/web/abort`, {}, { method: 'POST' })).status === 200, 5_000, 'the rollout to take an abort');
  return (await scrape(sc)).text;
}

test('every metric and label the dashboard and alerts use is one a running sidecar exports', async (t) => {
  const metrics = exported(await metricsAfterTraffic(t));
  for (const [name, labels] of exported(await metricsAfterRollback(t))) metrics.set(name, new Set([...metrics.get(name) ?? [], ...labels]));

  const exprs = [...dashboardExprs(await dashboard()), ...ruleExprs(await alertRules())];
  const used = new Set<string>();
  for (const { where, expr } of exprs) {
    const names = [...expr.matchAll(/(?<![\w:])(switchyard_\w+)(?![\w:])/g)].map((m) => m[1]!);
    names.forEach((n) => used.add(n));
    const known = names.filter((n) => metrics.has(n));
    for (const n of names) {
      if (!PENDING.has(n)) t.true(metrics.has(n), `${where}: ${n} is exported`);
    }
    // labels in selectors must be on that metric; labels in by/on on one of the expression's metrics
    for (const [, name, matchers] of expr.matchAll(/(switchyard_\w+)\{([^}]*)\}/g)) {
      if (!metrics.has(name!)) continue;
      for (const [, label] of matchers!.matchAll(/(\w+)\s*(?:=~|!~|!=|=)/g)) {
        t.true(metrics.get(name!)!.has(label!), `${where}: ${name} has label ${label}`);
      }
    }
    if (known.length === 0 || known.length < names.length) continue;
    for (const [, list] of expr.matchAll(/\b(?:by|on)\s*\(([^)]*)\)/g)) {
      for (const label of list!.split(',').map((s) => s.trim()).filter(Boolean)) {
        const found = TARGET_LABELS.includes(label) || known.some((n) => metrics.get(n)!.has(label));
        t.true(found, `${where}: label ${label} is on ${known.join(' or ')}`);
      }
    }
  }
  t.true(used.has('switchyard_requests_total') && used.has('switchyard_request_duration_seconds_bucket'));
  t.true(used.has('switchyard_rollout_step') && used.has('switchyard_config_rollbacks_total'));
  for (const n of PENDING) {
    t.false(metrics.has(n), `${n} is exported now: remove it from PENDING in test/deploy.test.ts`);
  }
});

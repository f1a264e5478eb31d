import { createHash } from 'node:crypto';

/**
 * GET /: the status page. One self-contained HTML document (inline CSS and
 * script, no external assets, works offline) that polls GET /status every
 * second and redraws: listeners and their splits, guarded rollouts (state,
 * step, the figures judged), recent rollbacks, vsets and their live traffic,
 * recent generations. The document itself carries no data, so it is served
 * without the admin token; the script sends the token on its fetches, taken
 * from the URL fragment (`/#token=…`, never sent to the server) or from a form
 * the page shows when /status answers 401.
 *
 * All config-derived text goes into the DOM as text nodes (`append(string)`,
 * `textContent`), never through innerHTML: meta values are arbitrary strings.
 */

const STYLE = `
:root { --fg: #1f2328; --muted: #656d76; --line: #d0d7de; --bg: #f6f8fa; --card: #fff;
  --ok: #1a7f37; --warn: #9a6700; --bad: #cf222e; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 6px 18px; padding: 12px 24px; background: #24292f; color: #fff; }
header h1 { margin: 0; font-size: 18px; font-weight: 600; }
header .info { color: #c9d1d9; font-size: 13px; }
header .info b { color: #fff; font-weight: 600; }
#state { margin-left: auto; font-size: 13px; }
#state::before { content: ""; display: inline-block; width: 8px; height: 8px; border-radius: 50%; margin-right: 6px; background: #8c959f; vertical-align: 1px; }
#state.live::before { background: #3fb950; }
#state.stale::before { background: #f85149; }
main { max-width: 1180px; margin: 0 auto; padding: 8px 24px 32px; }
h2 { font-size: 15px; margin: 22px 0 8px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; margin-bottom: 14px; overflow-x: auto; }
.card > .title { display: flex; flex-wrap: wrap; align-items: baseline; gap: 4px 14px; padding: 10px 14px; border-bottom: 1px solid var(--line); }
.card > .title h3 { margin: 0; font-size: 16px; }
.card > .empty { padding: 10px 14px; }
table { width: 100%; border-collapse: collapse; }
th, td { text-align: left; padding: 7px 10px; border-bottom: 1px solid #eaeef2; vertical-align: middle; white-space: nowrap; }
th { font-size: 12px; font-weight: 600; color: var(--muted); background: #fbfcfd; }
th.group { text-align: center; border-left: 1px solid var(--line); }
td.first, th.first { border-left: 1px solid var(--line); }
tr:last-child td { border-bottom: 0; }
td.num { font-variant-numeric: tabular-nums; }
/* Long filter chains and routing rules wrap, so two listeners still fit a laptop window. */
td.filters, td.routing, td.meta { white-space: normal; min-width: 110px; }
.card { overflow-x: auto; }
.muted { color: var(--muted); }
.mono, td.address { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; background: #eaeef2; color: var(--fg); }
.badge.http { background: #ddf4ff; color: #0550ae; }
.badge.tcp { background: #fbefff; color: #8250df; }
.badge.applied, .badge.serving { background: #dafbe1; color: var(--ok); }
.badge.invalid, .badge.failed { background: #ffebe9; color: var(--bad); }
.badge.draining { background: #fff8c5; color: var(--warn); }
.chip { display: inline-block; margin: 1px 4px 1px 0; padding: 0 6px; border: 1px solid var(--line); border-radius: 4px; font-size: 12px; white-space: nowrap; }
.chip .k { color: var(--muted); }
.share { min-width: 150px; }
/* Counts go under their figure: each listener's group of columns stays narrow. */
td.share > .muted, td.errors > .muted { display: block; font-size: 12px; }
.bar { position: relative; display: inline-block; width: 80px; height: 10px; margin-right: 8px; border-radius: 5px; background: #eaeef2; vertical-align: middle; }
.bar .fill { position: absolute; left: 0; top: 0; bottom: 0; border-radius: 5px; background: var(--accent); }
.bar .mark { position: absolute; top: -3px; bottom: -3px; width: 2px; margin-left: -1px; background: var(--fg); }
.ok { color: var(--ok); }
.warn { color: var(--warn); font-weight: 600; }
.bad { color: var(--bad); font-weight: 600; }
.note { margin: 6px 2px; color: var(--muted); font-size: 13px; }
.badge.running { background: #ddf4ff; color: #0550ae; }
.badge.waiting-for-data, .badge.paused { background: #fff8c5; color: var(--warn); }
.badge.done { background: #dafbe1; color: var(--ok); }
.badge.rolled-back, .badge.auto-rollback { background: #ffebe9; color: var(--bad); }
/* Figures and reasons wrap: the rollouts table stays inside a laptop window. */
td.figures, td.judged, td.state, td.reason, td.next { white-space: normal; min-width: 110px; }
td.state > .muted, td.step > .muted, td.figures > .muted { display: block; font-size: 12px; }
.bar .tick { position: absolute; top: 0; bottom: 0; width: 1px; background: var(--card); }
.rollout-note { margin-top: 3px; font-size: 12px; }
.chip.short { border-color: #d4a72c; }
#problem { display: none; margin: 12px 0; padding: 10px 14px; border: 1px solid #ffcecb; border-radius: 8px; background: #ffebe9; color: var(--bad); }
#problem.shown { display: block; }
#auth { display: none; margin: 24px 0; }
#auth.shown { display: block; }
#auth form { display: flex; gap: 8px; padding: 14px; }
#auth input { flex: 1; max-width: 360px; padding: 6px 8px; border: 1px solid var(--line); border-radius: 6px; font: inherit; }
#auth button { padding: 6px 14px; border: 1px solid var(--line); border-radius: 6px; background: #f3f4f6; font: inherit; cursor: pointer; }
`;

const SCRIPT = `
'use strict';
const POLL_MS = 1000;
let token = new URLSearchParams(location.hash.slice(1)).get('token');
let timer = null;
let lastOk = null;

/** An element with properties and children; strings become text nodes, never markup. */
function h(tag, props, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'style') Object.assign(el.style, v);
    else el.setAttribute(k, String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid !== undefined && kid !== null && kid !== false) el.append(kid instanceof Node ? kid : String(kid));
  }
  return el;
}

function pct(x) {
  if (x === null || x === undefined) return '—';
  const p = x * 100;
  return (p > 0 && p < 10 ? p.toFixed(1) : String(Math.round(p))) + ' %';
}

function healthClass(hl) {
  return hl.healthy === hl.total ? 'ok' : hl.healthy > 0 ? 'warn' : 'bad';
}

function errorClass(r) {
  if (r === null) return 'muted';
  return r === 0 ? 'ok' : r < 0.05 ? 'warn' : 'bad';
}

function ago(iso, now) {
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 60) return s + ' s ago';
  if (s < 3600) return Math.round(s / 60) + ' min ago';
  return Math.round(s / 3600) + ' h ago';
}

function seconds(x) {
  return (x < 10 ? x.toFixed(1) : String(Math.round(x))) + ' s';
}

function unit(l) {
  return l.protocol === 'tcp' ? 'conn' : l.protocol === 'udp' ? 'flow' : 'req';
}

function routing(l, s) {
  if (!l.weights) return h('span', { class: 'weights' }, 'equal split');
  const parts = Object.entries(l.weights).map(([role, w]) => h('span', { class: 'chip' }, h('span', { class: 'k' }, role + ' '), String(w)));
  const r = s.rollouts.find((x) => x.listener === l.name);
  return [h('span', { class: 'weights' }, 'weighted ', parts, l.stickyHeader ? h('span', { class: 'muted' }, ' sticky by ' + l.stickyHeader) : null),
    r ? h('div', { class: 'rollout-note' }, 'rollout of ', h('b', {}, r.role), ' at ' + r.step + ' % ', h('span', { class: 'badge ' + r.state }, r.state)) : null];
}

function listenersCard(s) {
  if (s.listeners.length === 0) return h('div', { class: 'card' }, h('div', { class: 'empty muted' }, 'No listeners.'));
  const rows = s.listeners.map((l) => h('tr', { 'data-listener': l.name },
    h('td', {}, h('b', {}, l.name)),
    h('td', {}, h('span', { class: 'badge ' + l.protocol }, l.protocol)),
    h('td', { class: 'address' }, l.address),
    h('td', { class: 'target mono' }, l.vset + '.' + l.channel),
    h('td', { class: 'routing' }, routing(l, s)),
    h('td', { class: 'filters muted' }, l.filters.length ? l.filters.join(' → ') : '—'),
    h('td', { class: 'num rate' }, s.windowSeconds > 0 ? (l.served / s.windowSeconds).toFixed(1) + ' ' + unit(l) + '/s' : '—',
      l.unrouted ? h('span', { class: 'muted' }, ' + ' + l.unrouted + ' answered by filters') : null),
  ));
  return h('div', { class: 'card' }, h('table', {},
    h('thead', {}, h('tr', {}, ['Listener', 'Protocol', 'Address', 'Target', 'Routing', 'Filters', 'Traffic'].map((t) => h('th', {}, t)))),
    h('tbody', {}, rows)));
}

function metaChips(meta) {
  const entries = Object.entries(meta);
  if (entries.length === 0) return h('span', { class: 'muted' }, '—');
  return entries.map(([k, v]) => h('span', { class: 'chip' }, h('span', { class: 'k' }, k + ' '), v));
}

function trafficCells(t, l) {
  const first = { 'data-listener': t.listener };
  const weight = t.weight === null ? 'equal' : String(t.weight);
  return [
    h('td', { ...first, class: 'weight num first' }, weight, h('span', { class: 'muted' }, ' (' + pct(t.intended) + ')')),
    h('td', { ...first, class: 'share num' },
      h('span', { class: 'bar', title: 'live share; the line marks the configured share' },
        h('span', { class: 'fill', style: { width: ((t.share || 0) * 100).toFixed(1) + '%' } }),
        h('span', { class: 'mark', style: { left: (t.intended * 100).toFixed(1) + '%' } })),
      t.share === null ? h('span', { class: 'value muted' }, 'no traffic')
        : [h('span', { class: 'value' }, pct(t.share)), h('span', { class: 'muted' }, ' · ' + t.count + ' ' + unit(l))]),
    h('td', { ...first, class: 'errors num ' + errorClass(t.errorRatio) },
      pct(t.errorRatio), t.errors ? h('span', { class: 'muted' }, ' (' + t.errors + ' of ' + t.count + ')') : null),
    h('td', { ...first, class: 'health num ' + healthClass(t.health), title: 'endpoints of channel ' + t.health.channel + ' that take new work (healthy, not ejected)' },
      t.health.healthy + ' of ' + t.health.total),
  ];
}

function vsetCard(v, s) {
  const ls = v.listeners.map((n) => s.listeners.find((l) => l.name === n));
  const title = h('div', { class: 'title' }, h('h3', {}, v.name),
    h('span', { class: 'muted' }, 'channels: ' + v.channels.join(', ')),
    ls.length ? h('span', { class: 'muted' }, 'via ', ls.map((l, i) => [i ? ', ' : '', h('b', {}, l.name), ' ', h('span', { class: 'mono' }, l.address)]))
      : h('span', { class: 'muted' }, 'no listener targets it'));
  const head = [];
  if (ls.length > 1) {
    head.push(h('tr', {}, h('th', { colspan: 2 }), ls.map((l) => h('th', { class: 'group', colspan: 4 }, l.name))));
  }
  head.push(h('tr', {}, h('th', {}, 'Role'), h('th', {}, 'Meta'),
    ls.map(() => [h('th', { class: 'first' }, 'Weight'), h('th', {}, 'Live share'), h('th', {}, 'Errors (5xx)'), h('th', {}, 'Endpoints up')])));
  const rows = v.roles.map((r) => h('tr', { 'data-role': r.name },
    h('td', { class: 'role' }, h('b', {}, r.name)),
    h('td', { class: 'meta' }, metaChips(r.meta)),
    r.traffic.map((t, i) => trafficCells(t, ls[i]))));
  return h('div', { class: 'card', 'data-vset': v.name }, title, h('table', {}, h('thead', {}, head), h('tbody', {}, rows)));
}

function generationsCard(s) {
  const g = s.generations;
  const now = Date.parse(s.at);
  if (g.recent.length === 0) return h('div', { class: 'card' }, h('div', { class: 'empty muted' }, 'No config changes yet.'));
  const rows = g.recent.map((r) => {
    const tags = [];
    if (r.generation !== null && r.generation === g.current) tags.push(h('span', { class: 'badge serving' }, 'serving'));
    if (r.generation !== null && g.draining.includes(r.generation)) tags.push(h('span', { class: 'badge draining' }, 'draining'));
    return h('tr', { 'data-generation': r.generation === null ? '' : r.generation },
      h('td', { class: 'num' }, r.generation === null ? '—' : h('b', {}, '#' + r.generation)),
      h('td', { class: 'source' }, r.source, r.reason ? h('span', { class: 'muted' }, ' · ' + r.reason) : null),
      h('td', { title: r.at }, new Date(r.at).toLocaleTimeString(), h('span', { class: 'muted' }, ' · ' + ago(r.at, now))),
      h('td', { class: 'outcome' }, h('span', { class: 'badge ' + r.outcome }, r.outcome), ' ', tags),
      h('td', { class: 'muted' }, r.error || ''));
  });
  return h('div', { class: 'card' }, h('table', {},
    h('thead', {}, h('tr', {}, ['Generation', 'Source', 'When', 'Outcome', 'Error'].map((t) => h('th', {}, t)))),
    h('tbody', {}, rows)));
}

function ms(x) {
  if (x === null || x === undefined) return '—';
  return (x < 10 ? x.toFixed(1) : String(Math.round(x))) + ' ms';
}

/** A rollout's figures against its limits: requests (short of the minimum is no data, marked while a step waits on it), error ratio, p99 when judged. */
function figureChips(f, lim, judging) {
  if (!f) return h('span', { class: 'muted' }, '—');
  return [
    h('span', { class: 'chip requests' + (judging && f.requests < lim.minRequests ? ' short' : '') }, h('span', { class: 'k' }, 'requests '), f.requests + ' (min ' + lim.minRequests + ')'),
    h('span', { class: 'chip error-ratio ' + (f.requests ? (f.errorRatio > lim.maxErrorRatio ? 'bad' : 'ok') : '') },
      h('span', { class: 'k' }, 'errors '), (f.requests ? pct(f.errorRatio) : '—') + ' (max ' + pct(lim.maxErrorRatio) + ')'),
    lim.maxLatencyP99Ms === null ? null : h('span', { class: 'chip p99 ' + (f.latencyP99Ms === null ? '' : f.latencyP99Ms > lim.maxLatencyP99Ms ? 'bad' : 'ok') },
      h('span', { class: 'k' }, 'p99 '), ms(f.latencyP99Ms) + ' (max ' + ms(lim.maxLatencyP99Ms) + ')'),
  ];
}

function stepBar(r) {
  return h('span', { class: 'bar', title: 'share of the split for the role; ticks mark the steps' },
    h('span', { class: 'fill', style: { width: r.step + '%' } }),
    r.steps.filter((p) => p < 100).map((p) => h('span', { class: 'tick', style: { left: p + '%' } })));
}

function nextStep(r, now) {
  if (r.state === 'running' && r.nextStepAt) {
    const left = Math.max(0, (Date.parse(r.nextStepAt) - now) / 1000);
    return 'judged in ' + seconds(left);
  }
  if (r.state === 'running') return r.stepIndex < 0 ? 'the first step comes' : 'the step is being applied';
  if (r.state === 'waiting-for-data') return 'after ' + Math.max(0, r.limits.minRequests - r.figures.requests) + ' more requests';
  if (r.state === 'paused') return 'on resume';
  return '—';
}

function rolloutsCard(s) {
  const now = Date.parse(s.at);
  const rows = s.rollouts.map((r) => h('tr', { 'data-rollout': r.listener },
    h('td', {}, h('b', {}, r.listener)),
    h('td', { class: 'role' }, h('b', {}, r.role)),
    h('td', { class: 'state' }, h('span', { class: 'badge ' + r.state }, r.state), r.reason ? h('span', { class: 'muted reason' }, r.reason) : null),
    h('td', { class: 'step num' }, stepBar(r), h('span', { class: 'value' }, r.step + ' %'),
      h('span', { class: 'muted' }, (r.stepIndex < 0 ? 'before the first step' : 'step ' + (r.stepIndex + 1) + ' of ' + r.steps.length) + ': ' + r.steps.join(' → ') + ' %')),
    h('td', { class: 'figures num' }, figureChips(r.figures, r.limits, r.state === 'running' || r.state === 'waiting-for-data')),
    h('td', { class: 'judged num' }, figureChips(r.judged, r.limits, false)),
    h('td', { class: 'next' }, nextStep(r, now), h('span', { class: 'muted' }, ' · every ' + seconds(r.limits.intervalMs / 1000) + ', on failure ' + r.limits.onFailure)),
  ));
  return h('div', { class: 'card' }, h('table', {},
    h('thead', {}, h('tr', {}, ['Listener', 'Role', 'State', 'Step', 'This step', 'Last verdict', 'Next'].map((t) => h('th', {}, t)))),
    h('tbody', {}, rows)));
}

function rollbackFigures(b) {
  const f = b.figures;
  if (!f) return h('span', { class: 'muted' }, '—');
  return [
    h('span', { class: 'chip' }, h('span', { class: 'k' }, 'errors '), pct(f.errorRatio) + ' (' + f.errors + ' of ' + f.requests + ')'),
    f.latencyP99Ms !== null && f.latencyP99Ms !== undefined ? h('span', { class: 'chip' }, h('span', { class: 'k' }, 'p99 '), ms(f.latencyP99Ms)) : null,
    b.previous ? h('span', { class: 'chip' }, h('span', { class: 'k' }, 'before '), b.previous.requests ? pct(b.previous.errorRatio) : 'no requests') : null,
    b.maxErrorRatio !== null ? h('span', { class: 'chip' }, h('span', { class: 'k' }, 'max '), pct(b.maxErrorRatio)) : null,
  ];
}

function rollbacksCard(s) {
  const now = Date.parse(s.at);
  const rows = s.rollbacks.map((b) => h('tr', { 'data-rollback': b.generation === null ? '' : b.generation },
    h('td', { class: 'num' }, b.generation === null ? '—' : h('b', {}, '#' + b.generation)),
    h('td', { title: b.at }, new Date(b.at).toLocaleTimeString(), h('span', { class: 'muted' }, ' · ' + ago(b.at, now))),
    h('td', { class: 'kind' }, h('span', { class: 'badge ' + (b.source === 'rollout' ? 'rolled-back' : 'auto-rollback') }, b.source)),
    h('td', { class: 'reason' }, b.reason, b.rolledBack !== null ? h('span', { class: 'muted' }, ' · reverted #' + b.rolledBack) : null),
    h('td', { class: 'target' }, b.listener ? [h('b', {}, b.listener), ' '] : null, b.role ? ['role ', h('b', {}, b.role)] : '—'),
    h('td', { class: 'figures num' }, rollbackFigures(b)),
  ));
  return h('div', { class: 'card' }, h('table', {},
    h('thead', {}, h('tr', {}, ['Generation', 'When', 'Kind', 'Reason', 'Where', 'Figures judged'].map((t) => h('th', {}, t)))),
    h('tbody', {}, rows)));
}

function render(s) {
  document.getElementById('generation').textContent = s.generation === null ? '—' : '#' + s.generation;
  document.getElementById('window').textContent = 'last ' + seconds(s.windowSeconds);
  const shown = s.vsets.filter((v) => !v.implicit || v.listeners.length > 0);
  const hidden = s.vsets.length - shown.length;
  document.getElementById('content').replaceChildren(...[
    h('h2', {}, 'Listeners'), listenersCard(s),
    s.rollouts.length ? [h('h2', {}, 'Rollouts'), rolloutsCard(s)] : [],
    s.rollbacks.length ? [h('h2', {}, 'Recent rollbacks'), rollbacksCard(s)] : [],
    h('h2', {}, 'Vsets'),
    shown.length ? shown.map((v) => vsetCard(v, s)) : h('div', { class: 'card' }, h('div', { class: 'empty muted' }, 'No vsets.')),
    h('p', { class: 'note' }, 'Live share and errors count the last ' + seconds(s.windowSeconds) + ' (tcp: connections, counted when they close). The line in each bar marks the configured share.',
      hidden ? ' ' + hidden + ' implicit vset' + (hidden > 1 ? 's' : '') + ' without listeners not shown.' : ''),
    h('h2', {}, 'Recent generations'), generationsCard(s)].flat(Infinity));
}

function setState(cls, text) {
  const el = document.getElementById('state');
  el.className = cls;
  el.textContent = text;
}

function problem(text) {
  const el = document.getElementById('problem');
  el.className = text ? 'shown' : '';
  el.textContent = text || '';
}

async function poll() {
  clearTimeout(timer);
  timer = null;
  try {
    const res = await fetch('/status', { headers: token ? { authorization: 'Bearer ' + token } : {}, cache: 'no-store' });
    if (res.status === 401) {
      document.getElementById('auth').className = 'card shown';
      setState('stale', token ? 'token refused' : 'token required');
      return; // until a token is given
    }
    if (!res.ok) throw new Error('GET /status answered ' + res.status);
    const s = await res.json();
    document.getElementById('auth').className = 'card';
    lastOk = new Date();
    render(s);
    problem('');
    setState('live', 'live · updated ' + lastOk.toLocaleTimeString());
  } catch (err) {
    setState('stale', 'stale');
    problem('Cannot read the admin API (' + err.message + ')' + (lastOk ? '; showing data from ' + lastOk.toLocaleTimeString() : '') + '. Retrying.');
  }
  timer = setTimeout(poll, POLL_MS);
}

document.getElementById('auth-form').addEventListener('submit', (e) => {
  e.preventDefault();
  token = document.getElementById('token').value;
  // Kept in the fragment so a page reload keeps it; a fragment never reaches a server or its logs.
  history.replaceState(null, '', '#token=' + encodeURIComponent(token));
  poll();
});
window.addEventListener('hashchange', () => {
  token = new URLSearchParams(location.hash.slice(1)).get('token');
  poll();
});
poll();
`;

const HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>switchyard status</title>
<link rel="icon" href="data:,">
<style>${STYLE}</style>
</head>
<body>
<header>
  <h1>switchyard</h1>
  <span class="info">generation <b id="generation">—</b></span>
  <span class="info">live window: <b id="window">—</b></span>
  <span id="state">connecting…</span>
</header>
<main>
  <div id="problem" role="alert"></div>
  <div id="auth" class="card">
    <form id="auth-form">
      <input id="token" type="password" placeholder="admin token" autocomplete="off" aria-label="admin token">
      <button type="submit">Show status</button>
    </form>
  </div>
  <div id="content"></div>
</main>
<script>${SCRIPT}</script>
</body>
</html>
`;

const sha256 = (text: string): string => `'sha256-${createHash('sha256').update(text).digest('base64')}'`;

/**
 * The page and the headers to send it with. The content security policy admits
 * exactly the inline style and script above (by hash) and fetches to this origin:
 * nothing a config value could smuggle in would run.
 */
export const statusPage = {
  html: HTML,
  headers: {
    'content-security-policy': [
      "default-src 'none'",
      `script-src ${sha256(SCRIPT)}`,
      `style-src ${sha256(STYLE)}`,
      "connect-src 'self'",
      'img-src data:',
      "base-uri 'none'",
      "form-action 'none'",
      "frame-ancestors 'none'",
    ].join('; '),
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
    'cache-control': 'no-store',
  },
} as const;

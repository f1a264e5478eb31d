import type { Exchange, FilterDescriptor } from './api.js';
import { headerValues } from './header_values.js';
import { fmix32, hashString } from './hash.js';
import { table } from '../table.js';

export interface WeightedConfig {
  weights: Record<string, number>;
  stickyHeader?: string;
  /** The sidecar ramps one role through steps itself (reload/rollouts.ts). */
  rollout?: RolloutConfig;
}

/** `rollout`: README "Guarded rollouts". */
export interface RolloutConfig {
  role: string;
  /** Percent of the split for `role`, each from 1 to 100, increasing. */
  steps: number[];
  intervalMs: number;
  minRequests: number;
  maxErrorRatio: number;
  maxLatencyP99Ms?: number;
  onFailure: 'rollback' | 'pause';
  /** The step (a percent of `steps`) the rollout begins at; absent: the first. */
  startStep?: number;
}

const ROLLOUT_KEYS = ['role', 'steps', 'interval', 'minRequests', 'maxErrorRatio', 'maxLatencyP99', 'onFailure', 'startStep'];

/**
 * `weighted`: picks a role at random by relative weight, unless an earlier filter
 * picked one. Roles of the vset left out of `weights` get weight 0.
 *
 * With `stickyHeader`, the choice is weighted rendezvous hashing (HRW) of the
 * header value: each role scores -ln(u)/w with u a hash of (value, role name), and
 * the lowest score wins. A role wins with probability w/Σw, and when weights change
 * a user only moves towards a role whose weight grew or away from one whose weight
 * shrank: a canary ramp from 10 % to 20 % moves 10 % of users, all of them onto the
 * canary, and none back. Adding or removing another role never moves users between
 * the roles that stay.
 *
 * A role with no endpoint that can take work (all unhealthy or ejected) is left out
 * of the draw, so its share spreads over the others by their weights, and comes
 * back when the role recovers; sticky users of that role move and come back too.
 */
export const weighted: FilterDescriptor<WeightedConfig> = {
  type: 'weighted',
  scope: 'both',

  validate(raw, ctx) {
    ctx.allowKeys(raw, ['weights', 'stickyHeader', 'rollout']);
    const weights = table<number>();
    const w = ctx.obj(raw.weights, ['weights'], null, { required: true, message: 'must map role names to weights' });
    if (!w) return { weights };
    let sum = 0;
    for (const [role, n] of Object.entries(w)) {
      if (!ctx.roles.includes(role)) {
        ctx.report('SY_ERR_ROLE_NOT_IN_VSET', ['weights', role], `role "${role}" is not in the listener's target vset (${ctx.roles.join(', ')})`);
        continue;
      }
      // Any wrong weight, whatever its type, is a value error.
      const weight = ctx.int(n, ['weights', role], {
        required: true, min: 0, max: Number.MAX_SAFE_INTEGER, code: 'SY_ERR_CONFIG_VALUE', message: `must be a non-negative integer, got ${JSON.stringify(n)}`,
      });
      if (weight === undefined) continue;
      weights[role] = weight;
      sum += weight;
    }
    if (sum <= 0 && Object.keys(weights).length === Object.keys(w).length) {
      ctx.report('SY_ERR_CONFIG_VALUE', ['weights'], 'the weights must have a positive sum');
    }
    const config: WeightedConfig = { weights };
    if (raw.stickyHeader !== undefined) {
      if (ctx.protocol !== 'http') {
        ctx.report('SY_ERR_FILTER_SCOPE', ['stickyHeader'], 'a tcp listener has no headers to stick by');
      } else {
        const header = ctx.headerName(raw.stickyHeader, ['stickyHeader'], { message: 'must be a header name' });
        if (header !== undefined) config.stickyHeader = header.toLowerCase();
      }
    }
    if (raw.rollout !== undefined) {
      if (ctx.protocol !== 'http') ctx.report('SY_ERR_FILTER_SCOPE', ['rollout'], 'a rollout judges HTTP requests; a tcp or udp listener has none');
      else {
        const rollout = validateRollout(raw.rollout, ctx);
        if (rollout) config.rollout = rollout;
      }
    }
    return config;
  },

  create(config, ctx) {
    // Per generation: the roles with weight > 0, their cumulative weights and hash seeds.
    const picks: number[] = [];
    const cumulative: number[] = [];
    const inverseWeights: number[] = [];
    const seeds: number[] = [];
    let total = 0;
    ctx.roles.forEach((role, i) => {
      // Own keys only: a role named like an Object.prototype member (`constructor`,
      // `toString`, both valid names) must not find a function here and turn the
      // cumulative weights into NaN.
      const w = Object.hasOwn(config.weights, role.name) ? config.weights[role.name]! : 0;
      if (w <= 0) return;
      total += w;
      picks.push(i);
      cumulative.push(total);
      inverseWeights.push(1 / w);
      seeds.push(hashString(role.name));
    });
    const n = picks.length;
    const sticky = config.stickyHeader;

    const roles = ctx.roles;

    // hot path
    /** A role by weight; a role that cannot take work gives its share to those that can. */
    function random(): number {
      const r = Math.random() * total;
      let i = 0;
      while (i < n - 1 && r >= cumulative[i]!) i++;
      const role = picks[i]!;
      return roles[role]!.available ? role : randomAvailable(role);
    }

    /** The slow path of `random`: the weights of the available roles only (or `dflt` when none is). */
    function randomAvailable(dflt: number): number {
      let sum = 0;
      for (let i = 0; i < n; i++) if (roles[picks[i]!]!.available) sum += 1 / inverseWeights[i]!;
      if (sum === 0) return dflt;
      let r = Math.random() * sum;
      let last = dflt;
      for (let i = 0; i < n; i++) {
        if (!roles[picks[i]!]!.available) continue;
        last = picks[i]!;
        r -= 1 / inverseWeights[i]!;
        if (r < 0) return last;
      }
      return last;
    }

    // hot path
    /** HRW over the available roles: a user of a role that cannot take work moves, and comes back after. */
    function rendezvous(key: string): number {
      const h = hashString(key);
      let best = -1;
      let bestScore = Infinity;
      let any = 0;
      let anyScore = Infinity;
      for (let i = 0; i < n; i++) {
        // u in (0, 1): never 0, so the log is finite.
        const u = (fmix32((h ^ seeds[i]!) + 0x9e3779b9) + 0.5) / 4294967296;
        const score = -Math.log(u) * inverseWeights[i]!;
        if (score < anyScore) { anyScore = score; any = i; }
        if (score < bestScore && roles[picks[i]!]!.available) { bestScore = score; best = i; }
      }
      return picks[best < 0 ? any : best]!;
    }

    if (sticky === undefined) {
      return function weighted(ex: Exchange): boolean {
        if (ex.role < 0) {
          ex.role = random();
          ex.fallback = true;
        }
        return true;
      };
    }
    return function weightedSticky(ex: Exchange): boolean {
      if (ex.role >= 0) return true;
      // sticky is refused on tcp listeners (validate): this is an http request.
      const v = ex.protocol === 'http' ? headerValues(ex.req, sticky) : undefined;
      ex.role = v === undefined ? random() : rendezvous(typeof v === 'string' ? v : v[0]!);
      ex.fallback = true;
      return true;
    };
  },

  splitWeights(config) {
    return config.weights;
  },
};

function validateRollout(value: unknown, ctx: Parameters<FilterDescriptor<WeightedConfig>['validate']>[1]): RolloutConfig | undefined {
  const o = ctx.obj(value, ['rollout'], ROLLOUT_KEYS);
  if (!o) return undefined;
  const required = { required: true } as const;
  const role = ctx.str(o.role, ['rollout', 'role'], required);
  if (role !== undefined && !ctx.roles.includes(role)) {
    ctx.report('SY_ERR_ROLE_NOT_IN_VSET', ['rollout', 'role'], `role "${role}" is not in the listener's target vset (${ctx.roles.join(', ')})`);
  }
  const list = ctx.list(o.steps, ['rollout', 'steps'], { required: true, message: 'must be a list of percents, e.g. [1, 5, 25, 50, 100]' }) ?? [];
  const steps: number[] = [];
  list.forEach((v, i) => {
    const n = ctx.int(v, ['rollout', 'steps', i], { required: true, min: 1, max: 100 });
    if (n === undefined) return;
    if (steps.length && n <= steps[steps.length - 1]!) ctx.report('SY_ERR_CONFIG_VALUE', ['rollout', 'steps', i], `steps must increase: ${n} after ${steps[steps.length - 1]}`);
    else steps.push(n);
  });
  if (o.steps !== undefined && list.length === 0) ctx.report('SY_ERR_CONFIG_VALUE', ['rollout', 'steps'], 'needs at least one step');
  const intervalMs = ctx.duration(o.interval, ['rollout', 'interval'], required);
  if (intervalMs !== undefined && intervalMs <= 0) ctx.report('SY_ERR_CONFIG_VALUE', ['rollout', 'interval'], 'must be longer than 0');
  const minRequests = ctx.int(o.minRequests, ['rollout', 'minRequests'], { required: true, min: 1, max: Number.MAX_SAFE_INTEGER });
  const maxErrorRatio = ctx.number(o.maxErrorRatio, ['rollout', 'maxErrorRatio'], { required: true, min: 0, max: 1 });
  const maxLatencyP99Ms = o.maxLatencyP99 === undefined ? undefined : ctx.duration(o.maxLatencyP99, ['rollout', 'maxLatencyP99'], required);
  let onFailure: RolloutConfig['onFailure'] = 'rollback';
  if (o.onFailure !== undefined) {
    const f = ctx.str(o.onFailure, ['rollout', 'onFailure'], required);
    if (f === 'rollback' || f === 'pause') onFailure = f;
    else if (f !== undefined) ctx.report('SY_ERR_CONFIG_VALUE', ['rollout', 'onFailure'], `"${f}" is not rollback or pause`);
  }
  const startStep = o.startStep === undefined ? undefined : ctx.int(o.startStep, ['rollout', 'startStep'], { required: true, min: 1, max: 100 });
  if (startStep !== undefined && steps.length && !steps.includes(startStep)) {
    ctx.report('SY_ERR_CONFIG_VALUE', ['rollout', 'startStep'], `${startStep} is not one of the steps (${steps.join(', ')})`);
  }
  if (role === undefined || !ctx.roles.includes(role) || steps.length !== list.length || !steps.length || intervalMs === undefined || intervalMs <= 0
    || minRequests === undefined || maxErrorRatio === undefined || (o.maxLatencyP99 !== undefined && maxLatencyP99Ms === undefined)) return undefined;
  return {
    role, steps, intervalMs, minRequests, maxErrorRatio, onFailure,
    ...(maxLatencyP99Ms !== undefined ? { maxLatencyP99Ms } : {}),
    ...(startStep !== undefined && steps.includes(startStep) ? { startStep } : {}),
  };
}

import type { Config } from '../config/types.js';
import type { RawConfig } from '../config/load.js';
import type { Metrics } from '../metrics.js';
import type { RolloutConfig, WeightedConfig } from '../filters/weighted.js';
import type { Generation } from './generation.js';
import { figuresOf, talliesOf, type Figures, type OutcomeTally } from './outcomes.js';

export type RolloutState = 'running' | 'waiting-for-data' | 'paused' | 'done' | 'rolled-back';
export type RolloutAction = 'pause' | 'resume' | 'promote' | 'abort';

/** What a generation made by a rollout carries into GET /generations and back into the controller. */
export interface RolloutNote {
  reason: string;
  listener: string;
  role: string;
  step: number;
  index: number;
  state: RolloutState;
  figures?: Figures;
}

/** What the controller needs of the runtime. */
export interface RolloutHost {
  readonly current: Generation | null;
  readonly metrics: Metrics;
  log(line: string): void;
  /** Applies what `make` derives from the config current then, in the apply queue, as source "rollout". */
  applyRollout(make: () => RawConfig | undefined, note: RolloutNote): Promise<{ ok: boolean; error?: string } | undefined>;
}

interface Rollout {
  readonly listener: string;
  readonly spec: RolloutConfig;
  /** The rollout key as written (sorted keys): a change of it starts the rollout anew. */
  readonly key: string;
  /** The weights as written when the rollout began. */
  readonly base: Record<string, number>;
  /** Index into steps; -1 before the first step. */
  index: number;
  /** The percent `spec.role` has now (before the first step: its share of `base`). */
  step: number;
  state: RolloutState;
  reason: string;
  /** The figures of this step: one tally per generation since the step began. */
  tallies: OutcomeTally[];
  stepStartedAt: number;
  judged: Figures | null;
  generation: number;
  timer: NodeJS.Timeout | null;
  /** A step's generation is being applied. */
  moving: boolean;
}

/** The first weighted filter with a rollout, per listener, in a raw config value. */
function rawRollouts(value: unknown): Map<string, { index: number; entry: Record<string, unknown> }> {
  const out = new Map<string, { index: number; entry: Record<string, unknown> }>();
  const listeners = isObj(value) ? value.listeners : undefined;
  if (!isObj(listeners)) return out;
  for (const [name, l] of Object.entries(listeners)) {
    const filters = isObj(l) ? l.filters : undefined;
    if (!Array.isArray(filters)) continue;
    const index = filters.findIndex((f) => isObj(f) && f.type === 'weighted' && isObj(f.rollout));
    if (index >= 0) out.set(name, { index, entry: filters[index] as Record<string, unknown> });
  }
  return out;
}

/** The listeners' validated rollouts (the first weighted filter with one). */
function configRollouts(config: Config): Map<string, WeightedConfig & { rollout: RolloutConfig }> {
  const out = new Map<string, WeightedConfig & { rollout: RolloutConfig }>();
  for (const [name, l] of Object.entries(config.listeners)) {
    const f = l.filters.find((x) => x.type === 'weighted' && (x.config as WeightedConfig).rollout !== undefined);
    if (f) out.set(name, f.config as WeightedConfig & { rollout: RolloutConfig });
  }
  return out;
}

/**
 * The split with `role` at `percent`: the other roles keep their ratios to one
 * another (each weight × (100 − percent), the role Σothers × percent), reduced
 * by their common divisor.
 */
export function weightsAt(base: Readonly<Record<string, number>>, role: string, percent: number): Record<string, number> {
  const others = Object.entries(base).filter(([r]) => r !== role);
  const sum = others.reduce((s, [, w]) => s + w, 0);
  if (sum === 0) return { ...Object.fromEntries(others), [role]: 1 };
  const out: Record<string, number> = {};
  for (const [r, w] of others) out[r] = w * (100 - percent);
  out[role] = sum * percent;
  const g = Object.values(out).reduce((a, b) => gcd(a, b), 0) || 1;
  for (const r of Object.keys(out)) out[r] = out[r]! / g;
  return out;
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

function sameWeights(a: unknown, b: Readonly<Record<string, number>>): boolean {
  if (!isObj(a)) return false;
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  for (const k of keys) if ((Object.hasOwn(a, k) ? a[k] : 0) !== (Object.hasOwn(b, k) ? b[k] : 0)) return false;
  return true;
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function sortedJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(sortedJson).join(',')}]`;
  if (isObj(v)) return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${sortedJson(v[k])}`).join(',')}}`;
  return JSON.stringify(v) ?? 'null';
}

/**
 * Guarded rollouts: each `weighted` filter's `rollout` moves its role through its
 * steps, one generation per step (source "rollout"), and judges each step on the
 * requests of that step only: fewer than minRequests is no data (it waits, never
 * passes); an error ratio over maxErrorRatio or a p99 over maxLatencyP99 fails it
 * (as soon as it shows), which sends the role back to 0 or holds it.
 *
 * A rollout lives in memory, keyed by listener. A config whose rollout key and
 * weights are as before (the weights as written, or those of any step) does not
 * touch it: its weights are replaced by the step's (`overlay`) and the step's
 * figures carry on across the new generation. A changed key or split starts it
 * anew. A restart starts it anew too, at its first step or at `startStep`.
 */
export class RolloutController {
  readonly #host: RolloutHost;
  readonly #rollouts = new Map<string, Rollout>();
  #stopped = false;

  constructor(host: RolloutHost) {
    this.#host = host;
  }

  /** True when `config` has a rollout (its generation must tally its outcomes). */
  wants(config: Config): boolean {
    return configRollouts(config).size > 0;
  }

  /** `raw` with the weights of the rollouts it does not touch replaced by their current step's. */
  overlay(raw: RawConfig): RawConfig {
    if (this.#rollouts.size === 0) return raw;
    const found = rawRollouts(raw.value);
    let value = raw.value as Record<string, unknown>;
    for (const [listener, { index, entry }] of found) {
      const r = this.#rollouts.get(listener);
      if (!r || sortedJson(entry.rollout) !== r.key || !this.#untouched(r, entry.weights)) continue;
      value = withFilter(value, listener, index, { ...entry, weights: this.#weights(r) });
    }
    return value === raw.value ? raw : { ...raw, value };
  }

  /** Weights as written or as any step set them. */
  #untouched(r: Rollout, weights: unknown): boolean {
    if (sameWeights(weights, r.base)) return true;
    return [0, 100, ...r.spec.steps].some((p) => sameWeights(weights, weightsAt(r.base, r.spec.role, p)));
  }

  #weights(r: Rollout): Record<string, number> {
    return r.index < 0 && r.state !== 'rolled-back' && r.state !== 'done' ? { ...r.base } : weightsAt(r.base, r.spec.role, r.step);
  }

  /** After each swap: follows the rollouts of `gen` (kept, moved a step by `note`, new, or gone). */
  afterSwap(gen: Generation, note: RolloutNote | null): void {
    const found = configRollouts(gen.config);
    const raws = rawRollouts(gen.raw.value);
    for (const [listener, r] of this.#rollouts) {
      if (!found.has(listener)) this.#drop(r);
    }
    for (const [listener, weighted] of found) {
      const key = sortedJson(raws.get(listener)?.entry.rollout);
      const r = this.#rollouts.get(listener);
      const tallies = talliesOf(gen, weighted.rollout.role, listener);
      if (r && r.key === key && note?.listener === listener) {
        r.index = note.index;
        r.step = note.step;
        r.state = note.state;
        r.tallies = tallies;
        r.generation = gen.number;
        r.stepStartedAt = Date.now();
        r.moving = false;
        this.#host.metrics.rolloutStep.set({ listener, role: r.spec.role }, r.step);
        if (r.state === 'running') this.#watch(r);
      } else if (r && r.key === key && sameWeights(weighted.weights, this.#weights(r))) {
        r.tallies.push(...tallies);
      } else {
        if (r) this.#drop(r);
        this.#begin(listener, key, weighted, gen);
      }
    }
  }

  #begin(listener: string, key: string, weighted: WeightedConfig & { rollout: RolloutConfig }, gen: Generation): void {
    const spec = weighted.rollout;
    const base = { ...weighted.weights };
    const sum = Object.values(base).reduce((a, b) => a + b, 0);
    const share = sum ? Math.round(((base[spec.role] ?? 0) / sum) * 100) : 0;
    const r: Rollout = {
      listener, spec, key, base, index: -1, step: share, state: 'running', reason: '', tallies: [],
      stepStartedAt: Date.now(), judged: null, generation: gen.number, timer: null, moving: false,
    };
    this.#rollouts.set(listener, r);
    this.#host.metrics.rolloutStep.set({ listener, role: spec.role }, share);
    const first = spec.startStep === undefined ? 0 : spec.steps.indexOf(spec.startStep);
    this.#host.log(`rollout ${listener}: ${spec.role} from ${share} % through ${spec.steps.join(', ')} %, ${spec.intervalMs} ms a step`);
    // Not inside the apply that brought it: the first step is a generation of its own, queued after.
    setImmediate(() => void this.#move(r, first, spec.steps[first]!, 'running', 'step'));
  }

  #drop(r: Rollout): void {
    this.#stopTimer(r);
    this.#rollouts.delete(r.listener);
    this.#host.metrics.rolloutStep.remove({ listener: r.listener, role: r.spec.role });
  }

  #stopTimer(r: Rollout): void {
    if (r.timer !== null) clearInterval(r.timer);
    r.timer = null;
  }

  /** Polls the step's figures: a failure as soon as it shows, a pass once the interval is over with enough requests. */
  #watch(r: Rollout): void {
    this.#stopTimer(r);
    const every = Math.max(20, Math.min(1000, r.spec.intervalMs / 10));
    r.timer = setInterval(() => this.#judge(r), every);
    r.timer.unref();
  }

  #judge(r: Rollout): void {
    if (r.moving || this.#rollouts.get(r.listener) !== r) return;
    const spec = r.spec;
    const f = figuresOf(r.tallies, spec.maxLatencyP99Ms !== undefined);
    const enough = f.requests >= spec.minRequests;
    if (enough) {
      const lat = spec.maxLatencyP99Ms !== undefined && f.latencyP99Ms !== null && f.latencyP99Ms > spec.maxLatencyP99Ms;
      if (f.errorRatio > spec.maxErrorRatio || lat) {
        r.judged = f;
        const reason = lat ? 'rollout-latency' : 'rollout-error-ratio';
        const why = lat ? `p99 ${f.latencyP99Ms!.toFixed(1)} ms over ${spec.maxLatencyP99Ms} ms` : `error ratio ${f.errorRatio.toFixed(3)} over ${spec.maxErrorRatio} (${f.errors} of ${f.requests})`;
        r.reason = `step ${r.step} %: ${why}`;
        this.#stopTimer(r);
        this.#host.log(`rollout ${r.listener}: ${spec.role} failed at ${r.step} %: ${why}; ${spec.onFailure === 'rollback' ? 'back to 0 %' : 'paused'}`);
        if (spec.onFailure === 'pause') r.state = 'paused';
        else {
          this.#host.metrics.rollbacks.inc({ reason });
          void this.#move(r, r.index, 0, 'rolled-back', reason);
        }
        return;
      }
    }
    if (Date.now() < r.stepStartedAt + spec.intervalMs) return;
    if (!enough) {
      r.state = 'waiting-for-data';
      return;
    }
    r.judged = f;
    r.state = 'running';
    if (r.index + 1 < spec.steps.length) {
      void this.#move(r, r.index + 1, spec.steps[r.index + 1]!, 'running', 'step');
    } else {
      this.#stopTimer(r);
      r.state = 'done';
      this.#host.log(`rollout ${r.listener}: ${spec.role} done at ${r.step} %`);
    }
  }

  /** A generation with `role` at `step` %; on failure to apply, the rollout pauses where it was. */
  async #move(r: Rollout, index: number, step: number, state: RolloutState, reason: string): Promise<boolean> {
    if (this.#stopped || this.#rollouts.get(r.listener) !== r) return false;
    this.#stopTimer(r);
    r.moving = true;
    const weights = weightsAt(r.base, r.spec.role, step);
    const note: RolloutNote = { reason, listener: r.listener, role: r.spec.role, step, index, state, ...(r.judged ? { figures: r.judged } : {}) };
    const result = await this.#host.applyRollout(() => {
      const cur = this.#host.current;
      if (!cur || this.#rollouts.get(r.listener) !== r) return undefined;
      const at = rawRollouts(cur.raw.value).get(r.listener);
      if (!at) return undefined;
      return { ...cur.raw, value: withFilter(cur.raw.value as Record<string, unknown>, r.listener, at.index, { ...at.entry, weights }) };
    }, note);
    if (this.#rollouts.get(r.listener) !== r) return false;
    r.moving = false;
    if (result?.ok) return true;
    r.state = 'paused';
    r.reason = `the step to ${step} % was not applied: ${result?.error ?? 'the config changed under it'}`;
    this.#host.log(`rollout ${r.listener}: ${r.reason}; paused`);
    return false;
  }

  /** pause | resume | promote | abort one listener's rollout; the error says why not. */
  async act(listener: string, action: RolloutAction): Promise<{ ok: true } | { ok: false; status: number; error: string }> {
    const r = this.#rollouts.get(listener);
    if (!r) return { ok: false, status: 404, error: `listener "${listener}" has no rollout` };
    if (r.moving) return { ok: false, status: 409, error: 'a step is being applied; try again' };
    const refuse = (error: string) => ({ ok: false as const, status: 409, error });
    switch (action) {
      case 'pause':
        if (r.state !== 'running' && r.state !== 'waiting-for-data') return refuse(`the rollout is ${r.state}`);
        this.#stopTimer(r);
        r.state = 'paused';
        r.reason = 'paused by the operator';
        return { ok: true };
      case 'resume': {
        if (r.state !== 'paused') return refuse(`the rollout is ${r.state}, not paused`);
        // The step again, as a new generation: its figures start afresh.
        const index = Math.max(0, r.index);
        r.reason = '';
        return (await this.#move(r, index, r.spec.steps[index]!, 'running', 'step')) ? { ok: true } : refuse(r.reason);
      }
      case 'promote':
        if (r.state === 'done' && r.step === 100) return refuse('the rollout is done');
        r.reason = 'promoted by the operator';
        return (await this.#move(r, r.spec.steps.length - 1, 100, 'done', 'promote')) ? { ok: true } : refuse(r.reason);
      case 'abort':
        if (r.state === 'rolled-back') return refuse('the rollout is rolled back already');
        r.reason = 'aborted by the operator';
        this.#host.metrics.rollbacks.inc({ reason: 'rollout-aborted' });
        return (await this.#move(r, r.index, 0, 'rolled-back', 'rollout-aborted')) ? { ok: true } : refuse(r.reason);
    }
  }

  /** GET /rollouts. */
  list(): Array<Record<string, unknown>> {
    return [...this.#rollouts.values()].map((r) => {
      const f = figuresOf(r.tallies);
      const due = r.state === 'running' && !r.moving && r.index >= 0 ? new Date(r.stepStartedAt + r.spec.intervalMs).toISOString() : null;
      return {
        listener: r.listener, role: r.spec.role, state: r.state, step: r.step, stepIndex: r.index, steps: r.spec.steps,
        generation: r.generation, ...f, judged: r.judged, reason: r.reason,
        stepStartedAt: new Date(r.stepStartedAt).toISOString(), nextStepAt: due,
      };
    });
  }

  stop(): void {
    this.#stopped = true;
    for (const r of this.#rollouts.values()) this.#stopTimer(r);
  }
}

/** `value` with listeners.<listener>.filters[index] replaced (copies along the path only). */
function withFilter(value: Record<string, unknown>, listener: string, index: number, filter: Record<string, unknown>): Record<string, unknown> {
  const listeners = value.listeners as Record<string, Record<string, unknown>>;
  const l = listeners[listener]!;
  const filters = (l.filters as unknown[]).map((f, i) => (i === index ? filter : f));
  return { ...value, listeners: { ...listeners, [listener]: { ...l, filters } } };
}

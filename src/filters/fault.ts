import type { FilterDescriptor, HttpExchange } from './api.js';

export interface FaultConfig {
  abort: { percent: number; status: number } | null;
  delay: { percent: number; ms: number } | null;
  role: string | null;
}

/**
 * `fault` (http): Envoy's fault injection. Aborts a percentage of requests with a
 * status, delays a percentage by a duration, optionally only for requests routed to
 * one role (to test how clients cope with a failing canary). Put it after the
 * routing filters when it names a role: it sees the role chosen so far.
 */
export const fault: FilterDescriptor<FaultConfig, HttpExchange> = {
  type: 'fault',
  scope: 'http',
  validate(raw, ctx) {
    ctx.allowKeys(raw, ['abort', 'delay', 'role']);
    const config: FaultConfig = { abort: null, delay: null, role: null };
    // fault reports every wrong (or missing) percentage, status and duration as a value error.
    const percent = { required: true, default: 0, min: 0, max: 100, code: 'SY_ERR_CONFIG_VALUE', message: 'must be a percentage from 0 to 100' } as const;
    const a = ctx.obj(raw.abort, ['abort'], ['percent', 'status'], { message: 'must be a mapping' });
    if (a) {
      const status = ctx.int(a.status, ['abort', 'status'], {
        required: true, default: 0, min: 200, max: 599, code: 'SY_ERR_CONFIG_VALUE', message: 'must be an HTTP status from 200 to 599',
      });
      config.abort = { percent: ctx.number(a.percent, ['abort', 'percent'], percent), status };
    }
    const d = ctx.obj(raw.delay, ['delay'], ['percent', 'duration'], { message: 'must be a mapping' });
    if (d) {
      const ms = ctx.duration(d.duration, ['delay', 'duration'], {
        required: true, default: 0, code: 'SY_ERR_CONFIG_VALUE', message: 'must be a duration such as 250ms or 2s',
      });
      config.delay = { percent: ctx.number(d.percent, ['delay', 'percent'], percent), ms };
    }
    if (!config.abort && !config.delay) ctx.report('SY_ERR_CONFIG_REQUIRED', [], 'a fault filter needs abort, delay, or both');
    if (raw.role !== undefined) {
      if (typeof raw.role !== 'string' || !ctx.roles.includes(raw.role)) {
        ctx.report('SY_ERR_ROLE_NOT_IN_VSET', ['role'], `role ${JSON.stringify(raw.role)} is not in the listener's target vset (${ctx.roles.join(', ')})`);
      } else config.role = raw.role;
    }
    return config;
  },
  create(config, ctx) {
    const only = config.role === null ? -1 : ctx.roleIndex(config.role);
    const abort = config.abort;
    const delay = config.delay;
    const abortBody = abort ? `switchyard: fault injected (${abort.status})\n` : '';
    // hot path
    return function fault(ex: HttpExchange): boolean | Promise<boolean> {
      if (only >= 0 && ex.role !== only) return true;
      if (abort !== null && Math.random() * 100 < abort.percent) {
        ex.reply(abort.status, abortBody, { 'x-switchyard-fault': 'abort' });
        return false;
      }
      if (delay !== null && Math.random() * 100 < delay.percent) {
        return new Promise((resolve) => setTimeout(resolve, delay.ms, true));
      }
      return true;
    };
  },
};

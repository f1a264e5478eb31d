import { unknownKeyMessage } from '../config/checker.js';
import { parseDuration } from '../config/parse.js';
import type { Exchange, FilterDescriptor } from './api.js';

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
export const fault: FilterDescriptor<FaultConfig> = {
  type: 'fault',
  scope: 'http',
  validate(raw, ctx) {
    ctx.allowKeys(raw, ['abort', 'delay', 'role']);
    const config: FaultConfig = { abort: null, delay: null, role: null };
    const percent = (v: unknown, at: (string | number)[]): number => {
      if (typeof v !== 'number' || !(v >= 0 && v <= 100)) {
        ctx.report('SY_ERR_CONFIG_VALUE', at, 'must be a percentage from 0 to 100');
        return 0;
      }
      return v;
    };
    const obj = (v: unknown, key: string, allowed: string[]): Record<string, unknown> | null => {
      if (v === undefined) return null;
      if (typeof v !== 'object' || v === null || Array.isArray(v)) {
        ctx.report('SY_ERR_CONFIG_TYPE', [key], 'must be a mapping');
        return null;
      }
      for (const k of Object.keys(v)) if (!allowed.includes(k)) ctx.report('SY_ERR_CONFIG_UNKNOWN_KEY', [key, k], unknownKeyMessage(k, allowed));
      return v as Record<string, unknown>;
    };
    const a = obj(raw.abort, 'abort', ['percent', 'status']);
    if (a) {
      const status = a.status;
      if (typeof status !== 'number' || !Number.isInteger(status) || status < 200 || status > 599) {
        ctx.report('SY_ERR_CONFIG_VALUE', ['abort', 'status'], 'must be an HTTP status from 200 to 599');
      }
      config.abort = { percent: percent(a.percent, ['abort', 'percent']), status: Number(status) };
    }
    const d = obj(raw.delay, 'delay', ['percent', 'duration']);
    if (d) {
      const ms = typeof d.duration === 'string' ? parseDuration(d.duration) : undefined;
      if (ms === undefined) ctx.report('SY_ERR_CONFIG_VALUE', ['delay', 'duration'], 'must be a duration such as 250ms or 2s');
      config.delay = { percent: percent(d.percent, ['delay', 'percent']), ms: ms ?? 0 };
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
    return function fault(ex: Exchange): boolean | Promise<boolean> {
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

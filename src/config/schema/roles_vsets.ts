/**
 * `roles` (each version of a service, with its channels and their endpoints) and
 * `vsets` (a service made of roles, Kumori's version sets), with the rule that
 * every role is also a vset of its own name.
 */
import { isObj, REQUIRED, type Checker } from '../checker.js';
import type { Path } from '../load.js';
import { NAME_RE, parseHostPort } from '../parse.js';
import type { Slicer } from '../slicer.js';
import { table, tableCopy, tableOf } from '../../table.js';
import type { ChannelConfig, HostPort, RoleConfig, UpstreamProtocol, UpstreamTlsConfig, VsetConfig } from '../types.js';
import { checkHealthCheck, checkOutlier } from './policies.js';

/** `roles.<name>`: meta and channels (at least one), each with endpoints and optional health policies. */
export async function checkRoles(c: Checker, value: unknown, slicer: Slicer): Promise<Record<string, RoleConfig>> {
  const roles = table<RoleConfig>();
  for (const [name, raw] of c.named(value, ['roles'])) {
    if (slicer.due) await slicer.yield();
    const path = ['roles', name];
    const o = c.obj(raw, path, ['meta', 'channels'], REQUIRED);
    if (!o) continue;
    const meta = c.stringMap(o.meta, [...path, 'meta']);
    const channels = table<ChannelConfig>();
    const chans = c.named(o.channels, [...path, 'channels']);
    if (o.channels === undefined || (isObj(o.channels) && Object.keys(o.channels).length === 0)) {
      c.report('SY_ERR_CONFIG_REQUIRED', [...path, 'channels'], 'a role needs at least one channel');
    }
    for (const [ch, chRaw] of chans) {
      const cp = [...path, 'channels', ch];
      const co = c.obj(chRaw, cp, ['endpoints', 'protocol', 'healthCheck', 'outlierDetection', 'tls'], REQUIRED);
      if (!co) continue;
      const channel: ChannelConfig = {
        endpoints: checkEndpoints(c, co.endpoints, [...cp, 'endpoints']),
        protocol: c.oneOf<UpstreamProtocol>(co.protocol, [...cp, 'protocol'], ['http1', 'http2'], { default: 'http1' }),
      };
      if (co.healthCheck !== undefined) channel.healthCheck = checkHealthCheck(c, co.healthCheck, [...cp, 'healthCheck']);
      if (co.outlierDetection !== undefined) channel.outlierDetection = checkOutlier(c, co.outlierDetection, [...cp, 'outlierDetection']);
      if (co.tls !== undefined) channel.tls = checkUpstreamTls(c, co.tls, [...cp, 'tls']);
      channels[ch] = channel;
    }
    roles[name] = { meta, channels };
  }
  return roles;
}

const SERVER_NAME_RE = /^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$/;

/** A channel's `tls`: file paths (read later, by net/tls_material.ts), cert and key together, a host name for SNI. */
function checkUpstreamTls(c: Checker, value: unknown, path: Path): UpstreamTlsConfig {
  const out: UpstreamTlsConfig = {};
  const o = c.obj(value, path, ['serverName', 'ca', 'cert', 'key']);
  if (!o) return out;
  for (const k of ['ca', 'cert', 'key'] as const) {
    const s = c.str(o[k], [...path, k]);
    if (s === undefined) continue;
    if (s.trim() === '') c.report('SY_ERR_CONFIG_VALUE', [...path, k], 'must be a file path');
    else out[k] = s;
  }
  if ((out.cert === undefined) !== (out.key === undefined)) {
    c.report('SY_ERR_CONFIG_REQUIRED', [...path, out.cert === undefined ? 'cert' : 'key'], 'a client certificate needs both cert and key');
  }
  const name = c.str(o.serverName, [...path, 'serverName']);
  if (name !== undefined) {
    if (SERVER_NAME_RE.test(name)) out.serverName = name;
    else c.report('SY_ERR_CONFIG_VALUE', [...path, 'serverName'], `"${name}" is not a host name`);
  }
  return out;
}

/** A channel's `endpoints`: a non-empty list of `host:port` (a name or an address, and a port other than 0). */
function checkEndpoints(c: Checker, value: unknown, path: Path): HostPort[] {
  const list = c.list(value, path, { required: true, nonEmpty: true, message: 'must be a non-empty list of "host:port"' });
  if (!list) return [];
  const out: HostPort[] = [];
  list.forEach((e, i) => {
    const s = c.str(e, [...path, i], REQUIRED);
    if (s === undefined) return;
    const hp = parseHostPort(s);
    if (!hp || !hp.host || hp.port === undefined || hp.port === 0) {
      c.report('SY_ERR_CONFIG_VALUE', [...path, i], `"${s}" is not a host:port endpoint`);
    } else out.push({ host: hp.host, port: hp.port });
  });
  return out;
}

/**
 * `vsets.<name>`: channels, and roles each mapping every vset channel to one of
 * theirs (identity by default) with meta on top of the role's. Then every role not
 * shadowed becomes the vset of its own name (Kumori's default vset, `implicit`).
 */
export async function checkVsets(c: Checker, value: unknown, roles: Record<string, RoleConfig>, slicer: Slicer): Promise<Record<string, VsetConfig>> {
  const vsets = table<VsetConfig>();
  for (const [name, raw] of c.named(value, ['vsets'])) {
    if (slicer.due) await slicer.yield();
    const path = ['vsets', name];
    if (roles[name]) {
      c.report('SY_ERR_VSET_SHADOWS_ROLE', path, `"${name}" is a role, and every role is already a vset of its own name; give the vset another name`, true);
      continue;
    }
    const o = c.obj(raw, path, ['channels', 'roles'], REQUIRED);
    if (!o) continue;
    const channels: string[] = [];
    c.list(o.channels, [...path, 'channels'], { required: true, nonEmpty: true, message: 'must be a non-empty list of channel names' })?.forEach((ch, i) => {
      if (typeof ch !== 'string' || !NAME_RE.test(ch)) c.report('SY_ERR_CONFIG_NAME', [...path, 'channels', i], `channel name ${JSON.stringify(ch)} must match [A-Za-z0-9_-]+`);
      else if (ch === '__proto__') c.report('SY_ERR_CONFIG_NAME', [...path, 'channels', i], 'the name "__proto__" is reserved');
      else if (channels.includes(ch)) c.report('SY_ERR_CONFIG_VALUE', [...path, 'channels', i], `channel "${ch}" is listed twice`);
      else channels.push(ch);
    });
    const members = table<VsetConfig['roles'][string]>();
    const entries = c.named(o.roles, [...path, 'roles']);
    if (entries.length === 0 && !(o.roles !== undefined && !isObj(o.roles))) {
      c.report('SY_ERR_CONFIG_REQUIRED', [...path, 'roles'], 'a vset needs at least one role');
    }
    for (const [roleName, entryRaw] of entries) {
      const rp = [...path, 'roles', roleName];
      const role = roles[roleName];
      if (!role) {
        c.report('SY_ERR_UNKNOWN_ROLE', rp, `role "${roleName}" is not declared under roles`, true);
        continue;
      }
      // `cart-v1:` (null) and `cart-v1: {}` both mean the identity map.
      const entry = entryRaw === null || entryRaw === undefined ? {} : c.obj(entryRaw, rp, ['map', 'meta']);
      if (!entry) continue;
      const map = table<string>();
      const given = c.stringMap(entry.map, [...rp, 'map']);
      for (const vc of Object.keys(given)) {
        if (!channels.includes(vc)) c.report('SY_ERR_UNKNOWN_CHANNEL', [...rp, 'map', vc], `"${vc}" is not a channel of vset ${name} (${channels.join(', ')})`, true);
      }
      for (const vc of channels) {
        const rc = given[vc] ?? vc;
        if (!role.channels[rc]) {
          c.report('SY_ERR_CHANNEL_UNMAPPED', given[vc] ? [...rp, 'map', vc] : rp,
            `vset channel "${vc}" maps to "${rc}", which is not a channel of role ${roleName} (${Object.keys(role.channels).join(', ')})`);
        }
        map[vc] = rc;
      }
      members[roleName] = { map, meta: tableCopy(role.meta, c.stringMap(entry.meta, [...rp, 'meta'])) };
    }
    vsets[name] = { channels, roles: members, implicit: false };
  }
  // Every role is also a vset of its own name (Kumori's default vset).
  for (const [name, role] of Object.entries(roles)) {
    if (slicer.due) await slicer.yield();
    if (vsets[name]) continue;
    const channels = Object.keys(role.channels);
    vsets[name] = { channels, roles: tableOf([[name, { map: tableOf(channels.map((ch) => [ch, ch])), meta: role.meta }]]), implicit: true };
  }
  return vsets;
}

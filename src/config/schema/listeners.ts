/**
 * `listeners.<name>`: one per client channel of the app. Its address (unique
 * among listeners and the admin API), protocol, target vset and channel, filters,
 * timeouts and the per-listener limits.
 */
import { isIP } from 'node:net';
import { REQUIRED, type Checker } from '../checker.js';
import { DEFAULT_BUFFER_BODY_BYTES, DEFAULT_MAX_HEADER_SIZE, DEFAULT_MAX_HEADERS_COUNT, DEFAULT_MIN_UPLOAD_RATE, MAX_HEADERS_COUNT, DEFAULT_UDP_IDLE_MS, DEFAULT_MAX_CONCURRENT_STREAMS } from '../defaults.js';
import type { Path } from '../load.js';
import { formatHostPort, isWildcard, parseHostPort } from '../parse.js';
import type { TypeLookup } from '../plugin_api.js';
import type { Slicer } from '../slicer.js';
import { table } from '../../table.js';
import type { AdminConfig, ComponentConfig, HostPort, ListenerConfig, ListenerTlsConfig, MinUploadRate, Protocol, RetryConfig, VsetConfig } from '../types.js';
import { checkFilters } from './filters.js';
import { checkMinUploadRate, checkRetries, checkTimeouts } from './policies.js';
import { MAX_CONNECTIONS } from './sidecar.js';

const LISTENER_KEYS = ['address', 'protocol', 'target', 'filters', 'timeouts', 'maxHeaderSize', 'maxHeadersCount', 'retries', 'maxConnections', 'minUploadRate', 'bufferBodyBytes', 'tls', 'http2'];

/** What the listeners refer to, checked before them. */
export interface ListenerRefs {
  vsets: Record<string, VsetConfig>;
  components: Record<string, ComponentConfig>;
  admin: AdminConfig;
  types: TypeLookup;
}

/** Every listener, normalized (defaults filled in); one without a valid target is left out (its issues are reported). */
export async function checkListeners(c: Checker, value: unknown, refs: ListenerRefs, slicer: Slicer): Promise<Record<string, ListenerConfig>> {
  const out = table<ListenerConfig>();
  const byAddress = new AddressBook({ ...refs.admin.address, owner: 'the admin API' });
  const udpAddresses = new AddressBook(null);
  for (const [name, raw] of c.named(value, ['listeners'])) {
    if (slicer.due) await slicer.yield();
    const path = ['listeners', name];
    const o = c.obj(raw, path, LISTENER_KEYS, REQUIRED);
    if (!o) continue;
    const protocol = c.oneOf<Protocol>(o.protocol, [...path, 'protocol'], ['http', 'tcp', 'udp'], { default: 'http' });
    // UDP ports are an address space of their own: a udp listener may share a tcp one's ip:port.
    const address = listenerAddress(c, o.address, [...path, 'address'], protocol, protocol === 'udp' ? udpAddresses : byAddress, name);
    const target = checkTarget(c, o.target, [...path, 'target'], refs.vsets);
    const timeouts = checkTimeouts(c, o.timeouts, [...path, 'timeouts']);
    if (protocol === 'udp' && (o.timeouts as { idle?: unknown } | undefined)?.idle === undefined) timeouts.idleMs = DEFAULT_UDP_IDLE_MS;
    if (protocol === 'udp' && o.tls !== undefined) c.report('SY_ERR_CONFIG_VALUE', [...path, 'tls'], 'a udp listener has no TLS (DTLS is not supported)');
    const maxHeaderSize = c.int(o.maxHeaderSize, [...path, 'maxHeaderSize'], {
      default: DEFAULT_MAX_HEADER_SIZE, min: 1024, max: 1 << 20, code: 'SY_ERR_CONFIG_VALUE', message: 'must be an integer number of bytes from 1024 to 1048576',
    });
    const maxHeadersCount = c.int(o.maxHeadersCount, [...path, 'maxHeadersCount'], {
      default: DEFAULT_MAX_HEADERS_COUNT, min: 1, max: MAX_HEADERS_COUNT, code: 'SY_ERR_CONFIG_VALUE', message: `must be an integer from 1 to ${MAX_HEADERS_COUNT}`,
    });
    if (o.maxHeadersCount !== undefined && protocol !== 'http') c.report('SY_ERR_CONFIG_VALUE', [...path, 'maxHeadersCount'], 'maxHeadersCount is for http listeners');
    let retries: RetryConfig | undefined;
    if (o.retries !== undefined) {
      if (protocol !== 'http') c.report('SY_ERR_CONFIG_VALUE', [...path, 'retries'], `a ${protocol} listener cannot retry (a connect failure already moves to the next endpoint)`);
      else retries = checkRetries(c, o.retries, [...path, 'retries'], timeouts.upstreamMs);
    }
    const maxConnections = o.maxConnections === undefined ? undefined : c.int(o.maxConnections, [...path, 'maxConnections'], { default: 1, min: 1, max: MAX_CONNECTIONS });
    let minUploadRate: MinUploadRate = { ...DEFAULT_MIN_UPLOAD_RATE };
    let bufferBodyBytes = DEFAULT_BUFFER_BODY_BYTES;
    for (const k of ['minUploadRate', 'bufferBodyBytes'] as const) {
      if (o[k] !== undefined && protocol !== 'http') c.report('SY_ERR_CONFIG_VALUE', [...path, k], `${k} is for http listeners (a ${protocol} listener has timeouts.idle)`);
    }
    if (protocol === 'http') {
      if (o.minUploadRate !== undefined) minUploadRate = checkMinUploadRate(c, o.minUploadRate, [...path, 'minUploadRate']);
      bufferBodyBytes = c.int(o.bufferBodyBytes, [...path, 'bufferBodyBytes'], { default: DEFAULT_BUFFER_BODY_BYTES, min: 0, max: 16 * 1024 * 1024 });
    }
    const filters = target
      ? checkFilters(c, o.filters, [...path, 'filters'], { listener: name, protocol, vset: refs.vsets[target.vset]!, components: refs.components, types: refs.types })
      : [];
    const tls = o.tls === undefined ? undefined : checkListenerTls(c, o.tls, [...path, 'tls']);
    const http2 = checkHttp2(c, o.http2, [...path, 'http2'], protocol);
    if (!target) continue;
    out[name] = {
      ...(tls ? { tls } : {}),
      ...(address ? { address } : {}), protocol, vset: target.vset, channel: target.channel, filters, timeouts, maxHeaderSize, maxHeadersCount,
      ...(retries ? { retries } : {}), ...(maxConnections !== undefined ? { maxConnections } : {}), minUploadRate, bufferBodyBytes, http2,
    };
  }
  return out;
}

/** `http2`: the limits an http listener sets on its HTTP/2 connections. */
function checkHttp2(c: Checker, value: unknown, path: Path, protocol: Protocol): ListenerConfig['http2'] {
  const out = { maxConcurrentStreams: DEFAULT_MAX_CONCURRENT_STREAMS };
  if (value === undefined) return out;
  if (protocol !== 'http') c.report('SY_ERR_CONFIG_VALUE', path, 'http2 is for http listeners');
  const o = c.obj(value, path, ['maxConcurrentStreams']);
  if (!o) return out;
  out.maxConcurrentStreams = c.int(o.maxConcurrentStreams, [...path, 'maxConcurrentStreams'], {
    default: DEFAULT_MAX_CONCURRENT_STREAMS, min: 1, max: 2 ** 31 - 1, code: 'SY_ERR_CONFIG_VALUE', message: 'must be an integer from 1 to 2147483647',
  });
  return out;
}

/** `tls`: the certificate and key to terminate TLS with (both required), and optionally the CA client certificates must chain to. */
function checkListenerTls(c: Checker, value: unknown, path: Path): ListenerTlsConfig | undefined {
  const o = c.obj(value, path, ['cert', 'key', 'clientCa']);
  if (!o) return undefined;
  const file = (k: 'cert' | 'key' | 'clientCa', required: boolean): string | undefined => {
    const s = c.str(o[k], [...path, k], required ? { required: true, message: 'is required: the PEM file of the listener\'s ' + (k === 'cert' ? 'certificate' : 'private key') } : undefined);
    if (s !== undefined && s.trim() === '') {
      c.report('SY_ERR_CONFIG_VALUE', [...path, k], 'must be a file path');
      return undefined;
    }
    return s;
  };
  const cert = file('cert', true);
  const key = file('key', true);
  const clientCa = file('clientCa', false);
  if (cert === undefined || key === undefined) return undefined;
  return { cert, key, ...(clientCa !== undefined ? { clientCa } : {}) };
}

/** An address taken while validating listeners, and who took it. */
interface Bound { host: string; port: number; owner: string }

/**
 * The addresses taken so far, by port: a clash check is one lookup, not a scan of
 * every listener before it (quadratic in a config of many listeners).
 */
class AddressBook {
  readonly #byPort = new Map<number, Bound[]>();

  constructor(first: Bound | null) {
    if (first !== null) this.add(first);
  }

  add(b: Bound): void {
    const list = this.#byPort.get(b.port);
    if (list) list.push(b);
    else this.#byPort.set(b.port, [b]);
  }

  /** The first taken address this one clashes with: the same host and port, or a wildcard host (0.0.0.0, ::) on either side. */
  clash(host: string, port: number): Bound | undefined {
    return this.#byPort.get(port)?.find((b) => b.host === host || isWildcard(b.host) || isWildcard(host));
  }
}

/** `address`: ip:port, or an ip (http: port 80), or ":port"; absent for http means the next free 127.0.0.x. */
function listenerAddress(c: Checker, value: unknown, path: Path, protocol: Protocol, byAddress: AddressBook, name: string): HostPort | undefined {
  if (value === undefined) {
    if (protocol !== 'http') c.report('SY_ERR_CONFIG_REQUIRED', path, `a ${protocol} listener needs a port: "127.0.0.x:port", or ":port" for the next free 127.0.0.x`);
    return undefined;
  }
  const s = c.str(value, path, REQUIRED);
  if (s === undefined) return undefined;
  const hp = parseHostPort(s, protocol === 'http' ? 80 : undefined);
  if (!hp || (hp.host !== '' && !isIP(hp.host))) {
    c.report('SY_ERR_CONFIG_VALUE', path, `"${s}" is not an address: use ip:port (e.g. 127.0.0.2:80)${protocol !== 'http' ? '' : ', or an ip for port 80'}`);
    return undefined;
  }
  if (hp.port === undefined) {
    c.report('SY_ERR_CONFIG_REQUIRED', path, `a tcp listener needs a port ("${s}:PORT")`);
    return undefined;
  }
  const addr = { host: hp.host, port: hp.port };
  if (hp.host !== '' && hp.port !== 0) {
    // A wildcard host (0.0.0.0, ::) holds its port on every address, so it clashes
    // with any listener (or the admin API) on that port: caught here, not at bind time.
    const other = byAddress.clash(hp.host, hp.port);
    if (other) c.report('SY_ERR_ADDRESS_IN_USE', path, `${formatHostPort(addr)} is already used by ${other.owner}${other.host === hp.host ? '' : ` (on ${other.host}:${other.port})`}`);
    else byAddress.add({ host: hp.host, port: hp.port, owner: `listener ${name}` });
  }
  return addr;
}

/** `target`: `<vset>.<channel>`, or `<vset>` when it has one channel. */
function checkTarget(c: Checker, value: unknown, path: Path, vsets: Record<string, VsetConfig>): { vset: string; channel: string } | undefined {
  const s = c.str(value, path, REQUIRED);
  if (s === undefined) return undefined;
  const m = /^([A-Za-z0-9_-]+)(?:\.([A-Za-z0-9_-]+))?$/.exec(s);
  if (!m) {
    c.report('SY_ERR_CONFIG_VALUE', path, `"${s}" is not <vset>.<channel> or <vset>`);
    return undefined;
  }
  const vs = vsets[m[1]!];
  if (!vs) {
    c.report('SY_ERR_UNKNOWN_VSET', path, `no vset or role named "${m[1]}"`);
    return undefined;
  }
  let channel = m[2];
  if (channel === undefined) {
    if (vs.channels.length !== 1) {
      c.report('SY_ERR_UNKNOWN_CHANNEL', path, `vset ${m[1]} has channels ${vs.channels.join(', ')}: name one (${m[1]}.${vs.channels[0]})`);
      return undefined;
    }
    channel = vs.channels[0]!;
  } else if (!vs.channels.includes(channel)) {
    c.report('SY_ERR_UNKNOWN_CHANNEL', path, `vset ${m[1]} has no channel "${channel}" (it has ${vs.channels.join(', ')})`);
    return undefined;
  }
  if (Object.keys(vs.roles).length === 0) return undefined; // already reported on the vset
  return { vset: m[1]!, channel };
}

/**
 * The config's small value syntaxes: names, durations and addresses. Pure
 * functions, no reporting: the checks (checker.ts) and the schemas
 * (schema/) say what is wrong and where.
 */
import { isIP } from 'node:net';
import type { HostPort } from './types.js';

/** Names of roles, vsets, channels, listeners and components (DESIGN). */
export const NAME_RE = /^[A-Za-z0-9_-]+$/;

/** The longest duration a Node timer can wait (about 596 h). */
export const MAX_DURATION_MS = 2 ** 31 - 1;

/** Parses `250ms`, `30s`, `5m`, `1h` (also `1.5s`) into milliseconds; undefined when malformed or over MAX_DURATION_MS. */
export function parseDuration(s: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(s.trim());
  if (!m) return undefined;
  const n = Number(m[1]);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
  const ms = Math.round(n * unit);
  // Node timers take at most 2^31-1 ms; a longer one fires after 1 ms instead.
  return ms <= MAX_DURATION_MS ? ms : undefined;
}

/**
 * Parses `host:port`, `[v6]:port` (a host name, an IPv4 or IPv6 address, or empty
 * for ":port"); `defaultPort` allows a bare host. Undefined when malformed.
 */
export function parseHostPort(s: string, defaultPort?: number): { host: string; port: number | undefined } | undefined {
  let host: string;
  let portText: string | undefined;
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(s);
  if (v6) {
    host = v6[1]!;
    portText = v6[2];
  } else {
    const i = s.lastIndexOf(':');
    if (i < 0) host = s;
    else {
      host = s.slice(0, i);
      portText = s.slice(i + 1);
    }
  }
  if (portText !== undefined && !/^\d+$/.test(portText)) return undefined;
  const port = portText === undefined ? defaultPort : Number(portText);
  if (port !== undefined && port > 65535) return undefined;
  if (host !== '' && !isIP(host) && !/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(host)) return undefined;
  return { host, port };
}

/**
 * `host:port` as addresses are written (and parseHostPort reads them): an IPv6
 * host in brackets (`[::1]:8080`, RFC 3986 §3.2.2), so the port is not read as
 * part of the address. Also the authority of an `http://` URL.
 */
export function formatHostPort(hp: Readonly<HostPort>): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

/** A host that only this machine can reach: `localhost`, `::1` or 127.0.0.0/8. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
}

/** A host that binds every address of the machine (0.0.0.0, ::). */
export function isWildcard(host: string): boolean {
  return host === '0.0.0.0' || host === '::';
}

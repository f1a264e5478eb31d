import { SwitchyardError } from '../errors.js';
import type { HostPort, ListenerConfig } from '../config/types.js';

/**
 * Resolves every listener's address. An explicit address is used as is; a listener
 * without one (or with only ":port") gets the lowest 127.0.0.x (x ≥ 2) that no other
 * listener uses, and keeps the one it had before (`previous`) while that is free.
 * Port 80 for http, the given port for tcp.
 */
export function assignAddresses(listeners: Readonly<Record<string, ListenerConfig>>,
  previous: ReadonlyMap<string, string> = new Map()): Map<string, HostPort> {
  const out = new Map<string, HostPort>();
  const taken = new Set<string>();
  for (const [name, l] of Object.entries(listeners)) {
    if (l.address && l.address.host !== '') {
      out.set(name, l.address);
      taken.add(l.address.host);
    }
  }
  const pending: [string, ListenerConfig][] = [];
  for (const [name, l] of Object.entries(listeners)) {
    if (out.has(name)) continue;
    const port = l.address?.port ?? 80;
    const prev = previous.get(name);
    if (prev && !taken.has(prev)) {
      out.set(name, { host: prev, port });
      taken.add(prev);
    } else pending.push([name, l]);
  }
  let x = 2;
  for (const [name, l] of pending) {
    while (taken.has(hostOf(x))) x++;
    if (x > 254 * 256 * 256) throw new SwitchyardError('SY_ERR_BIND', 'no free 127.0.0.0/8 address left for a listener without one');
    const host = hostOf(x);
    taken.add(host);
    out.set(name, { host, port: l.address?.port ?? 80 });
  }
  return out;
}

/** The x-th address of 127.0.0.0/8 (127.0.0.2, …, 127.0.0.254, 127.0.1.1, …), skipping .0 and .255. */
function hostOf(x: number): string {
  const perOctet = 254;
  const d = ((x - 1) % perOctet) + 1;
  const rest = Math.floor((x - 1) / perOctet);
  return `127.${Math.floor(rest / 256)}.${rest % 256}.${d}`;
}

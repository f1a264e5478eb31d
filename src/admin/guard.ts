import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import type { ControlCode } from '../errors.js';

/**
 * Why the admin API refuses a request before any route sees it, or null. It keeps web
 * pages out, with checks that browsers enforce and cannot be talked out of:
 *
 * - DNS rebinding: a page on a name the attacker controls, resolved to 127.0.0.1,
 *   is same-origin with the admin API; its requests still say that name in `Host`.
 *   So `Host` must be an IP literal, `localhost`, or a name in `admin.hosts`.
 * - Cross-site writes (a form, a no-cors fetch): browsers send `Origin` on every
 *   request other than GET/HEAD and `Sec-Fetch-Site` on all of them. A change must
 *   come from no page at all (curl, the CLI) or from the admin API's own origin.
 * - A body must say it is JSON or YAML: a form can send only urlencoded, multipart
 *   or text/plain, and a no-cors fetch no other type either.
 *
 * The API sends no CORS headers, so no other origin can read its answers.
 */
export function refusal(req: IncomingMessage, names: ReadonlySet<string>, readsBody: boolean):
  { status: number; code: ControlCode; message: string } | null {
  const host = req.headers.host;
  if (host !== undefined && !hostAllowed(host, names)) {
    return { status: 403, code: 'SY_ERR_API_FORBIDDEN', message: `Host "${host}" does not name this admin API (use its address, localhost, or a name listed in admin.hosts)` };
  }
  if (req.method === 'GET' || req.method === 'HEAD') return null;
  const site = req.headers['sec-fetch-site'];
  if (site !== undefined && site !== 'same-origin' && site !== 'none') {
    return { status: 403, code: 'SY_ERR_API_FORBIDDEN', message: `a ${site} request from a web page may not change anything` };
  }
  const origin = req.headers.origin;
  if (origin !== undefined && (host === undefined || origin !== `http://${host}`)) {
    return { status: 403, code: 'SY_ERR_API_FORBIDDEN', message: `a request from the web page origin ${origin} may not change anything` };
  }
  const type = req.headers['content-type'];
  if (type !== undefined ? !isConfigType(type) : readsBody) {
    return { status: 415, code: 'SY_ERR_API_CONTENT_TYPE', message: `the body must be JSON or YAML (content-type application/json or application/yaml), not ${type ?? 'untyped'}` };
  }
  return null;
}

function hostAllowed(host: string, names: ReadonlySet<string>): boolean {
  // [v6]:port, v4:port, name:port, or any of them without the port.
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]+))(?::\d{1,5})?$/.exec(host);
  if (!m) return false;
  if (m[1] !== undefined) return isIP(m[1]) === 6;
  const name = m[2]!.toLowerCase().replace(/\.$/, '');
  return isIP(name) === 4 || name === 'localhost' || names.has(name);
}

const CONFIG_TYPES = new Set(['application/json', 'application/yaml', 'application/x-yaml', 'text/yaml', 'text/x-yaml']);

function isConfigType(type: string): boolean {
  const essence = type.split(';')[0]!.trim().toLowerCase();
  return CONFIG_TYPES.has(essence) || /^application\/[a-z0-9.+-]+\+json$/.test(essence);
}

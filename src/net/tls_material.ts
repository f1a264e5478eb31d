import { createHash, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';
import { createSecureContext, type SecureContext } from 'node:tls';
import type { Path } from '../config/load.js';
import type { Config, UpstreamTlsConfig } from '../config/types.js';

/**
 * TLS files, read and checked with every config that names them (so a rotated
 * certificate is taken at the next reload, and a bad one rejects that config
 * whole, naming its path), and made once into what connections use: a secure
 * context. Key material never enters the config itself (GET /config shows paths
 * and a digest): it is kept beside it, by config object.
 */

/** What a role channel's TLS connections are made with. */
export interface UpstreamTls {
  /** sha256 of the files' content and the server name: pools with the same digest are interchangeable. */
  readonly digest: string;
  readonly context: SecureContext;
  /** SNI and the name checked against the certificate; undefined: the endpoint's host. */
  readonly serverName: string | undefined;
  /** The client certificate's end of validity (ms since the epoch), when there is one. */
  readonly clientCertNotAfter: number | null;
}

const materials = new WeakMap<UpstreamTlsConfig, UpstreamTls>();

/** The material loaded for a checked channel `tls` (loadTlsMaterial ran on its config). */
export function upstreamTls(config: UpstreamTlsConfig): UpstreamTls {
  const m = materials.get(config);
  if (m === undefined) throw new Error('tls_material: the channel\'s TLS files were not loaded with its config');
  return m;
}

export interface TlsIssue { path: Path; message: string }

/**
 * Reads every TLS file the config names (relative paths against `baseDir`) and
 * builds the secure contexts; the issues name the key of the file at fault.
 */
export async function loadTlsMaterial(config: Config, baseDir: string): Promise<TlsIssue[]> {
  const issues: TlsIssue[] = [];
  for (const [role, rc] of Object.entries(config.roles)) {
    for (const [channel, cc] of Object.entries(rc.channels)) {
      const tls = cc.tls;
      if (tls === undefined) continue;
      const path: Path = ['roles', role, 'channels', channel, 'tls'];
      const files: Partial<Record<'ca' | 'cert' | 'key', Buffer>> = {};
      let readable = true;
      for (const k of ['ca', 'cert', 'key'] as const) {
        const file = tls[k];
        if (file === undefined) continue;
        const full = isAbsolute(file) ? file : resolve(baseDir, file);
        try {
          files[k] = await readFile(full);
        } catch (err) {
          issues.push({ path: [...path, k], message: `cannot read ${full}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` });
          readable = false;
        }
      }
      if (!readable) continue;
      const material = build(tls, files, path, issues);
      if (material !== null) {
        tls.digest = material.digest;
        materials.set(tls, material);
      }
    }
  }
  return issues;
}

function build(tls: UpstreamTlsConfig, files: Partial<Record<'ca' | 'cert' | 'key', Buffer>>, path: Path, issues: TlsIssue[]): UpstreamTls | null {
  let notAfter: number | null = null;
  for (const k of ['ca', 'cert'] as const) {
    const pem = files[k];
    if (pem === undefined) continue;
    try {
      const first = new X509Certificate(pem);
      if (k === 'cert') notAfter = Date.parse(first.validTo);
    } catch (err) {
      issues.push({ path: [...path, k], message: `${tls[k]} is not a PEM certificate: ${(err as Error).message}` });
      return null;
    }
  }
  let context: SecureContext;
  try {
    context = createSecureContext({ ca: files.ca, cert: files.cert, key: files.key });
  } catch (err) {
    const message = (err as Error).message;
    // OpenSSL's words: "key values mismatch", "bad decrypt", "no start line".
    const at = /key/i.test(message) && files.key !== undefined ? 'key' : files.cert !== undefined ? 'cert' : 'ca';
    issues.push({ path: [...path, at], message: `${tls[at]}: ${message}${/mismatch/.test(message) ? ' (the key does not belong to the certificate)' : ''}` });
    return null;
  }
  const hash = createHash('sha256');
  for (const k of ['ca', 'cert', 'key'] as const) hash.update(files[k] ?? '').update('\0');
  hash.update(tls.serverName ?? '');
  return { digest: hash.digest('hex').slice(0, 16), context, serverName: tls.serverName, clientCertNotAfter: notAfter };
}

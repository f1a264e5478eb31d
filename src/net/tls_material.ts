import { createHash, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';
import { createSecureContext, type SecureContext } from 'node:tls';
import type { Path } from '../config/load.js';
import type { Config, ListenerTlsConfig, UpstreamTlsConfig } from '../config/types.js';

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

/** What a listener terminates TLS with. */
export interface ListenerTls {
  readonly digest: string;
  readonly context: SecureContext;
  /** Client certificates are asked for, and one that does not chain to clientCa is refused. */
  readonly verifyClients: boolean;
  /** The listener certificate's end of validity (ms since the epoch). */
  readonly certNotAfter: number | null;
  /** The files' content, for the tls.Server that terminates it (it builds its own context from them). */
  readonly pem: { readonly cert: Buffer; readonly key: Buffer; readonly ca?: Buffer };
}

const materials = new WeakMap<UpstreamTlsConfig, UpstreamTls>();
const listenerMaterials = new WeakMap<ListenerTlsConfig, ListenerTls>();

/** The material loaded for a checked channel `tls` (loadTlsMaterial ran on its config). */
export function upstreamTls(config: UpstreamTlsConfig): UpstreamTls {
  const m = materials.get(config);
  if (m === undefined) throw new Error('tls_material: the channel\'s TLS files were not loaded with its config');
  return m;
}

/** The material loaded for a checked listener `tls`. */
export function listenerTls(config: ListenerTlsConfig): ListenerTls {
  const m = listenerMaterials.get(config);
  if (m === undefined) throw new Error('tls_material: the listener\'s TLS files were not loaded with its config');
  return m;
}

export interface TlsIssue { path: Path; message: string }

/** The certificates a checked config presents, with their end of validity in Unix seconds. */
export function certificateExpiries(config: Config): { listener: string; role: string; channel: string; notAfter: number }[] {
  const out: { listener: string; role: string; channel: string; notAfter: number }[] = [];
  for (const [name, lc] of Object.entries(config.listeners)) {
    const m = lc.tls === undefined ? undefined : listenerMaterials.get(lc.tls);
    if (m?.certNotAfter != null) out.push({ listener: name, role: '', channel: '', notAfter: m.certNotAfter / 1000 });
  }
  for (const [role, rc] of Object.entries(config.roles)) {
    for (const [channel, cc] of Object.entries(rc.channels)) {
      const m = cc.tls === undefined ? undefined : materials.get(cc.tls);
      if (m?.clientCertNotAfter != null) out.push({ listener: '', role, channel, notAfter: m.clientCertNotAfter / 1000 });
    }
  }
  return out;
}

/** Every TLS file the config names, resolved against `baseDir` (what a watcher of them watches). */
export function tlsFiles(config: Config, baseDir: string): string[] {
  const out = new Set<string>();
  const add = (f: string | undefined): void => { if (f !== undefined) out.add(isAbsolute(f) ? f : resolve(baseDir, f)); };
  for (const rc of Object.values(config.roles)) for (const cc of Object.values(rc.channels)) { add(cc.tls?.ca); add(cc.tls?.cert); add(cc.tls?.key); }
  for (const lc of Object.values(config.listeners)) { add(lc.tls?.cert); add(lc.tls?.key); add(lc.tls?.clientCa); }
  return [...out].sort();
}

type FileKey = 'ca' | 'cert' | 'key' | 'clientCa';
type Files = Partial<Record<FileKey, Buffer>>;

/** Reads the files `tls` names; null (with issues) when one cannot be read. */
async function readFiles(tls: Partial<Record<FileKey, string>>, keys: readonly FileKey[], baseDir: string, path: Path, issues: TlsIssue[]): Promise<Files | null> {
  const files: Files = {};
  let readable = true;
  for (const k of keys) {
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
  return readable ? files : null;
}

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
      const files = await readFiles(tls, ['ca', 'cert', 'key'], baseDir, path, issues);
      const built = files === null ? null : build(tls, files, path, issues);
      if (built === null) continue;
      tls.digest = digestOf(files!, tls.serverName ?? '');
      materials.set(tls, { digest: tls.digest, context: built.context, serverName: tls.serverName, clientCertNotAfter: built.notAfter });
    }
  }
  for (const [name, lc] of Object.entries(config.listeners)) {
    const tls = lc.tls;
    if (tls === undefined) continue;
    const path: Path = ['listeners', name, 'tls'];
    const files = await readFiles(tls, ['cert', 'key', 'clientCa'], baseDir, path, issues);
    const built = files === null ? null : build(tls, { cert: files.cert, key: files.key, ca: files.clientCa }, path, issues, { ca: 'clientCa' });
    if (built === null) continue;
    tls.digest = digestOf(files!, '');
    listenerMaterials.set(tls, {
      digest: tls.digest, context: built.context, verifyClients: tls.clientCa !== undefined, certNotAfter: built.notAfter,
      pem: { cert: files!.cert!, key: files!.key!, ...(files!.clientCa ? { ca: files!.clientCa } : {}) },
    });
  }
  return issues;
}

function digestOf(files: Files, more: string): string {
  const hash = createHash('sha256');
  for (const k of ['ca', 'cert', 'key', 'clientCa'] as const) hash.update(files[k] ?? '').update('\0');
  return hash.update(more).digest('hex').slice(0, 16);
}

/** The secure context of `files`, and the certificate's end of validity; null (with issues) when they do not make one. */
function build(tls: Partial<Record<FileKey, string>>, files: { ca?: Buffer; cert?: Buffer; key?: Buffer }, path: Path, issues: TlsIssue[],
  names: { ca: FileKey } = { ca: 'ca' }): { context: SecureContext; notAfter: number | null } | null {
  const keyOf = (k: 'ca' | 'cert' | 'key'): FileKey => (k === 'ca' ? names.ca : k);
  let notAfter: number | null = null;
  for (const k of ['ca', 'cert'] as const) {
    const pem = files[k];
    if (pem === undefined) continue;
    try {
      const first = new X509Certificate(pem);
      if (k === 'cert') notAfter = Date.parse(first.validTo);
    } catch (err) {
      issues.push({ path: [...path, keyOf(k)], message: `${tls[keyOf(k)]} is not a PEM certificate: ${(err as Error).message}` });
      return null;
    }
  }
  try {
    return { context: createSecureContext({ ca: files.ca, cert: files.cert, key: files.key }), notAfter };
  } catch (err) {
    const message = (err as Error).message;
    // OpenSSL's words: "key values mismatch", "bad decrypt", "no start line".
    const at = /key/i.test(message) && files.key !== undefined ? 'key' : files.cert !== undefined ? 'cert' : keyOf('ca');
    issues.push({ path: [...path, at], message: `${tls[at]}: ${message}${/mismatch/.test(message) ? ' (the key does not belong to the certificate)' : ''}` });
    return null;
  }
}

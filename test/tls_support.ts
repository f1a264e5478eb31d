import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { toolPath } from './setup/requirements.js';

/**
 * Certificates for the TLS tests, made with openssl (P-256 keys, so it is quick):
 * a CA, and leaves it signs, each a file pair. Made once per test file.
 */

const run = promisify(execFile);

export interface Pem {
  cert: string;
  key: string;
  /** File paths of the same. */
  certFile: string;
  keyFile: string;
}

export interface Pki {
  dir: string;
  ca: Pem;
  /** A certificate for `names` (DNS names, or IP addresses) signed by this CA; `days: 0` makes one already expired. */
  leaf(name: string, names: string[], o?: { days?: number; client?: boolean }): Promise<Pem>;
  close(): Promise<void>;
}

async function keyAndCsr(openssl: string, dir: string, name: string, cn: string): Promise<void> {
  await run(openssl, ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', join(dir, `${name}-key.pem`), '-out', join(dir, `${name}.csr`), '-subj', `/CN=${cn}`]);
}

async function pemOf(dir: string, name: string): Promise<Pem> {
  const certFile = join(dir, `${name}.pem`);
  const keyFile = join(dir, `${name}-key.pem`);
  return { cert: await readFile(certFile, 'utf8'), key: await readFile(keyFile, 'utf8'), certFile, keyFile };
}

/** A new CA named `cn`, in its own temp directory. */
export async function makePki(cn: string): Promise<Pki> {
  const openssl = toolPath('openssl');
  const dir = await mkdtemp(join(tmpdir(), 'switchyard-pki-'));
  await run(openssl, ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', join(dir, 'ca-key.pem'), '-out', join(dir, 'ca.pem'), '-subj', `/CN=${cn}`, '-days', '2']);
  const ca = await pemOf(dir, 'ca');
  let serial = 1;
  return {
    dir,
    ca,
    async leaf(name, names, o = {}) {
      await keyAndCsr(openssl, dir, name, names[0] ?? name);
      const san = names.map((n) => (/^[\d.]+$/.test(n) ? `IP:${n}` : `DNS:${n}`)).join(',');
      const ext = join(dir, `${name}.ext`);
      await writeFile(ext, `subjectAltName=${san}\nextendedKeyUsage=${o.client ? 'clientAuth' : 'serverAuth'}\n`);
      await run(openssl, ['x509', '-req', '-in', join(dir, `${name}.csr`), '-CA', ca.certFile, '-CAkey', ca.keyFile,
        '-set_serial', String(serial++), '-days', String(o.days ?? 2), '-extfile', ext, '-out', join(dir, `${name}.pem`)]);
      return pemOf(dir, name);
    },
    close: () => rm(dir, { recursive: true, force: true }),
  };
}

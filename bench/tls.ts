/**
 * Certificates for the TLS scenarios, made once per run with openssl: a CA, and one
 * server certificate for every bench address (127.0.77.x) that the upstream, nginx
 * and switchyard all present.
 */
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface BenchCerts { ca: string; cert: string; key: string }

export async function makeBenchCerts(dir: string): Promise<BenchCerts> {
  const ca = join(dir, 'ca.pem');
  const caKey = join(dir, 'ca-key.pem');
  const cert = join(dir, 'server.pem');
  const key = join(dir, 'server-key.pem');
  const csr = join(dir, 'server.csr');
  const ext = join(dir, 'server.ext');
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  await run('openssl', ['req', '-x509', ...ec, '-keyout', caKey, '-out', ca, '-subj', '/CN=switchyard bench CA', '-days', '2']);
  await run('openssl', ['req', ...ec, '-keyout', key, '-out', csr, '-subj', '/CN=bench.test']);
  const ips = Array.from({ length: 16 }, (_, i) => `IP:127.0.77.${i}`).join(',');
  await writeFile(ext, `subjectAltName=DNS:bench.test,${ips}\n`);
  await run('openssl', ['x509', '-req', '-in', csr, '-CA', ca, '-CAkey', caKey, '-set_serial', '1', '-days', '2', '-extfile', ext, '-out', cert]);
  return { ca, cert, key };
}

import { connect, type Socket } from 'node:net';
import type { Sidecar } from '../../src/sidecar.js';

/** A raw client connection to a sidecar's listener, and everything it has received so far. */
export async function client(sc: Sidecar, listener = 'web'): Promise<{ s: Socket; got: () => string; closed: Promise<void> }> {
  const a = sc.addresses().get(listener)!;
  const s = connect(a.port, a.host);
  await new Promise<void>((r) => s.once('connect', () => r()));
  let text = '';
  s.setEncoding('latin1');
  s.on('data', (d: string) => { text += d; });
  s.on('error', () => {});
  const closed = new Promise<void>((r) => s.once('close', () => r()));
  return { s, got: () => text, closed };
}

/** The statuses of the answers in a connection's bytes, in order. */
export const statuses = (text: string): number[] => [...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));

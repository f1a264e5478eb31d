import { connect } from 'node:net';
import type { Sidecar } from '../../src/sidecar.js';
import { once } from '../helpers.js';

/** One HTTP/1.0 request over a plain connection to tcp listener `listener`: what came back ('' when refused). */
export async function tcpRoundTrip(sc: Sidecar, listener: string): Promise<string> {
  const addr = sc.addresses().get(listener)!;
  const s = connect(addr.port, addr.host);
  s.on('error', () => {});
  s.end('GET / HTTP/1.0\r\n\r\n');
  let data = '';
  s.on('data', (c) => (data += c));
  await once(s, 'close', 5000);
  return data;
}

import { isIP, type NetConnectOpts } from 'node:net';
import { connect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import type { UpstreamTls } from '../net/tls_material.js';

/**
 * TLS to one endpoint, as its pool makes connections: the channel's material, SNI
 * (a host name, never an address), the ALPN protocol the pool speaks, the last
 * session the endpoint gave us (the next connection resumes it: no full
 * handshake), and failures logged with their cause at most once per 10 s.
 */
export class EndpointTls {
  readonly #tls: UpstreamTls;
  readonly #alpn: readonly string[];
  readonly #name: string;
  readonly #log: (line: string) => void;
  #session: Buffer | undefined;
  #loggedAt = -Infinity;

  constructor(tls: UpstreamTls, alpn: readonly string[], name: string, log: (line: string) => void) {
    this.#tls = tls;
    this.#alpn = alpn;
    this.#name = name;
    this.#log = log;
  }

  /** A TLS connection to `options.host`; the certificate is checked against serverName, or the host. */
  connect(options: NetConnectOpts & { host: string }): TLSSocket {
    const tls = this.#tls;
    const socket = connect({
      ...options,
      secureContext: tls.context,
      servername: tls.serverName ?? (isIP(options.host) === 0 ? options.host : undefined),
      ALPNProtocols: [...this.#alpn],
      session: this.#session,
    } as ConnectionOptions);
    socket.on('session', (session: Buffer) => { this.#session = session; });
    return socket;
  }

  /** A failed handshake: not resumed, and logged (an expired certificate, an unknown CA, a name mismatch). */
  failed(err: Error): void {
    this.#session = undefined;
    const now = performance.now();
    if (now - this.#loggedAt < 10_000) return;
    this.#loggedAt = now;
    this.#log(`endpoint ${this.#name}: TLS failed: ${err.message} (${(err as NodeJS.ErrnoException).code ?? 'no code'})`);
  }
}

import { connect, type Socket } from 'node:net';
import type { RuntimeCode } from '../errors.js';
import type { EndpointSet } from './endpoints.js';

export interface TcpForwardOptions {
  idleMs: number;
  connectMs: number;
  /** Called once when the pair is gone: bytes each way, and a code when it failed. */
  done(endpoint: string | undefined, code: RuntimeCode | undefined, bytesIn: number, bytesOut: number): void;
}

/**
 * An L4 byte pipe between a client connection and one endpoint of the role. A
 * refused connect moves to the next endpoint (once each). `pipe` carries the
 * backpressure; both sockets are half-open capable, so an end from one side is
 * passed on as an end (half-close) while the other direction keeps flowing.
 */
export function forwardTcp(client: Socket, set: EndpointSet, opts: TcpForwardOptions): void {
  let index = set.start();
  let tries = 0;
  let upstream: Socket | null = null;
  let finished = false;
  const finish = (code: RuntimeCode | undefined): void => {
    if (finished) return;
    finished = true;
    opts.done(set.endpoints[index]?.address, code, client.bytesRead, client.bytesWritten);
  };
  client.on('error', () => client.destroy());
  client.on('close', () => {
    upstream?.destroy();
    finish(undefined);
  });
  if (opts.idleMs > 0) {
    // Any byte either way touches the client socket, so its idle timer covers both directions.
    client.setTimeout(opts.idleMs, () => client.destroy());
  }

  const attempt = (): void => {
    tries++;
    const e = set.endpoints[index]!;
    const up = connect({ host: e.host, port: e.port, allowHalfOpen: true, noDelay: true });
    let connected = false;
    upstream = up;
    up.setTimeout(opts.connectMs, () => {
      if (!connected) up.destroy(Object.assign(new Error('connect timeout'), { code: 'ETIMEDOUT' }));
    });
    up.once('connect', () => {
      connected = true;
      up.setTimeout(0);
      if (client.destroyed) {
        up.destroy();
        return;
      }
      client.pipe(up);
      up.pipe(client);
    });
    up.on('error', () => {
      if (!connected && !client.destroyed && tries < set.endpoints.length) {
        index = (index + 1) % set.endpoints.length;
        attempt();
        return;
      }
      finish(connected ? 'SY_ERR_UPSTREAM_RESET' : 'SY_ERR_UPSTREAM_CONNECT');
      client.destroy();
    });
  };
  attempt();
}

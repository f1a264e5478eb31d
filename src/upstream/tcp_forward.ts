import { connect, type Socket } from 'node:net';
import type { RuntimeCode } from '../errors.js';
import type { EndpointPicker } from './picker.js';
import type { UpstreamReason } from './http_forward.js';

export interface TcpForwardOptions {
  idleMs: number;
  connectMs: number;
  /** One connect failed (once more with "ejected" when that ejected its endpoint). */
  tryFailed(role: number, reason: UpstreamReason): void;
  /** The connection moves on to another endpoint after a connect failure of `role`'s. */
  retried(role: number): void;
  /** Called once when the pair is gone: bytes each way, and a code when it failed. */
  done(endpoint: string | undefined, code: RuntimeCode | undefined, bytesIn: number, bytesOut: number): void;
}

/**
 * An L4 byte pipe between a client connection and one endpoint of the role. A
 * refused connect moves to the picker's next endpoint (once each, then another
 * role when the connection may fall back). `pipe` carries the
 * backpressure; both sockets are half-open capable, so an end from one side is
 * passed on as an end (half-close) while the other direction keeps flowing.
 */
export function forwardTcp(client: Socket, picker: EndpointPicker, opts: TcpForwardOptions): void {
  let upstream: Socket | null = null;
  let finished = false;
  const finish = (code: RuntimeCode | undefined): void => {
    if (finished) return;
    finished = true;
    opts.done(picker.endpoint.address, code, client.bytesRead, client.bytesWritten);
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
    const e = picker.endpoint;
    const up = connect({ host: e.host, port: e.port, allowHalfOpen: true, noDelay: true });
    let connected = false;
    upstream = up;
    up.setTimeout(opts.connectMs, () => {
      if (!connected) up.destroy(Object.assign(new Error('connect timeout'), { code: 'ETIMEDOUT' }));
    });
    up.once('connect', () => {
      connected = true;
      up.setTimeout(0);
      picker.set.succeeded(e);
      if (client.destroyed) {
        up.destroy();
        return;
      }
      client.pipe(up);
      up.pipe(client);
    });
    up.on('error', () => {
      if (!connected) {
        opts.tryFailed(picker.role, 'connect-failure');
        if (picker.set.failed(e)) opts.tryFailed(picker.role, 'ejected');
        const failedRole = picker.role;
        if (!client.destroyed && picker.next()) {
          opts.retried(failedRole);
          attempt();
          return;
        }
      } else opts.tryFailed(picker.role, 'reset');
      finish(connected ? 'SY_ERR_UPSTREAM_RESET' : 'SY_ERR_UPSTREAM_CONNECT');
      client.destroy();
    });
  };
  attempt();
}

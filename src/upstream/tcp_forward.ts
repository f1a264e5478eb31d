import { connect, type Socket } from 'node:net';
import { classifyTransportError, UpstreamTimeout, type UpstreamFailure } from '../errors.js';
import { Flow, type TcpClient } from '../net/byte_pipe.js';
import { EndpointPicker } from './picker.js';
import { outcomeOf, retried, tryFailed, type OutcomeSink, type RoleChoice, type UpstreamRoute } from './route.js';

/**
 * An L4 byte pipe between a client connection and one endpoint of the role. A
 * refused connect moves to the picker's next endpoint (once each, then another
 * role when the connection may fall back). Both sockets are half-open capable,
 * so an end from one side is passed on as an end while the other direction
 * keeps flowing. The outcome is reported once, when the pair is gone.
 */
export function forwardTcp(route: UpstreamRoute, client: TcpClient, choice: RoleChoice, sink: OutcomeSink): void {
  const socket = client.socket;
  const picker = new EndpointPicker(route, choice.role, choice.fallback);
  let upstream: Socket | null = null;
  let finished = false;
  let tries = 1;
  const finish = (failure: UpstreamFailure | null): void => {
    if (finished) return;
    finished = true;
    sink.upstreamEnded(outcomeOf(picker, failure, tries, 0));
  };
  // The client socket's errors are its unit's (TcpUnit destroys it); its close ends the pipe.
  socket.on('close', () => {
    upstream?.destroy();
    finish(null);
  });
  if (route.idleMs > 0) {
    // Any byte either way touches the client socket, so its idle timer covers both directions.
    socket.setTimeout(route.idleMs, () => socket.destroy());
  }

  const attempt = (): void => {
    const e = picker.endpoint;
    const back = new Flow();
    const up = connect({ host: e.host, port: e.port, allowHalfOpen: true, noDelay: true, onread: back.onread });
    back.from(up);
    let connected = false;
    upstream = up;
    up.setTimeout(route.connectMs, () => {
      if (!connected) up.destroy(new UpstreamTimeout('connect', 'connect timeout'));
    });
    up.once('connect', () => {
      connected = true;
      up.setTimeout(0);
      picker.set.succeeded(e);
      if (socket.destroyed) {
        up.destroy();
        return;
      }
      if (client.flow) client.flow.to(up);
      else socket.pipe(up);
      back.to(socket);
    });
    up.on('error', (err) => {
      const failure = classifyTransportError(err, { sent: connected });
      if (failure === 'descriptors' || failure === 'refused') {
        // No socket for the upstream (or none as switchyard asked): switchyard's failure, not the endpoint's.
        finish(failure);
        socket.destroy();
        return;
      }
      if (failure === 'connect') {
        tryFailed(route, picker, 'connect-failure');
        const failedRole = picker.role;
        if (!socket.destroyed && picker.next()) {
          retried(route, failedRole, 'connect-failure');
          tries++;
          attempt();
          return;
        }
        finish('connect');
      } else {
        tryFailed(route, picker, 'reset', false);
        finish('reset');
      }
      socket.destroy();
    });
  };
  attempt();
}

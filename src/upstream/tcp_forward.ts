import { connect, isIP, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
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
    const tls = e.tls;
    // TLS to the endpoint: its socket is read as a stream (a TLS socket takes no `onread` buffer).
    const back = tls === null ? new Flow() : null;
    const up: Socket = back !== null
      ? connect({ host: e.host, port: e.port, allowHalfOpen: true, noDelay: true, onread: back.onread })
      : tlsConnect({ host: e.host, port: e.port, secureContext: tls!.context,
        servername: tls!.serverName ?? (isIP(e.host) === 0 ? e.host : undefined) });
    back?.from(up);
    if (back === null) up.setNoDelay(true);
    let connected = false;
    upstream = up;
    up.setTimeout(route.connectMs, () => {
      if (!connected) up.destroy(new UpstreamTimeout('connect', 'connect timeout'));
    });
    up.once(tls === null ? 'connect' : 'secureConnect', () => {
      connected = true;
      up.setTimeout(0);
      picker.set.succeeded(e);
      if (socket.destroyed) {
        up.destroy();
        return;
      }
      if (client.flow) client.flow.to(up);
      else socket.pipe(up);
      if (back !== null) back.to(socket);
      else up.pipe(socket);
    });
    up.on('error', (err) => {
      const failure = classifyTransportError(err, { sent: connected });
      if (failure === 'descriptors' || failure === 'refused') {
        // No socket for the upstream (or none as switchyard asked): switchyard's failure, not the endpoint's.
        finish(failure);
        socket.destroy();
        return;
      }
      if (failure === 'connect' || (failure === 'tls' && !connected)) {
        const reason = failure === 'tls' ? 'tls' : 'connect-failure';
        if (failure === 'tls') e.pool.tlsFailed(err);
        tryFailed(route, picker, reason);
        const failedRole = picker.role;
        if (!socket.destroyed && picker.next()) {
          retried(route, failedRole, reason);
          tries++;
          attempt();
          return;
        }
        finish(failure);
      } else {
        tryFailed(route, picker, 'reset', false);
        finish('reset');
      }
      socket.destroy();
    });
  };
  attempt();
}

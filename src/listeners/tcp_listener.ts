import type { Socket } from 'node:net';
import type { Exchange } from '../filters/api.js';
import { reportFilterFailure, runChain } from '../filters/chain.js';
import type { ListenerPlan } from '../reload/generation.js';
import { acceptTcp, forwardTcp } from '../upstream/tcp_forward.js';
import { defaultRole, EndpointPicker } from '../upstream/picker.js';
import { logTcp } from '../observe/access_record.js';
import { TcpTally } from '../metrics.js';

/**
 * The entry of the TCP data path: one client connection. The filters run once,
 * for the connection; the chosen role's endpoints get the byte pipe. The
 * connection holds its generation until it closes (or drainTimeout ends it).
 * Returns the socket that carries the connection from now on (acceptTcp may
 * move the handle to a new one), whose 'close' ends it.
 */
export function handleTcp(plan: ListenerPlan, accepted: Socket): Socket {
  const client = acceptTcp(accepted);
  const socket = client.socket;
  const gen = plan.generation;
  const start = performance.now();
  plan.connectionOpened(socket);
  // Bytes between client and upstream: counted once the connection is forwarded.
  let tally: TcpTally | null = null;
  gen.hold(socket);
  socket.on('error', () => socket.destroy());
  let refused = false;
  let forwarded = false;
  const ex: Exchange = {
    role: -1,
    fallback: false,
    fallbackFrom: -1,
    listener: plan.name,
    protocol: 'tcp',
    remoteAddress: socket.remoteAddress ?? '',
    req: null,
    res: null,
    socket,
    requestHeaderEdits: null,
    responseHeaderEdits: null,
    reply() {
      refused = true;
      socket.destroy();
    },
  };
  socket.once('close', () => {
    if (tally !== null) {
      plan.openTcp.delete(tally);
      tally.flush();
    }
    gen.release(socket);
    if (!forwarded) {
      // Counted like every connection, under no role: refused, or it failed before a role took it.
      plan.metrics[plan.roles.length]!.tcpConnection(refused ? 'refused' : 'error');
      // Never reached an upstream: refused by a filter, a filter failed, or the client left first.
      const log = gen.accessLog;
      if (log !== null) {
        logTcp(log, { plan, socket, role: '', result: refused ? 'refused' : 'error', durationMs: performance.now() - start, endpoint: '', error: '', bytesIn: socket.bytesRead, bytesOut: socket.bytesWritten });
      }
    }
  });
  const go = (): void => {
    if (socket.destroyed) return;
    if (ex.role < 0) {
      ex.role = defaultRole(plan);
      ex.fallback = true;
    }
    forwarded = true;
    tally = new TcpTally(socket, plan.bytesIn, plan.bytesOut);
    plan.openTcp.add(tally);
    const picker = new EndpointPicker(plan, ex.role, ex.fallback);
    forwardTcp(client, picker, {
      idleMs: plan.config.timeouts.idleMs,
      connectMs: plan.config.timeouts.connectMs,
      tryFailed: (role, reason) => plan.metrics[role]!.upstreamError(reason),
      retried: (role) => plan.metrics[role]!.retried('connect-failure'),
      done: (endpoint, code, bytesIn, bytesOut) => {
        ex.role = picker.role;
        const result = code === undefined ? 'ok' : 'error';
        // Out of descriptors, no upstream was tried: the failure is switchyard's, under no role.
        const own = code === 'SY_ERR_NO_FILE_DESCRIPTORS';
        plan.metrics[own ? plan.roles.length : picker.role]!.tcpConnection(result);
        const log = gen.accessLog;
        if (log !== null) {
          logTcp(log, { plan, socket, role: own ? '' : plan.roles[ex.role]!.name, result, durationMs: performance.now() - start, endpoint: own ? '' : endpoint ?? '', error: code ?? '', bytesIn, bytesOut });
        }
      },
    });
  };
  const fail = (err: unknown): void => {
    reportFilterFailure(plan.name, err);
    socket.destroy();
  };
  try {
    const v = runChain(plan.filters, ex, plan.roles.length);
    if (v === true) go();
    else if (v !== false) v.then((ok) => (ok ? go() : undefined)).catch(fail);
  } catch (err) {
    fail(err);
  }
  return socket;
}

import type { Dispatch } from './socket_pool.js';
import { handleClientError, handleConnect } from './http_edge.js';
import { handleRequest } from './http_unit.js';
import { handleTcp } from './tcp_unit.js';
import { handleUpgrade } from './upgrade_unit.js';

/**
 * The data path's entry points, as a listening socket hands them traffic. The
 * runtime gives these to its SocketPool, which knows no protocol itself:
 *
 *   connection (tcp plan) → TcpUnit
 *   request               → HttpUnit          (or an edge answer: a removed listener's 503)
 *   upgrade               → UpgradeUnit       (WebSocket; any other Upgrade as a plain request)
 *   connect, clientError  → edge answers (405; the parser's 400/408/413/431)
 *
 * Each unit then runs the one lifecycle of listeners/unit.ts. (A udp listener's
 * datagrams do not pass here: its socket, listeners/udp_socket.ts, makes a UdpUnit
 * for each new flow itself.)
 */
export const dataPath: Dispatch = {
  tcp: handleTcp,
  request: handleRequest,
  upgrade: handleUpgrade,
  connect: handleConnect,
  clientError: handleClientError,
};

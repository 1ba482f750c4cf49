import type { Server as HttpServer } from 'node:http';
import type { AddressInfo, Server, Socket } from 'node:net';
import { ApsaraMqDeviceError, LOCAL_ERROR_CATALOG } from '../errors.js';

/**
 * How many connections may wait to be accepted (the kernel caps it at `net.core.somaxconn`). Node's default, 511,
 * drops the SYNs of a burst beyond it, and each dropped one waits a second for its retry: 10,000 devices coming back
 * after a restart, or a connect-rate benchmark, stalled on it.
 */
export const LISTEN_BACKLOG = 4096;

/** Listen and resolve with the bound port; reject on `EADDRINUSE` and the like instead of emitting. */
export function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException): void => {
      if (error.code === 'EADDRINUSE' || error.code === 'EACCES') {
        const why = error.code === 'EADDRINUSE' ? 'is already in use' : 'needs privileges this process lacks';
        reject(new ApsaraMqDeviceError('AddressInUse', `Cannot listen on ${host}:${port}: the port ${why} (${error.code}). ${LOCAL_ERROR_CATALOG.AddressInUse.remedy}`, { ...LOCAL_ERROR_CATALOG.AddressInUse, cause: error }));
      } else {
        reject(error);
      }
    };
    server.once('error', onError);
    server.listen({ port, host, backlog: LISTEN_BACKLOG }, () => {
      server.off('error', onError);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/**
 * Remember every socket a server accepts, so `close()` can destroy the ones that are still open. Without this a
 * client that never sends CONNECT (or an upgraded WebSocket) would keep `server.close()` waiting forever.
 */
export function trackSockets(server: Server): Set<Socket> {
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  return sockets;
}

/** Stop listening, destroy every tracked socket, and resolve once the server has closed. Never rejects. */
export function closeServer(server: Server, sockets: Iterable<Socket> = []): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) {
      resolve();
      return;
    }
    server.close(() => resolve());
    if ('closeAllConnections' in server) (server as HttpServer).closeAllConnections();
    for (const socket of sockets) socket.destroy();
  });
}

/** The host part of a URL: IPv6 literals need brackets. */
export function urlHost(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}

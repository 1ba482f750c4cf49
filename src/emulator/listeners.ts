import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, createWebSocketStream } from 'ws';
import type { TlsOptions } from './options.js';
import { closeServer, listen, trackSockets, urlHost } from './servers.js';

/** The WebSocket path of the real service (reference §5.2). */
export const WS_PATH = '/mqtt';

/** Ports to listen on (0 = any free port, `false` = off); after listening, the ports actually bound. */
export interface BrokerPorts {
  readonly mqttPort: number;
  readonly wsPort: number | false;
  /** MQTT over TLS; `false` without TLS. */
  readonly tlsPort: number | false;
  /** MQTT over secure WebSocket; `false` without TLS. */
  readonly wssPort: number | false;
}

/** The broker's listeners, bound. */
export interface Listeners {
  readonly ports: BrokerPorts;
  readonly mqttUrl: string;
  readonly wsUrl: string | undefined;
  readonly mqttsUrl: string | undefined;
  readonly wssUrl: string | undefined;
  /** Stop listening and destroy every connection. Never rejects. */
  close(): Promise<void>;
}

/** Hands one MQTT connection (a socket, or a WebSocket's stream with its upgrade request) to the broker. */
export type ConnectionHandler = (conn: Duplex, req?: IncomingMessage) => void;

/** A server whose connections are tracked, so close() can destroy them. */
interface Tracked {
  server: NetServer;
  sockets: Set<Socket>;
}

function track(server: NetServer): Tracked {
  return { server, sockets: trackSockets(server) };
}

/**
 * MQTT over WebSocket on `http`, at {@link WS_PATH} only; any plain HTTP request gets 426. A WebSocket message may
 * be at most `maxMessageBytes` (ws would otherwise buffer up to 100 MiB of one before MQTT sees a byte). Returns
 * the close function of the WebSocket side.
 */
function serveWebSocket(http: HttpServer | HttpsServer, handle: ConnectionHandler, maxMessageBytes: number): () => Promise<void> {
  http.on('request', (_req, res) => {
    res.writeHead(426, { 'Content-Type': 'text/plain', Connection: 'close' }).end(`Upgrade to WebSocket at ${WS_PATH}\n`);
  });
  const wss = new WebSocketServer({ server: http, path: WS_PATH, maxPayload: maxMessageBytes });
  // ws re-emits the HTTP server's errors (EADDRINUSE) on itself, where nobody listens: they would be thrown
  // before listen() sees them. listen() reports them.
  wss.on('error', () => undefined);
  wss.on('connection', (ws, req) => {
    handle(createWebSocketStream(ws), req);
  });
  return async () => {
    for (const ws of wss.clients) ws.terminate();
    await new Promise<void>((resolve) => wss.close(() => resolve()));
  };
}

/** Listen on `port` unless it is `false`. */
function listenIf(server: NetServer, port: number | false, host: string): Promise<number | false> {
  return port === false ? Promise.resolve(false) : listen(server, port, host);
}

/**
 * Listen for MQTT over TCP, WebSocket, TLS and secure WebSocket (each unless off; the TLS ones need `tls`), handing
 * every connection to `handle`. `maxPacketBytes` bounds a WebSocket message (two packets' worth, as a client may
 * send more than one packet in a message). On a bind failure everything already started is closed and the error
 * rethrown.
 */
export async function startListeners(handle: ConnectionHandler, host: string, ports: BrokerPorts, tls: TlsOptions | undefined, maxPacketBytes: number): Promise<Listeners> {
  const onSocket = (socket: Socket): void => {
    // Without it Nagle's algorithm meets the client's delayed ACKs and every small PUBLISH waits ~40 ms.
    socket.setNoDelay(true);
    handle(socket);
  };
  const maxMessageBytes = 2 * maxPacketBytes;
  const tcp = track(createNetServer(onSocket));
  const http = track(createHttpServer());
  const servers = [tcp, http];
  const closers = [serveWebSocket(http.server as HttpServer, handle, maxMessageBytes)];
  let secure: { mqtts: Tracked; https: Tracked } | undefined;
  if (tls) {
    // The TLS server hands over the decrypted socket; a failed handshake never reaches aedes.
    secure = { mqtts: track(createTlsServer(tls, onSocket)), https: track(createHttpsServer(tls)) };
    servers.push(secure.mqtts, secure.https);
    closers.push(serveWebSocket(secure.https.server as HttpsServer, handle, maxMessageBytes));
  }
  const close = async (): Promise<void> => {
    await Promise.all(closers.map((closeWs) => closeWs()));
    await Promise.all(servers.map(({ server, sockets }) => closeServer(server, sockets)));
  };
  try {
    const bound: BrokerPorts = {
      mqttPort: await listen(tcp.server, ports.mqttPort, host),
      wsPort: await listenIf(http.server, ports.wsPort, host),
      tlsPort: secure ? await listenIf(secure.mqtts.server, ports.tlsPort, host) : false,
      wssPort: secure ? await listenIf(secure.https.server, ports.wssPort, host) : false,
    };
    const h = urlHost(host);
    const url = (scheme: string, port: number | false, path = ''): string | undefined =>
      port === false ? undefined : `${scheme}://${h}:${port}${path}`;
    return {
      ports: bound,
      mqttUrl: `mqtt://${h}:${bound.mqttPort}`,
      wsUrl: url('ws', bound.wsPort, WS_PATH),
      mqttsUrl: url('mqtts', bound.tlsPort),
      wssUrl: url('wss', bound.wssPort, WS_PATH),
      close,
    };
  } catch (error) {
    await close();
    throw error;
  }
}

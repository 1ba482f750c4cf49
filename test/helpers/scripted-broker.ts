import { EventEmitter } from 'node:events';
import { type Server, type Socket, createServer } from 'node:net';
import mqttPacket, { type IConnectPacket, type Packet } from 'mqtt-packet';
import { onTestFinished } from 'vitest';

/**
 * A broker a test scripts: a real TCP server on port 0 that parses what the client sends with mqtt-packet (a codec
 * independent of mqtt.js) and answers only what the script says. By default it accepts every CONNECT (CONNACK 0),
 * acknowledges QoS 1 publishes and subscriptions, answers pings and closes on DISCONNECT.
 */
export interface BrokerConnection {
  /** Which connection this is, from 1. */
  readonly n: number;
  readonly socket: Socket;
  /** Packets received after the CONNECT, in order. */
  readonly received: Packet[];
  send(packet: Packet): void;
  write(bytes: Buffer | Uint8Array): void;
  /** Resolves when the socket has closed. */
  readonly closed: Promise<void>;
}

export interface ScriptedBrokerOptions {
  /** The protocol the broker parses and writes. @default 4 */
  protocolVersion?: 4 | 5;
  /** After the CONNECT. @default CONNACK 0 */
  onConnect?(connection: BrokerConnection, connect: IConnectPacket): void;
  /** A packet after the CONNECT; return true when it was answered (or is to be ignored), else the default answers it. */
  onPacket?(connection: BrokerConnection, packet: Packet): boolean | void;
}

export interface ScriptedBroker extends EventEmitter<{ connection: [BrokerConnection]; packet: [BrokerConnection, Packet] }> {
  readonly url: string;
  readonly connections: BrokerConnection[];
  /** CONNECT packets received, in order. */
  readonly connects: IConnectPacket[];
}

/** Start a {@link ScriptedBroker}; it stops, and drops every connection, when the test finishes. */
export async function scriptedBroker(options: ScriptedBrokerOptions = {}): Promise<ScriptedBroker> {
  const protocolVersion = options.protocolVersion ?? 4;
  const sockets = new Set<Socket>();
  const connections: BrokerConnection[] = [];
  const connects: IConnectPacket[] = [];
  const events = new EventEmitter<{ connection: [BrokerConnection]; packet: [BrokerConnection, Packet] }>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => socket.destroy());
    const closed = new Promise<void>((resolve) => socket.once('close', () => {
      sockets.delete(socket);
      resolve();
    }));
    const connection: BrokerConnection = {
      n: connections.length + 1,
      socket,
      received: [],
      send: (packet) => {
        if (!socket.destroyed) socket.write(mqttPacket.generate(packet, { protocolVersion }));
      },
      write: (bytes) => {
        if (!socket.destroyed) socket.write(bytes);
      },
      closed,
    };
    connections.push(connection);
    const parser = mqttPacket.parser({ protocolVersion });
    socket.on('data', (chunk) => parser.parse(chunk));
    parser.on('error', () => socket.destroy());
    parser.on('packet', (packet: Packet) => {
      if (packet.cmd === 'connect') {
        connects.push(packet);
        events.emit('connection', connection);
        if (options.onConnect) options.onConnect(connection, packet);
        else connection.send({ cmd: 'connack', sessionPresent: false, returnCode: 0, reasonCode: 0 });
        return;
      }
      connection.received.push(packet);
      events.emit('packet', connection, packet);
      if (options.onPacket?.(connection, packet)) return;
      switch (packet.cmd) {
        case 'publish':
          if (packet.qos === 1) connection.send({ cmd: 'puback', messageId: packet.messageId ?? 0 });
          return;
        case 'subscribe':
          connection.send({ cmd: 'suback', messageId: packet.messageId ?? 0, granted: packet.subscriptions.map((s) => s.qos) });
          return;
        case 'unsubscribe':
          connection.send({ cmd: 'unsuback', messageId: packet.messageId ?? 0, granted: packet.unsubscriptions.map(() => 0) });
          return;
        case 'pingreq':
          connection.send({ cmd: 'pingresp' });
          return;
        case 'disconnect':
          socket.end();
          return;
        default:
          return;
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  onTestFinished(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const { port } = server.address() as { port: number };
  return Object.assign(events, { url: `mqtt://127.0.0.1:${port}`, connections, connects });
}

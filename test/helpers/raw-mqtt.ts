import { once } from 'node:events';
import { connect as netConnect, type Socket } from 'node:net';
import mqttPacket, { type IConnackPacket, type IConnectPacket, type IPublishPacket, type Packet } from 'mqtt-packet';
import { onTestFinished } from 'vitest';
import type { MqttCredentials } from '../../src/signer/mqtt.js';

/**
 * A hand-driven MQTT connection over a real socket: packets are built and parsed by mqtt-packet (an independent
 * codec), nothing is sent unless the test sends it, and the test decides whether the socket is read at all.
 */
export interface RawMqtt {
  readonly socket: Socket;
  /** Everything received so far, in order. */
  readonly received: Packet[];
  /** Every byte received so far. */
  bytes(): Buffer;
  /** Send one packet (encoded for this connection's protocol version). */
  send(packet: Packet): void;
  /** Send raw bytes. */
  write(bytes: Buffer | Uint8Array): void;
  /** The next packet received of that command (earlier ones of other commands are skipped). Rejects when the socket closes first. */
  next(cmd: Packet['cmd']): Promise<Packet>;
  /** Resolves when the socket has closed (whoever closed it). */
  readonly closed: Promise<void>;
  /** Stop reading the socket: the kernel's buffers fill up and the broker's writes back up. */
  stall(): void;
}

/** `mqtt://host:port` → host and port. */
export function hostPort(url: string): { host: string; port: number } {
  const u = new URL(url);
  return { host: u.hostname, port: Number(u.port) };
}

/** Open a socket to `url` (mqtt://). Closed when the test finishes. */
export async function rawSocket(url: string, protocolVersion: 3 | 4 | 5 = 4): Promise<RawMqtt> {
  const { host, port } = hostPort(url);
  const socket = netConnect(port, host);
  onTestFinished(() => {
    socket.destroy();
  });
  socket.on('error', () => undefined);
  await once(socket, 'connect');
  const parser = mqttPacket.parser({ protocolVersion });
  const received: Packet[] = [];
  const waiters: { cmd: string; resolve: (p: Packet) => void; reject: (e: Error) => void }[] = [];
  let isClosed = false;
  const closed = new Promise<void>((resolve) => {
    socket.once('close', () => {
      isClosed = true;
      for (const w of waiters.splice(0)) w.reject(new Error(`socket closed before a ${w.cmd} arrived`));
      resolve();
    });
  });
  parser.on('packet', (packet: Packet) => {
    received.push(packet);
    const i = waiters.findIndex((w) => w.cmd === packet.cmd);
    if (i >= 0) waiters.splice(i, 1)[0]?.resolve(packet);
  });
  // A parse error is one of the things a test may look at; it must not throw out of the socket.
  parser.on('error', () => undefined);
  const chunks: Buffer[] = [];
  const onData = (data: Buffer): void => {
    chunks.push(data);
    parser.parse(data);
  };
  socket.on('data', onData);
  let seen = 0;
  return {
    socket,
    received,
    bytes: () => Buffer.concat(chunks),
    send: (packet) => socket.write(mqttPacket.generate(packet, { protocolVersion })),
    write: (bytes) => socket.write(bytes),
    next: (cmd) => {
      const found = received.slice(seen).findIndex((p) => p.cmd === cmd);
      if (found >= 0) {
        const packet = received[seen + found] as Packet;
        seen += found + 1;
        return Promise.resolve(packet);
      }
      if (isClosed) return Promise.reject(new Error(`socket closed before a ${cmd} arrived`));
      return new Promise((resolve, reject) => {
        waiters.push({
          cmd,
          resolve: (p) => {
            seen = received.length;
            resolve(p);
          },
          reject,
        });
      });
    },
    closed,
    stall: () => {
      socket.off('data', onData);
      socket.pause();
    },
  };
}

/** A CONNECT packet with the given login. */
export function connectPacket(credentials: MqttCredentials, protocolVersion: 3 | 4 | 5 = 4, extra: Partial<IConnectPacket> = {}): IConnectPacket {
  return {
    cmd: 'connect',
    protocolId: protocolVersion === 3 ? 'MQIsdp' : 'MQTT',
    protocolVersion,
    clean: true,
    // What mqtt.js sends by default; 0 (none) would be capped, and counted, by the Keep Alive rule.
    keepalive: 60,
    clientId: credentials.clientId,
    username: credentials.username,
    password: Buffer.from(credentials.password),
    ...extra,
  };
}

/** Open a raw connection and log in; resolves with the connection and its CONNACK. */
export async function rawLogin(url: string, credentials: MqttCredentials, protocolVersion: 3 | 4 | 5 = 4, extra: Partial<IConnectPacket> = {}): Promise<{ raw: RawMqtt; connack: IConnackPacket }> {
  const raw = await rawSocket(url, protocolVersion);
  raw.send(connectPacket(credentials, protocolVersion, extra));
  return { raw, connack: (await raw.next('connack')) as IConnackPacket };
}

/** The PUBLISHes received so far, each acknowledged once. */
export function inbox(raw: RawMqtt): { publishes(): IPublishPacket[] } {
  const acked = new Set<Packet>();
  return {
    publishes() {
      const publishes = raw.received.filter((p): p is IPublishPacket => p.cmd === 'publish');
      for (const p of publishes) {
        if (!acked.has(p) && p.messageId !== undefined) raw.send({ cmd: 'puback', messageId: p.messageId });
        acked.add(p);
      }
      return publishes;
    },
  };
}

/** A round trip: everything the broker wrote before it has arrived once the PINGRESP has. */
export async function roundTrip(raw: RawMqtt): Promise<void> {
  raw.send({ cmd: 'pingreq' });
  await raw.next('pingresp');
}

/** Wait until `n` PUBLISHes have arrived in all. */
export async function received(raw: RawMqtt, n: number): Promise<void> {
  while (raw.received.filter((p) => p.cmd === 'publish').length < n) await raw.next('publish');
}

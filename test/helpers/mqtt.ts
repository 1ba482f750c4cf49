import { EventEmitter, once } from 'node:events';
import { type Server, type Socket, connect as netConnect, createServer } from 'node:net';
import { expect } from 'vitest';
import type { DeviceConnection } from '../../src/connector/connect.js';

/** Subscribe, publish `message` to `topic` at QoS 1, and expect it back on the same connection. */
export async function expectRoundTrip(conn: DeviceConnection, topic: string, message: string): Promise<void> {
  await conn.subscribe(topic);
  const got = once(conn, 'message');
  await conn.publish(topic, message, { qos: 1 });
  const [received, payload] = (await got) as [string, Buffer];
  expect(received).toBe(topic);
  expect(payload.toString()).toBe(message);
}

/**
 * A TCP relay in front of a broker, so a test can cut the network (both sockets destroyed, no MQTT packet) the way
 * a real network drop does, without reaching into the client. Emits `connection` for each relayed connection.
 */
export interface TcpProxy extends EventEmitter<{ connection: [] }> {
  /** `mqtt://127.0.0.1:<port>` of the proxy. */
  readonly url: string;
  /** Connections relayed right now. */
  readonly open: number;
  /** Destroy every relayed connection, both sides, like a network cut. */
  cut(): void;
  /** Stop listening and cut everything. */
  close(): Promise<void>;
}

/** Start a {@link TcpProxy} on a free port relaying to `targetUrl` (host and port of an mqtt:// URL). */
export async function startProxy(targetUrl: string): Promise<TcpProxy> {
  const target = new URL(targetUrl);
  const pairs = new Set<[Socket, Socket]>();
  const events = new EventEmitter<{ connection: [] }>();
  const server: Server = createServer((client) => {
    const upstream = netConnect(Number(target.port), target.hostname);
    const pair: [Socket, Socket] = [client, upstream];
    pairs.add(pair);
    const drop = (): void => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
    upstream.once('connect', () => events.emit('connection'));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  const cut = (): void => {
    for (const [a, b] of [...pairs]) {
      a.destroy();
      b.destroy();
    }
    pairs.clear();
  };
  return Object.assign(events, {
    url: `mqtt://127.0.0.1:${port}`,
    get open() {
      return pairs.size;
    },
    cut,
    close: async () => {
      cut();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  });
}

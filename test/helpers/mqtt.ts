import { type EventEmitter, once } from 'node:events';
import { expect } from 'vitest';
// @ts-expect-error -- a plain ESM module shared with the benchmarks (bench/lib/relay.mjs: also outages)
import { startRelay } from '../../bench/lib/relay.mjs';
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
  return (await startRelay(targetUrl)) as TcpProxy;
}

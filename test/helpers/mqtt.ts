import { once } from 'node:events';
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

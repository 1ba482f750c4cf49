/**
 * `enqueueDurable` of the device entry: a door that loads the durable outbox's module (durable.ts) on its first call,
 * so that a device that never uses a durable outbox does not load it at import.
 */
import type { PublishAccepted } from './connection-types.js';

type DurableModule = typeof import('./durable.js');

/**
 * Keep a QoS 1 or 2 message of a device in the durable outbox `store`, connected or not: through the device's open
 * connection on that store when there is one (also while its first CONNECT is under way: it sends it in its turn),
 * else straight into the store, where the device's next connection on it finds it and sends it, in order. Resolves
 * once it is on disk (fsync'd). What a device that may boot offline calls for every message (its `connectDevice`
 * fails until the broker answers), and what a gateway calls for each of its devices; with a connection open it is
 * the same as `conn.enqueue`. Its fate is reported by the connection's `delivered` and `dropped` events, and by the
 * store's `drop` event. Never append to the store directly for a device whose connection is open: the connection
 * would not know the message is there.
 *
 * @throws (rejects) ValidationError (`InvalidClientId`, `InvalidTopic`, `PayloadTooLarge`, `InvalidOption` for QoS 0
 *   or a bad id); OutboxError `OutboxFull`, `OutboxDiskFull`, `OutboxIOError`, `OutboxClosed`.
 * @example
 * const store = await openOutboxStore({ dir: '/var/lib/device/outbox' });
 * await enqueueDurable(store, 'GID_demo@@@dev-1', 'demo/telemetry', JSON.stringify(reading), { id: reading.id });
 */
export async function enqueueDurable(...args: Parameters<DurableModule['enqueueDurable']>): Promise<PublishAccepted & { seq: number }> {
  const durable = await import('./durable.js');
  return durable.enqueueDurable(...args);
}

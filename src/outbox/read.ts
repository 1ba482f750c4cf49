/**
 * Reading a device's messages in seq order (`OutboxStore.pending` once its arguments were checked): the older ones
 * from LevelDB (when the device has any there), the recent ones from the hot log, which holds higher seqs. Runs
 * inside `HotLog.read` (never while messages move between them).
 */
import type { BatchWriter } from './batch.js';
import { decodeMessage, messageRange, seqOfMessageKey, type StoredMessage } from './codec.js';
import { openError, type Level } from './level.js';
import type { ResolvedOutboxOptions } from './options.js';
import type { DeviceState, Holdings } from './state.js';
import { OutboxMessage } from './types.js';
import type { HotLog } from './wal.js';

/**
 * `OutboxStore.pending` of a device that holds messages: {@link readDevice} with the time to live judged by the
 * store's clock, a sweep asked for (`sweep`) when it met an expired message.
 * @throws OutboxError (`OutboxIOError`, …) when reading fails.
 */
export async function readPending(
  writer: BatchWriter,
  holdings: Holdings,
  options: ResolvedOutboxOptions,
  clientId: string,
  device: DeviceState,
  after: number,
  limit: number,
  corrupt: (seq: number) => void,
  sweep: () => void,
): Promise<OutboxMessage[]> {
  try {
    // Not while messages move from the hot log to LevelDB: the read would find them in neither.
    return await writer.hot.read(async () => {
      const { ttlMs } = options;
      const cutoff = ttlMs === Infinity ? -Infinity : options.clock() - ttlMs;
      const { messages, expired } = await readDevice(writer, holdings, clientId, device, { after, limit, cutoff }, corrupt);
      if (expired) sweep();
      return messages;
    });
  } catch (error) {
    throw openError(options.dir, error, 'read');
  }
}

/**
 * Up to `limit` messages of `clientId` after seq `after`. A message accepted at or before `cutoff` and not in flight
 * is not returned (`expired` says to sweep); one that fails its checksum goes to `corrupt` (to be removed and
 * reported). The device's oldest message, when read, makes its bound exact.
 */
export async function readDevice(
  writer: { readonly db: Level; readonly hot: HotLog },
  holdings: Holdings,
  clientId: string,
  device: DeviceState,
  { after, limit, cutoff }: { after: number; limit: number; cutoff: number },
  corrupt: (seq: number) => void,
): Promise<{ messages: OutboxMessage[]; expired: boolean }> {
  const hot = writer.hot;
  const out: OutboxMessage[] = [];
  const range = messageRange(clientId, after);
  let { gt } = range;
  const { lt } = range;
  let expired = false;
  let first = after === 0;
  /** A message found, in seq order: taken unless its time to live is over (then it is swept). */
  const take = (seq: number, message: StoredMessage): void => {
    if (first) {
      // The device's first message is its oldest: the bound becomes exact for free.
      device.oldestAt = message.acceptedAt;
      device.oldestSeq = seq;
      first = false;
    }
    if (message.acceptedAt <= cutoff && seq > device.inFlightHigh) expired = true;
    else out.push(new OutboxMessage({ clientId, seq, ...message, sentBefore: seq <= device.sentHigh }));
  };
  while (device.messages > hot.deviceCount(clientId) && out.length < limit) {
    // The writer's database of the moment (a recovery replaces it).
    const page = await writer.db.iterator({ gt, lt, limit: limit - out.length + 16 }).all();
    if (page.length === 0) break;
    for (const [key, value] of page) {
      gt = key;
      const seq = seqOfMessageKey(key);
      if (holdings.removed.has(seq)) continue;
      const message = decodeMessage(key, value);
      if (!message) {
        corrupt(seq);
        continue;
      }
      take(seq, message);
      holdings.remember(seq, clientId, key.length + value.length, message.acceptedAt, message.id);
      if (out.length === limit) break;
    }
  }
  for (const m of hot.device(clientId)) {
    if (out.length === limit) break;
    if (m.seq <= after || holdings.removed.has(m.seq)) continue;
    // In memory since it was written (never read back from disk): not checked again.
    take(m.seq, decodeMessage(m.key, m.value, true) as StoredMessage);
  }
  return { messages: out, expired };
}

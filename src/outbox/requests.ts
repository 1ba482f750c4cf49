/**
 * What the store's calls ask of the next batch (batch.ts) and how each waits for it, other than the per-message
 * paths: everything asked so far written (`flush`), a sweep (`expire`), in-flight marks (`markSending`), removals
 * that wait for a batch (`ack`, `reject`, `ackAll` of older messages, a corrupt record met by a read), a new try after
 * a failed write (`retryWrites`), and the shutdown (`close`). Functions over the writer and the holdings, called once
 * per call: store.ts keeps the calls, their checks, and the per-message paths (`appendChecked`, `ackOneChecked` and
 * the acks of the hot log), which queue their work inline.
 */
import type { BatchWriter } from './batch.js';
import { metaKey } from './codec.js';
import type { Holdings, PendingRemoval } from './state.js';

/** Resolves once the next batch wrote everything asked so far; rejects with its write error. */
export function nextBatch(writer: BatchWriter): Promise<void> {
  return new Promise((resolve, reject) => {
    writer.work.waiters.push({ resolve, reject });
    writer.schedule();
  });
}

/** A sweep for expired messages in the next batch: resolves once it ran. */
export function swept(writer: BatchWriter): Promise<void> {
  writer.work.sweep = true;
  return nextBatch(writer);
}

/**
 * The device's messages up to `seq` handed out for sending: in flight now, and marked durably by the next batch
 * (at once when they were marked already).
 */
export function markSent(writer: BatchWriter, holdings: Holdings, clientId: string, seq: number): Promise<void> {
  const device = holdings.device(clientId);
  device.inFlightHigh = Math.max(device.inFlightHigh, seq);
  if (seq <= device.sentHigh) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const work = writer.work;
    work.marks.set(clientId, Math.max(work.marks.get(clientId) ?? 0, seq));
    work.markWaiters.push({ resolve, reject });
    writer.schedule();
  });
}

/** One message to remove by the next batch: resolves true once removed, false if it was not there (or is going). */
export function removeLater(writer: BatchWriter, holdings: Holdings, clientId: string, seq: number, reason: PendingRemoval['reason']): Promise<boolean> {
  if (holdings.removed.has(seq)) return Promise.resolve(false);
  holdings.removed.add(seq);
  return new Promise((resolve) => {
    writer.work.removals.push({ clientId, seq, reason, resolve });
    writer.schedule();
  });
}

/**
 * Delivered messages marked removed whose removal is the next batch's to make (`later`, not empty): resolves with
 * `removed` (those taken already) plus those the batch found.
 */
export function removedLater(writer: BatchWriter, clientId: string, later: readonly number[], removed: number): Promise<number> {
  // A promise and its counter only when something waits for a batch (acks of the hot log need neither).
  let left = later.length;
  let done!: (count: number) => void;
  const all = new Promise<number>((resolve) => (done = resolve));
  const settle = (gone: boolean): void => {
    if (gone) removed += 1;
    if (--left === 0) done(removed);
  };
  for (const seq of later) writer.work.removals.push({ clientId, seq, reason: 'delivered', resolve: settle });
  writer.schedule();
  return all;
}

/** Writing failed: a batch that tries again now. Resolves true when the store writes again, false when it still cannot. */
export async function retried(writer: BatchWriter): Promise<boolean> {
  if (!writer.failure) return true;
  await new Promise<void>((resolve) => {
    writer.work.recover = true;
    // Settled either way: a refusal leaves writeFailing set, which is the answer.
    writer.work.waiters.push({ resolve, reject: () => resolve() });
    writer.schedule();
  });
  return writer.failure === undefined;
}

/**
 * The store is closed and its last flush done: no lazy write any more, the last batch's upkeep (a new segment, a
 * move) ended, then the files closed: the hot log, the clean-shutdown record (the `open` mark deleted, unless
 * writing failed), LevelDB.
 */
export async function shutDown(writer: BatchWriter): Promise<void> {
  writer.stop();
  await writer.idle();
  await writer.reopening;
  const db = writer.db;
  await writer.hot.close();
  if (!writer.failure) await db.del(metaKey('open'), { sync: true }).catch(() => undefined);
  await db.close().catch(() => undefined);
}

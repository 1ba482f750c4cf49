/**
 * The hot log's upkeep after a group commit: begin a new segment when the active one is full; move the live messages
 * of the oldest segment to LevelDB when there are too many (a long outage: LevelDB keeps each device's order and a
 * flat memory); delete dead segments once the removals that made them dead are on disk.
 */
import { encodeSeq, markKey, metaKey, seal } from './codec.js';
import { write, type Level } from './level.js';
import type { Holdings } from './state.js';
import type { HotLog, HotMessage } from './wal.js';

const SEQ_KEY = metaKey('seq');

/** One LevelDB write batch (what `write` hands its callback). */
type Batch = Parameters<Parameters<typeof write>[1]>[0];

/**
 * Rotate, move the overflow, delete what is dead. `unmoved` hears of a move whose write failed (it may have reached
 * LevelDB all the same): the recovery does it again.
 * @throws what writing threw: the caller writes nothing more until the store has recovered.
 */
export async function upkeepHotLog(hot: HotLog, db: Level, holdings: Holdings, unmoved: (messages: readonly HotMessage[]) => void): Promise<void> {
  if (hot.full) await hot.rotate(holdings.nextSeq);
  const overflow = hot.overflow();
  if (overflow.length > 0) await moveToLevel(hot, db, holdings, overflow, unmoved);
  if (hot.deadPrefix) {
    // The removals that made them dead must be on disk before the segments go.
    if (hot.removalsPending) await hot.write([]);
    await hot.dropDead();
  }
}

/**
 * Live messages of the hot log into LevelDB (one fsync'd batch, with their devices' marks and the next seq). Reads
 * wait while it runs (a read must find each message in one place or the other). A message acknowledged while the
 * batch was being written (acks of the hot log are taken at once, see `OutboxStore.ackAll`) is deleted from LevelDB
 * again.
 */
async function moveToLevel(hot: HotLog, db: Level, holdings: Holdings, messages: readonly HotMessage[], unmoved: (messages: readonly HotMessage[]) => void): Promise<void> {
  await hot.exclusive(async () => {
    try {
      await write(db, (batch) => putMoved(batch, messages, holdings), true);
    } catch (error) {
      unmoved(messages);
      throw error;
    }
    const gone = messages.filter((m) => hot.get(m.seq) !== m);
    if (gone.length > 0) await write(db, (batch) => gone.forEach((m) => batch.del(m.key)), true);
    settleMoved(hot, holdings, messages);
  });
}

/** The LevelDB part of a move: the messages (sealed), their devices' marks, the next seq. */
export function putMoved(batch: Batch, messages: readonly HotMessage[], holdings: Holdings): void {
  const marked = new Set<string>();
  for (const m of messages) {
    batch.put(m.key, seal(m.key, m.value));
    const sentHigh = holdings.devices.get(m.clientId)?.sentHigh ?? 0;
    if (sentHigh > 0 && !marked.has(m.clientId)) {
      marked.add(m.clientId);
      batch.put(markKey(m.clientId), encodeSeq(sentHigh));
    }
  }
  batch.put(SEQ_KEY, encodeSeq(holdings.nextSeq));
}

/** A move written: the messages still in the hot log are LevelDB's now. */
export function settleMoved(hot: HotLog, holdings: Holdings, messages: readonly HotMessage[]): void {
  const stay = messages.filter((m) => hot.get(m.seq) === m);
  for (const m of stay) {
    const device = holdings.devices.get(m.clientId);
    if (device && device.sentHigh > 0) device.levelMark = true;
  }
  hot.moved(stay);
}

/**
 * The durable outbox's bounds and drop policy: which messages a batch removes because their time to live is over
 * (`expired`) or to make room under `drop-oldest` (`full`), and which of the batch's appends are accepted and dropped
 * at once, or refused. Expiry and drop-oldest read only the first messages of the devices whose bound says they may
 * hold something old enough: no index by age to keep.
 */
import { acceptedAtOf, idOf, messageRange, seqOfMessageKey } from './codec.js';
import type { Level } from './level.js';
import type { ResolvedOutboxOptions } from './options.js';
import type { DeviceState, Holdings, Removed } from './state.js';
import type { OutboxDropReason } from './types.js';
import type { HotLog } from './wal.js';

/** At most this many messages removed by one sweep batch (more wait for the next). */
const MAX_REMOVALS_PER_BATCH = 5000;
/** How many messages one read of a device's oldest takes. */
const SCAN_PAGE = 256;

/** What one batch removes and refuses to stay within the bounds. */
export interface BoundsPlan<A> {
  /** Messages on disk to delete, each with why. */
  readonly victims: Array<Removed & { reason: OutboxDropReason }>;
  /** Appends of this batch accepted and dropped at once (oldest first), never written. */
  readonly droppedAtOnce: A[];
  /** Appends of this batch that do not fit (newest first). */
  readonly refused: A[];
  /** The sweep stopped at its limit: sweep again with the next batch. */
  readonly sweepAgain: boolean;
}

/** What the planner reads: the engine, the store's memory and its options. */
export interface BoundsContext {
  readonly db: Level;
  /** The recent messages (each device's newest: after its messages in LevelDB). */
  readonly hot: HotLog;
  readonly holdings: Holdings;
  readonly options: ResolvedOutboxOptions;
}

/**
 * Plan one batch against the bounds: its removals (already looked up: `removed`) are gone, its appends (`appends`,
 * taken out of the array when dropped at once or refused) are in. A sweep (`sweep`) takes the expired messages;
 * under `drop-oldest`, the oldest messages not in flight make room.
 */
export async function planBounds<A extends { readonly bytes: number }>(
  ctx: BoundsContext,
  batch: { appends: A[]; readonly removals: ReadonlyArray<{ readonly seq: number }>; readonly sweep: boolean },
  removed: readonly Removed[],
): Promise<BoundsPlan<A>> {
  const { holdings, options } = ctx;
  let messages = holdings.messages - removed.length + batch.appends.length;
  let bytes = holdings.bytes - removed.reduce((sum, r) => sum + r.bytes, 0) + batch.appends.reduce((sum, a) => sum + a.bytes, 0);
  // Only a sweep or a drop needs it: most batches are appends and acks, and this is per message.
  const skip = batch.sweep || options.whenFull === 'drop-oldest' ? new Set(batch.removals.map((r) => r.seq)) : new Set<number>();
  const victims: Array<Removed & { reason: OutboxDropReason }> = [];
  const take = (reason: OutboxDropReason, more: () => boolean) => (victim: Removed): boolean => {
    victims.push({ ...victim, reason });
    skip.add(victim.seq);
    messages -= 1;
    bytes -= victim.bytes;
    return more();
  };
  let sweepAgain = false;
  if (batch.sweep && options.ttlMs !== Infinity) sweepAgain = !(await expireInto(ctx, skip, take('expired', () => victims.length < MAX_REMOVALS_PER_BATCH)));
  const { maxMessages, maxBytes } = options;
  const over = (): boolean => messages > maxMessages || bytes > maxBytes;
  if (options.whenFull === 'drop-oldest' && over()) await dropOldestInto(ctx, skip, take('full', over));
  // Still over under drop-oldest (what is on disk is in flight, or this write alone is more than the bound): the oldest
  // of this write make room for its newest. They are accepted and dropped at once, never written.
  const droppedAtOnce: A[] = [];
  if (options.whenFull === 'drop-oldest') {
    while (over() && batch.appends.length > 1) {
      const first = batch.appends.shift() as A;
      messages -= 1;
      bytes -= first.bytes;
      droppedAtOnce.push(first);
    }
  }
  // What still does not fit (one message, and every older one in flight): refused.
  const refused: A[] = [];
  while (over() && batch.appends.length > 0) {
    const last = batch.appends.pop() as A;
    messages -= 1;
    bytes -= last.bytes;
    refused.push(last);
  }
  return { victims, droppedAtOnce, refused, sweepAgain };
}

/**
 * Read one device's messages from its oldest, in order: `match` decides whether a message not in flight is a
 * candidate (the read stops at the first that is not); `take` receives each candidate and says whether to go on.
 * Returns, when the read was not stopped by `take`, the acceptance time of the oldest message left (Infinity: none)
 * and the seq of the oldest one left that is not in flight (a drop candidate later; Infinity: none).
 */
async function scanDevice(
  { db, holdings, hot }: BoundsContext,
  clientId: string,
  device: DeviceState,
  skip: ReadonlySet<number>,
  match: (acceptedAt: number, seq: number) => boolean,
  take: (victim: Removed) => boolean,
): Promise<{ oldestLeft: number; firstDroppable: number } | undefined> {
  let oldestLeft = Infinity;
  /** One message: undefined to go on, else what the scan returns. */
  const visit = (seq: number, acceptedAt: number, victim: () => Removed): { oldestLeft: number; firstDroppable: number } | null | undefined => {
    if (skip.has(seq) || holdings.removed.has(seq)) return undefined;
    if (seq <= device.inFlightHigh) {
      oldestLeft = Math.min(oldestLeft, acceptedAt);
      return undefined;
    }
    if (!match(acceptedAt, seq)) return { oldestLeft: Math.min(oldestLeft, acceptedAt), firstDroppable: seq };
    return take(victim()) ? undefined : null;
  };
  if (device.messages > hot.deviceCount(clientId)) {
    const stop = await scanLevel(db, clientId, visit);
    if (stop !== undefined) return stop ?? undefined;
  }
  for (const m of [...hot.device(clientId)]) {
    const stop = visit(m.seq, m.acceptedAt, () => ({ seq: m.seq, clientId, bytes: m.bytes, acceptedAt: m.acceptedAt, id: m.id, hot: true }));
    if (stop !== undefined) return stop ?? undefined;
  }
  return { oldestLeft, firstDroppable: Infinity };
}

/** The LevelDB part of {@link scanDevice}: each message in seq order to `visit`, until it says stop. */
async function scanLevel(
  db: Level,
  clientId: string,
  visit: (seq: number, acceptedAt: number, victim: () => Removed) => { oldestLeft: number; firstDroppable: number } | null | undefined,
): Promise<{ oldestLeft: number; firstDroppable: number } | null | undefined> {
  const { gt, lt } = messageRange(clientId, 0);
  const iterator = db.iterator({ gt, lt });
  try {
    // Small first: a drop usually needs one or two messages of a device, and a page reads whole payloads.
    for (let size = 8, page = await iterator.nextv(size); page.length > 0; size = Math.min(SCAN_PAGE, size * 4), page = await iterator.nextv(size)) {
      for (const [key, value] of page) {
        const seq = seqOfMessageKey(key);
        const raw = acceptedAtOf(value);
        // A header too short to say when: old enough for anything (it is corrupt; removing it is right).
        const acceptedAt = Number.isNaN(raw) ? -Infinity : raw;
        const stop = visit(seq, acceptedAt, () => ({ seq, clientId, bytes: key.length + value.length, acceptedAt, id: idOf(value) }));
        if (stop !== undefined) return stop;
      }
    }
  } finally {
    await iterator.close();
  }
  return undefined;
}

/**
 * The expired messages (not in flight), from the devices whose oldest may be old enough. Resolves false when `take`
 * stopped it (more may have expired).
 */
async function expireInto(ctx: BoundsContext, skip: ReadonlySet<number>, take: (victim: Removed) => boolean): Promise<boolean> {
  const cutoff = ctx.options.clock() - ctx.options.ttlMs;
  let more = true;
  for (const [clientId, device] of ctx.holdings.devices) {
    if (device.messages === 0 || device.oldestAt > cutoff) continue;
    const left = await scanDevice(ctx, clientId, device, skip, (at) => at <= cutoff, (victim) => (more = take(victim)));
    if (left) device.oldestAt = left.oldestLeft;
    if (!more) return false;
  }
  return true;
}

/**
 * The oldest messages not in flight, of any device, until `take` has enough: a merge of the devices' oldest
 * messages by seq, reading a device only when its lower bound is the smallest (the read makes the bound exact).
 */
async function dropOldestInto(ctx: BoundsContext, skip: ReadonlySet<number>, take: (victim: Removed) => boolean): Promise<void> {
  const { devices } = ctx.holdings;
  /** Exact seq of a device's oldest droppable message, once read. */
  const known = new Map<string, number>();
  for (let more = true; more; ) {
    let best: string | undefined;
    let bestSeq = Infinity;
    let nextSeq = Infinity;
    for (const [clientId, device] of devices) {
      const seq = known.get(clientId) ?? device.oldestSeq;
      if (seq < bestSeq) {
        nextSeq = bestSeq;
        bestSeq = seq;
        best = clientId;
      } else if (seq < nextSeq) nextSeq = seq;
    }
    if (best === undefined) return;
    let took = 0;
    const left = await scanDevice(ctx, best, devices.get(best) as DeviceState, skip, (_at, seq) => seq < nextSeq, (victim) => {
      took += 1;
      return (more = take(victim));
    });
    // Nothing taken: its oldest droppable message is younger than the next device's bound; know it and pick again
    // (each such round makes one bound exact and larger, so the merge ends).
    if (left) known.set(best, left.firstDroppable);
    else if (took === 0) return;
  }
}

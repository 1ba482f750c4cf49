/**
 * The removals of a batch (acks, refusals by the broker, drops of corrupt records): what each removed message was
 * (from the hot log, from what was handed out, or read from LevelDB), and once written (or kept in memory while
 * writing fails), their accounting, answers and reports.
 */
import { acceptedAtOf, idOf, messageKey } from './codec.js';
import type { Level } from './level.js';
import { dropOf, type Holdings, type PendingRemoval, type Removed } from './state.js';
import type { OutboxDrop } from './types.js';
import type { HotLog } from './wal.js';

/** How big each message is (known if in the hot log or handed out, else read), or that it is not there any more. */
export async function lookUpRemovals(removals: readonly PendingRemoval[], hot: HotLog, holdings: Holdings, db: Level): Promise<{ removed: Removed[]; missing: PendingRemoval[] }> {
  const removed: Removed[] = [];
  const missing: PendingRemoval[] = [];
  if (removals.length === 0) return { removed, missing };
  const unknown: PendingRemoval[] = [];
  for (const removal of removals) {
    const inHot = hot.get(removal.seq);
    if (inHot?.clientId === removal.clientId) {
      removed.push({ removal, seq: inHot.seq, clientId: inHot.clientId, bytes: inHot.bytes, acceptedAt: inHot.acceptedAt, id: inHot.id });
      continue;
    }
    const entry = holdings.known.get(removal.seq);
    if (entry?.clientId === removal.clientId) removed.push({ removal, seq: removal.seq, clientId: entry.clientId, bytes: entry.bytes, acceptedAt: entry.acceptedAt, id: entry.id });
    else unknown.push(removal);
  }
  if (unknown.length === 0) return { removed, missing };
  const keys = unknown.map((r) => messageKey(r.clientId, r.seq));
  const values = await db.getMany(keys);
  unknown.forEach((removal, i) => {
    const value = values[i];
    if (value === undefined) missing.push(removal);
    else removed.push({ removal, seq: removal.seq, clientId: removal.clientId, bytes: (keys[i] as Buffer).length + value.length, acceptedAt: acceptedAtOf(value), id: idOf(value) });
  });
  return { removed, missing };
}

/** Removals done (written, or kept in memory while writing fails): account, resolve, report (into `drops`). */
export function settleRemovals(holdings: Holdings, removed: readonly Removed[], missing: readonly PendingRemoval[], drops: OutboxDrop[]): void {
  for (const r of removed) {
    holdings.account(r.seq, r.clientId, r.bytes);
    const removal = r.removal as PendingRemoval;
    if (removal.reason === 'delivered') holdings.counters.delivered += 1;
    else if (removal.reason === 'rejected') drops.push(dropOf(r, 'rejected'));
    else drops.push({ clientId: r.clientId, seq: r.seq, reason: 'corrupt', bytes: r.bytes, acceptedAt: NaN });
    removal.resolve(true);
  }
  // Not there: already removed (acknowledged twice, or dropped or expired, which reported it).
  for (const r of missing) r.resolve(false);
}

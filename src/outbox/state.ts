/**
 * The durable outbox's memory: what it holds, per device and in total (a few numbers per device, nothing per message
 * beyond a bounded map of handed-out ones), its counters, and the work waiting for the next batch.
 */
import type { HotMessage } from './wal.js';
import { MARK_RANGE, MESSAGE_RANGE, acceptedAtOf, clientIdOfMarkKey, clientIdOfMessageKey, decodeSeq, seqOfMessageKey } from './codec.js';
import type { Level } from './level.js';
import type { OutboxDrop, OutboxDropReason, OutboxStats } from './types.js';

export interface DeviceState {
  messages: number;
  bytes: number;
  /** Highest seq handed out for sending, durably recorded (the `f` mark). */
  sentHigh: number;
  /** Highest seq in flight on a live connection (memory only): not dropped or expired while it waits for its ack. */
  inFlightHigh: number;
  /** At most the acceptance time of its oldest message (exact after a read of its first messages): for expiry. */
  oldestAt: number;
  /** At most the seq of its oldest message: for drop-oldest (seqs order acceptance store-wide; times can tie). */
  oldestSeq: number;
  /** Its `f` mark may be in LevelDB (not only in the hot log): deleted there once the device holds nothing. */
  levelMark: boolean;
}

/** An append waiting for its group's write: the hot log's message from the start (wal.ts). */
export type PendingAppend = HotMessage;

export interface PendingRemoval {
  readonly clientId: string;
  readonly seq: number;
  /** `delivered` for an ack; a drop reason for damage found while reading, or a message the broker refused. */
  readonly reason: 'delivered' | 'corrupt' | 'rejected';
  readonly resolve: (removed: boolean) => void;
}

export interface Waiter {
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

/** Everything asked since the last batch. */
export interface Work {
  appends: PendingAppend[];
  removals: PendingRemoval[];
  marks: Map<string, number>;
  markWaiters: Waiter[];
  sweep: boolean;
  /** Try to write again now (after a failure), see `OutboxStore.retryWrites`. */
  recover: boolean;
  waiters: Waiter[];
}

/** A message found for removal (or chosen as a victim), with what accounting needs of it. */
export interface Removed {
  readonly removal?: PendingRemoval;
  readonly seq: number;
  readonly clientId: string;
  readonly bytes: number;
  readonly acceptedAt: number;
  readonly id: string | undefined;
  /** Found in the hot log (else in LevelDB). */
  readonly hot?: boolean;
}

export const newWork = (): Work => ({ appends: [], removals: [], marks: new Map(), markWaiters: [], sweep: false, recover: false, waiters: [] });

/** At most this many entries in the map of handed-out messages (about 100 bytes each). */
const MAX_KNOWN = 50_000;

/** Empty device records are let go once there are more records than this, or than twice what was left last time. */
const PRUNE_FLOOR = 4096;

/** The report of a message removed without delivery. */
export function dropOf(r: Removed, reason: OutboxDropReason): OutboxDrop {
  const drop = { clientId: r.clientId, seq: r.seq, reason, bytes: r.bytes, acceptedAt: r.acceptedAt };
  return r.id === undefined ? drop : { ...drop, id: r.id };
}

/** What the store holds, in memory: rebuilt from disk by {@link load}, kept up to date by every batch. */
export class Holdings {
  /**
   * Per device, while it holds messages, and kept when it empties (unless its mark is in LevelDB): a gateway's device
   * sends one message at a time, and a record made and deleted per message cost about 6% of the gateway's CPU per
   * message (BENCHMARKS.md, stop 35). {@link pruneEmpty} lets the empty ones go past a bound.
   */
  readonly devices = new Map<string, DeviceState>();
  #pruneAbove = PRUNE_FLOOR;
  messages = 0;
  bytes = 0;
  /** Appends waiting for their batch: counted against the bounds before they are written. */
  queuedMessages = 0;
  queuedBytes = 0;
  /** The next seq to hand out (store-wide, increasing with acceptance; written with each batch of appends). */
  nextSeq = 1;
  lastAcceptedAt = 0;
  /**
   * What accounting needs of messages this process has handed out (appended for sending, or read): an ack of one
   * of them reads nothing. Bounded ({@link MAX_KNOWN}); beyond, an ack reads its message's size from the store.
   */
  readonly known = new Map<number, { clientId: string; bytes: number; acceptedAt: number; id: string | undefined }>();
  /** Devices that became empty: their `f` mark is deleted with the next batch. */
  readonly emptied = new Set<string>();
  /** Seqs removed in memory whose deletion is not written yet: never handed out again. */
  readonly removed = new Set<number>();
  readonly counters = {
    accepted: 0,
    delivered: 0,
    dropped: { full: 0, expired: 0, corrupt: 0, rejected: 0 } as Record<OutboxDropReason, number>,
    refused: { full: 0, diskFull: 0 },
    possibleDuplicates: 0,
  };

  /** Per-device state and totals from what is on disk: LevelDB, and the hot log's live messages (`hot`). */
  async load(db: Level, hot: Iterable<{ clientId: string; seq: number; bytes: number; acceptedAt: number }> = []): Promise<{ messages: number; possibleDuplicates: number; maxSeq: number }> {
    // What only memory knows: in flight now, and (devices of the hot log) handed out before.
    const keep = new Map([...this.devices].map(([id, d]) => [id, { inFlightHigh: d.inFlightHigh, sentHigh: d.sentHigh }]));
    this.devices.clear();
    this.messages = 0;
    this.bytes = 0;
    const marks = new Map<string, number>();
    for await (const [key, value] of db.iterator(MARK_RANGE)) {
      const seq = decodeSeq(value);
      if (seq !== undefined) marks.set(clientIdOfMarkKey(key), seq);
    }
    let possibleDuplicates = 0;
    let maxSeq = 0;
    // Every message key and the header of its value (LevelDB reads whole blocks anyway): a second pass over the data
    // at open, instead of a second key per message while running.
    const iterator = db.iterator(MESSAGE_RANGE);
    try {
      for (let page = await iterator.nextv(1024); page.length > 0; page = await iterator.nextv(1024)) {
        for (const [key, value] of page) {
          const seq = seqOfMessageKey(key);
          const clientId = clientIdOfMessageKey(key);
          const bytes = key.length + value.length;
          const acceptedAt = acceptedAtOf(value);
          maxSeq = Math.max(maxSeq, seq);
          const device = this.device(clientId);
          // Keys are in seq order per device: the first is the oldest. A header too short to say sorts first (it is
          // looked at, and dropped as corrupt, by the first sweep or read).
          if (device.messages === 0) {
            device.oldestAt = Number.isNaN(acceptedAt) ? -Infinity : acceptedAt;
            device.oldestSeq = seq;
          }
          device.messages += 1;
          device.bytes += bytes;
          this.messages += 1;
          this.bytes += bytes;
          if (acceptedAt > this.lastAcceptedAt) this.lastAcceptedAt = acceptedAt;
          const sent = marks.get(clientId);
          if (sent !== undefined && seq <= sent) possibleDuplicates += 1;
        }
      }
    } finally {
      await iterator.close();
    }
    for (const m of hot) this.addHot(m);
    for (const [clientId, sentHigh] of marks) {
      const device = this.devices.get(clientId);
      if (device) {
        device.sentHigh = sentHigh;
        device.levelMark = true;
      } else this.emptied.add(clientId);
    }
    for (const [clientId, kept] of keep) {
      const device = this.devices.get(clientId);
      if (device) {
        device.inFlightHigh = kept.inFlightHigh;
        device.sentHigh = Math.max(device.sentHigh, kept.sentHigh);
      }
    }
    return { messages: this.messages, possibleDuplicates, maxSeq };
  }

  device(clientId: string): DeviceState {
    let device = this.devices.get(clientId);
    if (!device) {
      device = { messages: 0, bytes: 0, sentHigh: 0, inFlightHigh: 0, oldestAt: Infinity, oldestSeq: Infinity, levelMark: false };
      this.devices.set(clientId, device);
    }
    return device;
  }

  remember(seq: number, clientId: string, bytes: number, acceptedAt: number, id: string | undefined): void {
    if (this.known.size < MAX_KNOWN) this.known.set(seq, { clientId, bytes, acceptedAt, id });
  }

  /** A message left the store (written, or kept in memory while writing fails). */
  account(seq: number, clientId: string, bytes: number): void {
    this.known.delete(seq);
    const device = this.devices.get(clientId);
    if (device) {
      device.messages -= 1;
      device.bytes -= bytes;
      if (device.messages === 0) {
        if (device.levelMark) {
          // Its `f` mark in LevelDB is deleted with the next batch (batch.ts), which looks for no record.
          this.devices.delete(clientId);
          this.emptied.add(clientId);
        } else {
          // Kept, as a new record would be; what is in flight stays known (an append handed out for sending may be
          // on its way to the disk).
          device.bytes = 0;
          device.sentHigh = 0;
          device.oldestAt = Infinity;
          device.oldestSeq = Infinity;
        }
      }
    }
    this.messages -= 1;
    this.bytes -= bytes;
  }

  /**
   * Let go of the empty records nothing is in flight for, once there are more records than the bound (called after
   * each batch: a scan only when the records doubled since the last one).
   */
  pruneEmpty(): void {
    if (this.devices.size <= this.#pruneAbove) return;
    for (const [clientId, device] of this.devices) {
      if (device.messages === 0 && device.inFlightHigh === 0 && !device.levelMark) this.devices.delete(clientId);
    }
    this.#pruneAbove = Math.max(PRUNE_FLOOR, 2 * this.devices.size);
  }

  /** A message of the hot log, counted again after the store reloaded from LevelDB (see batch.ts). */
  addHot(m: { clientId: string; seq: number; bytes: number; acceptedAt: number }): void {
    const device = this.device(m.clientId);
    if (m.seq < device.oldestSeq) {
      device.oldestSeq = m.seq;
      device.oldestAt = Math.min(device.oldestAt, m.acceptedAt);
    }
    device.messages += 1;
    device.bytes += m.bytes;
    this.messages += 1;
    this.bytes += m.bytes;
  }

  /** A message written: it counts against the bounds as held, no longer as queued. */
  hold(append: PendingAppend): void {
    const device = this.device(append.clientId);
    if (device.messages === 0) {
      device.oldestAt = append.acceptedAt;
      device.oldestSeq = append.seq;
    }
    device.messages += 1;
    device.bytes += append.bytes;
    this.messages += 1;
    this.bytes += append.bytes;
    this.queuedMessages -= 1;
    this.queuedBytes -= append.bytes;
    this.counters.accepted += 1;
  }

  /** One device's messages held and their bytes (`OutboxStore.device`). */
  held(clientId: string): { readonly messages: number; readonly bytes: number } {
    const device = this.devices.get(clientId);
    return { messages: device?.messages ?? 0, bytes: device?.bytes ?? 0 };
  }

  /** The ClientIds with messages held (`OutboxStore.devices`). */
  clientIds(): string[] {
    const ids: string[] = [];
    for (const [id, device] of this.devices) if (device.messages > 0) ids.push(id);
    return ids;
  }

  stats(writeFailing: boolean): OutboxStats {
    let devices = 0;
    for (const device of this.devices.values()) if (device.messages > 0) devices += 1;
    const c = this.counters;
    return {
      messages: this.messages,
      bytes: this.bytes,
      devices,
      accepted: c.accepted,
      delivered: c.delivered,
      dropped: { ...c.dropped },
      refused: { ...c.refused },
      possibleDuplicates: c.possibleDuplicates,
      writeFailing,
    };
  }
}

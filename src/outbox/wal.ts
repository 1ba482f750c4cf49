/**
 * The hot log: the durable outbox's write-ahead log of recent messages, in front of LevelDB.
 *
 * Why: a message that is delivered within moments of its acceptance (the common case, online) cost LevelDB a put, a
 * delete, both written again by its compactions, and their JavaScript calls: about 14 µs of CPU per message, half
 * the connector's delivered rate (BENCHMARKS.md, "Durable outbox"). Here such a message costs one record appended to
 * a file (its group's one O_DSYNC write) and, on PUBACK, eight bytes of a removal record written with the next
 * group: no LevelDB write at all. What stays undelivered moves to LevelDB (sorted per device, nothing per message in
 * memory) when the log holds more than {@link MAX_SEGMENTS} segments, and at every open.
 *
 * Files: `hot-<n>.wal` in the store's directory (LevelDB ignores names it did not make; its LOCK covers them), each at
 * most about {@link SEGMENT_BYTES}; their records and their replay are wal-format.ts. A MARK goes to the hot log only
 * for a device whose messages are all there (else the mark goes to LevelDB): a mark is in the same or a later segment
 * than every message it covers, so when its segment is deleted they are gone too.
 * Segments are deleted oldest first, once nothing in them is live: a removal record is always in the same or a later
 * segment than its message, so a deleted prefix never takes a removal a kept segment needs.
 *
 * Memory: the live messages of the hot log (about MAX_SEGMENTS x SEGMENT_BYTES of records at most, plus the last
 * batch: a segment ends after the write that fills it), each as one record holding its LevelDB key and value; a bound,
 * not a quantity per message of the store.
 */
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { syncDir } from '../util/fs.js';
import { MAX_SEGMENTS, REMOVE, SEGMENT_BYTES, SEQ, fileName, keyOf, removeWalFiles, seqsRecord, valueOf } from './wal-format.js';

/** Who hears that an append was accepted (written) or refused, with what the appender gave to know it by. */
export interface AppendSink {
  accepted(token: unknown, seq: number, acceptedAt: number): void;
  refused(token: unknown, error: unknown): void;
}

/**
 * A message of the store's recent appends: pending from its append until its group is written, then live in the hot
 * log until it is removed or moved to LevelDB. One object from append to removal; its LevelDB key and value are made
 * from its record only when needed (a read after a reconnect, a move), not for every message.
 */
export class HotMessage {
  readonly clientId: string;
  readonly seq: number;
  /** The hot log's record (wal-format.ts): the LevelDB key and value inside it. */
  readonly record: Buffer;
  /** Key and value bytes: the message's size in the store's accounting. */
  readonly bytes: number;
  readonly acceptedAt: number;
  readonly id: string | undefined;
  /** Recorded as in flight in its own record (see `OutboxStore.append`). */
  readonly sending: boolean;
  /** The number of its segment, once written. */
  segment = 0;
  /** Told of the acceptance or refusal (then let go). */
  sink: AppendSink | undefined;
  token: unknown;

  constructor(clientId: string, seq: number, record: Buffer, bytes: number, acceptedAt: number, id: string | undefined, sending: boolean, sink: AppendSink, token: unknown) {
    this.clientId = clientId;
    this.seq = seq;
    this.record = record;
    this.bytes = bytes;
    this.acceptedAt = acceptedAt;
    this.id = id;
    this.sending = sending;
    this.sink = sink;
    this.token = token;
  }

  get key(): Buffer {
    return keyOf(this.record);
  }

  get value(): Buffer {
    return valueOf(this.record);
  }
}

/**
 * Tell each sink of `messages` (then let it go), in order. One sink that throws does not keep the others unanswered
 * (each promise's reaction was on its own): the first error is rethrown after all were told.
 */
function tellEach(messages: readonly HotMessage[], tell: (sink: AppendSink, token: unknown, message: HotMessage) => void): void {
  let thrown: { error: unknown } | undefined;
  for (const m of messages) {
    const { sink, token } = m;
    m.sink = undefined;
    m.token = undefined;
    if (sink === undefined) continue;
    try {
      tell(sink, token, m);
    } catch (error) {
      thrown ??= { error };
    }
  }
  if (thrown) throw thrown.error;
}

/**
 * Tell the sinks of `messages`, in order, that they were accepted: after the current synchronous work, as a promise
 * would. `after` runs once the reactions of what the sinks settled have run (a promise's reactions, queued by them).
 */
export function tellAccepted(messages: readonly HotMessage[], after?: () => void): void {
  if (messages.length === 0 && after === undefined) return;
  queueMicrotask(() => {
    try {
      tellEach(messages, (sink, token, m) => sink.accepted(token, m.seq, m.acceptedAt));
    } finally {
      if (after) queueMicrotask(after);
    }
  });
}

/** Tell the sinks of `messages` that they were refused with `error` (after the current synchronous work). */
export function tellRefused(messages: readonly HotMessage[], error: unknown): void {
  if (messages.length === 0) return;
  queueMicrotask(() => tellEach(messages, (sink, token) => sink.refused(token, error)));
}

interface Segment {
  readonly n: number;
  live: number;
}

/** The running hot log: its files, its live messages, and the removals not written yet. */
export class HotLog {
  readonly #dir: string;
  #handle: FileHandle;
  /** Bytes of the active segment that hold whole records (a failed write is cut back to here). */
  #size: number;
  /** Oldest first; the last is the active one. */
  readonly #segments: Segment[];
  readonly #bySeq = new Map<number, HotMessage>();
  /**
   * Each device's live messages: the message itself while it has one (the common case of a gateway, whose devices
   * send one at a time: no map made and dropped per message), a map in seq order from the second.
   */
  readonly #byDevice = new Map<string, HotMessage | Map<number, HotMessage>>();
  /** Seqs removed whose REMOVE record is not written yet. */
  #removed: number[] = [];
  /** A failed write could not be cut back: cut it back before writing again. */
  #untrimmed = false;

  private constructor(dir: string, handle: FileHandle, n: number, size: number) {
    this.#dir = dir;
    this.#handle = handle;
    this.#size = size;
    this.#segments = [{ n, live: 0 }];
  }

  /** Begin a fresh hot log in `dir` with segment number `n`, recording `nextSeq`. */
  static async create(dir: string, n: number, nextSeq: number): Promise<HotLog> {
    const { handle, size } = await HotLog.#begin(dir, n, nextSeq);
    return new HotLog(dir, handle, n, size);
  }

  static async #begin(dir: string, n: number, nextSeq: number): Promise<{ handle: FileHandle; size: number }> {
    // O_DSYNC: each write returns once it is on disk (one trip to the thread pool, not a write and an fdatasync).
    const handle = await open(join(dir, fileName(n)), constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_DSYNC, 0o600);
    try {
      const record = seqsRecord(SEQ, [nextSeq]);
      await handle.write(record, 0, record.length, 0);
      await syncDir(dir);
      return { handle, size: record.length };
    } catch (error) {
      await handle.close().catch(() => undefined);
      throw error;
    }
  }

  get(seq: number): HotMessage | undefined {
    return this.#bySeq.get(seq);
  }

  /** One device's live messages, in seq order (a live view: do not change the store while iterating). */
  device(clientId: string): Iterable<HotMessage> {
    const held = this.#byDevice.get(clientId);
    if (held === undefined) return [];
    return held instanceof Map ? held.values() : [held];
  }

  /** Every live message, in seq order. */
  all(): Iterable<HotMessage> {
    return this.#bySeq.values();
  }

  deviceCount(clientId: string): number {
    const held = this.#byDevice.get(clientId);
    if (held === undefined) return 0;
    return held instanceof Map ? held.size : 1;
  }

  /** Removals are waiting to be written. */
  get removalsPending(): boolean {
    return this.#removed.length > 0;
  }

  /**
   * Write records (appends, marks) and the removals made so far, durably (the file is opened with O_DSYNC). All or
   * nothing: a failed write is cut back, so no record of it is read at the next open (its appends were refused).
   */
  async write(records: Buffer[]): Promise<void> {
    const removed = this.#removed;
    if (removed.length > 0) records.push(seqsRecord(REMOVE, removed));
    if (records.length === 0) return;
    this.#removed = [];
    let length = 0;
    for (const r of records) length += r.length;
    try {
      if (this.#untrimmed) {
        await this.#cutBack();
        this.#untrimmed = false;
      }
      let written = (await this.#handle.writev(records, this.#size)).bytesWritten;
      // A short write (the file size limit, the disk full): write the rest, which then fails with the reason.
      if (written < length) {
        const rest = Buffer.concat(records).subarray(written);
        for (let at = 0; at < rest.length; at += written) {
          written = (await this.#handle.write(rest, at, rest.length - at, this.#size + length - rest.length + at)).bytesWritten;
          if (written === 0) throw Object.assign(new Error('the disk took none of the write'), { code: 'ENOSPC' });
        }
      }
    } catch (error) {
      this.#removed = removed.concat(this.#removed);
      // Cut back what part of the write reached the file (its appends are refused): a record of it must never be
      // read at the next open. If even that fails, it is tried again before the next write.
      await this.#cutBack().catch(() => {
        this.#untrimmed = true;
      });
      throw error;
    }
    this.#size += length;
  }

  /** Cut the active segment back to its whole records, durably (O_DSYNC covers writes, not a truncate). */
  async #cutBack(): Promise<void> {
    await this.#handle.truncate(this.#size);
    await this.#handle.datasync();
  }

  #readers = 0;
  #moving: Promise<void> | undefined;
  #readersGone: (() => void) | undefined;

  /** Run a read of the store (LevelDB then the hot log), not while {@link exclusive} runs. */
  async read<T>(fn: () => Promise<T>): Promise<T> {
    while (this.#moving) await this.#moving;
    this.#readers += 1;
    try {
      return await fn();
    } finally {
      this.#readers -= 1;
      if (this.#readers === 0) this.#readersGone?.();
    }
  }

  /** Run a move of messages to LevelDB: once the reads running have ended, with new ones waiting for it. */
  async exclusive(fn: () => Promise<void>): Promise<void> {
    let release!: () => void;
    this.#moving = new Promise((resolve) => (release = resolve));
    try {
      if (this.#readers > 0) await new Promise<void>((resolve) => (this.#readersGone = resolve));
      this.#readersGone = undefined;
      await fn();
    } finally {
      this.#moving = undefined;
      release();
    }
  }

  /** A message written: live in the active segment. */
  add(message: HotMessage): void {
    const segment = this.#segments[this.#segments.length - 1] as Segment;
    message.segment = segment.n;
    segment.live += 1;
    this.#bySeq.set(message.seq, message);
    const clientId = message.clientId;
    const held = this.#byDevice.get(clientId);
    if (held === undefined) this.#byDevice.set(clientId, message);
    else if (held instanceof Map) held.set(message.seq, message);
    else
      this.#byDevice.set(
        clientId,
        new Map([
          [held.seq, held],
          [message.seq, message],
        ]),
      );
  }

  /** Take a message out (delivered, dropped, refused): its REMOVE record goes with the next write. */
  remove(seq: number): HotMessage | undefined {
    const message = this.#forget(seq);
    if (message) this.#removed.push(seq);
    return message;
  }

  #forget(seq: number): HotMessage | undefined {
    const message = this.#bySeq.get(seq);
    if (!message) return undefined;
    this.#bySeq.delete(seq);
    const held = this.#byDevice.get(message.clientId);
    if (held === message) this.#byDevice.delete(message.clientId);
    else if (held instanceof Map) {
      held.delete(seq);
      if (held.size === 0) this.#byDevice.delete(message.clientId);
    }
    // Segments are numbered in order, one apart: found by index, no search.
    const segment = this.#segments[message.segment - (this.#segments[0] as Segment).n];
    if (segment !== undefined && segment.n === message.segment) segment.live -= 1;
    return message;
  }

  /** The active segment is full: a new one should begin. */
  get full(): boolean {
    return this.#size >= SEGMENT_BYTES;
  }

  /** Begin the next segment (after a write, with nothing in flight). */
  async rotate(nextSeq: number): Promise<void> {
    const n = (this.#segments[this.#segments.length - 1] as Segment).n + 1;
    const { handle, size } = await HotLog.#begin(this.#dir, n, nextSeq);
    await this.#handle.close().catch(() => undefined);
    this.#handle = handle;
    this.#size = size;
    this.#segments.push({ n, live: 0 });
  }

  /** The live messages of the oldest segment when there are too many segments: to move to LevelDB. */
  overflow(): HotMessage[] {
    if (this.#segments.length <= MAX_SEGMENTS) return [];
    const oldest = (this.#segments[0] as Segment).n;
    const out: HotMessage[] = [];
    for (const message of this.#bySeq.values()) {
      if (message.segment === oldest) out.push(message);
      else if (message.segment > oldest) break;
    }
    return out;
  }

  /** Messages written to LevelDB: no longer the hot log's (no REMOVE record: they live on there). */
  moved(messages: readonly HotMessage[]): void {
    for (const m of messages) this.#forget(m.seq);
  }

  /** Delete the oldest segments that hold nothing live (never the active one). Resolves with how many. */
  async dropDead(): Promise<number> {
    const dead: string[] = [];
    while (this.#segments.length > 1 && (this.#segments[0] as Segment).live === 0) {
      dead.push(fileName((this.#segments.shift() as Segment).n));
    }
    await removeWalFiles(this.#dir, dead);
    return dead.length;
  }

  /** A segment can be deleted (after the next durable write). */
  get deadPrefix(): boolean {
    return this.#segments.length > 1 && (this.#segments[0] as Segment).live === 0;
  }

  async close(): Promise<void> {
    await this.#handle.close().catch(() => undefined);
  }
}

/**
 * The hot log: the durable outbox's write-ahead log of recent messages, in front of LevelDB.
 *
 * Why: a message that is delivered within moments of its acceptance (the common case, online) cost LevelDB a put, a
 * delete, both written again by its compactions, and their JavaScript calls: about 14 µs of CPU per message, half
 * the connector's delivered rate (BENCHMARKS.md, "Durable outbox"). Here such a message costs one record appended to
 * a file (with its group's one fdatasync) and, on PUBACK, eight bytes of a removal record written with the next
 * group: no LevelDB write at all. What stays undelivered moves to LevelDB (sorted per device, nothing per message in
 * memory) when the log holds more than {@link MAX_SEGMENTS} segments, and at every open.
 *
 * Files: `hot-<n>.wal` in the store's directory (LevelDB ignores names it did not make; its LOCK covers them), each at
 * most about {@link SEGMENT_BYTES}. A record: a 13-byte header (body length u32 LE, type u8, CRC-32 of the body u32
 * LE, CRC-32 of the header's first 9 bytes u32 LE), then the body:
 * - APPEND: flags (1: handed out for sending), key length u16 LE, the LevelDB key, the LevelDB value (codec.ts);
 * - REMOVE: seqs (8 bytes each, big-endian as in keys) removed from the store (delivered, dropped, refused);
 * - SEQ: the next seq at the time a segment began (so that deleting old segments never lets a seq be handed out twice);
 * - MARK: a device's messages up to a seq were handed out for sending (seq, then the ClientId): a crash counts them as
 *   possible duplicates. Only for a device whose messages are all in the hot log (else the mark goes to LevelDB): a
 *   mark is in the same or a later segment than every message it covers, so when its segment is deleted they are
 *   gone too.
 * Segments are deleted oldest first, once nothing in them is live: a removal record is always in the same or a later
 * segment than its message, so a deleted prefix never takes a removal a kept segment needs.
 *
 * Memory: the live messages of the hot log (about MAX_SEGMENTS x SEGMENT_BYTES of records at most, plus the last
 * batch: a segment ends after the write that fills it), each as one record holding its LevelDB key and value; a bound,
 * not a quantity per message of the store.
 */
import { constants } from 'node:fs';
import { open, readdir, readFile, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { syncDir } from '../util/fs.js';

/** A segment is closed, and the next one begun, once it holds this many bytes. */
export const SEGMENT_BYTES = 1024 * 1024;
/** Beyond this many segments the oldest one's live messages move to LevelDB. */
export const MAX_SEGMENTS = 4;

const HEADER = 13;
const APPEND = 1;
const REMOVE = 2;
const SEQ = 3;
const MARK = 4;
const NAME = /^hot-(\d{12})\.wal$/;
const TWO_32 = 2 ** 32;

const fileName = (n: number): string => `hot-${String(n).padStart(12, '0')}.wal`;

function frame(record: Buffer, type: number): Buffer {
  record.writeUInt32LE(record.length - HEADER, 0);
  record[4] = type;
  record.writeUInt32LE(crc32(record.subarray(HEADER)), 5);
  record.writeUInt32LE(crc32(record.subarray(0, 9)), 9);
  return record;
}

function writeSeq(target: Buffer, seq: number, at: number): void {
  target.writeUInt32BE(Math.floor(seq / TWO_32), at);
  target.writeUInt32BE(seq % TWO_32, at + 4);
}

function readSeq(source: Buffer, at: number): number {
  return source.readUInt32BE(at) * TWO_32 + source.readUInt32BE(at + 4);
}

/**
 * The record of an accepted message, laid out, with its LevelDB key and value as views into it (one allocation, no
 * copy): fill both, then {@link frameAppend}.
 */
export function appendRecordOf(keyLength: number, valueLength: number, sending: boolean): { record: Buffer; key: Buffer; value: Buffer } {
  const record = Buffer.allocUnsafe(HEADER + 3 + keyLength + valueLength);
  record[HEADER] = sending ? 1 : 0;
  record.writeUInt16LE(keyLength, HEADER + 1);
  const keyAt = HEADER + 3;
  return { record, key: record.subarray(keyAt, keyAt + keyLength), value: record.subarray(keyAt + keyLength) };
}

/** An append record's header, once its key and value are written. */
export function frameAppend(record: Buffer): Buffer {
  return frame(record, APPEND);
}

function seqsRecord(type: number, seqs: readonly number[]): Buffer {
  const record = Buffer.allocUnsafe(HEADER + 8 * seqs.length);
  for (let i = 0; i < seqs.length; i++) writeSeq(record, seqs[i] as number, HEADER + 8 * i);
  return frame(record, type);
}

/** The record of a mark: `clientId`'s messages up to `seq` handed out for sending. */
export function markRecord(clientId: string, seq: number): Buffer {
  const record = Buffer.allocUnsafe(HEADER + 8 + Buffer.byteLength(clientId));
  writeSeq(record, seq, HEADER);
  record.write(clientId, HEADER + 8, 'utf8');
  return frame(record, MARK);
}

/** A message of the hot log, live (accepted, not removed, not moved to LevelDB). */
export interface HotMessage {
  readonly clientId: string;
  readonly seq: number;
  readonly key: Buffer;
  readonly value: Buffer;
  readonly bytes: number;
  readonly acceptedAt: number;
  readonly id: string | undefined;
  /** The number of its segment. */
  readonly segment: number;
}

/** What the hot log files held, read at open. */
export interface WalReplay {
  /** The live messages, in seq order: key, value, and whether it had been handed out for sending. */
  readonly live: Array<{ key: Buffer; value: Buffer; sending: boolean; seq: number }>;
  /** The highest seq any record names (live or not), or what a SEQ record says was handed out before. */
  readonly maxSeq: number;
  /** Per device, the highest seq handed out for sending (MARK records and appends made for sending). */
  readonly marks: Map<string, number>;
  readonly tornTailBytes: number;
  readonly corruptBytes: number;
  /** Where damage was found: `file at byte n`. */
  readonly damage: string[];
  readonly files: string[];
  /** The number for the next segment file. */
  readonly nextFile: number;
}

function allZero(bytes: Buffer, from: number): boolean {
  for (let i = from; i < bytes.length; i++) if (bytes[i] !== 0) return false;
  return true;
}

/** Is there a whole, sound record at `at`? Its end, or -1 (damaged), or -2 (cut short by the end of the file). */
function recordAt(bytes: Buffer, at: number): number {
  if (bytes.length - at < HEADER) return -2;
  if (crc32(bytes.subarray(at, at + 9)) !== bytes.readUInt32LE(at + 9)) return -1;
  const end = at + HEADER + bytes.readUInt32LE(at);
  if (end > bytes.length) return -2;
  if (crc32(bytes.subarray(at + HEADER, end)) !== bytes.readUInt32LE(at + 5)) return -1;
  return end;
}

/** Read every hot log file of `dir`: what is live, and what was damaged (nothing after damage is invented). */
export async function replayWal(dir: string): Promise<WalReplay> {
  const files = (await readdir(dir)).filter((f) => NAME.test(f)).sort();
  const live = new Map<number, { key: Buffer; value: Buffer; sending: boolean; seq: number }>();
  const marks = new Map<string, number>();
  const mark = (clientId: string, seq: number): void => {
    if (seq > (marks.get(clientId) ?? 0)) marks.set(clientId, seq);
  };
  let maxSeq = 0;
  let tornTailBytes = 0;
  let corruptBytes = 0;
  const damage: string[] = [];
  for (const file of files) {
    const bytes = await readFile(join(dir, file));
    let at = 0;
    while (at < bytes.length) {
      const end = recordAt(bytes, at);
      if (end === -2) {
        // A write cut short (or space allocated and never written): the file ends here.
        if (!allZero(bytes, at)) {
          tornTailBytes += bytes.length - at;
          damage.push(`${file} at byte ${at}`);
        }
        break;
      }
      if (end < 0) {
        // Damaged: skip to the next sound record (its header has a CRC of its own), counting what was skipped.
        let next = at + 1;
        while (next < bytes.length && recordAt(bytes, next) < 0) next += 1;
        if (next >= bytes.length && allZero(bytes, at)) break;
        corruptBytes += next - at;
        damage.push(`${file} at byte ${at}`);
        at = next;
        continue;
      }
      const type = bytes[at + 4];
      const body = bytes.subarray(at + HEADER, end);
      if (type === APPEND && body.length >= 3) {
        const keyLength = body.readUInt16LE(1);
        const key = Buffer.from(body.subarray(3, 3 + keyLength));
        const seq = readSeq(key, key.length - 8);
        live.set(seq, { key, value: Buffer.from(body.subarray(3 + keyLength)), sending: body[0] === 1, seq });
        if (seq > maxSeq) maxSeq = seq;
        if (body[0] === 1) mark(key.toString('utf8', 1, key.length - 9), seq);
      } else if (type === REMOVE) {
        for (let i = 0; i + 8 <= body.length; i += 8) live.delete(readSeq(body, i));
      } else if (type === SEQ && body.length >= 8) {
        maxSeq = Math.max(maxSeq, readSeq(body, 0) - 1);
      } else if (type === MARK && body.length > 8) {
        mark(body.toString('utf8', 8), readSeq(body, 0));
      }
      at = end;
    }
  }
  const numbers = files.map((f) => Number(NAME.exec(f)?.[1]));
  return {
    live: [...live.values()].sort((a, b) => a.seq - b.seq),
    maxSeq,
    marks,
    tornTailBytes,
    corruptBytes,
    damage,
    files,
    nextFile: numbers.length === 0 ? 1 : Math.max(...numbers) + 1,
  };
}

/** Delete hot log files (after their messages were moved to LevelDB). */
export async function removeWalFiles(dir: string, files: readonly string[]): Promise<void> {
  for (const file of files) await unlink(join(dir, file)).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'ENOENT') throw error;
  });
  if (files.length > 0) await syncDir(dir);
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
  readonly #byDevice = new Map<string, Map<number, HotMessage>>();
  /** Seqs removed whose REMOVE record is not written yet. */
  #removed: number[] = [];
  #bytes = 0;
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

  /** Live messages and the bytes of their records (LevelDB key + value). */
  get size(): number {
    return this.#bySeq.size;
  }

  get bytes(): number {
    return this.#bytes;
  }

  get(seq: number): HotMessage | undefined {
    return this.#bySeq.get(seq);
  }

  /** One device's live messages, in seq order (a live view: do not change the store while iterating). */
  device(clientId: string): Iterable<HotMessage> {
    return this.#byDevice.get(clientId)?.values() ?? [];
  }

  /** Every live message, in seq order. */
  all(): Iterable<HotMessage> {
    return this.#bySeq.values();
  }

  deviceCount(clientId: string): number {
    return this.#byDevice.get(clientId)?.size ?? 0;
  }

  /** Removals are waiting to be written. */
  get removalsPending(): boolean {
    return this.#removed.length > 0;
  }

  /**
   * Write records (appends) and the removals made so far, and fdatasync when `sync`. All or nothing: a failed write
   * is cut back, so no record of it is read at the next open (its appends were refused).
   */
  async write(records: Buffer[], sync: boolean): Promise<void> {
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
      // The file is opened with O_DSYNC: written is durable (`sync` is then always true; kept for the callers' sake).
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
  add(clientId: string, seq: number, key: Buffer, value: Buffer, bytes: number, acceptedAt: number, id: string | undefined): void {
    const segment = this.#segments[this.#segments.length - 1] as Segment;
    const message: HotMessage = { clientId, seq, key, value, bytes, acceptedAt, id, segment: segment.n };
    segment.live += 1;
    this.#bySeq.set(seq, message);
    let device = this.#byDevice.get(clientId);
    if (!device) {
      device = new Map();
      this.#byDevice.set(clientId, device);
    }
    device.set(seq, message);
    this.#bytes += bytes;
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
    const device = this.#byDevice.get(message.clientId);
    device?.delete(seq);
    if (device?.size === 0) this.#byDevice.delete(message.clientId);
    this.#bytes -= message.bytes;
    const segment = this.#segments.find((s) => s.n === message.segment);
    if (segment) segment.live -= 1;
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

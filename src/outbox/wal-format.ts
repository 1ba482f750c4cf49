/**
 * The hot log's files (see wal.ts for what the hot log is and why): their names, the record format, and the replay
 * of what they hold at open. Pure but for reading and deleting the files.
 *
 * A record: a 13-byte header (body length u32 LE, type u8, CRC-32 of the body u32 LE, CRC-32 of the header's first
 * 9 bytes u32 LE), then the body:
 * - APPEND: flags (1: handed out for sending), key length u16 LE, the LevelDB key, the LevelDB value (codec.ts);
 * - REMOVE: seqs (8 bytes each, as in keys) removed from the store (delivered, dropped, refused);
 * - SEQ: the next seq at the time a segment began (so that deleting old segments never lets a seq be handed out twice);
 * - MARK: a device's messages up to a seq were handed out for sending (seq, then the ClientId).
 */
import { readdir, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { syncDir } from '../util/fs.js';
import { clientIdOfMessageKey, readSeq, seqOfMessageKey, writeMessageAt, writeMessageKeyAt, writeSeq, type MessageLayout, type StoredMessage } from './codec.js';

/** A segment is closed, and the next one begun, once it holds this many bytes. */
export const SEGMENT_BYTES = 1024 * 1024;
/** Beyond this many segments the oldest one's live messages move to LevelDB. */
export const MAX_SEGMENTS = 4;

export const HEADER = 13;
export const APPEND = 1;
export const REMOVE = 2;
export const SEQ = 3;
export const MARK = 4;
const NAME = /^hot-(\d{12})\.wal$/;

export const fileName = (n: number): string => `hot-${String(n).padStart(12, '0')}.wal`;

const CRC_TABLE = new Int32Array(256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  CRC_TABLE[n] = c;
}

/**
 * `zlib.crc32` of a record's first 9 bytes, in JavaScript: for 9 bytes the call into zlib (and the view it needs)
 * costs five times the sum, and every record has one (a gateway writes one per message).
 */
export function headerCrc(bytes: Uint8Array, at: number): number {
  let c = -1;
  for (let i = at; i < at + 9; i++) c = (CRC_TABLE[(c ^ (bytes[i] as number)) & 0xff] as number) ^ (c >>> 8);
  return ~c >>> 0;
}

function frame(record: Buffer, type: number): Buffer {
  record.writeUInt32LE(record.length - HEADER, 0);
  record[4] = type;
  record.writeUInt32LE(crc32(record.subarray(HEADER)), 5);
  record.writeUInt32LE(headerCrc(record, 0), 9);
  return record;
}

/** Where an append record's LevelDB key begins (after the header, the flags and the key's length). */
const KEY_AT = HEADER + 3;

/**
 * The record of an accepted message, framed: `clientId`'s `seq` with its LevelDB key and value written straight into
 * it (one allocation, no views; {@link keyOf} and {@link valueOf} make them when needed). The value is unsealed: the
 * record has a CRC of its own.
 */
export function appendRecord(clientId: string, seq: number, message: StoredMessage, layout: MessageLayout, sending: boolean): Buffer {
  const keyLength = Buffer.byteLength(clientId) + 10;
  const record = Buffer.allocUnsafe(KEY_AT + keyLength + layout.length);
  record[HEADER] = sending ? 1 : 0;
  record.writeUInt16LE(keyLength, HEADER + 1);
  writeMessageKeyAt(record, KEY_AT, keyLength, clientId, seq);
  writeMessageAt(record, KEY_AT + keyLength, message, layout);
  return frame(record, APPEND);
}

/** The LevelDB key inside an append record (a view). */
export function keyOf(record: Buffer): Buffer {
  return record.subarray(KEY_AT, KEY_AT + record.readUInt16LE(HEADER + 1));
}

/** The LevelDB value inside an append record (a view; sealing it writes into the record). */
export function valueOf(record: Buffer): Buffer {
  return record.subarray(KEY_AT + record.readUInt16LE(HEADER + 1));
}

export function seqsRecord(type: number, seqs: readonly number[]): Buffer {
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
  if (headerCrc(bytes, at) !== bytes.readUInt32LE(at + 9)) return -1;
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
        const seq = seqOfMessageKey(key);
        live.set(seq, { key, value: Buffer.from(body.subarray(3 + keyLength)), sending: body[0] === 1, seq });
        if (seq > maxSeq) maxSeq = seq;
        if (body[0] === 1) mark(clientIdOfMessageKey(key), seq);
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

/**
 * The framing of the data directory's journal (`state.journal`): records appended one after another, each
 *
 *     u32 LE length of the body | u32 LE CRC-32 of (those 4 length bytes + body) | body
 *
 * so that a record cut short or damaged is told from a whole one. The journal's first record, its header, was made
 * durable on its own before the journal was renamed into place, and says (data-dir-format.ts) how the bodies after it
 * are laid out. Since journal version 2 each body names the write it came in ({@link encodeWrite}):
 *
 *     u32 LE offset in the file where that write begins | u32 LE length of that write | payload
 *
 * and in version 1 the body is the payload. Payloads are JSON objects; what they mean is data-dir-format.ts's.
 *
 * Why writes are named: the journal is appended one write at a time, and each write is fdatasync'd before the next
 * begins (and before any call whose change it holds is answered). A power cut during a write may leave that write's
 * pages on the disk in any order: its second page written and its first not (zeros, or what the page held before), so
 * a damaged record can have whole records after it, of the same write. No earlier write can be damaged that way, as
 * each was durable before the next began. So {@link readFrames} cuts off a last write that is not whole, from its
 * first byte (no call was answered for any of it; damage to a last write that was durable cannot be told from that),
 * and reports damage in a write that another one follows: that write was durable, the file was damaged where it lies
 * (the disk, or a hand), and its records are not dropped silently.
 *
 * A version 1 journal cannot tell one write from another: there a bad record with a whole one anywhere after it is
 * damage, and only a tail holding no whole record is cut off.
 */
import { crc32 } from 'node:zlib';

/** Bytes before each body: its length and its CRC-32. */
export const FRAME_HEADER_BYTES = 8;
/** Bytes at the start of a body that name its write (journal version 2): the write's offset and its length. */
export const WRITE_FIELDS_BYTES = 8;
/** Bytes a record of a named write takes beyond its payload. */
export const WRITE_RECORD_OVERHEAD_BYTES = FRAME_HEADER_BYTES + WRITE_FIELDS_BYTES;
/** Largest body of one record; a length field beyond it is damage, not a record. */
export const MAX_FRAME_PAYLOAD_BYTES = 1024 * 1024;
/** A write's offset and length are u32 fields (the journal is compacted long before: see data-dir.ts). */
const MAX_WRITE_END = 0xffff_ffff;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;

function checkBodyLength(length: number): void {
  if (length === 0 || length > MAX_FRAME_PAYLOAD_BYTES) throw new Error(`Emulator bug: a journal record of ${length} bytes`);
}

/** Frame `body` into `into` at `at`; the bytes it took. */
function frameInto(into: Buffer, at: number, bodyLength: number): number {
  into.writeUInt32LE(bodyLength, at);
  const body = into.subarray(at + FRAME_HEADER_BYTES, at + FRAME_HEADER_BYTES + bodyLength);
  into.writeUInt32LE(crc32(body, crc32(into.subarray(at, at + 4))), at + 4);
  return FRAME_HEADER_BYTES + bodyLength;
}

/** One record, framed, its body as given: the journal's header (and the records of a version 1 journal). */
export function encodeFrame(body: string | Buffer): Buffer {
  const bytes = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  checkBodyLength(bytes.length);
  const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + bytes.length);
  bytes.copy(frame, FRAME_HEADER_BYTES);
  frameInto(frame, 0, bytes.length);
  return frame;
}

/** The bytes of one write appended at `start`: each payload framed, its body naming this write (offset, length). */
export function encodeWrite(payloads: readonly Buffer[], start: number): Buffer {
  let length = 0;
  for (const payload of payloads) {
    checkBodyLength(WRITE_FIELDS_BYTES + payload.length);
    length += WRITE_RECORD_OVERHEAD_BYTES + payload.length;
  }
  if (length === 0 || start + length > MAX_WRITE_END) throw new Error(`Emulator bug: a journal write of ${length} bytes at byte ${start}`);
  const write = Buffer.allocUnsafe(length);
  let at = 0;
  for (const payload of payloads) {
    const fields = at + FRAME_HEADER_BYTES;
    write.writeUInt32LE(start, fields);
    write.writeUInt32LE(length, fields + 4);
    payload.copy(write, fields + WRITE_FIELDS_BYTES);
    at += frameInto(write, at, WRITE_FIELDS_BYTES + payload.length);
  }
  return write;
}

/**
 * The body of the whole, undamaged record starting at `offset`, or `undefined`. The CRC is computed last: scanning a
 * damaged file calls this at every offset, and a CRC over a long body at each would make the scan quadratic, so the
 * cheap tests come first (a plausible length; a JSON object where the payload is, with or without write fields).
 * That keeps the scan linear for zeros and random damage; bytes crafted to pass the cheap tests at many offsets can
 * still make it slow (BENCHMARKS.md), which only a hand-made file in the user's own data dir can be.
 */
export function frameAt(bytes: Buffer, offset: number): Buffer | undefined {
  if (offset + FRAME_HEADER_BYTES > bytes.length) return undefined;
  const length = bytes.readUInt32LE(offset);
  const start = offset + FRAME_HEADER_BYTES;
  if (length === 0 || length > MAX_FRAME_PAYLOAD_BYTES || start + length > bytes.length) return undefined;
  if (bytes[start + length - 1] !== CLOSE_BRACE) return undefined;
  if (bytes[start] !== OPEN_BRACE && (length <= WRITE_FIELDS_BYTES || bytes[start + WRITE_FIELDS_BYTES] !== OPEN_BRACE)) return undefined;
  const body = bytes.subarray(start, start + length);
  return crc32(body, crc32(bytes.subarray(offset, offset + 4))) === bytes.readUInt32LE(offset + 4) ? body : undefined;
}

/** A whole record of a named write at `offset`: its payload, and where its write begins and ends. */
interface WriteRecord {
  readonly payload: Buffer;
  readonly start: number;
  readonly end: number;
}

/** The whole record of a named write at `offset`, lying inside the write it names (else `undefined`). */
function writeRecordAt(bytes: Buffer, offset: number, after = 0): WriteRecord | undefined {
  // Its length and write fields checked before frameAt's CRC, so that a scan of garbage rarely gets that far.
  if (offset + WRITE_RECORD_OVERHEAD_BYTES > bytes.length) return undefined;
  const length = bytes.readUInt32LE(offset);
  if (length <= WRITE_FIELDS_BYTES || length > MAX_FRAME_PAYLOAD_BYTES) return undefined;
  const start = bytes.readUInt32LE(offset + FRAME_HEADER_BYTES);
  if (start < after || start > offset) return undefined;
  const end = start + bytes.readUInt32LE(offset + FRAME_HEADER_BYTES + 4);
  if (offset + FRAME_HEADER_BYTES + length > end) return undefined;
  const body = frameAt(bytes, offset);
  if (!body || body[WRITE_FIELDS_BYTES] !== OPEN_BRACE) return undefined;
  return { payload: body.subarray(WRITE_FIELDS_BYTES), start, end };
}

/** What a journal's bytes hold. */
export interface Frames {
  /** The payloads of the records kept, in order (with named writes: those of the whole writes). */
  readonly payloads: Buffer[];
  /** Where each of {@link Frames.payloads}' records starts. */
  readonly offsets: number[];
  /** Where the records kept end: the file's length, or where the cut-off tail starts. */
  readonly end: number;
  /**
   * `undefined`: the records fill the file. `torn`: from {@link Frames.end} on, a tail to cut off: with named writes the
   * last write, not whole; in version 1, bytes holding no whole record. `damaged`: the record at {@link Frames.bad}
   * is bad, and a later write follows it (version 1: a whole record does): the file was damaged in place.
   */
  readonly tail: 'torn' | 'damaged' | undefined;
  /** Where the first bad record starts (the file's length when the records fill it). */
  readonly bad: number;
}

/**
 * Split a journal's bytes from `from` (the end of its header) into records, named writes (journal version 2) or not
 * (version 1). See the module comment for what a bad record means in each.
 */
export function readFrames(bytes: Buffer, from = 0, namedWrites = false): Frames {
  return namedWrites ? readWrites(bytes, from) : readRecords(bytes, from);
}

function readRecords(bytes: Buffer, from: number): Frames {
  const payloads: Buffer[] = [];
  const offsets: number[] = [];
  let offset = from;
  for (;;) {
    const payload = frameAt(bytes, offset);
    if (!payload) break;
    payloads.push(payload);
    offsets.push(offset);
    offset += FRAME_HEADER_BYTES + payload.length;
  }
  if (offset === bytes.length) return { payloads, offsets, end: offset, tail: undefined, bad: offset };
  for (let later = offset + 1; later + FRAME_HEADER_BYTES < bytes.length; later++) {
    if (frameAt(bytes, later)) return { payloads, offsets, end: offset, tail: 'damaged', bad: offset };
  }
  return { payloads, offsets, end: offset, tail: 'torn', bad: offset };
}

function readWrites(bytes: Buffer, from: number): Frames {
  const payloads: Buffer[] = [];
  const offsets: number[] = [];
  let offset = from;
  // The write the next record belongs to: where it begins, and (once one of its records was read) where it ends.
  let writeStart = from;
  let writeEnd: number | undefined;
  // The records of the writes read whole.
  let kept = 0;
  for (;;) {
    const record = writeRecordAt(bytes, offset);
    if (!record || record.start !== writeStart || (writeEnd !== undefined && record.end !== writeEnd)) break;
    payloads.push(record.payload);
    offsets.push(offset);
    offset += WRITE_RECORD_OVERHEAD_BYTES + record.payload.length;
    writeEnd = record.end;
    if (offset === writeEnd) {
      kept = payloads.length;
      writeStart = offset;
      writeEnd = undefined;
    }
  }
  if (offset === bytes.length && writeEnd === undefined) return { payloads, offsets, end: offset, tail: undefined, bad: offset };
  // The write from writeStart is not whole. It was the last one unless bytes of a later write follow it: past its end
  // when one of its records said where that is; else (its first record is bad) when a whole record after the damage
  // names a later write, or names this one and has bytes past its end.
  let later: boolean;
  if (writeEnd !== undefined) {
    later = bytes.length > writeEnd;
  } else {
    const next = nextWriteRecord(bytes, offset + 1, writeStart);
    later = next !== undefined && (next.start !== writeStart || bytes.length > next.end);
  }
  payloads.length = kept;
  offsets.length = kept;
  return { payloads, offsets, end: writeStart, tail: later ? 'damaged' : 'torn', bad: offset };
}

/** The first whole record at or after `from` of a write beginning at or after `writeStart`. */
function nextWriteRecord(bytes: Buffer, from: number, writeStart: number): WriteRecord | undefined {
  for (let at = from; at + WRITE_RECORD_OVERHEAD_BYTES < bytes.length; at++) {
    const record = writeRecordAt(bytes, at, writeStart);
    if (record) return record;
  }
  return undefined;
}

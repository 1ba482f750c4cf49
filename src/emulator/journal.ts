/**
 * The framing of the data directory's journal (`state.journal`): records appended one after another, each
 *
 *     u32 LE length of the payload | u32 LE CRC-32 of (those 4 length bytes + payload) | payload
 *
 * so that a record cut short or damaged is told from a whole one. What the payloads mean is data-dir.ts's.
 *
 * A journal is only ever appended to, so a power cut mid-append leaves whole records followed by a prefix of the
 * write in flight (or by zeros, where the file system grew the file before its data reached the disk): nothing whole
 * after the first bad byte. A bad record with a whole one somewhere after it was not made by a cut append: the file
 * was damaged in place, and {@link readFrames} says so instead of silently dropping the records after it.
 */
import { crc32 } from 'node:zlib';

/** Bytes before each payload: its length and its CRC-32. */
export const FRAME_HEADER_BYTES = 8;
/** Largest payload of one record; a length field beyond it is damage, not a record. */
export const MAX_FRAME_PAYLOAD_BYTES = 1024 * 1024;

/** One record, framed. */
export function encodeFrame(payload: string | Buffer): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  if (body.length === 0 || body.length > MAX_FRAME_PAYLOAD_BYTES) throw new Error(`Emulator bug: a journal record of ${body.length} bytes`);
  const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + body.length);
  frame.writeUInt32LE(body.length, 0);
  frame.writeUInt32LE(crc32(body, crc32(frame.subarray(0, 4))), 4);
  body.copy(frame, FRAME_HEADER_BYTES);
  return frame;
}

/** The payload of the whole, undamaged record starting at `offset`, or `undefined`. */
function frameAt(bytes: Buffer, offset: number): Buffer | undefined {
  if (offset + FRAME_HEADER_BYTES > bytes.length) return undefined;
  const length = bytes.readUInt32LE(offset);
  if (length === 0 || length > MAX_FRAME_PAYLOAD_BYTES || offset + FRAME_HEADER_BYTES + length > bytes.length) return undefined;
  const payload = bytes.subarray(offset + FRAME_HEADER_BYTES, offset + FRAME_HEADER_BYTES + length);
  return crc32(payload, crc32(bytes.subarray(offset, offset + 4))) === bytes.readUInt32LE(offset + 4) ? payload : undefined;
}

/** What a journal's bytes hold. */
export interface Frames {
  /** The payloads of the whole records, in order, up to the first bad byte. */
  readonly payloads: Buffer[];
  /** Where each of {@link Frames.payloads}' records starts. */
  readonly offsets: number[];
  /** Where the whole records end: the file's length, or the start of the cut-off tail. */
  readonly end: number;
  /**
   * `undefined`: the records fill the file. `torn`: a tail with no whole record in it (a cut append): drop it.
   * `damaged`: a bad record with a whole one after it (the file was damaged in place).
   */
  readonly tail: 'torn' | 'damaged' | undefined;
}

/** Split a journal's bytes into records (see the module comment for what a bad tail means). */
export function readFrames(bytes: Buffer): Frames {
  const payloads: Buffer[] = [];
  const offsets: number[] = [];
  let offset = 0;
  for (;;) {
    const payload = frameAt(bytes, offset);
    if (!payload) break;
    payloads.push(payload);
    offsets.push(offset);
    offset += FRAME_HEADER_BYTES + payload.length;
  }
  if (offset === bytes.length) return { payloads, offsets, end: offset, tail: undefined };
  // A whole record anywhere after the bad one? Cheap to look for: a length read from payload text (JSON, 0x20 and up in
  // every byte) is far beyond MAX_FRAME_PAYLOAD_BYTES, so nearly every offset is rejected by its length alone.
  for (let later = offset + 1; later + FRAME_HEADER_BYTES < bytes.length; later++) {
    if (frameAt(bytes, later)) return { payloads, offsets, end: offset, tail: 'damaged' };
  }
  return { payloads, offsets, end: offset, tail: 'torn' };
}

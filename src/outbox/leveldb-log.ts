/**
 * A read-only check of LevelDB's write-ahead log files, run before the store opens them, so that a torn or damaged
 * log is reported with a typed warning instead of passing silently.
 *
 * Why read the engine's own format: LevelDB recovers a torn log on its own (it replays every complete record and
 * drops an incomplete last one, and skips a damaged 32 KiB block), but it says so only in its text `LOG` file, if at
 * all: an application cannot tell that a power cut ate the last write or that bytes in the middle were bad. The
 * format is small, documented (leveldb `doc/log_format.md`) and has not changed since 2011: 32 KiB blocks of
 * physical records, each with a 7-byte header (masked CRC-32C of the type and data, 2-byte length, 1-byte type:
 * FULL, or FIRST, MIDDLE…, LAST for a record split across blocks). This module only reads; LevelDB still does the
 * recovery. If a file does not look like that format at all, the check reports the damage it sees and LevelDB
 * decides.
 */
import { open } from 'node:fs/promises';

const BLOCK = 32_768;
const HEADER = 7;
const FULL = 1;
const FIRST = 2;
const MIDDLE = 3;
const LAST = 4;

/** What the check found in one log file. */
export interface LogCheck {
  /** Bytes of the file. */
  readonly size: number;
  /** Complete logical records (one per write batch LevelDB committed). */
  readonly records: number;
  /** Bytes after the last complete record that do not form one (a write cut short): LevelDB drops them. */
  readonly tornTailBytes: number;
  /** Bytes before the tail that failed their checksum or framing: LevelDB skips them (and the records they held). */
  readonly corruptBytes: number;
  /** Offset of the first damage (torn or corrupt), or undefined. */
  readonly firstDamageAt: number | undefined;
}

let table: Uint32Array | undefined;

/** CRC-32C (Castagnoli), as LevelDB computes it; `zlib.crc32` is the other polynomial. */
export function crc32c(data: Uint8Array, start = 0, end = data.length, seed = 0): number {
  if (!table) {
    table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
  }
  const t = table;
  let crc = ~seed >>> 0;
  for (let i = start; i < end; i++) crc = (t[(crc ^ (data[i] as number)) & 0xff] as number) ^ (crc >>> 8);
  return ~crc >>> 0;
}

/** LevelDB stores a masked CRC so that a CRC of data containing CRCs is not trivially related. */
function unmask(masked: number): number {
  const rot = (masked - 0xa282ead8) >>> 0;
  return ((rot >>> 17) | (rot << 15)) >>> 0;
}

/** Check a log held in memory (see {@link checkLogFile}). */
export function checkLog(bytes: Uint8Array): LogCheck {
  const size = bytes.length;
  let records = 0;
  let corruptBytes = 0;
  let firstDamageAt: number | undefined;
  /** End of the last complete logical record, or of the last good block padding. */
  let goodEnd = 0;
  /** Inside a record split across blocks (FIRST seen, LAST not yet). */
  let fragmentStart: number | undefined;
  let offset = 0;
  const damage = (at: number): void => {
    firstDamageAt ??= at;
  };
  while (offset < size) {
    const blockEnd = Math.min(size, (Math.floor(offset / BLOCK) + 1) * BLOCK);
    if (blockEnd - offset < HEADER) {
      // A block trailer: the writer pads it with zeros before starting the next block.
      if (blockEnd < size || bytes.subarray(offset, blockEnd).every((b) => b === 0)) {
        if (fragmentStart === undefined) goodEnd = blockEnd;
        offset = blockEnd;
        continue;
      }
      break; // fewer than 7 bytes at the end of the file: a header cut short
    }
    const length = (bytes[offset + 4] as number) | ((bytes[offset + 5] as number) << 8);
    const type = bytes[offset + 6] as number;
    const recordEnd = offset + HEADER + length;
    if (type === 0 && length === 0) {
      // Space a writer preallocated and never filled (zeros): nothing was recorded here.
      const rest = bytes.subarray(offset, blockEnd);
      if (rest.every((b) => b === 0)) {
        if (blockEnd === size) break;
        offset = blockEnd;
        continue;
      }
    }
    if (recordEnd > blockEnd) {
      if (blockEnd === size) break; // the last record is cut short: a torn tail
      damage(offset);
      corruptBytes += blockEnd - offset;
      fragmentStart = undefined;
      offset = blockEnd;
      continue;
    }
    const stored = (bytes[offset] as number) | ((bytes[offset + 1] as number) << 8) | ((bytes[offset + 2] as number) << 16) | ((bytes[offset + 3] as number) << 24);
    const actual = crc32c(bytes, offset + HEADER, recordEnd, crc32c(bytes, offset + 6, offset + 7));
    if (unmask(stored >>> 0) !== actual || type < FULL || type > LAST) {
      // The last record of the file, whole in length but not in content: the last write was cut (torn), not
      // damaged later.
      if (recordEnd === size || (blockEnd === size && bytes.subarray(offset, size).every((b) => b === 0))) break;
      // LevelDB skips the rest of the block after a bad record.
      damage(offset);
      corruptBytes += blockEnd - offset;
      fragmentStart = undefined;
      offset = blockEnd;
      continue;
    }
    if (type === FULL) {
      if (fragmentStart !== undefined) {
        damage(fragmentStart);
        corruptBytes += offset - fragmentStart;
      }
      fragmentStart = undefined;
      records += 1;
      goodEnd = recordEnd;
    } else if (type === FIRST) {
      if (fragmentStart !== undefined) {
        damage(fragmentStart);
        corruptBytes += offset - fragmentStart;
      }
      fragmentStart = offset;
    } else if (fragmentStart === undefined) {
      // A MIDDLE or LAST without its FIRST: the start was in a skipped block.
      damage(offset);
      corruptBytes += recordEnd - offset;
    } else if (type === LAST) {
      fragmentStart = undefined;
      records += 1;
      goodEnd = recordEnd;
    }
    offset = recordEnd;
  }
  const tail = bytes.subarray(goodEnd, size);
  // A tail of zeros only is preallocated space, not a record that was cut.
  const tornTailBytes = tail.every((b) => b === 0) ? 0 : size - goodEnd;
  if (tornTailBytes > 0) damage(goodEnd);
  return { size, records, tornTailBytes, corruptBytes, firstDamageAt };
}

/** Check one LevelDB log file on disk (read whole: a log is at most the write buffer, 4 MiB by default). */
export async function checkLogFile(path: string): Promise<LogCheck> {
  const handle = await open(path, 'r');
  try {
    return checkLog(await handle.readFile());
  } finally {
    await handle.close();
  }
}

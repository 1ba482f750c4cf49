import { describe, expect, it } from 'vitest';
import { checkLog, crc32c } from '../../src/outbox/leveldb-log.js';
import { decodeMessage, encodeMessage, idOf, messageKey, messageRange, seqOfMessageKey } from '../../src/outbox/codec.js';

const BLOCK = 32_768;

/** A LevelDB log writer, as leveldb/db/log_writer.cc: records split across 32 KiB blocks, trailers zero-filled. */
function writeLog(records: Buffer[]): { bytes: Buffer; ends: number[] } {
  const out: Buffer[] = [];
  let offset = 0;
  const ends: number[] = [];
  const physical = (type: number, data: Buffer): void => {
    const header = Buffer.alloc(7);
    const crc = crc32c(data, 0, data.length, crc32c(Buffer.from([type])));
    const masked = ((((crc >>> 15) | (crc << 17)) >>> 0) + 0xa282ead8) >>> 0;
    header.writeUInt32LE(masked, 0);
    header.writeUInt16LE(data.length, 4);
    header[6] = type;
    out.push(header, data);
    offset += 7 + data.length;
  };
  for (const record of records) {
    let left = record;
    let first = true;
    do {
      const room = BLOCK - (offset % BLOCK);
      if (room < 7) {
        out.push(Buffer.alloc(room));
        offset += room;
        continue;
      }
      const fragment = left.subarray(0, room - 7);
      left = left.subarray(fragment.length);
      const last = left.length === 0;
      physical(first && last ? 1 : first ? 2 : last ? 4 : 3, fragment);
      first = false;
    } while (left.length > 0);
    ends.push(offset);
  }
  return { bytes: Buffer.concat(out), ends };
}

describe('LevelDB log check', () => {
  it('computes CRC-32C (the Castagnoli known answer)', () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
  });

  it('counts whole records, also those split across blocks, and finds no damage in a sound log', () => {
    const { bytes } = writeLog([Buffer.alloc(100, 1), Buffer.alloc(70_000, 2), Buffer.alloc(10, 3)]);
    expect(checkLog(bytes)).toEqual({ size: bytes.length, records: 3, tornTailBytes: 0, corruptBytes: 0, firstDamageAt: undefined });
  });

  it('reports a tail cut at every offset of the last record, split across blocks or not', () => {
    for (const sizes of [[100, 200, 300], [100, 40_000]]) {
      const { bytes, ends } = writeLog(sizes.map((n, i) => Buffer.alloc(n, i + 1)));
      const start = ends.at(-2) as number;
      for (let cut = start; cut < bytes.length; cut += cut - start < 400 ? 1 : 97) {
        const check = checkLog(bytes.subarray(0, cut));
        expect(check.records, `cut at ${cut}`).toBe(sizes.length - 1);
        expect(check.corruptBytes, `cut at ${cut}`).toBe(0);
        // A cut just after a block's zero trailer leaves nothing of the record; elsewhere, the bytes written of it.
        expect(check.tornTailBytes, `cut at ${cut}`).toBeLessThanOrEqual(cut - start);
        if (cut - start >= 7) expect(check.tornTailBytes, `cut at ${cut}`).toBeGreaterThan(0);
      }
    }
  });

  it('reports a damaged record before the tail, and counts the records after it', () => {
    const { bytes } = writeLog(Array.from({ length: 400 }, (_, i) => Buffer.alloc(150, i)));
    bytes[1000] = (bytes[1000] as number) ^ 0x01;
    const check = checkLog(bytes);
    expect(check.corruptBytes).toBeGreaterThan(0);
    expect(check.firstDamageAt).toBeLessThanOrEqual(1000);
    expect(check.tornTailBytes).toBe(0);
    expect(check.records).toBeGreaterThan(180);
    expect(check.records).toBeLessThan(400);
  });

  it('takes a zero-filled tail (space preallocated, never written) for nothing', () => {
    const { bytes } = writeLog([Buffer.alloc(100, 1)]);
    expect(checkLog(Buffer.concat([bytes, Buffer.alloc(500)]))).toMatchObject({ records: 1, tornTailBytes: 0, corruptBytes: 0 });
  });
});

describe('outbox records', () => {
  it('round-trips a message with MQTT 5 properties, Buffers included, and refuses one changed by a bit', () => {
    const key = messageKey('GID_a@@@d', 42);
    const message = {
      topic: 't/x',
      payload: Buffer.from([0, 1, 2, 255]),
      qos: 1 as const,
      retain: false,
      properties: { correlationData: Buffer.from('abc'), userProperties: { k: 'v' }, contentType: 'bin' },
      acceptedAt: 1_700_000_000_123,
      id: undefined,
    };
    const value = encodeMessage(key, message);
    expect(decodeMessage(key, value)).toEqual(message);
    expect(idOf(value)).toBeUndefined();
    const withId = { ...message, id: 'reading 42 ✓' };
    const identified = encodeMessage(key, withId);
    expect(decodeMessage(key, identified)).toEqual(withId);
    expect(idOf(identified)).toBe('reading 42 ✓');
    for (const at of [0, 1, 2, 3, 5, 9, value.length - 1]) {
      const bad = Buffer.from(value);
      bad[at] = (bad[at] as number) ^ 1;
      expect(decodeMessage(key, bad), `bit flipped at ${at}`).toBeUndefined();
    }
    expect(decodeMessage(messageKey('GID_a@@@d', 43), value), 'under another key').toBeUndefined();
  });

  it('keeps each device in a range of its own, in seq order, beyond 2^32', () => {
    const { gt, lt } = messageRange('a', 0);
    const inside = [messageKey('a', 1), messageKey('a', 2 ** 32 + 5), messageKey('a', 2 ** 40)];
    const outside = [messageKey('ab', 1), messageKey('a-', 1), messageKey('', 9)];
    for (const key of inside) expect(Buffer.compare(key, gt) > 0 && Buffer.compare(key, lt) < 0).toBe(true);
    for (const key of outside) expect(Buffer.compare(key, gt) > 0 && Buffer.compare(key, lt) < 0).toBe(false);
    expect(inside.map(seqOfMessageKey)).toEqual([1, 2 ** 32 + 5, 2 ** 40]);
    expect(Buffer.compare(inside[0] as Buffer, inside[1] as Buffer)).toBe(-1);
  });
});

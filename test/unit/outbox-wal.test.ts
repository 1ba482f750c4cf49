import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { messageLayout } from '../../src/outbox/codec.js';
import { HotLog, HotMessage, type AppendSink } from '../../src/outbox/wal.js';
import { crc32 } from 'node:zlib';
import { appendRecord, headerCrc, markRecord, replayWal } from '../../src/outbox/wal-format.js';
import { tempDir } from '../helpers/cli.js';

/**
 * The hot log's files on their own (src/outbox/wal.ts): what a replay finds after writes, removals, rotations,
 * damage and a zero-filled tail. The store's behaviour on top is in outbox-store.test.ts and outbox-durability.test.ts.
 */

let dir: string;
const logs: HotLog[] = [];
/** The log is driven directly here: nobody waits for an acceptance. */
const NO_SINK: AppendSink = { accepted: () => undefined, refused: () => undefined };

beforeEach(async () => {
  // Removed after the test by the shared helper (after the afterEach below has closed what the test opened).
  dir = await tempDir('outbox-wal-');
});

afterEach(async () => {
  await Promise.all(logs.splice(0).map((l) => l.close()));
});

async function create(n = 1, nextSeq = 1): Promise<HotLog> {
  const log = await HotLog.create(dir, n, nextSeq);
  logs.push(log);
  return log;
}

/** An append record of `clientId`'s message `seq`, added to the log's memory as the store does once it is written. */
function append(log: HotLog, clientId: string, seq: number, sending = false): Buffer {
  const stored = { topic: `t/${seq}`, payload: Buffer.from(`payload ${seq}`), qos: 1 as const, retain: false, properties: undefined, acceptedAt: 1000 + seq, id: undefined };
  const layout = messageLayout(stored);
  const record = appendRecord(clientId, seq, stored, layout, sending);
  log.add(new HotMessage(clientId, seq, record, Buffer.byteLength(clientId) + 10 + layout.length, stored.acceptedAt, undefined, sending, NO_SINK, undefined));
  return record;
}

const files = async () => (await readdir(dir)).filter((f) => f.endsWith('.wal')).sort();

describe('hot log replay', () => {
  it('gives back the live messages in seq order, without the removed ones, and the highest seq ever named', async () => {
    const log = await create();
    await log.write([append(log, 'a', 1), append(log, 'b', 2), append(log, 'a', 3, true)]);
    log.remove(2);
    await log.write([append(log, 'a', 4)]);
    const replay = await replayWal(dir);
    expect(replay.live.map((m) => [m.seq, m.sending])).toEqual([
      [1, false],
      [3, true],
      [4, false],
    ]);
    expect(replay.maxSeq).toBe(4);
    expect(replay.marks).toEqual(new Map([['a', 3]]));
    expect([replay.tornTailBytes, replay.corruptBytes]).toEqual([0, 0]);
    expect(replay.nextFile).toBe(2);
  });

  it('a removal in a later segment applies to a message of an earlier one; dead segments are deleted oldest first', async () => {
    const log = await create();
    await log.write([append(log, 'a', 1), append(log, 'a', 2)]);
    await log.rotate(3);
    await log.write([append(log, 'a', 3)]);
    log.remove(1);
    await log.write([]);
    expect(await files()).toHaveLength(2);
    let replay = await replayWal(dir);
    expect(replay.live.map((m) => m.seq)).toEqual([2, 3]);
    // The first segment is dead once 2 is removed too; the active one never goes.
    log.remove(2);
    await log.write([]);
    expect(log.deadPrefix).toBe(true);
    expect(await log.dropDead()).toBe(1);
    expect(await files()).toEqual(['hot-000000000002.wal']);
    replay = await replayWal(dir);
    expect(replay.live.map((m) => m.seq)).toEqual([3]);
  });

  it('seqs stay counted after every segment that named them is gone (the SEQ record of each new segment)', async () => {
    const log = await create(1, 1);
    await log.write([append(log, 'a', 1), append(log, 'a', 2)]);
    log.remove(1);
    log.remove(2);
    await log.write([]);
    await log.rotate(3);
    await log.dropDead();
    const replay = await replayWal(dir);
    expect(replay.live).toEqual([]);
    expect(replay.maxSeq).toBe(2);
  });

  it('marks: the highest seq handed out per device', async () => {
    const log = await create();
    await log.write([append(log, 'a', 1), append(log, 'a', 2), markRecord('a', 2), markRecord('b', 7), markRecord('a', 1)]);
    expect((await replayWal(dir)).marks).toEqual(new Map([['a', 2], ['b', 7]]));
  });

  it('a zero-filled tail (space allocated, never written) is neither torn nor damaged', async () => {
    const log = await create();
    await log.write([append(log, 'a', 1)]);
    const [file] = await files();
    const path = join(dir, file as string);
    await writeFile(path, Buffer.concat([await readFile(path), Buffer.alloc(4096)]));
    const replay = await replayWal(dir);
    expect(replay.live.map((m) => m.seq)).toEqual([1]);
    expect([replay.tornTailBytes, replay.corruptBytes]).toEqual([0, 0]);
  });

  it('a damaged header: the reader finds the next sound record; the bytes skipped are counted, and where', async () => {
    const log = await create();
    const records = [append(log, 'a', 1), append(log, 'a', 2), append(log, 'a', 3)];
    await log.write(records);
    const [file] = await files();
    const path = join(dir, file as string);
    const bytes = await readFile(path);
    // The length field of record 2 (after the SEQ record and record 1).
    const at = bytes.length - (records[1] as Buffer).length - (records[2] as Buffer).length;
    bytes[at + 1] = (bytes[at + 1] as number) ^ 0x40;
    await writeFile(path, bytes);
    const replay = await replayWal(dir);
    expect(replay.live.map((m) => m.seq)).toEqual([1, 3]);
    expect(replay.corruptBytes).toBe((records[1] as Buffer).length);
    expect(replay.damage).toEqual([`${file} at byte ${at}`]);
  });

  it('a move waits for the reads running, and a read asked during a move waits for it (a read never sees half a move)', async () => {
    const log = await create();
    const order: string[] = [];
    let endRead!: () => void;
    const reading = log.read(async () => {
      order.push('read 1 starts');
      await new Promise<void>((resolve) => (endRead = resolve));
      order.push('read 1 ends');
    });
    let endMove!: () => void;
    let moveStarted!: () => void;
    const started = new Promise<void>((resolve) => (moveStarted = resolve));
    const moving = log.exclusive(async () => {
      order.push('move starts');
      moveStarted();
      await new Promise<void>((resolve) => (endMove = resolve));
      order.push('move ends');
    });
    const second = log.read(async () => {
      order.push('read 2');
    });
    endRead();
    await started;
    expect(order).toEqual(['read 1 starts', 'read 1 ends', 'move starts']);
    endMove();
    await Promise.all([reading, moving, second]);
    expect(order).toEqual(['read 1 starts', 'read 1 ends', 'move starts', 'move ends', 'read 2']);
  });

  it('a failed write is cut back: none of its records is read at the next open', async () => {
    const log = await create();
    await log.write([append(log, 'a', 1)]);
    const [file] = await files();
    const before = (await readFile(join(dir, file as string))).length;
    // A write that cannot happen (the handle closed under it) fails as a full disk would, after nothing or a part.
    await log.close();
    await expect(log.write([append(log, 'a', 2)])).rejects.toThrow();
    expect((await readFile(join(dir, file as string))).length).toBe(before);
    expect((await replayWal(dir)).live.map((m) => m.seq)).toEqual([1]);
  });
});

describe('headerCrc', () => {
  it('is zlib.crc32 of the 9 bytes at the offset (the format the files were written with)', () => {
    const bytes = Buffer.alloc(64);
    for (let trial = 0; trial < 500; trial++) {
      for (let i = 0; i < bytes.length; i++) bytes[i] = (trial * 131 + i * 197 + ((trial * i) % 251)) & 0xff;
      const at = trial % 50;
      expect(headerCrc(bytes, at)).toBe(crc32(bytes.subarray(at, at + 9)));
    }
    expect(headerCrc(Buffer.alloc(9, 0xff), 0)).toBe(crc32(Buffer.alloc(9, 0xff)));
  });
});

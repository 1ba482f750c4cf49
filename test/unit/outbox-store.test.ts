import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { OutboxError, isApsaraMqDeviceError } from '../../src/errors.js';
import { openOutboxStore, type OutboxDrop, type OutboxStore } from '../../src/outbox/index.js';
import { tempDir } from '../helpers/cli.js';

let dir: string;
const open: OutboxStore[] = [];

beforeEach(async () => {
  // Removed after the test by the shared helper (after the afterEach below has closed what the test opened).
  dir = await tempDir('outbox-unit-');
});

afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close()));
});

async function openStore(options: Partial<Parameters<typeof openOutboxStore>[0]> = {}): Promise<OutboxStore> {
  const store = await openOutboxStore({ dir, ...options });
  open.push(store);
  return store;
}

const msg = (n: number, size = 10) => ({ topic: `t/${n}`, payload: Buffer.alloc(size, n % 256), qos: 1 as const });

describe('OutboxStore basics', () => {
  it('appends, reads in order per device, acks, and keeps everything across a clean reopen', async () => {
    let store = await openStore();
    const seqs = await Promise.all([0, 1, 2, 3, 4, 5].map((n) => store.append(n % 2 ? 'dev-b' : 'dev-a', msg(n))));
    expect(seqs.map((s) => s.seq)).toEqual([1, 2, 3, 4, 5, 6]);
    expect((await store.pending('dev-a')).map((m) => m.topic)).toEqual(['t/0', 't/2', 't/4']);
    expect(await store.ack('dev-a', 3)).toBe(true);
    expect(await store.ack('dev-a', 3)).toBe(false);
    expect(store.stats()).toMatchObject({ messages: 5, devices: 2, accepted: 6, delivered: 1 });
    await store.close();
    open.length = 0;
    store = await openStore();
    expect(store.recovery).toMatchObject({ uncleanShutdown: false, messages: 5, possibleDuplicates: 0 });
    expect((await store.pending('dev-a')).map((m) => [m.seq, m.topic, m.payload[0]])).toEqual([[1, 't/0', 0], [5, 't/4', 4]]);
    expect(store.devices().sort()).toEqual(['dev-a', 'dev-b']);
    expect((await store.append('dev-a', msg(9))).seq).toBe(7);
  });

  it('pages with after and limit', async () => {
    const store = await openStore();
    for (let n = 0; n < 10; n++) await store.append('d', msg(n));
    const first = await store.pending('d', { limit: 4 });
    expect(first.map((m) => m.seq)).toEqual([1, 2, 3, 4]);
    const next = await store.pending('d', { after: 4, limit: 100 });
    expect(next.map((m) => m.seq)).toEqual([5, 6, 7, 8, 9, 10]);
  });

  it('refuses new messages at maxMessages under refuse-new (OutboxFull, retryable), counted', async () => {
    const store = await openStore({ maxMessages: 3 });
    for (let n = 0; n < 3; n++) await store.append('d', msg(n));
    const error = await store.append('d', msg(3)).catch((e: unknown) => e);
    expect(isApsaraMqDeviceError(error, 'OutboxFull')).toBe(true);
    expect((error as OutboxError).retryable).toBe(true);
    expect(store.stats().refused.full).toBe(1);
  });

  it('drops the oldest under drop-oldest, each reported', async () => {
    const store = await openStore({ maxMessages: 3, whenFull: 'drop-oldest' });
    const drops: OutboxDrop[] = [];
    store.on('drop', (d) => drops.push(d));
    for (let n = 0; n < 5; n++) await store.append(n % 2 ? 'b' : 'a', msg(n));
    expect(drops.map((d) => [d.clientId, d.seq, d.reason])).toEqual([['a', 1, 'full'], ['b', 2, 'full']]);
    expect(store.stats()).toMatchObject({ messages: 3, dropped: { full: 2, expired: 0, corrupt: 0, rejected: 0 } });
  });

  it('expires by the injected clock', async () => {
    let now = 1_000_000;
    const store = await openStore({ ttlMs: 1000, clock: () => now });
    const drops: OutboxDrop[] = [];
    store.on('drop', (d) => drops.push(d));
    await store.append('d', msg(1));
    now += 500;
    await store.append('d', msg(2));
    now += 600;
    expect((await store.pending('d')).map((m) => m.seq)).toEqual([2]);
    expect(await store.expire()).toBe(1);
    expect(drops).toMatchObject([{ clientId: 'd', seq: 1, reason: 'expired' }]);
  });

  it("keeps the application's id with a message and gives it back in every report: pending, drop, reject; across a reopen", async () => {
    let now = 1_000_000;
    let store = await openStore({ ttlMs: 1000, clock: () => now });
    await store.append('d', { ...msg(1), id: 'reading-1' });
    await store.append('d', { ...msg(2), id: 'ünïcode-2' });
    await store.append('d', msg(3));
    await store.close();
    open.length = 0;
    store = await openStore({ ttlMs: 1000, clock: () => now, maxMessages: 3, whenFull: 'drop-oldest' });
    const drops: OutboxDrop[] = [];
    store.on('drop', (d) => drops.push(d));
    expect((await store.pending('d')).map((m) => m.id)).toEqual(['reading-1', 'ünïcode-2', undefined]);
    expect(store.device('d')).toMatchObject({ messages: 3 });
    expect(store.device('nobody')).toEqual({ messages: 0, bytes: 0 });
    // The broker refused seq 2: removed, reported with its id, counted apart from deliveries.
    expect(await store.reject('d', 2)).toBe(true);
    expect(await store.reject('d', 2)).toBe(false);
    await store.append('d', { ...msg(4), id: 'reading-4' });
    await store.append('d', { ...msg(5), id: 'reading-5' }); // over maxMessages: the oldest, seq 1, goes
    now += 2000;
    await store.expire();
    expect(drops.map((d) => [d.seq, d.reason, d.id])).toEqual([
      [2, 'rejected', 'ünïcode-2'],
      [1, 'full', 'reading-1'],
      [3, 'expired', undefined],
      [4, 'expired', 'reading-4'],
      [5, 'expired', 'reading-5'],
    ]);
    expect(store.stats()).toMatchObject({ messages: 0, delivered: 0, dropped: { full: 1, expired: 3, corrupt: 0, rejected: 1 } });
    await expect(store.append('d', { ...msg(6), id: 'x'.repeat(256) })).rejects.toMatchObject({ code: 'InvalidOption', message: expect.stringContaining('255 bytes') });
    await expect(store.append('d', { ...msg(6), id: '' })).rejects.toMatchObject({ code: 'InvalidOption' });
  });

  it('does not print payloads', async () => {
    const store = await openStore();
    await store.append('d', { topic: 't', payload: 'secret-payload' });
    const [m] = await store.pending('d');
    expect(inspect(m)).not.toContain('secret');
    expect(inspect(store)).not.toContain('secret');
    expect(JSON.stringify(store)).not.toContain('secret');
  });
});

describe('OutboxStore.appendTo (the durable feed\'s way in: a sink per batch, no promise per message)', () => {
  it('tells the sink of each write in seq order after its batch, with its token; a refusal before queueing throws', async () => {
    const store = await openStore({ maxMessages: 3 });
    const told: string[] = [];
    const sink = { accepted: (token: unknown, seq: number) => told.push(`${String(token)} ${seq}`), refused: (token: unknown) => told.push(`${String(token)} refused`) };
    const seqs = [1, 2, 3].map((n) => store.appendTo('d', msg(n), false, sink, `m${n}`));
    expect(seqs).toEqual([1, 2, 3]);
    // Nothing is told before the batch is written.
    expect(told).toEqual([]);
    await store.flush();
    expect(told).toEqual(['m1 1', 'm2 2', 'm3 3']);
    // Full under refuse-new: thrown at once, nothing queued, nothing told.
    let error: unknown;
    try {
      store.appendTo('d', msg(4), false, sink, 'm4');
    } catch (e) {
      error = e;
    }
    expect(isApsaraMqDeviceError(error, 'OutboxFull')).toBe(true);
    await store.flush();
    expect(told).toHaveLength(3);
    expect((await store.pending('d')).map((m) => m.seq)).toEqual([1, 2, 3]);
  });
});

describe('OutboxStore bounds', () => {
  it('1 MB under refuse-new: never above the bound, every refusal an OutboxFull, nothing dropped', async () => {
    const store = await openStore({ maxBytes: 1_000_000, whenFull: 'refuse-new' });
    const drops: OutboxDrop[] = [];
    store.on('drop', (d) => drops.push(d));
    let accepted = 0;
    let refused = 0;
    // 30 at a time: each group shares a commit, as a busy gateway's would.
    for (let n = 0; n < 3000; n += 30) {
      const outcomes = await Promise.all(
        Array.from({ length: 30 }, (_, i) => store.append(`dev-${(n + i) % 7}`, msg(n + i, 100 + ((n + i) % 900))).then(() => 'ok', (e: unknown) => (e as OutboxError).code)),
      );
      for (const outcome of outcomes) {
        if (outcome === 'ok') accepted += 1;
        else {
          expect(outcome).toBe('OutboxFull');
          refused += 1;
        }
      }
      expect(store.stats().bytes).toBeLessThanOrEqual(1_000_000);
    }
    expect(refused).toBeGreaterThan(0);
    expect(drops).toEqual([]);
    expect(store.stats()).toMatchObject({ messages: accepted, accepted, refused: { full: refused, diskFull: 0 } });
  });

  it('1 MB under drop-oldest: never above the bound, the oldest of any device dropped first, each drop an event counted by reason', async () => {
    const store = await openStore({ maxBytes: 1_000_000, whenFull: 'drop-oldest' });
    const drops: OutboxDrop[] = [];
    store.on('drop', (d) => drops.push(d));
    const appended: number[] = [];
    for (let n = 0; n < 3000; n += 30) {
      const results = await Promise.all(Array.from({ length: 30 }, (_, i) => store.append(`dev-${(n + i) % 7}`, msg(n + i, 100 + ((n + i) % 900)))));
      appended.push(...results.map((r) => r.seq));
      expect(store.stats().bytes).toBeLessThanOrEqual(1_000_000);
    }
    const stats = store.stats();
    expect(drops.length).toBeGreaterThan(0);
    expect(drops.every((d) => d.reason === 'full' && d.bytes > 0)).toBe(true);
    expect(stats.dropped).toEqual({ full: drops.length, expired: 0, corrupt: 0, rejected: 0 });
    expect(stats.messages + drops.length).toBe(3000);
    // Oldest first, store-wide: the dropped are exactly the first seqs.
    expect(drops.map((d) => d.seq)).toEqual(appended.slice(0, drops.length));
    let remaining = 0;
    for (const id of store.devices()) remaining += (await store.pending(id, { limit: 10_000 })).length;
    expect(remaining).toBe(stats.messages);
  });

  it('drop-oldest keeps messages in flight, and refuses the new one when everything older is in flight', async () => {
    const store = await openStore({ maxMessages: 3, whenFull: 'drop-oldest' });
    const drops: OutboxDrop[] = [];
    store.on('drop', (d) => drops.push(d));
    for (let n = 1; n <= 3; n++) await store.append('a', msg(n));
    await store.markSending('a', 2);
    await store.append('b', msg(4));
    expect(drops.map((d) => d.seq)).toEqual([3]);
    await store.markSending('b', 4);
    const error = await store.append('b', msg(5)).catch((e: unknown) => e);
    expect(isApsaraMqDeviceError(error, 'OutboxFull')).toBe(true);
    store.clearSending('a');
    await store.append('b', msg(6));
    expect(drops.map((d) => d.seq)).toEqual([3, 1]);
  });

  it('drop-oldest, one write of more messages than the bound: its oldest are accepted and dropped at once (reported after their acceptance), its newest kept', async () => {
    const store = await openStore({ maxMessages: 3, whenFull: 'drop-oldest' });
    const order: string[] = [];
    store.on('drop', (d) => order.push(`drop ${d.seq} ${d.reason} ${d.id}`));
    const all = [1, 2, 3, 4, 5].map((n) => store.append('d', { ...msg(n), id: `m${n}` }).then(({ seq }) => order.push(`accepted ${seq}`)));
    await Promise.all(all);
    await store.flush();
    expect(order).toEqual(['accepted 1', 'accepted 2', 'accepted 3', 'accepted 4', 'accepted 5', 'drop 1 full m1', 'drop 2 full m2']);
    expect((await store.pending('d')).map((m) => m.id)).toEqual(['m3', 'm4', 'm5']);
    expect(store.stats()).toMatchObject({ messages: 3, accepted: 5, dropped: { full: 2 } });
  });

  it('a message larger than maxBytes is refused for good (OutboxFull, not retryable)', async () => {
    const store = await openStore({ maxBytes: 4096 });
    const error = await store.append('d', msg(1, 5000)).catch((e: unknown) => e);
    expect(isApsaraMqDeviceError(error, 'OutboxFull')).toBe(true);
    expect((error as OutboxError).retryable).toBe(false);
  });

  it('TTL across a power cut: 1 h TTL, 4 h outage: expired at the next open, reported, never read back', async () => {
    let now = Date.parse('2026-01-01T00:00:00Z');
    const clock = () => now;
    let store = await openStore({ ttlMs: 3_600_000, clock });
    const { seq: oldSeq } = await store.append('d', msg(1));
    now += 30 * 60_000;
    const { seq: newerSeq } = await store.append('d', msg(2));
    await store.close();
    open.length = 0;
    now += 4 * 3_600_000;
    store = await openStore({ ttlMs: 3_600_000, clock });
    const drops: OutboxDrop[] = [];
    store.on('drop', (d) => drops.push(d));
    expect(await store.pending('d')).toEqual([]);
    await store.flush();
    expect(drops.map((d) => [d.seq, d.reason])).toEqual([[oldSeq, 'expired'], [newerSeq, 'expired']]);
    expect(store.stats()).toMatchObject({ messages: 0, dropped: { expired: 2 } });
  });

  it('a message in flight on a live connection does not expire; once the connection is lost, it does', async () => {
    let now = 1_000_000;
    const store = await openStore({ ttlMs: 1000, clock: () => now });
    const { seq } = await store.append('d', msg(1), { sending: true });
    now += 5000;
    expect(await store.expire()).toBe(0);
    expect((await store.pending('d')).map((m) => [m.seq, m.sentBefore])).toEqual([[seq, true]]);
    store.clearSending('d');
    expect(await store.expire()).toBe(1);
    expect(await store.ack('d', seq)).toBe(false);
  });
});

describe('OutboxStore duplicates, checks and errors', () => {
  it('messages handed out for sending and not acknowledged are possible duplicates after a restart', async () => {
    let store = await openStore();
    for (let n = 1; n <= 5; n++) await store.append('d', msg(n));
    await store.markSending('d', 3);
    await store.ack('d', 1);
    await store.close();
    open.length = 0;
    store = await openStore();
    expect(store.recovery).toMatchObject({ uncleanShutdown: false, messages: 4, possibleDuplicates: 2 });
    expect((await store.pending('d')).map((m) => [m.seq, m.sentBefore])).toEqual([[2, true], [3, true], [4, false], [5, false]]);
  });

  it('a record damaged on disk is never returned: removed and reported as corrupt', async () => {
    let store = await openStore();
    for (let n = 1; n <= 3; n++) await store.append('d', msg(n));
    await store.close();
    // Opening moves the hot log's messages into LevelDB.
    await (await openStore()).close();
    open.length = 0;
    // Into the store's own LevelDB, as a flipped bit on disk would: the value of seq 2 with one payload byte changed.
    const { ClassicLevel } = await import('classic-level');
    const db = new ClassicLevel<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    const keys = await db.keys().all();
    const key = keys.find((k) => k[0] === 0x6d && k.readUInt32BE(k.length - 4) === 2) as Buffer;
    const value = (await db.get(key)) as Buffer;
    value[value.length - 1] = (value[value.length - 1] as number) ^ 1;
    await db.put(key, value);
    await db.close();
    store = await openStore();
    const drops: OutboxDrop[] = [];
    store.on('drop', (d) => drops.push(d));
    expect((await store.pending('d')).map((m) => m.seq)).toEqual([1, 3]);
    await store.flush();
    expect(drops).toMatchObject([{ clientId: 'd', seq: 2, reason: 'corrupt' }]);
    expect(store.stats()).toMatchObject({ messages: 2, dropped: { corrupt: 1 } });
  });

  it('checks options and arguments with typed errors naming them', async () => {
    await expect(openOutboxStore({ dir: '' })).rejects.toMatchObject({ code: 'InvalidOption' });
    await expect(openOutboxStore({ dir, maxBytes: 10 })).rejects.toThrow(/maxBytes/);
    await expect(openOutboxStore({ dir, whenFull: 'drop-newest' as never })).rejects.toThrow(/whenFull/);
    await expect(openOutboxStore({ dir, ttlMs: 0 })).rejects.toThrow(/ttlMs/);
    const store = await openStore();
    await expect(store.append('', msg(1))).rejects.toMatchObject({ code: 'InvalidClientId' });
    await expect(store.append('a\0b', msg(1))).rejects.toMatchObject({ code: 'InvalidClientId' });
    await expect(store.append('d', { topic: '', payload: 'x' })).rejects.toMatchObject({ code: 'InvalidTopic' });
    await expect(store.append('d', { topic: 't', payload: 'x', qos: 3 as never })).rejects.toMatchObject({ code: 'InvalidOption' });
    await expect(store.ack('d', -1)).rejects.toMatchObject({ code: 'InvalidOption' });
    await store.close();
    await expect(store.append('d', msg(1))).rejects.toMatchObject({ code: 'OutboxClosed' });
    await expect(store.pending('d')).rejects.toMatchObject({ code: 'OutboxClosed' });
  });

  it('an OutboxFull error names the bound, never the message', async () => {
    const store = await openStore({ maxMessages: 1 });
    await store.append('d', { topic: 'secret/topic', payload: 'secret-payload' });
    const error = (await store.append('d', { topic: 'secret/topic', payload: 'secret-payload' }).catch((e: unknown) => e)) as OutboxError;
    expect(error.code).toBe('OutboxFull');
    expect(`${error.message} ${JSON.stringify(error)} ${inspect(error)}`).not.toMatch(/secret/);
  });
});

describe('OutboxStore hot log (wal.ts) and LevelDB', () => {
  const walFiles = async () => (await readdir(dir)).filter((f) => /^hot-\d+\.wal$/.test(f));
  const payloadOf = (seq: number) => Buffer.alloc(2000, seq % 251);

  it('a long outage: past the hot log bound the oldest move to LevelDB; every message stays readable in order, acks of both kinds hold across reopens', async () => {
    let store = await openStore({ maxMessages: 1_000_000, maxBytes: 2 ** 30 });
    const seqs: number[] = [];
    // 8 MiB of two devices, never acknowledged: more than the hot log holds (4 segments of 1 MiB).
    for (let i = 0; i < 4200; i++) {
      const device = i % 2 ? 'b' : 'a';
      const { seq } = await store.append(device, { topic: `t/${device}`, payload: payloadOf(i + 1), qos: 1 }, { sending: i < 10 });
      seqs.push(seq);
    }
    expect((await walFiles()).length).toBeLessThanOrEqual(5);
    const a = await store.pending('a', { limit: 10_000 });
    expect(a.map((m) => m.seq)).toEqual(seqs.filter((_, i) => i % 2 === 0));
    expect(a.every((m, i) => m.payload.equals(payloadOf(2 * i + 1)))).toBe(true);
    // The first messages are in LevelDB now, the last ones in the hot log: acknowledge some of each.
    const first = a.slice(0, 3).map((m) => m.seq);
    const last = a.slice(-3).map((m) => m.seq);
    expect(await store.ackAll('a', [...first, ...last])).toBe(6);
    expect(store.stats().messages).toBe(4200 - 6);
    await store.close();
    open.length = 0;
    store = await openStore();
    const again = await store.pending('a', { limit: 10_000 });
    expect(again.map((m) => m.seq)).toEqual(a.slice(3, -3).map((m) => m.seq));
    expect((await store.pending('b', { limit: 10_000 })).length).toBe(2100);
    // Handed out for sending before the restart and not acknowledged: possible duplicates (5 of b, 2 of a).
    expect(store.recovery.possibleDuplicates).toBe(7);
    // The open moved the hot log into LevelDB and began a fresh one.
    expect((await walFiles()).length).toBe(1);
  });

  it('online: what is delivered never reaches LevelDB, and the hot log deletes its dead segments (no file grows without bound)', async () => {
    const store = await openStore();
    for (let round = 0; round < 30; round++) {
      const batch = await Promise.all(Array.from({ length: 100 }, (_, i) => store.append('d', { topic: 't/d', payload: payloadOf(i), qos: 1 }, { sending: true })));
      await store.ackAll('d', batch.map((b) => b.seq));
    }
    await store.flush();
    // 6 MiB written and delivered: at most the active segment and the one before it remain.
    expect((await walFiles()).length).toBeLessThanOrEqual(2);
    expect(store.stats()).toMatchObject({ messages: 0, accepted: 3000, delivered: 3000 });
    const next = await store.append('d', msg(1));
    expect(next.seq).toBe(3001);
  });

  it('seqs are never handed out twice, even once every segment that named them is deleted', async () => {
    let store = await openStore();
    let last = 0;
    for (let i = 0; i < 1200; i++) {
      const { seq } = await store.append('d', { topic: 't/d', payload: payloadOf(i), qos: 1 });
      await store.ack('d', seq);
      last = seq;
    }
    await store.close();
    open.length = 0;
    store = await openStore();
    expect((await store.append('d', msg(1))).seq).toBe(last + 1);
  });
});

describe('the outbox module', () => {
  it('imports nothing of the other roles (only errors and util from outside its folder)', async () => {
    const folder = join(import.meta.dirname, '../../src/outbox');
    for (const file of await readdir(folder)) {
      const source = await readFile(join(folder, file), 'utf8');
      const outside = [...source.matchAll(/from '(\.\.\/[^']+)'/g)].map((m) => m[1]);
      for (const path of outside) expect(path, `${file} imports ${path}`).toMatch(/^\.\.\/(errors\.js|util\/)/);
    }
  });
});

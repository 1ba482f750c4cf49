import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { OutboxError, isApsaraMqDeviceError } from '../../src/errors.js';
import { openOutboxStore, type OutboxDrop, type OutboxStore } from '../../src/outbox/index.js';

let dir: string;
const open: OutboxStore[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'outbox-unit-'));
});

afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close()));
  await rm(dir, { recursive: true, force: true });
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
    expect(store.stats()).toMatchObject({ messages: 3, dropped: { full: 2, expired: 0, corrupt: 0 } });
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

  it('does not print payloads', async () => {
    const store = await openStore();
    await store.append('d', { topic: 't', payload: 'secret-payload' });
    const [m] = await store.pending('d');
    expect(inspect(m)).not.toContain('secret');
    expect(inspect(store)).not.toContain('secret');
    expect(JSON.stringify(store)).not.toContain('secret');
  });
});

import { mkdtemp, readdir, readlink, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { openOutboxStore, type OutboxError, type OutboxStore } from '../../src/outbox/index.js';

/**
 * The hot log and LevelDB at the moments they meet: a batch whose LevelDB part fails, an acknowledgement or a read
 * while messages move from the hot log to LevelDB, and close() during that move. These moments last milliseconds,
 * so the test holds them open: LevelDB's batch write and iterator read are wrapped (the only thing not real here) to
 * fail on demand (as ENOSPC would) or to wait for a gate the test opens. Found by review of the hot log (s27).
 */

type Gate = { opened: Promise<void>; open: () => void; reached: Promise<void>; reach: () => void };
function gate(): Gate {
  const g = {} as Gate;
  g.opened = new Promise((resolve) => (g.open = resolve));
  g.reached = new Promise((resolve) => (g.reach = resolve));
  return g;
}

let batchProto: { write: (...args: unknown[]) => Promise<void> };
let iteratorProto: { all: (...args: unknown[]) => Promise<unknown> };
let realWrite: (...args: unknown[]) => Promise<void>;
let realAll: (...args: unknown[]) => Promise<unknown>;
/** What the next LevelDB batch write does: fail, or wait at a gate; then back to normal. */
let nextWrite: { fail: true } | { gate: Gate } | undefined;
/** The iterator read (counted from 0 since `reads` was reset) that waits at a gate. */
let readGate: { at: number; gate: Gate } | undefined;
let reads = 0;

beforeAll(async () => {
  const probeDir = await mkdtemp(join(tmpdir(), 'outbox-probe-'));
  const probe = new ClassicLevel(probeDir);
  await probe.open();
  batchProto = Object.getPrototypeOf(probe.batch());
  const iterator = probe.iterator();
  iteratorProto = Object.getPrototypeOf(Object.getPrototypeOf(iterator));
  await iterator.close();
  await probe.close();
  await rm(probeDir, { recursive: true, force: true });
  realWrite = batchProto.write;
  realAll = iteratorProto.all;
  batchProto.write = async function (this: unknown, ...args: unknown[]) {
    const now = nextWrite;
    nextWrite = undefined;
    if (now && 'fail' in now) throw Object.assign(new Error('No space left on device'), { code: 'ENOSPC' });
    if (now && 'gate' in now) {
      now.gate.reach();
      await now.gate.opened;
    }
    return realWrite.apply(this, args);
  };
  iteratorProto.all = async function (this: unknown, ...args: unknown[]) {
    const n = reads++;
    if (readGate && n === readGate.at) {
      readGate.gate.reach();
      await readGate.gate.opened;
    }
    return realAll.apply(this, args);
  };
});

afterAll(() => {
  batchProto.write = realWrite;
  iteratorProto.all = realAll;
});

let dir: string;
const open: OutboxStore[] = [];
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'outbox-races-'));
  nextWrite = undefined;
  readGate = undefined;
});
afterEach(async () => {
  nextWrite = undefined;
  readGate = undefined;
  await Promise.all(open.splice(0).map((s) => s.close()));
  await rm(dir, { recursive: true, force: true });
});

async function openStore(): Promise<OutboxStore> {
  const store = await openOutboxStore({ dir, maxMessages: 1_000_000, maxBytes: 2 ** 30 });
  store.on('warning', () => undefined);
  open.push(store);
  return store;
}

async function reopen(store: OutboxStore): Promise<OutboxStore> {
  await store.close();
  open.splice(open.indexOf(store), 1);
  return openStore();
}

const hotFiles = async () => (await readdir(dir)).filter((f) => /^hot-\d+\.wal$/.test(f)).sort();

/** Fill the hot log until the next append of 8 KiB rotates it and moves its oldest segment to LevelDB. */
async function fillToTheBrink(store: OutboxStore): Promise<void> {
  const payload = Buffer.alloc(1000, 1);
  for (;;) {
    const files = await hotFiles();
    if (files.length === 4 && (await stat(join(dir, files.at(-1) as string))).size > 1024 * 1024 - 3000) return;
    await store.append('filler', { topic: 't/f', payload });
  }
}
const overflowingAppend = (store: OutboxStore) => store.append('filler', { topic: 't/f', payload: Buffer.alloc(8000, 1) });
const payloads = async (store: OutboxStore, clientId: string) => (await store.pending(clientId, { limit: 100_000 })).map((m) => m.payload.toString());

describe('the hot log meeting LevelDB', () => {
  it("a batch whose LevelDB part fails refuses its appends, and none of them comes back after a reopen", async () => {
    let store = await openStore();
    const { seq: old } = await store.append('dev-old', { topic: 't', payload: 'old' });
    store = await reopen(store); // 'old' now in LevelDB: its ack is a LevelDB delete in the next batch
    nextWrite = { fail: true };
    const ack = store.ack('dev-old', old);
    const refused = await store.append('dev-new', { topic: 't', payload: 'refused' }).catch((e: OutboxError) => e.code);
    await ack;
    expect(refused).toBe('OutboxDiskFull');
    store = await reopen(store);
    expect(await payloads(store, 'dev-new')).toEqual([]);
  });

  it('an acknowledgement while its message moves to LevelDB: delivered for good, not back after a reopen', async () => {
    let store = await openStore();
    const { seq } = await store.append('dev-D', { topic: 't', payload: 'M' }); // in the oldest segment
    await fillToTheBrink(store);
    const move = gate();
    nextWrite = { gate: move };
    const appended = overflowingAppend(store);
    await move.reached;
    expect(await store.ackAll('dev-D', [seq])).toBe(1);
    move.open();
    await appended;
    await store.flush();
    expect(store.device('dev-D').messages).toBe(0);
    store = await reopen(store);
    expect(await payloads(store, 'dev-D')).toEqual([]);
  });

  it("a read while messages move to LevelDB finds every one of the device's messages, once, in order", async () => {
    let store = await openStore();
    await store.append('dev-D', { topic: 't', payload: 'L1' });
    store = await reopen(store); // L1 in LevelDB
    for (const p of ['h1', 'h2', 'h3']) await store.append('dev-D', { topic: 't', payload: p });
    await fillToTheBrink(store);
    await store.append('dev-D', { topic: 't', payload: 'h4' });
    // The read's second LevelDB page waits (its snapshot taken) while an append moves the oldest segment.
    reads = 0;
    readGate = { at: 1, gate: gate() };
    const read = payloads(store, 'dev-D');
    await readGate.gate.reached;
    const appended = overflowingAppend(store);
    // The move waits for the read (it cannot finish first): let the read go, then both end.
    readGate.gate.open();
    await appended;
    expect(await read).toEqual(['L1', 'h1', 'h2', 'h3', 'h4']);
    expect(await payloads(store, 'dev-D')).toEqual(['L1', 'h1', 'h2', 'h3', 'h4']);
  });

  it('close() during a move waits for it: no file left open, no warning after close, everything there on reopen', async () => {
    let store = await openStore();
    const warnings: string[] = [];
    store.on('warning', (w) => warnings.push(w.code));
    await fillToTheBrink(store);
    const held = store.stats().messages;
    void overflowingAppend(store);
    await store.close();
    open.splice(open.indexOf(store), 1);
    const fds = await readdir('/proc/self/fd');
    const targets = await Promise.all(fds.map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => '')));
    expect(targets.filter((t) => t.startsWith(dir))).toEqual([]);
    expect(warnings).toEqual([]);
    store = await openStore();
    expect(store.stats().messages).toBe(held + 1);
  });
});

/**
 * The durable outbox's bounds through the connector (issue 17): a 1 MB outbox filled by an outage, under each policy,
 * every refusal typed and every drop reported with its reason and id; and memory that stays flat while the outbox
 * grows on disk, measured in a child process (bench/lib/store-forward-publisher.mjs, the built library).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import type { IPublishPacket } from 'mqtt-packet';
import { describe, expect, it, onTestFinished } from 'vitest';
import { connectDevice, type DeviceConnectionEvents } from '../../src/connector/connect.js';
import { DeviceCredential } from '../../src/credential.js';
import { openOutboxStore, type OutboxDrop } from '../../src/outbox/index.js';
import { tempDir } from '../helpers/cli.js';
import { REPO_ROOT } from '../helpers/package.js';
import { scriptedBroker } from '../helpers/scripted-broker.js';

const credential = new DeviceCredential({ clientId: 'GID_bounds@@@dev-1', instanceId: 'mqtt-bounds', deviceAccessKeyId: 'DC.boundsKey', deviceAccessKeySecret: 'DC.boundsSecret' });
const KIB = Buffer.alloc(1024, 0x61);
const MESSAGES = 3000;

/** A broker that accepts CONNECTs until `down()` cuts every session and refuses new ones, until `up()`. */
async function switchedBroker(): Promise<{ url: string; down(): void; up(): void; published(): string[] }> {
  let accepting = true;
  const broker = await scriptedBroker({
    onConnect: (connection) => {
      if (accepting) connection.send({ cmd: 'connack', sessionPresent: false, returnCode: 0 });
      else connection.socket.destroy();
    },
  });
  return {
    url: broker.url,
    down: () => {
      accepting = false;
      for (const c of broker.connections) c.socket.destroy();
    },
    up: () => (accepting = true),
    // The number at the head of each payload, in the order the broker got them.
    published: () => broker.connections.flatMap((c) => c.received).filter((p): p is IPublishPacket => p.cmd === 'publish').map((p) => Buffer.from(p.payload).subarray(0, 8).toString().replace(/a+$/, '')),
  };
}

/** Message n: its number first, then 1 KiB less a little. */
const message = (n: number): Buffer => Buffer.concat([Buffer.from(`${n}`.padEnd(8, 'a')), KIB.subarray(8)]);

/** A device on a 1 MB outbox whose uplink went down; `MESSAGES` of 1 KiB handed over meanwhile. */
async function throughOutage(whenFull: 'refuse-new' | 'drop-oldest') {
  const store = await openOutboxStore({ dir: await tempDir('bounds-'), maxBytes: 1_000_000, whenFull });
  onTestFinished(() => store.close());
  const broker = await switchedBroker();
  const conn = await connectDevice({ credential, brokerUrl: broker.url, outbox: store, reconnect: { minDelayMs: 5, maxDelayMs: 20 } });
  onTestFinished(() => conn.end(true));
  const drops: OutboxDrop[] = [];
  store.on('drop', (drop) => drops.push(drop));
  const dropped: DeviceConnectionEvents['dropped'][0][] = [];
  conn.on('dropped', (report) => dropped.push(report));
  const delivered: string[] = [];
  conn.on('delivered', (report) => delivered.push(report.id ?? ''));
  const offline = once(conn, 'offline');
  broker.down();
  await offline;
  const accepted: number[] = [];
  const refused: string[] = [];
  for (let n = 0; n < MESSAGES; n++) {
    await conn.enqueue('bounds/x', message(n), { id: String(n) }).then(
      () => accepted.push(n),
      (error: { code: string; retryable: boolean }) => refused.push(`${error.code}:${String(error.retryable)}`),
    );
  }
  const bytesAtPeak = store.stats().bytes;
  // The uplink comes back: what the outbox kept is delivered.
  broker.up();
  const kept = store.device(credential.clientId).messages;
  await new Promise<void>((resolve) => {
    if (delivered.length === kept) resolve();
    conn.on('delivered', () => {
      if (delivered.length === kept) resolve();
    });
  });
  return { store, broker, conn, drops, dropped, delivered, accepted, refused, bytesAtPeak, kept };
}

describe('a 1 MB durable outbox through an outage (3,000 messages of 1 KiB)', () => {
  it('refuse-new: about 1 MB accepted, every later message refused with OutboxFull (retryable), nothing dropped; after the outage every accepted one is delivered, in order', async () => {
    const run = await throughOutage('refuse-new');
    expect(run.bytesAtPeak).toBeLessThanOrEqual(1_000_000);
    expect(run.accepted.length).toBeGreaterThan(900);
    expect(run.accepted.length).toBeLessThan(1000);
    expect(run.accepted).toEqual(Array.from({ length: run.accepted.length }, (_, i) => i)); // the new ones are refused
    expect(run.refused).toHaveLength(MESSAGES - run.accepted.length);
    expect(new Set(run.refused)).toEqual(new Set(['OutboxFull:true']));
    expect(run.drops).toEqual([]);
    expect(run.conn.outbox.durable).toMatchObject({ accepted: run.accepted.length, refused: run.refused.length, dropped: { full: 0, expired: 0, corrupt: 0, rejected: 0 } });
    expect(run.broker.published()).toEqual(run.accepted.map(String));
    expect(run.delivered).toEqual(run.accepted.map(String));
  });

  it('drop-oldest: every message accepted, the oldest dropped to make room, each drop reported (store and connection) with reason full and its id; only the kept ones are delivered, in order', async () => {
    const run = await throughOutage('drop-oldest');
    expect(run.bytesAtPeak).toBeLessThanOrEqual(1_000_000);
    expect(run.refused).toEqual([]);
    expect(run.accepted).toHaveLength(MESSAGES);
    const droppedIds = run.drops.map((d) => d.id);
    expect(run.drops.every((d) => d.reason === 'full')).toBe(true);
    expect(droppedIds).toEqual(Array.from({ length: MESSAGES - run.kept }, (_, i) => String(i))); // the oldest first
    expect(run.dropped.map((d) => [d.id, d.reason])).toEqual(run.drops.map((d) => [d.id, 'full']));
    expect(run.store.stats().dropped.full).toBe(MESSAGES - run.kept);
    expect(run.conn.outbox.durable).toMatchObject({ accepted: MESSAGES, dropped: { full: MESSAGES - run.kept } });
    const keptIds = Array.from({ length: run.kept }, (_, i) => String(MESSAGES - run.kept + i));
    expect(run.broker.published()).toEqual(keptIds);
    expect(run.delivered).toEqual(keptIds);
  });
});

describe('memory while the outbox grows on disk', () => {
  it('a device accepting 60,000 messages of 1 KiB while offline: the heap stays flat, and RSS levels off (a child process)', async () => {
    const dir = await tempDir('bounds-memory-');
    const config = {
      brokerUrl: 'mqtt://127.0.0.1:1',
      dir: `${dir}/outbox`,
      credential: credential.toWire(),
      topic: 'bounds/memory',
      start: 0,
      count: 60_000,
      rate: 0,
      payloadBytes: 1024,
      memoryEvery: 5000,
      store: { maxBytes: 2 ** 30, maxMessages: 1_000_000 },
    };
    const child = spawn(process.execPath, ['--expose-gc', `${REPO_ROOT}/bench/lib/store-forward-publisher.mjs`, JSON.stringify(config)], { stdio: ['ignore', 'pipe', 'pipe'] });
    onTestFinished(() => {
      if (child.exitCode === null) child.kill('SIGKILL');
    });
    const samples: Array<{ n: number; rss: number; heap: number }> = [];
    let refused = 0;
    await new Promise<void>((resolve, reject) => {
      createInterface({ input: child.stdout }).on('line', (line) => {
        const [kind, n, rss, heap] = line.split(' ');
        if (kind === 'M') samples.push({ n: Number(n), rss: Number(rss), heap: Number(heap) });
        else if (kind === 'F') refused += 1;
        else if (kind === 'E') resolve();
      });
      child.once('exit', (code) => reject(new Error(`the publisher exited with ${code}`)));
    });
    child.kill('SIGTERM');
    expect(refused).toBe(0);
    expect(samples.map((s) => s.n)).toEqual(Array.from({ length: 12 }, (_, i) => (i + 1) * 5000));
    const at10k = samples[1] as { rss: number; heap: number };
    const last = samples.slice(-3);
    // 50,000 more messages, about 50 MiB more on disk: the heap grows by less than 1 MiB (under 21 bytes a message,
    // nothing of a message is held), and the RSS floor by less than 16 MiB (LevelDB's buffers and compactions come
    // and go: the lowest of the last samples is the floor).
    expect(Math.max(...last.map((s) => s.heap)) - at10k.heap).toBeLessThan(1);
    expect(Math.min(...last.map((s) => s.rss)) - at10k.rss).toBeLessThan(16);
  });
});

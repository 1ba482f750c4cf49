/**
 * The connector with a durable outbox (option `outbox`, issue 17): QoS 1 messages are accepted once on disk, sent in
 * order until the broker acknowledged them, across reconnects and a new process on the same directory; a window of
 * them in memory; every drop reported with its reason; the store's bounds; strikes; end() keeps the rest on disk.
 * Real things: a scripted broker (test/helpers/scripted-broker.ts) that decides when to answer, an OutboxStore on a
 * temporary directory, the connector's own mqtt.js clients.
 */
import { once } from 'node:events';
import type { IPublishPacket, Packet } from 'mqtt-packet';
import { describe, expect, it, onTestFinished } from 'vitest';
import { connectDevice, type DeviceConnection, type DeviceConnectionEvents, enqueueDurable } from '../../src/connector/connect.js';
import { DeviceCredential } from '../../src/credential.js';
import { isApsaraMqDeviceError } from '../../src/errors.js';
import { openOutboxStore, type OutboxStore, type OutboxStoreOptions } from '../../src/outbox/index.js';
import { tempDir } from '../helpers/cli.js';
import { type BrokerConnection, type ScriptedBroker, scriptedBroker } from '../helpers/scripted-broker.js';

const credential = new DeviceCredential({ clientId: 'GID_dur@@@dev-1', instanceId: 'mqtt-dur', deviceAccessKeyId: 'DC.durKey', deviceAccessKeySecret: 'DC.durSecret' });
const FAST = { minDelayMs: 5, maxDelayMs: 20 };

type Events = { [K in 'accepted' | 'delivered' | 'dropped']: DeviceConnectionEvents[K][0][] };

/** A store on a directory of the test's own, closed when the test ends. */
async function store(options: Partial<OutboxStoreOptions> = {}, dir?: string): Promise<OutboxStore & { dirPath: string }> {
  const path = dir ?? (await tempDir('durable-'));
  const opened = await openOutboxStore({ dir: path, ...options });
  onTestFinished(() => opened.close());
  return Object.assign(opened, { dirPath: path });
}

/** A broker that accepts CONNECTs while `accepting`, and acknowledges QoS 1 publishes unless `holdAcks`. */
async function broker(): Promise<ScriptedBroker & { accepting: boolean; holdAcks: boolean; published(): string[] }> {
  const state = { accepting: true, holdAcks: false };
  const b = await scriptedBroker({
    onConnect: (connection) => {
      if (state.accepting) connection.send({ cmd: 'connack', sessionPresent: false, returnCode: 0 });
      else connection.socket.destroy();
    },
    onPacket: (_connection, packet) => packet.cmd === 'publish' && state.holdAcks,
  });
  // Accessors, not Object.assign (which would copy the getters' values once).
  return Object.defineProperties(b, {
    accepting: { get: () => state.accepting, set: (value: boolean) => (state.accepting = value) },
    holdAcks: { get: () => state.holdAcks, set: (value: boolean) => (state.holdAcks = value) },
    published: { value: () => b.connections.flatMap((c) => c.received).filter((p): p is IPublishPacket => p.cmd === 'publish').map((p) => p.payload.toString()) },
  }) as ScriptedBroker & { accepting: boolean; holdAcks: boolean; published(): string[] };
}

/** A broker that refuses a PUBLISH of `poison` by closing the session, and acknowledges the others. */
function poisonBroker(): Promise<ScriptedBroker> {
  return scriptedBroker({
    onPacket: (connection, packet) => {
      if (packet.cmd === 'publish' && packet.payload.toString() === 'poison') {
        connection.socket.destroy();
        return true;
      }
      return false;
    },
  });
}

/** Connect with the store, recording the durable events. */
async function connect(b: ScriptedBroker, outbox: OutboxStore, options: Partial<Parameters<typeof connectDevice>[0]> = {}): Promise<DeviceConnection & { events: Events }> {
  const conn = await connectDevice({ credential, brokerUrl: b.url, reconnect: FAST, outbox, ...options });
  onTestFinished(() => conn.end(true));
  const events: Events = { accepted: [], delivered: [], dropped: [] };
  conn.on('accepted', (r) => events.accepted.push(r));
  conn.on('delivered', (r) => events.delivered.push(r));
  conn.on('dropped', (r) => events.dropped.push(r));
  return Object.assign(conn, { events });
}

/** Take the broker away: the connection is offline when this resolves. */
async function goOffline(b: ScriptedBroker & { accepting: boolean }, conn: DeviceConnection): Promise<void> {
  b.accepting = false;
  const down = once(conn, 'offline');
  for (const c of b.connections) c.socket.destroy();
  await down;
}

/** Resolves once `count` `delivered` events have come. */
function deliveries(conn: DeviceConnection, count: number): Promise<void> {
  let seen = 0;
  return new Promise((resolve) => {
    if (count === 0) resolve();
    conn.on('delivered', () => {
      if (++seen === count) resolve();
    });
  });
}

describe('the connector with a durable outbox', () => {
  it('publish: accepted once on disk (seq, id), delivered on PUBACK; events in order; nothing left in the store', async () => {
    const outbox = await store();
    const b = await broker();
    const conn = await connect(b, outbox);
    const publishing = conn.publish('dur/a', 'm1', { qos: 1, id: 'reading-1' });
    const accepted = await publishing.accepted;
    expect(accepted).toEqual({ clientId: credential.clientId, seq: expect.any(Number), id: 'reading-1', durable: true });
    await publishing;
    expect(conn.events.accepted).toEqual([{ clientId: credential.clientId, seq: accepted.seq, id: 'reading-1' }]);
    expect(conn.events.delivered).toEqual([{ clientId: credential.clientId, seq: accepted.seq, id: 'reading-1', possibleDuplicate: false }]);
    await outbox.flush();
    expect(outbox.stats()).toMatchObject({ messages: 0, accepted: 1, delivered: 1 });
    expect(conn.outbox.durable).toMatchObject({ stored: 0, window: 0, accepted: 1, delivered: 1, possibleDuplicates: 0 });
    // QoS 0 is not stored: at most once, as MQTT means it; accepted says so.
    const qos0 = conn.publish('dur/a', 'q0', { qos: 0 });
    expect(await qos0.accepted).toEqual({ clientId: credential.clientId, seq: undefined, durable: false });
    await qos0;
    expect(outbox.stats().accepted).toBe(1);
  });

  it("an 'accepted' listener that throws fails that message's accepted only: it and the others of its write are delivered", async () => {
    const outbox = await store();
    const b = await broker();
    const conn = await connect(b, outbox);
    const oops = new Error('a listener of the application failed');
    conn.on('accepted', (report) => {
      if (report.id === 'm2') throw oops;
    });
    // Three messages of one write: the store tells their acceptances together.
    const sent = ['m1', 'm2', 'm3'].map((id) => conn.publish('dur/a', id, { qos: 1, id }));
    const outcomes = await Promise.allSettled(sent.map((p) => p.accepted));
    expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((outcomes[1] as PromiseRejectedResult).reason).toBe(oops);
    await Promise.all(sent);
    expect(b.published()).toEqual(['m1', 'm2', 'm3']);
    expect(conn.events.delivered.map((d) => d.id)).toEqual(['m1', 'm2', 'm3']);
  });

  it('offline: messages wait on disk, not in memory, and go out in order on the reconnect, before newer ones', async () => {
    const outbox = await store();
    const b = await broker();
    const conn = await connect(b, outbox);
    await conn.publish('dur/a', 'm0', { qos: 1 });
    await goOffline(b, conn);
    const offline = Array.from({ length: 50 }, (_, i) => conn.publish('dur/a', `m${i + 1}`, { qos: 1, id: `id-${i + 1}` }));
    await Promise.all(offline.map((p) => p.accepted));
    expect(conn.outbox).toMatchObject({ messages: 0, bytes: 0, durable: { stored: 50, window: 0 } });
    const back = once(conn, 'online');
    b.accepting = true;
    await back;
    const newer = conn.publish('dur/a', 'm51', { qos: 1 });
    await Promise.all([...offline, newer]);
    expect(b.published()).toEqual(Array.from({ length: 52 }, (_, i) => `m${i}`));
    expect(conn.events.delivered.map((d) => d.id)).toEqual([undefined, ...Array.from({ length: 50 }, (_, i) => `id-${i + 1}`), undefined]);
    expect(conn.events.delivered.every((d) => !d.possibleDuplicate)).toBe(true);
  });

  it('a window in memory: with maxQueuedMessages 10, never more than 10 unacknowledged PUBLISHes, all 200 delivered in order', async () => {
    const outbox = await store();
    const b = await broker();
    const conn = await connect(b, outbox, { maxQueuedMessages: 10 });
    await goOffline(b, conn);
    const all = Array.from({ length: 200 }, (_, i) => conn.publish('dur/w', `w${i}`, { qos: 1 }));
    await Promise.all(all.map((p) => p.accepted));
    let unacked = 0;
    let most = 0;
    b.on('packet', (_c: BrokerConnection, packet: Packet) => {
      if (packet.cmd === 'publish') most = Math.max(most, ++unacked);
    });
    // The scripted broker answers right after the 'packet' event.
    b.on('packet', (_c: BrokerConnection, packet: Packet) => {
      if (packet.cmd === 'publish') unacked -= 1;
      expect(conn.outbox.messages).toBeLessThanOrEqual(10);
    });
    b.accepting = true;
    await Promise.all(all);
    expect(most).toBeLessThanOrEqual(10);
    expect(b.published()).toEqual(Array.from({ length: 200 }, (_, i) => `w${i}`));
  });

  it('a new process on the same directory: what was accepted and not delivered is sent, its deliveries reported with the ids', async () => {
    const dir = await tempDir('durable-restart-');
    const first = await store({}, dir);
    const b = await broker();
    const conn = await connect(b, first);
    await goOffline(b, conn);
    const before = Array.from({ length: 20 }, (_, i) => conn.publish('dur/r', `r${i}`, { qos: 1, id: `before-${i}` }));
    await Promise.all(before.map((p) => p.accepted));
    await conn.end();
    // The callers of the first connection hear that their messages stay on disk.
    const outcomes = await Promise.allSettled(before);
    for (const outcome of outcomes) {
      expect(outcome.status).toBe('rejected');
      const error = (outcome as PromiseRejectedResult).reason as Error;
      expect(isApsaraMqDeviceError(error, 'ConnectionClosed')).toBe(true);
      expect(error.message).toContain(`stays in the durable outbox in ${dir}`);
    }
    await first.close();
    b.accepting = true;
    const second = await store({}, dir);
    const again = await connect(b, second);
    await deliveries(again, 20);
    expect(again.events.delivered.map((d) => d.id)).toEqual(Array.from({ length: 20 }, (_, i) => `before-${i}`));
    expect(b.published()).toEqual(Array.from({ length: 20 }, (_, i) => `r${i}`));
    await second.flush();
    expect(second.stats().messages).toBe(0);
  });

  it('in flight when the session is lost: sent again, each delivery flagged as a possible duplicate and counted', async () => {
    const outbox = await store();
    const b = await broker();
    const conn = await connect(b, outbox);
    b.holdAcks = true;
    const inFlight = Array.from({ length: 5 }, (_, i) => conn.publish('dur/d', `d${i}`, { qos: 1, id: `d${i}` }));
    await Promise.all(inFlight.map((p) => p.accepted));
    while (b.published().length < 5) await once(b, 'packet');
    const reconnected = once(conn, 'online');
    b.holdAcks = false;
    b.connections[0]?.socket.destroy();
    await reconnected;
    await Promise.all(inFlight);
    expect(conn.events.delivered.map((d) => [d.id, d.possibleDuplicate])).toEqual(Array.from({ length: 5 }, (_, i) => [`d${i}`, true]));
    expect(conn.outbox.durable).toMatchObject({ delivered: 5, possibleDuplicates: 5 });
  });

  it('strikes: a message the broker refuses by closing the session is dropped as rejected after maxDeliveryAttempts, removed from the store; the rest go on', async () => {
    const outbox = await store();
    const b = await poisonBroker();
    const conn = await connect(b, outbox, { maxDeliveryAttempts: 2 });
    const poison = conn.publish('dur/p', 'poison', { qos: 1, id: 'bad' });
    const fine = conn.publish('dur/p', 'fine', { qos: 1, id: 'good' });
    const refused = await poison.catch((e: unknown) => e);
    expect(isApsaraMqDeviceError(refused, 'PublishRejected')).toBe(true);
    await fine;
    expect(conn.events.dropped).toEqual([{ clientId: credential.clientId, seq: (await poison.accepted).seq, id: 'bad', reason: 'rejected', error: refused }]);
    expect(conn.events.delivered.map((d) => d.id)).toEqual(['good']);
    await outbox.flush();
    expect(outbox.stats()).toMatchObject({ messages: 0, dropped: { rejected: 1 } });
  });

  it("the store's bounds: refuse-new rejects with OutboxFull (nothing accepted); drop-oldest and expiry report each drop with its reason and id, never send it", async () => {
    const refusing = await store({ maxMessages: 3 });
    const b = await broker();
    const conn = await connect(b, refusing);
    await goOffline(b, conn);
    const kept = [1, 2, 3].map((i) => conn.publish('dur/f', `k${i}`, { qos: 1 }));
    await Promise.all(kept.map((p) => p.accepted));
    const over = conn.publish('dur/f', 'k4', { qos: 1 });
    await expect(over.accepted).rejects.toMatchObject({ code: 'OutboxFull', retryable: true });
    await expect(over).rejects.toMatchObject({ code: 'OutboxFull' });
    expect(conn.outbox.durable).toMatchObject({ stored: 3, refused: 1 });
    await conn.end();

    let now = 1_000_000;
    const dropping = await store({ maxMessages: 3, whenFull: 'drop-oldest', ttlMs: 60_000, clock: () => now });
    const b2 = await broker();
    const conn2 = await connect(b2, dropping, { credential: new DeviceCredential({ clientId: 'GID_dur@@@dev-2', instanceId: 'mqtt-dur', deviceAccessKeyId: 'DC.durKey2', deviceAccessKeySecret: 'DC.durSecret2' }) });
    await goOffline(b2, conn2);
    const first = [];
    for (const i of [1, 2, 3, 4, 5]) {
      const publishing = conn2.publish('dur/f', `f${i}`, { qos: 1, id: `f${i}` });
      first.push(publishing);
      await publishing.accepted; // one write each: the store drops the oldest on disk to make room for the next
    }
    await expect(first[0]).rejects.toMatchObject({ code: 'OutboxDropped', message: expect.stringContaining('whenFull') });
    await expect(first[1]).rejects.toMatchObject({ code: 'OutboxDropped' });
    now += 61_000;
    expect(await dropping.expire()).toBe(3);
    const late = conn2.publish('dur/f', 'f6', { qos: 1, id: 'f6' });
    await late.accepted;
    expect(conn2.events.dropped.map((d) => [d.id, d.reason])).toEqual([['f1', 'full'], ['f2', 'full'], ['f3', 'expired'], ['f4', 'expired'], ['f5', 'expired']]);
    b2.accepting = true;
    await late;
    expect(b2.published()).toEqual(['f6']);
    expect(conn2.outbox.durable).toMatchObject({ dropped: { full: 2, expired: 3, corrupt: 0, rejected: 0 } });
  });

  it('end() online drains the backlog from disk within endTimeoutMs; what the broker never acknowledges stays on disk', async () => {
    const outbox = await store();
    const b = await broker();
    const conn = await connect(b, outbox);
    await goOffline(b, conn);
    const backlog = Array.from({ length: 30 }, (_, i) => conn.publish('dur/e', `e${i}`, { qos: 1 }));
    await Promise.all(backlog.map((p) => p.accepted));
    const back = once(conn, 'online');
    b.accepting = true;
    await back;
    await conn.end();
    await Promise.all(backlog);
    expect(b.published()).toHaveLength(30);

    const b2 = await broker();
    const conn2 = await connect(b2, outbox, { endTimeoutMs: 50 });
    b2.holdAcks = true;
    const held = conn2.publish('dur/e', 'held', { qos: 1 });
    await held.accepted;
    await conn2.end();
    await expect(held).rejects.toMatchObject({ code: 'ConnectionClosed', message: expect.stringContaining('stays in the durable outbox') });
    expect(outbox.device(credential.clientId).messages).toBe(1);
  });

  it('a message written while a read of the backlog runs is read in its turn, not left on disk (the race the end-to-end run found)', async () => {
    const real = await store();
    // The real store, with one append held back until a read has started: the read cannot see it, and it is written
    // (and accepted) before the read's result is looked at.
    let held: (() => void) | undefined;
    let hold = false;
    const outbox = new Proxy(real, {
      get(target, key) {
        const value = Reflect.get(target, key, target) as unknown;
        if (key === 'append') {
          return (...args: Parameters<OutboxStore['append']>) => {
            if (!hold) return target.append(...args);
            hold = false;
            return new Promise((resolve, reject) => {
              held = () => void target.append(...args).then(resolve, reject);
            });
          };
        }
        if (key === 'pending') {
          return async (...args: Parameters<OutboxStore['pending']>) => {
            const page = await target.pending(...args);
            const release = held;
            held = undefined;
            if (release) {
              release();
              await target.flush();
            }
            return page;
          };
        }
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
    const b = await broker();
    const conn = await connect(b, outbox);
    await goOffline(b, conn);
    hold = true;
    const late = conn.publish('dur/race', 'held', { qos: 1, id: 'held' });
    const back = once(conn, 'online');
    b.accepting = true;
    await back;
    await late;
    expect(b.published()).toEqual(['held']);
  });

  it('enqueueDurable: a device that boots offline keeps accepting into the store; its connection sends those first, in order; then it routes through the connection', async () => {
    const outbox = await store();
    const b = await broker();
    b.accepting = false;
    await expect(connectDevice({ credential, brokerUrl: b.url, outbox })).rejects.toMatchObject({ code: 'BrokerUnreachable' });
    const offline = [];
    for (let i = 0; i < 5; i++) offline.push(await enqueueDurable(outbox, credential.clientId, 'dur/boot', `b${i}`, { id: `boot-${i}` }));
    expect(offline.map((a) => a.id)).toEqual(['boot-0', 'boot-1', 'boot-2', 'boot-3', 'boot-4']);
    await expect(enqueueDurable(outbox, credential.clientId, 'dur/+', 'x')).rejects.toMatchObject({ code: 'InvalidTopic' });
    await expect(enqueueDurable(outbox, credential.clientId, 'dur/boot', 'x', { qos: 0 as never })).rejects.toMatchObject({ code: 'InvalidOption' });
    await expect(enqueueDurable(null as never, credential.clientId, 'dur/boot', 'x')).rejects.toMatchObject({ code: 'InvalidOption', message: expect.stringContaining('openOutboxStore') });
    b.accepting = true;
    const conn = await connect(b, outbox);
    // Counted from here: the stored messages go out as soon as the session is up, and may all be delivered before the
    // next enqueue resolves.
    const six = deliveries(conn, 6);
    const later = await enqueueDurable(outbox, credential.clientId, 'dur/boot', 'b5', { id: 'boot-5' });
    await six;
    expect(b.published()).toEqual(['b0', 'b1', 'b2', 'b3', 'b4', 'b5']);
    expect(conn.events.accepted.map((a) => a.seq)).toEqual([later.seq]); // through the connection: its events
    expect(conn.events.delivered.map((d) => d.id)).toEqual(['boot-0', 'boot-1', 'boot-2', 'boot-3', 'boot-4', 'boot-5']);
  });

  it('a caller signal aborted after the source answered, just before the first CONNECT: the store takes a later connection of the device', async () => {
    const b = await broker();
    const outbox = await store();
    // The abort lands some microtasks after the answer: at each depth, the connection is made or not, and if made it
    // must be closed (its durable feed unregistered from the store), not only refused.
    for (let depth = 0; depth < 6; depth++) {
      const controller = new AbortController();
      const source = (() => {
        let later = Promise.resolve();
        for (let i = 0; i < depth; i++) later = later.then(() => undefined);
        void later.then(() => controller.abort());
        return credential;
      }) as unknown as () => Promise<DeviceCredential>;
      await expect(connectDevice({ credential: source, brokerUrl: b.url, outbox, signal: controller.signal })).rejects.toMatchObject({ code: 'Aborted' });
      const next = await connectDevice({ credential, brokerUrl: b.url, outbox });
      await next.end(true);
    }
  });

  it('checks: enqueue needs a durable outbox and QoS 1 or 2; an id of more than 255 bytes; one open connection per device and store; a store-like object only', async () => {
    const outbox = await store();
    const b = await broker();
    const plain = await connectDevice({ credential, brokerUrl: b.url });
    onTestFinished(() => plain.end(true));
    await expect(plain.enqueue('dur/c', 'x')).rejects.toMatchObject({ code: 'InvalidOption', message: expect.stringContaining('durable outbox') });
    await plain.end();
    const conn = await connect(b, outbox);
    await expect(conn.enqueue('dur/c', 'x', { qos: 0 })).rejects.toMatchObject({ code: 'InvalidOption', message: expect.stringContaining('QoS 0') });
    await expect(conn.publish('dur/c', 'x', { qos: 1, id: 'é'.repeat(128) })).rejects.toMatchObject({ code: 'InvalidOption', message: expect.stringContaining('255 bytes') });
    await expect(connectDevice({ credential, brokerUrl: b.url, outbox })).rejects.toMatchObject({ code: 'InvalidOption', message: expect.stringContaining('another open connection') });
    await expect(connectDevice({ credential, brokerUrl: b.url, outbox: {} as never })).rejects.toMatchObject({ code: 'InvalidOption', message: expect.stringContaining('openOutboxStore') });
    const accepted = await conn.enqueue('dur/c', 'by-enqueue', { id: 'e1' });
    expect(accepted).toEqual({ clientId: credential.clientId, seq: expect.any(Number), id: 'e1', durable: true });
    await deliveries(conn, 1);
    await conn.end();
    const next = await connect(b, outbox);
    await next.publish('dur/c', 'after', { qos: 1 });
  });
});

/** How a `publish()` promise stands once everything queued up to now (microtasks and I/O callbacks) has run. */
async function standing(p: Promise<unknown>): Promise<string> {
  let state = 'pending';
  p.then(() => (state = 'resolved'), (error: unknown) => (state = `rejected ${(error as { code?: string }).code ?? String(error)}`));
  await new Promise((resolve) => setImmediate(resolve));
  return state;
}

/** Resolves once the broker has received `count` PUBLISHes in all. */
async function received(b: ScriptedBroker & { published(): string[] }, count: number): Promise<void> {
  while (b.published().length < count) await once(b, 'packet');
}

/**
 * The `publish()` caller of a device's only message in the window (a gateway's device sends one at a time): its
 * promise settles once, in every order of events (review of the durable feed keeping that message outside its map).
 */
describe('durable outbox: the publish() caller of the only message in the window', () => {
  /** A connection whose only message the broker received and holds unacknowledged. */
  async function oneInFlight(payload: string) {
    const outbox = await store();
    const b = await broker();
    const conn = await connect(b, outbox);
    b.holdAcks = true;
    const only = conn.publish('dur/one', payload, { qos: 1, id: payload });
    await only.accepted;
    await received(b, 1);
    return { outbox, b, conn, only };
  }

  it('in flight when the session is lost: resolved after the reconnect delivers it; nothing left in the window or the store', async () => {
    const { outbox, b, conn, only } = await oneInFlight('one');
    expect(conn.outbox.durable?.window).toBe(1);
    const reconnected = once(conn, 'online');
    b.holdAcks = false;
    b.connections[0]?.socket.destroy();
    await reconnected;
    await only;
    expect(conn.events.delivered.map((d) => [d.id, d.possibleDuplicate])).toEqual([['one', true]]);
    expect(conn.outbox.durable).toMatchObject({ window: 0, delivered: 1 });
    await outbox.flush();
    expect(outbox.stats().messages).toBe(0);
  });

  it('in flight when the connection ends: rejected once with ConnectionClosed, and it stays in the store', async () => {
    const { outbox, conn, only } = await oneInFlight('kept');
    await conn.end(true);
    expect(await standing(only)).toBe('rejected ConnectionClosed');
    expect(outbox.device(credential.clientId).messages).toBe(1);
  });

  it('in flight when the session is lost, then the connection ends while offline: rejected with ConnectionClosed', async () => {
    const { outbox, b, conn, only } = await oneInFlight('kept');
    await goOffline(b, conn);
    expect(await standing(only)).toBe('pending');
    expect(conn.outbox.durable?.window).toBe(0);
    await conn.end(true);
    expect(await standing(only)).toBe('rejected ConnectionClosed');
    expect(outbox.device(credential.clientId).messages).toBe(1);
  });

  it('refused by the broker alone, by closing the session each time: rejected with PublishRejected after maxDeliveryAttempts; the next one is delivered', async () => {
    const outbox = await store();
    const b = await poisonBroker();
    const conn = await connect(b, outbox, { maxDeliveryAttempts: 2 });
    const poison = conn.publish('dur/p', 'poison', { qos: 1, id: 'bad' });
    const refused = await poison.catch((e: unknown) => e);
    expect(isApsaraMqDeviceError(refused, 'PublishRejected')).toBe(true);
    expect(conn.outbox.durable?.window).toBe(0);
    await conn.publish('dur/p', 'fine', { qos: 1, id: 'good' });
    expect(conn.events.delivered.map((d) => d.id)).toEqual(['good']);
    expect(conn.outbox.durable).toMatchObject({ window: 0, delivered: 1 });
  });

  it('one at a time, 200 times (the window goes 0 → 1 → 0): each delivered once, the window back to 0', async () => {
    const outbox = await store();
    const b = await broker();
    const conn = await connect(b, outbox);
    for (let i = 0; i < 200; i++) await conn.publish('dur/seq', `m${i}`, { qos: 1 });
    expect(conn.outbox.durable).toMatchObject({ window: 0, delivered: 200, accepted: 200 });
    await outbox.flush();
    expect(outbox.stats().messages).toBe(0);
  });
});

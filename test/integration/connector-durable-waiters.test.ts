import { once } from 'node:events';
import type { IPublishPacket } from 'mqtt-packet';
import { describe, expect, it, onTestFinished } from 'vitest';
import { connectDevice, type DeviceConnection, type DeviceConnectionEvents } from '../../src/connector/connect.js';
import { DeviceCredential } from '../../src/credential.js';
import { isApsaraMqDeviceError } from '../../src/errors.js';
import { openOutboxStore, type OutboxStore, type OutboxStoreOptions } from '../../src/outbox/index.js';
import { tempDir } from '../helpers/cli.js';
import { type ScriptedBroker, scriptedBroker } from '../helpers/scripted-broker.js';

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
  it('in flight when the session is lost: resolved after the reconnect delivers it; nothing left in the window or the store', async () => {
    const outbox = await store();
    const b = await broker();
    const conn = await connect(b, outbox);
    b.holdAcks = true;
    const only = conn.publish('dur/one', 'one', { qos: 1, id: 'one' });
    await only.accepted;
    await received(b, 1);
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
    const outbox = await store();
    const b = await broker();
    const conn = await connect(b, outbox);
    b.holdAcks = true;
    const only = conn.publish('dur/one', 'kept', { qos: 1, id: 'kept' });
    await only.accepted;
    await received(b, 1);
    await conn.end(true);
    expect(await standing(only)).toBe('rejected ConnectionClosed');
    expect(outbox.device(credential.clientId).messages).toBe(1);
  });

  it('in flight when the session is lost, then the connection ends while offline: rejected with ConnectionClosed', async () => {
    const outbox = await store();
    const b = await broker();
    const conn = await connect(b, outbox);
    b.holdAcks = true;
    const only = conn.publish('dur/one', 'kept', { qos: 1, id: 'kept' });
    await only.accepted;
    await received(b, 1);
    await goOffline(b, conn);
    expect(await standing(only)).toBe('pending');
    expect(conn.outbox.durable?.window).toBe(0);
    await conn.end(true);
    expect(await standing(only)).toBe('rejected ConnectionClosed');
    expect(outbox.device(credential.clientId).messages).toBe(1);
  });

  it('refused by the broker alone, by closing the session each time: rejected with PublishRejected after maxDeliveryAttempts; the next one is delivered', async () => {
    const outbox = await store();
    const b = await scriptedBroker({
      onPacket: (connection, packet) => {
        if (packet.cmd === 'publish' && packet.payload.toString() === 'poison') {
          connection.socket.destroy();
          return true;
        }
        return false;
      },
    });
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

/**
 * A message published the moment a persistent session resumes (MQTT 3.1.1 and 5 §4.6, Ordered Topics): what the
 * session's queue held comes first, then that message, each once. The resume is held at one of three points with
 * hooks on the broker's session store, as the cluster tests hold Redis replies: its subscriptions live again, before
 * its CONNACK, or before its queue is read (the message is then queued in time to be read with it), or once it is
 * read, before the first queued message is sent (the message is queued after the read). Meanwhile the message reaches
 * the resuming process, which a clean subscriber there (the witness) shows: aedes had sent it live at once, ahead of
 * the queue (of the CONNACK, even), and again from the queue when it was read with it. And a message queued for the
 * session before its queue is read, but on the bus only after: it is not sent again; and, after a restart (the
 * broker keeps its id and numbers its messages from 0 again), no new message is mistaken for a queued one. Clustered
 * (two emulators on one Redis, the session resuming at the process it left or at the other) and in one process. The
 * subscriber is a raw socket, so that every PUBLISH written, duplicates included, is seen.
 */
import { Readable } from 'node:stream';
import type { Client } from 'aedes';
import type { MqttClient } from 'mqtt';
import type { IPublishPacket } from 'mqtt-packet';
import { describe, expect, it, onTestFinished } from 'vitest';
import { startEmulator, type Emulator, type EmulatorOptions } from '../../src/emulator/index.js';
import { accountLogin } from '../helpers/broker.js';
import { clientLeaves, connectMqtt, connectWithInbox } from '../helpers/emulator.js';
import { connectPacket, inbox, rawLogin, rawSocket, received, roundTrip } from '../helpers/raw-mqtt.js';
import { redisAvailable, startRedis } from '../helpers/redis.js';

const { available, skipped } = redisAvailable();


/** Offline messages right behind the CONNACK: the pace of the cloud (the default) sends live messages first by design. */
const IMMEDIATE = { env: {}, offlineDelivery: 'immediate' } as const satisfies EmulatorOptions;

async function emulator(options: EmulatorOptions): Promise<Emulator> {
  const e = await startEmulator({ ...IMMEDIATE, ...options });
  onTestFinished(() => e.close());
  return e;
}

function keep(client: MqttClient): MqttClient {
  onTestFinished(() => client.endAsync(true));
  return client;
}

type Version = 4 | 5;
const SESSION = { 4: { clean: false }, 5: { clean: false, properties: { sessionExpiryInterval: 600 } } } as const;
const TOPIC = 'demo/ordered';

/** A persistent session on `at`, subscribed to {@link TOPIC} at QoS 1, that has left. */
async function subscribedAndGone(at: Emulator, clientId: string, version: Version): Promise<void> {
  const { raw } = await rawLogin(at.mqttUrl, accountLogin(at, clientId), version, SESSION[version]);
  raw.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: TOPIC, qos: 1 }] });
  await raw.next('suback');
  const left = clientLeaves(at, clientId);
  raw.send({ cmd: 'disconnect' });
  await left;
}

/** The part of aedes' session store the hooks replace (aedes-session-queues.ts installs the emulator's own). */
interface HookedStore {
  delWill(client: Client): Promise<unknown>;
  outgoingStream(client: Client): Readable;
  outgoingUpdate(client: Client, packet: object): Promise<void>;
}

/** A gate: `reached` once the resume got to it, `open()` lets it go on. */
interface Gate {
  readonly reached: Promise<void>;
  open(): void;
}

/** Where a resume is held: before its CONNACK, before its queue is read, before the first queued message is sent. */
type Hold = 'before its CONNACK' | 'before its queue is read' | 'before its queue is sent';

/**
 * Hold `clientId`'s next resume at `where`. `before its CONNACK`: its subscriptions are live again, its CONNACK not written
 * until the gate opens (aedes deletes the session's will with the store's `delWill` in between). `… read`: its queue is
 * not read until the gate opens (aedes reads it through the store's `outgoingStream`, after the CONNACK). `… sent`: the
 * queue is read at once, and the first queued message is not sent until the gate opens (aedes records each one's
 * packet id with `outgoingUpdate` before it writes it).
 */
function holdResume(e: Emulator, clientId: string, where: Hold): Gate {
  const store = (e.broker as unknown as { persistence: HookedStore }).persistence;
  let reach!: () => void;
  const reached = new Promise<void>((resolve) => (reach = resolve));
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  if (where === 'before its CONNACK') {
    const delWill = store.delWill.bind(store);
    let held = false;
    store.delWill = async (client) => {
      if (held || client.id !== clientId) return delWill(client);
      held = true;
      reach();
      await opened;
      return delWill(client);
    };
  } else if (where === 'before its queue is read') {
    const outgoingStream = store.outgoingStream.bind(store);
    let held = false;
    store.outgoingStream = (client) => {
      if (held || client.id !== clientId) return outgoingStream(client);
      held = true;
      reach();
      return Readable.from((async function* () {
        await opened;
        yield* outgoingStream(client);
      })());
    };
  } else {
    const outgoingUpdate = store.outgoingUpdate.bind(store);
    let held = false;
    store.outgoingUpdate = async (client, packet) => {
      if (held || client.id !== clientId) return outgoingUpdate(client, packet);
      held = true;
      reach();
      await opened;
      return outgoingUpdate(client, packet);
    };
  }
  return { reached, open };
}

interface Layout {
  /** Where the session was made (and its queue filled). */
  readonly sessionAt: Emulator;
  /** Where it resumes. */
  readonly resumeAt: Emulator;
  /** Where the publisher is. */
  readonly publishAt: Emulator;
}

/**
 * Three messages queued while `clientId`'s session is away; it resumes at `resumeAt`, held at `where`; meanwhile the
 * publisher sends `live` (QoS 1) and `live-qos0` (QoS 0), and the witness at `resumeAt` gets both; then the resume
 * goes on. The subscriber gets the queue, then the two, then `after` (sent once the resume is over), each once.
 */
async function publishedWhileResuming({ sessionAt, resumeAt, publishAt }: Layout, version: Version, where: Hold, clientId: string): Promise<void> {
  await subscribedAndGone(sessionAt, clientId, version);
  const publisher = keep(await connectMqtt(publishAt.mqttUrl, accountLogin(publishAt, `${clientId}-pub`), { protocolVersion: version }));
  for (let i = 0; i < 3; i++) await publisher.publishAsync(TOPIC, `queued${i}`, { qos: 1 });
  const witness = await connectWithInbox(resumeAt.mqttUrl, accountLogin(resumeAt, `${clientId}-witness`));
  keep(witness.client);
  await witness.client.subscribeAsync(TOPIC, { qos: 1 });

  const gate = holdResume(resumeAt, clientId, where);
  const raw = await rawSocket(resumeAt.mqttUrl, version);
  raw.send(connectPacket(accountLogin(resumeAt, clientId), version, SESSION[version]));
  await gate.reached;
  // Acknowledged once queued and on the bus (clustered; in one process aedes acknowledges first, routes right after).
  await publisher.publishAsync(TOPIC, 'live', { qos: 1 });
  await publisher.publishAsync(TOPIC, 'live-qos0', { qos: 0 });
  // The resuming process has the two by now: it handed them to every local subscriber in one turn, and the witness's
  // copies were written after the subscriber's were handed over (aedes sent the subscriber's on, to its socket or,
  // for the QoS 1 one, to its store first, before the witness's write).
  expect(await witness.next()).toEqual([TOPIC, 'live']);
  expect(await witness.next()).toEqual([TOPIC, 'live-qos0']);
  gate.open();
  expect(await raw.next('connack')).toMatchObject({ sessionPresent: true });
  // Nothing before the CONNACK (MQTT-3.2.0-1: it is the first packet the server sends).
  expect(raw.received[0]?.cmd).toBe('connack');

  const box = inbox(raw);
  await received(raw, 5);
  box.publishes();
  await publisher.publishAsync(TOPIC, 'after', { qos: 1 });
  await received(raw, 6);
  const publishes = box.publishes();
  // QoS 1 in the order published; the QoS 0 message behind the queue too (MQTT orders no message across QoS levels:
  // clustered, a QoS 1 message is written once its store answers, a QoS 0 one at once).
  expect(payloads(publishes.filter((p) => p.qos === 1))).toEqual(['queued0', 'queued1', 'queued2', 'live', 'after']);
  expect(payloads(publishes).indexOf('live-qos0')).toBeGreaterThan(payloads(publishes).indexOf('queued2'));
  expect(payloads(publishes).filter((p) => p === 'live-qos0')).toHaveLength(1);
  // Everything written before the PINGRESP has arrived: nothing came more than once since.
  await roundTrip(raw);
  expect(raw.received.filter((p) => p.cmd === 'publish')).toHaveLength(6);
}

/**
 * `live` is queued for the session, then held on its way to the bus (at `publishAt`) while the session resumes at
 * `resumeAt` and gets it from its queue; then it reaches the bus, and the resumed session's subscription: it is not
 * sent again.
 */
async function queuedBeforeTheBus({ sessionAt, resumeAt, publishAt }: Layout, version: Version, clientId: string): Promise<void> {
  await subscribedAndGone(sessionAt, clientId, version);
  const publisher = keep(await connectMqtt(publishAt.mqttUrl, accountLogin(publishAt, `${clientId}-pub`), { protocolVersion: version }));
  await publisher.publishAsync(TOPIC, 'queued0', { qos: 1 });
  // aedes queues a QoS 1 message for the offline sessions, then hands it to the bus (mq.emit).
  const mq = (publishAt.broker as unknown as { mq: { emit(packet: { topic: string; payload: Buffer }, done?: () => void): void } }).mq;
  const emit = mq.emit.bind(mq);
  let reach!: () => void;
  const reached = new Promise<void>((resolve) => (reach = resolve));
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  mq.emit = (packet, done) => {
    if (packet.topic !== TOPIC || packet.payload.toString() !== 'live') return emit(packet, done);
    reach();
    void opened.then(() => emit(packet, done));
  };
  const acknowledged = publisher.publishAsync(TOPIC, 'live', { qos: 1 });
  await reached;
  const { raw, connack } = await rawLogin(resumeAt.mqttUrl, accountLogin(resumeAt, clientId), version, SESSION[version]);
  expect(connack.sessionPresent).toBe(true);
  const box = inbox(raw);
  await received(raw, 2);
  box.publishes();
  open();
  await acknowledged;
  await publisher.publishAsync(TOPIC, 'after', { qos: 1 });
  await received(raw, 3);
  await roundTrip(raw);
  expect(payloads(box.publishes())).toEqual(['queued0', 'live', 'after']);
}

function payloads(publishes: readonly IPublishPacket[]): string[] {
  return publishes.map((p) => p.payload.toString());
}

describe.skipIf(!available)(`a message published while a persistent session resumes, clustered${skipped}`, () => {
  const cases = [
    ['the process it left', 'before its CONNACK', 4],
    ['the other process', 'before its CONNACK', 5],
    ['the process it left', 'before its queue is read', 4],
    ['the process it left', 'before its queue is sent', 4],
    ['the other process', 'before its queue is read', 4],
    ['the other process', 'before its queue is sent', 4],
    ['the process it left', 'before its queue is read', 5],
    ['the other process', 'before its queue is sent', 5],
  ] as const;
  it.each(cases)('resuming at %s, held %s (MQTT %i): the queue, then the new message, each once', async (at, where, version) => {
    const redis = await startRedis();
    const a = await emulator({ redis: redis.url });
    const b = await emulator({ redis: redis.url });
    const resumeAt = at === 'the process it left' ? b : a;
    await publishedWhileResuming({ sessionAt: b, resumeAt, publishAt: a }, version, where, `GID_demo@@@order-${where.split(' ').pop() ?? ''}-${version}`);
  });

  it.each([['the process it left', 4], ['the other process', 5]] as const)('resuming at %s (MQTT %i), a message it got from its queue reaches the bus only then: it is not sent again', async (at, version) => {
    const redis = await startRedis();
    const a = await emulator({ redis: redis.url });
    const b = await emulator({ redis: redis.url });
    await queuedBeforeTheBus({ sessionAt: b, resumeAt: at === 'the process it left' ? b : a, publishAt: a }, version, `GID_demo@@@late-${version}`);
  });
});

describe('a message published while a persistent session resumes, in one process', () => {
  it.each([['before its CONNACK', 4], ['before its queue is read', 4], ['before its queue is sent', 4], ['before its CONNACK', 5], ['before its queue is read', 5], ['before its queue is sent', 5]] as const)('held %s (MQTT %i): the queue, then the new message, each once', async (where, version) => {
    const e = await emulator({});
    await publishedWhileResuming({ sessionAt: e, resumeAt: e, publishAt: e }, version, where, `GID_demo@@@order-${where.split(' ').pop() ?? ''}-${version}`);
  });

  it('after a restart (the broker keeps its id and counts its messages from 0 again), no new message is mistaken for one the queue sent', async () => {
    const e = await emulator({});
    const clientId = 'GID_demo@@@restarted';
    await subscribedAndGone(e, clientId, 4);
    const before = await connectMqtt(e.mqttUrl, accountLogin(e, 'GID_demo@@@before'));
    for (let i = 0; i < 20; i++) await before.publishAsync(TOPIC, `queued${i}`, { qos: 1 });
    await before.endAsync();
    await e.restart();
    const publisher = keep(await connectMqtt(e.mqttUrl, accountLogin(e, 'GID_demo@@@after')));
    const gate = holdResume(e, clientId, 'before its queue is sent');
    const raw = await rawSocket(e.mqttUrl);
    raw.send(connectPacket(accountLogin(e, clientId), 4, SESSION[4]));
    await gate.reached;
    // Queued after the queue was read, held: numbered from 0 again, with the broker id and counters of queued ones.
    for (let i = 0; i < 20; i++) await publisher.publishAsync(TOPIC, `live${i}`, { qos: 1 });
    gate.open();
    const box = inbox(raw);
    await received(raw, 40);
    await roundTrip(raw);
    const expected = [...Array.from({ length: 20 }, (_, i) => `queued${i}`), ...Array.from({ length: 20 }, (_, i) => `live${i}`)];
    expect(payloads(box.publishes())).toEqual(expected);
  });

  it('after a restart, new messages the same as queued ones (topic and payload) are all delivered: the restarted broker numbers on', async () => {
    const e = await emulator({});
    const clientId = 'GID_demo@@@restarted-same';
    await subscribedAndGone(e, clientId, 4);
    const before = await connectMqtt(e.mqttUrl, accountLogin(e, 'GID_demo@@@before-same'));
    for (let i = 0; i < 20; i++) await before.publishAsync(TOPIC, 'same', { qos: 1 });
    await before.endAsync();
    await e.restart();
    const publisher = keep(await connectMqtt(e.mqttUrl, accountLogin(e, 'GID_demo@@@after-same')));
    const gate = holdResume(e, clientId, 'before its queue is sent');
    const raw = await rawSocket(e.mqttUrl);
    raw.send(connectPacket(accountLogin(e, clientId), 4, SESSION[4]));
    await gate.reached;
    // A broker that counted from 0 again gave these the broker id and counters of the queued ones: taken for them.
    for (let i = 0; i < 20; i++) await publisher.publishAsync(TOPIC, 'same', { qos: 1 });
    gate.open();
    const box = inbox(raw);
    await received(raw, 40);
    await roundTrip(raw);
    expect(payloads(box.publishes())).toEqual(Array.from({ length: 40 }, () => 'same'));
  });

  it('after a restart and a resume that ended, a device repeating its reading delivers every one (no counter of the queue is taken for a new one)', async () => {
    const e = await emulator({});
    const clientId = 'GID_demo@@@repeats';
    await subscribedAndGone(e, clientId, 4);
    const before = await connectMqtt(e.mqttUrl, accountLogin(e, 'GID_demo@@@repeats-before'));
    for (let i = 0; i < 20; i++) await before.publishAsync(TOPIC, 'door=open', { qos: 1 });
    await before.endAsync();
    await e.restart();
    const { raw } = await rawLogin(e.mqttUrl, accountLogin(e, clientId), 4, SESSION[4]);
    const box = inbox(raw);
    await received(raw, 20);
    const publisher = keep(await connectMqtt(e.mqttUrl, accountLogin(e, 'GID_demo@@@repeats-after')));
    for (let i = 0; i < 20; i++) await publisher.publishAsync(TOPIC, 'door=open', { qos: 1 });
    await publisher.publishAsync(TOPIC, 'end', { qos: 1 });
    await received(raw, 41);
    await roundTrip(raw);
    expect(payloads(box.publishes())).toEqual([...Array.from({ length: 40 }, () => 'door=open'), 'end']);
  });

  it('a resuming session that stops reading while its queue is sent: what is held for it counts against maxQueuedBytes, and it is cut off as a slow consumer', async () => {
    const e = await emulator({ maxOfflineBytes: Infinity, maxOfflineMessages: 10_000, maxQueuedBytes: 1_000_000, drainTimeoutMs: 600_000 });
    const clientId = 'GID_demo@@@stalls';
    await subscribedAndGone(e, clientId, 4);
    const publisher = keep(await connectMqtt(e.mqttUrl, accountLogin(e, 'GID_demo@@@stalls-pub')));
    const big = Buffer.alloc(60_000, 1);
    // More than the socket's buffers take: the queue's writes wait for a drain that never comes, the resume never ends.
    for (let i = 0; i < 200; i++) await publisher.publishAsync(TOPIC, big, { qos: 1 });
    const raw = await rawSocket(e.mqttUrl);
    raw.stall();
    const answered = new Promise<Client>((resolve) => e.broker.on('connackSent', (_packet: unknown, client: Client) => client.id === clientId && resolve(client)));
    raw.send(connectPacket(accountLogin(e, clientId), 4, SESSION[4]));
    const client = await answered;
    const cutOff = new Promise((resolve) => (client as unknown as { conn: NodeJS.EventEmitter }).conn.once('close', resolve));
    // Live messages for it now wait behind its queue: 20 of them are more than its bound.
    for (let i = 0; i < 20; i++) await publisher.publishAsync(TOPIC, big, { qos: 0 });
    await cutOff;
    expect(e.stats().mqtt.rules.slowConsumer).toBe(1);
  });

  it.each([4, 5] as const)('a message it got from its queue reaches the bus only then: it is not sent again (MQTT %i)', async (version) => {
    const e = await emulator({});
    await queuedBeforeTheBus({ sessionAt: e, resumeAt: e, publishAt: e }, version, `GID_demo@@@late-${version}`);
  });
});

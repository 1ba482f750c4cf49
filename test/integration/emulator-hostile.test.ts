/**
 * The broker keeps serving under hostile clients (issue 9): a subscriber that stops reading, a packet that
 * declares 256 MB before authentication, a device watching $SYS, P2P under an empty parent, and topic names that
 * are also names of Object.prototype. Real sockets throughout; the raw ones speak through mqtt-packet.
 */
import { once } from 'node:events';
import mqttPacket from 'mqtt-packet';
import { describe, expect, it, onTestFinished } from 'vitest';
import WebSocket from 'ws';
import type { Client } from 'aedes';
import { clientById, sessionStore, type SessionStore } from '../../src/emulator/aedes-adapter.js';
import { startEmulator, type Emulator, type EmulatorOptions } from '../../src/emulator/index.js';
import { accountLogin, captureLogger, ended } from '../helpers/broker.js';
import { ANY_GROUP, type InboxClient, connectMqtt, connectWithInbox } from '../helpers/emulator.js';
import { rawLogin, rawSocket } from '../helpers/raw-mqtt.js';
import { redisAvailable, startRedis } from '../helpers/redis.js';

/** An emulator of this test only (closed when it finishes). */
async function startOwn(options: EmulatorOptions = {}): Promise<Emulator> {
  const e = await startEmulator({ env: {}, ...ANY_GROUP, ...options });
  onTestFinished(() => e.close());
  return e;
}

/** Resolves when the broker has let go of `clientId` (its session closed, for whatever reason). */
function gone(e: Emulator, clientId: string): Promise<void> {
  return new Promise((resolve) => {
    const listener = (client: { id: string }): void => {
      if (client.id === clientId) {
        e.broker.off('clientDisconnect', listener);
        resolve();
      }
    };
    e.broker.on('clientDisconnect', listener);
  });
}

/** A subscriber that logs in, subscribes to `filter` at QoS 1 and then never reads its socket again. */
async function stalledSubscriber(e: Emulator, clientId: string, filter: string): Promise<Awaited<ReturnType<typeof rawLogin>>['raw']> {
  const { raw } = await rawLogin(e.mqttUrl, accountLogin(e, clientId));
  raw.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: filter, qos: 1 }] });
  await raw.next('suback');
  raw.stall();
  return raw;
}

/** Publish `count` messages of `size` bytes at QoS 0 without waiting between them, then one QoS 1 message, awaited. */
async function flood(e: Emulator, clientId: string, topic: string, count: number, size: number): Promise<void> {
  const pub = await connectMqtt(e.mqttUrl, accountLogin(e, clientId));
  const payload = Buffer.alloc(size, 0x61);
  for (let i = 0; i < count; i++) pub.publish(topic, payload, { qos: 0 });
  await pub.publishAsync(topic, 'flood done', { qos: 1 });
  await pub.endAsync();
}

/** Receive messages until `payload` arrives on `topic`; resolves with how many arrived before it. */
async function until(inbox: InboxClient, topic: string, payload: string): Promise<number> {
  for (let before = 0; ; before++) {
    const [t, p] = await inbox.next();
    if (t === topic && p === payload) return before;
  }
}

describe('hostile: a QoS 1 subscriber that stops reading', () => {
  it('does not hold up the others, and is disconnected once its outgoing buffer passes maxQueuedBytes', async () => {
    const logger = captureLogger();
    // A drain timeout of a minute: the broker must keep the others served without it.
    const e = await startOwn({ logger, maxQueuedBytes: 1024 * 1024, drainTimeoutMs: 60_000 });
    const good = await connectWithInbox(e.mqttUrl, accountLogin(e, 'GID_slow@@@good'));
    onTestFinished(() => good.client.endAsync(true));
    await good.client.subscribeAsync('demo/marker', { qos: 1 });
    const stalledGone = gone(e, 'GID_slow@@@stalled');
    await stalledSubscriber(e, 'GID_slow@@@stalled', 'demo/#');

    // 300 × 60 KB = 18 MB at a subscriber that reads nothing: far past the kernel's buffers and the 1 MiB bound.
    // Before the fix, its full socket held the broker's message bus: the markers below never arrived (0 of 10).
    await flood(e, 'GID_slow@@@pub', 'demo/flood', 300, 60_000);
    const markers = await connectMqtt(e.mqttUrl, accountLogin(e, 'GID_slow@@@markers'));
    for (let i = 0; i < 10; i++) await markers.publishAsync('demo/marker', `m${i}`, { qos: 1 });
    await markers.endAsync();
    for (let i = 0; i < 10; i++) expect(await good.next()).toEqual(['demo/marker', `m${i}`]);

    await stalledGone;
    expect(e.stats().mqtt.rules).toEqual({ slowConsumer: 1 });
    // Cut by the message that would have taken the backlog past 1 MiB: nothing over the bound was ever buffered.
    const line = logger.lines.find((l) => l.includes('MQTT rule slowConsumer'));
    const queued = Number(/: (\d+) bytes waiting to be read/.exec(line ?? '')?.[1]);
    expect(queued).toBeGreaterThan(1024 * 1024);
    expect(queued).toBeLessThanOrEqual(1024 * 1024 + 60_100);
    expect(line).toContain('(option maxQueuedBytes and drainTimeoutMs, flag --max-queued-bytes and --drain-timeout-ms): GID_slow@@@stalled:');
  });

  it('going away with a large backlog does not take the broker down, and never held the others back', async () => {
    // No bound worth the name: the stalled client keeps its backlog until it leaves on its own.
    const e = await startOwn({ maxQueuedBytes: 512 * 1024 * 1024, drainTimeoutMs: 60_000 });
    const good = await connectWithInbox(e.mqttUrl, accountLogin(e, 'GID_slow@@@good'));
    onTestFinished(() => good.client.endAsync(true));
    await good.client.subscribeAsync('demo/#', { qos: 1 });
    const stalled = await stalledSubscriber(e, 'GID_slow@@@stalled', 'demo/#');
    const stalledGone = gone(e, 'GID_slow@@@stalled');
    await flood(e, 'GID_slow@@@pub', 'demo/flood', 300, 60_000);
    expect(await until(good, 'demo/flood', 'flood done')).toBe(300);
    // aedes ran out of stack here when the deliveries to this client were still holding its message bus.
    stalled.socket.destroy();
    await stalledGone;
    const after = await connectMqtt(e.mqttUrl, accountLogin(e, 'GID_slow@@@after'));
    await after.publishAsync('demo/after', 'still up', { qos: 1 });
    expect(await good.next()).toEqual(['demo/after', 'still up']);
    await after.endAsync();
    expect((await fetch(new URL('/_emulator/stats', e.apiEndpoint))).status).toBe(200);
  });

  it('a socket that stays full is dropped after drainTimeoutMs, even under maxQueuedBytes', async () => {
    const e = await startOwn({ maxQueuedBytes: 512 * 1024 * 1024, drainTimeoutMs: 300 });
    const stalledGone = gone(e, 'GID_slow@@@stalled');
    await stalledSubscriber(e, 'GID_slow@@@stalled', 'demo/#');
    await flood(e, 'GID_slow@@@pub', 'demo/flood', 300, 60_000);
    await stalledGone;
    expect(e.stats().mqtt.rules).toEqual({ slowConsumer: 1 });
  });
});

const redis = redisAvailable();

/**
 * A clean session's QoS 2 PUBLISH read just before its socket closes: aedes looks its packet id up before storing it
 * (a Redis round trip, clustered, for a session kept in the store), and that lookup is held until the socket has closed
 * and the session's cleanup has run, so the message is stored after the cleanup. It must not stay: the next session's message with the same packet
 * id is delivered, not taken for a duplicate.
 */
async function lateStoredQos2(e: Emulator): Promise<void> {
  const clientId = 'GID_q2@@@late';
  const watcher = await connectWithInbox(e.mqttUrl, accountLogin(e, 'GID_q2@@@late-watcher'));
  onTestFinished(() => watcher.client.endAsync(true));
  // QoS 1: mqtt.js hands a QoS 2 message on only at its PUBREL, after the QoS 1 marker below may have come.
  await watcher.client.subscribeAsync('demo/q2', { qos: 1 });
  const store = sessionStore(e.broker) as SessionStore & { incomingGetPacket(client: Client, packet: { messageId: number }): Promise<unknown> };
  const incomingGetPacket = store.incomingGetPacket.bind(store);
  let release = (): void => undefined;
  const released = new Promise<void>((resolve) => (release = resolve));
  let lookedUp = (): void => undefined;
  const lookup = new Promise<void>((resolve) => (lookedUp = resolve));
  store.incomingGetPacket = async (client, packet) => {
    if (client.id === clientId) {
      lookedUp();
      await released;
    }
    return incomingGetPacket(client, packet);
  };
  const first = await rawLogin(e.mqttUrl, accountLogin(e, clientId));
  const onBroker = clientById(e.broker, clientId);
  if (onBroker === undefined) throw new Error('the connection is not registered');
  // Registered after the cleanup's own listener (armed at the CONNACK): it runs once the cleanup has.
  const cleanedUp = once(onBroker.conn, 'close');
  const firstGone = gone(e, clientId);
  first.raw.send({ cmd: 'publish', topic: 'demo/q2', payload: Buffer.from('first'), qos: 2, messageId: 7, retain: false, dup: false });
  await lookup;
  first.raw.socket.destroy();
  await Promise.all([cleanedUp, firstGone]);
  release();
  // aedes routes the message once stored: stored (and deleted again) by now.
  expect(await watcher.next()).toEqual(['demo/q2', 'first']);
  await expect(incomingGetPacket(onBroker, { messageId: 7 })).rejects.toThrow();
  const second = await rawLogin(e.mqttUrl, accountLogin(e, clientId));
  second.raw.send({ cmd: 'publish', topic: 'demo/q2', payload: Buffer.from('second'), qos: 2, messageId: 7, retain: false, dup: false });
  await second.raw.next('pubrec');
  second.raw.send({ cmd: 'pubrel', messageId: 7 });
  await second.raw.next('pubcomp');
  second.raw.send({ cmd: 'publish', topic: 'demo/q2', payload: Buffer.from('after'), qos: 1, messageId: 8, retain: false, dup: false });
  await second.raw.next('puback');
  expect(await watcher.next()).toEqual(['demo/q2', 'second']);
}

describe('hostile: QoS 2 messages that are never released', () => {
  it.each([4, 5] as const)('MQTT %i: past maxQueuedBytes of them waiting for their PUBREL, the client is disconnected', async (version) => {
    const e = await startOwn({ maxQueuedBytes: 1024 * 1024, lenient: true });
    const { raw } = await rawLogin(e.mqttUrl, accountLogin(e, 'GID_q2@@@hoard'), version);
    // aedes keeps each of these until its PUBREL, which never comes: 20 × 60 KB passes 1 MiB.
    for (let id = 1; id <= 20; id++) raw.send({ cmd: 'publish', topic: 'demo/x', payload: Buffer.alloc(60_000), qos: 2, messageId: id, retain: false, dup: false });
    if (version === 5) expect(await raw.next('disconnect')).toMatchObject({ reasonCode: 0x97 });
    await raw.closed;
    expect(e.stats().mqtt.rules).toEqual({ qos2Unreleased: 1 });
  });

  it('two PUBRELs for one packet id in one read: both get their PUBCOMP and the broker lives on', async () => {
    const e = await startOwn();
    const { raw } = await rawLogin(e.mqttUrl, accountLogin(e, 'GID_q2@@@twice'));
    raw.send({ cmd: 'publish', topic: 'demo/q2', payload: Buffer.from('x'), qos: 2, messageId: 5, retain: false, dup: false });
    await raw.next('pubrec');
    // aedes 2.0.0-beta.1 alone: the second delete rejects inside a .finally() and the process ends.
    const pubrel = mqttPacket.generate({ cmd: 'pubrel', messageId: 5 });
    raw.write(Buffer.concat([pubrel, pubrel]));
    expect(await raw.next('pubcomp')).toMatchObject({ messageId: 5 });
    expect(await raw.next('pubcomp')).toMatchObject({ messageId: 5 });
    const other = await connectMqtt(e.mqttUrl, accountLogin(e, 'GID_q2@@@other'));
    await other.publishAsync('demo/q2', 'still up', { qos: 2 });
    await other.endAsync();
  });

  it("a clean session's unreleased QoS 2 messages end with it: the next session's message with the same packet id is not taken for a duplicate", async () => {
    const e = await startOwn();
    const watcher = await connectWithInbox(e.mqttUrl, accountLogin(e, 'GID_q2@@@watcher'));
    onTestFinished(() => watcher.client.endAsync(true));
    await watcher.client.subscribeAsync('demo/q2', { qos: 2 });
    const publish = { cmd: 'publish', topic: 'demo/q2', qos: 2, messageId: 7, retain: false, dup: false } as const;
    const first = await rawLogin(e.mqttUrl, accountLogin(e, 'GID_q2@@@pub'));
    const firstGone = gone(e, 'GID_q2@@@pub');
    first.raw.send({ ...publish, payload: Buffer.from('first') });
    await first.raw.next('pubrec');
    first.raw.socket.destroy(); // no PUBREL
    await firstGone;
    expect(await watcher.next()).toEqual(['demo/q2', 'first']);
    const second = await rawLogin(e.mqttUrl, accountLogin(e, 'GID_q2@@@pub'));
    second.raw.send({ ...publish, payload: Buffer.from('second') });
    await second.raw.next('pubrec');
    second.raw.send({ cmd: 'pubrel', messageId: 7 });
    await second.raw.next('pubcomp');
    expect(await watcher.next()).toEqual(['demo/q2', 'second']);
  });
  it("a clean session's QoS 2 message aedes stores only after the connection ended is not kept either", async () => {
    await lateStoredQos2(await startOwn());
  });

  it.skipIf(!redis.available)(`the same, clustered (aedes-persistence-redis)${redis.skipped}`, async () => {
    const { url } = await startRedis();
    await lateStoredQos2(await startOwn({ redis: url }));
  });
});

describe('hostile: packet size is checked before authentication', () => {
  it('a CONNECT whose header declares 256 MB is not waited for: the connection closes on the header', async () => {
    const e = await startOwn();
    const raw = await rawSocket(e.mqttUrl);
    // CONNECT, remaining length 268,435,455 (the largest MQTT allows), and nothing more.
    raw.write(Buffer.from([0x10, 0xff, 0xff, 0xff, 0x7f]));
    await raw.closed;
    expect(raw.received).toEqual([]);
    // Just over maxPacketBytes (131,072 by default) is refused the same way.
    const over = await rawSocket(e.mqttUrl);
    over.write(Buffer.from([0x10, 0x80, 0x80, 0x08])); // 131,072 bytes of CONNECT to come, plus the 4 of the header
    await over.closed;
    expect(e.stats().mqtt.rules).toEqual({ packetSize: 2 });
    expect(e.stats().mqtt.connacks).toEqual({});
  });

  it('after authentication: MQTT 3.1.1 is closed, MQTT 5 gets DISCONNECT 0x95; the Maximum Packet Size is advertised', async () => {
    const e = await startOwn({ lenient: true });
    const v4 = await connectMqtt(e.mqttUrl, accountLogin(e, 'GID_pkt@@@v4'));
    const v4End = ended(v4);
    v4.publish('demo/x', Buffer.alloc(200_000), { qos: 1 });
    expect(await v4End).toEqual({ disconnect: undefined });
    const v5 = await connectMqtt(e.mqttUrl, accountLogin(e, 'GID_pkt@@@v5'), { protocolVersion: 5 });
    const v5End = ended(v5);
    // mqtt.js honours the advertised Maximum Packet Size itself; write the packet past it.
    v5.stream.write(Buffer.concat([Buffer.from([0x30, 0x80, 0x80, 0x0c]), Buffer.alloc(16)]));
    expect((await v5End).disconnect).toMatchObject({ reasonCode: 0x95 });
    await Promise.all([v4.endAsync(true), v5.endAsync(true)]);
    expect(e.stats().mqtt.rules).toEqual({ packetSize: 2 });
  });

  it('a WebSocket message is bounded too (ws would otherwise buffer 100 MiB of it)', async () => {
    const e = await startOwn();
    const ws = new WebSocket(e.wsUrl ?? '', 'mqtt');
    onTestFinished(() => ws.terminate());
    await once(ws, 'open');
    ws.send(Buffer.alloc(300_000));
    const [code] = (await once(ws, 'close')) as [number];
    expect(code).toBe(1009); // message too big
  });
});

describe('hostile: $SYS is closed to devices', () => {
  it.each([[4, 0x80], [5, 0x87]] as const)('MQTT %i: a $SYS filter is denied with %i; the other filters in the SUBSCRIBE are granted, lenient or not', async (version, denied) => {
    for (const options of [{}, { lenient: true }]) {
      const e = await startOwn(options);
      const { raw } = await rawLogin(e.mqttUrl, accountLogin(e, 'GID_sys@@@snoop'), version);
      raw.send({ cmd: 'subscribe', messageId: 3, subscriptions: [{ topic: '$SYS/#', qos: 0 }, { topic: '$SYS/+/new/clients', qos: 0 }, { topic: 'demo/x', qos: 0 }] });
      expect(await raw.next('suback')).toMatchObject({ granted: [denied, denied, 0] });
      expect(e.stats().mqtt.rules).toEqual({ sysTopic: 2 });
    }
  });

  it('a `#` subscriber never sees the $SYS messages of other clients connecting and subscribing', async () => {
    const e = await startOwn({ lenient: true });
    const snoop = await connectWithInbox(e.mqttUrl, accountLogin(e, 'GID_sys@@@snoop'));
    await snoop.client.subscribeAsync('#', { qos: 0 });
    const other = await connectMqtt(e.mqttUrl, accountLogin(e, 'GID_sys@@@other'));
    await other.subscribeAsync('demo/secret-filter', { qos: 0 });
    await other.publishAsync('demo/marker', 'marker', { qos: 1 });
    expect(await snoop.next()).toEqual(['demo/marker', 'marker']);
    await Promise.all([snoop.client.endAsync(), other.endAsync()]);
  });
});

describe('hostile: P2P privacy under an empty parent', () => {
  it('`/p2p/<ClientId>` reaches its addressee and not a `#` subscriber (parent rule off; on, it is refused)', async () => {
    const e = await startOwn({ parentTopics: false });
    const target = await connectWithInbox(e.mqttUrl, accountLogin(e, 'GID_p2p@@@target'));
    const snoop = await connectWithInbox(e.mqttUrl, accountLogin(e, 'GID_p2p@@@snoop'));
    await snoop.client.subscribeAsync('#', { qos: 1 });
    const sender = await connectMqtt(e.mqttUrl, accountLogin(e, 'GID_p2p@@@sender'));
    await sender.publishAsync('/p2p/GID_p2p@@@target', 'private', { qos: 1 });
    await sender.publishAsync('/public', 'for all', { qos: 1 });
    expect(await target.next()).toEqual(['/p2p/GID_p2p@@@target', 'private']);
    // The snoop's first message is the public one.
    expect(await snoop.next()).toEqual(['/public', 'for all']);
    await Promise.all([target.client.endAsync(), snoop.client.endAsync(), sender.endAsync()]);
  });
});

describe('hostile: topic names that are names of Object.prototype', () => {
  it('UNSUBSCRIBE and SUBSCRIBE of constructor, __proto__ and toString leave the broker up and serving', async () => {
    const e = await startOwn({ lenient: true });
    const { raw } = await rawLogin(e.mqttUrl, accountLogin(e, 'GID_proto@@@dev'));
    // aedes 2.0.0-beta.1 alone dies on the first of these (an uncaught AssertionError in mqemitter).
    raw.send({ cmd: 'unsubscribe', messageId: 1, unsubscriptions: ['constructor', '__proto__', 'toString'] });
    expect(await raw.next('unsuback')).toMatchObject({ messageId: 1 });
    raw.send({ cmd: 'subscribe', messageId: 2, subscriptions: [{ topic: 'constructor', qos: 1 }] });
    expect(await raw.next('suback')).toMatchObject({ granted: [1] });
    raw.send({ cmd: 'subscribe', messageId: 3, subscriptions: [{ topic: 'constructor', qos: 0 }] });
    expect(await raw.next('suback')).toMatchObject({ granted: [0] });
    raw.send({ cmd: 'publish', topic: 'constructor', payload: Buffer.from('still here'), qos: 0, retain: false, dup: false });
    expect(await raw.next('publish')).toMatchObject({ topic: 'constructor' });
    expect((await rawLogin(e.mqttUrl, { ...accountLogin(e, 'GID_proto@@@x'), clientId: 'constructor' })).connack).toMatchObject({ returnCode: 2 });
    // aedes 2.0.0-beta.1 de-duplicates several filters through a plain object: `__proto__` among them crashed the
    // process (MQTT 5). The broker disconnects such a client instead (MQTT 5: DISCONNECT 0x8F).
    for (const version of [4, 5] as const) {
      const { raw: bad } = await rawLogin(e.mqttUrl, accountLogin(e, `GID_proto@@@multi-${version}`), version);
      bad.send({ cmd: 'subscribe', messageId: 4, subscriptions: [{ topic: '__proto__', qos: 1 }, { topic: 'demo/x', qos: 1 }] });
      if (version === 5) expect(await bad.next('disconnect')).toMatchObject({ reasonCode: 0x8f });
      await bad.closed;
      expect(bad.received.map((p) => p.cmd)).toEqual(version === 5 ? ['connack', 'disconnect'] : ['connack']);
    }
    expect(e.stats().mqtt.rules).toEqual({ unsafeSubscribe: 2 });
    const other = await connectWithInbox(e.mqttUrl, accountLogin(e, 'GID_proto@@@other'));
    await other.client.subscribeAsync('toString', { qos: 1 });
    await other.client.publishAsync('toString', 'served', { qos: 1 });
    expect(await other.next()).toEqual(['toString', 'served']);
    await other.client.endAsync();
  });
});

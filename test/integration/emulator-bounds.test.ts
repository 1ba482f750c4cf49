/**
 * Bounds on what a client may cost the emulator (issue 24): a persistent session's queue (241,037 queued 10 KB
 * messages once took the emulator to 2.9 GB in 12 s), and an MQTT 5 client's own Maximum Packet Size (a 100-byte
 * PUBLISH used to reach a client that asked for 20). The queue is measured through the stats, not the process's RSS.
 */
import { once } from 'node:events';
import type { IDisconnectPacket } from 'mqtt-packet';
import { describe, expect, it, onTestFinished } from 'vitest';
import { startEmulator, type Emulator, type EmulatorOptions } from '../../src/emulator/index.js';
import { accountLogin, captureLogger } from '../helpers/broker.js';
import { ANY_GROUP, connectMqtt, connectWithInbox, subscribed } from '../helpers/emulator.js';
import { rawLogin } from '../helpers/raw-mqtt.js';

/** Offline messages at once: these tests are about what a session holds, not the pace it gets it at (emulator-offline-pace.test.ts). */
async function startOwn(options: EmulatorOptions = {}): Promise<Emulator> {
  const e = await startEmulator({ env: {}, ...ANY_GROUP, wsPort: false, offlineDelivery: 'immediate', ...options });
  onTestFinished(() => e.close());
  return e;
}

/** Resolves once the broker has routed `count` more PUBLISHes (queued for offline sessions included). */
function routed(e: Emulator, count: number): Promise<void> {
  return new Promise((resolve) => {
    let left = count;
    const listener = (): void => {
      if (--left === 0) {
        e.events.off('published', listener);
        resolve();
      }
    };
    e.events.on('published', listener);
  });
}

/** A persistent session subscribed to `topic` at QoS 1, then gone offline (DISCONNECT: the session stays). */
async function offlineSubscriber(e: Emulator, clientId: string, topic: string): Promise<void> {
  const client = await connectMqtt(e.mqttUrl, accountLogin(e, clientId), { clean: false });
  const done = subscribed(e, clientId, topic);
  await client.subscribeAsync(topic, { qos: 1 });
  await done;
  await client.endAsync();
}

/** Publish `payloads` to `topic` at QoS 1 (each acknowledged) and wait until the broker has routed them all. */
async function publishAll(e: Emulator, topic: string, payloads: readonly string[]): Promise<void> {
  const all = routed(e, payloads.length);
  const publisher = await connectMqtt(e.mqttUrl, accountLogin(e, 'GID_bounds@@@publisher'));
  await Promise.all(payloads.map((payload) => publisher.publishAsync(topic, payload, { qos: 1 })));
  await all;
  await publisher.endAsync();
}

/** Reconnect the session, and collect what it gets before a marker published after `expected` messages arrived. */
async function drain(e: Emulator, clientId: string, topic: string, expected: number): Promise<string[]> {
  const inbox = await connectWithInbox(e.mqttUrl, accountLogin(e, clientId), { clean: false });
  onTestFinished(() => inbox.client.endAsync(true));
  expect(inbox.sessionPresent).toBe(true);
  const got: string[] = [];
  for (let i = 0; i < expected; i++) got.push((await inbox.next())[1]);
  await publishAll(e, topic, ['marker']);
  // Nothing more was queued than what arrived: the next message is the marker.
  expect(await inbox.next()).toEqual([topic, 'marker']);
  return got;
}

const numbered = (from: number, to: number): string[] => Array.from({ length: to - from }, (_, i) => `m${from + i}`);

describe('a persistent session holds at most maxOfflineMessages / maxOfflineBytes', () => {
  it('defaults: 1000 messages and 8 MiB per session, the oldest not yet sent dropped', async () => {
    const e = await startOwn();
    await offlineSubscriber(e, 'GID_bounds@@@default', 'demo/default');
    await publishAll(e, 'demo/default', numbered(0, 1_200));
    expect(e.stats().mqtt.queues).toEqual({ sessions: 1, messages: 1_000, bytes: 1_000 * 'demo/default'.length + numbered(200, 1_200).join('').length, largestMessages: 1_000, largestBytes: expect.any(Number) });
    expect(e.stats().mqtt.rules['offlineQueue']).toBe(200);
  });

  it('drop-oldest: a flood keeps the queue at its bound, and the session gets the newest messages, in order', async () => {
    const logger = captureLogger();
    const e = await startOwn({ logger, maxOfflineMessages: 50 });
    await offlineSubscriber(e, 'GID_bounds@@@oldest', 'demo/q');
    for (let batch = 0; batch < 10; batch++) {
      await publishAll(e, 'demo/q', numbered(batch * 100, (batch + 1) * 100));
      // Measured after every batch: never more than the bound, whatever the flood.
      expect(e.stats().mqtt.queues.largestMessages).toBe(50);
    }
    expect(e.stats().mqtt.rules['offlineQueue']).toBe(950);
    // One line for the 1st, 10th and 100th message that did not fit: not one per message.
    const lines = logger.lines.filter((line) => line.includes('MQTT rule offlineQueue'));
    expect(lines).toHaveLength(3);
    expect(lines[0]).toContain('(option maxOfflineMessages, maxOfflineBytes and offlineQueuePolicy, flag --max-offline-messages, --max-offline-bytes and --offline-queue-policy): GID_bounds@@@oldest:');
    expect(lines[0]).toContain('its oldest message not yet sent was dropped for a new one; 1 so far');
    expect(await drain(e, 'GID_bounds@@@oldest', 'demo/q', 50)).toEqual(numbered(950, 1_000));
    expect(e.stats().mqtt.queues.messages).toBe(0);
  });

  it('refuse-new: the queue keeps the first messages, the later ones are refused', async () => {
    const e = await startOwn({ maxOfflineMessages: 20, offlineQueuePolicy: 'refuse-new' });
    await offlineSubscriber(e, 'GID_bounds@@@newest', 'demo/q');
    await publishAll(e, 'demo/q', numbered(0, 100));
    expect(e.stats().mqtt.queues).toMatchObject({ sessions: 1, messages: 20, largestMessages: 20 });
    expect(e.stats().mqtt.rules['offlineQueue']).toBe(80);
    expect(await drain(e, 'GID_bounds@@@newest', 'demo/q', 20)).toEqual(numbered(0, 20));
  });

  it('bytes: 1 KB messages under a 10 KB bound, per session (another session keeps its own)', async () => {
    const e = await startOwn({ maxOfflineBytes: 10 * 1024 });
    await offlineSubscriber(e, 'GID_bounds@@@bytes-1', 'demo/kb');
    await offlineSubscriber(e, 'GID_bounds@@@bytes-2', 'demo/kb');
    const kb = (i: number): string => `${i}`.padEnd(1024 - 'demo/kb'.length, '.');
    await publishAll(e, 'demo/kb', Array.from({ length: 40 }, (_, i) => kb(i)));
    const { queues } = e.stats().mqtt;
    expect(queues.largestBytes).toBeLessThanOrEqual(10 * 1024);
    expect(queues).toMatchObject({ sessions: 2, messages: 20, bytes: 20 * 1024, largestMessages: 10 });
    expect(e.stats().mqtt.rules['offlineQueue']).toBe(60);
    const got = await drain(e, 'GID_bounds@@@bytes-1', 'demo/kb', 10);
    expect(got).toEqual(Array.from({ length: 10 }, (_, i) => kb(30 + i)));
  });

  it('the bound and its queue survive a restart of the broker', async () => {
    const e = await startOwn({ maxOfflineMessages: 5 });
    await offlineSubscriber(e, 'GID_bounds@@@restart', 'demo/r');
    await publishAll(e, 'demo/r', numbered(0, 8));
    await e.restart();
    expect(e.stats().mqtt.queues).toMatchObject({ messages: 5 });
    await publishAll(e, 'demo/r', numbered(8, 10));
    expect(e.stats().mqtt.queues).toMatchObject({ messages: 5 });
    expect(await drain(e, 'GID_bounds@@@restart', 'demo/r', 5)).toEqual(numbered(5, 10));
  });
});

describe("an MQTT 5 client's Maximum Packet Size is honoured (MQTT-3.1.2-24/25)", () => {
  it('a PUBLISH larger than the client asked for is not sent to it, and counted; smaller ones are', async () => {
    const e = await startOwn();
    const small = await connectWithInbox(e.mqttUrl, accountLogin(e, 'GID_bounds@@@mps-20'), { protocolVersion: 5, properties: { maximumPacketSize: 40 } });
    onTestFinished(() => small.client.endAsync(true));
    const roomy = await connectWithInbox(e.mqttUrl, accountLogin(e, 'GID_bounds@@@mps-none'), { protocolVersion: 5 });
    onTestFinished(() => roomy.client.endAsync(true));
    await Promise.all([small.client.subscribeAsync('demo/mps', { qos: 1 }), roomy.client.subscribeAsync('demo/mps', { qos: 0 })]);
    const publisher = await connectMqtt(e.mqttUrl, accountLogin(e, 'GID_bounds@@@mps-pub'), { protocolVersion: 5 });
    // Fixed header 2, topic 2 + 8 ("demo/mps"), packet id 2 (QoS 1 only), properties 1 (none): 15 bytes at QoS 1 and
    // 13 at QoS 0 besides the payload. The limit is the whole packet's: 40 bytes fit, 41 do not.
    const fits = 'x'.repeat(40 - 15);
    const over = 'y'.repeat(40 - 15 + 1);
    const overAtQos0 = 'z'.repeat(40 - 13 + 1);
    const fitsAtQos0 = 'w'.repeat(40 - 13);
    for (const [payload, qos] of [[over, 1], [fits, 1], [overAtQos0, 0], [fitsAtQos0, 0], ['done', 1]] as const) await publisher.publishAsync('demo/mps', payload, { qos });
    await publisher.endAsync();
    for (const payload of [fits, fitsAtQos0, 'done']) expect(await small.next()).toEqual(['demo/mps', payload]);
    for (const payload of [over, fits, overAtQos0, fitsAtQos0, 'done']) expect(await roomy.next()).toEqual(['demo/mps', payload]);
    expect(e.stats().mqtt.rules['clientMaximumPacketSize']).toBe(2);
  });

  it("a persistent session's queued message over the limit is dropped at delivery, not kept for ever", async () => {
    const e = await startOwn();
    const login = accountLogin(e, 'GID_bounds@@@mps-offline');
    const first = await connectMqtt(e.mqttUrl, login, { protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 600, maximumPacketSize: 64 } });
    await first.subscribeAsync('demo/mps', { qos: 1 });
    await first.endAsync();
    const all = routed(e, 2);
    const publisher = await connectMqtt(e.mqttUrl, accountLogin(e, 'GID_bounds@@@mps-pub2'));
    await publisher.publishAsync('demo/mps', 'z'.repeat(200), { qos: 1 });
    await publisher.publishAsync('demo/mps', 'small', { qos: 1 });
    await all;
    await publisher.endAsync();
    expect(e.stats().mqtt.queues.messages).toBe(2);
    const acked = once(e.broker, 'ack');
    const again = await connectWithInbox(e.mqttUrl, login, { protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 600, maximumPacketSize: 64 } });
    onTestFinished(() => again.client.endAsync(true));
    expect(await again.next()).toEqual(['demo/mps', 'small']);
    expect(e.stats().mqtt.rules['clientMaximumPacketSize']).toBe(1);
    // The small one acknowledged, the large one dropped: the session holds nothing.
    await acked;
    expect(e.stats().mqtt.queues.messages).toBe(0);
  });

  it("the broker's own DISCONNECT fits too: its Reason String is left out for a client that asked for 20 bytes", async () => {
    const e = await startOwn();
    const { raw } = await rawLogin(e.mqttUrl, accountLogin(e, 'GID_bounds@@@mps-tiny'), 5, { properties: { maximumPacketSize: 20 } });
    raw.send({ cmd: 'publish', topic: 'nope/x', payload: Buffer.from('x'), qos: 0, retain: false, dup: false });
    const disconnect = (await raw.next('disconnect')) as IDisconnectPacket;
    await raw.closed;
    expect(disconnect.reasonCode).toBe(0x87);
    expect(disconnect.properties?.reasonString).toBeUndefined();
    const bytes = raw.bytes();
    // CONNACK (the broker's, advertising its limits) then the DISCONNECT: 4 bytes, not 90 with its reason.
    expect(bytes.subarray(bytes.length - 4)).toEqual(Buffer.from([0xe0, 0x02, 0x87, 0x00]));
  });
});

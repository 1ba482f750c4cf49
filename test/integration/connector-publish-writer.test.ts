/**
 * The connector's PUBLISH writer (src/connector/publish-writer.ts): QoS 1 and 2 messages encoded by the connector and
 * written into mqtt.js's session, which then reads their acknowledgements as for its own `publish()`. Real brokers
 * (the emulator on port 0, Mosquitto when installed, a scripted broker for reason codes none of them sends), real
 * mqtt.js clients as independent subscribers.
 *
 * How a test knows the writer, not mqtt.js, wrote a message: mqtt.js emits `packetsend` for each packet it writes
 * itself, and the writer emits none. Every mqtt.js client made in this file is recorded (MqttClient.prototype.connect
 * is wrapped: the connector's attempts are mqtt.js clients of the same CommonJS module), and its PUBLISH `packetsend`
 * events counted. So each test below also fails when the writer stops applying and `client.publish()` takes over.
 */
import { once } from 'node:events';
import { createRequire } from 'node:module';
import { type Socket, connect as netConnect, createServer } from 'node:net';
import type * as Mqtt from 'mqtt';
import type { IClientOptions, IPublishPacket, MqttClient, Packet } from 'mqtt';
import mqttPacket from 'mqtt-packet';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { type ConnectDeviceOptions, connectDevice, type DeviceConnection } from '../../src/connector/connect.js';
import { writePublish } from '../../src/connector/publish-writer.js';
import { DeviceCredential } from '../../src/credential.js';
import type { Emulator } from '../../src/emulator/index.js';
import { PublishError } from '../../src/errors.js';
import { signDeviceCredential } from '../../src/signer/mqtt.js';
import { connectMqtt, registerDevice, useEmulator } from '../helpers/emulator.js';
import { mosquittoPrograms, startMosquitto } from '../helpers/mosquitto.js';
import { scriptedBroker } from '../helpers/scripted-broker.js';

/** mqtt.js as the connector loads it (src/connector/mqtt-client.ts: require()): the same classes as the tests' import. */
const mqtt = createRequire(import.meta.url)('mqtt') as typeof Mqtt;

// Plain MQTT rules (retained messages, QoS 2 anywhere, any GroupId) with one parent topic, so that a publish outside
// it is refused; messages for offline sessions at once.
const emulator = useEmulator({ lenient: true, parentTopics: ['pw'] }, 'test');

/** Every mqtt.js client made in this process, by ClientId, in order, with the PUBLISH packets mqtt.js wrote itself. */
const made = new Map<string, MqttClient[]>();
const ownPublishes = new WeakMap<MqttClient, IPublishPacket[]>();
let originalConnect: MqttClient['connect'];

beforeAll(() => {
  const proto = mqtt.MqttClient.prototype;
  originalConnect = proto.connect;
  proto.connect = function (this: MqttClient) {
    const clientId = this.options.clientId ?? '';
    made.set(clientId, [...(made.get(clientId) ?? []), this]);
    const published: IPublishPacket[] = [];
    ownPublishes.set(this, published);
    this.on('packetsend', (packet: Packet) => {
      if (packet.cmd === 'publish') published.push(packet);
    });
    return originalConnect.call(this);
  };
});

afterAll(() => {
  mqtt.MqttClient.prototype.connect = originalConnect;
});

/** The mqtt.js clients (one per attempt) a ClientId has had. */
function clientsOf(clientId: string): MqttClient[] {
  return made.get(clientId) ?? [];
}

/** PUBLISH packets mqtt.js itself wrote on all of a ClientId's clients (the writer's are not among them). */
function mqttJsPublishes(clientId: string): IPublishPacket[] {
  return clientsOf(clientId).flatMap((c) => ownPublishes.get(c) ?? []);
}

/** The connector's mqtt.js client of the session up now. */
function liveClient(conn: DeviceConnection): MqttClient {
  const live = clientsOf(conn.clientId).filter((c) => c.connected);
  expect(live).toHaveLength(1);
  return live[0] as MqttClient;
}

/** mqtt.js's internals the writer uses, as tests read them. */
type Internals = MqttClient & { outgoing: Record<number, unknown> };

/** The packet mqtt.js's outgoing store holds under a packet id (`undefined`: none). */
function storedPacket(client: MqttClient, messageId: number): Promise<Packet | undefined> {
  return new Promise((resolve) => client.outgoingStore.get({ messageId }, (error, packet) => resolve(error ? undefined : packet)));
}

/** How many packets mqtt.js's outgoing store holds. */
async function storeSize(client: MqttClient): Promise<number> {
  let n = 0;
  for await (const _packet of (client as unknown as { outgoingStore: { createStream(): AsyncIterable<unknown> } }).outgoingStore.createStream()) n++;
  return n;
}

interface Received {
  readonly topic: string;
  readonly payload: Buffer;
  readonly packet: IPublishPacket;
}

/** An independent mqtt.js client subscribed to `filter` at QoS 2 (with MQTT 5's retain-as-published), collecting messages. */
async function subscriber(url: string, credentials: { clientId: string; username: string; password: string }, filter: string, protocolVersion: 4 | 5, extra: IClientOptions = {}): Promise<{ client: MqttClient; received: Received[]; count(n: number): Promise<Received[]> }> {
  const client = await connectMqtt(url, credentials, { protocolVersion, ...extra });
  onTestFinished(() => client.endAsync(true));
  const received: Received[] = [];
  let waiter: { n: number; resolve: (r: Received[]) => void } | undefined;
  client.on('message', (topic, payload, packet) => {
    received.push({ topic, payload, packet });
    if (waiter && received.length >= waiter.n) waiter.resolve(received);
  });
  await client.subscribeAsync(filter, { qos: 2, ...(protocolVersion === 5 ? { rap: true } : {}) });
  return {
    client,
    received,
    count: (n) => (received.length >= n ? Promise.resolve(received) : new Promise((resolve) => (waiter = { n, resolve }))),
  };
}

/** A device registered with the emulator, its login, and a connector for it. */
async function device(e: Emulator, name: string, options: Partial<ConnectDeviceOptions> = {}): Promise<{ conn: DeviceConnection; credential: DeviceCredential }> {
  const credential = await registerDevice(e, `GID_pw@@@${name}`);
  const conn = await connectDevice({ credential, brokerUrl: e.mqttUrl, brokerIsApsaraMq: false, reconnect: { minDelayMs: 10, maxDelayMs: 100 }, ...options } as ConnectDeviceOptions);
  onTestFinished(() => conn.end(true));
  return { conn, credential };
}

async function peer(e: Emulator, name: string): Promise<{ clientId: string; username: string; password: string }> {
  return signDeviceCredential(await registerDevice(e, `GID_pw@@@${name}`));
}

const PROTOCOLS = [
  [4, 'MQTT 3.1.1'],
  [5, 'MQTT 5'],
] as const;

describe(`the mqtt.js internals the writer relies on (mqtt.js ${(createRequire(import.meta.url)('mqtt/package.json') as { version: string }).version})`, () => {
  for (const [protocolVersion, name] of PROTOCOLS) {
    for (const qos of [1, 2] as const) {
      it(`${name}, QoS ${qos}: on a bare mqtt.js client, writePublish takes the message, mqtt.js keeps it until the ${qos === 1 ? 'PUBACK' : 'PUBCOMP'}, then frees it`, async () => {
        const e = emulator();
        const publisher = await peer(e, `bare-${protocolVersion}-${qos}`);
        const sub = await subscriber(e.mqttUrl, await peer(e, `bare-sub-${protocolVersion}-${qos}`), 'pw/bare/#', protocolVersion);
        const client = await connectMqtt(e.mqttUrl, publisher, { protocolVersion });
        onTestFinished(() => client.endAsync(true));
        const sent: Packet[] = [];
        client.on('packetsend', (p: Packet) => sent.push(p));
        const acks: Packet[] = [];
        client.on('packetreceive', (p: Packet) => {
          if (p.cmd !== 'publish') acks.push(p);
        });

        let taken = false;
        const settled = new Promise<{ error: Error | undefined; packet: unknown }>((resolve) => {
          taken = writePublish(client, 'pw/bare/温/🌡', Buffer.from([0, 1, 2, 0xff]), { qos, retain: false }, (error, packet) => resolve({ error, packet }));
        });
        // An mqtt.js whose internals changed makes the writer fall back: this is the test that says so.
        expect(taken).toBe(true);
        // A taken PUBACK sets mqtt.js's keepalive tick count back to 0 (publish-writer.ts keepAlive); without that
        // field it falls back to reschedulePing(), correct but a timer per PUBACK: this says when mqtt.js renames it.
        expect(typeof (client as unknown as { keepaliveManager: { counter: unknown } }).keepaliveManager.counter).toBe('number');
        const ids = Object.keys((client as Internals).outgoing).map(Number);
        expect(ids).toHaveLength(1);
        const id = ids[0] as number;
        expect(await storedPacket(client, id)).toMatchObject({ cmd: 'publish', topic: 'pw/bare/温/🌡', qos, messageId: id });

        const { error, packet } = await settled;
        expect(error ?? undefined).toBeUndefined();
        // mqtt.js calls back with what its store held under the id: the writer's PUBLISH, or the PUBREL that replaced it.
        expect(packet).toMatchObject(qos === 1 ? { cmd: 'publish', topic: 'pw/bare/温/🌡', messageId: id } : { cmd: 'pubrel', messageId: id });
        expect(acks.map((p) => p.cmd)).toEqual(qos === 1 ? ['puback'] : ['pubrec', 'pubcomp']);
        // mqtt.js wrote the PUBREL itself, and no PUBLISH: the writer's went straight to the socket.
        expect(sent.map((p) => p.cmd)).toEqual(qos === 1 ? [] : ['pubrel']);
        expect((client as Internals).outgoing).toEqual({});
        expect(await storedPacket(client, id)).toBeUndefined();

        const [got] = await sub.count(1);
        expect(got?.topic).toBe('pw/bare/温/🌡');
        expect([...(got?.payload ?? [])]).toEqual([0, 1, 2, 0xff]);
        expect(got?.packet.qos).toBe(qos);

        // mqtt.js's own publish() still works on the same session after it, with the next id.
        await client.publishAsync('pw/bare/after', 'x', { qos });
        expect(sent.filter((p) => p.cmd === 'publish')).toHaveLength(1);
        await sub.count(2);
      });
    }
  }

  it("a message the writer stored is replayed by mqtt.js after a reconnect (clean: false), and while mqtt.js replays, writePublish leaves new ones to publish()", async () => {
    // Connection 1 never answers the PUBLISH and is dropped; connection 2 acknowledges everything.
    const broker = await scriptedBroker({
      onPacket: (connection, packet) => {
        if (connection.n > 1 || packet.cmd !== 'publish') return false;
        connection.socket.destroy();
        return true;
      },
    });
    const client = await connectMqtt(broker.url, { clientId: 'GID_pw@@@replay', username: 'u', password: 'p' }, { clean: false, reconnectPeriod: 10 });
    onTestFinished(() => client.endAsync(true));
    const first = new Promise<Error | undefined>((resolve) => expect(writePublish(client, 'pw/replay/1', 'one', { qos: 1 }, resolve)).toBe(true));
    const duringReplay: boolean[] = [];
    let second: Promise<Error | undefined> | undefined;
    client.on('packetsend', (packet: Packet) => {
      // mqtt.js writes the stored PUBLISH again, inside its store replay: the writer must not write in between.
      if (packet.cmd !== 'publish' || packet.topic !== 'pw/replay/1' || second) return;
      duringReplay.push(writePublish(client, 'pw/replay/2', 'two', { qos: 1 }, () => expect.fail('the writer took a message during the replay')));
      second = new Promise((resolve) => client.publish('pw/replay/2', 'two', { qos: 1 }, resolve));
    });
    const replayed = new Promise<void>((resolve) => client.once('connect', () => resolve()));
    expect(await first).toBeFalsy();
    await replayed;
    expect(duringReplay).toEqual([false]);
    expect(await second).toBeFalsy();
    // Replay over: the writer takes the next one.
    const third = new Promise<Error | undefined>((resolve) => expect(writePublish(client, 'pw/replay/3', 'three', { qos: 1 }, resolve)).toBe(true));
    expect(await third).toBeFalsy();
    expect(broker.connections).toHaveLength(2);
    const onSecond = broker.connections[1]?.received.filter((p): p is IPublishPacket => p.cmd === 'publish') ?? [];
    expect(onSecond.map((p) => [p.topic, p.payload.toString(), p.qos])).toEqual([
      ['pw/replay/1', 'one', 1],
      ['pw/replay/2', 'two', 1],
      ['pw/replay/3', 'three', 1],
    ]);
    expect((client as Internals).outgoing).toEqual({});
    expect(await storeSize(client)).toBe(0);
  });

  it('where it does not apply, writePublish does nothing and says so: QoS 0, MQTT 5 properties, an offline client, a disconnecting one', async () => {
    const e = emulator();
    const client = await connectMqtt(e.mqttUrl, await peer(e, 'not-mine'), { protocolVersion: 5 });
    const never = (): void => expect.fail('called back');
    expect(writePublish(client, 'pw/x', 'x', { qos: 0 }, never)).toBe(false);
    expect(writePublish(client, 'pw/x', 'x', { qos: 1, properties: { userProperties: { a: 'b' } } }, never)).toBe(false);
    expect(writePublish(client, '', 'x', { qos: 1 }, never)).toBe(false);
    expect((client as Internals).outgoing).toEqual({});
    const ended = client.endAsync();
    expect(writePublish(client, 'pw/x', 'x', { qos: 1 }, never)).toBe(false);
    await ended;
    expect(writePublish(client, 'pw/x', 'x', { qos: 1 }, never)).toBe(false);
    expect((client as Internals).outgoing).toEqual({});
  });
});

describe('the connector publishes QoS 1 and 2 through the writer', () => {
  for (const [protocolVersion, name] of PROTOCOLS) {
    it(`${name}: QoS 1 and 2 (retained or not) arrive with their topic, payload and retain flag; QoS 0 is left to mqtt.js`, async () => {
      const e = emulator();
      const { conn } = await device(e, `round-${protocolVersion}`, { protocolVersion });
      const sub = await subscriber(e.mqttUrl, await peer(e, `round-sub-${protocolVersion}`), 'pw/round/#', protocolVersion);
      const client = liveClient(conn);
      // The writer must be able to take a message on the connector's own client (mqtt.js's internals as expected).
      const direct = new Promise<Error | undefined>((resolve) => expect(writePublish(client, 'pw/round/direct', 'direct', { qos: 1 }, resolve)).toBe(true));

      const binary = Buffer.from([0xde, 0xad, 0x00, 0xbe, 0xef]);
      const messages = [
        { topic: 'pw/round/q1', payload: 'hello one', qos: 1, retain: false },
        { topic: 'pw/round/q2/温度/🌡', payload: binary, qos: 2, retain: false },
        { topic: 'pw/round/r1', payload: 'kept one', qos: 1, retain: true },
        { topic: 'pw/round/r2', payload: 'kept two é', qos: 2, retain: true },
        { topic: 'pw/round/q0', payload: 'zero', qos: 0, retain: false },
      ] as const;
      const delivered = messages.map((m) => conn.publish(m.topic, m.payload, { qos: m.qos, retain: m.retain }));
      await expect(Promise.all(delivered)).resolves.toEqual(messages.map(() => undefined));
      expect(await direct).toBeFalsy();

      // mqtt.js wrote the QoS 0 message only.
      expect(mqttJsPublishes(conn.clientId).map((p) => [p.topic, p.qos])).toEqual([['pw/round/q0', 0]]);

      const received = await sub.count(messages.length + 1);
      for (const m of messages) {
        const got = received.find((r) => r.topic === m.topic);
        expect(got, m.topic).toBeDefined();
        expect(got?.payload.equals(Buffer.from(m.payload))).toBe(true);
        expect(got?.packet.qos).toBe(m.qos);
        // MQTT 5 (retain as published): the flag as sent; 3.1.1 clears it on live messages.
        expect(got?.packet.retain).toBe(protocolVersion === 5 ? m.retain : false);
      }
      expect(received.find((r) => r.topic === 'pw/round/direct')?.payload.toString()).toBe('direct');

      // A subscriber that comes later gets the retained ones, retain flag set.
      const late = await subscriber(e.mqttUrl, await peer(e, `round-late-${protocolVersion}`), 'pw/round/+', protocolVersion);
      const retained = await late.count(2);
      expect(retained.map((r) => [r.topic, r.payload.toString(), r.packet.retain]).sort()).toEqual([
        ['pw/round/r1', 'kept one', true],
        ['pw/round/r2', 'kept two é', true],
      ]);
    });
  }

  it('70,000 QoS 1 messages on one connection: each acknowledged, packet ids freed and used again, one session', async () => {
    const e = emulator();
    const { conn } = await device(e, 'many');
    const client = liveClient(conn);
    // Every acknowledgement frees its packet id, whoever answers it (mqtt.js, or the packet guard for a PUBACK it
    // takes out of the stream, which mqtt.js then never sees): counted where ids are freed.
    const pubacks = new Map<number, number>();
    const provider = client.messageIdProvider;
    const deallocate = provider.deallocate.bind(provider);
    provider.deallocate = (id: number) => {
      pubacks.set(id, (pubacks.get(id) ?? 0) + 1);
      deallocate(id);
    };
    // The PUBACKs mqtt.js parsed: only those the guard could not take whole from one chunk (rare on loopback).
    let parsedByMqttJs = 0;
    client.on('packetreceive', (p: Packet) => {
      if (p.cmd === 'puback') parsedByMqttJs += 1;
    });
    // What the broker parsed: every payload, once.
    const payloads = new Set<string>();
    e.broker.on('publish', (packet, c) => {
      if (c?.id === conn.clientId && packet.topic === 'pw/many') payloads.add(packet.payload.toString());
    });
    const total = 70_000;
    const batch = 5_000;
    for (let sent = 0; sent < total; sent += batch) {
      await Promise.all(Array.from({ length: batch }, (_, i) => conn.publish('pw/many', `m${sent + i}`, { qos: 1 })));
    }
    let acked = 0;
    for (const n of pubacks.values()) acked += n;
    expect(acked).toBe(total);
    expect(parsedByMqttJs).toBeLessThan(total / 2);
    expect(payloads.size).toBe(total);
    for (const i of [0, 1, 65_534, 65_535, 65_536, total - 1]) expect(payloads.has(`m${i}`), `m${i}`).toBe(true);
    // Ids are 1 to 65,535: 70,000 acknowledgements reuse some.
    const ids = [...pubacks.keys()].sort((a, b) => a - b);
    expect([ids[0], ids.at(-1), ids.length]).toEqual([1, 65_535, 65_535]);
    expect(clientsOf(conn.clientId)).toHaveLength(1);
    expect(client.connected).toBe(true);
    expect(mqttJsPublishes(conn.clientId)).toEqual([]);
    expect((client as Internals).outgoing).toEqual({});
    expect(await storeSize(client)).toBe(0);
    expect(conn.outbox.messages).toBe(0);
  }, 120_000);

  it('MQTT 5 per-message properties go through mqtt.js and arrive with them; the next message without any is the writer\'s again', async () => {
    const e = emulator();
    const { conn } = await device(e, 'props', { protocolVersion: 5 });
    const sub = await subscriber(e.mqttUrl, await peer(e, 'props-sub'), 'pw/props/#', 5);
    await conn.publish('pw/props/a', 'with', { qos: 1, properties: { userProperties: { origin: 'gw', n: ['1', '2'] }, contentType: 'text/plain' } });
    await conn.publish('pw/props/b', 'with two', { qos: 2, properties: { userProperties: { origin: 'gw2' } } });
    await conn.publish('pw/props/c', 'without', { qos: 1 });
    expect(mqttJsPublishes(conn.clientId).map((p) => p.topic)).toEqual(['pw/props/a', 'pw/props/b']);
    // By topic: the subscriber (QoS 2) hands a QoS 2 message on at its PUBREL, so c may come before b.
    const received = [...(await sub.count(3))].sort((x, y) => x.topic.localeCompare(y.topic));
    expect(received.map((r) => [r.topic, r.payload.toString()])).toEqual([
      ['pw/props/a', 'with'],
      ['pw/props/b', 'with two'],
      ['pw/props/c', 'without'],
    ]);
    expect(received[0]?.packet.properties).toMatchObject({ userProperties: { origin: 'gw', n: ['1', '2'] }, contentType: 'text/plain' });
    expect(received[1]?.packet.properties).toMatchObject({ userProperties: { origin: 'gw2' } });
    expect(received[2]?.packet.properties?.userProperties).toBeUndefined();
  });
});

describe('a broker refusing a message the writer sent', () => {
  it('MQTT 5 PUBACK 0x97 and PUBREC 0x97: PublishRejected with the reason code, the neighbours delivered, the session stays', async () => {
    const seen: IPublishPacket[] = [];
    const broker = await scriptedBroker({
      protocolVersion: 5,
      onPacket: (connection, packet) => {
        if (packet.cmd === 'publish') {
          seen.push(packet);
          const reasonCode = packet.topic.startsWith('quota/') ? 0x97 : 0;
          if (packet.qos === 1) connection.send({ cmd: 'puback', messageId: packet.messageId ?? 0, reasonCode });
          if (packet.qos === 2) connection.send({ cmd: 'pubrec', messageId: packet.messageId ?? 0, reasonCode });
          return true;
        }
        if (packet.cmd === 'pubrel') {
          connection.send({ cmd: 'pubcomp', messageId: packet.messageId ?? 0 });
          return true;
        }
        return false;
      },
    });
    const credential = new DeviceCredential({ clientId: 'GID_pw@@@refused-1', instanceId: 'mqtt-pw', deviceAccessKeyId: 'DC.pwKey', deviceAccessKeySecret: 'DC.pwSecret' });
    const conn = await connectDevice({ credential, brokerUrl: broker.url, protocolVersion: 5, reconnect: { minDelayMs: 10, maxDelayMs: 100 } });
    onTestFinished(() => conn.end(true));
    let offline = 0;
    conn.on('offline', () => (offline += 1));

    const results = await Promise.allSettled([
      conn.publish('ok/1', 'fine', { qos: 1 }),
      conn.publish('quota/1', 'over', { qos: 1 }),
      conn.publish('quota/2', 'over too', { qos: 2 }),
      conn.publish('ok/2', 'fine too', { qos: 2 }),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'rejected', 'fulfilled']);
    for (const [i, topic] of [
      [1, 'quota/1'],
      [2, 'quota/2'],
    ] as const) {
      const error = (results[i] as PromiseRejectedResult).reason as unknown;
      expect(error).toBeInstanceOf(PublishError);
      expect(error).toMatchObject({ code: 'PublishRejected', reasonCode: 0x97, topic });
    }
    // What the broker parsed (mqtt-packet) is what was published, and the writer wrote all four.
    expect(seen.map((p) => [p.topic, p.payload.toString(), p.qos, p.retain, p.dup])).toEqual([
      ['ok/1', 'fine', 1, false, false],
      ['quota/1', 'over', 1, false, false],
      ['quota/2', 'over too', 2, false, false],
      ['ok/2', 'fine too', 2, false, false],
    ]);
    expect(mqttJsPublishes(conn.clientId)).toEqual([]);
    expect(broker.connects).toHaveLength(1);
    expect(offline).toBe(0);
    expect(conn.outbox.messages).toBe(0);
  });

  it('MQTT 5, the emulator closing the session on a topic outside its parent topics (DISCONNECT): PublishRejected, once', async () => {
    const e = emulator();
    const { conn } = await device(e, 'refused-2', { protocolVersion: 5 });
    const error = await conn.publish('nope/x', 'x', { qos: 1 }).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(PublishError);
    expect(error).toMatchObject({ code: 'PublishRejected', topic: 'nope/x' });
    expect((error as PublishError).reasonCode).toBeGreaterThanOrEqual(0x80);
    // Sent by the writer on each session it went out on.
    expect(clientsOf(conn.clientId).length).toBeGreaterThanOrEqual(1);
    expect(mqttJsPublishes(conn.clientId)).toEqual([]);
    const seen = new Promise<string>((resolve) => e.broker.on('publish', (packet, c) => c?.id === conn.clientId && resolve(`${packet.topic} ${packet.payload.toString()}`)));
    await conn.publish('pw/after', 'next', { qos: 1 });
    expect(await seen).toBe('pw/after next');
    expect(mqttJsPublishes(conn.clientId)).toEqual([]);
  });
});

/**
 * A TCP relay in front of a broker whose connections can be made to hold one direction: what the client sends ('up':
 * its PUBLISH packets never reach the broker) or what the broker sends ('down': its acknowledgements never arrive).
 * Both directions are parsed with mqtt-packet, so `held(n)` resolves once n PUBLISH packets (up) or acknowledgements
 * (down) were held. `cut()` then destroys every connection, as a network drop does. Later connections pass everything.
 */
async function holdingRelay(target: string, protocolVersion: 4 | 5): Promise<{ url: string; hold(direction: 'up' | 'down'): void; held(n: number): Promise<Packet[]>; cut(): void }> {
  const { hostname, port } = new URL(target);
  const pairs = new Set<[Socket, Socket]>();
  const heldPackets: Packet[] = [];
  let waiter: { n: number; resolve: (p: Packet[]) => void } | undefined;
  const holding = new WeakMap<Socket, 'up' | 'down'>();
  const server = createServer((down) => {
    const up = netConnect(Number(port), hostname);
    const pair: [Socket, Socket] = [down, up];
    pairs.add(pair);
    const drop = (): void => {
      pairs.delete(pair);
      down.destroy();
      up.destroy();
    };
    down.on('error', drop).on('close', drop);
    up.on('error', drop).on('close', drop);
    const relay = (from: Socket, to: Socket, direction: 'up' | 'down', held: (p: Packet) => boolean): void => {
      const parser = mqttPacket.parser({ protocolVersion });
      parser.on('packet', (packet: Packet) => {
        if (holding.get(down) !== direction || !held(packet)) return;
        heldPackets.push(packet);
        if (waiter && heldPackets.length >= waiter.n) waiter.resolve(heldPackets);
      });
      from.on('data', (chunk: Buffer) => {
        parser.parse(chunk);
        if (holding.get(down) !== direction) to.write(chunk);
      });
    };
    relay(down, up, 'up', (p) => p.cmd === 'publish');
    relay(up, down, 'down', (p) => p.cmd === 'puback' || p.cmd === 'pubrec');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const cut = (): void => {
    for (const [a, b] of [...pairs]) {
      a.destroy();
      b.destroy();
    }
    pairs.clear();
  };
  onTestFinished(async () => {
    cut();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return {
    url: `mqtt://127.0.0.1:${(server.address() as { port: number }).port}`,
    hold: (direction) => {
      for (const [down] of pairs) holding.set(down, direction);
    },
    held: (n) => (heldPackets.length >= n ? Promise.resolve(heldPackets) : new Promise((resolve) => (waiter = { n, resolve }))),
    cut,
  };
}

describe('a connection lost with messages the writer sent in flight', () => {
  const batch = [
    { topic: 'pw/lost/1', payload: 'one', qos: 1 },
    { topic: 'pw/lost/2', payload: 'two', qos: 2 },
    { topic: 'pw/lost/3', payload: 'three 🌡', qos: 1 },
    { topic: 'pw/lost/4', payload: 'four', qos: 2 },
  ] as const;

  for (const [protocolVersion, name] of PROTOCOLS) {
    it(`${name}: PUBLISH packets that never reached the broker are sent again on the next session and delivered`, async () => {
      const e = emulator();
      const relay = await holdingRelay(e.mqttUrl, protocolVersion);
      const credential = await registerDevice(e, `GID_pw@@@lost-up-${protocolVersion}`);
      const sub = await subscriber(e.mqttUrl, await peer(e, `lost-up-sub-${protocolVersion}`), 'pw/lost/#', protocolVersion);
      const conn = await connectDevice({ credential, brokerUrl: relay.url, protocolVersion, brokerIsApsaraMq: false, reconnect: { minDelayMs: 10, maxDelayMs: 100 } });
      onTestFinished(() => conn.end(true));
      const first = liveClient(conn);
      let brokerSaw = 0;
      e.broker.on('publish', (_packet, c) => {
        if (c?.id === conn.clientId) brokerSaw++;
      });

      relay.hold('up');
      const delivered = batch.map((m) => conn.publish(m.topic, m.payload, { qos: m.qos }));
      // The relay parsed the writer's four PUBLISH packets (and held them): they are in flight in mqtt.js's session.
      const held = (await relay.held(batch.length)) as IPublishPacket[];
      expect(held.map((p) => [p.topic, p.payload.toString(), p.qos])).toEqual(batch.map((m) => [m.topic, m.payload, m.qos]));
      expect(Object.keys((first as Internals).outgoing)).toHaveLength(batch.length);
      expect(brokerSaw).toBe(0);
      const back = once(conn, 'online');
      relay.cut();
      await back;

      await expect(Promise.all(delivered)).resolves.toEqual(batch.map(() => undefined));
      const received = await sub.count(batch.length);
      expect(received.map((r) => [r.topic, r.payload.toString(), r.packet.qos]).sort()).toEqual(batch.map((m) => [m.topic, m.payload, m.qos]).sort());
      expect(brokerSaw).toBe(batch.length);
      // Two sessions, each written by the writer.
      expect(clientsOf(conn.clientId)).toHaveLength(2);
      expect(mqttJsPublishes(conn.clientId)).toEqual([]);
      expect(conn.outbox.messages).toBe(0);
    });
  }

  it('MQTT 3.1.1: messages the broker got but whose acknowledgements were lost are sent again and settle on the next session', async () => {
    const e = emulator();
    const relay = await holdingRelay(e.mqttUrl, 4);
    const credential = await registerDevice(e, 'GID_pw@@@lost-down');
    const sub = await subscriber(e.mqttUrl, await peer(e, 'lost-down-sub'), 'pw/lost/#', 4);
    const conn = await connectDevice({ credential, brokerUrl: relay.url, brokerIsApsaraMq: false, reconnect: { minDelayMs: 10, maxDelayMs: 100 } });
    onTestFinished(() => conn.end(true));
    const first = liveClient(conn);

    relay.hold('down');
    const delivered = batch.map((m) => conn.publish(m.topic, m.payload, { qos: m.qos }));
    let settled = 0;
    for (const d of delivered) d.then(() => settled++, () => undefined);
    // The broker answered each (PUBACK for QoS 1, PUBREC for QoS 2): the relay held the answers.
    const acks = await relay.held(batch.length);
    expect(acks.map((p) => p.cmd).sort()).toEqual(['puback', 'puback', 'pubrec', 'pubrec']);
    // The QoS 1 messages were routed already (a QoS 2 one waits for the PUBREL the client never sent).
    await sub.count(2);
    expect(settled).toBe(0);
    expect(Object.keys((first as Internals).outgoing)).toHaveLength(batch.length);
    const back = once(conn, 'online');
    relay.cut();
    await back;

    await expect(Promise.all(delivered)).resolves.toEqual(batch.map(() => undefined));
    // At least once: each QoS 1 message twice (once per session); each QoS 2 one routed on its PUBREL, on the new session.
    const received = await sub.count(2 * 2 + 2);
    for (const m of batch) {
      const copies = received.filter((r) => r.topic === m.topic && r.payload.toString() === m.payload).length;
      if (m.qos === 1) expect(copies, m.topic).toBe(2);
      else expect(copies, m.topic).toBeGreaterThanOrEqual(1);
    }
    expect(clientsOf(conn.clientId)).toHaveLength(2);
    expect(mqttJsPublishes(conn.clientId)).toEqual([]);
  });
});

const { available: hasMosquitto, skipped } = mosquittoPrograms(['mosquitto', 'passwd']);

describe.skipIf(!hasMosquitto)(`the writer against Mosquitto${skipped}`, () => {
  const device = new DeviceCredential({ clientId: 'GID_pw@@@mosq-dev', instanceId: 'mqtt-pw', deviceAccessKeyId: 'DC.mosqKey', deviceAccessKeySecret: 'DC.mosqSecret' });
  const watcher = new DeviceCredential({ clientId: 'GID_pw@@@mosq-sub', instanceId: 'mqtt-pw', deviceAccessKeyId: 'DC.mosqSubKey', deviceAccessKeySecret: 'DC.mosqSubSecret' });

  for (const [protocolVersion, name] of PROTOCOLS) {
    it(`${name}: QoS 1 and QoS 2 written by the writer, delivered to an independent subscriber${protocolVersion === 5 ? '; an ACL refusal (PUBACK/PUBREC 0x87) is PublishRejected' : ''}`, async () => {
      const signed = signDeviceCredential(device);
      const watching = signDeviceCredential(watcher);
      const broker = await startMosquitto([signed, watching], `user ${signed.username}\ntopic readwrite pw/#\n\nuser ${watching.username}\ntopic read pw/#\n`);
      const sub = await subscriber(broker.url, watching, 'pw/#', protocolVersion);
      const conn = await connectDevice({ credential: device, brokerUrl: broker.url, protocolVersion, brokerIsApsaraMq: false, reconnect: { minDelayMs: 10, maxDelayMs: 100 } });
      onTestFinished(() => conn.end(true));
      expect(liveClient(conn).connected).toBe(true);
      const before = clientsOf(conn.clientId).length;

      await conn.publish('pw/m/1', 'one', { qos: 1 });
      await conn.publish('pw/m/2', Buffer.from([0, 0xff, 0x10]), { qos: 2, retain: true });
      const received = await sub.count(2);
      expect(received.map((r) => [r.topic, [...r.payload], r.packet.qos, r.packet.retain])).toEqual([
        ['pw/m/1', [...Buffer.from('one')], 1, false],
        ['pw/m/2', [0, 0xff, 0x10], 2, protocolVersion === 5],
      ]);
      if (protocolVersion === 5) {
        for (const qos of [1, 2] as const) {
          const error = await conn.publish(`denied/${qos}`, 'x', { qos }).catch((err: unknown) => err);
          expect(error).toBeInstanceOf(PublishError);
          expect(error).toMatchObject({ code: 'PublishRejected', reasonCode: 0x87, topic: `denied/${qos}` });
        }
        await conn.publish('pw/m/3', 'after', { qos: 1 });
        expect((await sub.count(3))[2]?.topic).toBe('pw/m/3');
      }
      expect(clientsOf(conn.clientId)).toHaveLength(before);
      expect(mqttJsPublishes(conn.clientId)).toEqual([]);
    });
  }
});

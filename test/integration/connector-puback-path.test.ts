/**
 * The PUBACK path of the connector's own PUBLISH writes (src/connector/publish-writer.ts, packet-guard.ts): a PUBACK
 * the packet guard takes out of the stream must leave the session as mqtt.js's own handling of it would. Real
 * emulator on port 0, real mqtt.js clients; the network between them is the simulator's fault relay (a real TCP
 * relay) where a test needs a slow link.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import type * as Mqtt from 'mqtt';
import type { MqttClient } from 'mqtt';
import mqttPacket, { type Packet } from 'mqtt-packet';
import { describe, expect, it, onTestFinished, vi } from 'vitest';
import { type WebSocket, WebSocketServer } from 'ws';
import { Attempt } from '../../src/connector/attempt.js';
import { connectDevice } from '../../src/connector/connect.js';
import { guard } from '../../src/connector/packet-guard.js';
import { pubackTaken, takesPuback, writePublish } from '../../src/connector/publish-writer.js';
import { DeviceCredential } from '../../src/credential.js';
import { signDeviceCredential } from '../../src/signer/mqtt.js';
import { FaultRelay } from '../../src/simulator/fault-relay.js';
import { registerDevice, useEmulator } from '../helpers/emulator.js';

/** mqtt.js as the connector loads it (src/connector/mqtt-client.ts: require()). */
const mqtt = createRequire(import.meta.url)('mqtt') as typeof Mqtt;

/** The mqtt.js clients made while `run` runs (each attempt of a connection is one). */
async function clientsMadeBy<T>(run: () => Promise<T>): Promise<{ value: T; clients: MqttClient[] }> {
  const proto = mqtt.MqttClient.prototype;
  const original = proto.connect;
  const clients: MqttClient[] = [];
  proto.connect = function (this: MqttClient) {
    clients.push(this);
    return original.call(this);
  };
  try {
    return { value: await run(), clients };
  } finally {
    proto.connect = original;
  }
}

const tlsDir = resolve(import.meta.dirname, '../../fixtures/tls');
const ca = readFileSync(resolve(tlsDir, 'ca.pem'));
const emulator = useEmulator({ parentTopics: ['lp'], tls: { cert: readFileSync(resolve(tlsDir, 'server.pem')), key: readFileSync(resolve(tlsDir, 'server-key.pem')) } });

describe('taken PUBACKs on every transport', () => {
  // The emulator's WebSocket listener sends a PUBACK as three WebSocket messages (mqtt-packet's writes): those are
  // mqtt.js's. The broker below sends whole packets, as the service does.
  it.each(['mqttUrl', 'mqttsUrl', 'wsUrl', 'wssUrl'] as const)(
    '%s: a burst of QoS 1 messages to a topic the device subscribes to (PUBACKs and PUBLISHes mixed in its reads): each settles once, each arrives, one session',
    async (which) => {
      const e = emulator();
      const credential = await registerDevice(e, `GID_lp@@@${which}`);
      const conn = await connectDevice({ credential, brokerUrl: e[which] ?? '', ca, reconnect: { minDelayMs: 5, maxDelayMs: 20 } });
      onTestFinished(() => conn.end(true));
      let offline = 0;
      conn.on('offline', () => (offline += 1));
      const taken = vi.spyOn(Attempt.prototype, 'pubackTaken');
      onTestFinished(() => taken.mockRestore());
      const count = 300;
      const arrived = new Map<string, number>();
      let all: () => void = () => {};
      const allArrived = new Promise<void>((done) => (all = done));
      conn.on('message', (topic) => {
        arrived.set(topic, (arrived.get(topic) ?? 0) + 1);
        if (arrived.size === count) all();
      });
      await conn.subscribe(`lp/${which}/#`, { qos: 1 });
      const settled = await Promise.allSettled(Array.from({ length: count }, (_, i) => conn.publish(`lp/${which}/${i}`, `m${i}`, { qos: 1 })));
      expect(settled.filter((s) => s.status !== 'fulfilled')).toEqual([]);
      await allArrived;
      expect([...arrived.values()].every((n) => n === 1)).toBe(true);
      // Over TCP and TLS the guard took (nearly) all of them: a PUBACK cut across two reads is mqtt.js's.
      if (which === 'mqttUrl' || which === 'mqttsUrl') expect(taken.mock.calls.length).toBeGreaterThan(count / 2);
      expect(new Set(taken.mock.calls.map(([id]) => id)).size).toBe(taken.mock.calls.length);
      expect(offline).toBe(0);
    },
  );
});

/**
 * A WebSocket broker on port 0 that sends whole MQTT packets, one WebSocket message each, except the PUBACKs of each
 * `batch` QoS 1 PUBLISH packets: all in one message, the first one twice, and a PUBACK of an id never used.
 */
async function wsBroker(batch: number): Promise<{ url: string; connects: number }> {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: () => 'mqtt' });
  await new Promise<void>((done) => server.once('listening', done));
  const sockets = new Set<WebSocket>();
  onTestFinished(async () => {
    for (const ws of sockets) ws.terminate();
    await new Promise<void>((done) => server.close(() => done()));
  });
  const state = { url: `ws://127.0.0.1:${(server.address() as { port: number }).port}/mqtt`, connects: 0 };
  server.on('connection', (ws) => {
    sockets.add(ws);
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    const send = (packet: Packet): void => ws.send(mqttPacket.generate(packet));
    let acks: number[] = [];
    ws.on('message', (data: Buffer) => parser.parse(data));
    parser.on('packet', (packet: Packet) => {
      if (packet.cmd === 'connect') {
        state.connects += 1;
        send({ cmd: 'connack', returnCode: 0, sessionPresent: false });
      } else if (packet.cmd === 'pingreq') send({ cmd: 'pingresp' });
      else if (packet.cmd === 'publish' && packet.qos === 1) {
        acks.push(packet.messageId ?? 0);
        if (acks.length < batch) return;
        const ids = [...acks, acks[0] ?? 0, ((acks[0] ?? 0) + 30_000) % 65_535 || 1];
        acks = [];
        ws.send(Buffer.concat(ids.map((messageId) => mqttPacket.generate({ cmd: 'puback', messageId }))));
      }
    });
  });
  return state;
}

describe('taken PUBACKs over WebSocket', () => {
  const credential = new DeviceCredential({ clientId: 'GID_lp@@@ws-dev', instanceId: 'mqtt-lp', deviceAccessKeyId: 'DC.lpKey', deviceAccessKeySecret: 'DC.lpSecret' });

  it.each([1, 50])('PUBACKs %i to a WebSocket message (with a duplicate and a stray one): each message settles, each PUBACK taken, one session', async (batch) => {
    const broker = await wsBroker(batch);
    const conn = await connectDevice({ credential, brokerUrl: broker.url, reconnect: { minDelayMs: 5, maxDelayMs: 20 } });
    onTestFinished(() => conn.end(true));
    const errors: Error[] = [];
    conn.on('error', (error) => errors.push(error));
    const taken = vi.spyOn(Attempt.prototype, 'pubackTaken');
    onTestFinished(() => taken.mockRestore());
    const count = 200;
    const settled = await Promise.allSettled(Array.from({ length: count }, (_, i) => conn.publish(`lp/ws/${i}`, `m${i}`, { qos: 1 })));
    expect(settled.filter((s) => s.status !== 'fulfilled')).toEqual([]);
    // Each PUBACK of a message and each duplicate taken (the duplicate answers nothing); the stray one is mqtt.js's.
    expect(taken.mock.calls.length).toBe(count + count / batch);
    expect(errors).toEqual([]);
    expect(broker.connects).toBe(1);
    expect(conn.online).toBe(true);
  });
});

describe('the PUBLISH packets the writer writes', () => {
  it.each(['mqttUrl', 'mqttsUrl'] as const)('%s: QoS 1 messages published in one turn leave the socket in one write, as mqtt.js sends those of its publish()', async (which) => {
    const e = emulator();
    const credential = await registerDevice(e, `GID_lp@@@turn-${which}`);
    const { value: conn, clients } = await clientsMadeBy(() => connectDevice({ credential, brokerUrl: e[which] ?? '', ca }));
    onTestFinished(() => conn.end(true));
    const stream = (clients[0] as MqttClient).stream as unknown as { _write: (...args: unknown[]) => void; _writev: (...args: unknown[]) => void };
    let writes = 0;
    for (const method of ['_write', '_writev'] as const) {
      const original = stream[method];
      stream[method] = function (this: unknown, ...args: unknown[]) {
        writes += 1;
        return original.apply(this, args);
      };
    }
    const count = 200;
    // One publish() after the other in one turn, as an application sending a batch does: the outbox sends each at once.
    await Promise.all(Array.from({ length: count }, (_, i) => conn.publish(`lp/turn/${i}`, `m${i}`, { qos: 1 })));
    expect(writes).toBe(1);
  });
});

describe('a taken PUBACK in the mqtt.js session', () => {
  it("answers what mqtt.js's end() waits for: a client ended gracefully with a written message in flight ends once its PUBACK is taken", async () => {
    const e = emulator();
    const signed = signDeviceCredential(await registerDevice(e, 'GID_lp@@@end-1'));
    // A bare mqtt.js client with the guard in its stream, as the connector's attempt puts it there (attempt.ts).
    const client = mqtt.connect(e.mqttUrl, { ...signed, protocolVersion: 4, reconnectPeriod: 0, manualConnect: true });
    onTestFinished(() => client.endAsync(true));
    const buildable = client as unknown as { streamBuilder: (c: MqttClient) => import('node:stream').Duplex };
    const build = buildable.streamBuilder;
    buildable.streamBuilder = (c) => {
      const stream = build(c);
      guard(stream, 1 << 20, { violated: () => {}, takesPuback: (id) => takesPuback(client, id), pubackTaken: (id) => pubackTaken(client, id) });
      return stream;
    };
    client.connect();
    await new Promise<void>((done) => client.once('connect', () => done()));
    let acknowledged: (error?: Error) => void = () => {};
    const answer = new Promise<Error | undefined>((done) => (acknowledged = done));
    expect(writePublish(client, 'lp/end', 'last words', { qos: 1 }, (error) => acknowledged(error))).toBe(true);
    // Not forced: mqtt.js sends DISCONNECT once nothing is in flight (its 'outgoingEmpty', emitted as it handles an ack).
    const ended = new Promise<void>((done) => client.end(false, () => done()));
    expect(await answer).toBeFalsy();
    expect(client.listenerCount('outgoingEmpty')).toBe(0);
    await ended;
  });
});

describe('taken PUBACKs and the keepalive', () => {
  it('a slow uplink kept busy by acknowledged QoS 1 messages keeps its session: a taken PUBACK counts for the keepalive as one mqtt.js handles', async () => {
    const e = emulator();
    const credential = await registerDevice(e, 'GID_lp@@@uplink-1');
    const broker = new URL(e.mqttUrl);
    const relay = await FaultRelay.start({ host: broker.hostname, port: Number(broker.port) }, 1);
    onTestFinished(() => relay.close());
    const { host, port } = relay.address(0);
    // Keepalive 1 s: mqtt.js pings after 1 s without an acknowledgement it handled, and gives up 0.5 s later.
    const conn = await connectDevice({ credential, brokerUrl: `mqtt://${host}:${port}`, keepalive: 1, reconnect: { minDelayMs: 5, maxDelayMs: 20 } });
    onTestFinished(() => conn.end(true));
    let offline = 0;
    conn.on('offline', () => (offline += 1));
    const errors: Error[] = [];
    conn.on('error', (error) => errors.push(error));
    // 200 KB/s each way; 150 messages of 4 KB: about 3 s of upload, a PUBACK every 20 ms or so all along. A PINGREQ
    // written after 1 s waits behind 2 s of messages in the link: only the PUBACKs can keep the session alive.
    relay.apply('slow', [0], { kind: 'bandwidth', bytesPerSec: 200_000 });
    const payload = Buffer.alloc(4_000, 1);
    const sent = Array.from({ length: 150 }, (_, i) => conn.publish(`lp/up/${i}`, payload, { qos: 1 }));
    await Promise.all(sent);
    expect(errors).toEqual([]);
    expect(offline).toBe(0);
  });
});

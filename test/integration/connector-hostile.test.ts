/**
 * One packet must not kill the device's process (issue 24). A scripted broker (a real TCP server; packets built by
 * hand or by mqtt-packet) sends, after its CONNACK, what mqtt.js 5.16 cannot take: a QoS 1 PUBLISH or a PUBREL
 * whose packet identifier is cut off (mqtt.js acknowledges identifier -1 and throws from the socket's data handler),
 * a malformed packet, a packet far over the connector's `maxIncomingPacketBytes`. Each time the session closes with
 * a typed `ProtocolError`, emitted as `error`, and the connection heals like after any loss: it reconnects, and the
 * next, well-behaved session works. No uncaught exception is allowed (vitest fails the file on one, and each test
 * also listens itself).
 */
import { once } from 'node:events';
import mqttPacket from 'mqtt-packet';
import { describe, expect, it, onTestFinished } from 'vitest';
import { connectDevice, type DeviceConnection } from '../../src/connector/connect.js';
import { DeviceCredential } from '../../src/credential.js';
import { type ApsaraMqDeviceError, ConnectError } from '../../src/errors.js';
import { noUncaughtException, varint } from '../helpers/fuzz.js';
import { type BrokerConnection, scriptedBroker } from '../helpers/scripted-broker.js';

const credential = new DeviceCredential({ clientId: 'GID_hostile@@@dev-1', instanceId: 'mqtt-hostile', deviceAccessKeyId: 'DC.hostileKey', deviceAccessKeySecret: 'DC.hostileSecret' });

/**
 * A broker that answers the first connection's SUBSCRIBE (the test's cue: its listeners are attached by then) with a
 * SUBACK and then `bytes`; every other packet and connection gets a well-behaved answer. MQTT 3.1.1 unless told
 * otherwise.
 */
async function hostileBroker(bytes: Buffer, protocolVersion: 4 | 5 = 4): Promise<Awaited<ReturnType<typeof scriptedBroker>>> {
  return scriptedBroker({
    protocolVersion,
    onPacket: (connection: BrokerConnection, packet) => {
      if (connection.n !== 1 || packet.cmd !== 'subscribe') return false;
      connection.send({ cmd: 'suback', messageId: packet.messageId ?? 0, granted: [0] });
      connection.write(bytes);
      return true;
    },
  });
}

/** Connect, listen for errors (and for what `listen` adds), then subscribe: the hostile broker's cue. */
async function open(url: string, options: Partial<Parameters<typeof connectDevice>[0]> = {}, listen: (conn: DeviceConnection) => void = () => {}): Promise<{ conn: DeviceConnection; errors: ApsaraMqDeviceError[] }> {
  const errors: ApsaraMqDeviceError[] = [];
  const conn = await connectDevice({ credential, brokerUrl: url, reconnect: { minDelayMs: 5, maxDelayMs: 20 }, ...options });
  onTestFinished(() => conn.end(true));
  conn.on('error', (error) => errors.push(error));
  listen(conn);
  await conn.subscribe('hostile/#', { qos: 0 });
  return { conn, errors };
}

/** The session after the hostile one: up, and a QoS 1 message goes through it. */
async function healed(conn: DeviceConnection): Promise<void> {
  if (!conn.online) await once(conn, 'online');
  await conn.publish('hostile/after', 'fine', { qos: 1 });
}

describe('a broker that sends what mqtt.js cannot take', () => {
  it.each([
    ['32 02 00 00', 'a QoS 1 PUBLISH of 4 bytes (empty topic, no packet identifier)'],
    ['34 02 00 00', 'a QoS 2 PUBLISH of 4 bytes'],
    ['32 03 00 00 00', 'a QoS 1 PUBLISH with one byte of its packet identifier'],
    ['62 00', 'a PUBREL without its packet identifier'],
    ['32 05 00 03 61 2f 62', 'a QoS 1 PUBLISH to a/b, its identifier cut off'],
  ])('%s (%s): the session closes with ProtocolError, the connection heals', async (hex) => {
    noUncaughtException();
    const broker = await hostileBroker(Buffer.from(hex.replaceAll(' ', ''), 'hex'));
    const { conn, errors } = await open(broker.url);
    await healed(conn);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toBeInstanceOf(ConnectError);
    expect(errors[0]).toMatchObject({ code: 'ProtocolError', retryable: true, clientId: credential.clientId });
    expect(errors[0]?.message).toMatch(/packet identifier/);
    expect(broker.connects).toHaveLength(2);
    expect(conn.state).toBe('online');
  });

  it('heals the same way when nobody listens for errors', async () => {
    noUncaughtException();
    const broker = await hostileBroker(Buffer.from('32020000', 'hex'));
    const conn = await connectDevice({ credential, brokerUrl: broker.url, reconnect: { minDelayMs: 5, maxDelayMs: 20 } });
    onTestFinished(() => conn.end(true));
    await conn.subscribe('hostile/#', { qos: 0 });
    await healed(conn);
    expect(broker.connects).toHaveLength(2);
  });

  it('a packet mqtt.js cannot parse (a PUBREL with wrong flags) closes the session it would otherwise leave open', async () => {
    noUncaughtException();
    const broker = await hostileBroker(Buffer.from('60020001', 'hex'));
    const { conn, errors } = await open(broker.url);
    await healed(conn);
    expect(errors.map((e) => e.code)).toEqual(['ProtocolError']);
    expect(errors[0]?.message).toContain('a packet MQTT does not allow');
  });

  it('MQTT 5: a PUBLISH with a Topic Alias the device never allowed closes the session with ProtocolError', async () => {
    noUncaughtException();
    const alias = mqttPacket.generate({ cmd: 'publish', topic: 'a/b', payload: Buffer.from('x'), qos: 0, retain: false, dup: false, properties: { topicAlias: 3 } }, { protocolVersion: 5 });
    const broker = await hostileBroker(alias, 5);
    const { conn, errors } = await open(broker.url, { protocolVersion: 5 });
    await healed(conn);
    expect(errors.map((e) => e.code)).toEqual(['ProtocolError']);
  });

  it('before the CONNACK, the first connect rejects with ProtocolError', async () => {
    noUncaughtException();
    const broker = await scriptedBroker({ onConnect: (connection) => connection.write(Buffer.from('32020000', 'hex')) });
    const error = await connectDevice({ credential, brokerUrl: broker.url }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectError);
    expect(error).toMatchObject({ code: 'ProtocolError' });
    expect((error as Error).message).toMatch(/did not answer in MQTT \(a QoS 1 PUBLISH whose packet identifier is cut off/);
  });
});

describe('maxIncomingPacketBytes', () => {
  /** The fixed header of a PUBLISH (QoS 0) with this remaining length. */
  const publishHeader = (remaining: number): Buffer => Buffer.concat([Buffer.from([0x30]), varint(remaining)]);

  it('a broker announcing a 256 MB PUBLISH: the session closes after its header and a few bytes, with ProtocolError; it heals', async () => {
    noUncaughtException();
    const remaining = 256 * 1024 * 1024 - 6;
    // The header, the topic and 1 KB of the body: all the broker sends of it.
    const start = Buffer.concat([publishHeader(remaining), Buffer.from([0, 3]), Buffer.from('a/b'), Buffer.alloc(1024, 0x61)]);
    const broker = await hostileBroker(start);
    const { conn, errors } = await open(broker.url);
    await broker.connections[0]?.closed; // the device closed the socket: it does not wait for the other 255.99 MB
    await healed(conn);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ code: 'ProtocolError', retryable: true });
    expect(errors[0]?.message).toContain(`a packet of ${remaining + 5} bytes, over maxIncomingPacketBytes`);
    expect(errors[0]?.remedy).toContain('maxIncomingPacketBytes');
  });

  it('the limit is exact: a packet of maxIncomingPacketBytes is delivered, one byte more closes the session', async () => {
    noUncaughtException();
    const publish = (payloadBytes: number): Buffer => mqttPacket.generate({ cmd: 'publish', topic: 'a/b', payload: Buffer.alloc(payloadBytes, 0x62), qos: 0, retain: false, dup: false });
    const fits = publish(400 - 3 - 5); // fixed header 3 bytes (remaining length 397 takes 2), topic 5
    expect(fits.length).toBe(400);
    const broker = await hostileBroker(Buffer.concat([fits, publish(400 - 3 - 5 + 1)]));
    const received: number[] = [];
    const { conn, errors } = await open(broker.url, { maxIncomingPacketBytes: 400 }, (c) => c.on('message', (_topic, payload) => received.push(payload.length)));
    await healed(conn);
    expect(received).toEqual([392]);
    expect(errors.map((e) => e.message)).toEqual([expect.stringContaining('a packet of 401 bytes, over maxIncomingPacketBytes')]);
  });

  it('before the CONNACK too: the first connect rejects with ProtocolError naming the option', async () => {
    noUncaughtException();
    const broker = await scriptedBroker({ onConnect: (connection) => connection.write(publishHeader(64 * 1024 * 1024)) });
    const error = await connectDevice({ credential, brokerUrl: broker.url }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectError);
    expect(error).toMatchObject({ code: 'ProtocolError', remedy: expect.stringContaining('maxIncomingPacketBytes') });
    expect((error as Error).message).toContain(`sent a packet of ${64 * 1024 * 1024 + 5} bytes before its CONNACK, over maxIncomingPacketBytes`);
  });

  it('MQTT 5: the CONNECT tells the broker the limit (Maximum Packet Size)', async () => {
    const broker = await scriptedBroker({ protocolVersion: 5 });
    await open(broker.url, { protocolVersion: 5 });
    await open(broker.url, { protocolVersion: 5, maxIncomingPacketBytes: 4096 });
    expect(broker.connects.map((c) => c.properties?.maximumPacketSize)).toEqual([1024 * 1024, 4096]);
  });
});

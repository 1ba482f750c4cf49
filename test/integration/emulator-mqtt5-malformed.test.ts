/**
 * Malformed MQTT 5 packets and unknown protocol levels (issue 24). aedes 2.0.0-beta.1 reads what mqtt-packet leaves
 * of a property it could not parse (a null Response Topic, a -1 Topic Alias, a list for a duplicated one) and threw
 * out of the socket's read handler, which ended the whole emulator, OpenAPI included. Each case is sent as raw bytes
 * (after a real login where it says so); the client is answered as MQTT 5.0 §4.13 has it (CONNACK or DISCONNECT
 * 0x81 Malformed Packet / 0x82 Protocol Error), only that client is closed, and the emulator goes on serving.
 */
import type { IConnackPacket, IDisconnectPacket } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import type { Emulator } from '../../src/emulator/index.js';
import type { MqttCredentials } from '../../src/signer/mqtt.js';
import { accountLogin } from '../helpers/broker.js';
import { connectMqtt, useEmulator } from '../helpers/emulator.js';
import { rawLogin, rawSocket } from '../helpers/raw-mqtt.js';

const hex = (text: string): Buffer => Buffer.from(text.replace(/\s+/g, ''), 'hex');
/** An MQTT string: two-byte length, then the bytes, as hex. */
const str = (text: string): string => `${Buffer.byteLength(text).toString(16).padStart(4, '0')}${Buffer.from(text).toString('hex')}`;

/** A whole packet: the first byte, the remaining length (a variable byte integer), the body. */
function packet(first: number, body: string): Buffer {
  const bytes = hex(body);
  const length: number[] = [];
  for (let n = bytes.length; ; ) {
    const digit = n % 128;
    n = Math.floor(n / 128);
    length.push(n > 0 ? digit | 0x80 : digit);
    if (n === 0) break;
  }
  return Buffer.concat([Buffer.from([first, ...length]), bytes]);
}

/** A property block: its one-byte length, then the properties. */
function props(properties: string): string {
  return `${(hex(properties).length).toString(16).padStart(2, '0')}${properties}`;
}

/** An MQTT 5 CONNECT with username, password and clean start, and these properties. */
function connectWith(login: MqttCredentials, properties: string, will = ''): Buffer {
  const flags = will === '' ? 'c2' : 'c6';
  return packet(0x10, `${str('MQTT')} 05 ${flags} 003c ${props(properties)} ${str(login.clientId)} ${will} ${str(login.username)} ${str(login.password)}`);
}

/** Still serving after a case: the OpenAPI answers and a well-behaved MQTT 5 client gets its PUBACK. */
async function stillServes(e: Emulator, clientId: string): Promise<void> {
  expect((await fetch(new URL('/_emulator/stats', e.apiEndpoint))).status).toBe(200);
  const client = await connectMqtt(e.mqttUrl, accountLogin(e, clientId), { protocolVersion: 5 });
  await client.publishAsync('demo/a', 'still here', { qos: 1 });
  await client.endAsync();
}

/** Log in over MQTT 5 as `clientId`, send `bytes`, and resolve with the DISCONNECT the broker answers before it closes. */
async function refusedInSession(e: Emulator, clientId: string, bytes: Buffer): Promise<IDisconnectPacket> {
  const { raw, connack } = await rawLogin(e.mqttUrl, accountLogin(e, clientId), 5);
  expect(connack.reasonCode).toBe(0);
  raw.write(bytes);
  const disconnect = (await raw.next('disconnect')) as IDisconnectPacket;
  await raw.closed;
  return disconnect;
}

const TOPIC = str('demo/a');

describe('MQTT 5: malformed properties from a logged-in client', () => {
  const emulator = useEmulator({ wsPort: false });

  it('the PUBLISH with a truncated Response Topic that killed the emulator: DISCONNECT 0x81, and the emulator lives on', async () => {
    const e = emulator();
    // 32 0e | 00 06 "demo/a" | 00 01 | 03 | 08 00 09 'a' 'b': a Response Topic that says 9 bytes and has 2.
    const bytes = hex('32 0e 0006 64656d6f2f61 0001 03 08 0009 6162');
    const disconnect = await refusedInSession(e, 'GID_v5@@@truncated', bytes);
    expect(disconnect.reasonCode).toBe(0x81);
    expect(disconnect.properties?.reasonString).toContain('responseTopic');
    await stillServes(e, 'GID_v5@@@after');
    expect(e.stats().mqtt.rules['malformedPacket']).toBeGreaterThanOrEqual(1);
  });

  // [what, packet bytes, reason code]: every kind of property cut short, given twice, of another packet, or forbidden.
  // (mqtt-packet keeps only the last of a property given twice when the first is 0, false or empty: the values here are not.)
  const cases: Array<[string, Buffer, 0x81 | 0x82]> = [
    ['PUBLISH: Message Expiry Interval cut short', packet(0x32, `${TOPIC} 0001 ${props('02 0000')}`), 0x81],
    ['PUBLISH: Topic Alias cut short', packet(0x32, `${TOPIC} 0001 ${props('23 00')}`), 0x81],
    ['PUBLISH: Correlation Data cut short', packet(0x32, `${TOPIC} 0001 ${props('09 0005 61')}`), 0x81],
    ['PUBLISH: Content Type cut short', packet(0x30, `${TOPIC} ${props('03 0007 6162')}`), 0x81],
    ['PUBLISH: a User Property whose value is cut short', packet(0x32, `${TOPIC} 0001 ${props('26 0001 61 0005 62')}`), 0x81],
    ['PUBLISH: an unknown property id', packet(0x32, `${TOPIC} 0001 ${props('7f 00')}`), 0x81],
    ['PUBLISH: Session Expiry Interval, a CONNECT property', packet(0x32, `${TOPIC} 0001 ${props('11 0000003c')}`), 0x81],
    ['PUBLISH: Maximum QoS, a CONNACK property', packet(0x30, `${TOPIC} ${props('24 01')}`), 0x81],
    ['PUBLISH: Content Type twice', packet(0x32, `${TOPIC} 0001 ${props('03 0001 61 03 0001 62')}`), 0x82],
    ['PUBLISH: Topic Alias twice', packet(0x32, `${TOPIC} 0001 ${props('23 0001 23 0002')}`), 0x82],
    ['PUBLISH: Response Topic twice', packet(0x30, `${TOPIC} ${props(`08 ${TOPIC} 08 ${TOPIC}`)}`), 0x82],
    ['PUBLISH: a Subscription Identifier, which only the server sends', packet(0x32, `${TOPIC} 0001 ${props('0b 05')}`), 0x82],
    ['SUBSCRIBE: Subscription Identifier twice', packet(0x82, `0001 ${props('0b 01 0b 02')} ${TOPIC} 01`), 0x82],
    ['SUBSCRIBE: Topic Alias, a PUBLISH property', packet(0x82, `0001 ${props('23 0001')} ${TOPIC} 01`), 0x81],
    ['UNSUBSCRIBE: Reason String, not an UNSUBSCRIBE property', packet(0xa2, `0001 ${props('1f 0001 61')} ${TOPIC}`), 0x81],
    ['PUBACK: Reason String cut short', packet(0x40, `0001 00 ${props('1f 0009 61')}`), 0x81],
    ['PUBREC: Reason String twice', packet(0x50, `0001 00 ${props('1f 0001 61 1f 0001 62')}`), 0x82],
    ['PUBREL: Topic Alias, a PUBLISH property', packet(0x62, `0001 00 ${props('23 0001')}`), 0x81],
    ['PUBCOMP: User Property cut short', packet(0x70, `0001 00 ${props('26 0009 61')}`), 0x81],
  ];

  it.each(cases.map(([what, bytes, code]) => [`${what}: DISCONNECT 0x${code.toString(16)}`, bytes, code] as const))('%s, only that client closed', async (what, bytes, reasonCode) => {
    const e = emulator();
    const id = `GID_v5@@@${what.replace(/\W+/g, '-').slice(0, 40)}`;
    const disconnect = await refusedInSession(e, id, bytes);
    expect(disconnect.reasonCode, what).toBe(reasonCode);
    await stillServes(e, `${id}-after`);
  });

  it('DISCONNECT and AUTH with bad properties close the client (counted), and the broker lives on', async () => {
    const e = emulator();
    const before = e.stats().mqtt.rules['protocolError'] ?? 0;
    for (const [i, bytes] of [packet(0xe0, `00 ${props('11 0000000a 11 0000000b')}`), packet(0xf0, `00 ${props('11 0000003c')}`)].entries()) {
      const { raw } = await rawLogin(e.mqttUrl, accountLogin(e, `GID_v5@@@bye-${i}`), 5);
      raw.write(bytes);
      await raw.closed;
    }
    expect(e.stats().mqtt.rules['protocolError']).toBe(before + 1);
    await stillServes(e, 'GID_v5@@@bye-after');
  });

  it('a malformed PUBLISH sent in the same write as the CONNECT: the CONNACK first, then DISCONNECT 0x81 (MQTT-3.14.0-1)', async () => {
    const e = emulator();
    const raw = await rawSocket(e.mqttUrl, 5);
    raw.write(Buffer.concat([connectWith(accountLogin(e, 'GID_v5@@@pipelined'), ''), hex('32 0e 0006 64656d6f2f61 0001 03 08 0009 6162')]));
    await raw.closed;
    expect(raw.received.map((p) => [p.cmd, (p as { reasonCode?: number }).reasonCode])).toEqual([['connack', 0], ['disconnect', 0x81]]);
  });
});

describe('MQTT 5: malformed CONNECT properties', () => {
  const emulator = useEmulator({ wsPort: false });

  const cases: Array<[string, (login: MqttCredentials) => Buffer, 0x81 | 0x82]> = [
    ['Maximum Packet Size 0', (login) => connectWith(login, '27 00000000'), 0x82],
    ['Maximum Packet Size twice', (login) => connectWith(login, '27 00001000 27 00002000'), 0x82],
    ['Receive Maximum 0', (login) => connectWith(login, '21 0000'), 0x82],
    ['Topic Alias, a PUBLISH property', (login) => connectWith(login, '23 0001'), 0x81],
    ['a Will Property of a CONNACK (Maximum QoS)', (login) => connectWith(login, '', `${props('24 01')} ${str('demo/will')} ${str('bye')}`), 0x81],
    ['an Authentication Method running past the packet', (login) => connectWith(login, '15 00ff 61'), 0x81],
  ];

  it.each(cases.map(([what, build, code]) => [`${what}: CONNACK 0x${code.toString(16)}`, build, code] as const))('%s, no session', async (what, build, reasonCode) => {
    const e = emulator();
    const raw = await rawSocket(e.mqttUrl, 5);
    raw.write(build(accountLogin(e, 'GID_v5@@@connect')));
    const connack = (await raw.next('connack')) as IConnackPacket;
    expect(connack.reasonCode, what).toBe(reasonCode);
    await raw.closed;
    expect(e.stats().mqtt.connacks[`0x${reasonCode.toString(16)}`]).toBeGreaterThanOrEqual(1);
    await stillServes(e, 'GID_v5@@@connect-after');
  });
});

describe('CONNECT of a protocol level the broker does not speak', () => {
  const emulator = useEmulator({ wsPort: false });

  /** A CONNECT with this protocol name and level, as raw bytes (clean session, keep alive 60, ClientId "a"). */
  const connect = (name: string, level: number): Buffer => packet(0x10, `${str(name)} ${level.toString(16).padStart(2, '0')} 02 003c ${str('a')}`);

  it.each([0, 1, 2, 6, 7, 127, 128, 255])('level %i: CONNACK 1 (unacceptable protocol version), as Mosquitto answers, then closed', async (level) => {
    const e = emulator();
    const raw = await rawSocket(e.mqttUrl, 4);
    raw.write(connect('MQTT', level));
    await raw.closed;
    expect(raw.bytes().toString('hex')).toBe('20020001');
    expect(e.stats().mqtt.connacks['1']).toBeGreaterThanOrEqual(1);
  });

  it('protocol name MQXX: closed without a CONNACK, as Mosquitto does (MQTT-3.1.2-1 allows either)', async () => {
    const e = emulator();
    const before = e.stats().mqtt.rules['protocolVersion'] ?? 0;
    const raw = await rawSocket(e.mqttUrl, 4);
    raw.write(connect('MQXX', 4));
    await raw.closed;
    expect(raw.bytes()).toHaveLength(0);
    expect(e.stats().mqtt.rules['protocolVersion']).toBe(before + 1);
    await stillServes(e, 'GID_v5@@@level-after');
  });
});

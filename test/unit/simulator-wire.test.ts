import mqttPacket from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import {
  DISCONNECT,
  DISCONNECT_V5,
  PINGREQ,
  PacketReader,
  PacketType,
  type ProtocolLevel,
  decodeConnack,
  decodeDisconnect,
  decodePublish,
  decodeSuback,
  encodeConnect,
  encodePuback,
  encodePublish,
  encodeSubscribe,
  pubackReasonCode,
  readVarint,
  type IncomingPacket,
} from '../../src/simulator/mqtt-wire.js';

/** Parse with mqtt-packet (what mqtt.js and aedes use), as the independent check of the encoder. */
function parseWithMqttPacket(buf: Buffer, protocolVersion: ProtocolLevel = 4): mqttPacket.Packet[] {
  const parser = mqttPacket.parser({ protocolVersion });
  const packets: mqttPacket.Packet[] = [];
  const errors: Error[] = [];
  parser.on('packet', (p) => packets.push(p));
  parser.on('error', (e) => errors.push(e));
  parser.parse(buf);
  expect(errors).toEqual([]);
  return packets;
}

describe('MQTT 3.1.1 encoder (checked by mqtt-packet)', () => {
  it('encodes CONNECT with username, password, keepalive and clean session', () => {
    const [packet] = parseWithMqttPacket(encodeConnect({ clientId: 'GID_a@@@sim-1', username: 'DeviceCredential|DC.x|mqtt-1', password: 'bGdOc9YXqL/kM2hYBkXR0I2IPOE=', keepalive: 90, clean: true }));
    expect(packet).toMatchObject({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'GID_a@@@sim-1', username: 'DeviceCredential|DC.x|mqtt-1', keepalive: 90, clean: true });
    expect(String((packet as mqttPacket.IConnectPacket).password)).toBe('bGdOc9YXqL/kM2hYBkXR0I2IPOE=');
  });

  it('encodes PUBLISH at QoS 0 and 1, including payloads that need a multi-byte length', () => {
    for (const size of [8, 127, 128, 16_383, 16_384, 65_536]) {
      const payload = Buffer.alloc(size, 7);
      const [p1] = parseWithMqttPacket(encodePublish(Buffer.from('sim/1'), payload, 1, 42)) as mqttPacket.IPublishPacket[];
      expect(p1).toMatchObject({ cmd: 'publish', topic: 'sim/1', qos: 1, messageId: 42 });
      expect(Buffer.compare(p1?.payload as Buffer, payload)).toBe(0);
      const [p0] = parseWithMqttPacket(encodePublish(Buffer.from('sim/1'), payload, 0)) as mqttPacket.IPublishPacket[];
      expect(p0).toMatchObject({ qos: 0 });
      expect((p0?.payload as Buffer).length).toBe(size);
    }
  });

  it('encodes SUBSCRIBE, PUBACK, PINGREQ and DISCONNECT', () => {
    const packets = parseWithMqttPacket(Buffer.concat([encodeSubscribe(7, 'sim/%/1', 1), encodePuback(9), PINGREQ, DISCONNECT]));
    expect(packets.map((p) => p.cmd)).toEqual(['subscribe', 'puback', 'pingreq', 'disconnect']);
    expect(packets[0]).toMatchObject({ messageId: 7, subscriptions: [{ topic: 'sim/%/1', qos: 1 }] });
    expect(packets[1]).toMatchObject({ messageId: 9 });
  });
});

const LOGIN = { clientId: 'GID_a@@@sim-1', username: 'DeviceCredential|DC.x|mqtt-1', password: 'bGdOc9YXqL/kM2hYBkXR0I2IPOE=', keepalive: 90, clean: true };

/** mqtt-packet's bytes for a packet, as the broker and mqtt.js would write them. */
function generate(packet: Record<string, unknown>, protocolVersion: ProtocolLevel): Buffer {
  return mqttPacket.generate(packet as unknown as mqttPacket.Packet, { protocolVersion });
}

/** Feed bytes made by mqtt-packet through the reader; the one packet it yields. */
function readOne(bytes: Buffer): IncomingPacket {
  const packets: IncomingPacket[] = [];
  new PacketReader().push(bytes, (p) => packets.push(p));
  expect(packets).toHaveLength(1);
  return packets[0] as IncomingPacket;
}

describe('MQTT encoders, byte for byte the same as mqtt-packet', () => {
  for (const protocol of [4, 5] as const) {
    it(`CONNECT at protocol level ${protocol} (clean start; MQTT 5: an empty property block, so session expiry 0)`, () => {
      const ours = encodeConnect({ ...LOGIN, protocol });
      const theirs = generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: protocol, clean: true, keepalive: 90, clientId: LOGIN.clientId, username: LOGIN.username, password: Buffer.from(LOGIN.password), ...(protocol === 5 ? { properties: {} } : {}) }, protocol);
      expect(ours.toString('hex')).toBe(theirs.toString('hex'));
      const [parsed] = parseWithMqttPacket(ours, protocol) as mqttPacket.IConnectPacket[];
      expect(parsed).toMatchObject({ cmd: 'connect', protocolVersion: protocol, clean: true, keepalive: 90, clientId: LOGIN.clientId, username: LOGIN.username });
      // No Session Expiry Interval property: MQTT 5 reads that as 0 (the session ends with the connection).
      expect(parsed?.properties?.sessionExpiryInterval).toBeUndefined();
    });

    it(`PUBLISH at QoS 0 and 1, protocol level ${protocol}, with one- to three-byte remaining lengths`, () => {
      for (const size of [8, 120, 16_383, 65_536]) {
        const payload = Buffer.alloc(size, 3);
        for (const qos of [0, 1] as const) {
          const ours = encodePublish(Buffer.from('sim/42'), payload, qos, qos === 1 ? 513 : 0, protocol);
          const theirs = generate({ cmd: 'publish', topic: 'sim/42', payload, qos, ...(qos === 1 ? { messageId: 513 } : {}), dup: false, retain: false }, protocol);
          expect(ours.equals(theirs), `size ${size}, QoS ${qos}`).toBe(true);
        }
      }
      const [parsed] = parseWithMqttPacket(encodePublish(Buffer.from('sim/42'), Buffer.alloc(8), 1, 9, protocol), protocol) as mqttPacket.IPublishPacket[];
      expect(parsed).toMatchObject({ cmd: 'publish', topic: 'sim/42', qos: 1, messageId: 9 });
      expect((parsed?.payload as Buffer).length).toBe(8);
    });

    it(`SUBSCRIBE at protocol level ${protocol} (MQTT 5: options byte = QoS, No Local off, Retain Handling 0)`, () => {
      for (const qos of [0, 1] as const) {
        const ours = encodeSubscribe(7, 'sim/%/1', qos, protocol);
        const subscription = protocol === 5 ? { topic: 'sim/%/1', qos, nl: false, rap: false, rh: 0 } : { topic: 'sim/%/1', qos };
        expect(ours.toString('hex')).toBe(generate({ cmd: 'subscribe', messageId: 7, subscriptions: [subscription] }, protocol).toString('hex'));
        const [parsed] = parseWithMqttPacket(ours, protocol) as mqttPacket.ISubscribePacket[];
        expect(parsed).toMatchObject({ messageId: 7, subscriptions: [subscription] });
      }
    });
  }

  it('PUBACK: one encoding for both levels, MQTT 5\'s short form meaning Success', () => {
    expect(encodePuback(65_535).equals(generate({ cmd: 'puback', messageId: 65_535 }, 4))).toBe(true);
    expect(encodePuback(65_535).equals(generate({ cmd: 'puback', messageId: 65_535, reasonCode: 0 }, 5))).toBe(true);
    const [parsed] = parseWithMqttPacket(encodePuback(9), 5) as mqttPacket.IPubackPacket[];
    expect(parsed).toMatchObject({ cmd: 'puback', messageId: 9 });
    expect(parsed?.reasonCode ?? 0).toBe(0);
  });

  it('DISCONNECT: 3.1.1 without a body, MQTT 5 with reason code 0x00 Normal disconnection', () => {
    expect(DISCONNECT.equals(generate({ cmd: 'disconnect' }, 4))).toBe(true);
    expect(DISCONNECT_V5.toString('hex')).toBe(generate({ cmd: 'disconnect', reasonCode: 0 }, 5).toString('hex'));
    expect(parseWithMqttPacket(DISCONNECT_V5, 5)).toMatchObject([{ cmd: 'disconnect', reasonCode: 0 }]);
  });
});

describe('MQTT 5 decoders, reading what mqtt-packet writes', () => {
  it('reads a CONNACK 0 with every CONNACK property, keeping Server Keep Alive and skipping the rest', () => {
    const properties = {
      sessionExpiryInterval: 0, receiveMaximum: 65_535, maximumQoS: 1, retainAvailable: false, maximumPacketSize: 131_072,
      assignedClientIdentifier: 'GID_a@@@x', topicAliasMaximum: 32, reasonString: 'ok', userProperties: { region: 'cn-hangzhou', multi: ['a', 'b'] },
      wildcardSubscriptionAvailable: true, subscriptionIdentifiersAvailable: true, sharedSubscriptionAvailable: false,
      serverKeepAlive: 480, responseInformation: 'resp/', serverReference: 'other:1883', authenticationMethod: 'none', authenticationData: Buffer.from([1, 2, 3]),
    };
    const connack = decodeConnack(readOne(generate({ cmd: 'connack', sessionPresent: false, reasonCode: 0, properties }, 5)), 5);
    expect(connack).toEqual({ sessionPresent: false, code: 0, properties: { serverKeepAlive: 480, reasonString: 'ok' } });
  });

  it('reads a refusing CONNACK\'s reason code and Reason String (as the emulator sends for a wrong password)', () => {
    for (const reasonCode of [0x85, 0x86, 0x87, 0x88, 0x8a, 0x9a]) {
      const connack = decodeConnack(readOne(generate({ cmd: 'connack', sessionPresent: false, reasonCode, properties: { reasonString: 'wrong password' } }, 5)), 5);
      expect(connack).toEqual({ sessionPresent: false, code: reasonCode, properties: { reasonString: 'wrong password' } });
    }
    expect(decodeConnack(readOne(generate({ cmd: 'connack', sessionPresent: true, reasonCode: 0 }, 5)), 5)).toEqual({ sessionPresent: true, code: 0, properties: {} });
  });

  it('reads a 3.1.1 CONNACK (what a broker without MQTT 5 answers) at either level', () => {
    for (const returnCode of [0, 1, 4, 5]) {
      const packet = readOne(generate({ cmd: 'connack', sessionPresent: false, returnCode }, 4));
      expect(decodeConnack(packet, 4)).toEqual({ sessionPresent: false, code: returnCode, properties: {} });
      expect(decodeConnack(packet, 5).code).toBe(returnCode);
    }
  });

  it('reads SUBACK grants and refusals (3.1.1: 0x80; MQTT 5: 0x80 and above, with properties)', () => {
    expect(decodeSuback(readOne(generate({ cmd: 'suback', messageId: 4, granted: [1] }, 4)), 4)).toEqual({ packetId: 4, code: 1, properties: {} });
    expect(decodeSuback(readOne(generate({ cmd: 'suback', messageId: 4, granted: [0x80] }, 4)), 4).code).toBe(0x80);
    for (const code of [0, 1, 0x80, 0x87, 0x8f, 0x97, 0x9e]) {
      const suback = decodeSuback(readOne(generate({ cmd: 'suback', messageId: 300, granted: [code], properties: { reasonString: 'why', userProperties: { k: 'v' } } }, 5)), 5);
      expect(suback).toEqual({ packetId: 300, code, properties: { reasonString: 'why' } });
    }
    expect(decodeSuback(readOne(generate({ cmd: 'suback', messageId: 2, granted: [0x87] }, 5)), 5)).toEqual({ packetId: 2, code: 0x87, properties: {} });
  });

  it('reads PUBACK reason codes: the short form, the long one, and with properties', () => {
    expect(pubackReasonCode(readOne(generate({ cmd: 'puback', messageId: 9 }, 4)))).toBe(0);
    expect(pubackReasonCode(readOne(generate({ cmd: 'puback', messageId: 9, reasonCode: 0 }, 5)))).toBe(0);
    // mqtt-packet writes the long form (reason 0, no properties) when no reason code is given.
    expect(pubackReasonCode(readOne(generate({ cmd: 'puback', messageId: 9 }, 5)))).toBe(0);
    for (const reasonCode of [0x10, 0x80, 0x87, 0x97, 0x99]) {
      expect(pubackReasonCode(readOne(generate({ cmd: 'puback', messageId: 9, reasonCode }, 5)))).toBe(reasonCode);
      expect(pubackReasonCode(readOne(generate({ cmd: 'puback', messageId: 9, reasonCode, properties: { reasonString: 'quota' } }, 5)))).toBe(reasonCode);
    }
  });

  it('reads a PUBLISH with every PUBLISH property, skipping them to the payload', () => {
    const payload = Buffer.alloc(300, 5);
    payload.writeDoubleBE(1_234.5, 0);
    const properties = {
      payloadFormatIndicator: false, messageExpiryInterval: 60, topicAlias: 3, responseTopic: 'resp/1', correlationData: Buffer.from('c0rr'),
      userProperties: { a: 'b' }, subscriptionIdentifier: 200_000, contentType: 'application/octet-stream',
    };
    for (const qos of [0, 1] as const) {
      const publish = decodePublish(readOne(generate({ cmd: 'publish', topic: 'sim/7', payload, qos, ...(qos === 1 ? { messageId: 77 } : {}), dup: false, retain: false, properties }, 5)), 5);
      expect(publish).toMatchObject({ topic: 'sim/7', qos, packetId: qos === 1 ? 77 : 0 });
      expect(publish.payload.equals(payload)).toBe(true);
    }
    const plain = decodePublish(readOne(generate({ cmd: 'publish', topic: 'sim/7', payload, qos: 1, messageId: 1, dup: false, retain: false }, 5)), 5);
    expect(plain.payload.equals(payload)).toBe(true);
  });

  it('reads a broker\'s DISCONNECT: its reason code and Reason String; no body means 0x00', () => {
    const reasonString = "MQTT rule parentTopic: PUBLISH under parent topic 'sim', which was not created";
    expect(decodeDisconnect(readOne(generate({ cmd: 'disconnect', reasonCode: 0x87, properties: { reasonString, serverReference: 'x' } }, 5)))).toEqual({ reasonCode: 0x87, properties: { reasonString } });
    expect(decodeDisconnect(readOne(generate({ cmd: 'disconnect', reasonCode: 0x8e }, 5)))).toEqual({ reasonCode: 0x8e, properties: {} });
    expect(decodeDisconnect(readOne(Buffer.from([0xe0, 0x00])))).toEqual({ reasonCode: 0, properties: {} });
    expect(decodeDisconnect(readOne(Buffer.from([0xe0, 0x01, 0x8b])))).toEqual({ reasonCode: 0x8b, properties: {} });
  });

  it('throws RangeError on a property block past its packet, an unknown property, or a bad variable byte integer', () => {
    // CONNACK whose property length says 9 but the packet ends after 2.
    expect(() => decodeConnack(readOne(Buffer.from([0x20, 0x05, 0x00, 0x00, 0x09, 0x21, 0xff])), 5)).toThrow(RangeError);
    // Property 0x7f does not exist.
    expect(() => decodeConnack(readOne(Buffer.from([0x20, 0x05, 0x00, 0x00, 0x02, 0x7f, 0x00])), 5)).toThrow(/Unknown MQTT 5 property 0x7f/);
    // A Reason String whose length runs past the property block.
    expect(() => decodeDisconnect(readOne(Buffer.from([0xe0, 0x06, 0x87, 0x04, 0x1f, 0x00, 0x09, 0x61])))).toThrow(RangeError);
    // A PUBLISH whose property block is longer than the packet.
    expect(() => decodePublish(readOne(Buffer.from([0x30, 0x05, 0x00, 0x01, 0x61, 0x10, 0x00])), 5)).toThrow(RangeError);
    expect(() => readVarint(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x01]), 0)).toThrow(/Malformed/);
    expect(readVarint(Buffer.from([0x00, 0xc0, 0xc4, 0x07]), 1)).toEqual([0x07 * 128 * 128 + 0x44 * 128 + 0x40, 4]);
  });
});

describe('PacketReader', () => {
  it('reassembles packets split and joined anywhere in the byte stream', () => {
    const stream = Buffer.concat([
      mqttPacket.generate({ cmd: 'connack', returnCode: 0, sessionPresent: false }),
      mqttPacket.generate({ cmd: 'suback', messageId: 1, granted: [1] }),
      mqttPacket.generate({ cmd: 'publish', topic: 'sim/3', payload: Buffer.alloc(300, 1), qos: 1, messageId: 5, dup: false, retain: false }),
      mqttPacket.generate({ cmd: 'puback', messageId: 5 }),
      mqttPacket.generate({ cmd: 'pingresp' }),
    ]);
    for (const chunkSize of [1, 2, 3, 7, 64, stream.length]) {
      const reader = new PacketReader();
      const seen: IncomingPacket[] = [];
      for (let i = 0; i < stream.length; i += chunkSize) {
        reader.push(stream.subarray(i, i + chunkSize), (p) => seen.push({ ...p, body: Buffer.from(p.body) }));
      }
      expect(seen.map((p) => p.type)).toEqual([PacketType.CONNACK, PacketType.SUBACK, PacketType.PUBLISH, PacketType.PUBACK, PacketType.PINGRESP]);
      const publish = decodePublish(seen[2] as IncomingPacket);
      expect(publish).toMatchObject({ topic: 'sim/3', qos: 1, packetId: 5 });
      expect(publish.payload.length).toBe(300);
    }
  });

  it('throws on a malformed remaining length', () => {
    expect(() => new PacketReader().push(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]), () => undefined)).toThrow(RangeError);
  });
});

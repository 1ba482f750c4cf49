import mqttPacket from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import {
  DISCONNECT,
  PINGREQ,
  PacketReader,
  PacketType,
  decodePublish,
  encodeConnect,
  encodePuback,
  encodePublish,
  encodeSubscribe,
  type IncomingPacket,
} from '../../src/simulator/mqtt-wire.js';

/** Parse with mqtt-packet (what mqtt.js and aedes use), as the independent check of the encoder. */
function parseWithMqttPacket(buf: Buffer): mqttPacket.Packet[] {
  const parser = mqttPacket.parser({ protocolVersion: 4 });
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

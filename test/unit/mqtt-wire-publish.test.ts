/**
 * `encodePublish` (src/mqtt/wire.ts), the PUBLISH the connector's writer and the simulator's devices put on the wire,
 * byte for byte against mqtt-packet's `generate` (the encoder mqtt.js itself uses): ASCII and multi-byte UTF-8
 * topics (4-byte characters and a lone surrogate among them), string and Buffer topics and payloads, every
 * Remaining Length width and the lengths on each side of its boundaries, QoS 0/1/2, retain, dup, the packet ids at
 * the ends of their range, MQTT 3.1.1 and MQTT 5 without properties. Plus a few thousand seeded random cases.
 */
import mqttPacket, { type IPublishPacket } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { MAX_REMAINING_LENGTH, allocPacket, encodePublish, type ProtocolLevel } from '../../src/mqtt/wire.js';
import { prng } from '../helpers/fuzz.js';

type Qos = 0 | 1 | 2;

interface Case {
  readonly topic: string | Buffer;
  readonly payload: string | Buffer;
  readonly qos: Qos;
  readonly packetId: number;
  readonly protocol: ProtocolLevel;
  readonly retain: boolean;
  readonly dup: boolean;
}

/** mqtt-packet's PUBLISH for the case (no properties: MQTT 5 writes an empty property block). */
function reference(c: Case): Buffer {
  const packet: IPublishPacket = { cmd: 'publish', topic: c.topic as string, payload: c.payload, qos: c.qos, retain: c.retain, dup: c.dup };
  if (c.qos > 0) packet.messageId = c.packetId;
  return mqttPacket.generate(packet, { protocolVersion: c.protocol });
}

function encoded(c: Case): Buffer {
  return encodePublish(c.topic, c.payload, c.qos, c.packetId, c.protocol, { retain: c.retain, dup: c.dup });
}

/** Compare without handing vitest a multi-megabyte diff: first differing offset, then the lengths. */
function expectSameBytes(c: Case): void {
  const ours = encoded(c);
  const theirs = reference(c);
  if (!ours.equals(theirs)) {
    let at = 0;
    while (at < ours.length && at < theirs.length && ours[at] === theirs[at]) at++;
    const topic = typeof c.topic === 'string' ? JSON.stringify(c.topic.slice(0, 40)) : `<Buffer ${c.topic.length}>`;
    const payload = typeof c.payload === 'string' ? `string(${Buffer.byteLength(c.payload)} B)` : `Buffer(${c.payload.length})`;
    expect.fail(`topic ${topic} payload ${payload} qos ${c.qos} id ${c.packetId} v${c.protocol} retain ${c.retain} dup ${c.dup}: ${ours.length} bytes vs mqtt-packet's ${theirs.length}, first difference at byte ${at} (${ours[at]} vs ${theirs[at]})`);
  }
}

const base: Case = { topic: 'a/b', payload: 'x', qos: 1, packetId: 1, protocol: 4, retain: false, dup: false };

/** The Remaining Length of a case, as MQTT counts it. */
function remainingOf(topicBytes: number, qos: Qos, protocol: ProtocolLevel, payloadBytes: number): number {
  return 2 + topicBytes + (qos > 0 ? 2 : 0) + (protocol === 5 ? 1 : 0) + payloadBytes;
}


// ASCII, 2-byte (é, ж), 3-byte (温, €, ｱ) and 4-byte (🌡, 𝄞, 😀: surrogate pairs) characters.
const ALPHABET = ['a', 'Z', '0', '/', '_', '-', ' ', 'é', 'ж', '温', '€', 'ｱ', '🌡', '𝄞', '😀'];

describe('encodePublish against mqtt-packet', () => {
  const topics: Array<[string, string | Buffer]> = [
    ['ASCII', 'devices/gw-1/telemetry'],
    ['one character', 't'],
    ['empty', ''],
    ['2-byte UTF-8', 'capteur/température/salle'],
    ['3-byte UTF-8', '温度/传感器/一号'],
    ['4-byte UTF-8', 'emoji/🌡/𝄞/😀'],
    ['mixed widths', 'a/é/温/🌡/z'],
    ['a lone surrogate (written as U+FFFD)', 'bad/\ud800/x'],
    ['Buffer', Buffer.from('buf/topic/温')],
    ['Buffer, not UTF-8', Buffer.from([0x61, 0x2f, 0xff, 0xfe])],
  ];
  const payloads: Array<[string, string | Buffer]> = [
    ['empty string', ''],
    ['empty Buffer', Buffer.alloc(0)],
    ['1 byte', 'x'],
    ['1-byte Buffer', Buffer.from([0])],
    ['UTF-8 string with 4-byte characters', '{"t":"21.5°C","i":"🌡"}'],
    ['binary Buffer', Buffer.from([0, 1, 0x7f, 0x80, 0xff, 0x30, 0x0a])],
  ];

  for (const protocol of [4, 5] as const) {
    for (const qos of [0, 1, 2] as const) {
      it(`every topic × payload kind, QoS ${qos}, MQTT ${protocol === 4 ? '3.1.1' : '5'}, each flag`, () => {
        let cases = 0;
        for (const [, topic] of topics) {
          for (const [, payload] of payloads) {
            for (const retain of [false, true]) {
              for (const dup of [false, true]) {
                for (const packetId of qos > 0 ? [1, 2, 0x1234, 65_535] : [0]) {
                  expectSameBytes({ topic, payload, qos, packetId, protocol, retain, dup });
                  cases++;
                }
              }
            }
          }
        }
        expect(cases).toBe(topics.length * payloads.length * 4 * (qos > 0 ? 4 : 1));
      });
    }
  }

  it('the first byte carries the type, dup, QoS and retain; the packet id follows the topic', () => {
    const packet = encodePublish('t', 'p', 2, 0xabcd, 4, { retain: true, dup: true });
    expect(packet[0]).toBe(0x30 | 0x08 | (2 << 1) | 0x01);
    expect(packet.readUInt16BE(2)).toBe(1);
    expect(packet.readUInt16BE(5)).toBe(0xabcd);
    // QoS 0: no packet id, whatever is passed; no flags by default.
    expect(encodePublish('t', 'p', 0, 0xabcd)).toEqual(Buffer.from([0x30, 4, 0, 1, 0x74, 0x70]));
    // MQTT 5: an empty property block between the packet id and the payload.
    expect(encodePublish('t', 'p', 1, 7, 5)).toEqual(Buffer.from([0x32, 7, 0, 1, 0x74, 0, 7, 0, 0x70]));
  });

  describe('Remaining Length on each side of its boundaries', () => {
    // Total Remaining Lengths (MQTT's, the topic, packet id, property block and payload together); 1-byte to 4-byte.
    const totals = [2, 3, 126, 127, 128, 129, 16_383, 16_384, 16_385, 2_097_151, 2_097_152, 2_097_153];
    for (const protocol of [4, 5] as const) {
      for (const qos of [0, 1, 2] as const) {
        for (const [label, topic] of [
          ['ASCII', 'boundary/t'],
          ['4-byte UTF-8', 'b/🌡'],
        ] as const) {
          it(`${label} topic, QoS ${qos}, MQTT ${protocol}: totals ${totals.join(', ')}`, () => {
            const topicBytes = Buffer.byteLength(topic);
            let checked = 0;
            for (const total of totals) {
              const payloadBytes = total - remainingOf(topicBytes, qos, protocol, 0);
              if (payloadBytes < 0) continue;
              const header = total < 128 ? 2 : total < 16_384 ? 3 : total < 2_097_152 ? 4 : 5;
              for (const payload of [Buffer.alloc(payloadBytes, 0xa5), 'p'.repeat(payloadBytes)]) {
                const c: Case = { topic, payload, qos, packetId: 65_535, protocol, retain: total % 2 === 0, dup: false };
                expectSameBytes(c);
                expect(encoded(c).length).toBe(header + total);
                checked++;
              }
            }
            expect(checked).toBeGreaterThanOrEqual(2 * (totals.length - 2));
          });
        }
      }
    }

    it('a payload of a multi-byte string on a boundary: bytes counted, not characters', () => {
      // 16,384 total with a payload of 4-byte characters (4,094 of them) and a topic with a 3-byte character.
      const topic = '温/';
      const fixed = remainingOf(4, 1, 4, 0);
      const payload = '😀'.repeat((16_384 - fixed) / 4);
      expect(Buffer.byteLength(payload) + fixed).toBe(16_384);
      expectSameBytes({ ...base, topic, payload });
      expectSameBytes({ ...base, topic, payload: payload.slice(0, -2) + 'abc' }); // 16,383
    });
  });

  it('payload lengths 0, 1, 127, 128, 16383, 16384 on their own (not the total)', () => {
    for (const length of [0, 1, 127, 128, 16_383, 16_384]) {
      for (const protocol of [4, 5] as const) {
        expectSameBytes({ ...base, protocol, payload: Buffer.alloc(length, 1) });
        expectSameBytes({ ...base, protocol, payload: 'é'.repeat(length >> 1) + (length % 2 ? 'x' : '') });
      }
    }
  });

  it('the longest topic MQTT allows (65,535 bytes), string of 3-byte characters and Buffer', () => {
    expectSameBytes({ ...base, topic: 'a'.repeat(65_535) });
    expectSameBytes({ ...base, topic: `${'温'.repeat(21_844)}abc`, protocol: 5, qos: 2 });
    expectSameBytes({ ...base, topic: Buffer.alloc(65_535, 0x62), qos: 0 });
  });

  it('3,000 seeded random cases', () => {
    const random = prng(0x5eed_18);
    const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
    const ids = [1, 2, 127, 128, 255, 256, 32_767, 32_768, 65_534, 65_535];
    for (let n = 0; n < 3_000; n++) {
      let topic = '';
      const topicChars = 1 + Math.floor(random() * 48);
      for (let i = 0; i < topicChars; i++) topic += pick(ALPHABET);
      // Mostly small payloads, some around a Remaining Length of 128 or 16,384, a few larger.
      const size = pick([() => Math.floor(random() * 32), () => 100 + Math.floor(random() * 60), () => 16_330 + Math.floor(random() * 100), () => Math.floor(random() * 40_000)])();
      let payload: string | Buffer;
      if (random() < 0.5) {
        payload = Buffer.alloc(size);
        for (let i = 0; i < size; i++) payload[i] = Math.floor(random() * 256);
      } else {
        payload = '';
        while (payload.length < size) payload += pick(ALPHABET);
      }
      const qos = pick([0, 1, 2] as const);
      expectSameBytes({
        topic: random() < 0.2 ? Buffer.from(topic) : topic,
        payload,
        qos,
        packetId: random() < 0.5 ? pick(ids) : 1 + Math.floor(random() * 65_535),
        protocol: pick([4, 5] as const),
        retain: random() < 0.5,
        dup: random() < 0.5,
      });
    }
  });
});

describe('what encodePublish refuses', () => {
  it('a topic over 65,535 bytes is a RangeError, however it gets there', () => {
    const tooLong: Array<string | Buffer> = [
      'a'.repeat(65_536),
      '温'.repeat(21_846), // 65,538 bytes in 21,846 characters
      '🌡'.repeat(16_384), // 65,536 bytes in 32,768 UTF-16 units
      Buffer.alloc(65_536),
    ];
    for (const topic of tooLong) {
      for (const protocol of [4, 5] as const) {
        expect(() => encodePublish(topic, 'x', 1, 1, protocol)).toThrow(RangeError);
        expect(() => encodePublish(topic, 'x', 1, 1, protocol)).toThrow(/topic too long \(6553[68] bytes\)/);
      }
    }
  });

  it('a Remaining Length past 268,435,455 is a RangeError (allocPacket), before anything is allocated', () => {
    expect(MAX_REMAINING_LENGTH).toBe(268_435_455);
    expect(() => allocPacket(0x30, MAX_REMAINING_LENGTH + 1)).toThrow(RangeError);
    const [buf, offset] = allocPacket(0x30, 0);
    expect([...buf]).toEqual([0x30, 0]);
    expect(offset).toBe(2);
  });
});

import mqtt from 'mqtt';
import mqttPacket, { type Packet } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { PacketFramer } from '../../src/connector/packet-guard.js';

const v4 = (packet: Packet): Buffer => mqttPacket.generate(packet, { protocolVersion: 4 });
const v5 = (packet: Packet): Buffer => mqttPacket.generate(packet, { protocolVersion: 5 });

/**
 * Feed `bytes` to a new framer cut at `cuts`: the first verdict, with `at` made absolute (the bytes of the chunk
 * before it are passed on; a packet begun in an earlier chunk gives the start of the chunk).
 */
function frame(bytes: Buffer, cuts: number[], maxBytes = 1_000_000): { kind: string; message: string; at: number; chunk: number } | undefined {
  const framer = new PacketFramer(maxBytes);
  let from = 0;
  for (const to of [...cuts, bytes.length]) {
    const found = framer.inspect(bytes.subarray(from, to));
    if (found) return { kind: found.violation.kind, message: found.violation.message, at: from + found.at, chunk: from };
    from = to;
  }
  return undefined;
}

/** Every way of cutting `bytes` in two (and not at all). */
function everySplit(bytes: Buffer): number[][] {
  return [[], ...Array.from({ length: bytes.length - 1 }, (_v, i) => [i + 1])];
}

const GOOD = Buffer.concat([
  v4({ cmd: 'connack', sessionPresent: false, returnCode: 0 }),
  v4({ cmd: 'publish', topic: 'a/b', payload: Buffer.alloc(300, 1), qos: 1, messageId: 7, retain: false, dup: false }),
  v4({ cmd: 'publish', topic: '', payload: Buffer.alloc(0), qos: 0, retain: false, dup: false }),
  v4({ cmd: 'puback', messageId: 1 }),
  v4({ cmd: 'pubrel', messageId: 2 }),
  v4({ cmd: 'suback', messageId: 3, granted: [0, 1] }),
  v4({ cmd: 'unsuback', messageId: 4, granted: [] }),
  v4({ cmd: 'pingresp' }),
  v5({ cmd: 'publish', topic: 'x', payload: Buffer.from('y'), qos: 2, messageId: 9, retain: false, dup: false, properties: { userProperties: { k: 'v' } } }),
  v5({ cmd: 'disconnect', reasonCode: 0x8e }),
]);

describe('the packet framer', () => {
  it('lets a stream of well-formed packets through, however it is cut', () => {
    for (const cuts of everySplit(GOOD)) expect(frame(GOOD, cuts), `cut at ${cuts.join(',')}`).toBeUndefined();
    // Byte by byte too.
    expect(frame(GOOD, Array.from({ length: GOOD.length - 1 }, (_v, i) => i + 1))).toBeUndefined();
  });

  it.each([
    ['32020000', 'a QoS 1 PUBLISH whose packet identifier is cut off (topic of 0 bytes, remaining length 2)'],
    ['34020000', 'a QoS 2 PUBLISH whose packet identifier is cut off'],
    ['3203000000', 'a QoS 1 PUBLISH whose packet identifier is cut off (topic of 0 bytes, remaining length 3)'],
    ['3205000361' + '2f62', 'topic of 3 bytes, remaining length 5'],
    ['6200', 'a PUBREL without its packet identifier (remaining length 0)'],
    ['400100', 'a PUBACK without its packet identifier (remaining length 1)'],
    ['5000', 'a PUBREC without'],
    ['7000', 'a PUBCOMP without'],
    ['9000', 'a SUBACK without'],
    ['b000', 'an UNSUBACK without'],
    ['30ffffffff01', 'a packet whose remaining length runs past 4 bytes'],
  ])('stops %s after well-formed packets, at its first byte, however it is cut: %s', (hex, message) => {
    const bad = Buffer.from(hex, 'hex');
    const bytes = Buffer.concat([GOOD, bad]);
    for (const cuts of [[], [GOOD.length], [GOOD.length + 1], [GOOD.length - 3, GOOD.length + 2], [10]]) {
      const found = frame(bytes, cuts);
      expect(found, `cut at ${cuts.join(',')}`).toMatchObject({ kind: 'malformed' });
      expect(found?.at, `cut at ${cuts.join(',')}`).toBe(Math.max(GOOD.length, found?.chunk ?? 0));
      expect(found?.message).toContain(message);
    }
  });

  it('stops a packet over the limit when its header is read, whatever follows; one at the limit passes', () => {
    const at = (size: number): Buffer => v4({ cmd: 'publish', topic: 't', payload: Buffer.alloc(size - 3 - 3, 2), qos: 0, retain: false, dup: false });
    expect(at(200).length).toBe(200);
    expect(frame(at(200), [], 200)).toBeUndefined();
    expect(frame(at(201), [], 200)).toMatchObject({ kind: 'too-large', message: 'a packet of 201 bytes', at: 0 });
    // A 256 MB announcement: only the fixed header is needed.
    const header = Buffer.from('30fcffff7f', 'hex');
    expect(frame(header, [2, 3, 4])).toMatchObject({ kind: 'too-large', message: 'a packet of 268435457 bytes' });
  });

  it('the mqtt.js in use keeps the streamBuilder the attempt wraps (else the guard cannot be installed)', () => {
    // Never connected (manualConnect): nothing to close.
    const client = mqtt.connect('mqtt://127.0.0.1:1', { manualConnect: true, reconnectPeriod: 0 });
    expect(typeof (client as unknown as { streamBuilder?: unknown }).streamBuilder).toBe('function');
  });
});

import mqtt from 'mqtt';
import mqttPacket, { type Packet } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { Readable } from 'node:stream';
import { PacketFramer, guard } from '../../src/connector/packet-guard.js';

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

/** Feed `bytes`, cut at `cuts`, through `guard()` on a real Readable whose owner takes the PUBACKs of `ids`. */
function guardedRead(bytes: Buffer, cuts: number[], ids: ReadonlySet<number>, destroyOn?: number): { passed: Buffer; events: string[]; violation: string | undefined } {
  const stream = new Readable({ read() {} });
  const passed: Buffer[] = [];
  const events: string[] = [];
  let violation: string | undefined;
  // What the guard passes on, as it passes it: the stream's own push, which guard() wraps.
  stream.push = (chunk: Buffer): boolean => {
    passed.push(chunk);
    if (chunk.length > 0) events.push(`data ${chunk.length}`);
    return true;
  };
  stream.on('error', () => {});
  guard(stream, 1_000_000, {
    violated: (v) => {
      violation = v.message;
    },
    takesPuback: (id) => ids.has(id),
    pubackTaken: (id) => {
      events.push(`puback ${id}`);
      if (id === destroyOn) stream.destroy();
    },
  });
  let from = 0;
  for (const to of [...cuts, bytes.length]) {
    if (stream.destroyed) break;
    stream.push(bytes.subarray(from, to));
    from = to;
  }
  return { passed: Buffer.concat(passed), events, violation };
}

describe('the PUBACKs the connector answers itself', () => {
  const puback = (messageId: number): Buffer => v4({ cmd: 'puback', messageId });
  const publish = v4({ cmd: 'publish', topic: 'a/b', payload: Buffer.alloc(20, 1), qos: 1, messageId: 7, retain: false, dup: false });
  const suback = v4({ cmd: 'suback', messageId: 3, granted: [1] });

  it('takes the short-form PUBACKs of its own ids out of the stream, each after the bytes before it, and passes the rest unchanged', () => {
    const bytes = Buffer.concat([puback(1), publish, puback(2), puback(99), suback, puback(3)]);
    const { passed, events } = guardedRead(bytes, [], new Set([1, 2, 3]));
    expect(passed.equals(Buffer.concat([publish, puback(99), suback]))).toBe(true);
    expect(events).toEqual(['puback 1', `data ${publish.length}`, 'puback 2', `data ${puback(99).length + suback.length}`, 'puback 3']);
  });

  it('a chunk of nothing but taken PUBACKs passes nothing on', () => {
    const { passed, events } = guardedRead(Buffer.concat([puback(1), puback(2)]), [], new Set([1, 2]));
    expect(passed.length).toBe(0);
    expect(events).toEqual(['puback 1', 'puback 2']);
  });

  it('leaves to mqtt.js a PUBACK cut across chunks, one with a reason code (MQTT 5), one with flags set, and other acknowledgements', () => {
    const withCode = v5({ cmd: 'puback', messageId: 4, reasonCode: 0x10 });
    expect(withCode.length).toBeGreaterThan(4);
    const flagged = Buffer.from('42020005', 'hex');
    const pubrec = v4({ cmd: 'pubrec', messageId: 6 });
    const bytes = Buffer.concat([puback(1), puback(2), withCode, flagged, pubrec]);
    const ids = new Set([1, 2, 4, 5, 6]);
    // Every cut in two: the PUBACK a cut goes through is passed on whole (its two halves); the other is taken.
    for (let cut = 1; cut < bytes.length; cut++) {
      const { passed, events } = guardedRead(bytes, [cut], ids);
      const split = cut < 4 ? 1 : cut > 4 && cut < 8 ? 2 : 0;
      const expected = Buffer.concat([...(split === 1 ? [puback(1)] : []), ...(split === 2 ? [puback(2)] : []), withCode, flagged, pubrec]);
      expect(passed.equals(expected), `cut at ${cut}`).toBe(true);
      expect(events.filter((e) => e.startsWith('puback')), `cut at ${cut}`).toEqual([1, 2].filter((id) => id !== split).map((id) => `puback ${id}`));
    }
  });

  it('passes nothing more into a stream the answer to a PUBACK destroyed', () => {
    const { passed, events } = guardedRead(Buffer.concat([puback(1), publish, puback(2)]), [], new Set([1, 2]), 1);
    expect(passed.length).toBe(0);
    expect(events).toEqual(['puback 1']);
  });

  it('before a violation: takes the PUBACKs ahead of it, passes the bytes ahead of it, and reports it', () => {
    const { passed, events, violation } = guardedRead(Buffer.concat([puback(1), publish, Buffer.from('400100', 'hex'), puback(2)]), [], new Set([1, 2]));
    expect(passed.equals(publish)).toBe(true);
    expect(events).toEqual(['puback 1', `data ${publish.length}`]);
    expect(violation).toContain('a PUBACK without its packet identifier');
  });
});

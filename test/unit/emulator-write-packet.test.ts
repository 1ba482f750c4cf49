import { once } from 'node:events';
import { Duplex } from 'node:stream';
import mqttPacket from 'mqtt-packet';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { publishSize, writePacket } from '../../src/emulator/broker-wire.js';

/** A connection whose kernel buffer is full: every write is held until `release()` hands the bytes over. */
function fullConnection(): { conn: Duplex; written: Buffer[]; release: () => void } {
  const written: Buffer[] = [];
  let pending: (() => void) | undefined;
  const conn = new Duplex({
    highWaterMark: 1,
    read() {},
    write(chunk: Buffer, _encoding, callback) {
      written.push(chunk);
      pending = () => callback();
    },
  });
  return { conn, written, release: () => pending?.() };
}

describe('writePacket: the broker\'s own packets (notices, refusals, upload acknowledgements)', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('writes the packet generated for the client\'s protocol level', () => {
    const { conn, written } = fullConnection();
    const packet = { cmd: 'publish', topic: '$SYS/tokenExpireNotice', payload: Buffer.from('{}'), qos: 0, retain: false, dup: false } as const;
    writePacket(conn, packet, 5, 1_000);
    expect(written[0]).toEqual(mqttPacket.generate(packet, { protocolVersion: 5 }));
    conn.destroy();
  });

  it('destroys a connection that does not drain within drainTimeoutMs', () => {
    const { conn } = fullConnection();
    writePacket(conn, { cmd: 'pingresp' }, 4, 1_000);
    vi.advanceTimersByTime(999);
    expect(conn.destroyed).toBe(false);
    vi.advanceTimersByTime(1);
    expect(conn.destroyed).toBe(true);
  });

  it('leaves a connection that drains in time alone, however long it lives after', async () => {
    const { conn, release } = fullConnection();
    let handedOver = false;
    writePacket(conn, { cmd: 'pingresp' }, 4, 1_000, () => {
      handedOver = true;
    });
    const drained = once(conn, 'drain');
    release();
    await drained;
    expect(handedOver).toBe(true);
    vi.advanceTimersByTime(60_000);
    expect(conn.destroyed).toBe(false);
    conn.destroy();
  });
});

describe('publishSize: a PUBLISH as it would be written, without copying its payload', () => {
  it('matches what mqtt-packet writes, across the lengths where the remaining length takes one more byte', () => {
    for (const size of [0, 1, 100, 114, 115, 116, 200, 16_370, 16_371, 16_372, 16_400, 70_000]) {
      for (const [version, properties] of [[4, undefined], [5, undefined], [5, { contentType: 'text/plain', userProperties: { a: 'b' }, subscriptionIdentifier: 300 }]] as const) {
        for (const qos of [0, 1] as const) {
          const packet = { cmd: 'publish', topic: 'demo/size', payload: Buffer.alloc(size, 1), qos, retain: false, dup: false, ...(qos > 0 ? { messageId: 7 } : {}), ...(properties ? { properties } : {}) } as const;
          expect(publishSize(packet, version), `${size} bytes, v${version}, QoS ${qos}`).toBe(mqttPacket.generate(packet, { protocolVersion: version }).length);
        }
      }
    }
  });
});

/**
 * `end()` settles within its deadline whatever is in flight (issue 21): a Token-mode renewal uploads its token to
 * `$SYS/uploadToken` straight through mqtt.js, past the outbox, and a broker that never acknowledges it must not
 * keep `end()` waiting. The broker is scripted (test/helpers/scripted-broker.ts), so it can withhold the PUBACK.
 */
import { once } from 'node:events';
import type { IPublishPacket } from 'mqtt-packet';
import { describe, expect, it, onTestFinished } from 'vitest';
import { connectDevice } from '../../src/connector/connect.js';
import type { TokenRequest } from '../../src/credential.js';
import { scriptedBroker } from '../helpers/scripted-broker.js';

describe('end() with a Token upload in flight', () => {
  it('resolves, and the connection is closed, when the broker never acknowledges the $SYS/uploadToken publish', async () => {
    const start = Date.now();
    let now = start;
    const uploads: IPublishPacket[] = [];
    const broker = await scriptedBroker({
      // Every publish is recorded; none is acknowledged.
      onPacket: (_connection, packet) => {
        if (packet.cmd === 'publish') uploads.push(packet);
        return packet.cmd === 'publish';
      },
    });
    const requests: TokenRequest['reason'][] = [];
    const conn = await connectDevice({
      clientId: 'GID_end@@@dev-1',
      brokerUrl: broker.url,
      reconnect: false,
      token: {
        accessKeyId: 'LTAIend',
        instanceId: 'mqtt-end',
        now: () => now,
        source: async (request) => {
          requests.push(request.reason);
          return [{ type: 'W', token: request.reason === 'connect' ? 'tokenOne' : 'tokenTwo', expireTime: start + (request.reason === 'connect' ? 60_000 : 120_000) }];
        },
      },
    });
    onTestFinished(() => conn.end(true));
    // The renewal window opens; the broker's expire notice makes the connection renew at once and upload.
    now = start + 50_000;
    const uploaded = new Promise<void>((resolve) => broker.on('packet', (_c, packet) => packet.cmd === 'publish' && resolve()));
    broker.connections[0]?.send({ cmd: 'publish', topic: '$SYS/tokenExpireNotice', payload: Buffer.from(JSON.stringify({ expireTime: start + 60_000, type: 'W' })), qos: 0, retain: false, dup: false });
    await uploaded;
    expect(uploads.map((p) => [p.topic, p.qos, JSON.parse(p.payload.toString()) as unknown])).toEqual([['$SYS/uploadToken', 1, { Token: 'tokenTwo', type: 'W' }]]);
    const closed = once(conn, 'closed');
    await conn.end();
    expect(await closed).toEqual([{}]);
    expect(conn.state).toBe('closed');
    expect(requests).toEqual(['connect', 'renew']);
    await broker.connections[0]?.closed;
  });
});

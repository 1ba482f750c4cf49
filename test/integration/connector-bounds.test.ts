/**
 * The connector's memory has bounds (issue 24): the outbox holds at most `maxQueuedMessages` messages and
 * `maxQueuedBytes` bytes; past either, `publish` (and `subscribe`, `unsubscribe`) rejects at once with the typed
 * `OutboxFull`, nothing dropped, and the refusals are counted. A scripted broker (test/helpers/scripted-broker.ts)
 * decides when the device is offline.
 */
import { once } from 'node:events';
import { describe, expect, it, onTestFinished } from 'vitest';
import { connectDevice, type DeviceConnection } from '../../src/connector/connect.js';
import { DeviceCredential } from '../../src/credential.js';
import { isApsaraMqDeviceError } from '../../src/errors.js';
import { type ScriptedBroker, scriptedBroker } from '../helpers/scripted-broker.js';

const credential = new DeviceCredential({ clientId: 'GID_bound@@@dev-1', instanceId: 'mqtt-bound', deviceAccessKeyId: 'DC.boundKey', deviceAccessKeySecret: 'DC.boundSecret' });

/** A broker that accepts CONNECTs while `accepting` is true and drops them (no CONNACK) otherwise. */
async function switchedBroker(): Promise<ScriptedBroker & { accepting: boolean }> {
  const state = { accepting: true };
  const broker = await scriptedBroker({
    onConnect: (connection) => {
      if (state.accepting) connection.send({ cmd: 'connack', sessionPresent: false, returnCode: 0 });
      else connection.socket.destroy();
    },
  });
  // An accessor: Object.assign would copy the getter's value once, and the broker would accept every CONNECT.
  return Object.defineProperty(broker, 'accepting', { get: () => state.accepting, set: (value: boolean) => (state.accepting = value) }) as ScriptedBroker & { accepting: boolean };
}

/** Connect, then take the broker away: the connection is offline (backing off) when this resolves. */
async function offline(broker: ScriptedBroker & { accepting: boolean }, options: Partial<Parameters<typeof connectDevice>[0]>): Promise<DeviceConnection> {
  const conn = await connectDevice({ credential, brokerUrl: broker.url, reconnect: { minDelayMs: 5, maxDelayMs: 20 }, ...options });
  onTestFinished(() => conn.end(true));
  broker.accepting = false;
  const down = once(conn, 'offline');
  broker.connections[0]?.socket.destroy();
  await down;
  return conn;
}

describe('the outbox bound', () => {
  it('maxQueuedMessages: the publish past it rejects at once with OutboxFull (retryable, naming the option); what was queued is sent after the reconnect', async () => {
    const broker = await switchedBroker();
    const conn = await offline(broker, { maxQueuedMessages: 3 });
    const queued = [1, 2, 3].map((i) => conn.publish('bound/x', `m${i}`, { qos: 1 }));
    expect(conn.outbox).toEqual({ messages: 3, bytes: 3 * ('bound/x'.length + 2), refused: 0 });
    const refused = await conn.publish('bound/x', 'm4', { qos: 1 }).catch((e: unknown) => e);
    expect(isApsaraMqDeviceError(refused, 'OutboxFull')).toBe(true);
    expect(refused).toMatchObject({ retryable: true });
    expect((refused as Error).message).toContain('maxQueuedMessages 3');
    expect((refused as { remedy: string }).remedy).toContain('maxQueuedMessages');
    await expect(conn.subscribe('bound/#')).rejects.toMatchObject({ code: 'OutboxFull' });
    expect(conn.outbox).toMatchObject({ messages: 3, refused: 2 });
    broker.accepting = true;
    await Promise.all(queued);
    const published = broker.connections.flatMap((c) => c.received).filter((p) => p.cmd === 'publish').map((p) => (p.cmd === 'publish' ? p.payload.toString() : ''));
    expect(published).toEqual(['m1', 'm2', 'm3']);
    expect(conn.outbox).toEqual({ messages: 0, bytes: 0, refused: 2 });
    await conn.publish('bound/x', 'after', { qos: 1 });
  });

  it('maxQueuedBytes: a message that would take the payload bytes past it is refused; a smaller one still fits', async () => {
    const broker = await switchedBroker();
    const conn = await offline(broker, { maxQueuedBytes: 100 });
    const first = conn.publish('b/x', Buffer.alloc(60), { qos: 1 });
    await expect(conn.publish('b/x', Buffer.alloc(60), { qos: 1 })).rejects.toMatchObject({ code: 'OutboxFull', message: expect.stringContaining('maxQueuedBytes 100') });
    const second = conn.publish('b/x', Buffer.alloc(30), { qos: 1 });
    expect(conn.outbox).toEqual({ messages: 2, bytes: 63 + 33, refused: 1 });
    broker.accepting = true;
    await Promise.all([first, second]);
  });
});

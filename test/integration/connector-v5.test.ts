/**
 * MQTT 5 reason codes the connector must act on, from a scripted broker: a real TCP server that answers with packets
 * built by mqtt-packet (an encoder independent of the connector), so each test decides exactly what the broker says:
 * CONNACK 0x86 / 0x85 / 0x8A / 0x88, DISCONNECT 0x8E (session taken over) / 0x8B / 0x95, PUBACK 0x97, SUBACK 0x87.
 * Mosquitto (test/interop/connector-mosquitto.test.ts) covers a real broker, which never sends some of these.
 */
import { once } from 'node:events';
import type { IConnectPacket, IPublishPacket, ISubscribePacket } from 'mqtt-packet';
import { describe, expect, it, onTestFinished } from 'vitest';
import { connectDevice, type DeviceConnection } from '../../src/connector/connect.js';
import { DeviceCredential } from '../../src/credential.js';
import { type ApsaraMqDeviceError, ConnectError, PublishError, SubscribeError } from '../../src/errors.js';
import { scriptedBroker as startScriptedBroker } from '../helpers/scripted-broker.js';

const credential = new DeviceCredential({ clientId: 'GID_v5@@@dev-1', instanceId: 'mqtt-v5', deviceAccessKeyId: 'DC.v5Key', deviceAccessKeySecret: 'DC.v5Secret' });
const fresh = new DeviceCredential({ clientId: 'GID_v5@@@dev-1', instanceId: 'mqtt-v5', deviceAccessKeyId: 'DC.v5Fresh', deviceAccessKeySecret: 'DC.v5FreshSecret' });

/** What the scripted broker does with one connection (the n-th CONNECT it receives, from 1). */
interface Script {
  /** CONNACK reason code for the n-th CONNECT. @default 0 */
  connack?(n: number, connect: IConnectPacket): number;
  /** Answer a PUBLISH: a PUBACK reason code, a DISCONNECT reason code to close with instead, or nothing. @default puback 0 */
  publish?(packet: IPublishPacket): { puback: number } | { disconnect: number } | { silence: true };
  /** SUBACK reason codes. @default the requested QoS */
  subscribe?(packet: ISubscribePacket): number[];
}

interface ScriptedBroker {
  readonly url: string;
  /** CONNECT packets received, in order. */
  readonly connects: IConnectPacket[];
  /** Send DISCONNECT with this reason code to every open connection, then close them. */
  disconnectAll(reasonCode: number): void;
}

/** test/helpers/scripted-broker.ts, in MQTT 5, answering as `script` says. */
async function scriptedBroker(script: Script = {}): Promise<ScriptedBroker> {
  const broker = await startScriptedBroker({
    protocolVersion: 5,
    onConnect: (connection, connect) => {
      const reasonCode = script.connack?.(connection.n, connect) ?? 0;
      connection.send({ cmd: 'connack', sessionPresent: false, reasonCode });
      if (reasonCode !== 0) connection.socket.end();
    },
    onPacket: (connection, packet) => {
      if (packet.cmd === 'publish') {
        const answer = script.publish?.(packet) ?? { puback: 0 };
        if ('disconnect' in answer) {
          connection.send({ cmd: 'disconnect', reasonCode: answer.disconnect });
          connection.socket.end();
        } else if ('puback' in answer && packet.qos === 1) {
          connection.send({ cmd: 'puback', messageId: packet.messageId ?? 0, reasonCode: answer.puback });
        }
        return true;
      }
      if (packet.cmd !== 'subscribe' || !script.subscribe) return false;
      connection.send({ cmd: 'suback', messageId: packet.messageId ?? 0, granted: script.subscribe(packet) });
      return true;
    },
  });
  return {
    url: broker.url,
    connects: broker.connects,
    disconnectAll: (reasonCode) => {
      for (const connection of broker.connections) {
        if (connection.socket.destroyed) continue;
        connection.send({ cmd: 'disconnect', reasonCode });
        connection.socket.end();
      }
    },
  };
}

async function open(options: Partial<Parameters<typeof connectDevice>[0]> & { brokerUrl: string }): Promise<DeviceConnection> {
  const conn = await connectDevice({ credential, protocolVersion: 5, reconnect: { minDelayMs: 10, maxDelayMs: 50 }, ...options });
  onTestFinished(() => conn.end(true));
  return conn;
}

describe('MQTT 5 reason codes', () => {
  it('DISCONNECT 0x8E (session taken over) is a confirmed takeover at once, followed by the longer wait; never a close', async () => {
    const broker = await scriptedBroker();
    const conn = await open({ brokerUrl: broker.url, takeover: { minDelayMs: 200, maxDelayMs: 800 } });
    const events: string[] = [];
    conn.on('offline', () => events.push('offline'));
    conn.on('takeover', ({ confirmed, inARow }) => events.push(`takeover confirmed=${confirmed} inARow=${inARow}`));
    conn.on('reconnecting', ({ delayMs }) => events.push(delayMs >= 100 && delayMs <= 200 ? 'reconnecting in [100, 200] ms' : `reconnecting in ${delayMs} ms`));
    const back = once(conn, 'online');
    broker.disconnectAll(0x8e);
    await back;
    expect(events).toEqual(['offline', 'takeover confirmed=true inARow=1', 'reconnecting in [100, 200] ms']);
  });

  it('DISCONNECT 0x8B (server shutting down) is not a takeover, however often', async () => {
    const broker = await scriptedBroker();
    const conn = await open({ brokerUrl: broker.url });
    const takeovers: unknown[] = [];
    conn.on('takeover', (t) => takeovers.push(t));
    for (let i = 0; i < 3; i++) {
      const back = once(conn, 'online');
      broker.disconnectAll(0x8b);
      await back;
    }
    expect(takeovers).toEqual([]);
    expect(broker.connects).toHaveLength(4);
  });

  it('CONNACK 0x86 (bad user name or password) runs the recovery ladder', async () => {
    const broker = await scriptedBroker({ connack: (_n, connect) => (connect.username?.includes('DC.v5Fresh') ? 0 : 0x86) });
    const conn = await connectDevice({
      brokerUrl: broker.url,
      protocolVersion: 5,
      credential: async (request) => (request.reason === 'connect' ? credential : fresh),
    });
    onTestFinished(() => conn.end(true));
    expect(conn.credential.deviceAccessKeyId).toBe('DC.v5Fresh');
    expect(broker.connects.map((c) => c.username)).toEqual(['DeviceCredential|DC.v5Key|mqtt-v5', 'DeviceCredential|DC.v5Fresh|mqtt-v5']);
    expect(broker.connects.every((c) => c.protocolVersion === 5)).toBe(true);
  });

  it.each([
    [0x85, 'IdentifierRejected', false],
    [0x8a, 'ConnackRefused', false],
    [0x88, 'ConnackRefused', true],
  ] as const)('CONNACK %i on the first connect: %s (retryable %s)', async (reasonCode, code, retryable) => {
    const broker = await scriptedBroker({ connack: () => reasonCode });
    const error = await connectDevice({ credential, brokerUrl: broker.url, protocolVersion: 5 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectError);
    expect(error).toMatchObject({ code, connackCode: reasonCode, retryable });
    expect(broker.connects).toHaveLength(1);
  });

  it('PUBACK 0x97 (quota exceeded) rejects that publish at once with its reason code; the session stays', async () => {
    const broker = await scriptedBroker({ publish: (p) => ({ puback: p.topic === 'quota/x' ? 0x97 : 0 }) });
    const conn = await open({ brokerUrl: broker.url });
    const error = await conn.publish('quota/x', 'x', { qos: 1 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PublishError);
    expect(error).toMatchObject({ code: 'PublishRejected', reasonCode: 0x97 });
    await conn.publish('fine/x', 'x', { qos: 1 });
    expect(broker.connects).toHaveLength(1);
  });

  it('DISCONNECT 0x95 (packet too large) right after a publish fails that message at once, not after three sends', async () => {
    const broker = await scriptedBroker({ publish: (p) => (p.topic === 'big/x' ? { disconnect: 0x95 } : { puback: 0 }) });
    const conn = await open({ brokerUrl: broker.url });
    const error = await conn.publish('big/x', 'x', { qos: 1 }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'PublishRejected', reasonCode: 0x95 });
    expect((error as Error).message).toContain('Packet too large');
    if (!conn.online) await once(conn, 'online');
    await conn.publish('fine/x', 'x', { qos: 1 });
    expect(broker.connects).toHaveLength(2);
  });

  it('SUBACK 0x87 rejects with SubscribeError carrying the reason code', async () => {
    const broker = await scriptedBroker({ subscribe: (p) => p.subscriptions.map((s) => (s.topic.startsWith('secret/') ? 0x87 : s.qos)) });
    const conn = await open({ brokerUrl: broker.url });
    const error = await conn.subscribe(['open/#', 'secret/#']).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SubscribeError);
    expect(error).toMatchObject({ code: 'SubscribeRejected', topics: ['secret/#'], reasonCode: 0x87 });
  });

  it('user properties and session expiry go out in the CONNECT and the PUBLISH', async () => {
    const received: IPublishPacket[] = [];
    const broker = await scriptedBroker({
      publish: (p) => {
        received.push(p);
        return { puback: 0 };
      },
    });
    const conn = await open({ brokerUrl: broker.url, clean: false, sessionExpiryInterval: 3600, userProperties: { model: 'x1' } });
    await conn.publish('props/x', 'x', { qos: 1, properties: { userProperties: { trace: 'abc' }, messageExpiryInterval: 60, contentType: 'text/plain' } });
    expect(broker.connects[0]).toMatchObject({ clean: false, properties: { sessionExpiryInterval: 3600, userProperties: { model: 'x1' } } });
    expect(received[0]?.properties).toMatchObject({ userProperties: { trace: 'abc' }, messageExpiryInterval: 60, contentType: 'text/plain' });
  });

  it('end() settles within endTimeoutMs when the broker never acknowledges: the message is rejected, no DISCONNECT wait', async () => {
    const broker = await scriptedBroker({ publish: () => ({ silence: true }) });
    const conn = await open({ brokerUrl: broker.url, endTimeoutMs: 100 });
    const unanswered = conn.publish('silent/x', 'x', { qos: 1 }).catch((e: unknown) => e);
    const ending = conn.end();
    expect(conn.state).toBe('closing');
    await expect(conn.publish('late/x', 'x')).rejects.toMatchObject({ code: 'ConnectionClosed' });
    await ending;
    expect(conn.state).toBe('closed');
    expect(await unanswered).toMatchObject({ code: 'ConnectionClosed' });
  });

  it('a closed connection still settles what it was asked', async () => {
    const broker = await scriptedBroker({ publish: () => ({ disconnect: 0x8b }) });
    const conn = await open({ brokerUrl: broker.url, reconnect: false });
    const closed = new Promise<{ error?: ApsaraMqDeviceError }>((resolve) => conn.once('closed', resolve));
    const error = await conn.publish('x/y', 'x', { qos: 1 }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'ConnectionClosed' });
    expect((await closed).error).toMatchObject({ code: 'BrokerUnreachable' });
  });
});

/**
 * `GET /_emulator/queue?clientId=…`: one persistent session's queue at the broker, as a game day reads its backend
 * subscriber's (test/unit/simulator-backlog.test.ts has the cap, on a queue far larger than it). In one process, and
 * in a cluster on Redis (the queue is the cluster's: any process answers it).
 */
import { Redis } from 'ioredis';
import type { MqttClient } from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import type { DeviceCredential } from '../../src/credential.js';
import { startEmulator, type Emulator } from '../../src/emulator/index.js';
import { RedisSessionQueues } from '../../src/emulator/cluster/redis-queues.js';
import type { StoredPacket } from '../../src/emulator/session-queues.js';
import { signDeviceCredential } from '../../src/signer/mqtt.js';
import { ANY_GROUP, clientLeaves, connectMqtt, registerDevice, useEmulator } from '../helpers/emulator.js';
import { redisAvailable, startRedis } from '../helpers/redis.js';

const clients: MqttClient[] = [];
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.endAsync(true)));
});

async function getQueue(e: Emulator, query: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(new URL(`/_emulator/queue?${query}`, e.apiEndpoint));
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

/** A persistent session subscribed to `topic` at QoS 1 that has left: what is published to it is queued. */
async function subscribedAndGone(e: Emulator, credential: DeviceCredential, topic: string): Promise<void> {
  const first = await connectMqtt(e.mqttUrl, signDeviceCredential(credential), { clean: false });
  await first.subscribeAsync(topic, { qos: 1 });
  const left = clientLeaves(e, credential.clientId);
  await first.endAsync();
  await left;
}

/** Publish `count` messages `m0`, `m1`… at QoS 1 to `topic` from a device of its own, each acknowledged. */
async function publish(e: Emulator, publisherId: string, topic: string, count: number): Promise<void> {
  const publisher = await connectMqtt(e.mqttUrl, signDeviceCredential(await registerDevice(e, publisherId)));
  clients.push(publisher);
  for (let i = 0; i < count; i++) await publisher.publishAsync(topic, `m${i}`, { qos: 1 });
}

describe('GET /_emulator/queue', () => {
  const emu = useEmulator({}, 'test');

  it('lists what a persistent session holds, oldest first, with the counts and how the broker paces and bounds it; count=1 and payloadBytes=N', async () => {
    const e = emu();
    const subscriber = await registerDevice(e, 'GID_qv@@@sub');
    await subscribedAndGone(e, subscriber, 'demo/qv');
    await publish(e, 'GID_qv@@@pub', 'demo/qv', 5);
    const whole = await getQueue(e, `clientId=${encodeURIComponent(subscriber.clientId)}`);
    expect(whole.status).toBe(200);
    expect(whole.body).toEqual({
      clientId: subscriber.clientId,
      count: 5,
      bytes: 5 * ('demo/qv'.length + 2),
      messages: [0, 1, 2, 3, 4].map((i) => ({ topic: 'demo/qv', qos: 1, bytes: 9, sent: false, payload: Buffer.from(`m${i}`).toString('base64') })),
      truncated: false,
      offline: { delivery: 'paced', detectionDelayMs: { min: 5_000, max: 10_000 }, batchSize: 30, batchIntervalMs: 5_000, maxMessages: 1_000, maxBytes: 8_388_608, policy: 'drop-oldest' },
    });
    const counted = await getQueue(e, `clientId=${encodeURIComponent(subscriber.clientId)}&count=1`);
    expect(counted.body).toMatchObject({ count: 5, truncated: false });
    expect(counted.body).not.toHaveProperty('messages');
    const heads = await getQueue(e, `clientId=${encodeURIComponent(subscriber.clientId)}&payloadBytes=1`);
    expect((heads.body['messages'] as Array<{ payload: string }>).map((m) => Buffer.from(m.payload, 'base64').toString())).toEqual(['m', 'm', 'm', 'm', 'm']);
    // A ClientId that holds nothing.
    expect((await getQueue(e, 'clientId=GID_qv@@@nobody')).body).toMatchObject({ count: 0, bytes: 0, messages: [], truncated: false });
    // The queue outlives a broker restart, and so does the view of it.
    await e.restart();
    expect((await getQueue(e, `clientId=${encodeURIComponent(subscriber.clientId)}&count=1`)).body).toMatchObject({ count: 5 });
  });

  it('a query it cannot read is ParameterCheckFailed (400), saying what to send', async () => {
    const e = emu();
    for (const query of ['', 'clientId=', 'clientId=x&count=maybe', 'clientId=x&payloadBytes=many']) {
      const { status, body } = await getQueue(e, query);
      expect(status).toBe(400);
      expect(body).toMatchObject({ Code: 'ParameterCheckFailed', Message: expect.stringContaining('GET /_emulator/queue?clientId=<ClientId>') });
    }
  });
});

const { available, skipped } = redisAvailable();

describe.skipIf(!available)(`GET /_emulator/queue in a cluster on Redis${skipped}`, () => {
  it('any process of the cluster answers a session\'s queue, read from Redis page by page (more than one page here)', async () => {
    const redis = await startRedis();
    const a = await startEmulator({ env: {}, ...ANY_GROUP, redis: redis.url });
    try {
      const b = await startEmulator({ env: {}, ...ANY_GROUP, redis: redis.url });
      try {
        const subscriber = await registerDevice(a, 'GID_qvc@@@sub');
        await subscribedAndGone(a, subscriber, 'demo/qvc');
        await publish(a, 'GID_qvc@@@pub', 'demo/qvc', 150);
        const fromB = await getQueue(b, `clientId=${encodeURIComponent(subscriber.clientId)}&payloadBytes=4`);
        expect(fromB.body).toMatchObject({ count: 150, truncated: false, offline: { delivery: 'paced' } });
        const payloads = (fromB.body['messages'] as Array<{ payload: string }>).map((m) => Buffer.from(m.payload, 'base64').toString());
        expect(payloads).toEqual(Array.from({ length: 150 }, (_, i) => `m${i}`.slice(0, 4)));
        expect((await getQueue(a, `clientId=${encodeURIComponent(subscriber.clientId)}&count=1`)).body).toMatchObject({ count: 150 });
      } finally {
        await b.close();
      }
    } finally {
      await a.close();
    }
  }, 60_000);

  it('a walk page by page lists every message still queued when another process clears older ones between its pages', async () => {
    const redis = await startRedis();
    const client = new Redis(redis.url);
    try {
      const queues = new RedisSessionQueues(client, { maxMessages: Number.POSITIVE_INFINITY, maxBytes: Number.POSITIVE_INFINITY, policy: 'drop-oldest' }, () => undefined);
      const packets: StoredPacket[] = Array.from({ length: 150 }, (_, i) => ({ cmd: 'publish', topic: 'demo/walk', payload: Buffer.from(`m${i}`), qos: 1, brokerId: 'b', brokerCounter: i + 1 }));
      for (const packet of packets) await queues.enqueue('GID_w@@@sub', packet);
      const seen: string[] = [];
      let cleared: Promise<unknown> | undefined;
      await queues.peek('GID_w@@@sub', (packet) => {
        seen.push(Buffer.from(packet.payload as Buffer).toString());
        // At the end of the first page, the subscriber acknowledges its ten oldest messages elsewhere (the same
        // connection: Redis runs these before the walk's next page).
        if (seen.length === 64) cleared = Promise.all(packets.slice(0, 10).map((p) => queues.clear('GID_w@@@sub', p)));
        return true;
      });
      await cleared;
      // Every message still queued is listed, each once: none skipped by the shift of the list.
      expect(seen).toEqual(packets.map((_, i) => `m${i}`));
      expect((await queues.list('GID_w@@@sub')).length).toBe(140);
    } finally {
      client.disconnect();
    }
  }, 60_000);
});


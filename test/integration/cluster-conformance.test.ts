/**
 * The cluster's Redis copies of state the emulator keeps in memory behave as the originals do: the same operations in
 * the same order, the same answers. Driven side by side on a real Redis with one script of operations (a seeded
 * pseudo-random one), so that a rule changed on one side and not the other fails here.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiFault } from '../../src/emulator/api-errors.js';
import { SharedAdmission } from '../../src/emulator/cluster/admission.js';
import { RedisSessionQueues } from '../../src/emulator/cluster/redis-queues.js';
import { RateLimiter } from '../../src/emulator/gateway.js';
import { SessionQueues, type QueueLimits, type StoredPacket } from '../../src/emulator/session-queues.js';
import { redisAvailable, startRedis, type TestRedis } from '../helpers/redis.js';

const { available, skipped } = redisAvailable();

/** A small deterministic generator (mulberry32), so a failure replays. */
function prng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe.skipIf(!available)(`the cluster's Redis state, side by side with the emulator's own${skipped}`, () => {
  let redis: TestRedis;
  let client: Redis;
  beforeAll(async () => {
    redis = await startRedis('manual');
    client = new Redis(redis.url);
  });
  afterAll(async () => {
    client?.disconnect();
    await redis?.stop();
  });

  for (const policy of ['drop-oldest', 'refuse-new'] as const) {
    it(`RedisSessionQueues answers as SessionQueues does (${policy}): enqueue, update, PUBREL, clear, list, overflow, stats`, async () => {
      await client.flushdb();
      const limits: QueueLimits = { maxMessages: 6, maxBytes: 120, policy };
      const memoryOverflows: string[] = [];
      const redisOverflows: string[] = [];
      const memory = new SessionQueues(limits, (id, outcome, held) => memoryOverflows.push(`${id} ${outcome} ${held.messages} ${held.bytes}`));
      const shared = new RedisSessionQueues(client, limits, (id, outcome, held) => redisOverflows.push(`${id} ${outcome} ${held.messages} ${held.bytes}`));
      const random = prng(policy === 'drop-oldest' ? 7 : 11);
      const clients = ['GID_a@@@1', 'GID_a@@@2'];
      let counter = 0;
      const sent = new Map<string, number[]>(clients.map((c) => [c, []]));
      const plain = (packets: readonly StoredPacket[]): unknown[] => packets.map((p) => ({ ...p, payload: p.payload === undefined ? undefined : Buffer.from(p.payload as Buffer).toString('hex') }));
      for (let step = 0; step < 400; step++) {
        const clientId = clients[Math.floor(random() * clients.length)] as string;
        const roll = random();
        if (roll < 0.4) {
          const packet: StoredPacket = { cmd: 'publish', brokerId: random() < 0.5 ? 'b1' : 'b2', brokerCounter: ++counter, topic: `t/${counter % 5}`, payload: Buffer.alloc(Math.floor(random() * 30)), qos: 1, retain: false, dup: false };
          memory.enqueue(clientId, packet);
          await shared.enqueue(clientId, packet);
        } else if (roll < 0.6) {
          // Send the oldest unsent message: it takes a packet id.
          const unsent = memory.list(clientId).find((p) => p.messageId === undefined);
          if (!unsent) continue;
          const messageId = 1 + Math.floor(random() * 50);
          sent.get(clientId)?.push(messageId);
          const packet = { ...unsent, messageId };
          memory.update(clientId, packet);
          await shared.update(clientId, packet);
        } else if (roll < 0.65) {
          // A PUBREL standing for a message with a packet id (no broker id).
          const messageId = sent.get(clientId)?.[Math.floor(random() * (sent.get(clientId)?.length ?? 0))];
          if (messageId === undefined) continue;
          const pubrel: StoredPacket = { cmd: 'pubrel', messageId };
          memory.update(clientId, pubrel);
          await shared.update(clientId, pubrel);
        } else if (roll < 0.85) {
          const messageId = sent.get(clientId)?.[Math.floor(random() * (sent.get(clientId)?.length ?? 0))];
          if (messageId === undefined) continue;
          const ack: StoredPacket = { cmd: 'puback', messageId };
          expect(plain([(await shared.clear(clientId, ack)) ?? { cmd: 'none' }]), `step ${step}`).toEqual(plain([memory.clear(clientId, ack) ?? { cmd: 'none' }]));
        } else {
          const any = memory.list(clientId)[0];
          if (!any || any.messageId !== undefined) continue;
          // aedes dropping an unsent message: found by broker id and counter.
          const drop: StoredPacket = { brokerId: any.brokerId, brokerCounter: any.brokerCounter };
          expect(plain([(await shared.clear(clientId, drop)) ?? { cmd: 'none' }]), `step ${step}`).toEqual(plain([memory.clear(clientId, drop) ?? { cmd: 'none' }]));
        }
        for (const id of clients) expect(plain(await shared.list(id)), `step ${step} ${id}`).toEqual(plain(memory.list(id)));
        expect(await shared.refresh(), `step ${step}`).toEqual(memory.stats());
      }
      expect(redisOverflows).toEqual(memoryOverflows);
      expect(memoryOverflows.length).toBeGreaterThan(0);
    });
  }

  it('SharedAdmission\'s rate limits answer as the gateway\'s RateLimiter does, on one clock', async () => {
    await client.flushdb();
    let now = 1_000_000;
    const limits = { qpsLimit: 5, actionQpsLimits: { RevokeToken: 2 } };
    const shared = new SharedAdmission(client, { nonceWindowMs: 60_000, actionThrottleCode: 'SystemOverFlow', ...limits }, () => now);
    const account = new RateLimiter(limits.qpsLimit, () => now);
    const revoke = new RateLimiter(limits.actionQpsLimits.RevokeToken, () => now);
    const random = prng(3);
    const verdicts: Array<[string, string]> = [];
    for (let call = 0; call < 300; call++) {
      now += Math.floor(random() * 250);
      const action = random() < 0.5 ? 'RevokeToken' : 'GetDeviceCredential';
      // The gateway's order: the account's limit first; a refused call spends nothing of the action's.
      const expected = !account.tryTake('LTAIkey') ? 'Throttling.User' : action === 'RevokeToken' && !revoke.tryTake('LTAIkey') ? 'RevokeTokenOverFlow' : 'ok';
      const got = await shared.admit({ accessKeyId: 'LTAIkey', action }).then(() => 'ok', (error: unknown) => (error instanceof ApiFault ? error.code : String(error)));
      verdicts.push([expected, got]);
    }
    expect(verdicts.map(([, got]) => got)).toEqual(verdicts.map(([expected]) => expected));
    expect(new Set(verdicts.map(([e]) => e))).toEqual(new Set(['ok', 'Throttling.User', 'RevokeTokenOverFlow']));
  });

  it('SharedAdmission refuses a nonce used within its window, whoever checks it', async () => {
    await client.flushdb();
    const shared = new SharedAdmission(client, { nonceWindowMs: 60_000, qpsLimit: Number.POSITIVE_INFINITY, actionQpsLimits: {}, actionThrottleCode: 'SystemOverFlow' });
    await shared.admit({ nonce: 'n-1', accessKeyId: 'k', action: 'GetDeviceCredential' });
    await expect(shared.admit({ nonce: 'n-1', accessKeyId: 'k', action: 'ListDeviceCredentialClientId' })).rejects.toMatchObject({ code: 'SignatureNonceUsed' });
    await shared.admit({ nonce: 'n-2', accessKeyId: 'k', action: 'GetDeviceCredential' });
  });

  it('failNext\'s faults are taken in order, each run for its count, before nothing else', async () => {
    await client.flushdb();
    const shared = new SharedAdmission(client, { nonceWindowMs: 60_000, qpsLimit: Number.POSITIVE_INFINITY, actionQpsLimits: {}, actionThrottleCode: 'SystemOverFlow' });
    await shared.failNext('RegisterDeviceCredential', 'SystemOverFlow', 2);
    await shared.failNext('RegisterDeviceCredential', 'InternalError', 1);
    const codes: string[] = [];
    for (let i = 0; i < 4; i++) codes.push(await shared.admit({ accessKeyId: 'k', action: 'RegisterDeviceCredential' }).then(() => 'ok', (e: ApiFault) => e.code));
    expect(codes).toEqual(['SystemOverFlow', 'SystemOverFlow', 'InternalError', 'ok']);
    await shared.admit({ accessKeyId: 'k', action: 'GetDeviceCredential' });
  });
});

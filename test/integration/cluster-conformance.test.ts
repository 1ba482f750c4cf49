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
import { FaultInjector } from '../../src/emulator/faults.js';
import { RateLimiter } from '../../src/emulator/gateway.js';
import { SessionQueues, type QueueLimits, type RedeliveryPace, type StoredPacket } from '../../src/emulator/session-queues.js';
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

  for (const seed of [21, 22, 23]) {
    it(`RedisSessionQueues.redeliver paces as SessionQueues.redeliver does: batch by batch, skipping what was acknowledged, dropped or replaced meanwhile (seed ${seed})`, async () => {
      await client.flushdb();
      const limits: QueueLimits = { maxMessages: 25, maxBytes: 10_000, policy: 'drop-oldest' };
      const memory = new SessionQueues(limits, () => undefined);
      const shared = new RedisSessionQueues(client, limits, () => undefined);
      const random = prng(seed);
      const clientId = 'GID_a@@@paced';
      let counter = 0;
      const enqueue = async (): Promise<void> => {
        const packet: StoredPacket = { cmd: 'publish', brokerId: 'b1', brokerCounter: ++counter, topic: 'demo/q', payload: Buffer.from(`m${counter}`), qos: 1, retain: false, dup: false };
        memory.enqueue(clientId, packet);
        await shared.enqueue(clientId, packet);
      };
      for (let i = 0; i < 20; i++) await enqueue();
      // Some were sent before the client went away: they hold a packet id, and a PUBREL may stand for one later.
      for (const item of memory.list(clientId).slice(0, 4)) {
        const sent = { ...item, messageId: item.brokerCounter };
        memory.update(clientId, sent);
        await shared.update(clientId, sent);
      }

      /** One side's pace, with its one pending timer run when the test says; what it pushed, the delays it set. */
      interface Side {
        readonly pace: RedeliveryPace;
        readonly pushed: string[];
        readonly delays: number[];
        ended: boolean;
        push(packet: StoredPacket): void;
        end(): void;
        /** Run the pending timer; resolves once the side has set its next one or ended. */
        step(): Promise<void>;
      }
      const side = (): Side => {
        let pending: (() => void) | undefined;
        let settled: (() => void) | undefined;
        const state: Side = {
          pushed: [],
          delays: [],
          ended: false,
          pace: {
            delayMs: () => 7_000,
            batchSize: 3,
            intervalMs: 5_000,
            timers: {
              setTimeout: (callback: () => void, ms: number) => {
                state.delays.push(ms);
                pending = callback;
                settled?.();
                return callback;
              },
              clearTimeout: () => {
                pending = undefined;
              },
            },
          },
          push: (packet) => void state.pushed.push((packet.payload as Buffer).toString()),
          end: () => {
            state.ended = true;
            settled?.();
          },
          step: () => {
            const run = pending;
            pending = undefined;
            const next = new Promise<void>((resolve) => (settled = resolve));
            run?.();
            return next;
          },
        };
        return state;
      };
      const sides = { memory: side(), shared: side() };
      memory.redeliver(clientId, sides.memory.pace, sides.memory.push, sides.memory.end);
      shared.redeliver(clientId, sides.shared.pace, sides.shared.push, sides.shared.end, () => false, (error) => {
        throw error;
      });
      expect(sides.shared.delays).toEqual(sides.memory.delays);
      while (!sides.memory.ended) {
        // Before each batch: acknowledgements, drops of unsent messages, new messages (not part of this redelivery,
        // and dropping the oldest once the queue is full), a PUBREL standing for a sent one.
        for (let change = Math.floor(random() * 4); change > 0; change--) {
          const roll = random();
          const held = memory.list(clientId);
          const pick = held[Math.floor(random() * held.length)];
          if (roll < 0.4 && pick) {
            const ack: StoredPacket = pick.messageId === undefined ? { brokerId: pick.brokerId, brokerCounter: pick.brokerCounter } : { cmd: 'puback', messageId: pick.messageId };
            memory.clear(clientId, ack);
            await shared.clear(clientId, ack);
          } else if (roll < 0.9) {
            await enqueue();
          } else if (pick?.messageId !== undefined) {
            const pubrel: StoredPacket = { cmd: 'pubrel', messageId: pick.messageId };
            memory.update(clientId, pubrel);
            await shared.update(clientId, pubrel);
          }
        }
        await Promise.all([sides.memory.step(), sides.shared.step()]);
        expect(sides.shared.pushed).toEqual(sides.memory.pushed);
        expect(sides.shared.ended).toBe(sides.memory.ended);
      }
      expect(sides.shared.pushed).toEqual(sides.memory.pushed);
      expect(sides.shared.delays).toEqual(sides.memory.delays);
      expect(sides.shared.ended).toBe(true);
      expect(sides.memory.pushed.length).toBeGreaterThan(0);
      expect(sides.memory.pushed.length).toBeLessThan(20);
    });
  }

  it.each(['sliding-window', 'token-bucket'] as const)('SharedAdmission\'s rate limits answer as the gateway\'s RateLimiter does, on one clock (%s)', async (mode) => {
    await client.flushdb();
    let now = 1_000_000;
    const limits = { qpsLimit: 5, actionQpsLimits: { RevokeToken: 2 } };
    const shared = new SharedAdmission(client, { nonceWindowMs: 60_000, actionThrottleCode: 'SystemOverFlow', rateLimitMode: mode, ...limits }, () => now);
    const account = new RateLimiter(limits.qpsLimit, () => now, mode);
    const revoke = new RateLimiter(limits.actionQpsLimits.RevokeToken, () => now, mode);
    const random = prng(3);
    const verdicts: Array<[string, string]> = [];
    const times: number[] = [];
    for (let call = 0; call < 300; call++) {
      // Steps of 0 to 250 ms, fractional as performance.now's; some land exactly one second after an earlier call, on the window's edge.
      const edge = times.find((t) => t + 1_000 >= now);
      now = edge !== undefined && random() < 0.15 ? edge + 1_000 : now + random() * 250;
      times.push(now);
      const action = random() < 0.5 ? 'RevokeToken' : 'GetDeviceCredential';
      // The gateway's order: the account's limit first; a refused call spends nothing of the action's.
      const expected = !account.tryTake('LTAIkey') ? 'Throttling.User' : action === 'RevokeToken' && !revoke.tryTake('LTAIkey') ? 'RevokeTokenOverFlow' : 'ok';
      const got = await shared.admit({ accessKeyId: 'LTAIkey', action }).then(() => 'ok', (error: unknown) => (error instanceof ApiFault ? error.code : String(error)));
      verdicts.push([expected, got]);
    }
    expect(verdicts.map(([, got]) => got)).toEqual(verdicts.map(([expected]) => expected));
    expect(new Set(verdicts.map(([e]) => e))).toEqual(new Set(['ok', 'Throttling.User', 'RevokeTokenOverFlow']));
  });

  it('rateLimitMode is what the shared limit counts by: half a second after a full second\'s worth, the window refuses and the bucket has refilled half', async () => {
    await client.flushdb();
    let now = 5_000;
    const answers = async (mode: 'sliding-window' | 'token-bucket'): Promise<string[]> => {
      const shared = new SharedAdmission(client, { nonceWindowMs: 60_000, qpsLimit: 4, actionQpsLimits: {}, actionThrottleCode: 'SystemOverFlow', rateLimitMode: mode }, () => now);
      const got: string[] = [];
      for (const at of [0, 0, 0, 0, 0, 500, 500, 500, 1_000]) {
        now = 5_000 + at;
        got.push(await shared.admit({ accessKeyId: `k-${mode}`, action: 'GetDeviceCredential' }).then(() => 'ok', (error: ApiFault) => error.code));
      }
      return got;
    };
    const refused = 'Throttling.User';
    expect(await answers('sliding-window')).toEqual(['ok', 'ok', 'ok', 'ok', refused, refused, refused, refused, 'ok']);
    expect(await answers('token-bucket')).toEqual(['ok', 'ok', 'ok', 'ok', refused, 'ok', 'ok', refused, 'ok']);
  });

  it('the cluster\'s fault burst answers as FaultInjector.burst does, on one clock: started, replaced, ended, run out', async () => {
    await client.flushdb();
    let now = 2_000_000;
    const shared = new SharedAdmission(client, { nonceWindowMs: 60_000, qpsLimit: Number.POSITIVE_INFINITY, actionQpsLimits: {}, actionThrottleCode: 'SystemOverFlow' }, () => now);
    // Two injectors with one script of draws: one keeps its own burst, the other draws from the cluster's.
    const draws = (): (() => number) => prng(5);
    const config = { faultRate: 0.1, faultCodes: ['InternalError'], latencyMs: undefined, rateClock: () => now };
    const local = new FaultInjector({ ...config, random: draws() });
    const clustered = new FaultInjector({ ...config, random: draws() });
    const random = prng(9);
    const answer = (run: () => void): string => {
      try {
        run();
        return 'ok';
      } catch (error) {
        return error instanceof ApiFault ? error.code : String(error);
      }
    };
    const verdicts: Array<[string, string]> = [];
    for (let step = 0; step < 300; step++) {
      now += random() * 400;
      const roll = random();
      if (roll < 0.05) {
        // A burst, sometimes one that ends the running one (rate 0 or forMs 0).
        const rate = random() < 0.2 ? 0 : Math.round(random() * 10) / 10;
        const codes = random() < 0.5 ? ['Throttling.User'] : ['SystemOverFlow', 'InternalError'];
        const forMs = random() < 0.1 ? 0 : Math.floor(random() * 5_000);
        local.burst(rate, codes, forMs);
        await shared.burst(rate, codes, forMs);
        continue;
      }
      const admitted = await shared.admit({ accessKeyId: 'k', action: 'GetDeviceCredential' });
      verdicts.push([answer(() => local.inject('GetDeviceCredential')), answer(() => clustered.inject('GetDeviceCredential', admitted.burst))]);
    }
    expect(verdicts.map(([, got]) => got)).toEqual(verdicts.map(([expected]) => expected));
    expect(new Set(verdicts.map(([expected]) => expected))).toEqual(new Set(['ok', 'Throttling.User', 'SystemOverFlow', 'InternalError']));
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

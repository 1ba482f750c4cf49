import { describe, expect, it } from 'vitest';
import { OpenApiClient, Provisioner, provisionFleet } from '../../src/provisioner/index.js';
import { AccountLimiter, accountLimiter, Semaphore, TokenBucket } from '../../src/provisioner/rate-limit.js';
import { sendJson, startHttpServer } from '../helpers/http.js';

describe('TokenBucket (injected clock)', () => {
  it('hands out the burst at once, then one token every 1/rate s, in order', () => {
    const now = 0;
    const bucket = new TokenBucket(100, 5, () => now);
    const waits = Array.from({ length: 10 }, () => bucket.reserve());
    expect(waits.slice(0, 5)).toEqual([0, 0, 0, 0, 0]);
    expect(waits.slice(5).map((w) => Math.round(w))).toEqual([10, 20, 30, 40, 50]);
  });

  it('keeps the long-run rate: N reservations are spread over (N - burst) / rate seconds', () => {
    let now = 0;
    const bucket = new TokenBucket(200, undefined, () => now);
    let last = 0;
    for (let i = 0; i < 1_000; i++) {
      // Callers arrive every 2 ms (500/s), faster than the rate.
      now = i * 2;
      last = now + bucket.reserve();
    }
    // Default burst is rate/20 = 10 tokens: the 1,000th call may go at (1000 - 10) / 200 s.
    expect(last).toBeCloseTo(((1_000 - 10) / 200) * 1000, 6);
  });

  it('refills over idle time, but never beyond the burst', () => {
    let now = 0;
    const bucket = new TokenBucket(10, 2, () => now);
    expect([bucket.reserve(), bucket.reserve(), bucket.reserve()].map(Math.round)).toEqual([0, 0, 100]);
    now = 10_000;
    expect([bucket.reserve(), bucket.reserve(), bucket.reserve()].map(Math.round)).toEqual([0, 0, 100]);
  });

  it('changes rate, gives back refunds, and is never limited at Infinity', () => {
    let now = 0;
    const bucket = new TokenBucket(10, 1, () => now);
    expect(bucket.reserve()).toBe(0);
    expect(Math.round(bucket.reserve())).toBe(100);
    bucket.refund();
    bucket.setRate(1_000, 1);
    now = 1;
    expect(bucket.reserve()).toBe(0);
    const unlimited = new TokenBucket(Number.POSITIVE_INFINITY, undefined, () => now);
    expect(Array.from({ length: 1_000 }, () => unlimited.reserve()).every((w) => w === 0)).toBe(true);
  });

  it('rejects a rate that is not positive', () => {
    for (const rate of [0, -1, Number.NaN]) expect(() => new TokenBucket(rate)).toThrow(expect.objectContaining({ code: 'InvalidOption' }));
  });
});

describe('Semaphore', () => {
  it('lets at most `limit` holders in, first come first served', async () => {
    const slots = new Semaphore(2);
    const a = await slots.acquire('a');
    const b = await slots.acquire('b');
    const order: string[] = [];
    const c = slots.acquire('c').then((release) => (order.push('c'), release));
    const d = slots.acquire('d').then((release) => (order.push('d'), release));
    await new Promise((resolve) => setImmediate(resolve));
    expect(slots.active).toBe(2);
    expect(order).toEqual([]);
    a();
    a(); // a second release is ignored
    (await c)();
    b();
    (await d)();
    expect(order).toEqual(['c', 'd']);
    expect(slots.active).toBe(0);
  });

  it('drops a waiter whose signal fires', async () => {
    const slots = new Semaphore(1);
    const held = await slots.acquire('held');
    const controller = new AbortController();
    const waiting = slots.acquire('waiter', controller.signal);
    controller.abort();
    await expect(waiting).rejects.toMatchObject({ code: 'Aborted' });
    held();
    expect(slots.active).toBe(0);
    await expect(slots.acquire('late', AbortSignal.abort())).rejects.toMatchObject({ code: 'Aborted' });
  });

  it('rejects a limit below 1', () => {
    expect(() => new Semaphore(0)).toThrow(expect.objectContaining({ code: 'InvalidOption' }));
  });
});

describe('AccountLimiter', () => {
  it('never has more than `concurrency` sends in flight', async () => {
    const limiter = new AccountLimiter({ qps: Number.POSITIVE_INFINITY, concurrency: 3 });
    let inFlight = 0;
    let most = 0;
    await Promise.all(
      Array.from({ length: 20 }, () =>
        limiter.run('op', undefined, async () => {
          inFlight += 1;
          most = Math.max(most, inFlight);
          await new Promise((resolve) => setTimeout(resolve, 2));
          inFlight -= 1;
        }),
      ),
    );
    expect(most).toBe(3);
  });

  it('is shared per AccessKeyId, whatever the endpoint', () => {
    const a = accountLimiter('LTAI-shared');
    expect(accountLimiter('LTAI-shared')).toBe(a);
    expect(accountLimiter('LTAI-other')).not.toBe(a);
    const keys = { env: {}, accessKeyId: 'LTAI-shared-endpoints', accessKeySecret: 'secret-0123456789' };
    new OpenApiClient({ ...keys, endpoint: 'http://127.0.0.1:1', qps: 40 }).close();
    new OpenApiClient({ ...keys, region: 'cn-hangzhou', qps: 30 }).close();
    expect(accountLimiter('LTAI-shared-endpoints').bucket.rate).toBe(30);
  });

  it('the lowest explicit limit wins; omitted limits and defaults never change it (injected clock)', () => {
    let now = 0;
    const limiter = new AccountLimiter({}, () => now);
    expect(limiter.bucket.rate).toBe(500);
    expect(limiter.slots.limit).toBe(64);
    limiter.configure({ qps: 1_000, concurrency: 100 }); // explicit, and none lower yet: it applies
    expect([limiter.bucket.rate, limiter.slots.limit]).toEqual([1_000, 100]);
    limiter.configure({ qps: 5, concurrency: 4 }); // a Provisioner({ qps: 5, concurrency: 4 })
    limiter.configure({}); // a provisionFleet without qps or concurrency
    limiter.configure({ qps: 500, concurrency: 64 }); // higher explicit values do not raise it either
    expect([limiter.bucket.rate, limiter.slots.limit]).toEqual([5, 4]);
    // 40 calls at once are spread at 5/s: burst 1, then one every 200 ms.
    now = 10_000;
    const waits = Array.from({ length: 40 }, () => limiter.bucket.reserve());
    expect(waits[0]).toBe(0);
    expect(waits[39]).toBeCloseTo(39 * 200, 6);
    limiter.configure({ qps: 2 });
    expect(limiter.bucket.rate).toBe(2);
  });

  it('still rejects a bad explicit limit that would not change anything', () => {
    const limiter = new AccountLimiter({ qps: 1, concurrency: 1 });
    expect(() => limiter.configure({ qps: 0 })).toThrow(expect.objectContaining({ code: 'InvalidOption' }));
    expect(() => limiter.configure({ qps: Number.NaN })).toThrow(expect.objectContaining({ code: 'InvalidOption' }));
    expect(() => limiter.configure({ concurrency: 1.5 })).toThrow(expect.objectContaining({ code: 'InvalidOption' }));
    expect([limiter.bucket.rate, limiter.slots.limit]).toEqual([1, 1]);
  });

  it('a provisionFleet without qps does not lift a Provisioner({ qps: 5 }) of the same account', async () => {
    const keys = { env: {}, endpoint: 'http://127.0.0.1:1', accessKeyId: 'LTAI-fleet-vs-provisioner', accessKeySecret: 'secret-0123456789' };
    const provisioner = new Provisioner({ ...keys, instanceId: 'mqtt-cn-test', qps: 5, concurrency: 3 });
    const limiter = accountLimiter(keys.accessKeyId);
    expect([limiter.bucket.rate, limiter.slots.limit]).toEqual([5, 3]);
    // No ClientIds: the run makes no call, but builds its provisioner (and so meets the shared limiter).
    await provisionFleet([], { ...keys, instanceId: 'mqtt-cn-test' });
    await provisionFleet([], { ...keys, endpoint: 'http://127.0.0.1:2', instanceId: 'mqtt-cn-test', qps: 500, concurrency: 64 });
    expect([limiter.bucket.rate, limiter.slots.limit]).toEqual([5, 3]);
    provisioner.close();
  });

  it('caps the requests in flight of every OpenApiClient of one account together', async () => {
    let inFlight = 0;
    let most = 0;
    const server = await startHttpServer(async (_req, res) => {
      inFlight += 1;
      most = Math.max(most, inFlight);
      await new Promise((resolve) => setTimeout(resolve, 5));
      inFlight -= 1;
      sendJson(res, 400, { RequestId: 'R', Code: 'DeviceCredentialNotFound', Message: 'x' });
    });
    const keys = { env: {}, endpoint: server.url, accessKeyId: 'LTAI-paced', accessKeySecret: 'secret-0123456789' };
    const clients = [new OpenApiClient({ ...keys, concurrency: 2 }), new OpenApiClient(keys)];
    await Promise.all(
      Array.from({ length: 20 }, (_, i) => clients[i % 2]?.getDeviceCredential('mqtt-cn-test', `GID_test@@@dev-${i}`).catch(() => undefined)),
    );
    expect(server.requests).toBe(20);
    expect(most).toBe(2);
    for (const c of clients) c.close();
  });
});

import { describe, expect, it } from 'vitest';
import { OpenApiClient, Provisioner, provisionFleet, RateLimiter } from '../../src/provisioner/index.js';
import { accountDefaultLimiter, Semaphore, windowSafePace } from '../../src/provisioner/rate-limit.js';
import { TokenBucket } from '../../src/util/token-bucket.js';
import { sendJson, startHttpServer } from '../helpers/http.js';

describe('TokenBucket (injected clock)', () => {
  it('reserve: hands out the burst at once, then one token every 1/rate s, in order', () => {
    const bucket = new TokenBucket({ rate: 100, burst: 5, now: () => 0 });
    const waits = Array.from({ length: 10 }, () => bucket.reserve());
    expect(waits.slice(0, 5)).toEqual([0, 0, 0, 0, 0]);
    expect(waits.slice(5).map((w) => Math.round(w))).toEqual([10, 20, 30, 40, 50]);
  });

  it('reserve keeps the long-run rate: N reservations are spread over (N - burst) / rate seconds', () => {
    let now = 0;
    const bucket = new TokenBucket({ rate: 200, now: () => now });
    let last = 0;
    for (let i = 0; i < 1_000; i++) {
      // Callers arrive every 2 ms (500/s), faster than the rate.
      now = i * 2;
      last = now + bucket.reserve();
    }
    // Default burst is rate/20 = 10 tokens: the 1,000th call may go at (1000 - 10) / 200 s = 4,950 ms.
    expect(last).toBeCloseTo(4_950, 6);
  });

  it('refills over idle time, but never beyond the burst', () => {
    let now = 0;
    const bucket = new TokenBucket({ rate: 10, burst: 2, now: () => now });
    expect([bucket.reserve(), bucket.reserve(), bucket.reserve()].map(Math.round)).toEqual([0, 0, 100]);
    now = 10_000;
    expect([bucket.reserve(), bucket.reserve(), bucket.reserve()].map(Math.round)).toEqual([0, 0, 100]);
  });

  it('tryTake: takes what is there now, never a debt, and refills at the rate (the server side)', () => {
    let now = 0;
    const bucket = new TokenBucket({ rate: 4, burst: 4, now: () => now });
    expect(Array.from({ length: 6 }, () => bucket.tryTake())).toEqual([true, true, true, true, false, false]);
    expect(bucket.available).toBe(0);
    now = 250; // one token's worth at 4/s
    expect([bucket.tryTake(), bucket.tryTake()]).toEqual([true, false]);
    now = 10_000;
    expect(bucket.available).toBe(4);
  });

  it('a refund gives a token back; a reservation ahead shows as a negative balance', () => {
    const bucket = new TokenBucket({ rate: 10, burst: 1, now: () => 0 });
    expect(bucket.reserve()).toBe(0);
    expect(Math.round(bucket.reserve())).toBe(100);
    expect(bucket.available).toBe(-1);
    bucket.refund();
    expect(bucket.available).toBe(0);
    expect(bucket.tryTake()).toBe(false);
  });

  it('is never limited at Infinity', () => {
    const unlimited = new TokenBucket({ rate: Number.POSITIVE_INFINITY, now: () => 0 });
    expect(Array.from({ length: 1_000 }, () => unlimited.reserve()).every((w) => w === 0)).toBe(true);
    expect(Array.from({ length: 1_000 }, () => unlimited.tryTake()).every(Boolean)).toBe(true);
  });

  it('rejects a rate that is not positive and a burst below 1', () => {
    for (const rate of [0, -1, Number.NaN]) expect(() => new TokenBucket({ rate })).toThrow(expect.objectContaining({ code: 'InvalidOption' }));
    for (const burst of [0, 0.5, Number.POSITIVE_INFINITY]) expect(() => new TokenBucket({ rate: 1, burst })).toThrow(expect.objectContaining({ code: 'InvalidOption' }));
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

/** A send whose completion the test decides, announcing when it starts. */
function controlledSends(): { send: () => Promise<void>; started: (n: number) => Promise<void>; finishOne: () => void; readonly inFlight: number } {
  const pending: (() => void)[] = [];
  let startedCount = 0;
  const waiters: { n: number; resolve: () => void }[] = [];
  return {
    send: () =>
      new Promise<void>((resolve) => {
        startedCount += 1;
        pending.push(resolve);
        for (const w of waiters.filter((x) => x.n <= startedCount)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve();
        }
      }),
    started: (n) => (startedCount >= n ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ n, resolve }))),
    finishOne: () => pending.shift()?.(),
    get inFlight() {
      return pending.length;
    },
  };
}

describe('RateLimiter', () => {
  it('never has more than `concurrency` sends in flight; a finished one lets the next in', async () => {
    const limiter = new RateLimiter({ qps: Number.POSITIVE_INFINITY, concurrency: 3 });
    const sends = controlledSends();
    const all = Promise.all(Array.from({ length: 7 }, () => limiter.run('op', undefined, sends.send)));
    await sends.started(3);
    // Each of the 7 settles only when the test finishes one, so at most 3 can have started by now.
    expect([sends.inFlight, limiter.active]).toEqual([3, 3]);
    for (let done = 0; done < 7; done++) {
      await sends.started(Math.min(7, 3 + done));
      expect(sends.inFlight).toBeLessThanOrEqual(3);
      sends.finishOne();
    }
    await all;
    expect(limiter.active).toBe(0);
  });

  it.each([500, 200, 37, 2, 1])('never puts more than qps (%d) requests in any one-second window: the service counts a sliding window', (qps) => {
    // A caller that asks as fast as it may: each request goes at the time the bucket names. Then slide a one-second
    // window over the send times, starting at every send.
    const pace = windowSafePace(qps);
    let now = 0;
    const bucket = new TokenBucket({ ...pace, now: () => now });
    const sends: number[] = [];
    for (let i = 0; i < qps * 5 + 10; i++) sends.push(now + bucket.reserve());
    let most = 0;
    for (let i = 0, j = 0; i < sends.length; i++) {
      while (j < sends.length && (sends[j] as number) < (sends[i] as number) + 1000) j++;
      most = Math.max(most, j - i);
    }
    expect(most).toBeLessThanOrEqual(qps);
    // And not far below it: the long-run pace keeps at least half the limit (about 95% from 20/s up).
    expect(pace.rate).toBeGreaterThanOrEqual(qps >= 20 ? qps * 0.9 : qps / 2);
    now = 0;
  });

  it('keeps the limits it was made with; the defaults are the documented 500/s and 64 in flight', () => {
    expect(new RateLimiter({ qps: 5 }).toJSON()).toEqual({ qps: 5, concurrency: 64 });
    expect(new RateLimiter().toJSON()).toEqual({ qps: 500, concurrency: 64 });
  });

  it('gives a token back when its caller gives up while waiting', async () => {
    const limiter = new RateLimiter({ qps: 0.001, concurrency: 5 }, () => 0);
    await limiter.run('first', undefined, async () => undefined); // the one token of the burst
    const controller = new AbortController();
    const waiting = limiter.run('second', controller.signal, async () => 'sent');
    controller.abort();
    await expect(waiting).rejects.toMatchObject({ code: 'Aborted', message: expect.stringContaining('second') });
    expect(limiter.active).toBe(0);
  });

  it('rejects bad limits naming the option', () => {
    expect(() => new RateLimiter({ qps: 0 })).toThrow(expect.objectContaining({ code: 'InvalidOption', message: expect.stringContaining('qps') }));
    expect(() => new RateLimiter({ concurrency: 1.5 })).toThrow(expect.objectContaining({ code: 'InvalidOption', message: expect.stringContaining('concurrency') }));
  });
});

describe('which limiter a client uses', () => {
  const keys = { env: {}, endpoint: 'http://127.0.0.1:1', accessKeySecret: 'secret-0123456789' };

  it('without limiter, qps or concurrency: the account default, shared per AccessKeyId whatever the endpoint, at 500/s', () => {
    const a = new OpenApiClient({ ...keys, accessKeyId: 'LTAI-default-a' });
    const b = new OpenApiClient({ ...keys, endpoint: 'http://127.0.0.1:2', accessKeyId: 'LTAI-default-a' });
    const other = new OpenApiClient({ ...keys, accessKeyId: 'LTAI-default-b' });
    expect(b.limiter).toBe(a.limiter);
    expect(a.limiter).toBe(accountDefaultLimiter('LTAI-default-a'));
    expect(other.limiter).not.toBe(a.limiter);
    expect(a.limiter.toJSON()).toEqual({ qps: 500, concurrency: 64 });
  });

  it('a Provisioner({ qps: 5 }) gets its own limiter and never slows later clients of the account', async () => {
    const accessKeyId = 'LTAI-slow-provisioner';
    const slow = new Provisioner({ ...keys, accessKeyId, instanceId: 'mqtt-cn-test', qps: 5, concurrency: 3 });
    const later = new OpenApiClient({ ...keys, accessKeyId });
    expect(later.limiter.toJSON()).toEqual({ qps: 500, concurrency: 64 });
    expect(accountDefaultLimiter(accessKeyId).toJSON()).toEqual({ qps: 500, concurrency: 64 });
    // A fleet run without limits uses the default; one with limits its own; neither touches the other.
    await provisionFleet([], { ...keys, accessKeyId, instanceId: 'mqtt-cn-test' });
    await provisionFleet([], { ...keys, accessKeyId, instanceId: 'mqtt-cn-test', qps: 1 });
    expect(accountDefaultLimiter(accessKeyId).toJSON()).toEqual({ qps: 500, concurrency: 64 });
    slow.close();
    later.close();
  });

  it('a passed limiter is used as it is; together with qps or concurrency it is refused', () => {
    const limiter = new RateLimiter({ qps: 7, concurrency: 2 });
    const c = new OpenApiClient({ ...keys, accessKeyId: 'LTAI-passed', limiter });
    expect(c.limiter).toBe(limiter);
    for (const extra of [{ qps: 5 }, { concurrency: 1 }]) {
      expect(() => new OpenApiClient({ ...keys, accessKeyId: 'LTAI-passed', limiter, ...extra })).toThrow(
        expect.objectContaining({ code: 'InvalidOption', message: expect.stringContaining('limiter') }),
      );
    }
    expect(() => new OpenApiClient({ ...keys, accessKeyId: 'LTAI-passed', limiter: { qps: 5 } as unknown as RateLimiter })).toThrow(
      expect.objectContaining({ code: 'InvalidOption', message: expect.stringContaining('RateLimiter') }),
    );
  });

  it('one limiter passed to two clients caps their requests in flight together', async () => {
    const held: (() => void)[] = [];
    let inFlight = 0;
    let most = 0;
    const limit = 2;
    const server = await startHttpServer((_req, res) => {
      inFlight += 1;
      most = Math.max(most, inFlight);
      held.push(() => {
        inFlight -= 1;
        sendJson(res, 400, { RequestId: 'R', Code: 'DeviceCredentialNotFound', Message: 'x' });
      });
      // Answer only once the limiter's whole cap is in flight: a third request would arrive before any answer.
      if (held.length === limit) for (const answer of held.splice(0)) answer();
    });
    const limiter = new RateLimiter({ qps: Number.POSITIVE_INFINITY, concurrency: limit });
    const shared = { ...keys, endpoint: server.url, accessKeyId: 'LTAI-paced', limiter };
    const clients = [new OpenApiClient(shared), new OpenApiClient(shared)];
    await Promise.all(
      Array.from({ length: 20 }, (_, i) => clients[i % 2]?.getDeviceCredential('mqtt-cn-test', `GID_test@@@dev-${i}`).catch(() => undefined)),
    );
    expect(server.requests).toBe(20);
    expect(most).toBe(limit);
    for (const c of clients) c.close();
  });
});

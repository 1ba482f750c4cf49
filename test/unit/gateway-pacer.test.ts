/**
 * The gateway's connect pacer on a fake clock: the slots it gives are its schedule, so the pace is asserted exactly,
 * without a wall-clock threshold.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ConnectPacer, MAX_CATCH_UP_MS } from '../../src/gateway/pacer.js';

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });
});
afterEach(() => {
  vi.useRealTimers();
});

/** Let `count` callers wait, and record when (fake ms since the start) each is let through, in their order. */
function queue(pacer: ConnectPacer, count: number, signal?: (i: number) => AbortSignal | undefined): { times: (number | undefined)[]; order: number[]; errors: string[] } {
  const start = performance.now();
  const times: (number | undefined)[] = Array.from({ length: count }, () => undefined);
  const order: number[] = [];
  const errors: string[] = [];
  for (let i = 0; i < count; i++) {
    pacer.wait(signal?.(i)).then(
      () => {
        times[i] = performance.now() - start;
        order.push(i);
      },
      (error: { code: string }) => errors.push(`${i}:${error.code}`),
    );
  }
  return { times, order, errors };
}

describe('ConnectPacer', () => {
  it('lets one through at once, then one per 1/rate seconds, in order', async () => {
    const pacer = new ConnectPacer({ ratePerSecond: 10 });
    const run = queue(pacer, 25);
    await vi.advanceTimersByTimeAsync(5000);
    expect(run.order).toEqual([...Array(25).keys()]);
    expect(run.times).toEqual([...Array(25).keys()].map((k) => k * 100));
    expect(pacer.granted).toBe(25);
    expect(pacer.waiting).toBe(0);
  });

  it('a caller arriving before the next slot waits for it; one arriving after it, with nobody waiting, goes at once', async () => {
    const pacer = new ConnectPacer({ ratePerSecond: 10 });
    const first = queue(pacer, 1);
    await vi.advanceTimersByTimeAsync(50);
    const early = queue(pacer, 1); // at 50 ms: the next slot is at 100 ms
    await vi.advanceTimersByTimeAsync(100);
    expect([first.times[0], early.times[0]]).toEqual([0, 50]); // 50 ms after it arrived: at 100 ms
    const late = queue(pacer, 2); // at 150 ms: the slot of 200 ms is ahead, so the first waits for it
    await vi.advanceTimersByTimeAsync(500);
    expect(late.times).toEqual([50, 150]);
    await vi.advanceTimersByTimeAsync(1000);
    const afterIdle = queue(pacer, 2); // long after the last slot: a new run
    await vi.advanceTimersByTimeAsync(500);
    expect(afterIdle.times).toEqual([0, 100]);
  });

  it('catches up a timer late by up to MAX_CATCH_UP_MS; one later than that (a busy process) is forgiven, not sent as a burst', async () => {
    let stall = 0;
    const pacer = new ConnectPacer({ ratePerSecond: 100, now: () => performance.now() + stall });
    const run = queue(pacer, 200);
    await vi.advanceTimersByTimeAsync(95); // slots 0..9 at 0, 10, …, 90 ms
    expect(run.order.length).toBe(10);
    expect(MAX_CATCH_UP_MS).toBe(20);
    stall = 20; // the next timer fires 20 ms late: the slots of 100, 110 and 120 ms are due, and go together
    await vi.advanceTimersByTimeAsync(10);
    expect(run.order.length).toBe(13);
    stall = 520; // 500 ms more: 50 of them would be due; only MAX_CATCH_UP_MS (2 more slots) is caught up
    await vi.advanceTimersByTimeAsync(10);
    expect(run.order.length).toBe(16);
    // From there on, the pace again: one per 10 ms.
    await vi.advanceTimersByTimeAsync(100);
    expect(run.order.length).toBe(26);
  });

  it('saves up no burst while idle: after a quiet spell the next run starts afresh at the same pace', async () => {
    const pacer = new ConnectPacer({ ratePerSecond: 4 });
    const first = queue(pacer, 3);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(first.times).toEqual([0, 250, 500]);
    const second = queue(pacer, 4);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(second.times).toEqual([0, 250, 500, 750]);
  });

  it('a caller whose signal fires leaves the queue and gives its slot to the next', async () => {
    const pacer = new ConnectPacer({ ratePerSecond: 10 });
    const controllers = Array.from({ length: 5 }, () => new AbortController());
    const run = queue(pacer, 5, (i) => controllers[i]?.signal);
    controllers[1]?.abort();
    controllers[2]?.abort();
    expect(pacer.waiting).toBe(2); // 0 went at once; 1 and 2 gave up
    await vi.advanceTimersByTimeAsync(1000);
    expect(pacer.waiting).toBe(0);
    expect(run.errors).toEqual(['1:Aborted', '2:Aborted']);
    expect(run.order).toEqual([0, 3, 4]);
    expect(run.times[3]).toBe(100);
    expect(run.times[4]).toBe(200);
  });

  it('jitter holds each caller a further [0, jitterMs) after its slot, from the random source', async () => {
    const draws = [0, 0.5, 0.999];
    const pacer = new ConnectPacer({ ratePerSecond: 10, jitterMs: 1000, random: () => draws.shift() ?? 0 });
    const run = queue(pacer, 3);
    await vi.advanceTimersByTimeAsync(5000);
    expect(run.times).toEqual([0, 100 + 500, 200 + 999]);
  });

  it('Infinity lets everyone through at once; close() rejects those waiting; bad options are refused', async () => {
    const free = new ConnectPacer({ ratePerSecond: Infinity });
    const all = queue(free, 100);
    await vi.advanceTimersByTimeAsync(0);
    expect(all.order.length).toBe(100);
    const pacer = new ConnectPacer({ ratePerSecond: 1 });
    const run = queue(pacer, 3);
    await vi.advanceTimersByTimeAsync(0);
    pacer.close();
    await vi.advanceTimersByTimeAsync(0);
    expect(run.order).toEqual([0]);
    expect(run.errors).toEqual(['1:Aborted', '2:Aborted']);
    await expect(pacer.wait()).rejects.toMatchObject({ code: 'Aborted' });
    for (const ratePerSecond of [0, -1, Number.NaN]) expect(() => new ConnectPacer({ ratePerSecond })).toThrow(/connectRate/);
    expect(() => new ConnectPacer({ ratePerSecond: 1, jitterMs: -1 })).toThrow(/connectJitterMs/);
  });
});

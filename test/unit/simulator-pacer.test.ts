import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/simulator/clock.js';
import { runPaced, startOffsetMs } from '../../src/simulator/pacer.js';

/** A deterministic [0, 1) sequence, so jitter is exercised without flakiness. */
function seeded(seed = 42): () => number {
  let state = seed;
  return () => {
    state = (state * 1_103_515_245 + 12_345) % 2 ** 31;
    return state / 2 ** 31;
  };
}

/** Run the pacer on a manual clock, advancing in small steps; returns each start's time. */
async function paceOnManualClock(count: number, rate: number, maxInFlight?: number, settleAfterMs?: number): Promise<number[]> {
  const clock = new ManualClock();
  const times: number[] = [];
  let inFlight = 0;
  let peak = 0;
  const done = runPaced(count, { rate, clock, random: seeded(), ...(maxInFlight === undefined ? {} : { maxInFlight }) }, (k) => {
    times[k] = clock.now();
    if (settleAfterMs === undefined) return;
    inFlight += 1;
    peak = Math.max(peak, inFlight);
    return new Promise<void>((resolve) => {
      clock.setTimeout(() => {
        inFlight -= 1;
        resolve();
      }, settleAfterMs);
    });
  });
  let finished = false;
  void done.then(() => {
    finished = true;
  });
  for (let step = 0; step < 1_000_000 && !finished; step++) {
    clock.advance(1);
    // Let settled promises run their callbacks before time moves on.
    await Promise.resolve();
    await Promise.resolve();
  }
  expect(await done).toBe(count);
  if (maxInFlight !== undefined) expect(peak).toBeLessThanOrEqual(maxInFlight);
  return times;
}

describe('startOffsetMs', () => {
  it('puts start k inside its own slot [k/rate, (k+1)/rate)', () => {
    for (const u of [0, 0.5, 0.999]) {
      expect(startOffsetMs(10, 100, () => u)).toBeCloseTo((10 + u) * 10, 9);
    }
  });

  it('starts everything at once for rate 0', () => {
    expect(startOffsetMs(1234, 0, () => 0.7)).toBe(0);
  });
});

describe('runPaced', () => {
  it('holds the rate within 10% in every one-second window', async () => {
    const rate = 50;
    const times = await paceOnManualClock(500, rate);
    const perSecond = new Map<number, number>();
    for (const t of times) perSecond.set(Math.floor(t / 1_000), (perSecond.get(Math.floor(t / 1_000)) ?? 0) + 1);
    expect([...perSecond.keys()].sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    for (const n of perSecond.values()) {
      expect(Math.abs(n - rate)).toBeLessThanOrEqual(rate * 0.1);
    }
  });

  it('holds the rate in sliding windows too (jitter never bunches more than one slot)', async () => {
    const rate = 20;
    const times = await paceOnManualClock(200, rate);
    for (let from = 0; from + 1_000 <= 10_000; from += 137) {
      const n = times.filter((t) => t >= from && t < from + 1_000).length;
      expect(Math.abs(n - rate)).toBeLessThanOrEqual(2);
    }
  });

  it('starts in index order with jitter (not on a fixed grid)', async () => {
    const times = await paceOnManualClock(100, 10);
    expect(times).toEqual([...times].sort((a, b) => a - b));
    const offsets = new Set(times.map((t, k) => Math.round(t - k * 100)));
    expect(offsets.size).toBeGreaterThan(10);
  });

  it('never has more than maxInFlight unsettled starts', async () => {
    const times = await paceOnManualClock(60, 0, 7, 25);
    // Rate 0 with 7 at a time, each taking 25 ms: batches of 7 every 25 ms.
    expect(times.filter((t) => t === 0)).toHaveLength(7);
    expect(Math.max(...times)).toBeGreaterThanOrEqual(Math.floor(60 / 7) * 25);
  });

  it('stops starting new ones when the signal aborts, and resolves with how many started', async () => {
    const clock = new ManualClock();
    const controller = new AbortController();
    let started = 0;
    const done = runPaced(100, { rate: 10, clock, random: () => 0.5, signal: controller.signal }, () => {
      started += 1;
    });
    clock.advance(1_000);
    controller.abort();
    expect(await done).toBe(started);
    expect(started).toBe(10);
    expect(clock.pending).toBe(0);
  });

  it('resolves at once for zero starts', async () => {
    expect(await runPaced(0, { rate: 5, clock: new ManualClock(), random: Math.random }, () => undefined)).toBe(0);
  });
});

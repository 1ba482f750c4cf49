import { describe, expect, it } from 'vitest';
import { backoffCeiling, fullJitterDelay, sleep } from '../../src/util/backoff.js';

describe('full-jitter backoff', () => {
  const opts = { minDelayMs: 100, maxDelayMs: 5_000 };

  it('doubles the ceiling per attempt up to the cap', () => {
    expect([0, 1, 2, 3, 4, 5, 6, 100].map((a) => backoffCeiling(a, opts))).toEqual([100, 200, 400, 800, 1600, 3200, 5000, 5000]);
  });

  it('spans [0, ceiling) with the random source', () => {
    expect(fullJitterDelay(3, opts, () => 0)).toBe(0);
    expect(fullJitterDelay(3, opts, () => 0.5)).toBe(400);
    expect(fullJitterDelay(3, opts, () => 0.999999)).toBe(799);
  });

  it('is spread, not lockstep, over many draws', () => {
    const draws = Array.from({ length: 2000 }, () => fullJitterDelay(10, opts));
    const buckets = new Array(10).fill(0) as number[];
    for (const d of draws) buckets[Math.floor(d / 500)]! += 1;
    // Uniform over [0, 5000): each tenth holds about 200 of 2000 draws.
    for (const b of buckets) expect(b).toBeGreaterThan(100);
  });

  it('sleep is abortable', async () => {
    const controller = new AbortController();
    const p = sleep(60_000, controller.signal);
    controller.abort(new Error('stop'));
    await expect(p).rejects.toThrow('stop');
  });
});

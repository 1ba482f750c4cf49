/**
 * The simulator's connect pacer: `count` starts spread over fixed slots of `1 / rate` s, each at a random point of
 * its slot, with at most `maxInFlight` unsettled.
 *
 * Not one with the provisioner's RateLimiter (`provisioner/rate-limit.ts`, over `util/token-bucket.ts`), on purpose:
 * - the pacer knows its whole schedule in advance (start k in slot k, jittered), runs it on the simulator's Clock (a
 *   ManualClock in tests, so rates are checked exactly) with one timer for 10,000 devices, and counts a start as in
 *   flight until its promise settles;
 * - the RateLimiter admits calls that arrive from anywhere (several clients of one account share it) in first-come
 *   order, each waiting on its own abortable timer, with a burst allowance that matches the service's own bucket.
 * A token bucket lets a burst through and then drips, which puts devices in lockstep (what the jittered slots are
 * for); a fixed schedule cannot serve callers it does not know. What they share is small and already shared: the
 * clock-free maths lives in each (`startOffsetMs`, `TokenBucket`), the abortable sleep in `util/`.
 */
import type { Clock } from './clock.js';

/** How {@link runPaced} spaces the starts. */
export interface PaceOptions {
  /** Starts per second; 0 = all at once (still bounded by `maxInFlight`). */
  rate: number;
  /** Starts not yet settled at once. @default Infinity */
  maxInFlight?: number;
  clock: Clock;
  /** Randomness in [0, 1) for the jitter. */
  random: () => number;
  /** Stops starting new ones; those in flight are still awaited. */
  signal?: AbortSignal;
}

/**
 * When start `k` is due, in ms after the pacing began: a random point inside its own slot
 * `[k / rate, (k + 1) / rate)` seconds. Jitter inside fixed slots keeps devices out of lockstep while any window of
 * W seconds still holds `rate × W` starts, give or take one.
 */
export function startOffsetMs(k: number, rate: number, random: () => number): number {
  if (rate <= 0) return 0;
  return ((k + random()) / rate) * 1_000;
}

/**
 * Call `start(0)` … `start(count - 1)` at the paced times, never with more than `maxInFlight` unsettled
 * (a start that returns nothing settles at once). One timer at a time, however many starts.
 * Resolves with the number started once every started one has settled.
 */
export function runPaced(count: number, options: PaceOptions, start: (k: number) => void | Promise<unknown>): Promise<number> {
  const { rate, clock, random, signal } = options;
  const maxInFlight = options.maxInFlight ?? Number.POSITIVE_INFINITY;
  return new Promise<number>((resolve) => {
    const origin = clock.now();
    let next = 0;
    let inFlight = 0;
    let timer: unknown;
    let nextDue = count > 0 ? origin + startOffsetMs(0, rate, random) : 0;
    let finished = false;

    const stopped = (): boolean => signal?.aborted === true || next >= count;
    const maybeFinish = (): void => {
      if (!finished && inFlight === 0 && stopped()) {
        finished = true;
        if (timer !== undefined) clock.clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        resolve(next);
      }
    };
    const settle = (): void => {
      inFlight -= 1;
      maybeFinish();
      arm();
    };
    const arm = (): void => {
      if (finished || timer !== undefined || stopped() || inFlight >= maxInFlight) return;
      timer = clock.setTimeout(pump, Math.max(0, nextDue - clock.now()));
    };
    function pump(): void {
      timer = undefined;
      const now = clock.now();
      while (!stopped() && inFlight < maxInFlight && nextDue <= now) {
        const k = next++;
        nextDue = next < count ? origin + startOffsetMs(next, rate, random) : Number.POSITIVE_INFINITY;
        inFlight += 1;
        let result: void | Promise<unknown>;
        try {
          result = start(k);
        } catch {
          result = undefined;
        }
        if (result instanceof Promise) result.then(settle, settle);
        else inFlight -= 1;
      }
      maybeFinish();
      arm();
    }
    function onAbort(): void {
      maybeFinish();
    }
    signal?.addEventListener('abort', onAbort, { once: true });
    pump();
  });
}

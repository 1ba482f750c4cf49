/**
 * Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"):
 * the delay before retry `attempt` (0-based) is uniform in [0, min(maxDelayMs, minDelayMs * 2^attempt)].
 * Full jitter spreads a fleet that failed together over the whole window, so it does not retry in lockstep.
 */
export interface BackoffOptions {
  /** Ceiling of the first delay. @default 1000 */
  minDelayMs: number;
  /** Largest delay. @default 60000 */
  maxDelayMs: number;
}

/** Upper bound of the delay for `attempt`: min(max, min * 2^attempt). */
export function backoffCeiling(attempt: number, options: BackoffOptions): number {
  // The exponent is capped: 2 ** attempt overflows to Infinity for huge attempts, and 0 * Infinity is NaN.
  return Math.min(options.maxDelayMs, options.minDelayMs * 2 ** Math.max(0, Math.min(attempt, 40)));
}

/** The delay before retry `attempt`, in ms: full jitter over [0, ceiling]. `random` returns [0, 1). */
export function fullJitterDelay(attempt: number, options: BackoffOptions, random: () => number = Math.random): number {
  return Math.floor(random() * backoffCeiling(attempt, options));
}

/** Resolve after `ms`, or reject with the signal's reason when it aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** The longest delay setTimeout takes (2^31 - 1 ms, about 24.8 days); a longer one fires at once. */
export const MAX_TIMER_MS = 2_147_483_647;

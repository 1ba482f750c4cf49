import { performance } from 'node:perf_hooks';
import { optionChecks } from './option-checks.js';

const check = optionChecks();

/** Options of a {@link TokenBucket}. */
export interface TokenBucketOptions {
  /** Tokens added per second: positive, or `Infinity` for no limit. */
  rate: number;
  /** Most tokens held, and the tokens held at the start (at least 1). @default max(1, ceil(rate / 20)) */
  burst?: number;
  /** Monotonic clock in ms. @default performance.now */
  now?: () => number;
}

/**
 * The one token bucket of the project, for both sides of a rate limit:
 * - a client that must not exceed a rate calls {@link TokenBucket.reserve}: it takes a token now, borrowing from
 *   the future when none is left, and learns how long to wait before using it. Borrowing keeps callers in
 *   first-come order without a queue or a timer of its own.
 * - a server that sheds load calls {@link TokenBucket.tryTake}: a token if one is there now, never a debt.
 *
 * Pure apart from its clock: pass `now` and every answer is exact.
 */
export class TokenBucket {
  readonly rate: number;
  readonly burst: number;
  readonly #now: () => number;
  #tokens: number;
  #at: number;

  /** @throws ValidationError `InvalidOption` for a rate that is not positive or a burst below 1. */
  constructor(options: TokenBucketOptions) {
    const rate = check.positive('rate', options.rate, 'tokens per second', true);
    const burst = check.number('burst', options.burst ?? defaultBurst(rate), { min: 1 });
    this.rate = rate;
    this.burst = burst;
    this.#now = options.now ?? (() => performance.now());
    this.#tokens = burst;
    this.#at = this.#now();
  }

  /** Tokens there now; negative while reservations are ahead of the rate. */
  get available(): number {
    if (this.rate === Number.POSITIVE_INFINITY) return this.burst;
    this.#refill();
    return this.#tokens;
  }

  /** Take a token if one is there now (non-blocking); false leaves the bucket as it was. */
  tryTake(): boolean {
    if (this.rate === Number.POSITIVE_INFINITY) return true;
    this.#refill();
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }

  /** Take a token now, borrowing if needed; returns the ms to wait before using it (0 when one was there). */
  reserve(): number {
    if (this.rate === Number.POSITIVE_INFINITY) return 0;
    this.#refill();
    this.#tokens -= 1;
    return this.#tokens >= 0 ? 0 : (-this.#tokens / this.rate) * 1000;
  }

  /** Give back a reserved token that was not used (its caller gave up while waiting). */
  refund(): void {
    if (this.rate === Number.POSITIVE_INFINITY) return;
    this.#refill();
    this.#tokens = Math.min(this.burst, this.#tokens + 1);
  }

  #refill(): void {
    const now = this.#now();
    // A clock that went backwards adds nothing (performance.now never does; an injected one might).
    const elapsed = Math.max(0, now - this.#at);
    this.#tokens = Math.min(this.burst, this.#tokens + (elapsed / 1000) * this.rate);
    this.#at = now;
  }
}

/**
 * 1/20 s of tokens: a client that bursts a full second's worth drains the service's own bucket, and then any jitter
 * on the network pushes requests over the account limit.
 */
function defaultBurst(rate: number): number {
  return rate === Number.POSITIVE_INFINITY ? 1 : Math.max(1, Math.ceil(rate / 20));
}

import { performance } from 'node:perf_hooks';
import { ValidationError } from '../errors.js';
import { sleep } from '../util/backoff.js';
import { abortError } from './abort.js';

/** The documented limit of RegisterDeviceCredential and its siblings: calls per second per account. */
export const DEFAULT_API_QPS = 500;
/** Default cap on OpenAPI requests in flight at once per account. */
export const DEFAULT_API_CONCURRENCY = 64;

/**
 * A token bucket that hands out reservations: `reserve()` takes a token now (possibly borrowing from the future)
 * and says how long to wait before using it. Borrowing keeps callers in first-come order without a queue or a
 * timer of its own, and makes the rate exact under an injected clock.
 *
 * The burst is small on purpose (1/20 s of tokens by default): a client that bursts a full second's worth drains
 * the service's own bucket, and then any jitter on the network pushes requests over the account limit.
 */
export class TokenBucket {
  readonly #now: () => number;
  #rate: number;
  #burst: number;
  #tokens: number;
  #at: number;

  /**
   * @param ratePerSecond - Tokens added per second (positive, may be Infinity).
   * @param burst - Most tokens held; @default max(1, ceil(rate / 20))
   * @param now - Monotonic clock in ms. @default performance.now
   */
  constructor(ratePerSecond: number, burst?: number, now: () => number = () => performance.now()) {
    this.#now = now;
    this.#rate = checkRate(ratePerSecond);
    this.#burst = burst ?? defaultBurst(this.#rate);
    this.#tokens = this.#burst;
    this.#at = now();
  }

  /** Tokens per second. */
  get rate(): number {
    return this.#rate;
  }

  /** Change the rate (and the burst, to the new rate's default unless given); reservations already made stand. */
  setRate(ratePerSecond: number, burst?: number): void {
    this.#refill();
    this.#rate = checkRate(ratePerSecond);
    this.#burst = burst ?? defaultBurst(this.#rate);
    this.#tokens = Math.min(this.#tokens, this.#burst);
  }

  /** Take one token; returns the ms to wait before it may be used (0 when one was there). */
  reserve(): number {
    if (this.#rate === Number.POSITIVE_INFINITY) return 0;
    this.#refill();
    this.#tokens -= 1;
    return this.#tokens >= 0 ? 0 : (-this.#tokens / this.#rate) * 1000;
  }

  /** Give back a reserved token that was not used (its caller gave up while waiting). */
  refund(): void {
    this.#tokens = Math.min(this.#burst, this.#tokens + 1);
  }

  #refill(): void {
    const now = this.#now();
    this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#at) / 1000) * this.#rate);
    this.#at = now;
  }
}

function defaultBurst(rate: number): number {
  return rate === Number.POSITIVE_INFINITY ? 1 : Math.max(1, Math.ceil(rate / 20));
}

function checkRate(rate: number): number {
  if (!(rate > 0)) throw new ValidationError('InvalidOption', `Invalid qps ${String(rate)}: expected a positive number of requests per second`);
  return rate;
}

/** A counting semaphore with a first-come queue; waiters can give up with a signal. */
export class Semaphore {
  #limit: number;
  #active = 0;
  readonly #waiting: (() => void)[] = [];

  constructor(limit: number) {
    this.#limit = checkConcurrency(limit);
  }

  /** Requests holding a slot now. */
  get active(): number {
    return this.#active;
  }

  /** Most holders at once. */
  get limit(): number {
    return this.#limit;
  }

  /** Change the limit; callers waiting are let in when it grew. */
  setLimit(limit: number): void {
    this.#limit = checkConcurrency(limit);
    this.#wake();
  }

  /** Wait for a slot; call the returned function exactly once to release it. */
  acquire(what: string, signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(abortError(what, signal));
    return new Promise((resolve, reject) => {
      const grant = (): void => {
        signal?.removeEventListener('abort', onAbort);
        this.#active += 1;
        let released = false;
        resolve(() => {
          if (released) return;
          released = true;
          this.#active -= 1;
          this.#wake();
        });
      };
      const onAbort = (): void => {
        const index = this.#waiting.indexOf(grant);
        if (index >= 0) this.#waiting.splice(index, 1);
        reject(abortError(what, signal as AbortSignal));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiting.push(grant);
      this.#wake();
    });
  }

  #wake(): void {
    while (this.#active < this.#limit && this.#waiting.length > 0) this.#waiting.shift()?.();
  }
}

function checkConcurrency(limit: number): number {
  if (!Number.isSafeInteger(limit) || limit < 1) throw new ValidationError('InvalidOption', `Invalid concurrency ${String(limit)}: expected a whole number of 1 or more`);
  return limit;
}

/**
 * Rate and concurrency limits of an account. They apply to the one limiter the account's AccessKeyId has in the
 * process, which every OpenApiClient, Provisioner and fleet run of that AccessKeyId shares; see
 * {@link accountLimiter} for how the values of several callers combine (the lowest explicit one wins).
 */
export interface RateLimitOptions {
  /**
   * Requests per second for the whole account in this process. Lowers the shared limiter's rate when below the
   * lowest given so far; never raises it. @default 500 ({@link DEFAULT_API_QPS}) when no caller gave one
   */
  qps?: number;
  /**
   * Requests in flight at once for the whole account in this process; combined like `qps` (lowest explicit wins).
   * @default 64 ({@link DEFAULT_API_CONCURRENCY}) when no caller gave one
   */
  concurrency?: number;
}

/**
 * The limiter every request of one account passes: first a concurrency slot, then a token. The slot is taken first
 * so that a request waiting for a slot does not hold a token and then fire in a burst.
 *
 * Its limits are the lowest values ever passed explicitly (to the constructor or {@link configure}); until one is,
 * the defaults (500/s, 64 in flight). Options left out change nothing, and a higher value than one already given
 * changes nothing either: every explicit value is a promise not to exceed it, and the limiter keeps all of them.
 */
export class AccountLimiter {
  readonly bucket: TokenBucket;
  readonly slots: Semaphore;
  /** Lowest qps passed explicitly so far. */
  #qps: number | undefined;
  /** Lowest concurrency passed explicitly so far. */
  #concurrency: number | undefined;

  constructor(options: RateLimitOptions = {}, now?: () => number) {
    this.bucket = new TokenBucket(options.qps ?? DEFAULT_API_QPS, undefined, now);
    this.slots = new Semaphore(options.concurrency ?? DEFAULT_API_CONCURRENCY);
    this.#qps = options.qps;
    this.#concurrency = options.concurrency;
  }

  /**
   * Apply explicitly given limits where they are lower than the lowest given so far (the defaults do not count);
   * absent or higher ones leave the limiter as it is. Reservations already made stand.
   * @throws ValidationError `InvalidOption` for a qps that is not positive or a concurrency below 1, even when it
   *   would not change anything.
   */
  configure(options: RateLimitOptions): void {
    const { qps, concurrency } = options;
    if (qps !== undefined && checkRate(qps) < (this.#qps ?? Number.POSITIVE_INFINITY)) {
      this.#qps = qps;
      this.bucket.setRate(qps);
    }
    if (concurrency !== undefined && checkConcurrency(concurrency) < (this.#concurrency ?? Number.POSITIVE_INFINITY)) {
      this.#concurrency = concurrency;
      this.slots.setLimit(concurrency);
    }
  }

  /** Run `send` once a slot and a token are free. */
  async run<T>(what: string, signal: AbortSignal | undefined, send: () => Promise<T>): Promise<T> {
    const release = await this.slots.acquire(what, signal);
    try {
      const wait = this.bucket.reserve();
      if (wait > 0) {
        try {
          await sleep(wait, signal);
        } catch {
          this.bucket.refund();
          throw abortError(what, signal as AbortSignal);
        }
      }
      return await send();
    } finally {
      release();
    }
  }
}

/** One limiter per account AccessKeyId, shared by every client in the process. */
const limiters = new Map<string, AccountLimiter>();

/**
 * The process-wide limiter of an account, one per AccessKeyId whatever the endpoint or region (the service's limit
 * is per account), created on first use. Every OpenApiClient, Provisioner and fleet run of the account shares it,
 * so several of them in one process together stay under the account's limit.
 *
 * How the limits of several callers combine: the limiter runs at the lowest `qps` (and `concurrency`) any caller
 * has passed explicitly, 500/s (64) while none has. A caller that leaves an option out never changes it (so a
 * `provisionFleet` without `qps` does not lift a `Provisioner({ qps: 5 })` to 500/s), and no caller can raise a
 * value another set lower. To go faster than an earlier caller allowed, use another process or AccessKey.
 */
export function accountLimiter(accessKeyId: string, options: RateLimitOptions = {}): AccountLimiter {
  let limiter = limiters.get(accessKeyId);
  if (!limiter) {
    limiter = new AccountLimiter(options);
    limiters.set(accessKeyId, limiter);
  } else {
    limiter.configure(options);
  }
  return limiter;
}

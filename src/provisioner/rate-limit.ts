import { performance } from 'node:perf_hooks';
import { ValidationError } from '../errors.js';
import { sleep } from '../util/backoff.js';
import { abortError } from './abort.js';

/** The documented limit of RegisterDeviceCredential and its siblings: calls per second per account. */
export const DEFAULT_API_QPS = 500;
/** Default cap on OpenAPI requests in flight at once per account and endpoint. */
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

/** Rate and concurrency limits of one account on one endpoint. */
export interface RateLimitOptions {
  /** Requests per second. @default 500 ({@link DEFAULT_API_QPS}) */
  qps?: number;
  /** Requests in flight at once. @default 64 ({@link DEFAULT_API_CONCURRENCY}) */
  concurrency?: number;
}

/**
 * The limiter every request of one account to one endpoint passes: first a concurrency slot, then a token. The
 * slot is taken first so that a request waiting for a slot does not hold a token and then fire in a burst.
 */
export class AccountLimiter {
  readonly bucket: TokenBucket;
  readonly slots: Semaphore;

  constructor(options: RateLimitOptions = {}, now?: () => number) {
    this.bucket = new TokenBucket(options.qps ?? DEFAULT_API_QPS, undefined, now);
    this.slots = new Semaphore(options.concurrency ?? DEFAULT_API_CONCURRENCY);
  }

  /** Apply explicitly given limits; absent ones stay as they are. */
  configure(options: RateLimitOptions): void {
    if (options.qps !== undefined) this.bucket.setRate(options.qps);
    if (options.concurrency !== undefined) this.slots.setLimit(options.concurrency);
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

/** One limiter per account AccessKeyId and endpoint, shared by every client in the process. */
const limiters = new Map<string, AccountLimiter>();

/**
 * The process-wide limiter of an account on an endpoint, created with the defaults on first use. Limits passed
 * here are applied to it (the last caller to pass a value sets it), so every OpenApiClient and provisioner of the
 * account shares one budget: several fleets in one process together stay under the account's limit.
 */
export function accountLimiter(accessKeyId: string, endpoint: string, options: RateLimitOptions = {}): AccountLimiter {
  // Neither part can hold a newline (the id is printable ASCII, the endpoint a normalised URL).
  const key = `${accessKeyId}\n${endpoint}`;
  let limiter = limiters.get(key);
  if (!limiter) {
    limiter = new AccountLimiter(options);
    limiters.set(key, limiter);
  } else {
    limiter.configure(options);
  }
  return limiter;
}

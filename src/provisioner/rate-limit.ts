/**
 * The client side of the OpenAPI's rate limits: a concurrency semaphore, then a token bucket at `qps`. The
 * simulator paces its connects with a scheduler of its own (`simulator/pacer.ts`); its header says why the two are
 * not one.
 */
import { ValidationError } from '../errors.js';
import { sleep } from '../util/backoff.js';
import { TokenBucket } from '../util/token-bucket.js';
import { abortError } from '../util/abort.js';
import { optionChecks } from '../util/option-checks.js';

const check = optionChecks();

/** The documented limit of RegisterDeviceCredential and its siblings: calls per second per account. */
export const DEFAULT_API_QPS = 500;
/** Default cap on OpenAPI requests in flight at once per account. */
export const DEFAULT_API_CONCURRENCY = 64;

// The semaphore lives in util/ so that the gateway (a device role module) can use it without this module.
export { Semaphore, checkConcurrency } from '../util/semaphore.js';
import { Semaphore, checkConcurrency } from '../util/semaphore.js';

/** Limits of a {@link RateLimiter}. */
export interface RateLimitOptions {
  /** Requests per second (positive; `Infinity` for none). @default 500 ({@link DEFAULT_API_QPS}) */
  qps?: number;
  /** Requests in flight at once (a whole number of 1 or more). @default 64 ({@link DEFAULT_API_CONCURRENCY}) */
  concurrency?: number;
}

/**
 * Paces OpenAPI requests: every request first takes a concurrency slot, then a token of a {@link TokenBucket} paced
 * so that no one-second window holds more than `qps` requests ({@link windowSafePace}). The slot is taken first so that a request waiting for a slot does not hold a token and then fire in a
 * burst. Its limits are fixed when it is made.
 *
 * Share one limiter by passing it (option `limiter` of OpenApiClient, Provisioner, provisionFleet and
 * registerAndConnect) to keep several clients together under one account limit:
 *
 * ```ts
 * const limiter = new RateLimiter({ qps: 100, concurrency: 16 });
 * const a = new Provisioner({ ...options, limiter });
 * await provisionFleet(ids, { ...options, limiter });
 * ```
 */
export class RateLimiter {
  /** Requests per second. */
  readonly qps: number;
  /** Requests in flight at once. */
  readonly concurrency: number;
  readonly #bucket: TokenBucket;
  readonly #slots: Semaphore;

  /**
   * @param now - Monotonic clock in ms, for tests. @default performance.now
   * @throws ValidationError `InvalidOption` naming `qps` or `concurrency`.
   */
  constructor(options: RateLimitOptions = {}, now?: () => number) {
    this.qps = check.positive('qps', options.qps ?? DEFAULT_API_QPS, 'requests per second', true);
    this.concurrency = options.concurrency ?? DEFAULT_API_CONCURRENCY;
    this.#bucket = new TokenBucket({ ...windowSafePace(this.qps), ...(now === undefined ? {} : { now }) });
    this.#slots = new Semaphore(this.concurrency);
  }

  /** Requests holding a slot now. */
  get active(): number {
    return this.#slots.active;
  }

  /**
   * Run `send` once a slot and a token are free; the slot is released when it settles.
   * @throws AbortedError `Aborted` (naming `what`) when `signal` fires while waiting.
   */
  async run<T>(what: string, signal: AbortSignal | undefined, send: () => Promise<T>): Promise<T> {
    const release = await this.#slots.acquire(what, signal);
    try {
      const wait = this.#bucket.reserve();
      if (wait > 0) {
        try {
          await sleep(wait, signal);
        } catch {
          this.#bucket.refund();
          throw abortError(what, signal as AbortSignal);
        }
      }
      return await send();
    } finally {
      release();
    }
  }

  toJSON(): Record<string, unknown> {
    return { qps: this.qps, concurrency: this.concurrency };
  }
}

/**
 * The bucket that keeps every one-second window at or under `qps`: the service (and the emulator, by default) counts
 * calls in any one-second window, wherever it starts, so a bucket refilling at `qps` with a burst on top would let
 * `qps + burst` through one window and be throttled. The burst (1/20 s of calls, at least 1) is taken out of the
 * rate; the long-run pace is then about 95% of `qps`, and that margin is also the margin for requests that network jitter
 * bunches up on the way. Below 2 calls per second the rate is halved instead (a burst of 1 is the least there is).
 */
export function windowSafePace(qps: number): { rate: number; burst: number } {
  if (qps === Number.POSITIVE_INFINITY) return { rate: qps, burst: 1 };
  const burst = Math.max(1, Math.ceil(qps / 20));
  return { rate: Math.max(qps - burst, qps / 2), burst };
}

/** The default limiter of each account AccessKeyId in this process. */
const accountDefaults = new Map<string, RateLimiter>();

/**
 * The limiter a client without `limiter`, `qps` or `concurrency` uses: one per account AccessKeyId in the process
 * (the service's limit is per account, whatever the endpoint), at the documented 500 calls/s and 64 in flight.
 * No option ever changes it: a client that wants other limits gets its own limiter, or is handed a shared one.
 */
export function accountDefaultLimiter(accessKeyId: string): RateLimiter {
  let limiter = accountDefaults.get(accessKeyId);
  if (!limiter) {
    limiter = new RateLimiter();
    accountDefaults.set(accessKeyId, limiter);
  }
  return limiter;
}

/** Options that choose a client's limiter: a shared one, or limits of its own. */
export interface LimiterOptions extends RateLimitOptions {
  /**
   * The limiter every request of the client passes, shared with whoever else it is given to. Not together with
   * `qps` or `concurrency` (set those on the limiter).
   * @default `qps`/`concurrency` given: a limiter of the client's own with those limits; neither given: the
   *   account's default limiter, shared by every such client of the AccessKeyId in the process (500/s, 64 in flight)
   */
  limiter?: RateLimiter;
}

/**
 * The limiter of a client of `accessKeyId`, per {@link LimiterOptions}.
 * @throws ValidationError `InvalidOption` for `limiter` together with `qps`/`concurrency`, a `limiter` that is not
 *   a RateLimiter, or a bad `qps`/`concurrency`.
 */
export function resolveLimiter(options: LimiterOptions, accessKeyId: string): RateLimiter {
  const { limiter, qps, concurrency } = options;
  if (limiter !== undefined) {
    if (!(limiter instanceof RateLimiter)) throw check.invalid('limiter', 'a RateLimiter (new RateLimiter({ qps, concurrency }))', limiter);
    if (qps !== undefined || concurrency !== undefined) {
      throw new ValidationError('InvalidOption', 'Pass either limiter or qps/concurrency, not both: set the limits on the RateLimiter you share');
    }
    return limiter;
  }
  if (qps === undefined && concurrency === undefined) return accountDefaultLimiter(accessKeyId);
  return new RateLimiter({ ...(qps === undefined ? {} : { qps }), ...(concurrency === undefined ? {} : { concurrency }) });
}

import { ApiError, NetworkError, type RetryClass } from '../errors.js';
import { fullJitterDelay, sleep } from '../util/backoff.js';
import { abortError } from '../util/abort.js';
import { optionChecks } from '../util/option-checks.js';

const check = optionChecks();

export type { RetryClass } from '../errors.js';

/**
 * Actions that read only, so sending them twice is harmless even when the first one may have been applied.
 * RegisterDeviceCredential is deliberately absent: where the latest registration wins, repeating one whose answer
 * was lost rotates a credential someone may already hold. The provisioner reconciles such a Register with a Get.
 */
export const IDEMPOTENT_ACTIONS: ReadonlySet<string> = new Set([
  'GetDeviceCredential',
  'ListDeviceCredentialClientId',
  'QueryToken',
  'QuerySessionByClientId',
  'BatchQuerySessionByClientIds',
]);

/**
 * The {@link RetryClass} of anything a call can throw, read from the one classification in errors.ts (the catalogs
 * and `apiErrorInfo`): API errors and network failures carry theirs; everything else (aborts, bad input, store
 * failures, foreign errors) is `fatal`.
 */
export function classifyFailure(error: unknown): RetryClass {
  if (error instanceof ApiError || error instanceof NetworkError) return error.retryClass;
  return 'fatal';
}

/** Whether a failure of `action` may be retried: every retryable class, except `unknown-outcome` for non-idempotent actions. */
export function isRetryableFailure(error: unknown, action: string): boolean {
  const kind = classifyFailure(error);
  if (kind === 'fatal') return false;
  return kind !== 'unknown-outcome' || IDEMPOTENT_ACTIONS.has(action);
}

/**
 * The remedy of an `unknown-outcome` failure of an action that is not in {@link IDEMPOTENT_ACTIONS}: such an error
 * is thrown with `retryable: false` and this remedy, because sending the request again blindly may apply it twice
 * (a second Register or Refresh rotates the credential a device may already hold).
 */
export function unknownOutcomeRemedy(action: string): string {
  switch (action) {
    case 'RegisterDeviceCredential':
    case 'RefreshDeviceCredential':
      return 'The outcome is unknown: check with GetDeviceCredential before registering (or refreshing) again; a second Register may rotate the credential.';
    case 'UnRegisterDeviceCredential':
      return 'The outcome is unknown: check with GetDeviceCredential whether the credential still exists before unregistering again.';
    default:
      return `The outcome is unknown: ${action} may have been applied; check the current state before sending it again.`;
  }
}

/** How failed OpenAPI calls are retried: exponential backoff with full jitter, bounded in attempts and time. */
export interface RetryOptions {
  /** Attempts in all, the first included; 1 means no retries. @default 8 */
  maxAttempts?: number;
  /** Ceiling of the first backoff delay, ms. @default 100 */
  minDelayMs?: number;
  /** Largest backoff delay, ms. @default 10000 */
  maxDelayMs?: number;
  /** No retry starts once this long has passed since the first attempt (or would have passed after its delay), ms. @default 60000 */
  maxElapsedMs?: number;
  /** Random source in [0, 1) for the jitter (tests pass a fixed one). @default Math.random */
  random?: () => number;
}

/** {@link RetryOptions} with every field filled in. */
export type ResolvedRetryOptions = Required<RetryOptions>;

/** The retry policy of fleet provisioning (and of any client given `retry: {}`). */
export const DEFAULT_RETRY_OPTIONS: Readonly<ResolvedRetryOptions> = Object.freeze({
  maxAttempts: 8,
  minDelayMs: 100,
  maxDelayMs: 10_000,
  maxElapsedMs: 60_000,
  random: Math.random,
});

/** No retries: the default of a bare `OpenApiClient`, which reports `retryable` and leaves the decision to its caller. */
export const NO_RETRY: Readonly<ResolvedRetryOptions> = Object.freeze({ ...DEFAULT_RETRY_OPTIONS, maxAttempts: 1 });

/**
 * Fill in and check retry options. `false` (or absent, with `fallback` NO_RETRY) turns retries off.
 * @throws ValidationError `InvalidOption` naming the bad field.
 */
export function resolveRetryOptions(options: RetryOptions | false | undefined, fallback: Readonly<ResolvedRetryOptions> = NO_RETRY): ResolvedRetryOptions {
  if (options === false) return { ...NO_RETRY };
  if (options === undefined) return { ...fallback };
  const resolved: ResolvedRetryOptions = { ...DEFAULT_RETRY_OPTIONS, ...definedOnly(options) };
  check.integer('retry.maxAttempts', resolved.maxAttempts, { min: 1 });
  check.milliseconds('retry.minDelayMs', resolved.minDelayMs, { max: Number.POSITIVE_INFINITY });
  const min = resolved.minDelayMs;
  check.milliseconds('retry.maxDelayMs', resolved.maxDelayMs, { min, max: Number.POSITIVE_INFINITY, what: `a duration in ms of retry.minDelayMs (${min}) or more` });
  check.milliseconds('retry.maxElapsedMs', resolved.maxElapsedMs, { max: Number.POSITIVE_INFINITY, infinity: true });
  check.func('retry.random', resolved.random, 'a function returning [0, 1)');
  return resolved;
}

function definedOnly(options: RetryOptions): RetryOptions {
  return Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined)) as RetryOptions;
}

/**
 * The retry state of one logical operation: counts attempts, enforces the bounds and sleeps the backoff.
 *
 * ```ts
 * const run = new RetryRun(policy, signal);
 * for (;;) {
 *   try { return await attempt(); } catch (e) { if (!(await run.backoff(isRetryableFailure(e, action)))) throw e; }
 * }
 * ```
 */
export class RetryRun {
  readonly #policy: ResolvedRetryOptions;
  readonly #signal: AbortSignal | undefined;
  readonly #what: string;
  readonly #started: number;
  readonly #now: () => number;
  #retries = 0;

  constructor(policy: ResolvedRetryOptions, what: string, signal?: AbortSignal, now: () => number = Date.now) {
    this.#policy = policy;
    this.#what = what;
    this.#signal = signal;
    this.#now = now;
    this.#started = now();
  }

  /** Retries done so far. */
  get retries(): number {
    return this.#retries;
  }

  /**
   * After a failed attempt: false when it must not or may no longer be retried; otherwise sleep the full-jitter
   * delay and resolve true.
   * @throws ApsaraMqDeviceError `Aborted` when the signal fires during the delay.
   */
  async backoff(retryable: boolean): Promise<boolean> {
    if (!retryable || this.#retries + 1 >= this.#policy.maxAttempts) return false;
    const delay = fullJitterDelay(this.#retries, this.#policy, this.#policy.random);
    if (this.#now() - this.#started + delay > this.#policy.maxElapsedMs) return false;
    this.#retries += 1;
    const signal = this.#signal;
    if (signal?.aborted) throw abortError(this.#what, signal);
    try {
      await sleep(delay, signal);
    } catch (error) {
      if (signal?.aborted) throw abortError(this.#what, signal);
      throw error;
    }
    return true;
  }
}

/**
 * The POP gateway's state, shared by a cluster's OpenAPIs: the SignatureNonces used within their window, the account's
 * rate limit and each action's own (reference §2), the faults `failNext` queued and the fault burst running. One
 * script runs the checks in the gateway's order (gateway.ts: nonce, then the account's limit, then the action's),
 * then takes a queued fault, so that a call refused by one check spends nothing of the next; a call that gets through
 * learns the fault burst running, which its process draws from as FaultInjector.inject does.
 *
 * The limits are the gateway's {@link RateLimiter}, in either `rateLimitMode`: `sliding-window` (default), at most
 * `rate` takes in any one second, a list per key of the takes of the last second (sliding-window.ts); or
 * `token-bucket`, a bucket per key, `rate` tokens a second, starting full with a second's worth
 * (test/integration/cluster-conformance.test.ts drives both sides with one clock and compares every answer). They run
 * on Redis' clock, the one clock every process shares, unless the emulator was given a `rateClock`.
 */
import type { Redis } from 'ioredis';
import { ApiFault } from '../api-errors.js';
import type { FaultBurst } from '../faults.js';
import { ACTION_OVERFLOW_CODES, type RateLimitMode } from '../gateway.js';
import { KEYS } from './keys.js';
import { script, type Script } from './redis.js';

/** What the shared checks are configured with: the resolved emulator options' limits and windows. */
export interface AdmissionConfig {
  readonly nonceWindowMs: number;
  readonly qpsLimit: number;
  readonly actionQpsLimits: Readonly<Record<string, number>>;
  readonly actionThrottleCode: string;
  /** How the limits count (default `sliding-window`, as the gateway's). */
  readonly rateLimitMode?: RateLimitMode;
}

/** What a call the shared checks let through must still draw from: the cluster's fault burst, if one is running. */
export interface Admitted {
  readonly burst: FaultBurst | undefined;
}

/** How long an idle bucket or window is kept: long past the second in which it empties or fills up again. */
const BUCKET_TTL_MS = 60_000;

/** The window of the `sliding-window` limits, as the gateway's (sliding-window.ts's default). */
const WINDOW_MS = 1_000;

/** `now`: ARGV[1] when given (the emulator's rateClock), else Redis' clock, in ms (with its microseconds). */
const CLOCK = `
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
`;

/**
 * KEYS: nonce, account limit, action limit, the action's queued faults, the burst. ARGV: clock, nonce window, account
 * rate, action rate ('' for none), nonce given, TTL, mode, window. Returns `nonce`, `account`, `action`,
 * `fault\t<code>`, `ok`, or `ok\t<rate>\t<codes>` while a burst runs.
 */
const ADMIT = `${CLOCK}
if ARGV[5] == '1' and not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[2]) then return 'nonce' end
local window = tonumber(ARGV[8])
-- At most rate takes in (now - window, now]: the takes of the last window, oldest first (SlidingWindow.tryTake).
local function slide(key, rate)
  local from = now - window
  while true do
    local head = redis.call('LINDEX', key, 0)
    if not head or tonumber(head) > from then break end
    redis.call('LPOP', key)
  end
  if redis.call('LLEN', key) >= rate then return false end
  redis.call('RPUSH', key, string.format('%.17g', now))
  redis.call('PEXPIRE', key, ARGV[6])
  return true
end
local function take(key, rate)
  if ARGV[7] ~= 'token-bucket' then return slide(key, rate) end
  local held = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = tonumber(held[1])
  local at = tonumber(held[2])
  if tokens == nil or at == nil then tokens = rate; at = now end
  local elapsed = now - at
  if elapsed < 0 then elapsed = 0 end
  tokens = math.min(rate, tokens + elapsed / 1000 * rate)
  local taken = tokens >= 1
  if taken then tokens = tokens - 1 end
  redis.call('HSET', key, 'tokens', string.format('%.17g', tokens), 'at', string.format('%.17g', now))
  redis.call('PEXPIRE', key, ARGV[6])
  return taken
end
if ARGV[3] ~= '' and not take(KEYS[2], tonumber(ARGV[3])) then return 'account' end
if ARGV[4] ~= '' and not take(KEYS[3], tonumber(ARGV[4])) then return 'action' end
local head = redis.call('LINDEX', KEYS[4], 0)
if head then
  local code, left = string.match(head, '^(.*)\\t(%d+)$')
  left = tonumber(left) - 1
  if left <= 0 then redis.call('LPOP', KEYS[4]) else redis.call('LSET', KEYS[4], 0, code .. '\\t' .. left) end
  return 'fault\\t' .. code
end
local burst = redis.call('HMGET', KEYS[5], 'rate', 'codes', 'until')
if burst[3] and now < tonumber(burst[3]) then return 'ok\\t' .. burst[1] .. '\\t' .. burst[2] end
return 'ok'
`;

/**
 * Start (or, with rate 0 or forMs 0, end) the cluster's fault burst. KEYS: the burst. ARGV: clock, rate, codes
 * (comma-separated), forMs. It lasts until the clock of the checks reaches now + forMs.
 */
const BURST = `${CLOCK}
if tonumber(ARGV[2]) == 0 or tonumber(ARGV[4]) == 0 then
  redis.call('DEL', KEYS[1])
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'rate', ARGV[2], 'codes', ARGV[3], 'until', string.format('%.17g', now + tonumber(ARGV[4])))
-- Kept a little past its end by Redis' clock; the check against 'until' is what ends it.
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]) + 60000)
return 1
`;

/** A limit as the script takes it: none (Infinity) is empty. */
function rateArg(limit: number | undefined): string {
  return limit === undefined || limit === Number.POSITIVE_INFINITY ? '' : String(limit);
}

/** The cluster's shared gateway checks. */
export class SharedAdmission {
  readonly #redis: Redis;
  readonly #admit: Script;
  readonly #burst: Script;
  readonly #config: AdmissionConfig;
  readonly #clock: (() => number) | undefined;

  /** @param clock - the `rateClock` the emulator was given, if any; else Redis' own clock. */
  constructor(redis: Redis, config: AdmissionConfig, clock?: () => number) {
    this.#redis = redis;
    this.#admit = script(redis, 'apsaramqAdmit', ADMIT, 5);
    this.#burst = script(redis, 'apsaramqFaultBurst', BURST, 1);
    this.#config = config;
    this.#clock = clock;
  }

  /**
   * The checks of one call that passed the signature check, in the gateway's order: a nonce used within its window
   * anywhere in the cluster → `SignatureNonceUsed`; the account over its limit → `Throttling.User`; the action over
   * its own → its `…OverFlow` code (or `actionThrottleCode`); then the next fault `failNext` queued for the action.
   * A call let through is told the fault burst running, if any. `nonce` is absent for a check that has none (a test
   * of the limits).
   */
  async admit(call: { readonly nonce?: string | undefined; readonly accessKeyId: string; readonly action: string }): Promise<Admitted> {
    const { nonceWindowMs, qpsLimit, actionQpsLimits, actionThrottleCode } = this.#config;
    const mode = this.#config.rateLimitMode ?? 'sliding-window';
    const limitKey = mode === 'token-bucket' ? KEYS.bucket : KEYS.window;
    const actionLimit = Object.hasOwn(actionQpsLimits, call.action) ? actionQpsLimits[call.action] : undefined;
    const verdict = (await this.#admit.run(
      KEYS.nonce(call.nonce ?? ''),
      limitKey(`account:${call.accessKeyId}`),
      limitKey(`action:${call.action}:${call.accessKeyId}`),
      KEYS.faults(call.action),
      KEYS.burst,
      this.#clockArg(),
      String(Math.max(1, Math.ceil(nonceWindowMs))),
      rateArg(qpsLimit),
      rateArg(actionLimit),
      call.nonce === undefined ? '0' : '1',
      String(BUCKET_TTL_MS),
      mode,
      String(WINDOW_MS),
    )) as string;
    if (verdict === 'ok') return { burst: undefined };
    if (verdict.startsWith('ok\t')) {
      const [, rate = '0', codes = ''] = verdict.split('\t');
      return { burst: { rate: Number(rate), codes: codes.split(',') } };
    }
    if (verdict === 'nonce') throw new ApiFault('SignatureNonceUsed');
    if (verdict === 'account') throw new ApiFault('Throttling.User');
    if (verdict === 'action') throw new ApiFault(ACTION_OVERFLOW_CODES[call.action] ?? actionThrottleCode);
    throw new ApiFault(verdict.slice('fault\t'.length));
  }

  /**
   * Start the cluster's fault burst (already checked): for `forMs` on the checks' clock, every process answers a share
   * `rate` of the calls let through with one of `codes`; a new one replaces it, `rate` or `forMs` 0 ends it.
   */
  async burst(rate: number, codes: readonly string[], forMs: number): Promise<void> {
    await this.#burst.run(KEYS.burst, this.#clockArg(), String(rate), codes.join(','), String(forMs));
  }

  #clockArg(): string {
    return this.#clock === undefined ? '' : String(this.#clock());
  }

  /** Queue `count` faults `code` for the next calls of `action`, anywhere in the cluster (already checked). */
  async failNext(action: string, code: string, count: number): Promise<void> {
    await this.#redis.rpush(KEYS.faults(action), `${code}\t${count}`);
  }
}

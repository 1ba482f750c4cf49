/**
 * The POP gateway's state, shared by a cluster's OpenAPIs: the SignatureNonces used within their window, the account's
 * rate limit and each action's own (reference §2), and the faults `failNext` queued. One script runs the checks in
 * the gateway's order (gateway.ts: nonce, then the account's limit, then the action's), then takes a queued fault, so
 * that a call refused by one check spends nothing of the next.
 *
 * The limits are the gateway's {@link RateLimiter}: a token bucket per key, `rate` tokens a second, starting full with
 * a second's worth (test/unit/cluster-admission.test.ts drives both with one clock and compares every answer). They run
 * on Redis' clock, the one clock every process shares, unless the emulator was given a `rateClock`.
 */
import type { Redis } from 'ioredis';
import { ApiFault } from '../api-errors.js';
import { ACTION_OVERFLOW_CODES } from '../gateway.js';
import { KEYS } from './keys.js';
import { script, type Script } from './redis.js';

/** What the shared checks are configured with: the resolved emulator options' limits and windows. */
export interface AdmissionConfig {
  readonly nonceWindowMs: number;
  readonly qpsLimit: number;
  readonly actionQpsLimits: Readonly<Record<string, number>>;
  readonly actionThrottleCode: string;
}

/** How long an idle bucket is kept: long past the second in which it fills up again. */
const BUCKET_TTL_MS = 60_000;

const ADMIT = `
local now
if ARGV[4] ~= '' then
  now = tonumber(ARGV[4])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
if ARGV[5] == '1' and not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 'nonce' end
local function take(key, rate)
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
if ARGV[2] ~= '' and not take(KEYS[2], tonumber(ARGV[2])) then return 'account' end
if ARGV[3] ~= '' and not take(KEYS[3], tonumber(ARGV[3])) then return 'action' end
local head = redis.call('LINDEX', KEYS[4], 0)
if head then
  local code, left = string.match(head, '^(.*)\\t(%d+)$')
  left = tonumber(left) - 1
  if left <= 0 then redis.call('LPOP', KEYS[4]) else redis.call('LSET', KEYS[4], 0, code .. '\\t' .. left) end
  return 'fault\\t' .. code
end
return 'ok'
`;

/** A limit as the script takes it: none (Infinity) is empty. */
function rateArg(limit: number | undefined): string {
  return limit === undefined || limit === Number.POSITIVE_INFINITY ? '' : String(limit);
}

/** The cluster's shared gateway checks. */
export class SharedAdmission {
  readonly #redis: Redis;
  readonly #admit: Script;
  readonly #config: AdmissionConfig;
  readonly #clock: (() => number) | undefined;

  /** @param clock - the `rateClock` the emulator was given, if any; else Redis' own clock. */
  constructor(redis: Redis, config: AdmissionConfig, clock?: () => number) {
    this.#redis = redis;
    this.#admit = script(redis, 'apsaramqAdmit', ADMIT, 4);
    this.#config = config;
    this.#clock = clock;
  }

  /**
   * The checks of one call that passed the signature check, in the gateway's order: a nonce used within its window
   * anywhere in the cluster → `SignatureNonceUsed`; the account over its limit → `Throttling.User`; the action over
   * its own → its `…OverFlow` code (or `actionThrottleCode`); then the next fault `failNext` queued for the action.
   * `nonce` is absent for a check that has none (a test of the limits).
   */
  async admit(call: { readonly nonce?: string | undefined; readonly accessKeyId: string; readonly action: string }): Promise<void> {
    const { nonceWindowMs, qpsLimit, actionQpsLimits, actionThrottleCode } = this.#config;
    const actionLimit = Object.hasOwn(actionQpsLimits, call.action) ? actionQpsLimits[call.action] : undefined;
    const verdict = (await this.#admit.run(
      KEYS.nonce(call.nonce ?? ''),
      KEYS.bucket(`account:${call.accessKeyId}`),
      KEYS.bucket(`action:${call.action}:${call.accessKeyId}`),
      KEYS.faults(call.action),
      String(Math.max(1, Math.ceil(nonceWindowMs))),
      rateArg(qpsLimit),
      rateArg(actionLimit),
      this.#clock === undefined ? '' : String(this.#clock()),
      call.nonce === undefined ? '0' : '1',
      String(BUCKET_TTL_MS),
    )) as string;
    if (verdict === 'ok') return;
    if (verdict === 'nonce') throw new ApiFault('SignatureNonceUsed');
    if (verdict === 'account') throw new ApiFault('Throttling.User');
    if (verdict === 'action') throw new ApiFault(ACTION_OVERFLOW_CODES[call.action] ?? actionThrottleCode);
    throw new ApiFault(verdict.slice('fault\t'.length));
  }

  /** Queue `count` faults `code` for the next calls of `action`, anywhere in the cluster (already checked). */
  async failNext(action: string, code: string, count: number): Promise<void> {
    await this.#redis.rpush(KEYS.faults(action), `${code}\t${count}`);
  }
}

import { performance } from 'node:perf_hooks';
import { rpcTimestamp, signRpc, stringToSign } from '../signer/openapi.js';
import { ApiFault } from './api-errors.js';
import { safeEqual } from './crypto.js';

/** Request parameters after decoding: name → value. */
export type RpcParams = Readonly<Record<string, string>>;

/** The common parameters every call must carry, in the order they are checked (reference §3.2). */
export const COMMON_PARAMETERS = [
  'Action', 'Version', 'AccessKeyId', 'Signature', 'SignatureMethod', 'SignatureVersion', 'SignatureNonce', 'Timestamp',
] as const;

/**
 * Remembers SignatureNonces for a window. Entries are kept in insertion order, which is expiry order while the
 * clock moves forward, so pruning stops at the first live entry and the map never holds more than the nonces of
 * one window.
 */
export class NonceCache {
  readonly #expiries = new Map<string, number>();
  readonly #windowMs: number;
  readonly #now: () => number;

  constructor(windowMs: number, now: () => number) {
    this.#windowMs = windowMs;
    this.#now = now;
  }

  /** Remember the nonce and return true, or return false when it was used within the window. */
  use(nonce: string): boolean {
    const now = this.#now();
    this.#prune(now);
    const expiry = this.#expiries.get(nonce);
    // An expired entry can survive pruning when the clock went backwards; it no longer counts.
    if (expiry !== undefined && expiry > now) return false;
    this.#expiries.delete(nonce); // re-insert at the end, keeping the map in expiry order
    this.#expiries.set(nonce, now + this.#windowMs);
    return true;
  }

  /** Nonces remembered now. */
  get size(): number {
    return this.#expiries.size;
  }

  #prune(now: number): void {
    for (const [nonce, expiry] of this.#expiries) {
      if (expiry > now) break;
      this.#expiries.delete(nonce);
    }
  }
}

/**
 * Token bucket per key: `ratePerSecond` tokens a second, bursts up to `ratePerSecond`. Runs on a monotonic clock,
 * not the emulator's `now` option: a test that freezes or jumps the wall clock must not starve or flood the bucket.
 */
export class RateLimiter {
  readonly #buckets = new Map<string, { tokens: number; at: number }>();
  readonly #rate: number;
  readonly #clock: () => number;

  constructor(ratePerSecond: number, clock: () => number = () => performance.now()) {
    this.#rate = ratePerSecond;
    this.#clock = clock;
  }

  /** Take a token for `key`; false when the key is over its rate. */
  tryTake(key: string): boolean {
    if (this.#rate === Number.POSITIVE_INFINITY) return true;
    const now = this.#clock();
    const bucket = this.#buckets.get(key) ?? { tokens: this.#rate, at: now };
    bucket.tokens = Math.min(this.#rate, bucket.tokens + ((now - bucket.at) / 1000) * this.#rate);
    bucket.at = now;
    this.#buckets.set(key, bucket);
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }
}

/** What the gateway needs: the one account it knows, its windows and its rate. */
export interface GatewayConfig {
  readonly accessKeyId: string;
  readonly accessKeySecret: string;
  readonly timestampWindowMs: number;
  readonly nonceWindowMs: number;
  readonly qpsLimit: number;
  readonly now: () => number;
}

/**
 * The POP gateway in front of the product: Signature v1 authentication and per-account flow control, each
 * failure an {@link ApiFault} with the gateway's code. Checks run in the reference's §0 order.
 */
export class Gateway {
  readonly #config: GatewayConfig;
  readonly #nonces: NonceCache;
  readonly #limiter: RateLimiter;

  constructor(config: GatewayConfig) {
    this.#config = config;
    this.#nonces = new NonceCache(config.nonceWindowMs, config.now);
    this.#limiter = new RateLimiter(config.qpsLimit);
  }

  /**
   * MissingParameter → InvalidTimeStamp.Format → InvalidTimeStamp.Expired → InvalidAccessKeyId.NotFound →
   * SignatureDoesNotMatch → SignatureNonceUsed. `method` is the HTTP method the request really used: the
   * signature covers it. A nonce is remembered only once the signature verifies, so forged requests cannot
   * burn nonces.
   */
  authenticate(method: string, params: RpcParams): void {
    for (const name of COMMON_PARAMETERS) {
      if (!params[name]) {
        throw new ApiFault('MissingParameter', {
          message: `The input parameter "${name}" that is mandatory for processing this request is not supplied.`,
        });
      }
    }
    const timestamp = parseTimestamp(params['Timestamp'] ?? '');
    if (timestamp === undefined) throw new ApiFault('InvalidTimeStamp.Format');
    if (Math.abs(this.#config.now() - timestamp) > this.#config.timestampWindowMs) throw new ApiFault('InvalidTimeStamp.Expired');
    if (params['AccessKeyId'] !== this.#config.accessKeyId) throw new ApiFault('InvalidAccessKeyId.NotFound');

    // Only HMAC-SHA1 / 1.0 exists; anything else cannot match what the gateway computes.
    const expected = signRpc(method, params, this.#config.accessKeySecret);
    const supported = params['SignatureMethod'] === 'HMAC-SHA1' && params['SignatureVersion'] === '1.0';
    if (!safeEqual(params['Signature'], expected) || !supported) {
      // The StringToSign holds no secret; echoing it is what the real gateway does and helps debugging.
      throw new ApiFault('SignatureDoesNotMatch', { suffix: `server string to sign is:${stringToSign(method, params)}` });
    }
    if (!this.#nonces.use(params['SignatureNonce'] ?? '')) throw new ApiFault('SignatureNonceUsed');
  }

  /** Per-AccessKeyId flow control: `Throttling.User` past `qpsLimit` calls a second. Call after {@link Gateway.authenticate}. */
  throttle(params: RpcParams): void {
    if (!this.#limiter.tryTake(params['AccessKeyId'] ?? '')) throw new ApiFault('Throttling.User');
  }
}

/**
 * ms since the epoch of a `YYYY-MM-DDThh:mm:ssZ` Timestamp, or `undefined` when it is not exactly that format
 * or not a real date: formatting the parsed value back must give the same string.
 */
export function parseTimestamp(value: string): number | undefined {
  const ms = Date.parse(value);
  if (!Number.isFinite(ms) || rpcTimestamp(new Date(ms)) !== value) return undefined;
  return ms;
}

import { performance } from 'node:perf_hooks';
import { TokenBucket } from '../util/token-bucket.js';
import { rpcTimestamp, signRpc, stringToSign } from '../signer/openapi.js';
import {
  hashPayload,
  isV3SignableHeader,
  parseV3Authorization,
  v3CanonicalRequest,
  v3Signature,
  v3StringToSign,
} from '../signer/openapi-v3.js';
import { ApiFault } from './api-errors.js';
import { safeEqual } from './crypto.js';
import { SlidingWindow } from './sliding-window.js';

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

/** How a {@link RateLimiter} counts (see the emulator's `rateLimitMode` option). */
export type RateLimitMode = 'sliding-window' | 'token-bucket';

/**
 * A rate limit per key, `ratePerSecond` calls a second. `sliding-window` (default): at most that many in any one
 * second. `token-bucket`: refilled continuously, holding (and starting with) a second's worth, so a burst gets up to
 * twice the rate through in its first second. Runs on a monotonic clock, not the emulator's `now` option: a test
 * that freezes or jumps the wall clock must not starve or flood the limit.
 */
export class RateLimiter {
  readonly #limits = new Map<string, { tryTake(): boolean }>();
  readonly #rate: number;
  readonly #clock: () => number;
  readonly #mode: RateLimitMode;

  constructor(ratePerSecond: number, clock: () => number = () => performance.now(), mode: RateLimitMode = 'sliding-window') {
    this.#rate = ratePerSecond;
    this.#clock = clock;
    this.#mode = mode;
  }

  /** Take a call for `key`; false when the key is over its rate. */
  tryTake(key: string): boolean {
    let limit = this.#limits.get(key);
    if (!limit) {
      limit = this.#mode === 'token-bucket'
        ? new TokenBucket({ rate: this.#rate, burst: this.#rate === Number.POSITIVE_INFINITY ? 1 : this.#rate, now: this.#clock })
        : windowOn(new SlidingWindow(this.#rate), this.#clock);
      this.#limits.set(key, limit);
    }
    return limit.tryTake();
  }
}

function windowOn(window: SlidingWindow, clock: () => number): { tryTake(): boolean } {
  return { tryTake: () => window.tryTake(clock()) };
}

/**
 * The answers of the actions whose own QPS limit has a documented code (reference §2); the other rate-limited
 * actions answer {@link GatewayConfig.actionThrottleCode}.
 */
export const ACTION_OVERFLOW_CODES: Readonly<Record<string, string>> = Object.freeze({
  ApplyToken: 'ApplyTokenOverFlow',
  QueryToken: 'QueryTokenOverFlow',
  RevokeToken: 'RevokeTokenOverFlow',
});

/** What the gateway needs: the one account it knows, its windows and its rates. */
export interface GatewayConfig {
  readonly accessKeyId: string;
  readonly accessKeySecret: string;
  readonly timestampWindowMs: number;
  readonly nonceWindowMs: number;
  readonly qpsLimit: number;
  readonly now: () => number;
  /** Calls per second per account of single actions (default none). */
  readonly actionQpsLimits?: Readonly<Record<string, number>>;
  /** The code of an action over its own limit that has no documented one (default `SystemOverFlow`). */
  readonly actionThrottleCode?: string;
  /** Monotonic ms of every rate limit (default `performance.now`). */
  readonly rateClock?: () => number;
  /** How the limits count (default `sliding-window`). */
  readonly rateLimitMode?: RateLimitMode;
}

/**
 * The POP gateway in front of the product: signature method V2 (and V3) authentication and per-account flow control, each
 * failure an {@link ApiFault} with the gateway's code. Checks run in the reference's §0 order.
 */
export class Gateway {
  readonly #config: GatewayConfig;
  readonly #nonces: NonceCache;
  readonly #limiter: RateLimiter;
  readonly #actionLimiters = new Map<string, RateLimiter>();

  constructor(config: GatewayConfig) {
    this.#config = config;
    this.#nonces = new NonceCache(config.nonceWindowMs, config.now);
    const clock = config.rateClock ?? (() => performance.now());
    const mode = config.rateLimitMode ?? 'sliding-window';
    this.#limiter = new RateLimiter(config.qpsLimit, clock, mode);
    for (const [action, limit] of Object.entries(config.actionQpsLimits ?? {})) this.#actionLimiters.set(action, new RateLimiter(limit, clock, mode));
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

  /**
   * Signature V3 (`ACS3-HMAC-SHA256` / `ACS3-HMAC-SM3`), checked in this order (the gateway's order is not
   * documented; this mirrors V2's): MissingParameter (`x-acs-action`, `x-acs-version`, `Authorization`,
   * `x-acs-date`, `x-acs-signature-nonce`, `x-acs-content-sha256`, each named) → IncompleteSignature (an
   * Authorization that does not parse) → InvalidTimeStamp.Format → InvalidTimeStamp.Expired →
   * InvalidAccessKeyId.NotFound → IncompleteSignature (SignedHeaders lacks `host`, an `x-acs-*` header or
   * `content-type` that the request carries, or names one it does not carry; or `x-acs-content-sha256` is not the
   * hash of the body) → SignatureDoesNotMatch (with the server's string to sign) → SignatureNonceUsed (one nonce
   * window shared with V2). Returns what the headers say: Action, Version and the AccessKeyId.
   */
  authenticateV3(request: V3Request): { action: string; version: string; accessKeyId: string } {
    const header = (name: string): string | undefined => {
      const values = request.headers[name];
      return values?.length === 1 ? values[0] : values === undefined ? undefined : values.join(',');
    };
    for (const name of V3_REQUIRED_HEADERS) {
      if (!header(name)) {
        throw new ApiFault('MissingParameter', {
          message: `The input parameter "${name}" that is mandatory for processing this request is not supplied.`,
        });
      }
    }
    const auth = parseV3Authorization(header('authorization') ?? '');
    if (!auth) throw new ApiFault('IncompleteSignature', { suffix: 'The Authorization header is not "<algorithm> Credential=<AccessKeyId>,SignedHeaders=<names>,Signature=<hex>".' });
    const date = parseTimestamp(header('x-acs-date') ?? '');
    if (date === undefined) throw new ApiFault('InvalidTimeStamp.Format');
    if (Math.abs(this.#config.now() - date) > this.#config.timestampWindowMs) throw new ApiFault('InvalidTimeStamp.Expired');
    if (auth.accessKeyId !== this.#config.accessKeyId) throw new ApiFault('InvalidAccessKeyId.NotFound');

    const present = Object.keys(request.headers).filter(isV3SignableHeader);
    const unsigned = present.filter((name) => !auth.signedHeaders.includes(name));
    if (unsigned.length > 0) throw new ApiFault('IncompleteSignature', { suffix: `SignedHeaders must list ${unsigned.sort().join(', ')}.` });
    const absent = auth.signedHeaders.filter((name) => request.headers[name] === undefined);
    if (absent.length > 0) throw new ApiFault('IncompleteSignature', { suffix: `SignedHeaders lists ${absent.join(', ')}, which the request does not carry.` });
    const claimed = header('x-acs-content-sha256') ?? '';
    if (claimed !== hashPayload(request.body, auth.algorithm)) {
      throw new ApiFault('IncompleteSignature', { suffix: 'The x-acs-content-sha256 header is not the hex hash of the request body.' });
    }

    const toSign = v3StringToSign(
      v3CanonicalRequest({ method: request.method, path: request.path, query: request.query, headers: request.headers, signedHeaders: auth.signedHeaders, hashedPayload: claimed }),
      auth.algorithm,
    );
    if (!safeEqual(auth.signature, v3Signature(toSign, this.#config.accessKeySecret, auth.algorithm))) {
      // Like V2, the answer shows the server's string to sign (no secret in it), which the real gateway does too.
      throw new ApiFault('SignatureDoesNotMatch', { suffix: `server string to sign is:${toSign}` });
    }
    if (!this.#nonces.use(header('x-acs-signature-nonce') ?? '')) throw new ApiFault('SignatureNonceUsed');
    return { action: header('x-acs-action') ?? '', version: header('x-acs-version') ?? '', accessKeyId: auth.accessKeyId };
  }

  /** Per-AccessKeyId flow control: `Throttling.User` past `qpsLimit` calls a second. Call after authenticating. */
  throttle(accessKeyId: string): void {
    if (!this.#limiter.tryTake(accessKeyId)) throw new ApiFault('Throttling.User');
  }

  /**
   * Per-AccessKeyId flow control of one action with a limit of its own: past it, the action's documented
   * `…OverFlow` code ({@link ACTION_OVERFLOW_CODES}), else `actionThrottleCode`. A no-op for other actions. Call
   * after {@link Gateway.throttle}: a call refused by the account limit does not use the action's budget.
   */
  throttleAction(accessKeyId: string, action: string): void {
    const limiter = this.#actionLimiters.get(action);
    if (limiter && !limiter.tryTake(accessKeyId)) {
      throw new ApiFault(ACTION_OVERFLOW_CODES[action] ?? this.#config.actionThrottleCode ?? 'SystemOverFlow');
    }
  }
}

/** Headers a V3 request must carry, in the order they are checked (`host` is enforced by Node's HTTP server). */
export const V3_REQUIRED_HEADERS = ['x-acs-action', 'x-acs-version', 'authorization', 'x-acs-date', 'x-acs-signature-nonce', 'x-acs-content-sha256'] as const;

/** What V3 verification needs from a request. */
export interface V3Request {
  readonly method: string;
  /** The path as sent. */
  readonly path: string;
  /** Query parameters, decoded. */
  readonly query: RpcParams;
  /** Headers by lower-case name, every value kept. */
  readonly headers: Readonly<Record<string, readonly string[]>>;
  readonly body: Uint8Array;
}

/**
 * Is this a V3 request? Yes when it carries an `Authorization` header, or when it has no V2 `Signature`
 * parameter but one of V3's own headers (`x-acs-date`, `x-acs-signature-nonce`, `x-acs-content-sha256`), so that
 * a V3 request missing its Authorization is told so. pop-core's V2 requests carry `x-acs-action` and
 * `x-acs-version` too, so those two decide nothing.
 */
export function isV3Request(headers: Readonly<Record<string, readonly string[]>>, params: RpcParams): boolean {
  if (headers['authorization'] !== undefined) return true;
  if (params['Signature'] !== undefined) return false;
  return ['x-acs-date', 'x-acs-signature-nonce', 'x-acs-content-sha256'].some((name) => headers[name] !== undefined);
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

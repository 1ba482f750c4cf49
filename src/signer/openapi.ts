import { createHmac } from 'node:crypto';
import { ValidationError } from '../errors.js';
import { hasLoneSurrogate } from '../util/unicode.js';

/**
 * Alibaba Cloud's signature method V2 for RPC APIs (HMAC-SHA1 over the query string), as pop-core computes it and
 * the gateway checks it. Alibaba's documentation calls it V2 (reference §8.1); on the wire it says
 * `SignatureVersion=1.0`, which is why older comments called it "v1". The V3 method is `openapi-v3.ts`.
 * Pure functions: the clock and the nonce are the caller's.
 */

/**
 * RFC 3986 percent-encoding as the gateway wants it: space is %20, `*` is %2A, `~` stays.
 * @throws ValidationError `InvalidOption` for a string with a lone surrogate, which has no UTF-8 form (not the
 *   URIError of `encodeURIComponent`, which a caller would take for a network failure); the value is not shown.
 */
export function percentEncode(value: string): string {
  if (hasLoneSurrogate(value)) throw new ValidationError('InvalidOption', 'A value to sign holds a lone surrogate (half of a UTF-16 pair), which has no UTF-8 form');
  return encodeURIComponent(value)
    .replace(/!/g, '%21')
    .replace(/'/g, '%27')
    .replace(/\(/g, '%28')
    .replace(/\)/g, '%29')
    .replace(/\*/g, '%2A');
}

/** Sorted `name=value&…` of every parameter except `Signature`, each part percent-encoded. */
export function canonicalizedQueryString(params: Readonly<Record<string, string>>): string {
  return Object.keys(params)
    .filter((k) => k !== 'Signature')
    .sort()
    .map((k) => `${percentEncode(k)}=${percentEncode(params[k] ?? '')}`)
    .join('&');
}

/** `METHOD&%2F&percentEncode(canonicalized)`. */
export function stringToSign(method: string, params: Readonly<Record<string, string>>): string {
  return `${method.toUpperCase()}&${percentEncode('/')}&${percentEncode(canonicalizedQueryString(params))}`;
}

/** Base64(HMAC-SHA1(secret + '&', stringToSign)). */
export function signRpc(method: string, params: Readonly<Record<string, string>>, accessKeySecret: string): string {
  return createHmac('sha1', `${accessKeySecret}&`).update(stringToSign(method, params), 'utf8').digest('base64');
}

/** `YYYY-MM-DDThh:mm:ssZ` in UTC, no milliseconds. */
export function rpcTimestamp(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

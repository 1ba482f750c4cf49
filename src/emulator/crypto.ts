import { randomBytes, timingSafeEqual } from 'node:crypto';

/** Digits, upper- and lower-case letters: the alphabet of generated AccessKeys and device keys. */
export const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
/** Digits and lower-case letters: the alphabet of generated instance ids. */
export const BASE36_LOWER = '0123456789abcdefghijklmnopqrstuvwxyz';

/** Where random bytes come from: the CSPRNG, or (a clustered emulator replaying a change) a seeded stream. */
export type RandomBytes = (size: number) => Buffer;

/**
 * `length` characters drawn uniformly from `alphabet` with the CSPRNG (or `source`). Bytes at or above the largest
 * multiple of the alphabet size are rejected, so no character is more likely than another (plain `byte % n` is biased).
 */
export function randomString(alphabet: string, length: number, source: RandomBytes = randomBytes): string {
  const limit = 256 - (256 % alphabet.length);
  let out = '';
  while (out.length < length) {
    for (const byte of source(length - out.length + 8)) {
      if (byte >= limit) continue;
      out += alphabet[byte % alphabet.length];
      if (out.length === length) break;
    }
  }
  return out;
}

/**
 * Constant-time comparison of a received secret-derived value with the expected one. Lengths are compared
 * first (`timingSafeEqual` throws on unequal lengths); the length of a signature or password is no secret.
 */
export function safeEqual(received: Buffer | string | undefined, expected: string): boolean {
  if (received === undefined) return false;
  const a = typeof received === 'string' ? Buffer.from(received, 'utf8') : received;
  const b = Buffer.from(expected, 'utf8');
  return a.length === b.length && timingSafeEqual(a, b);
}

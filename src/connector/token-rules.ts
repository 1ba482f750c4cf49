/**
 * Token mode on the device side (reference §5.3), the pure rules: the options, what a token source may answer, when a
 * token is renewed, and what the broker's `$SYS` notices say. No I/O and no timers: the clock is passed in
 * (token-renewal.ts carries them out; the source's types live with the credential types, in credential.ts).
 *
 * A device in Token mode holds the account's AccessKeyId (not its secret), the instance id and tokens that an
 * application server applied for (ApplyToken, which needs the account secret). It renews a token before it expires
 * by asking its source for a new one and uploading it in session (`$SYS/uploadToken`), and asks the source again when
 * the broker says a token is invalid (`$SYS/tokenInvalidNotice`) or refuses the CONNECT.
 */
import { type TokenSource, assertClientId, assertInstanceId } from '../credential.js';
import { ValidationError } from '../errors.js';
import type { TokenGrant } from '../signer/mqtt.js';
import { MAX_TIMER_MS } from '../util/backoff.js';

/** A token's permission type: `R` subscribe, `W` publish, `RW` both. */
type TokenType = TokenGrant['type'];

const TYPES: readonly TokenType[] = ['R', 'W', 'RW'];

/** Option `token` of `connectDevice`: Token mode instead of a device credential. */
export interface TokenOptions {
  /** The AccessKeyId of the account that applies for the tokens (its secret stays on the server). */
  accessKeyId: string;
  /** The instance the tokens were applied for. */
  instanceId: string;
  /** The tokens, or (to renew them and recover from refusals) a {@link TokenSource}. Fixed tokens are never renewed. */
  source: TokenSource | readonly TokenGrant[];
  /**
   * Renew a token this long before its `expireTime`, ms, but never before half of the lifetime it had when it
   * arrived (so tokens shorter than the window are not renewed in a loop). @default 300000 (5 minutes, when the
   * service sends its notice)
   */
  renewBeforeMs?: number;
  /** The clock `expireTime` is compared with, ms since the epoch. @default Date.now */
  now?: () => number;
}

/** Defaults of {@link TokenOptions}. */
export const TOKEN_DEFAULTS = Object.freeze({ renewBeforeMs: 5 * 60_000 });

/** After a renewal that failed or gave nothing new, the next try waits at least this long. */
export const MIN_RENEW_RETRY_MS = 1_000;

/** The token options checked and filled in. */
export interface ResolvedTokenOptions {
  readonly accessKeyId: string;
  readonly instanceId: string;
  readonly source: TokenSource;
  /** The source is a fixed list: nothing to renew with. */
  readonly fixed: boolean;
  readonly renewBeforeMs: number;
  readonly now: () => number;
}

/** A token the connection holds. */
export interface HeldToken {
  readonly type: TokenType;
  readonly token: string;
  /** ms since the epoch, when the source or the broker's notice said. */
  readonly expireTime: number | undefined;
  /** When it arrived, on the connection's clock. */
  readonly receivedAt: number;
  /** Not renewed before this (after a renewal that failed or gave nothing new). */
  readonly retryAt: number | undefined;
}

function invalidOption(message: string): ValidationError {
  return new ValidationError('InvalidOption', message);
}

/**
 * Check the `token` option (and the ClientId it goes with) without any I/O. A fixed list of tokens is checked here
 * too; a source's answers are checked when they come ({@link checkTokenAnswer}).
 * @throws ValidationError `InvalidOption` naming the option, `InvalidClientId`, `InvalidInstanceId`, `InvalidToken`.
 */
export function resolveTokenOptions(token: unknown, clientId: unknown): ResolvedTokenOptions {
  if (token === null || typeof token !== 'object' || Array.isArray(token)) throw invalidOption('Option token must be { accessKeyId, instanceId, source }');
  const given = token as Record<string, unknown>;
  assertClientId(clientId);
  const accessKeyId = given['accessKeyId'];
  if (typeof accessKeyId !== 'string' || accessKeyId === '' || accessKeyId.includes('|')) {
    throw invalidOption('Option token.accessKeyId must be the AccessKeyId of the account that applies for the tokens (not empty, no "|")');
  }
  assertInstanceId(given['instanceId']);
  const source = given['source'];
  let resolvedSource: TokenSource;
  let fixed = false;
  if (typeof source === 'function') {
    resolvedSource = source as TokenSource;
  } else if (Array.isArray(source)) {
    const checked = checkTokenAnswer(source, 'Option token.source');
    if (checked.length === 0) throw new ValidationError('InvalidToken', 'Option token.source holds no token: give at least one { type, token }');
    resolvedSource = async () => checked;
    fixed = true;
  } else {
    throw invalidOption('Option token.source must be a function returning tokens (a TokenSource) or an array of { type, token }');
  }
  const renewBeforeMs = given['renewBeforeMs'] ?? TOKEN_DEFAULTS.renewBeforeMs;
  if (typeof renewBeforeMs !== 'number' || !Number.isFinite(renewBeforeMs) || renewBeforeMs < 0 || renewBeforeMs > MAX_TIMER_MS) {
    throw invalidOption(`Option token.renewBeforeMs must be a number of ms from 0 to ${MAX_TIMER_MS}, not ${String(renewBeforeMs)}`);
  }
  const now = given['now'] ?? Date.now;
  if (typeof now !== 'function') throw invalidOption('Option token.now must be a function returning ms since the epoch');
  return Object.freeze({ accessKeyId, instanceId: given['instanceId'] as string, source: resolvedSource, fixed, renewBeforeMs, now: now as () => number });
}

/**
 * Check what a token source answered: an array of `{ type: 'R' | 'W' | 'RW', token }` (a getter counts, as
 * `IssuedToken`'s does), each token a non-empty string without `|` (the password's separator), each type at most
 * once, `expireTime` absent or ms since the epoch. Returns plain copies; the message never shows a token.
 * @throws ValidationError `InvalidToken`
 */
export function checkTokenAnswer(answer: unknown, what = 'The token source'): readonly TokenGrant[] {
  if (!Array.isArray(answer)) throw new ValidationError('InvalidToken', `${what} did not return an array of tokens`);
  const seen = new Set<TokenType>();
  return Object.freeze(answer.map((item: unknown, i) => {
    const grant = (item ?? {}) as { type?: unknown; token?: unknown; expireTime?: unknown };
    const { type, token, expireTime } = grant;
    if (!TYPES.includes(type as TokenType)) throw new ValidationError('InvalidToken', `${what}: token ${i + 1} has type ${JSON.stringify(type)}, not R, W or RW`);
    if (typeof token !== 'string' || token === '') throw new ValidationError('InvalidToken', `${what}: the ${String(type)} token is not a non-empty string`);
    if (token.includes('|')) throw new ValidationError('InvalidToken', `${what}: the ${String(type)} token contains "|", which the CONNECT password cannot carry`);
    if (seen.has(type as TokenType)) throw new ValidationError('InvalidToken', `${what}: more than one ${String(type)} token (at most one per type)`);
    seen.add(type as TokenType);
    if (expireTime !== undefined && (typeof expireTime !== 'number' || !Number.isSafeInteger(expireTime) || expireTime <= 0)) {
      throw new ValidationError('InvalidToken', `${what}: the expireTime of the ${String(type)} token must be ms since the epoch`);
    }
    return Object.freeze({ type: type as TokenType, token, ...(expireTime === undefined ? {} : { expireTime }) });
  }));
}

/** The tokens held after an answer: those of the answer's types replaced (arriving `now`), the others kept. */
export function mergeTokens(held: readonly HeldToken[], answer: readonly TokenGrant[], now: number): HeldToken[] {
  const byType = new Map<TokenType, HeldToken>(held.map((token) => [token.type, token]));
  for (const grant of answer) {
    const current = byType.get(grant.type);
    // The very token again keeps what is known of it (its expiry from a notice, when it arrived).
    if (current && current.token === grant.token) {
      byType.set(grant.type, { ...current, expireTime: grant.expireTime ?? current.expireTime });
      continue;
    }
    byType.set(grant.type, { type: grant.type, token: grant.token, expireTime: grant.expireTime, receivedAt: now, retryAt: undefined });
  }
  return TYPES.flatMap((type) => byType.get(type) ?? []);
}

/** Tokens of `after` that differ from those of `before` (new types, or new token strings). */
export function changedTokens(before: readonly HeldToken[], after: readonly HeldToken[]): HeldToken[] {
  return after.filter((token) => before.find((b) => b.type === token.type)?.token !== token.token);
}

/** Does `answer` hand out exactly the tokens that were refused (same types, same strings)? */
export function sameTokens(refused: readonly HeldToken[], merged: readonly HeldToken[]): boolean {
  return changedTokens(refused, merged).length === 0;
}

/**
 * When a token is due for renewal (ms since the epoch), or `undefined` when its expiry is unknown: `renewBeforeMs`
 * before it expires, but not before half of the lifetime it had on arrival, nor before a retry time.
 */
export function renewAt(token: HeldToken, renewBeforeMs: number): number | undefined {
  if (token.expireTime === undefined) return undefined;
  const halfLife = token.receivedAt + (token.expireTime - token.receivedAt) / 2;
  return Math.max(token.expireTime - renewBeforeMs, halfLife, token.retryAt ?? Number.NEGATIVE_INFINITY);
}

/** The types due for renewal at `now` (a token already expired is not: the broker ends the session, and the source is asked then). */
export function dueForRenewal(tokens: readonly HeldToken[], now: number, renewBeforeMs: number): TokenType[] {
  return tokens.filter((token) => {
    const at = renewAt(token, renewBeforeMs);
    return at !== undefined && now >= at && now < (token.expireTime ?? 0);
  }).map((token) => token.type);
}

/** How long until the next renewal is due, ms (0 when one is due now), or `undefined` when none will be. */
export function nextRenewalDelay(tokens: readonly HeldToken[], now: number, renewBeforeMs: number): number | undefined {
  let next = Number.POSITIVE_INFINITY;
  for (const token of tokens) {
    const at = renewAt(token, renewBeforeMs);
    if (at === undefined || now >= (token.expireTime ?? 0)) continue;
    next = Math.min(next, Math.max(0, at - now));
  }
  return Number.isFinite(next) ? Math.min(Math.ceil(next), MAX_TIMER_MS) : undefined;
}

/**
 * After a renewal of `types` that failed or gave nothing new: try again after half of the time left (at least
 * {@link MIN_RENEW_RETRY_MS}), so the tries thin out as expiry nears and stop at expiry.
 */
export function deferRenewal(tokens: readonly HeldToken[], types: readonly TokenType[], now: number): HeldToken[] {
  return tokens.map((token) => {
    if (!types.includes(token.type) || token.expireTime === undefined) return token;
    return { ...token, retryAt: now + Math.max(MIN_RENEW_RETRY_MS, (token.expireTime - now) / 2) };
  });
}

/** A token whose expiry the broker's notice told: it is known from now on. */
export function noteExpiry(tokens: readonly HeldToken[], type: TokenType, expireTime: number): HeldToken[] {
  return tokens.map((token) => (token.type === type && token.expireTime === undefined ? { ...token, expireTime } : token));
}

/** The broker's system topics of Token mode (reference §5.3). */
export const TOKEN_NOTICE_TOPICS = Object.freeze({
  upload: '$SYS/uploadToken',
  expireNotice: '$SYS/tokenExpireNotice',
  invalidNotice: '$SYS/tokenInvalidNotice',
} as const);

/** `$SYS/tokenExpireNotice` `{"expireTime": <ms>, "type": "…"}`, or `undefined` when it is not that. */
export function parseExpireNotice(payload: Buffer): { expireTime: number; type: TokenType } | undefined {
  const body = parseObject(payload);
  const expireTime = body?.['expireTime'];
  const type = body?.['type'];
  if (typeof expireTime !== 'number' || !Number.isFinite(expireTime) || !TYPES.includes(type as TokenType)) return undefined;
  return { expireTime, type: type as TokenType };
}

/**
 * `$SYS/tokenInvalidNotice` `{"code": <n>, "type": "…"}`, or `undefined` when it is not that. The type may be
 * missing (the record does not promise it).
 */
export function parseInvalidNotice(payload: Buffer): { code: number; type: TokenType | undefined } | undefined {
  const body = parseObject(payload);
  const code = body?.['code'];
  const type = body?.['type'];
  if (typeof code !== 'number' || !Number.isInteger(code)) return undefined;
  return { code, type: TYPES.includes(type as TokenType) ? (type as TokenType) : undefined };
}

function parseObject(payload: Buffer): Record<string, unknown> | undefined {
  try {
    const parsed: unknown = JSON.parse(payload.toString('utf8'));
    return typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Is this notice code about the message or subscription that was refused (4 the resource, 5 the permission type),
 * rather than about the token? Then the tokens are kept and the operation fails; otherwise the tokens are replaced.
 */
export function isOperationCode(code: number): boolean {
  return code === 4 || code === 5;
}

/** The `$SYS/uploadToken` payload for a token: `{"Token": "…", "type": "…"}` (the documented casing). */
export function uploadPayload(token: Pick<HeldToken, 'type' | 'token'>): string {
  return JSON.stringify({ Token: token.token, type: token.type });
}

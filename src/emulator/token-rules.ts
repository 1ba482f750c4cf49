/**
 * Token mode (reference §2.1-2.3 and §5.3): the pure rules of tokens (resources, types, passwords, uploads, notices,
 * timers) that ApplyToken and the broker apply. No I/O, no clock and no state here: token-registry.ts keeps the
 * tokens issued, and the broker owns sessions, notices and disconnects.
 */
import { MAX_TOKEN_RESOURCES } from '../mqtt/service-limits.js';

/** Most resources one token may carry (reference §2.1): one home, shared with the provisioner's checks. */
export { MAX_TOKEN_RESOURCES };

/** A token's permission type, as the CONNECT password and `$SYS/uploadToken` name it (reference §5.3). */
export type TokenType = 'R' | 'W' | 'RW';

/** The token types, in the order the emulator reports them. */
export const TOKEN_TYPES: readonly TokenType[] = Object.freeze(['R', 'W', 'RW'] as const);

/** Longest resource: a topic (filter) of parent topic and subtopics is at most 64 characters (reference §5.6). */
export const MAX_RESOURCE_LENGTH = 64;
/** Shortest lifetime ApplyToken accepts: ExpireTime at least 60 s after the emulator's now (reference §2.1). */
export const MIN_TOKEN_LIFETIME_MS = 60_000;
/** Longest lifetime: a later ExpireTime is accepted and cut to now + 30 days (reference §2.1). */
export const MAX_TOKEN_LIFETIME_MS = 30 * 24 * 60 * 60_000;
/**
 * How long an expired token (revoked or not) is remembered after its ExpireTime, so that it is still told apart from
 * a forged one (notice code 2 or 3, not 1) and RevokeToken still knows it. After that it is forgotten.
 */
export const TOKEN_RETENTION_MS = 24 * 60 * 60_000;
/**
 * Most tokens the emulator holds (live, revoked or expired within {@link TOKEN_RETENTION_MS}); past it ApplyToken
 * answers `ApplyTokenOverFlow` until some expire. A bound on memory and on the state file, not a documented quota.
 */
export const MAX_HELD_TOKENS = 100_000;
/** How long before a token expires the broker sends `$SYS/tokenExpireNotice` (reference §5.3: about 5 minutes). */
export const TOKEN_EXPIRE_NOTICE_LEAD_MS = 5 * 60_000;

/** The system topics of Token mode (reference §5.3). */
export const TOKEN_TOPICS = Object.freeze({
  /** A client publishes `{"Token": "…", "type": "R|W|RW"}` here to replace a token of its session. */
  upload: '$SYS/uploadToken',
  /** The broker sends `{"expireTime": <ms>, "type": "…"}` here shortly before a token expires. */
  expireNotice: '$SYS/tokenExpireNotice',
  /** The broker sends `{"code": <n>, "type": "…"}` here before it disconnects the client. */
  invalidNotice: '$SYS/tokenInvalidNotice',
} as const);

/** The codes of `$SYS/tokenInvalidNotice` (reference §5.3). */
export const TOKEN_INVALID = Object.freeze({
  /** The token is forged and cannot be parsed (or names no token of this instance). */
  forged: 1,
  /** The token has expired. */
  expired: 2,
  /** The token has been revoked. */
  revoked: 3,
  /** The resource and the token do not match: no token of the session covers the topic. */
  resourceMismatch: 4,
  /** The permission type and the token do not match: a token covers the topic, but not for this operation. */
  permissionMismatch: 5,
  /** The signature is invalid: the token names a known token, but its secret part is wrong. */
  badSignature: 8,
  /** The account permission is invalid: the username's AccessKeyId is not the account that applied for tokens. */
  account: -1,
} as const);

/** A code of `$SYS/tokenInvalidNotice`. */
export type TokenInvalidCode = (typeof TOKEN_INVALID)[keyof typeof TOKEN_INVALID];

/** Either a value or why the input was refused (a message that names no secret). */
export type Parsed<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly problem: string };

const ok = <T>(value: T): Parsed<T> => ({ ok: true, value });
const refused = (problem: string): { readonly ok: false; readonly problem: string } => ({ ok: false, problem });

/** A value quoted for a message, cut short: it comes from the client. */
function shown(value: string): string {
  return JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}…` : value);
}

// ---------------------------------------------------------------- ApplyToken's parameters

/** ApplyToken's `Actions` → the token type: exactly `R`, `W` or `R,W` (reference §2.1); anything else `undefined`. */
export function tokenTypeOfActions(actions: string): TokenType | undefined {
  return actions === 'R' ? 'R' : actions === 'W' ? 'W' : actions === 'R,W' ? 'RW' : undefined;
}

/** The `Actions` value that applies for a token of this type. */
export function actionsOfTokenType(type: TokenType): 'R' | 'W' | 'R,W' {
  return type === 'RW' ? 'R,W' : type;
}

/** Does this type carry the permission? `R` = subscribe, `W` = publish. */
function grantsPermission(type: TokenType, permission: 'R' | 'W'): boolean {
  return type === 'RW' || type === permission;
}

const PARENT_LEVEL = /^[A-Za-z0-9_-]+$/;
/** Subtopic levels may also hold `@`, as the ClientId of a P2P topic `<parent>/p2p/<GroupId>@@@<DeviceId>` does. */
const SUB_LEVEL = /^[A-Za-z0-9_@-]+$/;

/**
 * Why a single resource is not acceptable, or `undefined`. A resource is a topic or a topic filter: levels split by
 * `/`; the first (the parent topic, which must exist in the console) of letters, digits, `-` and `_` (reference
 * §5.1), never a wildcard; each other level of those and `@` (for the ClientIds of P2P topics), or a whole-level `+`,
 * or a whole-level `#` as the last level; no empty level; at most {@link MAX_RESOURCE_LENGTH} characters as `length`
 * counts them (default every character; the emulator counts only the parent of a P2P resource, as it does for topics).
 */
export function resourceProblem(resource: string, length: (resource: string) => number = (r) => r.length): string | undefined {
  if (resource === '') return 'is empty';
  if (length(resource) > MAX_RESOURCE_LENGTH) return `is longer than ${MAX_RESOURCE_LENGTH} characters`;
  const levels = resource.split('/');
  if (!PARENT_LEVEL.test(levels[0] ?? '')) return 'must start with a parent topic of letters, digits, - and _ (no wildcard)';
  for (let i = 1; i < levels.length; i++) {
    const level = levels[i] ?? '';
    if (level === '#' && i < levels.length - 1) return 'has # before its last level';
    if (level !== '#' && level !== '+' && !SUB_LEVEL.test(level)) {
      return level === '' ? 'has an empty level' : 'has a level that is not letters, digits, -, _ and @, or a whole + or #';
    }
  }
  return undefined;
}

/**
 * ApplyToken's `Resources`: comma-separated, 1 to {@link MAX_TOKEN_RESOURCES}, each valid ({@link resourceProblem}),
 * in strictly ascending dictionary order when several (UTF-16 code unit order, which for these characters is byte
 * order: `#` < `+` < `-` < `/` < digits < `@` < upper case < `_` < lower case; JavaScript's `sort()` and Java's
 * `String.compareTo` agree). A duplicate is refused as out of order. No spaces around commas.
 */
export function parseResources(value: string, length?: (resource: string) => number): Parsed<readonly string[]> {
  const resources = value.split(',');
  if (resources.length > MAX_TOKEN_RESOURCES) return refused(`at most ${MAX_TOKEN_RESOURCES} resources, not ${resources.length}`);
  for (const [i, resource] of resources.entries()) {
    const problem = resourceProblem(resource, length);
    if (problem !== undefined) return refused(`resource ${i + 1} (${shown(resource)}) ${problem}`);
    const previous = resources[i - 1];
    if (previous !== undefined && !(previous < resource)) {
      return refused(`resources must be in dictionary order without duplicates: ${shown(previous)} comes before ${shown(resource)}`);
    }
  }
  return ok(Object.freeze(resources));
}

/**
 * ApplyToken's `ExpireTime` (ms since the epoch, decimal digits) against the emulator's `now`: at least
 * {@link MIN_TOKEN_LIFETIME_MS} later (a value exactly 60 s ahead is accepted), else refused; more than
 * {@link MAX_TOKEN_LIFETIME_MS} later is accepted and cut to now + 30 days, as the service does silently.
 */
export function resolveExpireTime(raw: string, now: number): Parsed<number> {
  if (!/^\d{1,16}$/.test(raw) || !Number.isSafeInteger(Number(raw))) return refused('must be ms since the epoch, in decimal digits');
  const at = Number(raw);
  const from = Math.floor(now);
  if (at - from < MIN_TOKEN_LIFETIME_MS) return refused(`must be at least ${MIN_TOKEN_LIFETIME_MS / 1000} s in the future`);
  return ok(Math.min(at, from + MAX_TOKEN_LIFETIME_MS));
}

// ---------------------------------------------------------------- topics against resources

/**
 * Does `resource` cover `filter`, i.e. does every topic that `filter` matches also match `resource`? For a topic
 * (no wildcards) this is plain MQTT matching. Level by level: a resource `#` covers everything from there on,
 * including the parent level itself (`a/#` covers `a`, as in MQTT); a resource `+` covers one level that is a name or
 * `+`, never `#`; a resource name covers only the same name. A filter is authorised by one resource that covers it
 * whole; the union of several is not considered (`a` and `a/+/#` together match all of `a/#`, but neither covers it
 * alone, so `a/#` is refused). Broader filters are therefore refused even when part of what they match is granted.
 */
export function resourceCovers(resource: string, filter: string): boolean {
  const r = resource.split('/');
  const f = filter.split('/');
  for (let i = 0; i < r.length; i++) {
    const level = r[i];
    if (level === '#') return true;
    if (i >= f.length) return false;
    const wanted = f[i];
    if (wanted === '#') return false;
    if (level !== '+' && wanted !== level) return false;
  }
  return f.length === r.length;
}

/** What a token contributes to a session's rights: its type and its resources. */
export interface TokenGrant {
  readonly type: TokenType;
  readonly resources: readonly string[];
}

/**
 * The verdict on one PUBLISH or SUBSCRIBE of a Token-mode session. A refusal carries the `$SYS/tokenInvalidNotice`
 * code and the type of the token it concerns (`undefined` only when the session holds no token at all).
 */
export type TokenVerdict =
  | { readonly allowed: true }
  | { readonly allowed: false; readonly code: 4 | 5; readonly type: TokenType | undefined };

function authorize(grants: readonly TokenGrant[], target: string, permission: 'R' | 'W'): TokenVerdict {
  const ordered = [...grants].sort((a, b) => TOKEN_TYPES.indexOf(a.type) - TOKEN_TYPES.indexOf(b.type));
  const covering = ordered.filter((grant) => grant.resources.some((resource) => resourceCovers(resource, target)));
  if (covering.some((grant) => grantsPermission(grant.type, permission))) return { allowed: true };
  const wrongType = covering[0];
  if (wrongType) return { allowed: false, code: TOKEN_INVALID.permissionMismatch, type: wrongType.type };
  const concerned = ordered.find((grant) => grantsPermission(grant.type, permission)) ?? ordered[0];
  return { allowed: false, code: TOKEN_INVALID.resourceMismatch, type: concerned?.type };
}

/**
 * May a session holding `grants` PUBLISH to `topic`? Allowed when a token with W (`W` or `RW`) has a resource
 * covering the topic. Otherwise code 5 when a token without W (an `R` token) covers it (it is the permission that is
 * wrong), else code 4 (no token covers it); the type is that of the covering R token for 5, and for 4 that of the
 * token that would have needed the resource (the W token, else the RW one, else the first held), in the order R, W, RW.
 */
export function authorizePublish(grants: readonly TokenGrant[], topic: string): TokenVerdict {
  return authorize(grants, topic, 'W');
}

/**
 * May a session holding `grants` SUBSCRIBE to `filter`? Allowed when a token with R (`R` or `RW`) has one resource
 * that covers the whole filter ({@link resourceCovers}). Otherwise code 5 when a `W` token covers it, else code 4;
 * the type as for {@link authorizePublish} with R in place of W.
 */
export function authorizeSubscribe(grants: readonly TokenGrant[], filter: string): TokenVerdict {
  return authorize(grants, filter, 'R');
}

// ---------------------------------------------------------------- the CONNECT password and $SYS/uploadToken

/** One token a client presents, with the type it claims for it. */
export interface TokenCredential {
  readonly type: TokenType;
  readonly token: string;
}

const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true });

function isTokenType(value: unknown): value is TokenType {
  return value === 'R' || value === 'W' || value === 'RW';
}

/**
 * The password of a Token-mode CONNECT (reference §5.3): `<type>|<token>` per token, joined by `|`, types `R`, `W`
 * and `RW` in any order, at most one token per type: `R|t1`, `W|t2`, `R|t1|W|t2`, `RW|t3`, `R|t1|W|t2|RW|t3`.
 * Refused: no password, bytes that are not UTF-8, an odd number of parts, an unknown type, an empty token, a type
 * given twice.
 */
export function parseTokenPassword(password: string | Uint8Array | undefined): Parsed<readonly TokenCredential[]> {
  if (password === undefined || password.length === 0) return refused('the password is empty');
  let text: string;
  try {
    text = typeof password === 'string' ? password : STRICT_UTF8.decode(password);
  } catch {
    return refused('the password is not UTF-8');
  }
  const parts = text.split('|');
  if (parts.length % 2 !== 0) return refused('the password is not <type>|<token> pairs joined by |');
  const credentials: TokenCredential[] = [];
  for (let i = 0; i < parts.length; i += 2) {
    const type = parts[i];
    const token = parts[i + 1] ?? '';
    if (!isTokenType(type)) return refused(`token type ${shown(type ?? '')} is not R, W or RW`);
    if (token === '') return refused(`the ${type} token is empty`);
    if (credentials.some((c) => c.type === type)) return refused(`the ${type} token is given twice`);
    credentials.push(Object.freeze({ type, token }));
  }
  return ok(Object.freeze(credentials));
}

/**
 * The payload of a `$SYS/uploadToken` PUBLISH (reference §5.3): a JSON object with a non-empty string `Token` and a
 * `type` of `R`, `W` or `RW`, spelled exactly so (the documented casing; the broker's own parsing is unconfirmed).
 * Other fields are ignored.
 */
export function parseUploadToken(payload: Uint8Array): Parsed<TokenCredential> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(STRICT_UTF8.decode(payload));
  } catch {
    return refused('the payload is not JSON');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return refused('the payload is not a JSON object');
  const { Token: token, type } = parsed as Record<string, unknown>;
  if (typeof token !== 'string' || token === '') return refused('"Token" is missing or not a non-empty string');
  if (!isTokenType(type)) return refused('"type" is not "R", "W" or "RW"');
  return ok(Object.freeze({ type, token }));
}

/** The `$SYS/tokenExpireNotice` payload: `{"expireTime":<ms>,"type":"<type>"}`. */
export function expireNoticePayload(expireTime: number, type: TokenType): Buffer {
  return Buffer.from(JSON.stringify({ expireTime, type }), 'utf8');
}

/** The `$SYS/tokenInvalidNotice` payload: `{"code":<code>,"type":"<type>"}`. */
export function invalidNoticePayload(code: TokenInvalidCode, type: TokenType): Buffer {
  return Buffer.from(JSON.stringify({ code, type }), 'utf8');
}

/**
 * The CONNACK return code (MQTT 3.1.1) for a Token-mode CONNECT refused with this notice code, following the
 * emulator's rule for the other modes (reference §0): 4 when the credentials cannot be verified (forged, bad
 * signature, unknown account), 5 when they verify but are not allowed (expired, revoked, wrong type).
 */
export function tokenConnackCode(code: TokenInvalidCode): 4 | 5 {
  return code === TOKEN_INVALID.forged || code === TOKEN_INVALID.badSignature || code === TOKEN_INVALID.account ? 4 : 5;
}

/** What a notice code means, in words that name no secret: "the W token {@link describeTokenCode}". */
export function describeTokenCode(code: TokenInvalidCode): string {
  switch (code) {
    case TOKEN_INVALID.forged:
      return 'not a token of this instance (notice code 1, forged)';
    case TOKEN_INVALID.expired:
      return 'expired (notice code 2)';
    case TOKEN_INVALID.revoked:
      return 'revoked (notice code 3)';
    case TOKEN_INVALID.resourceMismatch:
      return 'not covering the topic (notice code 4, resource mismatch)';
    case TOKEN_INVALID.permissionMismatch:
      return 'of another permission type (notice code 5, permission mismatch)';
    case TOKEN_INVALID.badSignature:
      return 'altered (notice code 8, bad signature)';
    case TOKEN_INVALID.account:
      return 'of another account (notice code -1)';
  }
}

/**
 * What a session's token needs next, on the `now` clock: `expired` (now ≥ ExpireTime), `notice` (the expire notice
 * is due: now ≥ ExpireTime − lead and it was not sent yet), or nothing until `inMs` from now (the notice, or the
 * expiry once the notice is sent). A broker arms one timer for the earliest of its tokens and asks again when it
 * fires, so that a `now` that runs slower or faster than the timers is followed.
 */
export type TokenTimer = { readonly due: 'expired' } | { readonly due: 'notice' } | { readonly due: 'later'; readonly inMs: number };

/** {@link TokenTimer} of one token. */
export function tokenTimer(now: number, expireTime: number, leadMs: number, noticeSent: boolean): TokenTimer {
  if (now >= expireTime) return { due: 'expired' };
  const noticeAt = expireTime - leadMs;
  if (!noticeSent && now >= noticeAt) return { due: 'notice' };
  return { due: 'later', inMs: (noticeSent ? expireTime : noticeAt) - now };
}

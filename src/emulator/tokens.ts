/**
 * Token mode (reference §2.1-2.3 and §5.3): the tokens ApplyToken issues, and the pure rules the broker applies to
 * a Token-mode session. No I/O and no timers here: the clock is injected, and the broker owns sessions, notices
 * and disconnects.
 *
 * Wire shape of a token (the emulator's choice; clients must not rely on it, as the service says of its own): the
 * standard Base64 (with `+`, `/` and `=`, like the service's sample tokens) of 49 random bytes, 16 naming the token
 * and 33 of secret. Only a SHA-256 of the secret is kept, so the state file never holds a usable token. That split
 * gives the notice codes a meaning: a string that is not such a token, or names no token of this instance, is
 * "forged" (1); a known name with the wrong secret is a "bad signature" (8).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { ApiFault } from './api-errors.js';

/** A token's permission type, as the CONNECT password and `$SYS/uploadToken` name it (reference §5.3). */
export type TokenType = 'R' | 'W' | 'RW';

/** The token types, in the order the emulator reports them. */
export const TOKEN_TYPES: readonly TokenType[] = Object.freeze(['R', 'W', 'RW'] as const);

/** Most resources one token may carry (reference §2.1). */
export const MAX_TOKEN_RESOURCES = 100;
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
 * or a whole-level `#` as the last level; no empty level; at most {@link MAX_RESOURCE_LENGTH} characters.
 */
export function resourceProblem(resource: string): string | undefined {
  if (resource === '') return 'is empty';
  if (resource.length > MAX_RESOURCE_LENGTH) return `is longer than ${MAX_RESOURCE_LENGTH} characters`;
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
export function parseResources(value: string): Parsed<readonly string[]> {
  const resources = value.split(',');
  if (resources.length > MAX_TOKEN_RESOURCES) return refused(`at most ${MAX_TOKEN_RESOURCES} resources, not ${resources.length}`);
  for (const [i, resource] of resources.entries()) {
    const problem = resourceProblem(resource);
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

// ---------------------------------------------------------------- the registry

/** One issued token, as the emulator keeps it (never the token itself). */
export interface TokenRecord extends TokenGrant {
  /** 32 lower-case hex digits: the token's name. */
  readonly id: string;
  /** 64 lower-case hex digits: SHA-256 of the token's secret part. */
  readonly secretSha256: string;
  readonly instanceId: string;
  /** ms since the epoch. */
  readonly createTime: number;
  /** ms since the epoch, already cut to 30 days; the token is valid while now < expireTime. */
  readonly expireTime: number;
  /** ms since the epoch when RevokeToken revoked it; absent while not revoked. */
  readonly revokeTime?: number;
}

/** The outcome of checking a token: its record, or the `$SYS/tokenInvalidNotice` code. */
export type TokenCheck =
  | { readonly ok: true; readonly record: TokenRecord }
  | { readonly ok: false; readonly code: TokenInvalidCode };

const ID_BYTES = 16;
const SECRET_BYTES = 33;
const TOKEN_BYTES = ID_BYTES + SECRET_BYTES;
/** 49 bytes are 68 Base64 characters, the last two `==`. */
const TOKEN_PATTERN = /^[A-Za-z0-9+/]{66}==$/;
/** How often (by the injected clock) ApplyToken sweeps out tokens past their retention, besides when full. */
const PRUNE_EVERY_MS = 60_000;

function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** The id and secret of a token string, or `undefined` when it is not the emulator's token shape. */
function splitToken(token: string): { id: string; secret: Buffer } | undefined {
  if (!TOKEN_PATTERN.test(token)) return undefined;
  const bytes = Buffer.from(token, 'base64');
  // Base64 has several spellings of the last bits; only the canonical one is a token the emulator issued.
  if (bytes.length !== TOKEN_BYTES || bytes.toString('base64') !== token) return undefined;
  return { id: bytes.subarray(0, ID_BYTES).toString('hex'), secret: bytes.subarray(ID_BYTES) };
}

/** What the token registry needs: the emulator's clock (ms since the epoch, the `now` option). */
export interface TokenPolicy {
  readonly now: () => number;
}

/** What ApplyToken asks for, already validated. */
export interface TokenRequest {
  readonly instanceId: string;
  readonly type: TokenType;
  /** Valid and in order ({@link parseResources}). */
  readonly resources: readonly string[];
  /** Already resolved ({@link resolveExpireTime}). */
  readonly expireTime: number;
}

/**
 * The tokens issued by ApplyToken: apply, query, revoke, and the checks the broker makes. Tokens are kept by id;
 * revoked and expired ones are remembered for {@link TOKEN_RETENTION_MS} after their ExpireTime.
 */
export class TokenRegistry {
  readonly #byId = new Map<string, TokenRecord>();
  readonly #revokeListeners = new Set<(record: TokenRecord) => void>();
  readonly #policy: TokenPolicy;
  #changes = 0;
  #lastPrune = Number.NEGATIVE_INFINITY;

  constructor(policy: TokenPolicy) {
    this.#policy = policy;
  }

  /** Counts every change (apply, revoke, restore, forgetting old tokens): a caller compares it before and after. */
  get changes(): number {
    return this.#changes;
  }

  /** Tokens held now (live, revoked, or expired within the retention). */
  get size(): number {
    return this.#byId.size;
  }

  /** Every token held, in issue order. */
  all(): TokenRecord[] {
    return [...this.#byId.values()];
  }

  /**
   * Load tokens kept by an earlier run, as they were; those past their retention are dropped. Only into an empty
   * registry; the records must already be validated (distinct ids).
   */
  restore(records: Iterable<TokenRecord>): void {
    if (this.#byId.size > 0) throw new Error('Emulator bug: restore() into a registry that holds tokens');
    for (const record of records) this.#byId.set(record.id, Object.freeze({ ...record, resources: Object.freeze([...record.resources]) }));
    this.#prune(this.#now());
    this.#changes++;
  }

  /**
   * ApplyToken: issue a token and return it with its record. The token string exists only in this answer.
   * `ApplyTokenOverFlow` when {@link MAX_HELD_TOKENS} are held even after forgetting those past their retention.
   */
  apply(request: TokenRequest): { token: string; record: TokenRecord } {
    const now = this.#now();
    if (now - this.#lastPrune >= PRUNE_EVERY_MS || this.#byId.size >= MAX_HELD_TOKENS) this.#prune(now);
    if (this.#byId.size >= MAX_HELD_TOKENS) throw new ApiFault('ApplyTokenOverFlow');
    let bytes = randomBytes(TOKEN_BYTES);
    while (this.#byId.has(bytes.subarray(0, ID_BYTES).toString('hex'))) bytes = randomBytes(TOKEN_BYTES); // 2^128: theoretical
    const record: TokenRecord = Object.freeze({
      id: bytes.subarray(0, ID_BYTES).toString('hex'),
      secretSha256: sha256Hex(bytes.subarray(ID_BYTES)),
      instanceId: request.instanceId,
      type: request.type,
      resources: Object.freeze([...request.resources]),
      createTime: now,
      expireTime: request.expireTime,
    });
    this.#byId.set(record.id, record);
    this.#changes++;
    return { token: bytes.toString('base64'), record };
  }

  /**
   * Check a token string for an instance, in this order: not the emulator's shape or an unknown id → 1 (forged); the
   * secret part wrong → 8 (bad signature); issued for another instance → 1; revoked → 3; expired (now ≥ ExpireTime)
   * → 2. Otherwise its record.
   */
  check(instanceId: string, token: string): TokenCheck {
    const parts = splitToken(token);
    const record = parts === undefined ? undefined : this.#byId.get(parts.id);
    if (!parts || !record) return { ok: false, code: TOKEN_INVALID.forged };
    if (!timingSafeEqual(Buffer.from(sha256Hex(parts.secret), 'hex'), Buffer.from(record.secretSha256, 'hex'))) {
      return { ok: false, code: TOKEN_INVALID.badSignature };
    }
    if (record.instanceId !== instanceId) return { ok: false, code: TOKEN_INVALID.forged };
    return this.recheck(record);
  }

  /**
   * The current state of a token a session already holds (its record as returned by {@link TokenRegistry.check}):
   * revoked → 3, expired → 2, forgotten → 1, else its current record. For a broker's timers and re-checks.
   */
  recheck(record: Pick<TokenRecord, 'id'>): TokenCheck {
    const current = this.#byId.get(record.id);
    if (!current) return { ok: false, code: TOKEN_INVALID.forged };
    if (current.revokeTime !== undefined) return { ok: false, code: TOKEN_INVALID.revoked };
    if (this.#now() >= current.expireTime) return { ok: false, code: TOKEN_INVALID.expired };
    return { ok: true, record: current };
  }

  /** {@link TokenRegistry.check}, then the claimed type must be the token's own: else 5 (permission type mismatch). */
  verify(instanceId: string, credential: TokenCredential): TokenCheck {
    const result = this.check(instanceId, credential.token);
    if (result.ok && result.record.type !== credential.type) return { ok: false, code: TOKEN_INVALID.permissionMismatch };
    return result;
  }

  /**
   * Verify every token of a CONNECT password ({@link parseTokenPassword}); the first that fails decides, with its
   * claimed type. On success the records, in the password's order, are the session's grants.
   */
  login(instanceId: string, credentials: readonly TokenCredential[]):
    | { readonly ok: true; readonly records: readonly TokenRecord[] }
    | { readonly ok: false; readonly code: TokenInvalidCode; readonly type: TokenType } {
    const records: TokenRecord[] = [];
    for (const credential of credentials) {
      const result = this.verify(instanceId, credential);
      if (!result.ok) return { ok: false, code: result.code, type: credential.type };
      records.push(result.record);
    }
    return { ok: true, records };
  }

  /** QueryToken: is this a token of the instance that is neither revoked nor expired? Never throws. */
  isValid(instanceId: string, token: string): boolean {
    return this.check(instanceId, token).ok;
  }

  /**
   * RevokeToken. A token of this instance that is live is revoked (listeners are told); one already revoked or
   * expired is left as it is, and that is a success too (revoking is idempotent). A string that is not a token of
   * this instance (forged, bad secret, another instance's, or forgotten after its retention) is refused with
   * `InvalidParameter.Token`: silently "revoking" a mistyped token would leave the real one live.
   */
  revoke(instanceId: string, token: string): void {
    const result = this.check(instanceId, token);
    if (!result.ok && (result.code === TOKEN_INVALID.forged || result.code === TOKEN_INVALID.badSignature)) {
      throw new ApiFault('InvalidParameter.Token', { suffix: 'It is not a token of this instance.' });
    }
    if (!result.ok) return;
    const revoked: TokenRecord = Object.freeze({ ...result.record, revokeTime: this.#now() });
    this.#byId.set(revoked.id, revoked);
    this.#changes++;
    for (const listener of this.#revokeListeners) listener(revoked);
  }

  /**
   * Call `listener` with the record of every token RevokeToken revokes, right after it stopped being valid (a broker
   * sends notice code 3 and disconnects the sessions holding it). Returns the function that removes the listener.
   */
  onRevoke(listener: (record: TokenRecord) => void): () => void {
    this.#revokeListeners.add(listener);
    return () => this.#revokeListeners.delete(listener);
  }

  #now(): number {
    return Math.floor(this.#policy.now());
  }

  /** Forget tokens whose retention after ExpireTime has passed. */
  #prune(now: number): void {
    this.#lastPrune = now;
    for (const [id, record] of this.#byId) {
      if (now >= record.expireTime + TOKEN_RETENTION_MS) {
        this.#byId.delete(id);
        this.#changes++;
      }
    }
  }
}

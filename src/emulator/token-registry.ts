/**
 * The tokens ApplyToken issued (reference §2.1-2.3): apply, query, revoke, and the checks the broker makes. The rules
 * are token-rules.ts's; this is the state, with an injected clock.
 *
 * Wire shape of a token (the emulator's choice; clients must not rely on it, as the service says of its own): the
 * standard Base64 (with `+`, `/` and `=`, like the service's sample tokens) of 49 random bytes, 16 naming the token
 * and 33 of secret. Only a SHA-256 of the secret is kept, so the state file never holds a usable token. That split
 * gives the notice codes a meaning: a string that is not such a token, or names no token of this instance, is
 * "forged" (1); a known name with the wrong secret is a "bad signature" (8).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { ApiFault } from './api-errors.js';
import { MAX_HELD_TOKENS, TOKEN_INVALID, TOKEN_RETENTION_MS, type TokenCredential, type TokenGrant, type TokenInvalidCode, type TokenType } from './token-rules.js';

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

/**
 * One change of the tokens, as the data directory's journal keeps it: a token issued or revoked (its whole new
 * record), or one forgotten after its retention.
 */
export type TokenChange =
  | { readonly op: 'token'; readonly record: TokenRecord }
  | { readonly op: 'token-removed'; readonly id: string };

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
  /** Where tokens are drawn from: the CSPRNG by default (a clustered emulator replays changes with a seeded one). */
  readonly randomBytes?: (size: number) => Buffer;
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
  readonly #changeListeners = new Set<(change: TokenChange) => void>();
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
    const draw = this.#policy.randomBytes ?? randomBytes;
    let bytes = draw(TOKEN_BYTES);
    while (this.#byId.has(bytes.subarray(0, ID_BYTES).toString('hex'))) bytes = draw(TOKEN_BYTES); // 2^128: theoretical
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
    this.#changed({ op: 'token', record });
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
    this.#changed({ op: 'token', record: revoked });
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

  /**
   * Call `listener` with every change after it is made (not with {@link TokenRegistry.restore}, which loads what was
   * kept): the data directory journals them. Returns the function that removes the listener.
   */
  onChange(listener: (change: TokenChange) => void): () => void {
    this.#changeListeners.add(listener);
    return () => this.#changeListeners.delete(listener);
  }

  #changed(change: TokenChange): void {
    this.#changes++;
    for (const listener of this.#changeListeners) listener(change);
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
        this.#changed({ op: 'token-removed', id });
      }
    }
  }
}

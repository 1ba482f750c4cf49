/**
 * What a connection logs in with, and how it gets another login when the broker refuses one: a device credential
 * (DeviceCredential mode) or tokens (Token mode). The connection asks its login to sign each CONNECT and, on a
 * refusal, to ask its source again; the login judges the answer (ladder.ts's verdicts) and keeps it until the
 * connection uses it. Tokens are also renewed in session (token-rules.ts decides when, token-renewal.ts does it).
 */
import { type CredentialRequest, type CredentialSource, DeviceCredential, type TokenRequest, redact } from '../credential.js';
import { ValidationError } from '../errors.js';
import { raceAbort } from '../util/abort.js';
import { type MqttCredentials, type TokenGrant, signDeviceCredential, signToken } from '../signer/mqtt.js';
import { type SourceVerdict, judgeCredential } from './ladder.js';
import {
  type HeldToken,
  type ResolvedTokenOptions,
  changedTokens,
  checkTokenAnswer,
  deferRenewal,
  dueForRenewal,
  mergeTokens,
  nextRenewalDelay,
  noteExpiry,
  sameTokens,
} from './token-rules.js';

type TokenType = TokenGrant['type'];

/** The part of a login the connection uses for both modes. */
interface LoginBase {
  readonly clientId: string;
  readonly instanceId: string;
  /** The username and password of the next CONNECT. */
  sign(): MqttCredentials;
  /** Every secret this login has held, for scrubbing logs. */
  secrets(): string[];
  /** Ask the source for another login after a refusal; keeps a usable answer for {@link LoginBase.use}. */
  refetch(signal: AbortSignal, code?: number): Promise<SourceVerdict>;
  /** What names the login in logs (no secret). */
  logFields(): Record<string, unknown>;
  /** What the connection's `toJSON` shows of it (no secret). */
  toJSON(): Record<string, unknown>;
}

/** Can this credential be put in a username (signDeviceCredential's rule, checked without signing twice)? */
export function signable(credential: DeviceCredential): boolean {
  return !credential.deviceAccessKeyId.includes('|');
}

/** DeviceCredential mode. */
export class CredentialLogin implements LoginBase {
  readonly mode = 'DeviceCredential' as const;
  readonly clientId: string;
  readonly instanceId: string;
  #current: DeviceCredential;
  #next: DeviceCredential | undefined;
  readonly #source: CredentialSource;
  /**
   * What never goes into an error or a log: the secret and the password of each credential used (a few; an array, not
   * a Set: a gateway holds thousands of logins). Replaced by a copy one longer, not pushed to: a push makes room for
   * 17 (152 bytes a login).
   */
  #secrets: readonly string[] = [];
  /** The ClientId of a credential the source handed out for another device (for the error). */
  foreignClientId: string | undefined;

  constructor(credential: DeviceCredential, source: CredentialSource) {
    this.#current = credential;
    this.#source = source;
    this.clientId = credential.clientId;
    this.instanceId = credential.instanceId;
    this.#keep(credential.deviceAccessKeySecret);
  }

  get current(): DeviceCredential {
    return this.#current;
  }

  sign(): MqttCredentials {
    const signed = signDeviceCredential(this.#current);
    this.#keep(signed.password);
    return signed;
  }

  #keep(secret: string): void {
    if (!this.#secrets.includes(secret)) this.#secrets = this.#secrets.concat(secret);
  }

  secrets(): string[] {
    return [...this.#secrets];
  }

  async refetch(signal: AbortSignal): Promise<SourceVerdict> {
    const rejected = this.#current;
    const request: CredentialRequest = { reason: 'rejected', rejected, signal };
    const answer = await raceAbort(Promise.resolve().then(() => this.#source(request)), `Fetching a credential for ${this.clientId}`, signal);
    // A credential that cannot even be signed (a key with a |) counts as no credential.
    const isCredential = answer instanceof DeviceCredential && signable(answer);
    const verdict = judgeCredential(
      isCredential ? { isCredential, clientId: answer.clientId, sameKeyAsRefused: answer.sameKeyAs(rejected) } : { isCredential },
      this.clientId,
    );
    if (verdict === 'use') this.#next = answer as DeviceCredential;
    if (verdict === 'other-client') this.foreignClientId = (answer as DeviceCredential).clientId;
    return verdict;
  }

  /** Use what {@link CredentialLogin.refetch} kept; the new credential, or `undefined` when there was none. */
  use(): DeviceCredential | undefined {
    const next = this.#next;
    this.#next = undefined;
    if (!next) return undefined;
    this.#current = next;
    this.#keep(next.deviceAccessKeySecret);
    return next;
  }

  logFields(): Record<string, unknown> {
    return { deviceAccessKeyId: this.#current.deviceAccessKeyId };
  }

  toJSON(): Record<string, unknown> {
    return { credential: this.#current.toJSON() };
  }
}

/** Token mode. */
export class TokenLogin implements LoginBase {
  readonly mode = 'Token' as const;
  readonly clientId: string;
  readonly instanceId: string;
  readonly #options: ResolvedTokenOptions;
  #held: HeldToken[];
  /** The answer {@link TokenLogin.refetch} judged usable, merged into what is held when it is used. */
  #next: readonly TokenGrant[] | undefined;
  readonly #secrets = new Set<string>();
  /** Why the last answer was refused as not tokens (for the InvalidToken error). */
  problem: string | undefined;

  constructor(clientId: string, options: ResolvedTokenOptions, tokens: readonly TokenGrant[]) {
    this.clientId = clientId;
    this.instanceId = options.instanceId;
    this.#options = options;
    this.#held = mergeTokens([], tokens, options.now());
    this.#remember(this.#held);
  }

  /** The types held and what is known of their expiry (never the tokens). */
  get tokens(): { type: TokenType; expireTime: number | undefined }[] {
    return this.#held.map(({ type, expireTime }) => ({ type, expireTime }));
  }

  /** Fixed tokens: nothing to renew them with. */
  get fixed(): boolean {
    return this.#options.fixed;
  }

  now(): number {
    return this.#options.now();
  }

  sign(): MqttCredentials {
    const signed = signToken({ accessKeyId: this.#options.accessKeyId, instanceId: this.instanceId, clientId: this.clientId, tokens: this.#held.map(({ type, token }) => ({ type, token })) });
    this.#secrets.add(signed.password);
    return signed;
  }

  secrets(): string[] {
    return [...this.#secrets];
  }

  /**
   * Ask the source after a refused CONNECT (every type held) or an invalid notice (`code`; the notice's type when
   * it named one). `same-key` when the answer leaves exactly the refused tokens, `not-a-credential` when it is not
   * tokens.
   */
  async refetch(signal: AbortSignal, code?: number, type?: TokenType): Promise<SourceVerdict> {
    const refused = this.#held;
    const types = type === undefined ? refused.map((token) => token.type) : [type];
    const answer = await this.#ask({ reason: 'rejected', types, ...(code === undefined ? {} : { code }), signal });
    if (!answer.ok) return 'not-a-credential';
    if (sameTokens(refused, mergeTokens(refused, answer.value, this.now()))) return 'same-key';
    this.#next = answer.value;
    return 'use';
  }

  /** Use what {@link TokenLogin.refetch} kept: the types that changed, or `undefined` when there was nothing. */
  use(): TokenType[] | undefined {
    const answer = this.#next;
    this.#next = undefined;
    if (!answer) return undefined;
    // Merged into what is held now: a renewal may have landed while the source was asked.
    const next = mergeTokens(this.#held, answer, this.now());
    const changed = changedTokens(this.#held, next);
    this.#held = next;
    this.#remember(next);
    return changed.map((token) => token.type);
  }

  /** The types due for renewal now. */
  due(): TokenType[] {
    return dueForRenewal(this.#held, this.now(), this.#options.renewBeforeMs);
  }

  /** ms until the next renewal is due, or `undefined` when none will be (unknown expiry, fixed tokens). */
  nextRenewalDelay(): number | undefined {
    if (this.#options.fixed) return undefined;
    return nextRenewalDelay(this.#held, this.now(), this.#options.renewBeforeMs);
  }

  /** The broker's `$SYS/tokenExpireNotice`: remember an expiry the source did not give. Is the token due now? */
  noteExpireNotice(type: TokenType, expireTime: number): boolean {
    this.#held = noteExpiry(this.#held, type, expireTime);
    const held = this.#held.find((token) => token.type === type);
    // A notice about a token already replaced (its expiry is earlier than the held one's) is old news.
    if (!held || (held.expireTime !== undefined && held.expireTime > expireTime)) return false;
    return this.due().includes(type);
  }

  /**
   * Ask the source for tokens of `types` and hold them at once (a CONNECT from now on uses them). Returns the tokens
   * that changed, to upload; none when the source handed out the same tokens (then the next try is deferred, as after
   * a failure). Throws what the source threw, or `InvalidToken`.
   */
  async renew(types: readonly TokenType[], signal: AbortSignal): Promise<HeldToken[]> {
    let answer: { ok: true; value: readonly TokenGrant[] } | { ok: false };
    try {
      answer = await this.#ask({ reason: 'renew', types, signal });
    } catch (error) {
      this.#held = deferRenewal(this.#held, types, this.now());
      throw error;
    }
    if (!answer.ok) {
      this.#held = deferRenewal(this.#held, types, this.now());
      throw new ValidationError('InvalidToken', `The token source did not return tokens to renew ${types.join(', ')}: ${this.problem ?? 'not tokens'}`);
    }
    const merged = mergeTokens(this.#held, answer.value, this.now());
    const changed = changedTokens(this.#held, merged);
    this.#held = changed.length > 0 ? merged : deferRenewal(merged, types, this.now());
    this.#remember(changed);
    return changed;
  }

  logFields(): Record<string, unknown> {
    return { tokens: this.#held.map((token) => token.type).join(',') };
  }

  toJSON(): Record<string, unknown> {
    return {
      accessKeyId: this.#options.accessKeyId,
      instanceId: this.instanceId,
      tokens: this.#held.map(({ type, token, expireTime }) => ({ type, expireTime, token: redact(token) })),
    };
  }

  /** Ask the source; an answer that is not tokens is `{ ok: false }` (its problem kept), a failure is thrown. */
  async #ask(request: TokenRequest & { signal: AbortSignal }): Promise<{ ok: true; value: readonly TokenGrant[] } | { ok: false }> {
    const { signal } = request;
    const answer = await raceAbort(Promise.resolve().then(() => this.#options.source(request)), `Fetching tokens for ${this.clientId}`, signal);
    try {
      const value = checkTokenAnswer(answer);
      if (value.length === 0) throw new ValidationError('InvalidToken', 'The token source returned no token');
      return { ok: true, value };
    } catch (error) {
      this.problem = (error as Error).message;
      return { ok: false };
    }
  }

  #remember(tokens: readonly Pick<HeldToken, 'token'>[]): void {
    for (const token of tokens) this.#secrets.add(token.token);
  }
}

/** A connection's login. */
export type Login = CredentialLogin | TokenLogin;

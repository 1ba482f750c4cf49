/**
 * Token mode on a live connection: the broker's `$SYS` notices, the renewal timer, and the upload of renewed tokens
 * in session (`$SYS/uploadToken`, QoS 1). The connection owns one (Token mode only) and tells it when a session
 * starts and ends; token-rules.ts decides when a token is due, login.ts holds the tokens.
 */
import type { EventEmitter } from 'node:events';
import { toApsaraMqDeviceError, type ApsaraMqDeviceError } from '../errors.js';
import type { TokenGrant } from '../signer/mqtt.js';
import type { Logger } from '../util/logger.js';
import type { Attempt } from './attempt.js';
import type { InvalidNotice } from './connection-errors.js';
import type { DeviceConnectionEvents } from './connection-types.js';
import type { TokenLogin } from './login.js';
import type { ConnectionState } from './state.js';
import { type HeldToken, TOKEN_NOTICE_TOPICS, parseExpireNotice, parseInvalidNotice, uploadPayload } from './token-rules.js';

/** What the renewal needs of its connection. */
export interface RenewalHost {
  /** Where the connection is now. */
  state(): ConnectionState;
  /** The current attempt (its session may be up or not). */
  attempt(): Attempt | undefined;
  /** Aborted when the connection closes: stops a source still at work. */
  signal(): AbortSignal;
  /** The connection, for its `token-*` events. */
  readonly events: Pick<EventEmitter<DeviceConnectionEvents>, 'emit'>;
  emitError(error: ApsaraMqDeviceError): void;
  log(level: keyof Logger, message: string, fields: Record<string, unknown>): void;
}

/** The Token-mode part of one connection. */
export class TokenRenewal {
  readonly #login: TokenLogin;
  readonly #host: RenewalHost;
  /** The broker's `$SYS/tokenInvalidNotice` on the current session, if one came. */
  #notice: InvalidNotice | undefined;
  #timer: NodeJS.Timeout | undefined;
  #renewing = false;
  /** Uploads waiting for their PUBACK, settled `false` when their session ends first. */
  readonly #uploads = new Set<(acknowledged: boolean) => void>();

  constructor(login: TokenLogin, host: RenewalHost) {
    this.#login = login;
    this.#host = host;
  }

  /** The invalid notice of the current session: what the loss that follows means. */
  get notice(): InvalidNotice | undefined {
    return this.#notice;
  }

  /** Uploads waiting for their PUBACK. */
  get uploading(): number {
    return this.#uploads.size;
  }

  /** A new CONNECT: the last session's notice no longer applies. */
  sessionStarting(): void {
    this.#notice = undefined;
  }

  /** The session ended: its uploads will not be acknowledged. */
  sessionEnded(): void {
    for (const settle of [...this.#uploads]) settle(false);
  }

  /** The connection closes: no more renewals. */
  stop(): void {
    clearTimeout(this.#timer);
    this.sessionEnded();
  }

  /**
   * A message of the session: the broker's notices are the connection's business, not the application's. True when
   * it was one (`invalid` then holds an invalid notice that was understood).
   */
  onMessage(topic: string, payload: Buffer): { handled: boolean; invalid?: InvalidNotice } {
    if (topic === TOKEN_NOTICE_TOPICS.expireNotice) {
      this.#onExpireNotice(payload);
      return { handled: true };
    }
    if (topic === TOKEN_NOTICE_TOPICS.invalidNotice) {
      const invalid = this.#onInvalidNotice(payload);
      return invalid ? { handled: true, invalid } : { handled: true };
    }
    return { handled: false };
  }

  /** Use the tokens a refetch after a refusal kept (they are for the next CONNECT). */
  useRefetched(): void {
    const types = this.#login.use();
    if (!types) return;
    this.#host.log('info', 'tokens replaced', this.#login.logFields());
    this.#host.events.emit('token-renewed', { types, inSession: false });
    this.arm();
  }

  /** Arm the renewal timer for the next token due (not once closed, nor while a renewal is under way). */
  arm(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const login = this.#login;
    if (this.#host.state() === 'closed' || this.#renewing) return;
    const delay = login.nextRenewalDelay();
    if (delay === undefined) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      const due = login.due();
      if (due.length > 0) this.#renew(due);
      else this.arm(); // the clock ran slower than the timer
    }, delay);
    // The session's socket keeps the process up; an idle timer of its own must not.
    this.#timer.unref();
  }

  /** `$SYS/tokenExpireNotice`: renew now when the token is due (else the renewal timer does it when it is). */
  #onExpireNotice(payload: Buffer): void {
    const notice = parseExpireNotice(payload);
    if (!notice) {
      this.#host.log('warn', 'a $SYS/tokenExpireNotice that is not {expireTime, type}: ignored', {});
      return;
    }
    this.#host.log('info', 'token expiring', { type: notice.type, expireTime: notice.expireTime });
    this.#host.events.emit('token-expiring', notice);
    if (this.#login.noteExpireNotice(notice.type, notice.expireTime)) this.#renew(this.#login.due());
    else this.arm();
  }

  /** `$SYS/tokenInvalidNotice`: the broker disconnects next; what the loss means is decided then (by the connection). */
  #onInvalidNotice(payload: Buffer): InvalidNotice | undefined {
    const notice = parseInvalidNotice(payload);
    if (!notice) {
      this.#host.log('warn', 'a $SYS/tokenInvalidNotice that is not {code, type}: ignored', {});
      return undefined;
    }
    this.#notice = notice;
    this.#host.log('warn', 'token invalid', { code: notice.code, type: notice.type });
    this.#host.events.emit('token-invalid', notice);
    return notice;
  }

  /**
   * Renew the tokens of `types`: ask the source, hold the answer at once (a CONNECT from now on uses it) and, with a
   * session up, upload each changed token to `$SYS/uploadToken` and wait for its PUBACK: the session goes on, no
   * reconnect. A failure is reported (`error`) and the renewal tried again later (see token-rules.ts's
   * deferRenewal); the broker's invalid notice and the refusal ladder cover a token that runs out all the same.
   */
  #renew(types: TokenGrant['type'][]): void {
    const login = this.#login;
    const host = this.#host;
    if (login.fixed || this.#renewing || types.length === 0) return;
    const state = host.state();
    if (state === 'closed' || state === 'closing') return;
    this.#renewing = true;
    clearTimeout(this.#timer);
    host.log('info', 'renewing tokens', { types: types.join(',') });
    login
      .renew(types, host.signal())
      .then(async (changed) => {
        if (host.state() === 'closed') return;
        if (changed.length === 0) {
          host.log('warn', 'the token source handed out the same tokens again: renewal deferred', { types: types.join(',') });
          return;
        }
        const attempt = host.attempt();
        const inSession = host.state() === 'online' && attempt?.online === true ? await this.#upload(attempt, changed) : false;
        if (host.state() === 'closed') return; // closed while the upload waited
        host.log('info', inSession ? 'tokens renewed in session' : 'tokens renewed for the next CONNECT', login.logFields());
        host.events.emit('token-renewed', { types: changed.map((token) => token.type), inSession });
      })
      .catch((error: unknown) => {
        if (host.state() === 'closed') return;
        host.emitError(toApsaraMqDeviceError(error));
      })
      .finally(() => {
        this.#renewing = false;
        this.arm();
      });
  }

  /** Upload tokens on the attempt's session, each at QoS 1; true when every PUBACK came on that session. */
  async #upload(attempt: Attempt, tokens: readonly HeldToken[]): Promise<boolean> {
    const acks = tokens.map(
      (token) =>
        new Promise<boolean>((resolve) => {
          const settle = (acknowledged: boolean): void => {
            this.#uploads.delete(settle);
            resolve(acknowledged);
          };
          this.#uploads.add(settle);
          // Straight to the client, past the outbox: a renewal that misses its session is not resent, the next
          // CONNECT carries the new token instead. The connection's close does not wait for it either.
          attempt.client.publish(TOKEN_NOTICE_TOPICS.upload, uploadPayload(token), { qos: 1 }, (error) => settle(!error && attempt === this.#host.attempt()));
        }),
    );
    return (await Promise.all(acks)).every(Boolean);
  }
}

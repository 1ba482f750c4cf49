/**
 * The broker's Token-mode sessions (reference §5.3): which tokens each session holds, what they allow, and when
 * they run out. The rules are token-rules.ts's; this keeps the per-client state, the timers and the revocation hook, and
 * tells the broker (through {@link TokenSessionHost}) when a notice is due or a session must end. It never writes to
 * a socket itself.
 */
import type { Client } from 'aedes';
import {
  TOKEN_INVALID,
  TOKEN_TYPES,
  authorizePublish,
  authorizeSubscribe,
  tokenTimer,
  type TokenCredential,
  type TokenInvalidCode,
  type TokenType,
} from './token-rules.js';
import type { TokenRecord, TokenRegistry } from './token-registry.js';
import { MAX_TIMER_MS } from '../util/backoff.js';

/** The longest delay a Node timer takes; a later event is looked at again when this one fires. */

/** What the broker does for the sessions. */
export interface TokenSessionHost {
  /** Send `$SYS/tokenExpireNotice` for this token of the client's session. */
  expiring(client: Client, record: TokenRecord): void;
  /** End the session: send `$SYS/tokenInvalidNotice` `{code, type}`, then disconnect. Called once per session. */
  invalid(client: Client, code: TokenInvalidCode, type: TokenType): void;
}

/** Settings of the sessions. */
export interface TokenSessionPolicy {
  /** The emulator's clock, ms since the epoch (the registry's too). */
  readonly now: () => number;
  /** `tokenExpireNoticeLeadMs`. */
  readonly leadMs: number;
  /** The emulated instance: uploaded tokens must be of it. */
  readonly instanceId: string;
}

/** The outcome of a PUBLISH, SUBSCRIBE or upload check. */
export type TokenOutcome =
  | { readonly allowed: true }
  /**
   * Refused: the notice's code and type; `rule` is the stats key (4 and 5 `tokenResource`, the others
   * `tokenInvalid`). `repeated`: the session was already refused and told (a packet that came behind the one that
   * ended it): refuse it without a second notice.
   */
  | {
    readonly allowed: false;
    readonly code: TokenInvalidCode;
    readonly type: TokenType;
    readonly rule: 'tokenResource' | 'tokenInvalid';
    readonly repeated: boolean;
  };

type Refused = Extract<TokenOutcome, { allowed: false }>;

interface Held {
  record: TokenRecord;
  noticeSent: boolean;
}

interface Session {
  /** By type: a session holds at most one token of each. */
  readonly tokens: Map<TokenType, Held>;
  timer: NodeJS.Timeout | undefined;
  /** Condemned: its invalid notice is out (or it was refused); nothing more is sent or armed for it. */
  closing: boolean;
  /** Why it was condemned, for packets that come behind. */
  refusal: Refused | undefined;
}

/** Every Token-mode session of one broker. */
export class TokenSessions {
  readonly #registry: TokenRegistry;
  readonly #policy: TokenSessionPolicy;
  readonly #host: TokenSessionHost;
  readonly #sessions = new WeakMap<Client, Session>();
  /** Sessions whose CONNACK is out and that have not ended: revocation and {@link TokenSessions.checkAll} look here. */
  readonly #live = new Set<Client>();
  readonly #stopRevoke: () => void;

  constructor(registry: TokenRegistry, policy: TokenSessionPolicy, host: TokenSessionHost) {
    this.#registry = registry;
    this.#policy = policy;
    this.#host = host;
    this.#stopRevoke = registry.onRevoke((record) => {
      for (const client of this.#live) {
        const session = this.#sessions.get(client);
        const held = session && [...session.tokens].find(([, h]) => h.record.id === record.id);
        if (session && held) this.#condemn(client, session, TOKEN_INVALID.revoked, held[0]);
      }
    });
  }

  /** A Token-mode CONNECT was accepted with these tokens (the records {@link TokenRegistry.login} returned). */
  admit(client: Client, records: readonly TokenRecord[]): void {
    const tokens = new Map<TokenType, Held>();
    for (const record of records) tokens.set(record.type, { record, noticeSent: false });
    this.#sessions.set(client, { tokens, timer: undefined, closing: false, refusal: undefined });
  }

  /** Is this client a Token-mode session? */
  has(client: Client | null | undefined): client is Client {
    return client !== null && client !== undefined && this.#sessions.has(client);
  }

  /** The CONNACK is out: from now on notices may be sent. Checks the tokens at once and arms the timer. */
  ready(client: Client): void {
    const session = this.#sessions.get(client);
    if (!session || session.closing) return;
    this.#live.add(client);
    this.#evaluate(client, session);
  }

  /** The connection ended. */
  end(client: Client): void {
    const session = this.#sessions.get(client);
    if (!session) return;
    clearTimeout(session.timer);
    session.closing = true;
    this.#live.delete(client);
  }

  /** May the session PUBLISH to `topic` (`W`) or SUBSCRIBE to `filter` (`R`)? Its tokens are checked first. */
  authorize(client: Client, permission: 'R' | 'W', topic: string): TokenOutcome {
    const session = this.#sessions.get(client);
    if (!session) return { allowed: true };
    if (session.refusal) return { ...session.refusal, repeated: true };
    const stale = this.#stale(session);
    if (stale) return this.#refuse(session, stale.code, stale.type, 'tokenInvalid');
    const grants = [...session.tokens.values()].map((held) => held.record);
    const verdict = permission === 'W' ? authorizePublish(grants, topic) : authorizeSubscribe(grants, topic);
    if (verdict.allowed) return verdict;
    // A session always holds a token: the verdict names one.
    return this.#refuse(session, verdict.code, verdict.type ?? firstType(session), 'tokenResource');
  }

  /**
   * `$SYS/uploadToken`: verify the token (of this instance, valid, of the type it claims) and make it the session's
   * token of that type, replacing the one it held or adding it. The expire notice of the new token is looked at
   * after the caller's acknowledgement has been written (the next turn of the event loop).
   */
  upload(client: Client, credential: TokenCredential): TokenOutcome {
    const session = this.#sessions.get(client);
    if (!session) return { allowed: true };
    if (session.refusal) return { ...session.refusal, repeated: true };
    const result = this.#registry.verify(this.#policy.instanceId, credential);
    if (!result.ok) return this.#refuse(session, result.code, credential.type, 'tokenInvalid');
    session.tokens.set(credential.type, { record: result.record, noticeSent: false });
    setImmediate(() => {
      if (this.#live.has(client)) this.#evaluate(client, session);
    });
    return { allowed: true };
  }

  /** The tokens a session holds now, by type, as records (never the token strings). */
  held(client: Client): TokenRecord[] {
    return [...(this.#sessions.get(client)?.tokens.values() ?? [])].map((held) => held.record);
  }

  /** Look at every live session now (a test moved the `now` clock): notices that are due, tokens that ran out. */
  checkAll(): void {
    for (const client of [...this.#live]) {
      const session = this.#sessions.get(client);
      if (session) this.#evaluate(client, session);
    }
  }

  /** Stop every timer and the revocation hook (the broker is closing). */
  close(): void {
    this.#stopRevoke();
    for (const client of this.#live) clearTimeout(this.#sessions.get(client)?.timer);
    this.#live.clear();
  }

  /** The first token of the session (in the order R, W, RW) that is no longer valid, with the code. */
  #stale(session: Session): { code: TokenInvalidCode; type: TokenType } | undefined {
    for (const type of TOKEN_TYPES) {
      const held = session.tokens.get(type);
      if (!held) continue;
      const check = this.#registry.recheck(held.record);
      if (!check.ok) return { code: check.code, type };
      held.record = check.record;
    }
    return undefined;
  }

  /** The session is refused: it ends (the caller sends the notice and disconnects), and no timer fires for it. */
  #refuse(session: Session, code: TokenInvalidCode, type: TokenType, rule: 'tokenResource' | 'tokenInvalid'): Refused {
    const refusal: Refused = { allowed: false, code, type, rule, repeated: false };
    session.closing = true;
    session.refusal = refusal;
    clearTimeout(session.timer);
    return refusal;
  }

  #condemn(client: Client, session: Session, code: TokenInvalidCode, type: TokenType): void {
    if (session.closing) return;
    this.#refuse(session, code, type, 'tokenInvalid');
    this.#live.delete(client);
    this.#host.invalid(client, code, type);
  }

  /** Check the tokens, send the notices that are due, and arm the timer for the next event. */
  #evaluate(client: Client, session: Session): void {
    if (session.closing) return;
    clearTimeout(session.timer);
    session.timer = undefined;
    const stale = this.#stale(session);
    if (stale) {
      this.#condemn(client, session, stale.code, stale.type);
      return;
    }
    const now = Math.floor(this.#policy.now());
    let next = Number.POSITIVE_INFINITY;
    for (const type of TOKEN_TYPES) {
      const held = session.tokens.get(type);
      if (!held) continue;
      let timer = tokenTimer(now, held.record.expireTime, this.#policy.leadMs, held.noticeSent);
      if (timer.due === 'expired') {
        this.#condemn(client, session, TOKEN_INVALID.expired, type);
        return;
      }
      if (timer.due === 'notice') {
        held.noticeSent = true;
        this.#host.expiring(client, held.record);
        timer = tokenTimer(now, held.record.expireTime, this.#policy.leadMs, true);
      }
      if (timer.due === 'later') next = Math.min(next, timer.inMs);
    }
    if (Number.isFinite(next)) {
      session.timer = setTimeout(() => this.#evaluate(client, session), Math.min(Math.max(next, 0), MAX_TIMER_MS));
      session.timer.unref();
    }
  }
}

function firstType(session: Session): TokenType {
  return TOKEN_TYPES.find((type) => session.tokens.has(type)) ?? 'RW';
}

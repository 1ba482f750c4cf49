import { inspect } from 'node:util';
import { redact } from '../credential.js';

/** The permission of a token as a Token-mode password names it: `R` subscribe, `W` publish, `RW` both. */
export type TokenType = 'R' | 'W' | 'RW';

/**
 * A Token-mode token issued by ApplyToken. The token string is a credential: it is held privately and redacted from
 * `toString`, `toJSON` and `util.inspect`; read `token` when you mean to hand it to a device.
 */
export class IssuedToken {
  readonly instanceId: string;
  readonly type: TokenType;
  /** The topics it covers, sorted. */
  readonly resources: readonly string[];
  /** Expiry asked for, ms since the epoch (the service caps it at 30 days). */
  readonly expireTime: number;
  readonly #token: string;

  constructor(token: string, init: { instanceId: string; type: TokenType; resources: readonly string[]; expireTime: number }) {
    this.#token = token;
    this.instanceId = init.instanceId;
    this.type = init.type;
    this.resources = Object.freeze([...init.resources]);
    this.expireTime = init.expireTime;
    Object.freeze(this);
  }

  /** The token, in clear. */
  get token(): string {
    return this.#token;
  }

  toJSON(): Record<string, unknown> {
    return { instanceId: this.instanceId, type: this.type, resources: this.resources, expireTime: this.expireTime, token: redact(this.#token) };
  }

  toString(): string {
    return `IssuedToken(${this.type}, ${this.resources.join(',')})`;
  }

  [inspect.custom](): string {
    return `IssuedToken ${inspect(this.toJSON())}`;
  }
}

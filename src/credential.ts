import { inspect } from 'node:util';
import { ValidationError } from './errors.js';
import type { TokenGrant } from './signer/mqtt.js';

/** Longest ClientId the service accepts. */
export const MAX_CLIENT_ID_LENGTH = 64;

const PART = /^[A-Za-z0-9_-]+$/;
const GROUP_ID = /^GID[_-][A-Za-z0-9_-]+$/;

/**
 * Check a ClientId against the service's grammar: `<GroupId>@@@<DeviceId>`, the GroupId starting with
 * `GID_` or `GID-`, both parts only letters, digits, `-` and `_`, at most 64 characters in all.
 * Returns a sentence saying what is wrong, or `undefined` when it is valid.
 */
export function clientIdProblem(clientId: unknown): string | undefined {
  if (typeof clientId !== 'string') return 'ClientId must be a string';
  if (clientId.length === 0) return 'ClientId is empty';
  if (clientId.length > MAX_CLIENT_ID_LENGTH) {
    return `ClientId is ${clientId.length} characters long; at most ${MAX_CLIENT_ID_LENGTH} are allowed`;
  }
  // eslint-disable-next-line no-control-regex
  if (/[^\x21-\x7e]/.test(clientId)) return 'ClientId has a non-ASCII, space or control character';
  const at = clientId.indexOf('@@@');
  if (at < 0) return 'ClientId has no "@@@" separating the GroupId from the DeviceId (expected GID_<group>@@@<device>)';
  const group = clientId.slice(0, at);
  const device = clientId.slice(at + 3);
  if (!GROUP_ID.test(group)) return `ClientId's GroupId "${group}" must start with GID_ or GID- and hold only letters, digits, - and _`;
  if (!PART.test(device)) return `ClientId's DeviceId "${device}" must be non-empty and hold only letters, digits, - and _`;
  return undefined;
}

/** Throw {@link ValidationError} `InvalidClientId` unless the ClientId is valid. */
export function assertClientId(clientId: unknown): asserts clientId is string {
  const problem = clientIdProblem(clientId);
  if (problem) throw new ValidationError('InvalidClientId', `Invalid ClientId ${printable(clientId)}: ${problem}`);
}

/** The GroupId part of a valid ClientId. */
export function groupIdOf(clientId: string): string {
  return clientId.slice(0, clientId.indexOf('@@@'));
}

/** Returns a sentence saying what is wrong with a GroupId (`GID_` or `GID-`, then letters, digits, - and _), or `undefined`. */
export function groupIdProblem(groupId: unknown): string | undefined {
  if (typeof groupId !== 'string' || groupId.length === 0) return 'GroupId is empty';
  // The console creates GroupIds of 7 to 64 characters; we accept every GroupId a valid ClientId can hold, so a
  // device that can register can also be listed and provisioned.
  if (groupId.length > 64 - 4) return `GroupId is ${groupId.length} characters long; with "@@@" and a DeviceId it must fit a 64-character ClientId`;
  if (!GROUP_ID.test(groupId)) return 'GroupId must start with GID_ or GID- and hold only letters, digits, - and _';
  return undefined;
}

/** Throw {@link ValidationError} `InvalidGroupId` unless the GroupId is valid. */
export function assertGroupId(groupId: unknown): asserts groupId is string {
  const problem = groupIdProblem(groupId);
  if (problem) throw new ValidationError('InvalidGroupId', `Invalid GroupId ${printable(groupId)}: ${problem}`);
}

/** Throw {@link ValidationError} `InvalidInstanceId` unless it is a plausible instance id. */
export function assertInstanceId(instanceId: unknown): asserts instanceId is string {
  if (typeof instanceId !== 'string' || instanceId.trim().length === 0) {
    throw new ValidationError('InvalidInstanceId', 'The instance id is blank: pass the id of your ApsaraMQ for MQTT instance (for example mqtt-cn-xxxxxxxx)');
  }
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(instanceId)) {
    throw new ValidationError('InvalidInstanceId', `Invalid instance id ${printable(instanceId)}: it must start with a letter or digit and hold only letters, digits, '.', '-' and '_', at most 64 characters`);
  }
}

function printable(value: unknown): string {
  if (typeof value !== 'string') return `(${typeof value})`;
  const shown = value.length > 80 ? `${value.slice(0, 80)}…` : value;
  return JSON.stringify(shown);
}

/**
 * Redact a secret for display: its first 6 characters, then `…****`. Short values become `****`.
 * @example redact('DC.BJMkn4eMQJK2vaApTSxxxx') === 'DC.BJM…****'
 */
export function redact(secret: string | undefined): string {
  if (!secret) return '';
  return secret.length >= 16 ? `${secret.slice(0, 6)}…****` : '****';
}

/** The DeviceCredential object exactly as the OpenAPI sends it (the wire shape). Holds the secret in clear. */
export interface DeviceCredentialWire {
  ClientId: string;
  InstanceId: string;
  DeviceAccessKeyId: string;
  DeviceAccessKeySecret: string;
  CreateTime: number;
  UpdateTime: number;
}

const WIRE_FIELDS = ['ClientId', 'InstanceId', 'DeviceAccessKeyId', 'DeviceAccessKeySecret'] as const;

/**
 * One device's credential. The secret is held privately and is redacted from `toString`, `toJSON` and
 * `util.inspect`; use {@link DeviceCredential.toWire} when you really mean to write it out.
 */
export class DeviceCredential {
  readonly clientId: string;
  readonly instanceId: string;
  readonly deviceAccessKeyId: string;
  /** Creation time, ms since the epoch. */
  readonly createTime: number;
  /** Last update time, ms since the epoch. */
  readonly updateTime: number;
  readonly #secret: string;

  constructor(init: {
    clientId: string;
    instanceId: string;
    deviceAccessKeyId: string;
    deviceAccessKeySecret: string;
    createTime?: number;
    updateTime?: number;
  }) {
    assertClientId(init.clientId);
    assertInstanceId(init.instanceId);
    for (const [name, value] of [['deviceAccessKeyId', init.deviceAccessKeyId], ['deviceAccessKeySecret', init.deviceAccessKeySecret]] as const) {
      if (typeof value !== 'string' || value.length === 0) {
        throw new ValidationError('InvalidCredential', `The device credential for ${init.clientId} has no ${name}`);
      }
    }
    this.clientId = init.clientId;
    this.instanceId = init.instanceId;
    this.deviceAccessKeyId = init.deviceAccessKeyId;
    this.#secret = init.deviceAccessKeySecret;
    this.createTime = init.createTime ?? 0;
    this.updateTime = init.updateTime ?? this.createTime;
    Object.freeze(this);
  }

  /** The device secret, in clear. */
  get deviceAccessKeySecret(): string {
    return this.#secret;
  }

  /**
   * Build from the API's DeviceCredential object (or what `register` printed: either the whole response or
   * the bare object). Throws {@link ValidationError} `InvalidCredential` naming each missing field.
   */
  static fromWire(value: unknown, where = 'device credential'): DeviceCredential {
    let body: unknown = value;
    if (isRecord(body) && isRecord(body['DeviceCredential'])) body = body['DeviceCredential'];
    if (!isRecord(body)) throw new ValidationError('InvalidCredential', `The ${where} is not a JSON object`);
    const missing = WIRE_FIELDS.filter((k) => typeof body[k] !== 'string' || body[k] === '');
    if (missing.length > 0) {
      throw new ValidationError('InvalidCredential', `The ${where} lacks ${missing.join(', ')}`);
    }
    const time = (k: string): number | undefined => {
      const v = body[k];
      if (v === undefined || v === null) return undefined;
      // json-bigint hands out BigNumber objects (null prototype chain aside, they have toString) for long integers.
      const text = typeof v === 'number' || typeof v === 'string' ? v : typeof (v as { toString?: unknown }).toString === 'function' ? (v as { toString(): string }).toString() : Number.NaN;
      const n = Number(text);
      if (!Number.isFinite(n)) throw new ValidationError('InvalidCredential', `The ${where} has a non-numeric ${k}`);
      return n;
    };
    const createTime = time('CreateTime');
    const updateTime = time('UpdateTime');
    return new DeviceCredential({
      clientId: body['ClientId'] as string,
      instanceId: body['InstanceId'] as string,
      deviceAccessKeyId: body['DeviceAccessKeyId'] as string,
      deviceAccessKeySecret: body['DeviceAccessKeySecret'] as string,
      ...(createTime === undefined ? {} : { createTime }),
      ...(updateTime === undefined ? {} : { updateTime }),
    });
  }

  /** The wire shape, secret included: for the credential store and the CLI output of register/get/refresh. */
  toWire(): DeviceCredentialWire {
    return {
      ClientId: this.clientId,
      InstanceId: this.instanceId,
      DeviceAccessKeyId: this.deviceAccessKeyId,
      DeviceAccessKeySecret: this.#secret,
      CreateTime: this.createTime,
      UpdateTime: this.updateTime,
    };
  }

  /** Same credential (same key pair) as another? */
  sameKeyAs(other: DeviceCredential | undefined): boolean {
    return !!other && other.deviceAccessKeyId === this.deviceAccessKeyId && other.#secret === this.#secret;
  }

  toJSON(): Record<string, unknown> {
    return {
      clientId: this.clientId,
      instanceId: this.instanceId,
      deviceAccessKeyId: this.deviceAccessKeyId,
      deviceAccessKeySecret: redact(this.#secret),
      createTime: this.createTime,
      updateTime: this.updateTime,
    };
  }

  toString(): string {
    return `DeviceCredential(${this.clientId}, ${this.deviceAccessKeyId})`;
  }

  [inspect.custom](): string {
    return `DeviceCredential ${inspect(this.toJSON())}`;
  }
}

/** An Alibaba Cloud account AccessKey (the registrar's key). Redacted from logs, JSON and inspect. */
export class AccountCredentials {
  readonly accessKeyId: string;
  readonly #secret: string;
  readonly #token: string | undefined;

  constructor(accessKeyId: string, accessKeySecret: string, securityToken?: string) {
    this.accessKeyId = accessKeyId;
    this.#secret = accessKeySecret;
    this.#token = securityToken || undefined;
    Object.freeze(this);
  }

  get accessKeySecret(): string {
    return this.#secret;
  }

  /** STS security token, when the keys are temporary. */
  get securityToken(): string | undefined {
    return this.#token;
  }

  toJSON(): Record<string, unknown> {
    return {
      accessKeyId: this.accessKeyId,
      accessKeySecret: redact(this.#secret),
      ...(this.#token ? { securityToken: redact(this.#token) } : {}),
    };
  }

  toString(): string {
    return `AccountCredentials(${this.accessKeyId})`;
  }

  [inspect.custom](): string {
    return `AccountCredentials ${inspect(this.toJSON())}`;
  }
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Why a {@link CredentialSource} is asked for a credential. */
export interface CredentialRequest {
  /** `connect`: the first CONNECT (a cached credential is fine). `rejected`: the broker refused `rejected`; look further than the cache. */
  reason: 'connect' | 'rejected';
  /** The credential the broker just refused, when `reason` is `rejected`. */
  rejected?: DeviceCredential;
  signal?: AbortSignal;
}

/**
 * Where a connector gets its credential: a static credential wrapped in a function, a provisioner, or
 * any `() => Promise<DeviceCredential>` of the user's.
 */
export type CredentialSource = (request: CredentialRequest) => Promise<DeviceCredential>;

/** Why a {@link TokenSource} is asked for tokens. */
export interface TokenRequest {
  /**
   * `connect`: the first CONNECT. `renew`: the tokens of `types` expire soon (their `renewBeforeMs` window began, or
   * the broker sent `$SYS/tokenExpireNotice`); the answer is uploaded in session. `rejected`: the broker refused the
   * CONNECT, or said a token is invalid (`code`, the `$SYS/tokenInvalidNotice` code: 1 forged, 2 expired, 3 revoked,
   * 8 bad signature, -1 account); the answer is used for the next CONNECT.
   */
  reason: 'connect' | 'renew' | 'rejected';
  /** The types to renew, or that were refused (every type held after a refused CONNECT). Empty for `connect`. */
  types: readonly TokenGrant['type'][];
  /** `rejected` after `$SYS/tokenInvalidNotice`: its code. */
  code?: number;
  /** Aborted when the connection closes (or the caller's signal fires): stop asking. */
  signal?: AbortSignal;
}

/**
 * Where a Token-mode connection gets its tokens: typically a call to the application server that applies for them
 * (the device never holds the account secret). It answers with tokens (an `IssuedToken` from
 * `Provisioner.applyToken` fits, or `{ type, token, expireTime? }`), at most one per type; the answer replaces the
 * tokens of the types it names, the others are kept. `expireTime` (ms since the epoch) lets the connection renew
 * before expiry by itself; without it the connection renews when the broker's `$SYS/tokenExpireNotice` says when.
 */
export type TokenSource = (request: TokenRequest) => Promise<readonly TokenGrant[]>;

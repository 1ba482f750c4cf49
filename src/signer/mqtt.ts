import type { createHmac as CreateHmac } from 'node:crypto';
import { createRequire } from 'node:module';
import { assertClientId, assertInstanceId, type DeviceCredential } from '../credential.js';
import { ValidationError } from '../errors.js';

/** The authentication modes a CONNECT can use. */
export type AuthMode = 'DeviceCredential' | 'Signature' | 'Token';

/** What goes into the MQTT CONNECT packet. */
export interface MqttCredentials {
  username: string;
  password: string;
  clientId: string;
}

/**
 * Base64(HMAC-SHA1(key = secret, data = clientId)): the password of the DeviceCredential and Signature modes.
 * UTF-8 in, standard Base64 with padding out (not hex: a common mistake in peer code).
 * @example hmacPassword('XXXXX', 'GID_test@@@0001') === 'bGdOc9YXqL/kM2hYBkXR0I2IPOE='
 */
export function hmacPassword(secret: string, clientId: string): string {
  return hmac()('sha1', secret).update(clientId, 'utf8').digest('base64');
}

let createHmac: typeof CreateHmac | undefined;

/**
 * node:crypto, loaded on the first signature rather than at import: loading it costs about as much as the rest of
 * the device entry together (≈8 ms), which a device would pay on every start even before it connects
 * (bench/import.bench.mjs). `require` keeps signing synchronous.
 */
function hmac(): typeof CreateHmac {
  createHmac ??= (createRequire(import.meta.url)('node:crypto') as typeof import('node:crypto')).createHmac;
  return createHmac;
}

function checkKeyPart(name: string, value: string): void {
  if (typeof value !== 'string' || value.length === 0) {
    throw new ValidationError('InvalidCredential', `${name} is empty`);
  }
  if (value.includes('|')) throw new ValidationError('InvalidCredential', `${name} must not contain "|"`);
}

/**
 * DeviceCredential mode: username `DeviceCredential|<DeviceAccessKeyId>|<InstanceId>`, password
 * Base64(HMAC-SHA1(DeviceAccessKeySecret, ClientId)).
 */
export function signDeviceCredential(credential: Pick<DeviceCredential, 'clientId' | 'instanceId' | 'deviceAccessKeyId' | 'deviceAccessKeySecret'>): MqttCredentials {
  assertClientId(credential.clientId);
  assertInstanceId(credential.instanceId);
  checkKeyPart('DeviceAccessKeyId', credential.deviceAccessKeyId);
  checkKeyPart('DeviceAccessKeySecret', credential.deviceAccessKeySecret);
  return {
    username: `DeviceCredential|${credential.deviceAccessKeyId}|${credential.instanceId}`,
    password: hmacPassword(credential.deviceAccessKeySecret, credential.clientId),
    clientId: credential.clientId,
  };
}

/**
 * Signature mode (account AccessKey): username `Signature|<AccessKeyId>|<InstanceId>`, password
 * Base64(HMAC-SHA1(AccessKeySecret, ClientId)). Puts the account key on the device: prefer DeviceCredential.
 */
export function signSignature(input: { accessKeyId: string; accessKeySecret: string; instanceId: string; clientId: string }): MqttCredentials {
  assertClientId(input.clientId);
  assertInstanceId(input.instanceId);
  checkKeyPart('AccessKeyId', input.accessKeyId);
  checkKeyPart('AccessKeySecret', input.accessKeySecret);
  return {
    username: `Signature|${input.accessKeyId}|${input.instanceId}`,
    password: hmacPassword(input.accessKeySecret, input.clientId),
    clientId: input.clientId,
  };
}

/** One token of Token mode, by permission type (`R` subscribe, `W` publish, `RW` both). `IssuedToken` is one. */
export interface TokenGrant {
  type: 'R' | 'W' | 'RW';
  token: string;
  /**
   * When it expires, ms since the epoch, if known. Not part of the password (signToken ignores it); a token source
   * that gives it lets the connector renew the token before it expires.
   */
  expireTime?: number;
}

/**
 * Token mode: username `Token|<AccessKeyId>|<InstanceId>`, password `<type>|<token>` per token joined by `|`,
 * e.g. `R|abc|W|def`. At most one token per type.
 */
export function signToken(input: { accessKeyId: string; instanceId: string; clientId: string; tokens: readonly TokenGrant[] }): MqttCredentials {
  assertClientId(input.clientId);
  assertInstanceId(input.instanceId);
  checkKeyPart('AccessKeyId', input.accessKeyId);
  if (input.tokens.length === 0) throw new ValidationError('InvalidOption', 'Token mode needs at least one token');
  const seen = new Set<string>();
  for (const t of input.tokens) {
    if (!['R', 'W', 'RW'].includes(t.type)) throw new ValidationError('InvalidOption', `Token type must be R, W or RW, not ${JSON.stringify(t.type)}`);
    if (seen.has(t.type)) throw new ValidationError('InvalidOption', `Only one token per type is allowed; ${t.type} is given twice`);
    seen.add(t.type);
    checkKeyPart(`the ${t.type} token`, t.token);
  }
  return {
    username: `Token|${input.accessKeyId}|${input.instanceId}`,
    password: input.tokens.map((t) => `${t.type}|${t.token}`).join('|'),
    clientId: input.clientId,
  };
}

/** A CONNECT username split into its parts, or `undefined` when it is not `<Mode>|<KeyId>|<InstanceId>`. */
export function parseUsername(username: string | undefined): { mode: string; keyId: string; instanceId: string } | undefined {
  if (!username) return undefined;
  const parts = username.split('|');
  if (parts.length !== 3) return undefined;
  const [mode, keyId, instanceId] = parts as [string, string, string];
  if (!mode || !keyId || !instanceId) return undefined;
  return { mode, keyId, instanceId };
}

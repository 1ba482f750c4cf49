import { homedir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { AccountCredentials } from '../credential.js';
import { ConfigurationError } from '../errors.js';

/** Environment variable holding the account AccessKey ID (the Alibaba Cloud CLI/SDK convention). */
export const ENV_ACCESS_KEY_ID = 'ALIBABA_CLOUD_ACCESS_KEY_ID';
/** Environment variable holding the account AccessKey secret. */
export const ENV_ACCESS_KEY_SECRET = 'ALIBABA_CLOUD_ACCESS_KEY_SECRET';
/** Environment variable holding an STS security token, when the AccessKey is temporary. */
export const ENV_SECURITY_TOKEN = 'ALIBABA_CLOUD_SECURITY_TOKEN';
/** Environment variable overriding the credential store directory. */
export const ENV_STORE_DIR = 'APSARAMQ_DEVICE_STORE';

/** Account keys passed explicitly; any left out are looked up in the environment as a pair (see {@link resolveAccountCredentials}). */
export interface AccountKeyOptions {
  accessKeyId?: string;
  accessKeySecret?: string;
  securityToken?: string;
}

/**
 * The account AccessKey to sign OpenAPI calls with.
 *
 * When `accessKeyId` or `accessKeySecret` is passed, both must be (an id from one place and a secret from another
 * is never what was meant); otherwise all three come from `ALIBABA_CLOUD_ACCESS_KEY_ID`,
 * `ALIBABA_CLOUD_ACCESS_KEY_SECRET` and (optional) `ALIBABA_CLOUD_SECURITY_TOKEN`. Empty strings count as missing.
 * @throws ConfigurationError `MissingAccessKey`, naming what is missing.
 */
export function resolveAccountCredentials(options: AccountKeyOptions, env: NodeJS.ProcessEnv): AccountCredentials {
  const explicit = options.accessKeyId !== undefined || options.accessKeySecret !== undefined;
  const id = explicit ? options.accessKeyId : env[ENV_ACCESS_KEY_ID];
  const secret = explicit ? options.accessKeySecret : env[ENV_ACCESS_KEY_SECRET];
  const token = explicit ? options.securityToken : env[ENV_SECURITY_TOKEN];
  const missing: string[] = [];
  if (!id) missing.push(explicit ? 'accessKeyId' : ENV_ACCESS_KEY_ID);
  if (!secret) missing.push(explicit ? 'accessKeySecret' : ENV_ACCESS_KEY_SECRET);
  if (!id || !secret) {
    const where = explicit ? 'The options lack' : 'The environment lacks';
    throw new ConfigurationError('MissingAccessKey', `${where} ${missing.join(' and ')}: the account AccessKey is needed to call the OpenAPI`);
  }
  return new AccountCredentials(id, secret, token || undefined);
}

/**
 * Where {@link FileCredentialStore} keeps credentials by default: `$APSARAMQ_DEVICE_STORE` when set, else
 * `$XDG_CONFIG_HOME/apsaramq-device/credentials`, else `~/.config/apsaramq-device/credentials`.
 * A relative `XDG_CONFIG_HOME` is ignored, as the XDG specification says.
 * @param env - @default process.env
 */
export function defaultStoreDir(env: NodeJS.ProcessEnv = process.env): string {
  const explicit = env[ENV_STORE_DIR];
  if (explicit) return explicit;
  const xdg = env['XDG_CONFIG_HOME'];
  const configHome = xdg && isAbsolute(xdg) ? xdg : join(env['HOME'] || homedir(), '.config');
  return join(configHome, 'apsaramq-device', 'credentials');
}

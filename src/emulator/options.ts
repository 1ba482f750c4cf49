import { assertInstanceId } from '../credential.js';
import { ValidationError, isApsaraMqDeviceError } from '../errors.js';
import type { ErrorStatusMode } from './api-errors.js';
import { BASE36_LOWER, BASE62, randomString } from './crypto.js';

/** What RegisterDeviceCredential does for a ClientId that already has a credential (reference §0). */
export type ReRegisterPolicy = 'rotate' | 'reject';

/** Options of `startEmulator`. Every one is optional; see {@link EMULATOR_DEFAULTS}. */
export interface EmulatorOptions {
  /** Interface every server binds to. Default `127.0.0.1`. */
  host?: string;
  /** MQTT over TCP port; 0 (default) picks a free port. */
  mqttPort?: number;
  /** MQTT over WebSocket port (path `/mqtt`); 0 (default) picks a free port; `false` turns it off. */
  wsPort?: number | false;
  /** OpenAPI HTTP port; 0 (default) picks a free port. */
  apiPort?: number;
  /** The emulated instance. Else env `APSARAMQ_INSTANCE_ID`, else a generated `mqtt-emu-<8 base36>`. */
  instanceId?: string;
  /** The account AccessKeyId. Else env `ALIBABA_CLOUD_ACCESS_KEY_ID`, else a generated `LTAI` + 20 base62. */
  accessKeyId?: string;
  /** The account AccessKeySecret. Else env `ALIBABA_CLOUD_ACCESS_KEY_SECRET`, else 30 generated base62. */
  accessKeySecret?: string;
  /** Environment to read the three values above from. Default `process.env`; pass `{}` to get generated values. */
  env?: NodeJS.ProcessEnv;
  /** Register on an existing ClientId: `rotate` (latest wins, default) or `reject` with 400 `DeviceCredentialExsit`. */
  reRegister?: ReRegisterPolicy;
  /** `InternalError`/`SystemOverFlow` as 417/403 (`remapped`, default) or 500/500 (`legacy`). */
  errorStatuses?: ErrorStatusMode;
  /** API calls per second per AccessKeyId (default 500); excess gets 400 `Throttling.User`. A positive integer or Infinity. */
  qpsLimit?: number;
  /** Most credentials per instance (default Infinity); past it Register gets 400 `DeviceCredentialNumExceed`. */
  credentialQuota?: number;
  /** Largest accepted distance of a request's Timestamp from the emulator's clock, in ms. Default 15 min. */
  timestampWindowMs?: number;
  /** How long a SignatureNonce stays used, in ms. Default 15 min. */
  nonceWindowMs?: number;
  /** The clock (ms since the epoch) for Timestamp and nonce checks and CreateTime/UpdateTime. Default `Date.now`. */
  now?: () => number;
}

/** The defaults of every option that has a fixed default. */
export const EMULATOR_DEFAULTS = Object.freeze({
  host: '127.0.0.1',
  mqttPort: 0,
  wsPort: 0,
  apiPort: 0,
  reRegister: 'rotate',
  errorStatuses: 'remapped',
  qpsLimit: 500,
  credentialQuota: Number.POSITIVE_INFINITY,
  timestampWindowMs: 15 * 60_000,
  nonceWindowMs: 15 * 60_000,
} as const satisfies Partial<EmulatorOptions>);

/** Environment variables consulted when the matching option is absent. */
export const EMULATOR_ENV = Object.freeze({
  instanceId: 'APSARAMQ_INSTANCE_ID',
  accessKeyId: 'ALIBABA_CLOUD_ACCESS_KEY_ID',
  accessKeySecret: 'ALIBABA_CLOUD_ACCESS_KEY_SECRET',
} as const);

/** Every option resolved and validated: what the emulator's parts are built from. */
export interface ResolvedEmulatorOptions {
  readonly host: string;
  readonly mqttPort: number;
  readonly wsPort: number | false;
  readonly apiPort: number;
  readonly instanceId: string;
  readonly accessKeyId: string;
  readonly accessKeySecret: string;
  readonly reRegister: ReRegisterPolicy;
  readonly errorStatuses: ErrorStatusMode;
  readonly qpsLimit: number;
  readonly credentialQuota: number;
  readonly timestampWindowMs: number;
  readonly nonceWindowMs: number;
  readonly now: () => number;
}

const KNOWN_OPTIONS: ReadonlySet<string> = new Set<keyof EmulatorOptions>([
  'host', 'mqttPort', 'wsPort', 'apiPort', 'instanceId', 'accessKeyId', 'accessKeySecret', 'env',
  'reRegister', 'errorStatuses', 'qpsLimit', 'credentialQuota', 'timestampWindowMs', 'nonceWindowMs', 'now',
]);

/** Printable ASCII except `|`, which separates the parts of an MQTT username. */
const ACCESS_KEY_ID = /^[\x21-\x7b\x7d\x7e]{1,128}$/;

function invalid(name: string, expected: string, value: unknown): ValidationError {
  return new ValidationError('InvalidOption', `Emulator option ${name} must be ${expected}, not ${describe(value)}`);
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'number' || typeof value === 'boolean' || value === null) return String(value);
  return `a ${typeof value}`;
}

function port(name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 65535) {
    throw invalid(name, 'an integer from 0 to 65535', value);
  }
  return value;
}

function oneOf<T extends string>(name: string, value: unknown, allowed: readonly T[]): T {
  if (!allowed.includes(value as T)) throw invalid(name, allowed.map((a) => `'${a}'`).join(' or '), value);
  return value as T;
}

/** Positive integer, zero allowed when `min` is 0, or Infinity. */
function countOrInfinity(name: string, value: unknown, min: 0 | 1): number {
  if (value === Number.POSITIVE_INFINITY) return value;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
    throw invalid(name, `an integer of ${min} or more, or Infinity`, value);
  }
  return value;
}

function durationMs(name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw invalid(name, 'a positive finite number of milliseconds', value);
  }
  return value;
}

/**
 * The option if given, else the environment variable if set and non-empty (an empty variable counts as unset,
 * as shells commonly export empty values), else a generated value. Returns where it came from for messages.
 */
function fromOptionEnvOrGenerated(
  options: EmulatorOptions,
  env: NodeJS.ProcessEnv,
  name: keyof typeof EMULATOR_ENV,
  generate: () => string,
): { value: unknown; label: string } {
  if (options[name] !== undefined) return { value: options[name], label: name };
  const fromEnv = env[EMULATOR_ENV[name]];
  if (fromEnv !== undefined && fromEnv !== '') return { value: fromEnv, label: `${name} (from ${EMULATOR_ENV[name]})` };
  return { value: generate(), label: name };
}

/**
 * Fill in defaults and validate every option once. Throws {@link ValidationError} `InvalidOption` naming the
 * first bad option; the message never shows the AccessKeySecret.
 */
export function resolveOptions(options: EmulatorOptions = {}): ResolvedEmulatorOptions {
  if (typeof options !== 'object' || options === null) {
    throw new ValidationError('InvalidOption', `Emulator options must be an object, not ${describe(options)}`);
  }
  for (const key of Object.keys(options)) {
    if (!KNOWN_OPTIONS.has(key)) throw new ValidationError('InvalidOption', `Unknown emulator option ${JSON.stringify(key)}`);
  }
  // A JS caller may pass `undefined` explicitly; it means "absent" like an omitted key.
  const pick = <K extends keyof typeof EMULATOR_DEFAULTS>(key: K): unknown =>
    options[key] === undefined ? EMULATOR_DEFAULTS[key] : options[key];

  const givenEnv: unknown = options.env === undefined ? process.env : options.env;
  if (typeof givenEnv !== 'object' || givenEnv === null) throw invalid('env', 'an object', givenEnv);
  const env = givenEnv as NodeJS.ProcessEnv;

  const host = pick('host');
  if (typeof host !== 'string' || host === '' || /\s/.test(host)) throw invalid('host', 'a host name or IP address', host);

  const wsPort = pick('wsPort');
  const givenNow: unknown = options.now === undefined ? Date.now : options.now;
  if (typeof givenNow !== 'function') throw invalid('now', 'a function returning ms since the epoch', givenNow);
  const now = givenNow as () => number;

  const instance = fromOptionEnvOrGenerated(options, env, 'instanceId', () => `mqtt-emu-${randomString(BASE36_LOWER, 8)}`);
  try {
    assertInstanceId(instance.value);
  } catch (e) {
    if (isApsaraMqDeviceError(e)) throw new ValidationError('InvalidOption', `Emulator option ${instance.label}: ${e.message}`);
    throw e;
  }

  const keyId = fromOptionEnvOrGenerated(options, env, 'accessKeyId', () => `LTAI${randomString(BASE62, 20)}`);
  if (typeof keyId.value !== 'string' || !ACCESS_KEY_ID.test(keyId.value)) {
    throw invalid(keyId.label, "1 to 128 printable ASCII characters other than '|'", keyId.value);
  }
  const secret = fromOptionEnvOrGenerated(options, env, 'accessKeySecret', () => randomString(BASE62, 30));
  if (typeof secret.value !== 'string' || secret.value.length === 0) {
    // The value is a secret: the message names the option but never shows it.
    throw new ValidationError('InvalidOption', `Emulator option ${secret.label} must be a non-empty string`);
  }

  return Object.freeze({
    host,
    mqttPort: port('mqttPort', pick('mqttPort')),
    wsPort: wsPort === false ? false : port('wsPort', wsPort),
    apiPort: port('apiPort', pick('apiPort')),
    instanceId: instance.value,
    accessKeyId: keyId.value,
    accessKeySecret: secret.value,
    reRegister: oneOf('reRegister', pick('reRegister'), ['rotate', 'reject'] as const),
    errorStatuses: oneOf('errorStatuses', pick('errorStatuses'), ['remapped', 'legacy'] as const),
    qpsLimit: countOrInfinity('qpsLimit', pick('qpsLimit'), 1),
    credentialQuota: countOrInfinity('credentialQuota', pick('credentialQuota'), 0),
    timestampWindowMs: durationMs('timestampWindowMs', pick('timestampWindowMs')),
    nonceWindowMs: durationMs('nonceWindowMs', pick('nonceWindowMs')),
    now,
  });
}

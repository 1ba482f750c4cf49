import { createSecureContext } from 'node:tls';
import { assertInstanceId } from '../credential.js';
import { API_ERROR_CATALOG, ValidationError, isApsaraMqDeviceError } from '../errors.js';
import type { ErrorStatusMode } from './api-errors.js';
import { BROKER_OPTION_NAMES, resolveBrokerOptions, type BrokerOptions, type ResolvedBrokerOptions } from './broker-options.js';
import { BASE36_LOWER, BASE62, randomString } from './crypto.js';

/** What RegisterDeviceCredential does for a ClientId that already has a credential (reference §0). */
export type ReRegisterPolicy = 'rotate' | 'reject';

/** Options of `startEmulator`. Every one is optional; see {@link EMULATOR_DEFAULTS} and, for the broker's rules, {@link BrokerOptions}. */
export interface EmulatorOptions extends BrokerOptions {
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
  /**
   * Share of authenticated API calls (0 to 1, default 0) answered with one of {@link EmulatorOptions.faultCodes}
   * instead of being served. Faults happen after the gateway's signature check and flow control, before any state
   * changes, and are counted in stats like real errors.
   */
  faultRate?: number;
  /** Codes a random fault answers with, each equally likely. Every one must be in `API_ERROR_CATALOG`. Default `['SystemOverFlow', 'InternalError']`. */
  faultCodes?: readonly string[];
  /** Delay every OpenAPI request by a uniformly drawn number of ms in `[min, max]` before answering. Default: no delay. */
  latencyMs?: { min: number; max: number };
  /** Source of randomness in [0, 1) for latency and faults, for exact tests. Default `Math.random`. */
  random?: () => number;
  /**
   * Drop live MQTT sessions of a credential the moment it stops authenticating (Refresh, UnRegister, latest-wins
   * Register), instead of only refusing new CONNECTs. Default false, as documented for UnRegister (reference §0).
   */
  kickOnRevoke?: boolean;
  /** Largest PUBLISH payload in bytes (default 65536, the service's 64 KB; Infinity under `lenient`); a larger one disconnects the client. A positive integer or Infinity. */
  maxPayloadBytes?: number;
  /**
   * Server certificate chain and private key (PEM) for MQTT over TLS and over secure WebSocket. Without it neither
   * listens. The repository's `fixtures/tls/` holds a test CA and a certificate for localhost / 127.0.0.1.
   */
  tls?: TlsOptions;
  /** MQTT over TLS port (the service uses 8883); 0 (default when `tls` is given) picks a free port. Needs `tls`. */
  tlsPort?: number;
  /** MQTT over secure WebSocket port, path `/mqtt` (the service uses 443); 0 (default when `tls` is given) picks a free port; `false` turns it off. Needs `tls`. */
  wssPort?: number | false;
}

/** A PEM certificate (chain) and its private key. */
export interface TlsOptions {
  cert: string | Buffer;
  key: string | Buffer;
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
  faultRate: 0,
  faultCodes: Object.freeze(['SystemOverFlow', 'InternalError']),
  kickOnRevoke: false,
  maxPayloadBytes: 64 * 1024,
} as const satisfies Partial<EmulatorOptions>);

/** Environment variables consulted when the matching option is absent. */
export const EMULATOR_ENV = Object.freeze({
  instanceId: 'APSARAMQ_INSTANCE_ID',
  accessKeyId: 'ALIBABA_CLOUD_ACCESS_KEY_ID',
  accessKeySecret: 'ALIBABA_CLOUD_ACCESS_KEY_SECRET',
} as const);

/** Every option resolved and validated: what the emulator's parts are built from. */
export interface ResolvedEmulatorOptions extends ResolvedBrokerOptions {
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
  readonly faultRate: number;
  readonly faultCodes: readonly string[];
  /** `undefined` when requests are not delayed. */
  readonly latencyMs: Readonly<{ min: number; max: number }> | undefined;
  readonly random: () => number;
  readonly kickOnRevoke: boolean;
  readonly maxPayloadBytes: number;
  /** `undefined` when TLS is off. */
  readonly tls: Readonly<TlsOptions> | undefined;
  /** `false` when TLS is off. */
  readonly tlsPort: number | false;
  /** `false` when TLS is off or secure WebSocket was turned off. */
  readonly wssPort: number | false;
}

const KNOWN_OPTIONS: ReadonlySet<string> = new Set<keyof EmulatorOptions>([
  'host', 'mqttPort', 'wsPort', 'apiPort', 'instanceId', 'accessKeyId', 'accessKeySecret', 'env',
  'reRegister', 'errorStatuses', 'qpsLimit', 'credentialQuota', 'timestampWindowMs', 'nonceWindowMs', 'now',
  'faultRate', 'faultCodes', 'latencyMs', 'random', 'kickOnRevoke', 'maxPayloadBytes', 'tls', 'tlsPort', 'wssPort',
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

function bool(name: string, value: unknown): boolean {
  if (typeof value !== 'boolean') throw invalid(name, 'true or false', value);
  return value;
}

function fraction(name: string, value: unknown): number {
  if (typeof value !== 'number' || !(value >= 0 && value <= 1)) throw invalid(name, 'a number from 0 to 1', value);
  return value;
}

function func<T extends (...args: never[]) => unknown>(name: string, value: unknown, expected: string): T {
  if (typeof value !== 'function') throw invalid(name, expected, value);
  return value as T;
}

/** An error code the emulated service can answer with, i.e. one in `API_ERROR_CATALOG`. */
export function assertApiErrorCode(name: string, code: unknown): string {
  if (typeof code !== 'string' || !Object.hasOwn(API_ERROR_CATALOG, code)) {
    throw invalid(name, 'an error code of API_ERROR_CATALOG (such as SystemOverFlow)', code);
  }
  return code;
}

function faultCodes(value: unknown): readonly string[] {
  if (!Array.isArray(value) || value.length === 0) throw invalid('faultCodes', 'a non-empty array of error codes', value);
  return Object.freeze(value.map((code: unknown, i) => assertApiErrorCode(`faultCodes[${i}]`, code)));
}

function latencyRange(value: unknown): Readonly<{ min: number; max: number }> | undefined {
  if (value === undefined) return undefined;
  const range = value as { min?: unknown; max?: unknown } | null;
  const { min, max } = typeof range === 'object' && range !== null ? range : { min: undefined, max: undefined };
  if (typeof min !== 'number' || typeof max !== 'number' || !Number.isFinite(max) || !(min >= 0 && min <= max)) {
    throw new ValidationError('InvalidOption', 'Emulator option latencyMs must be { min, max } with 0 <= min <= max, finite ms');
  }
  return Object.freeze({ min, max });
}

/**
 * The TLS material and its two ports. The certificate and key are loaded once here, so a bad PEM or a key that does
 * not match fails as `InvalidOption` before anything listens; the message shows neither.
 */
function tlsSettings(options: EmulatorOptions): Pick<ResolvedEmulatorOptions, 'tls' | 'tlsPort' | 'wssPort'> {
  if (options.tls === undefined) {
    for (const name of ['tlsPort', 'wssPort'] as const) {
      if (options[name] !== undefined) throw new ValidationError('InvalidOption', `Emulator option ${name} needs the tls option`);
    }
    return { tls: undefined, tlsPort: false, wssPort: false };
  }
  const given: unknown = options.tls;
  const { cert, key } = (typeof given === 'object' && given !== null ? given : {}) as { cert?: unknown; key?: unknown };
  const pem = (value: unknown): value is string | Buffer => (typeof value === 'string' || Buffer.isBuffer(value)) && value.length > 0;
  if (!pem(cert) || !pem(key)) throw new ValidationError('InvalidOption', 'Emulator option tls must be { cert, key }, each a non-empty PEM string or Buffer');
  try {
    createSecureContext({ cert, key });
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new ValidationError('InvalidOption', `Emulator option tls: the certificate and key do not load (${reason})`);
  }
  return {
    tls: Object.freeze({ cert, key }),
    tlsPort: port('tlsPort', options.tlsPort ?? 0),
    wssPort: options.wssPort === false ? false : port('wssPort', options.wssPort ?? 0),
  };
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
    if (!KNOWN_OPTIONS.has(key) && !BROKER_OPTION_NAMES.has(key)) throw new ValidationError('InvalidOption', `Unknown emulator option ${JSON.stringify(key)}`);
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
  const now = func<() => number>('now', options.now === undefined ? Date.now : options.now, 'a function returning ms since the epoch');

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

  const broker = resolveBrokerOptions(options);
  return Object.freeze({
    ...broker,
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
    faultRate: fraction('faultRate', pick('faultRate')),
    faultCodes: faultCodes(pick('faultCodes')),
    latencyMs: latencyRange(options.latencyMs),
    random: func<() => number>('random', options.random === undefined ? Math.random : options.random, 'a function returning a number in [0, 1)'),
    kickOnRevoke: bool('kickOnRevoke', pick('kickOnRevoke')),
    maxPayloadBytes: countOrInfinity('maxPayloadBytes', options.maxPayloadBytes ?? (broker.lenient ? Number.POSITIVE_INFINITY : EMULATOR_DEFAULTS.maxPayloadBytes), 1),
    ...tlsSettings(options),
  });
}

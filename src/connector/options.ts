/**
 * The options of {@link connectDevice}: their defaults, and one resolver that checks every one of them before any
 * I/O (a bad one is a `ValidationError('InvalidOption')` naming it), so that `registerAndConnect` can check them
 * before its first API call too.
 */
import type { IClientOptions } from 'mqtt';
import { DeviceCredential, type CredentialSource } from '../credential.js';
import { ValidationError } from '../errors.js';
import type { BackoffOptions } from '../util/backoff.js';
import { type Logger } from '../util/logger.js';
import { type NumberRange, optionChecks } from '../util/option-checks.js';
import { PROTOCOL_LEVELS, describeProtocolLevel } from '../mqtt/protocol.js';
import { MAX_REFETCHES } from './ladder.js';
import { TAKEOVER_DEFAULTS, type TakeoverOptions } from './takeover.js';
import { type ResolvedTokenOptions, type TokenOptions, resolveTokenOptions } from './token-rules.js';
import { type MessageRules, checkUserProperties, defaultMaxPayloadBytes } from './validate.js';
// Types only: the store object is passed in, so the device entry never loads the outbox's engine.
import type { OutboxStore } from '../outbox/store.js';
import type { DurableStore } from './durable.js';

/** The bound of a connection's outbox. */
export interface OutboxLimits {
  readonly maxMessages: number;
  readonly maxBytes: number;
}

/** How the device reaches the broker. */
export type Transport = 'tcp' | 'tls' | 'ws' | 'wss';

/** The service's port for each transport. */
export const TRANSPORT_PORTS: Readonly<Record<Transport, number>> = Object.freeze({ tcp: 1883, tls: 8883, ws: 80, wss: 443 });

const SCHEMES: Readonly<Record<Transport, string>> = { tcp: 'mqtt', tls: 'mqtts', ws: 'ws', wss: 'wss' };

/** The service's WebSocket path; mqtt.js would default to `/`. */
export const WEBSOCKET_PATH = '/mqtt';

/** Defaults of {@link ConnectDeviceOptions}. */
export const CONNECT_DEFAULTS = Object.freeze({
  transport: 'tcp' as Transport,
  /** MQTT 3.1.1; 5 is opt-in. */
  protocolVersion: 4 as 4 | 5,
  /** Seconds; what every official demo uses. */
  keepalive: 90,
  clean: true,
  connectTimeoutMs: 10_000,
  reconnect: Object.freeze({ minDelayMs: 1_000, maxDelayMs: 60_000 }) as Readonly<BackoffOptions>,
  /** A session that lasted this long resets the reconnect backoff and ends a run of takeovers. */
  stableSessionMs: 10_000,
  takeover: TAKEOVER_DEFAULTS,
  /** Sessions a message (or SUBSCRIBE) may be sent on before it fails with PublishRejected (SubscribeRejected). */
  maxDeliveryAttempts: 3,
  /** How long `end()` lets an online session finish what is in flight. */
  endTimeoutMs: 5_000,
  /**
   * The outbox's bound (messages, SUBSCRIBEs and UNSUBSCRIBEs waiting or in flight): 10,000 is hours of a device
   * publishing every few seconds while offline, and with 16 MiB of payloads keeps the worst case in tens of MB.
   */
  maxQueuedMessages: 10_000,
  maxQueuedBytes: 16 * 1024 * 1024,
  /** The largest packet taken from the broker: well above the service's (a 64 KB message, 128 KB packets). */
  maxIncomingPacketBytes: 1024 * 1024,
  brokerIsApsaraMq: true,
  rejectUnauthorized: true,
});

/** What a connection awaits before each CONNECT (option `connectGate`). */
export type ConnectGate = (request: { readonly clientId: string; readonly reconnect: boolean; readonly signal: AbortSignal }) => void | Promise<void>;

/** Options of {@link connectDevice}. */
export interface ConnectDeviceOptions {
  /** The device credential, or a source to ask for it (a provisioner's `credentialSource(clientId)`, or your own). */
  credential: DeviceCredential | CredentialSource;
  /** Explicit broker URL (`mqtt://`, `mqtts://`, `ws://`, `wss://`). Default: `<instanceId>.mqtt.aliyuncs.com` on the transport's port. */
  brokerUrl?: string;
  /** @default 'tcp' (1883); 'tls' 8883, 'ws' 80 and 'wss' 443 at path /mqtt. Ignored when brokerUrl is given. */
  transport?: Transport;
  /** MQTT 3.1.1 (4) or MQTT 5 (5). @default 4 */
  protocolVersion?: 4 | 5;
  /** MQTT keepalive in seconds, 0 to 65535 (the service caps it at 480). @default 90 */
  keepalive?: number;
  /**
   * MQTT clean session (3.1.1) / clean start (5). Use false (with QoS 1) to get messages sent while offline; with
   * MQTT 5 the session then lasts `sessionExpiryInterval` seconds after a disconnect. @default true
   */
  clean?: boolean;
  /** MQTT 5 only: seconds the broker keeps the session after the connection closes (0 to 4294967295). */
  sessionExpiryInterval?: number;
  /** MQTT 5 only: user properties of the CONNECT. */
  userProperties?: Record<string, string | string[]>;
  /** Time allowed for each CONNECT to be answered with a CONNACK, ms. @default 10000 */
  connectTimeoutMs?: number;
  /** Reconnect after a lost session with exponential backoff and full jitter; `false` to stay down. @default {minDelayMs: 1000, maxDelayMs: 60000} */
  reconnect?: false | Partial<BackoffOptions>;
  /** A session that lasted this long (ms) resets the reconnect backoff and ends a run of takeovers. @default 10000 */
  stableSessionMs?: number;
  /** How a takeover (another client with the same ClientId) is handled; `false` to not look for takeovers. @default {minDelayMs: 5000, maxDelayMs: 300000, giveUpAfter: Infinity} */
  takeover?: false | Partial<TakeoverOptions>;
  /**
   * How many sessions a QoS 1/2 message (or a SUBSCRIBE) may be sent on: each session that ends before the broker
   * acknowledged it counts one; then it fails with `PublishRejected` (`SubscribeRejected`). @default 3
   */
  maxDeliveryAttempts?: number;
  /** Largest message body in bytes. @default 65536 on ApsaraMQ (Platinum instances can raise it), MQTT's own limit otherwise */
  maxPayloadBytes?: number;
  /**
   * The broker is ApsaraMQ for MQTT (or the emulator): refuse, before sending, what the service does not support
   * (a will, retained messages, `$share/` filters, QoS 2 with a persistent session) and topics over its 64
   * characters. Pass `false` for another broker. @default true
   */
  brokerIsApsaraMq?: boolean;
  /** How long `end()` waits for an online session to finish what is in flight, ms. @default 5000 */
  endTimeoutMs?: number;
  /**
   * The most messages (and SUBSCRIBE/UNSUBSCRIBE) the connection holds, queued while offline or waiting for their
   * acknowledgement; past it `publish` rejects at once with `OutboxFull` (nothing is dropped). `Infinity` for no
   * bound. @default 10000
   */
  maxQueuedMessages?: number;
  /** The most payload (and topic) bytes the connection holds, as `maxQueuedMessages` does. `Infinity` for no bound. @default 16777216 (16 MiB) */
  maxQueuedBytes?: number;
  /**
   * A durable outbox (store and forward): an `OutboxStore` the application opened once per process with
   * `openOutboxStore` from `apsaramq-device/outbox` (one store for any number of devices). QoS 1 and 2 messages are
   * then kept on disk from the moment they are accepted until the broker acknowledged them, across reconnects and
   * restarts, within the store's bounds; `maxQueuedMessages` and `maxQueuedBytes` bound the window of them held in
   * memory (at most 1,000 messages). One open connection per device and store. See README, "Store and forward".
   */
  outbox?: OutboxStore;
  /**
   * The largest packet the connection takes from the broker, bytes (fixed header included), 256 to 268435460. A
   * larger one closes the session, before its body is read, with a `ProtocolError`, and the connection reconnects.
   * With MQTT 5 it is also sent as the CONNECT's Maximum Packet Size, so a compliant broker never sends more.
   * @default 1048576 (1 MiB; the service's packets stay under 128 KB)
   */
  maxIncomingPacketBytes?: number;
  /** CA certificate(s) for tls/wss, e.g. a test CA. */
  ca?: string | Buffer | string[] | Buffer[];
  /** Verify the broker's TLS certificate. @default true */
  rejectUnauthorized?: boolean;
  /** Last will message: not supported by ApsaraMQ (needs `brokerIsApsaraMq: false`). */
  will?: IClientOptions['will'];
  /**
   * The lifetime of the connection: aborting it before the first CONNACK rejects `connectDevice` with `Aborted`;
   * aborting it later closes the connection as `end(true)` does (`closed` with an `Aborted` error). It reaches every
   * step of the recovery ladder (the credential source gets it).
   */
  signal?: AbortSignal;
  /**
   * Awaited before each CONNECT of the connection (the first and every reconnect; not counted in `connectTimeoutMs`):
   * what paces the CONNECTs of many devices, e.g. the shared pacer of a gateway (`apsaramq-device/gateway`). It gets a `signal`,
   * aborted when the connection closes while it waits (so a waiting ticket can be given back), and whether this is a
   * reconnect.
   * A gate that throws is reported as an `error` event and the CONNECT goes ahead (a gate only paces). @default none
   */
  connectGate?: ConnectGate;
  /** Source of randomness for jitter, [0, 1). @default Math.random */
  random?: () => number;
  /** Where to log (never receives a secret; mqtt.js's own debug lines come here too, at debug level, scrubbed). @default silent */
  logger?: Logger;
}

/**
 * Options of {@link connectDevice} in Token mode: the device logs in with tokens an application server applied for
 * (ApplyToken), and holds only the account's AccessKeyId, the instance id and the tokens, never a secret key. Every
 * other option is the same as with a credential.
 *
 * @example
 * const conn = await connectDevice({
 *   clientId: 'GID_demo@@@dev-1', brokerUrl,
 *   token: { accessKeyId: 'LTAI…', instanceId: 'mqtt-cn-…', source: async (request) => fetchTokensFromMyServer(request) },
 * });
 */
export type TokenConnectOptions = Omit<ConnectDeviceOptions, 'credential'> & {
  /** The device's ClientId, `GID_<group>@@@<device>`: a token is not bound to one, the CONNECT names it. */
  clientId: string;
  /** Token mode: who applied for the tokens, and where they come from. */
  token: TokenOptions;
};

/** Everything a connection needs, checked and filled in. */
export interface ResolvedConnectOptions {
  /** Token mode's options (with the ClientId), or `undefined` in DeviceCredential mode. */
  readonly token: (ResolvedTokenOptions & { readonly clientId: string }) | undefined;
  /** The explicit URL, or undefined to derive it from the credential's instance id. */
  readonly explicitUrl: string | undefined;
  readonly transport: Transport;
  readonly protocolVersion: 4 | 5;
  readonly keepalive: number;
  readonly clean: boolean;
  readonly sessionExpiryInterval: number | undefined;
  readonly userProperties: Record<string, string | string[]> | undefined;
  readonly connectTimeoutMs: number;
  readonly reconnect: Readonly<BackoffOptions> | false;
  readonly stableSessionMs: number;
  readonly takeover: Readonly<TakeoverOptions> | false;
  readonly maxDeliveryAttempts: number;
  readonly maxRefetches: number;
  readonly endTimeoutMs: number;
  /** The bound of the outbox in memory (with a durable outbox: of its window). */
  readonly queueLimits: OutboxLimits;
  /** The durable outbox, when given. */
  readonly durable: DurableStore | undefined;
  readonly maxIncomingPacketBytes: number;
  readonly rules: MessageRules;
  readonly tls: { readonly ca?: string | Buffer | string[] | Buffer[]; readonly rejectUnauthorized: boolean };
  readonly will: IClientOptions['will'] | undefined;
  readonly signal: AbortSignal | undefined;
  readonly connectGate: ConnectGate | undefined;
  readonly random: () => number;
  readonly logger: Logger | undefined;
}

const check = optionChecks();

function invalid(message: string): ValidationError {
  return new ValidationError('InvalidOption', message);
}

/** The option, checked against its range, or `fallback` when it is not given. */
function numberOption(name: string, value: unknown, fallback: number, range: NumberRange & { integer?: boolean }): number {
  if (value === undefined) return fallback;
  return range.integer ? check.integer(name, value, range) : check.number(name, value, range);
}

/** A duration in ms (0 to the longest Node timer unless `range` says otherwise), or `fallback` when it is not given. */
function msOption(name: string, value: unknown, fallback: number, range?: Partial<NumberRange>): number {
  return value === undefined ? fallback : check.milliseconds(name, value, range);
}

function booleanOption(name: string, value: unknown, fallback: boolean): boolean {
  return value === undefined ? fallback : check.boolean(name, value);
}

function objectOption(name: string, value: unknown): Record<string, unknown> | undefined {
  return value === undefined ? undefined : check.object(name, value, 'an object or false');
}

/** MQTT's largest packet: a 268,435,455-byte remaining length behind a 5-byte fixed header. */
const MAX_MQTT_PACKET_BYTES = 268_435_460;
/** A bound: a positive integer, or Infinity for none. */
const COUNT = { min: 1, integer: true, infinity: true } as const;

const STORE_METHODS = ['append', 'appendTo', 'appendChecked', 'ackOneChecked', 'reject', 'markSending', 'clearSending', 'pending', 'flush', 'device', 'on', 'off'] as const;

/** An `OutboxStore`, known by what it does (the connector does not load the outbox module to check its class). */
function checkOutboxStore(store: unknown): DurableStore | undefined {
  if (store === undefined) return undefined;
  const candidate = store as Record<string, unknown> | null;
  if (candidate === null || typeof candidate !== 'object' || typeof candidate['dir'] !== 'string' || STORE_METHODS.some((m) => typeof candidate[m] !== 'function')) {
    throw invalid("Option outbox must be an OutboxStore: open one with openOutboxStore({ dir }) from 'apsaramq-device/outbox'");
  }
  return store as DurableStore;
}

/** The broker URL for an instance and transport, or the explicit one (ws/wss get path /mqtt when none is given). */
export function brokerUrlFor(instanceId: string, transport: Transport = 'tcp', explicit?: string): string {
  if (explicit !== undefined) {
    let url: URL;
    try {
      url = new URL(explicit);
    } catch {
      throw invalid(`Option brokerUrl ${JSON.stringify(explicit)} is not a URL (expected e.g. mqtt://host:1883)`);
    }
    const scheme = url.protocol.replace(/:$/, '');
    if (!['mqtt', 'mqtts', 'tcp', 'tls', 'ssl', 'ws', 'wss'].includes(scheme)) {
      throw invalid(`Option brokerUrl has scheme ${scheme}:; use mqtt:, mqtts:, ws: or wss:`);
    }
    if (url.username !== '' || url.password !== '') throw invalid('Option brokerUrl must not carry a user name or password: the credential is the login');
    if ((scheme === 'ws' || scheme === 'wss') && (url.pathname === '' || url.pathname === '/')) url.pathname = WEBSOCKET_PATH;
    return url.toString();
  }
  checkTransport(transport);
  const path = transport === 'ws' || transport === 'wss' ? WEBSOCKET_PATH : '';
  return `${SCHEMES[transport]}://${instanceId}.mqtt.aliyuncs.com:${TRANSPORT_PORTS[transport]}${path}`;
}

const TRANSPORTS = Object.keys(TRANSPORT_PORTS) as Transport[];

function checkTransport(transport: unknown): Transport {
  return check.oneOf('transport', transport, TRANSPORTS, String);
}

function resolveBackoff(name: string, value: unknown, defaults: Readonly<BackoffOptions>): Readonly<BackoffOptions> {
  if (value === undefined) return defaults;
  const given = objectOption(name, value) ?? {};
  const minDelayMs = msOption(`${name}.minDelayMs`, given['minDelayMs'], defaults.minDelayMs);
  const maxDelayMs = msOption(`${name}.maxDelayMs`, given['maxDelayMs'], Math.max(defaults.maxDelayMs, minDelayMs));
  if (maxDelayMs < minDelayMs) throw invalid(`Option ${name}.maxDelayMs must be at least ${name}.minDelayMs`);
  return Object.freeze({ minDelayMs, maxDelayMs });
}

/**
 * The credential option's type (a source is asked later): also checked for each connection that shares options
 * resolved with another's credential (a gateway's).
 * @throws ValidationError `InvalidOption`.
 */
export function checkCredentialOption(credential: unknown): void {
  if (credential === undefined) throw invalid('Option credential is required: a DeviceCredential or a function returning one (or, for Token mode, option token)');
  if (!(credential instanceof DeviceCredential) && typeof credential !== 'function') {
    throw invalid('Option credential must be a DeviceCredential or a function returning one');
  }
}

/**
 * Check every option of {@link connectDevice} and fill in the defaults, without any I/O. The credential itself is
 * checked for its type only (a source is asked later).
 * @throws ValidationError `InvalidOption` (or `UnsupportedByService` for a will on ApsaraMQ) naming the option.
 */
export function resolveConnectOptions(given: ConnectDeviceOptions | TokenConnectOptions): ResolvedConnectOptions {
  if (given === null || typeof given !== 'object') throw invalid('connectDevice needs an options object');
  const options = given as ConnectDeviceOptions & Partial<Pick<TokenConnectOptions, 'clientId' | 'token'>>;
  let token: ResolvedConnectOptions['token'];
  if (options.token !== undefined) {
    if (options.credential !== undefined) {
      throw invalid('Options credential and token cannot be used together: a device logs in with its device credential or with tokens');
    }
    token = Object.freeze({ ...resolveTokenOptions(options.token, options.clientId), clientId: options.clientId as string });
  } else {
    checkCredentialOption(options.credential);
  }
  const transport = checkTransport(options.transport ?? CONNECT_DEFAULTS.transport);
  // Checks the syntax now; the default URL needs the credential's instance id, known later.
  const explicitUrl = options.brokerUrl === undefined ? undefined : brokerUrlFor('x', transport, options.brokerUrl);
  const protocolVersion = check.oneOf('protocolVersion', options.protocolVersion ?? CONNECT_DEFAULTS.protocolVersion, PROTOCOL_LEVELS, describeProtocolLevel);
  const v5 = protocolVersion === 5;
  if (!v5 && options.sessionExpiryInterval !== undefined) throw invalid('Option sessionExpiryInterval needs protocolVersion: 5');
  if (!v5 && options.userProperties !== undefined) throw invalid('Option userProperties needs protocolVersion: 5');
  const sessionExpiryInterval =
    options.sessionExpiryInterval === undefined ? undefined : numberOption('sessionExpiryInterval', options.sessionExpiryInterval, 0, { min: 0, max: 0xffff_ffff, integer: true });
  const userProperties = options.userProperties === undefined ? undefined : checkUserProperties('userProperties', options.userProperties);
  const clean = booleanOption('clean', options.clean, CONNECT_DEFAULTS.clean);
  const apsaraMq = booleanOption('brokerIsApsaraMq', options.brokerIsApsaraMq, CONNECT_DEFAULTS.brokerIsApsaraMq);
  const takeoverGiven = options.takeover === false ? false : objectOption('takeover', options.takeover);
  let takeover: Readonly<TakeoverOptions> | false = false;
  if (takeoverGiven === undefined) {
    takeover = TAKEOVER_DEFAULTS;
  } else if (takeoverGiven !== false) {
    const delays = resolveBackoff('takeover', takeoverGiven, TAKEOVER_DEFAULTS);
    const giveUpAfter = numberOption('takeover.giveUpAfter', takeoverGiven['giveUpAfter'], TAKEOVER_DEFAULTS.giveUpAfter, { min: 1, integer: true, infinity: true });
    takeover = Object.freeze({ ...delays, giveUpAfter });
  }
  if (options.will !== undefined && options.will !== null) {
    if (typeof options.will !== 'object' || typeof options.will.topic !== 'string') throw invalid('Option will must be an object with a topic and a payload');
    if (apsaraMq) throw new ValidationError('UnsupportedByService', 'ApsaraMQ for MQTT does not support will messages (option will); pass brokerIsApsaraMq: false for another broker');
  }
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) throw check.invalid('signal', 'an AbortSignal', options.signal);
  if (options.random !== undefined) check.func('random', options.random, 'a function returning [0, 1)');
  if (options.connectGate !== undefined) check.func('connectGate', options.connectGate, 'a function (awaited before each CONNECT)');
  if (options.logger !== undefined) check.logger('logger', options.logger);
  if (options.ca !== undefined) {
    const valid = (c: unknown): boolean => typeof c === 'string' || Buffer.isBuffer(c);
    if (!(valid(options.ca) || (Array.isArray(options.ca) && options.ca.every(valid)))) throw invalid('Option ca must be a PEM string or Buffer, or an array of them');
  }
  const persistentSession = v5 ? (sessionExpiryInterval ?? 0) > 0 : !clean;
  // Frozen: a gateway shares one resolved object among its connections.
  return Object.freeze({
    token,
    explicitUrl,
    transport,
    protocolVersion,
    keepalive: numberOption('keepalive', options.keepalive, CONNECT_DEFAULTS.keepalive, { min: 0, max: 65_535, integer: true }),
    clean,
    sessionExpiryInterval,
    userProperties,
    connectTimeoutMs: msOption('connectTimeoutMs', options.connectTimeoutMs, CONNECT_DEFAULTS.connectTimeoutMs, { min: 1 }),
    reconnect: options.reconnect === false ? false : resolveBackoff('reconnect', options.reconnect, CONNECT_DEFAULTS.reconnect),
    stableSessionMs: msOption('stableSessionMs', options.stableSessionMs, CONNECT_DEFAULTS.stableSessionMs),
    takeover,
    maxDeliveryAttempts: numberOption('maxDeliveryAttempts', options.maxDeliveryAttempts, CONNECT_DEFAULTS.maxDeliveryAttempts, { min: 1, max: 1_000, integer: true }),
    maxRefetches: MAX_REFETCHES,
    endTimeoutMs: msOption('endTimeoutMs', options.endTimeoutMs, CONNECT_DEFAULTS.endTimeoutMs),
    maxIncomingPacketBytes: numberOption('maxIncomingPacketBytes', options.maxIncomingPacketBytes, CONNECT_DEFAULTS.maxIncomingPacketBytes, { min: 256, max: MAX_MQTT_PACKET_BYTES, integer: true }),
    durable: checkOutboxStore(options.outbox),
    queueLimits: Object.freeze({
      maxMessages: numberOption('maxQueuedMessages', options.maxQueuedMessages, CONNECT_DEFAULTS.maxQueuedMessages, COUNT),
      maxBytes: numberOption('maxQueuedBytes', options.maxQueuedBytes, CONNECT_DEFAULTS.maxQueuedBytes, COUNT),
    }),
    rules: Object.freeze({
      apsaraMq,
      persistentSession,
      maxPayloadBytes: numberOption('maxPayloadBytes', options.maxPayloadBytes, defaultMaxPayloadBytes(apsaraMq), { min: 0, max: defaultMaxPayloadBytes(false), integer: true }),
    }),
    tls: { ...(options.ca === undefined ? {} : { ca: options.ca }), rejectUnauthorized: booleanOption('rejectUnauthorized', options.rejectUnauthorized, CONNECT_DEFAULTS.rejectUnauthorized) },
    will: options.will ?? undefined,
    signal: options.signal,
    connectGate: options.connectGate,
    random: options.random ?? Math.random,
    logger: options.logger,
  });
}

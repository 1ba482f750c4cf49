/**
 * Options of the emulator's MQTT broker: the service's documented rules and limits (reference §5.6, §5.7, §8.2),
 * and the guards that keep the broker up under hostile clients. Resolved and validated here, once.
 */
import { type Logger, silentLogger } from '../util/logger.js';
import { MAX_TIMER_MS } from '../util/backoff.js';
import { optionChecks } from '../util/option-checks.js';
import { groupIdProblem } from '../credential.js';

/**
 * What the broker does with an MQTT feature the service does not support: `refuse` it visibly (the default),
 * `ignore` it (drop the flag or the will, tell nobody but the stats and the log), or `allow` it as a plain MQTT
 * broker would.
 */
export type UnsupportedFeaturePolicy = 'refuse' | 'ignore' | 'allow';

/** Broker options of `startEmulator`; all optional, see {@link BROKER_DEFAULTS}. */
export interface BrokerOptions {
  /**
   * The parent topics (first topic level) that exist on the emulated instance, as if created in the console.
   * PUBLISH or SUBSCRIBE under any other parent (`#`, `+/x` and the empty parent included) disconnects the client,
   * as the service does (reference §5.4). `false` accepts any parent. Default {@link DEFAULT_PARENT_TOPICS}.
   */
  parentTopics?: readonly string[] | false;
  /**
   * The GroupIds that exist on the emulated instance, as if created in the console (reference §5.1). A CONNECT whose
   * ClientId is of another group is refused ({@link BrokerOptions.unknownGroupRefusal}), and the credential operations
   * and ListDeviceCredentialClientId answer it with 400 `PermissionCheckFailed`. `false` accepts any GroupId.
   * Default {@link DEFAULT_GROUPS}.
   */
  groups?: readonly string[] | false;
  /**
   * The CONNACK of a CONNECT whose GroupId does not exist (the record names none): `'identifier-rejected'` (default:
   * 3.1.1 return code 2, MQTT 5 0x85 Client Identifier not valid, MQTT's code for a ClientId the server does not
   * allow) or `'not-authorized'` (5 / 0x87). Checked once the username and password verify.
   */
  unknownGroupRefusal?: 'identifier-rejected' | 'not-authorized';
  /**
   * The CONNACK of a DeviceCredential-mode CONNECT with a key that was revoked (Refresh, UnRegister, latest-wins
   * Register) and a password that verifies against it (the reference contradicts itself: §0 says 4 for a key that
   * cannot be verified, §5.4 suggests 5 for a revoked one): `'bad-username-or-password'` (default: 4 / 0x86, as for
   * a key that never existed) or `'not-authorized'` (5 / 0x87). The emulator remembers the last 10,000 revoked keys
   * of a run for this.
   */
  revokedCredentialRefusal?: 'bad-username-or-password' | 'not-authorized';
  /**
   * MQTT 3.1 (protocol level 3, `MQIsdp`), which the service does not name (it speaks 3.1.1 and 5, reference §5.5,
   * §8.2): `'refuse'` (default) with CONNACK 1 (unacceptable protocol version), or `'accept'`.
   */
  mqtt31?: 'refuse' | 'accept';
  /** Longest topic name or filter, parent and subtopics together, in characters (default 64). Infinity: no limit. */
  maxTopicLength?: number;
  /**
   * What counts against `maxTopicLength` in a P2P topic `<parent>/p2p/<ClientId>`: `'parent'` (default: the parent
   * topic only, as the connector counts it: the ClientId is an address with a limit of its own, and counting it would
   * keep long ClientIds from getting P2P messages at all) or `'whole'` (every character). Also for ApplyToken's resources.
   */
  p2pTopicLength?: 'parent' | 'whole';
  /** Most subscriptions one client may hold (default 30; the broker's own P2P subscription does not count). Infinity: no limit. */
  maxSubscriptions?: number;
  /** Keep Alive cap in seconds (default 480, 8 minutes): a longer Keep Alive is lowered to it. Infinity: no cap. */
  maxKeepAliveSeconds?: number;
  /**
   * A Keep Alive of 0 (no keep-alive at all), on which the record is silent: `'cap'` (default: lowered to
   * `maxKeepAliveSeconds` like any longer one, since "never" is longer than 8 minutes) or `'allow'` (kept: the broker
   * never drops the client for silence).
   */
  keepAliveZero?: 'cap' | 'allow';
  /** Retained messages (not supported by the service). Default `'refuse'`. */
  retainedMessages?: UnsupportedFeaturePolicy;
  /** Will messages (not supported by the service). Default `'refuse'`. */
  willMessages?: UnsupportedFeaturePolicy;
  /** Shared subscriptions `$share/<group>/<filter>` (not supported by the service). Default `'refuse'`. */
  sharedSubscriptions?: 'refuse' | 'allow';
  /** QoS 2 in a persistent session (clean session off, or an MQTT 5 session expiry): not supported by the service. Default `'refuse'`. */
  qos2PersistentSessions?: 'refuse' | 'allow';
  /**
   * Turn the rules above off (any parent topic and GroupId, MQTT 3.1 accepted, no topic, subscription, Keep Alive
   * or payload limit, retained, will and shared-subscription messages and QoS 2 everywhere, offline messages
   * delivered at once), for use as a plain MQTT broker. A rule option given explicitly still applies.
   * Authentication, P2P, `$SYS` and the guards below stay on. Default false.
   */
  lenient?: boolean;
  /**
   * Largest MQTT packet accepted, in bytes (default 131072, the service's 128 KB message limit). Checked as soon
   * as a packet's fixed header arrives, before authentication: a larger packet is never buffered and its connection
   * is closed (an MQTT 5 client gets DISCONNECT 0x95). Advertised to MQTT 5 clients as Maximum Packet Size.
   */
  maxPacketBytes?: number;
  /**
   * Bytes that may wait in one client's outgoing buffer, beyond what the kernel holds (default 8 MiB). A subscriber
   * that reads slower than its messages arrive is disconnected past it, so that it cannot hold memory. (It cannot
   * delay other clients whatever this is: deliveries never wait for a client's socket.)
   */
  maxQueuedBytes?: number;
  /** How long one client's socket may stay full before the client is disconnected, in ms (default 10 s). */
  drainTimeoutMs?: number;
  /**
   * Most QoS 1/2 messages one persistent session holds for its client: queued while it is offline, or sent and not
   * yet acknowledged (default 1000, Mosquitto's `max_queued_messages`). Infinity: no limit.
   */
  maxOfflineMessages?: number;
  /** Most bytes (topics and payloads) of those messages per session (default 8 MiB). Infinity: no limit. */
  maxOfflineBytes?: number;
  /**
   * A message for a session that holds its bound already: `drop-oldest` (default) drops the oldest message not yet
   * sent to make room, as the service's offline store lets its oldest messages go first (it keeps them 3 days);
   * `refuse-new` keeps the queue and drops the new message. Either is counted under the rule `offlineQueue`.
   */
  offlineQueuePolicy?: 'drop-oldest' | 'refuse-new';
  /**
   * When a persistent session that reconnects gets the QoS 1 messages queued for it (reference §5.7: offline messages
   * are detected 5 to 10 s after the reconnect and re-delivered in batches of 30 every 5 s): `'paced'` (default) at
   * the cloud's pace below, or `'immediate'` right behind the CONNACK, as a plain MQTT broker does. Messages that
   * arrive while the session is connected are delivered at once either way.
   */
  offlineDelivery?: 'paced' | 'immediate';
  /** `paced`: ms from the CONNACK to the first batch, drawn uniformly from `[min, max]` (a number: exactly that). Default 5,000 to 10,000. */
  offlineDetectionDelayMs?: number | { min: number; max: number };
  /** `paced`: messages per batch. Default 30. */
  offlineBatchSize?: number;
  /** `paced`: ms from one batch to the next. Default 5,000. */
  offlineBatchIntervalMs?: number;
  /**
   * `paced`: the timers of the pacing (default the global `setTimeout` / `clearTimeout`). A test passes its own to
   * run each step when it chooses, instead of waiting real seconds.
   */
  offlineTimers?: OfflineTimers;
  /**
   * A PUBLISH whose payload is over `maxPayloadBytes`: `'discard'` (default: acknowledged as usual and delivered to no
   * one, as the service says larger messages are discarded, reference §5.7 and §8.2), or `'disconnect'` the client
   * (MQTT 5: DISCONNECT 0x95), as the service is also reported to reject such a client. Counted and logged either way.
   */
  oversizedMessages?: 'discard' | 'disconnect';
  /** Where the broker says which rule refused what (one `warn` line each). Default: silent. */
  logger?: Logger;
}

/** The timers of the paced offline delivery (the shape of Node's and of most fake-timer libraries'). */
export interface OfflineTimers {
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/**
 * The GroupIds that exist by default: `GID_demo` for the README's quick start and the CLI's examples, `GID_test` for
 * the reference's and the testing entry's examples, and `GID_sim` for the simulator's default GroupId.
 */
export const DEFAULT_GROUPS: readonly string[] = Object.freeze(['GID_demo', 'GID_test', 'GID_sim']);

/** The parent topics that exist by default: `demo` for the README's quick start and `sim` for the simulator's `sim/%i`. */
export const DEFAULT_PARENT_TOPICS: readonly string[] = Object.freeze(['demo', 'sim']);

/** Defaults of the broker options. */
export const BROKER_DEFAULTS = Object.freeze({
  parentTopics: DEFAULT_PARENT_TOPICS,
  groups: DEFAULT_GROUPS,
  unknownGroupRefusal: 'identifier-rejected',
  revokedCredentialRefusal: 'bad-username-or-password',
  mqtt31: 'refuse',
  maxTopicLength: 64,
  p2pTopicLength: 'parent',
  keepAliveZero: 'cap',
  maxSubscriptions: 30,
  maxKeepAliveSeconds: 480,
  retainedMessages: 'refuse',
  willMessages: 'refuse',
  sharedSubscriptions: 'refuse',
  qos2PersistentSessions: 'refuse',
  lenient: false,
  maxPacketBytes: 128 * 1024,
  maxQueuedBytes: 8 * 1024 * 1024,
  drainTimeoutMs: 10_000,
  maxOfflineMessages: 1000,
  maxOfflineBytes: 8 * 1024 * 1024,
  offlineQueuePolicy: 'drop-oldest',
  offlineDelivery: 'paced',
  offlineDetectionDelayMs: Object.freeze({ min: 5_000, max: 10_000 }),
  offlineBatchSize: 30,
  offlineBatchIntervalMs: 5_000,
  oversizedMessages: 'discard',
} as const);

/** What each rule becomes under `lenient`. */
const LENIENT = Object.freeze({
  parentTopics: false,
  groups: false,
  mqtt31: 'accept',
  offlineDelivery: 'immediate',
  maxTopicLength: Number.POSITIVE_INFINITY,
  maxSubscriptions: Number.POSITIVE_INFINITY,
  maxKeepAliveSeconds: Number.POSITIVE_INFINITY,
  retainedMessages: 'allow',
  willMessages: 'allow',
  sharedSubscriptions: 'allow',
  qos2PersistentSessions: 'allow',
} as const);

/** The broker options resolved. */
export interface ResolvedBrokerOptions {
  /** `undefined` when any parent is accepted. */
  readonly parentTopics: ReadonlySet<string> | undefined;
  /** `undefined` when any GroupId is accepted. */
  readonly groups: ReadonlySet<string> | undefined;
  readonly unknownGroupRefusal: 'identifier-rejected' | 'not-authorized';
  readonly revokedCredentialRefusal: 'bad-username-or-password' | 'not-authorized';
  readonly mqtt31: 'refuse' | 'accept';
  readonly maxTopicLength: number;
  readonly p2pTopicLength: 'parent' | 'whole';
  readonly keepAliveZero: 'cap' | 'allow';
  readonly maxSubscriptions: number;
  readonly maxKeepAliveSeconds: number;
  readonly retainedMessages: UnsupportedFeaturePolicy;
  readonly willMessages: UnsupportedFeaturePolicy;
  readonly sharedSubscriptions: 'refuse' | 'allow';
  readonly qos2PersistentSessions: 'refuse' | 'allow';
  readonly lenient: boolean;
  readonly maxPacketBytes: number;
  readonly maxQueuedBytes: number;
  readonly drainTimeoutMs: number;
  readonly maxOfflineMessages: number;
  readonly maxOfflineBytes: number;
  readonly offlineQueuePolicy: 'drop-oldest' | 'refuse-new';
  readonly offlineDelivery: 'paced' | 'immediate';
  readonly offlineDetectionDelayMs: Readonly<{ min: number; max: number }>;
  readonly offlineBatchSize: number;
  readonly offlineBatchIntervalMs: number;
  readonly offlineTimers: OfflineTimers;
  readonly oversizedMessages: 'discard' | 'disconnect';
  readonly logger: Logger;
}

/** Names of the options above, for the unknown-option check. */
export const BROKER_OPTION_NAMES: ReadonlySet<string> = new Set<keyof BrokerOptions>([
  'parentTopics', 'maxTopicLength', 'maxSubscriptions', 'maxKeepAliveSeconds', 'retainedMessages', 'willMessages',
  'sharedSubscriptions', 'qos2PersistentSessions', 'lenient', 'maxPacketBytes', 'maxQueuedBytes', 'drainTimeoutMs', 'logger',
  'maxOfflineMessages', 'maxOfflineBytes', 'offlineQueuePolicy', 'groups', 'unknownGroupRefusal', 'revokedCredentialRefusal',
  'mqtt31', 'p2pTopicLength', 'keepAliveZero', 'offlineDelivery', 'offlineDetectionDelayMs', 'offlineBatchSize',
  'offlineBatchIntervalMs', 'offlineTimers', 'oversizedMessages',
]);

/** A parent topic as the console accepts it (reference §5.1 [LIMITS]): letters, digits, `-` and `_`. */
const PARENT_TOPIC = /^[A-Za-z0-9_-]{1,64}$/;

/** MQTT's largest packet: a 1-byte type, a 4-byte length and 268,435,455 bytes. */
const MQTT_MAX_PACKET = 268_435_460;

const check = optionChecks('Emulator option');

function parentTopics(value: unknown): ReadonlySet<string> | undefined {
  if (value === false) return undefined;
  if (!Array.isArray(value)) throw check.invalid('parentTopics', 'an array of topic names or false', value);
  for (const [i, topic] of value.entries()) {
    if (typeof topic !== 'string' || !PARENT_TOPIC.test(topic)) {
      throw check.invalid(`parentTopics[${i}]`, 'a topic name of 1 to 64 letters, digits, - or _', topic);
    }
  }
  return new Set(value as string[]);
}

function groups(value: unknown): ReadonlySet<string> | undefined {
  if (value === false) return undefined;
  if (!Array.isArray(value)) throw check.invalid('groups', 'an array of GroupIds or false', value);
  for (const [i, group] of value.entries()) {
    if (groupIdProblem(group) !== undefined) throw check.invalid(`groups[${i}]`, 'a GroupId (GID_ or GID- then letters, digits, - or _)', group);
  }
  return new Set(value as string[]);
}

/** A delay in ms, or a `{ min, max }` range of them (a number n is the range [n, n]). */
function delayRange(name: string, value: unknown): Readonly<{ min: number; max: number }> {
  if (typeof value === 'number') {
    const ms = check.milliseconds(name, value);
    return Object.freeze({ min: ms, max: ms });
  }
  const range = (typeof value === 'object' && value !== null ? value : {}) as { min?: unknown; max?: unknown };
  const min = check.milliseconds(`${name}.min`, range.min);
  const max = check.milliseconds(`${name}.max`, range.max);
  if (min > max) throw check.invalid(name, '{ min, max } with min <= max', value);
  return Object.freeze({ min, max });
}

/** Timers with a setTimeout and a clearTimeout. */
function timers(value: unknown): OfflineTimers {
  if (value === undefined) return { setTimeout: (callback, ms) => setTimeout(callback, ms), clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout) };
  const given = check.object('offlineTimers', value, '{ setTimeout, clearTimeout }');
  check.func('offlineTimers.setTimeout', given['setTimeout']);
  check.func('offlineTimers.clearTimeout', given['clearTimeout']);
  return value as OfflineTimers;
}

/** Resolve and validate the broker options; throws `ValidationError` `InvalidOption` naming the first bad one. */
export function resolveBrokerOptions(options: BrokerOptions): ResolvedBrokerOptions {
  const lenient = check.boolean('lenient', options.lenient === undefined ? false : options.lenient);
  const rule = <K extends keyof typeof LENIENT & keyof BrokerOptions>(key: K): unknown =>
    options[key] !== undefined ? options[key] : lenient ? LENIENT[key] : BROKER_DEFAULTS[key];
  const plain = <K extends keyof typeof BROKER_DEFAULTS & keyof BrokerOptions>(key: K): unknown =>
    options[key] !== undefined ? options[key] : BROKER_DEFAULTS[key];
  return {
    parentTopics: parentTopics(rule('parentTopics')),
    groups: groups(rule('groups')),
    unknownGroupRefusal: check.oneOf('unknownGroupRefusal', plain('unknownGroupRefusal'), ['identifier-rejected', 'not-authorized'] as const),
    revokedCredentialRefusal: check.oneOf('revokedCredentialRefusal', plain('revokedCredentialRefusal'), ['bad-username-or-password', 'not-authorized'] as const),
    mqtt31: check.oneOf('mqtt31', rule('mqtt31'), ['refuse', 'accept'] as const),
    maxTopicLength: check.integer('maxTopicLength', rule('maxTopicLength'), { min: 1, infinity: true }),
    p2pTopicLength: check.oneOf('p2pTopicLength', plain('p2pTopicLength'), ['parent', 'whole'] as const),
    keepAliveZero: check.oneOf('keepAliveZero', plain('keepAliveZero'), ['cap', 'allow'] as const),
    maxSubscriptions: check.integer('maxSubscriptions', rule('maxSubscriptions'), { min: 1, infinity: true }),
    // Keep Alive is a 16-bit field: a cap of 65,535 s or more caps nothing.
    maxKeepAliveSeconds: check.integer('maxKeepAliveSeconds', rule('maxKeepAliveSeconds'), { min: 1, max: 65_535, infinity: true }),
    retainedMessages: check.oneOf('retainedMessages', rule('retainedMessages'), ['refuse', 'ignore', 'allow'] as const),
    willMessages: check.oneOf('willMessages', rule('willMessages'), ['refuse', 'ignore', 'allow'] as const),
    sharedSubscriptions: check.oneOf('sharedSubscriptions', rule('sharedSubscriptions'), ['refuse', 'allow'] as const),
    qos2PersistentSessions: check.oneOf('qos2PersistentSessions', rule('qos2PersistentSessions'), ['refuse', 'allow'] as const),
    lenient,
    // 2 bytes: the smallest MQTT packet (PINGREQ).
    maxPacketBytes: check.integer('maxPacketBytes', plain('maxPacketBytes'), { min: 2, max: MQTT_MAX_PACKET }),
    maxQueuedBytes: check.integer('maxQueuedBytes', plain('maxQueuedBytes'), { min: 1024 }),
    // setTimeout's own ceiling.
    drainTimeoutMs: check.integer('drainTimeoutMs', plain('drainTimeoutMs'), { min: 1, max: MAX_TIMER_MS }),
    maxOfflineMessages: check.integer('maxOfflineMessages', plain('maxOfflineMessages'), { min: 1, infinity: true }),
    maxOfflineBytes: check.integer('maxOfflineBytes', plain('maxOfflineBytes'), { min: 1, infinity: true }),
    offlineQueuePolicy: check.oneOf('offlineQueuePolicy', plain('offlineQueuePolicy'), ['drop-oldest', 'refuse-new'] as const),
    offlineDelivery: check.oneOf('offlineDelivery', rule('offlineDelivery'), ['paced', 'immediate'] as const),
    offlineDetectionDelayMs: delayRange('offlineDetectionDelayMs', plain('offlineDetectionDelayMs')),
    offlineBatchSize: check.integer('offlineBatchSize', plain('offlineBatchSize'), { min: 1 }),
    offlineBatchIntervalMs: check.milliseconds('offlineBatchIntervalMs', plain('offlineBatchIntervalMs')),
    offlineTimers: timers(options.offlineTimers),
    oversizedMessages: check.oneOf('oversizedMessages', plain('oversizedMessages'), ['discard', 'disconnect'] as const),
    logger: options.logger === undefined ? silentLogger : check.logger('logger', options.logger),
  };
}

/**
 * Options of the emulator's MQTT broker: the service's documented rules and limits (reference §5.6, §5.7, §8.2),
 * and the guards that keep the broker up under hostile clients. Resolved and validated here, once.
 */
import { type Logger, silentLogger } from '../util/logger.js';
import { MAX_TIMER_MS } from '../util/backoff.js';
import { optionChecks } from '../util/option-checks.js';

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
  /** Longest topic name or filter, parent and subtopics together, in characters (default 64). Infinity: no limit. */
  maxTopicLength?: number;
  /** Most subscriptions one client may hold (default 30; the broker's own P2P subscription does not count). Infinity: no limit. */
  maxSubscriptions?: number;
  /** Keep Alive cap in seconds (default 480, 8 minutes): a longer or zero Keep Alive is lowered to it. Infinity: no cap. */
  maxKeepAliveSeconds?: number;
  /** Retained messages (not supported by the service). Default `'refuse'`. */
  retainedMessages?: UnsupportedFeaturePolicy;
  /** Will messages (not supported by the service). Default `'refuse'`. */
  willMessages?: UnsupportedFeaturePolicy;
  /** Shared subscriptions `$share/<group>/<filter>` (not supported by the service). Default `'refuse'`. */
  sharedSubscriptions?: 'refuse' | 'allow';
  /** QoS 2 in a persistent session (clean session off, or an MQTT 5 session expiry): not supported by the service. Default `'refuse'`. */
  qos2PersistentSessions?: 'refuse' | 'allow';
  /**
   * Turn every rule above off (and `maxPayloadBytes`), for use as a plain MQTT broker. A rule option given
   * explicitly still applies. Authentication, P2P, `$SYS` and the guards below stay on. Default false.
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
  /** Where the broker says which rule refused what (one `warn` line each). Default: silent. */
  logger?: Logger;
}

/** The parent topics that exist by default: `demo` for the README's quick start and `sim` for the simulator's `sim/%i`. */
export const DEFAULT_PARENT_TOPICS: readonly string[] = Object.freeze(['demo', 'sim']);

/** Defaults of the broker options. */
export const BROKER_DEFAULTS = Object.freeze({
  parentTopics: DEFAULT_PARENT_TOPICS,
  maxTopicLength: 64,
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
} as const);

/** What each rule becomes under `lenient`. */
const LENIENT = Object.freeze({
  parentTopics: false,
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
  readonly maxTopicLength: number;
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
  readonly logger: Logger;
}

/** Names of the options above, for the unknown-option check. */
export const BROKER_OPTION_NAMES: ReadonlySet<string> = new Set<keyof BrokerOptions>([
  'parentTopics', 'maxTopicLength', 'maxSubscriptions', 'maxKeepAliveSeconds', 'retainedMessages', 'willMessages',
  'sharedSubscriptions', 'qos2PersistentSessions', 'lenient', 'maxPacketBytes', 'maxQueuedBytes', 'drainTimeoutMs', 'logger',
  'maxOfflineMessages', 'maxOfflineBytes', 'offlineQueuePolicy',
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

/** Resolve and validate the broker options; throws `ValidationError` `InvalidOption` naming the first bad one. */
export function resolveBrokerOptions(options: BrokerOptions): ResolvedBrokerOptions {
  const lenient = check.boolean('lenient', options.lenient === undefined ? false : options.lenient);
  const rule = <K extends keyof typeof LENIENT & keyof BrokerOptions>(key: K): unknown =>
    options[key] !== undefined ? options[key] : lenient ? LENIENT[key] : BROKER_DEFAULTS[key];
  const plain = <K extends keyof typeof BROKER_DEFAULTS & keyof BrokerOptions>(key: K): unknown =>
    options[key] !== undefined ? options[key] : BROKER_DEFAULTS[key];
  return {
    parentTopics: parentTopics(rule('parentTopics')),
    maxTopicLength: check.integer('maxTopicLength', rule('maxTopicLength'), { min: 1, infinity: true }),
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
    logger: options.logger === undefined ? silentLogger : check.logger('logger', options.logger),
  };
}

/**
 * What can be checked before a PUBLISH, SUBSCRIBE or CONNECT leaves the device (pure). A message the broker
 * would refuse gets a typed {@link ValidationError} here and is never sent: a refused message used to be resent on
 * every reconnect, because the broker's only answer (MQTT 3.1.1) is to close the connection.
 *
 * Two sets of rules: MQTT's own (always), and the service's (ApsaraMQ for MQTT, reference §5.6, §5.7 and §8.2),
 * which apply unless the caller says the broker is not ApsaraMQ (`brokerIsApsaraMq: false`).
 */
import type { IClientPublishOptions } from 'mqtt';
import { ValidationError } from '../errors.js';
import { TOKEN_NOTICE_TOPICS } from './token-rules.js';

/** The service's limit on a topic: parent topic plus subtopics, in characters (reference §5.6). */
export const MAX_TOPIC_CHARACTERS = 64;

/** The service's limit on a message body: 64 KB (reference §5.7, §8.2; Platinum instances can raise it). */
export const MAX_PAYLOAD_BYTES = 64 * 1024;

/** MQTT's own limit on a UTF-8 string (topic names and filters): a two-byte length prefix. */
const MAX_MQTT_STRING_BYTES = 65_535;

/** The largest payload an MQTT packet can carry at all (remaining length 268,435,455 minus a minimal header). */
const MAX_MQTT_PAYLOAD_BYTES = 268_435_455 - 4;

/** The rules a connection applies; resolved from the connect options. */
export interface MessageRules {
  /** Apply the service's rules (topic length, payload size, no retain / will / shared subscriptions / persistent QoS 2). */
  readonly apsaraMq: boolean;
  /** Largest payload in bytes. */
  readonly maxPayloadBytes: number;
  /** Does the session outlive the connection (3.1.1 `clean: false`; 5 a session expiry above 0)? */
  readonly persistentSession: boolean;
}

/** The default payload limit for a broker: the service's 64 KB, or MQTT's own for another broker. */
export function defaultMaxPayloadBytes(apsaraMq: boolean): number {
  return apsaraMq ? MAX_PAYLOAD_BYTES : MAX_MQTT_PAYLOAD_BYTES;
}

/** A UTF-16 string that cannot be encoded as UTF-8: a high surrogate without its low half, or a low one alone. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** The second topic level that marks a P2P topic, `<parent>/p2p/<ClientId>` (reference §5.6). */
const P2P_LEVEL = 'p2p';

/**
 * The characters of a topic the service counts against its 64: all of them, except for a P2P topic
 * `<parent>/p2p/<ClientId>`, where only the parent topic counts. The ClientId is an address with its own
 * limit (64 characters), not a subtopic: counting it would make P2P impossible for long ClientIds, and Alibaba's
 * own demo publishes to `topic + '/p2p/' + clientId`. Characters are Unicode code points.
 */
export function countedTopicLength(topic: string): number {
  const levels = topic.split('/');
  if (levels.length === 3 && levels[1] === P2P_LEVEL && levels[0] !== '' && levels[2] !== '') return [...(levels[0] ?? '')].length;
  return [...topic].length;
}

function checkString(kind: 'topic' | 'topic filter', value: unknown): string {
  if (typeof value !== 'string') throw new ValidationError('InvalidTopic', `The ${kind} must be a string, not ${typeof value}`);
  if (value.length === 0) throw new ValidationError('InvalidTopic', `The ${kind} is empty`);
  if (LONE_SURROGATE.test(value)) throw new ValidationError('InvalidTopic', `The ${kind} ${JSON.stringify(value)} is not valid UTF-8 (it holds a lone surrogate)`);
  if (value.includes('\u0000')) throw new ValidationError('InvalidTopic', `The ${kind} ${JSON.stringify(value)} holds U+0000, which MQTT forbids`);
  // At most 3 bytes of UTF-8 per UTF-16 unit: a short string needs no count.
  if (value.length > MAX_MQTT_STRING_BYTES / 3 && Buffer.byteLength(value, 'utf8') > MAX_MQTT_STRING_BYTES) throw new ValidationError('InvalidTopic', `The ${kind} is over MQTT's ${MAX_MQTT_STRING_BYTES} bytes`);
  return value;
}

function checkServiceLength(kind: 'topic' | 'topic filter', value: string, rules: MessageRules): void {
  // No more code points than UTF-16 units: a topic of at most 64 units needs no count.
  if (!rules.apsaraMq || value.length <= MAX_TOPIC_CHARACTERS) return;
  const counted = countedTopicLength(value);
  if (counted > MAX_TOPIC_CHARACTERS) {
    throw new ValidationError(
      'InvalidTopic',
      `The ${kind} ${JSON.stringify(value)} is ${counted} characters long; ApsaraMQ for MQTT allows ${MAX_TOPIC_CHARACTERS} for the parent topic and its subtopics`,
    );
  }
}

/**
 * The topic names checked last, under each of the two rule sets a name's check depends on (the service's or MQTT's
 * alone): a device, and a gateway's devices, publish to the same few topics again and again.
 */
const lastValid: [unknown, unknown] = [undefined, undefined];

/** A topic name to publish to: not empty, no wildcard, valid UTF-8, and on the service not a `$` topic and within its length. */
export function checkTopicName(topic: unknown, rules: MessageRules): string {
  const set = rules.apsaraMq ? 1 : 0;
  if (topic === lastValid[set]) return topic as string;
  const value = checkString('topic', topic);
  if (value.includes('+') || value.includes('#')) {
    throw new ValidationError('InvalidTopic', `Cannot publish to ${JSON.stringify(value)}: + and # are wildcards, for subscriptions only`);
  }
  // MQTT §4.7.2: `$` topics are the broker's. The service closes the session of a client that publishes to one (the
  // parent-topic rule: a parent is letters, digits, - and _), which would cost maxDeliveryAttempts sessions to learn;
  // the one it takes from a device is Token mode's upload (reference §5.3). Another broker may take others ($aws/…).
  if (rules.apsaraMq && value.startsWith('$') && value !== TOKEN_NOTICE_TOPICS.upload) {
    throw new ValidationError(
      'InvalidTopic',
      `Cannot publish to ${JSON.stringify(value)}: topics starting with $ are the broker's own, and ApsaraMQ for MQTT closes the session of a device that publishes to one; publish under a parent topic created on the instance`,
    );
  }
  checkServiceLength('topic', value, rules);
  lastValid[set] = value;
  return value;
}

/** A topic filter to subscribe to: MQTT's wildcard rules, and no shared subscription on ApsaraMQ. */
export function checkTopicFilter(filter: unknown, rules: MessageRules): string {
  const value = checkString('topic filter', filter);
  const levels = value.split('/');
  levels.forEach((level, i) => {
    if (level.includes('#') && (level !== '#' || i !== levels.length - 1)) {
      throw new ValidationError('InvalidTopic', `Invalid topic filter ${JSON.stringify(value)}: # must be a whole level, and the last one`);
    }
    if (level.includes('+') && level !== '+') {
      throw new ValidationError('InvalidTopic', `Invalid topic filter ${JSON.stringify(value)}: + must be a whole level`);
    }
  });
  if (value.startsWith('$share/')) {
    if (rules.apsaraMq) {
      throw new ValidationError('UnsupportedByService', `Cannot subscribe to ${JSON.stringify(value)}: ApsaraMQ for MQTT does not support shared subscriptions`);
    }
    // MQTT 5 §4.8.2: $share/<name>/<filter>, the name without wildcards or /.
    if (levels.length < 3 || levels[1] === '' || levels[1]?.includes('+') || levels[1]?.includes('#')) {
      throw new ValidationError('InvalidTopic', `Invalid shared subscription ${JSON.stringify(value)}: use $share/<name>/<filter>`);
    }
  }
  checkServiceLength('topic filter', value, rules);
  return value;
}

/** QoS 0, 1 or 2; on ApsaraMQ not 2 with a persistent session. */
export function checkQos(qos: unknown, rules: MessageRules, what: 'publish' | 'subscription'): 0 | 1 | 2 {
  if (qos === undefined) return what === 'publish' ? 0 : 1;
  if (qos !== 0 && qos !== 1 && qos !== 2) throw new ValidationError('InvalidOption', `Option qos must be 0, 1 or 2, not ${String(qos)}`);
  if (qos === 2 && rules.apsaraMq && rules.persistentSession) {
    throw new ValidationError('UnsupportedByService', `QoS 2 ${what} with a persistent session (clean: false): ApsaraMQ for MQTT does not support it; use QoS 1`);
  }
  return qos;
}

/** The longest application id of a message, in UTF-8 bytes (the durable outbox keeps it in one byte's length). */
export const MAX_MESSAGE_ID_BYTES = 255;

/** The application's id of a message (option `id`): a non-empty string of at most 255 bytes, or none. */
export function checkMessageId(id: unknown): string | undefined {
  if (id === undefined) return undefined;
  if (typeof id !== 'string' || id.length === 0 || LONE_SURROGATE.test(id) || Buffer.byteLength(id) > MAX_MESSAGE_ID_BYTES) {
    throw new ValidationError('InvalidOption', `Option id must be a non-empty string of at most ${MAX_MESSAGE_ID_BYTES} bytes of UTF-8 (got ${typeof id === 'string' ? `${Buffer.byteLength(id)} bytes` : typeof id})`);
  }
  return id;
}

/** The payload as bytes, within the limit. Strings are sent as UTF-8. */
export function checkPayload(message: unknown, rules: MessageRules): Buffer {
  let bytes: Buffer;
  if (typeof message === 'string') {
    if (LONE_SURROGATE.test(message)) throw new ValidationError('InvalidOption', 'The message string is not valid UTF-8 (it holds a lone surrogate); pass a Buffer for binary data');
    bytes = Buffer.from(message, 'utf8');
  } else if (Buffer.isBuffer(message)) {
    bytes = message;
  } else if (message instanceof Uint8Array) {
    bytes = Buffer.from(message.buffer, message.byteOffset, message.byteLength);
  } else {
    throw new ValidationError('InvalidOption', `The message must be a string, Buffer or Uint8Array, not ${message === null ? 'null' : typeof message}`);
  }
  if (bytes.length > rules.maxPayloadBytes) {
    throw new ValidationError('PayloadTooLarge', `The message is ${bytes.length} bytes; the limit is ${rules.maxPayloadBytes}`);
  }
  return bytes;
}

/** Retained messages: refused on ApsaraMQ, which does not support them (reference §8.2). */
export function checkRetain(retain: unknown, rules: MessageRules): boolean {
  if (retain === undefined || retain === false) return false;
  if (retain !== true) throw new ValidationError('InvalidOption', `Option retain must be a boolean, not ${String(retain)}`);
  if (rules.apsaraMq) throw new ValidationError('UnsupportedByService', 'ApsaraMQ for MQTT does not support retained messages (retain: true)');
  return true;
}

/** MQTT 5 user properties: string keys, string or string[] values. */
export function checkUserProperties(name: string, value: unknown): Record<string, string | string[]> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new ValidationError('InvalidOption', `Option ${name} must be an object of string (or string[]) values`);
  }
  for (const [key, v] of Object.entries(value)) {
    const ok = typeof v === 'string' || (Array.isArray(v) && v.every((x) => typeof x === 'string'));
    if (!ok || LONE_SURROGATE.test(key) || (typeof v === 'string' && LONE_SURROGATE.test(v))) {
      throw new ValidationError('InvalidOption', `Option ${name}.${key} must be a valid UTF-8 string or an array of them`);
    }
  }
  return value as Record<string, string | string[]>;
}

/** MQTT 5 publish properties the connector passes through, checked so that a bad one cannot break the session. */
export function checkPublishProperties(properties: Record<string, unknown>, rules: MessageRules): void {
  const known = ['userProperties', 'messageExpiryInterval', 'contentType', 'responseTopic', 'correlationData', 'payloadFormatIndicator'];
  for (const [key, value] of Object.entries(properties)) {
    if (value === undefined) continue;
    const bad = (what: string): ValidationError => new ValidationError('InvalidOption', `Option properties.${key} must be ${what}`);
    switch (key) {
      case 'userProperties':
        checkUserProperties('properties.userProperties', value);
        break;
      case 'messageExpiryInterval':
        if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 0xffff_ffff) throw bad('an integer from 0 to 4294967295 (seconds)');
        break;
      case 'contentType':
        if (typeof value !== 'string' || LONE_SURROGATE.test(value)) throw bad('a UTF-8 string');
        break;
      case 'responseTopic':
        checkTopicName(value, rules);
        break;
      case 'correlationData':
        if (!Buffer.isBuffer(value)) throw bad('a Buffer');
        break;
      case 'payloadFormatIndicator':
        if (typeof value !== 'boolean') throw bad('true or false');
        break;
      default:
        throw new ValidationError('InvalidOption', `Option properties.${key} is not a publish property the connector passes on (${known.join(', ')})`);
    }
  }
}

/** The options of a subscription: QoS (default 1), and MQTT 5's no local, retain as published and retain handling. */
export function checkSubscriptionOptions(
  options: { qos?: unknown; nl?: unknown; rap?: unknown; rh?: unknown },
  rules: MessageRules,
  protocolVersion: 4 | 5,
): { qos: 0 | 1 | 2; nl?: boolean; rap?: boolean; rh?: 0 | 1 | 2 } {
  const qos = checkQos(options.qos ?? 1, rules, 'subscription');
  const v5 = protocolVersion === 5;
  for (const flag of ['nl', 'rap'] as const) {
    if (options[flag] !== undefined && typeof options[flag] !== 'boolean') throw new ValidationError('InvalidOption', `Option ${flag} must be true or false`);
    if (options[flag] !== undefined && !v5) throw new ValidationError('InvalidOption', `Option ${flag} needs protocolVersion: 5`);
  }
  const rh = options.rh;
  if (rh !== undefined && rh !== 0 && rh !== 1 && rh !== 2) throw new ValidationError('InvalidOption', 'Option rh must be 0, 1 or 2');
  if (rh !== undefined && !v5) throw new ValidationError('InvalidOption', 'Option rh needs protocolVersion: 5');
  const { nl, rap } = options as { nl?: boolean; rap?: boolean };
  return { qos, ...(nl === undefined ? {} : { nl }), ...(rap === undefined ? {} : { rap }), ...(rh === undefined ? {} : { rh }) };
}

/** The MQTT 5 properties of a publish, subscribe or unsubscribe: only with protocolVersion 5, an object, valid user properties. */
export function checkV5Properties<T extends { userProperties?: Record<string, string | string[]> }>(what: string, properties: T | undefined, protocolVersion: 4 | 5): T | undefined {
  if (properties === undefined) return undefined;
  if (protocolVersion !== 5) throw new ValidationError('InvalidOption', `${what} properties need protocolVersion: 5`);
  if (properties === null || typeof properties !== 'object') throw new ValidationError('InvalidOption', `${what} properties must be an object`);
  if (properties.userProperties !== undefined) checkUserProperties(`${what} properties.userProperties`, properties.userProperties);
  return properties;
}

/** What a connection checks its operations against: the message rules and the protocol version. */
export interface OperationRules {
  readonly rules: MessageRules;
  readonly protocolVersion: 4 | 5;
}

/**
 * The options of a publish without properties, by QoS and retain (index `qos * 2 + retain`): one frozen object each,
 * not one per message (nothing changes them: mqtt.js copies what it is given).
 */
const PLAIN_OPTIONS: readonly IClientPublishOptions[] = [0, 1, 2].flatMap((qos) => [false, true].map((retain) => Object.freeze({ qos: qos as 0 | 1 | 2, retain })));

/** A publish, checked: the topic, the payload as bytes and mqtt.js's options. */
export function checkPublish(
  topic: unknown,
  message: unknown,
  options: { qos?: unknown; retain?: unknown; properties?: Record<string, unknown> } | null,
  { rules, protocolVersion }: OperationRules,
): { topic: string; payload: Buffer; options: IClientPublishOptions } {
  if (options === null || typeof options !== 'object') throw new ValidationError('InvalidOption', 'publish options must be an object');
  const name = checkTopicName(topic, rules);
  const payload = checkPayload(message, rules);
  const qos = checkQos(options.qos, rules, 'publish');
  const retain = checkRetain(options.retain, rules);
  const properties = checkV5Properties('publish', options.properties, protocolVersion);
  if (properties) checkPublishProperties(properties, rules);
  return { topic: name, payload, options: properties ? { qos, retain, properties: properties as IClientPublishOptions['properties'] } : (PLAIN_OPTIONS[qos * 2 + (retain ? 1 : 0)] as IClientPublishOptions) };
}

/** Topic filters to (un)subscribe from: at least one, each valid. */
export function checkTopicFilters(what: 'subscribe' | 'unsubscribe', topic: unknown, rules: MessageRules): string[] {
  const filters = (Array.isArray(topic) ? topic : [topic]).map((filter: unknown) => checkTopicFilter(filter, rules));
  if (filters.length === 0) throw new ValidationError('InvalidTopic', `${what} needs at least one topic filter`);
  return filters;
}

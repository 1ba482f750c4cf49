/**
 * The service's rules for what devices may do over MQTT (reference §5.4, §5.6, §5.7, §8.2) and the broker's guards
 * against hostile clients, as pure checks. Each check answers with a {@link Refusal} naming its rule; the broker
 * (broker-rules.ts, broker-wire.ts) turns a refusal into the protocol's answer, a stats counter and a log line.
 */
import type { ResolvedBrokerOptions } from './broker-options.js';
import { countedTopicLength, mayP2pSubscribe } from './p2p.js';

/** MQTT 5 reason codes the rules answer with (MQTT 5.0 §2.4). */
export const REASON = Object.freeze({
  IMPLEMENTATION_SPECIFIC_ERROR: 0x83,
  NOT_AUTHORIZED: 0x87,
  TOPIC_FILTER_INVALID: 0x8f,
  TOPIC_NAME_INVALID: 0x90,
  PACKET_TOO_LARGE: 0x95,
  QUOTA_EXCEEDED: 0x97,
  RETAIN_NOT_SUPPORTED: 0x9a,
  QOS_NOT_SUPPORTED: 0x9b,
  PAYLOAD_FORMAT_INVALID: 0x99,
});

/** One rule: the option and CLI flag that control it (none for the guards that are always on), for messages. */
export interface RuleInfo {
  readonly option?: string;
  readonly flag?: string;
}

/** Every rule and guard, by the name the stats count it under. */
export const RULES = Object.freeze({
  parentTopic: { option: 'parentTopics', flag: '--parent-topics' },
  topicLength: { option: 'maxTopicLength and p2pTopicLength', flag: '--max-topic-length and --p2p-topic-length' },
  subscriptions: { option: 'maxSubscriptions', flag: '--max-subscriptions' },
  keepAlive: { option: 'maxKeepAliveSeconds and keepAliveZero', flag: '--max-keep-alive and --keep-alive-zero' },
  payloadSize: { option: 'maxPayloadBytes and oversizedMessages', flag: '--max-payload-bytes and --oversized-messages' },
  /** A CONNECT whose ClientId's GroupId was not created on the instance. */
  groupId: { option: 'groups and unknownGroupRefusal', flag: '--groups and --unknown-group-refusal' },
  /** An MQTT 3.1 CONNECT (the service speaks 3.1.1 and 5). */
  mqtt31: { option: 'mqtt31', flag: '--mqtt31' },
  /** A CONNECT with a revoked DeviceCredential whose password verifies, refused as not authorized. */
  revokedCredential: { option: 'revokedCredentialRefusal', flag: '--revoked-credential-refusal' },
  retain: { option: 'retainedMessages', flag: '--retained-messages' },
  will: { option: 'willMessages', flag: '--will-messages' },
  sharedSubscription: { option: 'sharedSubscriptions', flag: '--shared-subscriptions' },
  qos2PersistentSession: { option: 'qos2PersistentSessions', flag: '--qos2-persistent-sessions' },
  subscriptionIdentifier: {},
  packetSize: { option: 'maxPacketBytes', flag: '--max-packet-bytes' },
  slowConsumer: { option: 'maxQueuedBytes and drainTimeoutMs', flag: '--max-queued-bytes and --drain-timeout-ms' },
  sysTopic: {},
  p2pSubscription: {},
  unsafeSubscribe: {},
  qos2Unreleased: { option: 'maxQueuedBytes', flag: '--max-queued-bytes' },
  /** Token mode: a PUBLISH or SUBSCRIBE outside the session's tokens (notice code 4 or 5, then a disconnect). */
  tokenResource: {},
  /** Token mode: a token of the session stopped being valid (expired, revoked) or an uploaded one is not valid. */
  tokenInvalid: {},
  /** Token mode: a `$SYS/uploadToken` payload that is not `{"Token": "…", "type": "R|W|RW"}`. */
  tokenUpload: {},
  /** A packet that cannot be read, or whose MQTT 5 properties are cut short or of another packet (CONNACK / DISCONNECT 0x81). */
  malformedPacket: {},
  /** A packet MQTT 5 calls a Protocol Error: a property given twice, Maximum Packet Size 0... (CONNACK / DISCONNECT 0x82). */
  protocolError: {},
  /** A CONNECT of a protocol level the broker does not speak (CONNACK 1), or of another protocol name (closed). */
  protocolVersion: {},
  /** A packet aedes threw on; the throw is contained and the client disconnected (DISCONNECT 0x83). */
  unhandledPacket: {},
  /** A message a persistent session had no room for: the oldest not yet sent dropped, or the new one refused. */
  offlineQueue: { option: 'maxOfflineMessages, maxOfflineBytes and offlineQueuePolicy', flag: '--max-offline-messages, --max-offline-bytes and --offline-queue-policy' },
  /** A message larger than the Maximum Packet Size its MQTT 5 subscriber asked for: not sent to it (MQTT-3.1.2-25). */
  clientMaximumPacketSize: {},
} satisfies Record<string, RuleInfo>);

/** The name of a rule or guard. */
export type RuleName = keyof typeof RULES;

/**
 * What a rule decided. `disconnect`: the client is disconnected (an MQTT 5 client first gets DISCONNECT with
 * `reasonCode`; a CONNECT is refused with a CONNACK); `deny`: only this subscription is refused (SUBACK failure);
 * `ignore`: the flag or will is dropped and the packet goes on; `cap`: a value is lowered (Keep Alive); `drop`: a
 * message is not delivered to one client (its session's queue is full, or the message exceeds its Maximum Packet Size);
 * `discard`: a PUBLISH is acknowledged as usual and delivered to no one.
 */
export interface Refusal {
  readonly rule: RuleName;
  readonly action: 'disconnect' | 'deny' | 'ignore' | 'cap' | 'drop' | 'discard';
  /** MQTT 5 reason code of the DISCONNECT (for `disconnect`). */
  readonly reasonCode: number;
  /** Why, in words; names no secret. */
  readonly reason: string;
}

/** What the publish and subscribe checks need to know of the client. */
export interface SessionFacts {
  readonly clientId: string;
  /** Does the session outlive the connection (clean session off, or an MQTT 5 session expiry)? */
  readonly persistent: boolean;
}

/** The first level of a topic or filter: its parent topic. */
export function parentOf(topic: string): string {
  const slash = topic.indexOf('/');
  return slash === -1 ? topic : topic.slice(0, slash);
}

/** A topic's or filter's characters as the length rule counts them (`p2pTopicLength`: a P2P topic's parent only, or every one). */
function topicLength(rules: ResolvedBrokerOptions, topic: string): number {
  return rules.p2pTopicLength === 'whole' ? [...topic].length : countedTopicLength(topic);
}

const SHARE_PREFIX = '$share/';
const SYS_PREFIX = '$SYS';

function parentRefusal(rules: ResolvedBrokerOptions, topic: string, verb: string): Refusal | undefined {
  if (rules.parentTopics === undefined) return undefined;
  const parent = parentOf(topic);
  if (rules.parentTopics.has(parent)) return undefined;
  const named = parent === '' ? 'the empty parent topic' : /^[+#]$/.test(parent) ? `a wildcard parent ('${parent}')` : `parent topic '${parent}'`;
  return {
    rule: 'parentTopic',
    action: 'disconnect',
    reasonCode: REASON.NOT_AUTHORIZED,
    reason: `${verb} under ${named}, which was not created on the instance (the service disconnects the client)`,
  };
}

/**
 * Check a PUBLISH by a client (or a will being published). Order: parent topic (an authorization failure for the
 * service, reference §5.4), topic length, payload size, retain, QoS 2 in a persistent session.
 */
export function checkPublish(
  rules: ResolvedBrokerOptions & { readonly maxPayloadBytes: number },
  packet: { readonly topic: string; readonly payload: { readonly length: number }; readonly retain: boolean; readonly qos: number },
  session: SessionFacts | undefined,
): Refusal | undefined {
  const parent = parentRefusal(rules, packet.topic, 'PUBLISH');
  if (parent) return parent;
  const length = topicLength(rules, packet.topic);
  if (length > rules.maxTopicLength) {
    return { rule: 'topicLength', action: 'disconnect', reasonCode: REASON.TOPIC_NAME_INVALID, reason: `PUBLISH to a topic of ${length} characters, over the limit of ${rules.maxTopicLength}` };
  }
  if (packet.payload.length > rules.maxPayloadBytes) {
    // Larger messages are discarded (reference §5.7, §8.2); the service is also reported to reject such a client.
    const action = rules.oversizedMessages === 'disconnect' ? 'disconnect' : 'discard';
    return { rule: 'payloadSize', action, reasonCode: REASON.PACKET_TOO_LARGE, reason: `PUBLISH payload of ${packet.payload.length} bytes, over the limit of ${rules.maxPayloadBytes}` };
  }
  if (packet.retain && rules.retainedMessages !== 'allow') {
    return { rule: 'retain', action: rules.retainedMessages === 'refuse' ? 'disconnect' : 'ignore', reasonCode: REASON.RETAIN_NOT_SUPPORTED, reason: 'a retained PUBLISH (the service does not support retained messages)' };
  }
  if (packet.qos === 2 && session?.persistent === true && rules.qos2PersistentSessions === 'refuse') {
    return { rule: 'qos2PersistentSession', action: 'disconnect', reasonCode: REASON.QOS_NOT_SUPPORTED, reason: 'a QoS 2 PUBLISH in a persistent session (the service does not support QoS 2 without a clean session)' };
  }
  return undefined;
}

/**
 * Check one topic filter of a SUBSCRIBE. `held` holds the filters the client has already (for the count).
 * Order: shared subscription, `$SYS`, parent topic, topic length, another client's P2P topic, QoS 2 in a
 * persistent session, subscriptions per client.
 */
export function checkSubscribe(
  rules: ResolvedBrokerOptions,
  subscription: { readonly topic: string; readonly qos: number },
  session: SessionFacts,
  held: { has(filter: string): boolean; readonly size: number },
): Refusal | undefined {
  const filter = subscription.topic;
  const deny = (rule: RuleName, reason: string): Refusal => ({ rule, action: 'deny', reasonCode: REASON.NOT_AUTHORIZED, reason });
  if (filter.startsWith(SHARE_PREFIX) && rules.sharedSubscriptions === 'refuse') {
    return deny('sharedSubscription', `a shared subscription '${filter}' (the service does not support shared subscriptions)`);
  }
  // Devices must not watch other clients connect and subscribe (aedes publishes both under $SYS).
  if (filter === SYS_PREFIX || filter.startsWith(`${SYS_PREFIX}/`)) return deny('sysTopic', `a subscription to '${filter}' ($SYS is closed to devices)`);
  // An allowed shared subscription is checked on the filter it shares, `$share/<group>/<filter>`.
  const shared = filter.startsWith(SHARE_PREFIX) ? filter.split('/').slice(2).join('/') : filter;
  const parent = parentRefusal(rules, shared, 'SUBSCRIBE');
  if (parent) return parent;
  const length = topicLength(rules, filter);
  if (length > rules.maxTopicLength) {
    return deny('topicLength', `a topic filter of ${length} characters, over the limit of ${rules.maxTopicLength}`);
  }
  if (!mayP2pSubscribe(filter, session.clientId)) return deny('p2pSubscription', `a subscription to '${filter}', another client's P2P topic`);
  if (subscription.qos === 2 && session.persistent && rules.qos2PersistentSessions === 'refuse') {
    return deny('qos2PersistentSession', 'a QoS 2 subscription in a persistent session (the service does not support QoS 2 without a clean session)');
  }
  if (!held.has(filter) && held.size >= rules.maxSubscriptions) {
    return deny('subscriptions', `subscription number ${held.size + 1}, over the limit of ${rules.maxSubscriptions} per client`);
  }
  return undefined;
}

/** A will of a CONNECT, as far as the rules look at it. */
export interface WillFacts {
  readonly retain?: boolean | undefined;
}

/** Check a CONNECT's will: `refuse` refuses the CONNECT, `ignore` drops the will (or its retain flag). */
export function checkWill(rules: ResolvedBrokerOptions, will: WillFacts | undefined | null): Refusal | undefined {
  if (!will) return undefined;
  if (rules.willMessages !== 'allow') {
    return { rule: 'will', action: rules.willMessages === 'refuse' ? 'disconnect' : 'ignore', reasonCode: REASON.IMPLEMENTATION_SPECIFIC_ERROR, reason: 'a CONNECT with a will message (the service does not support will messages)' };
  }
  if (will.retain === true && rules.retainedMessages !== 'allow') {
    return { rule: 'retain', action: rules.retainedMessages === 'refuse' ? 'disconnect' : 'ignore', reasonCode: REASON.RETAIN_NOT_SUPPORTED, reason: 'a CONNECT with a retained will message (the service does not support retained messages)' };
  }
  return undefined;
}

/**
 * The Keep Alive cap (reference §8.2): `undefined` when the client's Keep Alive stands, else the refusal (action
 * `cap`) whose value the broker applies instead: a longer Keep Alive, or none at all (0, unless `keepAliveZero` is
 * `allow`), becomes the cap.
 */
export function checkKeepAlive(rules: ResolvedBrokerOptions, keepalive: number): (Refusal & { readonly seconds: number }) | undefined {
  const cap = rules.maxKeepAliveSeconds;
  if (!Number.isFinite(cap) || (keepalive === 0 ? rules.keepAliveZero === 'allow' : keepalive <= cap)) return undefined;
  const asked = keepalive === 0 ? 'no Keep Alive (0)' : `a Keep Alive of ${keepalive} s`;
  return { rule: 'keepAlive', action: 'cap', reasonCode: 0, reason: `${asked}, lowered to the broker's ${cap} s`, seconds: cap };
}

const OUTCOME = Object.freeze({
  disconnect: 'refused, the client is disconnected',
  deny: 'refused (SUBACK failure)',
  ignore: 'ignored: the packet goes on without it',
  cap: 'capped',
  drop: 'dropped: that client does not get the message',
  discard: 'discarded: acknowledged, delivered to no one',
});

/** A log line for a refusal: the rule and what controls it, who, what, and what the broker did. */
export function describeRefusal(refusal: Refusal, clientId: string | undefined): string {
  const { option, flag } = RULES[refusal.rule] as RuleInfo;
  const control = option === undefined ? 'always on' : `option ${option}, flag ${flag ?? '(none)'}`;
  return `MQTT rule ${refusal.rule} (${control}): ${clientId ?? 'a client'}: ${refusal.reason} — ${OUTCOME[refusal.action]}`;
}

/**
 * MQTT 5 properties of the packets a client sends, checked against the specification (MQTT 5.0 §2.2.2.2 and each
 * packet's section) as mqtt-packet 9 leaves them. mqtt-packet does not refuse a property it could not read: a string
 * cut short is `null`, a two- or four-byte integer cut short is `-1`, a variable byte integer `false`, a property
 * given twice becomes a list, and a property of another packet type is kept. aedes then reads those values as if
 * they were good ones (a `null` Response Topic ended the emulator's process). Pure: no I/O.
 */

/** How mqtt-packet reads each property (its `propertiesTypes`). */
type PropertyType = 'int32' | 'int16' | 'int8' | 'bool' | 'var' | 'string' | 'binary' | 'pairs';

const TYPE: Readonly<Record<string, PropertyType>> = Object.freeze({
  payloadFormatIndicator: 'bool',
  messageExpiryInterval: 'int32',
  contentType: 'string',
  responseTopic: 'string',
  correlationData: 'binary',
  subscriptionIdentifier: 'var',
  sessionExpiryInterval: 'int32',
  assignedClientIdentifier: 'string',
  serverKeepAlive: 'int16',
  authenticationMethod: 'string',
  authenticationData: 'binary',
  requestProblemInformation: 'bool',
  willDelayInterval: 'int32',
  requestResponseInformation: 'bool',
  responseInformation: 'string',
  serverReference: 'string',
  reasonString: 'string',
  receiveMaximum: 'int16',
  topicAliasMaximum: 'int16',
  topicAlias: 'int16',
  maximumQoS: 'int8',
  retainAvailable: 'bool',
  userProperties: 'pairs',
  maximumPacketSize: 'int32',
  wildcardSubscriptionAvailable: 'bool',
  subscriptionIdentifiersAvailable: 'bool',
  sharedSubscriptionAvailable: 'bool',
});

const set = (...names: string[]): ReadonlySet<string> => new Set(names);
const ACK = set('reasonString', 'userProperties');

/** The properties each packet a client sends may carry (MQTT 5.0 §3.x.2.x), `will` for the CONNECT's Will Properties. */
const ALLOWED: Readonly<Record<string, ReadonlySet<string>>> = Object.freeze({
  connect: set('sessionExpiryInterval', 'receiveMaximum', 'maximumPacketSize', 'topicAliasMaximum', 'requestResponseInformation', 'requestProblemInformation', 'userProperties', 'authenticationMethod', 'authenticationData'),
  will: set('willDelayInterval', 'payloadFormatIndicator', 'messageExpiryInterval', 'contentType', 'responseTopic', 'correlationData', 'userProperties'),
  // Subscription Identifier is a PUBLISH property from the server only: it is refused as a protocol error below.
  publish: set('payloadFormatIndicator', 'messageExpiryInterval', 'topicAlias', 'responseTopic', 'correlationData', 'userProperties', 'subscriptionIdentifier', 'contentType'),
  puback: ACK,
  pubrec: ACK,
  pubrel: ACK,
  pubcomp: ACK,
  subscribe: set('subscriptionIdentifier', 'userProperties'),
  unsubscribe: set('userProperties'),
  disconnect: set('sessionExpiryInterval', 'reasonString', 'userProperties', 'serverReference'),
  auth: set('authenticationMethod', 'authenticationData', 'reasonString', 'userProperties'),
});

/** Why a packet is refused, with the MQTT 5 reason code of the refusal: 0x81 Malformed Packet, 0x82 Protocol Error. */
export interface PropertyProblem {
  readonly reasonCode: 0x81 | 0x82;
  readonly reason: string;
}

const MALFORMED = 0x81;
const PROTOCOL_ERROR = 0x82;

function hasType(type: PropertyType, value: unknown): boolean {
  switch (type) {
    case 'int32':
      return Number.isInteger(value) && (value as number) >= 0 && (value as number) <= 0xffff_ffff;
    case 'int16':
      return Number.isInteger(value) && (value as number) >= 0 && (value as number) <= 0xffff;
    case 'int8':
      return Number.isInteger(value) && (value as number) >= 0 && (value as number) <= 0xff;
    case 'var':
      return Number.isInteger(value) && (value as number) >= 0 && (value as number) <= 268_435_455;
    case 'bool':
      return typeof value === 'boolean';
    case 'string':
      return typeof value === 'string';
    case 'binary':
      return Buffer.isBuffer(value);
    case 'pairs':
      // mqtt-packet folds the pairs into an object of name → value, or → list of values for a name given twice.
      return typeof value === 'object' && value !== null && !Array.isArray(value) && !Buffer.isBuffer(value)
        && Object.values(value).every((v) => typeof v === 'string' || (Array.isArray(v) && v.every((s) => typeof s === 'string')));
  }
}

/** The first problem of one property block, checked against what `kind` may carry. */
function blockProblem(kind: string, properties: unknown): PropertyProblem | undefined {
  if (properties === undefined) return undefined;
  const what = kind === 'will' ? 'the Will Properties of a CONNECT' : `a ${kind.toUpperCase()}`;
  if (typeof properties !== 'object' || properties === null) return { reasonCode: MALFORMED, reason: `${what} whose properties could not be read` };
  const allowed = ALLOWED[kind];
  for (const [name, value] of Object.entries(properties)) {
    // aedes sets a resolved Topic Alias to undefined in place; an absent value is not a property the client sent.
    if (value === undefined) continue;
    const type = TYPE[name];
    if (type === undefined || !allowed?.has(name)) return { reasonCode: MALFORMED, reason: `${what} with the property ${name}, which that packet does not have (MQTT 5.0 §2.2.2.2)` };
    if (Array.isArray(value) && type !== 'pairs') return { reasonCode: PROTOCOL_ERROR, reason: `${what} with the property ${name} more than once` };
    if (!hasType(type, value)) return { reasonCode: MALFORMED, reason: `${what} whose property ${name} is cut short or not a valid ${type}` };
  }
  const values = properties as Record<string, unknown>;
  if (kind === 'connect' && values['maximumPacketSize'] === 0) return { reasonCode: PROTOCOL_ERROR, reason: 'a CONNECT with Maximum Packet Size 0 (MQTT 5.0 §3.1.2.11.4: a Protocol Error)' };
  if (kind === 'connect' && values['receiveMaximum'] === 0) return { reasonCode: PROTOCOL_ERROR, reason: 'a CONNECT with Receive Maximum 0 (MQTT 5.0 §3.1.2.11.3: a Protocol Error)' };
  if (kind === 'publish' && values['subscriptionIdentifier'] !== undefined) return { reasonCode: PROTOCOL_ERROR, reason: 'a PUBLISH with a Subscription Identifier, which only the server sends (MQTT-3.3.4-6)' };
  return undefined;
}

/**
 * The first problem of the MQTT 5 properties of a packet a client sent, or `undefined` when they are as the
 * specification has them (or the packet has none: MQTT 3.1.1). A property of another packet type or cut short is a
 * Malformed Packet (0x81); one given twice where the specification allows it once, or a value it forbids (Maximum
 * Packet Size or Receive Maximum 0, a Subscription Identifier from a client), a Protocol Error (0x82).
 */
export function propertyProblem(packet: { readonly cmd: string; readonly properties?: unknown; readonly will?: unknown }): PropertyProblem | undefined {
  if (!Object.hasOwn(ALLOWED, packet.cmd)) return undefined;
  const own = blockProblem(packet.cmd, packet.properties);
  if (own || packet.cmd !== 'connect') return own;
  const will = packet.will as { properties?: unknown } | null | undefined;
  return will ? blockProblem('will', will.properties) : undefined;
}

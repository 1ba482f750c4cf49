/**
 * The few MQTT 3.1.1 and MQTT 5 packets a simulated device sends and reads, encoded by hand.
 *
 * Why not mqtt.js per device: at 10,000 devices its per-client stores, streams and timers cost several times the
 * 40 KB budget of a simulated device. Why not mqtt-packet (a dependency of the package, which the emulator uses): its
 * per-client parser (an EventEmitter over a BufferList) is heavier than this. Only what the simulator needs is
 * here: CONNECT (username and password, no will), PUBLISH QoS 0/1, PUBACK, SUBSCRIBE, PINGREQ, DISCONNECT out;
 * CONNACK, PUBLISH, PUBACK, SUBACK, PINGRESP and (MQTT 5) DISCONNECT in.
 *
 * MQTT 5 adds a property block to most packets and reason codes to the acknowledgements. The devices send empty
 * property blocks only (no session expiry: with Clean Start that is a session ending with the connection, like
 * MQTT 3.1.1's clean session; no topic aliases, user properties or subscription identifiers), and read the
 * properties the broker sends only to skip them, except Server Keep Alive, which a client must obey.
 */

import { PacketType, type ProtocolLevel, allocPacket, encodePublish as encodeAnyPublish, writeString } from '../mqtt/wire.js';

export { PacketType, type ProtocolLevel } from '../mqtt/wire.js';

/**
 * CONNECT with username and password: protocol level 4 (MQTT 3.1.1) or 5 (MQTT 5, with an empty property block, so
 * Session Expiry Interval 0: with `clean` the session starts fresh and ends with the connection).
 */
export function encodeConnect(init: { clientId: string; username: string; password: string; keepalive: number; clean: boolean; protocol?: ProtocolLevel }): Buffer {
  const clientId = Buffer.from(init.clientId, 'utf8');
  const username = Buffer.from(init.username, 'utf8');
  const password = Buffer.from(init.password, 'utf8');
  const v5 = init.protocol === 5;
  // "MQTT" name (6) + level (1) + flags (1) + keepalive (2) [+ property length (1)], then three length-prefixed fields.
  const remaining = 10 + (v5 ? 1 : 0) + 2 + clientId.length + 2 + username.length + 2 + password.length;
  const [buf, start] = allocPacket(PacketType.CONNECT << 4, remaining);
  let offset = writeString(buf, start, Buffer.from('MQTT'));
  buf[offset++] = v5 ? 5 : 4;
  buf[offset++] = 0x80 | 0x40 | (init.clean ? 0x02 : 0);
  buf.writeUInt16BE(init.keepalive, offset);
  offset += 2;
  if (v5) buf[offset++] = 0; // no properties
  offset = writeString(buf, offset, clientId);
  offset = writeString(buf, offset, username);
  writeString(buf, offset, password);
  return buf;
}

/**
 * PUBLISH; `packetId` is required for QoS 1 and ignored for QoS 0. `topic` is the UTF-8 bytes of the topic. MQTT 5
 * adds an empty property block before the payload.
 */
export function encodePublish(topic: Buffer, payload: Buffer, qos: 0 | 1, packetId = 0, protocol: ProtocolLevel = 4): Buffer {
  return encodeAnyPublish(topic, payload, qos, packetId, protocol);
}

/**
 * PUBACK for a received QoS 1 PUBLISH. The same bytes in both versions: MQTT 5's short form (Remaining Length 2)
 * means reason code 0x00 Success and no properties.
 */
export function encodePuback(packetId: number): Buffer {
  const [buf, start] = allocPacket(PacketType.PUBACK << 4, 2);
  buf.writeUInt16BE(packetId, start);
  return buf;
}

/**
 * SUBSCRIBE to one topic filter (the fixed-header flags of SUBSCRIBE must be 0b0010). MQTT 5 adds an empty property
 * block, and the byte after the filter becomes the subscription options: the QoS, with No Local off (a device
 * subscribes to its own topic to get its messages back), Retain As Published off and Retain Handling 0.
 */
export function encodeSubscribe(packetId: number, topic: string, qos: 0 | 1, protocol: ProtocolLevel = 4): Buffer {
  const filter = Buffer.from(topic, 'utf8');
  const properties = protocol === 5 ? 1 : 0;
  const [buf, start] = allocPacket((PacketType.SUBSCRIBE << 4) | 0x02, 2 + properties + 2 + filter.length + 1);
  buf.writeUInt16BE(packetId, start);
  if (properties) buf[start + 2] = 0;
  const offset = writeString(buf, start + 2 + properties, filter);
  buf[offset] = qos;
  return buf;
}

/** PINGREQ, shared: it never changes. */
export const PINGREQ: Buffer = Buffer.from([PacketType.PINGREQ << 4, 0]);
/** DISCONNECT of MQTT 3.1.1, shared: it never changes. */
export const DISCONNECT: Buffer = Buffer.from([PacketType.DISCONNECT << 4, 0]);
/** DISCONNECT of MQTT 5: reason code 0x00 Normal disconnection (the will, if any, is not sent) and no properties. */
export const DISCONNECT_V5: Buffer = Buffer.from([PacketType.DISCONNECT << 4, 2, 0x00, 0]);

/** One packet read from the broker: its type, the fixed-header flags and the bytes after the fixed header. */
export interface IncomingPacket {
  type: number;
  flags: number;
  body: Buffer;
}

/** A PUBLISH body split into its parts. */
export interface IncomingPublish {
  topic: string;
  qos: number;
  packetId: number;
  payload: Buffer;
}

/**
 * Read a Variable Byte Integer (MQTT 5's property lengths; the same encoding as the Remaining Length) at `offset`.
 * Returns the value and the offset after it. @throws RangeError when it runs past the body or past four bytes.
 */
export function readVarint(body: Buffer, offset: number): [value: number, next: number] {
  let value = 0;
  let multiplier = 1;
  for (let i = 0; i < 4; i++) {
    const byte = body[offset + i];
    if (byte === undefined) throw new RangeError('Truncated MQTT variable byte integer');
    value += (byte & 0x7f) * multiplier;
    if ((byte & 0x80) === 0) return [value, offset + i + 1];
    multiplier *= 128;
  }
  throw new RangeError('Malformed MQTT variable byte integer');
}

/** The offset after the property block that starts at `offset` (its length, then the properties). */
function skipProperties(body: Buffer, offset: number): number {
  const [length, next] = readVarint(body, offset);
  if (next + length > body.length) throw new RangeError('MQTT property block runs past its packet');
  return next + length;
}

/** Split the body of a PUBLISH (reads only what a simulated device needs; MQTT 5's properties are skipped). */
export function decodePublish(packet: IncomingPacket, protocol: ProtocolLevel = 4): IncomingPublish {
  const { body, flags } = packet;
  const qos = (flags >> 1) & 0x03;
  const topicLength = body.readUInt16BE(0);
  const topic = body.toString('utf8', 2, 2 + topicLength);
  let offset = 2 + topicLength;
  let packetId = 0;
  if (qos > 0) {
    packetId = body.readUInt16BE(offset);
    offset += 2;
  }
  if (protocol === 5) offset = skipProperties(body, offset);
  return { topic, qos, packetId, payload: body.subarray(offset) };
}

/** The MQTT 5 properties a device reads; every other one is skipped. */
export interface ReadProperties {
  /** Server Keep Alive (CONNACK), seconds: replaces the Keep Alive the client sent. */
  serverKeepAlive?: number;
  /** Reason String (CONNACK, SUBACK, PUBACK, DISCONNECT): the broker's words for its reason code. */
  reasonString?: string;
}

/** What a device needs of a CONNACK. */
export interface IncomingConnack {
  sessionPresent: boolean;
  /** 3.1.1's return code or MQTT 5's reason code: 0 is success. */
  code: number;
  /** MQTT 5 only; empty for 3.1.1. */
  properties: ReadProperties;
}

/** MQTT 5 property identifiers and how long their values are: a number of bytes, or how the value is encoded. */
const PROPERTY_VALUES: Readonly<Record<number, 1 | 2 | 4 | 'varint' | 'string' | 'pair'>> = {
  0x01: 1, 0x02: 4, 0x03: 'string', 0x08: 'string', 0x09: 'string', 0x0b: 'varint', 0x11: 4, 0x12: 'string', 0x13: 2,
  0x15: 'string', 0x16: 'string', 0x17: 1, 0x18: 4, 0x19: 1, 0x1a: 'string', 0x1c: 'string', 0x1f: 'string',
  0x21: 2, 0x22: 2, 0x23: 2, 0x24: 1, 0x25: 1, 0x26: 'pair', 0x27: 4, 0x28: 1, 0x29: 1, 0x2a: 1,
};
const SERVER_KEEP_ALIVE = 0x13;
const REASON_STRING = 0x1f;

/**
 * Read the property block at `offset` (its length, then the properties), keeping the few a device uses. Returns
 * them and the offset after the block. @throws RangeError on an unknown identifier or a value past the block.
 */
export function readProperties(body: Buffer, offset: number): [properties: ReadProperties, next: number] {
  const [length, start] = readVarint(body, offset);
  const end = start + length;
  if (end > body.length) throw new RangeError('MQTT property block runs past its packet');
  const properties: ReadProperties = {};
  let at = start;
  while (at < end) {
    const [id, valueAt] = readVarint(body, at);
    const kind = PROPERTY_VALUES[id];
    if (kind === undefined) throw new RangeError(`Unknown MQTT 5 property 0x${id.toString(16)}`);
    const stringEnd = (from: number): number => (from + 2 > end ? end + 1 : from + 2 + body.readUInt16BE(from));
    if (typeof kind === 'number') at = valueAt + kind;
    else if (kind === 'varint') at = readVarint(body, valueAt)[1];
    else if (kind === 'string') at = stringEnd(valueAt);
    else at = stringEnd(stringEnd(valueAt));
    if (at > end) throw new RangeError(`MQTT 5 property 0x${id.toString(16)} runs past its property block`);
    if (id === SERVER_KEEP_ALIVE) properties.serverKeepAlive = body.readUInt16BE(valueAt);
    else if (id === REASON_STRING) properties.reasonString = body.toString('utf8', valueAt + 2, at);
  }
  return [properties, end];
}

/**
 * Read a CONNACK: session present, return or reason code, and (MQTT 5) its properties. A broker that does not speak
 * MQTT 5 answers a level 5 CONNECT with a 3.1.1 CONNACK (return code 1, unacceptable protocol version, no property
 * block): that reads as code 1.
 */
export function decodeConnack(packet: IncomingPacket, protocol: ProtocolLevel = 4): IncomingConnack {
  const { body } = packet;
  if (body.length < 2) throw new RangeError('CONNACK shorter than 2 bytes');
  const properties = protocol === 5 && body.length > 2 ? readProperties(body, 2)[0] : {};
  return { sessionPresent: ((body[0] as number) & 0x01) === 1, code: body[1] as number, properties };
}

/**
 * The reason code of a PUBACK: 0 for MQTT 3.1.1 and for MQTT 5's short form (Remaining Length 2, Success); 0x80 and
 * above is a refusal. (Read on every acknowledgement, so it reads one byte and no properties.)
 */
export function pubackReasonCode(packet: IncomingPacket): number {
  return packet.body[2] ?? 0;
}

/** A SUBACK's answer for its first (from a simulated device, its only) filter. */
export interface IncomingSuback {
  packetId: number;
  /** The granted QoS, or a refusal: 0x80 in MQTT 3.1.1, 0x80 and above in MQTT 5. */
  code: number;
  /** MQTT 5 only; empty for 3.1.1. */
  properties: ReadProperties;
}

/** Read a SUBACK (the first filter's code). */
export function decodeSuback(packet: IncomingPacket, protocol: ProtocolLevel = 4): IncomingSuback {
  const { body } = packet;
  const [properties, offset] = protocol === 5 ? readProperties(body, 2) : [{}, 2];
  const code = body[offset];
  if (code === undefined) throw new RangeError('SUBACK without a return code');
  return { packetId: body.readUInt16BE(0), code, properties };
}

/** A DISCONNECT the broker sent (MQTT 5 only). */
export interface IncomingDisconnect {
  /** 0x00 Normal disconnection when absent (Remaining Length 0); 0x80 and above is an error. */
  reasonCode: number;
  properties: ReadProperties;
}

/** Read a broker's MQTT 5 DISCONNECT: its reason code and properties. */
export function decodeDisconnect(packet: IncomingPacket): IncomingDisconnect {
  const { body } = packet;
  return { reasonCode: body[0] ?? 0, properties: body.length > 1 ? readProperties(body, 1)[0] : {} };
}

/**
 * Reassembles packets from a TCP byte stream that may split or join them anywhere. Holds at most the bytes of
 * one unfinished packet, so an idle device costs nothing here.
 */
export class PacketReader {
  #pending: Buffer | undefined;

  /** Feed bytes; calls `onPacket` for each complete packet. Throws RangeError on a malformed length. */
  push(chunk: Buffer, onPacket: (packet: IncomingPacket) => void): void {
    let data = this.#pending ? Buffer.concat([this.#pending, chunk]) : chunk;
    this.#pending = undefined;
    for (;;) {
      if (data.length < 2) break;
      let remaining = 0;
      let multiplier = 1;
      let offset = 1;
      let complete = false;
      while (offset < data.length && offset <= 4) {
        const byte = data[offset++] as number;
        remaining += (byte & 0x7f) * multiplier;
        multiplier *= 128;
        if ((byte & 0x80) === 0) {
          complete = true;
          break;
        }
      }
      if (!complete) {
        if (offset > 4) throw new RangeError('Malformed MQTT remaining length');
        break;
      }
      if (data.length < offset + remaining) break;
      const first = data[0] as number;
      onPacket({ type: first >> 4, flags: first & 0x0f, body: data.subarray(offset, offset + remaining) });
      data = data.subarray(offset + remaining);
    }
    // Copy, so a small leftover does not pin the whole 64 KB read buffer it is a slice of.
    if (data.length > 0) this.#pending = Buffer.from(data);
  }
}

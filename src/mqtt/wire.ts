/**
 * Encoding MQTT packets by hand: the fixed header, length-prefixed strings, and PUBLISH. Shared by the simulator's
 * devices (simulator/mqtt-wire.ts, which encodes the rest of what they send) and the connector's PUBLISH writer
 * (connector/publish-writer.ts). Both are proven byte for byte against mqtt-packet (test/unit/mqtt-wire-publish.test.ts).
 */

/** MQTT control packet types (the high nibble of the first byte). */
export const PacketType = Object.freeze({
  CONNECT: 1,
  CONNACK: 2,
  PUBLISH: 3,
  PUBACK: 4,
  SUBSCRIBE: 8,
  SUBACK: 9,
  PINGREQ: 12,
  PINGRESP: 13,
  DISCONNECT: 14,
} as const);

/** MQTT protocol level: 4 is MQTT 3.1.1, 5 is MQTT 5. */
export type ProtocolLevel = 4 | 5;

/** Largest Remaining Length MQTT can express (four 7-bit groups). */
export const MAX_REMAINING_LENGTH = 268_435_455;

function remainingLengthBytes(length: number): number {
  if (length < 128) return 1;
  if (length < 16_384) return 2;
  if (length < 2_097_152) return 3;
  return 4;
}

/**
 * A packet buffer with its fixed header written; returns the buffer and the offset where the rest goes.
 * @throws RangeError when `remaining` is past what a Remaining Length can say.
 */
export function allocPacket(firstByte: number, remaining: number): [Buffer, number] {
  if (remaining > MAX_REMAINING_LENGTH) throw new RangeError(`MQTT packet too large (${remaining} bytes)`);
  const header = 1 + remainingLengthBytes(remaining);
  const buf = Buffer.allocUnsafe(header + remaining);
  buf[0] = firstByte;
  let offset = 1;
  let rest = remaining;
  do {
    let byte = rest % 128;
    rest = Math.floor(rest / 128);
    if (rest > 0) byte |= 0x80;
    buf[offset++] = byte;
  } while (rest > 0);
  return [buf, offset];
}

/** Write `bytes` with its two-byte length at `offset`; returns the offset after it. */
export function writeString(buf: Buffer, offset: number, bytes: Buffer): number {
  buf.writeUInt16BE(bytes.length, offset);
  bytes.copy(buf, offset + 2);
  return offset + 2 + bytes.length;
}

/** The fixed-header flags of a PUBLISH besides its QoS. */
export interface PublishFlags {
  readonly retain?: boolean | undefined;
  readonly dup?: boolean | undefined;
}

/**
 * PUBLISH; `packetId` is required for QoS 1 and 2 and ignored for QoS 0. A string topic or payload is written as
 * UTF-8 straight into the packet. MQTT 5 adds an empty property block before the payload (no properties: a message
 * with properties is not encoded here). The caller checks the topic (a topic of more than 65,535 bytes is a
 * RangeError here, as a packet past 256 MiB is).
 */
export function encodePublish(topic: string | Buffer, payload: string | Buffer, qos: 0 | 1 | 2, packetId = 0, protocol: ProtocolLevel = 4, flags?: PublishFlags): Buffer {
  const topicLength = typeof topic === 'string' ? Buffer.byteLength(topic) : topic.length;
  if (topicLength > 0xffff) throw new RangeError(`MQTT topic too long (${topicLength} bytes)`);
  const payloadLength = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length;
  const properties = protocol === 5 ? 1 : 0;
  const remaining = 2 + topicLength + (qos > 0 ? 2 : 0) + properties + payloadLength;
  const firstByte = (PacketType.PUBLISH << 4) | (flags?.dup ? 0x08 : 0) | (qos << 1) | (flags?.retain ? 0x01 : 0);
  const [buf, start] = allocPacket(firstByte, remaining);
  buf.writeUInt16BE(topicLength, start);
  let offset = start + 2;
  offset += typeof topic === 'string' ? buf.write(topic, offset, 'utf8') : topic.copy(buf, offset);
  if (qos > 0) {
    buf.writeUInt16BE(packetId, offset);
    offset += 2;
  }
  if (properties) buf[offset++] = 0;
  if (typeof payload === 'string') buf.write(payload, offset, 'utf8');
  else payload.copy(buf, offset);
  return buf;
}

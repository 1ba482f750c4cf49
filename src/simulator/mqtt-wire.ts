/**
 * The few MQTT 3.1.1 packets a simulated device sends and reads, encoded by hand.
 *
 * Why not mqtt.js per device: at 10,000 devices its per-client stores, streams and timers cost several times the
 * 40 KB budget of a simulated device. Why not mqtt-packet: it is only a transitive dependency of mqtt, and its
 * per-client parser (an EventEmitter over a BufferList) is heavier than this. Only what the simulator needs is
 * here: CONNECT (username and password, no will), PUBLISH QoS 0/1, PUBACK, SUBSCRIBE, PINGREQ, DISCONNECT out;
 * CONNACK, PUBLISH, PUBACK, SUBACK, PINGRESP in.
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

/** Largest Remaining Length MQTT can express (four 7-bit groups). */
const MAX_REMAINING_LENGTH = 268_435_455;

function remainingLengthBytes(length: number): number {
  if (length < 128) return 1;
  if (length < 16_384) return 2;
  if (length < 2_097_152) return 3;
  return 4;
}

/** A packet buffer with its fixed header written; returns the buffer and the offset where the rest goes. */
function allocPacket(firstByte: number, remaining: number): [Buffer, number] {
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

function writeString(buf: Buffer, offset: number, bytes: Buffer): number {
  buf.writeUInt16BE(bytes.length, offset);
  bytes.copy(buf, offset + 2);
  return offset + 2 + bytes.length;
}

/** CONNECT of protocol level 4 (MQTT 3.1.1) with username and password. */
export function encodeConnect(init: { clientId: string; username: string; password: string; keepalive: number; clean: boolean }): Buffer {
  const clientId = Buffer.from(init.clientId, 'utf8');
  const username = Buffer.from(init.username, 'utf8');
  const password = Buffer.from(init.password, 'utf8');
  // "MQTT" name (6) + level (1) + flags (1) + keepalive (2), then three length-prefixed fields.
  const remaining = 10 + 2 + clientId.length + 2 + username.length + 2 + password.length;
  const [buf, start] = allocPacket(PacketType.CONNECT << 4, remaining);
  let offset = writeString(buf, start, Buffer.from('MQTT'));
  buf[offset++] = 4;
  buf[offset++] = 0x80 | 0x40 | (init.clean ? 0x02 : 0);
  buf.writeUInt16BE(init.keepalive, offset);
  offset = writeString(buf, offset + 2, clientId);
  offset = writeString(buf, offset, username);
  writeString(buf, offset, password);
  return buf;
}

/** PUBLISH; `packetId` is required for QoS 1 and ignored for QoS 0. `topic` is the UTF-8 bytes of the topic. */
export function encodePublish(topic: Buffer, payload: Buffer, qos: 0 | 1, packetId = 0): Buffer {
  const remaining = 2 + topic.length + (qos > 0 ? 2 : 0) + payload.length;
  const [buf, start] = allocPacket((PacketType.PUBLISH << 4) | (qos << 1), remaining);
  let offset = writeString(buf, start, topic);
  if (qos > 0) {
    buf.writeUInt16BE(packetId, offset);
    offset += 2;
  }
  payload.copy(buf, offset);
  return buf;
}

/** PUBACK for a received QoS 1 PUBLISH. */
export function encodePuback(packetId: number): Buffer {
  const [buf, start] = allocPacket(PacketType.PUBACK << 4, 2);
  buf.writeUInt16BE(packetId, start);
  return buf;
}

/** SUBSCRIBE to one topic filter (the fixed-header flags of SUBSCRIBE must be 0b0010). */
export function encodeSubscribe(packetId: number, topic: string, qos: 0 | 1): Buffer {
  const filter = Buffer.from(topic, 'utf8');
  const [buf, start] = allocPacket((PacketType.SUBSCRIBE << 4) | 0x02, 2 + 2 + filter.length + 1);
  buf.writeUInt16BE(packetId, start);
  const offset = writeString(buf, start + 2, filter);
  buf[offset] = qos;
  return buf;
}

/** PINGREQ, shared: it never changes. */
export const PINGREQ: Buffer = Buffer.from([PacketType.PINGREQ << 4, 0]);
/** DISCONNECT, shared: it never changes. */
export const DISCONNECT: Buffer = Buffer.from([PacketType.DISCONNECT << 4, 0]);

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

/** Split the body of a PUBLISH (reads only what a simulated device needs). */
export function decodePublish(packet: IncomingPacket): IncomingPublish {
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
  return { topic, qos, packetId, payload: body.subarray(offset) };
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

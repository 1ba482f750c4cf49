/**
 * The outbox's keys and records, as bytes (pure; no I/O).
 *
 * Keys sort the way the store reads them (LevelDB orders keys bytewise):
 * - `m` ClientId 0x00 seq: a message, so that one device's messages are one range, in seq order (a ClientId has no
 *   NUL, so one device's range never overlaps another's);
 * - `f` ClientId: the highest seq of the device handed out for sending (in flight), for counting possible duplicates;
 * - 0x00 name: the store's own metadata.
 * There is no index by age: a second key per message cost a third of the store's CPU per message (measured), and the
 * oldest messages are found from each device's first ones (see store.ts).
 *
 * Every message carries a CRC-32 of itself and its key: LevelDB checks its log, but not, by default,
 * the blocks of its table files, so a bit flipped on disk would otherwise come back as a different payload.
 */
import { crc32 } from 'node:zlib';

/** The record format; a store written with a newer one is refused, not misread. */
export const RECORD_FORMAT = 1;

const M = 0x6d;
const F = 0x66;
const META = 0x00;
const TWO_32 = 2 ** 32;

/**
 * Bytes of a message's header before the topic: format, qos, flags, id length, crc, acceptedAt, topic and properties
 * lengths. The value then holds the topic, the application's id (0 to 255 bytes), the properties and the payload.
 */
const MESSAGE_HEADER = 22;

/** The longest application id a message may carry, in UTF-8 bytes (its length is one byte of the header). */
export const MAX_MESSAGE_ID_BYTES = 255;

/** A seq as 8 bytes, big-endian (keys sort by it), at `at`. */
export function writeSeq(target: Buffer, seq: number, at: number): void {
  target.writeUInt32BE(Math.floor(seq / TWO_32), at);
  target.writeUInt32BE(seq % TWO_32, at + 4);
}

/** The seq of {@link writeSeq} at `at`. */
export function readSeq(source: Buffer, at: number): number {
  return source.readUInt32BE(at) * TWO_32 + source.readUInt32BE(at + 4);
}

/** `m` ClientId 0x00 seq. */
export function messageKey(clientId: string, seq: number): Buffer {
  return writeMessageKey(Buffer.allocUnsafe(Buffer.byteLength(clientId) + 10), clientId, seq);
}

/** {@link messageKey} into `key` (its length: the ClientId's UTF-8 bytes + 10). */
export function writeMessageKey(key: Buffer, clientId: string, seq: number): Buffer {
  writeMessageKeyAt(key, 0, key.length, clientId, seq);
  return key;
}

/** {@link messageKey} into `target` at `at`, `length` bytes (the ClientId's UTF-8 bytes + 10): no view made. */
export function writeMessageKeyAt(target: Buffer, at: number, length: number, clientId: string, seq: number): void {
  target[at] = M;
  target.write(clientId, at + 1, 'utf8');
  target[at + length - 9] = 0;
  writeSeq(target, seq, at + length - 8);
}

/** The range of one device's messages: [gt, lt). `after` = the last seq already read. */
export function messageRange(clientId: string, after: number): { gt: Buffer; lt: Buffer } {
  const gt = messageKey(clientId, after);
  const lt = Buffer.from(gt.subarray(0, gt.length - 8));
  lt[lt.length - 1] = 1;
  return { gt, lt };
}

/** The seq of an `m` key. */
export function seqOfMessageKey(key: Buffer): number {
  return readSeq(key, key.length - 8);
}

/** Every `m` key: [gte, lt). */
export const MESSAGE_RANGE = { gte: Buffer.from([M]), lt: Buffer.from([M + 1]) };

/** The ClientId of an `m` key. */
export function clientIdOfMessageKey(key: Buffer): string {
  return key.toString('utf8', 1, key.length - 9);
}

/** The acceptance time of a message value without decoding (or checking) it; NaN when too short. */
export function acceptedAtOf(value: Buffer): number {
  return value.length >= MESSAGE_HEADER ? value.readDoubleLE(8) : NaN;
}

/** `f` ClientId. */
export function markKey(clientId: string): Buffer {
  const key = Buffer.allocUnsafe(1 + Buffer.byteLength(clientId));
  key[0] = F;
  key.write(clientId, 1, 'utf8');
  return key;
}

/** Every `f` key: [gte, lt). */
export const MARK_RANGE = { gte: Buffer.from([F]), lt: Buffer.from([F + 1]) };

/** The ClientId of an `f` key. */
export function clientIdOfMarkKey(key: Buffer): string {
  return key.toString('utf8', 1);
}

/** A seq as a value (the `f` marks, the next-seq metadata). */
export function encodeSeq(seq: number): Buffer {
  const value = Buffer.allocUnsafe(8);
  writeSeq(value, seq, 0);
  return value;
}

/** A seq value; undefined when it is not 8 bytes. */
export function decodeSeq(value: Buffer | undefined): number | undefined {
  return value?.length === 8 ? readSeq(value, 0) : undefined;
}

/** A metadata key. */
export function metaKey(name: 'format' | 'open' | 'seq'): Buffer {
  return Buffer.concat([Buffer.from([META]), Buffer.from(name)]);
}

/** CRC-32 of the key and the value but its own 4 bytes (4 to 7): the header's format, qos, flags and id length too. */
function checksum(key: Buffer, value: Buffer): number {
  return crc32(value.subarray(8), crc32(value.subarray(0, 4), crc32(key)));
}

/** A message as the store keeps it. */
export interface StoredMessage {
  readonly topic: string;
  readonly payload: Buffer;
  readonly qos: 0 | 1 | 2;
  readonly retain: boolean;
  /** MQTT 5 publish properties, as given (Buffers kept as Buffers). */
  readonly properties: Readonly<Record<string, unknown>> | undefined;
  readonly acceptedAt: number;
  /** The application's id of the message, if it gave one (at most {@link MAX_MESSAGE_ID_BYTES} bytes). */
  readonly id: string | undefined;
}

/** Properties as JSON, with Buffers (correlationData) kept as Buffers. */
function propertiesJson(properties: Readonly<Record<string, unknown>> | undefined): Buffer | undefined {
  if (properties === undefined || Object.keys(properties).length === 0) return undefined;
  return Buffer.from(JSON.stringify(properties), 'utf8');
}

function reviveBuffers(_key: string, value: unknown): unknown {
  if (value !== null && typeof value === 'object' && (value as { type?: unknown }).type === 'Buffer' && Array.isArray((value as { data?: unknown }).data)) {
    return Buffer.from((value as { data: number[] }).data);
  }
  return value;
}

/**
 * A message value for `key`. Its length is the message's `bytes` in the store's accounting (plus the key). Unsealed
 * (`sealed` false: its CRC left 0) for the hot log, whose record has a CRC of its own; {@link seal} it before it goes
 * into LevelDB.
 */
export function encodeMessage(key: Buffer, message: StoredMessage, sealed = true): Buffer {
  const layout = messageLayout(message);
  return writeMessage(Buffer.allocUnsafe(layout.length), key, message, layout, sealed);
}

/** The sizes of a message's value, computed once (see {@link writeMessage}). */
export interface MessageLayout {
  readonly length: number;
  readonly props: Buffer | undefined;
  readonly topicBytes: number;
  readonly idBytes: number;
}

export function messageLayout(message: StoredMessage): MessageLayout {
  const props = propertiesJson(message.properties);
  const topicBytes = Buffer.byteLength(message.topic);
  const idBytes = message.id === undefined ? 0 : Buffer.byteLength(message.id);
  return { length: MESSAGE_HEADER + topicBytes + idBytes + (props?.length ?? 0) + message.payload.length, props, topicBytes, idBytes };
}

/** {@link encodeMessage} into `value` (exactly `layout.length` bytes). */
export function writeMessage(value: Buffer, key: Buffer, message: StoredMessage, layout: MessageLayout, sealed: boolean): Buffer {
  writeMessageAt(value, 0, message, layout);
  if (sealed) value.writeUInt32LE(checksum(key, value), 4);
  return value;
}

/**
 * A message's value into `target` at `at` (`layout.length` bytes, e.g. inside a hot log record: no view made),
 * unsealed: its CRC left 0 (see {@link seal}).
 */
export function writeMessageAt(target: Buffer, at: number, message: StoredMessage, layout: MessageLayout): void {
  const { props, topicBytes, idBytes } = layout;
  const propsBytes = props?.length ?? 0;
  const propsAt = at + MESSAGE_HEADER + topicBytes + idBytes;
  target[at] = RECORD_FORMAT;
  target[at + 1] = message.qos;
  target[at + 2] = message.retain ? 1 : 0;
  target[at + 3] = idBytes;
  target.writeUInt32LE(0, at + 4);
  target.writeDoubleLE(message.acceptedAt, at + 8);
  target.writeUInt16LE(topicBytes, at + 16);
  target.writeUInt32LE(propsBytes, at + 18);
  target.write(message.topic, at + MESSAGE_HEADER, 'utf8');
  if (message.id !== undefined) target.write(message.id, at + MESSAGE_HEADER + topicBytes, 'utf8');
  props?.copy(target, propsAt);
  target.set(message.payload, propsAt + propsBytes);
}

/** Write a value's CRC (a value of the hot log, on its way into LevelDB). */
export function seal(key: Buffer, value: Buffer): Buffer {
  if (value.length >= MESSAGE_HEADER) value.writeUInt32LE(checksum(key, value), 4);
  return value;
}

/**
 * A message value, or undefined when it fails its checksum or is not a format this code reads. `trusted`: a value of
 * the hot log in memory (never read back from disk: its CRC is not written yet), not checked.
 */
export function decodeMessage(key: Buffer, value: Buffer, trusted = false): StoredMessage | undefined {
  if (value.length < MESSAGE_HEADER || value[0] !== RECORD_FORMAT || (!trusted && value.readUInt32LE(4) !== checksum(key, value))) return undefined;
  const topicBytes = value.readUInt16LE(16);
  const idBytes = value[3] as number;
  const propsBytes = value.readUInt32LE(18);
  const propsAt = MESSAGE_HEADER + topicBytes + idBytes;
  const payloadAt = propsAt + propsBytes;
  const qos = value[1];
  if (payloadAt > value.length || (qos !== 0 && qos !== 1 && qos !== 2)) return undefined;
  let properties: Readonly<Record<string, unknown>> | undefined;
  if (propsBytes > 0) {
    try {
      properties = JSON.parse(value.toString('utf8', propsAt, payloadAt), reviveBuffers) as Record<string, unknown>;
    } catch {
      return undefined;
    }
  }
  return {
    topic: value.toString('utf8', MESSAGE_HEADER, MESSAGE_HEADER + topicBytes),
    // LevelDB hands each value over in a buffer of its own (copied out of the engine), so a view is safe to keep.
    payload: value.subarray(payloadAt),
    qos,
    retain: value[2] === 1,
    properties,
    acceptedAt: value.readDoubleLE(8),
    id: idBytes === 0 ? undefined : value.toString('utf8', MESSAGE_HEADER + topicBytes, MESSAGE_HEADER + topicBytes + idBytes),
  };
}

/**
 * The application id of a message value without checking its CRC (for the report of a drop: the value is removed
 * either way); undefined when it has none or the header does not hold together.
 */
export function idOf(value: Buffer): string | undefined {
  if (value.length < MESSAGE_HEADER || value[3] === 0) return undefined;
  const from = MESSAGE_HEADER + value.readUInt16LE(16);
  const to = from + (value[3] as number);
  return to > value.length ? undefined : value.toString('utf8', from, to);
}

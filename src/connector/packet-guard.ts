/**
 * What stands between the broker's bytes and mqtt.js: a check that frames each incoming MQTT packet by its fixed
 * header as the bytes arrive, and stops the session before mqtt.js sees a packet it must not:
 *
 * - one larger than `maxIncomingPacketBytes`, before its body is buffered (mqtt.js's parser would hold all of a
 *   256 MB PUBLISH in memory first);
 * - one whose packet identifier is cut off by its remaining length (a QoS 1/2 PUBLISH, PUBREL, PUBACK, PUBREC,
 *   PUBCOMP, SUBACK, UNSUBACK): mqtt-packet 9 parses it with identifier -1, and mqtt.js 5.16 acknowledges that
 *   identifier, which throws from inside the socket's data handler and kills the process;
 * - a remaining length that is not a valid variable byte integer.
 *
 * Everything else goes through unchanged, chunk by chunk; mqtt.js parses it (and reports what else is malformed as
 * an error, on which the attempt closes the session). The guard never keeps a byte: the framer reads the fixed
 * headers as they pass.
 *
 * One exception, for speed: a PUBACK (success, short form, whole in one chunk) answering a QoS 1 PUBLISH the
 * connector wrote itself (publish-writer.ts) is taken out of the stream and answered by the connector as mqtt.js would
 * (its callback, its packet id freed), in its place in the stream. Parsing it through mqtt.js cost more than the
 * PUBLISH it answers (BENCHMARKS.md, issue 18). Any other PUBACK still goes to mqtt.js, which answers it the same way.
 */
import type { Readable } from 'node:stream';

/** A packet the guard stopped: what it was, for the session's ProtocolError. */
export class PacketViolation extends Error {
  /** `too-large`: over the limit (`bytes` is its whole size); `malformed`: it breaks MQTT in a way mqtt.js mishandles. */
  readonly kind: 'too-large' | 'malformed';
  /** The packet's size in bytes, fixed header included (when it is known). */
  readonly bytes: number | undefined;
  constructor(kind: 'too-large' | 'malformed', message: string, bytes?: number) {
    super(message);
    this.name = 'PacketViolation';
    this.kind = kind;
    this.bytes = bytes;
  }
}

/** MQTT control packet types (the fixed header's high nibble) whose variable header starts with a packet identifier. */
const ACKNOWLEDGED = new Map([
  [4, 'PUBACK'],
  [5, 'PUBREC'],
  [6, 'PUBREL'],
  [7, 'PUBCOMP'],
  [9, 'SUBACK'],
  [11, 'UNSUBACK'],
]);
const PUBLISH = 3;
const PUBACK = 4;

/**
 * The PUBACKs the last {@link PacketFramer.inspect} took out of its chunk: each its start offset and packet
 * identifier, in order; empty when none (most chunks). One array for every framer (a gateway holds thousands):
 * it is read right after the call, and copied before anyone is told of them.
 */
const taken: number[] = [];

/** Where the framer is in the current packet. */
const Phase = {
  /** The first byte: type and flags. */
  Type: 0,
  /** The remaining length, a variable byte integer of 1 to 4 bytes. */
  Length: 1,
  /** A QoS 1/2 PUBLISH: the two bytes of its topic's length, to find where its packet identifier is. */
  TopicLength: 2,
  /** The rest of the body: passed on, not looked at. */
  Body: 3,
} as const;

/**
 * The framer (pure: bytes in, a verdict out). It keeps a few numbers across chunks, never the bytes of a body.
 */
export class PacketFramer {
  readonly #maxBytes: number;
  #phase: (typeof Phase)[keyof typeof Phase] = Phase.Type;
  #type = 0;
  #flags = 0;
  #qos = 0;
  #length = 0;
  #lengthBytes = 0;
  /** Body bytes of the current packet still to come. */
  #left = 0;
  #topicLength = 0;
  #topicBytes = 0;
  /** Who answers a PUBACK the framer finds whole in a chunk; it returns false to leave it to mqtt.js. */
  readonly #acks: Pick<GuardOwner, 'takesPuback'> | undefined;

  /**
   * @param maxBytes - the largest packet accepted, fixed header included.
   * @param acks - asked about each PUBACK of the short form (remaining length 2: success) whole in a chunk.
   */
  constructor(maxBytes: number, acks?: Pick<GuardOwner, 'takesPuback'>) {
    this.#maxBytes = maxBytes;
    this.#acks = acks?.takesPuback ? acks : undefined;
  }

  /**
   * Look at the next chunk of the stream: `undefined` when every packet in it (whole or begun) is acceptable, else
   * the violation and the offset where the offending packet starts (what precedes it is whole packets).
   */
  inspect(chunk: Buffer): { violation: PacketViolation; at: number } | undefined {
    let start = 0;
    // The current packet began in this chunk (its start is an offset in it).
    let begunHere = false;
    taken.length = 0;
    for (let i = 0; i < chunk.length; ) {
      if (this.#phase === Phase.Body) {
        const skip = Math.min(this.#left, chunk.length - i);
        this.#left -= skip;
        i += skip;
        if (this.#left === 0) this.#phase = Phase.Type;
        continue;
      }
      const byte = chunk[i++] as number;
      switch (this.#phase) {
        case Phase.Type:
          start = i - 1;
          begunHere = true;
          this.#type = byte >> 4;
          this.#flags = byte & 0x0f;
          this.#qos = (byte >> 1) & 3;
          this.#length = 0;
          this.#lengthBytes = 0;
          this.#phase = Phase.Length;
          break;
        case Phase.Length: {
          this.#length += (byte & 0x7f) * 128 ** this.#lengthBytes;
          this.#lengthBytes += 1;
          if (byte & 0x80) {
            if (this.#lengthBytes === 4) return { violation: new PacketViolation('malformed', 'a packet whose remaining length runs past 4 bytes'), at: start };
            break;
          }
          const size = 1 + this.#lengthBytes + this.#length;
          if (size > this.#maxBytes) return { violation: new PacketViolation('too-large', `a packet of ${size} bytes`, size), at: start };
          const problem = this.#headerProblem();
          if (problem) return { violation: new PacketViolation('malformed', problem, size), at: start };
          this.#left = this.#length;
          // The packet id of a short-form PUBACK whole in this chunk (else -1).
          const pubackId = this.#type === PUBACK && this.#flags === 0 && this.#length === 2 && begunHere && i + 2 <= chunk.length ? ((chunk[i] as number) << 8) | (chunk[i + 1] as number) : -1;
          if (pubackId >= 0 && this.#acks?.takesPuback?.(pubackId) === true) {
            taken.push(start, pubackId);
            i += 2;
            this.#phase = Phase.Type;
          } else if (this.#type === PUBLISH && this.#qos > 0 && this.#length >= 2) {
            this.#phase = Phase.TopicLength;
            this.#topicLength = 0;
            this.#topicBytes = 0;
          } else {
            this.#phase = this.#left > 0 ? Phase.Body : Phase.Type;
          }
          break;
        }
        case Phase.TopicLength:
          this.#topicLength = this.#topicLength * 256 + byte;
          this.#topicBytes += 1;
          this.#left -= 1;
          if (this.#topicBytes === 2) {
            // The packet identifier follows the topic: it must fit in the remaining length.
            if (2 + this.#topicLength + 2 > this.#length) {
              return { violation: new PacketViolation('malformed', `a QoS ${this.#qos} PUBLISH whose packet identifier is cut off (topic of ${this.#topicLength} bytes, remaining length ${this.#length})`, 1 + this.#lengthBytes + this.#length), at: start };
            }
            this.#phase = this.#left > 0 ? Phase.Body : Phase.Type;
          }
          break;
        default:
          break;
      }
    }
    return undefined;
  }

  /** What is wrong with the packet whose fixed header was just read, if anything the guard checks. */
  #headerProblem(): string | undefined {
    const name = ACKNOWLEDGED.get(this.#type);
    if (name !== undefined && this.#length < 2) return `${name === 'UNSUBACK' ? 'an' : 'a'} ${name} without its packet identifier (remaining length ${this.#length})`;
    return undefined;
  }
}

/** What the guard of one stream saw. */
export interface Guard {
  /** The first bytes the peer sent, before any check (they tell an HTTP server from a broker); its reader may drop them. */
  firstBytes: Buffer | undefined;
}

/** Who hears of a violation (the connection attempt whose stream it is). */
export interface GuardOwner {
  violated(violation: PacketViolation): void;
  /**
   * A PUBACK (success, short form) for `packetId`, whole in the chunk being read: true takes it out of the stream,
   * and {@link GuardOwner.pubackTaken} is called with it in its place: after the bytes before it went on to mqtt.js.
   */
  takesPuback?(packetId: number): boolean;
  pubackTaken?(packetId: number): void;
}

/** Where a guarded stream keeps its guard. */
const GUARD = Symbol('apsaramq-device.packetGuard');

/** The guard of one stream: its framer, the stream's own `push`, and what it saw. */
class StreamGuard extends PacketFramer implements Guard {
  firstBytes: Buffer | undefined = undefined;
  /** No byte came yet (its reader may drop `firstBytes` later: they are not taken again). */
  fresh = true;
  readonly push: Readable['push'];
  readonly owner: GuardOwner;

  constructor(maxPacketBytes: number, push: Readable['push'], owner: GuardOwner) {
    super(maxPacketBytes, owner);
    this.push = push;
    this.owner = owner;
  }
}

type Guarded = Readable & { [GUARD]: StreamGuard };

/** The `push` of every guarded stream (one function for all: its state is the stream's guard). */
function guardedPush(this: Guarded, chunk: unknown, encoding?: BufferEncoding): boolean {
  const guarded = this[GUARD];
  // The end of the stream, or something not bytes (text a WebSocket stream in object mode would carry).
  if (!(chunk instanceof Uint8Array)) return guarded.push.call(this, chunk, encoding);
  const bytes = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  if (guarded.fresh) {
    guarded.fresh = false;
    guarded.firstBytes = Buffer.from(bytes.subarray(0, 8));
  }
  const found = guarded.inspect(bytes);
  if (taken.length > 0) return pushUntaken(this, guarded, bytes, found);
  if (!found) return guarded.push.call(this, chunk, encoding);
  if (found.at > 0) guarded.push.call(this, bytes.subarray(0, found.at));
  guarded.owner.violated(found.violation);
  this.destroy();
  return false;
}

/**
 * Push what the framer did not take of `bytes` (the runs between the PUBACKs it took, up to a violation), and tell
 * the owner of each taken PUBACK in its place in the stream: after the bytes before it went on to mqtt.js. When
 * everything was taken, an empty chunk is pushed: the stream's state is as after any read. A PUBACK's answer may end
 * the session: nothing more is pushed into a destroyed stream.
 */
function pushUntaken(stream: Guarded, guarded: StreamGuard, bytes: Buffer, found: { violation: PacketViolation; at: number } | undefined): boolean {
  const puback = taken.slice();
  const end = found ? found.at : bytes.length;
  let from = 0;
  let more = true;
  let pushed = false;
  for (let k = 0; k < puback.length; k += 2) {
    const at = puback[k] as number;
    if (stream.destroyed) return false;
    if (at > from) {
      more = guarded.push.call(stream, bytes.subarray(from, at));
      pushed = true;
    }
    if (stream.destroyed) return false;
    guarded.owner.pubackTaken?.(puback[k + 1] as number);
    from = at + 4;
  }
  if (stream.destroyed) return false;
  if (end > from || (!pushed && !found)) more = guarded.push.call(stream, bytes.subarray(from, end));
  if (!found) return more;
  guarded.owner.violated(found.violation);
  stream.destroy();
  return false;
}

/**
 * Guard the bytes `stream` hands its readers. The check sits in the stream's own `push` (where Node's socket, TLS
 * and WebSocket streams deliver what arrived), so nothing unchecked is buffered for mqtt.js, and nothing else of the
 * stream changes: its writes, backpressure, errors and close are the socket's as before, and a connection pays one
 * object for it (framer and what it saw), not a second stream nor a closure. On a violation the bytes before the
 * offending packet are passed on, `owner` hears of it, and the stream is destroyed.
 */
export function guard(stream: Readable, maxPacketBytes: number, owner: GuardOwner): Guard {
  const guarded = new StreamGuard(maxPacketBytes, stream.push, owner);
  (stream as Guarded)[GUARD] = guarded;
  stream.push = guardedPush;
  return guarded;
}

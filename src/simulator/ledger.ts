/**
 * The message ledger of a game day: what became of every message of every device of a shard, by its sequence number
 * (carried in the payload with the device's index, so the backend subscriber can name each message it receives).
 * One byte per message: accepted, acknowledged, delivered, refused, abandoned, held, and how many duplicates arrived.
 *
 * A message is *accepted* when the device took it: the raw device wrote its PUBLISH to a socket; the connector's
 * `publish()` was called and has not failed (it resolved, or is still pending: the library holds it). A connector
 * `publish()` that rejected (`OutboxFull`, `PublishRejected` after `maxDeliveryAttempts`) is *refused*: the
 * application was told. One still pending when the run ended the connection (it rejects then with
 * `ConnectionClosed`: the library still held it, offline or awaiting its PUBACK; a durable outbox keeps it on disk)
 * is *held*: a device that lived on would send it. One still in the backend subscriber's queue at the broker at the
 * end (a paced backlog, backlog.ts) is *queued*; one the broker acknowledged when that queue could not be read is
 * *maybe queued*. A message is *lost* when it was accepted, neither held, queued nor delivered: the device let it go
 * (a raw device's, dropped or abandoned), or the broker acknowledged it and never delivered it.
 */

/** Bytes at the start of every payload when the ledger is on: send time (float64), device index and sequence (uint32 each). */
export const PAYLOAD_ID_SIZE = 16;

const ACCEPTED = 1;
const ACKED = 2;
const DELIVERED = 4;
const REFUSED = 8;
/** Accepted and unacknowledged when its session was lost: a raw device never sends it again. */
const ABANDONED = 16;
/** Still held by the connector when the run ended its connection: not sent (or not acknowledged), not given up. */
const HELD = 32;
const DUP_SHIFT = 6;
const DUP_MAX = 3;

/** What became of a set of messages. */
export interface MessageCounts {
  /** Messages the devices were asked to send (raw: PUBLISH written; connector: publish() called). */
  published: number;
  /** Of those, not refused: the device took them. */
  accepted: number;
  /** Acknowledged by the broker (QoS 1 PUBACK, or the connector's publish() resolved). */
  acked: number;
  /** Received by the backend subscriber, each once. */
  delivered: number;
  /** Accepted, never received by the backend subscriber, and not held by its device at the end. */
  lost: number;
  /**
   * Accepted, not received, and still held by its device (the connector's outbox) when the run ended: not lost by the
   * device, undelivered because the run ended first (a device not back online yet). Absent in older reports.
   */
  held: number;
  /**
   * Accepted, not received, and still in the backend subscriber's queue at the broker when the run ended (read from
   * an emulator's `GET /_emulator/queue`): the broker has them, paced or not yet sent; not lost. Absent in older reports.
   */
  queued: number;
  /**
   * Acknowledged by the broker, not received, and not known to be lost: the backend subscriber's queue at the broker
   * could not be read (the cloud, an emulator without the control, or its list was cut at its cap) and the subscriber
   * lost its connection during the run, so they may be queued there. Absent in older reports.
   */
  maybeQueued: number;
  /** Messages received more than once (each counted once). */
  duplicated: number;
  /** Receptions beyond the first of a message, all messages together. */
  duplicates: number;
  /** publish() calls that rejected (connector devices). */
  refused: number;
}

/** An empty {@link MessageCounts}. */
export function noMessages(): MessageCounts {
  return { published: 0, accepted: 0, acked: 0, delivered: 0, lost: 0, held: 0, queued: 0, maybeQueued: 0, duplicated: 0, duplicates: 0, refused: 0 };
}

/** The ledger of devices `[start, end)` of the fleet. */
export class MessageLedger {
  readonly #start: number;
  readonly #flags: Uint8Array[];
  readonly #next: Uint32Array;
  /** Per device, the first sequence not yet settled (acknowledged, refused or abandoned; QoS 0: accepted). */
  readonly #settled: Uint32Array;
  readonly #qos: 0 | 1;
  /** Per device (local index), the sequences found in the backend subscriber's queue at the broker at the end. */
  readonly #queued = new Map<number, Set<number>>();
  /** The subscriber's queue could not be read (whole): a message the broker acknowledged and that did not come may be there. */
  #queueUnknown = false;
  /** Receptions that name no message of these devices (another shard's, or a sequence never sent). */
  foreign = 0;
  duplicates = 0;
  /**
   * Messages accepted, not (yet) received by the backend subscriber, and still on their way (sent, or held by a device
   * still running): what a drain waits for. A message dropped or abandoned by a device will not come, nor one its
   * device still held when the run ended its connection.
   */
  outstanding = 0;

  constructor(range: readonly [number, number], qos: 0 | 1) {
    this.#start = range[0];
    const size = range[1] - range[0];
    this.#flags = Array.from({ length: size }, () => new Uint8Array(0));
    this.#next = new Uint32Array(size);
    this.#settled = new Uint32Array(size);
    this.#qos = qos;
  }

  #local(index: number): number | undefined {
    const local = index - this.#start;
    return local >= 0 && local < this.#next.length ? local : undefined;
  }

  /** A new message of device `index`: its sequence number, marked accepted. */
  accept(index: number): number {
    const local = this.#local(index) as number;
    const seq = this.#next[local] as number;
    this.#next[local] = seq + 1;
    let flags = this.#flags[local] as Uint8Array;
    if (seq >= flags.length) {
      const grown = new Uint8Array(Math.max(64, flags.length * 2));
      grown.set(flags);
      this.#flags[local] = flags = grown;
    }
    flags[seq] = ACCEPTED;
    this.outstanding += 1;
    return seq;
  }

  #set(index: number, seq: number, flag: number): void {
    const local = this.#local(index);
    if (local === undefined || seq >= (this.#next[local] as number)) return;
    const flags = this.#flags[local] as Uint8Array;
    const value = flags[seq] as number;
    const coming = (value & (ACCEPTED | DELIVERED | ABANDONED | HELD)) === ACCEPTED;
    if ((flag === REFUSED || flag === ABANDONED || flag === HELD) && coming) this.outstanding -= 1;
    flags[seq] = (value | flag) & (flag === REFUSED ? ~ACCEPTED : 0xff);
  }

  /** A message handed to device `index` while it had no session, which it drops (a raw device has no outbox). */
  dropped(index: number): void {
    const seq = this.accept(index);
    this.#set(index, seq, ABANDONED);
  }

  /** The broker acknowledged it. */
  acked(index: number, seq: number): void {
    this.#set(index, seq, ACKED);
  }

  /** The device's publish() rejected: the application knows, it is not lost. */
  refused(index: number, seq: number): void {
    this.#set(index, seq, REFUSED);
  }

  /** Its session was lost before the PUBACK and the device will not send it again (raw devices). */
  abandoned(index: number, seq: number): void {
    this.#set(index, seq, ABANDONED);
  }

  /**
   * The run ended the device's connection while the library still held it (its `publish()` rejected with
   * `ConnectionClosed` then): held, not lost, unless it was delivered anyway.
   */
  held(index: number, seq: number): void {
    this.#set(index, seq, HELD);
  }

  /** The backend subscriber received it; a reception of a message already received is a duplicate. */
  delivered(index: number, seq: number): void {
    const local = this.#local(index);
    if (local === undefined || seq >= (this.#next[local] as number)) {
      this.foreign += 1;
      return;
    }
    const flags = this.#flags[local] as Uint8Array;
    const value = flags[seq] as number;
    if ((value & DELIVERED) === 0) {
      flags[seq] = value | DELIVERED;
      if ((value & (ACCEPTED | ABANDONED | HELD)) === ACCEPTED) this.outstanding -= 1;
      return;
    }
    this.duplicates += 1;
    const dups = Math.min(DUP_MAX, (value >> DUP_SHIFT) + 1);
    flags[seq] = (value & ((1 << DUP_SHIFT) - 1)) | (dups << DUP_SHIFT);
  }

  /**
   * The backend subscriber's queue at the broker holds it at the end (backlog.ts): queued, not lost, unless it is
   * received before the counting. Not one of these devices' messages: ignored.
   */
  queued(index: number, seq: number): void {
    const local = this.#local(index);
    if (local === undefined || seq >= (this.#next[local] as number)) return;
    let seqs = this.#queued.get(local);
    if (seqs === undefined) this.#queued.set(local, (seqs = new Set()));
    seqs.add(seq);
  }

  /** The subscriber's queue could not be read whole: what the broker acknowledged and did not deliver is maybe queued. */
  queueUnknown(): void {
    this.#queueUnknown = true;
  }

  /** The next sequence device `index` will use. */
  next(index: number): number {
    return this.#next[this.#local(index) as number] as number;
  }

  /** The first sequence of device `index` still in flight (everything before it is settled). */
  unsettled(index: number): number {
    const local = this.#local(index) as number;
    const flags = this.#flags[local] as Uint8Array;
    const next = this.#next[local] as number;
    let seq = this.#settled[local] as number;
    const done = this.#qos === 0 ? ACCEPTED | REFUSED : ACKED | REFUSED | ABANDONED;
    while (seq < next && ((flags[seq] as number) & done) !== 0) seq += 1;
    this.#settled[local] = seq;
    return seq;
  }

  /** What became of device `index`'s messages `[from, to)`, added into `into`. */
  count(index: number, from: number, to: number, into: MessageCounts = noMessages()): MessageCounts {
    const local = this.#local(index);
    if (local === undefined) return into;
    const flags = this.#flags[local] as Uint8Array;
    const end = Math.min(to, this.#next[local] as number);
    for (let seq = from; seq < end; seq++) {
      const value = flags[seq] as number;
      into.published += 1;
      if ((value & REFUSED) !== 0) into.refused += 1;
      if ((value & ACCEPTED) !== 0) into.accepted += 1;
      if ((value & ACKED) !== 0) into.acked += 1;
      if ((value & DELIVERED) !== 0) into.delivered += 1;
      else if ((value & ACCEPTED) !== 0) {
        if ((value & HELD) !== 0) into.held += 1;
        else if (this.#queued.get(local)?.has(seq) === true) into.queued += 1;
        else if (this.#queueUnknown && (value & ACKED) !== 0) into.maybeQueued += 1;
        else into.lost += 1;
      }
      const dups = value >> DUP_SHIFT;
      if (dups > 0) {
        into.duplicated += 1;
        into.duplicates += dups;
      }
    }
    return into;
  }

  /** Every message of every device. `duplicates` is exact (per-message counts saturate at 3). */
  totals(): MessageCounts {
    const all = noMessages();
    for (let local = 0; local < this.#next.length; local++) this.count(this.#start + local, 0, this.#next[local] as number, all);
    all.duplicates = this.duplicates;
    return all;
  }
}

/** Write a message's identity over the start of its payload: send time, device index, sequence. */
export function stampPayload(payload: Buffer, offset: number, sentAt: number, index: number, seq: number): void {
  payload.writeDoubleBE(sentAt, offset);
  payload.writeUInt32BE(index, offset + 8);
  payload.writeUInt32BE(seq, offset + 12);
}

/** The device index and sequence of a received payload, or `undefined` when it is too short to carry them. */
export function payloadIdentity(payload: Buffer): { index: number; seq: number } | undefined {
  if (payload.length < PAYLOAD_ID_SIZE) return undefined;
  return { index: payload.readUInt32BE(8), seq: payload.readUInt32BE(12) };
}

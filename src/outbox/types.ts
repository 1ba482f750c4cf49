/**
 * The durable outbox's public shapes: what a caller hands in, what it reads back, what it is told about a message
 * that left without delivery, and the store's counters.
 */
import { inspect } from 'node:util';
import type { OutboxError } from '../errors.js';
import type { StoredMessage } from './codec.js';

/** A message to keep until it is delivered. */
export interface OutboxMessageInput {
  readonly topic: string;
  readonly payload: Buffer | Uint8Array | string;
  /** @default 1 */
  readonly qos?: 0 | 1 | 2;
  /** @default false */
  readonly retain?: boolean;
  /** MQTT 5 publish properties, kept as given (Buffers as Buffers). */
  readonly properties?: Readonly<Record<string, unknown>>;
  /**
   * The application's own id of the message (at most 255 bytes of UTF-8), kept with it and given back with every
   * report about it (`pending`, `drop`), so that an application that restarted can match what it accepted before.
   */
  readonly id?: string;
}

/** A message read back from the store. Its `inspect` shows the payload's length, not its bytes. */
export interface OutboxMessage extends StoredMessage {
  /** The device it belongs to. */
  readonly clientId: string;
  /** Store-wide, increasing with acceptance (so also in order per device). */
  readonly seq: number;
  /**
   * It was handed out for sending before (in this process or one before a restart) and not acknowledged: the broker
   * may have it already, so sending it again may deliver a duplicate.
   */
  readonly sentBefore: boolean;
}

// One name for the type (the interface above, merged) and the class whose inspect hides the payload.
export class OutboxMessage {
  /** @internal */
  constructor(init: StoredMessage & { clientId: string; seq: number; sentBefore: boolean }) {
    Object.assign(this, init);
  }

  [inspect.custom](): string {
    return `OutboxMessage { clientId: ${JSON.stringify(this.clientId)}, seq: ${this.seq}, qos: ${this.qos}, payload: <${this.payload.length} bytes> }`;
  }
}

/**
 * Why a message left the store without being delivered: a bound (`full`, under drop-oldest), its time to live
 * (`expired`), damage on disk (`corrupt`), or the broker refused it (`rejected`, see {@link OutboxStore.reject}).
 */
export type OutboxDropReason = 'full' | 'expired' | 'corrupt' | 'rejected';

/** A message removed without delivery (emitted as `drop`). */
export interface OutboxDrop {
  readonly clientId: string;
  readonly seq: number;
  readonly reason: OutboxDropReason;
  /** Its bytes in the store's accounting. */
  readonly bytes: number;
  /** When it was accepted (wall-clock ms); NaN when the record was unreadable. */
  readonly acceptedAt: number;
  /** The application's id of the message, when it gave one (and the record was readable). */
  readonly id?: string;
}

/** What reopening found (also in the `OutboxRecovered` warning). */
export interface OutboxRecovery {
  /** The store was not closed by `close()` last time (crash, kill -9, power cut). */
  readonly uncleanShutdown: boolean;
  /** Messages found. */
  readonly messages: number;
  /** Messages found that had been handed out for sending: sent again, they may be delivered twice. */
  readonly possibleDuplicates: number;
  /** Bytes at the end of the hot log or LevelDB's write-ahead log that did not form a complete record (a write cut short). */
  readonly tornTailBytes: number;
  /** Bytes of the hot log or LevelDB's write-ahead log that failed their checksum before its end (their records are lost). */
  readonly corruptBytes: number;
}

/** Counters of {@link OutboxStore.stats}. */
export interface OutboxStats {
  /** Messages held now (accepted, not delivered, dropped or expired). */
  readonly messages: number;
  /** Their bytes. */
  readonly bytes: number;
  /** Devices with at least one message. */
  readonly devices: number;
  /** Messages accepted (made durable) since open. */
  readonly accepted: number;
  /** Messages acknowledged (removed as delivered) since open. */
  readonly delivered: number;
  /** Messages removed without delivery since open, by reason. */
  readonly dropped: Readonly<Record<OutboxDropReason, number>>;
  /** Appends refused since open: at a bound under `refuse-new`, or while the disk was full or failing. */
  readonly refused: { readonly full: number; readonly diskFull: number };
  /** Messages found at open that may be delivered twice (see {@link OutboxRecovery.possibleDuplicates}). */
  readonly possibleDuplicates: number;
  /** Writing failed (full disk, I/O error) and has not worked again yet: appends are refused, reads and acks work. */
  readonly writeFailing: boolean;
}

/** Events of {@link OutboxStore}. */
export interface OutboxStoreEvents {
  /** A message left without delivery: a bound (`full`), its time to live (`expired`) or damage on disk (`corrupt`). */
  drop: [drop: OutboxDrop];
  /** Something to know that is not a failure of a call: `OutboxRecovered`, or writing failing in the background. */
  warning: [warning: OutboxError];
}

/**
 * The types of the durable outbox of a connection (durable.ts): what it uses of a store, what it counts, and what it
 * needs of its connection. Types only: the modules of the device entry name them without loading the durable outbox.
 */
import type { EventEmitter } from 'node:events';
import type { IClientPublishOptions } from 'mqtt';
import type { ApsaraMqDeviceError } from '../errors.js';
import type { OutboxDropReason, OutboxStore } from '../outbox/store.js';
import type { DeviceConnectionEvents } from './connection-types.js';
import type { Item } from './outbox-items.js';

/** What the connector uses of an {@link OutboxStore}. */
export type DurableStore = Pick<OutboxStore, 'dir' | 'append' | 'appendTo' | 'appendChecked' | 'ackOneChecked' | 'reject' | 'markSending' | 'clearSending' | 'pending' | 'flush' | 'device' | 'on' | 'off'>;

/** Counters of a connection's durable outbox (`conn.outbox.durable`). */
export interface DurableOutboxStats {
  /** This device's messages in the store now: accepted, not yet delivered, dropped or refused by the broker. */
  readonly stored: number;
  /** Their bytes in the store's accounting. */
  readonly storedBytes: number;
  /** Of them, held in memory now (in flight, or read ahead). */
  readonly window: number;
  /** Messages this connection made durable. */
  readonly accepted: number;
  /** Messages the broker acknowledged (of this connection or accepted before it, even before a restart). */
  readonly delivered: number;
  /** Of the delivered, those sent more than once (in flight when a session or the process ended): the broker may have them twice. */
  readonly possibleDuplicates: number;
  /** Messages removed undelivered while this connection was open, by reason. */
  readonly dropped: Readonly<Record<OutboxDropReason, number>>;
  /** Publishes the store refused (`OutboxFull`, `OutboxDiskFull`, …): never accepted. */
  readonly refused: number;
}

/** What a feed needs of its connection. */
export interface FeedHost {
  /** The connection's outbox: put an item in, in order; take items out of its queue. */
  add(item: Item): void;
  remove(item: Item): boolean;
  removeWhere(test: (item: Item) => boolean): Item[];
  /** The next position in the outbox's order. */
  nextSeq(): number;
  /** The connection's checks of a message (its rules: ApsaraMQ's or another broker's, MQTT 3.1.1 or 5). */
  check(topic: string, message: string | Buffer | Uint8Array, qos: 1 | 2): { topic: string; payload: Buffer; options: IClientPublishOptions };
  /** Something changed: send what can go, or finish closing. */
  wake(): void;
  readonly events: EventEmitter<DeviceConnectionEvents>;
  emitError(error: ApsaraMqDeviceError): void;
}

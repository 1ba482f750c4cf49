/**
 * What the durable outbox of a connection (durable.ts) holds per message in memory: the {@link DurableItem} in the
 * connection's outbox while the message is in the window, the {@link Waiter} of a `publish()` caller awaiting its
 * delivery, and the {@link Appending} of a message on its way to the store.
 */
import type { IClientPublishOptions } from 'mqtt';
import type { PublishAccepted } from './connection-types.js';
import type { DurableFeed } from './durable.js';
import { PublishItem, type Settled } from './outbox-items.js';

export const noop = (): void => {};

/** A message of the durable outbox while it is in memory. */
export class DurableItem extends PublishItem {
  readonly feed: DurableFeed;
  /** Its seq in the store. */
  readonly stored: number;
  readonly id: string | undefined;
  /** It was handed out for sending before (this process or the one before a restart). */
  readonly possibleDuplicate: boolean;
  /** The store dropped it while it was in flight: its answer is not reported (the drop was). */
  dropped = false;
  /** The `publish()` caller waiting for its delivery, while it is in the window. */
  waiter: Waiter | undefined = undefined;

  constructor(feed: DurableFeed, order: number, stored: number, topic: string, payload: Buffer, id: string | undefined, options: IClientPublishOptions, possibleDuplicate: boolean) {
    super(order, topic, payload, options);
    this.feed = feed;
    this.stored = stored;
    this.id = id;
    this.possibleDuplicate = possibleDuplicate;
  }

  override settle(result: Settled): void {
    this.feed.settled(this, result);
  }
}

/** A `publish()` caller waiting for the delivery of a message. */
export class Waiter {
  /** Accepted: from here a rejection is reported by the events too, so it never counts as unhandled. */
  accepted = false;
  readonly promise: Promise<void>;
  resolve!: () => void;
  #reject!: (error: unknown) => void;

  constructor() {
    this.promise = new Promise<void>((resolve, reject) => {
      this.resolve = resolve;
      this.#reject = reject;
    });
  }

  reject(error: unknown): void {
    if (this.accepted) this.promise.catch(noop);
    this.#reject(error);
  }
}

/** A message on its way to the store (its append's token): what its acceptance, or its refusal, needs. */
export class Appending {
  readonly feed: DurableFeed;
  readonly topic: string;
  readonly payload: Buffer;
  readonly options: IClientPublishOptions;
  readonly id: string | undefined;
  readonly bytes: number;
  /** It goes straight into the window once accepted (else it was spilled: read back in its turn). */
  readonly direct: boolean;
  /** The feed's session when it was appended. */
  readonly epoch: number;
  readonly waiter: Waiter | undefined;
  /** Told of the acceptance just before `resolve` (enqueueHeard's caller). */
  readonly onAccepted: ((accepted: PublishAccepted & { seq: number }) => void) | undefined;
  resolve!: (accepted: PublishAccepted & { seq: number }) => void;
  reject!: (error: unknown) => void;

  constructor(
    feed: DurableFeed,
    topic: string,
    payload: Buffer,
    options: IClientPublishOptions,
    id: string | undefined,
    bytes: number,
    direct: boolean,
    epoch: number,
    waiter: Waiter | undefined,
    onAccepted: ((accepted: PublishAccepted & { seq: number }) => void) | undefined,
  ) {
    this.feed = feed;
    this.topic = topic;
    this.payload = payload;
    this.options = options;
    this.id = id;
    this.bytes = bytes;
    this.direct = direct;
    this.epoch = epoch;
    this.waiter = waiter;
    this.onAccepted = onAccepted;
  }
}

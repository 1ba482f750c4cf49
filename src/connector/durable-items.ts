/**
 * What the durable outbox of a connection (durable.ts) holds per message in memory: the {@link DurableItem} in the
 * connection's outbox while the message is in the window, and the {@link Waiter} of a `publish()` caller awaiting its
 * delivery.
 */
import type { IClientPublishOptions } from 'mqtt';
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

/**
 * What a connection has to deliver: the outbox of the caller's PUBLISH, SUBSCRIBE and UNSUBSCRIBE items (outbox.ts
 * keeps their order and strikes), the subscriptions to restore on a session the broker did not keep, and the
 * sending of what the outbox lets go on a live session. With a durable outbox (durable.ts), QoS 1 and 2 messages
 * come from the store, a window at a time, into the same outbox.
 */
import type { IClientPublishOptions, ISubscriptionGrant, MqttClient } from 'mqtt';
import { Outbox } from './outbox.js';
import { type Item, type Settled, type Subscription, Subscriptions, publishItem, subscribeItem, topicBytes, unsubscribeItem } from './outbox-items.js';
import { type ApsaraMqDeviceError, type SubscribeError, ValidationError } from '../errors.js';
import type { PublishAccepted } from './connection-types.js';
// Types only: the durable outbox's module is loaded by connectDevice when a connection has one (durable.ts).
import type { DurableFeed, DurableOutboxStats, DurableStore, FeedHost } from './durable.js';
import { type InvalidNotice, outboxFullError, rejectedError } from './connection-errors.js';
import type { OutboxLimits } from './options.js';
import { refusesMessage } from '../mqtt/reason-codes.js';
import type { SessionEnd } from './takeover.js';
import { isOperationCode } from './token-rules.js';

/** Resubscriptions go before everything the caller queued: their sequence numbers start far below zero. */
const RESUBSCRIBE_SEQ = -1_000_000_000;

/** MQTT 5 user properties of a SUBSCRIBE or UNSUBSCRIBE. */
type UserProperties = { userProperties?: Record<string, string | string[]> } | undefined;

/** What the durable outbox of a connection needs from it. */
export interface DurableSetup {
  /** The feed class, from durable.js, loaded only for a connection with a durable outbox. */
  readonly Feed: typeof DurableFeed;
  readonly store: DurableStore;
  readonly clientId: string;
  /** The connection itself: its events, and the feed's way back into it through the symbol-keyed methods below. */
  readonly host: FeedSide;
}

/** @internal The connection's methods its durable feed calls (symbol-keyed: not part of its public surface). */
export const FEED_WAKE = Symbol('feed wake');
export const FEED_ERROR = Symbol('feed error');
export const FEED_CHECK = Symbol('feed check');

/** What a connection offers its durable feed: its events; wake (send what can go), report an error, check a message. */
export interface FeedSide extends Pick<FeedHost['events'], 'emit' | 'listenerCount'> {
  [FEED_WAKE](): void;
  [FEED_ERROR](error: ApsaraMqDeviceError): void;
  [FEED_CHECK](topic: string, message: string | Buffer | Uint8Array, qos: 1 | 2): ReturnType<FeedHost['check']>;
}

/** What the outbox holds in memory, what it refused, and the durable outbox's counters when there is one. */
export interface ConnectionOutboxStats {
  /** Messages (and SUBSCRIBE/UNSUBSCRIBE) in memory: queued while offline or awaiting their acknowledgement; with a durable outbox, its window too. */
  readonly messages: number;
  /** Their payload and topic bytes. */
  readonly bytes: number;
  /** Operations refused with `OutboxFull` at the bound in memory. */
  readonly refused: number;
  /** With a durable outbox (option `outbox`): its counters for this device. */
  readonly durable?: DurableOutboxStats;
}

/** The deliveries of one connection. */
export class Delivery {
  readonly #outbox: Outbox<Item>;
  readonly #limits: OutboxLimits;
  readonly #feed: DurableFeed | undefined;
  /** Operations refused because the outbox was full. */
  #refused = 0;
  /** What to SUBSCRIBE to again on a session the broker did not keep. */
  readonly #subscriptions = new Subscriptions();
  #seq = 0;
  #resubscribeSeq = 0;

  /**
   * @param maxDeliveryAttempts - sessions an item may be sent on before it fails.
   * @param limits - the outbox's bound; the caller's operations past it are refused with `OutboxFull`.
   */
  constructor(maxDeliveryAttempts: number, limits: OutboxLimits, durable?: DurableSetup) {
    const outbox = new Outbox<Item>(maxDeliveryAttempts);
    this.#outbox = outbox;
    this.#limits = limits;
    this.#feed = durable ? new durable.Feed(durable.store, durable.clientId, limits, new FeedLink(outbox, this, durable.host)) : undefined;
  }

  /** @internal The next position in the outbox's order (the durable feed's items take theirs here too). */
  takeSeq(): number {
    return this.#seq++;
  }

  /** What the outbox holds (messages and bytes), how many operations it refused as full, and the durable counters. */
  get stats(): ConnectionOutboxStats {
    const stats = { messages: this.#outbox.size, bytes: this.#outbox.bytes, refused: this.#refused };
    return this.#feed ? { ...stats, durable: this.#feed.stats } : stats;
  }

  /** Nothing left to send: the outbox is empty, and so is the durable outbox (or there is none). */
  get idle(): boolean {
    return this.#outbox.size === 0 && (this.#feed?.idle ?? true);
  }

  /** Items in flight. */
  get inFlight(): number {
    return this.#outbox.inFlight;
  }

  /**
   * Queue a PUBLISH: `delivered` resolves when the broker acknowledged it (or it was written, QoS 0); `accepted` when
   * the connection holds it (with a durable outbox and QoS 1 or 2: once it is on disk).
   * @throws `OutboxFull` at once, nothing queued, when it would take the outbox in memory past its bound.
   */
  publish(topic: string, payload: Buffer, options: IClientPublishOptions, id: string | undefined, clientId: string): { accepted: Promise<PublishAccepted>; delivered: Promise<void> } {
    if (this.#feed && (options.qos ?? 0) > 0) {
      const { accepted, delivered } = this.#feed.publish(topic, payload, options, id, true);
      return { accepted, delivered: delivered as Promise<void> };
    }
    this.#assertRoom(`publish to ${topic}`, Buffer.byteLength(topic) + payload.length);
    const delivered = this.#queue((settle) => publishItem(this.#seq++, topic, payload, options, settle)) as Promise<void>;
    return { accepted: Promise.resolve({ clientId, seq: undefined, ...(id === undefined ? {} : { id }), durable: false }), delivered };
  }

  /**
   * Keep a QoS 1 or 2 message in the durable outbox; resolves once it is on disk. Its delivery is reported by the
   * connection's events only, so nothing per message is held in memory while it waits on disk.
   * @throws ValidationError `InvalidOption` without a durable outbox, or for QoS 0.
   */
  enqueue(topic: string, payload: Buffer, options: IClientPublishOptions, id: string | undefined): Promise<PublishAccepted> {
    if (!this.#feed) throw new ValidationError('InvalidOption', 'enqueue needs a durable outbox (option outbox of connectDevice); use publish without one');
    if ((options.qos ?? 0) === 0) throw new ValidationError('InvalidOption', 'enqueue keeps QoS 1 and 2 messages; a QoS 0 message is not stored (use publish)');
    return this.#feed.publish(topic, payload, options, id, false).accepted;
  }

  /** A session is up. */
  sessionUp(): void {
    this.#feed?.sessionUp();
  }

  /** Queue a SUBSCRIBE; resolves with the grants. @throws `OutboxFull`, as {@link Delivery.publish} does. */
  async subscribe(map: Record<string, Subscription>, properties: UserProperties): Promise<ISubscriptionGrant[]> {
    const filters = Object.keys(map);
    this.#assertRoom(`subscribe to ${filters.join(', ')}`, topicBytes(filters));
    return (await this.#queue((settle) => subscribeItem(this.#seq++, 'subscribe', map, properties, this.#subscriptions, settle))) as ISubscriptionGrant[];
  }

  /** Queue an UNSUBSCRIBE (the filters are forgotten at once: not restored after a reconnect). @throws `OutboxFull`. */
  async unsubscribe(filters: readonly string[], properties: UserProperties): Promise<void> {
    this.#assertRoom(`unsubscribe from ${filters.join(', ')}`, topicBytes(filters));
    for (const filter of filters) this.#subscriptions.forget(filter);
    await this.#queue((settle) => unsubscribeItem(this.#seq++, filters, properties, settle));
  }

  /** A session the broker did not keep: SUBSCRIBE again, first thing, to what was subscribed; `onError` hears of a refusal. */
  restoreSubscriptions(onError: (error: SubscribeError) => void): void {
    const map = this.#subscriptions.all();
    if (!map) return;
    this.#outbox.add(
      subscribeItem(RESUBSCRIBE_SEQ + this.#resubscribeSeq++, 'resubscribe', map, undefined, this.#subscriptions, (result) => {
        if (result.ok) return;
        const error = result.error as SubscribeError;
        for (const topic of error.topics ?? []) this.#subscriptions.forget(topic);
        onError(error);
      }),
    );
  }

  /**
   * Send what the outbox lets go on `client`, the session numbered `session`; `settled` runs after each answer that
   * settled an item (the connection sends more then, or finishes closing).
   */
  send(client: MqttClient, session: number, settled: () => void): void {
    // The writer corks the socket for the turn (publish-writer.ts): what goes here together leaves in one write.
    for (const item of this.#outbox.take(session)) {
      item.send(client, (result) => {
        if (result.ok === 'ignore' || !this.#outbox.settle(item, session)) return;
        item.settle(result);
        settled();
      });
    }
  }

  /**
   * The session ended (`end`): strike what was in flight and fail what has had its strikes. A loss with messages in
   * flight is blamed on them, not on a takeover. In Token mode the broker's invalid notice says why: about the
   * operation in flight (4, 5), or about the tokens (the others). Returns what the loss counts as.
   */
  blame(end: SessionEnd, notice: InvalidNotice | undefined): SessionEnd {
    const aboutMessage = notice ? isOperationCode(notice.code) : end.kind === 'disconnect' && refusesMessage(end.reasonCode);
    const { failed, struck } = this.#outbox.lost({ aboutMessage });
    for (const item of failed) item.settle({ ok: false, error: rejectedError(item, end, notice) });
    this.#feed?.sessionDown();
    if (notice) return { kind: 'token', code: notice.code };
    return struck && end.kind === 'closed' ? { kind: 'message' } : end;
  }

  /**
   * The connection closes: fail every item, queued or in flight, in order; the durable outbox's messages stay on disk
   * (their callers hear `ConnectionClosed`, saying so).
   */
  failAll(error: ApsaraMqDeviceError, cause: ApsaraMqDeviceError | undefined): void {
    const feed = this.#feed;
    for (const item of this.#outbox.drain()) if (!feed?.owns(item)) item.settle({ ok: false, error });
    feed?.close(cause);
  }

  /** Refuse the caller's operation (counted) when one more item of `bytes` would pass the bound (the durable window aside). */
  #assertRoom(what: string, bytes: number): void {
    const window = this.#feed?.window ?? 0;
    const size = this.#outbox.size - window;
    const held = this.#outbox.bytes - (this.#feed?.windowBytes ?? 0);
    if (size + 1 <= this.#limits.maxMessages && held + bytes <= this.#limits.maxBytes) return;
    this.#refused += 1;
    throw outboxFullError(what, { messages: size, bytes: held }, this.#limits);
  }

  #queue(make: (settle: (result: Settled) => void) => Item): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.#outbox.add(make((result) => (result.ok ? resolve(result.value) : reject(result.error))));
    });
  }
}


/**
 * What a durable feed reaches of its connection: the outbox, the order, and the connection's own side. Methods, not
 * closures: a gateway holds thousands of connections, and an object of closures made by spreading also got a hidden
 * class of its own each (about 900 bytes per connection together).
 */
class FeedLink implements FeedHost {
  readonly events: FeedHost['events'];
  readonly #outbox: Outbox<Item>;
  readonly #delivery: Delivery;
  readonly #side: FeedSide;

  constructor(outbox: Outbox<Item>, delivery: Delivery, side: FeedSide) {
    this.#outbox = outbox;
    this.#delivery = delivery;
    this.#side = side;
    this.events = side as unknown as FeedHost['events'];
  }

  add(item: Item): void {
    this.#outbox.add(item);
  }

  remove(item: Item): boolean {
    return this.#outbox.remove(item);
  }

  removeWhere(test: (item: Item) => boolean): Item[] {
    return this.#outbox.removeWhere(test);
  }

  nextSeq(): number {
    return this.#delivery.takeSeq();
  }

  check(topic: string, message: string | Buffer | Uint8Array, qos: 1 | 2): ReturnType<FeedHost['check']> {
    return this.#side[FEED_CHECK](topic, message, qos);
  }

  wake(): void {
    this.#side[FEED_WAKE]();
  }

  emitError(error: ApsaraMqDeviceError): void {
    this.#side[FEED_ERROR](error);
  }
}

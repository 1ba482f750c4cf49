/**
 * What a connection has to deliver: the outbox of the caller's PUBLISH, SUBSCRIBE and UNSUBSCRIBE items (outbox.ts
 * keeps their order and strikes), the subscriptions to restore on a session the broker did not keep, and the
 * sending of what the outbox lets go on a live session.
 */
import type { IClientPublishOptions, ISubscriptionGrant, MqttClient } from 'mqtt';
import { Outbox } from './outbox.js';
import { type Item, type Settled, type Subscription, Subscriptions, publishItem, subscribeItem, topicBytes, unsubscribeItem } from './outbox-items.js';
import type { ApsaraMqDeviceError, SubscribeError } from '../errors.js';
import { type InvalidNotice, outboxFullError, rejectedError } from './connection-errors.js';
import type { OutboxLimits } from './options.js';
import { refusesMessage } from '../mqtt/reason-codes.js';
import type { SessionEnd } from './takeover.js';
import { isOperationCode } from './token-rules.js';

/** Resubscriptions go before everything the caller queued: their sequence numbers start far below zero. */
const RESUBSCRIBE_SEQ = -1_000_000_000;

/** MQTT 5 user properties of a SUBSCRIBE or UNSUBSCRIBE. */
type UserProperties = { userProperties?: Record<string, string | string[]> } | undefined;

/** The deliveries of one connection. */
export class Delivery {
  readonly #outbox: Outbox<Item>;
  readonly #limits: OutboxLimits;
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
  constructor(maxDeliveryAttempts: number, limits: OutboxLimits) {
    this.#outbox = new Outbox(maxDeliveryAttempts);
    this.#limits = limits;
  }

  /** What the outbox holds (messages and bytes), and how many operations it refused as full. */
  get stats(): { readonly messages: number; readonly bytes: number; readonly refused: number } {
    return { messages: this.#outbox.size, bytes: this.#outbox.bytes, refused: this.#refused };
  }

  /** Items waiting or in flight. */
  get size(): number {
    return this.#outbox.size;
  }

  /** Items in flight. */
  get inFlight(): number {
    return this.#outbox.inFlight;
  }

  /**
   * Queue a PUBLISH; resolves when the broker acknowledged it (or it was written, QoS 0).
   * @throws `OutboxFull` at once, nothing queued, when it would take the outbox past its bound.
   */
  async publish(topic: string, payload: Buffer, options: IClientPublishOptions): Promise<void> {
    this.#assertRoom(`publish to ${topic}`, Buffer.byteLength(topic) + payload.length);
    await this.#queue((settle) => publishItem(this.#seq++, topic, payload, options, settle));
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
    if (notice) return { kind: 'token', code: notice.code };
    return struck && end.kind === 'closed' ? { kind: 'message' } : end;
  }

  /** The connection closes: fail every item, queued or in flight, in order. */
  failAll(error: ApsaraMqDeviceError): void {
    for (const item of this.#outbox.drain()) item.settle({ ok: false, error });
  }

  /** Refuse the caller's operation (counted) when one more item of `bytes` would pass the bound. */
  #assertRoom(what: string, bytes: number): void {
    const { size, bytes: held } = this.#outbox;
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


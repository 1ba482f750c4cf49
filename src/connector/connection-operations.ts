/**
 * What the application does on a connection: who it is, `publish`, `enqueue`, `subscribe` and `unsubscribe` into its
 * outbox (delivery.ts) and the outbox's counters, the durable feed's way back into the connection (the FEED_*
 * methods), and its errors and logs. {@link ConnectionOperations} is the base class of `DeviceConnection`
 * (connection.ts), which keeps the session: the state machine, the attempts, closing. This class asks it, through
 * the abstract methods, whether the connection is still open and to send what the outbox lets go.
 */
import { EventEmitter } from 'node:events';
import { inspect } from 'node:util';
import type { ISubscriptionGrant } from 'mqtt';
import type { DeviceCredential } from '../credential.js';
import { type ApsaraMqDeviceError, ValidationError } from '../errors.js';
import type { TokenGrant } from '../signer/mqtt.js';
import { type Logger, silentLogger } from '../util/logger.js';
import type { ConnectionMode, DeviceConnectionEvents, PublishAccepted, PublishOptions, Publishing, SubscribeOptions } from './connection-types.js';
import { Delivery, type ConnectionOutboxStats, FEED_CHECK, FEED_ERROR, FEED_WAKE } from './delivery.js';
import type { Login } from './login.js';
import type { ResolvedConnectOptions } from './options.js';
import type { ConnectionState } from './state.js';
import { checkMessageId, checkPublish, checkSubscriptionOptions, checkTopicFilters, checkV5Properties } from './validate.js';

// What the two halves of a connection share: symbol-keyed, so that a connection the application holds shows none of
// it as a property (its login, options and logger are not the application's to reach).
export const LOGIN = Symbol('login');
export const OPTIONS = Symbol('options');
export const URL_OF = Symbol('url');
export const LOGGER = Symbol('logger');
export const DELIVERY = Symbol('delivery');
export const ASSERT_OPEN = Symbol('assertOpen');
export const PUMP = Symbol('pump');
export const PROGRESS = Symbol('progress');
export const EMIT_ERROR = Symbol('emitError');
export const LOG = Symbol('log');

/** The durable outbox's module (durable.ts), loaded on demand. */
export type DurableModule = typeof import('./durable.js');

/** A device's connection as its application uses it; `DeviceConnection` adds the keeping of its session. */
export abstract class ConnectionOperations<M extends ConnectionMode = 'DeviceCredential'> extends EventEmitter<DeviceConnectionEvents> {
  readonly clientId: string;
  /** The device credential or the tokens, and the source of the next ones. */
  readonly #login: Login;
  readonly #options: ResolvedConnectOptions;
  readonly #url: string;
  readonly #logger: Logger;
  readonly #delivery: Delivery;

  /**
   * `durable`: the durable outbox's module, which connectDevice loads for a connection with option `outbox` (a device
   * without one never loads it).
   */
  constructor(login: Login, options: ResolvedConnectOptions, url: string, durable: DurableModule | undefined) {
    super();
    this.#login = login;
    this.#options = options;
    this.#url = url;
    this.#logger = options.logger ?? silentLogger;
    this.clientId = login.clientId;
    this.#delivery = new Delivery(
      options.maxDeliveryAttempts,
      options.queueLimits,
      options.durable && durable && {
        Feed: durable.DurableFeed,
        store: options.durable,
        clientId: this.clientId,
        host: this,
      },
    );
  }

  /** Where the connection is now. */
  abstract get state(): ConnectionState;

  // ---- what DeviceConnection (connection.ts) answers

  /** @throws ConnectionClosedError when the connection is ending or closed: `what` can no longer be done. */
  protected abstract [ASSERT_OPEN](what: string): void;
  /** Send what the outbox lets go, when a session is up. */
  protected abstract [PUMP](): void;
  /** An answer settled an item, or the durable outbox has more: send what can go, or finish closing. */
  protected abstract [PROGRESS](): void;

  // ---- what it uses (the same objects, never copied)

  protected get [LOGIN](): Login {
    return this.#login;
  }

  protected get [OPTIONS](): ResolvedConnectOptions {
    return this.#options;
  }

  protected get [URL_OF](): string {
    return this.#url;
  }

  protected get [LOGGER](): Logger {
    return this.#logger;
  }

  protected get [DELIVERY](): Delivery {
    return this.#delivery;
  }

  /** @internal The durable feed's way back (delivery.ts): send what can go, or finish closing. */
  [FEED_WAKE](): void {
    this[PROGRESS]();
  }

  /** @internal The durable feed reports an error. */
  [FEED_ERROR](error: ApsaraMqDeviceError): void {
    this[EMIT_ERROR](error);
  }

  /** @internal The durable feed checks a message by this connection's rules. */
  [FEED_CHECK](topic: string, message: string | Buffer | Uint8Array, qos: 1 | 2): ReturnType<typeof checkPublish> {
    this[ASSERT_OPEN](`publish to ${topic}`);
    return checkPublish(topic, message, { qos }, this.#options);
  }

  /** What logs and `util.inspect` show: never a secret. */
  toJSON(): Record<string, unknown> {
    return { clientId: this.clientId, brokerUrl: this.#url, state: this.state, mode: this.#login.mode, ...this.#login.toJSON() };
  }

  [inspect.custom](): string {
    return `DeviceConnection ${inspect(this.toJSON())}`;
  }

  /** The credential in use now (it changes when the source hands out a rotated one); `undefined` in Token mode. */
  get credential(): M extends 'Token' ? undefined : DeviceCredential {
    return (this.#login.mode === 'DeviceCredential' ? this.#login.current : undefined) as M extends 'Token' ? undefined : DeviceCredential;
  }

  /** How the connection logs in: `DeviceCredential`, or `Token` (`connectDevice`'s `token` option). */
  get mode(): M {
    return this.#login.mode as M;
  }

  /** Token mode: the types of the tokens held and their expiry when known (never the tokens); empty otherwise. */
  get tokens(): { type: TokenGrant['type']; expireTime: number | undefined }[] {
    return this.#login.mode === 'Token' ? this.#login.tokens : [];
  }

  /** The broker URL in use. */
  get brokerUrl(): string {
    return this.#url;
  }

  /**
   * The outbox: the messages (and SUBSCRIBE/UNSUBSCRIBE) held in memory, queued while offline or awaiting their
   * acknowledgement, their payload and topic bytes, and how many operations were refused with `OutboxFull` so far
   * (the bound: `maxQueuedMessages`, `maxQueuedBytes`). With a durable outbox (option `outbox`), `durable` counts
   * this device's messages on disk, accepted, delivered, possible duplicates, dropped (by reason) and refused.
   */
  get outbox(): ConnectionOutboxStats {
    return this.#delivery.stats;
  }

  /**
   * Publish. Checked first (topic, payload, QoS, what the service supports): a message that can never be delivered
   * is refused with a `ValidationError` and nothing is sent. Resolves when the broker acknowledged it (QoS 1 and 2)
   * or it was written to the socket (QoS 0). Sent now when online, else queued and sent after the reconnect.
   * Rejects with `PublishRejected` when the broker refused it (an MQTT 5 reason code), or closed the session each
   * of `maxDeliveryAttempts` times it was sent; with `ConnectionClosed` when the connection closes first; at once,
   * with nothing queued, with `OutboxFull` when the connection already holds `maxQueuedMessages` messages or
   * `maxQueuedBytes` bytes.
   *
   * The promise also carries `accepted`, which resolves when the connection took the message. With a durable outbox
   * (option `outbox`) and QoS 1 or 2 that is once the message is on disk (fsync'd): from then on it survives a crash
   * and is sent until delivered, in order; `accepted` (and the promise) reject with `OutboxFull` or `OutboxDiskFull`
   * when the store refuses it. After acceptance the promise rejects with `OutboxDropped` when the store's bounds drop
   * it, and with `ConnectionClosed` when the connection closes first (the message stays on disk: the error says
   * so); such a rejection is also reported by the `dropped` event and never counts as unhandled.
   */
  publish(topic: string, message: string | Buffer | Uint8Array, options: PublishOptions = {}): Publishing {
    let taken: { accepted: Promise<PublishAccepted>; delivered: Promise<void> };
    try {
      const checked = checkPublish(topic, message, options as Parameters<typeof checkPublish>[2], this.#options);
      const id = checkMessageId(options.id);
      this[ASSERT_OPEN](`publish to ${checked.topic}`);
      taken = this.#delivery.publish(checked.topic, checked.payload, checked.options, id, this.clientId);
      this[PUMP]();
    } catch (error) {
      taken = { accepted: Promise.reject(error), delivered: Promise.reject(error) };
    }
    // Whoever awaits only the delivery hears a refusal there: `accepted` alone never counts as unhandled.
    taken.accepted.catch(() => undefined);
    return Object.assign(taken.delivered, { accepted: taken.accepted });
  }

  /**
   * Hand a QoS 1 or 2 message (QoS 1 by default) to the durable outbox and resolve once it is on disk (fsync'd),
   * with its `seq`; then it is sent, in order, until the broker acknowledged it. Its fate is reported by the
   * `delivered` and `dropped` events only, so nothing of it stays in memory while it waits on disk: what a gateway
   * handing over many messages uses. Checked as {@link publish} is.
   *
   * @throws (rejects) ValidationError `InvalidOption` without a durable outbox or for QoS 0; OutboxError
   *   `OutboxFull`, `OutboxDiskFull`, `OutboxIOError`, `OutboxClosed`; `ConnectionClosed` after `end()`.
   */
  async enqueue(topic: string, message: string | Buffer | Uint8Array, options: PublishOptions = {}): Promise<PublishAccepted & { seq: number }> {
    const checked = checkPublish(topic, message, { ...(options as Parameters<typeof checkPublish>[2]), qos: options?.qos ?? 1 }, this.#options);
    const id = checkMessageId(options.id);
    this[ASSERT_OPEN](`publish to ${checked.topic}`);
    const accepted = this.#delivery.enqueue(checked.topic, checked.payload, checked.options, id);
    this[PUMP]();
    return (await accepted) as PublishAccepted & { seq: number };
  }

  /**
   * Subscribe to one or more topic filters. Checked first (MQTT's wildcard rules; on ApsaraMQ no `$share/` and not
   * QoS 2 with a persistent session): an invalid filter is a `ValidationError`. Resolves with the grants on SUBACK;
   * rejects with `SubscribeRejected` (a {@link SubscribeError} naming the refused filters) when the broker refused
   * any (the others stay subscribed), `ConnectionClosed` when the connection closes first, and `OutboxFull` as
   * {@link DeviceConnection.publish} does. Subscriptions are restored after a reconnect when the broker did not keep
   * the session.
   */
  async subscribe(topic: string | string[], options: SubscribeOptions = {}): Promise<ISubscriptionGrant[]> {
    if (options === null || typeof options !== 'object') throw new ValidationError('InvalidOption', 'subscribe options must be an object');
    const filters = checkTopicFilters('subscribe', topic, this.#options.rules);
    const subscription = checkSubscriptionOptions(options, this.#options.rules, this.#options.protocolVersion);
    const properties = checkV5Properties('subscribe', options.properties, this.#options.protocolVersion);
    this[ASSERT_OPEN](`subscribe to ${filters.join(', ')}`);
    const granted = this.#delivery.subscribe(Object.fromEntries(filters.map((f) => [f, subscription])), properties);
    this[PUMP]();
    return granted;
  }

  /** Unsubscribe. Resolves on UNSUBACK; rejects with `ConnectionClosed` when the connection closes first. */
  async unsubscribe(topic: string | string[], options: { properties?: { userProperties?: Record<string, string | string[]> } } = {}): Promise<void> {
    const filters = checkTopicFilters('unsubscribe', topic, this.#options.rules);
    const properties = checkV5Properties('unsubscribe', options?.properties, this.#options.protocolVersion);
    this[ASSERT_OPEN](`unsubscribe from ${filters.join(', ')}`);
    const done = this.#delivery.unsubscribe(filters, properties);
    this[PUMP]();
    await done;
  }

  // ---- events and logs


  protected [EMIT_ERROR](error: ApsaraMqDeviceError): void {
    this[LOG]('error', error.message, { code: error.code });
    if (this.listenerCount('error') > 0) this.emit('error', error);
  }

  protected [LOG](level: keyof Logger, message: string, fields: Record<string, unknown>): void {
    if (this.#logger === silentLogger) return; // no string building for nobody
    this.#logger[level](`[apsaramq-device] ${this.clientId}: ${message}`, fields);
  }
}

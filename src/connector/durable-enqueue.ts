/**
 * Which open connection of a device, if any, takes its messages on a store: one connection per device and store
 * (each store's feeds, and its one `drop` listener that routes by ClientId); and `enqueueDurable`, which hands a
 * message to that connection's feed, or else straight to the store. Loaded with durable.ts, never by the device
 * entry at import.
 */
import { ValidationError } from '../errors.js';
import type { OutboxDrop, OutboxStore } from '../outbox/store.js';
import type { PublishAccepted } from './connection-types.js';
import type { DurableFeed } from './durable.js';
import type { DurableStore } from './durable-types.js';
import { assertClientId } from '../credential.js';
import { checkMessageId, checkPayload, checkTopicName, defaultMaxPayloadBytes } from './validate.js';

/** Each store's open feeds by ClientId, and its one `drop` listener that routes by ClientId. */
const routers = new WeakMap<DurableStore, { feeds: Map<string, DurableFeed>; listener: (drop: OutboxDrop) => void }>();

/**
 * Make `feed` the one of `clientId` on `store` (its drops are routed to it from now on).
 * @throws ValidationError `InvalidOption` when another open connection of this ClientId uses the store.
 */
export function attachFeed(store: DurableStore, clientId: string, feed: DurableFeed): void {
  let router = routers.get(store);
  if (!router) {
    const feeds = new Map<string, DurableFeed>();
    router = { feeds, listener: (drop) => feeds.get(drop.clientId)?.onDrop(drop) };
    store.on('drop', router.listener);
    routers.set(store, router);
  }
  if (router.feeds.has(clientId)) {
    throw new ValidationError('InvalidOption', `Option outbox: another open connection of ${clientId} uses this outbox store (${store.dir}); a device has one connection per store`);
  }
  router.feeds.set(clientId, feed);
}

/** `feed` closed: let go of its place (and of the store's listener with the store's last feed). */
export function detachFeed(store: DurableStore, clientId: string, feed: DurableFeed): void {
  const router = routers.get(store);
  if (router?.feeds.get(clientId) === feed) {
    router.feeds.delete(clientId);
    if (router.feeds.size === 0) {
      store.off('drop', router.listener);
      routers.delete(store);
    }
  }
}

/** Options of {@link enqueueDurable}. */
export interface EnqueueOptions {
  /** 1 or 2: QoS 0 is not stored. @default 1 */
  readonly qos?: 1 | 2;
  /** The application's id of the message (at most 255 bytes of UTF-8), given back in every report about it. */
  readonly id?: string;
  /**
   * While no connection of the device is open, the message is checked against ApsaraMQ's rules (topic of at most 64
   * characters, payload of at most 64 KB); `false` for another broker (an open connection checks with its own).
   * @default true
   */
  readonly brokerIsApsaraMq?: boolean;
}

/** The work of the device entry's `enqueueDurable` (enqueue.ts loads this module, through durable.ts, on its first call). */
export function enqueueDurable(
  store: OutboxStore,
  clientId: string,
  topic: string,
  message: string | Buffer | Uint8Array,
  options: EnqueueOptions = {},
): Promise<PublishAccepted & { seq: number }> {
  return enqueueHeard(store, clientId, topic, message, options, undefined);
}

/** What hears of an acceptance before its promise settles (the gateway's counters: no reaction of its own per message). */
export type AcceptedHook = (accepted: PublishAccepted & { seq: number }) => void;

/** @internal {@link enqueueDurable}, with `onAccepted` called (once, synchronously) as the message is accepted. */
export function enqueueHeard(
  store: OutboxStore,
  clientId: string,
  topic: string,
  message: string | Buffer | Uint8Array,
  options: EnqueueOptions,
  onAccepted: AcceptedHook | undefined,
): Promise<PublishAccepted & { seq: number }> {
  // Not an async function (a gateway's every message comes through here): what is refused still rejects, never throws.
  let qos: 1 | 2;
  let id: string | undefined;
  try {
    if (store === null || typeof store !== 'object' || typeof (store as { append?: unknown }).append !== 'function') {
      throw new ValidationError('InvalidOption', "enqueueDurable needs an open OutboxStore as its first argument: openOutboxStore({ dir }) from 'apsaramq-device/outbox'");
    }
    if (options === null || typeof options !== 'object') throw new ValidationError('InvalidOption', 'enqueueDurable options must be an object');
    const given = options.qos ?? 1;
    if (given !== 1 && given !== 2) throw new ValidationError('InvalidOption', `enqueueDurable keeps QoS 1 and 2 messages (got qos ${String(given)}); a QoS 0 message is not stored (use publish)`);
    qos = given;
    id = checkMessageId(options.id);
  } catch (error) {
    return Promise.reject(error);
  }
  const feed = routers.get(store as DurableStore)?.feeds.get(clientId);
  if (feed) return feed.enqueue(topic, message, qos, id, onAccepted);
  const stored = enqueueStored(store, clientId, topic, message, qos, id, options);
  return onAccepted === undefined
    ? stored
    : stored.then((accepted) => {
        onAccepted(accepted);
        return accepted;
      });
}

/** {@link enqueueDurable} for a device with no connection on the store: checked by the service's rules, kept. */
async function enqueueStored(store: OutboxStore, clientId: string, topic: string, message: string | Buffer | Uint8Array, qos: 1 | 2, id: string | undefined, options: EnqueueOptions): Promise<PublishAccepted & { seq: number }> {
  assertClientId(clientId);
  const rules = { apsaraMq: options.brokerIsApsaraMq ?? true, maxPayloadBytes: defaultMaxPayloadBytes(options.brokerIsApsaraMq ?? true), persistentSession: false };
  const name = checkTopicName(topic, rules);
  const payload = checkPayload(message, rules);
  const { seq } = await store.append(clientId, id === undefined ? { topic: name, payload, qos } : { topic: name, payload, qos, id });
  return id === undefined ? { clientId, seq, durable: true } : { clientId, seq, id, durable: true };
}

/**
 * The durable outbox of one connection (`connectDevice`'s `outbox` option): its QoS 1 and 2 messages live in an
 * OutboxStore (`apsaramq-device/outbox`) from the moment they are *accepted* (on disk, fsync'd) until the broker
 * acknowledged them (*delivered*), a bound of the store dropped them, or the broker refused them; across reconnects,
 * and across restarts of the process on the same directory.
 *
 * Memory stays flat however long the outage: only a window of messages is in memory (at most
 * {@link DURABLE_WINDOW} and the connection's `maxQueuedMessages` / `maxQueuedBytes`), the rest is read from the store
 * a page at a time. While online and caught up (nothing waits on disk), a new message goes straight into the window
 * once accepted, with its in-flight mark in the same write; otherwise it is *spilled*: written only, and read back in
 * its turn. Before a page read back is sent, its in-flight mark is made durable (one write per page), so that after
 * a crash the messages that may have reached the broker are counted as possible duplicates. When a session ends the
 * window is let go (strikes kept by seq) and the next session reads again from the device's oldest message: one path
 * for a reconnect and for a restart.
 *
 * Only types come from src/outbox/: the application opens the store and passes it in, so the device entry never
 * loads the engine.
 */
import type { EventEmitter } from 'node:events';
import type { IClientPublishOptions } from 'mqtt';
import { type ApsaraMqDeviceError, ConnectionClosedError, OutboxError, ValidationError, isApsaraMqDeviceError, toApsaraMqDeviceError } from '../errors.js';
import type { OutboxDrop, OutboxDropReason, OutboxMessage, OutboxMessageInput, OutboxStore } from '../outbox/store.js';
import type { AppendSink } from '../outbox/wal.js';
import type { DeviceConnectionEvents, OutboxReport, PublishAccepted } from './connection-types.js';
import { type Item, PublishItem, type Settled } from './outbox-items.js';
import { assertClientId } from '../credential.js';
import { checkMessageId, checkPayload, checkTopicName, defaultMaxPayloadBytes } from './validate.js';

/** What the connector uses of an {@link OutboxStore}. */
export type DurableStore = Pick<OutboxStore, 'dir' | 'append' | 'appendTo' | 'ackAll' | 'reject' | 'markSending' | 'clearSending' | 'pending' | 'flush' | 'device' | 'on' | 'off'>;

/**
 * The most messages of a durable outbox a connection holds in memory (in flight and read ahead), whatever
 * `maxQueuedMessages` says: enough to keep a fast link busy, small next to what waits on disk.
 */
export const DURABLE_WINDOW = 4096;

/** After a failed read of the store, the next try waits this long. */
const RETRY_READ_MS = 1000;

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

/**
 * The window of a feed with nothing in memory: shared and never written (a feed makes its own on its first message,
 * and lets it go when a session ends): a gateway holds thousands of feeds, most of them idle at any moment.
 */
const NO_ITEMS: Map<number, DurableItem> = new Map();

/** The drop counters of a feed that dropped nothing yet (copied when the first drop is counted). */
const NO_DROPS: Readonly<Record<OutboxDropReason, number>> = Object.freeze({ full: 0, expired: 0, corrupt: 0, rejected: 0 });

/** A message of the durable outbox while it is in memory. */
class DurableItem extends PublishItem {
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
class Waiter {
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
class Appending {
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
  resolve!: (accepted: PublishAccepted & { seq: number }) => void;
  reject!: (error: unknown) => void;

  constructor(feed: DurableFeed, topic: string, payload: Buffer, options: IClientPublishOptions, id: string | undefined, bytes: number, direct: boolean, epoch: number, waiter: Waiter | undefined) {
    this.feed = feed;
    this.topic = topic;
    this.payload = payload;
    this.options = options;
    this.id = id;
    this.bytes = bytes;
    this.direct = direct;
    this.epoch = epoch;
    this.waiter = waiter;
  }
}

/** One connection per device and store: each store's connections, and its one `drop` listener that routes by ClientId. */
const routers = new WeakMap<DurableStore, { feeds: Map<string, DurableFeed>; listener: (drop: OutboxDrop) => void }>();

const noop = (): void => {};
const SENDING = Object.freeze({ sending: true });
const NOT_SENDING = Object.freeze({ sending: false });

const DROP_WORDS: Readonly<Record<OutboxDropReason, string>> = {
  expired: 'its time to live (ttlMs) passed',
  full: "the outbox was full and whenFull is 'drop-oldest'",
  corrupt: 'its record was damaged on disk',
  rejected: 'the broker refused it',
};

/** The durable outbox of one connection. */
export class DurableFeed {
  readonly #store: DurableStore;
  readonly #clientId: string;
  readonly #host: FeedHost;
  readonly #maxWindow: number;
  readonly #maxBytes: number;
  /** The messages in memory, by store seq (in the connection's outbox, queued or in flight). */
  #window: Map<number, DurableItem> = NO_ITEMS;
  #windowBytes = 0;
  /** Strikes of messages that were in flight when a session ended, by store seq, until they are read again (made on first use, as #waiters). */
  #strikes: Map<number, number> | undefined;
  /** Delivery promises of `publish()` callers, by store seq. */
  #waiters: Map<number, Waiter> | undefined;
  /** The highest seq read into the window (or put there when accepted); the next read starts after it. */
  #cursor = 0;
  /** Nothing of this device waits on disk beyond the window: new messages may go straight into it. */
  #caughtUp: boolean;
  /** Appends going straight into the window, not resolved yet, and their bytes. */
  #direct = 0;
  #directBytes = 0;
  /** Appends spilled to disk not resolved yet; and how many were ever made (a read that overlapped one is not the last). */
  #spilling = 0;
  #spills = 0;
  #online = false;
  /** Counts sessions: an answer or an acceptance of an earlier one finds a window that was let go. */
  #epoch = 0;
  #filling = false;
  /** Asked to read while a read ran: read again after it. */
  #refill = false;
  /** Seqs dropped by the store while a page was being read (a read may hold them). */
  #droppedMeanwhile: Set<number> | undefined;
  #retry: NodeJS.Timeout | undefined;
  /** The store was closed under the connection: nothing more is read. */
  #broken = false;
  #closed = false;
  /** Seqs acknowledged in this turn, removed from the store together. */
  #acks: number[] = [];
  /** A wake of the connection is queued for the end of this turn. */
  #waking = false;
  /** Everything appended before this feed existed is written (the first read waits for it). */
  #before: Promise<void> | undefined;
  // Counters in the feed itself, the drops' made on the first drop: a gateway holds thousands of feeds.
  #accepted = 0;
  #delivered = 0;
  #possibleDuplicates = 0;
  #refused = 0;
  #dropped: Record<OutboxDropReason, number> | undefined;

  /**
   * @throws ValidationError `InvalidOption` when another open connection of this ClientId uses the store.
   */
  constructor(store: DurableStore, clientId: string, limits: { readonly maxMessages: number; readonly maxBytes: number }, host: FeedHost) {
    this.#store = store;
    this.#clientId = clientId;
    this.#host = host;
    this.#maxWindow = Math.min(DURABLE_WINDOW, limits.maxMessages);
    this.#maxBytes = limits.maxBytes;
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
    router.feeds.set(clientId, this);
    // What was appended for this device before (enqueueDurable without a connection) may not be written yet, so not
    // counted: the first read waits for the store to have written it, and decides.
    this.#caughtUp = false;
    this.#before = store.flush().catch(noop);
  }

  get stats(): DurableOutboxStats {
    const { messages, bytes } = this.#store.device(this.#clientId);
    const dropped = { ...(this.#dropped ?? NO_DROPS) };
    return { stored: messages, storedBytes: bytes, window: this.#window.size, accepted: this.#accepted, delivered: this.#delivered, possibleDuplicates: this.#possibleDuplicates, dropped, refused: this.#refused };
  }

  /** Messages held in memory, and their bytes. */
  get window(): number {
    return this.#window.size;
  }

  get windowBytes(): number {
    return this.#windowBytes;
  }

  /** Is this item one of the durable outbox's? */
  owns(item: Item): boolean {
    return item instanceof DurableItem && item.feed === this;
  }

  /** Nothing to send: the window is empty and nothing waits on disk or on its way there (or the store is gone). */
  get idle(): boolean {
    if (this.#broken || this.#closed) return true;
    return this.#window.size === 0 && this.#caughtUp && this.#direct === 0 && this.#spilling === 0 && !this.#filling;
  }

  /**
   * Keep a QoS 1 or 2 message: `accepted` resolves once it is on disk. With `track`, `delivered` settles with its
   * fate too: resolved on PUBACK, rejected with `PublishRejected`, `OutboxDropped`, or `ConnectionClosed` (it stays
   * in the store); handled either way, since the events report every fate.
   */
  publish(topic: string, payload: Buffer, options: IClientPublishOptions, id: string | undefined, track: boolean): { accepted: Promise<PublishAccepted>; delivered: Promise<void> | undefined } {
    const bytes = Buffer.byteLength(topic) + payload.length;
    const direct =
      this.#online && this.#caughtUp && this.#window.size + this.#direct < this.#maxWindow && (this.#window.size + this.#direct === 0 || this.#windowBytes + this.#directBytes + bytes <= this.#maxBytes);
    const epoch = this.#epoch;
    if (direct) {
      this.#direct += 1;
      this.#directBytes += bytes;
    } else {
      this.#caughtUp = false;
      this.#spills += 1;
      this.#spilling += 1;
    }
    // Before acceptance a rejection is the caller's to handle (nothing was kept); after it, the events report the fate.
    const waiter = track ? new Waiter() : undefined;
    const message: { -readonly [K in keyof OutboxMessageInput]: OutboxMessageInput[K] } & { payload: Buffer } = { topic, payload, qos: options.qos as 1 | 2, retain: options.retain === true };
    if (options.properties) message.properties = options.properties;
    if (id !== undefined) message.id = id;
    const appending = new Appending(this, topic, payload, options, id, bytes, direct, epoch, waiter);
    const accepted = new Promise<PublishAccepted & { seq: number }>((resolve, reject) => {
      appending.resolve = resolve;
      appending.reject = reject;
    });
    try {
      // No promise per message inside: the store tells the feed's sink once its batch is written.
      this.#store.appendTo(this.#clientId, message, direct, DurableFeed.#sink, appending);
    } catch (error) {
      // Refused before anything was queued: heard as a refusal of the write would be (after this turn).
      queueMicrotask(() => this.#onRefused(appending, error));
    }
    return { accepted, delivered: waiter?.promise };
  }

  /** Where the store reports an append of any feed (the token is its {@link Appending}). */
  static readonly #sink: AppendSink = {
    accepted: (token, seq) => (token as Appending).feed.#onAccepted(token as Appending, seq),
    refused: (token, error) => (token as Appending).feed.#onRefused(token as Appending, error),
  };

  #onAccepted(a: Appending, seq: number): void {
    const { waiter, direct, id } = a;
    if (waiter) waiter.accepted = true;
    if (direct) {
      this.#direct -= 1;
      this.#directBytes -= a.bytes;
    } else this.#spilling -= 1;
    this.#accepted += 1;
    if (waiter) {
      if (this.#closed) waiter.reject(this.#keptError(seq, undefined));
      else (this.#waiters ??= new Map()).set(seq, waiter);
    }
    // Accepted in order (seqs are told in order): it joins the window unless the session it was meant for ended.
    if (direct && a.epoch === this.#epoch && !this.#closed) {
      this.#cursor = Math.max(this.#cursor, seq);
      this.#enter(this.#item(seq, a.topic, a.payload, id, a.options, false));
    }
    // The report only for a listener: this runs once per message.
    if (this.#host.events.listenerCount('accepted') > 0) this.#host.events.emit('accepted', id === undefined ? { clientId: this.#clientId, seq } : { clientId: this.#clientId, seq, id });
    this.#progress();
    a.resolve(id === undefined ? { clientId: this.#clientId, seq, durable: true } : { clientId: this.#clientId, seq, id, durable: true });
  }

  #onRefused(a: Appending, error: unknown): void {
    if (a.direct) {
      this.#direct -= 1;
      this.#directBytes -= a.bytes;
    } else this.#spilling -= 1;
    this.#refused += 1;
    a.waiter?.reject(error);
    this.#progress();
    a.reject(error);
  }

  /** @internal {@link enqueueDurable} for the device of this feed: checked by the connection's rules, then kept. */
  enqueue(topic: string, message: string | Buffer | Uint8Array, qos: 1 | 2, id: string | undefined): Promise<PublishAccepted & { seq: number }> {
    // Not an async function: a gateway hands over every message here, and each async layer costs a promise and a frame.
    let checked: ReturnType<FeedHost['check']>;
    try {
      checked = this.#host.check(topic, message, qos);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.publish(checked.topic, checked.payload, checked.options, id, false).accepted as Promise<PublishAccepted & { seq: number }>;
  }

  /** A session is up: read what waits on disk. */
  sessionUp(): void {
    this.#online = true;
    this.#maybeFill();
  }

  /**
   * The session ended (after the outbox struck what was in flight): let the window go, keeping the strikes, and read
   * again from the oldest message on the next session. The store may expire or drop them meanwhile.
   */
  sessionDown(): void {
    if (!this.#online) return;
    this.#online = false;
    this.#epoch += 1;
    const parked = this.#host.removeWhere((item) => this.owns(item));
    for (const item of parked) if (item.strikes > 0 && !(item as DurableItem).dropped) (this.#strikes ??= new Map()).set((item as DurableItem).stored, item.strikes);
    this.#flushAcks();
    this.#caughtUp = this.#caughtUp && this.#window.size === 0 && this.#direct === 0;
    this.#window = NO_ITEMS;
    this.#windowBytes = 0;
    this.#cursor = 0;
    this.#store.clearSending(this.#clientId);
  }

  /**
   * The connection closes: every `publish()` caller still waiting hears `ConnectionClosed` (its message stays in the
   * store, for the next connection of this device on it); nothing is removed from the store.
   */
  close(cause: ApsaraMqDeviceError | undefined): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#online = false;
    clearTimeout(this.#retry);
    if (this.#waiters) for (const [seq, waiter] of this.#waiters) waiter.reject(this.#keptError(seq, cause));
    this.#waiters = undefined;
    this.#window = NO_ITEMS;
    this.#windowBytes = 0;
    this.#strikes = undefined;
    this.#store.clearSending(this.#clientId);
    const router = routers.get(this.#store);
    if (router?.feeds.get(this.#clientId) === this) {
      router.feeds.delete(this.#clientId);
      if (router.feeds.size === 0) {
        this.#store.off('drop', router.listener);
        routers.delete(this.#store);
      }
    }
  }

  /** The store removed one of this device's messages undelivered (routed by ClientId). */
  onDrop(drop: OutboxDrop): void {
    // A refusal by the broker is reported where it was decided, with the broker's error.
    if (drop.reason === 'rejected' || this.#closed) return;
    this.#countDrop(drop.reason);
    this.#droppedMeanwhile?.add(drop.seq);
    this.#strikes?.delete(drop.seq);
    const item = this.#window.get(drop.seq);
    if (item) {
      if (this.#host.remove(item)) this.#leave(item);
      else item.dropped = true;
    }
    const waiter = this.#waiters?.get(drop.seq);
    if (waiter) {
      this.#waiters?.delete(drop.seq);
      waiter.reject(
        new OutboxError('OutboxDropped', `The message of ${this.#clientId} (seq ${drop.seq}${drop.id === undefined ? '' : `, id ${JSON.stringify(drop.id)}`}) was removed from the outbox undelivered: ${DROP_WORDS[drop.reason]}`, this.#store.dir),
      );
    }
    const report = { clientId: this.#clientId, seq: drop.seq, reason: drop.reason };
    this.#host.events.emit('dropped', drop.id === undefined ? report : { ...report, id: drop.id });
    this.#progress();
  }

  #countDrop(reason: OutboxDropReason): void {
    (this.#dropped ??= { ...NO_DROPS })[reason] += 1;
  }

  #keptError(seq: number, cause: ApsaraMqDeviceError | undefined): ConnectionClosedError {
    return new ConnectionClosedError(
      `The connection of ${this.#clientId} closed before the broker acknowledged message seq ${seq}: it stays in the durable outbox in ${this.#store.dir} and is sent by the next connection of ${this.#clientId} on it`,
      cause,
    );
  }

  #item(seq: number, topic: string, payload: Buffer, id: string | undefined, options: IClientPublishOptions, possibleDuplicate: boolean): DurableItem {
    const item = new DurableItem(this, this.#host.nextSeq(), seq, topic, payload, id, options, possibleDuplicate);
    if (this.#strikes !== undefined && this.#strikes.size > 0) {
      const strikes = this.#strikes.get(seq);
      if (strikes !== undefined) item.strikes = strikes;
    }
    return item;
  }

  #enter(item: DurableItem): void {
    if (this.#window === NO_ITEMS) this.#window = new Map();
    this.#window.set(item.stored, item);
    this.#windowBytes += item.bytes;
    this.#host.add(item);
  }

  #leave(item: DurableItem): void {
    if (this.#window.get(item.stored) !== item) return;
    this.#window.delete(item.stored);
    // Empty: let go (a device between its messages keeps no map; a gateway holds thousands of them).
    if (this.#window.size === 0) this.#window = NO_ITEMS;
    this.#windowBytes -= item.bytes;
    if (this.#strikes !== undefined && this.#strikes.size > 0) this.#strikes.delete(item.stored);
  }

  /**
   * @internal The broker answered (or the outbox failed it after its strikes): report it, and remove it from the
   * store.
   */
  settled(item: DurableItem, result: Settled): void {
    this.#leave(item);
    if (item.dropped || this.#closed) return;
    const seq = item.stored;
    let waiter: Waiter | undefined;
    if (this.#waiters !== undefined && this.#waiters.size > 0) {
      waiter = this.#waiters.get(seq);
      this.#waiters.delete(seq);
    }
    // The removal is the store's to make durable; if it fails, the message is sent again later (a possible duplicate).
    if (result.ok) {
      this.#ack(seq);
      this.#delivered += 1;
      if (item.possibleDuplicate) this.#possibleDuplicates += 1;
      if (this.#host.events.listenerCount('delivered') > 0) {
        const report = { clientId: this.#clientId, seq, possibleDuplicate: item.possibleDuplicate };
        this.#host.events.emit('delivered', item.id === undefined ? report : { ...report, id: item.id });
      }
      waiter?.resolve();
    } else {
      const report: OutboxReport = item.id === undefined ? { clientId: this.#clientId, seq } : { clientId: this.#clientId, seq, id: item.id };
      this.#store.reject(this.#clientId, seq).catch(noop);
      this.#countDrop('rejected');
      this.#host.events.emit('dropped', { ...report, reason: 'rejected', error: result.error });
      waiter?.reject(result.error);
    }
    this.#maybeFill();
  }

  /** Acknowledged: removed from the store with the others of this turn (one call for all of a socket read's PUBACKs). */
  #ack(seq: number): void {
    this.#acks.push(seq);
    if (this.#acks.length === 1) queueMicrotask(() => this.#flushAcks());
  }

  #flushAcks(): void {
    if (this.#acks.length === 0) return;
    const seqs = this.#acks;
    this.#acks = [];
    this.#store.ackAll(this.#clientId, seqs).catch(noop);
  }

  /** Read more if there is room, and wake the connection once for everything that happened in this turn. */
  #progress(): void {
    this.#maybeFill();
    if (this.#waking) return;
    this.#waking = true;
    queueMicrotask(() => {
      this.#waking = false;
      this.#host.wake();
    });
  }

  /** Read the next page when there is room for one (or the window is empty) and something may wait on disk. */
  #maybeFill(): void {
    if (this.#filling) {
      // Something changed while a read runs (a spill written, room made): look again when it is done.
      this.#refill = true;
      return;
    }
    if (this.#caughtUp || !this.#online || this.#closed || this.#broken || this.#direct > 0 || this.#retry) return;
    const room = this.#maxWindow - this.#window.size;
    if (room <= 0 || (this.#window.size > 0 && room < this.#maxWindow / 2)) return;
    void this.#fill(room);
  }

  async #fill(room: number): Promise<void> {
    this.#filling = true;
    this.#refill = false;
    const epoch = this.#epoch;
    const dropped = new Set<number>();
    this.#droppedMeanwhile = dropped;
    let more = false;
    let spills = this.#spills;
    let spilling = this.#spilling;
    try {
      if (this.#before) {
        await this.#before;
        this.#before = undefined;
      }
      // The read sees what was written before it starts: a spill still being written then, or made since, may be
      // missing from it, so the read cannot say nothing waits beyond it.
      spills = this.#spills;
      spilling = this.#spilling;
      const page = await this.#store.pending(this.#clientId, { after: this.#cursor, limit: room });
      if (epoch !== this.#epoch || this.#closed) return;
      let take = 0;
      for (let bytes = this.#windowBytes; take < page.length; take++) {
        const message = page[take] as OutboxMessage;
        bytes += Buffer.byteLength(message.topic) + message.payload.length;
        if (bytes > this.#maxBytes && (take > 0 || this.#window.size > 0)) break;
      }
      const last = page[take - 1];
      if (last) {
        // In flight from here: recorded (durably) before anything is sent, and no longer dropped or expired; and every
        // drop the store was making meanwhile has been heard (the flush is ordered after it).
        await Promise.all([this.#store.markSending(this.#clientId, last.seq), this.#store.flush().catch(noop)]);
        if (epoch !== this.#epoch || this.#closed) return;
        for (let i = 0; i < take; i++) {
          const m = page[i] as OutboxMessage;
          if (dropped.has(m.seq)) continue;
          const options: IClientPublishOptions = { qos: m.qos, retain: m.retain, ...(m.properties ? { properties: m.properties as IClientPublishOptions['properties'] } : {}) };
          this.#enter(this.#item(m.seq, m.topic, m.payload, m.id, options, m.sentBefore));
        }
        this.#cursor = last.seq;
        more = true;
      }
      if (take === page.length && page.length < room && spilling === 0 && spills === this.#spills) this.#caughtUp = true;
    } catch (error) {
      if (this.#closed) return;
      const failure = toApsaraMqDeviceError(error);
      this.#host.emitError(failure);
      if (isApsaraMqDeviceError(failure, 'OutboxClosed')) this.#broken = true;
      else {
        this.#retry = setTimeout(() => {
          this.#retry = undefined;
          this.#maybeFill();
        }, RETRY_READ_MS);
        this.#retry.unref();
      }
    } finally {
      this.#filling = false;
      this.#droppedMeanwhile = undefined;
      // Read on while reads find something, and after a session ended mid-read (the next one may be up already, and its
      // sessionUp found a read running). A read that found nothing waits for what it waits for: a spill written, an
      // answer that makes room; reading again at once would spin (an empty device's read does no I/O).
      const again = more || epoch !== this.#epoch || this.#refill;
      this.#refill = false;
      if (!this.#closed && again) this.#progress();
      else if (!this.#closed) this.#host.wake();
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

/** The work of the device entry's `enqueueDurable` (enqueue.ts loads this module on its first call). */
export function enqueueDurable(
  store: OutboxStore,
  clientId: string,
  topic: string,
  message: string | Buffer | Uint8Array,
  options: EnqueueOptions = {},
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
  if (feed) return feed.enqueue(topic, message, qos, id);
  return enqueueStored(store, clientId, topic, message, qos, id, options);
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

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
 * loads the engine. The read path is durable-read.ts (the feed's base class), the items in memory durable-items.ts,
 * the routing of a device's messages to its feed and `enqueueDurable` durable-enqueue.ts: loaded with this module,
 * which connectDevice loads only for a connection with option `outbox`, and enqueue.ts on its first call.
 */
import type { IClientPublishOptions } from 'mqtt';
import { type ApsaraMqDeviceError, ConnectionClosedError, OutboxError } from '../errors.js';
import type { OutboxDrop, OutboxDropReason, OutboxMessage, OutboxMessageInput } from '../outbox/store.js';
import type { AppendSink } from '../outbox/wal.js';
import type { OutboxReport, PublishAccepted } from './connection-types.js';
import { type AcceptedHook, attachFeed, detachFeed } from './durable-enqueue.js';
import { Appending, DurableItem, Waiter, noop } from './durable-items.js';
import { FeedReader } from './durable-read.js';
import { wakeAtEndOfTurn } from './durable-wake.js';
import type { DurableOutboxStats, DurableStore, FeedHost } from './durable-types.js';
import type { Item, Settled } from './outbox-items.js';

export type { DurableOutboxStats, DurableStore, FeedHost } from './durable-types.js';
export { type AcceptedHook, type EnqueueOptions, enqueueDurable, enqueueHeard } from './durable-enqueue.js';

/**
 * The most messages of a durable outbox a connection holds in memory (in flight and read ahead), whatever
 * `maxQueuedMessages` says: enough to keep a fast link busy, small next to what waits on disk.
 */
export const DURABLE_WINDOW = 4096;

/**
 * The window of a feed with nothing in memory: shared and never written (a feed makes its own on its first message,
 * and lets it go when a session ends): a gateway holds thousands of feeds, most of them idle at any moment.
 */
const NO_ITEMS: Map<number, DurableItem> = new Map();

/** The drop counters of a feed that dropped nothing yet (copied when the first drop is counted). */
const NO_DROPS: Readonly<Record<OutboxDropReason, number>> = Object.freeze({ full: 0, expired: 0, corrupt: 0, rejected: 0 });

const DROP_WORDS: Readonly<Record<OutboxDropReason, string>> = {
  expired: 'its time to live (ttlMs) passed',
  full: "the outbox was full and whenFull is 'drop-oldest'",
  corrupt: 'its record was damaged on disk',
  rejected: 'the broker refused it',
};

/** The durable outbox of one connection. */
export class DurableFeed extends FeedReader {
  readonly #maxWindow: number;
  readonly #maxBytes: number;
  /**
   * The messages in memory (in the connection's outbox, queued or in flight): the only one in {@link #one} (a
   * gateway's device sends one at a time: no map made and let go per message), else by store seq here.
   */
  #window: Map<number, DurableItem> = NO_ITEMS;
  #one: DurableItem | undefined;
  #windowBytes = 0;
  /** Strikes of messages that were in flight when a session ended, by store seq, until they are read again (made on first use, as #waiters). */
  #strikes: Map<number, number> | undefined;
  /** Delivery promises of `publish()` callers whose message is not in the window, by store seq (in the window: on its item). */
  #waiters: Map<number, Waiter> | undefined;
  /** Appends going straight into the window, not resolved yet, and their bytes. */
  #direct = 0;
  #directBytes = 0;
  #online = false;
  /** Counts sessions: an answer or an acceptance of an earlier one finds a window that was let go. */
  #epoch = 0;
  #closed = false;
  /** A wake of the connection is queued for the end of this turn. */
  #waking = false;
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
    super(store, clientId, host);
    this.#maxWindow = Math.min(DURABLE_WINDOW, limits.maxMessages);
    this.#maxBytes = limits.maxBytes;
    attachFeed(store, clientId, this);
    // What was appended for this device before (enqueueDurable without a connection) may not be written yet, so not
    // counted: the first read waits for the store to have written it, and decides.
    this.readAfter(store.flush().catch(noop));
  }

  get stats(): DurableOutboxStats {
    const { messages, bytes } = this.store.device(this.clientId);
    const dropped = { ...(this.#dropped ?? NO_DROPS) };
    return { stored: messages, storedBytes: bytes, window: this.#size, accepted: this.#accepted, delivered: this.#delivered, possibleDuplicates: this.#possibleDuplicates, dropped, refused: this.#refused };
  }

  /** Messages held in memory, and their bytes. */
  get window(): number {
    return this.#size;
  }

  get #size(): number {
    return this.#one === undefined ? this.#window.size : 1;
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
    if (this.broken || this.#closed) return true;
    return this.#size === 0 && this.#direct === 0 && !this.diskBusy;
  }

  /**
   * Keep a QoS 1 or 2 message: `accepted` resolves once it is on disk. With `track`, `delivered` settles with its
   * fate too: resolved on PUBACK, rejected with `PublishRejected`, `OutboxDropped`, or `ConnectionClosed` (it stays
   * in the store); handled either way, since the events report every fate.
   */
  publish(topic: string, payload: Buffer, options: IClientPublishOptions, id: string | undefined, track: boolean, onAccepted?: AcceptedHook): { accepted: Promise<PublishAccepted>; delivered: Promise<void> | undefined } {
    const bytes = Buffer.byteLength(topic) + payload.length;
    const held = this.#size + this.#direct;
    const direct = this.#online && this.caughtUp && held < this.#maxWindow && (held === 0 || this.#windowBytes + this.#directBytes + bytes <= this.#maxBytes);
    const epoch = this.#epoch;
    if (direct) {
      this.#direct += 1;
      this.#directBytes += bytes;
    } else this.spillStarted();
    // Before acceptance a rejection is the caller's to handle (nothing was kept); after it, the events report the fate.
    const waiter = track ? new Waiter() : undefined;
    const appending = new Appending(this, topic, payload, options, id, bytes, direct, epoch, waiter, onAccepted);
    const accepted = new Promise<PublishAccepted & { seq: number }>((resolve, reject) => {
      appending.resolve = resolve;
      appending.reject = reject;
    });
    try {
      // No promise per message inside: the store tells the feed's sink once its batch is written. Checked by the
      // connection already (the service's rules): not checked again.
      this.store.appendChecked(this.clientId, topic, payload, options.qos as 1 | 2, options.retain === true, options.properties as OutboxMessageInput['properties'], id, direct, DurableFeed.#sink, appending);
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
    } else this.spillEnded();
    this.#accepted += 1;
    // Accepted in order (seqs are told in order): it joins the window unless the session it was meant for ended.
    if (direct && a.epoch === this.#epoch && !this.#closed) {
      this.advance(seq);
      const item = this.#item(seq, a.topic, a.payload, id, a.options, false);
      item.waiter = waiter;
      this.#enter(item);
    } else if (waiter) {
      if (this.#closed) waiter.reject(this.#keptError(seq, undefined));
      else (this.#waiters ??= new Map()).set(seq, waiter);
    }
    // The report only for a listener: this runs once per message. A listener that throws fails this message's
    // `accepted` with its error (the message is kept and sent all the same), and nothing else.
    if (this.host.events.listenerCount('accepted') > 0) {
      try {
        this.host.events.emit('accepted', id === undefined ? { clientId: this.clientId, seq } : { clientId: this.clientId, seq, id });
      } catch (error) {
        this.progress();
        a.reject(error);
        return;
      }
    }
    this.progress();
    const result = id === undefined ? { clientId: this.clientId, seq, durable: true as const } : { clientId: this.clientId, seq, id, durable: true as const };
    a.onAccepted?.(result);
    a.resolve(result);
  }

  #onRefused(a: Appending, error: unknown): void {
    if (a.direct) {
      this.#direct -= 1;
      this.#directBytes -= a.bytes;
    } else this.spillEnded();
    this.#refused += 1;
    a.waiter?.reject(error);
    this.progress();
    a.reject(error);
  }

  /** @internal {@link enqueueDurable} for the device of this feed: checked by the connection's rules, then kept. */
  enqueue(topic: string, message: string | Buffer | Uint8Array, qos: 1 | 2, id: string | undefined, onAccepted: AcceptedHook | undefined): Promise<PublishAccepted & { seq: number }> {
    // Not an async function: a gateway hands over every message here, and each async layer costs a promise and a frame.
    let checked: ReturnType<FeedHost['check']>;
    try {
      checked = this.host.check(topic, message, qos);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.publish(checked.topic, checked.payload, checked.options, id, false, onAccepted).accepted as Promise<PublishAccepted & { seq: number }>;
  }

  /** A session is up: read what waits on disk. */
  sessionUp(): void {
    this.#online = true;
    this.maybeFill();
  }

  /**
   * The session ended (after the outbox struck what was in flight): let the window go, keeping the strikes, and read
   * again from the oldest message on the next session. The store may expire or drop them meanwhile.
   */
  sessionDown(): void {
    if (!this.#online) return;
    this.#online = false;
    this.#epoch += 1;
    const parked = this.host.removeWhere((item) => this.owns(item));
    for (const item of parked) if (item.strikes > 0 && !(item as DurableItem).dropped) (this.#strikes ??= new Map()).set((item as DurableItem).stored, item.strikes);
    // Their callers wait on: the messages are read again, as new items, by the next session.
    this.#eachInWindow((item) => {
      if (item.waiter) (this.#waiters ??= new Map()).set(item.stored, item.waiter);
      item.waiter = undefined;
    });
    this.rewind(this.#size === 0 && this.#direct === 0);
    this.#window = NO_ITEMS;
    this.#one = undefined;
    this.#windowBytes = 0;
    this.store.clearSending(this.clientId);
  }

  /**
   * The connection closes: every `publish()` caller still waiting hears `ConnectionClosed` (its message stays in the
   * store, for the next connection of this device on it); nothing is removed from the store.
   */
  close(cause: ApsaraMqDeviceError | undefined): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#online = false;
    this.stopReading();
    const waiting: Array<[number, Waiter]> = this.#waiters ? [...this.#waiters] : [];
    this.#eachInWindow((item) => {
      if (item.waiter) waiting.push([item.stored, item.waiter]);
      item.waiter = undefined;
    });
    for (const [seq, waiter] of waiting.sort((x, y) => x[0] - y[0])) waiter.reject(this.#keptError(seq, cause));
    this.#waiters = undefined;
    this.#window = NO_ITEMS;
    this.#one = undefined;
    this.#windowBytes = 0;
    this.#strikes = undefined;
    this.store.clearSending(this.clientId);
    detachFeed(this.store, this.clientId, this);
  }

  /** The store removed one of this device's messages undelivered (routed by ClientId). */
  onDrop(drop: OutboxDrop): void {
    // A refusal by the broker is reported where it was decided, with the broker's error.
    if (drop.reason === 'rejected' || this.#closed) return;
    this.#countDrop(drop.reason);
    this.heardDrop(drop.seq);
    this.#strikes?.delete(drop.seq);
    const item = this.#inWindow(drop.seq);
    let waiter: Waiter | undefined;
    if (item) {
      waiter = item.waiter;
      item.waiter = undefined;
      if (this.host.remove(item)) this.#leave(item);
      else item.dropped = true;
    }
    if (this.#waiters?.has(drop.seq)) {
      waiter = this.#waiters.get(drop.seq);
      this.#waiters.delete(drop.seq);
    }
    if (waiter) {
      waiter.reject(
        new OutboxError('OutboxDropped', `The message of ${this.clientId} (seq ${drop.seq}${drop.id === undefined ? '' : `, id ${JSON.stringify(drop.id)}`}) was removed from the outbox undelivered: ${DROP_WORDS[drop.reason]}`, this.store.dir),
      );
    }
    const report = { clientId: this.clientId, seq: drop.seq, reason: drop.reason };
    this.host.events.emit('dropped', drop.id === undefined ? report : { ...report, id: drop.id });
    this.progress();
  }

  #countDrop(reason: OutboxDropReason): void {
    (this.#dropped ??= { ...NO_DROPS })[reason] += 1;
  }

  #keptError(seq: number, cause: ApsaraMqDeviceError | undefined): ConnectionClosedError {
    return new ConnectionClosedError(
      `The connection of ${this.clientId} closed before the broker acknowledged message seq ${seq}: it stays in the durable outbox in ${this.store.dir} and is sent by the next connection of ${this.clientId} on it`,
      cause,
    );
  }

  #item(seq: number, topic: string, payload: Buffer, id: string | undefined, options: IClientPublishOptions, possibleDuplicate: boolean): DurableItem {
    const item = new DurableItem(this, this.host.nextSeq(), seq, topic, payload, id, options, possibleDuplicate);
    if (this.#strikes !== undefined && this.#strikes.size > 0) {
      const strikes = this.#strikes.get(seq);
      if (strikes !== undefined) item.strikes = strikes;
    }
    return item;
  }

  #enter(item: DurableItem): void {
    const one = this.#one;
    if (one !== undefined) {
      this.#window = new Map([
        [one.stored, one],
        [item.stored, item],
      ]);
      this.#one = undefined;
    } else if (this.#window.size === 0) this.#one = item;
    else this.#window.set(item.stored, item);
    this.#windowBytes += item.bytes;
    this.host.add(item);
  }

  #inWindow(seq: number): DurableItem | undefined {
    const one = this.#one;
    if (one !== undefined) return one.stored === seq ? one : undefined;
    return this.#window.size === 0 ? undefined : this.#window.get(seq);
  }

  #eachInWindow(fn: (item: DurableItem) => void): void {
    if (this.#one !== undefined) fn(this.#one);
    for (const item of this.#window.values()) fn(item);
  }

  #leave(item: DurableItem): void {
    if (this.#one === item) this.#one = undefined;
    else {
      if (this.#window.get(item.stored) !== item) return;
      this.#window.delete(item.stored);
      // Empty: let go (a device between its messages keeps no map; a gateway holds thousands of them).
      if (this.#window.size === 0) this.#window = NO_ITEMS;
    }
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
    let waiter = item.waiter;
    item.waiter = undefined;
    if (waiter === undefined && this.#waiters !== undefined && this.#waiters.size > 0) {
      waiter = this.#waiters.get(seq);
      this.#waiters.delete(seq);
    }
    // The removal is the store's to make durable; if it fails, the message is sent again later (a possible duplicate).
    if (result.ok) {
      // Removed from the store at once (in memory while it is in the hot log; its record goes with the next write).
      this.store.ackOneChecked(this.clientId, seq);
      this.#delivered += 1;
      if (item.possibleDuplicate) this.#possibleDuplicates += 1;
      if (this.host.events.listenerCount('delivered') > 0) {
        const report = { clientId: this.clientId, seq, possibleDuplicate: item.possibleDuplicate };
        this.host.events.emit('delivered', item.id === undefined ? report : { ...report, id: item.id });
      }
      waiter?.resolve();
    } else {
      const report: OutboxReport = item.id === undefined ? { clientId: this.clientId, seq } : { clientId: this.clientId, seq, id: item.id };
      this.store.reject(this.clientId, seq).catch(noop);
      this.#countDrop('rejected');
      this.host.events.emit('dropped', { ...report, reason: 'rejected', error: result.error });
      waiter?.reject(result.error);
    }
    this.maybeFill();
  }

  /** Read more if there is room, and wake the connection once for everything that happened in this turn. */
  protected progress(): void {
    this.maybeFill();
    if (this.#waking) return;
    this.#waking = true;
    wakeAtEndOfTurn(this);
  }

  /** @internal The end of the turn in which {@link progress} asked (durable-wake.ts). */
  woken(): void {
    this.#waking = false;
    this.host.wake();
  }

  // ---- what the read path (durable-read.ts) asks of the feed

  protected get session(): number {
    return this.#epoch;
  }

  protected get closed(): boolean {
    return this.#closed;
  }

  protected readRoom(): number {
    if (!this.#online || this.#closed || this.#direct > 0) return 0;
    const size = this.#size;
    const room = this.#maxWindow - size;
    return room <= 0 || (size > 0 && room < this.#maxWindow / 2) ? 0 : room;
  }

  protected fitting(page: readonly OutboxMessage[]): number {
    let take = 0;
    for (let bytes = this.#windowBytes; take < page.length; take++) {
      const message = page[take] as OutboxMessage;
      bytes += Buffer.byteLength(message.topic) + message.payload.length;
      if (bytes > this.#maxBytes && (take > 0 || this.#size > 0)) break;
    }
    return take;
  }

  protected enterRead(m: OutboxMessage): void {
    const options: IClientPublishOptions = { qos: m.qos, retain: m.retain, ...(m.properties ? { properties: m.properties as IClientPublishOptions['properties'] } : {}) };
    this.#enter(this.#item(m.seq, m.topic, m.payload, m.id, options, m.sentBefore));
  }
}

/**
 * The read path of a durable feed (durable.ts): what waits on disk beyond its window, and the reading of it from the
 * store a page at a time. Before a page read back is sent, its in-flight mark is made durable (one write per page),
 * so that after a crash the messages that may have reached the broker are counted as possible duplicates. A read
 * that fails is tried again after {@link RETRY_READ_MS}; a store closed under the connection stops the reading.
 *
 * {@link FeedReader} is the base class of `DurableFeed`, not an object of its own (a gateway holds thousands of
 * feeds): it keeps the read's state private, and asks the feed, through the abstract methods, what only the feed
 * knows: its session, its window and its room.
 */
import { isApsaraMqDeviceError, toApsaraMqDeviceError } from '../errors.js';
import type { OutboxMessage } from '../outbox/store.js';
import { noop } from './durable-items.js';
import type { DurableStore, FeedHost } from './durable-types.js';

/** After a failed read of the store, the next try waits this long. */
const RETRY_READ_MS = 1000;

/** What waits on disk of one device, and the reading of it into the window of its feed. */
export abstract class FeedReader {
  readonly #store: DurableStore;
  readonly #clientId: string;
  readonly #host: FeedHost;
  /** The highest seq read into the window (or put there when accepted); the next read starts after it. */
  #cursor = 0;
  /** Nothing of this device waits on disk beyond the window: new messages may go straight into it. */
  #caughtUp = false;
  /** Appends spilled to disk not resolved yet; and how many were ever made (a read that overlapped one is not the last). */
  #spilling = 0;
  #spills = 0;
  #filling = false;
  /** Asked to read while a read ran: read again after it. */
  #refill = false;
  /** Seqs dropped by the store while a page was being read (a read may hold them). */
  #droppedMeanwhile: Set<number> | undefined;
  #retry: NodeJS.Timeout | undefined;
  /** The store was closed under the connection: nothing more is read. */
  #broken = false;
  /** Everything appended before this feed existed is written (the first read waits for it). */
  #before: Promise<void> | undefined;

  constructor(store: DurableStore, clientId: string, host: FeedHost) {
    this.#store = store;
    this.#clientId = clientId;
    this.#host = host;
  }

  protected get store(): DurableStore {
    return this.#store;
  }

  protected get clientId(): string {
    return this.#clientId;
  }

  protected get host(): FeedHost {
    return this.#host;
  }

  // ---- what the feed answers

  /** The session now: a read that began in another one is stale. */
  protected abstract get session(): number;
  protected abstract get closed(): boolean;
  /** How many messages the next read may bring now: 0 for none (offline, closed, an append straight into the window under way, too little room). */
  protected abstract readRoom(): number;
  /** How many of `page`, from its start, fit in the window's bytes (at least one into an empty window). */
  protected abstract fitting(page: readonly OutboxMessage[]): number;
  /** A message read back, marked in flight: into the window. */
  protected abstract enterRead(message: OutboxMessage): void;
  /** Read more if there is room, and wake the connection once for everything that happened in this turn. */
  protected abstract progress(): void;

  // ---- what the feed asks

  /** The first read waits for `written`: what was appended for this device before the feed existed, now on disk. */
  protected readAfter(written: Promise<void>): void {
    this.#before = written;
  }

  protected get caughtUp(): boolean {
    return this.#caughtUp;
  }

  /** Something waits on disk or on its way there, or a read runs. */
  protected get diskBusy(): boolean {
    return !this.#caughtUp || this.#spilling > 0 || this.#filling;
  }

  protected get broken(): boolean {
    return this.#broken;
  }

  /** A message is being written to disk only (spilled), to be read back in its turn. */
  protected spillStarted(): void {
    this.#caughtUp = false;
    this.#spills += 1;
    this.#spilling += 1;
  }

  protected spillEnded(): void {
    this.#spilling -= 1;
  }

  /** A message went straight into the window: the next read starts after it. */
  protected advance(seq: number): void {
    this.#cursor = Math.max(this.#cursor, seq);
  }

  /** The window was let go: the next read starts from the device's oldest message, and caught up only if `empty`. */
  protected rewind(empty: boolean): void {
    this.#caughtUp = this.#caughtUp && empty;
    this.#cursor = 0;
  }

  /** The store dropped `seq`: a read under way must not put it in the window. */
  protected heardDrop(seq: number): void {
    this.#droppedMeanwhile?.add(seq);
  }

  protected stopReading(): void {
    clearTimeout(this.#retry);
  }

  /** Read the next page when there is room for one (or the window is empty) and something may wait on disk. */
  protected maybeFill(): void {
    if (this.#filling) {
      // Something changed while a read runs (a spill written, room made): look again when it is done.
      this.#refill = true;
      return;
    }
    if (this.#caughtUp || this.#broken || this.#retry) return;
    const room = this.readRoom();
    if (room > 0) void this.#fill(room);
  }

  async #fill(room: number): Promise<void> {
    this.#filling = true;
    this.#refill = false;
    const epoch = this.session;
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
      if (epoch !== this.session || this.closed) return;
      const take = this.fitting(page);
      const last = page[take - 1];
      if (last) {
        // In flight from here: recorded (durably) before anything is sent, and no longer dropped or expired; and every
        // drop the store was making meanwhile has been heard (the flush is ordered after it).
        await Promise.all([this.#store.markSending(this.#clientId, last.seq), this.#store.flush().catch(noop)]);
        if (epoch !== this.session || this.closed) return;
        for (let i = 0; i < take; i++) {
          const m = page[i] as OutboxMessage;
          if (!dropped.has(m.seq)) this.enterRead(m);
        }
        this.#cursor = last.seq;
        more = true;
      }
      if (take === page.length && page.length < room && spilling === 0 && spills === this.#spills) this.#caughtUp = true;
    } catch (error) {
      if (this.closed) return;
      const failure = toApsaraMqDeviceError(error);
      this.#host.emitError(failure);
      if (isApsaraMqDeviceError(failure, 'OutboxClosed')) this.#broken = true;
      else {
        this.#retry = setTimeout(() => {
          this.#retry = undefined;
          this.maybeFill();
        }, RETRY_READ_MS);
        this.#retry.unref();
      }
    } finally {
      this.#filling = false;
      this.#droppedMeanwhile = undefined;
      // Read on while reads find something, and after a session ended mid-read (the next one may be up already, and its
      // sessionUp found a read running). A read that found nothing waits for what it waits for: a spill written, an
      // answer that makes room; reading again at once would spin (an empty device's read does no I/O).
      const again = more || epoch !== this.session || this.#refill;
      this.#refill = false;
      if (!this.closed && again) this.progress();
      else if (!this.closed) this.#host.wake();
    }
  }
}

/**
 * The durable outbox: one store per process, on one directory, for any number of devices. A message is *accepted*
 * when it is on disk (fsync'd), and stays until the caller says it was *delivered* (`ack`), a bound drops it, or its
 * time to live ends; after a crash, a kill -9 or a power cut, reopening the directory gives back every accepted
 * message, in order per device.
 *
 * This module is the public class: the calls, their checks, and the per-message paths (append, ack). The rooms behind
 * it: `wal.ts` (the hot log of recent messages, and why), `level.ts` (LevelDB through classic-level, where older
 * messages live, and why), `codec.ts` (keys and records), `state.ts` (what is held, in memory), `batch.ts` (group
 * commit, the hot log's upkeep and recovery from a failed write), `requests.ts` (what the other calls ask of the next
 * batch, and the shutdown), `read.ts` (reads), `bounds.ts` (expiry and the policy when full), `open.ts` (opening,
 * recovery of a torn or damaged store, repair).
 *
 * Durability: appends that arrive while a write runs, or within `groupCommitMs` of an idle store's first one, are
 * written together to the hot log in one durable write (group commit). Removals (ack, drops, expiry) of recent
 * messages are taken at once in memory and their records go with the next write (or alone after 10 ms); those of
 * older messages are LevelDB deletes without an fsync of their own. A removal lost to a power cut only means that
 * message is sent again, counted as a possible duplicate. A message still undelivered when the hot log holds
 * too much (a long outage), or when the store is opened again, moves to LevelDB.
 *
 * Memory: per message, nothing beyond the hot log's live messages (a bound of a few MiB, see wal.ts); per device, a
 * few numbers, among them a lower bound of the time its oldest message was accepted. Expiry and drop-oldest read only
 * the first messages of the devices whose bound says they may hold something old enough: no index by age to keep.
 */
import { EventEmitter } from 'node:events';
import { inspect } from 'node:util';
import { OutboxError } from '../errors.js';
import { messageLayout } from './codec.js';
import { checkClientId, checkLimit, checkMessage, checkSeq, refusal } from './checks.js';
import { readPending } from './read.js';
import { BatchWriter } from './batch.js';
import type { Level, LevelModule } from './level.js';
import type { ResolvedOutboxOptions } from './options.js';
import { markSent, nextBatch, removeLater, removedLater, retried, shutDown, swept } from './requests.js';
import { Holdings } from './state.js';
import type { OutboxMessage, OutboxMessageInput, OutboxRecovery, OutboxStats, OutboxStoreEvents } from './types.js';
import { HotMessage, type AppendSink, type HotLog } from './wal.js';
import { appendRecord } from './wal-format.js';

const ignore = (): void => undefined;

// The class and its shapes, for the modules that name them from here.
export * from './types.js';

/** The sink of {@link OutboxStore.append}: its token is the promise's two functions. */
const PROMISE_SINK: AppendSink = {
  accepted(token, seq, acceptedAt) {
    (token as { resolve(result: { seq: number; acceptedAt: number }): void }).resolve({ seq, acceptedAt });
  },
  refused(token, error) {
    (token as { reject(error: unknown): void }).reject(error);
  },
};

/**
 * A durable outbox on one directory. Open it with {@link openOutboxStore}.
 *
 * Events found while opening (the `OutboxRecovered` warning, messages expired during the outage) are emitted right
 * after `openOutboxStore` resolves, on the next turn of the event loop: attach listeners right after the `await`.
 */
export class OutboxStore extends EventEmitter<OutboxStoreEvents> {
  /** The directory. */
  readonly dir: string;
  #recovery: OutboxRecovery = { uncleanShutdown: false, messages: 0, possibleDuplicates: 0, tornTailBytes: 0, corruptBytes: 0 };
  readonly #options: ResolvedOutboxOptions;
  readonly #holdings = new Holdings();
  readonly #writer: BatchWriter;
  #closed = false;
  #closing: Promise<void> | undefined;
  #sweepTimer: NodeJS.Timeout | undefined;

  /**
   * @internal Use {@link openOutboxStore}. The engine and its database are `unknown` here on purpose: the declarations
   * of the package must not name classic-level's types, or a TypeScript project without that optional peer (a device
   * that never opens an outbox, whose connector still names the store's type) would not compile.
   */
  constructor(options: ResolvedOutboxOptions, engineModule: unknown, db: unknown) {
    super();
    this.dir = options.dir;
    this.#options = options;
    this.#writer = new BatchWriter(options, engineModule as LevelModule, db as Level, this.#holdings, {
      drop: (drop) => this.emit('drop', drop),
      warning: (warning) => this.emit('warning', warning),
    });
  }

  /** What opening found. */
  get recovery(): OutboxRecovery {
    return this.#recovery;
  }

  /** @internal After {@link load}: where seqs go on, what opening found, and the hot log begun. */
  begin(nextSeq: number, recovery: OutboxRecovery, hot: HotLog): void {
    this.#writer.hot = hot;
    this.#holdings.nextSeq = nextSeq;
    this.#recovery = Object.freeze(recovery);
    this.#holdings.counters.possibleDuplicates = recovery.possibleDuplicates;
  }

  /** @internal Per-device state and totals from what is on disk. */
  load(): Promise<{ messages: number; possibleDuplicates: number; maxSeq: number }> {
    return this.#holdings.load(this.#writer.db);
  }

  #closedError(): OutboxError {
    return new OutboxError('OutboxClosed', `The outbox in ${this.dir} is closed`, this.dir);
  }

  /**
   * Keep a message for `clientId` until it is acknowledged. Resolves once it is on disk (fsync'd; appends arriving
   * together share one fsync) with its `seq`, store-wide and increasing.
   *
   * @param options.sending - the caller sends it as soon as this resolves: it is recorded as in flight in the same
   *   write (see {@link markSending}), so a crash after the send counts it as a possible duplicate.
   * @throws OutboxError `OutboxFull` at a bound under `refuse-new` (retryable; not retryable for a message larger
   *   than `maxBytes`), `OutboxDiskFull` / `OutboxIOError` when writing fails (the store keeps serving reads and
   *   acks), `OutboxClosed`; ValidationError for a bad ClientId, topic, payload or qos.
   */
  append(clientId: string, message: OutboxMessageInput, options: { sending?: boolean } = {}): Promise<{ seq: number; acceptedAt: number }> {
    return new Promise((resolve, reject) => {
      try {
        this.appendTo(clientId, message, options.sending === true, PROMISE_SINK, { resolve, reject });
      } catch (error) {
        reject(error);
      }
    });
  }

  /**
   * @internal {@link append} without a promise per message (a connection's durable feed): `sink` hears of the
   * acceptance or the refusal of the write, with `token`, after the batch (as a promise's reaction would). A refusal
   * before anything is queued (a bound under `refuse-new`, a write failure, bad input) is thrown.
   */
  appendTo(clientId: string, message: OutboxMessageInput, sending: boolean, sink: AppendSink, token: unknown): number {
    if (this.#closed) throw this.#closedError();
    checkClientId(clientId, 'append');
    const { payload, qos } = checkMessage(message);
    return this.appendChecked(clientId, message.topic, payload, qos, message.retain === true, message.properties, message.id, sending, sink, token);
  }

  /**
   * @internal {@link appendTo} for a message its caller checked already (a connection's durable feed: the connection
   * checked the topic, payload, QoS and id by the service's rules, stricter than the store's): no message object,
   * nothing checked twice.
   */
  appendChecked(
    clientId: string,
    topic: string,
    payload: Buffer,
    qos: 0 | 1 | 2,
    retain: boolean,
    properties: OutboxMessageInput['properties'],
    id: string | undefined,
    sending: boolean,
    sink: AppendSink,
    token: unknown,
  ): number {
    if (this.#closed) throw this.#closedError();
    const h = this.#holdings;
    const failure = this.#writer.failure;
    if (failure && performance.now() < failure.retryAt) {
      h.counters.refused.diskFull += 1;
      throw failure.error;
    }
    const seq = h.nextSeq;
    const acceptedAt = Math.max(h.lastAcceptedAt, this.#options.clock());
    const stored = { topic, payload, qos, retain, properties, acceptedAt, id };
    const layout = messageLayout(stored);
    // The message's accounting size: its LevelDB key and value.
    const bytes = Buffer.byteLength(clientId) + 10 + layout.length;
    const { maxBytes, maxMessages } = this.#options;
    if (bytes > maxBytes) {
      h.counters.refused.full += 1;
      throw new OutboxError('OutboxFull', `A message of ${bytes} bytes is larger than the outbox's maxBytes (${maxBytes})`, this.dir, { retryable: false });
    }
    if (this.#options.whenFull === 'refuse-new' && (h.messages + h.queuedMessages + 1 > maxMessages || h.bytes + h.queuedBytes + bytes > maxBytes)) {
      h.counters.refused.full += 1;
      throw new OutboxError(
        'OutboxFull',
        `The outbox in ${this.dir} is full (${h.messages + h.queuedMessages} of ${maxMessages} messages, ${h.bytes + h.queuedBytes} of ${maxBytes} bytes)`,
        this.dir,
      );
    }
    // One buffer: the hot log's record, with the LevelDB key and value inside it.
    const record = appendRecord(clientId, seq, stored, layout, sending);
    h.nextSeq += 1;
    h.lastAcceptedAt = acceptedAt;
    h.queuedMessages += 1;
    h.queuedBytes += bytes;
    // Handed out for sending: in flight from now, and so marked in its record (a crash counts it a possible duplicate).
    if (sending) {
      const device = h.device(clientId);
      device.inFlightHigh = Math.max(device.inFlightHigh, seq);
    }
    this.#writer.work.appends.push(new HotMessage(clientId, seq, record, bytes, acceptedAt, id, sending, sink, token));
    this.#writer.schedule();
    return seq;
  }

  /**
   * The message was delivered (PUBACK): remove it. Resolves true once removed (the removal reaches the disk with the
   * next fsync; lost to a power cut, the message is sent again, counted as a possible duplicate), false if it was not
   * here (already acknowledged, dropped or expired).
   */
  ack(clientId: string, seq: number): Promise<boolean> {
    const refused = this.#checkCall('ack', clientId, seq);
    return refused ?? removeLater(this.#writer, this.#holdings, clientId, seq, 'delivered');
  }

  /**
   * Several of one device's messages were delivered: {@link ack} for each, in one call (a connection acknowledges
   * what the PUBACKs of one socket read delivered). Resolves with how many were removed.
   */
  ackAll(clientId: string, seqs: readonly number[]): Promise<number> {
    for (const seq of seqs) {
      const refused = this.#checkCall('ackAll', clientId, seq);
      if (refused) return refused;
    }
    return this.#ackAll(clientId, seqs);
  }

  /**
   * @internal {@link ack} for a connection's durable feed, which needs no answer: its ClientId was checked when it
   * opened, its seq is the store's own. No promise, no array: called once per PUBACK (a gateway's devices have one
   * PUBACK per socket read); a removal that fails is sent again later, as a possible duplicate, as with `ackAll`.
   */
  ackOneChecked(clientId: string, seq: number): void {
    if (this.#closed) return;
    const now = this.#ackNow(clientId, seq);
    if (now === true) this.#writer.scheduleLazy();
    else if (now === false) {
      this.#writer.work.removals.push({ clientId, seq, reason: 'delivered', resolve: ignore });
      this.#writer.schedule();
    }
  }

  /**
   * One delivered message: `true` when it was in the hot log (the common case: delivered soon after acceptance) and is
   * removed now, in memory, its removal record going with the next write; `false` when it is marked removed and its
   * removal is the next batch's to make (the caller queues it); `undefined` when it was removed already.
   */
  #ackNow(clientId: string, seq: number): boolean | undefined {
    const h = this.#holdings;
    if (h.removed.has(seq)) return undefined;
    const hot = this.#writer.hot;
    const recent = hot.get(seq);
    if (recent !== undefined && recent.clientId === clientId) {
      hot.remove(seq);
      h.account(seq, clientId, recent.bytes);
      h.counters.delivered += 1;
      return true;
    }
    h.removed.add(seq);
    return false;
  }

  #ackAll(clientId: string, seqs: readonly number[]): Promise<number> {
    let removed = 0;
    /** Those not in the hot log: removed by the next batch. */
    let later: number[] | undefined;
    for (const seq of seqs) {
      const now = this.#ackNow(clientId, seq);
      if (now === true) removed += 1;
      else if (now === false) (later ??= []).push(seq);
    }
    if (later === undefined) {
      if (removed > 0) this.#writer.scheduleLazy();
      return Promise.resolve(removed);
    }
    return removedLater(this.#writer, clientId, later, removed);
  }

  /**
   * The broker refused the message (the connector's `maxDeliveryAttempts`, or an MQTT 5 reason code): remove it,
   * reported as a `drop` with reason `rejected` and counted in `stats().dropped.rejected`. Resolves as {@link ack}.
   */
  reject(clientId: string, seq: number): Promise<boolean> {
    const refused = this.#checkCall('reject', clientId, seq);
    return refused ?? removeLater(this.#writer, this.#holdings, clientId, seq, 'rejected');
  }

  /** The arguments of a call about one message, checked: a rejected promise to return, or undefined. */
  #checkCall(what: string, clientId: string, seq: number): Promise<never> | undefined {
    return this.#closed ? Promise.reject(this.#closedError()) : refusal(what, clientId, seq);
  }

  /**
   * The caller is about to send the device's messages up to `seq` (in order). Recorded durably before it resolves
   * (in the next group commit), so that after a crash they count as possible duplicates; and, while the connection
   * lives, they are not dropped or expired (the broker may have them already). Call {@link clearSending} when the
   * connection is lost.
   */
  markSending(clientId: string, seq: number): Promise<void> {
    const refused = this.#checkCall('markSending', clientId, seq);
    return refused ?? markSent(this.#writer, this.#holdings, clientId, seq);
  }

  /** The device's connection was lost: nothing of it is in flight any more (its messages may expire or be dropped again). */
  clearSending(clientId: string): void {
    const device = this.#holdings.devices.get(clientId);
    if (device) device.inFlightHigh = 0;
  }

  /**
   * The device's messages after `after` (a seq; 0 for the first), in seq order, at most `limit`. Never returns a
   * message that expired (it is removed and reported) or failed its checksum (removed and reported `corrupt`).
   */
  async pending(clientId: string, options: { after?: number; limit?: number } = {}): Promise<OutboxMessage[]> {
    if (this.#closed) throw this.#closedError();
    checkClientId(clientId, 'pending');
    const after = options.after ?? 0;
    checkSeq(after, 'pending');
    const limit = options.limit ?? 100;
    checkLimit(limit, 'pending');
    await this.#writer.reopening;
    if (this.#closed) throw this.#closedError();
    const device = this.#holdings.devices.get(clientId);
    if (!device || device.messages === 0) return [];
    const corrupt = (seq: number): void => void removeLater(this.#writer, this.#holdings, clientId, seq, 'corrupt');
    return await readPending(this.#writer, this.#holdings, this.#options, clientId, device, after, limit, corrupt, this.#requestSweep);
  }

  /** One device's messages held now and their bytes (in memory; no I/O). */
  device(clientId: string): { readonly messages: number; readonly bytes: number } {
    return this.#holdings.held(clientId);
  }

  /** The ClientIds with messages in the store. */
  devices(): string[] {
    return this.#holdings.clientIds();
  }

  /** Counters and totals (in memory; no I/O). */
  stats(): OutboxStats {
    return this.#holdings.stats(this.#writer.failure !== undefined);
  }

  /**
   * Remove the messages whose time to live has passed now (by the store's clock), reporting each. Runs by itself
   * every `sweepIntervalMs`; call it to run now. Resolves with how many expired.
   */
  async expire(): Promise<number> {
    if (this.#closed) throw this.#closedError();
    const before = this.#holdings.counters.dropped.expired;
    await swept(this.#writer);
    return this.#holdings.counters.dropped.expired - before;
  }

  /** A sweep soon (the timer, a read that met an expired message): one function per store, made once. */
  readonly #requestSweep = (): void => {
    if (this.#closed || this.#options.ttlMs === Infinity) return;
    this.#writer.work.sweep = true;
    this.#writer.schedule();
  };

  /** Resolves once everything asked so far (appends, acks, marks) is written. */
  flush(): Promise<void> {
    if (this.#closed) return Promise.reject(this.#closedError());
    return nextBatch(this.#writer);
  }

  /**
   * Writing failed (`stats().writeFailing`; appends get `OutboxDiskFull` or `OutboxIOError`): try to write again now,
   * e.g. once space was freed, instead of at the first append after a pause (1 s, doubling up to 30 s). Resolves
   * true when the store writes again (what was acknowledged meanwhile is then written too), false when it still
   * cannot.
   */
  retryWrites(): Promise<boolean> {
    if (this.#closed) return Promise.reject(this.#closedError());
    return retried(this.#writer);
  }

  /** @internal Start the expiry timer and look for expired messages now. */
  start(): void {
    if (this.#options.ttlMs === Infinity) return;
    this.#sweepTimer = setInterval(this.#requestSweep, this.#options.sweepIntervalMs);
    this.#sweepTimer.unref();
    this.#requestSweep();
  }

  /**
   * Write what is pending, record a clean shutdown and close. Idempotent. Messages not yet delivered stay on disk for
   * the next open.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      if (this.#sweepTimer) clearInterval(this.#sweepTimer);
      await this.flush().catch(() => undefined);
      this.#closed = true;
      await shutDown(this.#writer);
    })();
    return this.#closing;
  }

  [inspect.custom](): string {
    const s = this.stats();
    return `OutboxStore { dir: ${JSON.stringify(this.dir)}, messages: ${s.messages}, bytes: ${s.bytes}, devices: ${s.devices}${this.#closed ? ', closed' : ''} }`;
  }

  /** A summary for logs: the directory and the counters, never a message. */
  toJSON(): Record<string, unknown> {
    return { dir: this.dir, closed: this.#closed, ...this.stats() };
  }
}

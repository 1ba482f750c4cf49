/**
 * The durable outbox's group commit: everything asked since the last batch (appends, acks, marks, a sweep) is
 * written together: appends and the removals of recent messages to the hot log (wal.ts, one fdatasync for all the
 * appends), the rest (removals of older messages, marks) in one LevelDB write batch, fsync'd when anything in it must
 * be durable; then the hot log's upkeep (moves.ts: a new segment, the overflow moved to LevelDB, dead segments
 * deleted). Removals are looked up and settled by removals.ts. And what happens when writing fails (appends refused,
 * removals kept in memory, nothing written until the store was reopened and the disk takes as much as LevelDB's
 * recovery will write: recover.ts).
 */
import { OutboxError } from '../errors.js';
import { encodeSeq, markKey, messageKey } from './codec.js';
import { planBounds } from './bounds.js';
import { levelOptions, write, writeError, type Level, type LevelModule } from './level.js';
import type { ResolvedOutboxOptions } from './options.js';
import { dropOf, newWork, type Holdings, type PendingAppend, type PendingRemoval, type Removed, type Work } from './state.js';
import type { OutboxDrop } from './types.js';
import { tellAccepted, tellRefused, type HotLog, type HotMessage } from './wal.js';
import { markRecord } from './wal-format.js';
import { reserveRecoverySpace } from './recover.js';
import { lookUpRemovals, settleRemovals } from './removals.js';
import { putMoved, settleMoved, upkeepHotLog } from './moves.js';

/** Pause before the first try to write again after a failure; doubled up to {@link MAX_RETRY_MS}. */
const FIRST_RETRY_MS = 1000;
const MAX_RETRY_MS = 30_000;
/** How long removal records alone wait for a batch to go with. */
const LAZY_MS = 10;
const noop = (): void => undefined;

/** What the writer tells its store (which emits it). */
export interface WriterEvents {
  drop(drop: OutboxDrop): void;
  warning(warning: OutboxError): void;
}

/** Writes the store's batches, one at a time, and recovers from a failed write. */
export class BatchWriter {
  /** What the next batch writes; replaced by a fresh one when a batch starts. */
  work: Work = newWork();
  #db: Level;
  readonly #engine: LevelModule;
  readonly #options: ResolvedOutboxOptions;
  readonly #holdings: Holdings;
  readonly #events: WriterEvents;
  #running = false;
  /** Deletions and marks that could not be written (writing failing): written once it works again. */
  #deferredDeletes: Buffer[] = [];
  #deferredMarks = new Map<string, number>();
  /** A move to LevelDB whose write failed (it may have reached LevelDB): redone by the recovery. */
  #unmoved: readonly HotMessage[] = [];
  /** Writing failed: no write until the store has recovered (a write after a failed one could follow a torn record). */
  #writeFailure: { error: OutboxError; retryAt: number; pauseMs: number } | undefined;
  /** A reopen in progress: reads wait for it. */
  #reopening: Promise<void> | undefined;
  /** The hot log (set by the store once opened). */
  hot!: HotLog;

  constructor(options: ResolvedOutboxOptions, engine: LevelModule, db: Level, holdings: Holdings, events: WriterEvents) {
    this.#options = options;
    this.#engine = engine;
    this.#db = db;
    this.#holdings = holdings;
    this.#events = events;
  }

  /** The database (replaced when the store is reopened after a failed write). */
  get db(): Level {
    return this.#db;
  }

  /** The failure that stops writing, if any. */
  get failure(): { readonly error: OutboxError; readonly retryAt: number } | undefined {
    return this.#writeFailure;
  }

  /** Settles when a reopen in progress is over (at once when none is). */
  get reopening(): Promise<void> | undefined {
    return this.#reopening;
  }

  /** The timer of {@link scheduleLazy}. */
  #lazy: NodeJS.Timeout | undefined;
  #stopped = false;

  /** The store is closing: no lazy write after this (a last flush wrote what there was). */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#lazy);
    this.#lazy = undefined;
  }

  #hasWork(): boolean {
    const w = this.work;
    return w.appends.length > 0 || w.removals.length > 0 || w.marks.size > 0 || w.sweep || w.recover || w.waiters.length > 0;
  }

  /**
   * Run a batch soon, unless one runs (what arrives meanwhile goes into the next: group commit): at the end of this
   * turn's microtasks, or after `groupCommitMs`. A write is one trip to the thread pool; starting it at once, not a
   * turn of the event loop later, is what keeps a message's acceptance close to the disk's own latency.
   */
  schedule(): void {
    if (this.#running) return;
    this.#running = true;
    if (this.#lazy) {
      clearTimeout(this.#lazy);
      this.#lazy = undefined;
    }
    const run = (): void => void this.#loop();
    if (this.#options.groupCommitMs > 0) setTimeout(run, this.#options.groupCommitMs);
    else queueMicrotask(run);
  }

  /**
   * Removal records are waiting and nothing else: write them with the next batch, or after {@link LAZY_MS} if none
   * comes (a write of removals alone would hold up the appends that arrive while it runs).
   */
  scheduleLazy(): void {
    if (this.#running || this.#lazy || this.#stopped) return;
    this.#lazy = setTimeout(() => {
      this.#lazy = undefined;
      if (!this.hot.removalsPending) return;
      // A batch of nothing else: the removal records go with its write.
      this.work.waiters.push({ resolve: noop, reject: noop });
      this.schedule();
    }, LAZY_MS);
    this.#lazy.unref();
  }

  /** Resolves once no batch runs (nor its upkeep). */
  idle(): Promise<void> {
    if (!this.#running) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  #idleWaiters: Array<() => void> = [];

  async #loop(): Promise<void> {
    try {
      while (this.#hasWork()) {
        const work = this.work;
        this.work = newWork();
        await this.#commit(work);
      }
    } finally {
      this.#running = false;
      if (this.#hasWork()) this.schedule();
      else {
        if (this.hot.removalsPending) this.scheduleLazy();
        for (const resolve of this.#idleWaiters.splice(0)) resolve();
      }
    }
  }

  /** One batch: everything asked since the last one, written with one fsync when anything in it must be durable. */
  async #commit(work: Work): Promise<void> {
    const holdings = this.#holdings;
    const dir = this.#options.dir;
    const drops: OutboxDrop[] = [];
    let removed: Removed[] = [];
    let missing: PendingRemoval[] = [];
    /** Victims already taken out (of the hot log, or bound for LevelDB): if the write fails, still gone for this process. */
    let taken: Array<Removed & { reason: OutboxDrop['reason'] }> = [];
    try {
      if (this.#writeFailure && (work.appends.length > 0 || work.recover)) {
        try {
          await this.#tryRecover(work.recover);
        } catch (cause) {
          this.refuse(work.appends, writeError(dir, cause));
          work.appends = [];
        }
      }
      ({ removed, missing } = await lookUpRemovals(work.removals, this.hot, holdings, this.#db));
      if (this.#writeFailure) throw this.#writeFailure.error;
      const { victims, droppedAtOnce, refused, sweepAgain } = await planBounds({ db: this.#db, hot: this.hot, holdings, options: this.#options }, work, removed);
      if (sweepAgain) this.work.sweep = true;
      if (refused.length > 0) this.refuse(refused, new OutboxError('OutboxFull', `The outbox in ${dir} is full, and nothing older may be dropped to make room (every older message is in flight)`, dir));
      const marks = this.#mergeMarks(work.marks);
      // Devices left with nothing by an earlier batch lose their mark: tidiness only (a new message's seq is above any
      // mark, so a stale one never counts it as a duplicate), hence one batch late rather than a count per message.
      const emptied = holdings.emptied.size === 0 ? [] : [...holdings.emptied].filter((clientId) => !holdings.devices.has(clientId) && !marks.has(clientId));
      const deferred = this.#deferredDeletes;
      const hot = this.hot;
      const records: Buffer[] = [];
      // A mark of a device whose messages are all in the hot log goes there; one with messages in LevelDB, to LevelDB
      // (decided before this batch's removals leave the hot log: the counts agree until then).
      let levelMarks = marks;
      if (marks.size > 0) {
        levelMarks = new Map();
        for (const [clientId, seq] of marks) {
          const device = holdings.devices.get(clientId);
          if (device && device.messages > hot.deviceCount(clientId)) levelMarks.set(clientId, seq);
          else records.push(markRecord(clientId, seq));
        }
      }
      // Recent messages leave the hot log (a removal record with this write); older ones are deleted from LevelDB.
      const coldDeletes: Buffer[] = [];
      for (const r of removed) if (!hot.remove(r.seq)) coldDeletes.push(messageKey(r.clientId, r.seq));
      // A victim of the hot log acknowledged while the bounds were read is gone already: not dropped twice.
      const kept = victims.filter((v) => {
        if (v.hot) return hot.remove(v.seq) !== undefined;
        coldDeletes.push(messageKey(v.clientId, v.seq));
        return true;
      });
      taken = kept;
      for (const a of work.appends) records.push(a.record);
      // LevelDB's part first (usually nothing): if it fails, the appends are refused and none of them is on disk yet.
      if (coldDeletes.length > 0 || levelMarks.size > 0 || emptied.length > 0 || deferred.length > 0) {
        // Straight into LevelDB's chained batch (no operation objects).
        await write(this.#db, (batch) => {
          for (const key of coldDeletes) batch.del(key);
          for (const [clientId, seq] of levelMarks) batch.put(markKey(clientId), encodeSeq(seq));
          for (const clientId of emptied) batch.del(markKey(clientId));
          for (const key of deferred) batch.del(key);
        }, levelMarks.size > 0 || deferred.length > 0);
      }
      // Then the hot log: its appends and marks (a failed write is cut back, so refused appends never come back).
      await hot.write(records);
      // Written: account for it.
      for (const clientId of emptied) holdings.emptied.delete(clientId);
      this.#deferredDeletes = [];
      this.#deferredMarks.clear();
      for (const [clientId, seq] of marks) {
        const device = holdings.device(clientId);
        device.sentHigh = Math.max(device.sentHigh, seq);
        if (levelMarks.has(clientId)) device.levelMark = true;
      }
      const atOnce: OutboxDrop[] = [];
      // Older than the kept ones: accepted first.
      for (const a of droppedAtOnce) {
        holdings.queuedMessages -= 1;
        holdings.queuedBytes -= a.bytes;
        holdings.counters.accepted += 1;
        holdings.counters.dropped.full += 1;
        atOnce.push(dropOf({ seq: a.seq, clientId: a.clientId, bytes: a.bytes, acceptedAt: a.acceptedAt, id: a.id }, 'full'));
      }
      for (const a of work.appends) {
        holdings.hold(a);
        hot.add(a);
        if (a.sending) {
          const device = holdings.device(a.clientId);
          if (a.seq > device.sentHigh) device.sentHigh = a.seq;
        }
      }
      // Reported after the callers heard "accepted" (their reactions run first): a drop is news about a message they know.
      tellAccepted(droppedAtOnce.length === 0 ? work.appends : droppedAtOnce.concat(work.appends), atOnce.length === 0 ? undefined : () => {
        for (const drop of atOnce) this.#events.drop(drop);
      });
      settleRemovals(this.#holdings, removed, missing, drops);
      for (const r of work.removals) holdings.removed.delete(r.seq);
      for (const v of kept) {
        holdings.account(v.seq, v.clientId, v.bytes);
        drops.push(dropOf(v, v.reason));
      }
      holdings.pruneEmpty();
      for (const w of work.markWaiters) w.resolve();
      for (const w of work.waiters) w.resolve();
    } catch (cause) {
      const error = writeError(dir, cause);
      const first = this.#writeFailure === undefined;
      // Removed for this process all the same: out of the hot log, their removal records written once writing works
      // (also those whose lookup did not finish: a failed read of LevelDB's part).
      for (const r of work.removals) if (this.hot.get(r.seq)?.clientId === r.clientId) this.hot.remove(r.seq);
      this.#failed(work, error, removed, missing, drops);
      for (const v of taken) {
        if (!this.hot.get(v.seq)) this.#deferredDeletes.push(messageKey(v.clientId, v.seq));
        holdings.account(v.seq, v.clientId, v.bytes);
        drops.push(dropOf(v, v.reason));
      }
      if (first) this.#events.warning(error);
    }
    for (const drop of drops) {
      holdings.counters.dropped[drop.reason] += 1;
      this.#events.drop(drop);
    }
    if (!this.#writeFailure) await this.#upkeep();
  }

  /**
   * The hot log's upkeep after a write (moves.ts). A failure here refuses no message already accepted: it stops
   * writing (as any failed write does) until the store recovers.
   */
  async #upkeep(): Promise<void> {
    try {
      await upkeepHotLog(this.hot, this.#db, this.#holdings, (messages) => {
        this.#unmoved = messages;
      });
    } catch (cause) {
      const error = writeError(this.#options.dir, cause);
      const first = this.#writeFailure === undefined;
      this.#writeFailure ??= { error, retryAt: performance.now() + FIRST_RETRY_MS, pauseMs: FIRST_RETRY_MS };
      if (first) this.#events.warning(error);
    }
  }

  #mergeMarks(marks: ReadonlyMap<string, number>): Map<string, number> {
    const merged = new Map(this.#deferredMarks);
    for (const [clientId, seq] of marks) merged.set(clientId, Math.max(merged.get(clientId) ?? 0, seq));
    return merged;
  }

  /** Appends not written: each rejects with `error`, counted as refused. */
  refuse(appends: readonly PendingAppend[], error: OutboxError): void {
    const holdings = this.#holdings;
    for (const a of appends) {
      holdings.queuedMessages -= 1;
      holdings.queuedBytes -= a.bytes;
      if (error.code === 'OutboxFull') holdings.counters.refused.full += 1;
      else holdings.counters.refused.diskFull += 1;
    }
    tellRefused(appends, error);
  }

  /**
   * Writing failed: refuse the batch's appends, keep its removals (in memory now, written later) and marks, and write
   * nothing more until {@link #tryRecover} has reopened the store: LevelDB's log may end with a torn record, and a
   * write after it could make the next recovery skip the good records that follow.
   */
  #failed(work: Work, error: OutboxError, removed: readonly Removed[], missing: readonly PendingRemoval[], drops: OutboxDrop[]): void {
    const pause = this.#writeFailure ? this.#writeFailure.pauseMs : FIRST_RETRY_MS;
    this.#writeFailure ??= { error, retryAt: performance.now() + pause, pauseMs: pause };
    this.refuse(work.appends, error);
    for (const [clientId, seq] of work.marks) this.#deferredMarks.set(clientId, Math.max(this.#deferredMarks.get(clientId) ?? 0, seq));
    for (const removal of work.removals) this.#deferredDeletes.push(messageKey(removal.clientId, removal.seq));
    // Removed for this process (never handed out again: they stay in `removed` until written).
    settleRemovals(this.#holdings, removed, missing, drops);
    for (const r of missing) this.#holdings.removed.delete(r.seq);
    // The lookup itself failed: removed all the same, their bytes unknown until the store is reloaded.
    const settled = new Set<PendingRemoval>([...missing, ...removed.map((r) => r.removal as PendingRemoval)]);
    for (const removal of work.removals) {
      if (settled.has(removal)) continue;
      if (removal.reason === 'delivered') this.#holdings.counters.delivered += 1;
      else drops.push({ clientId: removal.clientId, seq: removal.seq, reason: removal.reason, bytes: 0, acceptedAt: NaN });
      removal.resolve(true);
    }
    // The marks cannot be made durable now; sending goes on (a crash before they are written may undercount duplicates).
    for (const w of work.markWaiters) w.resolve();
    for (const w of work.waiters) w.reject(error);
  }

  /**
   * After a failed write, once the pause is over: check that the disk takes as much as LevelDB's recovery will write
   * (a scratch file the size of its logs plus 1 MiB, fsync'd, deleted), then close and reopen the store (LevelDB
   * recovers its log, dropping a torn last record, into a fresh one) and write what was deferred. Reads wait for the
   * reopen. On failure the store stays as it was (open, or, if reopening itself failed, closed for reads too until
   * the next try).
   */
  async #tryRecover(now: boolean): Promise<void> {
    const failure = this.#writeFailure;
    if (!failure) return;
    if (!now && performance.now() < failure.retryAt) throw failure.error;
    const dir = this.#options.dir;
    try {
      await reserveRecoverySpace(dir);
    } catch (cause) {
      const error = writeError(dir, cause);
      const pauseMs = Math.min(MAX_RETRY_MS, failure.pauseMs * 2);
      this.#writeFailure = { error, retryAt: performance.now() + pauseMs, pauseMs };
      throw error;
    }
    let done!: () => void;
    this.#reopening = new Promise<void>((resolve) => {
      done = resolve;
    });
    try {
      await this.#db.close().catch(() => undefined);
      const db = new this.#engine.ClassicLevel<Buffer, Buffer>(dir, levelOptions(this.#options));
      try {
        await db.open();
      } catch (cause) {
        this.#writeFailure = { error: writeError(dir, cause), retryAt: performance.now() + failure.pauseMs, pauseMs: failure.pauseMs };
        throw this.#writeFailure.error;
      }
      this.#db = db;
      // A move that failed is done again (its messages may be in LevelDB already; a put is the same put), and those of
      // them acknowledged since are deleted, so that the reload below counts each message once.
      const unmoved = this.#unmoved;
      await write(db, (batch) => {
        for (const key of this.#deferredDeletes) batch.del(key);
        for (const [clientId, seq] of this.#deferredMarks) batch.put(markKey(clientId), encodeSeq(seq));
        const stay = unmoved.filter((m) => this.hot.get(m.seq) === m);
        if (stay.length > 0) putMoved(batch, stay, this.#holdings);
        for (const m of unmoved) if (this.hot.get(m.seq) !== m) batch.del(m.key);
      }, true);
      settleMoved(this.hot, this.#holdings, unmoved);
      this.#unmoved = [];
      this.#deferredDeletes = [];
      this.#deferredMarks.clear();
      this.#writeFailure = undefined;
      await this.#holdings.load(db, this.hot.all());
      this.#holdings.removed.clear();
      this.#holdings.known.clear();
    } finally {
      this.#reopening = undefined;
      done();
    }
  }
}

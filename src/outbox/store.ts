/**
 * The durable outbox: one store per process, on one directory, for any number of devices. A message is *accepted*
 * when it is on disk (fsync'd), and stays until the caller says it was *delivered* (`ack`), a bound drops it, or its
 * time to live ends; after a crash, a kill -9 or a power cut, reopening the directory gives back every accepted
 * message, in order per device.
 *
 * The engine is LevelDB through `classic-level` (an optional peer dependency, loaded on the first open), chosen by
 * `bench/outbox-store.bench.mjs` (BENCHMARKS.md, "Durable outbox") over `better-sqlite3` 12 and `lmdb` 3 because it
 * (a) installs from the registry alone with prebuilt binaries inside the package, also with install scripts skipped
 * (better-sqlite3 12 has no reachable binary for Node 20 here: it compiles for minutes, and without its install
 * script it does not load); (b) survives a file cut short at any offset (its write-ahead log is a sequence of
 * checksummed records replayed up to the last complete one; LMDB's memory-mapped file, cut short, silently lost
 * records of earlier durable commits, or killed the process with SIGBUS); (c) writes and fsyncs on libuv's thread
 * pool, so the event loop (and the MQTT clients on it) never waits for the disk (better-sqlite3 is synchronous);
 * (d) locks its directory with fcntl, which the kernel releases when a process dies, so a store left by a kill -9
 * is reopened at once and a second opener is refused. No candidate was cheaper per message.
 *
 * Durability: appends that arrive while an fsync runs, or within `groupCommitMs` of an idle store's first one, go
 * into one LevelDB write batch with `sync: true` (group commit: one fsync for all of them). Removals (ack, drops,
 * expiry) are written without an fsync of their own: they reach the disk with the next fsync, and a removal lost to a
 * power cut only means that message is sent again, counted as a possible duplicate.
 *
 * Memory: nothing per message is kept in memory; per device, a few numbers, among them a lower bound of the time its
 * oldest message was accepted. Expiry and drop-oldest read only the first messages of the devices whose bound says
 * they may hold something old enough: one put and one delete per message, no index by age to keep.
 */
import { EventEmitter } from 'node:events';
import { mkdir, open as openFile, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { inspect } from 'node:util';
import type { ClassicLevel } from 'classic-level';
import { ConfigurationError, OutboxError, ValidationError, isApsaraMqDeviceError } from '../errors.js';
import {
  MARK_RANGE,
  MAX_MESSAGE_ID_BYTES,
  MESSAGE_RANGE,
  RECORD_FORMAT,
  acceptedAtOf,
  clientIdOfMarkKey,
  clientIdOfMessageKey,
  decodeMessage,
  decodeSeq,
  type StoredMessage,
  encodeMessage,
  encodeSeq,
  idOf,
  markKey,
  messageKey,
  messageRange,
  metaKey,
  seqOfMessageKey,
} from './codec.js';
import { checkLogFile, type LogCheck } from './leveldb-log.js';
import { resolveOutboxOptions, type OutboxStoreOptions, type ResolvedOutboxOptions } from './options.js';

type Level = ClassicLevel<Buffer, Buffer>;
type LevelModule = typeof import('classic-level');

/** A message to keep until it is delivered. */
export interface OutboxMessageInput {
  readonly topic: string;
  readonly payload: Buffer | Uint8Array | string;
  /** @default 1 */
  readonly qos?: 0 | 1 | 2;
  /** @default false */
  readonly retain?: boolean;
  /** MQTT 5 publish properties, kept as given (Buffers as Buffers). */
  readonly properties?: Readonly<Record<string, unknown>>;
  /**
   * The application's own id of the message (at most 255 bytes of UTF-8), kept with it and given back with every
   * report about it (`pending`, `drop`), so that an application that restarted can match what it accepted before.
   */
  readonly id?: string;
}

/** A message read back from the store. Its `inspect` shows the payload's length, not its bytes. */
export interface OutboxMessage extends StoredMessage {
  /** The device it belongs to. */
  readonly clientId: string;
  /** Store-wide, increasing with acceptance (so also in order per device). */
  readonly seq: number;
  /**
   * It was handed out for sending before (in this process or one before a restart) and not acknowledged: the broker
   * may have it already, so sending it again may deliver a duplicate.
   */
  readonly sentBefore: boolean;
}

// One name for the type (the interface above, merged) and the class whose inspect hides the payload.
export class OutboxMessage {
  /** @internal */
  constructor(init: StoredMessage & { clientId: string; seq: number; sentBefore: boolean }) {
    Object.assign(this, init);
  }

  [inspect.custom](): string {
    return `OutboxMessage { clientId: ${JSON.stringify(this.clientId)}, seq: ${this.seq}, qos: ${this.qos}, payload: <${this.payload.length} bytes> }`;
  }
}

/**
 * Why a message left the store without being delivered: a bound (`full`, under drop-oldest), its time to live
 * (`expired`), damage on disk (`corrupt`), or the broker refused it (`rejected`, see {@link OutboxStore.reject}).
 */
export type OutboxDropReason = 'full' | 'expired' | 'corrupt' | 'rejected';

/** A message removed without delivery (emitted as `drop`). */
export interface OutboxDrop {
  readonly clientId: string;
  readonly seq: number;
  readonly reason: OutboxDropReason;
  /** Its bytes in the store's accounting. */
  readonly bytes: number;
  /** When it was accepted (wall-clock ms); NaN when the record was unreadable. */
  readonly acceptedAt: number;
  /** The application's id of the message, when it gave one (and the record was readable). */
  readonly id?: string;
}

/** What reopening found (also in the `OutboxRecovered` warning). */
export interface OutboxRecovery {
  /** The store was not closed by `close()` last time (crash, kill -9, power cut). */
  readonly uncleanShutdown: boolean;
  /** Messages found. */
  readonly messages: number;
  /** Messages found that had been handed out for sending: sent again, they may be delivered twice. */
  readonly possibleDuplicates: number;
  /** Bytes at the end of LevelDB's write-ahead log that did not form a complete record (a write cut short). */
  readonly tornTailBytes: number;
  /** Bytes of the write-ahead log that failed their checksum before its end (their records are lost). */
  readonly corruptBytes: number;
}

/** Counters of {@link OutboxStore.stats}. */
export interface OutboxStats {
  /** Messages held now (accepted, not delivered, dropped or expired). */
  readonly messages: number;
  /** Their bytes. */
  readonly bytes: number;
  /** Devices with at least one message. */
  readonly devices: number;
  /** Messages accepted (made durable) since open. */
  readonly accepted: number;
  /** Messages acknowledged (removed as delivered) since open. */
  readonly delivered: number;
  /** Messages removed without delivery since open, by reason. */
  readonly dropped: Readonly<Record<OutboxDropReason, number>>;
  /** Appends refused since open: at a bound under `refuse-new`, or while the disk was full or failing. */
  readonly refused: { readonly full: number; readonly diskFull: number };
  /** Messages found at open that may be delivered twice (see {@link OutboxRecovery.possibleDuplicates}). */
  readonly possibleDuplicates: number;
  /** Writing failed (full disk, I/O error) and has not worked again yet: appends are refused, reads and acks work. */
  readonly writeFailing: boolean;
}

/** Events of {@link OutboxStore}. */
export interface OutboxStoreEvents {
  /** A message left without delivery: a bound (`full`), its time to live (`expired`) or damage on disk (`corrupt`). */
  drop: [drop: OutboxDrop];
  /** Something to know that is not a failure of a call: `OutboxRecovered`, or writing failing in the background. */
  warning: [warning: OutboxError];
}

interface DeviceState {
  messages: number;
  bytes: number;
  /** Highest seq handed out for sending, durably recorded (the `f` mark). */
  sentHigh: number;
  /** Highest seq in flight on a live connection (memory only): not dropped or expired while it waits for its ack. */
  inFlightHigh: number;
  /** At most the acceptance time of its oldest message (exact after a read of its first messages): for expiry. */
  oldestAt: number;
  /** At most the seq of its oldest message: for drop-oldest (seqs order acceptance store-wide; times can tie). */
  oldestSeq: number;
}

interface PendingAppend {
  readonly clientId: string;
  readonly seq: number;
  readonly key: Buffer;
  readonly value: Buffer;
  readonly bytes: number;
  readonly acceptedAt: number;
  readonly id: string | undefined;
  readonly sending: boolean;
  readonly resolve: (result: { seq: number; acceptedAt: number }) => void;
  readonly reject: (error: unknown) => void;
}

interface PendingRemoval {
  readonly clientId: string;
  readonly seq: number;
  /** `delivered` for an ack; a drop reason for damage found while reading, or a message the broker refused. */
  readonly reason: 'delivered' | 'corrupt' | 'rejected';
  readonly resolve: (removed: boolean) => void;
}

interface Waiter {
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

interface Work {
  appends: PendingAppend[];
  removals: PendingRemoval[];
  marks: Map<string, number>;
  markWaiters: Waiter[];
  sweep: boolean;
  /** Try to write again now (after a failure), see {@link OutboxStore.retryWrites}. */
  recover: boolean;
  waiters: Waiter[];
}

/** A message found for removal (or chosen as a victim), with what accounting needs of it. */
interface Removed {
  readonly removal?: PendingRemoval;
  readonly seq: number;
  readonly clientId: string;
  readonly bytes: number;
  readonly acceptedAt: number;
  readonly id: string | undefined;
}

const newWork = (): Work => ({ appends: [], removals: [], marks: new Map(), markWaiters: [], sweep: false, recover: false, waiters: [] });

/** At most this many messages removed by one sweep batch (more wait for the next). */
const MAX_REMOVALS_PER_BATCH = 5000;
/** How many messages one read of a device's oldest takes. */
const SCAN_PAGE = 256;
/** Pause before the first try to write again after a failure; doubled up to {@link MAX_RETRY_MS}. */
const FIRST_RETRY_MS = 1000;
const MAX_RETRY_MS = 30_000;
const SEQ_KEY = metaKey('seq');
/** At most this many entries in the map of handed-out messages (about 100 bytes each). */
const MAX_KNOWN = 50_000;
/** The longest ClientId accepted (bytes): MQTT allows 65,535; nothing real is near this. */
const MAX_CLIENT_ID_BYTES = 1024;

let engine: Promise<LevelModule> | undefined;

/** classic-level, imported on the first open: an optional peer, so a device that never opens an outbox needs none. */
function loadEngine(): Promise<LevelModule> {
  engine ??= import('classic-level').catch((error: unknown) => {
    engine = undefined;
    if ((error as { code?: unknown }).code === 'ERR_MODULE_NOT_FOUND') {
      throw new ConfigurationError(
        'MissingDependency',
        'The durable outbox needs the package classic-level, which is not installed (an optional peer dependency of apsaramq-device): npm install classic-level',
      );
    }
    throw error;
  });
  return engine;
}

/** The errno-like code LevelDB's message carries (it says "IO error: <path>: No space left on device"). */
function diskFullIn(error: unknown): boolean {
  for (let e: unknown = error, depth = 0; e !== undefined && e !== null && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    const { code, message } = e as { code?: unknown; message?: unknown };
    if (code === 'ENOSPC' || code === 'EDQUOT' || code === 'EFBIG') return true;
    if (typeof message === 'string' && /No space left on device|Disk quota exceeded|File too large/i.test(message)) return true;
  }
  return false;
}

function levelCode(error: unknown): string | undefined {
  const cause = (error as { cause?: { code?: unknown } }).cause;
  const code = typeof cause?.code === 'string' ? cause.code : (error as { code?: unknown }).code;
  return typeof code === 'string' ? code : undefined;
}

/** A write failure as the error an append gets: `OutboxDiskFull` for a full disk or a size limit, else `OutboxIOError`. */
function writeError(dir: string, error: unknown): OutboxError {
  if (isApsaraMqDeviceError(error) && error instanceof OutboxError) return error;
  return diskFullIn(error)
    ? new OutboxError('OutboxDiskFull', `The outbox in ${dir} cannot write: the disk is full or a size limit was reached`, dir, { cause: error })
    : new OutboxError('OutboxIOError', `The outbox in ${dir} cannot write (${(error as Error).message ?? 'I/O error'})`, dir, { cause: error });
}

/** The report of a message removed without delivery. */
function dropOf(r: Removed, reason: OutboxDropReason): OutboxDrop {
  const drop = { clientId: r.clientId, seq: r.seq, reason, bytes: r.bytes, acceptedAt: r.acceptedAt };
  return r.id === undefined ? drop : { ...drop, id: r.id };
}

function payloadBuffer(payload: OutboxMessageInput['payload']): Buffer {
  if (typeof payload === 'string') return Buffer.from(payload, 'utf8');
  if (Buffer.isBuffer(payload)) return payload;
  if (payload instanceof Uint8Array) return Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  throw new ValidationError('InvalidOption', 'OutboxStore.append: payload must be a Buffer, a Uint8Array or a string');
}

function checkClientId(clientId: unknown, what: string): asserts clientId is string {
  if (typeof clientId !== 'string' || clientId.length === 0 || clientId.includes('\0') || Buffer.byteLength(clientId) > MAX_CLIENT_ID_BYTES) {
    throw new ValidationError('InvalidClientId', `OutboxStore.${what}: the ClientId must be a non-empty string without NUL characters, at most ${MAX_CLIENT_ID_BYTES} bytes`);
  }
}

function checkSeq(seq: unknown, what: string): asserts seq is number {
  if (!Number.isSafeInteger(seq) || (seq as number) < 0) throw new ValidationError('InvalidOption', `OutboxStore.${what}: seq must be a seq the store returned`);
}

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
  readonly #engine: LevelModule;
  #db: Level;
  readonly #devices = new Map<string, DeviceState>();
  #messages = 0;
  #bytes = 0;
  /** Appends waiting for their batch: counted against the bounds before they are written. */
  #queuedMessages = 0;
  #queuedBytes = 0;
  #nextSeq = 1;
  #lastAcceptedAt = 0;
  #work: Work = newWork();
  #running = false;
  #closed = false;
  #closing: Promise<void> | undefined;
  /**
   * What accounting needs of messages this process has handed out (appended for sending, or read): an ack of one
   * of them reads nothing. Bounded ({@link MAX_KNOWN}); beyond, an ack reads its message's size from the store.
   */
  readonly #known = new Map<number, { clientId: string; bytes: number; acceptedAt: number; id: string | undefined }>();
  /** Devices that became empty: their `f` mark is deleted with the next batch. */
  readonly #emptied = new Set<string>();
  /** Seqs removed in memory whose deletion is not written yet: never handed out again. */
  readonly #removed = new Set<number>();
  /** Deletions and marks that could not be written (writing failing): written once it works again. */
  #deferredDeletes: Buffer[] = [];
  #deferredMarks = new Map<string, number>();
  /** Keys of appends whose write failed: if the failed write reached the disk after all, they are deleted on recovery. */
  #failedKeys: Buffer[] = [];
  /** Writing failed: no write until the store has recovered (a write after a failed one could follow a torn record). */
  #writeFailure: { error: OutboxError; retryAt: number; pauseMs: number } | undefined;
  /** A reopen in progress: reads wait for it. */
  #reopening: Promise<void> | undefined;
  #sweepTimer: NodeJS.Timeout | undefined;
  readonly #counters = {
    accepted: 0,
    delivered: 0,
    dropped: { full: 0, expired: 0, corrupt: 0, rejected: 0 } as Record<OutboxDropReason, number>,
    refused: { full: 0, diskFull: 0 },
    possibleDuplicates: 0,
  };

  /**
   * @internal Use {@link openOutboxStore}. The engine and its database are `unknown` here on purpose: the declarations
   * of the package must not name classic-level's types, or a TypeScript project without that optional peer (a device
   * that never opens an outbox, whose connector still names the store's type) would not compile.
   */
  constructor(options: ResolvedOutboxOptions, engineModule: unknown, db: unknown) {
    super();
    this.dir = options.dir;
    this.#options = options;
    this.#engine = engineModule as LevelModule;
    this.#db = db as Level;
  }

  /** What opening found. */
  get recovery(): OutboxRecovery {
    return this.#recovery;
  }

  /** @internal After {@link load}: where seqs go on, and what opening found. */
  begin(nextSeq: number, recovery: OutboxRecovery): void {
    this.#nextSeq = nextSeq;
    this.#recovery = Object.freeze(recovery);
    this.#counters.possibleDuplicates = recovery.possibleDuplicates;
  }

  /** @internal Per-device state and totals from what is on disk. */
  async load(): Promise<{ messages: number; possibleDuplicates: number; maxSeq: number }> {
    const keep = new Map([...this.#devices].map(([id, d]) => [id, d.inFlightHigh]));
    this.#devices.clear();
    this.#messages = 0;
    this.#bytes = 0;
    const marks = new Map<string, number>();
    for await (const [key, value] of this.#db.iterator(MARK_RANGE)) {
      const seq = decodeSeq(value);
      if (seq !== undefined) marks.set(clientIdOfMarkKey(key), seq);
    }
    let possibleDuplicates = 0;
    let maxSeq = 0;
    // Every message key and the header of its value (LevelDB reads whole blocks anyway): a second pass over the data
    // at open, instead of a second key per message while running.
    const iterator = this.#db.iterator(MESSAGE_RANGE);
    try {
      for (let page = await iterator.nextv(1024); page.length > 0; page = await iterator.nextv(1024)) {
        for (const [key, value] of page) {
          const seq = seqOfMessageKey(key);
          const clientId = clientIdOfMessageKey(key);
          const bytes = key.length + value.length;
          const acceptedAt = acceptedAtOf(value);
          maxSeq = Math.max(maxSeq, seq);
          const device = this.#device(clientId);
          // Keys are in seq order per device: the first is the oldest. A header too short to say sorts first (it is
          // looked at, and dropped as corrupt, by the first sweep or read).
          if (device.messages === 0) {
            device.oldestAt = Number.isNaN(acceptedAt) ? -Infinity : acceptedAt;
            device.oldestSeq = seq;
          }
          device.messages += 1;
          device.bytes += bytes;
          this.#messages += 1;
          this.#bytes += bytes;
          if (acceptedAt > this.#lastAcceptedAt) this.#lastAcceptedAt = acceptedAt;
          const sent = marks.get(clientId);
          if (sent !== undefined && seq <= sent) possibleDuplicates += 1;
        }
      }
    } finally {
      await iterator.close();
    }
    for (const [clientId, sentHigh] of marks) {
      const device = this.#devices.get(clientId);
      if (device) device.sentHigh = sentHigh;
    }
    for (const [clientId, inFlightHigh] of keep) {
      const device = this.#devices.get(clientId);
      if (device) device.inFlightHigh = inFlightHigh;
    }
    return { messages: this.#messages, possibleDuplicates, maxSeq };
  }

  #device(clientId: string): DeviceState {
    let device = this.#devices.get(clientId);
    if (!device) {
      device = { messages: 0, bytes: 0, sentHigh: 0, inFlightHigh: 0, oldestAt: Infinity, oldestSeq: Infinity };
      this.#devices.set(clientId, device);
    }
    return device;
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
    try {
      if (this.#closed) throw this.#closedError();
      checkClientId(clientId, 'append');
      if (message === null || typeof message !== 'object') throw new ValidationError('InvalidOption', 'OutboxStore.append: pass a message { topic, payload, qos? }');
      if (typeof message.topic !== 'string' || message.topic.length === 0 || Buffer.byteLength(message.topic) > 65_535) {
        throw new ValidationError('InvalidTopic', 'OutboxStore.append: topic must be a non-empty string of at most 65,535 bytes');
      }
      const qos = message.qos ?? 1;
      if (qos !== 0 && qos !== 1 && qos !== 2) throw new ValidationError('InvalidOption', `OutboxStore.append: qos must be 0, 1 or 2 (got ${String(qos)})`);
      const payload = payloadBuffer(message.payload);
      const id = message.id;
      if (id !== undefined && (typeof id !== 'string' || id.length === 0 || Buffer.byteLength(id) > MAX_MESSAGE_ID_BYTES)) {
        throw new ValidationError('InvalidOption', `OutboxStore.append: id must be a non-empty string of at most ${MAX_MESSAGE_ID_BYTES} bytes (UTF-8)`);
      }
      const failure = this.#writeFailure;
      if (failure && performance.now() < failure.retryAt) {
        this.#counters.refused.diskFull += 1;
        throw failure.error;
      }
      const seq = this.#nextSeq;
      const acceptedAt = Math.max(this.#lastAcceptedAt, this.#options.clock());
      const key = messageKey(clientId, seq);
      const value = encodeMessage(key, { topic: message.topic, payload, qos, retain: message.retain === true, properties: message.properties, acceptedAt, id });
      const bytes = key.length + value.length;
      const { maxBytes, maxMessages } = this.#options;
      if (bytes > maxBytes) {
        this.#counters.refused.full += 1;
        throw new OutboxError('OutboxFull', `A message of ${bytes} bytes is larger than the outbox's maxBytes (${maxBytes})`, this.dir, { retryable: false });
      }
      if (
        this.#options.whenFull === 'refuse-new' &&
        (this.#messages + this.#queuedMessages + 1 > maxMessages || this.#bytes + this.#queuedBytes + bytes > maxBytes)
      ) {
        this.#counters.refused.full += 1;
        throw new OutboxError(
          'OutboxFull',
          `The outbox in ${this.dir} is full (${this.#messages + this.#queuedMessages} of ${maxMessages} messages, ${this.#bytes + this.#queuedBytes} of ${maxBytes} bytes)`,
          this.dir,
        );
      }
      this.#nextSeq += 1;
      this.#lastAcceptedAt = acceptedAt;
      this.#queuedMessages += 1;
      this.#queuedBytes += bytes;
      if (options.sending === true) {
        const device = this.#device(clientId);
        device.inFlightHigh = Math.max(device.inFlightHigh, seq);
        this.#work.marks.set(clientId, Math.max(this.#work.marks.get(clientId) ?? 0, seq));
      }
      return new Promise((resolve, reject) => {
        this.#work.appends.push({ clientId, seq, key, value, bytes, acceptedAt, id, sending: options.sending === true, resolve, reject });
        this.#schedule();
      });
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * The message was delivered (PUBACK): remove it. Resolves true once removed (the removal reaches the disk with the
   * next fsync; lost to a power cut, the message is sent again, counted as a possible duplicate), false if it was not
   * here (already acknowledged, dropped or expired).
   */
  ack(clientId: string, seq: number): Promise<boolean> {
    const refused = this.#checkCall('ack', clientId, seq);
    return refused ?? this.#remove(clientId, seq, 'delivered');
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
    let removed = 0;
    let left = 0;
    let done!: (count: number) => void;
    const all = new Promise<number>((resolve) => (done = resolve));
    const settle = (gone: boolean): void => {
      if (gone) removed += 1;
      if (--left === 0) done(removed);
    };
    for (const seq of seqs) {
      if (this.#removed.has(seq)) continue;
      this.#removed.add(seq);
      left += 1;
      this.#work.removals.push({ clientId, seq, reason: 'delivered', resolve: settle });
    }
    if (left === 0) return Promise.resolve(0);
    this.#schedule();
    return all;
  }

  /**
   * The broker refused the message (the connector's `maxDeliveryAttempts`, or an MQTT 5 reason code): remove it,
   * reported as a `drop` with reason `rejected` and counted in `stats().dropped.rejected`. Resolves as {@link ack}.
   */
  reject(clientId: string, seq: number): Promise<boolean> {
    const refused = this.#checkCall('reject', clientId, seq);
    return refused ?? this.#remove(clientId, seq, 'rejected');
  }

  /** The arguments of a call about one message, checked: a rejected promise to return, or undefined. */
  #checkCall(what: string, clientId: string, seq: number): Promise<never> | undefined {
    try {
      if (this.#closed) throw this.#closedError();
      checkClientId(clientId, what);
      checkSeq(seq, what);
      return undefined;
    } catch (error) {
      return Promise.reject(error);
    }
  }

  #remove(clientId: string, seq: number, reason: PendingRemoval['reason']): Promise<boolean> {
    if (this.#removed.has(seq)) return Promise.resolve(false);
    this.#removed.add(seq);
    return new Promise((resolve) => {
      this.#work.removals.push({ clientId, seq, reason, resolve });
      this.#schedule();
    });
  }

  /**
   * The caller is about to send the device's messages up to `seq` (in order). Recorded durably before it resolves
   * (in the next group commit), so that after a crash they count as possible duplicates; and, while the connection
   * lives, they are not dropped or expired (the broker may have them already). Call {@link clearSending} when the
   * connection is lost.
   */
  markSending(clientId: string, seq: number): Promise<void> {
    const refused = this.#checkCall('markSending', clientId, seq);
    if (refused) return refused;
    const device = this.#device(clientId);
    device.inFlightHigh = Math.max(device.inFlightHigh, seq);
    if (seq <= device.sentHigh) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.#work.marks.set(clientId, Math.max(this.#work.marks.get(clientId) ?? 0, seq));
      this.#work.markWaiters.push({ resolve, reject });
      this.#schedule();
    });
  }

  /** The device's connection was lost: nothing of it is in flight any more (its messages may expire or be dropped again). */
  clearSending(clientId: string): void {
    const device = this.#devices.get(clientId);
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
    if (!Number.isSafeInteger(limit) || limit < 1) throw new ValidationError('InvalidOption', 'OutboxStore.pending: limit must be a positive integer');
    await this.#reopening;
    if (this.#closed) throw this.#closedError();
    const device = this.#devices.get(clientId);
    if (!device || device.messages === 0) return [];
    try {
      return await this.#read(clientId, device, after, limit);
    } catch (error) {
      throw openError(this.dir, error, 'read');
    }
  }

  async #read(clientId: string, device: DeviceState, after: number, limit: number): Promise<OutboxMessage[]> {
    const { ttlMs } = this.#options;
    const cutoff = ttlMs === Infinity ? -Infinity : this.#options.clock() - ttlMs;
    const out: OutboxMessage[] = [];
    let { gt } = messageRange(clientId, after);
    const { lt } = messageRange(clientId, after);
    let expired = false;
    let first = after === 0;
    while (out.length < limit) {
      const page = await this.#db.iterator({ gt, lt, limit: limit - out.length + 16 }).all();
      if (page.length === 0) break;
      for (const [key, value] of page) {
        gt = key;
        const seq = seqOfMessageKey(key);
        if (this.#removed.has(seq)) continue;
        const message = decodeMessage(key, value);
        if (!message) {
          void this.#remove(clientId, seq, 'corrupt');
          continue;
        }
        if (first) {
          // The device's first message is its oldest: the bound becomes exact for free.
          device.oldestAt = message.acceptedAt;
          device.oldestSeq = seq;
          first = false;
        }
        if (message.acceptedAt <= cutoff && seq > device.inFlightHigh) {
          expired = true;
          continue;
        }
        out.push(new OutboxMessage({ clientId, seq, ...message, sentBefore: seq <= device.sentHigh }));
        this.#remember(seq, clientId, key.length + value.length, message.acceptedAt, message.id);
        if (out.length === limit) break;
      }
    }
    if (expired) this.#requestSweep();
    return out;
  }

  /** One device's messages held now and their bytes (in memory; no I/O). */
  device(clientId: string): { readonly messages: number; readonly bytes: number } {
    const device = this.#devices.get(clientId);
    return { messages: device?.messages ?? 0, bytes: device?.bytes ?? 0 };
  }

  /** The ClientIds with messages in the store. */
  devices(): string[] {
    const ids: string[] = [];
    for (const [id, device] of this.#devices) if (device.messages > 0) ids.push(id);
    return ids;
  }

  /** Counters and totals (in memory; no I/O). */
  stats(): OutboxStats {
    let devices = 0;
    for (const device of this.#devices.values()) if (device.messages > 0) devices += 1;
    const c = this.#counters;
    return {
      messages: this.#messages,
      bytes: this.#bytes,
      devices,
      accepted: c.accepted,
      delivered: c.delivered,
      dropped: { ...c.dropped },
      refused: { ...c.refused },
      possibleDuplicates: c.possibleDuplicates,
      writeFailing: this.#writeFailure !== undefined,
    };
  }

  /**
   * Remove the messages whose time to live has passed now (by the store's clock), reporting each. Runs by itself
   * every `sweepIntervalMs`; call it to run now. Resolves with how many expired.
   */
  async expire(): Promise<number> {
    if (this.#closed) throw this.#closedError();
    const before = this.#counters.dropped.expired;
    await new Promise<void>((resolve, reject) => {
      this.#work.sweep = true;
      this.#work.waiters.push({ resolve, reject });
      this.#schedule();
    });
    return this.#counters.dropped.expired - before;
  }

  #requestSweep(): void {
    if (this.#closed || this.#options.ttlMs === Infinity) return;
    this.#work.sweep = true;
    this.#schedule();
  }

  /** Resolves once everything asked so far (appends, acks, marks) is written. */
  flush(): Promise<void> {
    if (this.#closed) return Promise.reject(this.#closedError());
    return new Promise((resolve, reject) => {
      this.#work.waiters.push({ resolve, reject });
      this.#schedule();
    });
  }

  /**
   * Writing failed (`stats().writeFailing`; appends get `OutboxDiskFull` or `OutboxIOError`): try to write again now,
   * e.g. once space was freed, instead of at the first append after a pause (1 s, doubling up to 30 s). Resolves
   * true when the store writes again (what was acknowledged meanwhile is then written too), false when it still
   * cannot.
   */
  async retryWrites(): Promise<boolean> {
    if (this.#closed) throw this.#closedError();
    if (!this.#writeFailure) return true;
    await new Promise<void>((resolve) => {
      this.#work.recover = true;
      // Settled either way: a refusal leaves writeFailing set, which is the answer.
      this.#work.waiters.push({ resolve, reject: () => resolve() });
      this.#schedule();
    });
    return this.#writeFailure === undefined;
  }

  /** @internal Start the expiry timer and look for expired messages now. */
  start(): void {
    if (this.#options.ttlMs === Infinity) return;
    this.#sweepTimer = setInterval(() => this.#requestSweep(), this.#options.sweepIntervalMs);
    this.#sweepTimer.unref();
    this.#requestSweep();
  }

  #hasWork(): boolean {
    const w = this.#work;
    return w.appends.length > 0 || w.removals.length > 0 || w.marks.size > 0 || w.sweep || w.recover || w.waiters.length > 0;
  }

  #schedule(): void {
    if (this.#running) return;
    this.#running = true;
    const run = (): void => void this.#loop();
    if (this.#options.groupCommitMs > 0) setTimeout(run, this.#options.groupCommitMs);
    else setImmediate(run);
  }

  async #loop(): Promise<void> {
    try {
      while (this.#hasWork()) {
        const work = this.#work;
        this.#work = newWork();
        await this.#commit(work);
      }
    } finally {
      this.#running = false;
      if (this.#hasWork()) this.#schedule();
    }
  }

  /** One batch: everything asked since the last one, written with one fsync when anything in it must be durable. */
  async #commit(work: Work): Promise<void> {
    const drops: OutboxDrop[] = [];
    let removed: Removed[] = [];
    let missing: PendingRemoval[] = [];
    try {
      if (this.#writeFailure && (work.appends.length > 0 || work.recover)) {
        try {
          await this.#tryRecover(work.recover);
        } catch (cause) {
          this.#refuse(work.appends, writeError(this.dir, cause));
          work.appends = [];
        }
      }
      ({ removed, missing } = await this.#lookUp(work.removals));
      if (this.#writeFailure) throw this.#writeFailure.error;
      let messages = this.#messages - removed.length + work.appends.length;
      let bytes = this.#bytes - removed.reduce((sum, r) => sum + r.bytes, 0) + work.appends.reduce((sum, a) => sum + a.bytes, 0);
      // Only a sweep or a drop needs it: most batches are appends and acks, and this is per message.
      const skip = work.sweep || this.#options.whenFull === 'drop-oldest' ? new Set(work.removals.map((r) => r.seq)) : new Set<number>();
      const victims: Array<Removed & { reason: OutboxDropReason }> = [];
      const take = (reason: OutboxDropReason, more: () => boolean) => (victim: Removed): boolean => {
        victims.push({ ...victim, reason });
        skip.add(victim.seq);
        messages -= 1;
        bytes -= victim.bytes;
        return more();
      };
      if (work.sweep && this.#options.ttlMs !== Infinity) await this.#expireInto(skip, take('expired', () => victims.length < MAX_REMOVALS_PER_BATCH));
      const { maxMessages, maxBytes } = this.#options;
      const over = (): boolean => messages > maxMessages || bytes > maxBytes;
      if (this.#options.whenFull === 'drop-oldest' && over()) await this.#dropOldestInto(skip, take('full', over));
      // Still over under drop-oldest (what is on disk is in flight, or this write alone is more than the bound): the oldest
      // of this write make room for its newest. They are accepted and dropped at once, never written.
      const droppedAtOnce: PendingAppend[] = [];
      if (this.#options.whenFull === 'drop-oldest') {
        while (over() && work.appends.length > 1) {
          const first = work.appends.shift() as PendingAppend;
          messages -= 1;
          bytes -= first.bytes;
          droppedAtOnce.push(first);
        }
      }
      // What still does not fit (one message, and every older one in flight): refused.
      const refused: PendingAppend[] = [];
      while (over() && work.appends.length > 0) {
        const last = work.appends.pop() as PendingAppend;
        messages -= 1;
        bytes -= last.bytes;
        refused.push(last);
      }
      if (refused.length > 0) this.#refuse(refused, new OutboxError('OutboxFull', `The outbox in ${this.dir} is full, and nothing older may be dropped to make room (every older message is in flight)`, this.dir));
      const marks = this.#mergeMarks(work.marks);
      // Devices left with nothing by an earlier batch lose their mark: tidiness only (a new message's seq is above any
      // mark, so a stale one never counts it as a duplicate), hence one batch late rather than a count per message.
      const emptied = this.#emptied.size === 0 ? [] : [...this.#emptied].filter((clientId) => !this.#devices.has(clientId) && !marks.has(clientId));
      const deferred = this.#deferredDeletes;
      // Straight into LevelDB's chained batch (no operation objects: this runs per message).
      await write(this.#db, (batch) => {
        for (const removal of work.removals) batch.del(messageKey(removal.clientId, removal.seq));
        for (const v of victims) batch.del(messageKey(v.clientId, v.seq));
        for (const a of work.appends) batch.put(a.key, a.value);
        if (work.appends.length > 0) batch.put(SEQ_KEY, encodeSeq(this.#nextSeq));
        for (const [clientId, seq] of marks) batch.put(markKey(clientId), encodeSeq(seq));
        for (const clientId of emptied) batch.del(markKey(clientId));
        for (const key of deferred) batch.del(key);
      }, work.appends.length > 0 || marks.size > 0 || deferred.length > 0);
      // Written: account for it.
      this.#deferredDeletes = [];
      this.#deferredMarks.clear();
      for (const clientId of emptied) this.#emptied.delete(clientId);
      for (const [clientId, seq] of marks) {
        const device = this.#device(clientId);
        device.sentHigh = Math.max(device.sentHigh, seq);
      }
      const atOnce: OutboxDrop[] = [];
      if (droppedAtOnce.length > 0) {
        // Older than the kept ones: accepted first.
        for (const a of droppedAtOnce) {
          this.#queuedMessages -= 1;
          this.#queuedBytes -= a.bytes;
          this.#counters.accepted += 1;
          this.#counters.dropped.full += 1;
          a.resolve({ seq: a.seq, acceptedAt: a.acceptedAt });
          atOnce.push(dropOf({ seq: a.seq, clientId: a.clientId, bytes: a.bytes, acceptedAt: a.acceptedAt, id: a.id }, 'full'));
        }
      }
      for (const a of work.appends) {
        const device = this.#device(a.clientId);
        if (device.messages === 0) {
          device.oldestAt = a.acceptedAt;
          device.oldestSeq = a.seq;
        }
        device.messages += 1;
        device.bytes += a.bytes;
        this.#messages += 1;
        this.#bytes += a.bytes;
        this.#queuedMessages -= 1;
        this.#queuedBytes -= a.bytes;
        this.#counters.accepted += 1;
        if (a.sending) this.#remember(a.seq, a.clientId, a.bytes, a.acceptedAt, a.id);
        a.resolve({ seq: a.seq, acceptedAt: a.acceptedAt });
      }
      // Reported after the callers heard "accepted" (their reactions run first): a drop is news about a message they know.
      if (atOnce.length > 0) {
        queueMicrotask(() => {
          for (const drop of atOnce) this.emit('drop', drop);
        });
      }
      this.#settleRemovals(removed, missing, drops);
      for (const r of work.removals) this.#removed.delete(r.seq);
      for (const v of victims) {
        this.#account(v.seq, v.clientId, v.bytes);
        drops.push(dropOf(v, v.reason));
      }
      for (const w of work.markWaiters) w.resolve();
      for (const w of work.waiters) w.resolve();
    } catch (cause) {
      const error = writeError(this.dir, cause);
      const first = this.#writeFailure === undefined;
      this.#failed(work, error, removed, missing, drops);
      if (first) this.emit('warning', error);
    }
    for (const drop of drops) {
      this.#counters.dropped[drop.reason] += 1;
      this.emit('drop', drop);
    }
  }

  /** Removals: how big each message is (known if handed out, else read), or that it is not there any more. */
  async #lookUp(removals: readonly PendingRemoval[]): Promise<{ removed: Removed[]; missing: PendingRemoval[] }> {
    const removed: Removed[] = [];
    const missing: PendingRemoval[] = [];
    if (removals.length === 0) return { removed, missing };
    const unknown: PendingRemoval[] = [];
    for (const removal of removals) {
      const entry = this.#known.get(removal.seq);
      if (entry?.clientId === removal.clientId) removed.push({ removal, seq: removal.seq, clientId: entry.clientId, bytes: entry.bytes, acceptedAt: entry.acceptedAt, id: entry.id });
      else unknown.push(removal);
    }
    if (unknown.length === 0) return { removed, missing };
    const keys = unknown.map((r) => messageKey(r.clientId, r.seq));
    const values = await this.#db.getMany(keys);
    unknown.forEach((removal, i) => {
      const value = values[i];
      if (value === undefined) missing.push(removal);
      else removed.push({ removal, seq: removal.seq, clientId: removal.clientId, bytes: (keys[i] as Buffer).length + value.length, acceptedAt: acceptedAtOf(value), id: idOf(value) });
    });
    return { removed, missing };
  }

  /** Removals done (written, or kept in memory while writing fails): account, resolve, report. */
  #settleRemovals(removed: readonly Removed[], missing: readonly PendingRemoval[], drops: OutboxDrop[]): void {
    for (const r of removed) {
      this.#account(r.seq, r.clientId, r.bytes);
      const removal = r.removal as PendingRemoval;
      if (removal.reason === 'delivered') this.#counters.delivered += 1;
      else if (removal.reason === 'rejected') drops.push(dropOf(r, 'rejected'));
      else drops.push({ clientId: r.clientId, seq: r.seq, reason: 'corrupt', bytes: r.bytes, acceptedAt: NaN });
      removal.resolve(true);
    }
    // Not there: already removed (acknowledged twice, or dropped or expired, which reported it).
    for (const r of missing) r.resolve(false);
  }

  #remember(seq: number, clientId: string, bytes: number, acceptedAt: number, id: string | undefined): void {
    if (this.#known.size < MAX_KNOWN) this.#known.set(seq, { clientId, bytes, acceptedAt, id });
  }

  #mergeMarks(marks: ReadonlyMap<string, number>): Map<string, number> {
    const merged = new Map(this.#deferredMarks);
    for (const [clientId, seq] of marks) merged.set(clientId, Math.max(merged.get(clientId) ?? 0, seq));
    return merged;
  }

  #refuse(appends: readonly PendingAppend[], error: OutboxError): void {
    for (const a of appends) {
      this.#queuedMessages -= 1;
      this.#queuedBytes -= a.bytes;
      if (error.code === 'OutboxFull') this.#counters.refused.full += 1;
      else this.#counters.refused.diskFull += 1;
      a.reject(error);
    }
  }

  #account(seq: number, clientId: string, bytes: number): void {
    this.#known.delete(seq);
    const device = this.#devices.get(clientId);
    if (device) {
      device.messages -= 1;
      device.bytes -= bytes;
      if (device.messages === 0) {
        this.#devices.delete(clientId);
        this.#emptied.add(clientId);
      }
    }
    this.#messages -= 1;
    this.#bytes -= bytes;
  }

  /**
   * Writing failed: refuse the batch's appends, keep its removals (in memory now, written later) and marks, and write
   * nothing more until {@link #tryRecover} has reopened the store: LevelDB's log may end with a torn record, and a
   * write after it could make the next recovery skip the good records that follow.
   */
  #failed(work: Work, error: OutboxError, removed: readonly Removed[], missing: readonly PendingRemoval[], drops: OutboxDrop[]): void {
    const pause = this.#writeFailure ? this.#writeFailure.pauseMs : FIRST_RETRY_MS;
    this.#writeFailure ??= { error, retryAt: performance.now() + pause, pauseMs: pause };
    for (const a of work.appends) this.#failedKeys.push(a.key);
    this.#refuse(work.appends, error);
    for (const [clientId, seq] of work.marks) this.#deferredMarks.set(clientId, Math.max(this.#deferredMarks.get(clientId) ?? 0, seq));
    for (const removal of work.removals) this.#deferredDeletes.push(messageKey(removal.clientId, removal.seq));
    // Removed for this process (never handed out again: they stay in #removed until written).
    this.#settleRemovals(removed, missing, drops);
    for (const r of missing) this.#removed.delete(r.seq);
    // The lookup itself failed: removed all the same, their bytes unknown until the store is reloaded.
    const settled = new Set<PendingRemoval>([...missing, ...removed.map((r) => r.removal as PendingRemoval)]);
    for (const removal of work.removals) {
      if (settled.has(removal)) continue;
      if (removal.reason === 'delivered') this.#counters.delivered += 1;
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
    let logBytes = 0;
    for (const name of await readdir(this.dir)) {
      if (/^\d+\.log$/.test(name)) logBytes += (await stat(join(this.dir, name))).size;
    }
    const scratch = join(this.dir, 'space-check.tmp');
    try {
      const handle = await openFile(scratch, 'w', 0o600);
      try {
        const chunk = Buffer.alloc(256 * 1024);
        for (let written = 0; written < logBytes + 2 ** 20; written += chunk.length) await handle.write(chunk);
        await handle.sync();
      } finally {
        await handle.close();
      }
    } catch (cause) {
      const error = writeError(this.dir, cause);
      this.#writeFailure = { error, retryAt: performance.now() + Math.min(MAX_RETRY_MS, failure.pauseMs * 2), pauseMs: Math.min(MAX_RETRY_MS, failure.pauseMs * 2) };
      throw error;
    } finally {
      await rm(scratch, { force: true });
    }
    let done!: () => void;
    this.#reopening = new Promise<void>((resolve) => {
      done = resolve;
    });
    try {
      await this.#db.close().catch(() => undefined);
      const db = new this.#engine.ClassicLevel<Buffer, Buffer>(this.dir, levelOptions(this.#options));
      try {
        await db.open();
      } catch (cause) {
        this.#writeFailure = { error: writeError(this.dir, cause), retryAt: performance.now() + failure.pauseMs, pauseMs: failure.pauseMs };
        throw this.#writeFailure.error;
      }
      this.#db = db;
      await write(db, (batch) => {
        for (const key of this.#failedKeys) batch.del(key);
        for (const key of this.#deferredDeletes) batch.del(key);
        for (const [clientId, seq] of this.#deferredMarks) batch.put(markKey(clientId), encodeSeq(seq));
      }, true);
      this.#failedKeys = [];
      this.#deferredDeletes = [];
      this.#deferredMarks.clear();
      this.#writeFailure = undefined;
      await this.load();
      this.#removed.clear();
      this.#known.clear();
    } finally {
      this.#reopening = undefined;
      done();
    }
  }

  /**
   * Read one device's messages from its oldest, in order: `match` decides whether a message not in flight is a
   * candidate (the read stops at the first that is not); `take` receives each candidate and says whether to go on.
   * Returns, when the read was not stopped by `take`, the acceptance time of the oldest message left (Infinity: none)
   * and the seq of the oldest one left that is not in flight (a drop candidate later; Infinity: none).
   */
  async #scanDevice(
    clientId: string,
    device: DeviceState,
    skip: ReadonlySet<number>,
    match: (acceptedAt: number, seq: number) => boolean,
    take: (victim: Removed) => boolean,
  ): Promise<{ oldestLeft: number; firstDroppable: number } | undefined> {
    const { gt, lt } = messageRange(clientId, 0);
    const iterator = this.#db.iterator({ gt, lt });
    let oldestLeft = Infinity;
    try {
      // Small first: a drop usually needs one or two messages of a device, and a page reads whole payloads.
      for (let size = 8, page = await iterator.nextv(size); page.length > 0; size = Math.min(SCAN_PAGE, size * 4), page = await iterator.nextv(size)) {
        for (const [key, value] of page) {
          const seq = seqOfMessageKey(key);
          if (skip.has(seq) || this.#removed.has(seq)) continue;
          const raw = acceptedAtOf(value);
          // A header too short to say when: old enough for anything (it is corrupt; removing it is right).
          const acceptedAt = Number.isNaN(raw) ? -Infinity : raw;
          if (seq <= device.inFlightHigh) {
            oldestLeft = Math.min(oldestLeft, acceptedAt);
            continue;
          }
          if (!match(acceptedAt, seq)) return { oldestLeft: Math.min(oldestLeft, acceptedAt), firstDroppable: seq };
          if (!take({ seq, clientId, bytes: key.length + value.length, acceptedAt, id: idOf(value) })) return undefined;
        }
      }
    } finally {
      await iterator.close();
    }
    return { oldestLeft, firstDroppable: Infinity };
  }

  /** The expired messages (not in flight), from the devices whose oldest may be old enough. */
  async #expireInto(skip: ReadonlySet<number>, take: (victim: Removed) => boolean): Promise<void> {
    const cutoff = this.#options.clock() - this.#options.ttlMs;
    let more = true;
    for (const [clientId, device] of this.#devices) {
      if (device.messages === 0 || device.oldestAt > cutoff) continue;
      const left = await this.#scanDevice(clientId, device, skip, (at) => at <= cutoff, (victim) => (more = take(victim)));
      if (left) device.oldestAt = left.oldestLeft;
      if (!more) {
        this.#work.sweep = true;
        return;
      }
    }
  }

  /**
   * The oldest messages not in flight, of any device, until `take` has enough: a merge of the devices' oldest
   * messages by seq, reading a device only when its lower bound is the smallest (the read makes the bound exact).
   */
  async #dropOldestInto(skip: ReadonlySet<number>, take: (victim: Removed) => boolean): Promise<void> {
    /** Exact seq of a device's oldest droppable message, once read. */
    const known = new Map<string, number>();
    for (let more = true; more; ) {
      let best: string | undefined;
      let bestSeq = Infinity;
      let nextSeq = Infinity;
      for (const [clientId, device] of this.#devices) {
        const seq = known.get(clientId) ?? device.oldestSeq;
        if (seq < bestSeq) {
          nextSeq = bestSeq;
          bestSeq = seq;
          best = clientId;
        } else if (seq < nextSeq) nextSeq = seq;
      }
      if (best === undefined) return;
      let took = 0;
      const left = await this.#scanDevice(best, this.#devices.get(best) as DeviceState, skip, (_at, seq) => seq < nextSeq, (victim) => {
        took += 1;
        return (more = take(victim));
      });
      // Nothing taken: its oldest droppable message is younger than the next device's bound; know it and pick again
      // (each such round makes one bound exact and larger, so the merge ends).
      if (left) known.set(best, left.firstDroppable);
      else if (took === 0) return;
    }
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
      await this.#reopening;
      if (!this.#writeFailure) await this.#db.del(metaKey('open'), { sync: true }).catch(() => undefined);
      await this.#db.close().catch(() => undefined);
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

/**
 * One LevelDB write batch, filled by `fill` (nothing written when it adds nothing). The chained form: abstract-level's
 * array form copies and checks every operation object, which cost 2 to 4 times the CPU per message
 * (bench/outbox-store.bench.mjs, measured while choosing).
 */
async function write(db: Level, fill: (batch: { put(key: Buffer, value: Buffer): void; del(key: Buffer): void }) => void, sync: boolean): Promise<void> {
  const batch = db.batch();
  try {
    fill(batch);
  } catch (error) {
    await batch.close();
    throw error;
  }
  if (batch.length === 0) return batch.close();
  await batch.write({ sync });
}

function levelOptions(options: ResolvedOutboxOptions): Record<string, unknown> {
  return {
    keyEncoding: 'buffer',
    valueEncoding: 'buffer',
    createIfMissing: true,
    writeBufferSize: options.writeBufferBytes,
    // Reads are of recent messages (in the write buffer) or once, in order, after an outage: a small cache is enough.
    cacheSize: 2 * 2 ** 20,
  };
}

/** Check every LevelDB log in `dir` before LevelDB replays it. */
async function checkLogs(dir: string): Promise<{ tornTailBytes: number; corruptBytes: number; checks: Array<LogCheck & { file: string }> }> {
  const checks: Array<LogCheck & { file: string }> = [];
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return { tornTailBytes: 0, corruptBytes: 0, checks };
  }
  for (const name of names.filter((n) => /^\d+\.log$/.test(n)).sort()) {
    try {
      checks.push({ file: name, ...(await checkLogFile(join(dir, name))) });
    } catch {
      // Unreadable here means unreadable to LevelDB too: its open reports it.
    }
  }
  return {
    tornTailBytes: checks.reduce((sum, c) => sum + c.tornTailBytes, 0),
    corruptBytes: checks.reduce((sum, c) => sum + c.corruptBytes, 0),
    checks,
  };
}

/** What LevelDB's failure to open (or read) a store means here. */
function openError(dir: string, error: unknown, what: 'opened' | 'read' = 'opened'): OutboxError {
  if (error instanceof OutboxError) return error;
  const code = levelCode(error);
  if (code === 'LEVEL_LOCKED') {
    return new OutboxError('OutboxLocked', `The outbox in ${dir} is open in another process or already open in this one`, dir, { cause: error });
  }
  if (code === 'LEVEL_CORRUPTION') return new OutboxError('OutboxCorrupt', `The outbox in ${dir} is corrupt (${(error as { cause?: Error }).cause?.message ?? 'LevelDB'})`, dir, { cause: error });
  if (diskFullIn(error)) return new OutboxError('OutboxDiskFull', `The outbox in ${dir} cannot be ${what}: the disk is full or a size limit was reached`, dir, { cause: error });
  const message = (error as { cause?: Error }).cause?.message ?? (error as Error).message;
  return new OutboxError('OutboxIOError', `The outbox in ${dir} cannot be ${what} (${message})`, dir, { cause: error });
}

/**
 * Open (or create) the durable outbox in `options.dir`. One process at a time holds a directory: a second opener, in
 * this process or another, gets `OutboxLocked`; a process that died (kill -9, power cut) holds nothing.
 *
 * Reopening after a crash recovers every message that was accepted; a write cut short (power cut, full disk) or
 * damaged bytes cost only what they held, reported by an `OutboxRecovered` warning (also in `store.recovery`).
 *
 * @throws ValidationError `InvalidOption`; ConfigurationError `MissingDependency` without classic-level;
 *   OutboxError `OutboxLocked`, `OutboxCorrupt`, `OutboxDiskFull`, `OutboxIOError`.
 * @example
 * const store = await openOutboxStore({ dir: '/var/lib/gateway/outbox', maxBytes: 256 * 2 ** 20, whenFull: 'drop-oldest' });
 * store.on('drop', ({ clientId, seq, reason }) => log.warn('dropped', { clientId, seq, reason }));
 * const { seq } = await store.append('GID_x@@@dev-1', { topic: 'telemetry/dev-1', payload, qos: 1 });
 */
export async function openOutboxStore(options: OutboxStoreOptions): Promise<OutboxStore> {
  const resolved = resolveOutboxOptions(options);
  const level = await loadEngine();
  const { dir } = resolved;
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (cause) {
    throw openError(dir, cause);
  }
  // Before LevelDB replays (and then deletes) its logs: what they hold, and where they are damaged.
  const logs = await checkLogs(dir);
  const db = new level.ClassicLevel<Buffer, Buffer>(dir, levelOptions(resolved));
  try {
    await db.open();
  } catch (cause) {
    throw openError(dir, cause);
  }
  try {
    const format = await db.get(metaKey('format'));
    if (format !== undefined && format[0] !== RECORD_FORMAT) {
      throw new OutboxError('OutboxCorrupt', `The outbox in ${dir} was written in format ${String(format[0])}, which this version does not read`, dir, { retryable: false });
    }
    const unclean = (await db.get(metaKey('open'))) !== undefined;
    const store = new OutboxStore(resolved, level, db);
    const found = await store.load();
    store.begin(Math.max(found.maxSeq + 1, decodeSeq(await db.get(metaKey('seq'))) ?? 1), {
      uncleanShutdown: unclean,
      messages: found.messages,
      possibleDuplicates: found.possibleDuplicates,
      tornTailBytes: logs.tornTailBytes,
      corruptBytes: logs.corruptBytes,
    });
    await db.batch(
      [
        { type: 'put', key: metaKey('format'), value: Buffer.from([RECORD_FORMAT]) },
        { type: 'put', key: metaKey('open'), value: Buffer.from(JSON.stringify({ pid: process.pid, openedAt: resolved.clock() })) },
      ],
      { sync: true },
    );
    if (unclean || logs.tornTailBytes > 0 || logs.corruptBytes > 0) {
      const damage = logs.checks.filter((c) => c.firstDamageAt !== undefined).map((c) => `${c.file} at byte ${String(c.firstDamageAt)}`);
      const warning = new OutboxError(
        'OutboxRecovered',
        `The outbox in ${dir} was recovered${unclean ? ' after an unclean shutdown' : ''}: ${found.messages} messages kept, ${found.possibleDuplicates} of them possibly delivered already` +
          (logs.tornTailBytes > 0 ? `; the last write was cut short (${logs.tornTailBytes} bytes dropped)` : '') +
          (logs.corruptBytes > 0 ? `; ${logs.corruptBytes} damaged bytes skipped with the records they held` : '') +
          (damage.length > 0 ? ` (${damage.join(', ')})` : ''),
        dir,
      );
      setImmediate(() => store.emit('warning', warning));
    }
    store.start();
    return store;
  } catch (error) {
    await db.close().catch(() => undefined);
    throw isApsaraMqDeviceError(error) ? error : openError(dir, error);
  }
}

/**
 * Salvage a store that {@link openOutboxStore} refuses as `OutboxCorrupt`: LevelDB's repair reads every table and
 * log it can and rebuilds the store from them (damaged records are lost; nothing is invented). Run it with the store
 * closed; open the store again afterwards. Keep a copy of the directory first if its contents matter.
 *
 * @throws ConfigurationError `MissingDependency` without classic-level; OutboxError `OutboxIOError`.
 */
export async function repairOutboxStore(dir: string): Promise<void> {
  if (typeof dir !== 'string' || dir.length === 0) throw new ValidationError('InvalidOption', 'repairOutboxStore: dir must be the path of a directory');
  const level = await loadEngine();
  try {
    await level.ClassicLevel.repair(dir);
  } catch (cause) {
    throw openError(dir, cause);
  }
}

import { ValidationError } from '../errors.js';

/** What to do with a new message when the outbox is at a bound. */
export type WhenFull = 'refuse-new' | 'drop-oldest';

/** Options of {@link openOutboxStore}. */
export interface OutboxStoreOptions {
  /** The directory of the store (created, mode 0700). One process at a time. */
  readonly dir: string;
  /**
   * Upper bound of the messages' bytes (topic, payload, properties, ClientId and 32 bytes of key and header each).
   * The directory on disk is larger by what LevelDB has not compacted yet (see README, "Store and forward").
   * @default 64 MiB
   */
  readonly maxBytes?: number;
  /** Upper bound of the number of messages, all devices together. @default 100_000 */
  readonly maxMessages?: number;
  /**
   * Time to live in ms of wall-clock time since a message was accepted, across restarts: a message that was not
   * delivered within it is removed and reported (reason `expired`), never sent after that. `Infinity`: no expiry.
   * @default 7_200_000 (2 h)
   */
  readonly ttlMs?: number;
  /**
   * At a bound: `refuse-new` rejects the new message with `OutboxFull` (what was accepted stays until delivered or
   * expired); `drop-oldest` removes the oldest messages not in flight, of any device, to make room, each reported
   * (reason `full`).
   * @default 'refuse-new'
   */
  readonly whenFull?: WhenFull;
  /**
   * How long the first write of an idle store waits for others to join its fsync. 0: none; writes that arrive
   * while an fsync runs still share the next one.
   * @default 0
   */
  readonly groupCommitMs?: number;
  /** Wall clock in ms since the epoch (acceptance times and the time to live). @default Date.now */
  readonly clock?: () => number;
  /** How often expired messages are looked for. @default ttlMs / 10, between 1 s and 60 s */
  readonly sweepIntervalMs?: number;
  /** LevelDB's write buffer (memory and its log file before a table is written). @default 4 MiB */
  readonly writeBufferBytes?: number;
}

/** The defaults of {@link OutboxStoreOptions}. */
export const OUTBOX_DEFAULTS = Object.freeze({
  maxBytes: 64 * 2 ** 20,
  maxMessages: 100_000,
  ttlMs: 2 * 60 * 60 * 1000,
  whenFull: 'refuse-new' as WhenFull,
  groupCommitMs: 0,
  writeBufferBytes: 4 * 2 ** 20,
});

/** The smallest `maxBytes`: one message of the service's largest size (64 KiB) and its header. */
export const MIN_OUTBOX_BYTES = 4096;

/** Options with every default filled in and checked. */
export interface ResolvedOutboxOptions {
  readonly dir: string;
  readonly maxBytes: number;
  readonly maxMessages: number;
  readonly ttlMs: number;
  readonly whenFull: WhenFull;
  readonly groupCommitMs: number;
  readonly clock: () => number;
  readonly sweepIntervalMs: number;
  readonly writeBufferBytes: number;
}

function positiveInteger(name: string, value: number, min: number): number {
  if (!Number.isSafeInteger(value) || value < min) {
    throw new ValidationError('InvalidOption', `openOutboxStore: ${name} must be an integer of at least ${min} (got ${String(value)})`);
  }
  return value;
}

/**
 * Check the options once, at the edge.
 * @throws ValidationError `InvalidOption` naming the option.
 */
export function resolveOutboxOptions(options: OutboxStoreOptions): ResolvedOutboxOptions {
  if (options === null || typeof options !== 'object') throw new ValidationError('InvalidOption', 'openOutboxStore: pass an options object with at least dir');
  if (typeof options.dir !== 'string' || options.dir.length === 0) throw new ValidationError('InvalidOption', 'openOutboxStore: dir must be the path of a directory');
  const maxBytes = positiveInteger('maxBytes', options.maxBytes ?? OUTBOX_DEFAULTS.maxBytes, MIN_OUTBOX_BYTES);
  const maxMessages = positiveInteger('maxMessages', options.maxMessages ?? OUTBOX_DEFAULTS.maxMessages, 1);
  const ttlMs = options.ttlMs ?? OUTBOX_DEFAULTS.ttlMs;
  if (ttlMs !== Infinity) positiveInteger('ttlMs', ttlMs, 1);
  const whenFull = options.whenFull ?? OUTBOX_DEFAULTS.whenFull;
  if (whenFull !== 'refuse-new' && whenFull !== 'drop-oldest') {
    throw new ValidationError('InvalidOption', `openOutboxStore: whenFull must be 'refuse-new' or 'drop-oldest' (got ${JSON.stringify(whenFull)})`);
  }
  const groupCommitMs = options.groupCommitMs ?? OUTBOX_DEFAULTS.groupCommitMs;
  if (!Number.isFinite(groupCommitMs) || groupCommitMs < 0 || groupCommitMs > 1000) {
    throw new ValidationError('InvalidOption', `openOutboxStore: groupCommitMs must be from 0 to 1000 (got ${String(groupCommitMs)})`);
  }
  const clock = options.clock ?? Date.now;
  if (typeof clock !== 'function') throw new ValidationError('InvalidOption', 'openOutboxStore: clock must be a function returning ms since the epoch');
  const sweepIntervalMs = positiveInteger(
    'sweepIntervalMs',
    options.sweepIntervalMs ?? (ttlMs === Infinity ? 60_000 : Math.min(60_000, Math.max(1000, Math.round(ttlMs / 10)))),
    1,
  );
  const writeBufferBytes = positiveInteger('writeBufferBytes', options.writeBufferBytes ?? OUTBOX_DEFAULTS.writeBufferBytes, 64 * 1024);
  return { dir: options.dir, maxBytes, maxMessages, ttlMs, whenFull, groupCommitMs, clock, sweepIntervalMs, writeBufferBytes };
}

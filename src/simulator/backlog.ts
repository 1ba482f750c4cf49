/**
 * The backend subscriber's backlog at the end of a game day. Its session is persistent: after a broker restart what
 * the devices published before it was back is queued for it at the broker, and a broker that paces offline delivery
 * as the cloud does (reference §5.7: a first batch 5 to 10 s after the reconnect, then 30 every 5 s; the emulator's
 * default) may still hold some when the run ends. Those messages are not lost. So when the subscriber still misses
 * messages after the drain, the run waits (at most `backlogTimeoutMs`) while the backlog drains, watching the
 * subscriber's arrivals and (on an emulator) the count of its queue; then it reads what the queue still holds
 * (`GET /_emulator/queue`) and counts those messages `queued`. When the queue cannot be read (the cloud, an emulator
 * without that control, a list cut at its cap) what the broker acknowledged and did not deliver is `maybeQueued`.
 *
 * Every read is bounded in time (and during the wait by the wait's deadline); the wait ends at once on the run's
 * signal (Ctrl+C). Counting happens after all this, so a message that arrives until then is delivered, not lost.
 */
import type { Clock } from './clock.js';
import type { QueueReadout } from './emulator-controls.js';
import { type MessageLedger, PAYLOAD_ID_SIZE, payloadIdentity } from './ledger.js';

/** Longest one read of the subscriber's queue may take (during the wait, no later than the wait's deadline either). */
export const QUEUE_READ_TIMEOUT_MS = 5_000;

/** A read of the backend subscriber's queue at the broker ({@link EmulatorControls.queue} of its ClientId). */
export type ReadQueue = (options: { countOnly?: boolean; payloadBytes?: number; timeoutMs: number; signal?: AbortSignal }) => Promise<QueueReadout>;

/** What {@link settleBacklog} needs. */
export interface BacklogInput {
  readonly ledger: MessageLedger;
  /** `undefined`: the target is not an emulator (the cloud): its queue cannot be read. */
  readonly readQueue: ReadQueue | undefined;
  readonly clock: Clock;
  /** Longest wait, ms; 0: none (the queue is still read). */
  readonly timeoutMs: number;
  /** The run's signal: its abort (Ctrl+C) ends the wait. */
  readonly signal?: AbortSignal | undefined;
  /** Listen to the subscriber's arrivals (each message received); returns what stops listening. */
  readonly onArrival: (listener: () => void) => () => void;
  readonly onWarning?: ((message: string) => void) | undefined;
  /**
   * Did the subscriber lose its connection during the run? One that never did had no offline backlog at the broker:
   * when its queue cannot be read, what it misses is lost, not maybe queued. `undefined`: it may have.
   */
  readonly subscriberInterrupted?: (() => boolean) | undefined;
}

/** How a wait ended. */
export type WaitEnd = 'delivered' | 'queue-empty' | 'timeout' | 'interrupted';

/** What {@link settleBacklog} did. */
export interface BacklogOutcome {
  /** How its wait ended; `undefined` when nothing was missing. */
  readonly waited: WaitEnd | undefined;
  readonly waitedMs: number;
  /** How the queue was read at the end: whole, cut at its cap, not at all (`unreadable`), or not needed (`none`). */
  readonly queue: 'read' | 'truncated' | 'unreadable' | 'none';
}

const seconds = (ms: number): string => `${Math.round(ms / 100) / 10} s`;

/**
 * Wait while the subscriber's backlog drains: until every message on its way has arrived (`delivered`), its queue
 * at the broker reads empty (`queue-empty`), `timeoutMs` passes (`timeout`) or the signal aborts (`interrupted`).
 * Driven by the arrivals: the queue's count is read at the start and again after arrivals (one read at a time, each
 * bounded by the deadline), never on a timer. A queue that cannot be read leaves the arrivals and the deadline.
 * `onWaiting` is called once, when the wait does not end at its first look (with the queue's count, when read); if it
 * throws, the wait ends and rejects with its error.
 */
export function waitForBacklog(input: BacklogInput, onWaiting: (count: number | undefined) => void = () => undefined): Promise<WaitEnd> {
  const { ledger, clock, signal } = input;
  return new Promise((resolve, reject) => {
    const deadline = clock.now() + input.timeoutMs;
    const reads = new AbortController();
    let readQueue = input.readQueue;
    let reading = false;
    let again = false;
    let done = false;
    let told = false;
    const tell = (count: number | undefined): void => {
      if (told || done) return;
      told = true;
      try {
        onWaiting(count);
      } catch (error) {
        // The caller's to hear (a warning callback that throws), not an unhandled rejection of a read's reaction.
        finish(undefined, error);
      }
    };
    const finish = (end: WaitEnd | undefined, error?: unknown): void => {
      if (done) return;
      done = true;
      clock.clearTimeout(timer);
      stopListening();
      signal?.removeEventListener('abort', onAbort);
      reads.abort();
      if (end === undefined) reject(error);
      else resolve(end);
    };
    const read = (): void => {
      if (readQueue === undefined || done) return;
      if (reading) {
        again = true;
        return;
      }
      reading = true;
      again = false;
      const timeoutMs = Math.max(1, Math.min(QUEUE_READ_TIMEOUT_MS, deadline - clock.now()));
      readQueue({ countOnly: true, timeoutMs, signal: reads.signal }).then(
        (view) => {
          reading = false;
          if (view.count === 0) finish('queue-empty');
          else {
            tell(view.count);
            if (again) read();
          }
        },
        () => {
          reading = false;
          readQueue = undefined;
          tell(undefined);
        },
      );
    };
    const onArrival = (): void => {
      if (ledger.outstanding === 0) finish('delivered');
      else read();
    };
    const onAbort = (): void => finish('interrupted');
    const stopListening = input.onArrival(onArrival);
    const timer = clock.setTimeout(() => finish('timeout'), input.timeoutMs);
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted === true) finish('interrupted');
    else if (ledger.outstanding === 0) finish('delivered');
    else if (readQueue === undefined) tell(undefined);
    else read();
  });
}

/**
 * After the run (the devices disconnected, their held messages known): wait for the backend subscriber's backlog
 * ({@link waitForBacklog}), then mark in the ledger what its queue at the broker still holds (`queued`), or, when
 * that cannot be read whole, that what the broker acknowledged and did not deliver is `maybeQueued`. Says what it
 * does through `onWarning`. Call before counting.
 */
export async function settleBacklog(input: BacklogInput): Promise<BacklogOutcome> {
  const { ledger, clock } = input;
  if (ledger.outstanding === 0) return { waited: undefined, waitedMs: 0, queue: 'none' };
  const started = clock.now();
  let waited: WaitEnd = input.signal?.aborted === true ? 'interrupted' : 'timeout';
  if (input.signal?.aborted !== true && input.timeoutMs > 0) {
    waited = await waitForBacklog(input, (count) => {
      const missing = ledger.outstanding;
      const held = count === undefined ? '' : ` (its queue at the broker holds ${count})`;
      input.onWarning?.(`The backend subscriber still misses ${missing} message${missing === 1 ? '' : 's'}${held}: waiting up to ${seconds(input.timeoutMs)} (backlogTimeoutMs, --backlog-timeout) while its backlog drains; Ctrl+C ends the wait`);
    });
  }
  const waitedMs = clock.now() - started;
  if (waited === 'delivered' || waited === 'queue-empty') return { waited, waitedMs, queue: waited === 'queue-empty' ? 'read' : 'none' };
  // What came meanwhile is delivered: nothing left to look for.
  if (ledger.outstanding === 0) return { waited, waitedMs, queue: 'none' };
  const queue = await markQueued(input);
  return { waited, waitedMs, queue };
}

/** Read the subscriber's queue whole (each payload's identity only) and mark its messages queued in the ledger. */
async function markQueued(input: BacklogInput): Promise<BacklogOutcome['queue']> {
  const { ledger, readQueue } = input;
  // Connected throughout: every message was sent to it at once, nothing queued for it offline.
  const maybe = input.subscriberInterrupted?.() !== false;
  const unknown = (): void => {
    if (maybe) ledger.queueUnknown();
  };
  const rest = maybe ? 'counted maybeQueued' : 'lost (the backend subscriber never lost its connection: nothing was queued for it offline)';
  if (readQueue === undefined) {
    unknown();
    return 'unreadable';
  }
  try {
    const view = await readQueue({ payloadBytes: PAYLOAD_ID_SIZE, timeoutMs: QUEUE_READ_TIMEOUT_MS });
    for (const message of view.messages ?? []) {
      const id = payloadIdentity(Buffer.from(message.payload, 'base64'));
      if (id !== undefined) ledger.queued(id.index, id.seq);
    }
    if (!view.truncated) return 'read';
    unknown();
    input.onWarning?.(`The backend subscriber's queue at the broker holds ${view.count} messages, more than one answer lists: those not listed are ${rest}`);
    return 'truncated';
  } catch (error) {
    unknown();
    input.onWarning?.(`The backend subscriber's queue at the broker could not be read (${(error as Error).message}): what the broker acknowledged and did not deliver is ${maybe ? 'counted maybeQueued, not lost' : rest}`);
    return 'unreadable';
  }
}

/**
 * The warning a game day against an emulator given by endpoint gets before it starts, when that emulator paces or
 * bounds a persistent session's queue (its defaults, the cloud's): after a broker restart the backend subscriber's
 * backlog may outlast the run. `undefined` when it does neither. `view` is a count-only read of the subscriber's
 * queue (it says the emulator's offline delivery), `undefined` when that could not be read.
 */
export function backlogWarning(endpoint: string, view: QueueReadout | undefined, timeoutMs: number): string | undefined {
  const after = `the run waits up to ${seconds(timeoutMs)} (--backlog-timeout) for the backend subscriber's backlog after the run`;
  if (view === undefined) {
    return `The emulator at ${endpoint} does not show a session's queue (GET /_emulator/queue: an older version?): after a broker restart ${after}, and counts what it still misses maybeQueued, not lost`;
  }
  const { offline } = view;
  const paced = offline.delivery === 'paced';
  const bounded = offline.maxMessages !== null || offline.maxBytes !== null;
  if (!paced && !bounded) return undefined;
  const pace = paced ? `delivers a resumed persistent session's queue at the cloud's pace (a first batch ${offline.detectionDelayMs.min} to ${offline.detectionDelayMs.max} ms after the reconnect, then ${offline.batchSize} every ${offline.batchIntervalMs} ms)` : '';
  const bound = bounded ? `bounds it (${offline.maxMessages ?? 'no limit on'} messages, ${offline.maxBytes ?? 'no limit on'} bytes, ${offline.policy}: what it lets go is lost)` : '';
  return `The emulator at ${endpoint} ${[pace, bound].filter((s) => s !== '').join(' and ')}: after a broker restart the backend subscriber's backlog may outlast the run; ${after}, and counts what is still queued at the broker as queued, not lost. For exact counts start it with --offline-delivery immediate --max-offline-messages none --max-offline-bytes none`;
}

/**
 * The pace of a gateway's CONNECTs: one queue for every device, let through at `ratePerSecond`, each then held a
 * further uniform [0, jitterMs) ms. Slot k of a busy run is at `origin + k / rate`, so a timer a little late catches
 * up instead of losing slots; one later than {@link MAX_CATCH_UP_MS} (the process was busy: a burst of credential
 * reads, a long GC) is forgiven instead, so the broker never gets more than the rate plus that much in any second.
 * A run that starts after the queue went idle starts afresh (no burst saved up while idle: a quiet gateway that
 * loses its uplink sends its first CONNECT at once and the rest at the pace).
 */
import { AbortedError, ValidationError } from '../errors.js';
import { MAX_TIMER_MS } from '../util/backoff.js';

/** How late the slots may be caught up, ms: at most 2% of a second's CONNECTs go as a burst after a stall. */
export const MAX_CATCH_UP_MS = 20;

/** Options of {@link ConnectPacer}. */
export interface ConnectPacerOptions {
  /** CONNECTs let through per second, > 0; `Infinity` for no pacing. */
  readonly ratePerSecond: number;
  /** Each CONNECT let through waits a further uniform [0, jitterMs) ms (spreads gateways restarted together). @default 0 */
  readonly jitterMs?: number;
  /** Randomness of the jitter, [0, 1). @default Math.random */
  readonly random?: () => number;
  /** The clock, ms (monotonic). @default performance.now */
  readonly now?: () => number;
}

interface Waiter {
  readonly resolve: () => void;
  readonly reject: (error: Error) => void;
  readonly signal: AbortSignal | undefined;
  readonly onAbort: (() => void) | undefined;
  done: boolean;
}

/** A FIFO of CONNECTs let through at a rate: what every connection of a gateway awaits (the connector's `connectGate`). */
export class ConnectPacer {
  readonly #intervalMs: number;
  readonly #jitterMs: number;
  readonly #random: () => number;
  readonly #now: () => number;
  /** Waiters in order; `#head` is the next to go (an array with a moving head: 10,000 waiters shift in O(1)). */
  #queue: (Waiter | undefined)[] = [];
  #head = 0;
  #origin = -Infinity;
  #slots = 0;
  #timer: NodeJS.Timeout | undefined;
  #granted = 0;
  #live = 0;
  #closed = false;

  /** @throws ValidationError `InvalidOption` for a rate that is not a positive number, or a negative jitter. */
  constructor(options: ConnectPacerOptions) {
    const { ratePerSecond, jitterMs = 0 } = options;
    if (typeof ratePerSecond !== 'number' || !(ratePerSecond > 0)) {
      throw new ValidationError('InvalidOption', `Option connectRate must be a number of CONNECTs per second above 0 (Infinity for no pacing), not ${String(ratePerSecond)}`);
    }
    if (typeof jitterMs !== 'number' || !Number.isFinite(jitterMs) || jitterMs < 0 || jitterMs > MAX_TIMER_MS) {
      throw new ValidationError('InvalidOption', `Option connectJitterMs must be a number of milliseconds from 0, not ${String(jitterMs)}`);
    }
    this.#intervalMs = 1000 / ratePerSecond;
    this.#jitterMs = jitterMs;
    this.#random = options.random ?? Math.random;
    this.#now = options.now ?? (() => performance.now());
  }

  /** CONNECTs waiting for their slot (those given up are not counted). */
  get waiting(): number {
    return this.#live;
  }

  /** Entries of the queue not yet passed: the waiting, and those given up that were not skipped yet. */
  get #queued(): number {
    return this.#queue.length - this.#head;
  }

  /** CONNECTs let through so far. */
  get granted(): number {
    return this.#granted;
  }

  /**
   * Resolves when it is this caller's turn (and its jitter has passed). Rejects with `Aborted` when `signal` fires
   * first (its place goes to the next), or when the pacer is closed.
   */
  wait(signal?: AbortSignal): Promise<void> {
    if (this.#closed) return Promise.reject(new AbortedError('The connect pacer is closed'));
    if (signal?.aborted) return Promise.reject(new AbortedError('Waiting for a connect slot was aborted', signal.reason));
    return new Promise<void>((resolve, reject) => {
      let waiter: Waiter;
      const onAbort = signal
        ? (): void => {
            if (waiter.done) return;
            waiter.done = true;
            this.#live -= 1;
            reject(new AbortedError('Waiting for a connect slot was aborted', signal.reason));
          }
        : undefined;
      waiter = { resolve, reject, signal, onAbort, done: false };
      if (signal && onAbort) signal.addEventListener('abort', onAbort, { once: true });
      this.#skipDone();
      // Nobody waited when the next slot came: a new run starts now (the slots of the idle time are not saved up).
      // A waiter late for its slot (a late timer) keeps it: the run catches up and holds its rate.
      if (this.#live === 0 && this.#now() >= this.#origin + this.#slots * this.#intervalMs) {
        this.#origin = this.#now();
        this.#slots = 0;
      }
      this.#queue.push(waiter);
      this.#live += 1;
      this.#release();
    });
  }

  /** Reject every waiter with `Aborted` and take no more. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    for (let i = this.#head; i < this.#queue.length; i++) {
      const waiter = this.#queue[i] as Waiter;
      if (waiter.done) continue;
      waiter.done = true;
      if (waiter.onAbort) waiter.signal?.removeEventListener('abort', waiter.onAbort);
      waiter.reject(new AbortedError('The connect pacer is closed'));
    }
    this.#live = 0;
    this.#queue = [];
    this.#head = 0;
  }

  /** Let through every waiter whose slot has come; arm the timer for the next one. */
  #release(): void {
    const now = this.#now();
    this.#skipDone();
    const lag = now - (this.#origin + this.#slots * this.#intervalMs);
    if (lag > MAX_CATCH_UP_MS && this.#queued > 0) this.#origin += lag - MAX_CATCH_UP_MS;
    while (this.#queued > 0 && this.#origin + this.#slots * this.#intervalMs <= now) {
      const waiter = this.#queue[this.#head] as Waiter;
      this.#queue[this.#head++] = undefined;
      this.#slots += 1;
      this.#grant(waiter);
      this.#skipDone();
    }
    // Passed entries are let go at once (a waiter holds its caller's signal, about a kilobyte), and the array when
    // the queue is empty or mostly passed.
    if (this.#head === this.#queue.length) {
      this.#queue = [];
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
    if (this.#queued > 0 && this.#timer === undefined) {
      const delay = Math.max(0, this.#origin + this.#slots * this.#intervalMs - now);
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.#release();
      }, Math.min(Math.ceil(delay), MAX_TIMER_MS));
    }
  }

  #skipDone(): void {
    while (this.#head < this.#queue.length && (this.#queue[this.#head] as Waiter).done) this.#queue[this.#head++] = undefined;
  }

  #grant(waiter: Waiter): void {
    waiter.done = true;
    this.#live -= 1;
    this.#granted += 1;
    if (waiter.onAbort) waiter.signal?.removeEventListener('abort', waiter.onAbort);
    const jitter = this.#jitterMs > 0 ? Math.floor(this.#random() * this.#jitterMs) : 0;
    if (jitter === 0) waiter.resolve();
    else setTimeout(waiter.resolve, jitter);
  }
}

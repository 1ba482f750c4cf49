import { type KnownApiErrorCode, ValidationError } from '../errors.js';
import { EMULATED_ACTIONS, isEmulatedAction, type EmulatedAction } from './actions.js';
import { ApiFault } from './api-errors.js';
import { assertApiErrorCode } from './options.js';

/** What fault injection is built from; a subset of the resolved emulator options. */
export interface FaultConfig {
  readonly faultRate: number;
  readonly faultCodes: readonly string[];
  readonly latencyMs: Readonly<{ min: number; max: number }> | undefined;
  readonly random: () => number;
  /** Monotonic ms, for how long a {@link FaultInjector.burst} lasts. @default performance.now */
  readonly rateClock?: () => number;
}

/** Longest fault burst one call may start: an hour, longer than any game day's outage of the OpenAPI. */
const MAX_FAULT_BURST_MS = 3_600_000;

/** Most calls one `failNext` may queue: enough for any test, small enough that a typo cannot exhaust memory. */
export const MAX_FAIL_NEXT_COUNT = 10_000;

/** One `failNext` call still being answered: its code and how many calls it has left. */
interface QueuedRun {
  readonly code: string;
  remaining: number;
}

/** The run-time checks of {@link FaultInjector.failNext} (a clustered emulator queues its faults in Redis). */
export function checkFailNext(action: unknown, code: unknown, count: unknown): void {
  if (typeof action !== 'string' || !isEmulatedAction(action)) {
    const shown = typeof action === 'string' ? JSON.stringify(action.length > 64 ? `${action.slice(0, 64)}…` : action) : `a ${typeof action}`;
    throw new ValidationError('InvalidOption', `failNext action must be one of ${EMULATED_ACTIONS.join(', ')}, not ${shown}`);
  }
  assertApiErrorCode('failNext code', code);
  if (typeof count !== 'number' || !Number.isInteger(count) || count < 1 || count > MAX_FAIL_NEXT_COUNT) {
    throw new ValidationError('InvalidOption', `failNext count must be an integer from 1 to ${MAX_FAIL_NEXT_COUNT}, not ${String(count)}`);
  }
}

/** A burst of random faults ({@link FaultInjector.burst}): the share of calls it fails, and the codes it picks from. */
export interface FaultBurst {
  readonly rate: number;
  readonly codes: readonly string[];
}

/**
 * The run-time checks of {@link FaultInjector.burst} (a clustered emulator keeps its burst in Redis): the codes,
 * checked. @throws ValidationError `InvalidOption` naming the bad value.
 */
export function checkBurst(rate: unknown, codes: unknown, forMs: unknown): readonly string[] {
  if (typeof rate !== 'number' || !Number.isFinite(rate) || rate < 0 || rate > 1) throw new ValidationError('InvalidOption', `Fault burst rate must be a number from 0 to 1, not ${String(rate)}`);
  if (typeof forMs !== 'number' || !Number.isInteger(forMs) || forMs < 0 || forMs > MAX_FAULT_BURST_MS) throw new ValidationError('InvalidOption', `Fault burst forMs must be an integer from 0 to ${MAX_FAULT_BURST_MS}, not ${String(forMs)}`);
  if (!Array.isArray(codes) || codes.length === 0) throw new ValidationError('InvalidOption', 'Fault burst codes must name at least one error code');
  return Object.freeze(codes.map((code: unknown, i) => assertApiErrorCode(`Fault burst codes[${i}]`, code)));
}

/**
 * Injected latency and errors of the OpenAPI (issue #3).
 *
 * Draws from `random`, in this order, so that a test can script them exactly: one draw per request for the
 * latency (only when `latencyMs` is set); then, for a request the gateway let through (signature verified, not
 * throttled) with nothing queued by {@link FaultInjector.failNext} and `faultRate > 0`, one draw decides the fault (`draw < faultRate`) and, when it
 * faults, one more picks the code (`faultCodes[floor(draw * length)]`).
 */
export class FaultInjector {
  readonly #config: FaultConfig;
  /** Runs queued per Action by failNext, answered first-in first-out; a run is one entry, whatever its count. */
  readonly #queued = new Map<string, QueuedRun[]>();
  /** A burst of random faults started by {@link FaultInjector.burst}: replaces `faultRate`/`faultCodes` until `until`. */
  #burst: { rate: number; codes: readonly string[]; until: number } | undefined;

  constructor(config: FaultConfig) {
    this.#config = config;
  }

  /**
   * Make the next `count` calls of `action` answer `code` (with its catalog status). Queues add up per action, in
   * call order. Checked at run time too, for JavaScript callers and the HTTP control: an action the emulator does
   * not implement (it would never fire), a code outside `API_ERROR_CATALOG`, or a count that is not an integer from 1
   * to {@link MAX_FAIL_NEXT_COUNT} throws `InvalidOption` naming what is allowed.
   */
  failNext(action: EmulatedAction, code: KnownApiErrorCode, count = 1): void {
    checkFailNext(action, code, count);
    const queue = this.#queued.get(action) ?? [];
    queue.push({ code, remaining: count });
    this.#queued.set(action, queue);
  }

  /**
   * For the next `forMs`, answer a share `rate` (0 to 1) of the calls the gateway lets through with one of `codes`,
   * instead of the configured `faultRate`/`faultCodes` (a game day's outage of the OpenAPI); a new burst replaces the
   * one running, and `rate` 0 ends it. Checked at run time too (the HTTP control): `InvalidOption` naming the value.
   */
  burst(rate: number, codes: readonly string[], forMs: number): void {
    const checked = checkBurst(rate, codes, forMs);
    this.#burst = rate === 0 || forMs === 0 ? undefined : { rate, codes: checked, until: this.#now() + forMs };
  }

  /** How long to hold this request before answering, in ms (0 without `latencyMs`). */
  delayMs(): number {
    const range = this.#config.latencyMs;
    if (!range) return 0;
    return range.min + this.#draw() * (range.max - range.min);
  }

  /**
   * Throw the fault this call of `action` gets, if any: a queued one first, else a random one, drawn from `burst` (by
   * default this injector's own, while it runs; a clustered emulator passes the cluster's) or the configured rate.
   */
  inject(action: string, burst: FaultBurst | undefined = this.#runningBurst()): void {
    const queue = this.#queued.get(action);
    const run = queue?.[0];
    if (queue && run) {
      run.remaining -= 1;
      if (run.remaining === 0) queue.shift();
      if (queue.length === 0) this.#queued.delete(action);
      throw new ApiFault(run.code);
    }

    const faultRate = burst?.rate ?? this.#config.faultRate;
    const faultCodes = burst?.codes ?? this.#config.faultCodes;
    if (faultRate === 0 || this.#draw() >= faultRate) return;
    const code = faultCodes[Math.floor(this.#draw() * faultCodes.length)] ?? faultCodes[0];
    if (code !== undefined) throw new ApiFault(code);
  }

  #runningBurst(): FaultBurst | undefined {
    return this.#burst !== undefined && this.#now() < this.#burst.until ? this.#burst : undefined;
  }

  #now(): number {
    return this.#config.rateClock?.() ?? performance.now();
  }

  /** A draw in [0, 1), clamped so that a scripted `random` returning 1 cannot index past the end. */
  #draw(): number {
    return Math.min(Math.max(this.#config.random(), 0), 1 - Number.EPSILON);
  }
}

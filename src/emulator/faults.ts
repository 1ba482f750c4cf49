import { ValidationError } from '../errors.js';
import { ApiFault } from './api-errors.js';
import { assertApiErrorCode } from './options.js';

/** What fault injection is built from; a subset of the resolved emulator options. */
export interface FaultConfig {
  readonly faultRate: number;
  readonly faultCodes: readonly string[];
  readonly latencyMs: Readonly<{ min: number; max: number }> | undefined;
  readonly random: () => number;
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
  /** Codes queued per Action by failNext, answered first-in first-out. */
  readonly #queued = new Map<string, string[]>();

  constructor(config: FaultConfig) {
    this.#config = config;
  }

  /**
   * Make the next `count` calls of `action` answer `code` (with its catalog status). Queues add up per action, in
   * call order. Throws `InvalidOption` for a code outside `API_ERROR_CATALOG` or a count that is not a positive integer.
   */
  failNext(action: string, code: string, count = 1): void {
    assertApiErrorCode('failNext code', code);
    if (!Number.isInteger(count) || count < 1) {
      throw new ValidationError('InvalidOption', `failNext count must be a positive integer, not ${String(count)}`);
    }
    const queue = this.#queued.get(action) ?? [];
    for (let i = 0; i < count; i++) queue.push(code);
    this.#queued.set(action, queue);
  }

  /** How long to hold this request before answering, in ms (0 without `latencyMs`). */
  delayMs(): number {
    const range = this.#config.latencyMs;
    if (!range) return 0;
    return range.min + this.#draw() * (range.max - range.min);
  }

  /** Throw the fault this call of `action` gets, if any: a queued one first, else a random one. */
  inject(action: string): void {
    const queue = this.#queued.get(action);
    const queued = queue?.shift();
    if (queue?.length === 0) this.#queued.delete(action);
    if (queued !== undefined) throw new ApiFault(queued);

    const { faultRate, faultCodes } = this.#config;
    if (faultRate === 0 || this.#draw() >= faultRate) return;
    const code = faultCodes[Math.floor(this.#draw() * faultCodes.length)] ?? faultCodes[0];
    if (code !== undefined) throw new ApiFault(code);
  }

  /** A draw in [0, 1), clamped so that a scripted `random` returning 1 cannot index past the end. */
  #draw(): number {
    return Math.min(Math.max(this.#config.random(), 0), 1 - Number.EPSILON);
  }
}
